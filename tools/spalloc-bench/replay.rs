//! `replay`: generate a journal of N events from the model facility, then time folding it
//! (read, decode, `Core::handle`) as recovery does.

use argh::FromArgs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spalloc::core::{Command, Core, Event};

use crate::facility::{load_config, mean_us, Facility, JournalSink};
use crate::report::Report;

/// Fold a generated journal of N events: read, decode, Core::handle.
#[derive(FromArgs)]
#[argh(subcommand, name = "replay")]
pub struct Replay {
    /// configuration file (default benchmarks/spin1m-bench.json)
    #[argh(option, default = "PathBuf::from(\"benchmarks/spin1m-bench.json\")")]
    pub config: PathBuf,
    /// journal events to generate (default 1000000)
    #[argh(option, default = "1_000_000")]
    pub events: u64,
    /// journal directory to (re)create (default: a fresh one under /tmp)
    #[argh(option)]
    pub journal: Option<PathBuf>,
    /// reuse the journal in --journal as it is instead of generating one
    #[argh(switch)]
    pub reuse_journal: bool,
    /// repetitions of the timed part (default 3)
    #[argh(option, default = "3")]
    pub repeat: usize,
    /// also print the result as one JSON object
    #[argh(switch)]
    pub json: bool,
    /// a label copied into the result (e.g. ours, original)
    #[argh(option, default = "String::from(\"-\")")]
    pub label: String,
}

/// Where generated journals go: `--journal`, or a fresh directory under /tmp.
pub fn journal_dir(journal: &Option<PathBuf>) -> PathBuf {
    journal.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("spalloc-bench-journal-{}", std::process::id()))
    })
}

/// Write a journal of about `events` events from the model facility: 80% keepalives /
/// get_job_state on live jobs, the rest creates and destroys with their BMP completions,
/// ticks when due; snapshots as the server takes them.
/// (`config` and `events` are the workload's `--config` and `--events`.)
pub fn generate_journal(
    config: &Path,
    events: u64,
    dir: &Path,
    snapshots: bool,
) -> Result<u64, String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let opened = spalloc_journal::Journal::open(dir).map_err(|e| format!("journal: {e}"))?;
    let config = load_config(config)?;
    // Start in the past, 200 µs per step, so a restart finds the history behind it.
    let step_us = 200;
    let start = spalloc::timefmt::now_us() - events * step_us - 60_000_000;
    let mut f = Facility::new(config.clone(), Some(60.0), start);
    f.sink = Some(JournalSink {
        journal: opened.journal,
        batch: vec![spalloc::server::encode_event(&Event::Configure {
            now_us: start,
            config,
        })],
        written: 0,
        last_snapshot: 0,
        snapshots,
    });
    let mut flip = false;
    while f.folded < events {
        if !f.live.is_empty() && f.rng.below(10) < 8 {
            let (job_id, _) = f.live[f.rng.below(f.live.len() as u64) as usize];
            flip = !flip;
            f.command(if flip {
                Command::JobKeepalive { job_id }
            } else {
                Command::GetJobState { job_id }
            });
        } else {
            f.step();
        }
        f.now_us += step_us;
        if f.core.tick_due(f.now_us) {
            f.event(Event::Tick { now_us: f.now_us });
        }
        f.flush(false)?;
    }
    f.flush(true)?;
    Ok(f.sink.as_ref().map_or(0, |s| s.written))
}

/// Time folding a journal: read, decode, `Core::handle` (effects discarded), as recovery does.
pub fn run_replay(args: &Replay) -> Result<Report, String> {
    let dir = journal_dir(&args.journal);
    let t = Instant::now();
    let written = if args.reuse_journal {
        0
    } else {
        // No snapshots: every event stays in the journal, to be folded from the first.
        generate_journal(&args.config, args.events, &dir, false)?
    };
    let generate_s = t.elapsed().as_secs_f64();
    let bytes: u64 = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let mut r = Report::new("replay", &args.label);
    r.put("journal", dir.display().to_string());
    r.put("events_written", written);
    r.putf("generate_s", generate_s);
    r.put("journal_bytes", bytes);
    // Three passes each time: read only, read+decode, read+decode+fold, to show the split.
    let mut read_s = Vec::new();
    let mut decode_s = Vec::new();
    let mut fold_s = Vec::new();
    let mut events = 0u64;
    for _ in 0..args.repeat {
        for pass in 0..3 {
            let t = Instant::now();
            let reader = spalloc_journal::Reader::open(&dir).map_err(|e| e.to_string())?;
            let mut core = Core::new();
            let mut n = 0u64;
            for rec in reader
                .records_from(reader.first_seq())
                .map_err(|e| e.to_string())?
            {
                let (_, bytes) = rec.map_err(|e| e.to_string())?;
                n += 1;
                if pass == 0 {
                    std::hint::black_box(&bytes);
                    continue;
                }
                let e = spalloc::server::decode_event(&bytes)?;
                if pass == 2 {
                    core.handle(&e);
                    core.discard_effects();
                } else {
                    std::hint::black_box(&e);
                }
            }
            std::hint::black_box(&core);
            let s = t.elapsed().as_secs_f64();
            [&mut read_s, &mut decode_s, &mut fold_s][pass].push(s);
            events = n;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (read, decode, fold) = (
        median(&mut read_s),
        median(&mut decode_s),
        median(&mut fold_s),
    );
    // One more pass timing each event by kind, to show where the fold's time goes.
    let reader = spalloc_journal::Reader::open(&dir).map_err(|e| e.to_string())?;
    let mut core = Core::new();
    let mut kinds: Vec<(&str, u64, Duration)> = Vec::new();
    for rec in reader
        .records_from(reader.first_seq())
        .map_err(|e| e.to_string())?
    {
        let (_, bytes) = rec.map_err(|e| e.to_string())?;
        let e = spalloc::server::decode_event(&bytes)?;
        let kind = match &e {
            Event::Command { command, .. } => match command {
                Command::CreateJob(_) => "create",
                Command::DestroyJob { .. } => "destroy",
                Command::JobKeepalive { .. } | Command::GetJobState { .. } => "keepalive",
                _ => "other_command",
            },
            Event::BmpDone { .. } => "bmp_done",
            Event::Tick { .. } => "tick",
            _ => "other",
        };
        let t = Instant::now();
        core.handle(&e);
        core.discard_effects();
        let took = t.elapsed();
        match kinds.iter_mut().find(|k| k.0 == kind) {
            Some(k) => {
                k.1 += 1;
                k.2 += took;
            }
            None => kinds.push((kind, 1, took)),
        }
    }
    for (kind, n, t) in &kinds {
        r.put(&format!("{kind}_events"), *n);
        r.putf(&format!("{kind}_fold_mean_us"), mean_us(*t, *n));
    }
    r.put("events", events);
    r.putf("read_s", read);
    r.putf("read_decode_s", decode);
    r.putf("read_decode_fold_s", fold);
    r.putf("events_per_s", events as f64 / fold);
    r.putf("read_decode_events_per_s", events as f64 / decode);
    Ok(r)
}
