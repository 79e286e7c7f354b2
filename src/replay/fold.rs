//! Folding: every record through the same [`Core::handle`] the server runs, with the core's
//! effects collected per event into a [`Step`], and the journal walked to a position.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::sim::Sim;
use crate::core::{BmpRequest, Core, Effect, EndReason, Event, JobId, Lifecycle, Response, TimeUs};

use super::{Position, ReplayError, Source};

// ----- folding --------------------------------------------------------------------------------

/// The core plus what the replay tracks between events (which jobs are live, allocated, or
/// destroyed and still holding boards).
pub struct Folder {
    /// The state after the last folded event (`sim.core`, or `core` through `Deref`), folded
    /// by the one fold-and-drain loop with its effects taken per event.
    pub sim: Sim,
    /// The last folded record (the starting state's seq before any).
    pub seq: u64,
    /// Live jobs → whether they hold boards.
    live: BTreeMap<JobId, bool>,
    /// Destroyed jobs whose boards are not yet released.
    draining: BTreeSet<JobId>,
}

/// `folder.core` is the state after the last folded event.
impl std::ops::Deref for Folder {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.sim
    }
}

impl std::ops::DerefMut for Folder {
    fn deref_mut(&mut self) -> &mut Sim {
        &mut self.sim
    }
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
        // No invariant checks here (`--verify` runs them itself) and nothing kept beyond one
        // event: BMP requests are left pending for the journal's own completions.
        let mut sim = Sim::from_core(core, 0);
        sim.check = false;
        sim.record = false;
        sim.bmp_auto = false;
        Folder {
            sim,
            seq,
            live,
            draining,
        }
    }

    /// Fold one event through [`Core::handle`] and collect what it caused.
    pub fn apply(&mut self, seq: u64, event: Event) -> Step {
        let completed = match &event {
            Event::BmpDone { request_id, .. } => self
                .sim
                .core
                .outstanding_bmp_requests()
                .find(|r| r.id == *request_id)
                .cloned(),
            _ => None,
        };
        let reply = self.sim.fold(&event);
        self.seq = seq;
        let logs = std::mem::take(&mut self.sim.log);
        let issued: Vec<BmpRequest> = self.sim.bmp_pending.drain(..).collect();
        let lifecycle: Vec<Lifecycle> = self
            .sim
            .notifications
            .drain(..)
            .filter_map(|effect| match effect {
                Effect::Lifecycle(step) => Some(step),
                Effect::JobsChanged(_) | Effect::MachinesChanged(_) => None,
                Effect::Log(_) | Effect::Bmp(_) => unreachable!("the Sim keeps these apart"),
            })
            .collect();
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
                && !self
                    .sim
                    .core
                    .outstanding_bmp_requests()
                    .any(|r| r.job_id == id)
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
