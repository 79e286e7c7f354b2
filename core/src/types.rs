//! The core's vocabulary: the events it folds, the commands inside them, the replies it
//! gives, and the effects (notifications, BMP requests, log lines) the caller drains.
//!
//! Every type here serialises with serde: events are what the journal stores, and replies are
//! rendered to the wire by the server (`spalloc::protocol`).

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::coordinates::{Board, Link};
use crate::rules::Rules;

/// A job's identifier. Ids start at 1 and never repeat.
pub type JobId = u64;

/// Identifies one BMP request, so its completion can be matched to it. Never repeats.
pub type BmpRequestId = u64;

/// Time in microseconds since the Unix epoch (UTC).
pub type TimeUs = u64;

/// One input to the core. Each carries the time at which the caller accepted it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A client command that may change state.
    Command {
        /// When the command was read.
        now_us: TimeUs,
        /// The client's IP address as text (becomes `keepalivehost`).
        peer: String,
        /// The command.
        command: Command,
    },
    /// A BMP request finished.
    BmpDone {
        /// When the completion reached the loop.
        now_us: TimeUs,
        /// The request that finished.
        request_id: BmpRequestId,
        /// `None` on success, else the failure reason (e.g. `Requests failed on BMP 10.0.0.1`).
        failure: Option<String>,
        /// The boards (numbers within the request's frame, ascending) that the failure is
        /// blamed on: wrong FPGA ids after every power-on, a link write refused. Empty on
        /// success, for a failure of the whole frame, and in records written before board
        /// health existed.
        #[serde(default)]
        failed_boards: Vec<u32>,
        /// The BMP did not answer at all (timeouts): nothing is blamed on its boards.
        #[serde(default)]
        bmp_unreachable: bool,
    },
    /// Time passed: expire keepalives, release held-back boards, run the queue.
    Tick {
        /// The current time.
        now_us: TimeUs,
    },
    /// A (new) configuration, applied as a diff against the current one.
    Configure {
        /// When the configuration was loaded.
        now_us: TimeUs,
        /// The validated configuration.
        config: Config,
    },
    /// The server restarted: every live job's keepalive timer is reset, as the original does
    /// on a warm start, to at least `grace_us` from now. Outstanding BMP work is re-issued
    /// by the caller.
    Restarted {
        /// When the server came back.
        now_us: TimeUs,
        /// The least time any job is given before its keepalive can expire: the stock
        /// client's keepalive process takes a few seconds to reconnect after a restart.
        /// (Absent from records written before it existed: 0, a plain reset.)
        #[serde(default)]
        grace_us: TimeUs,
    },
    /// The journal could not be written for a while, and these jobs' clients sent keepalives
    /// meanwhile that were answered but could not be recorded: each gets a full keepalive
    /// period from now, as if that keepalive had just been folded. (The server's own
    /// trouble must never expire a job whose client kept it alive.)
    KeptAliveUnrecorded {
        /// When the journal could be written again.
        now_us: TimeUs,
        /// The jobs whose keepalives were answered but not recorded, ascending.
        job_ids: Vec<JobId>,
    },
    /// An administrator's action over the admin channel (drain, undrain, emergency stop,
    /// resume), with who asked.
    Admin {
        /// When the action was read.
        now_us: TimeUs,
        /// Who asked (the admin channel's peer, e.g. `uid 1000`).
        actor: String,
        /// What to do.
        action: AdminAction,
    },
    /// From now on, follow these rules. A server journals it at start-up when the state it
    /// recovered follows older rules (and first thing in a new journal), so that a journal
    /// written by an older version still replays to what that version did
    /// ([`crate::rules`]).
    Rules {
        /// When the server started.
        now_us: TimeUs,
        /// The rules.
        rules: Rules,
    },
}

impl Event {
    /// The time the event carries.
    pub fn now_us(&self) -> TimeUs {
        match self {
            Event::Command { now_us, .. }
            | Event::BmpDone { now_us, .. }
            | Event::Tick { now_us }
            | Event::Configure { now_us, .. }
            | Event::Restarted { now_us, .. }
            | Event::KeptAliveUnrecorded { now_us, .. }
            | Event::Admin { now_us, .. }
            | Event::Rules { now_us, .. } => *now_us,
        }
    }
}

