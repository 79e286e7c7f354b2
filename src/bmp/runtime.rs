//! The BMP runtime: one plain OS thread per BMP endpoint carrying out [`BmpRequest`]s.
//!
//! Each endpoint (a BMP `address`, i.e. one frame) gets its own thread, SCP client and FIFO
//! queue, created on the first request for it (or by [`BmpRuntime::add_endpoint`]). Requests
//! for one BMP run strictly in order, one at a time, because the firmware is single-threaded
//! and a power-off must never overtake an earlier power-on; different BMPs run in parallel.
//!
//! One request follows spalloc_server 7.x (`bmp-protocol.md` §3.1, §3.4):
//!
//! * `PowerOn`: one `CMD_POWER` (on, mask of the boards) to board 0, sleep
//!   `post_power_on_delay_s`, then for each board `VER` and, with firmware ≥ 2, read the three
//!   FPGAs' `FLAG` registers expecting ID `f` on FPGA `f`. Boards with a wrong ID are powered on
//!   again (only those), up to `fpga_attempts` power-ons in all. Then, for each stopped link in
//!   order, `VER` of its board and, with firmware ≥ 2, `STOP = 1` on the link's register.
//! * `PowerOff`: one `CMD_POWER` (off, mask) to board 0.
//!
//! Any error fails the attempt; after `retry_delay_s` the whole request is redone, up to
//! `request_attempts` attempts, after which it fails with `Requests failed on BMP <host>`.
//! Each outcome is sent as a [`BmpCompletion`], then the waker is called so the server's
//! `polling` loop picks it up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender, TrySendError};

use super::scp::{
    resolve_address, split_address, ClientTimeouts, ScpClient, ScpError, BANK_STRIDE,
    BOARDS_PER_FRAME, FPGA_FLAG_ADDR, FPGA_FLAG_ID_MASK, STOP_OFFSET,
};
use crate::config::BmpTimings;
use crate::core::coordinates::Link;
use crate::core::types::{BmpAction, BmpRequest, BmpRequestId};

/// Most requests queued for one BMP; more fail at once rather than grow memory without bound.
pub const MAX_QUEUED_PER_BMP: usize = 4096;
/// Firmware major version from which FPGA checks and link writes are done.
pub const MIN_FPGA_FIRMWARE_MAJOR: u32 = 2;
/// Number of FPGAs on a SpiNN-5 board.
pub const FPGAS_PER_BOARD: u32 = 3;
/// Longest sleep any timing may ask for; guards against absurd configuration values.
const MAX_SLEEP_S: f64 = 24.0 * 3600.0;

/// The outcome of one [`BmpRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BmpCompletion {
    /// The request that finished.
    pub request_id: BmpRequestId,
    /// `None` on success, else why (`Requests failed on BMP <host>`).
    pub failure: Option<String>,
    /// The boards (within the frame, ascending) the last attempt's failure is blamed on:
    /// wrong FPGA ids after every power-on, or an error code from a board's own command.
    pub failed_boards: Vec<u32>,
    /// The last attempt failed because the BMP did not answer (a timeout).
    pub bmp_unreachable: bool,
}

/// Called after each completion is sent (the server passes `Poller::notify`).
pub type Waker = Arc<dyn Fn() + Send + Sync>;
/// Receives log lines (failures, retries, wrong FPGA IDs, BMP versions).
pub type LogSink = Arc<dyn Fn(String) + Send + Sync>;

/// Where a link's `STOP` register is: `(fpga, address)` (§2.5).
pub fn link_stop_register(link: Link) -> (u32, u32) {
    match link {
        Link::East => (0, STOP_OFFSET),
        Link::South => (0, BANK_STRIDE + STOP_OFFSET),
        Link::SouthWest => (1, STOP_OFFSET),
        Link::West => (1, BANK_STRIDE + STOP_OFFSET),
        Link::North => (2, STOP_OFFSET),
        Link::NorthEast => (2, BANK_STRIDE + STOP_OFFSET),
    }
}

/// State shared by the runtime handle and every endpoint thread.
struct Shared {
    timings: Mutex<BmpTimings>,
    completions: Sender<BmpCompletion>,
    waker: Waker,
    log: LogSink,
    /// Requests accepted and not yet completed (or abandoned at shutdown).
    pending: AtomicUsize,
}

