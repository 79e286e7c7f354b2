//! Invariants: the whole-state consistency check (one owner per board, allocators agreeing
//! with jobs, and so on), run after every event under `debug_assertions` in the server, and
//! by tests and `spalloc-replay --verify`.

use super::*;

impl Core {
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
            // The allocator keeps from new jobs exactly the boards out of service: dead in
            // the configuration, drained, or in a frame whose BMP does not answer (an
            // undrain the allocator missed would keep a board out of use for good).
            if self.rules.board_health {
                let c = &self.machines[&qm.name].config;
                let mut dead: BTreeSet<Board> = c.dead_boards.iter().copied().collect();
                dead.extend(super::machines::unavailable(&self.health, c));
                if *qm.allocator.dead_boards() != dead {
                    return Err(format!(
                        "machine {}: the allocator's dead boards {:?} are not those out of \
                         service {:?}",
                        qm.name,
                        qm.allocator.dead_boards(),
                        dead
                    ));
                }
            }
        }
        if self.machines.len() != self.queue.machines.len() {
            return Err("machine tables disagree".into());
        }
        // A frame held for an emergency stop's power-off has that power-off in flight or
        // waiting to be retried: no frame is held for good.
        for (m, c, f) in &self.health.unswept {
            let covered = |r: &BmpRequest| r.machine == *m && (r.cabinet, r.frame) == (*c, *f);
            let in_flight = self
                .sweeping
                .iter()
                .filter_map(|id| self.outstanding.get(id))
                .any(covered);
            if !in_flight && !self.sweep_retries.iter().any(|r| covered(&r.request)) {
                return Err(format!(
                    "frame ({c}, {f}) of {m} is held for an emergency stop's power-off that is \
                     neither in flight nor to be retried"
                ));
            }
        }
        Ok(())
    }
}
