//! Accounting, as Slurm's `sacct` gives it: `spalloc-replay DIR --usage` and `--jobs`.
//!
//! Built only from the core's lifecycle effects ([`Lifecycle`]) while folding the journal:
//! each job's owner and client host (from `Queued`), machine and boards (`Allocated`), the
//! first time its boards were on and ready (`Ready`), and when and why it ended (`Ended`,
//! typed). From those:
//!
//! * **board-hours**: boards × the time the job held them, from allocation to its end (or to
//!   the end of the journal for a live job), clipped to the window;
//! * **waiting time**: from creation to the first moment its boards were on and ready (jobs
//!   that never got there have none);
//! * **end reasons**: the typed reason of every job that ended inside the window.
//!
//! A job belongs to a window (`--since`, `--until`; the whole journal by default) when its
//! life, from creation to its end (or the end of the journal), overlaps it. Jobs already live
//! in the snapshot replay starts from (older records deleted by retention) count from that
//! snapshot's time, with the creation time the snapshot remembers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{fold_all, ReplayError, Source};
use crate::core::{EndReason, JobId, Lifecycle, TimeUs};
use crate::timefmt::format_iso;

/// Every typed end reason, in the order reports list them.
pub const END_REASONS: [EndReason; 7] = [
    EndReason::Owner,
    EndReason::KeepaliveExpired,
    EndReason::NoSuitableMachine,
    EndReason::MachineRemoved,
    EndReason::BoardFailure,
    EndReason::Admin,
    EndReason::EmergencyStop,
];

/// One job's life, as accounting sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    /// The job.
    pub job_id: JobId,
    /// Its owner, as given.
    pub owner: String,
    /// The client host that created it (empty if it was live before the replayed history).
    pub host: String,
    /// The machine it was given boards on.
    pub machine: Option<String>,
    /// How many boards.
    pub boards: usize,
    /// Created.
    pub created_us: TimeUs,
    /// Given boards.
    pub allocated_us: Option<TimeUs>,
    /// First ready with its boards on.
    pub ready_us: Option<TimeUs>,
    /// Ended.
    pub ended_us: Option<TimeUs>,
    /// Why, typed.
    pub end_reason: Option<EndReason>,
    /// Why, as its owner saw it.
    pub end_text: Option<String>,
    /// Live in the snapshot replay started from (its early life is not in the history).
    pub live_at_start: bool,
}

impl JobRecord {
    /// Seconds from creation to ready.
    pub fn wait_s(&self) -> Option<f64> {
        self.ready_us
            .map(|r| r.saturating_sub(self.created_us) as f64 / 1e6)
    }

    /// Board-hours inside `[since, until]` (`journal_end` stands for "still live").
    pub fn board_hours(&self, since: TimeUs, until: TimeUs, journal_end: TimeUs) -> f64 {
        let Some(from) = self.allocated_us else {
            return 0.0;
        };
        let to = self.ended_us.unwrap_or(journal_end);
        let (a, b) = (from.max(since), to.min(until));
        if b <= a {
            return 0.0;
        }
        self.boards as f64 * (b - a) as f64 / 3.6e9
    }

    /// Whether the job's life overlaps `[since, until]`.
    pub fn in_window(&self, since: TimeUs, until: TimeUs, journal_end: TimeUs) -> bool {
        self.created_us <= until && self.ended_us.unwrap_or(journal_end) >= since
    }
}

/// Every job of the replayed history.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// By job id.
    pub jobs: BTreeMap<JobId, JobRecord>,
    /// Time of the starting state (the first event's, from record 1).
    pub start_us: TimeUs,
    /// Time of the last event.
    pub end_us: TimeUs,
}

impl Ledger {
    /// Fold the journal, recording every job's life.
    pub fn build(source: &Source) -> Result<Ledger, ReplayError> {
        let start = source.folder();
        let mut ledger = Ledger::default();
        let from_snapshot = source.start_seq > 0;
        if from_snapshot {
            ledger.start_us = start.core.now_us();
            for j in start.core.list_jobs() {
                ledger.jobs.insert(
                    j.job_id,
                    JobRecord {
                        job_id: j.job_id,
                        owner: j.owner.clone(),
                        host: String::new(),
                        machine: j.allocated_machine_name.clone(),
                        boards: j.boards.as_ref().map_or(0, Vec::len),
                        created_us: (j.start_time * 1e6).round() as TimeUs,
                        allocated_us: j.boards.as_ref().map(|_| ledger.start_us),
                        ready_us: None,
                        ended_us: None,
                        end_reason: None,
                        end_text: None,
                        live_at_start: true,
                    },
                );
            }
        }
        let mut first = true;
        fold_all(source, |step, _| {
            let now = step.event.now_us();
            if first && !from_snapshot {
                ledger.start_us = now;
            }
            first = false;
            ledger.end_us = ledger.end_us.max(now);
            for l in &step.lifecycle {
                ledger.observe(l, now);
            }
            true
        })?;
        Ok(ledger)
    }

