//! The controller: jobs, their hardware work, and the machines, folded from events.
//!
//! This is the original's `Controller` as a pure state machine. It owns the job queue (which
//! owns the allocators), every live job, the reasons of retired jobs, and the BMP requests
//! still outstanding. Destroyed jobs whose power-off has not finished are kept apart
//! ("draining") so their boards are released only once the hardware is done with them — and
//! independently of the bounded retired-job history, which fixes the original's leak when
//! `max_retired_jobs` is small.

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

pub mod view;

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
}

/// What a snapshot holds of a [`Machine`] (everything but the derived tables).
#[derive(Deserialize)]
struct MachineFields {
    uid: u64,
    config: MachineConfig,
    locations: Vec<Option<[u32; 3]>>,
    ips: BTreeMap<Board, Arc<str>>,
    bmps: BTreeMap<(u32, u32), String>,
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
        }
    }
}

/// Where board `b` sits in a machine's dense per-board tables (`locations`, `ip_table`):
/// `(x * height + y) * 3 + z`, or `None` outside a `width`x`height` triad machine.
fn board_slot(config: &MachineConfig, b: Board) -> Option<usize> {
    let (w, h) = (config.width, config.height);
    (b.x < w && b.y < h && b.z < 3)
        .then(|| (b.x as usize * h as usize + b.y as usize) * 3 + b.z as usize)
}

impl Machine {
    fn ip_table(config: &MachineConfig, ips: &BTreeMap<Board, Arc<str>>) -> Vec<Option<Arc<str>>> {
        let mut table = vec![None; config.width as usize * config.height as usize * 3];
        for (&b, ip) in ips {
            if let Some(i) = board_slot(config, b) {
                table[i] = Some(ip.clone());
            }
        }
        table
    }

    /// The Ethernet IP of a logical board, if the configuration lists it.
    fn ip(&self, b: Board) -> Option<&Arc<str>> {
        match board_slot(&self.config, b) {
            Some(i) => self.ip_table[i].as_ref(),
            None => self.ips.get(&b), // not in the table (none is listed there)
        }
    }

    fn new(uid: u64, config: MachineConfig) -> Machine {
        let mut locations = vec![None; config.width as usize * config.height as usize * 3];
        for b in &config.boards {
            if let Some(i) = board_slot(&config, b.logical) {
                locations[i] = Some([b.cabinet, b.frame, b.board]);
            }
        }
        let ips = config
            .boards
            .iter()
            .map(|b| (b.logical, Arc::from(b.ip.as_str())))
            .collect();
        let ip_table = Machine::ip_table(&config, &ips);
        let bmps = config
            .bmps
            .iter()
            .map(|b| ((b.cabinet, b.frame), b.address.clone()))
            .collect();
        Machine {
            uid,
            config,
            locations,
            ips,
            bmps,
            ip_table,
        }
    }

    /// The (cabinet, frame, board) of a logical board, if it exists and works.
    fn location(&self, b: Board) -> Option<[u32; 3]> {
        board_slot(&self.config, b).and_then(|i| self.locations[i])
    }

    fn allocator(&self, seconds_before_free_us: u64, pop_rule: PopRule) -> Allocator {
        let mut a = Allocator::new(
            self.config.width,
            self.config.height,
            self.config.dead_boards.iter().copied().collect(),
            self.config.dead_links.iter().copied().collect(),
            seconds_before_free_us,
        );
        a.set_pop_rule(pop_rule);
        a
    }

