//! A faithful SpiNN-5 BMP simulator, for tests and demos (`bmp-protocol.md` §4).
//!
//! Each simulated endpoint (one frame's BMP) is a UDP socket on a loopback address with a
//! receiver thread and one worker thread. The worker answers strictly serially, in arrival
//! order, like the single-threaded firmware; at most [`SimOptions::max_queued`] datagrams wait
//! for it and the rest are dropped (the firmware's eight buffers). Replies go out from the same
//! socket to the request's source. Nothing is de-duplicated: a resent command runs again.
//!
//! The simulator models power (off, booting, on), the FPGA `FLAG` and `STOP` registers and the
//! main register bank, return codes for bad ports, absent boards, short packets, bad arguments
//! and unknown commands, and can inject the faults of §4.4 through [`Simulator::inject`]. Every
//! request it sees is kept in a bounded log ([`Simulator::log`]) for tests to assert on.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver};

use super::runtime::link_stop_register;
use super::scp::{
    ReturnCode, ScpReply, BOARDS_PER_FRAME, CMD_BMP_INFO, CMD_FPGA_READ, CMD_FPGA_WRITE, CMD_LED,
    CMD_POWER, CMD_VER, MAX_DATA_BYTES, REPLY_HEADER_BYTES, REQUEST_HEADER_BYTES, TAG_REPLY,
};
use crate::core::coordinates::Link;

/// Build date the simulated firmware reports (as in the worked example of §2.7).
const BUILD_DATE: u32 = 0x5B00_0000;
/// The board of the BMP that receives the UDP traffic (the frame's root).
const RX_BOARD: u32 = 0;
/// How often receiver threads look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Called with every logged request (e.g. to print it).
pub type RequestObserver = Arc<dyn Fn(&SimLogEntry) + Send + Sync>;

/// How the simulated BMPs behave.
#[derive(Clone)]
pub struct SimOptions {
    /// Time from power-on until a board's FPGAs are loaded. A power-on that includes board 0
    /// is answered only after this long (the firmware blocks). Real hardware: about 1500.
    pub boot_ms: u64,
    /// Bit `b` set: board `b` is present in every frame. Default: boards 0–23.
    pub present_boards: u32,
    /// Answer `CMD_VER` in the legacy format with major version 1 (no FPGA checks then).
    pub legacy_firmware: bool,
    /// What FPGA reads return on a board that is not on.
    pub off_read_value: u32,
    /// The frame ID reported by `CMD_VER` (and in the reply headers).
    pub frame_id: u8,
    /// Most datagrams waiting for an endpoint's worker; more are dropped (firmware: 8).
    pub max_queued: usize,
    /// Most log entries kept; the oldest are dropped first.
    pub log_capacity: usize,
    /// Told about every logged request, from the worker thread, before the reply is sent.
    pub on_request: Option<RequestObserver>,
    /// Time each exchange takes before its reply leaves (network and firmware together),
    /// in milliseconds; 0: at once. The endpoint's one worker holds the request this long,
    /// so requests to one BMP wait behind each other as on the single-threaded firmware,
    /// while different BMPs answer in parallel.
    pub latency_ms: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            boot_ms: 0,
            present_boards: (1 << BOARDS_PER_FRAME) - 1,
            legacy_firmware: false,
            off_read_value: 0,
            frame_id: 0,
            max_queued: 8,
            log_capacity: 100_000,
            on_request: None,
            latency_ms: 0,
        }
    }
}

impl fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimOptions")
            .field("boot_ms", &self.boot_ms)
            .field(
                "present_boards",
                &format_args!("{:#x}", self.present_boards),
            )
            .field("legacy_firmware", &self.legacy_firmware)
            .field("off_read_value", &self.off_read_value)
            .field("frame_id", &self.frame_id)
            .field("max_queued", &self.max_queued)
            .field("log_capacity", &self.log_capacity)
            .field("on_request", &self.on_request.is_some())
            .field("latency_ms", &self.latency_ms)
            .finish()
    }
}

