//! The `spalloc-server` process: a `polling` loop over the listening socket and every client,
//! the journal, the core, and the BMP threads.
//!
//! Each pass of the loop follows raft-rs's "persist the Ready, then advance":
//!
//! 1. gather inputs: lines from readable clients (cut into commands), BMP completions, a
//!    configuration reload after SIGHUP, and a tick if the core has a deadline due;
//! 2. append every state-changing event of the pass to the journal as one batch with one
//!    fsync (group commit: all clients of a pass share it);
//! 3. fold the events into the core in arrival order, answering read-only commands in the
//!    same order so each client sees its own earlier commands' effects;
//! 4. only then release the outputs: replies (per client, in command order), the batched
//!    notifications, and BMP requests to the BMP threads.
//!
//! A reply therefore never leaves before its event is durable. Everything on disk (journal,
//! deferred records, snapshots, outages) belongs to one owner, `durability`. Event times
//! come from `clock`, which wall-clock steps do not move.
//!
//! If the journal cannot be written, state-changing commands are refused with an error and
//! nothing is applied, and work the server starts itself (ticks, BMP completions) waits.
//! The journal cuts a failed batch off before the refusal is sent, so a refusal changes
//! nothing, after a crash either; if that cut fails too, the clients are told their
//! commands may or may not have been carried out (`Server::refused`), never that they were
//! not.
//! Keepalives are never refused for the server's own trouble (see `Server::refused`): a
//! job its client keeps alive must not expire because the disk filled up.
//!
//! Two refinements keep clients from waiting on an fsync that cannot matter to them:
//!
//! - **Keepalives are journaled lazily.** A `job_keepalive` (or `get_job_state` /
//!   `get_job_machine_info`, which also count as one) from the host already recorded as the
//!   job's keepalive host changes nothing but the job's keepalive deadline, and a restart
//!   gives every job a fresh deadline anyway ([`crate::core::Event::Restarted`]). So a crash that loses
//!   such an event changes nothing a client was told: the state after restart is the same
//!   with or without it. A pass made only of such events is folded and answered at once;
//!   its records wait in memory and are written, in order, ahead of the next batch that is
//!   fsync'd anyway, or after `DEFERRED_FLUSH_US` by a thread that borrows
//!   the journal meanwhile. The journal therefore still holds every event in fold order
//!   (replay and `--verify` see exactly what the live server folded), and a snapshot is
//!   only taken once the deferred records are written. At most
//!   `DEFERRED_MAX_RECORDS` wait; past that, keepalives are journaled like
//!   any change.
//! - **Answers that need nothing from the pass go first.** In a pass that waits for an
//!   fsync (and reloads no configuration), a read-only command (or `version`, `notify_*`) from a client with no
//!   state-changing command earlier in the same pass is answered from the state before the
//!   pass, and sent before the fsync: it is ordered before the pass's changes, which no
//!   client has yet been told about.
//!
//! The module is split along those concepts: `startup` (start-up, reload, shut-down),
//! `pass` (one iteration of the loop), `connections` (accepting, reading and writing
//! protocol and admin clients), `notifications` (the core's outputs: watches, log lines,
//! metrics), and `sim` (a deterministic simulation of the whole loop, for tests). What ties
//! them together stays here: the `Server` they share, the pass's `Action`s, the logger, the
//! poller keys (and the core's event codec, re-exported).

pub mod admin;
pub mod client;
mod clock;
mod connections;
mod durability;
pub mod http;
pub mod limits;
pub mod metrics;
mod notifications;
mod pass;
mod recovery;
pub mod sim;
mod startup;
mod touched;

pub use limits::Limits;
// The journal's event codec is the core's (it is part of the core's on-disk contract).
pub use crate::core::codec::{decode_event, encode_event, write_event};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use polling::Poller;

use crate::bmp::{BmpCompletion, BmpRuntime};
use crate::core::{BmpRequestId, Command, Core, TimeUs};
use crate::timefmt::now_us;
use client::Client;
use clock::EventClock;
use durability::Durability;

/// What the command line asked for (see `spalloc-server --help`).
#[derive(Clone, Debug)]
pub struct Options {
    /// Journal directory.
    pub journal: PathBuf,
    /// Configuration file.
    pub config: Option<PathBuf>,
    /// Port override.
    pub port: Option<u16>,
    /// Listen address override.
    pub ip: Option<String>,
    /// Start from an empty state, keeping the old journal aside.
    pub cold_start: bool,
    /// No log lines except errors.
    pub quiet: bool,
    /// Run a BMP simulator at every configured (loopback) BMP address.
    pub simulate_bmps: bool,
    /// Every bound on what clients can make the server hold or do (`--limit`,
    /// `--max-clients`).
    pub limits: Limits,
    /// Lower `clients_max` to what the descriptor limit allows (unless the admin set it).
    pub fit_clients_to_fds: bool,
    /// Journaled events between snapshots ([`SNAPSHOT_EVERY_EVENTS`] by default).
    pub snapshot_every_events: u64,
    /// After a restart, no job's keepalive expires sooner than this
    /// ([`RESTART_GRACE_US`] by default).
    pub restart_grace_us: TimeUs,
    /// Journal history kept, in days ([`RETAIN_DAYS`] by default): segments are deleted by
    /// age, never by the number of restarts or snapshots.
    pub retain_days: u32,
    /// The admin socket (default `admin.sock` in the journal directory).
    pub admin_socket: Option<PathBuf>,
    /// Board faults for the simulator of `simulate_bmps` ([`crate::bmp::parse_fault_spec`]).
    pub simulate_faults: Vec<String>,
    /// Milliseconds each exchange with a simulated BMP takes ([`crate::bmp::SimOptions::latency_ms`]).
    pub simulated_bmp_latency_ms: u64,
    /// The HTTP status page, metrics and JSON API, if asked for (`--http`).
    pub http: Option<http::HttpOptions>,
}

