//! `time-to-ready`: how long a job takes from `create_job` until it is ready, and how many
//! SCP exchanges that took, in total and on the busiest BMP.
//!
//! With `--simulate-config FILE` the bench serves the BMPs of FILE itself (the simulator of
//! `spalloc-bmp-sim`, with `--latency-ms`), so it sees every exchange: start the server on
//! the same configuration *without* `--simulate-bmps`. A BMP answers one request at a time
//! (bmp-protocol.md §1.8: the firmware is single-threaded and a client should keep one
//! request in flight per BMP), so the busiest BMP's exchanges are the sequential round trips
//! no server can avoid: `floor_ms` = that count × the latency. Without `--simulate-config`
//! (e.g. against the original server and its in-process fake BMPs) only the time is
//! reported.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use argh::FromArgs;
use spalloc::bmp::{SimOptions, Simulator};

use crate::client::{cmd, create_job, job_state, resolve, Conn};
use crate::report::Report;

/// Time from create_job until the job is ready, with the SCP exchanges it took.
#[derive(FromArgs)]
#[argh(subcommand, name = "time-to-ready")]
pub struct TimeToReady {
    /// server address, default 127.0.0.1:22244
    #[argh(option, default = "String::from(\"127.0.0.1:22244\")")]
    pub addr: String,
    /// boards per job (default 24)
    #[argh(option, default = "24")]
    pub boards: u32,
    /// jobs to time, one after another (default 5)
    #[argh(option, default = "5")]
    pub repeat: usize,
    /// serve the BMPs of this configuration in the bench (start the server on it without
    /// --simulate-bmps), counting every exchange
    #[argh(option)]
    pub simulate_config: Option<PathBuf>,
    /// with --simulate-config: milliseconds each exchange takes (default 1)
    #[argh(option, default = "1")]
    pub latency_ms: u64,
    /// also print the result as one JSON object
    #[argh(switch)]
    pub json: bool,
    /// a label copied into the result (e.g. ours, original)
    #[argh(option, default = "String::from(\"-\")")]
    pub label: String,
}

/// Waits until the simulator's log has not grown for `quiet` (the BMP work a destroy caused
/// is over), at most `limit`.
fn settle(sim: &Simulator, quiet: Duration, limit: Duration) {
    let end = Instant::now() + limit;
    let mut len = sim.log().len();
    let mut since = Instant::now();
    while Instant::now() < end && since.elapsed() < quiet {
        std::thread::sleep(Duration::from_millis(5));
        let now = sim.log().len();
        if now != len {
            len = now;
            since = Instant::now();
        }
    }
}

pub fn run_time_to_ready(args: &TimeToReady) -> Result<Report, String> {
    let sim = match &args.simulate_config {
        Some(path) => {
            let config =
                spalloc::config::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let addrs = spalloc::bmp::config_endpoints(&config)?;
            let options = SimOptions {
                latency_ms: args.latency_ms,
                ..SimOptions::default()
            };
            Some(Simulator::start(&addrs, options).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let addr = resolve(&args.addr)?;
    let mut c = Conn::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let shape = args.boards.to_string();
    let mut ready_ms = Vec::new();
    let mut exchanges = Vec::new();
    let mut busiest = Vec::new();
    let mut bmps = Vec::new();
    let mut polls = 0u64;
    for _ in 0..args.repeat {
        if let Some(sim) = &sim {
            settle(sim, Duration::from_millis(100), Duration::from_secs(10));
            sim.clear_log();
        }
        let t = Instant::now();
        let job = create_job(&mut c, &shape).map_err(|e| format!("create_job: {e}"))?;
        loop {
            polls += 1;
            match job_state(&mut c, job).map_err(|e| format!("get_job_state: {e}"))? {
                3 => break,
                4 | 0 => return Err(format!("job {job} was destroyed before it was ready")),
                _ => std::thread::sleep(Duration::from_micros(200)),
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err(format!("job {job} not ready after 60 s"));
            }
        }
        ready_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if let Some(sim) = &sim {
            let log = sim.log();
            let mut per_bmp = std::collections::BTreeMap::new();
            for e in &log {
                *per_bmp.entry(e.endpoint).or_insert(0u64) += 1;
            }
            exchanges.push(log.len() as u64);
            busiest.push(per_bmp.values().copied().max().unwrap_or(0));
            bmps.push(per_bmp.len() as u64);
        }
        c.call(&cmd("destroy_job", &job.to_string(), ""))
            .map_err(|e| format!("destroy_job: {e}"))?;
    }
    let mut r = Report::new("time-to-ready", &args.label);
    r.put("boards", u64::from(args.boards));
    r.put("jobs", args.repeat as u64);
    ready_ms.sort_by(f64::total_cmp);
    r.putf("ready_ms_min", ready_ms.first().copied().unwrap_or(0.0));
    r.putf(
        "ready_ms_median",
        ready_ms.get(ready_ms.len() / 2).copied().unwrap_or(0.0),
    );
    r.putf("ready_ms_max", ready_ms.last().copied().unwrap_or(0.0));
    r.put("polls", polls);
    if sim.is_some() {
        r.put("latency_ms", args.latency_ms);
        r.put("bmps", bmps.iter().copied().max().unwrap_or(0));
        r.put("exchanges", exchanges.iter().copied().max().unwrap_or(0));
        let rounds = busiest.iter().copied().max().unwrap_or(0);
        r.put("busiest_bmp_exchanges", rounds);
        r.putf("floor_ms", (rounds * args.latency_ms) as f64);
    }
    Ok(r)
}