    fn observe(&mut self, l: &Lifecycle, now: TimeUs) {
        match l {
            Lifecycle::Queued {
                job_id,
                owner,
                host,
            } => {
                self.jobs.insert(
                    *job_id,
                    JobRecord {
                        job_id: *job_id,
                        owner: owner.clone(),
                        host: host.clone(),
                        machine: None,
                        boards: 0,
                        created_us: now,
                        allocated_us: None,
                        ready_us: None,
                        ended_us: None,
                        end_reason: None,
                        end_text: None,
                        live_at_start: false,
                    },
                );
            }
            Lifecycle::Allocated {
                job_id,
                machine,
                boards,
            } => {
                if let Some(j) = self.jobs.get_mut(job_id) {
                    j.machine = Some(machine.clone());
                    j.boards = boards.len();
                    j.allocated_us.get_or_insert(now);
                }
            }
            Lifecycle::Ready {
                job_id,
                power: true,
            } => {
                if let Some(j) = self.jobs.get_mut(job_id) {
                    j.ready_us.get_or_insert(now);
                }
            }
            Lifecycle::Ended {
                job_id,
                reason,
                text,
            } => {
                if let Some(j) = self.jobs.get_mut(job_id) {
                    j.ended_us = Some(now);
                    j.end_reason = Some(*reason);
                    j.end_text = text.clone();
                }
            }
            Lifecycle::Ready { .. } | Lifecycle::Powering { .. } => {}
        }
    }
}

/// How `--usage` groups jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// By owner.
    Owner,
    /// By machine (`(none)` for jobs never given boards).
    Machine,
    /// By the client host that created the job.
    Host,
}

impl GroupBy {
    /// Parse `owner`, `machine` or `host`.
    pub fn parse(text: &str) -> Result<GroupBy, String> {
        match text {
            "owner" => Ok(GroupBy::Owner),
            "machine" => Ok(GroupBy::Machine),
            "host" => Ok(GroupBy::Host),
            other => Err(format!("--by {other:?}: group by owner, machine or host")),
        }
    }

    /// The column name.
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Owner => "owner",
            GroupBy::Machine => "machine",
            GroupBy::Host => "host",
        }
    }

    fn key(self, j: &JobRecord) -> String {
        match self {
            GroupBy::Owner => j.owner.clone(),
            GroupBy::Machine => j.machine.clone().unwrap_or_else(|| "(none)".into()),
            GroupBy::Host if j.host.is_empty() => "(unknown)".into(),
            GroupBy::Host => j.host.clone(),
        }
    }
}

/// One group's totals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Jobs in the window.
    pub jobs: u64,
    /// Board-hours in the window.
    pub board_hours: f64,
    /// Jobs that became ready (whose waiting time is counted).
    pub waited: u64,
    /// Their waiting time, seconds.
    pub wait_s_total: f64,
    /// The longest wait, seconds.
    pub wait_s_max: f64,
    /// Jobs that ended inside the window, by reason.
    pub ended: BTreeMap<EndReason, u64>,
    /// Jobs still live at the window's end.
    pub live: u64,
}

impl Totals {
    fn add(&mut self, j: &JobRecord, w: &Window) {
        self.jobs += 1;
        self.board_hours += j.board_hours(w.since, w.until, w.journal_end);
        if let Some(s) = j.wait_s() {
            self.waited += 1;
            self.wait_s_total += s;
            self.wait_s_max = self.wait_s_max.max(s);
        }
        match (j.ended_us, j.end_reason) {
            (Some(t), Some(r)) if t >= w.since && t <= w.until => {
                *self.ended.entry(r).or_insert(0) += 1
            }
            (Some(t), _) if t <= w.until => {}
            _ => self.live += 1,
        }
    }

    /// Mean waiting time, seconds.
    pub fn wait_s_mean(&self) -> f64 {
        if self.waited == 0 {
            0.0
        } else {
            self.wait_s_total / self.waited as f64
        }
    }

