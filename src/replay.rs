//! Journal replay for the incident debugger `spalloc-replay`.
//!
//! Everything here answers questions from the exact events a server folded, through the same
//! [`Core::handle`] the server runs: the journal is read with [`spalloc_journal::Reader`]
//! (no lock, never modifies a file, so it is safe while a server is writing), every record is
//! decoded with [`crate::server::decode_event`], folded, and the core's effects (log lines,
//! BMP requests, changed jobs) are collected per event into a [`Step`]. The tool's modes are
//! visitors over those steps:
//!
//! * [`Summary`]: time span, counts, snapshots, machines and the state at the end;
//! * [`describe_step`] / [`step_json`]: one line (or one JSON object) per event;
//! * [`JobHistory`]: the whole life of one job, and exactly why and when it ended;
//! * [`state_at`] with [`state_text`] / [`state_json`]: the state at a moment, with a map of
//!   each machine's boards;
//! * [`verify`]: checksums, invariants after every event, and snapshots against the fold;
//! * [`usage`]: accounting (`--usage`, `--jobs`) from the lifecycle effects;
//! * [`salvage`]: a new journal from the good records of a damaged one.
//!
//! Retention may have deleted the oldest segments. Replay then starts from the oldest
//! retained snapshot that reaches the oldest retained record ([`Source::open`]) and says so in
//! [`Source::notes`], because everything before it is unknowable.

pub mod salvage;
pub mod usage;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use spalloc_journal::{Error as JournalError, Reader};

use crate::core::coordinates::Board;
use crate::core::{
    BmpAction, BmpRequest, Command, Core, Effect, EndReason, Event, JobId, Lifecycle, Response,
    TimeUs,
};
use crate::server::decode_event;
use crate::timefmt::{format_iso, parse_time};

// ----- positions ------------------------------------------------------------------------------

/// A point in the journal given on the command line: a record's sequence number or a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// A record's sequence number (`#123` or `seq:123`).
    Seq(u64),
    /// A time, microseconds since the Unix epoch (ISO-8601 or Unix seconds).
    Time(TimeUs),
}

/// Parse a position: `#N` or `seq:N` is sequence number N; anything else is a time as
/// [`parse_time`] reads it (ISO-8601, or Unix seconds — so a bare number is *always* a time,
/// never a sequence number, which keeps the two unambiguous).
pub fn parse_position(text: &str) -> Result<Position, String> {
    let t = text.trim();
    if let Some(n) = t.strip_prefix('#').or_else(|| t.strip_prefix("seq:")) {
        return n.trim().parse::<u64>().map(Position::Seq).map_err(|_| {
            format!("{text:?} is not a sequence number (write #N or seq:N, N a whole number)")
        });
    }
    parse_time(t).map(Position::Time).map_err(|e| {
        format!(
            "{e}; for a record's sequence number write #N or seq:N (a bare number is Unix seconds)"
        )
    })
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Seq(s) => write!(f, "#{s}"),
            Position::Time(t) => write!(f, "{}", format_iso(*t)),
        }
    }
}

// ----- errors ---------------------------------------------------------------------------------

/// What kind of failure a [`ReplayError`] is; decides the tool's exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad arguments (a sequence number out of range, an unknown job…).
    Usage,
    /// The journal cannot be read at all (missing, unknown format version, I/O).
    Journal,
    /// The journal is damaged or disagrees with itself (what `--verify` looks for).
    Damage,
}

/// A failure, worded for an admin.
#[derive(Clone, Debug)]
pub struct ReplayError {
    /// What kind.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
}

