//! `spalloc-replay` on hand-built journals: events made with the core's own `Sim` harness,
//! encoded with `spalloc::server::encode_event` and appended with `spalloc_journal::Journal`.
//! This is how a BMP failure, retention, damage and planted inconsistencies are produced.
mod common;

use std::path::{Path, PathBuf};

use common::{replay, replay_json, replay_ok, scratch_dir};
use serde_json::Value;
use spalloc::core::coordinates::Board;
use spalloc::core::sim::{config, machine_with, simple_machine, Sim};
use spalloc::core::{Core, Event, JobRequest};
use spalloc::server::encode_event;
use spalloc_journal::Journal;

fn append(journal: &mut Journal, events: &[Event]) {
    let encoded: Vec<Vec<u8>> = events.iter().map(encode_event).collect();
    journal
        .append_batch(encoded.iter().map(Vec::as_slice))
        .unwrap();
}

/// Write `events` as a journal (one batch) in a fresh directory.
fn journal_of(tag: &str, events: &[Event]) -> PathBuf {
    let dir = scratch_dir(tag).join("journal");
    let mut opened = Journal::open(&dir).unwrap();
    append(&mut opened.journal, events);
    dir
}

/// The state after folding `events`, serialised as the server's snapshots are.
fn state_bytes(events: &[Event]) -> Vec<u8> {
    let mut core = Core::at_journal_start();
    for e in events {
        core.handle(e);
        core.discard_effects();
    }
    rmp_serde::to_vec_named(&core).unwrap()
}

/// A job that keeps itself alive for a while, then is destroyed: plenty of records.
fn busy_events() -> Vec<Event> {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 1)], 0.0));
    let id = sim.create(JobRequest::OneBoard);
    for _ in 0..200 {
        sim.now_us += 1_000_000;
        sim.state(id);
    }
    sim.destroy(id, Some("done"));
    sim.events
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn bmp_failure_is_the_reason_and_cause() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 1)], 0.0));
    sim.bmp_auto = false;
    let id = sim.create(JobRequest::OneBoard);
    let boards = sim.core.job_machine_info(id).boards.unwrap();
    sim.now_us += 2_000_000;
    let req = sim
        .complete_next_bmp(Some("Requests failed on BMP 10.1.0.0"))
        .unwrap();
    assert_eq!(req.address, "10.1.0.0");
    sim.now_us += 1_000_000;
    sim.complete_all_bmp();
    let dir = journal_of("replay-bmp", &sim.events);

    let h = replay_json(&dir, &["--job", &id.to_string()]);
    assert_eq!(
        h["ended"]["reason"],
        "Machine configuration failed. Error: Requests failed on BMP 10.1.0.0"
    );
    let cause = h["ended"]["cause"].as_str().unwrap();
    assert!(
        cause.starts_with(&format!(
            "hardware failure: BMP request {} for job {id} done: FAILED: Requests failed on BMP 10.1.0.0",
            req.id
        )),
        "{cause}"
    );
    assert_eq!(
        h["allocation"]["boards"],
        serde_json::to_value(&boards).unwrap()
    );
    assert_eq!(
        h["bmp"][0]["outcome"],
        "failed: Requests failed on BMP 10.1.0.0"
    );
    assert_eq!(h["bmp"][1]["action"], "power-off");
    assert_eq!(h["bmp"][1]["outcome"], "ok");
    assert!(h["released"].is_object(), "{h}");
    let text = replay_ok(&dir, &["--job", &id.to_string()]);
    assert!(
        text.contains("why:       hardware failure: BMP request 1 for job 1 done: FAILED: Requests failed on BMP 10.1.0.0"),
        "{text}"
    );
    assert!(
        text.contains("BMP:       2 requests, 1 failed, 0 unfinished"),
        "{text}"
    );

    let s = replay_json(&dir, &[]);
    assert_eq!(s["bmp_failed"], 1);
    assert_eq!(
        s["ended_by_reason"]
            ["Machine configuration failed. Error: Requests failed on BMP 10.1.0.0"],
        1
    );
    let events = replay_ok(&dir, &["--events"]);
    assert!(
        events.contains("done: FAILED: Requests failed on BMP 10.1.0.0"),
        "{events}"
    );
    assert_eq!(replay(&dir, &["--verify"]).0, 0);
}

#[test]
fn map_marks_dead_boards_and_draining_jobs() {
    let dead = Board::new(1, 0, 2);
    let machine = machine_with(
        "big",
        2,
        1,
        &[dead],
        &[],
        |b| [0, 0, b.x * 3 + b.z],
        |c, f| format!("10.1.{c}.{f}"),
        |b| format!("11.{}.{}.{}", b.x, b.y, b.z),
    );
    let mut sim = Sim::new(config(vec![machine], 0.0));
    sim.bmp_auto = false;
    let a = sim.create(JobRequest::OneBoard);
    sim.complete_all_bmp();
    let b = sim.create(JobRequest::OneBoard);
    sim.complete_all_bmp();
    sim.destroy(a, None); // its power-off stays pending: a draining job
    let dir = journal_of("replay-map", &sim.events);
    let text = replay_ok(&dir, &["--at", &format!("#{}", sim.events.len())]);
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("y=0 "))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = row.split('[').skip(1).collect();
    assert_eq!(cells.len(), 2, "{row}");
    assert!(cells[1].trim_end().ends_with("X]"), "{row}");
    assert!(row.contains(&format!("{a}*")), "{row}");
    assert!(
        row.contains(&format!("{b} ")) || row.contains(&format!("{b}]")),
        "{row}"
    );
    assert!(
        text.contains("Destroyed jobs still holding boards"),
        "{text}"
    );
}

