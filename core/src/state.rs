//! The controller: jobs, their hardware work, and the machines, folded from events.
//!
//! This is the original's `Controller` as a pure state machine. It owns the job queue (which
//! owns the allocators), every live job, the reasons of retired jobs, and the BMP requests
//! still outstanding. Destroyed jobs whose power-off has not finished are kept apart
//! ("draining") so their boards are released only once the hardware is done with them — and
//! independently of the bounded retired-job history, which fixes the original's leak when
//! `max_retired_jobs` is small.
//!
//! This module holds the state itself (the [`Core`] and its records) and the event dispatch
//! ([`Core::handle`], the tick, rules, restarts, the effect queues). The rest is in child
//! modules, one per concept, each an `impl Core` block over the same state: `machines`,
//! `jobs`, `power` (power requests and BMP completions), `reconfiguration`, `board_health`
//! (with the admin actions), `queries`, `invariants`, and `view` (the status page's views).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::allocator::{AllocHandle, Allocation, Allocator, PopRule};
use super::coordinates::{
    board_offset_to_chip, board_to_chip, chip_to_board, local_chip_coordinate,
    triad_dimensions_to_chips, Board, Link, WrapAround,
};
use super::health::{self, Drain, DrainActor, Emergency, Failure, Health, Report};
use super::queue::{JobQueue, PendingJob, QueueMachine, QueueOutcome};
use super::rules::Rules;
use super::types::*;
use crate::config::{Config, MachineConfig};
use crate::logsafe::escape;

mod board_health;
mod invariants;
mod jobs;
mod machines;
mod power;
mod queries;
mod reconfiguration;
pub mod view;

use power::power_not_before;

/// The job id carried by an emergency stop's power-offs of whole frames (no job has it: ids
/// start at 1).
pub const SWEEP_JOB_ID: JobId = 0;

/// The reason given to jobs that fit no machine.
pub const NO_SUITABLE_MACHINE: &str = "No suitable machines available.";
/// The reason given to jobs whose keepalive expired.
pub const TIMED_OUT: &str = "Job timed out.";
/// The reason given to jobs on a machine removed or majorly changed by a new configuration.
pub const MACHINE_REMOVED: &str = "Machine removed.";

/// A machine's static description plus the lookups the controller needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "MachineFields")]
struct Machine {
    uid: u64,
    config: MachineConfig,
    /// Logical board → (cabinet, frame, board), as a dense table indexed
    /// `(x * height + y) * 3 + z` (`None` for dead boards). Every power request looks up the
    /// location of each board and periphery link of a job; as map lookups these were the
    /// largest cost of `create_job` on a 1,200-board machine (spalloc-bench `core`).
    locations: Vec<Option<[u32; 3]>>,
    /// Logical board → Ethernet IP, shared (not copied) by the connections of every job
    /// allocated the board (snapshots store it as a plain string).
    ips: BTreeMap<Board, Arc<str>>,
    /// (cabinet, frame) → BMP address.
    bmps: BTreeMap<(u32, u32), String>,
    /// `ips` as a dense table indexed like `locations`: every allocation looks up the IP of
    /// each of its boards. Derived, so not in snapshots (rebuilt when one is read).
    #[serde(skip)]
    ip_table: Vec<Option<Arc<str>>>,
    /// Boards a configuration reload marked dead, with the location they had: only for
    /// power requests, so the jobs still holding them power them off (under
    /// [`Rules::power_dead_held_boards`]; empty, and not written, otherwise). Every other
    /// lookup treats them as dead.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    dead_locations: BTreeMap<Board, [u32; 3]>,
}

/// What a snapshot holds of a [`Machine`] (everything but the derived tables).
#[derive(Deserialize)]
struct MachineFields {
    uid: u64,
    config: MachineConfig,
    locations: Vec<Option<[u32; 3]>>,
    ips: BTreeMap<Board, Arc<str>>,
    bmps: BTreeMap<(u32, u32), String>,
    #[serde(default)]
    dead_locations: BTreeMap<Board, [u32; 3]>,
}

impl From<MachineFields> for Machine {
    fn from(f: MachineFields) -> Machine {
        let ip_table = Machine::ip_table(&f.config, &f.ips);
        Machine {
            uid: f.uid,
            config: f.config,
            locations: f.locations,
            ips: f.ips,
            bmps: f.bmps,
            ip_table,
            dead_locations: f.dead_locations,
        }
    }
}

