//! A model facility for the offline workloads: a core kept busy the way a facility would
//! keep it, optionally writing the journal as it goes.

use std::path::Path;
use std::time::{Duration, Instant};

use spalloc::core::rng::Rng;
use spalloc::core::sim::Sim;
use spalloc::core::{Command, Core, CreateJob, Effect, Event, JobId, JobRequest, JobTarget};

/// The journal being written by the generator: batches of encoded events, snapshots
/// every `SNAPSHOT_EVERY_EVENTS` as the server takes them.
pub struct JournalSink {
    pub journal: spalloc_journal::Journal,
    pub batch: Vec<Vec<u8>>,
    pub written: u64,
    pub last_snapshot: u64,
    /// Take snapshots (which let the journal drop the segments they cover).
    pub snapshots: bool,
}

/// A core kept busy the way a facility would: jobs of mixed sizes come and go, keeping the
/// 1,200-board machine 50–80% full; BMP requests complete at once.
pub struct Facility {
    /// The core and its clock, folded by the one fold-and-drain loop (`core::sim::Sim`):
    /// BMP requests complete at once, logs and notifications are dropped. The facility
    /// dereferences to it (`core`, `now_us`, `folded`).
    pub sim: Sim,
    pub rng: Rng,
    /// Live jobs and how many boards each holds (0 while queued).
    pub live: Vec<(JobId, u32)>,
    pub used_boards: u64,
    pub total_boards: u64,
    pub keepalive_s: Option<f64>,
    pub sink: Option<JournalSink>,
    /// Ticks folded by `step`, and the time they took.
    pub ticks: u64,
    pub tick_time: Duration,
}

impl std::ops::Deref for Facility {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.sim
    }
}

impl std::ops::DerefMut for Facility {
    fn deref_mut(&mut self) -> &mut Sim {
        &mut self.sim
    }
}

impl Facility {
    pub fn new(config: spalloc::config::Config, keepalive_s: Option<f64>, now_us: u64) -> Facility {
        let total_boards = config.machines.iter().map(|m| m.boards.len() as u64).sum();
        let mut sim = Sim::from_core(Core::new(), now_us);
        sim.check = false;
        sim.record = false;
        sim.hook = Some(Box::new(|e| matches!(e, Effect::Bmp(_)).then_some(e)));
        let mut f = Facility {
            sim,
            rng: Rng::new(0x9e37_79b9_7f4a_7c15),
            live: Vec::new(),
            used_boards: 0,
            total_boards,
            keepalive_s,
            sink: None,
            ticks: 0,
            tick_time: Duration::ZERO,
        };
        f.event(Event::Configure { now_us, config });
        f
    }

    /// Fold one event (recording it if a journal is being written), then complete every
    /// BMP request it caused, as the server would with instant BMPs.
    pub fn event(&mut self, e: Event) -> Option<spalloc::core::Response> {
        self.sim.record = self.sink.is_some();
        let reply = self.sim.event(e);
        if let Some(sink) = &mut self.sink {
            for e in self.sim.events.drain(..) {
                sink.batch.push(spalloc::server::encode_event(&e));
            }
            self.sim.bmp_log.clear();
        }
        reply
    }

    pub fn command(&mut self, command: Command) -> Option<spalloc::core::Response> {
        self.event(Event::Command {
            now_us: self.now_us,
            peer: "127.0.0.1".to_string(),
            command,
        })
    }

    /// A job shape from a mix seen at a facility: mostly small jobs, a few large ones.
    pub fn shape(&mut self) -> JobRequest {
        match self.rng.below(100) {
            0..=39 => JobRequest::OneBoard,
            40..=59 => JobRequest::Boards(self.rng.range_i64(2, 12)),
            60..=79 => JobRequest::Triads(self.rng.range_i64(1, 3), self.rng.range_i64(1, 3)),
            80..=94 => JobRequest::Boards(self.rng.range_i64(13, 60)),
            _ => JobRequest::Triads(self.rng.range_i64(4, 6), self.rng.range_i64(4, 6)),
        }
    }

