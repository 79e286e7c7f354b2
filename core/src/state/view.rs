//! A read-only picture of the whole facility, for the status page and its JSON API
//! (`crate::server::http`): every board of every machine with its coordinates, IP and
//! holder, every live job with its keepalive deadline, and each machine's queue.
//!
//! It lives beside the controller because it reads the controller's private tables; it
//! changes nothing and folds nothing, so it has no bearing on replay.

use serde::Serialize;

use super::Core;
use crate::coordinates::Board;
use crate::types::{JobId, JobState, TimeUs};

/// What a board is doing, as the status page colours it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoardState {
    /// Nobody holds it.
    Free,
    /// Dead in the configuration (or not listed at all).
    Dead,
    /// Held by a live job whose boards are ready.
    Job,
    /// Held by a live job whose boards are being switched on or off.
    Powering,
    /// Held by a destroyed job while its boards are switched off (released after that).
    PoweringOff,
    /// Taken out of service (by an admin, by problem reports or automatically) and held by
    /// no job; a drained board a job still holds shows that job's state (and `drained`).
    Drained,
}

impl BoardState {
    /// The state's name, as the JSON API and the metrics spell it.
    pub fn name(self) -> &'static str {
        match self {
            BoardState::Free => "free",
            BoardState::Dead => "dead",
            BoardState::Job => "job",
            BoardState::Powering => "powering",
            BoardState::PoweringOff => "powering_off",
            BoardState::Drained => "drained",
        }
    }
}

/// One board.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BoardView {
    /// Logical `[x, y, z]`.
    pub logical: [u32; 3],
    /// Physical `[cabinet, frame, board]` (`None` for a dead board).
    pub physical: Option<[u32; 3]>,
    /// The Ethernet chip's IP (`None` for a dead board).
    pub ip: Option<String>,
    /// What it is doing.
    pub state: BoardState,
    /// The job holding it (live or powering off).
    pub job: Option<JobId>,
    /// Whether it is drained (taken out of service), whoever holds it.
    pub drained: bool,
}

/// One machine.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MachineView {
    /// Name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Width in triads.
    pub width: u32,
    /// Height in triads.
    pub height: u32,
    /// Every board, in logical order (x, then y, then z).
    pub boards: Vec<BoardView>,
    /// The jobs queued for it, first in line first.
    pub queue: Vec<JobId>,
}

/// One live job.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobView {
    /// Id.
    pub job_id: JobId,
    /// Owner, as the client gave it (data: escape it wherever it is shown).
    pub owner: String,
    /// State: `queued`, `power` (boards being switched) or `ready`.
    pub state: &'static str,
    /// Whether its boards are (being) switched on; `None` until allocated.
    pub power: Option<bool>,
    /// Its machine, once allocated.
    pub machine: Option<String>,
    /// Its boards, once allocated.
    pub boards: Vec<[u32; 3]>,
    /// When it was created (event time, µs since the Unix epoch).
    pub start_time_us: TimeUs,
    /// Its keepalive interval (`None`: no keepalive needed).
    pub keepalive_s: Option<f64>,
    /// When it expires unless kept alive (`None`: never).
    pub keepalive_until_us: Option<TimeUs>,
    /// The host that last kept it alive.
    pub keepalivehost: Option<String>,
}

/// The facility.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FacilityView {
    /// The time of the last event folded.
    pub now_us: TimeUs,
    /// Machines in priority order.
    pub machines: Vec<MachineView>,
    /// Live jobs in creation order.
    pub jobs: Vec<JobView>,
}

impl Core {
    /// The facility as it stands (see the module docs).
    pub fn facility_view(&self) -> FacilityView {
        let owners = self.board_owners();
        let machines = self
            .queue
            .machines
            .iter()
            .zip(owners)
            .map(|(qm, (_, owners))| {
                let m = &self.machines[&qm.name];
                let c = &m.config;
                let drained = self.health.drained(&c.name);
                let mut boards = Vec::with_capacity(c.width as usize * c.height as usize * 3);
                for x in 0..c.width {
                    for y in 0..c.height {
                        for z in 0..3 {
                            let b = Board::new(x, y, z);
                            let physical = m.location(b);
                            let dead = physical.is_none() || c.dead_boards.contains(&b);
                            let job = owners.get(&b).copied();
                            let is_drained = drained.contains(&b);
                            let state = match job.map(|id| self.jobs.get(&id)) {
                                _ if dead => BoardState::Dead,
                                None if is_drained => BoardState::Drained,
                                None => BoardState::Free,
                                Some(None) => BoardState::PoweringOff,
                                Some(Some(j)) if j.state == JobState::Power => BoardState::Powering,
                                Some(Some(_)) => BoardState::Job,
                            };
                            boards.push(BoardView {
                                logical: [x, y, z],
                                physical: physical.filter(|_| !dead),
                                ip: m.ip(b).filter(|_| !dead).map(|ip| ip.to_string()),
                                state,
                                job,
                                drained: is_drained && !dead,
                            });
                        }
                    }
                }
                // The queue may hold stale entries (jobs since allocated or gone).
                let queue = qm
                    .queue
                    .iter()
                    .copied()
                    .filter(|id| {
                        self.jobs
                            .get(id)
                            .is_some_and(|j| j.state == JobState::Queued)
                    })
                    .collect();
                MachineView {
                    name: c.name.clone(),
                    tags: qm.tags.iter().cloned().collect(),
                    width: c.width,
                    height: c.height,
                    boards,
                    queue,
                }
            })
            .collect();
        let jobs = self
            .jobs
            .values()
            .map(|j| JobView {
                job_id: j.id,
                owner: j.owner.clone(),
                state: match j.state {
                    JobState::Queued => "queued",
                    JobState::Power => "power",
                    JobState::Ready => "ready",
                    // (Live jobs are never unknown or destroyed.)
                    JobState::Unknown | JobState::Destroyed => "destroyed",
                },
                power: j.power,
                machine: j.allocation.as_ref().map(|a| a.machine.clone()),
                boards: j
                    .allocation
                    .as_ref()
                    .map(|a| a.boards.iter().map(|b| [b.x, b.y, b.z]).collect())
                    .unwrap_or_default(),
                start_time_us: j.start_time_us,
                keepalive_s: j.keepalive_s,
                keepalive_until_us: j.keepalive_until_us,
                keepalivehost: j.lasthost.clone(),
            })
            .collect();
        FacilityView {
            now_us: self.now_us,
            machines,
            jobs,
        }
    }
}
