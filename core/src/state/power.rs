//! Power requests: the BMP work a job's boards need (power on/off, links), grouped per
//! frame; their completions; and the retries of failed power-offs.

use super::*;

/// The earliest time a job whose rate state is `tat_us` may start a power change
/// ([`Job::power_tat_us`]).
pub(super) fn power_not_before(rules: &Rules, tat_us: TimeUs) -> TimeUs {
    let burst_us = rules
        .power_change_gap_us
        .saturating_mul(u64::from(rules.power_change_burst.saturating_sub(1)));
    tat_us.saturating_sub(burst_us)
}

/// Per-coordinate minimum of a job's boards (the original's `map(min, zip(*boards))`).
pub(super) fn job_min(boards: &[Board]) -> (u32, u32, u32) {
    (
        boards.iter().map(|b| b.x).min().unwrap_or(0),
        boards.iter().map(|b| b.y).min().unwrap_or(0),
        boards.iter().map(|b| b.z).min().unwrap_or(0),
    )
}

/// The BMP requests that power a job's boards on (stopping its periphery links) or off: one
/// per frame, frames in (cabinet, frame) order, ids taken from `next_request_id`. None if the
/// job's machine is gone.
pub(super) fn power_requests(
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
        if let Some([c, f, n]) = machine.power_location(*b) {
            let i = frame_index(&mut frames, &mut last, (c, f), sizes.0, sizes.1);
            frames[i].boards.push(n);
        }
    }
    for (b, link) in periphery {
        if let Some([c, f, n]) = machine.power_location(*b) {
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

/// `request` to be issued again under the next request id: a retry is a new request (a late
/// completion of the old id is ignored as unknown).
pub(super) fn renumbered(
    mut request: BmpRequest,
    next_request_id: &mut BmpRequestId,
) -> BmpRequest {
    request.id = *next_request_id;
    *next_request_id += 1;
    request
}

impl Core {
    /// An emergency stop's power-off of a whole frame completed: on success the frame's
    /// boards are known to be off and go back into use; on failure they stay held and the
    /// power-off is retried after `retry_delay` (under [`Rules::hold_unswept_frames`]).
    fn sweep_done(&mut self, now: TimeUs, req: BmpRequest, failure: Option<&str>) {
        let frame = (req.machine.clone(), req.cabinet, req.frame);
        if failure.is_some() {
            // Every frame of a sweep is held from its issue until it succeeds; one no longer
            // held was forgotten because a new configuration removed or replaced its
            // machine, which starts afresh (its boards are not held, nor powered off again).
            if !self.health.unswept.contains(&frame) {
                return;
            }
            let delay_us = (self.config.bmp.retry_delay_s.max(0.0) * 1e6) as TimeUs;
            self.log(format!(
                "emergency stop: the boards of cabinet {}, frame {} of {} are kept from new \
                 jobs and their power-off is retried in {:.1} s",
                req.cabinet,
                req.frame,
                req.machine,
                delay_us as f64 / 1e6
            ));
            self.sweep_retries.push(PowerOffRetry {
                at_us: now.saturating_add(delay_us),
                request: req,
            });
        } else if self.health.unswept.remove(&frame) {
            self.log(format!(
                "emergency stop: cabinet {}, frame {} of {} is powered off: its boards are \
                 back in use",
                req.cabinet, req.frame, req.machine
            ));
            self.apply_health(now, &req.machine);
        }
    }

    /// Issue again, with new ids, an emergency stop's failed power-offs of whole frames
    /// whose retry time has come (those of a machine since removed are dropped).
    pub(super) fn retry_sweeps(&mut self, now: TimeUs) {
        if self.sweep_retries.iter().all(|r| r.at_us > now) {
            return;
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sweep_retries)
            .into_iter()
            .partition(|r| r.at_us <= now);
        self.sweep_retries = waiting;
        let mut requests = Vec::new();
        for r in due {
            if !self.machines.contains_key(&r.request.machine) {
                continue;
            }
            let request = renumbered(r.request, &mut self.next_request_id);
            self.sweeping.insert(request.id);
            requests.push(request);
        }
        if !requests.is_empty() {
            self.log(format!(
                "emergency stop: retrying {} failed power-offs of whole frames",
                requests.len()
            ));
            self.issue(requests);
        }
    }

    /// Issue again, with new ids, the failed power-offs whose retry time has come.
    pub(super) fn retry_power_offs(&mut self, now: TimeUs) {
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
                .map(|r| renumbered(r.request, &mut self.next_request_id))
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

    pub(super) fn handle_bmp_done(
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
            if self.rules.hold_unswept_frames {
                self.sweep_done(now, req, failure);
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

    /// A client's `power_on_job_boards` (`on`) or `power_off_job_boards` of a job with
    /// boards. Under [`Rules::coalesce_power`], while the job's requests are in flight, or
    /// sooner than [`Rules::power_change_gap_us`] after its last change started, the change
    /// is only recorded (the latest wins) and issued once they complete and the gap is over
    /// (`handle_bmp_done`, `handle_tick`); the job reports the power asked for, in state
    /// `Power`, meanwhile.
    pub(super) fn power_command(&mut self, now: TimeUs, job_id: JobId, on: bool) {
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
    pub(super) fn issue_wanted_power(&mut self, now: TimeUs, job_id: JobId) -> bool {
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
    pub(super) fn set_power(&mut self, job_id: JobId, on: bool) {
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
    pub(super) fn issue(&mut self, requests: Vec<BmpRequest>) -> u32 {
        let n = requests.len() as u32;
        for r in requests {
            self.effects.push_back(PendingEffect::Bmp(r.id));
            self.outstanding.insert(r.id, r);
        }
        n
    }
}
