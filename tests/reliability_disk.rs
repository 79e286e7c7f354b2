//! Disk trouble through the real server: its journal lives on a tiny tmpfs that the test
//! fills up while the server runs.
//!
//! While the journal cannot be written, the server must refuse every state-changing command
//! with an exception (never a reply as if it had been done), log the trouble as an ERROR,
//! keep answering read-only commands, and neither spin nor flood its log; once space is
//! freed it must acknowledge changes again, on its own, and everything it acknowledged must
//! survive a SIGKILL and restart.
//!
//! Mounting needs root (CI runs as root); without it the test prints a notice and passes.
mod common;
mod reliability_support;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{bmp_net, scratch_dir, simple_config, Server};
use reliability_support::*;
use serde_json::json;

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill the filesystem holding `dir` with a file until a write fails (ENOSPC).
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 4096];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    // Byte by byte into the last partial page, so not even a small record fits.
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
    path
}

fn error_lines(server: &Server) -> usize {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(" ERROR "))
        .count()
}

/// The ids in a `list_jobs` reply.
fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_u64().unwrap())
        .collect()
}

fn create(c: &mut Conn, args: serde_json::Value, keepalive: serde_json::Value) -> u64 {
    c.call(
        "create_job",
        args,
        json!({"owner": "disk", "keepalive": keepalive}),
    )
    .unwrap()
    .as_u64()
    .unwrap()
}

const REFUSED: &str = "the server could not record this command, so it was not carried out: ";