/// What a job holds once allocated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct JobAllocation {
    machine: String,
    machine_uid: u64,
    handle: AllocHandle,
    boards: Vec<Board>,
    periphery: Vec<(Board, Link)>,
    torus: WrapAround,
    width: u32,
    height: u32,
    connections: Vec<((i64, i64), Arc<str>)>,
}

/// A live (queued or allocated) job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Job {
    id: JobId,
    owner: String,
    start_time_us: TimeUs,
    keepalive_s: Option<f64>,
    keepalive_until_us: Option<TimeUs>,
    lasthost: Option<String>,
    state: JobState,
    power: Option<bool>,
    args_json: String,
    kwargs_json: String,
    allocation: Option<JobAllocation>,
    /// BMP requests issued for this job and not yet completed.
    bmp_outstanding: u32,
    /// What it asked for, kept so that it can be allocated again when its boards fail
    /// (absent from snapshots written before board health: such a job is not recovered).
    #[serde(default)]
    request: Option<PendingJob>,
    /// How many times it was given new boards after a failed power-on.
    #[serde(default)]
    recoveries: u32,
    /// A power change asked for while requests were in flight (under
    /// [`Rules::coalesce_power`]), issued when they complete: the latest one asked for.
    /// (Absent from snapshots written before it existed: none.)
    #[serde(default)]
    power_wanted: Option<bool>,
    /// The rate bound on the job's power changes ([`Rules::power_change_gap_us`]), as the
    /// generic cell rate algorithm's theoretical arrival time: a change may start once
    /// `now + gap * (burst - 1) >= power_tat_us`, and moves it to `max(it, now) + gap`.
    /// (Absent from older snapshots: 0, no change made yet.)
    #[serde(default)]
    power_tat_us: TimeUs,
}

/// The boards a job held before its power-on failed and it was given new ones: powered off
/// and released once every request still in flight for them is done (requests are matched
/// by id, as they carry the job's id, which is live again).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Recycle {
    job_id: JobId,
    allocation: JobAllocation,
    requests: BTreeSet<BmpRequestId>,
    /// Failed power-offs to issue again (the boards are held until the BMP answers, as a
    /// destroyed job's are).
    #[serde(default)]
    retries: Vec<PowerOffRetry>,
}

/// A destroyed job whose boards wait for the hardware before they are released.
///
/// A power-off that fails leaves the boards in an unknown state (possibly still on, still
/// running the last job's code), and handing them to the next job would only make that job
/// fail the same way moments later. So the boards stay here, and the failed request is
/// issued again after the configuration's `retry_delay`, until the BMP answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Draining {
    allocation: JobAllocation,
    bmp_outstanding: u32,
    /// Failed power-offs waiting to be issued again, in the order they failed. (Absent from
    /// snapshots written before retries existed: none.)
    #[serde(default)]
    retries: Vec<PowerOffRetry>,
}

/// A failed power-off to be issued again (with a new id) at `at_us`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PowerOffRetry {
    at_us: TimeUs,
    request: BmpRequest,
}

/// An output waiting in [`Core::poll_effect`]'s queue.
///
/// A BMP request is queued by id and copied out of `outstanding` only when polled: replay
/// and recovery discard every effect, and the copy (two vectors, two strings) was a good
/// part of issuing it. A request completed before it was polled is queued whole instead (see
/// `handle_bmp_done`), so polling gives exactly what was issued.
#[derive(Clone, Debug, PartialEq)]
enum PendingEffect {
    /// The outstanding BMP request with this id.
    Bmp(BmpRequestId),
    /// Any other output, as it will be polled.
    Ready(Effect),
}

