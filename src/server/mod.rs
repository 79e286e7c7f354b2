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
//! Keepalives are never refused for the server's own trouble (see `Server::refused`): a
//! job its client keeps alive must not expire because the disk filled up.
//!
//! Two refinements keep clients from waiting on an fsync that cannot matter to them:
//!
//! - **Keepalives are journaled lazily.** A `job_keepalive` (or `get_job_state` /
//!   `get_job_machine_info`, which also count as one) from the host already recorded as the
//!   job's keepalive host changes nothing but the job's keepalive deadline, and a restart
//!   gives every job a fresh deadline anyway ([`Event::Restarted`]). So a crash that loses
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

pub mod admin;
pub mod client;
mod clock;
mod durability;
pub mod http;
pub mod limits;
pub mod metrics;
mod recovery;

pub use limits::Limits;
// The journal's event codec is the core's (it is part of the core's on-disk contract).
pub use crate::core::codec::{decode_event, encode_event, write_event};

use crate::core::rules::Rules;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use polling::{Event as PollEvent, Events, Poller};

use crate::bmp::{BmpCompletion, BmpRuntime};
use crate::config::{self, Config};
use crate::core::{BmpRequestId, Command, Core, Effect, Event, Lifecycle, Response, TimeUs};
use crate::protocol::{self, Parsed};
use crate::timefmt::now_us;
use client::{Client, ReadOutcome};
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
/// The loop wakes at least this often even when idle (to notice signals promptly).
const MAX_WAIT: Duration = Duration::from_secs(1);
/// At most this many connections are accepted in one pass, so a connect storm cannot starve
/// the clients already connected.
const ACCEPTS_PER_PASS: usize = 1024;
// Poller keys, one range per kind of socket (they must never overlap):
//   0 ..                         protocol clients (counting up)
//   1 << 61 .. 1 << 62           HTTP connections (`http::owns_key`)
//   1 << 62 .. usize::MAX - 3    admin connections (`admin::ADMIN_KEY_BASE`)
//   usize::MAX - 3               the HTTP listener (`http::LISTENER_KEY`)
//   usize::MAX - 2, - 1          the admin listener, the protocol listener
const LISTENER_KEY: usize = usize::MAX - 1;
const ADMIN_LISTENER_KEY: usize = usize::MAX - 2;
/// While `accept` keeps failing, its ERROR is repeated at most this often (with a count).
const ACCEPT_ERROR_LOG_US: TimeUs = 10_000_000;

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

    /// A logger that keeps its lines (without timestamps) for a test to read.
    #[cfg(test)]
    pub fn capture() -> Logger {
        Logger {
            quiet: false,
            captured: Some(Arc::default()),
        }
    }

    /// The lines captured so far (see [`Logger::capture`]).
    #[cfg(test)]
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
    /// timers are reset ([`Event::KeptAliveUnrecorded`]) as soon as it can.
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
}

/// Run the server until SIGINT or SIGTERM. Errors are start-up failures, worded for an admin.
pub fn run(opts: Options) -> Result<(), String> {
    let log = Logger::new(opts.quiet);
    let mut server = Server::start(opts, log)?;
    server.serve()?;
    server.shut_down()
}

impl Server {
    fn start(opts: Options, log: Logger) -> Result<Server, String> {
        let config = match &opts.config {
            Some(path) => Some(config::load(path).map_err(|e| {
                format!("configuration file {} is not valid:\n{e}", path.display())
            })?),
            None => None,
        };
        if opts.cold_start {
            recovery::set_journal_aside(&opts.journal, &log)?;
        }
        let recovered = recovery::open_and_replay(&opts.journal, opts.retain_days, &log)?;
        let mut core = recovered.core;
        let mut journal = recovered.journal;
        let clock = EventClock::start(core.now_us());
        let now = clock.now_us();

        // The start-up batch: a warm start resets keepalives (with a grace); a configuration
        // that differs from the journal's is applied as a diff.
        let mut startup = Vec::new();
        // This version's rules from here on (a journal that older versions wrote replays by
        // theirs up to this record: `core::rules`).
        let rules: Rules = opts.limits.rules();
        if core.rules() != rules {
            startup.push(Event::Rules { now_us: now, rules });
        }
        if recovered.warm {
            startup.push(Event::Restarted {
                now_us: now,
                grace_us: opts.restart_grace_us,
            });
        }
        match (&config, recovered.configured) {
            (Some(c), configured) if !configured || c != core.config() => {
                startup.push(Event::Configure {
                    now_us: now,
                    config: c.clone(),
                })
            }
            (Some(_), _) => {}
            (None, true) => {
                log.info("no --config given: resuming with the configuration in the journal")
            }
            (None, false) => {
                return Err(format!(
                "no configuration: the journal in {} holds none, so give one with --config FILE",
                opts.journal.display()
            ))
            }
        }
        if !startup.is_empty() {
            let encoded: Vec<Vec<u8>> = startup.iter().map(encode_event).collect();
            journal
                .append_batch(encoded.iter().map(|e| e.as_slice()))
                .map_err(|e| {
                    format!(
                        "cannot write the journal in {}: {e}",
                        opts.journal.display()
                    )
                })?;
            for e in &startup {
                core.handle(e);
            }
        }
        let config = core.config().clone();

        // BMPs: a simulator first if asked, then the threads that talk to them.
        // Faults come from the configuration's `simulated_faults` and `--simulate-fault`.
        let simulator = if opts.simulate_bmps {
            Some(start_simulator(&config, &log, &opts.simulate_faults)?)
        } else {
            if !config.simulated_faults.is_empty() {
                log.warn(&format!(
                    "simulated_faults in the configuration ignored: the BMPs are real \
                     (they apply only with --simulate-bmps): {:?}",
                    config.simulated_faults
                ));
            }
            None
        };
        let poller = Arc::new(Poller::new().map_err(|e| format!("cannot create a poller: {e}"))?);
        let (tx, completions) = crossbeam::channel::unbounded();
        let waker_poller = Arc::clone(&poller);
        let bmp_log = log.clone();
        let bmp = BmpRuntime::new(
            config.bmp.clone(),
            tx,
            Arc::new(move || {
                let _ = waker_poller.notify();
            }),
            Arc::new(move |line: String| bmp_log.info(&line)),
        );

        // The admin socket first: it exists by the time the listening line is printed.
        let admin_path = opts
            .admin_socket
            .clone()
            .unwrap_or_else(|| admin::default_path(&opts.journal));
        let admin_listener = match admin::bind(&admin_path) {
            Ok(l) => {
                // SAFETY: deleted from the poller before it is dropped (shut_down).
                unsafe { poller.add(&l, PollEvent::readable(ADMIN_LISTENER_KEY)) }
                    .map_err(|e| format!("cannot watch the admin socket: {e}"))?;
                log.info(&format!("admin socket at {}", admin_path.display()));
                Some(l)
            }
            // Asked for explicitly: an admin expects it, so do not start without it.
            Err(e) if opts.admin_socket.is_some() => return Err(e),
            // The default place: users must not lose the service for it.
            Err(e) => {
                log.warn(&format!(
                    "{e}; serving without the admin channel (give --admin-socket PATH)"
                ));
                None
            }
        };

        let ip = opts.ip.clone().unwrap_or_else(|| config.ip.clone());
        let port = opts.port.unwrap_or(config.port);
        let ip_addr: IpAddr = if ip.is_empty() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            ip.parse()
                .map_err(|_| format!("listen address {ip:?} is not an IP address"))?
        };
        let listener = listen(
            SocketAddr::new(ip_addr, port),
            opts.limits.listen_backlog_max,
        )
        .map_err(|e| format!("cannot listen on {ip_addr}:{port}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot configure the listener: {e}"))?;
        // SAFETY: the listener is deleted from the poller before it is dropped (shut_down).
        unsafe { poller.add(&listener, PollEvent::readable(LISTENER_KEY)) }
            .map_err(|e| format!("cannot watch the listener: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        log.info(&format!(
            "spalloc-server {} listening on {local} with {} machines, journal {}",
            env!("CARGO_PKG_VERSION"),
            config.machines.len(),
            opts.journal.display()
        ));
        // Tests and scripts that ask for port 0 learn the real port from this line.
        if port == 0 {
            eprintln!("listening on {local}");
        }

