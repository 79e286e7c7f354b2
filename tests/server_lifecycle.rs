//! spalloc-server over real TCP: notifications, keepalive expiry, queueing and delayed
//! release, restart after SIGKILL, configuration reload on SIGHUP.
mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn notifications_for_jobs_and_machines() {
    let dir = scratch_dir("notify");
    let net = bmp_net();
    let server = Server::start(&dir, &simple_config(&net, json!({})), &[]);
    let mut watcher = server.client();
    watcher.call("notify_job", json!([]), json!({}));
    watcher.call("notify_machine", json!(["m"]), json!({}));
    let mut c = server.client();
    let j = c.create(json!([]), json!({}));
    let n = watcher.wait_notification(WAIT, |v| v.get("jobs_changed").is_some());
    assert!(n["jobs_changed"].as_array().unwrap().contains(&json!(j)));
    let n = watcher.wait_notification(WAIT, |v| v.get("machines_changed").is_some());
    assert_eq!(n["machines_changed"], json!(["m"]));
    // A watcher of one specific job hears only about it.
    let mut one = server.client();
    one.call("notify_job", json!([j]), json!({}));
    let other = c.create(json!([]), json!({}));
    c.call("destroy_job", json!([j]), json!({}));
    let n = one.wait_notification(WAIT, |v| v.get("jobs_changed").is_some());
    assert_eq!(n["jobs_changed"], json!([j]));
    assert!(!one.notifications.iter().any(|v| v["jobs_changed"]
        .as_array()
        .unwrap()
        .contains(&json!(other))));
}

#[test]
fn keepalive_expiry_destroys_the_job() {
    let dir = scratch_dir("keepalive");
    let server = Server::start(&dir, &simple_config(&bmp_net(), json!({})), &[]);
    let mut c = server.client();
    let j = c.create(json!([]), json!({"keepalive": 0.3}));
    let kept = c.create(json!([]), json!({"keepalive": null}));
    let mut watcher = server.client();
    watcher.call("notify_job", json!([j]), json!({}));
    watcher.wait_notification(WAIT, |v| v.get("jobs_changed").is_some());
    // Nobody touches job j now; the server must expire it on its own (no client traffic).
    let mut other = server.client();
    let end = std::time::Instant::now() + WAIT;
    loop {
        let s = other.call("list_jobs", json!([]), json!({}));
        if !s.as_array().unwrap().iter().any(|x| x["job_id"] == j) {
            break;
        }
        assert!(std::time::Instant::now() < end, "job never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.state(j)["reason"], "Job timed out.");
    assert_eq!(c.state(kept)["state"], 3);
}

#[test]
fn queued_jobs_start_after_the_release_delay() {
    let dir = scratch_dir("queue");
    let cfg = simple_config(&bmp_net(), json!({"seconds_before_free": 1.0}));
    let server = Server::start(&dir, &cfg, &[]);
    let mut c = server.client();
    let big = c.create(json!([1, 2]), json!({"require_torus": true}));
    c.wait_state(big, 3, WAIT);
    let a = c.create(json!([1, 1]), json!({}));
    let b = c.create(json!([2]), json!({}));
    assert_eq!(c.state(a)["state"], 1);
    assert_eq!(c.state(b)["state"], 1);
    let destroyed_at = std::time::Instant::now();
    c.call("destroy_job", json!([big]), json!({}));
    c.wait_state(a, 3, WAIT);
    assert!(
        destroyed_at.elapsed() >= Duration::from_millis(900),
        "released before seconds_before_free"
    );
    c.wait_state(b, 3, WAIT);
    let boards_a = c.call("get_job_machine_info", json!([a]), json!({}))["boards"].clone();
    let boards_b = c.call("get_job_machine_info", json!([b]), json!({}))["boards"].clone();
    assert_eq!(boards_a.as_array().unwrap().len(), 3);
    assert_eq!(boards_b.as_array().unwrap().len(), 3);
    assert_ne!(boards_a, boards_b);
}

#[test]
fn restart_after_sigkill_keeps_every_job() {
    let dir = scratch_dir("restart");
    let cfg = simple_config(&bmp_net(), json!({}));
    let server = Server::start(&dir, &cfg, &[]);
    let mut c = server.client();
    let a = c.create(json!([]), json!({}));
    let b = c.create(json!([1, 1]), json!({}));
    c.wait_state(a, 3, WAIT);
    c.wait_state(b, 3, WAIT);
    let d = c.create(json!([]), json!({}));
    c.call("destroy_job", json!([d]), json!({"reason": "gone"}));
    c.call("power_off_job_boards", json!([b]), json!({}));
    c.wait_state(b, 3, WAIT);
    let before = c.call("list_jobs", json!([]), json!({}));
    server.kill9();

    // Restart without --config: the configuration comes from the journal.
    let server = Server::start_with(&dir, None, &[]);
    let mut c = server.client();
    let after = c.call("list_jobs", json!([]), json!({}));
    let strip = |v: &Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|j| json!([j["job_id"], j["state"], j["power"], j["boards"], j["owner"]]))
            .collect()
    };
    assert_eq!(strip(&after), strip(&before));
    assert_eq!(c.state(d)["reason"], "gone");
    assert_eq!(c.state(b)["power"], false);
    // Ids continue.
    let e = c.create(json!([]), json!({}));
    assert_eq!(e, d + 1);
    let _ = server.stop();
    // --cold-start sets the old journal aside and starts empty.
    let cfg_path = dir.join("machines.json");
    let server = Server::start_with(&dir, Some(&cfg_path), &["--cold-start"]);
    let mut c = server.client();
    assert_eq!(c.call("list_jobs", json!([]), json!({})), json!([]));
    let aside = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("journal.before-cold-start")
        });
    assert!(aside, "old journal kept aside");
}

