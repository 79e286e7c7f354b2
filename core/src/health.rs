//! Board health: which boards are out of service and why, what users reported about them,
//! and how many jobs in a row they failed.
//!
//! A board is *in service* or *drained* (with a reason, an actor and a time). A drained board
//! is never allocated: the controller hands the allocator the configuration's dead boards
//! plus the drained ones (plus, while their BMP does not answer, the boards of that frame),
//! so it behaves exactly like a dead board for new jobs, while a job already running on it
//! keeps it until it ends. Drains are keyed by machine name and logical board, so they
//! survive a configuration reload (a board marked dead in the file is dead whatever its
//! drain state) and, being part of the folded state, a restart.
//!
//! Three things drain a board: an administrator ([`DrainActor::Admin`]), user reports
//! (`report_problem`, [`DrainActor::Reports`]) once `drain_after_reports` arrived since the
//! board was last put back in service, and the hardware itself ([`DrainActor::Automatic`])
//! once its power-on, FPGA check or link setup failed in `drain_after_failures` consecutive
//! jobs. Putting a board back in service forgets its failures and its report count (the
//! reports themselves stay listed, bounded by [`MAX_REPORTS_PER_BOARD`]).
//!
//! Everything here is plain data folded deterministically (ordered maps, event times only).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::coordinates::Board;
use super::types::{JobId, TimeUs};

/// Most reports remembered per board; older ones are forgotten first (the count since the
/// board's return to service is kept apart, so forgetting one never undoes a drain).
pub const MAX_REPORTS_PER_BOARD: usize = 64;
/// Most characters of a report's description kept (the rest is cut, marked with `…`).
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Most consecutive failures remembered per board (the threshold is at most 1000; beyond the
/// remembered ones only the count matters).
pub const MAX_FAILURES_REMEMBERED: usize = 16;

/// Who took a board out of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DrainActor {
    /// An administrator, over the admin channel.
    Admin,
    /// Users' problem reports.
    Reports,
    /// The server, after repeated hardware failures.
    Automatic,
}

impl DrainActor {
    /// Short name for listings.
    pub fn name(self) -> &'static str {
        match self {
            DrainActor::Admin => "admin",
            DrainActor::Reports => "reports",
            DrainActor::Automatic => "automatic",
        }
    }
}

/// Why and since when a board is out of service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// Why.
    pub reason: String,
    /// Who, by kind.
    pub actor: DrainActor,
    /// Who exactly (the admin channel's peer, `report_problem`'s hosts, `server`).
    pub by: String,
    /// When.
    pub at_us: TimeUs,
}

/// One `report_problem`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// When.
    pub at_us: TimeUs,
    /// The reporting client's address.
    pub host: String,
    /// The job holding the board then, if any.
    pub job_id: Option<JobId>,
    /// The chip `(x, y)` as given.
    pub chip: (i64, i64),
    /// The core, if given.
    pub core: Option<i64>,
    /// The user's words (bounded).
    pub description: Option<String>,
}

/// A failed power-on (or FPGA check, or link setup) of a board in a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The job.
    pub job_id: JobId,
    /// What the BMP said.
    pub reason: String,
    /// When.
    pub at_us: TimeUs,
    /// How many times the job had been given new boards when this failed (a job moved by
    /// recovery can be given the same boards again, and that is a new attempt).
    #[serde(default)]
    pub attempt: u32,
}

/// Everything known about one board's health. Boards with nothing to say have no entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardHealth {
    /// `Some` while out of service.
    pub drain: Option<Drain>,
    /// Reports, oldest first (at most [`MAX_REPORTS_PER_BOARD`]).
    pub reports: Vec<Report>,
    /// Reports received since the board was last put back in service.
    pub reports_since_service: u32,
    /// Consecutive jobs in which the board failed (the last [`MAX_FAILURES_REMEMBERED`]).
    pub failures: Vec<Failure>,
    /// How many consecutive jobs it failed in (reset by a good power-on or an undrain).
    pub consecutive_failures: u32,
}

impl BoardHealth {
    fn is_empty(&self) -> bool {
        self.drain.is_none() && self.reports.is_empty() && self.consecutive_failures == 0
    }
}

/// An emergency stop in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emergency {
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
    /// Since when.
    pub at_us: TimeUs,
}