    /// True if a change from `self` to `new` needs the machine rebuilt (jobs destroyed):
    /// anything but tags, dead boards and dead links. A board listed in one configuration
    /// and dead in the other is a dead-board change (a board cannot be both listed and dead,
    /// so marking it dead necessarily drops its entry), not a change of the board list.
    /// (The same test as the reasons `spalloc-server --check-config` and the reload log
    /// give, so that they can never disagree: boards are sorted by logical coordinate in a
    /// validated configuration, so comparing them by coordinate is comparing the lists.)
    fn is_major_change(old: &MachineConfig, new: &MachineConfig) -> bool {
        !super::reconfigure::replace_reasons(old, new).is_empty()
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

    /// Whether `command` from `peer` would change nothing but keepalive deadlines: a
    /// `job_keepalive`, `get_job_state` or `get_job_machine_info` of a job whose keepalive
    /// host is already `peer` (or of no live job). A restart resets every deadline, so losing
    /// such an event in a crash changes nothing a client was told; the server uses this to
    /// answer them without waiting for an fsync (see `server` module docs).
    pub fn is_keepalive_only(&self, peer: &str, command: &Command) -> bool {
        match command {
            Command::JobKeepalive { job_id }
            | Command::GetJobState { job_id }
            | Command::GetJobMachineInfo { job_id } => self
                .jobs
                .get(job_id)
                .map_or(true, |j| j.lasthost.as_deref() == Some(peer)),
            _ => false,
        }
    }

    /// The reply [`Core::handle`] would give a keepalive-only command (see
    /// [`Core::is_keepalive_only`]) without folding it: for when the journal cannot record
    /// the keepalive (the caller then resets the job's timer with
    /// [`Event::KeptAliveUnrecorded`] once it can). Any other command answers `null`.
    pub fn peek_keepalive(&self, command: &Command) -> Response {
        match command {
            Command::JobKeepalive { .. } => Response::Null,
            Command::GetJobState { job_id } => Response::JobState(self.job_state(*job_id)),
            Command::GetJobMachineInfo { job_id } => {
                Response::MachineInfo(self.job_machine_info(*job_id))
            }
            _ => {
                debug_assert!(false, "peek_keepalive() given {command:?}");
                Response::Null
            }
        }
    }

    /// The live job a keepalive-only command keeps alive, if any.
    pub fn kept_alive_job(&self, command: &Command) -> Option<JobId> {
        match command {
            Command::JobKeepalive { job_id }
            | Command::GetJobState { job_id }
            | Command::GetJobMachineInfo { job_id } => {
                self.jobs.contains_key(job_id).then_some(*job_id)
            }
            _ => None,
        }
    }

    /// Answer a read-only command (one for which [`Command::is_read_only`] is true). Other
    /// commands answer `null` here: they must go through [`Core::handle`].
    pub fn query(&self, command: &Command) -> Response {
        match command {
            Command::ListJobs => Response::Jobs(self.list_jobs()),
            Command::ListMachines => Response::Machines(self.list_machines()),
            Command::GetBoardPosition { machine, x, y, z } => {
                Response::Triple(self.board_position(machine, *x, *y, *z))
            }
            Command::GetBoardAtPosition {
                machine,
                cabinet,
                frame,
                board,
            } => Response::Triple(self.board_at_position(machine, *cabinet, *frame, *board)),
            Command::WhereIs(w) => Response::WhereIs(self.where_is(w)),
            _ => {
                debug_assert!(false, "query() given a state-changing command");
                Response::Null
            }
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

    /// Issue again, with new ids, the failed power-offs whose retry time has come.
    fn retry_power_offs(&mut self, now: TimeUs) {
        // A machine removed by a new configuration has no boards left to hold back.
        let machines = &self.machines;
        let gone = |d: &Draining| match machines.get(&d.allocation.machine) {
            Some(m) => m.uid != d.allocation.machine_uid,
            None => true,
        };
        let forgotten: Vec<JobId> = self
            .draining
            .iter()
            .filter(|(_, d)| !d.retries.is_empty() && gone(d))
            .map(|(&id, _)| id)
            .collect();
        for id in forgotten {
            let d = self.draining.get_mut(&id).expect("listed");
            d.retries.clear();
            if d.bmp_outstanding == 0 {
                self.draining.remove(&id);
            }
        }
        let mut due = Vec::new();
        for (&job_id, d) in self.draining.iter_mut() {
            if d.retries.iter().any(|r| r.at_us <= now) {
                let (ready, waiting) = std::mem::take(&mut d.retries)
                    .into_iter()
                    .partition(|r| r.at_us <= now);
                d.retries = waiting;
                due.push((job_id, ready));
            }
        }
        for (job_id, ready) in due {
            let requests: Vec<BmpRequest> = ready
                .into_iter()
                .map(|r| {
                    let mut request = r.request;
                    request.id = self.next_request_id;
                    self.next_request_id += 1;
                    request
                })
                .collect();
            self.log(format!(
                "job {job_id}: retrying {} failed power-off requests",
                requests.len()
            ));
            let issued = self.issue(requests);
            self.draining
                .get_mut(&job_id)
                .expect("taken from draining")
                .bmp_outstanding += issued;
        }
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

    fn handle_bmp_done(
        &mut self,
        now: TimeUs,
        request_id: BmpRequestId,
        failure: Option<&str>,
        failed_boards: &[u32],
        bmp_unreachable: bool,
    ) {
        let Some(req) = self.outstanding.remove(&request_id) else {
            self.log(format!(
                "BMP request {request_id}: completion for an unknown request ignored"
            ));
            return;
        };
        // Not polled yet (only a caller that guessed the id could do this): keep it whole.
        if let Some(pending) = self
            .effects
            .iter_mut()
            .find(|e| **e == PendingEffect::Bmp(request_id))
        {
            *pending = PendingEffect::Ready(Effect::Bmp(req.clone()));
        }
        let job_id = req.job_id;
        let mut blamed = Vec::new();
        if self.sweeping.remove(&request_id) {
            if self.rules.board_health {
                // An answered sweep also shows an unanswering BMP is back.
                self.note_bmp_health(now, &req, failure, failed_boards, bmp_unreachable);
            }
            if let Some(reason) = failure {
                self.log(format!(
                    "emergency stop: power-off of every board on BMP {} (cabinet {}, frame {}) \
                     failed: {reason}",
                    req.address, req.cabinet, req.frame
                ));
            }
            return;
        }
        if self.rules.board_health {
            blamed = self.note_bmp_health(now, &req, failure, failed_boards, bmp_unreachable);
            if self.finish_recycle(now, &req, failure) {
                return;
            }
        }
        let hold = self.rules.hold_failed_power_off && self.draining.contains_key(&job_id);
        if let Some(reason) = failure.filter(|_| hold) {
            if let BmpAction::PowerOff { .. } = req.action {
                // The boards' state is unknown: hold them until the BMP answers (`Draining`).
                let delay_us = (self.config.bmp.retry_delay_s.max(0.0) * 1e6) as TimeUs;
                let at_us = now.saturating_add(delay_us);
                self.log(format!(
                    "job {job_id}: power-off on BMP {} (cabinet {}, frame {}) failed: {reason}; \
                     its boards are held back and the power-off is retried in {:.1} s",
                    req.address,
                    req.cabinet,
                    req.frame,
                    delay_us as f64 / 1e6
                ));
                let d = self.draining.get_mut(&job_id).expect("checked above");
                d.bmp_outstanding = d.bmp_outstanding.saturating_sub(1);
                d.retries.push(PowerOffRetry {
                    at_us,
                    request: req,
                });
                return;
            }
        }
        if let Some(reason) = failure {
            let what = match req.action {
                BmpAction::PowerOn { .. } => "power-on",
                BmpAction::PowerOff { .. } => "power-off",
            };
            self.log(format!(
                "job {job_id}: {what} on BMP {} (cabinet {}, frame {}) failed: {reason}",
                req.address, req.cabinet, req.frame
            ));
            if self.jobs.contains_key(&job_id)
                && !blamed.is_empty()
                && self.recover_job(now, job_id, &blamed, reason)
            {
                return;
            }
            if self.jobs.contains_key(&job_id) {
                let tries = self.jobs[&job_id].recoveries;
                let after = if tries > 0 {
                    format!(" (after {tries} re-allocations)")
                } else {
                    String::new()
                };
                self.destroy_job(
                    now,
                    job_id,
                    Some(format!(
                        "Machine configuration failed. Error: {reason}{after}"
                    )),
                    EndReason::BoardFailure,
                );
            }
        }
        if let Some(job) = self.jobs.get_mut(&job_id) {
            debug_assert!(job.bmp_outstanding > 0);
            job.bmp_outstanding = job.bmp_outstanding.saturating_sub(1);
            if job.bmp_outstanding == 0 {
                if job.power_wanted.is_some() {
                    // A change asked for meanwhile (coalesced): now its turn, or once its
                    // gap is over (`handle_tick`).
                    self.issue_wanted_power(now, job_id);
                    return;
                }
                job.state = JobState::Ready;
                self.changed_jobs.insert(job_id);
                let on = job.power == Some(true);
                let power = if on { "on" } else { "off" };
                self.log(format!("job {job_id}: ready (power {power})"));
                self.lifecycle(Lifecycle::Ready { job_id, power: on });
            }
        } else if let Some(d) = self.draining.get_mut(&job_id) {
            debug_assert!(d.bmp_outstanding > 0);
            d.bmp_outstanding = d.bmp_outstanding.saturating_sub(1);
            if d.bmp_outstanding == 0 && d.retries.is_empty() {
                let d = self.draining.remove(&job_id).expect("present");
                // The power-off is done and the boards go back to their machine (free after
                // the hold-back): worth an admin's line, and what the differential test
                // waits for to know a destroyed job's hardware work has finished.
                self.log(format!("job {job_id}: powered down; boards handed back"));
                let mut out = Vec::new();
                self.queue
                    .free(d.allocation.machine_uid, d.allocation.handle, now, &mut out);
                self.apply_outcomes(now, out);
            }
        }
    }

    fn handle_configure(&mut self, now: TimeUs, new: &Config) {
        let old_names: Vec<String> = self.queue.machines.iter().map(|m| m.name.clone()).collect();
        // How the log words it (the same words as `spalloc-server --check-config`).
        let described: BTreeMap<String, super::reconfigure::MachineChange> =
            super::reconfigure::diff(&self.config, new)
                .machines
                .into_iter()
                .collect();
        let mut destroyed: BTreeMap<String, Vec<JobId>> = BTreeMap::new();
        self.config.ip = new.ip.clone();
        self.config.port = new.port;
        self.config.timeout_check_interval_s = new.timeout_check_interval_s;
        self.config.bmp = new.bmp.clone();
        self.config.max_retired_jobs = new.max_retired_jobs;
        self.trim_retired();
        self.config.seconds_before_free_s = new.seconds_before_free_s;
        self.config.health = new.health.clone();
        // (Used only by the server at start-up, for --simulate-bmps.)
        self.config.simulated_faults = new.simulated_faults.clone();

        let new_by_name: BTreeMap<&str, &MachineConfig> =
            new.machines.iter().map(|m| (m.name.as_str(), m)).collect();
        let mut removed = Vec::new();
        let mut changed = Vec::new();
        for name in &old_names {
            let old = &self.machines[name].config;
            match new_by_name.get(name.as_str()) {
                None => removed.push(name.clone()),
                Some(n) if *n == old => {}
                Some(n) if Machine::is_major_change(old, n) => removed.push(name.clone()),
                Some(_) => changed.push(name.clone()),
            }
        }
        let added: Vec<&MachineConfig> = new
            .machines
            .iter()
            .filter(|m| !self.machines.contains_key(&m.name) || removed.contains(&m.name))
            .collect();

        // Remove machines (destroying their jobs), as the original does inside its
        // "postponed" job-queue context: no queue processing until the end.
        for name in &removed {
            let victims: Vec<JobId> = self
                .jobs
                .values()
                .filter(|j| j.allocation.as_ref().is_some_and(|a| a.machine == *name))
                .map(|j| j.id)
                .collect();
            let what = described
                .get(name)
                .map_or_else(|| format!("removed {name}"), |c| c.describe(name));
            destroyed.insert(name.clone(), victims.clone());
            for id in victims {
                self.log(format!(
                    "job {id}: destroyed because the configuration {what}"
                ));
                self.teardown(
                    id,
                    Some(MACHINE_REMOVED.to_string()),
                    EndReason::MachineRemoved,
                );
            }
            self.queue.machines.retain(|m| m.name != *name);
            self.health.forget_frames(name);
            self.machines.remove(name);
        }
        for name in &changed {
            let n = new_by_name[name.as_str()];
            let qm = self
                .queue
                .machine_mut(name)
                .expect("changed machine exists");
            qm.tags = n.tags.iter().cloned().collect();
            let mut dead: BTreeSet<Board> = n.dead_boards.iter().copied().collect();
            dead.extend(unavailable(&self.health, n));
            qm.allocator
                .set_dead(dead, n.dead_links.iter().copied().collect());
            // Rebuild the lookups too: a revived board brings its location and IP.
            let m = self.machines.get_mut(name).expect("changed machine exists");
            *m = Machine::new(m.uid, n.clone());
        }
        let free_us = (self.config.seconds_before_free_s.max(0.0) * 1e6) as u64;
        for n in &added {
            let uid = self.next_machine_uid;
            self.next_machine_uid += 1;
            let m = Machine::new(uid, (*n).clone());
            let mut allocator = m.allocator(free_us, self.rules.pop);
            // Drains survive a reload (and the rebuild of a machine): keyed by name.
            if self.health.affects(&n.name) {
                let mut dead: BTreeSet<Board> = n.dead_boards.iter().copied().collect();
                dead.extend(unavailable(&self.health, n));
                allocator.set_dead(dead, n.dead_links.iter().copied().collect());
            }
            self.queue.machines.push(QueueMachine {
                uid,
                name: n.name.clone(),
                tags: n.tags.iter().cloned().collect(),
                allocator,
                queue: VecDeque::new(),
            });
            self.machines.insert(n.name.clone(), m);
        }
        // Priority follows the new configuration's order.
        let order: BTreeMap<&str, usize> = new
            .machines
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), i))
            .collect();
        self.queue.machines.sort_by_key(|m| order[m.name.as_str()]);
        self.config.machines = new.machines.clone();

        for name in removed
            .iter()
            .chain(&changed)
            .chain(added.iter().map(|m| &m.name))
        {
            self.changed_machines.insert(name.clone());
        }
        if !(removed.is_empty() && changed.is_empty() && added.is_empty()) {
            // One clause per machine that changes: "replaced spin4x2 (board IPs changed):
            // destroyed jobs 2, 5, 6; added spin5".
            let clauses: Vec<String> = described
                .iter()
                .map(|(name, c)| match destroyed.get(name) {
                    Some(ids) => format!(
                        "{}: {}",
                        c.describe(name),
                        super::reconfigure::destroyed_text(ids)
                    ),
                    None if c.destroys_jobs() => format!("{}: no jobs destroyed", c.describe(name)),
                    None => c.describe(name),
                })
                .collect();
            self.log(format!(
                "configuration applied: {} machines; {}",
                self.queue.machines.len(),
                clauses.join("; ")
            ));
        }
        let mut out = Vec::new();
        self.queue.regenerate(now, &mut out);
        self.apply_outcomes(now, out);
    }

    // ----- job life -----------------------------------------------------------------------

    fn create_job(&mut self, now: TimeUs, peer: &str, c: &CreateJob) -> JobId {
        let id = self.next_job_id;
        self.next_job_id += 1;
        self.jobs.insert(
            id,
            Job {
                id,
                owner: c.owner.clone(),
                start_time_us: now,
                keepalive_s: c.keepalive_s,
                keepalive_until_us: c.keepalive_s.map(|k| deadline_us(now, k)),
                lasthost: Some(peer.to_string()),
                state: JobState::Queued,
                power: None,
                args_json: c.args_json.clone(),
                kwargs_json: c.kwargs_json.clone(),
                allocation: None,
                bmp_outstanding: 0,
                request: self.rules.board_health.then(|| PendingJob::from_create(c)),
                recoveries: 0,
                power_wanted: None,
                power_tat_us: 0,
            },
        );
        self.changed_jobs.insert(id);
        self.log(format!(
            "job {id}: created by {} from {peer}: create_job({}, {})",
            escape(&c.owner),
            escape(&c.args_json),
            escape(&c.kwargs_json)
        ));
        self.lifecycle(Lifecycle::Queued {
            job_id: id,
            owner: c.owner.clone(),
            host: peer.to_string(),
        });
        if let Some(e) = &self.health.emergency {
            let reason = format!("Cancelled: Emergency stop: {}", e.reason);
            self.log(format!("job {id}: refused during an emergency stop"));
            self.teardown(id, Some(reason), EndReason::EmergencyStop);
            return id;
        }
        let mut out = Vec::new();
        self.queue
            .create_job(id, PendingJob::from_create(c), now, &mut out);
        self.apply_outcomes(now, out);
        if self
            .jobs
            .get(&id)
            .is_some_and(|j| j.state == JobState::Queued)
        {
            self.log(format!("job {id}: queued"));
        }
        id
    }

    /// Reset a job's keepalive timer and remember who did it (`None`: keep the last host).
    fn touch(&mut self, job_id: JobId, host: Option<&str>, now: TimeUs) {
        if let Some(job) = self.jobs.get_mut(&job_id) {
            if let Some(h) = host {
                if job.lasthost.as_deref() != Some(h) {
                    job.lasthost = Some(h.to_string());
                }
            }
            if let Some(k) = job.keepalive_s {
                job.keepalive_until_us = Some(deadline_us(now, k));
            }
        }
    }

    fn apply_outcomes(&mut self, now: TimeUs, outcomes: Vec<QueueOutcome>) {
        for o in outcomes {
            match o {
                QueueOutcome::Allocated {
                    job_id,
                    machine,
                    allocation,
                } => self.on_allocate(now, job_id, &machine, allocation),
                QueueOutcome::NoSuitableMachine(id) => {
                    self.log(format!("job {id}: cancelled, no suitable machine"));
                    self.teardown(
                        id,
                        Some(format!("Cancelled: {NO_SUITABLE_MACHINE}")),
                        EndReason::NoSuitableMachine,
                    );
                }
            }
        }
    }

    fn on_allocate(&mut self, now: TimeUs, job_id: JobId, machine_name: &str, a: Allocation) {
        let machine = &self.machines[machine_name];
        let (width, height) = if a.boards.len() == 1 {
            (8, 8)
        } else {
            // The original took the lexicographic max of the boards as the top-right corner,
            // which is wrong when the top-right triad is dead (§B.6); take each axis's max.
            let (ox, oy) = (a.boards[0].x, a.boards[0].y);
            let bx = a.boards.iter().map(|b| b.x).max().expect("boards");
            let by = a.boards.iter().map(|b| b.y).max().expect("boards");
            triad_dimensions_to_chips(bx - ox + 1, by - oy + 1, a.torus)
        };
        let origin = a.boards[0]; // the lexicographic minimum
        let connections = a
            .boards
            .iter()
            .map(|b| {
                let chip = board_offset_to_chip(
                    b.x as i64 - origin.x as i64,
                    b.y as i64 - origin.y as i64,
                    b.z as i64 - origin.z as i64,
                );
                let ip = machine.ip(*b).cloned();
                (chip, ip.unwrap_or_else(|| Arc::from("")))
            })
            .collect();
        let allocation = JobAllocation {
            machine: machine_name.to_string(),
            machine_uid: machine.uid,
            handle: a.handle,
            boards: a.boards,
            periphery: a.periphery,
            torus: a.torus,
            width,
            height,
            connections,
        };
        self.log(format!(
            "job {job_id}: allocated {} boards on {machine_name} from {} ({width}x{height} chips)",
            allocation.boards.len(),
            allocation.boards[0],
        ));
        self.lifecycle(Lifecycle::Allocated {
            job_id,
            machine: machine_name.to_string(),
            boards: allocation.boards.clone(),
        });
        let job = self.jobs.get_mut(&job_id).expect("allocated job is live");
        job.allocation = Some(allocation);
        self.changed_jobs.insert(job_id);
        self.changed_machines.insert(machine_name.to_string());
        // As the original, allocation powers the boards on through power_on_job_boards, which
        // also counts as a keepalive from the job's last host.
        self.touch(job_id, None, now);
        self.set_power(job_id, true);
    }

    /// A client's `power_on_job_boards` (`on`) or `power_off_job_boards` of a job with
    /// boards. Under [`Rules::coalesce_power`], while the job's requests are in flight, or
    /// sooner than [`Rules::power_change_gap_us`] after its last change started, the change
    /// is only recorded (the latest wins) and issued once they complete and the gap is over
    /// (`handle_bmp_done`, `handle_tick`); the job reports the power asked for, in state
    /// `Power`, meanwhile.
    fn power_command(&mut self, now: TimeUs, job_id: JobId, on: bool) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if job.allocation.is_none() {
            return;
        }
        let not_before = power_not_before(&self.rules, job.power_tat_us);
        if self.rules.coalesce_power && (job.bmp_outstanding > 0 || now < not_before) {
            job.power_wanted = Some(on);
            job.power = Some(on);
            if job.state != JobState::Power {
                job.state = JobState::Power;
                self.lifecycle(Lifecycle::Powering { job_id, on });
            }
            self.changed_jobs.insert(job_id);
            return;
        }
        self.set_power(job_id, on);
    }

