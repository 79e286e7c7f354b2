//! `spalloc-server`: the SpiNNaker partitioning server. Parses the command line and hands
//! over to [`spalloc::server::run`]; everything else lives in the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

/// The SpiNNaker partitioning server (spalloc): shares SpiNNaker machines among users.
///
/// State is kept in an append-only journal directory; a restart resumes every job.
/// Clients speak the spalloc JSON protocol (e.g. `pip install spalloc`).
#[derive(FromArgs)]
#[argh(
    example = "{command_name} --journal /var/lib/spalloc --config /etc/spalloc/machines.json\n{command_name} --journal /tmp/demo --config examples/machines.json --simulate-bmps",
    note = "Signals: SIGHUP re-reads the --config file (an invalid file is logged and the current\nconfiguration kept); SIGINT or SIGTERM stop cleanly, writing a snapshot and leaving powered\nboards on. Logs go to stderr. Inspect a journal with spalloc-replay DIR.\n\nLimits (--limit NAME=VALUE, repeatable; defaults in brackets; see the README's Limits):\n  clients_max             clients connected at once [20000; fitted to ulimit -n]\n  output_bytes_max        unread output per client before it is dropped [16777216]\n  output_total_bytes_max  unsent output across all clients [536870912]\n  reply_bytes_max         largest single reply; larger gets an exception [67108864]\n  input_total_bytes_max   received, unhandled input across all clients [268435456]\n  watch_entries_max       jobs and machines watched one by one per client [4096]\n  watch_entries_total_max  the same across all clients [262144]\n  string_bytes_max        owner, reason, tag, machine name length [1024]\n  tags_max                tags per create_job [64]\n  jobs_max                live jobs in all [20000]\n  jobs_per_owner_max      live jobs per owner [2000]\n  jobs_per_host_max       live jobs per client host [5000]\n  accept_backoff_ms       pause after a failed accept (out of descriptors) [100]\n  power_change_gap_ms     one power change per job per this long, sustained [1000]\n  power_change_burst_max  power changes per job back to back before that [10]\n  requests_per_pass_max   one client's requests handled per loop pass [64]\n  request_bytes_per_pass_max  one client's request bytes per loop pass [65536]",
    error_code(1, "the server could not start (bad configuration, journal locked or damaged, address in use) or failed"),
    error_code(2, "bad command line")
)]
struct Args {
    /// journal directory (created if missing), e.g. /var/lib/spalloc
    #[argh(option)]
    journal: Option<PathBuf>,
    /// JSON configuration file; without it the configuration recorded in the journal is used
    #[argh(option)]
    config: Option<PathBuf>,
    /// TCP port to listen on (overrides the file; default 22244)
    #[argh(option)]
    port: Option<u16>,
    /// IP address to listen on (overrides the file; default all interfaces)
    #[argh(option)]
    ip: Option<String>,
    /// start with no jobs, moving the old journal aside (it is renamed, not deleted)
    #[argh(switch)]
    cold_start: bool,
    /// only log errors
    #[argh(switch)]
    quiet: bool,
    /// run a BMP simulator in-process at every configured BMP address (loopback only), so no
    /// hardware is needed
    #[argh(switch)]
    simulate_bmps: bool,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    /// most clients connected at once (default 20000; each needs a file descriptor): the
    /// same as --limit clients_max=N
    #[argh(option)]
    max_clients: Option<usize>,
    /// set a limit, NAME=VALUE (repeatable; the names are listed below)
    #[argh(option)]
    limit: Vec<String>,
    /// journaled events between snapshots (default 100000): a restart replays at most this
    /// many; each snapshot is a few hundred KB
    #[argh(option)]
    snapshot_every: Option<u64>,
    /// after a restart, the least time (seconds, default 30) any job gets before its
    /// keepalive can expire, however short the keepalive: clients need a few seconds to
    /// reconnect (the stock client's keepalive process about 5)
    #[argh(option)]
    restart_grace_s: Option<f64>,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let rest: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let args = match Args::from_args(&["spalloc-server"], &rest) {
        Ok(args) => args,
        // --help, or a bad command line (exit 2: argh's own 1 would read as a failed start).
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    let _ = writeln!(std::io::stdout(), "{}", early.output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprintln!(
                        "{}\nRun spalloc-server --help for more information.",
                        early.output
                    );
                    ExitCode::from(2)
                }
            };
        }
    };
    if args.version {
        println!("spalloc-server {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let Some(journal) = args.journal else {
        eprintln!("spalloc-server: --journal DIR is required (see --help)");
        return ExitCode::from(2);
    };
    let restart_grace_s = args
        .restart_grace_s
        .unwrap_or(spalloc::server::RESTART_GRACE_US as f64 / 1e6);
    if !(0.0..=86_400.0).contains(&restart_grace_s) {
        eprintln!("spalloc-server: --restart-grace-s must be between 0 and 86400 seconds");
        return ExitCode::from(2);
    }
    let mut limits = spalloc::server::Limits::default();
    if let Some(n) = args.max_clients {
        limits.clients_max = n;
    }
    for setting in &args.limit {
        if let Err(e) = limits.set(setting) {
            eprintln!("spalloc-server: {e}");
            return ExitCode::from(2);
        }
    }
    // A bound the admin chose is kept even above the descriptor limit (with a warning).
    let fit_clients_to_fds = args.max_clients.is_none()
        && !args
            .limit
            .iter()
            .any(|l| l.split('=').next().map(str::trim) == Some("clients_max"));
    let opts = spalloc::server::Options {
        fit_clients_to_fds,
        journal,
        config: args.config,
        port: args.port,
        ip: args.ip,
        cold_start: args.cold_start,
        quiet: args.quiet,
        simulate_bmps: args.simulate_bmps,
        limits,
        snapshot_every_events: args
            .snapshot_every
            .unwrap_or(spalloc::server::SNAPSHOT_EVERY_EVENTS),
        restart_grace_us: (restart_grace_s * 1e6) as u64,
    };
    if opts.snapshot_every_events == 0 {
        eprintln!("spalloc-server: --snapshot-every must be at least 1");
        return ExitCode::from(2);
    }
    match spalloc::server::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spalloc-server: {e}");
            ExitCode::FAILURE
        }
    }
}
