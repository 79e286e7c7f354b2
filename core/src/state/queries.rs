//! Queries: read-only answers from the state (job state, machine info, job and machine
//! lists, where-is, keepalive checks, board owners, health reports). None changes anything.

use super::machines::unavailable;
use super::power::job_min;
use super::*;

pub(super) fn report_json(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "at": crate::timefmt::format_iso(r.at_us),
        "host": r.host,
        "job_id": r.job_id,
        "chip": [r.chip.0, r.chip.1],
        "core": r.core,
        "description": r.description,
    })
}

impl Core {
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

    pub(super) fn board_position(&self, machine: &str, x: i64, y: i64, z: i64) -> Option<[u32; 3]> {
        let m = self.machines.get(machine)?;
        let b = Board::new(
            u32::try_from(x).ok()?,
            u32::try_from(y).ok()?,
            u32::try_from(z).ok()?,
        );
        m.location(b)
    }

    pub(super) fn board_at_position(
        &self,
        machine: &str,
        c: i64,
        f: i64,
        b: i64,
    ) -> Option<[u32; 3]> {
        let m = self.machines.get(machine)?;
        // A linear search, as the original's: rare, and machines are small.
        m.config
            .boards
            .iter()
            .find(|bc| [bc.cabinet as i64, bc.frame as i64, bc.board as i64] == [c, f, b])
            .map(|bc| board_triple(bc.logical))
    }

    /// The live job holding a board of a machine.
    pub(super) fn job_at(&self, machine: &str, board: Board) -> Option<&Job> {
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
        let frames = |set: &BTreeSet<(String, u32, u32)>| -> Vec<serde_json::Value> {
            set.iter()
                .map(|(m, c, f)| serde_json::json!({"machine": m, "cabinet": c, "frame": f}))
                .collect()
        };
        serde_json::json!({
            "boards": out,
            "unreachable_frames": frames(&self.health.unreachable),
            // Frames an emergency stop has not yet powered off (kept from new jobs until then).
            "unswept_frames": frames(&self.health.unswept),
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
