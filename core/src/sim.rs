//! A deterministic harness around the core: a fake clock, BMPs that complete when told to (or
//! at once), and every output collected, with the invariants checked after every event.
//!
//! Tests, the core-only benchmark and property tests drive the core through this, the way
//! quinn-proto's tests drive a connection pair with simulated time. [`Sim::fold`] is the one
//! fold-and-drain loop of everything that runs the core without the server: the tests, the
//! BMP-fault harness (whose hook hands BMP requests to a real runtime), the benchmark's model
//! facility and the journal replay (which takes each event's effects as it goes).

use std::collections::VecDeque;

use super::coordinates::{Board, Link};
use super::rules::Rules;
use super::state::Core;
use super::types::*;
use crate::config::{BmpConfig, BoardConfig, Config, MachineConfig};

/// The address every simulated client command comes from.
pub const PEER: &str = "127.0.0.1";

/// A core plus a fake clock and fake BMPs.
pub struct Sim {
    /// The state machine under test.
    pub core: Core,
    /// The simulated time.
    pub now_us: TimeUs,
    /// Complete every BMP request successfully as soon as it is issued.
    pub bmp_auto: bool,
    /// BMP requests issued and not yet completed (when `bmp_auto` is off).
    pub bmp_pending: VecDeque<BmpRequest>,
    /// Every BMP request ever issued.
    pub bmp_log: Vec<BmpRequest>,
    /// Every notification, in order.
    pub notifications: Vec<Effect>,
    /// Every log line.
    pub log: Vec<String>,
    /// Every event folded, in order (to replay and compare).
    pub events: Vec<Event>,
    /// How many events have been folded (kept even when `record` is off).
    pub folded: u64,
    /// Check the core's invariants after every event (on by default).
    pub check: bool,
    /// Keep every folded event in `events` and every BMP request in `bmp_log` (on by
    /// default; off for long runs that take what they need as they go).
    pub record: bool,
    /// Sees every effect first, in order: it returns the effect for the usual handling above
    /// (collected; a BMP request completed or queued) or `None` when it dealt with it itself.
    pub hook: Option<Box<dyn FnMut(Effect) -> Option<Effect>>>,
}

impl Sim {
    /// A core configured with `config` at a fixed start time, BMPs completing at once. Its
    /// events begin as a new journal of the server does (the rules, then the configuration),
    /// so they replay from [`Core::at_journal_start`].
    pub fn new(config: Config) -> Sim {
        let mut sim = Sim::from_core(Core::at_journal_start(), 1_700_000_000_000_000);
        sim.event(Event::Rules {
            now_us: sim.now_us,
            rules: Rules::CURRENT,
        });
        sim.event(Event::Configure {
            now_us: sim.now_us,
            config,
        });
        sim
    }

    /// A simulation going on from `core` at `now_us`, with nothing folded yet (for runs that
    /// configure the core themselves, and for replays that start from a snapshot).
    pub fn from_core(core: Core, now_us: TimeUs) -> Sim {
        Sim {
            core,
            now_us,
            bmp_auto: true,
            bmp_pending: VecDeque::new(),
            bmp_log: Vec::new(),
            notifications: Vec::new(),
            log: Vec::new(),
            events: Vec::new(),
            folded: 0,
            check: true,
            record: true,
            hook: None,
        }
    }

    /// Fold an event, check invariants, drain outputs (completing BMP work if `bmp_auto`).
    pub fn event(&mut self, event: Event) -> Option<Response> {
        self.fold(&event)
    }

    /// The fold-and-drain loop: fold `event` into the core, check its invariants (if
    /// `check`), and drain its effects: each goes to the hook, if any, then to the lists
    /// above; a BMP request is completed at once (successfully, folding the completion the
    /// same way) if `bmp_auto`, else queued in `bmp_pending`.
    pub fn fold(&mut self, event: &Event) -> Option<Response> {
        if self.record {
            self.events.push(event.clone());
        }
        let reply = self.core.handle(event);
        self.folded += 1;
        if self.check {
            if let Err(e) = self.core.check_invariants() {
                panic!("invariant broken after {event:?}: {e}");
            }
        }
        self.drain();
        reply
    }

    fn drain(&mut self) {
        let mut completions = Vec::new();
        while let Some(effect) = self.core.poll_effect() {
            let effect = match &mut self.hook {
                Some(hook) => match hook(effect) {
                    Some(e) => e,
                    None => continue,
                },
                None => effect,
            };
            match effect {
                Effect::Bmp(r) => {
                    if self.record {
                        self.bmp_log.push(r.clone());
                    }
                    if self.bmp_auto {
                        completions.push(r.id);
                    } else {
                        self.bmp_pending.push_back(r);
                    }
                }
                Effect::Log(l) => self.log.push(l),
                n => self.notifications.push(n),
            }
        }
        for id in completions {
            self.event(Event::BmpDone {
                now_us: self.now_us,
                request_id: id,
                failure: None,
                failed_boards: Vec::new(),
                bmp_unreachable: false,
            });
        }
    }

    /// Run a command from [`PEER`].
    pub fn cmd(&mut self, command: Command) -> Response {
        if command.is_read_only() {
            return self.core.query(&command);
        }
        self.event(Event::Command {
            now_us: self.now_us,
            peer: PEER.to_string(),
            command,
        })
        .expect("commands always get a reply")
    }

    /// Create a job with the given shape and default options; returns its id.
    pub fn create(&mut self, request: JobRequest) -> JobId {
        self.create_job(job(request))
    }

    /// Create a job; returns its id.
    pub fn create_job(&mut self, c: CreateJob) -> JobId {
        match self.cmd(Command::CreateJob(c)) {
            Response::JobId(id) => id,
            other => panic!("create_job answered {other:?}"),
        }
    }