    /// Issue the change a job has waited to make (coalesced) once nothing is in flight and
    /// its gap is over; true if it did.
    fn issue_wanted_power(&mut self, now: TimeUs, job_id: JobId) -> bool {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return false;
        };
        if job.bmp_outstanding > 0 || now < power_not_before(&self.rules, job.power_tat_us) {
            return false;
        }
        let Some(on) = job.power_wanted.take() else {
            return false;
        };
        if job.allocation.is_none() {
            // (Never so: a job loses its boards only by recovery, which drops the wish.)
            debug_assert!(false, "job {job_id} wants power but holds no boards");
            return false;
        }
        self.set_power(job_id, on);
        true
    }

    /// Issue the BMP requests that power a job's boards on (stopping its periphery links) or
    /// off: one request per frame, frames in (cabinet, frame) order.
    fn set_power(&mut self, job_id: JobId, on: bool) {
        let alloc = self.jobs[&job_id]
            .allocation
            .as_ref()
            .expect("allocated job");
        let requests = power_requests(&self.machines, &mut self.next_request_id, job_id, alloc, on);
        let n = self.issue(requests);
        let gap_us = if self.rules.coalesce_power {
            self.rules.power_change_gap_us
        } else {
            0
        };
        let now = self.now_us;
        let job = self.jobs.get_mut(&job_id).expect("live job");
        job.bmp_outstanding += n;
        job.power_wanted = None;
        job.power_tat_us = job.power_tat_us.max(now).saturating_add(gap_us);
        job.state = if job.bmp_outstanding > 0 {
            JobState::Power
        } else {
            JobState::Ready
        };
        job.power = Some(on);
        let ready = job.state == JobState::Ready;
        self.changed_jobs.insert(job_id);
        self.lifecycle(Lifecycle::Powering { job_id, on });
        if ready {
            self.lifecycle(Lifecycle::Ready { job_id, power: on });
        }
    }

    /// Record BMP requests as outstanding and hand them to the caller. Returns how many.
    fn issue(&mut self, requests: Vec<BmpRequest>) -> u32 {
        let n = requests.len() as u32;
        for r in requests {
            self.effects.push_back(PendingEffect::Bmp(r.id));
            self.outstanding.insert(r.id, r);
        }
        n
    }

    fn destroy_job(&mut self, now: TimeUs, job_id: JobId, reason: Option<String>, kind: EndReason) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        if job.allocation.is_none() {
            self.queue.cancel(job_id);
            self.teardown(
                job_id,
                Some(format!("Cancelled: {}", reason.unwrap_or_default())),
                kind,
            );
        } else {
            self.teardown(job_id, reason, kind);
        }
        let mut out = Vec::new();
        self.queue.process(now, &mut out);
        self.apply_outcomes(now, out);
    }

    /// Retire a live job: record its reason, power its boards off, and keep its allocation
    /// until the hardware is done.
    fn teardown(&mut self, job_id: JobId, reason: Option<String>, kind: EndReason) {
        let Some(job) = self.jobs.remove(&job_id) else {
            return;
        };
        self.log(format!(
            "job {job_id}: destroyed: {}",
            escape(reason.as_deref().unwrap_or("(no reason)"))
        ));
        self.lifecycle(Lifecycle::Ended {
            job_id,
            reason: kind,
            text: reason.clone(),
        });
        self.retire(job_id, reason, kind);
        self.changed_jobs.insert(job_id);
        if let Some(alloc) = job.allocation {
            self.changed_machines.insert(alloc.machine.clone());
            let requests = power_requests(
                &self.machines,
                &mut self.next_request_id,
                job_id,
                &alloc,
                false,
            );
            let outstanding = job.bmp_outstanding + self.issue(requests);
            if outstanding > 0 {
                self.draining.insert(
                    job_id,
                    Draining {
                        allocation: alloc,
                        bmp_outstanding: outstanding,
                        retries: Vec::new(),
                    },
                );
            } else {
                // No hardware to wait for (the machine is gone): release at once.
                let mut out = Vec::new();
                self.queue
                    .free(alloc.machine_uid, alloc.handle, self.now_us, &mut out);
                self.apply_outcomes(self.now_us, out);
            }
        }
    }

    fn retire(&mut self, job_id: JobId, reason: Option<String>, kind: EndReason) {
        self.retired.push_back(job_id);
        self.retired_reasons.insert(job_id, reason);
        self.retired_end_reasons.insert(job_id, kind);
        self.trim_retired();
    }

    fn trim_retired(&mut self) {
        while self.retired.len() > self.config.max_retired_jobs {
            let old = self.retired.pop_front().expect("non-empty");
            self.retired_reasons.remove(&old);
            self.retired_end_reasons.remove(&old);
        }
    }

    fn log(&mut self, line: String) {
        self.effects
            .push_back(PendingEffect::Ready(Effect::Log(line)));
    }

    fn lifecycle(&mut self, step: Lifecycle) {
        self.effects
            .push_back(PendingEffect::Ready(Effect::Lifecycle(step)));
    }

    /// Why a retired job ended, typed (`None` for a live job, one retired before typed
    /// reasons were recorded, or one beyond the retired-job history).
    pub fn end_reason(&self, job_id: JobId) -> Option<EndReason> {
        self.retired_end_reasons.get(&job_id).copied()
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

    // ----- queries ------------------------------------------------------------------------

    /// `get_job_state` without the keepalive side effect.
    pub fn job_state(&self, job_id: JobId) -> JobStateReply {
        if let Some(job) = self.jobs.get(&job_id) {
            JobStateReply {
                state: job.state.number(),
                power: job.power,
                keepalive: job.keepalive_s,
                reason: None,
                start_time: Some(us_to_s(job.start_time_us)),
                keepalivehost: job.lasthost.clone(),
            }
        } else if let Some(reason) = self.retired_reasons.get(&job_id) {
            JobStateReply {
                state: JobState::Destroyed.number(),
                power: None,
                keepalive: None,
                reason: reason.clone(),
                start_time: None,
                keepalivehost: None,
            }
        } else {
            JobStateReply {
                state: JobState::Unknown.number(),
                power: None,
                keepalive: None,
                reason: None,
                start_time: None,
                keepalivehost: None,
            }
        }
    }

    /// `get_job_machine_info` without the keepalive side effect.
    pub fn job_machine_info(&self, job_id: JobId) -> MachineInfoReply {
        match self.jobs.get(&job_id).and_then(|j| j.allocation.as_ref()) {
            Some(a) => MachineInfoReply {
                width: Some(a.width),
                height: Some(a.height),
                connections: Some(
                    a.connections
                        .iter()
                        .map(|(chip, ip)| (*chip, ip.to_string()))
                        .collect(),
                ),
                machine_name: Some(a.machine.clone()),
                boards: Some(a.boards.iter().map(|&b| board_triple(b)).collect()),
            },
            None => MachineInfoReply {
                width: None,
                height: None,
                connections: None,
                machine_name: None,
                boards: None,
            },
        }
    }

    /// `list_jobs`: live jobs in creation order.
    pub fn list_jobs(&self) -> Vec<JobSummary> {
        self.jobs
            .values()
            .map(|j| JobSummary {
                job_id: j.id,
                owner: j.owner.clone(),
                start_time: us_to_s(j.start_time_us),
                keepalive: j.keepalive_s,
                state: j.state.number(),
                power: j.power,
                args_json: j.args_json.clone(),
                kwargs_json: j.kwargs_json.clone(),
                allocated_machine_name: j.allocation.as_ref().map(|a| a.machine.clone()),
                boards: j
                    .allocation
                    .as_ref()
                    .map(|a| a.boards.iter().map(|&b| board_triple(b)).collect()),
                keepalivehost: j.lasthost.clone().unwrap_or_default(),
            })
            .collect()
    }

    /// `list_machines`: machines in priority order.
    pub fn list_machines(&self) -> Vec<MachineSummary> {
        self.queue
            .machines
            .iter()
            .map(|qm| {
                let c = &self.machines[&qm.name].config;
                MachineSummary {
                    name: c.name.clone(),
                    tags: qm.tags.iter().cloned().collect(),
                    width: c.width,
                    height: c.height,
                    dead_boards: {
                        // Drained boards (and those of an unanswering BMP) show as dead.
                        let mut dead: BTreeSet<Board> = c.dead_boards.iter().copied().collect();
                        dead.extend(unavailable(&self.health, c));
                        dead.into_iter().map(board_triple).collect()
                    },
                    dead_links: c
                        .dead_links
                        .iter()
                        .map(|(b, l)| [b.x, b.y, b.z, l.number()])
                        .collect(),
                }
            })
            .collect()
    }

    fn board_position(&self, machine: &str, x: i64, y: i64, z: i64) -> Option<[u32; 3]> {
        let m = self.machines.get(machine)?;
        let b = Board::new(
            u32::try_from(x).ok()?,
            u32::try_from(y).ok()?,
            u32::try_from(z).ok()?,
        );
        m.location(b)
    }

    fn board_at_position(&self, machine: &str, c: i64, f: i64, b: i64) -> Option<[u32; 3]> {
        let m = self.machines.get(machine)?;
        // A linear search, as the original's: rare, and machines are small.
        m.config
            .boards
            .iter()
            .find(|bc| [bc.cabinet as i64, bc.frame as i64, bc.board as i64] == [c, f, b])
            .map(|bc| board_triple(bc.logical))
    }

    /// The live job holding a board of a machine.
    fn job_at(&self, machine: &str, board: Board) -> Option<&Job> {
        self.jobs.values().find(|j| {
            j.allocation
                .as_ref()
                .is_some_and(|a| a.machine == machine && a.boards.binary_search(&board).is_ok())
        })
    }

    /// `where_is` in all four forms (behaviour.md §C).
    pub fn where_is(&self, w: &WhereIs) -> Option<WhereIsReply> {
        // Client coordinates can be anything up to ±2^63, so chip arithmetic is done in i128
        // (exact, like the original's Python integers) and reduced modulo the machine's size
        // before it narrows: `12 * x` in i64 overflows for x beyond 7.7e17.
        let wide = |(x, y): (i64, i64)| (x as i128, y as i128);
        let (machine_name, chip, want_job) = match w {
            WhereIs::Logical { machine, x, y, z } => {
                let (ox, oy) = board_offset_to_chip(0, 0, *z);
                (
                    machine.as_str(),
                    (12 * *x as i128 + ox as i128, 12 * *y as i128 + oy as i128),
                    None,
                )
            }
            WhereIs::Physical {
                machine,
                cabinet,
                frame,
                board,
            } => {
                let [x, y, z] = self.board_at_position(machine, *cabinet, *frame, *board)?;
                (
                    machine.as_str(),
                    wide(board_to_chip(Board::new(x, y, z))),
                    None,
                )
            }
            WhereIs::MachineChip {
                machine,
                chip_x,
                chip_y,
            } => (machine.as_str(), wide((*chip_x, *chip_y)), None),
            WhereIs::JobChip {
                job_id,
                chip_x,
                chip_y,
            } => {
                let a = self.jobs.get(job_id)?.allocation.as_ref()?;
                let (jx, jy, jz) = job_min(&a.boards);
                let (dx, dy) = board_offset_to_chip(jx as i64, jy as i64, jz as i64);
                (
                    a.machine.as_str(),
                    (*chip_x as i128 + dx as i128, *chip_y as i128 + dy as i128),
                    Some(*job_id),
                )
            }
        };
        let m = self.machines.get(machine_name)?;
        let (w_chips, h_chips) =
            triad_dimensions_to_chips(m.config.width, m.config.height, WrapAround::BOTH);
        let chip = (
            chip.0.rem_euclid(w_chips as i128) as i64,
            chip.1.rem_euclid(h_chips as i128) as i64,
        );
        let board_chip = local_chip_coordinate(chip.0, chip.1);
        let board = chip_to_board(chip.0, chip.1, w_chips as i64, h_chips as i64);
        let physical = m.location(board)?;
        let job = self.job_at(machine_name, board);
        if want_job.is_some() && job.map(|j| j.id) != want_job {
            return None;
        }
        let job_chip = job.and_then(|j| j.allocation.as_ref()).map(|a| {
            let (jx, jy, jz) = job_min(&a.boards);
            let (cx, cy) = board_offset_to_chip(
                board.x as i64 - jx as i64,
                board.y as i64 - jy as i64,
                board.z as i64 - jz as i64,
            );
            [
                (cx + board_chip.0).rem_euclid(a.width as i64),
                (cy + board_chip.1).rem_euclid(a.height as i64),
            ]
        });
        Some(WhereIsReply {
            machine: machine_name.to_string(),
            logical: board_triple(board),
            physical,
            chip: [chip.0, chip.1],
            board_chip: [board_chip.0, board_chip.1],
            job_id: job.map(|j| j.id),
            job_chip,
        })
    }

    // ----- invariants ---------------------------------------------------------------------

    /// Check every invariant of the state; `Err` names the first one broken. Runs after every
    /// event under `debug_assertions` in the server, and in tests and `spalloc-replay --verify`.
    pub fn check_invariants(&self) -> Result<(), String> {
        // One owner per board: live and draining allocations never overlap on a machine.
        let mut owner: BTreeMap<(u64, Board), JobId> = BTreeMap::new();
        let held = self
            .jobs
            .values()
            .filter_map(|j| j.allocation.as_ref().map(|a| (j.id, a)))
            .chain(self.draining.iter().map(|(id, d)| (*id, &d.allocation)))
            .chain(self.recycling.iter().map(|r| (r.job_id, &r.allocation)));
        // Each machine's boards in use, computed once (it walks the whole pack tree).
        let in_use: BTreeMap<u64, BTreeSet<Board>> = self
            .queue
            .machines
            .iter()
            .map(|qm| (qm.uid, qm.allocator.boards_in_use()))
            .collect();
        for (id, a) in held {
            for b in &a.boards {
                if let Some(other) = owner.insert((a.machine_uid, *b), id) {
                    return Err(format!(
                        "board {b} of {} held by jobs {other} and {id}",
                        a.machine
                    ));
                }
            }
            if let Some(in_use) = in_use.get(&a.machine_uid) {
                if let Some(b) = a.boards.iter().find(|b| !in_use.contains(b)) {
                    return Err(format!(
                        "job {id} holds board {b} the allocator thinks is free"
                    ));
                }
            }
        }
        // Power state matches job state, and the BMP work is accounted for.
        let mut per_job: BTreeMap<JobId, u32> = BTreeMap::new();
        // Requests that belong to no live or draining job: a re-allocated job's old boards,
        // and an emergency stop's sweep.
        let recycled: BTreeSet<BmpRequestId> = self
            .recycling
            .iter()
            .flat_map(|r| r.requests.iter().copied())
            .chain(self.sweeping.iter().copied())
            .collect();
        for r in self.outstanding.values() {
            if !recycled.contains(&r.id) {
                *per_job.entry(r.job_id).or_default() += 1;
            }
        }
        if let Some(id) = recycled
            .iter()
            .find(|id| !self.outstanding.contains_key(id))
        {
            return Err(format!("recycled request {id} is not outstanding"));
        }
        if self
            .recycling
            .iter()
            .any(|r| r.requests.is_empty() && r.retries.is_empty())
        {
            return Err("a recycled allocation waits for nothing".into());
        }
        for j in self.jobs.values() {
            let issued = per_job.get(&j.id).copied().unwrap_or(0);
            if issued != j.bmp_outstanding {
                return Err(format!(
                    "job {}: {} requests outstanding, counter {}",
                    j.id, issued, j.bmp_outstanding
                ));
            }
            let ok = match j.state {
                JobState::Queued => {
                    j.allocation.is_none()
                        && j.power.is_none()
                        && j.power_wanted.is_none()
                        && self.queue.pending.contains_key(&j.id)
                }
                JobState::Power => {
                    j.allocation.is_some()
                        && j.power.is_some()
                        && (j.bmp_outstanding > 0 || j.power_wanted.is_some())
                        && (j.power_wanted.is_none() || j.power_wanted == j.power)
                }
                JobState::Ready => {
                    j.allocation.is_some()
                        && j.power.is_some()
                        && j.bmp_outstanding == 0
                        && j.power_wanted.is_none()
                }
                JobState::Unknown | JobState::Destroyed => false,
            };
            if !ok {
                return Err(format!(
                    "job {} in state {:?} with power {:?}",
                    j.id, j.state, j.power
                ));
            }
            if self.retired_reasons.contains_key(&j.id) {
                return Err(format!("job {} is both live and retired", j.id));
            }
            if j.id >= self.next_job_id {
                return Err(format!("job {} at or beyond the next id", j.id));
            }
        }
        for (id, d) in &self.draining {
            let issued = per_job.get(id).copied().unwrap_or(0);
            if (d.bmp_outstanding == 0 && d.retries.is_empty())
                || issued != d.bmp_outstanding
                || self.jobs.contains_key(id)
            {
                return Err(format!(
                    "draining job {id}: counter {} vs {issued} outstanding",
                    d.bmp_outstanding
                ));
            }
        }
        if let Some(r) = self.outstanding.values().find(|r| {
            !self.jobs.contains_key(&r.job_id)
                && !self.draining.contains_key(&r.job_id)
                && !recycled.contains(&r.id)
        }) {
            return Err(format!(
                "BMP request {} for job {} that is neither live nor draining",
                r.id, r.job_id
            ));
        }
        if let Some(id) = self
            .queue
            .pending
            .keys()
            .find(|id| !self.jobs.contains_key(id))
        {
            return Err(format!("pending job {id} is not live"));
        }
        if self.retired.len() > self.config.max_retired_jobs
            || self.retired.len() != self.retired_reasons.len()
            || self
                .retired_end_reasons
                .keys()
                .any(|id| !self.retired_reasons.contains_key(id))
        {
            return Err("retired-job history out of bounds".into());
        }
        for qm in &self.queue.machines {
            qm.allocator
                .check_invariants()
                .map_err(|e| format!("machine {}: {e}", qm.name))?;
            if self.machines.get(&qm.name).map(|m| m.uid) != Some(qm.uid) {
                return Err(format!("machine {} known to the queue only", qm.name));
            }
        }
        if self.machines.len() != self.queue.machines.len() {
            return Err("machine tables disagree".into());
        }
        Ok(())
    }

    /// Per machine (priority order): name, boards in use by live and draining jobs, and each
    /// live allocation's boards by job (for the replay tool's maps and summaries).
    pub fn board_owners(&self) -> Vec<(String, BTreeMap<Board, JobId>)> {
        self.queue
            .machines
            .iter()
            .map(|qm| {
                let mut owners = BTreeMap::new();
                for j in self.jobs.values() {
                    if let Some(a) = j.allocation.as_ref().filter(|a| a.machine_uid == qm.uid) {
                        owners.extend(a.boards.iter().map(|b| (*b, j.id)));
                    }
                }
                for (id, d) in &self.draining {
                    if d.allocation.machine_uid == qm.uid {
                        owners.extend(d.allocation.boards.iter().map(|b| (*b, *id)));
                    }
                }
                for r in &self.recycling {
                    if r.allocation.machine_uid == qm.uid {
                        owners.extend(r.allocation.boards.iter().map(|b| (*b, r.job_id)));
                    }
                }
                (qm.name.clone(), owners)
            })
            .collect()
    }

    /// True if no job is live or draining and every machine's boards are free again.
    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty()
            && self.draining.is_empty()
            && self.recycling.is_empty()
            && self.sweeping.is_empty()
            && self.outstanding.is_empty()
            && self.queue.machines.iter().all(|m| m.allocator.is_idle())
    }

    /// Ids of the live jobs, in creation order.
    pub fn live_job_ids(&self) -> Vec<JobId> {
        self.jobs.keys().copied().collect()
    }

    /// The owner and last host of every live job, in creation order (for the server's
    /// bounds on jobs per owner and per host).
    pub fn live_job_owners(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.jobs
            .values()
            .map(|j| (j.owner.as_str(), j.lasthost.as_deref()))
    }
}

