//! Board health end to end, against the real binary with simulated BMPs that fail chosen
//! boards (`--simulate-fault`): a board that fails in two jobs is drained and never given out
//! again until undrained, a job hit by a failing board becomes ready on other boards, two
//! problem reports drain a board, admin drains and the emergency stop go through the admin
//! socket (mode 0600) with `spalloc-admin`, and all of it survives `kill -9` and a
//! configuration reload and shows in `spalloc-replay`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bmp_net, replay_ok, scratch_dir, simple_config, Client, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// Run `spalloc-admin --journal DIR ARGS`; returns (exit code, stdout, stderr).
fn admin(journal: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spalloc-admin"))
        .arg("--journal")
        .arg(journal)
        .args(args)
        .env("USER", "ann")
        .output()
        .expect("run spalloc-admin");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admin_ok(journal: &Path, args: &[&str]) -> String {
    let (code, out, err) = admin(journal, args);
    assert_eq!(code, 0, "spalloc-admin {args:?} failed: {out}{err}");
    out
}

fn admin_json(journal: &Path, args: &[&str]) -> Value {
    let out = admin_ok(journal, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

fn dead_boards(c: &mut Client) -> Value {
    c.call("list_machines", json!([]), json!({}))[0]["dead_boards"].clone()
}

/// Wait (bounded) until `list_machines` shows these dead boards.
fn wait_dead(c: &mut Client, want: Value) {
    let end = Instant::now() + WAIT;
    loop {
        let dead = dead_boards(c);
        if dead == want {
            return;
        }
        assert!(Instant::now() < end, "dead boards {dead}, expected {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn boards(c: &mut Client, id: u64) -> Value {
    c.call("get_job_machine_info", json!([id]), json!({}))["boards"].clone()
}

#[test]
fn a_failing_board_is_drained_and_its_jobs_become_ready_elsewhere() {
    let dir = scratch_dir("health-fail");
    let net = bmp_net();
    let cfg = simple_config(&net, json!({}));
    // Board 1 of frame 0, i.e. logical (0, 0, 1), always reports a wrong FPGA id.
    let fault = format!("{net}.1/1=fpga");
    let server = Server::start(&dir, &cfg, &["--simulate-fault", &fault]);
    let mut c = server.client();

    // Job a is given triad (0, 0) first, fails on (0, 0, 1), and is moved to triad (0, 1).
    let a = c.create(json!([1, 1]), json!({"keepalive": null}));
    c.wait_state(a, 3, WAIT);
    assert_eq!(boards(&mut c, a), json!([[0, 1, 0], [0, 1, 1], [0, 1, 2]]));
    assert_eq!(dead_boards(&mut c), json!([]), "one failure drains nothing");
    // Job b gets triad (0, 0): (0, 0, 1) fails in a second job and is drained; b becomes
    // ready on the rest of the triad.
    let b = c.create(json!([1, 1]), json!({"keepalive": null}));
    let s = c.wait_state(b, 3, WAIT);
    assert_eq!(s["power"], json!(true));
    assert_eq!(boards(&mut c, b), json!([[0, 0, 0], [0, 0, 2]]));
    assert_eq!(dead_boards(&mut c), json!([[0, 0, 1]]));
    let listed = admin_json(&server.journal, &["boards", "--drained", "--json"]);
    let drain = &listed["boards"][0]["drain"];
    assert_eq!(drain["actor"], "automatic");
    assert_eq!(
        drain["reason"],
        format!("power-on failed in jobs {a} and {b}: Requests failed on BMP {net}.1")
    );

    // kill -9: still drained, never given out (a request for exactly it is impossible).
    let journal = server.journal.clone();
    server.kill9();
    let server = Server::start(&dir, &cfg, &["--simulate-fault", &fault]);
    let mut c = server.client();
    assert_eq!(dead_boards(&mut c), json!([[0, 0, 1]]));
    let impossible = c.create(json!([0, 0, 1]), json!({"keepalive": null}));
    assert_eq!(c.state(impossible)["state"], 4);
    // Undrained (by logical coordinates): back in service.
    admin_ok(&journal, &["undrain", "m", "0", "0", "1"]);
    assert_eq!(dead_boards(&mut c), json!([]));
    let events = replay_ok(&journal, &["--events"]);
    assert!(events.contains("[failed boards [1]]"), "{events}");
    assert!(
        events.contains("taken out of service by automatic"),
        "{events}"
    );
    assert!(
        events.contains("admin ann: undrain m (0, 0, 1)"),
        "{events}"
    );
    server.stop();
}

/// The same fault given in the configuration (`simulated_faults`) instead of on the command
/// line: the job hit by it becomes ready elsewhere.
#[test]
fn simulated_faults_in_the_configuration_fail_boards_too() {
    let dir = scratch_dir("health-config-fault");
    let net = bmp_net();
    let cfg = simple_config(
        &net,
        json!({"simulated_faults": [format!("{net}.1/1=fpga")]}),
    );
    let server = Server::start(&dir, &cfg, &[]);
    let mut c = server.client();
    let a = c.create(json!([1, 1]), json!({"keepalive": null}));
    c.wait_state(a, 3, WAIT);
    assert_eq!(boards(&mut c, a), json!([[0, 1, 0], [0, 1, 1], [0, 1, 2]]));
    assert!(
        server.log_text().contains("simulated BMPs: injecting"),
        "{}",
        server.log_text()
    );
    server.stop();
}

#[test]
fn two_problem_reports_drain_a_board() {
    let dir = scratch_dir("health-report");
    let net = bmp_net();
    let cfg = simple_config(&net, json!({}));
    let server = Server::start(&dir, &cfg, &[]);
    let mut c = server.client();
    let id = c.create(json!([0, 1, 2]), json!({"keepalive": null}));
    c.wait_state(id, 3, WAIT);
    // As the Java server's v1 compatibility: args [board_ip], kwargs x, y, p, description.
    let r = c.call(
        "report_problem",
        json!(["11.0.1.2"]),
        json!({"x": 0, "y": 0, "p": 3, "description": "core 3 is dead"}),
    );
    assert_eq!(r, Value::Null);
    assert_eq!(dead_boards(&mut c), json!([]));
    c.call(
        "report_problem",
        json!(["11.0.1.2"]),
        json!({"x": 1, "y": 1, "description": "and chip (1, 1)"}),
    );
    assert_eq!(dead_boards(&mut c), json!([[0, 1, 2]]));
    assert_eq!(c.state(id)["state"], 3, "the running job keeps its board");
    let reports = admin_json(&server.journal, &["reports", "--json"]);
    assert_eq!(reports.as_array().unwrap().len(), 2);
    assert_eq!(reports[0]["job_id"], id);
    assert_eq!(reports[0]["host"], "127.0.0.1");
    assert_eq!(reports[1]["description"], "and chip (1, 1)");
    let text = admin_ok(&server.journal, &["boards"]);
    assert!(text.contains("DRAINED by reports"), "{text}");
    // Users' words reach the admin's terminal escaped, never as control sequences.
    c.call(
        "report_problem",
        json!(["11.0.0.0"]),
        json!({"x": 0, "y": 0, "description": "evil\n\u{1b}[2J"}),
    );
    let text = admin_ok(&server.journal, &["reports"]);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains("evil\\n\\u{1b}[2J"), "{text}");
    // A bad report is an error and changes nothing.
    let bad = c.call_raw(
        "report_problem",
        json!(["10.9.9.9"]),
        json!({"x": 0, "y": 0}),
    );
    assert!(
        bad["exception"].as_str().unwrap().contains("10.9.9.9"),
        "{bad}"
    );
    let bad = c.call_raw("report_problem", json!([]), json!({"x": 0, "y": 0}));
    assert!(bad.get("exception").is_some(), "{bad}");
    server.stop();
}

#[test]
fn admin_drains_survive_restart_and_reload_and_the_socket_is_private() {
    let dir = scratch_dir("health-admin");
    let net = bmp_net();
    let cfg = simple_config(&net, json!({}));
    let server = Server::start(&dir, &cfg, &[]);
    let sock = server.journal.join("admin.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "admin socket mode {mode:o}");
    let mut c = server.client();
    admin_ok(
        &server.journal,
        &[
            "drain",
            "m",
            "--physical",
            "0",
            "1",
            "0",
            "--reason",
            "fan broken",
        ],
    );
    admin_ok(
        &server.journal,
        &["drain", "--ip", "11.0.0.2", "--reason", "red"],
    );
    wait_dead(&mut c, json!([[0, 0, 2], [0, 1, 0]]));
    // Mistakes are refused and change nothing.
    let (code, _, err) = admin(
        &server.journal,
        &["drain", "m", "0", "9", "0", "--reason", "x"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("outside"), "{err}");
    let (code, _, err) = admin(
        &server.journal,
        &["drain", "--ip", "11.0.0.2", "--reason", "x"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("already out of service"), "{err}");
    let (code, _, _) = admin(&server.journal, &["drain", "m", "0", "0"]);
    assert_eq!(code, 2, "a bad command line");

    // A reload (tags changed) keeps the drains.
    let mut cfg2 = cfg.clone();
    cfg2["machines"][0]["tags"] = json!(["default", "fresh"]);
    std::fs::write(&server.config, serde_json::to_vec(&cfg2).unwrap()).unwrap();
    let mut server = server;
    server.signal("HUP");
    assert!(server.wait_for_log("configuration applied", WAIT).is_some());
    assert_eq!(dead_boards(&mut c), json!([[0, 0, 2], [0, 1, 0]]));
    let listing = admin_ok(&server.journal, &["boards", "--drained"]);
    assert!(listing.contains("DRAINED by admin (ann)"), "{listing}");
    assert!(listing.contains("fan broken"), "{listing}");

    // kill -9 keeps them too; the socket is made afresh.
    server.kill9();
    let server = Server::start(&dir, &cfg2, &[]);
    let mut c = server.client();
    assert_eq!(dead_boards(&mut c), json!([[0, 0, 2], [0, 1, 0]]));
    admin_ok(
        &server.journal,
        &["undrain", "m", "--physical", "0", "1", "0"],
    );
    assert_eq!(dead_boards(&mut c), json!([[0, 0, 2]]));
    let events = replay_ok(&server.journal, &["--events"]);
    assert!(events.contains("admin ann: drain m cabinet 0 frame 1 board 0 (\"fan broken\")"));
    // The state map marks drained boards.
    let last = events
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let at = replay_ok(&server.journal, &["--at", &last]);
    assert!(at.contains("y=0  [. . D]"), "{at}");
    server.stop();
    assert!(!sock.exists(), "the socket is removed at a clean stop");
    // A clean stop writes a snapshot: the drain is in it, and the snapshot agrees with the
    // fold of the journal.
    let server = Server::start(&dir, &cfg2, &[]);
    let mut c = server.client();
    assert_eq!(dead_boards(&mut c), json!([[0, 0, 2]]));
    let journal = server.journal.clone();
    server.stop();
    let verify = replay_ok(&journal, &["--verify"]);
    assert!(verify.lines().any(|l| l.starts_with("OK: ")), "{verify}");
}

#[test]
fn emergency_stop_powers_off_ends_jobs_and_holds_until_resume_across_kill9() {
    let dir = scratch_dir("health-estop");
    let net = bmp_net();
    let cfg = simple_config(&net, json!({}));
    let other_sock = dir.join("elsewhere.sock");
    let sock_arg = other_sock.to_str().unwrap().to_string();
    let server = Server::start(&dir, &cfg, &["--admin-socket", &sock_arg]);
    let mut c = server.client();
    let running = c.create(json!([1, 1]), json!({"keepalive": null}));
    c.wait_state(running, 3, WAIT);
    let run_admin = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_spalloc-admin"))
            .arg("--socket")
            .arg(&other_sock)
            .args(args)
            .env("USER", "ann")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run_admin(&["emergency-stop", "--reason", "cooling failed"]);
    let status = run_admin(&["status"]);
    assert!(status.contains("EMERGENCY STOP in force"), "{status}");
    assert!(status.contains("by ann: cooling failed"), "{status}");
    let s = c.state(running);
    assert_eq!(s["state"], 4);
    assert_eq!(s["reason"], "Emergency stop: cooling failed");
    let refused = c.create(json!([]), json!({"keepalive": null}));
    assert_eq!(
        c.state(refused)["reason"],
        "Cancelled: Emergency stop: cooling failed"
    );
    let mut server = server;
    assert!(server
        .wait_for_log(&format!("job {running}: powered down"), WAIT)
        .is_some());

    server.kill9();
    let server = Server::start(&dir, &cfg, &["--admin-socket", &sock_arg]);
    let mut c = server.client();
    let still = c.create(json!([]), json!({"keepalive": null}));
    assert_eq!(c.state(still)["state"], 4, "the stop survives kill -9");
    run_admin(&["resume"]);
    let status = run_admin(&["status"]);
    assert!(status.starts_with("in service"), "{status}");
    let ok = c.create(json!([]), json!({"keepalive": null}));
    c.wait_state(ok, 3, WAIT);
    let events = replay_ok(&server.journal, &["--events"]);
    assert!(
        events.contains("EMERGENCY STOP (\"cooling failed\")"),
        "{events}"
    );
    assert!(events.contains("resume after emergency stop"), "{events}");
    let job = replay_ok(&server.journal, &["--job", &running.to_string()]);
    assert!(
        job.contains("ENDED (emergency_stop): Emergency stop: cooling failed"),
        "{job}"
    );
    server.stop();
}

/// A journal directory deeper than a socket address can name (108 bytes) still gets its
/// admin socket, and `spalloc-admin` reaches it.
#[test]
fn the_admin_socket_works_under_a_long_journal_path() {
    let base = scratch_dir("health-long");
    let deep = base.join("a".repeat(60)).join("b".repeat(60));
    std::fs::create_dir_all(&deep).unwrap();
    let server = Server::start(&deep, &simple_config(&bmp_net(), json!({})), &[]);
    assert!(server.journal.join("admin.sock").to_str().unwrap().len() > 108);
    let mode = std::fs::metadata(server.journal.join("admin.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    admin_ok(
        &server.journal,
        &["drain", "m", "0", "1", "1", "--reason", "deep"],
    );
    let mut c = server.client();
    assert_eq!(dead_boards(&mut c), json!([[0, 1, 1]]));
    server.stop();
}

/// Something else at the admin socket's default place: the server warns and serves anyway
/// (users must not lose the service for the admin channel); at a place given with
/// `--admin-socket` it refuses to start instead.
#[test]
fn a_blocked_admin_socket_path_warns_by_default_and_stops_an_explicit_one() {
    let dir = scratch_dir("health-blocked");
    let cfg = simple_config(&bmp_net(), json!({}));
    std::fs::create_dir_all(dir.join("journal")).unwrap();
    std::fs::write(dir.join("journal").join("admin.sock"), "not a socket").unwrap();
    let mut server = Server::start(&dir, &cfg, &[]);
    let warning = server
        .wait_for_log("serving without the admin channel", WAIT)
        .expect("a warning");
    assert!(warning.contains("WARNING"), "{warning}");
    let mut c = server.client();
    let id = c.create(json!([]), json!({"keepalive": null}));
    c.wait_state(id, 3, WAIT);
    server.stop();

    let blocked = dir.join("blocked.sock");
    std::fs::write(&blocked, "not a socket").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spalloc-server"))
        .arg("--journal")
        .arg(dir.join("journal"))
        .arg("--admin-socket")
        .arg(&blocked)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a socket"),
        "{out:?}"
    );
}

/// A BMP that does not answer drains nothing: the job on it ends, and its frame is kept from
/// new jobs (shown as dead) while the other frame serves on. (That an answer brings the frame
/// back is checked in core_health: the simulator's silence here lasts, since the runtime's
/// idle version probes would use up a counted one at an unknown pace.)
#[test]
fn an_unanswering_bmp_drains_nothing_and_its_frame_is_kept_from_new_jobs() {
    let dir = scratch_dir("health-silent");
    let net = bmp_net();
    let cfg = simple_config(&net, json!({}));
    let fault = format!("{net}.2=silent");
    let mut server = Server::start(&dir, &cfg, &["--simulate-fault", &fault]);
    let mut c = server.client();
    let id = c.create(json!([0, 1, 0]), json!({"keepalive": null}));
    let s = c.wait_state(id, 4, WAIT);
    assert_eq!(
        s["reason"],
        format!("Machine configuration failed. Error: Requests failed on BMP {net}.2")
    );
    assert!(server
        .wait_for_log(
            "does not answer: its boards are not given to new jobs",
            WAIT
        )
        .is_some());
    assert_eq!(
        dead_boards(&mut c),
        json!([[0, 1, 0], [0, 1, 1], [0, 1, 2]])
    );
    let listed = admin_json(&server.journal, &["boards", "--json"]);
    assert_eq!(
        listed["boards"],
        json!([]),
        "nothing drained or blamed: {listed}"
    );
    assert_eq!(listed["unreachable_frames"][0]["frame"], 1, "{listed}");
    let other = c.create(json!([1, 1]), json!({"keepalive": null}));
    c.wait_state(other, 3, WAIT);
    assert_eq!(
        boards(&mut c, other),
        json!([[0, 0, 0], [0, 0, 1], [0, 0, 2]])
    );
    server.stop();
}