impl ReplayError {
    fn usage(message: impl Into<String>) -> ReplayError {
        ReplayError {
            kind: ErrorKind::Usage,
            message: message.into(),
        }
    }
    fn damage(message: impl Into<String>) -> ReplayError {
        ReplayError {
            kind: ErrorKind::Damage,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<JournalError> for ReplayError {
    fn from(e: JournalError) -> ReplayError {
        let kind = match e {
            JournalError::Corrupt { .. } => ErrorKind::Damage,
            JournalError::NotRetained { .. } => ErrorKind::Usage,
            _ => ErrorKind::Journal,
        };
        ReplayError {
            kind,
            message: e.to_string(),
        }
    }
}

// ----- the source: where replay starts --------------------------------------------------------

/// A journal opened for replay, and the state replay starts from.
pub struct Source {
    reader: Reader,
    start_core: Core,
    /// The starting state covers records `1..=start_seq` (0: replay starts from nothing).
    pub start_seq: u64,
    /// The snapshot replay starts from, if early history was deleted by retention.
    pub start_snapshot: Option<PathBuf>,
    /// Things the reader should know about the replay (retention, skipped snapshots).
    pub notes: Vec<String>,
}

impl Source {
    /// Open `dir` read-only. Replays from record 1 when it is retained; otherwise from the
    /// oldest readable snapshot that reaches the oldest retained record.
    pub fn open(dir: &Path) -> Result<Source, ReplayError> {
        let reader = Reader::open(dir)?;
        let first = reader.first_seq();
        if first == 1 {
            return Ok(Source {
                reader,
                start_core: Core::at_journal_start(),
                start_seq: 0,
                start_snapshot: None,
                notes: Vec::new(),
            });
        }
        let mut skipped = Vec::new();
        for info in reader.snapshots() {
            if info.covered_seq + 1 < first || info.covered_seq > reader.last_seq() {
                continue;
            }
            let core = reader
                .read_snapshot(&info)
                .map_err(|e| e.to_string())
                .and_then(|s| rmp_serde::from_slice::<Core>(&s.data).map_err(|e| e.to_string()));
            match core {
                Ok(core) => {
                    let mut notes = vec![format!(
                        "records #1..#{} are no longer retained (deleted by retention): replay \
                         starts from the snapshot of record #{} ({}), so anything before it is \
                         known only as that snapshot's state",
                        first - 1,
                        info.covered_seq,
                        info.file.display()
                    )];
                    if info.covered_seq >= first {
                        notes.push(format!(
                            "records #{first}..#{} are retained but precede that snapshot; they \
                             are not replayed",
                            info.covered_seq
                        ));
                    }
                    notes.extend(skipped);
                    return Ok(Source {
                        reader,
                        start_core: core,
                        start_seq: info.covered_seq,
                        start_snapshot: Some(info.file.clone()),
                        notes,
                    });
                }
                Err(e) => skipped.push(format!("snapshot {} skipped: {e}", info.file.display())),
            }
        }
        Err(ReplayError::damage(format!(
            "records #1..#{} of {} are no longer retained and no readable snapshot reaches \
             record #{first}, so no state can be rebuilt{}",
            first - 1,
            dir.display(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({})", skipped.join("; "))
            }
        )))
    }

    /// Open `dir` read-only to learn its *current* state quickly: replay starts from the newest
    /// readable snapshot (falling back to [`Source::open`] when none can be used), so only
    /// the records after it are folded. For previews (`spalloc-server --check-config
    /// --journal`), not for histories.
    pub fn open_latest(dir: &Path) -> Result<Source, ReplayError> {
        let reader = Reader::open(dir)?;
        let (first, last) = (reader.first_seq(), reader.last_seq());
        for info in reader.snapshots().into_iter().rev() {
            if info.covered_seq + 1 < first || info.covered_seq > last {
                continue;
            }
            let core = reader
                .read_snapshot(&info)
                .ok()
                .and_then(|s| rmp_serde::from_slice::<Core>(&s.data).ok());
            if let Some(core) = core {
                return Ok(Source {
                    reader,
                    start_core: core,
                    start_seq: info.covered_seq,
                    start_snapshot: Some(info.file.clone()),
                    notes: Vec::new(),
                });
            }
        }
        Source::open(dir)
    }

    /// The underlying reader.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// The oldest retained record.
    pub fn first_seq(&self) -> u64 {
        self.reader.first_seq()
    }

    /// The newest complete record.
    pub fn last_seq(&self) -> u64 {
        self.reader.last_seq()
    }

    /// A folder holding the starting state.
    pub fn folder(&self) -> Folder {
        Folder::new(self.start_core.clone(), self.start_seq)
    }

    /// Every record after the starting state, decoded.
    pub fn records(
        &self,
    ) -> Result<impl Iterator<Item = Result<(u64, Event), ReplayError>> + '_, ReplayError> {
        let records = self.reader.records_from(self.start_seq + 1)?;
        Ok(records.map(|r| {
            let (seq, bytes) = r?;
            let event = decode_event(&bytes).map_err(|e| {
                ReplayError::damage(format!("record #{seq} cannot be decoded as an event: {e}"))
            })?;
            Ok((seq, event))
        }))
    }

    /// Check that a sequence number names a record this replay can show (`allow_start`: the
    /// starting state itself, e.g. `--at #0` on a complete journal).
    pub fn check_seq(&self, seq: u64, allow_start: bool) -> Result<(), ReplayError> {
        let lo = if allow_start {
            self.start_seq
        } else {
            self.start_seq + 1
        };
        if seq < lo || seq > self.last_seq() {
            let mut msg = format!(
                "sequence number #{seq} is out of range: this journal holds records #{}..#{}",
                self.first_seq(),
                self.last_seq()
            );
            if self.start_seq > 0 {
                let _ = write!(
                    msg,
                    ", and replay can start only after the snapshot of record #{}",
                    self.start_seq
                );
            }
            return Err(ReplayError::usage(msg));
        }
        Ok(())
    }
}

// ----- folding --------------------------------------------------------------------------------

/// The core plus what the replay tracks between events (which jobs are live, allocated, or
/// destroyed and still holding boards).
pub struct Folder {
    /// The state after the last folded event.
    pub core: Core,
    /// The last folded record (the starting state's seq before any).
    pub seq: u64,
    /// Live jobs → whether they hold boards.
    live: BTreeMap<JobId, bool>,
    /// Destroyed jobs whose boards are not yet released.
    draining: BTreeSet<JobId>,
}

/// One folded event and everything it caused.
#[derive(Clone, Debug)]
pub struct Step {
    /// The record's sequence number.
    pub seq: u64,
    /// The event.
    pub event: Event,
    /// The core's reply (commands only).
    pub reply: Option<Response>,
    /// The core's log lines.
    pub logs: Vec<String>,
    /// The steps of job lives this event caused, as data.
    pub lifecycle: Vec<Lifecycle>,
    /// BMP requests issued.
    pub issued: Vec<BmpRequest>,
    /// For a BMP completion: the request it completed (`None` if the core did not know it).
    pub completed: Option<BmpRequest>,
    /// The job this event created.
    pub created: Option<JobId>,
    /// Jobs that were given boards.
    pub allocated: Vec<JobId>,
    /// Jobs that ended, with the reason recorded for them.
    pub ended: Vec<(JobId, Option<String>)>,
    /// Destroyed jobs whose boards were released (their power-off finished).
    pub released: Vec<JobId>,
}

impl Step {
    /// Why job `id` ended in this step, typed (`None`: it did not end here).
    pub fn end_reason(&self, id: JobId) -> Option<EndReason> {
        self.lifecycle.iter().find_map(|l| match l {
            Lifecycle::Ended { job_id, reason, .. } if *job_id == id => Some(*reason),
            _ => None,
        })
    }
}

impl Folder {
    /// Start from `core`, which covers records `1..=seq`.
    pub fn new(core: Core, seq: u64) -> Folder {
        let live: BTreeMap<JobId, bool> = core
            .list_jobs()
            .iter()
            .map(|j| (j.job_id, j.boards.is_some()))
            .collect();
        let draining = core
            .board_owners()
            .into_iter()
            .flat_map(|(_, owners)| owners.into_values())
            .filter(|id| !live.contains_key(id))
            .collect();
        Folder {
            core,
            seq,
            live,
            draining,
        }
    }

    /// Fold one event through [`Core::handle`] and collect what it caused.
    pub fn apply(&mut self, seq: u64, event: Event) -> Step {
        let completed = match &event {
            Event::BmpDone { request_id, .. } => self
                .core
                .outstanding_bmp_requests()
                .find(|r| r.id == *request_id)
                .cloned(),
            _ => None,
        };
        let reply = self.core.handle(&event);
        self.seq = seq;
        let (mut logs, mut issued) = (Vec::new(), Vec::new());
        let mut lifecycle = Vec::new();
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Log(l) => logs.push(l),
                Effect::Bmp(r) => issued.push(r),
                Effect::JobsChanged(_) | Effect::MachinesChanged(_) => {}
                Effect::Lifecycle(step) => lifecycle.push(step),
            }
        }
        // Jobs created, allocated and ended come from the core's lifecycle effects (as data,
        // not from log text or by polling job states).
        let (mut created, mut allocated, mut ended) = (None, Vec::new(), Vec::new());
        for l in &lifecycle {
            match l {
                Lifecycle::Queued { job_id, .. } => {
                    created = Some(*job_id);
                    self.live.insert(*job_id, false);
                }
                Lifecycle::Allocated { job_id, .. } => {
                    if self.live.insert(*job_id, true) != Some(true) {
                        allocated.push(*job_id);
                    }
                }
                Lifecycle::Ended { job_id, text, .. } => {
                    let held = self.live.remove(job_id).unwrap_or(false);
                    ended.push((*job_id, text.clone()));
                    if held {
                        self.draining.insert(*job_id);
                    }
                }
                Lifecycle::Powering { .. } | Lifecycle::Ready { .. } => {}
            }
        }
        // A destroyed job's boards are released once its last BMP request completes (the
        // core keeps one outstanding request per unit of hardware work), so only the job of
        // the completed request and jobs ended just now can have been released.
        let mut released = Vec::new();
        let candidates = completed
            .iter()
            .map(|r| r.job_id)
            .chain(ended.iter().map(|(id, _)| *id));
        for id in candidates {
            if self.draining.contains(&id)
                && !self.core.outstanding_bmp_requests().any(|r| r.job_id == id)
            {
                self.draining.remove(&id);
                released.push(id);
            }
        }
        Step {
            seq,
            event,
            reply,
            logs,
            lifecycle,
            issued,
            completed,
            created,
            allocated,
            ended,
            released,
        }
    }

    /// Destroyed jobs still holding boards (their power-off is not finished).
    pub fn draining(&self) -> &BTreeSet<JobId> {
        &self.draining
    }
}

// ----- describing events ----------------------------------------------------------------------

/// `create_job`'s recorded arguments as a call: `create_job(2, 3, tags=["x"])`.
fn call_text(args_json: &str, kwargs_json: &str) -> String {
    let mut parts = Vec::new();
    match serde_json::from_str::<Value>(args_json) {
        Ok(Value::Array(a)) => parts.extend(a.iter().map(Value::to_string)),
        _ => parts.push(args_json.to_string()),
    }
    match serde_json::from_str::<Value>(kwargs_json) {
        Ok(Value::Object(m)) => parts.extend(m.iter().map(|(k, v)| format!("{k}={v}"))),
        _ => parts.push(kwargs_json.to_string()),
    }
    format!("create_job({})", parts.join(", "))
}

/// A command as a Python-ish call: `create_job(1, owner="me", keepalive=60, tags=["x"])`.
pub fn command_text(c: &Command) -> String {
    match c {
        Command::CreateJob(c) => {
            let mut parts = Vec::new();
            match serde_json::from_str::<Value>(&c.args_json) {
                Ok(Value::Array(a)) => parts.extend(a.iter().map(Value::to_string)),
                _ => parts.push(c.args_json.clone()),
            }
            parts.push(format!("owner={}", Value::String(c.owner.clone())));
            parts.push(format!(
                "keepalive={}",
                c.keepalive_s.map_or("None".to_string(), |k| k.to_string())
            ));
            match serde_json::from_str::<Value>(&c.kwargs_json) {
                Ok(Value::Object(m)) => parts.extend(m.iter().map(|(k, v)| format!("{k}={v}"))),
                _ => parts.push(c.kwargs_json.clone()),
            }
            format!("create_job({})", parts.join(", "))
        }
        Command::JobKeepalive { job_id } => format!("job_keepalive({job_id})"),
        Command::GetJobState { job_id } => format!("get_job_state({job_id})"),
        Command::GetJobMachineInfo { job_id } => format!("get_job_machine_info({job_id})"),
        Command::PowerOnJobBoards { job_id } => format!("power_on_job_boards({job_id})"),
        Command::PowerOffJobBoards { job_id } => format!("power_off_job_boards({job_id})"),
        Command::DestroyJob {
            job_id,
            reason: Some(r),
        } => format!("destroy_job({job_id}, reason={})", Value::String(r.clone())),
        Command::DestroyJob {
            job_id,
            reason: None,
        } => format!("destroy_job({job_id})"),
        Command::ReportProblem {
            ip,
            x,
            y,
            p,
            description,
        } => format!(
            "report_problem({}, x={x}, y={y}, p={}, description={})",
            Value::String(ip.clone()),
            p.map_or("None".to_string(), |p| p.to_string()),
            description
                .as_ref()
                .map_or("None".to_string(), |d| Value::String(d.clone()).to_string())
        ),
        other => format!("{other:?}"),
    }
}