/// The earliest time a job whose rate state is `tat_us` may start a power change
/// ([`Job::power_tat_us`]).
fn power_not_before(rules: &Rules, tat_us: TimeUs) -> TimeUs {
    let burst_us = rules
        .power_change_gap_us
        .saturating_mul(u64::from(rules.power_change_burst.saturating_sub(1)));
    tat_us.saturating_sub(burst_us)
}

/// Per-coordinate minimum of a job's boards (the original's `map(min, zip(*boards))`).
fn job_min(boards: &[Board]) -> (u32, u32, u32) {
    (
        boards.iter().map(|b| b.x).min().unwrap_or(0),
        boards.iter().map(|b| b.y).min().unwrap_or(0),
        boards.iter().map(|b| b.z).min().unwrap_or(0),
    )
}

/// The BMP requests that power a job's boards on (stopping its periphery links) or off: one
/// per frame, frames in (cabinet, frame) order, ids taken from `next_request_id`. None if the
/// job's machine is gone.
fn power_requests(
    machines: &BTreeMap<String, Machine>,
    next_request_id: &mut BmpRequestId,
    job_id: JobId,
    alloc: &JobAllocation,
    on: bool,
) -> Vec<BmpRequest> {
    let Some(machine) = machines
        .get(&alloc.machine)
        .filter(|m| m.uid == alloc.machine_uid)
    else {
        return Vec::new();
    };
    // A job spans few frames: a short list searched linearly (the previous board's frame
    // first, as boards come in runs) beats a map, then sorted by (cabinet, frame) once.
    // Most jobs fit in one frame, so the first frame's lists are sized for the whole job.
    struct Frame {
        key: (u32, u32),
        boards: Vec<u32>,
        stop_links: Vec<(u32, Link)>,
    }
    let periphery: &[(Board, Link)] = if on { &alloc.periphery } else { &[] };
    /// The index of frame `key` in `frames` (added if new), trying `last` (the previous
    /// board's frame and index) first and remembering the answer there.
    fn frame_index(
        frames: &mut Vec<Frame>,
        last: &mut ((u32, u32), usize),
        key: (u32, u32),
        boards: usize,
        stop_links: usize,
    ) -> usize {
        if last.0 == key {
            return last.1;
        }
        let i = frames.iter().position(|f| f.key == key).unwrap_or_else(|| {
            let first = frames.is_empty();
            frames.push(Frame {
                key,
                boards: Vec::with_capacity(if first { boards } else { 0 }),
                stop_links: Vec::with_capacity(if first { stop_links } else { 0 }),
            });
            frames.len() - 1
        });
        *last = (key, i);
        i
    }
    let mut frames: Vec<Frame> = Vec::new();
    // The previous board's frame and its index: consecutive boards are mostly in one frame.
    let mut last = ((u32::MAX, u32::MAX), 0);
    let sizes = (alloc.boards.len(), periphery.len());
    for b in &alloc.boards {
        if let Some([c, f, n]) = machine.location(*b) {
            let i = frame_index(&mut frames, &mut last, (c, f), sizes.0, sizes.1);
            frames[i].boards.push(n);
        }
    }
    for (b, link) in periphery {
        if let Some([c, f, n]) = machine.location(*b) {
            let i = frame_index(&mut frames, &mut last, (c, f), sizes.0, sizes.1);
            frames[i].stop_links.push((n, *link));
        }
    }
    frames.sort_unstable_by_key(|f| f.key); // keys are distinct
    let mut requests = Vec::with_capacity(frames.len());
    for Frame {
        key: (cabinet, frame),
        mut boards,
        stop_links,
    } in frames
    {
        boards.sort_unstable();
        let id = *next_request_id;
        *next_request_id += 1;
        let action = if on {
            BmpAction::PowerOn { boards, stop_links }
        } else {
            BmpAction::PowerOff { boards }
        };
        requests.push(BmpRequest {
            id,
            job_id,
            machine: alloc.machine.clone(),
            cabinet,
            frame,
            address: machine
                .bmps
                .get(&(cabinet, frame))
                .cloned()
                .unwrap_or_default(),
            action,
        });
    }
    requests
}

