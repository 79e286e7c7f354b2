//! The rules the fold follows where this server's behaviour has changed between versions.
//!
//! Replaying a journal must reproduce exactly what the server that wrote it did: the boards
//! each job was given, the BMP requests it issued (their ids are matched by later
//! completions), when boards were released. So a behaviour change that alters the fold of
//! events an older version could have journaled is a *rule*: the state records which rules
//! are in force, a journal's first record starts under the oldest rules
//! ([`Rules::default`], what journals written before rules existed followed), and the server
//! journals [`crate::Event::Rules`] with [`Rules::CURRENT`] at start-up whenever the
//! state it recovered follows others. Older records thus replay under the rules they were
//! served by, newer ones under the current rules.
//!
//! Each field's default is the old behaviour, so a snapshot or record that lacks it decodes
//! to what its version did. A new rule is a new field, last, with `#[serde(default)]`.

use serde::{Deserialize, Serialize};

use super::allocator::PopRule;

/// Which version of each changed behaviour is in force (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// How a board is picked from a triad split into single boards.
    #[serde(default)]
    pub pop: PopRule,
    /// Whether boards whose power-off failed are held (the power-off retried every
    /// `retry_delay`) until the BMP answers, rather than released at once.
    #[serde(default)]
    pub hold_failed_power_off: bool,
    /// Whether board health is followed: boards that fail in consecutive jobs are drained,
    /// a job whose power-on failed because of its boards is given new ones (up to
    /// `health.recovery_attempts` times), and frames whose BMP does not answer are kept
    /// from new jobs ([`super::health`]). Before: the job was destroyed, nothing remembered.
    #[serde(default)]
    pub board_health: bool,
    /// Whether a job's power changes are coalesced: while BMP requests for a job are in
    /// flight, a further `power_on_job_boards` / `power_off_job_boards` only records the
    /// state wanted (the latest wins), issued once the requests in flight complete. So a job
    /// never has more than one request per BMP frame queued, and one client's burst of
    /// power changes cannot fill a BMP's queue and fail or starve its neighbours' jobs.
    /// (Old rule: every change issued at once.)
    #[serde(default)]
    pub coalesce_power: bool,
    /// Under `coalesce_power`, the sustained rate of one job's power changes: one per this
    /// many microseconds, after a burst of `power_change_burst`. A change asked for sooner
    /// waits (coalesced) until the rate allows it. Bounds how fast one job can power-cycle
    /// its boards and occupy its BMPs, without slowing a job that changes power now and
    /// then. (Old rule: 0, no bound.)
    #[serde(default)]
    pub power_change_gap_us: u64,
    /// Power changes one job may make back to back before `power_change_gap_us` applies.
    #[serde(default)]
    pub power_change_burst: u32,
    /// Whether a board that a new configuration marks dead while a job holds it keeps its
    /// location for that job's power requests, so that it is powered off with the job's
    /// other boards. (Old rule: the reload dropped its location, and every later power
    /// request of the job left it out: it stayed powered on after the job ended.) Not
    /// written while false, so states under the older rules encode as they always did.
    #[serde(default, skip_serializing_if = "is_false")]
    pub power_dead_held_boards: bool,
    /// Whether an emergency stop's power-off of a whole frame holds the frame's boards from
    /// new jobs until it succeeds, retried every `retry_delay` while it fails, as a job's
    /// failed power-off holds its boards. (Old rule: a failed one was only logged, and after
    /// `resume` the boards, their power unknown, could be given to a new job.) Not written
    /// while false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hold_unswept_frames: bool,
}

/// For `skip_serializing_if`.
fn is_false(b: &bool) -> bool {
    !*b
}

/// One job's sustained rate of power changes: one per this many microseconds
/// ([`Rules::power_change_gap_us`]).
pub const POWER_CHANGE_GAP_US: u64 = 1_000_000;
/// Power changes one job may make back to back ([`Rules::power_change_burst`]).
pub const POWER_CHANGE_BURST: u32 = 10;

impl Rules {
    /// The rules this version applies.
    pub const CURRENT: Rules = Rules {
        pop: PopRule::CURRENT,
        hold_failed_power_off: true,
        board_health: true,
        coalesce_power: true,
        power_change_gap_us: POWER_CHANGE_GAP_US,
        power_change_burst: POWER_CHANGE_BURST,
        power_dead_held_boards: true,
        hold_unswept_frames: true,
    };
}