impl Shared {
    fn timings(&self) -> BmpTimings {
        self.timings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn complete(&self, request_id: BmpRequestId, failure: Option<String>, blame: Blame) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
        // The server may already be gone at shutdown; nothing to tell then.
        let _ = self.completions.send(BmpCompletion {
            request_id,
            failure,
            failed_boards: blame.boards.into_iter().collect(),
            bmp_unreachable: blame.unreachable,
        });
        (self.waker)();
    }
}

struct Endpoint {
    requests: Sender<BmpRequest>,
    thread: JoinHandle<()>,
}

/// Carries out BMP requests, one thread per BMP endpoint. See the module docs.
pub struct BmpRuntime {
    shared: Arc<Shared>,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    /// Dropped at shutdown: every thread's `stop` receiver then wakes up disconnected.
    stop_tx: Option<Sender<()>>,
    stop_rx: Receiver<()>,
    /// The simulation's runtime ([`BmpRuntime::simulated`]): requests go here, no thread.
    simulated: Option<Sender<BmpRequest>>,
}

impl BmpRuntime {
    /// A runtime with no endpoints yet. Completions go to `completions`, each followed by a
    /// call to `waker`; log lines go to `log`.
    pub fn new(
        timings: BmpTimings,
        completions: Sender<BmpCompletion>,
        waker: Waker,
        log: LogSink,
    ) -> BmpRuntime {
        let (stop_tx, stop_rx) = channel::bounded(0);
        BmpRuntime {
            shared: Arc::new(Shared {
                timings: Mutex::new(timings),
                completions,
                waker,
                log,
                pending: AtomicUsize::new(0),
            }),
            endpoints: Mutex::new(HashMap::new()),
            stop_tx: Some(stop_tx),
            stop_rx,
            simulated: None,
        }
    }

    /// A runtime without threads, for the simulation of the server loop (`server::sim`):
    /// submitted requests come out of the returned receiver, and the simulation sends
    /// their completions into `completions`, as a BMP thread would.
    pub fn simulated(
        timings: BmpTimings,
        completions: Sender<BmpCompletion>,
    ) -> (BmpRuntime, Receiver<BmpRequest>) {
        let mut runtime = BmpRuntime::new(timings, completions, Arc::new(|| {}), Arc::new(|_| {}));
        let (tx, rx) = channel::unbounded();
        runtime.simulated = Some(tx);
        (runtime, rx)
    }

    /// Start the thread for `address` (`host` or `host:port`) if it has none yet. The thread
    /// first reads the BMP's version (logged); a BMP that does not answer is logged and probed
    /// again every `retry_delay_s` while idle, but requests are still attempted normally.
    pub fn add_endpoint(&self, address: &str) {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        self.endpoint(&mut endpoints, address);
    }

