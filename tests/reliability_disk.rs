//! Disk trouble through the real server: its journal lives on a tiny tmpfs that the test
//! fills up while the server runs.
//!
//! While the journal cannot be written, the server must refuse every state-changing command
//! with an exception (never a reply as if it had been done), log the trouble as an ERROR,
//! keep answering read-only commands, and neither spin nor flood its log; once space is
//! freed it must acknowledge changes again, on its own, and everything it acknowledged must
//! survive a SIGKILL and restart.
//!
//! Mounting needs root (CI runs as root); without it the tests fail under `CI=true` and
//! elsewhere print a notice and pass.
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
    /// Mount, or `None` (and a notice) where mounting is not possible; under `CI=true`
    /// that is a failure, never a silent pass.
    fn mount_or_skip(dir: &Path, size: &str) -> Option<Tmpfs> {
        let mounted = Tmpfs::mount(dir, size);
        if mounted.is_none() {
            common::cannot_run(&format!(
                "cannot mount a tmpfs at {} (not root?)",
                dir.display()
            ));
        }
        mounted
    }

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

/// Wait (bounded; with `list_jobs`, which keeps nothing alive) until `count` jobs are ready.
fn wait_ready(c: &mut Conn, count: usize) {
    poll_until(Duration::from_secs(20), Duration::from_millis(20), || {
        let jobs = c.call("list_jobs", json!([]), json!({})).ok()?;
        let ready = jobs.as_array()?.iter().filter(|j| j["state"] == 3).count();
        (ready == count).then_some(())
    })
    .unwrap_or_else(|| panic!("{count} jobs never became ready"));
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
    let Some(disk) = Tmpfs::mount_or_skip(&dir.join("journal"), "256k") else {
        return;
    };
    let cfg = simple_config(&bmp_net(), json!({"seconds_before_free": 0.1}));
    // (Long owners make big records: allowed past the default string_bytes_max.)
    let mut server = Server::start(&dir, &cfg, &["--limit", "string_bytes_max=100000"]);
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
    wait_ready(&mut c, 2);

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

/// Issue 15: the server's own trouble never expires a job whose client keeps it alive.
///
/// A job K is kept alive (keepalives and get_job_state every 100 ms, from its own host)
/// while the journal's disk is full for longer than K's keepalive. Meanwhile another job's
/// expiry is due, so the server retries a tick every 100 ms and few passes are
/// keepalive-only (that used to get every keepalive refused), and a burst of 70,000
/// pipelined keepalives overflows the bound on keepalives waiting to be written (past which
/// they used to be refused too). Every keepalive must be answered, never refused; once the
/// disk has room K must still be alive (its timer reset by the journaled
/// `kept_alive_unrecorded` event), while the job nobody kept alive expires; and all of it
/// survives a SIGKILL.
#[test]
fn keepalives_are_answered_through_an_outage_and_kept_alive_jobs_survive() {
    let dir = scratch_dir("disk-keepalive");
    // Room for the keepalives that wait in memory to be written once space returns.
    let Some(disk) = Tmpfs::mount_or_skip(&dir.join("journal"), "16m") else {
        return;
    };
    let cfg = simple_config(&bmp_net(), json!({"seconds_before_free": 0.1}));
    let mut server = Server::start(&dir, &cfg, &[]);
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    let kept = create(&mut c, json!([1]), json!(1.5));
    let neglected = create(&mut c, json!([1]), json!(2.5));
    wait_ready(&mut c, 2);

    // K's client: a keepalive or a get_job_state every 100 ms; every reply is kept.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = server.port;
    let keeper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut k = Conn::connect(port, REPLY_WAIT).unwrap();
            let mut replies = Vec::new();
            let mut cmd = "job_keepalive";
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                replies.push((cmd, k.call_raw(cmd, json!([kept]), json!({})).unwrap()));
                cmd = match cmd {
                    "job_keepalive" => "get_job_state",
                    _ => "job_keepalive",
                };
                std::thread::sleep(Duration::from_millis(100));
            }
            replies
        })
    };

    let filler = fill(&disk.0);
    // The neglected job's expiry comes due: its tick cannot be journaled.
    assert!(
        server
            .wait_for_log(" ERROR journal write failed", Duration::from_secs(10))
            .is_some(),
        "no outage; log:\n{}",
        server.log_text()
    );
    let outage_started = std::time::Instant::now();
    // The burst: more keepalives than may wait in memory.
    let mut burst = Conn::connect(server.port, REPLY_WAIT).unwrap();
    const BURST: usize = 70_000;
    let line = json!({"command": "job_keepalive", "args": [kept], "kwargs": {}}).to_string() + "\n";
    let sender = {
        let mut stream = burst.stream.try_clone().unwrap();
        let bytes = line.repeat(BURST);
        std::thread::spawn(move || stream.write_all(bytes.as_bytes()).unwrap())
    };
    for i in 0..BURST {
        let r = burst.reply().unwrap();
        assert_eq!(
            r,
            json!({"return": null}),
            "burst keepalive {i} refused during the outage"
        );
    }
    sender.join().unwrap();
    // The outage lasts well past K's 1.5 s keepalive.
    let outage = Duration::from_millis(4000);
    std::thread::sleep(outage.saturating_sub(outage_started.elapsed()));
    assert!(
        ids(&c.call("list_jobs", json!([]), json!({})).unwrap()).contains(&kept),
        "the kept-alive job ended during the outage"
    );

    std::fs::remove_file(&filler).unwrap();
    server
        .wait_for_log("journal: writable again", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no recovery logged:\n{}", server.log_text()));
    // The neglected job expires now; K lives on (its client is still at it).
    poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let live = ids(&c.call("list_jobs", json!([]), json!({})).ok()?);
        (!live.contains(&neglected)).then_some(())
    })
    .expect("the neglected job never expired after the outage");
    let s = c
        .call("get_job_state", json!([neglected]), json!({}))
        .unwrap();
    assert_eq!(s["reason"], "Job timed out.", "{s}");
    std::thread::sleep(Duration::from_millis(2000)); // longer than K's keepalive
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let replies = keeper.join().unwrap();
    assert!(replies.len() > 40, "{}", replies.len());
    for (cmd, r) in &replies {
        assert!(r.get("exception").is_none(), "{cmd} refused: {r}");
        if *cmd == "get_job_state" {
            assert_eq!(r["return"]["state"], 3, "{r}");
        }
    }
    let live = ids(&c.call("list_jobs", json!([]), json!({})).unwrap());
    assert_eq!(
        live,
        vec![kept],
        "the kept-alive job did not survive the outage"
    );

    // Acknowledged state survives a SIGKILL; the journal tells what happened.
    server.kill9();
    let server = Server::start(&dir, &cfg, &[]);
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    assert_eq!(
        ids(&c.call("list_jobs", json!([]), json!({})).unwrap()),
        vec![kept]
    );
    drop(c);
    let journal = server.journal.clone();
    assert!(server.stop().success());
    let (code, out, err) = common::replay(&journal, &["--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    let events = common::replay_ok(&journal, &["--events"]);
    assert!(
        events.contains(&format!("keepalive timers reset for jobs [{kept}]")),
        "no kept_alive_unrecorded event:\n{}",
        events.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
}

/// Issue 15: a snapshot that fails for lack of space used to leave its temporary file
/// (`.snap.tmp`) taking the last free space until the next start. The journal has room for
/// small records but not for a snapshot: the snapshot fails, is logged, and leaves nothing.
#[test]
fn a_failed_snapshot_leaves_no_temporary_file() {
    let dir = scratch_dir("disk-snapshot");
    let Some(disk) = Tmpfs::mount_or_skip(&dir.join("journal"), "2m") else {
        return;
    };
    let cfg = simple_config(&bmp_net(), json!({}));
    let mut server = Server::start(
        &dir,
        &cfg,
        &[
            "--snapshot-every",
            "400",
            "--limit",
            "string_bytes_max=100000",
        ],
    );
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    // A state of a few hundred KB: queued jobs with long owners.
    let owner = "o".repeat(2000);
    for _ in 0..150 {
        c.call(
            "create_job",
            json!([1]),
            json!({"owner": owner, "keepalive": null}),
        )
        .unwrap();
    }
    let filler = fill(&disk.0);
    // Room for small records again, not for a snapshot.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(64 * 1024)).unwrap();
    drop(f);
    // Small changes up to the snapshot interval (switching off the boards of no job).
    let mut acked = 0;
    while server.log_text().matches("cannot write a snapshot").count() == 0 {
        let r = c
            .call_raw("power_off_job_boards", json!([0]), json!({}))
            .unwrap();
        if r.get("return").is_some() {
            acked += 1;
        }
        assert!(
            acked < 2000,
            "no snapshot was attempted; log:\n{}",
            server.log_text()
        );
    }
    let line = server
        .wait_for_log(" ERROR cannot write a snapshot", Duration::from_secs(10))
        .unwrap();
    assert!(line.contains("No space left"), "{line}");
    let temps: Vec<String> = std::fs::read_dir(&disk.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
    // Space again: the next snapshot (after the retry delay) succeeds; nothing was lost.
    std::fs::remove_file(&filler).unwrap();
    drop(c);
    let journal = server.journal.clone();
    assert!(server.stop().success());
    let (code, out, err) = common::replay(&journal, &["--verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// An admin sees the outage without reading the log: `/metrics` counts the failed writes
/// and the refused commands and says the journal is failing (a gauge to alert on), and the
/// status page's event says so with the time it began (the page shows a banner); once
/// space is freed and a change is written, both say it is healthy again. (No job has a
/// keepalive, so nothing but the test's own commands writes to the journal meanwhile.)
#[test]
fn the_outage_shows_in_the_metrics_and_on_the_status_page() {
    use common::http::{get, http_port, sample, wait_until, Subscriber};
    let dir = scratch_dir("disk-visible");
    let Some(disk) = Tmpfs::mount_or_skip(&dir.join("journal"), "256k") else {
        return;
    };
    let cfg = simple_config(&bmp_net(), json!({}));
    let mut server = Server::start(
        &dir,
        &cfg,
        &[
            "--limit",
            "string_bytes_max=100000",
            "--http",
            "127.0.0.1:0",
        ],
    );
    let http = http_port(&mut server);
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    let healthy = Subscriber::connect(http).next();
    assert_eq!(
        healthy["journal"],
        json!({"failing": false, "since_us": null})
    );

    let filler = fill(&disk.0);
    let huge_owner = "o".repeat(8000);
    for _ in 0..3 {
        let r = c
            .call_raw("create_job", json!([1]), json!({"owner": huge_owner}))
            .unwrap();
        let msg = r["exception"].as_str().unwrap_or_default();
        assert!(msg.starts_with(REFUSED), "{r}");
    }
    let m = get(http, "/metrics").text();
    assert_eq!(sample(&m, "spalloc_journal_failing"), Some(1.0), "{m}");
    assert_eq!(
        sample(&m, "spalloc_journal_write_failures_total"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "spalloc_commands_refused_total{reason=\"journal\"}"),
        Some(3.0),
        "{m}"
    );
    let during = Subscriber::connect(http).next();
    assert_eq!(during["journal"]["failing"], json!(true), "{during}");
    let since = during["journal"]["since_us"].as_u64().expect("since when");
    assert!(since <= during["sent_us"].as_u64().unwrap(), "{during}");

    std::fs::remove_file(&filler).unwrap();
    let id = c
        .call("create_job", json!([1]), json!({"owner": "disk"}))
        .expect("a change is acknowledged once there is space");
    assert!(id.as_u64().is_some(), "{id}");
    wait_until("the gauge to say healthy", || {
        sample(&get(http, "/metrics").text(), "spalloc_journal_failing") == Some(0.0)
    });
    let after = Subscriber::connect(http).next();
    assert_eq!(
        after["journal"],
        json!({"failing": false, "since_us": null})
    );
    drop(c);
    assert!(server.stop().success());
}