/// The scenario (machine of 6 boards, journal on a 256 KiB tmpfs):
///
/// 1. two jobs fill the machine; four more queue behind them with keepalives that run out
///    a few seconds later (each expiry is a tick the server must journal);
/// 2. the tmpfs is filled; a command too big for the journal's last partial page is
///    refused with the documented exception, and an ERROR is logged; small commands are
///    then sent until one is refused, so the page's slack is smaller than any command;
/// 3. read-only commands and keepalives are still answered, and nothing changed;
/// 4. the keepalives run out while the journal is unwritable: at most two of the four
///    expiry ticks fit in the slack, so at least one is due and cannot be journaled. The
///    server must not apply it unjournaled and must not spin on it (spinning shows as a
///    flood of ERROR lines);
/// 5. space is freed: the server acknowledges changes again by itself; the next job gets
///    the next id (no refused create consumed one), the expired jobs are destroyed;
/// 6. SIGKILL and restart: exactly the acknowledged state comes back.
#[test]
fn full_disk_refuses_changes_loudly_and_recovers() {
    let dir = scratch_dir("disk");
    let Some(disk) = Tmpfs::mount(&dir.join("journal"), "256k") else {
        eprintln!("NOTICE: cannot mount a tmpfs (not root?): full-disk test skipped");
        return;
    };
    let cfg = simple_config(&bmp_net(), json!({"seconds_before_free": 0.1}));
    let mut server = Server::start(&dir, &cfg, &[]);
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    let kept_a = create(&mut c, json!([1, 1]), json!(null));
    let kept_b = create(&mut c, json!([1, 1]), json!(null));
    let expiring: Vec<u64> = [3.0, 3.4, 3.8, 4.2]
        .iter()
        .map(|k| create(&mut c, json!([1]), json!(k)))
        .collect();
    let created_at = std::time::Instant::now();
    // Wait (read-only, so no keepalive is touched) until the two big jobs are ready: no BMP
    // completion is left to journal.
    poll_until(Duration::from_secs(20), Duration::from_millis(20), || {
        let jobs = c.call("list_jobs", json!([]), json!({})).ok()?;
        let ready = jobs.as_array()?.iter().filter(|j| j["state"] == 3).count();
        (ready == 2).then_some(())
    })
    .expect("the first two jobs never became ready");

    let filler = fill(&disk.0);
    let huge_owner = "o".repeat(8000);
    let r = c
        .call_raw("create_job", json!([1]), json!({"owner": huge_owner}))
        .unwrap();
    assert!(
        r["exception"]
            .as_str()
            .is_some_and(|m| m.starts_with(REFUSED)),
        "a create_job was answered as if done while the disk is full: {r}"
    );
    assert!(
        server
            .wait_for_log(" ERROR journal write failed", Duration::from_secs(5))
            .is_some(),
        "no ERROR logged; log:\n{}",
        server.log_text()
    );
    let mut small_acked = 0;
    loop {
        // (A small change: switching off the boards of no job. Not get_job_state or
        // job_keepalive, which are journaled lazily and so not refused, see below.)
        let r = c
            .call_raw("power_off_job_boards", json!([0]), json!({}))
            .unwrap();
        if r.get("return").is_some() {
            small_acked += 1; // it fitted in the page: really written
            assert!(small_acked < 100, "the journal never filled up");
            continue;
        }
        assert!(r["exception"].as_str().unwrap().starts_with(REFUSED), "{r}");
        break;
    }
    eprintln!("{small_acked} small records fitted in the last page");
    // Bigger than the slack now: refused, deterministically.
    for (cmd, args, kwargs) in [
        (
            "create_job",
            json!([1]),
            json!({"owner": "disk", "tags": ["default"]}),
        ),
        (
            "destroy_job",
            json!([kept_a]),
            json!({"reason": "r".repeat(200)}),
        ),
        ("power_off_job_boards", json!([kept_b]), json!({})),
    ] {
        let r = c.call_raw(cmd, args, kwargs).unwrap();
        let msg = r["exception"]
            .as_str()
            .unwrap_or_else(|| panic!("{cmd} was answered as if done while the disk is full: {r}"));
        assert!(msg.starts_with(REFUSED), "{cmd}: {msg}");
    }
    // Keepalives are still acknowledged: a keepalive from the job's own host only moves its
    // deadline, which a restart resets anyway, so the server journals it lazily (the
    // records wait in memory, bounded, until the journal can be written). Jobs do not
    // expire because the disk is full.
    assert_eq!(
        c.call_raw("job_keepalive", json!([expiring[0]]), json!({}))
            .unwrap(),
        json!({"return": null})
    );
    // Read-only commands still work, and nothing changed.
    assert_eq!(
        c.call("version", json!([]), json!({})).unwrap(),
        json!("1.0.0")
    );
    let during = ids(&c.call("list_jobs", json!([]), json!({})).unwrap());
    let mut all = vec![kept_a, kept_b];
    all.extend(&expiring);
    assert_eq!(during, all);

    // Past every expiry: ticks are due that cannot all be journaled.
    let until = Duration::from_millis(4600);
    std::thread::sleep(until.saturating_sub(created_at.elapsed()));
    let errors_before = error_lines(&server);
    std::thread::sleep(Duration::from_millis(1000));
    let errors = error_lines(&server) - errors_before;
    assert!(
        errors < 20,
        "{errors} ERROR lines in 1 s: the server spins on the unwritable journal; log tail:\n{}",
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .rev()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let during = ids(&c.call("list_jobs", json!([]), json!({})).unwrap());
    let still: Vec<u64> = expiring
        .iter()
        .copied()
        .filter(|j| during.contains(j))
        .collect();
    assert!(
        still.len() >= 2,
        "expired jobs {:?} were destroyed although their ticks could not all be journaled",
        expiring
            .iter()
            .filter(|j| !during.contains(j))
            .collect::<Vec<_>>()
    );
    assert!(process_alive(&mut server.child));

    // Space again: the server acknowledges changes once more, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let after_id = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        c.call(
            "create_job",
            json!([1]),
            json!({"owner": "disk", "keepalive": null}),
        )
        .ok()
        .and_then(|v| v.as_u64())
    })
    .expect("the server never recovered after space was freed");
    assert_eq!(
        after_id,
        expiring[3] + 1,
        "a refused create_job consumed an id"
    );
    // (The first outage, the big create_job, ended when small records still fitted.)
    let recovered = poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let log = server.log.lock().unwrap();
        let outages = log
            .iter()
            .filter(|l| l.contains(" ERROR journal write failed"))
            .count();
        let recoveries: Vec<&String> = log
            .iter()
            .filter(|l| l.contains("journal: writable again"))
            .collect();
        (recoveries.len() == outages).then(|| recoveries.last().map(|l| l.to_string()))?
    })
    .expect("a recovery was not logged");
    eprintln!(
        "{} ERROR lines during the outage; then: {recovered}",
        error_lines(&server)
    );
    // (Polled with list_jobs: get_job_state would count as a keepalive.)
    poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let live = ids(&c.call("list_jobs", json!([]), json!({})).ok()?);
        (!expiring.iter().any(|j| live.contains(j))).then_some(())
    })
    .expect("the expired jobs were never destroyed after recovery");
    for &j in &expiring {
        let s = c.call("get_job_state", json!([j]), json!({})).unwrap();
        assert_eq!(s["reason"], "Cancelled: Job timed out.", "job {j}: {s}");
    }
    assert_eq!(
        c.call("get_job_state", json!([kept_a]), json!({})).unwrap()["state"],
        3
    );
    assert_eq!(
        c.call("get_job_state", json!([kept_b]), json!({})).unwrap()["power"],
        true
    );
    let acknowledged = ids(&c.call("list_jobs", json!([]), json!({})).unwrap());
    assert_eq!(acknowledged, vec![kept_a, kept_b, after_id]);

    // Everything acknowledged survives a SIGKILL; nothing refused appears.
    server.kill9();
    let server = Server::start(&dir, &cfg, &[]);
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    assert_eq!(
        ids(&c.call("list_jobs", json!([]), json!({})).unwrap()),
        acknowledged
    );
    drop(c);
    let journal = server.journal.clone();
    assert!(server.stop().success());
    // The keepalive acknowledged during the outage waited in memory and was written once
    // the disk had room, in its place: the journal agrees with its snapshots.
    let (code, out, err) = common::replay(&journal, &["--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    let events = common::replay_ok(&journal, &["--events"]);
    let keepalive = format!("job_keepalive({})", expiring[0]);
    assert_eq!(events.matches(&keepalive).count(), 1, "{events}");
}