        let http = match &opts.http {
            Some(h) => {
                let http = http::Http::start(h.clone(), Arc::clone(&poller), log.clone())?;
                let addr = http.local_addr().map_err(|e| e.to_string())?;
                log.info(&format!(
                    "status page on http://{addr}/ (metrics at /metrics)"
                ));
                if h.addr.port() == 0 {
                    eprintln!("http listening on {addr}");
                }
                Some(http)
            }
            None => None,
        };
        // Each client needs a descriptor: a bound above what the process may open would turn
        // the next connections into accept failures (EMFILE) instead of a clear refusal.
        let mut opts = opts;
        if let Some(nofile) = Limits::open_files_soft_limit() {
            let fit = nofile.saturating_sub(limits::RESERVED_FDS).max(1) as usize;
            if opts.limits.clients_max > fit && opts.fit_clients_to_fds {
                log.warn(&format!(
                    "clients_max lowered from {} to {fit}: the process may open {nofile} files \
                     and keeps {} for itself (raise LimitNOFILE / ulimit -n to allow more)",
                    opts.limits.clients_max,
                    limits::RESERVED_FDS
                ));
                opts.limits.clients_max = fit;
            } else if opts.limits.clients_max > fit {
                log.warn(&format!(
                    "clients_max {} is more than the {nofile} files the process may open allow \
                     ({fit} after {} kept for the server): past that, connections wait in the \
                     backlog and are refused as descriptors run out",
                    opts.limits.clients_max,
                    limits::RESERVED_FDS
                ));
            }
        }

        let signals = Arc::new(SignalFlags::default());
        start_signal_thread(Arc::clone(&signals), Arc::clone(&poller))?;

