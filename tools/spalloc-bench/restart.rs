//! `restart`: time from starting `spalloc-server` on a journal of N events until it
//! accepts a connection.

use argh::FromArgs;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use crate::replay::{generate_journal, journal_dir};
use crate::report::Report;

/// Time from starting spalloc-server on a journal of N events (with snapshots) until it accepts.
#[derive(FromArgs)]
#[argh(subcommand, name = "restart")]
pub struct Restart {
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
    /// the server binary (default: spalloc-server beside this binary)
    #[argh(option)]
    pub server_bin: Option<PathBuf>,
    /// port for the restarted server (default 22590)
    #[argh(option, default = "22590")]
    pub port: u16,
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

/// Time from starting `spalloc-server` on a journal of N events (with snapshots) until it
/// accepts a connection; the server is killed (SIGKILL, so no shutdown snapshot changes the
/// journal's shape) after each try.
pub fn run_restart(args: &Restart) -> Result<Report, String> {
    let dir = journal_dir(&args.journal);
    let mut r = Report::new("restart", &args.label);
    if !args.reuse_journal {
        let t = Instant::now();
        let written = generate_journal(&args.config, args.events, &dir, true)?;
        r.put("events_written", written);
        r.putf("generate_s", t.elapsed().as_secs_f64());
    }
    let reader = spalloc_journal::Reader::open(&dir).map_err(|e| e.to_string())?;
    r.put("journal_last_seq", reader.last_seq());
    r.put("snapshots", reader.snapshots().len() as u64);
    drop(reader);
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("spalloc-server"),
    };
    let addr: SocketAddr = ([127, 0, 0, 1], args.port).into();
    let mut times = Vec::new();
    for _ in 0..args.repeat {
        let t = Instant::now();
        let mut child = Process::new(&bin)
            .arg("--journal")
            .arg(&dir)
            .arg("--config")
            .arg(&args.config)
            .args([
                "--simulate-bmps",
                "--quiet",
                "--port",
                &args.port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let accepted = loop {
            if TcpStream::connect(addr).is_ok() {
                break true;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the server exited: {status}"));
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let took = t.elapsed().as_secs_f64();
        let _ = child.kill();
        let _ = child.wait();
        if !accepted {
            return Err("the server did not accept within 120 s".into());
        }
        times.push(took);
    }
    times.sort_by(f64::total_cmp);
    r.put(
        "tries_s",
        times
            .iter()
            .map(|t| format!("{t:.3}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    r.putf("restart_median_s", times[times.len() / 2]);
    Ok(r)
}
