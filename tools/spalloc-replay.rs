//! `spalloc-replay`: the incident debugger. Answers "why was my job killed at 3 am?" and
//! "where did those boards go?" from a server's journal, by folding the exact events the
//! server folded through the same core code (see `spalloc::replay`).
//!
//! It reads the journal without a lock and never modifies it, so it is safe to run against
//! the journal of a running server.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;
use spalloc::replay::usage::{
    jobs_csv, jobs_in, jobs_json, jobs_text, GroupBy, Ledger, Usage, Window,
};
use spalloc::replay::{
    self, at_text, describe_step, parse_position, state_json, step_json, ErrorKind, JobHistory,
    Position, ReplayError, Source, Summary,
};
use spalloc::timefmt::parse_time;

/// Replay a spalloc-server journal to explain what happened: a summary, every event, the
/// life of one job, the state at a moment (with board maps), accounting (usage per owner,
/// machine or host; every job of a window), a full consistency check, or a salvage of the
/// good records of a damaged journal.
///
/// With no mode option, prints a summary: time span, events, snapshots, jobs created and
/// ended, machines, and the state at the end.
#[derive(FromArgs)]
#[argh(
    example = "\
{command_name} /var/lib/spalloc
{command_name} /var/lib/spalloc --job 1234
{command_name} /var/lib/spalloc --events --from 2026-11-21T02:50:00Z --to 2026-11-21T03:10:00Z
{command_name} /var/lib/spalloc --events --from #5000 --to #5100 --json
{command_name} /var/lib/spalloc --at 2026-11-21T03:00:00Z
{command_name} /var/lib/spalloc --verify
{command_name} /var/lib/spalloc --usage --since 2026-11-01 --until 2026-12-01 --by owner --csv
{command_name} /var/lib/spalloc --jobs --since 2026-11-21T00:00:00Z --json
{command_name} /var/lib/spalloc --salvage /var/lib/spalloc-salvaged",
    note = "\
Positions (--from, --to, --at): a record's sequence number is written #N or seq:N (quote
the # in a shell: '#123'); anything else is a time: ISO-8601 (2026-11-21T03:00:00Z,
2026-11-21 03:00, offsets like +01:00 allowed; no offset means UTC) or Unix seconds
(1795252596 or 1795252596.5). A bare number is therefore always Unix seconds, never a
sequence number. A time position means every event whose time is at or before it (--at,
--to) or at or after it (--from).

Times are printed in UTC as ISO-8601. Records are numbered from #1; --events prints
'#SEQ TIME EVENT => what the core did'.

If the oldest records were deleted by the journal's retention, replay starts from the oldest
retained snapshot (the state it holds) and every output says so.

--json: one JSON document on stdout, except --events --json which prints JSON Lines (one
object per event: seq, time, time_us, kind, text, event, log, bmp_issued, created,
allocated, ended, released, and for commands peer and command, for BMP completions
bmp_completed and failure).",
    error_code(0, "success (for --verify: the journal is sound)"),
    error_code(1, "--verify found a problem (printed as PROBLEM: ..., or in \"problem\")"),
    error_code(
        2,
        "usage error, or the journal cannot be read (missing directory, unknown format version, damaged journal outside --verify, sequence number out of range, unknown job)"
    )
)]
struct Args {
    /// the journal directory (the server's --journal DIR)
    #[argh(positional)]
    dir: PathBuf,

    /// print every event, one line each
    #[argh(switch)]
    events: bool,

    /// with --events: start at this position (#SEQ, seq:SEQ, ISO-8601 time or Unix seconds)
    #[argh(option)]
    from: Option<String>,

    /// with --events: stop after this position
    #[argh(option)]
    to: Option<String>,

    /// print the full life of job ID: creation, allocation, power, BMP outcomes, keepalive
    /// gaps, and why and when it ended
    #[argh(option)]
    job: Option<u64>,

    /// print the state at a position (#SEQ, seq:SEQ, ISO-8601 time or Unix seconds),
    /// with a map of each machine's boards
    #[argh(option)]
    at: Option<String>,

    /// check every checksum, the core's invariants after every event, and every snapshot
    /// against the fold; exit 1 with the first problem found (slow on big journals: it runs
    /// the core's full invariant check after every event)
    #[argh(switch)]
    verify: bool,

    /// accounting per group (see --by): jobs, board-hours, waiting time (queued to ready)
    /// and end reasons, over --since/--until (default: the whole retained history)
    #[argh(switch)]
    usage: bool,

    /// accounting: every job of the --since/--until window with owner, host, machine,
    /// boards, times, waiting time, board-hours and end reason
    #[argh(switch)]
    jobs: bool,

    /// with --usage or --jobs: the window's start (ISO-8601 time or Unix seconds)
    #[argh(option)]
    since: Option<String>,

    /// with --usage or --jobs: the window's end (ISO-8601 time or Unix seconds)
    #[argh(option)]
    until: Option<String>,

    /// with --usage: group by owner (default), machine or host
    #[argh(option)]
    by: Option<String>,

    /// with --usage or --jobs: CSV instead of a table
    #[argh(switch)]
    csv: bool,

    /// write a new journal to directory OUT holding every good record before the first
    /// damage (and say exactly what was lost); a server can start from it
    #[argh(option)]
    salvage: Option<PathBuf>,

    /// machine-readable output (see below)
    #[argh(switch)]
    json: bool,
}

/// Write to stdout; a closed pipe (`spalloc-replay … | head`) ends the program quietly
/// instead of panicking.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

macro_rules! out {
    ($($t:tt)*) => { emit(&format!($($t)*)) };
}