        let durability = Durability::new(
            journal,
            recovered.snapshot_seq,
            opts.snapshot_every_events,
            Arc::clone(&poller),
            log.clone(),
        )?;
        let mut server = Server {
            opts,
            log,
            poller,
            listener,
            clients: BTreeMap::new(),
            next_client_key: 0,
            core,
            durability,
            clock,
            bmp,
            completions,
            unjournaled_completions: VecDeque::new(),
            kept_alive_unrecorded: BTreeSet::new(),
            signals,
            accept_paused_until_us: 0,
            accept_paused: false,
            accept_errors: 0,
            accept_error_logged_us: 0,
            spare_fd: std::fs::File::open("/dev/null").ok(),
            output_total: 0,
            watch_total: 0,
            input_total: 0,
            unfinished_input: BTreeSet::new(),
            _simulator: simulator,
            admin_listener,
            admin_path,
            admin_conns: BTreeMap::new(),
            next_admin_key: admin::ADMIN_KEY_BASE,
            http,
            metrics: metrics::Metrics::new(),
            bmp_started: BTreeMap::new(),
        };
        // Log what the start-up batch did, then re-issue every BMP request in flight (those
        // interrupted by the restart and those just issued) in issue order.
        while let Some(effect) = server.core.poll_effect() {
            if let Effect::Log(line) = effect {
                server.log.info(&line);
            }
        }
        let resumed: Vec<_> = server.core.outstanding_bmp_requests().cloned().collect();
        if !resumed.is_empty() {
            server.log.info(&format!(
                "re-issuing {} BMP requests that were in flight",
                resumed.len()
            ));
        }
        for r in resumed {
            server.submit_bmp(r);
        }
        Ok(server)
    }

    fn serve(&mut self) -> Result<(), String> {
        let mut events = Events::new();
        loop {
            let wait = self.next_wait(self.clock.now_us());
            events.clear();
            match self.poller.wait(&mut events, Some(wait)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("polling failed: {e}")),
            }
            let stopping = self.signals.stop.load(Ordering::SeqCst);
            let ready: Vec<(usize, bool, bool)> = events
                .iter()
                .map(|e| (e.key, e.readable, e.writable))
                .collect();
            self.pass(&ready, stopping);
            if stopping {
                self.log.info("stopping: signal received");
                return Ok(());
            }
        }
    }

    /// How long the loop may sleep: until the core's next deadline, or sooner for work of
    /// its own still to be journaled (BMP completions, unrecorded keepalives), but while
    /// the journal cannot be written not before the next retry (a deadline already past
    /// would otherwise make the loop spin); or until durability has housekeeping to do.
    fn next_wait(&self, now: TimeUs) -> Duration {
        let mut deadline = self.core.poll_deadline();
        if !self.unjournaled_completions.is_empty() || !self.kept_alive_unrecorded.is_empty() {
            deadline = Some(now);
        }
        if !self.unfinished_input.is_empty() {
            return Duration::ZERO;
        }
        if let Some(retry_at) = self.durability.retry_at() {
            deadline = deadline.map(|d| d.max(retry_at));
        }
        let http = self.http.as_ref().and_then(|h| h.next_deadline());
        let paused = self.accept_paused.then_some(self.accept_paused_until_us);
        let deadline = [deadline, self.durability.next_deadline(), http, paused]
            .into_iter()
            .flatten()
            .min();
        deadline
            .map(|d| Duration::from_micros(d.saturating_sub(now)))
            .map_or(MAX_WAIT, |d| d.min(MAX_WAIT))
    }

    /// One pass of the loop (see the module docs).
    fn pass(&mut self, ready: &[(usize, bool, bool)], stopping: bool) {
        let now = self.clock.now_us();
        self.durability.poll(now);
        let retry_due = self.durability.retry_due(now);
        let mut events: Vec<Event> = Vec::new();
        let mut actions: Vec<Action> = Vec::new();
        let mut touched: BTreeSet<usize> = BTreeSet::new();
        // Live jobs per owner and host, counted on the pass's first create_job.
        let mut job_counts: Option<JobCounts> = None;

        // A listener paused after a failed accept: its back-off is over, so accept again
        // (which re-arms it).
        if self.accept_paused && now >= self.accept_paused_until_us && !stopping {
            self.accept(now);
        }
        if self.signals.reload.swap(false, Ordering::SeqCst) {
            if let Some(config) = self.reload_config() {
                actions.push(Action::Event {
                    client: None,
                    index: events.len(),
                });
                events.push(Event::Configure {
                    now_us: now,
                    config,
                });
            }
        }
        // Keepalives answered while the journal could not record them: the first thing
        // recorded once it can (before any tick could expire those jobs).
        if !self.kept_alive_unrecorded.is_empty() && retry_due {
            actions.push(Action::Event {
                client: None,
                index: events.len(),
            });
            events.push(Event::KeptAliveUnrecorded {
                now_us: now,
                job_ids: self.kept_alive_unrecorded.iter().copied().collect(),
            });
        }
        let fresh: Vec<BmpCompletion> = self.completions.try_iter().collect();
        for c in &fresh {
            if let Some((started, bmp)) = self.bmp_started.remove(&c.request_id) {
                self.metrics
                    .bmp_request(&bmp, c.failure.is_some(), started.elapsed());
            }
        }
        let completions: Vec<BmpCompletion> = self
            .unjournaled_completions
            .drain(..)
            .chain(fresh)
            .collect();
        for c in completions {
            actions.push(Action::Event {
                client: None,
                index: events.len(),
            });
            events.push(Event::BmpDone {
                now_us: now,
                request_id: c.request_id,
                failure: c.failure,
                failed_boards: c.failed_boards,
                bmp_unreachable: c.bmp_unreachable,
            });
        }
        // Clients with requests left from their share of the last pass (taken before this
        // pass's reads put back those with more left still).
        let unfinished = std::mem::take(&mut self.unfinished_input);
        for &(key, readable, writable) in ready {
            if http::owns_key(key) {
                continue; // served after the pass's changes are folded (below)
            }
            if key == LISTENER_KEY {
                if !stopping {
                    self.accept(now);
                }
                continue;
            }
            if key == ADMIN_LISTENER_KEY {
                if !stopping {
                    self.accept_admin();
                }
                continue;
            }
            if key >= admin::ADMIN_KEY_BASE {
                touched.insert(key);
                if readable && !stopping {
                    self.read_admin(key, now, &mut events, &mut actions);
                }
                continue;
            }
            touched.insert(key);
            if writable {
                self.flush_client(key);
            }
            if readable && !stopping {
                self.read_client(key, now, &mut events, &mut actions, &mut job_counts);
            }
        }
        for key in unfinished {
            // (Those read above this pass were handled with their readiness.)
            let read_now = ready.iter().any(|&(k, readable, _)| k == key && readable);
            if stopping || read_now {
                continue; // (handled above)
            }
            touched.insert(key);
            self.read_client(key, now, &mut events, &mut actions, &mut job_counts);
        }
        self.bound_input();
        if self.core.tick_due(now) && retry_due {
            actions.push(Action::Event {
                client: None,
                index: events.len(),
            });
            events.push(Event::Tick { now_us: now });
        }

        // Persist, then apply, then release.
        let durable = if self.can_defer(&events) {
            self.durability.defer(&events, now);
            Ok(())
        } else {
            // (Not around a configuration reload: an admin who saw it logged expects every
            // later answer to show it.)
            let reload = events.iter().any(|e| matches!(e, Event::Configure { .. }));
            if !events.is_empty() && !reload {
                actions = self.answer_early(actions, &mut touched);
            }
            self.durability.commit(&events, now)
        };
        if durable.is_ok() {
            self.metrics.events_journaled(events.len());
        }
        for action in actions {
            match action {
                Action::Event { client, index } => {
                    let event = &events[index];
                    if let Err(why) = &durable {
                        self.refused(client, event, why, now, &mut touched);
                        continue;
                    }
                    if let Event::KeptAliveUnrecorded { .. } = event {
                        self.kept_alive_unrecorded.clear();
                    }
                    self.fold(client, event, &mut touched);
                }
                // (Not for a client dropped earlier in the pass: a never-reading client's
                // pipelined queries would otherwise all be computed and rendered for nobody.)
                Action::Query { client, command } if self.clients.contains_key(&client) => {
                    let r = self.core.query(&command);
                    self.send(client, &protocol::render_response(&r), &mut touched);
                }
                Action::Query { .. } => {}
                Action::Send { client, bytes } => self.send(client, &bytes, &mut touched),
                Action::Close { client } => {
                    if let Some(c) = self.clients.get_mut(&client) {
                        c.closing = true;
                        touched.insert(client);
                    }
                    if let Some(c) = self.admin_conns.get_mut(&client) {
                        c.closing = true;
                        touched.insert(client);
                    }
                }
            }
        }
        let bmp_requests = self.release_effects(&mut touched);
        // Only a client that reported an event this pass was disarmed (oneshot); one we
        // merely wrote to (a watcher getting a notification) is still armed as it was.
        let disarmed: BTreeSet<usize> = ready.iter().map(|&(k, _, _)| k).collect();
        for key in touched {
            self.rearm(key, disarmed.contains(&key));
        }
        // BMP requests go after every reply and notification is sent: handing one over
        // wakes a BMP thread, which would otherwise compete with those sends for the CPU.
        for r in bmp_requests {
            self.submit_bmp(r);
        }
        self.durability.maybe_snapshot(&self.core, now);
        for took in self.durability.take_write_times() {
            self.metrics.journal_write(took);
        }
        // The HTTP port last: it answers from the state this pass left.
        if let Some(h) = &mut self.http {
            let http_ready: Vec<(usize, bool, bool)> = ready
                .iter()
                .copied()
                .filter(|&(k, _, _)| http::owns_key(k))
                .collect();
            h.serve(
                &http_ready,
                now,
                &self.core,
                &self.metrics,
                self.clients.len(),
            );
        }
    }

    /// Hand a request to its BMP's thread, noting when (for the metrics).
    fn submit_bmp(&mut self, r: crate::core::BmpRequest) {
        self.bmp_started
            .insert(r.id, (Instant::now(), r.address.clone()));
        self.bmp.submit(r);
    }

    /// Fold a durable (or deferred) event and send its reply, if any, to `client`.
    fn fold(&mut self, client: Option<usize>, event: &Event, touched: &mut BTreeSet<usize>) {
        let reply = self.core.handle(event);
        #[cfg(debug_assertions)]
        if let Err(e) = self.core.check_invariants() {
            panic!("core invariant broken after {event:?}: {e}");
        }
        if let (Some(c), Some(r)) = (client, reply) {
            self.send(c, &protocol::render_response(&r), touched);
        }
    }

    /// An event of a pass the journal could not record (`why`). A change is refused (its
    /// client told so), and a BMP completion kept to be retried. But a keepalive is never
    /// refused because of the server's own trouble: it is folded and kept to be written
    /// later if there is room, else answered without folding and its job's timer reset
    /// once the journal can be written ([`Event::KeptAliveUnrecorded`]). Either way no
    /// kept-alive job can expire of the outage, and the journal still receives every
    /// folded event in order (nothing else of this pass is folded).
    fn refused(
        &mut self,
        client: Option<usize>,
        event: &Event,
        why: &str,
        now: TimeUs,
        touched: &mut BTreeSet<usize>,
    ) {
        match event {
            Event::BmpDone {
                request_id,
                failure,
                failed_boards,
                bmp_unreachable,
                ..
            } => self.unjournaled_completions.push_back(BmpCompletion {
                request_id: *request_id,
                failure: failure.clone(),
                failed_boards: failed_boards.clone(),
                bmp_unreachable: *bmp_unreachable,
            }),
            Event::Command { peer, command, .. } if self.core.is_keepalive_only(peer, command) => {
                if self.durability.has_room(1) {
                    self.durability.defer(std::slice::from_ref(event), now);
                    self.metrics.events_journaled(1);
                    self.fold(client, event, touched);
                } else {
                    if let Some(job) = self.core.kept_alive_job(command) {
                        self.kept_alive_unrecorded.insert(job);
                    }
                    if let Some(c) = client {
                        let r = self.core.peek_keepalive(command);
                        self.send(c, &protocol::render_response(&r), touched);
                    }
                }
            }
            _ => {
                if let Some(c) = client {
                    let msg = format!(
                        "the server could not record this command, so it was not carried out: {why}"
                    );
                    self.send(c, &protocol::render_exception(&msg), touched);
                }
            }
        }
    }

    /// Whether the pass's events may skip the fsync: all keepalive-only (module docs), with
    /// room for them among the deferred records.
    fn can_defer(&self, events: &[Event]) -> bool {
        !events.is_empty()
            && self.durability.has_room(events.len())
            && events.iter().all(|e| match e {
                Event::Command { peer, command, .. } => self.core.is_keepalive_only(peer, command),
                _ => false,
            })
    }

    /// Before a pass's fsync: carry out at once the actions that depend on nothing in the
    /// pass (module docs) and send their output; return the rest, in order.
    fn answer_early(&mut self, actions: Vec<Action>, touched: &mut BTreeSet<usize>) -> Vec<Action> {
        let mut waiting: BTreeSet<usize> = BTreeSet::new();
        let mut answered: BTreeSet<usize> = BTreeSet::new();
        let mut rest = Vec::with_capacity(actions.len());
        for action in actions {
            match action {
                Action::Event {
                    client: Some(c), ..
                } => {
                    waiting.insert(c);
                    rest.push(action);
                }
                Action::Query { client, command } if !waiting.contains(&client) => {
                    if self.clients.contains_key(&client) {
                        let r = self.core.query(&command);
                        self.send(client, &protocol::render_response(&r), touched);
                        answered.insert(client);
                    }
                }
                Action::Send { client, bytes } if !waiting.contains(&client) => {
                    self.send(client, &bytes, touched);
                    answered.insert(client);
                }
                other => rest.push(other),
            }
        }
        for key in answered {
            self.flush_client(key);
        }
        rest
    }

    /// Accept waiting connections (at most [`ACCEPTS_PER_PASS`]), then re-arm the listener.
    ///
    /// When `accept` fails (out of descriptors, most likely: `EMFILE`/`ENFILE`), the
    /// listener is left disarmed for `accept_backoff_ms` rather than spin, and the pass after
    /// the back-off calls this again, which re-arms it: the server never stops accepting for
    /// good. The spare descriptor is given up to accept one waiting connection and tell it
    /// the server is full, then taken back.
    fn accept(&mut self, now: TimeUs) {
        if now < self.accept_paused_until_us {
            self.accept_paused = true; // `pass` calls again once the back-off is over
            return;
        }
        self.accept_paused = false;
        for _ in 0..ACCEPTS_PER_PASS {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.clients.len() >= self.opts.limits.clients_max {
                        self.refuse_full(stream);
                        continue;
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let key = self.next_client_key;
                    self.next_client_key += 1;
                    // SAFETY: the stream is deleted from the poller before it is dropped
                    // (`close_client`).
                    if unsafe { self.poller.add(&stream, PollEvent::readable(key)) }.is_err() {
                        continue;
                    }
                    self.clients.insert(key, Client::new(stream, peer));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A connection reset before it was accepted: nothing wrong with the server.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // Out of file descriptors, most likely. Free the spare to tell one
                    // waiting connection why, then back off briefly rather than spin.
                    if self.spare_fd.take().is_some() {
                        if let Ok((stream, _)) = self.listener.accept() {
                            self.refuse_full(stream);
                        }
                        self.spare_fd = std::fs::File::open("/dev/null").ok();
                    }
                    let backoff_us = self.opts.limits.accept_backoff_ms.saturating_mul(1000);
                    // One ERROR, then one every 10 s with a count: a long exhaustion must
                    // not flood the log with a line per back-off.
                    self.accept_errors += 1;
                    if now
                        >= self
                            .accept_error_logged_us
                            .saturating_add(ACCEPT_ERROR_LOG_US)
                    {
                        self.log.error(&format!(
                            "cannot accept a connection: {e} ({} clients connected; {} failed \
                             accepts since the last such line); waiting clients are told the \
                             server is full, accepting again every {} ms",
                            self.clients.len(),
                            self.accept_errors,
                            self.opts.limits.accept_backoff_ms
                        ));
                        self.accept_errors = 0;
                        self.accept_error_logged_us = now;
                    }
                    self.accept_paused_until_us = now.saturating_add(backoff_us);
                    self.accept_paused = true;
                    return; // left disarmed until the back-off is over (`pass`)
                }
            }
        }
        if self
            .poller
            .modify(&self.listener, PollEvent::readable(LISTENER_KEY))
            .is_err()
        {
            // Should not happen; try again shortly rather than never.
            self.accept_paused_until_us = now.saturating_add(100_000);
            self.accept_paused = true;
        }
    }

    /// Tell a connection beyond `clients_max` (or one accepted with the spare descriptor)
    /// that the server is full, and close it. One non-blocking write: a client that does not
    /// read cannot hold the loop.
    fn refuse_full(&self, stream: std::net::TcpStream) {
        let _ = stream.set_nonblocking(true);
        let msg = format!(
            "server is full ({} clients); try again later",
            self.clients.len().min(self.opts.limits.clients_max)
        );
        let mut s = stream;
        let _ = io::Write::write(&mut s, &protocol::render_exception(&msg));
    }

    /// Read from a client and cut its input into requests (its share of the pass), keeping
    /// `input_total` up to date.
    fn read_client(
        &mut self,
        key: usize,
        now: TimeUs,
        events: &mut Vec<Event>,
        actions: &mut Vec<Action>,
        job_counts: &mut Option<JobCounts>,
    ) {
        let before = self.clients.get(&key).map_or(0, Client::pending_input);
        self.handle_input(key, now, events, actions, job_counts);
        let after = self.clients.get(&key).map_or(0, Client::pending_input);
        self.input_total = self.input_total + after - before;
    }

    /// Past `input_total_bytes_max`: disconnect the clients holding the most unhandled
    /// input (an unfinished line never ended, most likely) until back under it.
    fn bound_input(&mut self) {
        while self.input_total > self.opts.limits.input_total_bytes_max {
            let Some((&key, c)) = self.clients.iter().max_by_key(|(_, c)| c.pending_input()) else {
                break;
            };
            self.log.info(&format!(
                "client {} disconnected: it holds {} bytes of requests it has not finished \
                 sending, and all clients' unhandled input is at input_total_bytes_max = {}",
                c.peer,
                c.pending_input(),
                self.opts.limits.input_total_bytes_max
            ));
            self.close_client(key);
        }
    }

    fn handle_input(
        &mut self,
        key: usize,
        now: TimeUs,
        events: &mut Vec<Event>,
        actions: &mut Vec<Action>,
        job_counts: &mut Option<JobCounts>,
    ) {
        let limits = &self.opts.limits;
        let core = &self.core;
        let Some(client) = self.clients.get_mut(&key) else {
            return;
        };
        if client.closing {
            return;
        }
        let outcome = client.read(protocol::MAX_LINE_BYTES);
        // This client's share of the pass (at least one request).
        let (mut requests, mut bytes) = (0usize, 0usize);
        let mut fatal = false;
        // `watch_total` follows this client's watch sets: brought up to date before each
        // request (whose limit check reads it) and after the last.
        let mut watched = client.watch_entries();
        while requests < limits.requests_per_pass_max && bytes < limits.request_bytes_per_pass_max {
            let Some(line) = client.next_line(protocol::MAX_LINE_BYTES) else {
                break;
            };
            self.watch_total = self.watch_total + client.watch_entries() - watched;
            watched = client.watch_entries();
            requests += 1;
            bytes += line.as_ref().map_or(0, Vec::len) + 1;
            let line = match line {
                Ok(line) => line,
                Err(len) => {
                    let msg = format!(
                        "line too long ({len} bytes; the limit is {} bytes); closing the connection",
                        protocol::MAX_LINE_BYTES
                    );
                    actions.push(Action::Send {
                        client: key,
                        bytes: protocol::render_exception(&msg),
                    });
                    actions.push(Action::Close { client: key });
                    fatal = true;
                    break;
                }
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue; // blank lines are skipped, as by the original
            }
            match protocol::parse_line(&line) {
                Parsed::Version => actions.push(Action::Send {
                    client: key,
                    bytes: protocol::render_version(protocol::VERSION),
                }),
                Parsed::NotifyJob(Some(_))
                    if client.jobs.len() >= limits.watch_entries_max
                        || self.watch_total >= limits.watch_entries_total_max =>
                {
                    actions.push(watch_refused(key, limits, self.watch_total))
                }
                Parsed::NotifyJob(id) => {
                    client.jobs.add(id);
                    actions.push(null_reply(key));
                }
                Parsed::NoNotifyJob(id) => {
                    client.jobs.remove(id);
                    actions.push(null_reply(key));
                }
                Parsed::NotifyMachine(Some(name)) if name.len() > limits.string_bytes_max => {
                    actions.push(Action::Send {
                        client: key,
                        bytes: protocol::render_exception(&too_long(
                            "machine name",
                            name.len(),
                            limits,
                        )),
                    })
                }
                Parsed::NotifyMachine(Some(_))
                    if client.machines.len() >= limits.watch_entries_max
                        || self.watch_total >= limits.watch_entries_total_max =>
                {
                    actions.push(watch_refused(key, limits, self.watch_total))
                }
                Parsed::NotifyMachine(name) => {
                    client.machines.add(name);
                    actions.push(null_reply(key));
                }
                Parsed::NoNotifyMachine(name) => {
                    client.machines.remove(name);
                    actions.push(null_reply(key));
                }
                Parsed::Core(command) if command.is_read_only() => actions.push(Action::Query {
                    client: key,
                    command,
                }),
                Parsed::Core(command) => {
                    // Past a limit: refused before it is journaled, so nothing changes (and
                    // older journals, written without these limits, replay unchanged).
                    if let Err(msg) =
                        check_command(&command, &client.peer_ip, limits, core, job_counts)
                    {
                        actions.push(Action::Send {
                            client: key,
                            bytes: protocol::render_exception(&msg),
                        });
                        continue;
                    }
                    actions.push(Action::Event {
                        client: Some(key),
                        index: events.len(),
                    });
                    events.push(Event::Command {
                        now_us: now,
                        peer: client.peer_ip.clone(),
                        command,
                    });
                }
                Parsed::Exception(msg) => actions.push(Action::Send {
                    client: key,
                    bytes: protocol::render_exception(&msg),
                }),
                Parsed::Fatal(msg) => {
                    actions.push(Action::Send {
                        client: key,
                        bytes: protocol::render_exception(&msg),
                    });
                    actions.push(Action::Close { client: key });
                    fatal = true;
                    break;
                }
            }
        }
        self.watch_total = self.watch_total + client.watch_entries() - watched;
        client.shrink_input();
        if fatal {
            return; // (closed once its output is flushed; nothing more is read)
        }
        if !client.closing && client.has_line(protocol::MAX_LINE_BYTES) {
            // More than its share: the rest next pass (and nothing more read while more
            // than a line's worth waits).
            self.unfinished_input.insert(key);
            return;
        }
        if let ReadOutcome::Closed = outcome {
            // Answer what it sent before hanging up (it may only have shut down its write
            // half), then close.
            actions.push(Action::Close { client: key });
        }
    }

    /// Queue `bytes` (a reply or notification) for a client, within the output bounds.
    ///
    /// What is bounded is the *backlog*: output the client has been sent the chance to read
    /// and has not. A client whose backlog (after trying to send it now) exceeds
    /// `output_bytes_max`, or that has any backlog while all clients' unsent output is at
    /// `output_total_bytes_max`, is disconnected: it is not reading. One reply may be bigger
    /// than `output_bytes_max`; one bigger than `reply_bytes_max` is replaced by an
    /// exception saying so, and the client stays connected.
    fn send(&mut self, key: usize, bytes: &[u8], touched: &mut BTreeSet<usize>) {
        if key >= admin::ADMIN_KEY_BASE {
            if let Some(c) = self.admin_conns.get_mut(&key) {
                touched.insert(key);
                if !c.queue(bytes) {
                    self.log
                        .info("admin connection dropped: it left too much output unread");
                    self.close_admin(key);
                }
            }
            return;
        }
        let limits = &self.opts.limits;
        let Some(client) = self.clients.get_mut(&key) else {
            return;
        };
        touched.insert(key);
        let too_big;
        let bytes = if bytes.len() > limits.reply_bytes_max {
            too_big = protocol::render_exception(&format!(
                "the reply is too large to send ({} bytes; the limit is {} bytes, \
                 reply_bytes_max)",
                bytes.len(),
                limits.reply_bytes_max
            ));
            &too_big[..]
        } else {
            bytes
        };
        let mut backlog = client.pending_output();
        let over = |backlog: usize, total: usize| {
            backlog > 0
                && (backlog > limits.output_bytes_max
                    || total + bytes.len() > limits.output_total_bytes_max)
        };
        if over(backlog, self.output_total) {
            // Perhaps the socket has room by now: try before blaming the client.
            let failed = client.flush().is_err();
            let after = client.pending_output();
            self.output_total = self.output_total + after - backlog;
            backlog = after;
            if failed {
                self.close_client(key);
                return;
            }
        }
        if over(backlog, self.output_total) {
            let why = if backlog > limits.output_bytes_max {
                format!("output_bytes_max = {}", limits.output_bytes_max)
            } else {
                format!(
                    "and all clients' unsent output is at output_total_bytes_max = {}",
                    limits.output_total_bytes_max
                )
            };
            self.log.info(&format!(
                "client {} disconnected: it left more than {} bytes of replies unread \
                 ({backlog} bytes sent to it and not read; {why})",
                client.peer,
                backlog.min(limits.output_bytes_max)
            ));
            self.close_client(key);
            return;
        }
        client.queue(bytes);
        self.output_total += bytes.len();
    }

    fn flush_client(&mut self, key: usize) {
        if key >= admin::ADMIN_KEY_BASE {
            return; // flushed by rearm
        }
        if let Some(c) = self.clients.get_mut(&key) {
            let before = c.pending_output();
            let failed = c.flush().is_err();
            self.output_total = self.output_total + c.pending_output() - before;
            if failed {
                self.close_client(key);
            }
        }
    }

    /// Send queued output and re-arm the client's interest (oneshot mode: every event
    /// disarms it), or close it. A client that was not `disarmed` keeps its registration
    /// unless it now needs to hear of writability (output left over) or is closing: that
    /// saves an `epoll_ctl` per watcher and notification.
    fn rearm(&mut self, key: usize, disarmed: bool) {
        if key >= admin::ADMIN_KEY_BASE {
            self.rearm_admin(key);
            return;
        }
        self.flush_client(key);
        let Some(c) = self.clients.get_mut(&key) else {
            return;
        };
        if c.closing && c.pending_output() == 0 {
            self.close_client(key);
            return;
        }
        if !disarmed && !c.closing && c.pending_output() == 0 {
            return;
        }
        let interest = PollEvent::new(key, !c.closing && !c.eof, c.pending_output() > 0);
        if self.poller.modify(&c.stream, interest).is_err() {
            self.close_client(key);
        }
    }

    fn close_client(&mut self, key: usize) {
        self.unfinished_input.remove(&key);
        if let Some(c) = self.clients.remove(&key) {
            self.output_total -= c.pending_output();
            self.watch_total -= c.watch_entries();
            self.input_total -= c.pending_input();
            let _ = self.poller.delete(&c.stream);
        }
        debug_assert!(
            self.clients.len() > 64
                || self.input_total
                    == self
                        .clients
                        .values()
                        .map(Client::pending_input)
                        .sum::<usize>()
        );
        debug_assert!(
            self.clients.len() > 64
                || self.output_total
                    == self
                        .clients
                        .values()
                        .map(Client::pending_output)
                        .sum::<usize>()
        );
    }

    /// Hand the core's outputs to the world: log lines and notifications now; the BMP
    /// requests are returned, for the caller to submit once the sockets are written.
    fn release_effects(&mut self, touched: &mut BTreeSet<usize>) -> Vec<crate::core::BmpRequest> {
        let mut bmp_requests = Vec::new();
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Bmp(r) => bmp_requests.push(r),
                Effect::Log(line) => self.log.info(&line),
                // (The log lines say the same for the admin; replay reads these.) The
                // metrics count endings by their typed reason.
                Effect::Lifecycle(Lifecycle::Ended {
                    job_id,
                    reason,
                    text,
                }) => {
                    self.metrics.job_ended(reason);
                    if let Some(h) = &mut self.http {
                        h.note_ended(job_id, reason, text, self.core.now_us());
                    }
                }
                Effect::Lifecycle(_) => {}
                Effect::JobsChanged(ids) => {
                    if let Some(h) = &mut self.http {
                        h.note_change();
                    }
                    self.notify_watchers(&ids, |c| &c.jobs, protocol::render_jobs_changed, touched)
                }
                Effect::MachinesChanged(names) => {
                    if let Some(h) = &mut self.http {
                        h.note_change();
                    }
                    self.notify_watchers(
                        &names,
                        |c| &c.machines,
                        protocol::render_machines_changed,
                        touched,
                    )
                }
            }
        }
        bmp_requests
    }

    /// Queue a notification of `changed` to every client whose watch (`watch`) selects any
    /// of it. Clients watching everything all get the same line, rendered once.
    fn notify_watchers<T: Ord + Clone>(
        &mut self,
        changed: &[T],
        watch: fn(&Client) -> &client::Watch<T>,
        render: fn(&[T]) -> Vec<u8>,
        touched: &mut BTreeSet<usize>,
    ) {
        let for_all = render(changed);
        let keys: Vec<usize> = self.clients.keys().copied().collect();
        for key in keys {
            let own = match watch(&self.clients[&key]) {
                client::Watch::Nothing => continue,
                client::Watch::All => None,
                some => {
                    let selected: Vec<T> = some.select(changed).into_iter().cloned().collect();
                    if selected.is_empty() {
                        continue;
                    }
                    Some(render(&selected))
                }
            };
            self.send(key, own.as_deref().unwrap_or(&for_all), touched);
        }
    }

    fn reload_config(&mut self) -> Option<Config> {
        let Some(path) = self.opts.config.clone() else {
            self.log
                .error("SIGHUP: no --config file was given, so there is nothing to re-read");
            return None;
        };
        match config::load(&path) {
            Ok(c) if c == *self.core.config() => {
                self.log
                    .info(&format!("SIGHUP: {} unchanged", path.display()));
                None
            }
            Ok(c) => {
                self.log
                    .info(&format!("SIGHUP: applying {}", path.display()));
                // Only what really changed is named; an override on the command line
                // (`--ip`, `--port`) wins over the file's value, now and after a restart.
                let old = self.core.config();
                let mut listen = Vec::new();
                if c.ip != old.ip && self.opts.ip.is_none() {
                    listen.push(format!("address {} -> {}", old.ip, c.ip));
                }
                if c.port != old.port && self.opts.port.is_none() {
                    listen.push(format!("port {} -> {}", old.port, c.port));
                }
                if !listen.is_empty() {
                    self.log.info(&format!(
                        "listen {}: takes effect at the next restart",
                        listen.join(", ")
                    ));
                }
                self.bmp.set_timings(c.bmp.clone());
                Some(c)
            }
            Err(e) => {
                self.log.error(&format!(
                    "SIGHUP: {} is not valid, keeping the current configuration:\n{e}",
                    path.display()
                ));
                None
            }
        }
    }

    fn shut_down(mut self) -> Result<(), String> {
        self.http = None;
        let _ = self.poller.delete(&self.listener);
        if let Some(l) = &self.admin_listener {
            let _ = self.poller.delete(l);
            let _ = std::fs::remove_file(&self.admin_path);
        }
        let keys: Vec<usize> = self.admin_conns.keys().copied().collect();
        for key in keys {
            self.close_admin(key);
        }
        let keys: Vec<usize> = self.clients.keys().copied().collect();
        for key in keys {
            self.close_client(key);
        }
        self.durability
            .snapshot_and_wait(&self.core, self.clock.now_us());
        self.bmp.shutdown();
        self.log.info("stopped; powered boards are left on");
        Ok(())
    }
}

