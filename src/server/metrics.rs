//! The server's Prometheus metrics, encoded by `prometheus-client` for `GET /metrics`.
//!
//! Two kinds of series. Counters and histograms (jobs ended by reason, BMP requests by
//! outcome and their durations, journal writes and their failures, events journaled,
//! commands refused, clients disconnected and connections refused, by reason) are updated
//! by the loop as things happen, and count from the process's start, as Prometheus expects
//! of a counter. Gauges that describe the state (boards by machine and state, jobs by state,
//! connected clients) are not kept up to date at every change: they are set from the core
//! when a scrape asks, so they can never drift from it. (`journal_failing` is the one gauge
//! the loop sets, every pass: the journal's health is the loop's to know, not the core's.)
//!
//! Names follow Prometheus' rules: the `spalloc_` prefix, base units (seconds) named in the
//! suffix, `_total` on counters (the encoder adds it), and label values that are the
//! server's own words (machine names and BMP addresses from the configuration, reasons from
//! [`EndReason::name`]), never client text.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::core::view::FacilityView;
use crate::core::EndReason;

type Labels = Vec<(&'static str, String)>;

/// Every series the server exports.
pub struct Metrics {
    registry: Registry,
    boards: Family<Labels, Gauge>,
    jobs: Family<Labels, Gauge>,
    jobs_ended: Family<Labels, Counter>,
    bmp_requests: Family<Labels, Counter>,
    bmp_request_duration: Family<Labels, Histogram, fn() -> Histogram>,
    journal_write_duration: Histogram,
    journal_write_failures: Counter,
    journal_failing: Gauge,
    events_journaled: Counter,
    commands_refused: Family<Labels, Counter>,
    clients_disconnected: Family<Labels, Counter>,
    connections_refused: Counter,
    connected_clients: Gauge,
    status_subscribers: Gauge,
}

/// Why the server refused a command without carrying it out (`commands_refused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedBecause {
    /// The journal could not record it.
    Journal,
    /// A limit (jobs per owner or host, string lengths...) forbade it.
    Limit,
}

/// Why the server disconnected a client (`clients_disconnected`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectedBecause {
    /// It left more replies unread than the output bounds allow.
    OutputUnread,
    /// It held more unfinished input than the input bound allows.
    InputUnfinished,
    /// It sent a line longer than the protocol's limit.
    LineTooLong,
    /// It sent a line that is not a request at all (not JSON, not an object...).
    NotARequest,
}

impl RefusedBecause {
    const ALL: [RefusedBecause; 2] = [RefusedBecause::Journal, RefusedBecause::Limit];

    fn name(self) -> &'static str {
        match self {
            RefusedBecause::Journal => "journal",
            RefusedBecause::Limit => "limit",
        }
    }
}

impl DisconnectedBecause {
    const ALL: [DisconnectedBecause; 4] = [
        DisconnectedBecause::OutputUnread,
        DisconnectedBecause::InputUnfinished,
        DisconnectedBecause::LineTooLong,
        DisconnectedBecause::NotARequest,
    ];

    fn name(self) -> &'static str {
        match self {
            DisconnectedBecause::OutputUnread => "output_unread",
            DisconnectedBecause::InputUnfinished => "input_unfinished",
            DisconnectedBecause::LineTooLong => "line_too_long",
            DisconnectedBecause::NotARequest => "not_a_request",
        }
    }
}

