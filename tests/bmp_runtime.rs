//! The BMP runtime against the simulator, over real UDP on loopback: the transcripts of
//! `bmp-protocol.md` §4.5 and how faults are survived or reported.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver};
use spalloc::bmp::scp::{CMD_FPGA_READ, CMD_FPGA_WRITE, CMD_POWER, CMD_VER};
use spalloc::bmp::{
    BmpCompletion, BmpRuntime, BoardPower, Fault, FaultKind, SimOptions, Simulator,
};
use spalloc::config::BmpTimings;
use spalloc::core::coordinates::Link;
use spalloc::core::{BmpAction, BmpRequest};

/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

fn fast_timings() -> BmpTimings {
    BmpTimings {
        post_power_on_delay_s: 0.0,
        power_on_timeout_s: 0.3,
        command_timeout_s: 0.1,
        command_retries: 3,
        request_attempts: 2,
        retry_delay_s: 0.01,
        fpga_attempts: 3,
    }
}

struct Harness {
    sim: Simulator,
    runtime: BmpRuntime,
    done: Receiver<BmpCompletion>,
    logs: Receiver<String>,
    wakes: Arc<AtomicUsize>,
}

impl Harness {
    /// A simulator with `n` endpoints and a runtime whose threads have already read each
    /// BMP's version (so that start-up traffic is out of the way), with the sim log cleared.
    fn new(n: usize, options: SimOptions, timings: BmpTimings) -> Harness {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let sim = Simulator::start(&vec![any; n], options).expect("simulator starts");
        let (done_tx, done) = channel::unbounded();
        let (log_tx, logs) = channel::unbounded();
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&wakes);
        let runtime = BmpRuntime::new(
            timings,
            done_tx,
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
            Arc::new(move |line: String| {
                let _ = log_tx.send(line);
            }),
        );
        let harness = Harness {
            sim,
            runtime,
            done,
            logs,
            wakes,
        };
        for endpoint in harness.sim.endpoints() {
            harness.runtime.add_endpoint(&endpoint.to_string());
            harness.wait_log(&format!("BMP {endpoint}: BC&MP/Spin5-BMP"));
        }
        harness.sim.clear_log();
        harness
    }

    fn endpoint(&self, i: usize) -> SocketAddr {
        self.sim.endpoints()[i]
    }

    /// Wait for a log line containing `needle`; returns it.
    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no log line containing {needle:?}"),
            }
        }
    }

    fn wait_done(&self) -> BmpCompletion {
        self.done
            .recv_timeout(WAIT)
            .expect("a completion within the wait")
    }

    fn transcript(&self, i: usize) -> Vec<String> {
        self.sim.transcript(self.endpoint(i))
    }
}

fn power_on(
    id: u64,
    endpoint: SocketAddr,
    boards: &[u32],
    stop_links: &[(u32, Link)],
) -> BmpRequest {
    BmpRequest {
        id,
        job_id: 1,
        machine: "m".into(),
        cabinet: 0,
        frame: 0,
        address: endpoint.to_string(),
        action: BmpAction::PowerOn {
            boards: boards.to_vec(),
            stop_links: stop_links.to_vec(),
        },
    }
}