/// By default a snapshot is written after this many journaled events, so a restart replays
/// at most this many (`--snapshot-every`).
pub const SNAPSHOT_EVERY_EVENTS: u64 = 100_000;
/// After a restart, every job has at least this long before its keepalive can expire
/// (`--restart-grace-s`): the stock client's keepalive process needs about 5 s to reconnect
/// after a restart, so a job with a short keepalive would otherwise die of the restart.
pub const RESTART_GRACE_US: TimeUs = 30_000_000;
/// By default the journal keeps this many days of history (`--retain-days`), so
/// `spalloc-replay` can tell the whole life of any job of the last three months.
pub const RETAIN_DAYS: u32 = 90;
/// The longest `--retain-days` accepted (about 100 years: effectively "keep everything").
pub const RETAIN_DAYS_MAX: u32 = 36_500;
// Poller keys, one range per kind of socket (they must never overlap):
//   0 ..                         protocol clients (counting up)
//   1 << 61 .. 1 << 62           HTTP connections (`http::owns_key`)
//   1 << 62 .. usize::MAX - 3    admin connections (`admin::ADMIN_KEY_BASE`)
//   usize::MAX - 3               the HTTP listener (`http::LISTENER_KEY`)
//   usize::MAX - 2, - 1          the admin listener, the protocol listener
const LISTENER_KEY: usize = usize::MAX - 1;
const ADMIN_LISTENER_KEY: usize = usize::MAX - 2;

/// Something to do for one client, in arrival order, after the pass's events are durable.
enum Action {
    /// Fold event `index` of the pass and send the reply (if any) to `client`.
    Event { client: Option<usize>, index: usize },
    /// Answer a read-only command from the state as it is at this point of the pass.
    Query { client: usize, command: Command },
    /// Send these bytes.
    Send { client: usize, bytes: Vec<u8> },
    /// Close the client once its output is flushed.
    Close { client: usize },
}

/// Log sink: timestamped lines on stderr, suppressed (except warnings and errors) by
/// `--quiet`. (Tests can capture the lines instead.)
#[derive(Clone)]
pub struct Logger {
    quiet: bool,
    captured: Option<Arc<std::sync::Mutex<Vec<String>>>>,
}

impl Logger {
    /// A logger; `quiet` keeps only warnings and errors.
    pub fn new(quiet: bool) -> Logger {
        Logger {
            quiet,
            captured: None,
        }
    }

    /// A logger that keeps its lines (without timestamps) for a test, or the simulation,
    /// to read.
    pub fn capture() -> Logger {
        Logger {
            quiet: false,
            captured: Some(Arc::default()),
        }
    }

    /// The lines captured so far (see [`Logger::capture`]).
    pub fn lines(&self) -> Vec<String> {
        self.captured
            .as_ref()
            .map(|c| c.lock().unwrap().clone())
            .unwrap_or_default()
    }

    fn emit(&self, level: &str, msg: &str) {
        // The last line of defence against escapes reaching the admin's terminal (client
        // strings are escaped where they enter a message: `crate::logsafe`).
        let msg = &*crate::logsafe::escape_message(msg);
        if let Some(c) = &self.captured {
            c.lock().unwrap().push(format!("{level}{msg}"));
            return;
        }
        // Log lines carry the wall clock (what an admin correlates with), not event time.
        eprintln!(
            "{} {level}{msg}",
            crate::timefmt::format_iso(now_us() / 1_000_000 * 1_000_000)
        );
    }

    /// An informational line.
    pub fn info(&self, msg: &str) {
        if !self.quiet {
            self.emit("", msg);
        }
    }

    /// A warning: something an admin should look at, though the server carries on
    /// (always printed).
    pub fn warn(&self, msg: &str) {
        self.emit("WARNING ", msg);
    }

    /// An error line (always printed).
    pub fn error(&self, msg: &str) {
        self.emit("ERROR ", msg);
    }
}

/// Signals noticed by the signal thread, consumed by the loop.
#[derive(Default)]
struct SignalFlags {
    reload: AtomicBool,
    stop: AtomicBool,
}

