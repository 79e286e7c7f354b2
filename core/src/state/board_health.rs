//! Board health in the controller (the records are `crate::health`): drains, failures
//! blamed on boards, recycling power-offs, recovering a job onto new boards, problem reports,
//! and the admin actions.

use super::machines::unavailable;
use super::power::power_requests;
use super::*;

impl Core {
    /// The board health state (drains, reports, failures, emergency stop).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Give a machine's allocator its dead boards again (the configuration's plus the
    /// unavailable ones), then re-run the queues: a pending job that can no longer ever fit
    /// is cancelled, as after a configuration change; one that now fits is allocated.
    pub(super) fn apply_health(&mut self, now: TimeUs, machine: &str) {
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

    pub(super) fn board_by_ip(&self, ip: &str) -> Option<(String, Board)> {
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
    pub(super) fn drain_board(
        &mut self,
        now: TimeUs,
        machine: &str,
        board: Board,
        drain: Drain,
    ) -> bool {
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
    pub(super) fn note_bmp_health(
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
    pub(super) fn retry_recycle_power_offs(&mut self, now: TimeUs) {
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
                let request = super::power::renumbered(t.request, &mut self.next_request_id);
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
    pub(super) fn finish_recycle(
        &mut self,
        now: TimeUs,
        req: &BmpRequest,
        failure: Option<&str>,
    ) -> bool {
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
    pub(super) fn recover_job(
        &mut self,
        now: TimeUs,
        job_id: JobId,
        blamed: &[Board],
        reason: &str,
    ) -> bool {
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
    pub(super) fn report_problem(
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

    pub(super) fn handle_admin(
        &mut self,
        now: TimeUs,
        actor: &str,
        action: &AdminAction,
    ) -> Response {
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
                if self.rules.hold_unswept_frames {
                    // Until each frame's power-off succeeds, its boards are not known to be
                    // off: no new job gets them (after `resume`, too).
                    let swept: BTreeSet<String> = sweep.iter().map(|r| r.machine.clone()).collect();
                    self.health.unswept.extend(
                        sweep
                            .iter()
                            .map(|r| (r.machine.clone(), r.cabinet, r.frame)),
                    );
                    self.sweep_retries.clear(); // (this sweep covers every frame again)
                    for m in swept {
                        self.apply_health(now, &m);
                    }
                }
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
}