fn power_off(id: u64, endpoint: SocketAddr, boards: &[u32]) -> BmpRequest {
    BmpRequest {
        id,
        job_id: 1,
        machine: "m".into(),
        cabinet: 0,
        frame: 0,
        address: endpoint.to_string(),
        action: BmpAction::PowerOff {
            boards: boards.to_vec(),
        },
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The FPGA check of one board: its version, then the three FLAG reads.
fn check(board: u32) -> Vec<String> {
    let mut v = vec![format!("VER b{board}")];
    v.extend((0..3).map(|f| format!("READ b{board} f{f} 0x40004")));
    v
}

/// The allocation transcript of §4.5: boards {0,1,2}, periphery {(1, east), (2, north)}.
fn allocation_transcript() -> Vec<String> {
    let mut v = strings(&["POWER on 0x7"]);
    for b in 0..3 {
        v.extend(check(b));
    }
    v.extend(strings(&[
        "VER b1",
        "WRITE b1 f0 0x5c=1",
        "VER b2",
        "WRITE b2 f2 0x5c=1",
    ]));
    v
}

const STOPS: [(u32, Link); 2] = [(1, Link::East), (2, Link::North)];

#[test]
fn allocation_and_free_follow_the_reference_transcript() {
    let h = Harness::new(1, SimOptions::default(), fast_timings());
    let bmp = h.endpoint(0);
    h.runtime.submit(power_on(7, bmp, &[0, 1, 2], &STOPS));
    assert_eq!(
        h.wait_done(),
        BmpCompletion {
            request_id: 7,
            failure: None,
            failed_boards: vec![],
            bmp_unreachable: false,
        }
    );
    assert_eq!(h.transcript(0), allocation_transcript());
    // Every command got an OK reply, and only the two periphery links are stopped.
    assert!(h
        .sim
        .log()
        .iter()
        .all(|e| e.rc == Some(0x80) && e.replied && e.executed));
    let power = h.sim.log()[0].clone();
    assert_eq!(
        (power.board, power.cmd, power.arg1, power.arg2, power.arg3),
        (0, CMD_POWER, 1, 7, 0)
    );
    for board in 0..24 {
        let expected = if board < 3 {
            BoardPower::On
        } else {
            BoardPower::Off
        };
        assert_eq!(
            h.sim.board_power(bmp, board),
            Some(expected),
            "board {board}"
        );
        for link in Link::ALL {
            assert_eq!(
                h.sim.link_stop(bmp, board, link),
                STOPS.contains(&(board, link)),
                "{board} {link:?}"
            );
        }
    }
    assert_eq!(h.runtime.pending(), 0);

    h.sim.clear_log();
    h.runtime.submit(power_off(8, bmp, &[0, 1, 2]));
    assert_eq!(
        h.wait_done(),
        BmpCompletion {
            request_id: 8,
            failure: None,
            failed_boards: vec![],
            bmp_unreachable: false,
        }
    );
    assert_eq!(h.transcript(0), strings(&["POWER off 0x7"]));
    assert!((0..24).all(|b| h.sim.board_power(bmp, b) == Some(BoardPower::Off)));
    // The BMP thread wakes the loop just after handing over the completion, so the second
    // wake-up may trail the completion the test already holds: wait for it (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.wakes.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(
        h.wakes.load(Ordering::SeqCst),
        2,
        "one wake-up per completion"
    );
    h.runtime.shutdown();
}

#[test]
fn requests_for_one_bmp_run_in_order() {
    let h = Harness::new(1, SimOptions::default(), fast_timings());
    let bmp = h.endpoint(0);
    h.runtime.submit(power_on(1, bmp, &[3], &[]));
    h.runtime.submit(power_off(2, bmp, &[3]));
    h.runtime
        .submit(power_on(3, bmp, &[4], &[(4, Link::South)]));
    let ids: Vec<u64> = (0..3)
        .map(|_| h.wait_done())
        .map(|c| c.request_id)
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let mut expected = strings(&["POWER on 0x8"]);
    expected.extend(check(3));
    expected.push("POWER off 0x8".into());
    expected.push("POWER on 0x10".into());
    expected.extend(check(4));
    expected.extend(strings(&["VER b4", "WRITE b4 f0 0x1005c=1"]));
    assert_eq!(h.transcript(0), expected);
    assert!(h.sim.link_stop(bmp, 4, Link::South));
    h.runtime.shutdown();
}

#[test]
fn silent_bmp_fails_while_another_keeps_working() {
    let h = Harness::new(2, SimOptions::default(), fast_timings());
    let (silent, alive) = (h.endpoint(0), h.endpoint(1));
    h.sim
        .inject(Fault::new(FaultKind::GoSilent).endpoint(silent));
    h.runtime.submit(power_on(1, silent, &[0, 1, 2], &STOPS));
    h.runtime.submit(power_on(2, alive, &[0, 1, 2], &STOPS));
    // The working BMP finishes while the silent one is still timing out.
    let first = h.wait_done();
    assert_eq!(
        first,
        BmpCompletion {
            request_id: 2,
            failure: None,
            failed_boards: vec![],
            bmp_unreachable: false,
        }
    );
    assert_eq!(h.transcript(1), allocation_transcript());
    let second = h.wait_done();
    assert_eq!(
        second,
        BmpCompletion {
            request_id: 1,
            failure: Some("Requests failed on BMP 127.0.0.1".into()),
            failed_boards: vec![],
            bmp_unreachable: true,
        }
    );
    // Two attempts, each a single power command that was never answered.
    let silent_log: Vec<_> = h
        .sim
        .log()
        .into_iter()
        .filter(|e| e.endpoint == silent)
        .collect();
    assert_eq!(silent_log.len(), 2);
    assert!(silent_log
        .iter()
        .all(|e| e.cmd == CMD_POWER && !e.executed && e.rc.is_none()));
    h.wait_log("attempt 2 of 2 failed");
    assert_eq!(h.runtime.pending(), 0);
    h.runtime.shutdown();
}

#[test]
fn bmp_that_is_down_at_start_is_probed_and_requests_still_run() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = Simulator::start(&[any], SimOptions::default()).unwrap();
    let bmp = sim.endpoints()[0];
    sim.inject(Fault::new(FaultKind::GoSilent).endpoint(bmp));
    let (done_tx, done) = channel::unbounded();
    let (log_tx, logs) = channel::unbounded::<String>();
    let runtime = BmpRuntime::new(
        fast_timings(),
        done_tx,
        Arc::new(|| {}),
        Arc::new(move |l| {
            let _ = log_tx.send(l);
        }),
    );
    runtime.submit(power_off(1, bmp, &[5]));
    let line = logs.recv_timeout(WAIT).unwrap();
    assert!(line.contains("is not answering"), "{line}");
    assert_eq!(
        done.recv_timeout(WAIT).unwrap().failure.as_deref(),
        Some("Requests failed on BMP 127.0.0.1")
    );
    // The BMP comes back: the background probe notices, and requests work again.
    sim.clear_faults();
    let deadline = Instant::now() + WAIT;
    while !logs
        .recv_timeout(deadline - Instant::now())
        .expect("probe success logged")
        .contains("BC&MP")
    {}
    runtime.submit(power_off(2, bmp, &[5]));
    assert_eq!(
        done.recv_timeout(WAIT).unwrap(),
        BmpCompletion {
            request_id: 2,
            failure: None,
            failed_boards: vec![],
            bmp_unreachable: false,
        }
    );
    runtime.shutdown();
}

