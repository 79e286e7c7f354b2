//! Crash safety of the real `spalloc-server` binary: SIGKILL at random moments under load
//! from several clients, restart on the same journal, and check that nothing acknowledged
//! was lost; then the same with the journal's last segment truncated (a disk that lost its
//! last writes).
//!
//! Both tests are seeded: the seed is printed, and `SPALLOC_SEED=N` replays the same random
//! choices (the interleaving of the client threads and the kill moments still vary with the
//! scheduler, so a replay is likely, not certain, to reproduce a failure).
//! `SPALLOC_KILL_POINTS=N` changes the number of kill points of the first test (default 24).
mod common;
mod reliability_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{bmp_net, scratch_dir, Server};
use reliability_support::*;
use serde_json::{json, Value};
use spalloc::core::{Core, TIMED_OUT};

/// What the clients were told (acknowledged) and what they asked for (sent), over every
/// iteration of a test.
#[derive(Default)]
struct Ledger {
    /// Every job id a `create_job` reply gave, with whether its request can fit no machine.
    created: BTreeMap<u64, bool>,
    /// Every `destroy_job` sent (acknowledged or not): job → the reasons given.
    destroy_sent: BTreeMap<u64, Vec<String>>,
    /// Every `destroy_job` acknowledged.
    destroy_acked: BTreeSet<u64>,
    /// Jobs believed live (targets for the clients' commands).
    pool: Vec<u64>,
    /// Replies received, per command, for the summary.
    replies: u64,
}

impl Ledger {
    /// Record an acknowledged creation.
    fn created(&mut self, id: u64, impossible: bool) {
        // (Threads record their replies in any order, so only uniqueness is checked here;
        // the order across restarts is checked by `check_after_restart`'s callers.)
        assert!(
            self.created.insert(id, impossible).is_none(),
            "job id {id} was acknowledged twice: ids must never repeat"
        );
        self.pool.push(id);
    }

    /// The reasons job `id` may carry once destroyed, given what the clients did.
    fn reason_allowed(&self, id: u64, reason: Option<&str>) -> bool {
        let Some(reason) = reason else {
            return false;
        };
        let reason = reason.strip_prefix("Cancelled: ").unwrap_or(reason);
        if reason == TIMED_OUT {
            return true;
        }
        if reason == spalloc::core::NO_SUITABLE_MACHINE {
            return self.created.get(&id) == Some(&true);
        }
        self.destroy_sent
            .get(&id)
            .is_some_and(|rs| rs.iter().any(|r| r == reason))
    }
}

/// One create_job shape and keyword set; `true` if no machine of [`config`] can hold it.
fn random_create(rng: &mut Rng) -> (Value, Value, bool) {
    let shapes: &[(Value, bool)] = &[
        (json!([]), false),
        (json!([1]), false),
        (json!([2]), false),
        (json!([4]), false),
        (json!([1, 1]), false),
        (json!([2, 1]), false),
        (json!([1, 0, 2]), false),
        (json!([0, 1, 1]), false),
        (json!([3, 3]), true),
        (json!([100]), true),
        (json!([7, 7, 0]), true),
    ];
    let (args, impossible) = rng.pick(shapes).clone();
    let impossible: bool = impossible;
    let keepalive = match rng.below(4) {
        0 => Value::Null,
        1 => json!(0.3),
        2 => json!(1.5),
        _ => json!(10.0),
    };
    let mut kwargs = json!({"owner": "crash-test", "keepalive": keepalive});
    let mut impossible = impossible;
    if rng.chance(0.2) && args.as_array().unwrap().len() < 3 {
        let machine = *rng.pick(&["m", "s"]);
        kwargs["machine"] = json!(machine);
        // Machine `s` is one triad: more than three boards or triads never fit.
        impossible |= machine == "s" && (args == json!([4]) || args == json!([2, 1]));
    }
    (args, kwargs, impossible)
}

/// The configuration: machine `m` of 2×2 triads over two frames, machine `s` of one triad,
/// generous BMP timeouts (a debug build on a loaded machine must not fail a BMP request).
fn config(net: &str) -> Value {
    let mut cfg = two_machine_config(net, 2, 2, json!({}));
    cfg["bmp"] = json!({"post_power_on_delay": 0.0, "power_on_timeout": 5.0,
                        "command_timeout": 1.0, "command_retries": 3, "request_attempts": 3,
                        "retry_delay": 0.05, "fpga_attempts": 2});
    cfg
}