/// What a fault does. Request faults act on each matching request; board faults act on
/// matching boards (their `cmd` scope is ignored unless noted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The request vanishes: not executed, no reply.
    DropRequest,
    /// The request is executed but its reply is lost.
    DropReply,
    /// The reply is sent this much later (the worker goes on with the next request).
    DelayReply {
        /// The delay.
        delay_ms: u64,
    },
    /// The reply is sent twice.
    DuplicateReply,
    /// A runt datagram (3 bytes, not a reply at all) is sent just before the reply.
    RuntBeforeReply,
    /// The request is not executed; it gets this return code (e.g. `0x84` RC_ARG).
    ErrorCode(u16),
    /// The endpoint answers nothing at all (until the fault is cleared or used up).
    GoSilent,
    /// Board fault, counted per power-on of the board: after it, FPGA `fpga` reports `flag`
    /// in its FLAG register instead of its own index.
    BadFpgaId {
        /// The FPGA that misreports.
        fpga: u32,
        /// The value it reports.
        flag: u32,
    },
    /// Board fault, counted per power-on: the command is acknowledged but the board stays as
    /// it was.
    PowerOnIgnored,
    /// Board fault, counted per `CMD_VER`: the board answers as legacy firmware (major 1).
    LegacyFirmware,
    /// Board fault, counted per request to the board: it is not on the CAN bus (`RC_ROUTE`);
    /// power masks ignore it while the fault is active.
    AbsentBoard,
}

/// A fault to inject, and where: `None` scopes match anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Only this endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Only requests to (or power-ons of) this board.
    pub board: Option<u32>,
    /// Only this command (request faults only).
    pub cmd: Option<u16>,
    /// Only the next N times; `None` means until [`Simulator::clear_faults`].
    pub count: Option<u32>,
    /// What happens.
    pub kind: FaultKind,
}

impl Fault {
    /// A fault of `kind` on every endpoint, board and command, forever.
    pub fn new(kind: FaultKind) -> Fault {
        Fault {
            endpoint: None,
            board: None,
            cmd: None,
            count: None,
            kind,
        }
    }

    /// Scope to one endpoint.
    pub fn endpoint(mut self, endpoint: SocketAddr) -> Fault {
        self.endpoint = Some(endpoint);
        self
    }

    /// Scope to one board.
    pub fn board(mut self, board: u32) -> Fault {
        self.board = Some(board);
        self
    }

    /// Scope to one command.
    pub fn cmd(mut self, cmd: u16) -> Fault {
        self.cmd = Some(cmd);
        self
    }

    /// Act only the next `count` times.
    pub fn times(mut self, count: u32) -> Fault {
        self.count = Some(count);
        self
    }

    fn matches(&self, endpoint: SocketAddr, board: u32, cmd: Option<u16>) -> bool {
        // Written out rather than with `Option::is_none_or`, which is newer than our MSRV.
        (self.endpoint.is_none() || self.endpoint == Some(endpoint))
            && (self.board.is_none() || self.board == Some(board))
            && (cmd.is_none() || self.cmd.is_none() || self.cmd == cmd)
    }
}

/// A board's power state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoardPower {
    /// Off.
    Off,
    /// Powered, FPGAs loading.
    Booting,
    /// Powered and loaded.
    On,
}

/// One request the simulator received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimLogEntry {
    /// The endpoint that received it.
    pub endpoint: SocketAddr,
    /// Who sent it.
    pub source: SocketAddr,
    /// Its sequence number.
    pub seq: u16,
    /// The board it was addressed to.
    pub board: u32,
    /// The command.
    pub cmd: u16,
    /// First argument.
    pub arg1: u32,
    /// Second argument.
    pub arg2: u32,
    /// Third argument.
    pub arg3: u32,
    /// Data after the arguments.
    pub data: Vec<u8>,
    /// Whether the command was carried out (false when dropped or failed with an error code).
    pub executed: bool,
    /// The return code of the reply produced; `None` if the request was dropped.
    pub rc: Option<u16>,
    /// Whether a reply was actually sent (false for dropped replies or no-reply requests).
    pub replied: bool,
}

