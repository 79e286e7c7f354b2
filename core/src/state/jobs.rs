//! Jobs: creation, keepalives, allocation outcomes from the queue, destruction, teardown
//! and the bounded history of retired jobs.

use super::power::power_requests;
use super::*;

impl Core {
    pub(super) fn create_job(&mut self, now: TimeUs, peer: &str, c: &CreateJob) -> JobId {
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
    pub(super) fn touch(&mut self, job_id: JobId, host: Option<&str>, now: TimeUs) {
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

    pub(super) fn apply_outcomes(&mut self, now: TimeUs, outcomes: Vec<QueueOutcome>) {
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

    pub(super) fn on_allocate(
        &mut self,
        now: TimeUs,
        job_id: JobId,
        machine_name: &str,
        a: Allocation,
    ) {
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

    pub(super) fn destroy_job(
        &mut self,
        now: TimeUs,
        job_id: JobId,
        reason: Option<String>,
        kind: EndReason,
    ) {
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
    pub(super) fn teardown(&mut self, job_id: JobId, reason: Option<String>, kind: EndReason) {
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

    pub(super) fn retire(&mut self, job_id: JobId, reason: Option<String>, kind: EndReason) {
        self.retired.push_back(job_id);
        self.retired_reasons.insert(job_id, reason);
        self.retired_end_reasons.insert(job_id, kind);
        self.trim_retired();
    }

    pub(super) fn trim_retired(&mut self) {
        while self.retired.len() > self.config.max_retired_jobs {
            let old = self.retired.pop_front().expect("non-empty");
            self.retired_reasons.remove(&old);
            self.retired_end_reasons.remove(&old);
        }
    }

    /// Why a retired job ended, typed (`None` for a live job, one retired before typed
    /// reasons were recorded, or one beyond the retired-job history).
    pub fn end_reason(&self, job_id: JobId) -> Option<EndReason> {
        self.retired_end_reasons.get(&job_id).copied()
    }
}