/// One client thread: random commands until the connection fails (the server was killed)
/// or `stop` is set, recording every acknowledgement in the ledger.
fn client_loop(
    port: u16,
    mut rng: Rng,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    tag: u32,
) {
    let Ok(mut c) = Conn::connect(port, Duration::from_secs(10)) else {
        return;
    };
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let target = {
            let l = ledger.lock().unwrap();
            if l.pool.is_empty() {
                None
            } else {
                Some(*rng.pick(&l.pool))
            }
        };
        let pool_len = ledger.lock().unwrap().pool.len();
        let op = rng.below(100);
        let result = match (op, target) {
            (0..=29, _) | (_, None) if pool_len < 40 => {
                let (args, kwargs, impossible) = random_create(&mut rng);
                c.call("create_job", args, kwargs).map(|v| {
                    let id = v.as_u64().unwrap_or_else(|| panic!("create_job gave {v}"));
                    ledger.lock().unwrap().created(id, impossible);
                })
            }
            (_, None) => Ok(()),
            (0..=44, Some(id)) => {
                let reason = format!("client {tag} destroy {n}");
                ledger
                    .lock()
                    .unwrap()
                    .destroy_sent
                    .entry(id)
                    .or_default()
                    .push(reason.clone());
                c.call("destroy_job", json!([id]), json!({"reason": reason}))
                    .map(|v| {
                        assert_eq!(v, Value::Null);
                        let mut l = ledger.lock().unwrap();
                        l.destroy_acked.insert(id);
                        l.pool.retain(|&j| j != id);
                    })
            }
            (45..=59, Some(id)) => c.call("job_keepalive", json!([id]), json!({})).map(|_| ()),
            (60..=69, Some(id)) => c
                .call("power_on_job_boards", json!([id]), json!({}))
                .map(|_| ()),
            (70..=79, Some(id)) => c
                .call("power_off_job_boards", json!([id]), json!({}))
                .map(|_| ()),
            (80..=89, Some(id)) => c.call("get_job_state", json!([id]), json!({})).map(|s| {
                if s["state"] == 4 {
                    ledger.lock().unwrap().pool.retain(|&j| j != id);
                }
            }),
            (_, Some(_)) => c.call("list_jobs", json!([]), json!({})).map(|jobs| {
                assert_no_double_booking(&jobs);
            }),
        };
        match result {
            Ok(()) => ledger.lock().unwrap().replies += 1,
            // An exception reply would be a bug; a closed connection is the kill.
            Err(e) if e.contains("raised") => panic!("client {tag}: {e}"),
            Err(_) => return,
        }
    }
}

/// Send `lines` on one connection all at once, then read one reply per line (pipelined, so
/// the server answers them in a few group commits).
fn pipelined(port: u16, lines: &[String]) -> Vec<Value> {
    let mut c = Conn::connect(port, REPLY_WAIT).expect("connect for checks");
    let all: String = lines.concat();
    // Write from a thread: the replies must be read while writing, or both sides' buffers
    // could fill.
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        w.write_all(all.as_bytes()).expect("write checks");
    });
    let replies: Vec<Value> = (0..lines.len())
        .map(|_| c.reply().expect("reply to a check"))
        .collect();
    writer.join().unwrap();
    replies
}

/// The guarantees after a restart (see [`kill_restart_keeps_every_acknowledged_change`]).
/// Returns the highest job id seen.
fn check_after_restart(server: &mut Server, ledger: &Ledger, iteration: usize) -> u64 {
    assert!(
        process_alive(&mut server.child),
        "server died after restart"
    );
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    let jobs = c
        .call("list_jobs", json!([]), json!({}))
        .expect("list_jobs");
    assert_no_double_booking(&jobs);
    let mut max_seen = ledger.created.keys().next_back().copied().unwrap_or(0);
    for j in jobs.as_array().unwrap() {
        max_seen = max_seen.max(j["job_id"].as_u64().unwrap());
    }
    let ids: Vec<u64> = ledger.created.keys().copied().collect();
    let lines: Vec<String> = ids
        .iter()
        .map(|id| format!("{{\"command\": \"get_job_state\", \"args\": [{id}]}}\n"))
        .collect();
    for (id, reply) in ids.iter().zip(pipelined(server.port, &lines)) {
        let s = &reply["return"];
        let state = s["state"]
            .as_u64()
            .unwrap_or_else(|| panic!("job {id}: {reply}"));
        match state {
            1..=3 => assert!(
                !ledger.destroy_acked.contains(id),
                "iteration {iteration}: job {id} was destroyed (acknowledged) but is live again: {s}"
            ),
            4 => assert!(
                ledger.reason_allowed(*id, s["reason"].as_str()),
                "iteration {iteration}: job {id} destroyed with an unexplained reason: {s} \
                 (destroys sent: {:?})",
                ledger.destroy_sent.get(id)
            ),
            _ => panic!("iteration {iteration}: acknowledged job {id} is unknown after restart: {s}"),
        }
    }
    max_seen
}