impl SimLogEntry {
    /// A short description, handy for comparing transcripts: `VER b1`, `POWER on 0x7`,
    /// `POWER off 0x7`, `READ b1 f2 0x40004`, `WRITE b1 f0 0x5c=1`, `CMD 99 b0`.
    pub fn describe(&self) -> String {
        match self.cmd {
            CMD_VER => format!("VER b{}", self.board),
            CMD_POWER => {
                let state = if self.arg1 & 0xFF == 1 { "on" } else { "off" };
                format!("POWER {state} {:#x}", self.arg2)
            }
            CMD_FPGA_READ => format!("READ b{} f{} {:#x}", self.board, self.arg3, self.arg1),
            CMD_FPGA_WRITE => {
                let value = self
                    .data
                    .get(..4)
                    .map_or(0, |d| u32::from_le_bytes(d.try_into().expect("4")));
                format!(
                    "WRITE b{} f{} {:#x}={value}",
                    self.board, self.arg3, self.arg1
                )
            }
            other => format!("CMD {other} b{}", self.board),
        }
    }
}

#[derive(Clone, Copy)]
enum Power {
    Off,
    Booting { until: Instant },
    On,
}

/// One FPGA's registers that matter.
#[derive(Clone)]
struct Fpga {
    flag: u32,
    /// Main bank RW registers PKEY..TXPE (0x40008..=0x40024).
    main: [u32; 8],
    /// STOP of link banks 0–2 (bit 0 only).
    stop: [bool; 3],
    /// IDSO of link banks 0–2 (16 bits).
    idso: [u32; 3],
}

impl Fpga {
    fn reset(index: u32) -> Fpga {
        Fpga {
            flag: index,
            main: [0xFFFF_FFFF, 0, 0xF, 0, 0x0F, 0x0A, 0x0066, 0x012],
            stop: [false; 3],
            idso: [0; 3],
        }
    }

    fn read(&self, addr: u32) -> u32 {
        let (bank, offset) = (addr >> 16, addr & 0xFFFF);
        match (bank, offset) {
            (0..=2, 0x5C) => u32::from(self.stop[bank as usize]),
            (0..=2, 0x4C) => self.idso[bank as usize],
            (4, 0x04) => self.flag,
            (4, 0x08..=0x24) => self.main[(offset as usize - 0x08) / 4],
            _ => 0,
        }
    }

    fn write(&mut self, addr: u32, value: u32) {
        let (bank, offset) = (addr >> 16, addr & 0xFFFF);
        match (bank, offset) {
            (0..=2, 0x5C) => self.stop[bank as usize] = value & 1 != 0,
            (0..=2, 0x4C) => self.idso[bank as usize] = value & 0xFFFF,
            (4, 0x08..=0x24) => self.main[(offset as usize - 0x08) / 4] = value,
            _ => {} // Read-only or unmapped: ignored, as the SPI interface does.
        }
    }
}

#[derive(Clone)]
struct BoardState {
    power: Power,
    fpgas: [Fpga; 3],
}

impl BoardState {
    fn new() -> BoardState {
        BoardState {
            power: Power::Off,
            fpgas: [Fpga::reset(0), Fpga::reset(1), Fpga::reset(2)],
        }
    }

    /// The power state, with a finished boot turned into `On`.
    fn power_now(&mut self, now: Instant) -> BoardPower {
        match self.power {
            Power::Off => BoardPower::Off,
            Power::On => BoardPower::On,
            Power::Booting { until } if now >= until => {
                self.power = Power::On;
                BoardPower::On
            }
            Power::Booting { .. } => BoardPower::Booting,
        }
    }
}

struct Frame {
    boards: Vec<BoardState>,
}

struct Shared {
    options: SimOptions,
    faults: Mutex<Vec<Fault>>,
    log: Mutex<VecDeque<SimLogEntry>>,
    frames: HashMap<SocketAddr, Mutex<Frame>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Use up one count of the first active fault for which `pick` is true and that matches.
    fn take_fault(
        &self,
        endpoint: SocketAddr,
        board: u32,
        cmd: Option<u16>,
        pick: impl Fn(&Fault) -> bool,
    ) -> Option<FaultKind> {
        let mut faults = lock(&self.faults);
        let index = faults
            .iter()
            .position(|f| pick(f) && f.matches(endpoint, board, cmd))?;
        let kind = faults[index].kind.clone();
        if let Some(count) = faults[index].count.as_mut() {
            *count = count.saturating_sub(1);
            if *count == 0 {
                faults.remove(index);
            }
        }
        Some(kind)
    }

