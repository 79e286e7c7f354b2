//! `spalloc-replay DIR --usage` and `--jobs` against a scripted workload whose totals are
//! counted by hand: three owners on three hosts, a job that waits an hour for boards, one no
//! machine can ever satisfy, a window that cuts jobs in half. Events are made with the
//! core's `Sim` harness at chosen times, journaled as the server journals them, and read by
//! the real `spalloc-replay` binary.
mod common;

use std::path::PathBuf;

use common::{replay, replay_json, replay_ok, scratch_dir};
use serde_json::Value;
use spalloc::core::sim::{config, job, simple_machine, Sim};
use spalloc::core::{Command, Event, JobId, JobRequest, Response};
use spalloc::server::encode_event;
use spalloc::timefmt::format_iso;
use spalloc_journal::Journal;

const S: u64 = 1_000_000;

fn create(sim: &mut Sim, peer: &str, owner: &str, request: JobRequest) -> JobId {
    let mut c = job(request);
    c.owner = owner.to_string();
    c.keepalive_s = None;
    match sim.event(Event::Command {
        now_us: sim.now_us,
        peer: peer.to_string(),
        command: Command::CreateJob(c),
    }) {
        Some(Response::JobId(id)) => id,
        other => panic!("create_job answered {other:?}"),
    }
}

fn destroy(sim: &mut Sim, peer: &str, id: JobId) {
    sim.event(Event::Command {
        now_us: sim.now_us,
        peer: peer.to_string(),
        command: Command::DestroyJob {
            job_id: id,
            reason: Some("done".into()),
        },
    });
}

/// The workload (machine m: one triad, 3 boards; boards free again at once):
///   T0        alice@10.0.0.1 takes all 3 boards (job 1), ready at once
///   T0+10 s   bob@10.0.0.2 asks for 1 board (job 2): queued
///   T0+20 s   carol@10.0.0.3 asks for 100 boards (job 3): cancelled, nothing can fit it
///   T0+1 h    alice destroys job 1; job 2 gets a board and is ready (it waited 3590 s)
///   T0+2 h    bob destroys job 2
fn workload() -> (PathBuf, u64) {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 1)], 0.0));
    let t0 = sim.now_us;
    let j1 = create(&mut sim, "10.0.0.1", "alice", JobRequest::Triads(1, 1));
    sim.now_us = t0 + 10 * S;
    let j2 = create(&mut sim, "10.0.0.2", "bob", JobRequest::OneBoard);
    sim.now_us = t0 + 20 * S;
    let j3 = create(&mut sim, "10.0.0.3", "carol", JobRequest::Boards(100));
    assert_eq!((j1, j2, j3), (1, 2, 3));
    assert_eq!(sim.core.job_state(3).state, 4, "job 3 cancelled at once");
    sim.now_us = t0 + 3600 * S;
    destroy(&mut sim, "10.0.0.1", j1);
    assert_eq!(
        sim.core.job_state(2).state,
        3,
        "job 2 ready once job 1 is gone"
    );
    sim.now_us = t0 + 7200 * S;
    destroy(&mut sim, "10.0.0.2", j2);

    let dir = scratch_dir("accounting").join("journal");
    let mut opened = Journal::open(&dir).unwrap();
    let encoded: Vec<Vec<u8>> = sim.events.iter().map(encode_event).collect();
    opened
        .journal
        .append_batch(encoded.iter().map(Vec::as_slice))
        .unwrap();
    (dir, t0)
}

fn group<'a>(u: &'a Value, by: &str, key: &str) -> &'a Value {
    u["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g[by] == key)
        .unwrap_or_else(|| panic!("no group {key}: {u}"))
}