/// A client command, already checked by the protocol layer (types, arity, required keywords).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// `create_job(*args, **kwargs)`.
    CreateJob(CreateJob),
    /// `job_keepalive(job_id)`.
    JobKeepalive {
        /// The job.
        job_id: JobId,
    },
    /// `get_job_state(job_id)`; also a keepalive.
    GetJobState {
        /// The job.
        job_id: JobId,
    },
    /// `get_job_machine_info(job_id)`; also a keepalive.
    GetJobMachineInfo {
        /// The job.
        job_id: JobId,
    },
    /// `power_on_job_boards(job_id)`; also a keepalive.
    PowerOnJobBoards {
        /// The job.
        job_id: JobId,
    },
    /// `power_off_job_boards(job_id)`; also a keepalive.
    PowerOffJobBoards {
        /// The job.
        job_id: JobId,
    },
    /// `destroy_job(job_id, reason=None)`.
    DestroyJob {
        /// The job.
        job_id: JobId,
        /// Why, as the client said it.
        reason: Option<String>,
    },
    /// `list_jobs()` (read-only).
    ListJobs,
    /// `list_machines()` (read-only).
    ListMachines,
    /// `get_board_position(machine_name, x, y, z)` (read-only).
    GetBoardPosition {
        /// Machine name.
        machine: String,
        /// Logical x.
        x: i64,
        /// Logical y.
        y: i64,
        /// Logical z.
        z: i64,
    },
    /// `get_board_at_position(machine_name, cabinet, frame, board)` (read-only).
    GetBoardAtPosition {
        /// Machine name.
        machine: String,
        /// Cabinet.
        cabinet: i64,
        /// Frame.
        frame: i64,
        /// Board.
        board: i64,
    },
    /// `where_is(**kwargs)` (read-only).
    WhereIs(WhereIs),
    /// `report_problem(board_ip, x, y, p=None, description=None)`, as the Java server's v1
    /// compatibility defines it: a user says the board with this Ethernet IP misbehaves.
    ReportProblem {
        /// The Ethernet IP of the board (as the client gave it).
        ip: String,
        /// Chip x (as given; informational).
        x: i64,
        /// Chip y.
        y: i64,
        /// Core, if given.
        p: Option<i64>,
        /// What went wrong, in the user's words.
        description: Option<String>,
    },
}

/// A board of a machine, named in one of the forms an admin may use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BoardRef {
    /// Logical `(x, y, z)` of a machine.
    Logical {
        /// Machine name.
        machine: String,
        /// Triad x.
        x: u32,
        /// Triad y.
        y: u32,
        /// Board z.
        z: u32,
    },
    /// Physical `(cabinet, frame, board)` of a machine.
    Physical {
        /// Machine name.
        machine: String,
        /// Cabinet.
        cabinet: u32,
        /// Frame.
        frame: u32,
        /// Board.
        board: u32,
    },
    /// The board whose Ethernet chip has this IP (on any machine).
    Ip(String),
}

/// What an administrator asks for ([`Event::Admin`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminAction {
    /// Take a board out of service.
    Drain {
        /// The board.
        board: BoardRef,
        /// Why.
        reason: String,
    },
    /// Put a board back in service (and forget its reports and failures).
    Undrain {
        /// The board.
        board: BoardRef,
    },
    /// Power everything off, destroy every live job, refuse new ones until `Resume`.
    EmergencyStop {
        /// Why.
        reason: String,
    },
    /// End an emergency stop.
    Resume,
}

impl Command {
    /// True for commands that never change state and so need not be journaled.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Command::ListJobs
                | Command::ListMachines
                | Command::GetBoardPosition { .. }
                | Command::GetBoardAtPosition { .. }
                | Command::WhereIs(_)
        )
    }
}

/// What shape of allocation a job asks for (from `create_job`'s positional arguments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobRequest {
    /// `()` or `(1,)`: any one board.
    OneBoard,
    /// `(n,)` with n ≠ 1: at least n boards (may be ≤ 0, which nothing satisfies).
    Boards(i64),
    /// `(w, h)`: a block of w×h triads.
    Triads(i64, i64),
    /// `(x, y, z)`: one specific board.
    Board(i64, i64, i64),
}

/// Which machines a job may run on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobTarget {
    /// Exactly this machine (its tags are ignored).
    Machine(String),
    /// Any machine having all these tags (sorted; empty matches every machine).
    Tags(Vec<String>),
}

/// A validated `create_job` call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateJob {
    /// `str(owner)`.
    pub owner: String,
    /// Seconds between keepalives before the job is destroyed; `None` disables the timer.
    pub keepalive_s: Option<f64>,
    /// The requested shape.
    pub request: JobRequest,
    /// Where it may run.
    pub target: JobTarget,
    /// Aspect ratio bound for the n-boards shape.
    pub min_ratio: f64,
    /// Largest tolerated number of dead boards (`None`: any, as long as the corner is alive).
    pub max_dead_boards: Option<i64>,
    /// Largest tolerated number of dead links (`None`: any).
    pub max_dead_links: Option<i64>,
    /// Only accept a torus.
    pub require_torus: bool,
    /// The positional arguments as the client sent them (JSON text), echoed by `list_jobs`.
    pub args_json: String,
    /// The keyword arguments as `list_jobs` shows them (JSON text): the client's minus `owner`
    /// and `keepalive`, tags as a list.
    pub kwargs_json: String,
}

