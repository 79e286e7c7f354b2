//! The job queue: per-machine FIFOs in machine priority order, as the original's `JobQueue`.
//!
//! A new job is appended to the queue of *every* machine that could ever run it (the tag or
//! machine-name match plus the allocator's possibility check); if there is none, it is
//! cancelled at once. Then the queues are processed: repeatedly, for each machine in priority
//! order, stale heads (jobs allocated elsewhere or cancelled) are dropped and the head is tried;
//! at most one job per machine per round, and a head that does not fit blocks its machine
//! (strict FIFO, no backfilling). A job on several queues goes to the first machine that fits.
//!
//! The queue reports what happened as [`QueueOutcome`]s, in the order the original's callbacks
//! would have fired, and the controller acts on them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::allocator::{AllocHandle, AllocRequest, Allocation, Allocator, Shape};
use super::types::{CreateJob, JobId, JobRequest, JobTarget, TimeUs};

/// One machine as the queue sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueMachine {
    /// Unique for the life of the core: a machine removed and re-added gets a new uid, so a
    /// late free of the old machine's boards cannot land in the new one.
    pub uid: u64,
    /// Name.
    pub name: String,
    /// Tags.
    pub tags: BTreeSet<String>,
    /// Its allocator.
    pub allocator: Allocator,
    /// Jobs waiting for it, oldest first (may hold stale entries, dropped at the head).
    pub queue: VecDeque<JobId>,
}

/// A job that has not been allocated yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingJob {
    /// Where it may run.
    pub target: JobTarget,
    /// What it asks for.
    pub request: JobRequest,
    /// Aspect ratio bound.
    pub min_ratio: f64,
    /// Dead boards tolerated.
    pub max_dead_boards: Option<i64>,
    /// Dead links tolerated.
    pub max_dead_links: Option<i64>,
    /// Torus required.
    pub require_torus: bool,
}

impl PendingJob {
    /// The pending part of a `create_job` call.
    pub fn from_create(c: &CreateJob) -> PendingJob {
        PendingJob {
            target: c.target.clone(),
            request: c.request.clone(),
            min_ratio: c.min_ratio,
            max_dead_boards: c.max_dead_boards,
            max_dead_links: c.max_dead_links,
            require_torus: c.require_torus,
        }
    }

    fn alloc_request(&self) -> AllocRequest {
        AllocRequest {
            shape: match self.request {
                JobRequest::OneBoard => Shape::AnyBoard,
                JobRequest::Boards(n) => Shape::Boards(n),
                JobRequest::Triads(w, h) => Shape::Triads(w, h),
                JobRequest::Board(x, y, z) => Shape::Board(x, y, z),
            },
            min_ratio: self.min_ratio,
            max_dead_boards: self.max_dead_boards,
            max_dead_links: self.max_dead_links,
            require_torus: self.require_torus,
        }
    }

    fn matches(&self, m: &QueueMachine) -> bool {
        match &self.target {
            JobTarget::Machine(name) => *name == m.name,
            JobTarget::Tags(tags) => tags.iter().all(|t| m.tags.contains(t)),
        }
    }
}

/// What the queue did, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum QueueOutcome {
    /// The job got boards on the machine at this index of [`JobQueue::machines`].
    Allocated {
        /// The job.
        job_id: JobId,
        /// The machine's name.
        machine: String,
        /// What it got.
        allocation: Allocation,
    },
    /// No machine could ever run the job: it is cancelled.
    NoSuitableMachine(JobId),
}

/// The queues of every machine, and the jobs not yet allocated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobQueue {
    /// Machines in priority order.
    pub machines: Vec<QueueMachine>,
    /// Jobs waiting for boards, by id (creation order).
    pub pending: BTreeMap<JobId, PendingJob>,
}

impl JobQueue {
    /// Queue a new job (or cancel it if no machine could ever run it), then process the queues.
    pub fn create_job(
        &mut self,
        id: JobId,
        job: PendingJob,
        now_us: TimeUs,
        out: &mut Vec<QueueOutcome>,
    ) {
        debug_assert!(!self.pending.contains_key(&id));
        self.pending.insert(id, job);
        self.enqueue(id, out);
        self.process(now_us, out);
    }