/// The job a command is about, if any.
pub fn command_job(c: &Command) -> Option<JobId> {
    match c {
        Command::JobKeepalive { job_id }
        | Command::GetJobState { job_id }
        | Command::GetJobMachineInfo { job_id }
        | Command::PowerOnJobBoards { job_id }
        | Command::PowerOffJobBoards { job_id }
        | Command::DestroyJob { job_id, .. } => Some(*job_id),
        _ => None,
    }
}

/// `power-on of boards [0, 1, 2] on m (cabinet 0, frame 1) via 10.0.0.1`.
pub fn bmp_text(r: &BmpRequest) -> String {
    let (what, boards, links) = match &r.action {
        BmpAction::PowerOn { boards, stop_links } => ("power-on", boards, stop_links.len()),
        BmpAction::PowerOff { boards } => ("power-off", boards, 0),
    };
    let mut s = format!(
        "{what} of boards {boards:?} on {} (cabinet {}, frame {}) via BMP {}",
        r.machine, r.cabinet, r.frame, r.address
    );
    if links > 0 {
        let _ = write!(s, ", stopping {links} links");
    }
    s
}

fn bmp_json(r: &BmpRequest) -> Value {
    let (what, boards) = match &r.action {
        BmpAction::PowerOn { boards, .. } => ("power-on", boards),
        BmpAction::PowerOff { boards } => ("power-off", boards),
    };
    json!({"id": r.id, "job_id": r.job_id, "action": what, "machine": r.machine,
           "cabinet": r.cabinet, "frame": r.frame, "boards": boards, "address": r.address})
}

/// The event alone: `127.0.0.1 destroy_job(3)`, `BMP request 4 done: ok (…)`, `tick`…
pub fn event_text(step: &Step) -> String {
    match &step.event {
        Event::Command { peer, command, .. } => {
            let mut s = format!("{peer} {}", command_text(command));
            if let Some(id) = step.created {
                let _ = write!(s, " -> job {id}");
            }
            s
        }
        Event::BmpDone {
            request_id,
            failure,
            failed_boards,
            bmp_unreachable,
            ..
        } => {
            let mut outcome = match failure {
                None => "ok".to_string(),
                Some(f) => format!("FAILED: {f}"),
            };
            if !failed_boards.is_empty() {
                let _ = write!(outcome, " [failed boards {failed_boards:?}]");
            }
            if *bmp_unreachable {
                outcome.push_str(" [BMP not answering]");
            }
            match &step.completed {
                Some(r) => format!(
                    "BMP request {request_id} for job {} done: {outcome} ({})",
                    r.job_id,
                    bmp_text(r)
                ),
                None => format!("BMP request {request_id} (unknown) done: {outcome}"),
            }
        }
        Event::Tick { .. } => "tick".to_string(),
        Event::Configure { config, .. } => {
            let machines: Vec<String> = config
                .machines
                .iter()
                .map(|m| format!("{} {}x{}", m.name, m.width, m.height))
                .collect();
            format!("configure: machines [{}]", machines.join(", "))
        }
        Event::Restarted { grace_us: 0, .. } => {
            "server restarted (keepalive timers reset)".to_string()
        }
        Event::Restarted { grace_us, .. } => format!(
            "server restarted (keepalive timers reset, at least {:.1} s of grace)",
            *grace_us as f64 / 1e6
        ),
        Event::KeptAliveUnrecorded { job_ids, .. } => format!(
            "journal writable again: keepalive timers reset for jobs {job_ids:?}, whose \
             keepalives were answered while it could not be written"
        ),
        Event::Rules { rules, .. } => format!(
            "rules: single boards by {:?}, boards held after a failed power-off: {}, \
             board health: {}, power changes coalesced: {} (one per {} ms after a burst of {})",
            rules.pop,
            rules.hold_failed_power_off,
            rules.board_health,
            rules.coalesce_power,
            rules.power_change_gap_us / 1000,
            rules.power_change_burst
        ),
        Event::Admin { actor, action, .. } => format!("admin {actor}: {}", admin_text(action)),
    }
}

/// An admin action in words: `drain spin24 (3, 1, 2) "fan broken"`, `emergency stop …`.
pub fn admin_text(a: &crate::core::AdminAction) -> String {
    use crate::core::{AdminAction, BoardRef};
    let board = |b: &BoardRef| match b {
        BoardRef::Logical { machine, x, y, z } => format!("{machine} ({x}, {y}, {z})"),
        BoardRef::Physical {
            machine,
            cabinet,
            frame,
            board,
        } => format!("{machine} cabinet {cabinet} frame {frame} board {board}"),
        BoardRef::Ip(ip) => format!("board at IP {ip}"),
    };
    match a {
        AdminAction::Drain { board: b, reason } => {
            format!("drain {} ({})", board(b), Value::String(reason.clone()))
        }
        AdminAction::Undrain { board: b } => format!("undrain {}", board(b)),
        AdminAction::EmergencyStop { reason } => {
            format!("EMERGENCY STOP ({})", Value::String(reason.clone()))
        }
        AdminAction::Resume => "resume after emergency stop".to_string(),
    }
}

/// One line for one folded event: `#SEQ TIME EVENT => consequences`.
pub fn describe_step(step: &Step) -> String {
    let mut line = format!(
        "#{} {} {}",
        step.seq,
        format_iso(step.event.now_us()),
        event_text(step)
    );
    let mut effects: Vec<String> = step.logs.clone();
    effects.extend(
        step.issued
            .iter()
            .map(|r| format!("BMP request {} issued: {}", r.id, bmp_text(r))),
    );
    effects.extend(
        step.released
            .iter()
            .map(|id| format!("job {id}: boards released")),
    );
    if !effects.is_empty() {
        let _ = write!(line, " => {}", effects.join("; "));
    }
    line
}

fn event_kind(e: &Event) -> &'static str {
    match e {
        Event::Command { .. } => "command",
        Event::BmpDone { .. } => "bmp_done",
        Event::Tick { .. } => "tick",
        Event::Configure { .. } => "configure",
        Event::Restarted { .. } => "restarted",
        Event::KeptAliveUnrecorded { .. } => "kept_alive_unrecorded",
        Event::Rules { .. } => "rules",
        Event::Admin { .. } => "admin",
    }
}

/// One folded event as a JSON object (one line of `--events --json`).
pub fn step_json(step: &Step) -> Value {
    let mut v = json!({
        "seq": step.seq,
        "time": format_iso(step.event.now_us()),
        "time_us": step.event.now_us(),
        "kind": event_kind(&step.event),
        "text": event_text(step),
        "event": serde_json::to_value(&step.event).unwrap_or(Value::Null),
        "log": step.logs,
        "bmp_issued": step.issued.iter().map(bmp_json).collect::<Vec<_>>(),
        "created": step.created,
        "allocated": step.allocated,
        "ended": step.ended.iter().map(|(id, r)| json!({"job_id": id, "reason": r})).collect::<Vec<_>>(),
        "released": step.released,
    });
    if let Event::Command { peer, command, .. } = &step.event {
        v["peer"] = json!(peer);
        v["command"] = json!(command_text(command));
    }
    if let Event::BmpDone { failure, .. } = &step.event {
        v["bmp_completed"] = step.completed.as_ref().map_or(Value::Null, bmp_json);
        v["failure"] = json!(failure);
    }
    v
}