    fn board_absent(&self, endpoint: SocketAddr, board: u32) -> bool {
        board >= BOARDS_PER_FRAME
            || self.options.present_boards & (1 << board) == 0
            || lock(&self.faults)
                .iter()
                .any(|f| f.kind == FaultKind::AbsentBoard && f.matches(endpoint, board, None))
    }

    fn record(&self, entry: SimLogEntry) {
        if let Some(observer) = &self.options.on_request {
            observer(&entry);
        }
        let mut log = lock(&self.log);
        while log.len() >= self.options.log_capacity.max(1) {
            log.pop_front();
        }
        log.push_back(entry);
    }
}

/// Simulated BMPs on loopback UDP endpoints. Stops (and joins its threads) when dropped.
pub struct Simulator {
    shared: Arc<Shared>,
    endpoints: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Bind one UDP socket per endpoint and start answering. Every address must be loopback
    /// (port 0 picks a free port; see [`Simulator::endpoints`] for the real addresses).
    pub fn start(endpoints: &[SocketAddr], options: SimOptions) -> io::Result<Simulator> {
        if let Some(bad) = endpoints.iter().find(|e| !e.ip().is_loopback()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to simulate a BMP on {bad}: only loopback addresses are allowed"),
            ));
        }
        let mut sockets = Vec::new();
        for &endpoint in endpoints {
            let socket = UdpSocket::bind(endpoint).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot bind simulated BMP {endpoint}: {e}"),
                )
            })?;
            socket.set_read_timeout(Some(STOP_POLL))?;
            sockets.push(socket);
        }
        let mut frames = HashMap::new();
        let mut bound = Vec::new();
        for socket in &sockets {
            let addr = socket.local_addr()?;
            frames.insert(
                addr,
                Mutex::new(Frame {
                    boards: vec![BoardState::new(); BOARDS_PER_FRAME as usize],
                }),
            );
            bound.push(addr);
        }
        let shared = Arc::new(Shared {
            options,
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(VecDeque::new()),
            frames,
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for (socket, &addr) in sockets.into_iter().zip(&bound) {
            let (tx, rx) =
                channel::bounded::<(Vec<u8>, SocketAddr)>(shared.options.max_queued.max(1));
            let worker = EndpointWorker {
                shared: Arc::clone(&shared),
                socket: socket.try_clone()?,
                endpoint: addr,
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sim bmp {addr}"))
                    .spawn(move || worker.run(rx))?,
            );
            let receiver_shared = Arc::clone(&shared);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sim rx {addr}"))
                    .spawn(move || {
                        let mut buf = [0u8; 2048];
                        while !receiver_shared.stop.load(Ordering::SeqCst) {
                            match socket.recv_from(&mut buf) {
                                // A full queue models the firmware's buffer pool: drop silently.
                                Ok((len, src)) => {
                                    let _ = tx.try_send((buf[..len].to_vec(), src));
                                }
                                Err(_) => continue,
                            }
                        }
                    })?,
            );
        }
        Ok(Simulator {
            shared,
            endpoints: bound,
            threads,
        })
    }

    /// The endpoints' actual addresses, in the order given to [`Simulator::start`].
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.endpoints.clone()
    }

    /// Every request received so far (oldest first, bounded by `log_capacity`).
    pub fn log(&self) -> Vec<SimLogEntry> {
        lock(&self.shared.log).iter().cloned().collect()
    }

    /// The log of one endpoint, as [`SimLogEntry::describe`] strings.
    pub fn transcript(&self, endpoint: SocketAddr) -> Vec<String> {
        lock(&self.shared.log)
            .iter()
            .filter(|e| e.endpoint == endpoint)
            .map(SimLogEntry::describe)
            .collect()
    }

    /// Forget the log.
    pub fn clear_log(&self) {
        lock(&self.shared.log).clear();
    }

    /// Add a fault; faults are tried in the order they were added.
    pub fn inject(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Remove every fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// A board's power state; `None` for an unknown endpoint or board.
    pub fn board_power(&self, endpoint: SocketAddr, board: u32) -> Option<BoardPower> {
        let mut frame = lock(self.shared.frames.get(&endpoint)?);
        Some(
            frame
                .boards
                .get_mut(board as usize)?
                .power_now(Instant::now()),
        )
    }

    /// Whether a link's `STOP` bit is set (false for unknown endpoints or boards).
    pub fn link_stop(&self, endpoint: SocketAddr, board: u32, link: Link) -> bool {
        let (fpga, addr) = link_stop_register(link);
        self.fpga_register(endpoint, board, fpga, addr) == Some(1)
    }

    /// An FPGA register as the board holds it (whatever its power state).
    pub fn fpga_register(
        &self,
        endpoint: SocketAddr,
        board: u32,
        fpga: u32,
        addr: u32,
    ) -> Option<u32> {
        let frame = lock(self.shared.frames.get(&endpoint)?);
        Some(
            frame
                .boards
                .get(board as usize)?
                .fpgas
                .get(fpga as usize)?
                .read(addr),
        )
    }

    /// Stop answering and join the threads.
    pub fn shutdown(self) {}
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The serial worker of one endpoint.
struct EndpointWorker {
    shared: Arc<Shared>,
    socket: UdpSocket,
    endpoint: SocketAddr,
}

/// What a handled request produced.
struct Outcome {
    rc: ReturnCode,
    payload: Vec<u8>,
    executed: bool,
}

impl Outcome {
    fn error(rc: ReturnCode) -> Outcome {
        Outcome {
            rc,
            payload: Vec::new(),
            executed: false,
        }
    }

    fn ok(payload: Vec<u8>) -> Outcome {
        Outcome {
            rc: ReturnCode::OK,
            payload,
            executed: true,
        }
    }
}

fn word(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

impl EndpointWorker {
    fn run(self, requests: Receiver<(Vec<u8>, SocketAddr)>) {
        // The receiver thread drops its sender when it stops, which ends this loop.
        for (bytes, source) in requests {
            if self.shared.stop.load(Ordering::SeqCst) {
                return;
            }
            self.handle(&bytes, source);
        }
    }

    fn handle(&self, bytes: &[u8], source: SocketAddr) {
        // Too long (firmware drops > 24 + 256 SDP bytes) or too short to carry a sequence
        // number to answer with (the firmware would answer garbage): drop.
        if bytes.len() < REPLY_HEADER_BYTES || bytes.len() - 2 > 24 + MAX_DATA_BYTES {
            return;
        }
        let (flags, tag, dest_port_cpu) = (bytes[2], bytes[3], bytes[4]);
        let want_reply = flags & 0x80 != 0;
        if want_reply && tag != TAG_REPLY {
            return; // No live IPTag to answer through.
        }
        let board = u32::from(dest_port_cpu & 0x1F);
        let dest_addr = u16::from_le_bytes([bytes[6], bytes[7]]);
        let cmd = u16::from_le_bytes([bytes[10], bytes[11]]);
        let seq = u16::from_le_bytes([bytes[12], bytes[13]]);
        let mut entry = SimLogEntry {
            endpoint: self.endpoint,
            source,
            seq,
            board,
            cmd,
            arg1: word(bytes, 14),
            arg2: word(bytes, 18),
            arg3: word(bytes, 22),
            data: bytes.get(REQUEST_HEADER_BYTES..).unwrap_or(&[]).to_vec(),
            executed: false,
            rc: None,
            replied: false,
        };
        let shared = &self.shared;
        let dropped = shared.take_fault(self.endpoint, board, Some(cmd), |f| {
            matches!(f.kind, FaultKind::GoSilent | FaultKind::DropRequest)
        });
        if dropped.is_some() {
            shared.record(entry);
            return;
        }
        let outcome = if dest_port_cpu >> 5 != 0 {
            Outcome::error(ReturnCode::PORT)
        } else if self.board_absent_now(board) {
            Outcome::error(ReturnCode::ROUTE)
        } else if bytes.len() < REQUEST_HEADER_BYTES {
            Outcome::error(ReturnCode::LEN)
        } else if let Some(FaultKind::ErrorCode(rc)) =
            shared.take_fault(self.endpoint, board, Some(cmd), |f| {
                matches!(f.kind, FaultKind::ErrorCode(_))
            })
        {
            Outcome::error(ReturnCode(rc))
        } else {
            self.wait_for_boot(board);
            self.execute(&entry)
        };
        if shared.options.latency_ms > 0 {
            std::thread::sleep(Duration::from_millis(shared.options.latency_ms));
        }
        entry.executed = outcome.executed;
        entry.rc = Some(outcome.rc.0);
        let reply = ScpReply {
            rc: outcome.rc,
            seq,
            payload: outcome.payload,
        }
        .encode(
            RX_BOARD,
            u16::from(shared.options.frame_id),
            dest_port_cpu,
            dest_addr,
        );
        // Each reply fault is used up only by requests it applies to.
        let reply_fault = |pick: fn(&FaultKind) -> bool| {
            shared.take_fault(self.endpoint, board, Some(cmd), |f| pick(&f.kind))
        };
        let drop_reply = !want_reply || reply_fault(|k| *k == FaultKind::DropReply).is_some();
        let delay = match reply_fault(|k| matches!(k, FaultKind::DelayReply { .. })) {
            Some(FaultKind::DelayReply { delay_ms }) => Some(Duration::from_millis(delay_ms)),
            _ => None,
        };
        let copies = if reply_fault(|k| *k == FaultKind::DuplicateReply).is_some() {
            2
        } else {
            1
        };
        let runt = reply_fault(|k| *k == FaultKind::RuntBeforeReply).is_some();
        entry.replied = !drop_reply;
        // Log before replying, so that a client that has its reply finds the entry logged.
        shared.record(entry);
        if drop_reply {
            return;
        }
        if runt {
            let _ = self.socket.send_to(&[0, 0, 7], source);
        }
        match delay {
            None => {
                for _ in 0..copies {
                    let _ = self.socket.send_to(&reply, source);
                }
            }
            Some(delay) => {
                let Ok(socket) = self.socket.try_clone() else {
                    return;
                };
                // The worker carries on; the late reply goes out on its own.
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    for _ in 0..copies {
                        let _ = socket.send_to(&reply, source);
                    }
                });
            }
        }
    }

    /// Whether `board` is absent, using up a count of a matching `AbsentBoard` fault.
    fn board_absent_now(&self, board: u32) -> bool {
        let shared = &self.shared;
        board >= BOARDS_PER_FRAME
            || shared.options.present_boards & (1 << board) == 0
            || shared
                .take_fault(self.endpoint, board, None, |f| {
                    f.kind == FaultKind::AbsentBoard
                })
                .is_some()
    }

    /// A request to another board while it boots waits for the boot (the real BMP is busy).
    fn wait_for_boot(&self, board: u32) {
        let until = {
            let mut frame = lock(&self.shared.frames[&self.endpoint]);
            let Some(state) = frame.boards.get_mut(board as usize) else {
                return;
            };
            state.power_now(Instant::now());
            match state.power {
                Power::Booting { until } => until,
                _ => return,
            }
        };
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    }

    fn execute(&self, entry: &SimLogEntry) -> Outcome {
        let options = &self.shared.options;
        match entry.cmd {
            CMD_VER => {
                let legacy = options.legacy_firmware
                    || self
                        .shared
                        .take_fault(self.endpoint, entry.board, None, |f| {
                            f.kind == FaultKind::LegacyFirmware
                        })
                        .is_some();
                let arg1 = (1 << 24)
                    | (u32::from(options.frame_id) << 16)
                    | (entry.board << 8)
                    | entry.board;
                let (arg2, text): (u32, &[u8]) = if legacy {
                    ((136 << 16) | MAX_DATA_BYTES as u32, b"BC&MP/Spin5-BMP\0")
                } else {
                    (
                        0xFFFF_0000 | MAX_DATA_BYTES as u32,
                        b"BC&MP/Spin5-BMP\x002.1.2\0",
                    )
                };
                let mut payload = Vec::with_capacity(12 + text.len());
                for a in [arg1, arg2, BUILD_DATE] {
                    payload.extend_from_slice(&a.to_le_bytes());
                }
                payload.extend_from_slice(text);
                Outcome::ok(payload)
            }
            CMD_POWER => self.power(entry),
            CMD_FPGA_READ | CMD_FPGA_WRITE => {
                let (addr, len, fpga) = (entry.arg1 & !3, entry.arg2, entry.arg3);
                if len as usize > MAX_DATA_BYTES || fpga > 2 {
                    return Outcome::error(ReturnCode::ARG);
                }
                let words = len / 4;
                let mut frame = lock(&self.shared.frames[&self.endpoint]);
                let state = &mut frame.boards[entry.board as usize];
                let on = state.power_now(Instant::now()) == BoardPower::On;
                if entry.cmd == CMD_FPGA_READ {
                    let mut payload = Vec::with_capacity(words as usize * 4);
                    for i in 0..words {
                        let value = if on {
                            state.fpgas[fpga as usize].read(addr + 4 * i)
                        } else {
                            options.off_read_value
                        };
                        payload.extend_from_slice(&value.to_le_bytes());
                    }
                    Outcome::ok(payload)
                } else {
                    // [SIM] The firmware does not check this; answering RC_LEN is kinder.
                    if entry.data.len() < len as usize {
                        return Outcome::error(ReturnCode::LEN);
                    }
                    if on {
                        for i in 0..words {
                            let value = word(&entry.data, 4 * i as usize);
                            state.fpgas[fpga as usize].write(addr + 4 * i, value);
                        }
                    }
                    Outcome::ok(Vec::new())
                }
            }
            CMD_BMP_INFO => {
                const SIZES: [usize; 6] = [32, 256, 24, 48, 64, 32];
                match SIZES.get(entry.arg1 as usize) {
                    Some(&n) => Outcome::ok(vec![0; n]),
                    None => Outcome::error(ReturnCode::ARG),
                }
            }
            CMD_LED => Outcome::ok(Vec::new()),
            _ => Outcome::error(ReturnCode::CMD),
        }
    }

    fn power(&self, entry: &SimLogEntry) -> Outcome {
        let state_arg = entry.arg1 & 0xFF;
        if state_arg > 1 {
            return Outcome::error(ReturnCode::ARG);
        }
        let on = state_arg == 1;
        let delay_ms = u64::from(entry.arg1 >> 16);
        let boot = Duration::from_millis(self.shared.options.boot_ms);
        let now = Instant::now();
        let mut own_boot_until = None;
        for board in 0..BOARDS_PER_FRAME {
            if entry.arg2 & (1 << board) == 0 || self.shared.board_absent(self.endpoint, board) {
                continue;
            }
            if !on {
                lock(&self.shared.frames[&self.endpoint]).boards[board as usize].power = Power::Off;
                continue;
            }
            let faults = |pick: fn(&FaultKind) -> bool| {
                self.shared
                    .take_fault(self.endpoint, board, None, |f| pick(&f.kind))
            };
            if faults(|k| *k == FaultKind::PowerOnIgnored).is_some() {
                continue;
            }
            let mut fpgas = [Fpga::reset(0), Fpga::reset(1), Fpga::reset(2)];
            if let Some(FaultKind::BadFpgaId { fpga, flag }) =
                faults(|k| matches!(k, FaultKind::BadFpgaId { .. }))
            {
                if let Some(f) = fpgas.get_mut(fpga as usize) {
                    f.flag = flag;
                }
            }
            let until = now + boot + Duration::from_millis(delay_ms * u64::from(board));
            if board == RX_BOARD {
                own_boot_until = Some(until);
            }
            let mut frame = lock(&self.shared.frames[&self.endpoint]);
            let state = &mut frame.boards[board as usize];
            // Powering on a board that is on reboots it: registers back to their defaults.
            state.fpgas = fpgas;
            state.power = if until <= now {
                Power::On
            } else {
                Power::Booting { until }
            };
        }
        // The root BMP loads its own FPGAs before it answers.
        if let Some(until) = own_boot_until {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
        }
        Outcome::ok(Vec::new())
    }
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// Every BMP of `config`, as the simulator would serve it: the addresses resolved, each
/// once, in order; an error naming the machine, cabinet and frame of a BMP that is not on
/// loopback (the simulator serves nothing else).
pub fn config_endpoints(config: &crate::config::Config) -> Result<Vec<SocketAddr>, String> {
    let mut addrs = Vec::new();
    for m in &config.machines {
        for b in &m.bmps {
            let addr = super::scp::resolve_address(&b.address)
                .map_err(|e| format!("machine {}: BMP address {}: {e}", m.name, b.address))?;
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "--simulate-bmps needs loopback BMP addresses, but machine {} has BMP {} (cabinet {}, frame {})",
                    m.name, b.address, b.cabinet, b.frame
                ));
            }
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
    }
    Ok(addrs)
}