    /// Put a pending job on the queue of every machine that could run it, or cancel it.
    fn enqueue(&mut self, id: JobId, out: &mut Vec<QueueOutcome>) {
        let job = &self.pending[&id];
        let req = job.alloc_request();
        let mut found = false;
        for m in &mut self.machines {
            if job.matches(m) && m.allocator.alloc_possible_cached(&req) {
                m.queue.push_back(id);
                found = true;
            }
        }
        if !found {
            self.pending.remove(&id);
            out.push(QueueOutcome::NoSuitableMachine(id));
        }
    }

    /// Put a job whose boards failed back at the *front* of every machine queue that could
    /// run it (it has waited its turn already), then process the queues. Returns false, and
    /// queues nothing, if no machine could ever run it now.
    pub fn requeue_front(
        &mut self,
        id: JobId,
        job: PendingJob,
        now_us: TimeUs,
        out: &mut Vec<QueueOutcome>,
    ) -> bool {
        debug_assert!(!self.pending.contains_key(&id));
        let req = job.alloc_request();
        let mut found = false;
        for m in &mut self.machines {
            if job.matches(m) && m.allocator.alloc_possible_cached(&req) {
                m.queue.push_front(id);
                found = true;
            }
        }
        if found {
            self.pending.insert(id, job);
            self.process(now_us, out);
        }
        found
    }

    /// Try the heads of the queues until nothing more can be allocated.
    pub fn process(&mut self, now_us: TimeUs, out: &mut Vec<QueueOutcome>) {
        let mut changed = true;
        while changed {
            changed = false;
            for m in &mut self.machines {
                while let Some(&head) = m.queue.front() {
                    let Some(job) = self.pending.get(&head) else {
                        // Allocated elsewhere or cancelled: a stale entry.
                        m.queue.pop_front();
                        continue;
                    };
                    if let Some(allocation) = m.allocator.alloc(&job.alloc_request(), now_us) {
                        m.queue.pop_front();
                        self.pending.remove(&head);
                        out.push(QueueOutcome::Allocated {
                            job_id: head,
                            machine: m.name.clone(),
                            allocation,
                        });
                        changed = true;
                    }
                    break;
                }
            }
        }
    }

    /// Remove a pending job (its stale queue entries are dropped when they reach a head).
    /// Returns false if it was not pending.
    pub fn cancel(&mut self, id: JobId) -> bool {
        self.pending.remove(&id).is_some()
    }

    /// Empty every queue and re-queue the pending jobs in creation order (after machines
    /// changed), allocating or cancelling them as a new job would be.
    pub fn regenerate(&mut self, now_us: TimeUs, out: &mut Vec<QueueOutcome>) {
        for m in &mut self.machines {
            m.queue.clear();
        }
        let ids: Vec<JobId> = self.pending.keys().copied().collect();
        for id in ids {
            if self.pending.contains_key(&id) {
                self.enqueue(id, out);
                self.process(now_us, out);
            }
        }
    }

    /// Release held-back frees that are due on every machine; process the queues if any were.
    pub fn check_free(&mut self, now_us: TimeUs, out: &mut Vec<QueueOutcome>) {
        let mut changed = false;
        for m in &mut self.machines {
            changed |= m.allocator.check_free(now_us);
        }
        if changed {
            self.process(now_us, out);
        }
    }

    /// Return an allocation to the machine with this uid (if it still exists), held back for
    /// its `seconds_before_free`, then process the queues.
    pub fn free(
        &mut self,
        machine_uid: u64,
        handle: AllocHandle,
        now_us: TimeUs,
        out: &mut Vec<QueueOutcome>,
    ) {
        if let Some(m) = self.machines.iter_mut().find(|m| m.uid == machine_uid) {
            m.allocator.free(handle, now_us);
            self.process(now_us, out);
        }
    }

    /// The machine with this name, mutably.
    pub fn machine_mut(&mut self, name: &str) -> Option<&mut QueueMachine> {
        self.machines.iter_mut().find(|m| m.name == name)
    }

    /// When the next held-back allocation is due on any machine.
    pub fn next_release_us(&self) -> Option<TimeUs> {
        self.machines
            .iter()
            .filter_map(|m| m.allocator.next_release_us())
            .min()
    }
}
