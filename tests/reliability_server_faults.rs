//! The server's own faults never cost a user a job (issue 15), through the real binary:
//! a BMP that sends junk before its reply, a BMP that fails to power boards off, a restart
//! that the stock client needs seconds to notice, wall-clock steps, and journal damage that
//! a crash cannot have caused.
mod common;
mod reliability_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use reliability_support::poll_until;
use serde_json::{json, Value};
use spalloc::bmp::scp::CMD_POWER;
use spalloc::bmp::{Fault, FaultKind, SimOptions, Simulator};

/// The two BMPs of `simple_config(net)`, simulated in this process (so the test can inject
/// faults), with the real server talking to them over UDP.
fn simulated_bmps(net: &str) -> Simulator {
    let addrs: Vec<SocketAddr> = [1, 2]
        .iter()
        .map(|i| format!("{net}.{i}:17893").parse().unwrap())
        .collect();
    Simulator::start(&addrs, SimOptions::default()).expect("simulator starts")
}

/// A runt datagram from the BMP's own address right before each reply used to fail the
/// whole attempt (and so the job); it is now ignored like a stale reply.
#[test]
fn runt_datagrams_before_replies_do_not_fail_jobs() {
    let dir = scratch_dir("runt");
    let net = bmp_net();
    let sim = simulated_bmps(&net);
    sim.inject(Fault::new(FaultKind::RuntBeforeReply));
    let cfg = simple_config(&net, json!({}));
    let server = server_on_simulator(&dir, &cfg);
    let mut c = server.client();
    let j = c.create(json!([1, 2]), json!({}));
    let s = c.wait_state(j, 3, Duration::from_secs(20));
    assert_eq!(s["power"], true, "{s}");
    assert!(
        sim.log().len() > 6,
        "the simulator saw too few requests: {:?}",
        sim.log().len()
    );
}