#[test]
fn verify_catches_a_flipped_byte() {
    let dir = journal_of("replay-flip", &busy_events());
    assert_eq!(replay(&dir, &["--verify"]).0, 0);
    let seg = &segment_files(&dir)[0];
    let mut bytes = std::fs::read(seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(seg, &bytes).unwrap();

    let (code, out, err) = replay(&dir, &["--verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("PROBLEM: damaged journal: "), "{out}");
    assert!(
        out.contains(&seg.file_name().unwrap().to_string_lossy().to_string()),
        "{out}"
    );
    let v = replay_json_code(&dir, &["--verify"], 1);
    assert_eq!(v["ok"], false);
    // Outside --verify, damage is a journal error.
    let (code, _, err) = replay(&dir, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("corrupt"), "{err}");
}

fn replay_json_code(dir: &Path, args: &[&str], code: i32) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (c, out, err) = replay(dir, &a);
    assert_eq!(c, code, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn verify_catches_a_snapshot_that_disagrees_with_the_records() {
    let events = busy_events();
    let k = 10;
    let dir = scratch_dir("replay-badsnap").join("journal");
    let mut opened = Journal::open(&dir).unwrap();
    append(&mut opened.journal, &events[..k]);
    // Claims to cover record k but holds the state after record k - 3.
    opened
        .journal
        .write_snapshot(k as u64, &state_bytes(&events[..k - 3]))
        .unwrap();
    append(&mut opened.journal, &events[k..]);
    drop(opened);

    let (code, out, err) = replay(&dir, &["--verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("PROBLEM: snapshot of record #{k} (",))
            && out.contains("disagrees with folding the records from the beginning: its time is"),
        "{out}"
    );

    // The same journal with an honest snapshot verifies.
    let dir = scratch_dir("replay-goodsnap").join("journal");
    let mut opened = Journal::open(&dir).unwrap();
    append(&mut opened.journal, &events[..k]);
    opened
        .journal
        .write_snapshot(k as u64, &state_bytes(&events[..k]))
        .unwrap();
    append(&mut opened.journal, &events[k..]);
    drop(opened);
    let v = replay_json(&dir, &["--verify"]);
    assert_eq!(v["snapshots_compared"], serde_json::json!([k]));
}

/// Records 1..=k deleted (as retention does), snapshot of record k kept.
fn retained_journal(tag: &str, events: &[Event], k: usize, snapshot: Vec<u8>) -> PathBuf {
    let dir = scratch_dir(tag).join("journal");
    let mut opened = Journal::open(&dir).unwrap();
    append(&mut opened.journal, &events[..k]);
    opened.journal.write_snapshot(k as u64, &snapshot).unwrap();
    append(&mut opened.journal, &events[k..]);
    drop(opened);
    let segs = segment_files(&dir);
    assert_eq!(segs.len(), 2);
    std::fs::remove_file(&segs[0]).unwrap();
    dir
}

#[test]
fn retention_starts_from_the_oldest_snapshot_and_says_so() {
    let events = busy_events();
    let k = 50;
    let dir = retained_journal("replay-retained", &events, k, state_bytes(&events[..k]));

    let s = replay_json(&dir, &[]);
    assert_eq!(s["first_seq"], k + 1);
    assert_eq!(s["start_seq"], k);
    assert_eq!(s["events"], events.len() - k);
    assert!(
        s["notes"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("records #1..#{k} are no longer retained")),
        "{s}"
    );
    let text = replay_ok(&dir, &[]);
    assert!(
        text.starts_with("note: records #1..#50 are no longer retained"),
        "{text}"
    );
    let h = replay_ok(&dir, &["--job", "1"]);
    assert!(
        h.contains("created:   before the replayed history (live in the starting snapshot)"),
        "{h}"
    );
    assert!(h.contains("ended:     #") && h.contains(": done"), "{h}");
    let at = replay_json(&dir, &["--at", &format!("#{k}")]);
    assert_eq!(at["jobs"][0]["job_id"], 1);
    let (code, _, err) = replay(&dir, &["--at", "#3"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("out of range") && err.contains("after the snapshot of record #50"),
        "{err}"
    );
    let (code, out, err) = replay(&dir, &["--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("is where replay starts"), "{out}");
}

#[test]
fn verify_catches_an_invariant_broken_in_a_snapshot() {
    let events = busy_events();
    let k = 50;
    let mut snap = state_bytes(&events[..k]);
    // Plant: next_job_id = 1 while job 1 is live (msgpack: fixstr key, then a fixint value).
    let key = b"\xabnext_job_id";
    let at = snap
        .windows(key.len())
        .position(|w| w == key)
        .expect("field present")
        + key.len();
    assert_eq!(snap[at], 2, "next_job_id is 2 after one job");
    snap[at] = 1;
    let dir = retained_journal("replay-invariant", &events, k, snap);

    let (code, out, err) = replay(&dir, &["--verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "PROBLEM: the starting snapshot of record #{k} breaks an invariant: job 1 at or beyond the next id"
        )),
        "{out}"
    );
}

#[test]
fn unknown_format_version_and_missing_journal_are_clear_errors() {
    let dir = journal_of("replay-version", &busy_events()[..5]);
    let seg = &segment_files(&dir)[0];
    let mut bytes = std::fs::read(seg).unwrap();
    bytes[4..6].copy_from_slice(&7u16.to_le_bytes());
    std::fs::write(seg, &bytes).unwrap();
    for args in [&[][..], &["--verify"][..], &["--events"][..]] {
        let (code, _, err) = replay(&dir, args);
        assert_eq!(code, 2, "{args:?}");
        assert!(
            err.contains("journal format version 7 is not supported"),
            "{err}"
        );
    }
    let empty = scratch_dir("replay-empty");
    let (code, _, err) = replay(&empty, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a journal directory"), "{err}");
}