/// Kill points: start → random load from four clients for 50–500 ms → SIGKILL → restart on
/// the same (growing) journal → check, at least 20 times. After every restart:
///
/// * every job whose `create_job` reply was received exists: live, or destroyed with a
///   reason the clients caused (their own `destroy_job` reason, possibly as
///   `Cancelled: <reason>` for a queued job), `Job timed out.`, or `No suitable machines
///   available.` for a shape no machine can hold;
/// * every acknowledged `destroy_job` stayed destroyed;
/// * no board is in two live jobs (`list_jobs`);
/// * job ids never repeat: every acknowledged id is greater than all earlier ones, and the
///   first job created after a restart gets an id greater than every id seen before;
/// * the server is alive and answering (a debug build checks the core's invariants after
///   every event and panics on a violation), also right before each kill.
#[test]
fn kill_restart_keeps_every_acknowledged_change() {
    let mut rng = Rng::new(seed("kill_restart_keeps_every_acknowledged_change"));
    let kill_points: usize = std::env::var("SPALLOC_KILL_POINTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let dir = scratch_dir("crash");
    let cfg = config(&bmp_net());
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut server = Server::start(&dir, &cfg, &[]);
    let mut survived = 0;
    for iteration in 0..kill_points {
        let max_seen = check_after_restart(&mut server, &ledger.lock().unwrap(), iteration);
        // A new job right after the restart must get a fresh id.
        let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
        let id = c
            .call(
                "create_job",
                json!([1]),
                json!({"owner": "check", "keepalive": null}),
            )
            .unwrap()
            .as_u64()
            .unwrap();
        assert!(
            id > max_seen,
            "iteration {iteration}: new job {id} reuses an id (≤ {max_seen})"
        );
        ledger.lock().unwrap().created(id, false);
        drop(c);

        load_then_kill(server, &ledger, &mut rng, 4, (50, 500), iteration);
        survived += 1;
        server = Server::start(&dir, &cfg, &[]);
    }
    check_after_restart(&mut server, &ledger.lock().unwrap(), kill_points);
    let l = ledger.lock().unwrap();
    eprintln!(
        "kill points survived: {survived}; jobs acknowledged: {}; destroys acknowledged: {}; \
         replies: {}; journal: {} bytes",
        l.created.len(),
        l.destroy_acked.len(),
        l.replies,
        dir_bytes(&dir.join("journal"))
    );
    assert!(survived >= 20);
    assert!(
        l.created.len() > kill_points,
        "the load created too few jobs"
    );
    drop(l);
    assert!(server.stop().success());
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The highest-numbered segment file of a journal.
fn last_segment(journal: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(journal)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("segment-") && name.ends_with(".log")
        })
        .collect();
    segments.sort();
    segments.pop().expect("a segment file")
}

/// Offsets where frames of a segment start (after the 20-byte header), and its end.
fn frame_boundaries(bytes: &[u8]) -> BTreeSet<usize> {
    let mut at = 20;
    let mut out = BTreeSet::from([at]);
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || at + 8 + len > bytes.len() {
            break;
        }
        at += 8 + len;
        out.insert(at);
    }
    out
}

/// The state the journal in `journal` describes, folded exactly as a restart would (newest
/// snapshot, then every record after it; a torn tail ends the journal).
fn replay(journal: &Path) -> Core {
    let reader = spalloc_journal::Reader::open(journal).expect("readable journal");
    let (mut core, from) = match reader.snapshots().last() {
        Some(info) => {
            let s = reader.read_snapshot(info).expect("snapshot");
            (rmp_serde_from_slice(&s.data), s.covered_seq + 1)
        }
        None => (Core::at_journal_start(), reader.first_seq()),
    };
    for record in reader.records_from(from).expect("records") {
        let (_, bytes) = record.expect("record");
        core.handle(&spalloc::server::decode_event(&bytes).expect("decodable record"));
        core.discard_effects();
    }
    core
}

fn rmp_serde_from_slice(bytes: &[u8]) -> Core {
    // The root package depends on rmp-serde, so tests can use it too.
    rmp_serde::from_slice(bytes).expect("snapshot decodes")
}

