//! `spalloc-server`: the SpiNNaker partitioning server. Parses the command line and hands
//! over to [`spalloc::server::run`]; everything else lives in the library.

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
    note = "Signals: SIGHUP re-reads the --config file (an invalid file is logged and the current\nconfiguration kept); SIGINT or SIGTERM stop cleanly, writing a snapshot and leaving powered\nboards on. Logs go to stderr. Inspect a journal with spalloc-replay DIR.\n\nLimits (--limit NAME=VALUE, repeatable; defaults in brackets; see the README's Limits):\n  clients_max             clients connected at once [20000; fitted to ulimit -n]\n  output_bytes_max        unread output per client before it is dropped [16777216]\n  output_total_bytes_max  unsent output across all clients [536870912]\n  reply_bytes_max         largest single reply; larger gets an exception [67108864]\n  input_total_bytes_max   received, unhandled input across all clients [268435456]\n  watch_entries_max       jobs and machines watched one by one per client [4096]\n  watch_entries_total_max  the same across all clients [262144]\n  string_bytes_max        owner, reason, tag, machine name length [1024]\n  tags_max                tags per create_job [64]\n  jobs_max                live jobs in all [20000]\n  jobs_per_owner_max      live jobs per owner [2000]\n  jobs_per_host_max       live jobs per client host [5000]\n  listen_backlog_max      connections waiting to be accepted (capped by somaxconn) [4096]\n  accept_backoff_ms       pause after a failed accept (out of descriptors) [100]\n  power_change_gap_ms     one power change per job per this long, sustained [1000]\n  power_change_burst_max  power changes per job back to back before that [10]\n  requests_per_pass_max   one client's requests handled per loop pass [64]\n  request_bytes_per_pass_max  one client's request bytes per loop pass [65536]",
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
    /// with --simulate-bmps, milliseconds each exchange with a simulated BMP takes (one
    /// request at a time per BMP, BMPs in parallel), e.g. 1 to see how fast jobs become
    /// ready over a slow network; default 0
    #[argh(option, default = "0")]
    simulated_bmp_latency_ms: u64,
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
    let args: Args = match spalloc::cli::parse("spalloc-server") {
        Ok(args) => args,
        Err(code) => return code,
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
    let http = match args
        .http
        .as_deref()
        .map(|a| http_options(a, &args))
        .transpose()
    {
        Ok(http) => http,
        Err(e) => {
            eprintln!("spalloc-server: {e}");
            return ExitCode::from(2);
        }
    };
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
        retain_days: args.retain_days.unwrap_or(spalloc::server::RETAIN_DAYS),
        admin_socket: args.admin_socket,
        simulate_faults: args.simulate_fault,
        simulated_bmp_latency_ms: args.simulated_bmp_latency_ms,
        http,
    };
    if !opts.simulate_faults.is_empty() && !opts.simulate_bmps {
        eprintln!("spalloc-server: --simulate-fault needs --simulate-bmps");
        return ExitCode::from(2);
    }
    if opts.simulated_bmp_latency_ms > 0 && !opts.simulate_bmps {
        eprintln!("spalloc-server: --simulated-bmp-latency-ms needs --simulate-bmps");
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
