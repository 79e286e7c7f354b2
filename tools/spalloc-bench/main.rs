//! `spalloc-bench`: load generator and measurements for spalloc servers (ours or the
//! original Python one: it speaks the raw line protocol, so any server will do).
//!
//! Network workloads (`version`, `keepalive`, `churn`, `fanout`, `connections`, `burst`)
//! drive a server over loopback TCP with one request in flight per connection (TCP_NODELAY).
//! Each prints one final `key=value` line (and a JSON object with `--json`): throughput,
//! latency percentiles, and, given `--server-pid`, the server's CPU seconds over the
//! measured window (from `/proc/PID/stat` utime+stime, which covers all its threads) and its
//! memory (`VmHWM`/`VmRSS` from `/proc/PID/status`). Server CPU per request is the fair
//! figure on a shared machine: throughput depends on what else runs, CPU per request much
//! less.
//!
//! HTTP workloads (`http-metrics`, `http-fanout`) measure the status port (`--http`):
//! the cost of a `/metrics` scrape, and of pushing every change to the status pages'
//! event streams.
//!
//! Offline workloads use the library directly: `core` (allocation cost on a fragmenting
//! machine, no sockets, no journal), `replay` (folding a journal of N events) and `restart`
//! (time from starting `spalloc-server` on a journal of N events until it accepts).
//!
//! Each workload is a subcommand with its own options, in a module of its own; this file
//! only parses the command line and prints the report. Timings never appear in tests;
//! `benchmarks/README.md` records them.

mod burst;
mod client;
mod connections;
mod core_alloc;
mod echo;
mod facility;
mod fanout;
mod http_fanout;
mod http_metrics;
mod queue;
mod replay;
mod report;
mod request_loop;
mod restart;
mod time_to_ready;

use argh::FromArgs;

use report::Report;

/// Load generator and measurements for spalloc servers (see benchmarks/README.md).
///
/// Workloads: version, keepalive, churn, fanout, connections, burst (over TCP);
/// http-metrics, http-fanout (the --http status port); time-to-ready (BMP round trips);
/// core, queue, replay, restart (offline, this crate's library and server binary);
/// echo-server (serves --addr until killed: the floor for `version`, see the README).
#[derive(FromArgs)]
#[argh(
    example = "{command_name} keepalive --addr 127.0.0.1:22501 --clients 50 --seconds 10 --server-pid PID --json\n{command_name} core --pairs 50000\n{command_name} keepalive --help"
)]
struct Args {
    #[argh(subcommand)]
    workload: Workload,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Workload {
    Version(request_loop::Version),
    Keepalive(request_loop::Keepalive),
    Churn(request_loop::Churn),
    Fanout(fanout::Fanout),
    Connections(connections::Connections),
    Burst(burst::Burst),
    Core(core_alloc::CoreAlloc),
    Replay(replay::Replay),
    Restart(restart::Restart),
    EchoServer(echo::EchoServer),
    HttpMetrics(http_metrics::HttpMetrics),
    HttpFanout(http_fanout::HttpFanout),
    TimeToReady(time_to_ready::TimeToReady),
    Queue(queue::Queue),
}

impl Workload {
    /// Runs the workload; its report, and whether to print it as JSON too.
    fn run(&self) -> (Result<Report, String>, bool) {
        match self {
            Workload::Version(a) => (a.run(), a.json),
            Workload::Keepalive(a) => (a.run(), a.json),
            Workload::Churn(a) => (a.run(), a.json),
            Workload::Fanout(a) => (fanout::run_fanout(a), a.json),
            Workload::Connections(a) => (connections::run_connections(a), a.json),
            Workload::Burst(a) => (burst::run_burst(a), a.json),
            Workload::Core(a) => (core_alloc::run_core(a), a.json),
            Workload::Replay(a) => (replay::run_replay(a), a.json),
            Workload::Restart(a) => (restart::run_restart(a), a.json),
            Workload::EchoServer(a) => (echo::run_echo_server(a), false),
            Workload::HttpMetrics(a) => (http_metrics::run_http_metrics(a), a.json),
            Workload::HttpFanout(a) => (http_fanout::run_http_fanout(a), a.json),
            Workload::TimeToReady(a) => (time_to_ready::run_time_to_ready(a), a.json),
            Workload::Queue(a) => (queue::run_queue(a), a.json),
        }
    }
}

fn main() {
    let args: Args = match spalloc::cli::parse("spalloc-bench") {
        Ok(args) => args,
        Err(code) => std::process::exit(if code == std::process::ExitCode::SUCCESS {
            0
        } else {
            2
        }),
    };
    let (result, json) = args.workload.run();
    match result {
        Ok(report) => report.print(json),
        Err(e) => {
            eprintln!("spalloc-bench: {e}");
            std::process::exit(1);
        }
    }
}