/// The health of every board, by machine name and logical board.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Boards with a drain, reports or failures.
    pub boards: BTreeMap<String, BTreeMap<Board, BoardHealth>>,
    /// Frames `(machine, cabinet, frame)` whose BMP did not answer at its last request:
    /// their boards are not given to new jobs until it answers again.
    pub unreachable: BTreeSet<(String, u32, u32)>,
    /// An emergency stop, while in force.
    pub emergency: Option<Emergency>,
    /// Frames `(machine, cabinet, frame)` an emergency stop is powering off, or whose
    /// power-off by an emergency stop failed (retried): their boards' power is not known
    /// to be off, so they are not given to new jobs until that power-off succeeds (under
    /// `Rules::hold_unswept_frames`; empty, and not written, otherwise).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unswept: BTreeSet<(String, u32, u32)>,
}

/// Cut a client's text to [`MAX_DESCRIPTION_CHARS`].
pub fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_DESCRIPTION_CHARS {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(MAX_DESCRIPTION_CHARS).collect();
        s.push('…');
        s
    }
}

impl Health {
    fn entry(&mut self, machine: &str, board: Board) -> &mut BoardHealth {
        self.boards
            .entry(machine.to_string())
            .or_default()
            .entry(board)
            .or_default()
    }

    fn tidy(&mut self, machine: &str, board: Board) {
        if let Some(m) = self.boards.get_mut(machine) {
            if m.get(&board).is_some_and(BoardHealth::is_empty) {
                m.remove(&board);
            }
            if m.is_empty() {
                self.boards.remove(machine);
            }
        }
    }

    /// The board's record, if it has one.
    pub fn board(&self, machine: &str, board: Board) -> Option<&BoardHealth> {
        self.boards.get(machine).and_then(|m| m.get(&board))
    }

    /// The drain of a board, if it is out of service.
    pub fn drain_of(&self, machine: &str, board: Board) -> Option<&Drain> {
        self.board(machine, board).and_then(|b| b.drain.as_ref())
    }

