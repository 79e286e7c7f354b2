//! Flaky BMPs during live jobs: the core, a real [`BmpRuntime`] and a real BMP
//! [`Simulator`] (UDP on loopback) wired together in-process, with faults injected into the
//! simulator while jobs power up and change power.
//!
//! The harness is a miniature of the server loop around the core's one fold-and-drain loop
//! ([`Sim`]): its hook hands core effects `Bmp(request)` to the runtime, whose completions
//! come back through a crossbeam channel and are folded as `Event::BmpDone`; every other input
//! is a command or a tick on a fake clock. The core's invariants are checked after every
//! event.
//!
//! Each round injects a random fault (seeded; `SPALLOC_SEED=N` replays the choices) into some
//! machines' BMPs, then either creates jobs on every machine or power-cycles the live ones.
//! A *persistent* fault (a silent BMP, error codes on every command, a board whose FPGAs
//! report the wrong ID, a board that ignores power-on, a board missing from the CAN bus)
//! must end exactly the affected jobs with `Machine configuration failed. Error: Requests
//! failed on BMP <host>`; a *transient* one (a dropped request or reply, late or duplicated
//! replies, one error code, a BMP silent for one packet) is absorbed by the retries and the
//! job becomes ready. Jobs on other machines always become ready. At the end of every round
//! every job is destroyed, the clock passes `seconds_before_free`, and the core must be idle:
//! no board leaked.
mod common;
mod reliability_support;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use reliability_support::{seed, Rng};
use spalloc::bmp::{BmpCompletion, BmpRuntime, Fault, FaultKind, SimOptions, Simulator};
use spalloc::config::{BmpTimings, Config};
use spalloc::core::sim::{config, machine_with, Sim};
use spalloc::core::{
    Command, Core, CreateJob, Effect, Event, JobId, JobRequest, JobTarget, Response,
};

/// Longest wait for the BMP work of one round to finish.
const SETTLE: Duration = Duration::from_secs(60);
const SECONDS_BEFORE_FREE: f64 = 5.0;

/// One machine of the harness: its name, shape and simulated BMP endpoints (one per frame).
struct MachineInfo {
    name: String,
    height: u32,
    bmps: Vec<SocketAddr>,
}

/// The core + runtime + simulator harness. It dereferences to its [`Sim`] (`core`, `now_us`,
/// `cmd`, `advance`, `events`).
struct Harness {
    fold: Sim,
    bmp: Rc<BmpRuntime>,
    completions: Receiver<BmpCompletion>,
    sim: Simulator,
    machines: Vec<MachineInfo>,
    log: Arc<Mutex<Vec<String>>>,
}

impl std::ops::Deref for Harness {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.fold
    }
}

impl std::ops::DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Sim {
        &mut self.fold
    }
}

impl Harness {
    fn new(net: &str) -> Harness {
        // Three machines: a and b are one triad on one BMP each; c is two triads stacked over
        // two frames (two BMPs). Simulated endpoints bind port 0, so each gets its own port.
        let shapes = [("a", 1u32), ("b", 1), ("c", 2)];
        let mut addrs = Vec::new();
        for (i, (_, height)) in shapes.iter().enumerate() {
            for f in 0..*height {
                addrs.push(
                    format!("{net}.{}:0", 10 * i as u32 + f + 1)
                        .parse::<SocketAddr>()
                        .unwrap(),
                );
            }
        }
        let sim = Simulator::start(&addrs, SimOptions::default()).expect("simulator");
        let real = sim.endpoints();
        let mut machines = Vec::new();
        let mut next = 0;
        let mut configs = Vec::new();
        for (name, height) in shapes {
            let bmps: Vec<SocketAddr> = real[next..next + height as usize].to_vec();
            next += height as usize;
            let bmps2 = bmps.clone();
            configs.push(machine_with(
                name,
                1,
                height,
                &[],
                &[],
                |b| [0, b.y, b.z],
                move |_, f| bmps2[f as usize].to_string(),
                |b| format!("11.{}.{}.{}", b.x, b.y, b.z),
            ));
            machines.push(MachineInfo {
                name: name.to_string(),
                height,
                bmps,
            });
        }
        let mut cfg: Config = config(configs, SECONDS_BEFORE_FREE);
        // Fast, but with timeouts a loaded debug build still meets: a silent BMP costs
        // 2 attempts x 2 sends x 0.15 s per request.
        cfg.bmp = BmpTimings {
            post_power_on_delay_s: 0.0,
            power_on_timeout_s: 0.5,
            command_timeout_s: 0.15,
            command_retries: 1,
            request_attempts: 2,
            retry_delay_s: 0.02,
            fpga_attempts: 2,
        };
        // Board health off: this test is about containing BMP faults, and expects a
        // persistent fault to end its job at once, round after round, on the same boards.
        // (Recovery and automatic drains have their own tests: core_health, server_health.)
        cfg.health.recovery_attempts = 0;
        cfg.health.drain_after_failures = 0;
        let (tx, completions): (Sender<BmpCompletion>, _) = crossbeam::channel::unbounded();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        let bmp = Rc::new(BmpRuntime::new(
            cfg.bmp.clone(),
            tx,
            Arc::new(|| {}),
            Arc::new(move |line: String| log2.lock().unwrap().push(line)),
        ));
        // BMP requests go to the runtime, log lines to the shared log, notifications nowhere.
        let mut fold = Sim::from_core(Core::new(), spalloc::timefmt::now_us());
        let (bmp2, log3) = (Rc::clone(&bmp), Arc::clone(&log));
        fold.hook = Some(Box::new(move |effect| {
            match effect {
                Effect::Bmp(r) => bmp2.submit(r),
                Effect::Log(l) => log3.lock().unwrap().push(l),
                _ => {}
            }
            None
        }));
        let mut h = Harness {
            fold,
            bmp,
            completions,
            sim,
            machines,
            log,
        };
        h.fold.event(Event::Configure {
            now_us: h.fold.now_us,
            config: cfg,
        });
        h
    }