#[test]
fn bad_fpga_repowers_only_that_board() {
    let h = Harness::new(1, SimOptions::default(), fast_timings());
    let bmp = h.endpoint(0);
    h.sim.inject(
        Fault::new(FaultKind::BadFpgaId { fpga: 1, flag: 0 })
            .endpoint(bmp)
            .board(1)
            .times(1),
    );
    h.runtime.submit(power_on(1, bmp, &[0, 1, 2], &STOPS));
    assert_eq!(h.wait_done().failure, None);
    h.wait_log("FPGA 1 on board 1 of 127.0.0.1 has incorrect FPGA ID flag 0");
    let mut expected = strings(&["POWER on 0x7"]);
    expected.extend(check(0));
    expected.extend(strings(&[
        "VER b1",
        "READ b1 f0 0x40004",
        "READ b1 f1 0x40004",
    ]));
    expected.extend(check(2));
    expected.push("POWER on 0x2".into());
    expected.extend(check(1));
    expected.extend(strings(&[
        "VER b1",
        "WRITE b1 f0 0x5c=1",
        "VER b2",
        "WRITE b2 f2 0x5c=1",
    ]));
    assert_eq!(h.transcript(0), expected);
    assert!(h.sim.link_stop(bmp, 1, Link::East) && h.sim.link_stop(bmp, 2, Link::North));
    h.runtime.shutdown();
}

#[test]
fn fpga_that_stays_bad_fails_after_the_configured_tries() {
    let h = Harness::new(1, SimOptions::default(), fast_timings());
    let bmp = h.endpoint(0);
    h.sim.inject(
        Fault::new(FaultKind::BadFpgaId { fpga: 2, flag: 3 })
            .endpoint(bmp)
            .board(2),
    );
    h.runtime.submit(power_on(1, bmp, &[1, 2], &[]));
    assert_eq!(
        h.wait_done().failure.as_deref(),
        Some("Requests failed on BMP 127.0.0.1")
    );
    h.wait_log("Could not get correct FPGA ID after 3 tries");
    let powers: Vec<String> = h
        .transcript(0)
        .into_iter()
        .filter(|l| l.starts_with("POWER"))
        .collect();
    // Per attempt: both boards, then only the bad one twice; two attempts.
    assert_eq!(
        powers,
        strings(&["POWER on 0x6", "POWER on 0x4", "POWER on 0x4"].repeat(2))
    );
    assert!(h.sim.log().iter().all(|e| e.cmd != CMD_FPGA_WRITE));
    h.runtime.shutdown();
}