/// The board faults an admin can ask for on a command line (`spalloc-bmp-sim --fault`,
/// `spalloc-server --simulate-bmps --simulate-fault`), one spec each:
/// `HOST[:PORT]/BOARD=KIND[*N]` or `HOST[:PORT]=silent[*N]`, where KIND is
///
/// * `power`: the board ignores power-on commands (stays off, so its FPGAs read wrong);
/// * `fpga`: after each power-on FPGA 1 reports a wrong ID;
/// * `link`: writes to its FPGAs' registers (link setup) fail with `RC_ARG`;
/// * `silent`: the whole BMP answers nothing;
///
/// and `*N` limits it to the next N times (power-ons for `power` and `fpga`, commands
/// otherwise); without it the fault lasts as long as the simulator. The endpoint must be one
/// of the simulated ones (the port defaults to 17893).
pub fn parse_fault_spec(spec: &str) -> Result<Fault, String> {
    let usage = "expected HOST[:PORT]/BOARD=power|fpga|link[*N] or HOST[:PORT]=silent[*N]";
    let (target, what) = spec
        .split_once('=')
        .ok_or_else(|| format!("fault {spec:?}: {usage}"))?;
    let (kind, count) = match what.split_once('*') {
        Some((k, n)) => {
            let n: u32 = n
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("fault {spec:?}: *N must be a positive integer"))?;
            (k, Some(n))
        }
        None => (what, None),
    };
    let (host, board) = match target.rsplit_once('/') {
        Some((h, b)) => {
            let b: u32 = b
                .parse()
                .ok()
                .filter(|&b| b < BOARDS_PER_FRAME)
                .ok_or_else(|| {
                    format!("fault {spec:?}: board must be 0..{}", BOARDS_PER_FRAME - 1)
                })?;
            (h, Some(b))
        }
        None => (target, None),
    };
    let endpoint = crate::bmp::scp::resolve_address(host)
        .map_err(|e| format!("fault {spec:?}: BMP address {host:?}: {e}"))?;
    let mut fault = match (kind, board) {
        ("power", Some(b)) => Fault::new(FaultKind::PowerOnIgnored).board(b),
        ("fpga", Some(b)) => Fault::new(FaultKind::BadFpgaId { fpga: 1, flag: 3 }).board(b),
        ("link", Some(b)) => Fault::new(FaultKind::ErrorCode(ReturnCode::ARG.0))
            .board(b)
            .cmd(super::scp::CMD_FPGA_WRITE),
        ("silent", None) => Fault::new(FaultKind::GoSilent),
        ("power" | "fpga" | "link", None) => {
            return Err(format!("fault {spec:?}: {kind} needs a /BOARD; {usage}"))
        }
        ("silent", Some(_)) => {
            return Err(format!(
                "fault {spec:?}: silent is for a whole BMP (no /BOARD)"
            ))
        }
        _ => return Err(format!("fault {spec:?}: unknown kind {kind:?}; {usage}")),
    };
    fault = fault.endpoint(endpoint);
    if let Some(n) = count {
        fault = fault.times(n);
    }
    Ok(fault)
}

#[cfg(test)]
mod fault_spec_tests {
    use super::*;

    #[test]
    fn fault_specs() {
        let f = parse_fault_spec("127.0.0.1:17900/5=fpga*2").unwrap();
        assert_eq!(f.board, Some(5));
        assert_eq!(f.count, Some(2));
        assert_eq!(f.endpoint, Some("127.0.0.1:17900".parse().unwrap()));
        let f = parse_fault_spec("127.0.0.1=silent").unwrap();
        assert_eq!(
            (f.kind, f.board, f.count),
            (FaultKind::GoSilent, None, None)
        );
        let f = parse_fault_spec("127.0.0.1/3=link").unwrap();
        assert_eq!(f.cmd, Some(crate::bmp::scp::CMD_FPGA_WRITE));
        for bad in [
            "127.0.0.1/3",
            "127.0.0.1/3=melt",
            "127.0.0.1=power",
            "127.0.0.1/30=power",
            "127.0.0.1/3=power*0",
            "127.0.0.1/2=silent",
        ] {
            assert!(parse_fault_spec(bad).is_err(), "{bad} accepted");
        }
    }
}