/// The whole server state. See the module docs of [`crate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Core {
    config: Config,
    now_us: TimeUs,
    queue: JobQueue,
    machines: BTreeMap<String, Machine>,
    jobs: BTreeMap<JobId, Job>,
    retired: VecDeque<JobId>,
    retired_reasons: BTreeMap<JobId, Option<String>>,
    /// Why each retired job ended, typed (absent from snapshots written before it existed,
    /// and so for the jobs retired before then).
    #[serde(default)]
    retired_end_reasons: BTreeMap<JobId, EndReason>,
    draining: BTreeMap<JobId, Draining>,
    outstanding: BTreeMap<BmpRequestId, BmpRequest>,
    next_job_id: JobId,
    next_request_id: BmpRequestId,
    next_machine_uid: u64,
    /// The rules in force (state from before they existed: the old ones, so that its
    /// journal replays as it was served; see [`super::rules`]).
    #[serde(default)]
    rules: Rules,
    /// Board health: drains, reports, failures, an emergency stop (module `health`).
    #[serde(default)]
    health: Health,
    /// Allocations given up by jobs that were re-allocated after a failed power-on.
    #[serde(default)]
    recycling: Vec<Recycle>,
    /// Power-offs of every board of every frame issued by an emergency stop (job id
    /// [`SWEEP_JOB_ID`]), not yet completed.
    #[serde(default)]
    sweeping: BTreeSet<BmpRequestId>,
    /// An emergency stop's failed power-offs of whole frames, to be retried (under
    /// [`Rules::hold_unswept_frames`]; their frames are in `health.unswept` meanwhile).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sweep_retries: Vec<PowerOffRetry>,
    /// Outputs not yet drained (transient: always empty in a snapshot taken between passes).
    #[serde(skip)]
    effects: VecDeque<PendingEffect>,
    #[serde(skip)]
    changed_jobs: BTreeSet<JobId>,
    #[serde(skip)]
    changed_machines: BTreeSet<String>,
}

impl Default for Core {
    fn default() -> Self {
        Core::new()
    }
}

fn us_to_s(us: TimeUs) -> f64 {
    us as f64 / 1e6
}

/// `now + keepalive` in microseconds, saturating at the ends of the range.
fn deadline_us(now_us: TimeUs, keepalive_s: f64) -> TimeUs {
    let t = now_us as f64 + keepalive_s * 1e6;
    if t.is_nan() {
        TimeUs::MAX
    } else {
        t as TimeUs // `as` saturates: negative → 0, huge → MAX
    }
}

impl Core {
    /// The state a journal starts from: empty, under the rules of the first journals (an
    /// [`Event::Rules`] in the journal moves it on). Replay from a journal's first record
    /// starts here; the server journals the rules it applies before anything else.
    pub fn at_journal_start() -> Core {
        Core {
            rules: Rules::default(),
            ..Core::new()
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// How boards of single-board triads are chosen now.
    pub fn pop_rule(&self) -> PopRule {
        self.rules.pop
    }

    /// An empty core with no machines (the state before the first configuration event),
    /// under the current rules.
    pub fn new() -> Core {
        Core {
            config: Config::default(),
            now_us: 0,
            queue: JobQueue::default(),
            machines: BTreeMap::new(),
            jobs: BTreeMap::new(),
            retired: VecDeque::new(),
            retired_reasons: BTreeMap::new(),
            retired_end_reasons: BTreeMap::new(),
            draining: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            next_job_id: 1,
            next_request_id: 1,
            next_machine_uid: 1,
            rules: Rules::CURRENT,
            health: Health::default(),
            recycling: Vec::new(),
            sweeping: BTreeSet::new(),
            sweep_retries: Vec::new(),
            effects: VecDeque::new(),
            changed_jobs: BTreeSet::new(),
            changed_machines: BTreeSet::new(),
        }
    }

    // ----- inputs -----------------------------------------------------------------------

    /// Fold one event. Returns the reply for a command event.
    pub fn handle(&mut self, event: &Event) -> Option<Response> {
        // Time never runs backwards inside the core, even if the wall clock does.
        self.now_us = self.now_us.max(event.now_us());
        let now = self.now_us;
        match event {
            Event::Command { peer, command, .. } => Some(self.handle_command(now, peer, command)),
            Event::BmpDone {
                request_id,
                failure,
                failed_boards,
                bmp_unreachable,
                ..
            } => {
                self.handle_bmp_done(
                    now,
                    *request_id,
                    failure.as_deref(),
                    failed_boards,
                    *bmp_unreachable,
                );
                None
            }
            Event::Admin { actor, action, .. } => Some(self.handle_admin(now, actor, action)),
            Event::Tick { .. } => {
                self.handle_tick(now);
                None
            }
            Event::Configure { config, .. } => {
                self.handle_configure(now, config);
                None
            }
            Event::Restarted { grace_us, .. } => {
                self.handle_restarted(now, *grace_us);
                None
            }
            Event::KeptAliveUnrecorded { job_ids, .. } => {
                self.handle_kept_alive_unrecorded(now, job_ids);
                None
            }
            Event::Rules { rules, .. } => {
                self.handle_rules(*rules);
                None
            }
        }
    }

    fn handle_command(&mut self, now: TimeUs, peer: &str, command: &Command) -> Response {
        match command {
            Command::CreateJob(c) => Response::JobId(self.create_job(now, peer, c)),
            Command::JobKeepalive { job_id } => {
                self.touch(*job_id, Some(peer), now);
                Response::Null
            }
            Command::GetJobState { job_id } => {
                self.touch(*job_id, Some(peer), now);
                Response::JobState(self.job_state(*job_id))
            }
            Command::GetJobMachineInfo { job_id } => {
                self.touch(*job_id, Some(peer), now);
                Response::MachineInfo(self.job_machine_info(*job_id))
            }
            Command::PowerOnJobBoards { job_id } => {
                self.touch(*job_id, Some(peer), now);
                self.power_command(now, *job_id, true);
                Response::Null
            }
            Command::PowerOffJobBoards { job_id } => {
                self.touch(*job_id, Some(peer), now);
                self.power_command(now, *job_id, false);
                Response::Null
            }
            Command::DestroyJob { job_id, reason } => {
                if self.jobs.contains_key(job_id) {
                    self.log(format!(
                        "job {job_id}: destroy requested from {peer}{}",
                        reason
                            .as_deref()
                            .map(|r| format!(" ({})", escape(r)))
                            .unwrap_or_default()
                    ));
                }
                self.destroy_job(now, *job_id, reason.clone(), EndReason::Owner);
                Response::Null
            }
            Command::ReportProblem {
                ip,
                x,
                y,
                p,
                description,
            } => self.report_problem(now, peer, ip, (*x, *y), *p, description.as_deref()),
            read_only => self.query(read_only),
        }
    }

    fn handle_tick(&mut self, now: TimeUs) {
        let expired: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| j.keepalive_until_us.is_some_and(|t| t < now))
            .map(|j| j.id)
            .collect();
        for id in expired {
            self.log(format!("job {id}: keepalive expired"));
            self.destroy_job(
                now,
                id,
                Some(TIMED_OUT.to_string()),
                EndReason::KeepaliveExpired,
            );
        }
        self.retry_power_offs(now);
        self.retry_recycle_power_offs(now);
        self.retry_sweeps(now);
        let waited: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| j.power_wanted.is_some() && j.bmp_outstanding == 0)
            .filter(|j| power_not_before(&self.rules, j.power_tat_us) <= now)
            .map(|j| j.id)
            .collect();
        for id in waited {
            self.issue_wanted_power(now, id);
        }
        let mut out = Vec::new();
        self.queue.check_free(now, &mut out);
        self.apply_outcomes(now, out);
    }