    /// The drained boards of a machine.
    pub fn drained(&self, machine: &str) -> BTreeSet<Board> {
        self.boards
            .get(machine)
            .map(|m| {
                m.iter()
                    .filter(|(_, h)| h.drain.is_some())
                    .map(|(b, _)| *b)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether any board of the machine is drained or any of its frames unreachable.
    pub fn affects(&self, machine: &str) -> bool {
        !self.drained(machine).is_empty()
            || self
                .unreachable
                .iter()
                .chain(&self.unswept)
                .any(|(m, _, _)| m == machine)
    }

    /// Take a board out of service. Returns false (and changes nothing) if it already is.
    pub fn drain(&mut self, machine: &str, board: Board, drain: Drain) -> bool {
        let h = self.entry(machine, board);
        if h.drain.is_some() {
            return false;
        }
        h.drain = Some(drain);
        true
    }

    /// Put a board back in service: its failures and report count are forgotten. Returns
    /// the drain it had, if any.
    pub fn undrain(&mut self, machine: &str, board: Board) -> Option<Drain> {
        let h = self.entry(machine, board);
        let old = h.drain.take();
        h.reports_since_service = 0;
        h.failures.clear();
        h.consecutive_failures = 0;
        self.tidy(machine, board);
        old
    }

    /// Record a report; returns the number of reports since the board's return to service.
    pub fn report(&mut self, machine: &str, board: Board, report: Report) -> u32 {
        let h = self.entry(machine, board);
        if h.reports.len() >= MAX_REPORTS_PER_BOARD {
            h.reports.remove(0);
        }
        h.reports.push(report);
        h.reports_since_service = h.reports_since_service.saturating_add(1);
        h.reports_since_service
    }

    /// Record that the board failed in a job; returns how many consecutive jobs it failed in
    /// (a second failure in the same job, on the same allocation, does not count again; one
    /// after the job was given new boards does).
    pub fn power_failed(&mut self, machine: &str, board: Board, failure: Failure) -> u32 {
        let h = self.entry(machine, board);
        if h.failures
            .last()
            .is_some_and(|f| (f.job_id, f.attempt) == (failure.job_id, failure.attempt))
        {
            return h.consecutive_failures;
        }
        if h.failures.len() >= MAX_FAILURES_REMEMBERED {
            h.failures.remove(0);
        }
        h.failures.push(failure);
        h.consecutive_failures = h.consecutive_failures.saturating_add(1);
        h.consecutive_failures
    }

    /// The board powered on fine: its run of failures is over.
    pub fn power_ok(&mut self, machine: &str, board: Board) {
        let Some(h) = self.boards.get_mut(machine).and_then(|m| m.get_mut(&board)) else {
            return;
        };
        if h.consecutive_failures > 0 {
            h.failures.clear();
            h.consecutive_failures = 0;
            self.tidy(machine, board);
        }
    }

    /// Forget a machine's unreachable frames (it was removed or rebuilt).
    pub fn forget_frames(&mut self, machine: &str) {
        self.unreachable.retain(|(m, _, _)| m != machine);
        self.unswept.retain(|(m, _, _)| m != machine);
    }

    /// Every record, in (machine, board) order.
    pub fn records(&self) -> impl Iterator<Item = (&str, Board, &BoardHealth)> {
        self.boards
            .iter()
            .flat_map(|(m, bs)| bs.iter().map(move |(b, h)| (m.as_str(), *b, h)))
    }
}

/// The reason an automatic drain gives: `power-on failed in jobs 12 and 15: <last reason>`.
pub fn failure_reason(failures: &[Failure]) -> String {
    let ids: Vec<String> = failures
        .iter()
        .map(|f| match f.attempt {
            0 => f.job_id.to_string(),
            n => format!("{} (re-allocation {n})", f.job_id),
        })
        .collect();
    let jobs = match ids.as_slice() {
        [] => String::new(),
        [one] => format!("job {one}"),
        [init @ .., last] => format!("jobs {} and {last}", init.join(", ")),
    };
    let last = failures.last().map(|f| f.reason.as_str()).unwrap_or("");
    format!("power-on failed in {jobs}: {last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(job_id: JobId) -> Failure {
        Failure {
            job_id,
            reason: "Requests failed on BMP 127.0.0.1".into(),
            at_us: job_id,
            attempt: 0,
        }
    }

    #[test]
    fn failures_count_jobs_not_attempts_and_reset_on_success() {
        let mut h = Health::default();
        let b = Board::new(0, 0, 1);
        assert_eq!(h.power_failed("m", b, fail(12)), 1);
        assert_eq!(h.power_failed("m", b, fail(12)), 1);
        assert_eq!(h.power_failed("m", b, fail(15)), 2);
        assert_eq!(
            failure_reason(&h.board("m", b).unwrap().failures),
            "power-on failed in jobs 12 and 15: Requests failed on BMP 127.0.0.1"
        );
        h.power_ok("m", b);
        assert!(h.board("m", b).is_none(), "an empty record is dropped");
        assert_eq!(h.power_failed("m", b, fail(16)), 1);
    }

    #[test]
    fn undrain_forgets_the_count_but_keeps_the_reports() {
        let mut h = Health::default();
        let b = Board::new(1, 0, 2);
        let report = |host: &str| Report {
            at_us: 1,
            host: host.into(),
            job_id: Some(3),
            chip: (0, 0),
            core: None,
            description: Some("red".into()),
        };
        assert_eq!(h.report("m", b, report("a")), 1);
        assert_eq!(h.report("m", b, report("b")), 2);
        let d = Drain {
            reason: "r".into(),
            actor: DrainActor::Reports,
            by: "a, b".into(),
            at_us: 2,
        };
        assert!(h.drain("m", b, d.clone()));
        assert!(
            !h.drain("m", b, d.clone()),
            "draining twice changes nothing"
        );
        assert_eq!(h.drained("m"), BTreeSet::from([b]));
        assert_eq!(h.undrain("m", b), Some(d));
        assert!(h.drained("m").is_empty());
        assert_eq!(h.board("m", b).unwrap().reports.len(), 2);
        assert_eq!(h.report("m", b, report("c")), 1);
    }

    #[test]
    fn reports_are_bounded() {
        let mut h = Health::default();
        let b = Board::new(0, 0, 0);
        for i in 0..(MAX_REPORTS_PER_BOARD as u64 + 10) {
            h.report(
                "m",
                b,
                Report {
                    at_us: i,
                    host: "h".into(),
                    job_id: None,
                    chip: (0, 0),
                    core: None,
                    description: None,
                },
            );
        }
        let rec = h.board("m", b).unwrap();
        assert_eq!(rec.reports.len(), MAX_REPORTS_PER_BOARD);
        assert_eq!(rec.reports[0].at_us, 10);
        assert_eq!(rec.reports_since_service, MAX_REPORTS_PER_BOARD as u32 + 10);
        assert_eq!(
            bounded(&"x".repeat(2000)).chars().count(),
            MAX_DESCRIPTION_CHARS + 1
        );
    }
}
