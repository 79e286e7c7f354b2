//! `queue`: what a long queue costs the core. One job holds the whole machine and N
//! one-board jobs wait behind it; then `create_job` + `destroy_job` of one more (it joins
//! the queue's tail and leaves it), `job_keepalive` of a queued job, and a `tick`, each
//! timed; finally the big job is destroyed and the time until every queued job has boards
//! (the queue drained into the freed machine) is divided by N.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use argh::FromArgs;
use spalloc::core::{Command, CreateJob, Event, JobRequest, JobTarget, Response};

use crate::facility::{load_config, mean_us, Facility};
use crate::report::Report;

/// The core's cost per operation with N jobs queued behind one that holds the machine.
#[derive(FromArgs)]
#[argh(subcommand, name = "queue")]
pub struct Queue {
    /// configuration file (default benchmarks/spin1m-bench.json)
    #[argh(option, default = "PathBuf::from(\"benchmarks/spin1m-bench.json\")")]
    pub config: PathBuf,
    /// jobs queued (default 1000)
    #[argh(option, default = "1000")]
    pub queued: u64,
    /// operations of each kind to time (default 2000)
    #[argh(option, default = "2000")]
    pub ops: u64,
    /// also print the result as one JSON object
    #[argh(switch)]
    pub json: bool,
    /// a label copied into the result
    #[argh(option, default = "String::from(\"-\")")]
    pub label: String,
}

fn create(f: &mut Facility, request: JobRequest) -> Result<u64, String> {
    let mut c: CreateJob = spalloc::core::sim::job(request);
    c.owner = "bench".into();
    c.keepalive_s = Some(3600.0);
    c.target = JobTarget::Tags(vec!["default".into()]);
    match f.command(Command::CreateJob(c)) {
        Some(Response::JobId(id)) => Ok(id),
        other => Err(format!("create_job answered {other:?}")),
    }
}

pub fn run_queue(args: &Queue) -> Result<Report, String> {
    let config = load_config(&args.config)?;
    let (w, h) = (
        i64::from(config.machines[0].width),
        i64::from(config.machines[0].height),
    );
    let mut f = Facility::new(config, None, 1_700_000_000_000_000);
    let big = create(&mut f, JobRequest::Triads(w, h))?;
    if f.boards_of(big) == 0 {
        return Err("the whole-machine job did not get the machine".into());
    }
    let mut queued = Vec::new();
    for _ in 0..args.queued {
        queued.push(create(&mut f, JobRequest::OneBoard)?);
    }
    let (mut pair_t, mut keepalive_t, mut tick_t) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for i in 0..args.ops {
        f.now_us += 1_000;
        let t = Instant::now();
        let id = create(&mut f, JobRequest::OneBoard)?;
        f.command(Command::DestroyJob {
            job_id: id,
            reason: None,
        });
        pair_t += t.elapsed();
        if !queued.is_empty() {
            let job_id = queued[(i as usize * 7919) % queued.len()];
            let t = Instant::now();
            f.command(Command::JobKeepalive { job_id });
            keepalive_t += t.elapsed();
        }
        let t = Instant::now();
        f.event(Event::Tick { now_us: f.now_us });
        tick_t += t.elapsed();
    }
    let t = Instant::now();
    f.command(Command::DestroyJob {
        job_id: big,
        reason: None,
    });
    // The boards come back after the power-off (completed at once) and a tick.
    let mut ticks = 0;
    while ticks < 100 && queued.last().is_some_and(|&id| f.boards_of(id) == 0) {
        f.now_us += 1_000;
        f.event(Event::Tick { now_us: f.now_us });
        ticks += 1;
    }
    let drain = t.elapsed();
    let allocated = queued.iter().filter(|&&id| f.boards_of(id) > 0).count() as u64;
    let mut r = Report::new("queue", &args.label);
    r.put("boards", f.total_boards);
    r.put("queued", args.queued);
    r.put("ops", args.ops);
    r.putf("create_destroy_us", mean_us(pair_t, args.ops));
    r.putf("keepalive_us", mean_us(keepalive_t, args.ops));
    r.putf("tick_us", mean_us(tick_t, args.ops));
    r.put("drained", allocated);
    r.putf("drain_ms", drain.as_secs_f64() * 1e3);
    r.putf("drain_us_per_job", mean_us(drain, allocated));
    Ok(r)
}