    fn handle_rules(&mut self, rules: Rules) {
        if rules.pop != self.rules.pop {
            self.log(format!(
                "allocation rules: boards of single-board triads now chosen by {:?} (were {:?})",
                rules.pop, self.rules.pop
            ));
        }
        if rules.hold_failed_power_off != self.rules.hold_failed_power_off {
            self.log(format!(
                "rules: boards whose power-off failed are {} until the BMP answers",
                if rules.hold_failed_power_off {
                    "held"
                } else {
                    "not held"
                }
            ));
        }
        if rules.board_health != self.rules.board_health {
            self.log(format!(
                "rules: board health {}",
                if rules.board_health {
                    "followed (failing boards drained, jobs moved off them)"
                } else {
                    "not followed"
                }
            ));
        }
        if (rules.power_change_gap_us, rules.power_change_burst)
            != (
                self.rules.power_change_gap_us,
                self.rules.power_change_burst,
            )
        {
            self.log(format!(
                "rules: a job's power changes are limited to one per {} ms after a burst of {}",
                rules.power_change_gap_us / 1000,
                rules.power_change_burst
            ));
        }
        if rules.coalesce_power != self.rules.coalesce_power {
            self.log(format!(
                "rules: power changes asked for while a job's BMP requests are in flight are {}",
                if rules.coalesce_power {
                    "coalesced (the latest issued when they complete)"
                } else {
                    "issued at once"
                }
            ));
        }
        self.rules = rules;
        for m in &mut self.queue.machines {
            m.allocator.set_pop_rule(rules.pop);
        }
    }

    fn handle_restarted(&mut self, now: TimeUs, grace_us: TimeUs) {
        for job in self.jobs.values_mut() {
            if let Some(k) = job.keepalive_s {
                job.keepalive_until_us =
                    Some(deadline_us(now, k).max(now.saturating_add(grace_us)));
            }
        }
        self.log(format!(
            "restarted: {} live jobs, {} BMP requests to re-issue",
            self.jobs.len(),
            self.outstanding.len()
        ));
    }