/// The boards of a machine not to be given to new jobs besides its dead ones: the drained
/// boards, and every board of a frame whose BMP does not answer.
fn unavailable(health: &Health, config: &MachineConfig) -> BTreeSet<Board> {
    let mut out = health.drained(&config.name);
    if health.unreachable.iter().any(|(m, _, _)| *m == config.name) {
        out.extend(
            config
                .boards
                .iter()
                .filter(|b| {
                    health
                        .unreachable
                        .contains(&(config.name.clone(), b.cabinet, b.frame))
                })
                .map(|b| b.logical),
        );
    }
    // Only boards of the machine: the allocator's dead set is within its bounds.
    out.retain(|b| b.x < config.width && b.y < config.height && b.z < 3);
    out
}

// ----- board health (module `health`) ------------------------------------------------------

impl Core {
    /// The board health state (drains, reports, failures, emergency stop).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Give a machine's allocator its dead boards again (the configuration's plus the
    /// unavailable ones), then re-run the queues: a pending job that can no longer ever fit
    /// is cancelled, as after a configuration change; one that now fits is allocated.
    fn apply_health(&mut self, now: TimeUs, machine: &str) {
        let Some(m) = self.machines.get(machine) else {
            return;
        };
        let config = m.config.clone();
        let mut dead: BTreeSet<Board> = config.dead_boards.iter().copied().collect();
        dead.extend(unavailable(&self.health, &config));
        if let Some(qm) = self.queue.machine_mut(machine) {
            qm.allocator
                .set_dead(dead, config.dead_links.iter().copied().collect());
        }
        self.changed_machines.insert(machine.to_string());
        let mut out = Vec::new();
        self.queue.regenerate(now, &mut out);
        self.apply_outcomes(now, out);
    }

