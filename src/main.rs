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
    example = "{command_name} --journal /var/lib/spalloc --config /etc/spalloc/machines.json\n{command_name} --journal /tmp/demo --config examples/machines.json --simulate-bmps\n{command_name} --check-config /etc/spalloc/machines.json.new --journal /var/lib/spalloc",
    note = "Signals: SIGHUP re-reads the --config file (an invalid file is logged and the current\nconfiguration kept); SIGINT or SIGTERM stop cleanly, writing a snapshot and leaving powered\nboards on. Logs go to stderr. Inspect a journal with spalloc-replay DIR.",
    error_code(1, "the server could not start (bad configuration, journal locked or damaged, address in use) or failed; with --check-config: the file is not valid, or the journal cannot be read"),
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
    /// validate this configuration file and exit (0 valid, 1 with every problem listed);
    /// with --journal DIR, also preview what reloading it would do there: machines added,
    /// changed and removed, and which live jobs would be destroyed and why. Reads the
    /// journal without a lock: safe beside a running server, which it never touches
    #[argh(option)]
    check_config: Option<PathBuf>,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    /// most clients connected at once (default 20000; each needs a file descriptor)
    #[argh(option)]
    max_clients: Option<usize>,
    /// journaled events between snapshots (default 100000): a restart replays at most this
    /// many; each snapshot is a few hundred KB
    #[argh(option)]
    snapshot_every: Option<u64>,
    /// after a restart, the least time (seconds, default 30) any job gets before its
    /// keepalive can expire, however short the keepalive: clients need a few seconds to
    /// reconnect (the stock client's keepalive process about 5)
    #[argh(option)]
    restart_grace_s: Option<f64>,
    /// days of journal history to keep (default 90): older segments are deleted once a
    /// snapshot covers them, never because of restarts; spalloc-replay reads all of it
    #[argh(option)]
    retain_days: Option<u32>,
    /// the admin socket (Unix domain, mode 0600) spalloc-admin talks to; default admin.sock
    /// in the journal directory
    #[argh(option)]
    admin_socket: Option<PathBuf>,
    /// with --simulate-bmps, make a simulated board fail (repeatable):
    /// HOST[:PORT]/BOARD=power|fpga|link[*N] or HOST[:PORT]=silent[*N] (see spalloc-bmp-sim
    /// --help)
    #[argh(option)]
    simulate_fault: Vec<String>,
    /// serve the status page, Prometheus metrics (/metrics) and a JSON API (/api/...) over
    /// HTTP at ADDR:PORT, e.g. 127.0.0.1:22280 (off unless given; loopback only unless
    /// --http-allow-remote)
    #[argh(option)]
    http: Option<String>,
    /// let --http listen on an address that is not loopback (the pages are read-only, but
    /// show every job's owner and host)
    #[argh(switch)]
    http_allow_remote: bool,
    /// most HTTP connections at once (default 128)
    #[argh(option)]
    http_max_connections: Option<usize>,
    /// most status pages (event streams) open at once (default 32)
    #[argh(option)]
    http_max_subscribers: Option<usize>,
    /// most bytes a status page may leave unread before it is disconnected (default
    /// 4194304); it reconnects and starts again from the current state
    #[argh(option)]
    http_subscriber_backlog_bytes: Option<usize>,
}

/// The HTTP port's options from `--http ADDR:PORT` and its companions.
fn http_options(addr: &str, args: &Args) -> Result<spalloc::server::http::HttpOptions, String> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| format!("--http {addr:?}: expected ADDR:PORT, e.g. 127.0.0.1:22280"))?;
    if !addr.ip().is_loopback() && !args.http_allow_remote {
        return Err(format!(
            "--http {addr}: not a loopback address; add --http-allow-remote to serve the status page to other hosts"
        ));
    }
    let mut opts = spalloc::server::http::HttpOptions::new(addr);
    if let Some(n) = args.http_max_connections {
        opts.max_connections = n;
    }
    if let Some(n) = args.http_max_subscribers {
        opts.max_subscribers = n;
    }
    if let Some(n) = args.http_subscriber_backlog_bytes {
        opts.subscriber_backlog_bytes = n;
    }
    if opts.max_connections == 0 {
        return Err("--http-max-connections must be at least 1".into());
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    // `-h` is `--help` too.
    let rest: Vec<&str> = argv
        .iter()
        .skip(1)
        .map(|a| if a == "-h" { "--help" } else { a.as_str() })
        .collect();
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
    if let Some(file) = &args.check_config {
        return if spalloc::check_config::run(file, args.journal.as_deref()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let Some(journal) = args.journal.clone() else {
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
    let http = match args.http.as_deref().map(|a| http_options(a, &args)).transpose() {
        Ok(http) => http,
        Err(e) => {
            eprintln!("spalloc-server: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = spalloc::server::Options {
        journal,
        config: args.config,
        port: args.port,
        ip: args.ip,
        cold_start: args.cold_start,
        quiet: args.quiet,
        simulate_bmps: args.simulate_bmps,
        max_clients: args.max_clients.unwrap_or(spalloc::server::MAX_CLIENTS),
        snapshot_every_events: args
            .snapshot_every
            .unwrap_or(spalloc::server::SNAPSHOT_EVERY_EVENTS),
        restart_grace_us: (restart_grace_s * 1e6) as u64,
        retain_days: args.retain_days.unwrap_or(spalloc::server::RETAIN_DAYS),
        admin_socket: args.admin_socket,
        simulate_faults: args.simulate_fault,
        http,
    };
    if !opts.simulate_faults.is_empty() && !opts.simulate_bmps {
        eprintln!("spalloc-server: --simulate-fault needs --simulate-bmps");
        return ExitCode::from(2);
    }
    if !(1..=spalloc::server::RETAIN_DAYS_MAX).contains(&opts.retain_days) {
        eprintln!(
            "spalloc-server: --retain-days must be between 1 and {}",
            spalloc::server::RETAIN_DAYS_MAX
        );
        return ExitCode::from(2);
    }
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