// ----- positions resolved against a journal ----------------------------------------------------

/// Whether an event at (`seq`, `time`) lies at or before `pos`.
fn at_or_before(pos: Position, seq: u64, time_us: TimeUs) -> bool {
    match pos {
        Position::Seq(s) => seq <= s,
        Position::Time(t) => time_us <= t,
    }
}

/// Fold every event, calling `visit` with each step and the state after it. Stops early when
/// `visit` returns false.
pub fn fold_all(
    source: &Source,
    mut visit: impl FnMut(&Step, &Folder) -> bool,
) -> Result<Folder, ReplayError> {
    let mut folder = source.folder();
    for r in source.records()? {
        let (seq, event) = r?;
        let step = folder.apply(seq, event);
        if !visit(&step, &folder) {
            break;
        }
    }
    Ok(folder)
}

/// Visit the events between `from` and `to` (inclusive). Seq positions must name records
/// that can be replayed.
pub fn events(
    source: &Source,
    from: Option<Position>,
    to: Option<Position>,
    mut visit: impl FnMut(&Step),
) -> Result<(), ReplayError> {
    for p in [from, to].into_iter().flatten() {
        if let Position::Seq(s) = p {
            source.check_seq(s, false)?;
        }
    }
    fold_all(source, |step, _| {
        let t = step.event.now_us();
        let after_from = match from {
            None => true,
            Some(Position::Seq(s)) => step.seq >= s,
            Some(Position::Time(f)) => t >= f,
        };
        let before_to = match to {
            None => true,
            Some(p) => at_or_before(p, step.seq, t),
        };
        if after_from && before_to {
            visit(step);
        }
        // Past a `to` sequence number nothing more can match; a `to` time is checked per event
        // (a wall clock can step back, so later records may still carry earlier times).
        !matches!(to, Some(Position::Seq(s)) if step.seq >= s)
    })?;
    Ok(())
}

/// The state after every event at or before `pos`, and the last event folded (`None` if
/// none: the starting state).
pub fn state_at(source: &Source, pos: Position) -> Result<(Folder, Option<Step>), ReplayError> {
    if let Position::Seq(s) = pos {
        source.check_seq(s, true)?;
        if s == source.start_seq {
            return Ok((source.folder(), None));
        }
    }
    let mut folder = source.folder();
    let mut last = None;
    for r in source.records()? {
        let (seq, event) = r?;
        if !at_or_before(pos, seq, event.now_us()) {
            break;
        }
        last = Some(folder.apply(seq, event));
        if matches!(pos, Position::Seq(s) if seq >= s) {
            break;
        }
    }
    Ok((folder, last))
}

// ----- state rendering ------------------------------------------------------------------------

fn job_state_name(n: u8) -> &'static str {
    match n {
        1 => "queued",
        2 => "power",
        3 => "ready",
        4 => "destroyed",
        _ => "unknown",
    }
}

fn power_name(p: Option<bool>) -> &'static str {
    match p {
        Some(true) => "on",
        Some(false) => "off",
        None => "-",
    }
}

/// A text map of one machine: one cell per triad, `[a b c]` holding the owners of boards
/// z=0, 1, 2 (a job id, `.` free, `X` dead, `D` drained (out of service); `N*` a destroyed
/// job still powering off; a job keeps a board drained under it until it ends), rows
/// from the top (highest y) down, as `spalloc-machine NAME` draws it.
pub fn machine_map(core: &Core, machine: &str) -> Option<String> {
    let m = core
        .list_machines()
        .into_iter()
        .find(|m| m.name == machine)?;
    let owners = core
        .board_owners()
        .into_iter()
        .find(|(n, _)| n == machine)
        .map(|(_, o)| o)
        .unwrap_or_default();
    let live: BTreeSet<JobId> = core.live_job_ids().into_iter().collect();
    let dead: BTreeSet<[u32; 3]> = m.dead_boards.iter().copied().collect();
    let health = core.health();
    let label = |b: Board| -> String {
        match owners.get(&b) {
            Some(id) if live.contains(id) => id.to_string(),
            Some(id) => format!("{id}*"),
            None if health.drain_of(machine, b).is_some() => "D".to_string(),
            None if dead.contains(&[b.x, b.y, b.z]) => "X".to_string(),
            None => ".".to_string(),
        }
    };
    let w = (0..m.width)
        .flat_map(|x| (0..m.height).flat_map(move |y| (0..3).map(move |z| Board::new(x, y, z))))
        .map(|b| label(b).len())
        .max()
        .unwrap_or(1);
    let cell_w = 3 * w + 4; // "[" + 3 labels + 2 spaces + "]"
    let ylab = format!("y={}", m.height.saturating_sub(1)).len();
    let mut out = String::new();
    let _ = write!(out, "{:ylab$} ", "");
    for x in 0..m.width {
        let _ = write!(out, " {:^cell_w$}", format!("x={x}"));
    }
    out.push('\n');
    for y in (0..m.height).rev() {
        let _ = write!(out, "{:>ylab$} ", format!("y={y}"));
        for x in 0..m.width {
            let cells: Vec<String> = (0..3)
                .map(|z| format!("{:>w$}", label(Board::new(x, y, z))))
                .collect();
            let _ = write!(out, " [{}]", cells.join(" "));
        }
        out.push('\n');
    }
    Some(out)
}

/// The legend printed under machine maps.
pub const MAP_LEGEND: &str = "each [a b c] is one triad: the owners of its boards z=0, z=1, z=2; \
    N = job N, N* = destroyed job N whose boards are still powering off, . = free, X = dead, \
    D = drained (out of service; a job on it keeps it until it ends)";

fn time_of(folder: &Folder, last: Option<&Step>) -> String {
    match last {
        Some(s) => format!("#{} {}", s.seq, format_iso(s.event.now_us())),
        None if folder.seq == 0 => "#0 (before the first event)".to_string(),
        None => format!(
            "#{} {} (the starting snapshot)",
            folder.seq,
            format_iso(folder.core.now_us())
        ),
    }
}