/// After a failed power-off the boards' state is unknown: they are not handed to the next
/// job (which would fail the same way) until the BMP answers a retried power-off.
#[test]
fn boards_whose_power_off_failed_are_held_until_the_bmp_answers() {
    let dir = scratch_dir("power-off-held");
    let net = bmp_net();
    let sim = simulated_bmps(&net);
    // retry_delay 0.3 s: both the runtime's attempts and the core's retries.
    let cfg = simple_config(
        &net,
        json!({"bmp": {"post_power_on_delay": 0.0, "power_on_timeout": 0.5, "command_timeout": 0.1,
                "command_retries": 1, "request_attempts": 2, "retry_delay": 0.3, "fpga_attempts": 2}}),
    );
    let mut server = server_on_simulator(&dir, &cfg);
    let mut c = server.client();
    let a = c.create(json!([1, 2]), json!({"keepalive": null}));
    c.wait_state(a, 3, Duration::from_secs(20));

    // Every power command now fails: A's power-off fails.
    sim.inject(Fault::new(FaultKind::ErrorCode(0x84)).cmd(CMD_POWER));
    c.call("destroy_job", json!([a]), json!({"reason": "done"}));
    server
        .wait_for_log("its boards are held back", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no hold logged:\n{}", server.log_text()));
    // A second job wants the same boards: it must wait, not get them.
    let b = c.create(json!([1, 2]), json!({"keepalive": null}));
    server
        .wait_for_log("retrying 1 failed power-off", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no retry logged:\n{}", server.log_text()));
    let s = c.call("get_job_state", json!([b]), json!({}));
    assert_eq!(
        s["state"], 1,
        "job {b} got boards whose power-off failed: {s}"
    );

    // The BMP answers again: the retried power-off succeeds and B gets the boards.
    sim.clear_faults();
    let s = c.wait_state(b, 3, Duration::from_secs(20));
    assert_eq!(s["power"], true, "{s}");
    let s = c.call("get_job_state", json!([a]), json!({}));
    assert_eq!(
        (s["state"].as_u64(), s["reason"].as_str()),
        (Some(4), Some("done"))
    );

    // The hold survives a crash: replay reproduces it (the retries are journaled state).
    server.kill9();
    let server = server_on_simulator(&dir, &cfg);
    let mut c = server.client();
    assert_eq!(c.state(b)["state"], 3);
}

/// A job with a short keepalive held by the stock client (whose keepalive process needs
/// about 5 s to reconnect) used to be destroyed a keepalive after a restart. Every job now
/// gets at least `--restart-grace-s` (default 30 s).
#[test]
fn a_restart_gives_every_job_a_grace() {
    let dir = scratch_dir("restart-grace");
    let cfg = simple_config(&bmp_net(), json!({}));
    let server = Server::start(&dir, &cfg, &[]);
    let mut c = server.client();
    let j = c.create(json!([1]), json!({"keepalive": 0.5}));
    c.wait_state(j, 3, Duration::from_secs(20));
    server.kill9();

    let server = Server::start(&dir, &cfg, &["--restart-grace-s", "3"]);
    let restarted = Instant::now();
    let mut c = server.client();
    // (list_jobs is read-only: it keeps nothing alive.)
    let gone = poll_until(Duration::from_secs(20), Duration::from_millis(20), || {
        (!c.job_ids().contains(&j)).then(Instant::now)
    })
    .expect("the job never expired after the grace");
    let lived = gone.duration_since(restarted);
    assert!(
        lived >= Duration::from_millis(2800),
        "the job expired {lived:?} after the restart, inside its 3 s grace"
    );
    let s = c.call("get_job_state", json!([j]), json!({}));
    assert_eq!(s["reason"], "Job timed out.", "{s}");
    // Replay tells it too.
    drop(c);
    let journal = server.journal.clone();
    assert!(server.stop().success());
    let events = replay_ok(&journal, &["--events"]);
    assert!(events.contains("at least 3.0 s of grace"), "{events}");
}

/// `--restart-grace-s` is checked.
#[test]
fn a_bad_restart_grace_is_a_command_line_error() {
    for bad in ["-1", "nan", "1e9", "soon"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_spalloc-server"))
            .args(["--journal", "/nonexistent", "--restart-grace-s", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

/// A last segment truncated into its header, or zero-filled, is damage (segments are
/// created whole), not a crash: the server refuses to start, naming the file, instead of
/// silently dropping acknowledged jobs; `--verify` fails too.
#[test]
fn a_short_or_zeroed_last_segment_is_refused() {
    for damage in ["truncated", "zeroed"] {
        let dir = scratch_dir(&format!("short-segment-{damage}"));
        let cfg = simple_config(&bmp_net(), json!({}));
        let server = Server::start(&dir, &cfg, &[]);
        let mut c = server.client();
        for _ in 0..30 {
            c.create(json!([1]), json!({"keepalive": null}));
        }
        let journal = server.journal.clone();
        server.kill9();
        let last = last_segment(&journal);
        let len = std::fs::metadata(&last).unwrap().len();
        match damage {
            "truncated" => std::fs::write(&last, [b'S', b'P', b'A']).unwrap(),
            _ => std::fs::write(&last, vec![0u8; len as usize]).unwrap(),
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_spalloc-server"))
            .arg("--journal")
            .arg(&journal)
            .arg("--simulate-bmps")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{damage}: {err}");
        let name = last.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            err.contains(&name) && err.contains("not an interrupted creation"),
            "{damage}: {err}"
        );
        let (code, out, err) = replay(&journal, &["--verify"]);
        assert_ne!(
            code, 0,
            "{damage}: --verify passed a damaged journal: {out}{err}"
        );
    }
}

/// Damage in the older files kept only as a fallback is mentioned at start-up (it used to
/// be silent, though `--verify` reported it).
#[test]
fn damage_in_the_fallback_segment_is_a_startup_warning() {
    let dir = scratch_dir("fallback-warning");
    let cfg = simple_config(&bmp_net(), json!({}));
    let server = Server::start(&dir, &cfg, &["--snapshot-every", "5"]);
    let mut c = server.client();
    for _ in 0..30 {
        c.create(json!([1]), json!({"keepalive": null}));
    }
    drop(c);
    let journal = server.journal.clone();
    assert!(server.stop().success());
    // The fallback is the segment after the older of the two newest snapshots (older
    // segments are history kept by age, which a start does not read; --verify does).
    let mut snaps: Vec<u64> = std::fs::read_dir(&journal)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("snapshot-")?
                .strip_suffix(".snap")?
                .parse()
                .ok()
        })
        .collect();
    snaps.sort();
    assert!(snaps.len() >= 2, "{snaps:?}");
    let fallback_first = snaps[snaps.len() - 2] + 1;
    let all = segments(&journal);
    let oldest = all
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains(&format!("{fallback_first:020}"))
        })
        .unwrap_or_else(|| panic!("no segment starts at {fallback_first}: {all:?}"))
        .clone();
    assert_ne!(
        Some(&oldest),
        all.last(),
        "the fallback is not the current segment"
    );
    let mut bytes = std::fs::read(&oldest).unwrap();
    assert!(bytes.len() > 40, "{}", bytes.len());
    let last = bytes.len() - 2;
    bytes[last] ^= 0x40; // inside the last record: a checksum mismatch
    std::fs::write(&oldest, bytes).unwrap();
    let (code, _, _) = replay(&journal, &["--verify"]);
    assert_ne!(code, 0, "--verify should report the damage");
    let mut server = Server::start(&dir, &cfg, &[]);
    let line = server
        .wait_for_log(
            " WARNING journal: damage in a file kept only as the fallback",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("no warning:\n{}", server.log_text()));
    assert!(
        line.contains(&*oldest.file_name().unwrap().to_string_lossy()),
        "{line}"
    );
    // And it serves.
    let mut c = server.client();
    assert_eq!(c.job_ids().len(), 30);
}

fn segments(journal: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("segment-") && n.ends_with(".log")
        })
        .collect();
    v.sort();
    v
}

fn last_segment(journal: &Path) -> PathBuf {
    segments(journal).pop().expect("a segment")
}

/// The real server with BMPs simulated by this test process.
fn server_on_simulator(dir: &PathBuf, cfg: &Value) -> Server {
    let path = dir.join("machines.json");
    std::fs::write(&path, serde_json::to_vec_pretty(cfg).unwrap()).unwrap();
    Server::start_plain(dir, Some(&path), &[])
}