    /// `get_job_state` (which also counts as a keepalive).
    pub fn state(&mut self, job_id: JobId) -> JobStateReply {
        match self.cmd(Command::GetJobState { job_id }) {
            Response::JobState(s) => s,
            other => panic!("get_job_state answered {other:?}"),
        }
    }

    /// `get_job_machine_info` (also a keepalive).
    pub fn machine_info(&mut self, job_id: JobId) -> MachineInfoReply {
        match self.cmd(Command::GetJobMachineInfo { job_id }) {
            Response::MachineInfo(m) => m,
            other => panic!("get_job_machine_info answered {other:?}"),
        }
    }

    /// `destroy_job`.
    pub fn destroy(&mut self, job_id: JobId, reason: Option<&str>) {
        self.cmd(Command::DestroyJob {
            job_id,
            reason: reason.map(str::to_string),
        });
    }

    /// `where_is`.
    pub fn where_is(&self, w: WhereIs) -> Option<WhereIsReply> {
        self.core.where_is(&w)
    }

    /// Move the clock forward by `seconds`, ticking at every deadline on the way and at the end.
    pub fn advance(&mut self, seconds: f64) {
        let end = self.now_us + (seconds * 1e6) as u64;
        while let Some(d) = self.core.poll_deadline().filter(|&d| d <= end) {
            self.now_us = self.now_us.max(d);
            self.event(Event::Tick {
                now_us: self.now_us,
            });
        }
        self.now_us = end;
        self.event(Event::Tick { now_us: end });
    }

    /// Complete the oldest pending BMP request, successfully or with a failure reason.
    pub fn complete_next_bmp(&mut self, failure: Option<&str>) -> Option<BmpRequest> {
        let r = self.bmp_pending.pop_front()?;
        self.event(Event::BmpDone {
            now_us: self.now_us,
            request_id: r.id,
            failure: failure.map(str::to_string),
            failed_boards: Vec::new(),
            bmp_unreachable: false,
        });
        Some(r)
    }

    /// Complete every pending BMP request successfully (including ones this causes).
    pub fn complete_all_bmp(&mut self) {
        while self.complete_next_bmp(None).is_some() {}
    }

    /// All `jobs_changed` ids notified since the last call, batch by batch.
    pub fn take_jobs_changed(&mut self) -> Vec<Vec<JobId>> {
        let mut out = Vec::new();
        self.notifications.retain(|n| match n {
            Effect::JobsChanged(ids) => {
                out.push(ids.clone());
                false
            }
            _ => true,
        });
        out
    }
}

/// A `create_job` with the original's defaults (tags `["default"]`, keepalive 60 s).
pub fn job(request: JobRequest) -> CreateJob {
    let args_json = match &request {
        JobRequest::OneBoard => "[]".to_string(),
        JobRequest::Boards(n) => format!("[{n}]"),
        JobRequest::Triads(w, h) => format!("[{w}, {h}]"),
        JobRequest::Board(x, y, z) => format!("[{x}, {y}, {z}]"),
    };
    CreateJob {
        owner: "me".to_string(),
        keepalive_s: Some(60.0),
        request,
        target: JobTarget::Tags(vec!["default".to_string()]),
        min_ratio: 0.0,
        max_dead_boards: None,
        max_dead_links: None,
        require_torus: false,
        args_json,
        kwargs_json: "{}".to_string(),
    }
}

/// The original tests' `simple_machine`: identity physical map (cabinet x, frame y, board z),
/// BMP `10.1.x.y`, Ethernet IP `11.x.y.z`.
pub fn simple_machine(name: &str, width: u32, height: u32) -> MachineConfig {
    machine_with(
        name,
        width,
        height,
        &[],
        &[],
        |b| [b.x, b.y, b.z],
        |c, f| format!("10.1.{c}.{f}"),
        |b| format!("11.{}.{}.{}", b.x, b.y, b.z),
    )
}

/// A machine with the given dead boards and links, physical map, BMP and IP naming.
pub fn machine_with(
    name: &str,
    width: u32,
    height: u32,
    dead_boards: &[Board],
    dead_links: &[(Board, Link)],
    physical: impl Fn(Board) -> [u32; 3],
    bmp: impl Fn(u32, u32) -> String,
    ip: impl Fn(Board) -> String,
) -> MachineConfig {
    let mut boards = Vec::new();
    let mut frames = std::collections::BTreeSet::new();
    for x in 0..width {
        for y in 0..height {
            for z in 0..3 {
                let b = Board::new(x, y, z);
                if dead_boards.contains(&b) {
                    continue;
                }
                let [c, f, n] = physical(b);
                frames.insert((c, f));
                boards.push(BoardConfig {
                    logical: b,
                    cabinet: c,
                    frame: f,
                    board: n,
                    ip: ip(b),
                });
            }
        }
    }
    let mut dead_boards = dead_boards.to_vec();
    dead_boards.sort();
    let mut dead_links = dead_links.to_vec();
    dead_links.sort();
    MachineConfig {
        name: name.to_string(),
        tags: vec!["default".to_string()],
        width,
        height,
        dead_boards,
        dead_links,
        bmps: frames
            .into_iter()
            .map(|(c, f)| BmpConfig {
                cabinet: c,
                frame: f,
                address: bmp(c, f),
            })
            .collect(),
        boards,
    }
}

/// A configuration of these machines with the original's defaults except a free delay of
/// `seconds_before_free_s`.
pub fn config(machines: Vec<MachineConfig>, seconds_before_free_s: f64) -> Config {
    Config {
        machines,
        seconds_before_free_s,
        ..Config::default()
    }
}