/// The four forms of `where_is`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WhereIs {
    /// `where_is(machine, x, y, z)`.
    Logical {
        /// Machine name.
        machine: String,
        /// Triad x.
        x: i64,
        /// Triad y.
        y: i64,
        /// Board z.
        z: i64,
    },
    /// `where_is(machine, cabinet, frame, board)`.
    Physical {
        /// Machine name.
        machine: String,
        /// Cabinet.
        cabinet: i64,
        /// Frame.
        frame: i64,
        /// Board.
        board: i64,
    },
    /// `where_is(machine, chip_x, chip_y)`.
    MachineChip {
        /// Machine name.
        machine: String,
        /// Chip x.
        chip_x: i64,
        /// Chip y.
        chip_y: i64,
    },
    /// `where_is(job_id, chip_x, chip_y)`.
    JobChip {
        /// The job.
        job_id: JobId,
        /// Chip x, relative to the job.
        chip_x: i64,
        /// Chip y, relative to the job.
        chip_y: i64,
    },
}

/// A job's state as the protocol numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobState {
    /// 0: no such job (or forgotten).
    Unknown,
    /// 1: waiting for boards.
    Queued,
    /// 2: boards allocated, power or links being changed.
    Power,
    /// 3: boards ready (on or off as asked).
    Ready,
    /// 4: destroyed; a reason may be known.
    Destroyed,
}

impl JobState {
    /// The protocol number of the state.
    pub fn number(self) -> u8 {
        self as u8
    }
}

/// The reply to one command. Rendered to JSON by the server (`spalloc::protocol`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Response {
    /// `null`.
    Null,
    /// A new job's id.
    JobId(JobId),
    /// `get_job_state`.
    JobState(JobStateReply),
    /// `get_job_machine_info`.
    MachineInfo(MachineInfoReply),
    /// `list_jobs`.
    Jobs(Vec<JobSummary>),
    /// `list_machines`.
    Machines(Vec<MachineSummary>),
    /// `get_board_position` / `get_board_at_position`: a triple or null.
    Triple(Option<[u32; 3]>),
    /// `where_is`: a location or null.
    WhereIs(Option<WhereIsReply>),
    /// An admin command's answer: any JSON value, already rendered (admin channel only).
    Json(String),
    /// A command that was understood but cannot be carried out (e.g. an unknown board):
    /// rendered as `{"exception": ...}`, and nothing changed.
    Error(String),
}

/// The reply to `get_job_state`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobStateReply {
    /// State number (0–4).
    pub state: u8,
    /// Whether the boards are (being) powered on; `None` unless allocated.
    pub power: Option<bool>,
    /// Keepalive interval in seconds; `None` when disabled or not live.
    pub keepalive: Option<f64>,
    /// Why the job was destroyed, if it was.
    pub reason: Option<String>,
    /// Creation time in Unix seconds; `None` unless live.
    pub start_time: Option<f64>,
    /// Address of the last client that kept the job alive; `None` unless live.
    pub keepalivehost: Option<String>,
}

/// The reply to `get_job_machine_info` (all `None` unless the job holds boards).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MachineInfoReply {
    /// Width in chips.
    pub width: Option<u32>,
    /// Height in chips.
    pub height: Option<u32>,
    /// `[[[x, y], hostname], ...]`: Ethernet chips relative to the job, and their IPs.
    pub connections: Option<Vec<((i64, i64), String)>>,
    /// The machine's name.
    pub machine_name: Option<String>,
    /// The job's boards.
    pub boards: Option<Vec<[u32; 3]>>,
}

/// One entry of `list_jobs`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobSummary {
    /// Job id.
    pub job_id: JobId,
    /// Owner.
    pub owner: String,
    /// Creation time, Unix seconds.
    pub start_time: f64,
    /// Keepalive interval, seconds.
    pub keepalive: Option<f64>,
    /// State number.
    pub state: u8,
    /// Power flag.
    pub power: Option<bool>,
    /// Positional arguments as given (JSON text).
    pub args_json: String,
    /// Keyword arguments (JSON text).
    pub kwargs_json: String,
    /// Machine name once allocated.
    pub allocated_machine_name: Option<String>,
    /// Boards once allocated.
    pub boards: Option<Vec<[u32; 3]>>,
    /// Last keepalive host ("" if unknown).
    pub keepalivehost: String,
}

/// One entry of `list_machines`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MachineSummary {
    /// Name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Width in triads.
    pub width: u32,
    /// Height in triads.
    pub height: u32,
    /// Dead boards.
    pub dead_boards: Vec<[u32; 3]>,
    /// Dead links, `[x, y, z, link]`.
    pub dead_links: Vec<[u32; 4]>,
}

