//! Journal history is kept by age, never by the number of restarts: after ten restarts
//! `spalloc-replay --job 1` still tells job 1's whole life. And a journal directory the
//! server has to create is announced as a WARNING (a mistyped `--journal`).
mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn ten_restarts_keep_job_1_whole_life() {
    let dir = scratch_dir("retention-restarts");
    let cfg = simple_config(&bmp_net(), json!({}));
    let mut server = Server::start(&dir, &cfg, &[]);
    let journal = server.journal.clone();
    let warning = server
        .wait_for_log("WARNING new journal at", WAIT)
        .unwrap_or_else(|| panic!("no new-journal warning; log:\n{}", server.log_text()));
    assert!(
        warning.contains(&journal.display().to_string()),
        "{warning}"
    );
    let mut c = server.client();
    let id = c.create(json!([1]), json!({"keepalive": null, "owner": "alice"}));
    assert_eq!(id, 1);
    c.wait_state(id, 3, WAIT);
    c.call(
        "destroy_job",
        json!([id]),
        json!({"reason": "done for today"}),
    );
    drop(c);
    assert!(server.stop().success());

    for round in 0..10 {
        let mut server = Server::start(&dir, &cfg, &[]);
        // Each restart writes a snapshot at shutdown; give each some traffic too.
        let mut c = server.client();
        let other = c.create(json!([1]), json!({"keepalive": null, "owner": "bob"}));
        c.call("destroy_job", json!([other]), json!({}));
        drop(c);
        assert!(
            server
                .wait_for_log("WARNING new journal", Duration::ZERO)
                .is_none(),
            "restart {round} warned of a new journal:\n{}",
            server.log_text()
        );
        assert!(server.stop().success());
    }
    let snapshots = std::fs::read_dir(&journal)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".snap")
        })
        .count();
    assert!(snapshots >= 10, "one snapshot per clean stop: {snapshots}");

    let h = replay_json(&journal, &["--job", "1"]);
    assert_eq!(h["created"]["owner"], "alice", "{h}");
    assert_eq!(h["created"]["seq"].as_u64().is_some(), true, "{h}");
    assert_eq!(h["ended"]["reason"], "done for today", "{h}");
    assert!(h["allocation"]["boards"].as_array().is_some(), "{h}");
    let text = replay_ok(&journal, &["--job", "1"]);
    assert!(!text.contains("before the retained history"), "{text}");
    let s = replay_json(&journal, &[]);
    assert_eq!(s["first_seq"], 1, "history from the very first record: {s}");
    assert_eq!(s["jobs_created"], 11, "{s}");
}