    fn endpoint<'a>(
        &self,
        endpoints: &'a mut HashMap<String, Endpoint>,
        address: &str,
    ) -> &'a Endpoint {
        endpoints.entry(address.to_string()).or_insert_with(|| {
            let (tx, rx) = channel::bounded(MAX_QUEUED_PER_BMP);
            let worker = Worker {
                address: address.to_string(),
                host: split_address(address)
                    .map(|(h, _)| h)
                    .unwrap_or_else(|_| address.to_string()),
                shared: Arc::clone(&self.shared),
                requests: rx,
                stop: self.stop_rx.clone(),
                client: None,
                version_known: false,
                probe_failures: 0,
                blame: Blame::default(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("bmp {address}"))
                .spawn(move || worker.run())
                .expect("spawning a BMP thread");
            Endpoint {
                requests: tx,
                thread,
            }
        })
    }

    /// Queue `request` on its BMP's thread. Never blocks: if that BMP already has
    /// [`MAX_QUEUED_PER_BMP`] requests queued, the request fails at once (completion sent).
    pub fn submit(&self, request: BmpRequest) {
        if let Some(simulated) = &self.simulated {
            let _ = simulated.send(request);
            return;
        }
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let endpoint = self.endpoint(&mut endpoints, &request.address);
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        match endpoint.requests.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(request)) | Err(TrySendError::Disconnected(request)) => {
                let host = split_address(&request.address)
                    .map(|(h, _)| h)
                    .unwrap_or(request.address.clone());
                (self.shared.log)(format!(
                    "BMP {}: queue full ({MAX_QUEUED_PER_BMP} requests); request {} refused",
                    request.address, request.id
                ));
                self.shared.complete(
                    request.id,
                    Some(format!("Requests failed on BMP {host}")),
                    Blame::default(),
                );
            }
        }
    }

    /// Replace the timings; each attempt of a request reads them afresh.
    pub fn set_timings(&self, timings: BmpTimings) {
        *self
            .shared
            .timings
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = timings;
    }

    /// Requests submitted and not completed yet.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::SeqCst)
    }

    /// The endpoint addresses that have a thread.
    pub fn endpoints(&self) -> Vec<String> {
        let endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<String> = endpoints.keys().cloned().collect();
        list.sort();
        list
    }

    /// Stop every thread and wait for them. A thread finishes the SCP command it has in
    /// flight (bounded by its timeout); the request it was working on, and any still queued,
    /// are abandoned without a completion (the server re-issues outstanding work on restart).
    /// Sleeps (post-power-on delay, retry delay) are cut short.
    pub fn shutdown(mut self) {
        self.stop_tx.take();
        let endpoints =
            std::mem::take(&mut *self.endpoints.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, endpoint) in endpoints {
            drop(endpoint.requests);
            let _ = endpoint.thread.join();
        }
    }
}

impl Drop for BmpRuntime {
    fn drop(&mut self) {
        // Without an explicit shutdown the threads are told to stop but not waited for.
        self.stop_tx.take();
    }
}

/// What an attempt's failure is blamed on (see [`BmpCompletion`]).
#[derive(Default)]
struct Blame {
    boards: std::collections::BTreeSet<u32>,
    unreachable: bool,
}

impl Blame {
    /// Blame what an SCP error points at: nothing but the BMP for a timeout, the board for
    /// an error code from its own command (not the frame-wide power command).
    fn from_error(e: &ScpError) -> Blame {
        let mut blame = Blame::default();
        match e {
            ScpError::Timeout { .. } => blame.unreachable = true,
            ScpError::ReturnCode { cmd, board, .. } if *cmd != super::scp::CMD_POWER => {
                blame.boards.insert(*board);
            }
            _ => {}
        }
        blame
    }
}

/// The request was abandoned because the runtime is shutting down.
struct Stopped;

/// Why an attempt failed.
enum AttemptError {
    Stopped,
    Failed(String),
    /// An SCP command failed (turned into `Failed` once blamed: `Worker::attempt`).
    Scp(ScpError),
}

impl From<ScpError> for AttemptError {
    fn from(e: ScpError) -> Self {
        AttemptError::Scp(e)
    }
}

impl From<Stopped> for AttemptError {
    fn from(_: Stopped) -> Self {
        AttemptError::Stopped
    }
}

/// One endpoint's thread.
struct Worker {
    address: String,
    host: String,
    shared: Arc<Shared>,
    requests: Receiver<BmpRequest>,
    stop: Receiver<()>,
    client: Option<ScpClient>,
    version_known: bool,
    probe_failures: u64,
    /// What the current attempt's failure is blamed on.
    blame: Blame,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() {
        s.clamp(0.0, MAX_SLEEP_S)
    } else {
        0.0
    })
}

fn client_timeouts(t: &BmpTimings) -> ClientTimeouts {
    ClientTimeouts {
        power_timeout: secs(t.power_on_timeout_s),
        command_timeout: secs(t.command_timeout_s),
        command_retries: t.command_retries,
    }
}

impl Worker {
    fn log(&self, line: String) {
        (self.shared.log)(line);
    }