    /// A machine's name and logical board for a board named in any form.
    pub fn resolve_board(&self, board: &BoardRef) -> Result<(String, Board), String> {
        let machine = |name: &str| {
            self.machines
                .get(name)
                .ok_or_else(|| format!("no machine is called {name:?}"))
        };
        match board {
            BoardRef::Logical {
                machine: name,
                x,
                y,
                z,
            } => {
                let m = machine(name)?;
                let b = Board::new(*x, *y, *z);
                let c = &m.config;
                if b.x >= c.width || b.y >= c.height || b.z > 2 {
                    return Err(format!(
                        "board ({x}, {y}, {z}) lies outside machine {name:?} ({}x{} triads)",
                        c.width, c.height
                    ));
                }
                Ok((name.clone(), b))
            }
            BoardRef::Physical {
                machine: name,
                cabinet,
                frame,
                board,
            } => {
                let m = machine(name)?;
                m.config
                    .boards
                    .iter()
                    .find(|bc| (bc.cabinet, bc.frame, bc.board) == (*cabinet, *frame, *board))
                    .map(|bc| (name.clone(), bc.logical))
                    .ok_or_else(|| {
                        format!(
                            "machine {name:?} has no working board at cabinet {cabinet}, \
                             frame {frame}, board {board}"
                        )
                    })
            }
            BoardRef::Ip(ip) => self
                .board_by_ip(ip)
                .ok_or_else(|| format!("no board of any machine has the IP address {ip:?}")),
        }
    }

    fn board_by_ip(&self, ip: &str) -> Option<(String, Board)> {
        self.queue.machines.iter().find_map(|qm| {
            self.machines[&qm.name]
                .config
                .boards
                .iter()
                .find(|b| b.ip == ip)
                .map(|b| (qm.name.clone(), b.logical))
        })
    }

    /// Take a board out of service (if it is not already) and tell the allocator.
    fn drain_board(&mut self, now: TimeUs, machine: &str, board: Board, drain: Drain) -> bool {
        let line = format!(
            "board {board} of {machine}: taken out of service by {} ({:?}): {:?}",
            drain.actor.name(),
            drain.by,
            drain.reason
        );
        if !self.health.drain(machine, board, drain) {
            return false;
        }
        self.log(line);
        if let Some(job) = self.job_at(machine, board) {
            let id = job.id;
            self.log(format!(
                "board {board} of {machine}: job {id} keeps it until it ends"
            ));
        }
        self.apply_health(now, machine);
        true
    }