#[test]
fn usage_matches_a_hand_count() {
    let (dir, t0) = workload();
    let u = replay_json(&dir, &["--usage"]);
    assert_eq!(u["by"], "owner");
    let alice = group(&u, "owner", "alice");
    assert_eq!(alice["jobs"], 1);
    assert_eq!(alice["board_hours"], 3.0);
    assert_eq!(alice["wait_s_mean"], 0.0);
    assert_eq!(alice["ended"]["owner"], 1);
    let bob = group(&u, "owner", "bob");
    assert_eq!(bob["board_hours"], 1.0);
    assert_eq!(bob["waited_jobs"], 1);
    assert_eq!(bob["wait_s_mean"], 3590.0);
    assert_eq!(bob["wait_s_max"], 3590.0);
    let carol = group(&u, "owner", "carol");
    assert_eq!(carol["board_hours"], 0.0);
    assert_eq!(carol["waited_jobs"], 0);
    assert_eq!(carol["ended"]["no_suitable_machine"], 1);
    assert_eq!(u["total"]["jobs"], 3);
    assert_eq!(u["total"]["board_hours"], 4.0);
    assert_eq!(u["total"]["live_at_end"], 0);

    // By machine and by host.
    let m = replay_json(&dir, &["--usage", "--by", "machine"]);
    assert_eq!(group(&m, "machine", "m")["jobs"], 2);
    assert_eq!(group(&m, "machine", "m")["board_hours"], 4.0);
    assert_eq!(group(&m, "machine", "(none)")["jobs"], 1);
    let h = replay_json(&dir, &["--usage", "--by", "host"]);
    assert_eq!(group(&h, "host", "10.0.0.2")["board_hours"], 1.0);

    // A window from T0+30 min to T0+90 min: half of job 1 and of job 2; job 3 is outside.
    let since = format_iso(t0 + 1800 * S);
    let until = format_iso(t0 + 5400 * S);
    let w = replay_json(&dir, &["--usage", "--since", &since, "--until", &until]);
    assert_eq!(group(&w, "owner", "alice")["board_hours"], 1.5);
    assert_eq!(group(&w, "owner", "alice")["ended"]["owner"], 1);
    assert_eq!(group(&w, "owner", "bob")["board_hours"], 0.5);
    assert_eq!(group(&w, "owner", "bob")["live_at_end"], 1);
    assert_eq!(w["total"]["jobs"], 2);

    // CSV: a header, one row per owner, a total.
    let csv = replay_ok(&dir, &["--usage", "--csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("owner,jobs,board_hours,"), "{csv}");
    assert_eq!(lines.len(), 5, "{csv}");
    assert!(lines[1].starts_with("alice,1,3.000,"), "{csv}");
    assert!(lines[4].starts_with("TOTAL,3,4.000,"), "{csv}");
    let text = replay_ok(&dir, &["--usage"]);
    assert!(text.contains("TOTAL"), "{text}");

    // Bad arguments are clear errors.
    let (code, _, err) = replay(&dir, &["--usage", "--by", "colour"]);
    assert_eq!(code, 2);
    assert!(err.contains("group by owner, machine or host"), "{err}");
    let (code, _, err) = replay(&dir, &["--since", &since]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn jobs_lists_every_job_of_the_window() {
    let (dir, t0) = workload();
    let j = replay_json(&dir, &["--jobs"]);
    let jobs = j["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    assert_eq!(jobs[1]["job_id"], 2);
    assert_eq!(jobs[1]["owner"], "bob");
    assert_eq!(jobs[1]["host"], "10.0.0.2");
    assert_eq!(jobs[1]["machine"], "m");
    assert_eq!(jobs[1]["boards"], 1);
    assert_eq!(jobs[1]["wait_s"], 3590.0);
    assert_eq!(jobs[1]["end_reason"], "owner");
    assert_eq!(jobs[1]["end_text"], "done");
    assert_eq!(jobs[1]["created"], format_iso(t0 + 10 * S));
    assert_eq!(jobs[1]["ended"], format_iso(t0 + 7200 * S));
    assert_eq!(jobs[2]["end_reason"], "no_suitable_machine");
    assert_eq!(jobs[2]["machine"], Value::Null);

    let since = format_iso(t0 + 1800 * S);
    let csv = replay_ok(&dir, &["--jobs", "--csv", "--since", &since]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "header and jobs 1 and 2: {csv}");
    assert!(lines[2].starts_with("2,bob,10.0.0.2,m,1,"), "{csv}");
    assert!(lines[2].ends_with(",owner,done,3590.000,1.000"), "{csv}");
}