    /// Create a job holding all of machine `m`.
    fn create_on(&mut self, m: usize) -> JobId {
        let mut job: CreateJob =
            spalloc::core::sim::job(JobRequest::Triads(1, self.machines[m].height as i64));
        job.keepalive_s = None;
        job.target = JobTarget::Machine(self.machines[m].name.clone());
        match self.cmd(Command::CreateJob(job)) {
            Response::JobId(id) => id,
            other => panic!("create_job: {other:?}"),
        }
    }

    /// Fold BMP completions until no request is outstanding (bounded by [`SETTLE`]).
    fn settle(&mut self) {
        let end = Instant::now() + SETTLE;
        while self.core.outstanding_bmp_requests().next().is_some() {
            let left = end
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| {
                    panic!(
                        "BMP requests still outstanding after {SETTLE:?}: {:?}\nlog:\n{}",
                        self.core.outstanding_bmp_requests().collect::<Vec<_>>(),
                        self.log.lock().unwrap().join("\n")
                    )
                });
            if let Ok(c) = self.completions.recv_timeout(left) {
                self.fold.event(Event::BmpDone {
                    now_us: self.fold.now_us,
                    request_id: c.request_id,
                    failure: c.failure,
                    failed_boards: c.failed_boards,
                    bmp_unreachable: c.bmp_unreachable,
                });
            }
        }
    }

    /// Stop the BMP runtime's threads and wait for them.
    fn shutdown(mut self) {
        self.fold.hook = None;
        match Rc::try_unwrap(self.bmp) {
            Ok(bmp) => bmp.shutdown(),
            Err(_) => unreachable!("the hook held the only other reference"),
        }
    }
}

/// A fault to inject on machine `m`, and whether it must fail the machine's job.
fn random_fault(rng: &mut Rng) -> (FaultKind, Option<u32>, Option<u32>, bool) {
    // (kind, board scope, times, fatal)
    match rng.below(12) {
        0 => (FaultKind::GoSilent, None, None, true),
        1 => (FaultKind::ErrorCode(0x84), None, None, true),
        2 => (
            FaultKind::BadFpgaId { fpga: 1, flag: 2 },
            Some(rng.below(3) as u32),
            None,
            true,
        ),
        3 => (
            FaultKind::PowerOnIgnored,
            Some(rng.range(1, 2) as u32),
            None,
            true,
        ),
        4 => (
            FaultKind::AbsentBoard,
            Some(rng.below(3) as u32),
            None,
            true,
        ),
        5 => (FaultKind::DropRequest, None, Some(1), false),
        6 => (FaultKind::DropReply, None, Some(1), false),
        7 => (FaultKind::DelayReply { delay_ms: 30 }, None, Some(3), false),
        // Later than the command timeout: the resend is answered, the late reply must be
        // recognised as stale when it arrives.
        8 => (
            FaultKind::DelayReply { delay_ms: 400 },
            None,
            Some(1),
            false,
        ),
        9 => (FaultKind::DuplicateReply, None, Some(4), false),
        10 => (FaultKind::ErrorCode(0x84), None, Some(1), false),
        // One lost packet: if it was the power command (sent once), the attempt fails and
        // the second attempt succeeds.
        _ => (FaultKind::GoSilent, None, Some(1), false),
    }
}