    /// Keepalives of `job_ids` were answered while the journal could not record them: each
    /// job gets the deadline such a keepalive would have given it (never an earlier one).
    fn handle_kept_alive_unrecorded(&mut self, now: TimeUs, job_ids: &[JobId]) {
        let mut reset = 0;
        for id in job_ids {
            if let Some(job) = self.jobs.get_mut(id) {
                if let (Some(k), Some(until)) = (job.keepalive_s, job.keepalive_until_us) {
                    job.keepalive_until_us = Some(until.max(deadline_us(now, k)));
                    reset += 1;
                }
            }
        }
        self.log(format!(
            "journal writable again: keepalive timers reset for {reset} jobs whose keepalives \
             were answered while it could not be written"
        ));
    }

    // ----- job life -----------------------------------------------------------------------

    fn log(&mut self, line: String) {
        self.effects
            .push_back(PendingEffect::Ready(Effect::Log(line)));
    }

    fn lifecycle(&mut self, step: Lifecycle) {
        self.effects
            .push_back(PendingEffect::Ready(Effect::Lifecycle(step)));
    }

    // ----- outputs ------------------------------------------------------------------------

    /// The next output for the caller: BMP requests and log lines in the order they arose,
    /// then the batched `jobs_changed` and `machines_changed` notifications.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        while let Some(e) = self.effects.pop_front() {
            match e {
                PendingEffect::Ready(e) => return Some(e),
                PendingEffect::Bmp(id) => {
                    // Always there: a completion before the poll replaced the id (above).
                    if let Some(r) = self.outstanding.get(&id) {
                        return Some(Effect::Bmp(r.clone()));
                    }
                    debug_assert!(false, "BMP request {id} queued but not outstanding");
                }
            }
        }
        if !self.changed_jobs.is_empty() {
            return Some(Effect::JobsChanged(
                std::mem::take(&mut self.changed_jobs).into_iter().collect(),
            ));
        }
        if !self.changed_machines.is_empty() {
            return Some(Effect::MachinesChanged(
                std::mem::take(&mut self.changed_machines)
                    .into_iter()
                    .collect(),
            ));
        }
        None
    }

    /// Drop every pending output (used when replaying a journal: the effects already happened).
    pub fn discard_effects(&mut self) {
        self.effects.clear();
        self.changed_jobs.clear();
        self.changed_machines.clear();
    }

    /// When the core next needs a [`Event::Tick`]: the earliest keepalive expiry, release of
    /// held-back boards, retried power-off, or power change waiting for its gap.
    pub fn poll_deadline(&self) -> Option<TimeUs> {
        // One pass over the jobs (this runs every loop pass): keepalive expiries (`until <
        // now`, hence + 1) and power changes waiting for their gap (`power_command`).
        let jobs = self
            .jobs
            .values()
            .flat_map(|j| {
                let keepalive = j.keepalive_until_us.map(|t| t.saturating_add(1));
                let power = (j.power_wanted.is_some() && j.bmp_outstanding == 0)
                    .then(|| power_not_before(&self.rules, j.power_tat_us));
                [keepalive, power]
            })
            .flatten()
            .min();
        let retry = self
            .draining
            .values()
            .flat_map(|d| d.retries.iter().map(|r| r.at_us))
            .chain(
                self.recycling
                    .iter()
                    .flat_map(|r| r.retries.iter().map(|r| r.at_us)),
            )
            .chain(self.sweep_retries.iter().map(|r| r.at_us))
            .min();
        [jobs, self.queue.next_release_us(), retry]
            .into_iter()
            .flatten()
            .min()
    }

    /// True if a tick at `now_us` would change anything (so it is worth journaling).
    pub fn tick_due(&self, now_us: TimeUs) -> bool {
        self.poll_deadline().is_some_and(|d| d <= now_us)
    }

    /// Every BMP request issued and not yet completed, by id: what a restarted server must
    /// re-issue.
    pub fn outstanding_bmp_requests(&self) -> impl Iterator<Item = &BmpRequest> {
        self.outstanding.values()
    }

    /// The configuration currently applied.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The time of the last event folded.
    pub fn now_us(&self) -> TimeUs {
        self.now_us
    }

    /// The id the next job will get.
    pub fn next_job_id(&self) -> JobId {
        self.next_job_id
    }
}