#[test]
fn dropped_reply_is_resent_and_executed_again() {
    let h = Harness::new(1, SimOptions::default(), fast_timings());
    let bmp = h.endpoint(0);
    h.sim.inject(
        Fault::new(FaultKind::DropReply)
            .endpoint(bmp)
            .cmd(CMD_FPGA_WRITE)
            .times(1),
    );
    h.runtime.submit(power_on(1, bmp, &[0, 1, 2], &STOPS));
    assert_eq!(h.wait_done().failure, None);
    let mut expected = allocation_transcript();
    expected.insert(expected.len() - 2, "WRITE b1 f0 0x5c=1".into());
    assert_eq!(h.transcript(0), expected);
    let writes: Vec<_> = h
        .sim
        .log()
        .into_iter()
        .filter(|e| e.cmd == CMD_FPGA_WRITE)
        .collect();
    assert_eq!(
        writes.iter().map(|e| e.replied).collect::<Vec<_>>(),
        vec![false, true, true]
    );
    // The resend reused the sequence number.
    assert_eq!(writes[0].seq, writes[1].seq);
    assert!(h.sim.link_stop(bmp, 1, Link::East));
    h.runtime.shutdown();
}

#[test]
fn late_and_duplicate_replies_are_ignored() {
    let h = Harness::new(1, SimOptions::default(), fast_timings());
    let bmp = h.endpoint(0);
    // The first VER of board 1 is answered late (after the client resent it), every reply to
    // board 2's FLAG reads comes twice; both leave stale replies for later commands to skip.
    h.sim.inject(
        Fault::new(FaultKind::DelayReply { delay_ms: 150 })
            .endpoint(bmp)
            .board(1)
            .cmd(CMD_VER)
            .times(1),
    );
    h.sim.inject(
        Fault::new(FaultKind::DuplicateReply)
            .endpoint(bmp)
            .board(2)
            .cmd(CMD_FPGA_READ),
    );
    h.runtime.submit(power_on(1, bmp, &[0, 1, 2], &STOPS));
    assert_eq!(h.wait_done().failure, None);
    let mut expected = allocation_transcript();
    let first_ver_b1 = expected.iter().position(|l| l == "VER b1").unwrap();
    expected.insert(first_ver_b1, "VER b1".into());
    assert_eq!(h.transcript(0), expected);
    // Later requests are not confused by the stale replies still arriving.
    h.sim.clear_log();
    h.runtime.submit(power_off(2, bmp, &[0, 1, 2]));
    assert_eq!(h.wait_done().failure, None);
    h.runtime.submit(power_on(3, bmp, &[0, 1, 2], &STOPS));
    assert_eq!(h.wait_done().failure, None);
    let mut expected = strings(&["POWER off 0x7"]);
    expected.extend(allocation_transcript());
    assert_eq!(h.transcript(0), expected);
    h.runtime.shutdown();
}

#[test]
fn legacy_firmware_gets_no_fpga_checks_or_link_writes() {
    let options = SimOptions {
        legacy_firmware: true,
        ..SimOptions::default()
    };
    let h = Harness::new(1, options, fast_timings());
    let bmp = h.endpoint(0);
    h.runtime.submit(power_on(1, bmp, &[0, 1, 2], &STOPS));
    assert_eq!(h.wait_done().failure, None);
    assert_eq!(
        h.transcript(0),
        strings(&[
            "POWER on 0x7",
            "VER b0",
            "VER b1",
            "VER b2",
            "VER b1",
            "VER b2"
        ])
    );
    assert!(!h.sim.link_stop(bmp, 1, Link::East));
    h.runtime.shutdown();
}

#[test]
fn legacy_firmware_on_one_board_skips_only_that_board() {
    let h = Harness::new(1, SimOptions::default(), fast_timings());
    let bmp = h.endpoint(0);
    h.sim
        .inject(Fault::new(FaultKind::LegacyFirmware).endpoint(bmp).board(1));
    h.runtime.submit(power_on(1, bmp, &[0, 1, 2], &STOPS));
    assert_eq!(h.wait_done().failure, None);
    let mut expected = strings(&["POWER on 0x7"]);
    expected.extend(check(0));
    expected.push("VER b1".into());
    expected.extend(check(2));
    expected.extend(strings(&["VER b1", "VER b2", "WRITE b2 f2 0x5c=1"]));
    assert_eq!(h.transcript(0), expected);
    h.runtime.shutdown();
}

#[test]
fn error_return_code_fails_the_attempt_and_the_request_is_retried() {
    let h = Harness::new(1, SimOptions::default(), fast_timings());
    let bmp = h.endpoint(0);
    h.sim.inject(
        Fault::new(FaultKind::ErrorCode(0x84))
            .endpoint(bmp)
            .cmd(CMD_FPGA_READ)
            .times(1),
    );
    h.runtime.submit(power_on(1, bmp, &[0, 1, 2], &STOPS));
    assert_eq!(h.wait_done().failure, None);
    let line = h.wait_log("attempt 1 of 2 failed");
    assert!(line.contains("RC_ARG"), "{line}");
    let mut expected = strings(&["POWER on 0x7", "VER b0", "READ b0 f0 0x40004"]);
    expected.extend(allocation_transcript());
    assert_eq!(h.transcript(0), expected);
    // RC_ARG is not worth resending: the failed read was sent once.
    assert_eq!(h.sim.log()[2].rc, Some(0x84));
    h.runtime.shutdown();
}

