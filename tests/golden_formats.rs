//! The on-disk formats, pinned: a journal and snapshot written by this version
//! (tests/fixtures/golden, made by its make.py) must stay readable, and read the same, by every
//! later version. A renamed event variant, a reordered event field or a renamed snapshot field
//! fails here before it can stop a server from starting on an existing journal.
//!
//! The fixture is never regenerated to make these pass: if a format changes on purpose, the
//! old fixture must still decode and resume (keep it, and add a new one beside it).
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;
use spalloc::replay::{fold_all, Source};
use spalloc::server::{decode_event, encode_event};
use spalloc_journal::Reader;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

/// A copy of the golden journal in a scratch directory's `journal/`, without its snapshot
/// when `with_snapshot` is false (so replay and restart start from record 1).
fn copy_journal(tag: &str, with_snapshot: bool) -> PathBuf {
    let dir = scratch_dir(tag);
    let to = dir.join("journal");
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(golden().join("journal")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if with_snapshot || !name.ends_with(".snap") {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
    dir
}

/// The name of an event's variant, as the journal spells it.
fn variant(bytes: &[u8]) -> String {
    match rmp_serde::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => m.keys().next().unwrap().clone(),
        Ok(Value::String(s)) => s,
        Ok(other) => panic!("an event encodes as a map or a string, not {other}"),
        Err(e) => panic!("record is not MessagePack: {e}"),
    }
}

#[test]
fn every_record_decodes_and_encodes_to_the_same_bytes() {
    let reader = Reader::open(&golden().join("journal")).unwrap();
    let mut kinds = BTreeSet::new();
    let mut count = 0;
    for r in reader.records_from(1).unwrap() {
        let (seq, bytes) = r.unwrap();
        let event = decode_event(&bytes).unwrap_or_else(|e| panic!("record #{seq}: {e}"));
        assert_eq!(
            encode_event(&event),
            bytes,
            "record #{seq} ({event:?}) encodes differently today"
        );
        kinds.insert(variant(&bytes));
        count += 1;
    }
    assert_eq!(count, reader.last_seq());
    // What the fixture pins: every kind of event a running server journals (a
    // KeptAliveUnrecorded needs a disk outage, a Restarted a restart: not in this fixture).
    let expected: BTreeSet<String> = ["Admin", "BmpDone", "Command", "Configure", "Rules", "Tick"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(kinds, expected);
}

#[test]
fn folding_from_record_one_gives_the_final_snapshot_byte_for_byte() {
    let reader = Reader::open(&golden().join("journal")).unwrap();
    let snapshots = reader.snapshots();
    let last = snapshots.last().expect("the fixture ends with a snapshot");
    let written = reader.read_snapshot(last).unwrap();
    let dir = copy_journal("golden-fold", false);
    let source = Source::open(&dir.join("journal")).unwrap();
    assert_eq!(source.start_seq, 0, "replay must start from record 1");
    let mut folded_to = 0;
    let folder = fold_all(&source, |step, _| {
        folded_to = step.seq;
        step.seq < last.covered_seq
    })
    .unwrap();
    assert_eq!(folded_to, last.covered_seq);
    folder.sim.core.check_invariants().unwrap();
    let ours = rmp_serde::to_vec_named(&folder.sim.core).unwrap();
    assert!(
        ours == written.data,
        "the fold of the golden records no longer encodes to the snapshot the server wrote \
         ({} bytes against {})",
        ours.len(),
        written.data.len()
    );
    // And the written snapshot itself still decodes to that state.
    let decoded: spalloc::core::Core = rmp_serde::from_slice(&written.data).unwrap();
    assert_eq!(rmp_serde::to_vec_named(&decoded).unwrap(), written.data);
}

fn answers_as_recorded(with_snapshot: bool) {
    let recorded: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(golden().join("replies.json")).unwrap())
            .unwrap();
    let dir = copy_journal("golden-resume", with_snapshot);
    // No --config: the machines come from the journal.
    let server = Server::start_with(&dir, None, &[]);
    let mut c = server.client();
    for entry in &recorded {
        let q = entry["query"].as_array().unwrap();
        let reply = c.call_raw(q[0].as_str().unwrap(), q[1].clone(), q[2].clone());
        assert_eq!(reply, entry["reply"], "{q:?}\n{}", server.log_text());
    }
    assert!(recorded.len() >= 20, "the fixture asks every kind of query");
    server.stop();
}

/// One test, not two: both servers simulate the fixture's BMPs at the same addresses.
#[test]
fn a_server_resumes_from_the_snapshot_or_the_records_and_answers_as_recorded() {
    answers_as_recorded(true);
    answers_as_recorded(false);
}