#[test]
fn bmp_faults_end_only_the_affected_jobs_and_leak_no_boards() {
    let mut rng = Rng::new(seed(
        "bmp_faults_end_only_the_affected_jobs_and_leak_no_boards",
    ));
    let rounds: usize = std::env::var("SPALLOC_FAULT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let mut h = Harness::new(&common::bmp_net());
    let mut injected = 0;
    let (mut fatal_seen, mut transient_seen) = (0, 0);
    for round in 0..rounds {
        // Every round starts idle.
        assert!(h.core.is_idle(), "round {round}: not idle at the start");
        let during_power_change = rng.chance(0.5);
        let mut jobs: Vec<JobId> = Vec::new();
        if during_power_change {
            // Live jobs first, fault-free.
            for m in 0..h.machines.len() {
                jobs.push(h.create_on(m));
            }
            h.settle();
            for &j in &jobs {
                assert_eq!(
                    h.core.job_state(j).state,
                    3,
                    "round {round}: job {j} not ready"
                );
            }
        }
        // Faults on some machines: (machine, fatal, host of the faulted BMP).
        let mut faulted: Vec<(usize, bool, String, String)> = Vec::new();
        for m in 0..h.machines.len() {
            // Each machine is faulted with probability 0.6, and at least one per round.
            let last = m + 1 == h.machines.len();
            let wanted = rng.chance(0.6) || (last && faulted.is_empty());
            if !wanted {
                continue;
            }
            let (kind, board, times, fatal) = random_fault(&mut rng);
            let frame = rng.below(h.machines[m].height as u64) as usize;
            let endpoint = h.machines[m].bmps[frame];
            let mut fault = Fault::new(kind.clone()).endpoint(endpoint);
            if let Some(b) = board {
                fault = fault.board(b);
            }
            if let Some(n) = times {
                fault = fault.times(n);
            }
            h.sim.inject(fault);
            injected += 1;
            faulted.push((m, fatal, endpoint.ip().to_string(), format!("{kind:?}")));
        }
        if during_power_change {
            // Power off then on: both requests must pass the faulted BMP.
            for &j in &jobs {
                h.cmd(Command::PowerOffJobBoards { job_id: j });
                h.cmd(Command::PowerOnJobBoards { job_id: j });
            }
        } else {
            for m in 0..h.machines.len() {
                jobs.push(h.create_on(m));
            }
        }
        h.settle();

        for (m, &j) in jobs.iter().enumerate() {
            let s = h.core.job_state(j);
            let fault = faulted.iter().find(|f| f.0 == m);
            match fault {
                Some((_, true, host, kind)) => {
                    fatal_seen += 1;
                    assert_eq!(
                        (s.state, s.reason.as_deref()),
                        (
                            4,
                            Some(
                                format!(
                                    "Machine configuration failed. Error: Requests failed on BMP {host}"
                                )
                                .as_str()
                            )
                        ),
                        "round {round}: job {j} on machine {} with persistent fault {kind}",
                        h.machines[m].name
                    );
                }
                other => {
                    if other.is_some() {
                        transient_seen += 1;
                    }
                    assert_eq!(
                        (s.state, s.power),
                        (3, Some(true)),
                        "round {round}: job {j} on machine {} (fault {:?}) should be ready: {s:?}\nlog:\n{}",
                        h.machines[m].name,
                        other.map(|f| &f.3),
                        h.log.lock().unwrap().join("\n")
                    );
                }
            }
        }

        // Wind down: faults cleared, every job destroyed, boards released after the delay.
        h.sim.clear_faults();
        for &j in &jobs {
            h.cmd(Command::DestroyJob {
                job_id: j,
                reason: Some("round over".into()),
            });
        }
        h.settle();
        h.advance(SECONDS_BEFORE_FREE + 0.1);
        // Boards whose power-off failed under the fault are held until a retried power-off
        // succeeds: let the retries (every retry_delay) go out and be answered.
        for _ in 0..10 {
            if h.core.outstanding_bmp_requests().next().is_none() {
                break;
            }
            h.settle();
            h.advance(SECONDS_BEFORE_FREE + 0.1);
        }
        assert!(
            h.core.is_idle(),
            "round {round}: boards leaked: {:?}",
            h.core.board_owners()
        );
    }
    eprintln!(
        "BMP faults: {rounds} rounds, {injected} faults injected ({fatal_seen} jobs ended by \
         persistent faults, {transient_seen} jobs rode out transient ones), {} core events",
        h.events.len()
    );
    assert!(injected >= rounds);
    h.shutdown();
}