// ----- the admin channel (module `admin`) ----------------------------------------------------

impl Server {
    fn accept_admin(&mut self) {
        let Some(listener) = self.admin_listener.as_ref() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if self.admin_conns.len() >= admin::MAX_ADMIN_CONNECTIONS {
                        let mut s = stream;
                        let _ = io::Write::write_all(
                            &mut s,
                            &protocol::render_exception("too many admin connections"),
                        );
                        continue;
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let key = self.next_admin_key;
                    self.next_admin_key += 1;
                    // SAFETY: deleted from the poller before it is dropped (close_admin).
                    if unsafe { self.poller.add(&stream, PollEvent::readable(key)) }.is_err() {
                        continue;
                    }
                    self.admin_conns.insert(key, admin::AdminConn::new(stream));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if let Some(l) = &self.admin_listener {
            let _ = self
                .poller
                .modify(l, PollEvent::readable(ADMIN_LISTENER_KEY));
        }
    }

    fn read_admin(
        &mut self,
        key: usize,
        now: TimeUs,
        events: &mut Vec<Event>,
        actions: &mut Vec<Action>,
    ) {
        let Some(conn) = self.admin_conns.get_mut(&key) else {
            return;
        };
        if conn.closing {
            return;
        }
        let open = conn.read();
        while let Some(line) = conn.next_line() {
            let Ok(line) = line else {
                actions.push(Action::Send {
                    client: key,
                    bytes: protocol::render_exception("line too long"),
                });
                actions.push(Action::Close { client: key });
                break;
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match admin::parse(&line) {
                Err(e) => actions.push(Action::Send {
                    client: key,
                    bytes: protocol::render_exception(&e),
                }),
                Ok(admin::AdminRequest::Query(q)) => {
                    let value = match q {
                        admin::AdminQuery::Boards { drained } => {
                            self.core.health_boards_json(drained)
                        }
                        admin::AdminQuery::Reports => self.core.health_reports_json(),
                        admin::AdminQuery::Status => {
                            let mut v = self.core.health_boards_json(true);
                            v["live_jobs"] = self.core.live_job_ids().len().into();
                            v
                        }
                    };
                    actions.push(Action::Send {
                        client: key,
                        bytes: protocol::render_response(&Response::Json(value.to_string())),
                    });
                }
                Ok(admin::AdminRequest::Action { actor, action }) => {
                    // Refused before it is journaled: a mistyped board leaves no trace.
                    // (Checked again when folded, against the state then.)
                    if let Err(e) = self.core.check_admin(&action) {
                        actions.push(Action::Send {
                            client: key,
                            bytes: protocol::render_exception(&e),
                        });
                        continue;
                    }
                    actions.push(Action::Event {
                        client: Some(key),
                        index: events.len(),
                    });
                    events.push(admin::event(now, actor, action));
                }
            }
        }
        if !open {
            actions.push(Action::Close { client: key });
        }
    }

    fn rearm_admin(&mut self, key: usize) {
        let Some(c) = self.admin_conns.get_mut(&key) else {
            return;
        };
        if c.flush().is_err() || (c.closing && c.pending_output() == 0) {
            self.close_admin(key);
            return;
        }
        let interest = PollEvent::new(key, !c.closing, c.pending_output() > 0);
        if self.poller.modify(&c.stream, interest).is_err() {
            self.close_admin(key);
        }
    }

    fn close_admin(&mut self, key: usize) {
        if let Some(c) = self.admin_conns.remove(&key) {
            let _ = self.poller.delete(&c.stream);
        }
    }
}

/// The `{"return": null}` reply of the `notify_*` commands.
fn null_reply(client: usize) -> Action {
    Action::Send {
        client,
        bytes: protocol::render_response(&Response::Null),
    }
}

/// The exception for a `notify_*` past `watch_entries_max` (or, with all clients'
/// watches at `total`, past `watch_entries_total_max`).
fn watch_refused(client: usize, limits: &Limits, total: usize) -> Action {
    let msg = if total >= limits.watch_entries_total_max {
        format!(
            "the server already holds {total} watches of single jobs or machines for its \
             clients, the most it keeps (watch_entries_total_max); watch all of them with no \
             argument instead"
        )
    } else {
        format!(
            "this connection already watches {} jobs or machines one by one, the most \
             allowed (watch_entries_max); watch all of them with no argument instead",
            limits.watch_entries_max
        )
    };
    Action::Send {
        client,
        bytes: protocol::render_exception(&msg),
    }
}

/// The message for a string past `string_bytes_max`.
fn too_long(what: &str, len: usize, limits: &Limits) -> String {
    format!(
        "{what} is too long ({len} bytes; the limit is {} bytes, string_bytes_max)",
        limits.string_bytes_max
    )
}

/// Live jobs per owner and per host: the core's, counted once per pass (on its first
/// `create_job`), plus the pass's own accepted `create_job`s.
struct JobCounts {
    total: usize,
    by_owner: BTreeMap<String, usize>,
    by_host: BTreeMap<String, usize>,
}

impl JobCounts {
    fn of(core: &Core) -> JobCounts {
        let mut c = JobCounts {
            total: 0,
            by_owner: BTreeMap::new(),
            by_host: BTreeMap::new(),
        };
        for (owner, host) in core.live_job_owners() {
            c.total += 1;
            *c.by_owner.entry(owner.to_owned()).or_default() += 1;
            if let Some(h) = host {
                *c.by_host.entry(h.to_owned()).or_default() += 1;
            }
        }
        c
    }
}

/// Whether a state-changing command is within the limits (a `create_job` also counts
/// towards the pass's job counts). `Err` is the exception to answer, naming the limit.
fn check_command(
    command: &Command,
    peer: &str,
    limits: &Limits,
    core: &Core,
    counts: &mut Option<JobCounts>,
) -> Result<(), String> {
    match command {
        Command::DestroyJob {
            reason: Some(r), ..
        } if r.len() > limits.string_bytes_max => Err(too_long("reason", r.len(), limits)),
        Command::CreateJob(c) => {
            if c.owner.len() > limits.string_bytes_max {
                return Err(too_long("owner", c.owner.len(), limits));
            }
            match &c.target {
                crate::core::JobTarget::Machine(m) if m.len() > limits.string_bytes_max => {
                    return Err(too_long("machine name", m.len(), limits));
                }
                crate::core::JobTarget::Tags(tags) => {
                    if tags.len() > limits.tags_max {
                        return Err(format!(
                            "too many tags ({}; the limit is {}, tags_max)",
                            tags.len(),
                            limits.tags_max
                        ));
                    }
                    if let Some(t) = tags.iter().find(|t| t.len() > limits.string_bytes_max) {
                        return Err(too_long("a tag", t.len(), limits));
                    }
                }
                _ => {}
            }
            let counts = counts.get_or_insert_with(|| JobCounts::of(core));
            let owner = counts.by_owner.get(&c.owner).copied().unwrap_or(0);
            let host = counts.by_host.get(peer).copied().unwrap_or(0);
            if counts.total >= limits.jobs_max {
                return Err(format!(
                    "the server already has {} live jobs, the most it takes (jobs_max); \
                     try again when some have ended",
                    counts.total
                ));
            }
            if owner >= limits.jobs_per_owner_max {
                return Err(format!(
                    "owner {:?} already has {owner} live jobs, the most one owner may have \
                     (jobs_per_owner_max)",
                    c.owner
                ));
            }
            if host >= limits.jobs_per_host_max {
                return Err(format!(
                    "host {peer} already has {host} live jobs, the most one host may have \
                     (jobs_per_host_max)"
                ));
            }
            counts.total += 1;
            *counts.by_owner.entry(c.owner.clone()).or_default() += 1;
            *counts.by_host.entry(peer.to_owned()).or_default() += 1;
            Ok(())
        }
        _ => Ok(()),
    }
}

fn start_signal_thread(flags: Arc<SignalFlags>, poller: Arc<Poller>) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    flags.reload.store(true, Ordering::SeqCst);
                } else {
                    flags.stop.store(true, Ordering::SeqCst);
                }
                let _ = poller.notify();
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// A listening socket with the backlog asked for. Std's `TcpListener::bind` always asks for
/// 128, which a connect storm overflows (the kernel drops the SYNs past it and the clients
/// retry a second later); socket2 is the well-kept way to choose it. As std does, the
/// address is reusable at once after a restart (`SO_REUSEADDR`).
fn listen(addr: SocketAddr, backlog: usize) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as usize) as i32)?;
    Ok(socket.into())
}