/// The running server.
struct Server {
    opts: Options,
    log: Logger,
    poller: Arc<Poller>,
    listener: TcpListener,
    clients: BTreeMap<usize, Client>,
    next_client_key: usize,
    core: Core,
    /// The journal, deferred records, snapshots: everything on disk.
    durability: Durability,
    /// Stamps events: monotonic, so wall-clock steps move no timer.
    clock: EventClock,
    bmp: BmpRuntime,
    completions: crossbeam::channel::Receiver<BmpCompletion>,
    /// Completions that could not be journaled yet (journal trouble): retried next pass.
    unjournaled_completions: VecDeque<BmpCompletion>,
    /// Jobs whose keepalives were answered while the journal could not record them: their
    /// timers are reset ([`crate::core::Event::KeptAliveUnrecorded`]) as soon as it can.
    kept_alive_unrecorded: BTreeSet<crate::core::JobId>,
    signals: Arc<SignalFlags>,
    /// After a failed `accept` (out of descriptors): not before this time, and the listener
    /// is left disarmed until then (`accept_paused`), so the loop neither spins nor forgets
    /// to re-arm it.
    accept_paused_until_us: TimeUs,
    accept_paused: bool,
    /// Failed accepts not yet logged, and when the last was (`ACCEPT_ERROR_LOG_US`).
    accept_errors: u64,
    accept_error_logged_us: TimeUs,
    /// A descriptor held in reserve: when `accept` fails for lack of descriptors, it is
    /// closed so one waiting connection can be accepted and told "server is full".
    spare_fd: Option<std::fs::File>,
    /// Unsent output across all clients (bounded by `output_total_bytes_max`).
    output_total: usize,
    /// Watch entries across all clients (bounded by `watch_entries_total_max`).
    watch_total: usize,
    /// Received, unhandled input across all clients (bounded by `input_total_bytes_max`).
    input_total: usize,
    /// Clients with complete requests left over after their share of a pass
    /// (`requests_per_pass_max`): handled next pass, which comes at once.
    unfinished_input: BTreeSet<usize>,
    _simulator: Option<crate::bmp::Simulator>,
    /// The admin socket, its path, and its connections (keys from `admin::ADMIN_KEY_BASE`).
    /// (`None` only if the default socket could not be made: logged, and serving goes on.)
    admin_listener: Option<std::os::unix::net::UnixListener>,
    admin_path: PathBuf,
    admin_conns: BTreeMap<usize, admin::AdminConn>,
    next_admin_key: usize,
    /// The HTTP port (`--http`), if asked for.
    http: Option<http::Http>,
    /// Counters and histograms, exported by the HTTP port's `/metrics`.
    metrics: metrics::Metrics,
    /// When each BMP request in flight was handed to its thread, and its BMP (for the
    /// request-duration histogram); as bounded as the requests in flight.
    bmp_started: BTreeMap<BmpRequestId, (Instant, String)>,
    /// The pass's buffers, kept between passes.
    buffers: pass::PassBuffers,
}

/// What a [`Server`] is made of that the one starting it chooses: the production start-up
/// ([`Server::start`]) or the simulation. Everything else starts empty ([`Server::assemble`]).
struct ServerParts {
    opts: Options,
    log: Logger,
    poller: Arc<Poller>,
    listener: TcpListener,
    core: Core,
    durability: Durability,
    clock: EventClock,
    bmp: BmpRuntime,
    completions: crossbeam::channel::Receiver<BmpCompletion>,
    signals: Arc<SignalFlags>,
    spare_fd: Option<std::fs::File>,
    simulator: Option<crate::bmp::Simulator>,
    admin_listener: Option<std::os::unix::net::UnixListener>,
    admin_path: PathBuf,
    http: Option<http::Http>,
}

impl Server {
    /// A server from its parts, with no client, nothing pending and every count at zero:
    /// the one place the loop's own state gets its starting values.
    fn assemble(parts: ServerParts) -> Server {
        Server {
            opts: parts.opts,
            log: parts.log,
            poller: parts.poller,
            listener: parts.listener,
            clients: BTreeMap::new(),
            next_client_key: 0,
            core: parts.core,
            durability: parts.durability,
            clock: parts.clock,
            bmp: parts.bmp,
            completions: parts.completions,
            unjournaled_completions: VecDeque::new(),
            kept_alive_unrecorded: BTreeSet::new(),
            signals: parts.signals,
            accept_paused_until_us: 0,
            accept_paused: false,
            accept_errors: 0,
            accept_error_logged_us: 0,
            spare_fd: parts.spare_fd,
            output_total: 0,
            watch_total: 0,
            input_total: 0,
            unfinished_input: BTreeSet::new(),
            _simulator: parts.simulator,
            admin_listener: parts.admin_listener,
            admin_path: parts.admin_path,
            admin_conns: BTreeMap::new(),
            next_admin_key: admin::ADMIN_KEY_BASE,
            http: parts.http,
            metrics: metrics::Metrics::new(),
            bmp_started: BTreeMap::new(),
            buffers: pass::PassBuffers::default(),
        }
    }
}

/// Run the server until SIGINT or SIGTERM. Errors are start-up failures, worded for an admin.
pub fn run(opts: Options) -> Result<(), String> {
    let log = Logger::new(opts.quiet);
    let mut server = Server::start(opts, log)?;
    server.serve()?;
    server.shut_down()
}