/// Torn tails through the real server: after each kill, the last segment file is truncated
/// at a random offset inside its last records (never into its 20-byte header), and the
/// server restarted.
///
/// The guarantee is weaker than for a plain kill, because a truncation can remove records
/// that were acknowledged (it simulates a disk that lost writes it had promised). What must
/// hold after each restart:
///
/// * the server starts (no refusal: damage at the end of the last segment is a torn tail),
///   and logs the repair whenever the cut fell inside a record;
/// * its state is exactly the one the surviving records describe: every job it lists is
///   live in an offline replay of the truncated journal, and every job live there is still
///   listed or has since timed out (the restart reset keepalives, so only by `Job timed
///   out.`);
/// * no board is in two live jobs, and the server stays alive (debug invariant checks);
/// * job ids never repeat relative to what the journal still holds: the first job created
///   after the restart gets exactly the replay's next id. (An acknowledged job whose records
///   were cut away may see its id given again; that is the data the simulated disk lost.)
#[test]
fn truncated_journal_tail_restarts_consistently() {
    let mut rng = Rng::new(seed("truncated_journal_tail_restarts_consistently"));
    let dir = scratch_dir("torn");
    let cfg = config(&bmp_net());
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut server = Server::start(&dir, &cfg, &[]);
    let (mut cuts, mut repairs) = (0, 0);
    for iteration in 0..10 {
        load_then_kill(server, &ledger, &mut rng, 3, (100, 400), iteration);
        // The clients' view no longer holds (records may be lost): start a fresh ledger.
        *ledger.lock().unwrap() = Ledger::default();

        let segment = last_segment(&dir.join("journal"));
        let bytes = std::fs::read(&segment).unwrap();
        let boundaries = frame_boundaries(&bytes);
        let mut mid_record = false;
        if bytes.len() > 20 {
            // Cut into the last few records: up to 2 KiB back from the end.
            let span = (bytes.len() - 20).min(2048) as u64;
            let mut cut = bytes.len() - rng.range(1, span) as usize;
            // A third of the cuts fall exactly between two records (a disk that lost whole
            // records: nothing to repair, the journal just ends earlier).
            let near: Vec<usize> = boundaries
                .range(bytes.len() - span as usize..bytes.len())
                .copied()
                .collect();
            if rng.chance(0.33) && !near.is_empty() {
                cut = *rng.pick(&near);
            }
            assert!(cut >= 20);
            mid_record = !boundaries.contains(&cut);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&segment)
                .unwrap();
            f.set_len(cut as u64).unwrap();
            f.sync_all().unwrap();
            cuts += 1;
            eprintln!(
                "iteration {iteration}: cut {} at {cut} of {} bytes ({})",
                segment.file_name().unwrap().to_string_lossy(),
                bytes.len(),
                if mid_record {
                    "inside a record"
                } else {
                    "at a record boundary"
                }
            );
        }
        let expected = replay(&dir.join("journal"));

        server = Server::start(&dir, &cfg, &[]);
        if mid_record {
            repairs += 1;
            assert!(
                server
                    .wait_for_log("journal: cut a torn tail", Duration::from_secs(5))
                    .is_some(),
                "iteration {iteration}: the repair was not logged; log:\n{}",
                server.log_text()
            );
        }
        let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
        let jobs = c.call("list_jobs", json!([]), json!({})).unwrap();
        assert_no_double_booking(&jobs);
        let listed: BTreeSet<u64> = jobs
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_u64().unwrap())
            .collect();
        let live: BTreeSet<u64> = expected.live_job_ids().into_iter().collect();
        assert!(
            listed.is_subset(&live),
            "iteration {iteration}: the server lists jobs {:?} the surviving journal does not hold",
            listed.difference(&live).collect::<Vec<_>>()
        );
        for gone in live.difference(&listed) {
            let s = c.call("get_job_state", json!([gone]), json!({})).unwrap();
            let reason = s["reason"].as_str().unwrap_or("");
            assert!(
                s["state"] == 4 && reason.trim_start_matches("Cancelled: ") == TIMED_OUT,
                "iteration {iteration}: job {gone} is live in the journal but {s} on the server"
            );
        }
        let id = c
            .call(
                "create_job",
                json!([1]),
                json!({"owner": "check", "keepalive": null}),
            )
            .unwrap()
            .as_u64()
            .unwrap();
        assert_eq!(
            id,
            expected.next_job_id(),
            "iteration {iteration}: the first new job id does not follow the surviving journal"
        );
        assert!(process_alive(&mut server.child));
    }
    eprintln!("torn tails: {cuts} truncations, {repairs} inside a record, all restarted");
    assert!(server.stop().success());
}

/// Drive `server` with `clients` random client threads for a random time in
/// `run_ms` (the kill point; the sleep picks a moment, it synchronises nothing), check it is
/// still alive, SIGKILL it, then stop and join the clients.
fn load_then_kill(
    mut server: Server,
    ledger: &Arc<Mutex<Ledger>>,
    rng: &mut Rng,
    clients: u32,
    run_ms: (u64, u64),
    iteration: usize,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let (l, s, r) = (Arc::clone(ledger), Arc::clone(&stop), rng.fork());
            let port = server.port;
            std::thread::spawn(move || client_loop(port, r, l, s, t))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(rng.range(run_ms.0, run_ms.1)));
    assert!(
        process_alive(&mut server.child),
        "iteration {iteration}: the server died under load; log:\n{}",
        server.log_text()
    );
    server.kill9();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        if let Err(e) = t.join() {
            std::panic::resume_unwind(e);
        }
    }
}