    fn run(mut self) {
        self.probe_version();
        let mut next_probe = Instant::now() + secs(self.shared.timings().retry_delay_s);
        loop {
            let wait = if self.version_known {
                None
            } else {
                Some(next_probe)
            };
            let request = crossbeam::channel::select! {
                recv(self.requests) -> r => match r {
                    Ok(r) => Some(r),
                    Err(_) => return,
                },
                recv(self.stop) -> _ => return,
                default(wait.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()))) => None,
            };
            match request {
                Some(request) => {
                    if self.stopping() {
                        return;
                    }
                    if self.execute(request).is_err() {
                        return;
                    }
                }
                None => {
                    self.probe_version();
                    next_probe = Instant::now() + secs(self.shared.timings().retry_delay_s);
                }
            }
        }
    }

    fn stopping(&self) -> bool {
        matches!(
            self.stop.try_recv(),
            Err(channel::TryRecvError::Disconnected)
        )
    }

    /// Sleep, unless the runtime is stopping.
    fn sleep(&self, duration: Duration) -> Result<(), Stopped> {
        if duration.is_zero() {
            return if self.stopping() {
                Err(Stopped)
            } else {
                Ok(())
            };
        }
        match self.stop.recv_timeout(duration) {
            Err(RecvTimeoutError::Timeout) => Ok(()),
            _ => Err(Stopped),
        }
    }

    /// The SCP client, created (and the address resolved) on first use.
    fn client(&mut self) -> Result<&mut ScpClient, ScpError> {
        let timeouts = client_timeouts(&self.shared.timings());
        if self.client.is_none() {
            let peer: SocketAddr = resolve_address(&self.address)?;
            self.client = Some(ScpClient::connect(peer, timeouts)?);
        }
        let client = self.client.as_mut().expect("just set");
        client.set_timeouts(timeouts);
        Ok(client)
    }

    /// Read and log the version of board 0's BMP.
    fn probe_version(&mut self) {
        let result = self.client().and_then(|c| c.version(0));
        match result {
            Ok(info) => {
                self.version_known = true;
                self.log(format!("BMP {}: {info}", self.address));
            }
            Err(e) => {
                self.probe_failures += 1;
                // Log the first failure and then only now and then: a dead BMP is probed
                // every retry delay for as long as the server runs.
                if self.probe_failures == 1 || self.probe_failures.is_power_of_two() {
                    self.log(format!(
                        "BMP {} is not answering ({e}); will keep trying (failed {} time(s))",
                        self.address, self.probe_failures
                    ));
                }
            }
        }
    }

    /// Carry out one request with its retries and send its completion. `Err` means the
    /// runtime is stopping and the request was abandoned.
    fn execute(&mut self, request: BmpRequest) -> Result<(), Stopped> {
        let attempts = self.shared.timings().request_attempts.max(1);
        let mut attempt = 1;
        let failure = loop {
            let timings = self.shared.timings();
            self.blame = Blame::default();
            match self.attempt(&request.action, &timings) {
                Ok(()) => break None,
                Err(AttemptError::Stopped) => {
                    self.shared.pending.fetch_sub(1, Ordering::SeqCst);
                    return Err(Stopped);
                }
                Err(e @ (AttemptError::Failed(_) | AttemptError::Scp(_))) => {
                    let why = match e {
                        AttemptError::Scp(e) => e.to_string(),
                        AttemptError::Failed(why) => why,
                        AttemptError::Stopped => unreachable!(),
                    };
                    self.log(format!(
                        "BMP {}: request {} (job {}) attempt {attempt} of {attempts} failed: {why}",
                        self.address, request.id, request.job_id
                    ));
                    if attempt >= attempts {
                        break Some(format!("Requests failed on BMP {}", self.host));
                    }
                    attempt += 1;
                    if self.sleep(secs(timings.retry_delay_s)).is_err() {
                        self.shared.pending.fetch_sub(1, Ordering::SeqCst);
                        return Err(Stopped);
                    }
                }
            }
        };
        let blame = if failure.is_some() {
            std::mem::take(&mut self.blame)
        } else {
            Blame::default()
        };
        self.shared.complete(request.id, failure, blame);
        Ok(())
    }

    fn attempt(&mut self, action: &BmpAction, timings: &BmpTimings) -> Result<(), AttemptError> {
        match self.attempt_inner(action, timings) {
            Err(AttemptError::Scp(e)) => {
                let b = Blame::from_error(&e);
                self.blame.unreachable |= b.unreachable;
                self.blame.boards.extend(b.boards);
                Err(AttemptError::Failed(e.to_string()))
            }
            other => other,
        }
    }

    fn attempt_inner(
        &mut self,
        action: &BmpAction,
        timings: &BmpTimings,
    ) -> Result<(), AttemptError> {
        match action {
            BmpAction::PowerOn { boards, stop_links } => {
                if !boards.is_empty() {
                    self.power_on_and_check(boards, timings)?;
                }
                for &(board, link) in stop_links {
                    check_board(board)?;
                    let client = self.client()?;
                    if client.version(board)?.version.0 < MIN_FPGA_FIRMWARE_MAJOR {
                        continue;
                    }
                    let (fpga, addr) = link_stop_register(link);
                    client.fpga_write(board, fpga, addr, 1)?;
                }
                Ok(())
            }
            BmpAction::PowerOff { boards } => {
                if !boards.is_empty() {
                    let mask = board_mask(boards)?;
                    self.client()?.power(false, mask, 0)?;
                }
                Ok(())
            }
        }
    }

    /// Power `boards` on and check their FPGAs, re-powering only the bad ones.
    fn power_on_and_check(
        &mut self,
        boards: &[u32],
        timings: &BmpTimings,
    ) -> Result<(), AttemptError> {
        let fpga_attempts = timings.fpga_attempts.max(1);
        let mut to_power: Vec<u32> = boards.to_vec();
        for _ in 0..fpga_attempts {
            let mask = board_mask(&to_power)?;
            self.client()?.power(true, mask, 0)?;
            self.sleep(secs(timings.post_power_on_delay_s))?;
            let mut bad = Vec::new();
            for &board in &to_power {
                if !self.fpgas_good(board)? {
                    bad.push(board);
                }
            }
            if bad.is_empty() {
                return Ok(());
            }
            to_power = bad;
        }
        self.blame.boards.extend(to_power.iter().copied());
        Err(AttemptError::Failed(format!(
            "Could not get correct FPGA ID after {fpga_attempts} tries"
        )))
    }

    /// Whether every FPGA of `board` reports the right ID (true for old firmware, which
    /// cannot be checked).
    fn fpgas_good(&mut self, board: u32) -> Result<bool, ScpError> {
        let client = self.client()?;
        if client.version(board)?.version.0 < MIN_FPGA_FIRMWARE_MAJOR {
            return Ok(true);
        }
        for fpga in 0..FPGAS_PER_BOARD {
            let flag = client.fpga_read(board, fpga, FPGA_FLAG_ADDR)?;
            if flag & FPGA_FLAG_ID_MASK != fpga {
                self.log(format!(
                    "FPGA {fpga} on board {board} of {} has incorrect FPGA ID flag {}",
                    self.host,
                    flag & FPGA_FLAG_ID_MASK
                ));
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn check_board(board: u32) -> Result<(), AttemptError> {
    if board < BOARDS_PER_FRAME {
        Ok(())
    } else {
        Err(AttemptError::Failed(format!(
            "board {board} is not in 0..{BOARDS_PER_FRAME}"
        )))
    }
}

fn board_mask(boards: &[u32]) -> Result<u32, AttemptError> {
    let mut mask = 0u32;
    for &board in boards {
        check_board(board)?;
        mask |= 1 << board;
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_registers_match_the_reference_table() {
        assert_eq!(link_stop_register(Link::East), (0, 0x5C));
        assert_eq!(link_stop_register(Link::South), (0, 0x1005C));
        assert_eq!(link_stop_register(Link::SouthWest), (1, 0x5C));
        assert_eq!(link_stop_register(Link::West), (1, 0x1005C));
        assert_eq!(link_stop_register(Link::North), (2, 0x5C));
        assert_eq!(link_stop_register(Link::NorthEast), (2, 0x1005C));
    }

    #[test]
    fn runtime_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<BmpRuntime>();
    }

    #[test]
    fn masks() {
        assert_eq!(board_mask(&[0, 1, 2]).ok(), Some(7));
        assert!(board_mask(&[24]).is_err());
    }
}