    pub fn create_request(&mut self) -> Command {
        let request = self.shape();
        let mut c: CreateJob = spalloc::core::sim::job(request);
        c.owner = "bench".into();
        c.keepalive_s = self.keepalive_s;
        c.min_ratio = 0.333;
        c.target = JobTarget::Tags(vec!["default".into()]);
        Command::CreateJob(c)
    }

    pub fn boards_of(&self, job: JobId) -> u32 {
        self.core
            .job_machine_info(job)
            .boards
            .map_or(0, |b| b.len() as u32)
    }

    /// Re-count boards of jobs that were queued (a destroy may have let them in).
    pub fn recount_queued(&mut self) {
        for i in 0..self.live.len() {
            if self.live[i].1 == 0 {
                let b = self.boards_of(self.live[i].0);
                self.live[i].1 = b;
                self.used_boards += u64::from(b);
            }
        }
    }

    pub fn fill(&self) -> f64 {
        self.used_boards as f64 / self.total_boards as f64
    }

    /// Create or destroy, keeping the machine 50–80% full. Returns (was a create, time of
    /// the core's work: the command and the BMP completions it caused).
    pub fn step(&mut self) -> (bool, Duration) {
        // Freed boards drain (power off, then the free delay) before a tick releases them.
        if self.core.tick_due(self.now_us) {
            let t = Instant::now();
            self.event(Event::Tick {
                now_us: self.now_us,
            });
            self.tick_time += t.elapsed();
            self.ticks += 1;
            self.recount_queued();
        }
        let fill = self.fill();
        // The queue is FIFO (a large job at its head holds back the rest, as in the
        // original), so a facility with a queue stops submitting until it drains.
        let queued = self.live.iter().filter(|j| j.1 == 0).count();
        let create = if self.live.is_empty() {
            true
        } else if queued >= 4 {
            false
        } else if fill < 0.5 {
            true
        } else if fill > 0.8 {
            false
        } else {
            self.rng.below(2) == 0
        };
        if create {
            let command = self.create_request();
            let t = Instant::now();
            let reply = self.command(command);
            let took = t.elapsed();
            if let Some(spalloc::core::Response::JobId(id)) = reply {
                let b = self.boards_of(id);
                self.used_boards += u64::from(b);
                self.live.push((id, b));
            }
            (true, took)
        } else {
            let i = self.rng.below(self.live.len() as u64) as usize;
            let (id, b) = self.live.swap_remove(i);
            self.used_boards -= u64::from(b);
            let t = Instant::now();
            self.command(Command::DestroyJob {
                job_id: id,
                reason: None,
            });
            let took = t.elapsed();
            self.recount_queued();
            (false, took)
        }
    }

    /// Append the pending batch to the journal, and snapshot as the server does.
    pub fn flush(&mut self, force: bool) -> Result<(), String> {
        let Some(sink) = &mut self.sink else {
            return Ok(());
        };
        if sink.batch.is_empty() || (!force && sink.batch.len() < 1000) {
            return Ok(());
        }
        let last = sink
            .journal
            .append_batch(sink.batch.iter().map(|b| b.as_slice()))
            .map_err(|e| format!("journal: {e}"))?;
        sink.written += sink.batch.len() as u64;
        sink.batch.clear();
        if sink.snapshots && last >= sink.last_snapshot + spalloc::server::SNAPSHOT_EVERY_EVENTS {
            let bytes = rmp_serde::to_vec_named(&self.sim.core).map_err(|e| e.to_string())?;
            sink.journal
                .write_snapshot(last, &bytes)
                .map_err(|e| format!("snapshot: {e}"))?;
            sink.last_snapshot = last;
        }
        Ok(())
    }
}

pub fn load_config(path: &Path) -> Result<spalloc::config::Config, String> {
    let mut c = spalloc::config::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    c.seconds_before_free_s = 0.0;
    Ok(c)
}

pub fn mean_us(total: Duration, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        total.as_secs_f64() * 1e6 / n as f64
    }
}