    /// Record what a BMP completion says about board health, and return the failed boards
    /// (logical) the failure is blamed on, if any.
    fn note_bmp_health(
        &mut self,
        now: TimeUs,
        req: &BmpRequest,
        failure: Option<&str>,
        failed_boards: &[u32],
        bmp_unreachable: bool,
    ) -> Vec<Board> {
        // The common case (a success, nothing on record for the machine, every BMP
        // answering) costs nothing: no board lookups, no allocation.
        if failure.is_none()
            && self.health.unreachable.is_empty()
            && !self.health.boards.contains_key(&req.machine)
        {
            return Vec::new();
        }
        let Some(machine) = self.machines.get(&req.machine) else {
            return Vec::new();
        };
        let logical = |n: u32| {
            machine
                .config
                .boards
                .iter()
                .find(|b| (b.cabinet, b.frame, b.board) == (req.cabinet, req.frame, n))
                .map(|b| b.logical)
        };
        let frame = (req.machine.clone(), req.cabinet, req.frame);
        let BmpAction::PowerOn { boards, .. } = &req.action else {
            // A power-off that got an answer shows the BMP is back.
            if !bmp_unreachable && self.health.unreachable.remove(&frame) {
                self.log(format!(
                    "BMP {} (cabinet {}, frame {}) answers again: its boards are back in use",
                    req.address, req.cabinet, req.frame
                ));
                self.apply_health(now, &req.machine.clone());
            }
            return Vec::new();
        };
        let all: Vec<Board> = boards.iter().filter_map(|&n| logical(n)).collect();
        let blamed: Vec<Board> = failed_boards.iter().filter_map(|&n| logical(n)).collect();
        let machine_name = req.machine.clone();
        if bmp_unreachable {
            if self.health.unreachable.insert(frame) {
                self.log(format!(
                    "BMP {} (cabinet {}, frame {}) does not answer: its boards are not given \
                     to new jobs until it does",
                    req.address, req.cabinet, req.frame
                ));
                self.apply_health(now, &machine_name);
            }
            return Vec::new();
        }
        if self.health.unreachable.remove(&frame) {
            self.apply_health(now, &machine_name);
        }
        match failure {
            None => {
                for b in all {
                    self.health.power_ok(&machine_name, b);
                }
            }
            Some(reason) => {
                let threshold = self.config.health.drain_after_failures;
                for &b in &blamed {
                    let n = self.health.power_failed(
                        &machine_name,
                        b,
                        Failure {
                            job_id: req.job_id,
                            reason: reason.to_string(),
                            at_us: now,
                            attempt: self.jobs.get(&req.job_id).map_or(0, |j| j.recoveries),
                        },
                    );
                    self.log(format!(
                        "board {b} of {machine_name}: failed in job {} ({n} consecutive \
                         jobs): {reason}",
                        req.job_id
                    ));
                    if threshold > 0 && n >= threshold {
                        let failures = self
                            .health
                            .board(&machine_name, b)
                            .map(|h| h.failures.clone())
                            .unwrap_or_default();
                        let recent = &failures[failures.len().saturating_sub(n as usize)..];
                        let drain = Drain {
                            reason: health::failure_reason(recent),
                            actor: DrainActor::Automatic,
                            by: "server".into(),
                            at_us: now,
                        };
                        self.drain_board(now, &machine_name, b, drain);
                    }
                }
            }
        }
        blamed
    }