/// The state in text: live jobs, then each machine with its usage and (if `maps`) its map.
pub fn state_text(folder: &Folder, maps: bool) -> String {
    let core = &folder.core;
    let mut out = String::new();
    let jobs = core.list_jobs();
    let _ = writeln!(out, "Live jobs: {}", jobs.len());
    for j in &jobs {
        let _ = write!(
            out,
            "  job {}: owner {:?}, {}, power {}, keepalive {}, last host {}",
            j.job_id,
            j.owner,
            job_state_name(j.state),
            power_name(j.power),
            j.keepalive.map_or("none".to_string(), |k| format!("{k} s")),
            if j.keepalivehost.is_empty() {
                "-"
            } else {
                &j.keepalivehost
            }
        );
        if let (Some(m), Some(b)) = (&j.allocated_machine_name, &j.boards) {
            let _ = write!(out, ", {} boards on {m}", b.len());
        }
        let _ = writeln!(
            out,
            ", created {} as {}",
            format_iso((j.start_time * 1e6).round() as TimeUs),
            call_text(&j.args_json, &j.kwargs_json)
        );
    }
    if !folder.draining().is_empty() {
        let _ = writeln!(
            out,
            "Destroyed jobs still holding boards (powering off): {}",
            folder
                .draining()
                .iter()
                .map(|id| format!("job {id}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let owners: BTreeMap<String, BTreeMap<Board, JobId>> =
        core.board_owners().into_iter().collect();
    let machines = core.list_machines();
    let _ = writeln!(out, "Machines: {}", machines.len());
    for m in &machines {
        let total = (m.width * m.height * 3) as usize - m.dead_boards.len();
        let used = owners.get(&m.name).map_or(0, BTreeMap::len);
        // (A board drained under a running job is both held and among the dead.)
        let held_live = owners.get(&m.name).map_or(0, |o| {
            o.keys()
                .filter(|b| !m.dead_boards.contains(&[b.x, b.y, b.z]))
                .count()
        });
        let _ = writeln!(
            out,
            "  {}: {}x{} triads, {total} boards ({} dead), {used} in use, {} free; tags {:?}",
            m.name,
            m.width,
            m.height,
            m.dead_boards.len(),
            total - held_live.min(total),
            m.tags
        );
        if maps {
            if let Some(map) = machine_map(core, &m.name) {
                for l in map.lines() {
                    let _ = writeln!(out, "    {l}");
                }
            }
        }
    }
    if maps && !machines.is_empty() {
        let _ = writeln!(out, "  ({MAP_LEGEND})");
    }
    out
}

/// The state as JSON: jobs (as `list_jobs` gives them), draining jobs, and per machine its
/// size, dead boards, every held board's owner and the text map.
pub fn state_json(folder: &Folder) -> Value {
    let core = &folder.core;
    let owners: BTreeMap<String, BTreeMap<Board, JobId>> =
        core.board_owners().into_iter().collect();
    let machines: Vec<Value> = core
        .list_machines()
        .iter()
        .map(|m| {
            let held = owners.get(&m.name).cloned().unwrap_or_default();
            json!({
                "name": m.name, "tags": m.tags, "width": m.width, "height": m.height,
                "boards": (m.width * m.height * 3) as usize - m.dead_boards.len(),
                "dead_boards": m.dead_boards,
                "in_use": held.len(),
                "owners": held.iter().map(|(b, id)| json!({"board": [b.x, b.y, b.z], "job_id": id})).collect::<Vec<_>>(),
                "map": machine_map(core, &m.name).unwrap_or_default().lines().collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "seq": folder.seq,
        "time": format_iso(core.now_us()),
        "time_us": core.now_us(),
        "jobs": core.list_jobs(),
        "draining": folder.draining(),
        "machines": machines,
    })
}

/// The `--at` answer as text.
pub fn at_text(folder: &Folder, last: Option<&Step>, pos: Position, notes: &[String]) -> String {
    let mut out = String::new();
    for n in notes {
        let _ = writeln!(out, "note: {n}");
    }
    let _ = writeln!(
        out,
        "State at {pos}: after record {}",
        time_of(folder, last)
    );
    out.push_str(&state_text(folder, true));
    out
}

// ----- summary --------------------------------------------------------------------------------

/// What the whole journal holds.
pub struct Summary {
    /// The directory.
    pub dir: PathBuf,
    /// Oldest and newest retained records.
    pub first_seq: u64,
    /// Newest retained record.
    pub last_seq: u64,
    /// Where replay started.
    pub start_seq: u64,
    /// Notes from [`Source::open`].
    pub notes: Vec<String>,
    /// Events folded.
    pub events: u64,
    /// Events by kind.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Time of the first and last folded event.
    pub span: Option<(TimeUs, TimeUs)>,
    /// Snapshot files: covered seq, size in bytes.
    pub snapshots: Vec<(u64, u64)>,
    /// Jobs created.
    pub jobs_created: u64,
    /// Jobs that ended, by reason.
    pub ended_by_reason: BTreeMap<String, u64>,
    /// BMP requests issued, and how many failed.
    pub bmp_issued: u64,
    /// BMP completions that failed.
    pub bmp_failed: u64,
    /// The state at the end.
    pub end: Folder,
}

impl Summary {
    /// Fold the whole journal.
    pub fn build(source: &Source) -> Result<Summary, ReplayError> {
        let mut by_kind = BTreeMap::new();
        let (mut events, mut created, mut issued, mut failed) = (0, 0, 0, 0);
        let mut ended = BTreeMap::new();
        let mut span: Option<(TimeUs, TimeUs)> = None;
        let end = fold_all(source, |step, _| {
            events += 1;
            *by_kind.entry(event_kind(&step.event)).or_insert(0) += 1;
            let t = step.event.now_us();
            span = Some(span.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
            created += u64::from(step.created.is_some());
            issued += step.issued.len() as u64;
            failed += u64::from(matches!(
                step.event,
                Event::BmpDone {
                    failure: Some(_),
                    ..
                }
            ));
            for (_, r) in &step.ended {
                *ended
                    .entry(r.clone().unwrap_or_else(|| "(no reason)".into()))
                    .or_insert(0) += 1;
            }
            true
        })?;
        Ok(Summary {
            dir: source.reader().dir().to_path_buf(),
            first_seq: source.first_seq(),
            last_seq: source.last_seq(),
            start_seq: source.start_seq,
            notes: source.notes.clone(),
            events,
            by_kind,
            span,
            snapshots: source
                .reader()
                .snapshots()
                .iter()
                .map(|s| (s.covered_seq, s.size_bytes))
                .collect(),
            jobs_created: created,
            ended_by_reason: ended,
            bmp_issued: issued,
            bmp_failed: failed,
            end,
        })
    }

    /// Human-readable.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let _ = writeln!(
            out,
            "Journal {}: records #{}..#{}, {} events replayed (from #{})",
            self.dir.display(),
            self.first_seq,
            self.last_seq,
            self.events,
            self.start_seq + 1
        );
        match self.span {
            Some((a, b)) => {
                let _ = writeln!(
                    out,
                    "Time span: {} to {} ({:.3} s)",
                    format_iso(a),
                    format_iso(b),
                    (b - a) as f64 / 1e6
                );
            }
            None => out.push_str("Time span: no events\n"),
        }
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let _ = writeln!(out, "Events: {}", kinds.join(", "));
        let snaps: Vec<String> = self
            .snapshots
            .iter()
            .map(|(s, b)| format!("#{s} ({b} bytes)"))
            .collect();
        let _ = writeln!(
            out,
            "Snapshots: {}",
            if snaps.is_empty() {
                "none".to_string()
            } else {
                snaps.join(", ")
            }
        );
        let ended: u64 = self.ended_by_reason.values().sum();
        let _ = writeln!(out, "Jobs: {} created, {ended} ended", self.jobs_created);
        for (r, n) in &self.ended_by_reason {
            let _ = writeln!(out, "  {n} x {r}");
        }
        let _ = writeln!(
            out,
            "BMP requests: {} issued, {} failed",
            self.bmp_issued, self.bmp_failed
        );
        let _ = writeln!(
            out,
            "State at the end ({}):",
            time_of(&self.end, None).replace(" (the starting snapshot)", "")
        );
        out.push_str(&state_text(&self.end, false));
        out
    }

    /// Machine-readable.
    pub fn json(&self) -> Value {
        json!({
            "dir": self.dir,
            "notes": self.notes,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "start_seq": self.start_seq,
            "events": self.events,
            "events_by_kind": self.by_kind,
            "first_time": self.span.map(|s| format_iso(s.0)),
            "last_time": self.span.map(|s| format_iso(s.1)),
            "snapshots": self.snapshots.iter().map(|(s, b)| json!({"covered_seq": s, "size_bytes": b})).collect::<Vec<_>>(),
            "jobs_created": self.jobs_created,
            "jobs_ended": self.ended_by_reason.values().sum::<u64>(),
            "ended_by_reason": self.ended_by_reason,
            "bmp_issued": self.bmp_issued,
            "bmp_failed": self.bmp_failed,
            "end": state_json(&self.end),
        })
    }
}

// ----- one job's life -------------------------------------------------------------------------

/// One line of a job's timeline.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Entry {
    /// Record.
    pub seq: u64,
    /// Time of the event.
    pub time_us: TimeUs,
    /// What kind of thing happened (`created`, `allocated`, `bmp`, `ended`, `log`…).
    pub kind: &'static str,
    /// What happened.
    pub text: String,
}

/// A moment in a job's life: record and time.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Moment {
    /// Record.
    pub seq: u64,
    /// Time.
    pub time_us: TimeUs,
}

/// A reset of the job's keepalive timer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Reset {
    /// When.
    pub at: Moment,
    /// What reset it (`get_job_state from 1.2.3.4`, `allocation`, `server restart`…).
    pub what: String,
}

/// The whole life of one job.
#[derive(Debug, serde::Serialize)]
pub struct JobHistory {
    /// The job.
    pub job_id: JobId,
    /// Creation (if within the replayed history): who, from where, what.
    pub created: Option<Value>,
    /// The job was already live in the starting snapshot (early history deleted).
    pub live_at_start: bool,
    /// Machine and boards, once allocated: `[x, y, z]` logical and `[c, f, b]` physical.
    pub allocation: Option<Value>,
    /// Keepalive interval, seconds.
    pub keepalive_s: Option<f64>,
    /// Client commands that reset the keepalive timer.
    pub touches: u64,
    /// The hosts they came from.
    pub touch_hosts: BTreeSet<String>,
    /// The last keepalive-timer reset.
    pub last_reset: Option<Reset>,
    /// The longest gap between two resets (microseconds), and the two resets.
    pub longest_gap: Option<(u64, Reset, Reset)>,
    /// BMP requests: id, what, issued at, outcome.
    pub bmp: Vec<Value>,
    /// When and why it ended: moment, reason, and the event that caused it.
    pub ended: Option<Value>,
    /// When its boards were released after it ended.
    pub released: Option<Moment>,
    /// Everything, in order.
    pub timeline: Vec<Entry>,
    /// The job's state at the end of the journal (`get_job_state`).
    pub final_state: Value,
}

impl JobHistory {
    /// Fold the journal, following one job.
    pub fn build(source: &Source, job_id: JobId) -> Result<JobHistory, ReplayError> {
        let start = source.folder();
        let at_start = start
            .core
            .list_jobs()
            .into_iter()
            .find(|j| j.job_id == job_id);
        let mut h = JobHistory {
            job_id,
            created: None,
            live_at_start: at_start.is_some(),
            allocation: None,
            keepalive_s: at_start.as_ref().and_then(|j| j.keepalive),
            touches: 0,
            touch_hosts: BTreeSet::new(),
            last_reset: None,
            longest_gap: None,
            bmp: Vec::new(),
            ended: None,
            released: None,
            timeline: Vec::new(),
            final_state: Value::Null,
        };
        if let Some(j) = &at_start {
            let t = (j.start_time * 1e6).round() as TimeUs;
            h.timeline.push(Entry {
                seq: source.start_seq,
                time_us: t,
                kind: "live_at_start",
                text: format!(
                    "already live in the starting snapshot: created {} by {:?} as {}, last host {}, \
                     state {}",
                    format_iso(t),
                    j.owner,
                    call_text(&j.args_json, &j.kwargs_json),
                    j.keepalivehost,
                    job_state_name(j.state)
                ),
            });
            if let (Some(m), Some(b)) = (&j.allocated_machine_name, &j.boards) {
                h.allocation = Some(allocation_json(&start.core, m, b, None));
            }
        }
        let mut live = at_start.is_some();
        let end = fold_all(source, |step, folder| {
            h.observe(step, &folder.core, &mut live);
            true
        })?;
        if h.created.is_none() && !h.live_at_start && h.timeline.is_empty() {
            let before = start.core.job_state(job_id);
            if source.start_seq > 0 && before.state == 4 {
                return Err(ReplayError::usage(format!(
                    "job {job_id} ended before the retained history (records before #{} were \
                     deleted by retention); the starting snapshot remembers only its reason: {}",
                    source.start_seq + 1,
                    before.reason.as_deref().unwrap_or("(no reason)")
                )));
            }
            return Err(ReplayError::usage(format!(
                "job {job_id} does not appear in the replayed journal (records #{}..#{}; jobs \
                 created there are numbered below {})",
                source.start_seq + 1,
                source.last_seq(),
                end.core.next_job_id()
            )));
        }
        h.final_state = serde_json::to_value(end.core.job_state(job_id)).unwrap_or(Value::Null);
        Ok(h)
    }

    fn push(&mut self, step: &Step, kind: &'static str, text: String) {
        self.timeline.push(Entry {
            seq: step.seq,
            time_us: step.event.now_us(),
            kind,
            text,
        });
    }

    fn reset(&mut self, step: &Step, what: String) {
        let r = Reset {
            at: Moment {
                seq: step.seq,
                time_us: step.event.now_us(),
            },
            what,
        };
        if let Some(prev) = &self.last_reset {
            let gap = r.at.time_us.saturating_sub(prev.at.time_us);
            if !matches!(&self.longest_gap, Some((g, _, _)) if gap <= *g) {
                self.longest_gap = Some((gap, prev.clone(), r.clone()));
            }
        }
        self.last_reset = Some(r);
    }

    fn observe(&mut self, step: &Step, core: &Core, live: &mut bool) {
        let id = self.job_id;
        let now = step.event.now_us();
        // Commands about this job (from a client).
        if let Event::Command { peer, command, .. } = &step.event {
            if step.created == Some(id) {
                if let Command::CreateJob(c) = command {
                    self.keepalive_s = c.keepalive_s;
                    self.created = Some(json!({
                        "seq": step.seq, "time": format_iso(now), "time_us": now,
                        "owner": c.owner, "peer": peer, "command": command_text(command),
                        "args": c.args_json, "kwargs": c.kwargs_json, "keepalive_s": c.keepalive_s,
                    }));
                }
                *live = true;
                self.reset(step, format!("creation from {peer}"));
            } else if command_job(command) == Some(id) {
                let touches = !matches!(command, Command::DestroyJob { .. });
                if *live && touches {
                    self.touches += 1;
                    self.touch_hosts.insert(peer.clone());
                    self.reset(step, format!("{} from {peer}", command_text(command)));
                }
                let notable = !matches!(
                    command,
                    Command::JobKeepalive { .. }
                        | Command::GetJobState { .. }
                        | Command::GetJobMachineInfo { .. }
                );
                if notable || !*live {
                    let suffix = if *live {
                        ""
                    } else {
                        " (job not live: no effect)"
                    };
                    self.push(
                        step,
                        "command",
                        format!("{peer} called {}{suffix}", command_text(command)),
                    );
                }
            }
        }
        if let Event::Restarted { .. } = step.event {
            if *live {
                self.push(
                    step,
                    "restart",
                    "server restarted: keepalive timer reset".into(),
                );
                self.reset(step, "server restart".into());
            }
        }
        if let Event::KeptAliveUnrecorded { job_ids, .. } = &step.event {
            if *live && job_ids.contains(&id) {
                self.push(
                    step,
                    "keepalive",
                    "keepalives answered while the journal could not be written: timer reset"
                        .into(),
                );
                self.reset(step, "keepalives answered during a journal outage".into());
            }
        }
        if let (Event::BmpDone { failure, .. }, Some(r)) = (&step.event, &step.completed) {
            if r.job_id == id {
                let outcome = match failure {
                    None => "ok".to_string(),
                    Some(f) => format!("FAILED: {f}"),
                };
                self.push(
                    step,
                    "bmp_done",
                    format!("BMP request {} done: {outcome} ({})", r.id, bmp_text(r)),
                );
                let entry = match self.bmp.iter_mut().find(|b| b["id"] == json!(r.id)) {
                    Some(e) => e,
                    None => {
                        // Issued before the replayed history began.
                        self.bmp.push(bmp_json(r));
                        self.bmp.last_mut().expect("just pushed")
                    }
                };
                entry["outcome"] = json!(failure
                    .clone()
                    .map_or("ok".to_string(), |f| format!("failed: {f}")));
                entry["done_seq"] = json!(step.seq);
                entry["done_time"] = json!(format_iso(now));
            }
        }
        // The job's life, from the core's lifecycle effects.
        for l in &step.lifecycle {
            match l {
                Lifecycle::Queued {
                    job_id,
                    owner,
                    host,
                } if *job_id == id => {
                    let what = match &step.event {
                        Event::Command {
                            command: command @ Command::CreateJob(_),
                            ..
                        } => command_text(command),
                        _ => "create_job".to_string(),
                    };
                    self.push(
                        step,
                        "created",
                        format!("created by {owner:?} from {host}: {what}; queued"),
                    );
                }
                Lifecycle::Allocated {
                    job_id,
                    machine,
                    boards,
                } if *job_id == id => {
                    let b: Vec<[u32; 3]> = boards.iter().map(|b| [b.x, b.y, b.z]).collect();
                    let a = allocation_json(core, machine, &b, Some(step));
                    self.push(
                        step,
                        "allocated",
                        format!(
                            "allocated {} boards on {machine}: {}",
                            b.len(),
                            boards_text(core, machine, &b)
                        ),
                    );
                    self.allocation = Some(a);
                    // Allocation powers the boards on, which resets the keepalive timer.
                    self.reset(step, "allocation (boards powered on)".into());
                }
                Lifecycle::Powering { job_id, on } if *job_id == id => {
                    let what = if *on { "on" } else { "off" };
                    self.push(step, "powering", format!("powering its boards {what}"));
                }
                Lifecycle::Ready { job_id, power } if *job_id == id => {
                    let what = if *power { "on" } else { "off" };
                    self.push(step, "ready", format!("ready: boards {what}"));
                }
                _ => {}
            }
        }
        for r in step.issued.iter().filter(|r| r.job_id == id) {
            self.push(
                step,
                "bmp",
                format!("BMP request {} issued: {}", r.id, bmp_text(r)),
            );
            let mut v = bmp_json(r);
            v["issued_seq"] = json!(step.seq);
            v["issued_time"] = json!(format_iso(now));
            v["outcome"] = Value::Null;
            self.bmp.push(v);
        }
        if let Some((_, reason)) = step.ended.iter().find(|(j, _)| *j == id) {
            *live = false;
            let cause = self.cause(step);
            // (The reason came from a client: escaped for the admin's terminal.)
            let reason_text =
                crate::logsafe::escape(reason.as_deref().unwrap_or("(no reason)")).into_owned();
            self.push(
                step,
                "ended",
                format!(
                    "ENDED ({}): {reason_text} — cause: {cause}",
                    step.end_reason(id).map_or("?", EndReason::name)
                ),
            );
            self.ended = Some(json!({
                "seq": step.seq, "time": format_iso(now), "time_us": now,
                "reason": reason, "cause": cause, "event": event_text(step),
                "end_reason": step.end_reason(id).map(EndReason::name),
            }));
        }
        if step.released.contains(&id) {
            self.push(
                step,
                "released",
                "boards released (power-off finished)".into(),
            );
            self.released = Some(Moment {
                seq: step.seq,
                time_us: now,
            });
        }
    }

    /// Why the step that ended the job did so, in words.
    fn cause(&self, step: &Step) -> String {
        match &step.event {
            Event::Tick { now_us } => match &self.last_reset {
                Some(r) => format!(
                    "keepalive expired: the timer was last reset at #{} {} by {}, {:.3} s \
                     earlier; the keepalive is {}",
                    r.at.seq,
                    format_iso(r.at.time_us),
                    r.what,
                    now_us.saturating_sub(r.at.time_us) as f64 / 1e6,
                    self.keepalive_s
                        .map_or("not set".to_string(), |k| format!("{k} s"))
                ),
                None => "keepalive expired (no reset within the replayed history)".into(),
            },
            Event::Command { peer, command, .. } => match command {
                Command::DestroyJob { .. } => format!("{peer} called {}", command_text(command)),
                _ => format!(
                    "{peer} called {}: no configured machine can ever satisfy the request",
                    command_text(command)
                ),
            },
            Event::BmpDone { .. } => format!("hardware failure: {}", event_text(step)),
            Event::Configure { .. } => format!(
                "a new configuration removed or changed its machine ({})",
                event_text(step)
            ),
            Event::Restarted { .. } => "server restart".into(),
            Event::KeptAliveUnrecorded { .. } => "journal recovery".into(),
            Event::Rules { .. } => event_text(step),
            Event::Admin { .. } => format!("an administrator: {}", event_text(step)),
        }
    }

    /// Human-readable.
    pub fn text(&self, notes: &[String]) -> String {
        let mut out = String::new();
        for n in notes {
            let _ = writeln!(out, "note: {n}");
        }
        let _ = writeln!(out, "Job {}", self.job_id);
        match &self.created {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  created:   #{} {} by {} from {}",
                    c["seq"],
                    c["time"].as_str().unwrap_or(""),
                    c["owner"],
                    c["peer"].as_str().unwrap_or("")
                );
                let _ = writeln!(out, "  request:   {}", c["command"].as_str().unwrap_or(""));
            }
            None if self.live_at_start => {
                let _ = writeln!(
                    out,
                    "  created:   before the replayed history (live in the starting snapshot)"
                );
            }
            None => {
                let _ = writeln!(out, "  created:   before the replayed history");
            }
        }
        match &self.allocation {
            Some(a) => {
                let _ = writeln!(
                    out,
                    "  boards:    {} on {}{}: {}",
                    a["boards"].as_array().map_or(0, Vec::len),
                    a["machine"].as_str().unwrap_or(""),
                    a["time"]
                        .as_str()
                        .map(|t| format!(" (allocated #{} {t})", a["seq"]))
                        .unwrap_or_default(),
                    a["text"].as_str().unwrap_or("")
                );
            }
            None => out.push_str("  boards:    never allocated\n"),
        }
        let _ = writeln!(
            out,
            "  keepalive: {}; {} client touches from {}",
            self.keepalive_s
                .map_or("none".to_string(), |k| format!("{k} s")),
            self.touches,
            if self.touch_hosts.is_empty() {
                "nobody".to_string()
            } else {
                self.touch_hosts
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        if let Some((gap, a, b)) = &self.longest_gap {
            let _ = writeln!(
                out,
                "             longest gap between timer resets {:.3} s: #{} {} ({}) to #{} {} ({})",
                *gap as f64 / 1e6,
                a.at.seq,
                format_iso(a.at.time_us),
                a.what,
                b.at.seq,
                format_iso(b.at.time_us),
                b.what
            );
        }
        if let Some(r) = &self.last_reset {
            let _ = writeln!(
                out,
                "             last reset #{} {} ({})",
                r.at.seq,
                format_iso(r.at.time_us),
                r.what
            );
        }
        let failed = self
            .bmp
            .iter()
            .filter(|b| {
                b["outcome"]
                    .as_str()
                    .is_some_and(|o| o.starts_with("failed"))
            })
            .count();
        let pending = self.bmp.iter().filter(|b| b["outcome"].is_null()).count();
        let _ = writeln!(
            out,
            "  BMP:       {} requests, {} failed, {} unfinished",
            self.bmp.len(),
            failed,
            pending
        );
        match &self.ended {
            Some(e) => {
                let _ = writeln!(
                    out,
                    "  ended:     #{} {}: {}",
                    e["seq"],
                    e["time"].as_str().unwrap_or(""),
                    e["reason"].as_str().unwrap_or("(no reason)")
                );
                let _ = writeln!(out, "  why:       {}", e["cause"].as_str().unwrap_or(""));
                match &self.released {
                    Some(m) => {
                        let _ = writeln!(out, "  released:  #{} {}", m.seq, format_iso(m.time_us));
                    }
                    None if self.allocation.is_some() => {
                        out.push_str("  released:  not yet (power-off unfinished)\n")
                    }
                    None => {}
                }
            }
            None => out.push_str("  ended:     no, still live at the end of the journal\n"),
        }
        out.push_str("Timeline:\n");
        for e in &self.timeline {
            let _ = writeln!(out, "  #{:<6} {}  {}", e.seq, format_iso(e.time_us), e.text);
        }
        out
    }
}

fn boards_text(core: &Core, machine: &str, boards: &[[u32; 3]]) -> String {
    boards
        .iter()
        .map(|b| {
            let phys = core.query(&Command::GetBoardPosition {
                machine: machine.to_string(),
                x: b[0] as i64,
                y: b[1] as i64,
                z: b[2] as i64,
            });
            match phys {
                Response::Triple(Some([c, f, n])) => {
                    format!("({}, {}, {}) [c{c} f{f} b{n}]", b[0], b[1], b[2])
                }
                _ => format!("({}, {}, {})", b[0], b[1], b[2]),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn allocation_json(core: &Core, machine: &str, boards: &[[u32; 3]], step: Option<&Step>) -> Value {
    json!({
        "machine": machine,
        "boards": boards,
        "text": boards_text(core, machine, boards),
        "seq": step.map(|s| s.seq),
        "time": step.map(|s| format_iso(s.event.now_us())),
    })
}

// ----- verify ---------------------------------------------------------------------------------

/// How often [`verify`] reports progress, in events.
pub const VERIFY_PROGRESS_EVERY: u64 = 10_000;

/// What `--verify` found.
#[derive(Debug, Default)]
pub struct VerifyOutcome {
    /// The first problem, if any.
    pub problem: Option<String>,
    /// Remarks that are not problems (retention, a tail being written…).
    pub notes: Vec<String>,
    /// Oldest and newest record.
    pub first_seq: u64,
    /// Newest record.
    pub last_seq: u64,
    /// Records whose checksums were checked.
    pub records_checked: u64,
    /// Events folded with the invariants checked after each.
    pub events_folded: u64,
    /// Snapshots compared with the fold (covered seqs).
    pub snapshots_compared: Vec<u64>,
}

impl VerifyOutcome {
    /// Human-readable.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        match &self.problem {
            Some(p) => {
                let _ = writeln!(out, "PROBLEM: {p}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "OK: records #{}..#{}: {} checksums good, {} events folded with the invariants \
                     holding after each, {} snapshots agree with the fold {:?}",
                    self.first_seq,
                    self.last_seq,
                    self.records_checked,
                    self.events_folded,
                    self.snapshots_compared.len(),
                    self.snapshots_compared
                );
            }
        }
        out
    }

    /// Machine-readable.
    pub fn json(&self) -> Value {
        json!({
            "ok": self.problem.is_none(),
            "problem": self.problem,
            "notes": self.notes,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "records_checked": self.records_checked,
            "events_folded": self.events_folded,
            "snapshots_compared": self.snapshots_compared,
        })
    }
}

/// Check a journal: every frame's checksum ([`Reader::verify`]); fold every event with
/// [`Core::check_invariants`] after each; and compare the fold at each snapshot's covered
/// record with the snapshot, byte for byte (`rmp_serde::to_vec_named`). Comparing at the
/// covered record suffices: folding on from equal states gives equal states. `Err` only when
/// the journal cannot be read at all (missing directory, unknown format version, I/O);
/// damage and disagreements are reported in [`VerifyOutcome::problem`] (the first found).
///
/// Checking the invariants costs about as much as the core's own debug checks, which grow
/// with the machines' size, so `progress(seq, last_seq)` is called every
/// [`VERIFY_PROGRESS_EVERY`] events for a caller that wants to show it.
pub fn verify(
    dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyOutcome, ReplayError> {
    let mut out = VerifyOutcome::default();
    let reader = match Reader::open(dir) {
        Ok(r) => r,
        Err(e @ JournalError::Corrupt { .. }) => {
            out.problem = Some(format!("the journal cannot be opened: {e}"));
            return Ok(out);
        }
        Err(e) => return Err(e.into()),
    };
    let report = reader.verify()?;
    out.first_seq = report.first_seq;
    out.last_seq = report.last_seq;
    out.records_checked = report.records;
    if let Some(t) = &report.torn_tail {
        out.notes.push(format!(
            "incomplete tail (a batch being written now, or a crash's torn write that the \
             server will cut): {t}"
        ));
    }
    if let Some(p) = report.first_bad {
        out.problem = Some(format!("damaged journal: {p}"));
        return Ok(out);
    }
    drop(reader);
    let source = match Source::open(dir) {
        Ok(s) => s,
        Err(e) if e.kind == ErrorKind::Damage => {
            out.problem = Some(e.message);
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    out.notes.extend(source.notes.iter().cloned());
    if let Err(e) = source.start_core.check_invariants() {
        out.problem = Some(format!(
            "the starting snapshot of record #{} breaks an invariant: {e}",
            source.start_seq
        ));
        return Ok(out);
    }
    let mut snapshots: BTreeMap<u64, spalloc_journal::SnapshotInfo> = BTreeMap::new();
    for info in source.reader().snapshots() {
        if info.covered_seq > source.start_seq {
            snapshots.insert(info.covered_seq, info);
        } else if info.covered_seq < source.start_seq {
            out.notes.push(format!(
                "snapshot of record #{} predates the retained history: not compared",
                info.covered_seq
            ));
        } else {
            out.notes.push(format!(
                "snapshot of record #{} is where replay starts: nothing earlier to compare it with",
                info.covered_seq
            ));
        }
    }
    let mut problem = None;
    let mut folder = source.folder();
    let mut fold = || -> Result<(), ReplayError> {
        for r in source.records()? {
            let (seq, event) = r?;
            let step = folder.apply(seq, event);
            out.events_folded += 1;
            if out.events_folded % VERIFY_PROGRESS_EVERY == 0 {
                progress(step.seq, out.last_seq);
            }
            if let Err(e) = folder.core.check_invariants() {
                problem = Some(format!(
                    "invariant broken after record #{} ({} {}): {e}",
                    step.seq,
                    format_iso(step.event.now_us()),
                    event_text(&step)
                ));
                return Ok(());
            }
            if let Some(info) = snapshots.get(&step.seq) {
                match compare_snapshot(&source, info, &folder.core) {
                    Ok(None) => out.snapshots_compared.push(step.seq),
                    Ok(Some(theirs)) => {
                        // Kept history can hold snapshots written by an older version, whose
                        // encoding of the same state differs. A server that started from it
                        // folded on from it, so the fold does too.
                        out.snapshots_compared.push(step.seq);
                        out.notes.push(format!(
                            "snapshot of record #{} agrees with the fold in everything visible                              but not byte for byte (written by another version?): replay goes                              on from it, as the server did",
                            step.seq
                        ));
                        folder.core = theirs;
                    }
                    Err(p) => {
                        problem = Some(p);
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    };
    match fold() {
        Ok(()) => {}
        Err(e) if e.kind == ErrorKind::Damage => problem = problem.or(Some(e.message)),
        Err(e) => return Err(e),
    }
    out.problem = problem;
    Ok(out)
}

/// `Ok(None)`: the snapshot equals the fold byte for byte. `Ok(Some(snapshot))`: they differ
/// only in encoding (every visible part of the state agrees). `Err`: they disagree.
fn compare_snapshot(
    source: &Source,
    info: &spalloc_journal::SnapshotInfo,
    folded: &Core,
) -> Result<Option<Core>, String> {
    let snap = source
        .reader()
        .read_snapshot(info)
        .map_err(|e| format!("snapshot {} cannot be read: {e}", info.file.display()))?;
    let ours = rmp_serde::to_vec_named(folded).map_err(|e| e.to_string())?;
    if ours == snap.data {
        return Ok(None);
    }
    let from = if source.start_seq == 0 {
        "from the beginning".to_string()
    } else {
        format!("from the snapshot of record #{}", source.start_seq)
    };
    let detail = match rmp_serde::from_slice::<Core>(&snap.data) {
        Err(e) => format!("the snapshot cannot even be decoded: {e}"),
        Ok(theirs) => match difference(&theirs, folded) {
            None => return Ok(Some(theirs)),
            Some(d) => d,
        },
    };
    Err(format!(
        "snapshot of record #{} ({}) disagrees with folding the records {from}: {detail}",
        info.covered_seq,
        info.file.display()
    ))
}

/// The first visible difference between a snapshot's state and the folded one (`None`: they
/// differ only in encoding).
fn difference(snap: &Core, folded: &Core) -> Option<String> {
    if snap.now_us() != folded.now_us() {
        return Some(format!(
            "its time is {}, the fold's {}",
            format_iso(snap.now_us()),
            format_iso(folded.now_us())
        ));
    }
    if snap.next_job_id() != folded.next_job_id() {
        return Some(format!(
            "its next job id is {}, the fold's {}",
            snap.next_job_id(),
            folded.next_job_id()
        ));
    }
    if snap.live_job_ids() != folded.live_job_ids() {
        return Some(format!(
            "its live jobs are {:?}, the fold's {:?}",
            snap.live_job_ids(),
            folded.live_job_ids()
        ));
    }
    if snap.board_owners() != folded.board_owners() {
        return Some("the boards' owners differ".to_string());
    }
    if snap.list_jobs() != folded.list_jobs() {
        return Some("the jobs' details differ".to_string());
    }
    None
}