fn bmp_histogram() -> Histogram {
    // 1 ms to about 65 s: a power-on waits `post_power_on_delay` (5 s by default) and may
    // retry.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    /// Every series, registered and at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("spalloc");
        let boards = Family::<Labels, Gauge>::default();
        registry.register(
            "boards",
            "Boards by machine and state (free, job, powering, powering_off, dead)",
            boards.clone(),
        );
        let jobs = Family::<Labels, Gauge>::default();
        registry.register(
            "jobs",
            "Live jobs by state (queued, power, ready)",
            jobs.clone(),
        );
        let jobs_ended = Family::<Labels, Counter>::default();
        registry.register(
            "jobs_ended",
            "Jobs ended since the server started, by reason",
            jobs_ended.clone(),
        );
        let bmp_requests = Family::<Labels, Counter>::default();
        registry.register(
            "bmp_requests",
            "BMP requests (power on/off of one frame's boards) completed, by BMP and outcome",
            bmp_requests.clone(),
        );
        let bmp_request_duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(bmp_histogram);
        registry.register_with_unit(
            "bmp_request_duration",
            "Time from handing a BMP request to its thread to its completion, by BMP",
            Unit::Seconds,
            bmp_request_duration.clone(),
        );
        // 50 µs to about 1.6 s.
        let journal_write_duration = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register_with_unit(
            "journal_fsync_duration",
            "Time to append one batch of events to the journal and fsync it",
            Unit::Seconds,
            journal_write_duration.clone(),
        );
        let journal_write_failures = Counter::default();
        registry.register(
            "journal_write_failures",
            "Journal writes (an append and its fsync) that failed; while the last one failed, \
             changes are refused",
            journal_write_failures.clone(),
        );
        let journal_failing = Gauge::default();
        registry.register(
            "journal_failing",
            "1 while the journal's last write failed (changes are refused), else 0",
            journal_failing.clone(),
        );
        let commands_refused = Family::<Labels, Counter>::default();
        registry.register(
            "commands_refused",
            "Commands refused without being carried out, by reason (journal: it could not \
             be recorded; limit: a limit forbade it)",
            commands_refused.clone(),
        );
        for reason in RefusedBecause::ALL {
            // Every reason from the start: a series that appears only on the first refusal
            // reads as "no data" until then.
            let _ = commands_refused.get_or_create(&vec![("reason", reason.name().into())]);
        }
        let clients_disconnected = Family::<Labels, Counter>::default();
        registry.register(
            "clients_disconnected",
            "Protocol clients the server disconnected, by reason (output_unread, \
             input_unfinished, line_too_long, not_a_request)",
            clients_disconnected.clone(),
        );
        for reason in DisconnectedBecause::ALL {
            let _ = clients_disconnected.get_or_create(&vec![("reason", reason.name().into())]);
        }
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections refused because the server was full (clients_max, or no descriptors)",
            connections_refused.clone(),
        );
        let events_journaled = Counter::default();
        registry.register(
            "events_journaled",
            "Events journaled since the server started",
            events_journaled.clone(),
        );
        let connected_clients = Gauge::default();
        registry.register(
            "connected_clients",
            "Clients connected to the spalloc protocol port",
            connected_clients.clone(),
        );
        let status_subscribers = Gauge::default();
        registry.register(
            "status_subscribers",
            "Status pages (event streams) connected to the HTTP port",
            status_subscribers.clone(),
        );
        registry.register(
            "build",
            "The server's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]),
        );
        Metrics {
            registry,
            boards,
            jobs,
            jobs_ended,
            bmp_requests,
            bmp_request_duration,
            journal_write_duration,
            journal_write_failures,
            journal_failing,
            events_journaled,
            commands_refused,
            clients_disconnected,
            connections_refused,
            connected_clients,
            status_subscribers,
        }
    }

    /// A job ended.
    pub fn job_ended(&self, reason: EndReason) {
        self.jobs_ended
            .get_or_create(&vec![("reason", reason.name().to_string())])
            .inc();
    }

    /// A BMP request to `bmp` completed after `took`, failed or not.
    pub fn bmp_request(&self, bmp: &str, failed: bool, took: Duration) {
        let outcome = if failed { "failed" } else { "ok" };
        self.bmp_requests
            .get_or_create(&vec![("bmp", bmp.to_string()), ("outcome", outcome.into())])
            .inc();
        self.bmp_request_duration
            .get_or_create(&vec![("bmp", bmp.to_string())])
            .observe(took.as_secs_f64());
    }

    /// A journal write (append and fsync) took `took`.
    pub fn journal_write(&self, took: Duration) {
        self.journal_write_duration.observe(took.as_secs_f64());
    }

    /// `n` journal writes failed since the last call; `failing` whether the last one did.
    pub fn journal_health(&self, failures: u64, failing: bool) {
        // (Called every pass: no atomic add for the usual nothing.)
        if failures > 0 {
            self.journal_write_failures.inc_by(failures);
        }
        self.journal_failing.set(i64::from(failing));
    }

    /// A command was refused, not carried out.
    pub fn command_refused(&self, because: RefusedBecause) {
        self.commands_refused
            .get_or_create(&vec![("reason", because.name().into())])
            .inc();
    }

    /// The server disconnected a protocol client.
    pub fn client_disconnected(&self, because: DisconnectedBecause) {
        self.clients_disconnected
            .get_or_create(&vec![("reason", because.name().into())])
            .inc();
    }

    /// A connection was refused: the server was full.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// `n` events were journaled (or deferred to be).
    pub fn events_journaled(&self, n: usize) {
        self.events_journaled.inc_by(n as u64);
    }

    /// The exposition (OpenMetrics text), with the state gauges set from `view`.
    pub fn render(&self, view: &FacilityView, clients: usize, subscribers: usize) -> String {
        self.boards.clear();
        for m in &view.machines {
            for state in ["free", "job", "powering", "powering_off", "dead", "drained"] {
                // Every state of every machine, zero or not: a series that vanishes reads
                // as "no data", not as zero.
                let _ = self
                    .boards
                    .get_or_create(&vec![("machine", m.name.clone()), ("state", state.into())]);
            }
            for b in &m.boards {
                self.boards
                    .get_or_create(&vec![
                        ("machine", m.name.clone()),
                        ("state", b.state.name().into()),
                    ])
                    .inc();
            }
        }
        self.jobs.clear();
        for state in ["queued", "power", "ready"] {
            let n = view.jobs.iter().filter(|j| j.state == state).count();
            self.jobs
                .get_or_create(&vec![("state", state.into())])
                .set(n as i64);
        }
        self.connected_clients.set(clients as i64);
        self.status_subscribers.set(subscribers as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