    /// Issue again the failed power-offs of given-up allocations whose time has come (those
    /// of a machine since removed are dropped: it has no boards to hold).
    fn retry_recycle_power_offs(&mut self, now: TimeUs) {
        let machines = &self.machines;
        let mut issue = Vec::new();
        for r in &mut self.recycling {
            let gone = machines
                .get(&r.allocation.machine)
                .map_or(true, |m| m.uid != r.allocation.machine_uid);
            if gone {
                r.retries.clear();
                continue;
            }
            let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut r.retries)
                .into_iter()
                .partition(|t| t.at_us <= now);
            r.retries = waiting;
            for t in due {
                let mut request = t.request;
                request.id = self.next_request_id;
                self.next_request_id += 1;
                r.requests.insert(request.id);
                issue.push(request);
            }
        }
        if !issue.is_empty() {
            self.log(format!(
                "retrying {} failed power-offs of boards given up by re-allocated jobs",
                issue.len()
            ));
            self.issue(issue);
        }
        self.recycling
            .retain(|r| !(r.requests.is_empty() && r.retries.is_empty()));
    }

    /// If `request_id` was in flight for an allocation given up by a re-allocated job, count
    /// it done (releasing the boards after the last one) and return true.
    fn finish_recycle(&mut self, now: TimeUs, req: &BmpRequest, failure: Option<&str>) -> bool {
        let Some(i) = self
            .recycling
            .iter()
            .position(|r| r.requests.contains(&req.id))
        else {
            return false;
        };
        let delay_us = (self.config.bmp.retry_delay_s.max(0.0) * 1e6) as TimeUs;
        let r = &mut self.recycling[i];
        r.requests.remove(&req.id);
        if let (Some(reason), BmpAction::PowerOff { .. }) = (failure, &req.action) {
            let job_id = r.job_id;
            r.retries.push(PowerOffRetry {
                at_us: now.saturating_add(delay_us),
                request: req.clone(),
            });
            self.log(format!(
                "job {job_id}: power-off of the boards it gave up, on BMP {} (cabinet {}, \
                 frame {}), failed: {reason}; they are held back and it is retried in {:.1} s",
                req.address,
                req.cabinet,
                req.frame,
                delay_us as f64 / 1e6
            ));
            return true;
        }
        let r = &self.recycling[i];
        if r.requests.is_empty() && r.retries.is_empty() {
            let r = self.recycling.remove(i);
            self.log(format!(
                "job {}: the boards it gave up are powered down and handed back",
                r.job_id
            ));
            let mut out = Vec::new();
            self.queue
                .free(r.allocation.machine_uid, r.allocation.handle, now, &mut out);
            self.apply_outcomes(now, out);
        }
        true
    }

    /// A live job's power-on failed because of `blamed` boards: unless it has had its tries,
    /// give up its boards (powered off in the background, held from every job meanwhile so
    /// the new allocation cannot include them) and queue it again at the front. Returns
    /// false if it is not recovered (the caller destroys it).
    fn recover_job(&mut self, now: TimeUs, job_id: JobId, blamed: &[Board], reason: &str) -> bool {
        let limit = self.config.health.recovery_attempts;
        let job = &self.jobs[&job_id];
        let Some(request) = job.request.clone() else {
            return false;
        };
        if job.recoveries >= limit || job.allocation.is_none() {
            return false;
        }
        let tries = job.recoveries + 1;
        let alloc = self
            .jobs
            .get_mut(&job_id)
            .and_then(|j| j.allocation.take())
            .expect("checked above");
        let mut requests: BTreeSet<BmpRequestId> = self
            .outstanding
            .values()
            .filter(|r| r.job_id == job_id)
            .map(|r| r.id)
            .collect();
        for r in &self.recycling {
            for id in &r.requests {
                requests.remove(id);
            }
        }
        let off = power_requests(
            &self.machines,
            &mut self.next_request_id,
            job_id,
            &alloc,
            false,
        );
        requests.extend(off.iter().map(|r| r.id));
        self.issue(off);
        let names: Vec<String> = blamed.iter().map(|b| b.to_string()).collect();
        self.log(format!(
            "job {job_id}: power-on failed on board(s) {} of {}: {reason}; giving it new \
             boards (try {tries} of {limit})",
            names.join(", "),
            alloc.machine
        ));
        self.changed_machines.insert(alloc.machine.clone());
        if requests.is_empty() {
            let mut out = Vec::new();
            self.queue
                .free(alloc.machine_uid, alloc.handle, now, &mut out);
            self.apply_outcomes(now, out);
        } else {
            self.recycling.push(Recycle {
                job_id,
                allocation: alloc,
                requests,
                retries: Vec::new(),
            });
        }
        let job = self.jobs.get_mut(&job_id).expect("live");
        job.recoveries = tries;
        job.bmp_outstanding = 0;
        job.state = JobState::Queued;
        job.power = None;
        // A power change asked for while the failed power-on was in flight (coalesced) was
        // for the boards just given up: the new ones are powered on when allocated, as any
        // new job's are.
        job.power_wanted = None;
        self.changed_jobs.insert(job_id);
        let mut out = Vec::new();
        if !self.queue.requeue_front(job_id, request, now, &mut out) {
            self.apply_outcomes(now, out);
            self.teardown(
                job_id,
                Some(format!(
                    "Machine configuration failed. Error: {reason} (no other boards can ever \
                     satisfy the request)"
                )),
                EndReason::BoardFailure,
            );
            return true;
        }
        self.apply_outcomes(now, out);
        true
    }

    /// `report_problem`: record the report and drain the board after enough of them.
    fn report_problem(
        &mut self,
        now: TimeUs,
        peer: &str,
        ip: &str,
        chip: (i64, i64),
        core: Option<i64>,
        description: Option<&str>,
    ) -> Response {
        let Some((machine, board)) = self.board_by_ip(ip) else {
            return Response::Error(format!("no board has the IP address {ip:?}"));
        };
        let job_id = self.job_at(&machine, board).map(|j| j.id);
        let description = description.map(health::bounded);
        let n = self.health.report(
            &machine,
            board,
            Report {
                at_us: now,
                host: peer.to_string(),
                job_id,
                chip,
                core,
                description: description.clone(),
            },
        );
        self.log(format!(
            "board {board} of {machine}: problem reported from {peer} (job {}, chip {:?}, \
             core {:?}): {:?} ({n} reports since it was last in service)",
            job_id.map_or("none".to_string(), |j| j.to_string()),
            chip,
            core,
            description.as_deref().unwrap_or("")
        ));
        let threshold = self.config.health.drain_after_reports;
        if threshold > 0 && n >= threshold && self.health.drain_of(&machine, board).is_none() {
            let reports = &self
                .health
                .board(&machine, board)
                .expect("reported")
                .reports;
            let recent = &reports[reports.len().saturating_sub(n as usize)..];
            let hosts: BTreeSet<&str> = recent.iter().map(|r| r.host.as_str()).collect();
            let words: Vec<&str> = recent
                .iter()
                .filter_map(|r| r.description.as_deref())
                .collect();
            let drain = Drain {
                reason: format!("{n} problem reports: {}", words.join("; ")),
                actor: DrainActor::Reports,
                by: hosts.into_iter().collect::<Vec<_>>().join(", "),
                at_us: now,
            };
            self.drain_board(now, &machine, board, drain);
        }
        Response::Null
    }

    /// Whether an admin action could be carried out (checked before it is journaled, so a
    /// mistyped board costs nothing).
    pub fn check_admin(&self, action: &AdminAction) -> Result<(), String> {
        match action {
            AdminAction::Drain { board, reason } => {
                if reason.trim().is_empty() {
                    return Err("a drain needs a reason".into());
                }
                let (m, b) = self.resolve_board(board)?;
                if let Some(d) = self.health.drain_of(&m, b) {
                    return Err(format!(
                        "board {b} of {m} is already out of service ({} {}: {})",
                        d.actor.name(),
                        d.by,
                        d.reason
                    ));
                }
                Ok(())
            }
            AdminAction::Undrain { board } => {
                let (m, b) = self.resolve_board(board)?;
                if self.health.drain_of(&m, b).is_none() {
                    return Err(format!("board {b} of {m} is in service"));
                }
                Ok(())
            }
            AdminAction::EmergencyStop { reason } => {
                if reason.trim().is_empty() {
                    return Err("an emergency stop needs a reason".into());
                }
                if self.health.emergency.is_some() {
                    return Err("an emergency stop is already in force".into());
                }
                Ok(())
            }
            AdminAction::Resume => {
                if self.health.emergency.is_none() {
                    return Err("no emergency stop is in force".into());
                }
                Ok(())
            }
        }
    }

    fn handle_admin(&mut self, now: TimeUs, actor: &str, action: &AdminAction) -> Response {
        if let Err(e) = self.check_admin(action) {
            return Response::Error(e);
        }
        match action {
            AdminAction::Drain { board, reason } => {
                let (m, b) = self.resolve_board(board).expect("checked");
                let drain = Drain {
                    reason: health::bounded(reason),
                    actor: DrainActor::Admin,
                    by: actor.to_string(),
                    at_us: now,
                };
                self.drain_board(now, &m, b, drain);
                Response::Json(
                    serde_json::json!({"drained": {"machine": m, "board": [b.x, b.y, b.z]}})
                        .to_string(),
                )
            }
            AdminAction::Undrain { board } => {
                let (m, b) = self.resolve_board(board).expect("checked");
                self.health.undrain(&m, b);
                self.log(format!(
                    "board {b} of {m}: put back in service by admin ({actor:?})"
                ));
                self.apply_health(now, &m);
                Response::Json(
                    serde_json::json!({"undrained": {"machine": m, "board": [b.x, b.y, b.z]}})
                        .to_string(),
                )
            }
            AdminAction::EmergencyStop { reason } => {
                let reason = health::bounded(reason);
                self.health.emergency = Some(Emergency {
                    reason: reason.clone(),
                    by: actor.to_string(),
                    at_us: now,
                });
                self.log(format!("EMERGENCY STOP by admin {actor:?}: {reason:?}"));
                let ids: Vec<JobId> = self.jobs.keys().copied().collect();
                let text = format!("Emergency stop: {reason}");
                for &id in &ids {
                    let queued = self.jobs[&id].allocation.is_none();
                    if queued {
                        self.queue.cancel(id);
                        self.teardown(
                            id,
                            Some(format!("Cancelled: {text}")),
                            EndReason::EmergencyStop,
                        );
                    } else {
                        self.teardown(id, Some(text.clone()), EndReason::EmergencyStop);
                    }
                }
                // Then every board of every frame, whoever had it: what the server believes
                // is off may not be (a failed power-off, a board switched on by hand).
                let mut sweep = Vec::new();
                for qm in &self.queue.machines {
                    let m = &self.machines[&qm.name];
                    for (&(cabinet, frame), address) in &m.bmps {
                        let boards: Vec<u32> = m
                            .config
                            .boards
                            .iter()
                            .filter(|b| (b.cabinet, b.frame) == (cabinet, frame))
                            .map(|b| b.board)
                            .collect::<BTreeSet<u32>>()
                            .into_iter()
                            .collect();
                        if boards.is_empty() {
                            continue;
                        }
                        let id = self.next_request_id;
                        self.next_request_id += 1;
                        sweep.push(BmpRequest {
                            id,
                            job_id: SWEEP_JOB_ID,
                            machine: qm.name.clone(),
                            cabinet,
                            frame,
                            address: address.clone(),
                            action: BmpAction::PowerOff { boards },
                        });
                    }
                }
                self.sweeping.extend(sweep.iter().map(|r| r.id));
                let frames = self.issue(sweep);
                Response::Json(
                    serde_json::json!({"destroyed": ids, "frames_powered_off": frames}).to_string(),
                )
            }
            AdminAction::Resume => {
                self.health.emergency = None;
                self.log(format!(
                    "emergency stop ended by admin {actor:?}: new jobs accepted"
                ));
                Response::Json(serde_json::json!({"resumed": true}).to_string())
            }
        }
    }

    /// The admin listing of boards not in service (`drained_only`) or with anything on
    /// record, as JSON: machine, board (logical and physical), IP, drain, reports, failures.
    pub fn health_boards_json(&self, drained_only: bool) -> serde_json::Value {
        let mut out = Vec::new();
        for (machine, b, h) in self.health.records() {
            if drained_only && h.drain.is_none() {
                continue;
            }
            let m = self.machines.get(machine);
            let physical = m.and_then(|m| m.location(b));
            let ip = m.and_then(|m| m.ip(b)).map(|s| s.to_string());
            out.push(serde_json::json!({
                "machine": machine,
                "board": [b.x, b.y, b.z],
                "physical": physical,
                "ip": ip,
                "in_service": h.drain.is_none(),
                "drain": h.drain.as_ref().map(|d| serde_json::json!({
                    "reason": d.reason, "actor": d.actor.name(), "by": d.by,
                    "at": crate::timefmt::format_iso(d.at_us),
                })),
                "reports_since_service": h.reports_since_service,
                "reports": h.reports.iter().map(report_json).collect::<Vec<_>>(),
                "consecutive_failures": h.consecutive_failures,
                "failures": h.failures.iter().map(|f| serde_json::json!({
                    "job_id": f.job_id, "reason": f.reason,
                    "at": crate::timefmt::format_iso(f.at_us),
                })).collect::<Vec<_>>(),
            }));
        }
        let unreachable: Vec<serde_json::Value> = self
            .health
            .unreachable
            .iter()
            .map(|(m, c, f)| serde_json::json!({"machine": m, "cabinet": c, "frame": f}))
            .collect();
        serde_json::json!({
            "boards": out,
            "unreachable_frames": unreachable,
            "emergency_stop": self.health.emergency.as_ref().map(|e| serde_json::json!({
                "reason": e.reason, "by": e.by, "at": crate::timefmt::format_iso(e.at_us),
            })),
        })
    }

    /// Every report on record, oldest first, as JSON.
    pub fn health_reports_json(&self) -> serde_json::Value {
        let mut all: Vec<(TimeUs, serde_json::Value)> = Vec::new();
        for (machine, b, h) in self.health.records() {
            for r in &h.reports {
                let mut v = report_json(r);
                v["machine"] = machine.into();
                v["board"] = serde_json::json!([b.x, b.y, b.z]);
                all.push((r.at_us, v));
            }
        }
        all.sort_by_key(|(t, _)| *t); // stable: ties keep (machine, board) order
        serde_json::Value::Array(all.into_iter().map(|(_, v)| v).collect())
    }
}

fn report_json(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "at": crate::timefmt::format_iso(r.at_us),
        "host": r.host,
        "job_id": r.job_id,
        "chip": [r.chip.0, r.chip.1],
        "core": r.core,
        "description": r.description,
    })
}
