//! `spalloc-replay` against journals written by the real server: each mode's output, and
//! reading while the server runs (and holds the journal's lock).
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn replay_json_lines(dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut a = args.to_vec();
    a.push("--json");
    replay_ok(dir, &a)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn boards_of(c: &mut Client, id: u64) -> Value {
    c.call("get_job_machine_info", json!([id]), json!({}))["boards"].clone()
}

/// A job destroyed by its owner, one that timed out, and one live; then every mode.
#[test]
fn modes_on_a_real_server_journal() {
    let dir = scratch_dir("replay-real");
    let cfg = simple_config(&bmp_net(), json!({}));
    let mut server = Server::start(&dir, &cfg, &[]);
    let journal = server.journal.clone();
    let mut c = server.client();

    let destroyed = c.create(json!([1]), json!({"keepalive": 60.0}));
    c.wait_state(destroyed, 3, WAIT);
    let destroyed_boards = boards_of(&mut c, destroyed);
    c.call(
        "destroy_job",
        json!([destroyed]),
        json!({"reason": "finished early"}),
    );

    // Touched once (to learn its boards), then never again: it must time out.
    let timed_out = c.create(json!([1]), json!({"keepalive": 0.3}));
    let timed_out_boards = boards_of(&mut c, timed_out);
    assert!(
        timed_out_boards.is_array(),
        "allocated at once: boards are free"
    );
    server
        .wait_for_log(&format!("job {timed_out}: destroyed"), WAIT)
        .unwrap_or_else(|| panic!("job never timed out; log:\n{}", server.log_text()));

    let live = c.create(json!([1]), json!({"keepalive": null}));
    c.wait_state(live, 3, WAIT);
    let live_boards = boards_of(&mut c, live);
    assert!(server.stop().success());

    // --verify: the server's own shutdown snapshot must agree with the fold.
    let (code, out, err) = replay(&journal, &["--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("OK: records #1.."), "{out}");
    let v = replay_json(&journal, &["--verify"]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["snapshots_compared"].as_array().unwrap().len(), 1, "{v}");

    // Summary.
    let s = replay_json(&journal, &[]);
    assert_eq!(s["jobs_created"], 3);
    assert_eq!(s["jobs_ended"], 2);
    assert_eq!(s["ended_by_reason"]["Job timed out."], 1);
    assert_eq!(s["ended_by_reason"]["finished early"], 1);
    assert_eq!(s["end"]["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(s["end"]["jobs"][0]["job_id"], live);
    assert_eq!(s["end"]["machines"][0]["name"], "m");
    assert_eq!(s["end"]["machines"][0]["in_use"], 1);
    let last_seq = s["last_seq"].as_u64().unwrap();
    assert_eq!(s["events"], last_seq);
    let text = replay_ok(&journal, &[]);
    assert!(text.contains("Jobs: 3 created, 2 ended"), "{text}");
    assert!(
        text.contains("  m: 1x2 triads, 6 boards (0 dead), 1 in use"),
        "{text}"
    );

    // --job: the destroyed job.
    let h = replay_json(&journal, &["--job", &destroyed.to_string()]);
    assert_eq!(h["allocation"]["machine"], "m");
    assert_eq!(h["allocation"]["boards"], destroyed_boards);
    assert_eq!(h["ended"]["reason"], "finished early");
    assert!(
        h["ended"]["cause"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1 called destroy_job("),
        "{h}"
    );
    assert_eq!(h["created"]["owner"], "me");
    assert_eq!(h["created"]["peer"], "127.0.0.1");
    assert!(h["released"].is_object(), "{h}");
    assert!(h["bmp"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["outcome"] == "ok"));
    let text = replay_ok(&journal, &["--job", &destroyed.to_string()]);
    let b = &destroyed_boards[0];
    assert!(
        text.contains("1 on m (allocated #")
            && text.contains(&format!("({}, {}, {})", b[0], b[1], b[2])),
        "{text}"
    );
    assert!(
        text.contains("ended:") && text.contains("finished early"),
        "{text}"
    );

    // --job: the timed-out job.
    let h = replay_json(&journal, &["--job", &timed_out.to_string()]);
    assert_eq!(h["ended"]["reason"], "Job timed out.");
    assert!(
        h["ended"]["cause"]
            .as_str()
            .unwrap()
            .starts_with("keepalive expired"),
        "{h}"
    );
    assert!(h["ended"]["event"] == "tick", "{h}");
    assert_eq!(h["keepalive_s"], 0.3);
    assert_eq!(h["allocation"]["machine"], "m");
    assert_eq!(h["allocation"]["boards"], timed_out_boards);
    assert_eq!(h["touches"], 1);
    assert_eq!(h["touch_hosts"], json!(["127.0.0.1"]));
    let gap_us = h["longest_gap"][0].as_u64();
    assert!(gap_us.is_some(), "{h}");
    let text = replay_ok(&journal, &["--job", &timed_out.to_string()]);
    assert!(
        text.contains("Job timed out.") && text.contains("why:       keepalive expired"),
        "{text}"
    );

    // --at: just before and at the live job's allocation differ by exactly that job.
    let h = replay_json(&journal, &["--job", &live.to_string()]);
    assert_eq!(h["allocation"]["boards"], live_boards);
    let n = h["allocation"]["seq"].as_u64().unwrap();
    let before = replay_json(&journal, &["--at", &format!("#{}", n - 1)]);
    let after = replay_json(&journal, &["--at", &format!("seq:{n}")]);
    assert_eq!(before["seq"], n - 1);
    assert_eq!(after["seq"], n);
    let ids = |v: &Value| -> Vec<u64> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_u64().unwrap())
            .collect()
    };
    let mut expected = ids(&before);
    expected.push(live);
    assert_eq!(ids(&after), expected);
    let owners =
        |v: &Value| -> Vec<Value> { v["machines"][0]["owners"].as_array().unwrap().clone() };
    let mut expected: Vec<Value> = owners(&before);
    expected.extend(
        live_boards
            .as_array()
            .unwrap()
            .iter()
            .map(|b| json!({"board": b, "job_id": live})),
    );
    let key = |v: &Value| v["board"].to_string();
    expected.sort_by_key(key);
    let mut got = owners(&after);
    got.sort_by_key(key);
    assert_eq!(got, expected);
    // The text map shows the job on its board's triad row.
    let text = replay_ok(&journal, &["--at", &format!("#{n}")]);
    let row = format!("y={} ", live_boards[0][1]);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&row))
        .unwrap_or_else(|| panic!("no map row {row}:\n{text}"));
    assert!(line.contains(&live.to_string()), "{text}");
    // A time position: the event's own time includes it.
    let t = after["time"].as_str().unwrap().to_string();
    let at_time = replay_json(&journal, &["--at", &t]);
    assert!(ids(&at_time).contains(&live));

    // --events: one line per event; a range by sequence numbers.
    let all = replay_ok(&journal, &["--events"]);
    assert_eq!(all.lines().count() as u64, last_seq, "{all}");
    assert!(all.lines().next().unwrap().starts_with("#1 "));
    assert!(all.contains(&format!(
        "127.0.0.1 destroy_job({destroyed}, reason=\"finished early\")"
    )));
    assert!(all.contains("done: ok"), "{all}");
    let some = replay_ok(&journal, &["--events", "--from", "#2", "--to", "#4"]);
    let seqs: Vec<&str> = some.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(seqs, ["#2", "#3", "#4"]);
    let lines = replay_ok(
        &journal,
        &["--events", "--json", "--from", "#2", "--to", "#3"],
    );
    let objs: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len(), 2);
    assert_eq!(objs[0]["seq"], 2);

    // --events by time: the times of records #2 and #4 select every event between them
    // (events of one server pass share a time, so compare with the times, not the seqs).
    let every = replay_json_lines(&journal, &["--events"]);
    let time = |seq: usize| every[seq - 1]["time_us"].as_u64().unwrap();
    let (t2, t4) = (time(2), time(4));
    let expected: Vec<u64> = every
        .iter()
        .filter(|v| (t2..=t4).contains(&v["time_us"].as_u64().unwrap()))
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert!([2, 3, 4].iter().all(|s| expected.contains(s)));
    let (from, to) = (
        every[1]["time"].as_str().unwrap(),
        every[3]["time"].as_str().unwrap(),
    );
    let by_time = replay_json_lines(&journal, &["--events", "--from", from, "--to", to]);
    let seqs: Vec<u64> = by_time.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, expected);

    // Errors: out-of-range sequence numbers, unknown jobs, bad times, missing directories.
    let (code, _, err) = replay(&journal, &["--at", &format!("#{}", last_seq + 1)]);
    assert_eq!(code, 2);
    assert!(err.contains("out of range"), "{err}");
    let (code, _, err) = replay(&journal, &["--events", "--from", "#0"]);
    assert_eq!(code, 2);
    assert!(err.contains("out of range"), "{err}");
    let (code, _, err) = replay(&journal, &["--job", "999"]);
    assert_eq!(code, 2);
    assert!(err.contains("job 999 does not appear"), "{err}");
    let (code, _, err) = replay(&journal, &["--at", "yesterday"]);
    assert_eq!(code, 2);
    assert!(err.contains("#N or seq:N"), "{err}");
    let (code, _, err) = replay(&dir.join("nope"), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("no such directory"), "{err}");
    let (code, _, _) = replay(&journal, &["--bogus"]);
    assert_eq!(code, 2);
    let (code, _, _) = replay(&journal, &["--verify", "--job", "1"]);
    assert_eq!(code, 2);
    let (code, out, _) = replay(&journal, &["--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("#N or seq:N") && out.contains("Error codes"),
        "{out}"
    );
}

/// The server holds the journal's lock; the reader must still work, and see new records.
#[test]
fn reads_while_the_server_is_running() {
    let dir = scratch_dir("replay-live");
    let cfg = simple_config(&bmp_net(), json!({}));
    let server = Server::start(&dir, &cfg, &[]);
    let journal = server.journal.clone();
    assert!(journal.join("LOCK").exists());
    let mut c = server.client();
    let first = c.create(json!([1]), json!({}));
    c.wait_state(first, 3, WAIT);

    let s = replay_json(&journal, &[]);
    assert_eq!(s["jobs_created"], 1);
    assert_eq!(s["end"]["jobs"][0]["job_id"], first);
    let (code, out, err) = replay(&journal, &["--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    let h = replay_json(&journal, &["--job", &first.to_string()]);
    assert!(h["ended"].is_null());

    let second = c.create(json!([1]), json!({}));
    c.wait_state(second, 3, WAIT);
    let s = replay_json(&journal, &[]);
    assert_eq!(s["jobs_created"], 2);
    // The server is unaffected: it still answers, and stops cleanly.
    assert_eq!(c.state(first)["state"], 3);
    assert!(server.stop().success());
}

/// A BMP failure recorded by the real server: no BMP simulator, and the machine's BMP is a
/// loopback address where nothing answers, so the power-on fails after its attempts.
#[test]
fn job_history_of_a_real_bmp_failure() {
    let dir = scratch_dir("replay-bmp-fail");
    let net = bmp_net();
    let cfg = simple_config(&net, json!({}));
    let cfg_path = dir.join("machines.json");
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let server = Server::start_plain(&dir, Some(&cfg_path), &[]);
    let mut c = server.client();
    let j = c.create(json!([]), json!({}));
    let s = c.wait_state(j, 4, WAIT);
    let reason = format!("Machine configuration failed. Error: Requests failed on BMP {net}.1");
    assert_eq!(s["reason"], reason.as_str());
    let journal = server.journal.clone();
    let _ = server.stop();

    let history = replay_ok(&journal, &["--job", &j.to_string()]);
    assert!(history.contains(&reason), "{history}");
    assert!(
        history.contains("(0, 0, 0)"),
        "the job's board is named: {history}"
    );
    assert!(
        history.contains("FAILED: Requests failed on BMP"),
        "{history}"
    );
    let v = replay_json(&journal, &["--job", &j.to_string()]);
    assert_eq!(v["ended"]["reason"], reason.as_str(), "{v}");
    assert_eq!(v["allocation"]["boards"], json!([[0, 0, 0]]));
}

/// The commands of a journal's events, in journal order.
fn journaled_commands(journal: &Path) -> Vec<String> {
    replay_json_lines(journal, &["--events"])
        .iter()
        .filter_map(|e| e["command"].as_str().map(str::to_string))
        .collect()
}

/// A keepalive from the job's own host is answered before it is journaled (server module
/// docs: a restart resets every deadline, so losing it changes nothing), but the journal
/// still gets every one, in the order the server folded them: by themselves within about a
/// second, ahead of the next change, and before the shutdown snapshot, which `--verify`
/// checks against the fold.
#[test]
fn lazily_journaled_keepalives_keep_their_place() {
    let dir = scratch_dir("replay-lazy");
    let cfg = simple_config(&bmp_net(), json!({}));
    let server = Server::start(&dir, &cfg, &[]);
    let journal = server.journal.clone();
    let mut c = server.client();
    let job = c.create(json!([1]), json!({}));
    c.wait_state(job, 3, WAIT);
    let keepalive = format!("job_keepalive({job})");
    let keepalives = |cmds: &[String]| cmds.iter().filter(|c| **c == keepalive).count();

    // Alone: no other traffic, yet they reach the journal.
    for _ in 0..3 {
        assert_eq!(
            c.call("job_keepalive", json!([job]), json!({})),
            json!(null)
        );
    }
    let deadline = std::time::Instant::now() + WAIT;
    while keepalives(&journaled_commands(&journal)) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "keepalives never reached the journal: {:?}",
            journaled_commands(&journal)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Ahead of the next change, in the order they were folded: the create's reply comes
    // after its fsync, which wrote the waiting records first.
    c.call("job_keepalive", json!([job]), json!({}));
    c.call("get_job_machine_info", json!([job]), json!({}));
    let second = c.create(json!([1]), json!({}));
    let cmds = journaled_commands(&journal);
    let tail: Vec<&str> = cmds[cmds.len() - 3..].iter().map(String::as_str).collect();
    assert_eq!(tail[0], keepalive);
    assert_eq!(tail[1], format!("get_job_machine_info({job})"));
    assert!(tail[2].starts_with("create_job("), "{tail:?}");
    assert_ne!(c.state(second)["state"], 0);

    // Stopping right after keepalives: the shutdown snapshot covers them.
    c.call("job_keepalive", json!([job]), json!({}));
    c.call("job_keepalive", json!([job]), json!({}));
    assert!(server.stop().success());
    let (code, out, err) = replay(&journal, &["--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(keepalives(&journaled_commands(&journal)), 6);
}

/// Snapshots are written by the journal thread while the loop keeps serving (server module
/// docs): under a stream of keepalives and changes, every snapshot must still be exactly
/// the fold of the records it claims to cover (`--verify` compares them byte for byte), and
/// a SIGKILLed server must come back from them with the acknowledged state.
#[test]
fn background_snapshots_agree_with_the_fold() {
    let dir = scratch_dir("replay-bgsnap");
    let cfg = simple_config(&bmp_net(), json!({}));
    let server = Server::start(&dir, &cfg, &["--snapshot-every", "40"]);
    let journal = server.journal.clone();
    let mut c = server.client();
    let kept = c.create(json!([1]), json!({"keepalive": null}));
    let mut destroyed = Vec::new();
    for round in 0..30 {
        for _ in 0..5 {
            c.call("job_keepalive", json!([kept]), json!({}));
            c.call("get_job_state", json!([kept]), json!({}));
        }
        let j = c.create(json!([1]), json!({"keepalive": null}));
        if round % 2 == 0 {
            c.call("destroy_job", json!([j]), json!({"reason": "round"}));
            destroyed.push(j);
        }
    }
    let before = c.call("list_jobs", json!([]), json!({}));
    let reasons: Vec<Value> = destroyed
        .iter()
        .map(|&j| c.state(j)["reason"].clone())
        .collect();
    assert!(reasons
        .iter()
        .all(|r| r.as_str().is_some_and(|r| r.ends_with("round"))));
    let snapshots = || {
        std::fs::read_dir(&journal)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".snap")
            })
            .count()
    };
    // About 400 records by now, so several snapshots were taken (the newest two are kept).
    assert!(snapshots() >= 2, "no background snapshots in {journal:?}");
    server.kill9();

    let (code, out, err) = replay(&journal, &["--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    let server = Server::start(&dir, &cfg, &["--snapshot-every", "40"]);
    let mut c = server.client();
    let after = c.call("list_jobs", json!([]), json!({}));
    let ids = |v: &Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&after), ids(&before));
    for (j, reason) in destroyed.iter().zip(&reasons) {
        assert_eq!(&c.state(*j)["reason"], reason, "job {j}");
    }
    assert!(server.stop().success());
}