#[test]
fn restart_with_neither_config_nor_journal_fails_clearly() {
    let dir = scratch_dir("noconfig");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spalloc-server"))
        .arg("--journal")
        .arg(dir.join("j"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
    std::fs::write(
        dir.join("bad.json"),
        "{\"machines\": [{\"name\": \"x\", \"boardz\": 1}]}",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spalloc-server"))
        .arg("--journal")
        .arg(dir.join("j"))
        .arg("--config")
        .arg(dir.join("bad.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("boardz"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sighup_applies_minor_and_major_changes() {
    let dir = scratch_dir("sighup");
    let net = bmp_net();
    let cfg = simple_config(&net, json!({}));
    let mut server = Server::start(&dir, &cfg, &[]);
    let mut c = server.client();
    let mut watcher = server.client();
    watcher.call("notify_machine", json!([]), json!({}));
    let j = c.create(json!([1, 1]), json!({}));
    c.wait_state(j, 3, WAIT);

    // Minor: a tag and a dead link. The job survives; watchers hear of the machine.
    let mut minor = cfg.clone();
    minor["machines"][0]["tags"] = json!(["default", "extra"]);
    minor["machines"][0]["dead_links"] = json!([[0, 1, 0, "north"]]);
    std::fs::write(&server.config, serde_json::to_vec(&minor).unwrap()).unwrap();
    server.signal("HUP");
    let n = watcher.wait_notification(WAIT, |v| v.get("machines_changed").is_some());
    assert_eq!(n["machines_changed"], json!(["m"]));
    // (That notification may be the job's allocation, announced before the signal: wait for
    // the reload itself to show. A signal is not ordered with client commands.)
    let deadline = std::time::Instant::now() + WAIT;
    let ms = loop {
        let ms = c.call("list_machines", json!([]), json!({}));
        if ms[0]["tags"] == json!(["default", "extra"]) {
            break ms;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reload never applied: {ms}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ms[0]["dead_links"], json!([[0, 1, 0, 2]]));
    assert_eq!(c.state(j)["state"], 3);

    // Invalid: kept, logged.
    std::fs::write(&server.config, b"{\"machines\": 5}").unwrap();
    server.signal("HUP");
    assert!(server
        .wait_for_log("keeping the current configuration", WAIT)
        .is_some());
    assert_eq!(c.state(j)["state"], 3);

    // Major: a board IP changes. The job is destroyed with "Machine removed."
    let mut major = minor.clone();
    major["machines"][0]["boards"][0]["ip"] = json!("11.9.9.9");
    std::fs::write(&server.config, serde_json::to_vec(&major).unwrap()).unwrap();
    server.signal("HUP");
    let s = c.wait_state(j, 4, WAIT);
    assert_eq!(s["reason"], "Machine removed.");
}

/// A bad command line is refused before anything starts: exit status 2 and a message that
/// names the problem (argh's own status 1 would read as a failed start).
#[test]
fn bad_command_lines_exit_2_with_a_reason() {
    let dir = scratch_dir("badargs");
    let journal = dir.join("journal");
    let journal = journal.to_str().unwrap();
    for (args, says) in [
        (
            vec!["--journal", journal, "--snapshot-every", "0"],
            "--snapshot-every must be at least 1",
        ),
        (
            vec!["--journal", journal, "--snapshot-every", "often"],
            "'--snapshot-every' with value 'often'",
        ),
        (
            vec!["--journal", journal, "--frobnicate"],
            "Unrecognized argument: --frobnicate",
        ),
        (vec![], "--journal DIR is required"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_spalloc-server"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !std::path::Path::new(journal).join("LOCK").exists(),
            "{args:?} started"
        );
    }
}