fn start_simulator(
    config: &Config,
    log: &Logger,
    faults: &[String],
) -> Result<crate::bmp::Simulator, String> {
    let mut specs: Vec<(&str, &str)> = config
        .simulated_faults
        .iter()
        .map(|f| ("configuration simulated_faults", f.as_str()))
        .collect();
    specs.extend(faults.iter().map(|f| ("--simulate-fault", f.as_str())));
    let faults = specs
        .iter()
        .map(|(from, f)| crate::bmp::parse_fault_spec(f).map_err(|e| format!("{from}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut addrs = Vec::new();
    for m in &config.machines {
        for b in &m.bmps {
            let addr = crate::bmp::scp::resolve_address(&b.address)
                .map_err(|e| format!("machine {}: BMP address {}: {e}", m.name, b.address))?;
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "--simulate-bmps needs loopback BMP addresses, but machine {} has BMP {} (cabinet {}, frame {})",
                    m.name, b.address, b.cabinet, b.frame
                ));
            }
            addrs.push(addr);
        }
    }
    if let Some(f) = faults
        .iter()
        .find(|f| !f.endpoint.is_some_and(|e| addrs.contains(&e)))
    {
        return Err(format!(
            "simulated fault {f:?} (--simulate-fault or simulated_faults) names a BMP the configuration does not have"
        ));
    }
    let sim = crate::bmp::Simulator::start(&addrs, crate::bmp::SimOptions::default())
        .map_err(|e| format!("cannot start the BMP simulator: {e}"))?;
    for f in faults {
        log.info(&format!("simulated BMPs: injecting {f:?}"));
        sim.inject(f);
    }
    log.info(&format!("simulating {} BMPs in-process", addrs.len()));
    Ok(sim)
}