/// The reply to `where_is`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WhereIsReply {
    /// Machine name.
    pub machine: String,
    /// Logical board coordinate.
    pub logical: [u32; 3],
    /// Physical (cabinet, frame, board).
    pub physical: [u32; 3],
    /// Chip coordinate in the machine.
    pub chip: [i64; 2],
    /// Chip coordinate within its board.
    pub board_chip: [i64; 2],
    /// The job holding the board, if any.
    pub job_id: Option<JobId>,
    /// Chip coordinate within that job.
    pub job_chip: Option<[i64; 2]>,
}

/// Something the caller must do, drained with [`crate::Core::poll_effect`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    /// Tell watchers these jobs changed (ascending ids).
    JobsChanged(Vec<JobId>),
    /// Tell watchers these machines changed (names, sorted).
    MachinesChanged(Vec<String>),
    /// Hand this request to the BMP thread for its address.
    Bmp(BmpRequest),
    /// A line worth an admin's attention (job created, allocated, ready, destroyed and why…).
    Log(String),
    /// A step of a job's life, as data (what `spalloc-replay` builds histories and
    /// accounting from; the server itself ignores it).
    Lifecycle(Lifecycle),
}

/// Why a job ended, kept beside the free text a client sees as `get_job_state`'s reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EndReason {
    /// `destroy_job` from a client (normally its owner).
    Owner,
    /// Its keepalive expired.
    KeepaliveExpired,
    /// No configured machine can ever satisfy the request (cancelled while queued).
    NoSuitableMachine,
    /// Its machine was removed or changed by a new configuration.
    MachineRemoved,
    /// Its boards' hardware failed (power-on, FPGA check or link setup).
    BoardFailure,
    /// An administrator ended it.
    Admin,
    /// An administrator's emergency stop ended it.
    EmergencyStop,
}

impl EndReason {
    /// The reason as a short name (`owner`, `keepalive_expired`, …), for reports.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Owner => "owner",
            EndReason::KeepaliveExpired => "keepalive_expired",
            EndReason::NoSuitableMachine => "no_suitable_machine",
            EndReason::MachineRemoved => "machine_removed",
            EndReason::BoardFailure => "board_failure",
            EndReason::Admin => "admin",
            EndReason::EmergencyStop => "emergency_stop",
        }
    }
}

/// One step of a job's life ([`Effect::Lifecycle`]). Every step names its job; the time is
/// that of the event being folded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Lifecycle {
    /// Created (and queued, until allocated).
    Queued {
        /// The job.
        job_id: JobId,
        /// Its owner, as given.
        owner: String,
        /// The client's address.
        host: String,
    },
    /// Given boards.
    Allocated {
        /// The job.
        job_id: JobId,
        /// The machine.
        machine: String,
        /// The boards, lexicographic minimum first.
        boards: Vec<Board>,
    },
    /// Its boards are being switched on or off.
    Powering {
        /// The job.
        job_id: JobId,
        /// On (`true`) or off.
        on: bool,
    },
    /// Its boards are in the state asked for.
    Ready {
        /// The job.
        job_id: JobId,
        /// Whether they are on.
        power: bool,
    },
    /// Ended (destroyed, expired, cancelled…).
    Ended {
        /// The job.
        job_id: JobId,
        /// Why, typed.
        reason: EndReason,
        /// Why, as the client sees it (`get_job_state`'s `reason`).
        text: Option<String>,
    },
}

/// One unit of hardware work for one BMP (one frame), carried out as the original's
/// `AtomicRequests`: power on (then check FPGAs) and stop the links leaving the job, or power
/// off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmpRequest {
    /// Matches the completion to this request.
    pub id: BmpRequestId,
    /// The job the work is for.
    pub job_id: JobId,
    /// The machine.
    pub machine: String,
    /// Cabinet of the frame.
    pub cabinet: u32,
    /// Frame.
    pub frame: u32,
    /// The BMP's `host` or `host:port`.
    pub address: String,
    /// What to do.
    pub action: BmpAction,
}

/// The work inside one [`BmpRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BmpAction {
    /// Power these boards (board numbers within the frame, ascending) on, check their FPGAs,
    /// then write STOP=1 to each listed link (in order) of the board it names.
    PowerOn {
        /// Boards to power on.
        boards: Vec<u32>,
        /// `(board, link)` pairs to stop: the links leaving the job's allocation.
        stop_links: Vec<(u32, Link)>,
    },
    /// Power these boards off.
    PowerOff {
        /// Boards to power off.
        boards: Vec<u32>,
    },
}

/// Convenience: a logical board as the protocol's `[x, y, z]`.
pub fn board_triple(b: Board) -> [u32; 3] {
    [b.x, b.y, b.z]
}