#[test]
fn error_return_code_every_time_fails_the_request() {
    let h = Harness::new(1, SimOptions::default(), fast_timings());
    let bmp = h.endpoint(0);
    h.sim.inject(
        Fault::new(FaultKind::ErrorCode(0x87))
            .endpoint(bmp)
            .cmd(CMD_POWER),
    );
    h.runtime.submit(power_off(1, bmp, &[0]));
    assert_eq!(
        h.wait_done().failure.as_deref(),
        Some("Requests failed on BMP 127.0.0.1")
    );
    assert_eq!(
        h.transcript(0),
        strings(&["POWER off 0x1", "POWER off 0x1"])
    );
    h.runtime.shutdown();
}

#[test]
fn power_on_that_does_nothing_is_caught_by_the_fpga_check() {
    let h = Harness::new(1, SimOptions::default(), fast_timings());
    let bmp = h.endpoint(0);
    h.sim.inject(
        Fault::new(FaultKind::PowerOnIgnored)
            .endpoint(bmp)
            .board(2)
            .times(1),
    );
    h.runtime.submit(power_on(1, bmp, &[2], &[]));
    assert_eq!(h.wait_done().failure, None);
    // FLAG reads of an off board return 0, so FPGA 0 looks right and FPGA 1 does not.
    let mut expected = strings(&[
        "POWER on 0x4",
        "VER b2",
        "READ b2 f0 0x40004",
        "READ b2 f1 0x40004",
    ]);
    expected.push("POWER on 0x4".into());
    expected.extend(check(2));
    assert_eq!(h.transcript(0), expected);
    assert_eq!(h.sim.board_power(bmp, 2), Some(BoardPower::On));
    h.runtime.shutdown();
}

#[test]
fn timings_can_be_changed_on_the_fly() {
    let h = Harness::new(1, SimOptions::default(), fast_timings());
    let bmp = h.endpoint(0);
    h.runtime.set_timings(BmpTimings {
        request_attempts: 3,
        ..fast_timings()
    });
    h.sim.inject(Fault::new(FaultKind::GoSilent).endpoint(bmp));
    h.runtime.submit(power_off(1, bmp, &[0]));
    assert_eq!(
        h.wait_done().failure.as_deref(),
        Some("Requests failed on BMP 127.0.0.1")
    );
    assert_eq!(h.transcript(0).len(), 3);
    h.runtime.shutdown();
}

#[test]
fn unresolvable_or_closed_bmp_fails_cleanly() {
    let (done_tx, done) = channel::unbounded();
    let runtime = BmpRuntime::new(fast_timings(), done_tx, Arc::new(|| {}), Arc::new(|_| {}));
    // Nothing listens on this port (the simulator held it and let it go).
    let closed = {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let sim = Simulator::start(&[any], SimOptions::default()).unwrap();
        sim.endpoints()[0]
    };
    runtime.submit(power_off(1, closed, &[0]));
    let mut bad = power_off(2, closed, &[0]);
    bad.address = "127.0.0.1:notaport".into();
    runtime.submit(bad);
    let mut got: Vec<BmpCompletion> = (0..2).map(|_| done.recv_timeout(WAIT).unwrap()).collect();
    got.sort_by_key(|c| c.request_id);
    assert_eq!(
        got[0].failure.as_deref(),
        Some("Requests failed on BMP 127.0.0.1")
    );
    assert!(got[1].failure.is_some());
    runtime.shutdown();
}

#[test]
fn shutdown_abandons_work_without_waiting_for_retry_delays() {
    let timings = BmpTimings {
        retry_delay_s: 600.0,
        ..fast_timings()
    };
    let h = Harness::new(1, SimOptions::default(), timings);
    let bmp = h.endpoint(0);
    h.sim.inject(Fault::new(FaultKind::GoSilent).endpoint(bmp));
    for id in 0..50 {
        h.runtime.submit(power_off(id, bmp, &[0]));
    }
    h.wait_log("attempt 1 of 2 failed");
    let started = Instant::now();
    h.runtime.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(
        h.done.try_recv().is_err(),
        "abandoned requests are not reported"
    );
}
