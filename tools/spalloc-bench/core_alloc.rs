//! `core`: the state machine alone, create_job + destroy_job on a fragmenting machine.

use argh::FromArgs;
use std::path::PathBuf;
use std::time::Duration;

use crate::facility::{load_config, mean_us, Facility};
use crate::report::{CpuWindow, Report};

/// The state machine alone: create_job + destroy_job on a fragmenting 1,200-board machine.
#[derive(FromArgs)]
#[argh(subcommand, name = "core")]
pub struct CoreAlloc {
    /// configuration file (default benchmarks/spin1m-bench.json)
    #[argh(option, default = "PathBuf::from(\"benchmarks/spin1m-bench.json\")")]
    pub config: PathBuf,
    /// create+destroy pairs to measure (default 50000)
    #[argh(option, default = "50_000")]
    pub pairs: u64,
    /// also print the result as one JSON object
    #[argh(switch)]
    pub json: bool,
    /// a label copied into the result (e.g. ours, original)
    #[argh(option, default = "String::from(\"-\")")]
    pub label: String,
}

/// Allocation cost: create_job + destroy_job on a fragmenting machine kept 50–80% full.
pub fn run_core(args: &CoreAlloc) -> Result<Report, String> {
    let config = load_config(&args.config)?;
    let mut f = Facility::new(config, None, 1_700_000_000_000_000);
    // Fill and fragment first.
    for _ in 0..5_000 {
        f.step();
        f.now_us += 1_000;
    }
    f.ticks = 0;
    f.tick_time = Duration::ZERO;
    let (mut creates, mut destroys) = (0u64, 0u64);
    let (mut create_t, mut destroy_t) = (Duration::ZERO, Duration::ZERO);
    let mut samples = Vec::new();
    let mut fill_sum = 0.0;
    let mut steps = 0u64;
    let window = CpuWindow::start(None);
    while creates.min(destroys) < args.pairs {
        let (created, took) = f.step();
        f.now_us += 1_000;
        if created {
            creates += 1;
            create_t += took;
        } else {
            destroys += 1;
            destroy_t += took;
        }
        samples.push(took.as_nanos() as u64);
        fill_sum += f.fill();
        steps += 1;
        if f.live.len() > 20_000 {
            return Err(
                "more than 20,000 live jobs: the model is not keeping the machine busy".into(),
            );
        }
    }
    let mut r = Report::new("core", &args.label);
    r.put("boards", f.total_boards);
    r.put("creates", creates);
    r.put("destroys", destroys);
    r.putf("mean_fill", fill_sum / steps as f64);
    r.put("live_jobs_at_end", f.live.len() as u64);
    r.put(
        "queued_at_end",
        f.live.iter().filter(|(_, b)| *b == 0).count() as u64,
    );
    r.putf("create_mean_us", mean_us(create_t, creates));
    r.putf("destroy_mean_us", mean_us(destroy_t, destroys));
    r.putf(
        "pair_mean_us",
        mean_us(create_t, creates) + mean_us(destroy_t, destroys),
    );
    r.put("ticks", f.ticks);
    r.putf("tick_mean_us", mean_us(f.tick_time, f.ticks));
    r.latencies("op", &mut samples);
    window.finish(&mut r, "op", 0);
    Ok(r)
}