macro_rules! outln {
    ($($t:tt)*) => { emit(&format!("{}\n", format_args!($($t)*))) };
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let name = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_else(|| "spalloc-replay".into());
    // (A bad command line exits 2: 1 here means "--verify found a problem".)
    let args: Args = match spalloc::cli::parse(&name) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spalloc-replay: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn usage(message: &str) -> ReplayError {
    ReplayError {
        kind: ErrorKind::Usage,
        message: message.to_string(),
    }
}

fn position(text: &Option<String>, what: &str) -> Result<Option<Position>, ReplayError> {
    text.as_deref()
        .map(|t| parse_position(t).map_err(|e| usage(&format!("{what}: {e}"))))
        .transpose()
}

fn print_json(v: &serde_json::Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values always render")
    );
}

fn run(args: &Args) -> Result<ExitCode, ReplayError> {
    let modes = [
        args.events,
        args.job.is_some(),
        args.at.is_some(),
        args.verify,
        args.usage,
        args.jobs,
        args.salvage.is_some(),
    ];
    if modes.iter().filter(|m| **m).count() > 1 {
        return Err(usage(
            "choose one of --events, --job, --at, --verify, --usage, --jobs and --salvage (or \
             none, for a summary)",
        ));
    }
    if !(args.usage || args.jobs) && (args.since.is_some() || args.until.is_some() || args.csv) {
        return Err(usage(
            "--since, --until and --csv go with --usage or --jobs",
        ));
    }
    if !args.usage && args.by.is_some() {
        return Err(usage("--by goes with --usage"));
    }
    if args.csv && args.json {
        return Err(usage("choose one of --csv and --json"));
    }
    if !args.events && (args.from.is_some() || args.to.is_some()) {
        return Err(usage("--from and --to go with --events"));
    }
    if !args.dir.exists() {
        return Err(usage(&format!(
            "{}: no such directory (give the server's --journal directory)",
            args.dir.display()
        )));
    }

    if args.verify {
        // Long verifies report progress, but only to a person watching a terminal.
        let tty = std::io::stderr().is_terminal();
        let outcome = replay::verify(&args.dir, &mut |seq, last| {
            if tty {
                eprint!("\rverifying: record #{seq} of #{last}");
            }
        })?;
        if tty && outcome.events_folded >= replay::VERIFY_PROGRESS_EVERY {
            eprintln!();
        }
        if args.json {
            print_json(&outcome.json());
        } else {
            out!("{}", outcome.text());
        }
        return Ok(if outcome.problem.is_some() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }

    if let Some(out_dir) = &args.salvage {
        let report = replay::salvage::salvage(&args.dir, out_dir)?;
        if args.json {
            print_json(&report.json());
        } else {
            out!("{}", report.text());
        }
        return Ok(ExitCode::SUCCESS);
    }

    let source = Source::open(&args.dir)?;
    if args.usage || args.jobs {
        let time = |t: &Option<String>, what: &str| -> Result<Option<u64>, ReplayError> {
            t.as_deref()
                .map(|t| parse_time(t).map_err(|e| usage(&format!("{what}: {e}"))))
                .transpose()
        };
        let (since, until) = (time(&args.since, "--since")?, time(&args.until, "--until")?);
        if let (Some(a), Some(b)) = (since, until) {
            if b < a {
                return Err(usage("--until is before --since"));
            }
        }
        let by = GroupBy::parse(args.by.as_deref().unwrap_or("owner")).map_err(|e| usage(&e))?;
        let ledger = Ledger::build(&source)?;
        let window = Window::new(&ledger, since, until);
        if args.usage {
            let u = Usage::build(&ledger, window, by);
            if args.json {
                print_json(&u.json(&source.notes));
            } else if args.csv {
                out!("{}", u.csv());
            } else {
                out!("{}", u.text(&source.notes));
            }
        } else {
            let jobs = jobs_in(&ledger, &window);
            if args.json {
                print_json(&jobs_json(&jobs, &window, &source.notes));
            } else if args.csv {
                out!("{}", jobs_csv(&jobs, &window));
            } else {
                out!("{}", jobs_text(&jobs, &window, &source.notes));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.events {
        let from = position(&args.from, "--from")?;
        let to = position(&args.to, "--to")?;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        if !args.json {
            for n in &source.notes {
                let _ = writeln!(out, "note: {n}");
            }
        }
        let mut broken_pipe = false;
        replay::events(&source, from, to, |step| {
            if broken_pipe {
                return;
            }
            let line = if args.json {
                step_json(step).to_string()
            } else {
                describe_step(step)
            };
            // `| head` closes the pipe: stop writing quietly.
            broken_pipe = writeln!(out, "{line}").is_err();
        })?;
        let _ = out.flush();
    } else if let Some(id) = args.job {
        let h = JobHistory::build(&source, id)?;
        if args.json {
            let mut v = serde_json::to_value(&h).expect("history serialises");
            v["notes"] = serde_json::json!(source.notes);
            print_json(&v);
        } else {
            out!("{}", h.text(&source.notes));
        }
    } else if let Some(at) = &args.at {
        let pos = position(&Some(at.clone()), "--at")?.expect("given");
        let (folder, last) = replay::state_at(&source, pos)?;
        if args.json {
            let mut v = state_json(&folder);
            v["at"] = serde_json::json!(pos.to_string());
            v["notes"] = serde_json::json!(source.notes);
            print_json(&v);
        } else {
            out!("{}", at_text(&folder, last.as_ref(), pos, &source.notes));
        }
    } else {
        let s = Summary::build(&source)?;
        if args.json {
            print_json(&s.json());
        } else {
            out!("{}", s.text());
        }
    }
    Ok(ExitCode::SUCCESS)
}
