//! Shared pieces of the reliability tests (`tests/reliability_*.rs`): a seeded random number
//! generator whose seed is printed and can be replayed with `SPALLOC_SEED=N`, a protocol
//! connection that reports failures instead of panicking (the server may be killed under
//! it), machine configurations, and process probes (alive, resident memory).
//!
//! It does not depend on `tests/common` (the real-server harness); crates that start the
//! server declare both.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Every command of the protocol, for the fuzzers.
#[allow(unused_imports)] // (not every test binary that includes this module fuzzes)
pub use spalloc::protocol::COMMANDS;

/// Every keyword any command takes, plus a few it must refuse or ignore.
pub const KEYWORDS: &[&str] = &[
    "owner",
    "keepalive",
    "machine",
    "tags",
    "min_ratio",
    "max_dead_boards",
    "max_dead_links",
    "require_torus",
    "reason",
    "job_id",
    "machine_name",
    "x",
    "y",
    "z",
    "cabinet",
    "frame",
    "board",
    "chip_x",
    "chip_y",
    "client",
    "self",
    "unknown",
];

/// Every wait on a server reply is capped at this.
pub const REPLY_WAIT: Duration = Duration::from_secs(20);

/// The seeded generator (splitmix64) every simulation, test and benchmark shares: the tests
/// must replay exactly from a printed seed.
#[allow(unused_imports)] // not every test crate that shares this module draws numbers
pub use spalloc::core::rng::Rng;

/// The seed for test `name`: `SPALLOC_SEED` if set, else taken from the clock. Printed either
/// way so a failure can be replayed.
pub fn seed(name: &str) -> u64 {
    let seed = match std::env::var("SPALLOC_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SPALLOC_SEED={s:?} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("{name}: seed {seed} (replay with SPALLOC_SEED={seed})");
    seed
}

/// A protocol connection that never panics on I/O: every call returns `Err` with the cause
/// when the server is gone, closes the connection, or does not answer within the read
/// timeout. Notifications are skipped. (The one line-protocol client, under its old name.)
pub use spalloc::testkit::LineClient as Conn;

/// A configuration for the harness's `Server::start`: machine `m` of `width`×`height` triads
/// (one BMP per frame; frame = y, board = 3x + z) and machine `s`, a single triad with its
/// own BMP, both tagged `default`; fast BMP timings; `extra` top-level keys override.
pub fn two_machine_config(net: &str, width: u32, height: u32, extra: Value) -> Value {
    let mut boards = Vec::new();
    let mut bmps = Vec::new();
    for y in 0..height {
        bmps.push(json!({"cabinet": 0, "frame": y, "address": format!("{net}.{}", y + 1)}));
        for x in 0..width {
            for z in 0..3 {
                boards.push(json!({"x": x, "y": y, "z": z, "cabinet": 0, "frame": y,
                                   "board": 3 * x + z, "ip": format!("11.{x}.{y}.{z}")}));
            }
        }
    }
    let small_boards: Vec<Value> = (0..3)
        .map(|z| {
            json!({"x": 0, "y": 0, "z": z, "cabinet": 1, "frame": 0, "board": z,
                   "ip": format!("12.0.0.{z}")})
        })
        .collect();
    let mut cfg = json!({
        "ip": "127.0.0.1",
        "port": 0,
        "timeout_check_interval": 0.1,
        "seconds_before_free": 0.1,
        "max_retired_jobs": 100000,
        "bmp": {"post_power_on_delay": 0.0, "power_on_timeout": 1.0, "command_timeout": 0.2,
                "command_retries": 1, "request_attempts": 2, "retry_delay": 0.05,
                "fpga_attempts": 2},
        "machines": [
            {"name": "m", "width": width, "height": height, "bmps": bmps, "boards": boards},
            {"name": "s", "width": 1, "height": 1,
             "bmps": [{"cabinet": 1, "frame": 0, "address": format!("{net}.200")}],
             "boards": small_boards}
        ]
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            cfg[k] = v;
        }
    }
    cfg
}

/// True if the process `pid` still runs (not exited, not a zombie).
pub fn process_alive(child: &mut std::process::Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

/// Resident memory of process `pid` in KiB (`VmRSS` of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Poll `f` until it returns `Some` or `timeout` passes (then `None`). Never sleeps longer
/// than `step` between tries.
pub fn poll_until<T>(
    timeout: Duration,
    step: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(step);
    }
}

/// Check a `list_jobs` reply: no board is held by two live jobs. Returns the number of
/// boards in use.
pub fn assert_no_double_booking(jobs: &Value) -> usize {
    let mut owner: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for j in jobs.as_array().expect("list_jobs is an array") {
        let id = j["job_id"].as_u64().expect("job_id");
        let (Some(machine), Some(boards)) =
            (j["allocated_machine_name"].as_str(), j["boards"].as_array())
        else {
            continue;
        };
        for b in boards {
            if let Some(other) = owner.insert((machine.to_string(), b.to_string()), id) {
                panic!("board {b} of machine {machine} is in jobs {other} and {id}: {jobs}");
            }
        }
    }
    owner.len()
}

/// A well-behaved client doing round trips until stopped while others abuse the server:
/// `version` each time and, if asked, `list_jobs` checked for double booking. It counts its
/// answers and the slowest round trip, and panics (failing the test at `finish`) if an
/// answer is missing, late beyond `bound`, or wrong.
pub struct Bystander {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    worst_us: Arc<AtomicU64>,
    bound: Duration,
    thread: std::thread::JoinHandle<()>,
}

impl Bystander {
    /// Connect, be answered once (so it is not the attack's victim at the door), then go on
    /// in a thread of its own.
    pub fn start(port: u16, bound: Duration, check_jobs: bool) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let worst_us = Arc::new(AtomicU64::new(0));
        let (s, a, w) = (
            Arc::clone(&stop),
            Arc::clone(&answered),
            Arc::clone(&worst_us),
        );
        let mut c = Conn::connect(port, bound).expect("bystander connects");
        assert_eq!(
            c.call("version", json!([]), json!({})),
            Ok(json!("1.0.0")),
            "bystander answered before the attack"
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let t = Instant::now();
                let v = c
                    .call("version", json!([]), json!({}))
                    .expect("bystander: version answered within its bound");
                assert_eq!(v, json!("1.0.0"));
                w.fetch_max(t.elapsed().as_micros() as u64, Ordering::SeqCst);
                if check_jobs {
                    let jobs = c
                        .call("list_jobs", json!([]), json!({}))
                        .expect("bystander: list_jobs answered");
                    assert_no_double_booking(&jobs);
                }
                a.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Bystander {
            stop,
            answered,
            worst_us,
            bound,
            thread,
        }
    }

    /// Rounds answered so far.
    pub fn count(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    /// Wait (bounded) until it has been answered again since `since` rounds.
    pub fn progressed(&self, since: u64) {
        poll_until(self.bound, Duration::from_millis(5), || {
            (self.count() > since).then_some(())
        })
        .expect("the bystander was not answered");
    }

    /// Wait until it is answered once more, stop it; the rounds answered and the slowest
    /// `version` round trip (panics if any round failed).
    pub fn finish(self) -> (u64, Duration) {
        self.progressed(self.count());
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.thread.join() {
            std::panic::resume_unwind(e);
        }
        (
            self.answered.load(Ordering::SeqCst),
            Duration::from_micros(self.worst_us.load(Ordering::SeqCst)),
        )
    }
}