    fn json(&self) -> Value {
        let ended: BTreeMap<&str, u64> = self.ended.iter().map(|(r, n)| (r.name(), *n)).collect();
        json!({
            "jobs": self.jobs,
            "board_hours": round3(self.board_hours),
            "waited_jobs": self.waited,
            "wait_s_total": round3(self.wait_s_total),
            "wait_s_mean": round3(self.wait_s_mean()),
            "wait_s_max": round3(self.wait_s_max),
            "ended": ended,
            "live_at_end": self.live,
        })
    }

    fn ended_text(&self) -> String {
        if self.ended.is_empty() {
            return "-".into();
        }
        self.ended
            .iter()
            .map(|(r, n)| format!("{} {n}", r.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The window a report covers.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// From (inclusive).
    pub since: TimeUs,
    /// To (inclusive).
    pub until: TimeUs,
    /// The last event's time: where a still-live job's boards are counted to.
    pub journal_end: TimeUs,
}

impl Window {
    /// `since`/`until` given, or the whole replayed history.
    pub fn new(ledger: &Ledger, since: Option<TimeUs>, until: Option<TimeUs>) -> Window {
        let until = until.unwrap_or(ledger.end_us);
        Window {
            since: since.unwrap_or(ledger.start_us),
            until,
            journal_end: ledger.end_us.min(until),
        }
    }
}

/// `--usage`: totals per group, and over all.
pub struct Usage {
    /// The window.
    pub window: Window,
    /// The grouping.
    pub by: GroupBy,
    /// Per group, by key.
    pub groups: BTreeMap<String, Totals>,
    /// Over all groups.
    pub total: Totals,
}

impl Usage {
    /// Sum the ledger's jobs of the window.
    pub fn build(ledger: &Ledger, window: Window, by: GroupBy) -> Usage {
        let mut u = Usage {
            window,
            by,
            groups: BTreeMap::new(),
            total: Totals::default(),
        };
        for j in ledger.jobs.values() {
            if !j.in_window(window.since, window.until, window.journal_end) {
                continue;
            }
            u.groups.entry(by.key(j)).or_default().add(j, &window);
            u.total.add(j, &window);
        }
        u
    }

    /// A table.
    pub fn text(&self, notes: &[String]) -> String {
        let mut out = String::new();
        for n in notes {
            let _ = writeln!(out, "note: {n}");
        }
        let _ = writeln!(
            out,
            "Usage from {} to {}, by {}",
            format_iso(self.window.since),
            format_iso(self.window.until),
            self.by.name()
        );
        let key_w = self
            .groups
            .keys()
            .map(String::len)
            .chain([self.by.name().len(), 5])
            .max()
            .unwrap_or(5);
        let _ = writeln!(
            out,
            "{:key_w$}  {:>6}  {:>12}  {:>11}  {:>10}  {:>4}  ended",
            self.by.name(),
            "jobs",
            "board-hours",
            "mean wait s",
            "max wait s",
            "live"
        );
        let row = |out: &mut String, key: &str, t: &Totals| {
            let _ = writeln!(
                out,
                "{key:key_w$}  {:>6}  {:>12.3}  {:>11.1}  {:>10.1}  {:>4}  {}",
                t.jobs,
                t.board_hours,
                t.wait_s_mean(),
                t.wait_s_max,
                t.live,
                t.ended_text()
            );
        };
        for (k, t) in &self.groups {
            row(&mut out, k, t);
        }
        row(&mut out, "TOTAL", &self.total);
        out
    }

    /// One JSON document.
    pub fn json(&self, notes: &[String]) -> Value {
        json!({
            "since": format_iso(self.window.since),
            "until": format_iso(self.window.until),
            "by": self.by.name(),
            "groups": self.groups.iter().map(|(k, t)| {
                let mut v = t.json();
                v[self.by.name()] = json!(k);
                v
            }).collect::<Vec<_>>(),
            "total": self.total.json(),
            "notes": notes,
        })
    }

    /// CSV: a header, one row per group, then `TOTAL`.
    pub fn csv(&self) -> String {
        let mut out = String::new();
        let mut header = vec![
            self.by.name().to_string(),
            "jobs".into(),
            "board_hours".into(),
            "waited_jobs".into(),
            "wait_s_total".into(),
            "wait_s_mean".into(),
            "wait_s_max".into(),
            "live_at_end".into(),
        ];
        header.extend(END_REASONS.iter().map(|r| format!("ended_{}", r.name())));
        let _ = writeln!(out, "{}", header.join(","));
        let row = |out: &mut String, key: &str, t: &Totals| {
            let mut cells = vec![
                csv_cell(key),
                t.jobs.to_string(),
                format!("{:.3}", t.board_hours),
                t.waited.to_string(),
                format!("{:.3}", t.wait_s_total),
                format!("{:.3}", t.wait_s_mean()),
                format!("{:.3}", t.wait_s_max),
                t.live.to_string(),
            ];
            cells.extend(
                END_REASONS
                    .iter()
                    .map(|r| t.ended.get(r).copied().unwrap_or(0).to_string()),
            );
            let _ = writeln!(out, "{}", cells.join(","));
        };
        for (k, t) in &self.groups {
            row(&mut out, k, t);
        }
        row(&mut out, "TOTAL", &self.total);
        out
    }
}

/// A CSV field, quoted when it needs to be (owners and hosts are client data).
pub fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) || text.starts_with([' ', '=', '+', '-', '@']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// `--jobs`: every job of the window.
pub fn jobs_in(ledger: &Ledger, window: &Window) -> Vec<JobRecord> {
    ledger
        .jobs
        .values()
        .filter(|j| j.in_window(window.since, window.until, window.journal_end))
        .cloned()
        .collect()
}

fn opt_time(t: Option<TimeUs>) -> String {
    t.map_or("-".into(), format_iso)
}

/// `--jobs` as a table.
pub fn jobs_text(jobs: &[JobRecord], window: &Window, notes: &[String]) -> String {
    let mut out = String::new();
    for n in notes {
        let _ = writeln!(out, "note: {n}");
    }
    let _ = writeln!(
        out,
        "Jobs from {} to {}: {}",
        format_iso(window.since),
        format_iso(window.until),
        jobs.len()
    );
    for j in jobs {
        let _ = writeln!(
            out,
            "job {}: owner {:?} from {}, {} boards on {}, created {}, ready {}, ended {} ({}: {}), {:.3} board-hours, waited {}",
            j.job_id,
            j.owner,
            if j.host.is_empty() { "?" } else { &j.host },
            j.boards,
            j.machine.as_deref().unwrap_or("-"),
            format_iso(j.created_us),
            opt_time(j.ready_us),
            opt_time(j.ended_us),
            j.end_reason.map_or("live", EndReason::name),
            j.end_text.as_deref().unwrap_or("-"),
            j.board_hours(window.since, window.until, window.journal_end),
            j.wait_s().map_or("-".into(), |s| format!("{s:.1} s")),
        );
    }
    out
}

/// `--jobs --json`: one JSON document.
pub fn jobs_json(jobs: &[JobRecord], window: &Window, notes: &[String]) -> Value {
    json!({
        "since": format_iso(window.since),
        "until": format_iso(window.until),
        "notes": notes,
        "jobs": jobs.iter().map(|j| json!({
            "job_id": j.job_id,
            "owner": j.owner,
            "host": j.host,
            "machine": j.machine,
            "boards": j.boards,
            "created": format_iso(j.created_us),
            "allocated": j.allocated_us.map(format_iso),
            "ready": j.ready_us.map(format_iso),
            "ended": j.ended_us.map(format_iso),
            "end_reason": j.end_reason.map(EndReason::name),
            "end_text": j.end_text,
            "wait_s": j.wait_s().map(round3),
            "board_hours": round3(j.board_hours(window.since, window.until, window.journal_end)),
            "live_at_start": j.live_at_start,
        })).collect::<Vec<_>>(),
    })
}

/// `--jobs --csv`.
pub fn jobs_csv(jobs: &[JobRecord], window: &Window) -> String {
    let mut out = String::from(
        "job_id,owner,host,machine,boards,created,allocated,ready,ended,end_reason,end_text,wait_s,board_hours\n",
    );
    for j in jobs {
        let cells = [
            j.job_id.to_string(),
            csv_cell(&j.owner),
            csv_cell(&j.host),
            csv_cell(j.machine.as_deref().unwrap_or("")),
            j.boards.to_string(),
            format_iso(j.created_us),
            j.allocated_us.map(format_iso).unwrap_or_default(),
            j.ready_us.map(format_iso).unwrap_or_default(),
            j.ended_us.map(format_iso).unwrap_or_default(),
            j.end_reason.map_or("", EndReason::name).to_string(),
            csv_cell(j.end_text.as_deref().unwrap_or("")),
            j.wait_s().map_or(String::new(), |s| format!("{s:.3}")),
            format!(
                "{:.3}",
                j.board_hours(window.since, window.until, window.journal_end)
            ),
        ];
        let _ = writeln!(out, "{}", cells.join(","));
    }
    out
}
