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
//! Timings never appear in tests; `benchmarks/README.md` records them.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use argh::FromArgs;
use spalloc::core::{Command, Core, CreateJob, Effect, Event, JobId, JobRequest, JobTarget};

/// Load generator and measurements for spalloc servers (see benchmarks/README.md).
///
/// Workloads: version, keepalive, churn, fanout, connections, burst (over TCP);
/// http-metrics, http-fanout (the --http status port);
/// core, replay, restart (offline, this crate's library and server binary);
/// echo-server (serves --addr until killed: the floor for `version`, see the README).
#[derive(FromArgs)]
struct Args {
    /// the workload to run
    #[argh(positional)]
    workload: String,
    /// server address (network workloads), default 127.0.0.1:22244
    #[argh(option, default = "String::from(\"127.0.0.1:22244\")")]
    addr: String,
    /// client connections, each with one request in flight (default 50)
    #[argh(option, default = "50")]
    clients: usize,
    /// measured seconds (default 10)
    #[argh(option, default = "10.0")]
    seconds: f64,
    /// warm-up seconds before measuring (default 1)
    #[argh(option, default = "1.0")]
    warmup: f64,
    /// boards per job for churn (default 1)
    #[argh(option, default = "1")]
    boards: u32,
    /// churn: wait for readiness with notify_job instead of polling get_job_state
    #[argh(switch)]
    notify: bool,
    /// fanout: watcher connections (default 100)
    #[argh(option, default = "100")]
    watchers: usize,
    /// connections: idle connections to open; burst: simultaneous connects (default 10000)
    #[argh(option, default = "10000")]
    connections: usize,
    /// connections: stop opening connections after this many seconds (default 90)
    #[argh(option, default = "90.0")]
    connect_deadline: f64,
    /// the server's process id, to report its CPU time and memory
    #[argh(option)]
    server_pid: Option<u32>,
    /// also print the result as one JSON object
    #[argh(switch)]
    json: bool,
    /// a label copied into the result (e.g. ours, original)
    #[argh(option, default = "String::from(\"-\")")]
    label: String,
    /// core/replay/restart: configuration file (default benchmarks/spin1m-bench.json)
    #[argh(option, default = "PathBuf::from(\"benchmarks/spin1m-bench.json\")")]
    config: PathBuf,
    /// replay/restart: journal events to generate (default 1000000)
    #[argh(option, default = "1_000_000")]
    events: u64,
    /// core: create+destroy pairs to measure (default 50000)
    #[argh(option, default = "50_000")]
    pairs: u64,
    /// replay/restart: journal directory to (re)create (default: a fresh one under /tmp)
    #[argh(option)]
    journal: Option<PathBuf>,
    /// restart: reuse the journal in --journal as it is instead of generating one
    #[argh(switch)]
    reuse_journal: bool,
    /// restart: the server binary (default: spalloc-server beside this binary)
    #[argh(option)]
    server_bin: Option<PathBuf>,
    /// restart: port for the restarted server (default 22590)
    #[argh(option, default = "22590")]
    port: u16,
    /// restart/replay: repetitions of the timed part (default 3)
    #[argh(option, default = "3")]
    repeat: usize,
    /// http-metrics/http-fanout: the server's HTTP address (--http), default 127.0.0.1:22280
    #[argh(option, default = "String::from(\"127.0.0.1:22280\")")]
    http_addr: String,
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
    let result = match args.workload.as_str() {
        "version" | "keepalive" | "churn" => run_request_loop(&args),
        "fanout" => run_fanout(&args),
        "connections" => run_connections(&args),
        "burst" => run_burst(&args),
        "core" => run_core(&args),
        "replay" => run_replay(&args),
        "restart" => run_restart(&args),
        "echo-server" => run_echo_server(&args),
        "http-metrics" => run_http_metrics(&args),
        "http-fanout" => run_http_fanout(&args),
        other => Err(format!(
            "unknown workload {other:?} (version, keepalive, churn, fanout, connections, burst, core, replay, restart, echo-server, http-metrics, http-fanout)"
        )),
    };
    match result {
        Ok(report) => report.print(args.json),
        Err(e) => {
            eprintln!("spalloc-bench: {e}");
            std::process::exit(1);
        }
    }
}

// ----- results ---------------------------------------------------------------------------

/// An ordered list of `key=value` results.
struct Report(Vec<(String, serde_json::Value)>);

impl Report {
    fn new(args: &Args) -> Report {
        let mut r = Report(Vec::new());
        r.put("workload", args.workload.as_str());
        r.put("label", args.label.as_str());
        r
    }

    fn put(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.0.push((key.to_string(), value.into()));
    }

    /// A float rounded to 3 significant decimals (readable lines).
    fn putf(&mut self, key: &str, value: f64) {
        let v = if value.abs() >= 100.0 {
            value.round()
        } else {
            (value * 1000.0).round() / 1000.0
        };
        self.put(key, v);
    }

    /// Latency percentiles (from nanoseconds) as `<prefix>_p50_us` etc.
    fn latencies(&mut self, prefix: &str, samples: &mut [u64]) {
        samples.sort_unstable();
        let pct = |p: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i] as f64 / 1000.0
        };
        self.putf(&format!("{prefix}_p50_us"), pct(0.50));
        self.putf(&format!("{prefix}_p99_us"), pct(0.99));
        self.putf(&format!("{prefix}_p999_us"), pct(0.999));
        self.putf(
            &format!("{prefix}_max_us"),
            samples.last().map_or(0.0, |&v| v as f64 / 1000.0),
        );
    }

    fn print(&self, json: bool) {
        let line: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        println!("{}", line.join(" "));
        if json {
            let map: serde_json::Map<String, serde_json::Value> = self.0.iter().cloned().collect();
            println!("{}", serde_json::Value::Object(map));
        }
    }
}

// ----- /proc -----------------------------------------------------------------------------

/// Clock ticks per second for /proc times (`getconf CLK_TCK`; 100 on every Linux seen).
fn clock_ticks_per_s() -> f64 {
    Process::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime+stime of a process (all threads), in seconds.
fn cpu_s(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 after "pid (comm) ".
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_s())
}

/// A `kB` field of /proc/PID/status (VmHWM, VmRSS).
fn status_kb(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU of the server and of the bench itself over a measured window.
struct CpuWindow {
    server_pid: Option<String>,
    server_start_s: Option<f64>,
    self_start_s: Option<f64>,
    wall: Instant,
}

impl CpuWindow {
    fn start(server_pid: Option<u32>) -> CpuWindow {
        let server_pid = server_pid.map(|p| p.to_string());
        CpuWindow {
            server_start_s: server_pid.as_deref().and_then(cpu_s),
            self_start_s: cpu_s("self"),
            server_pid,
            wall: Instant::now(),
        }
    }

    /// Ends the window: adds wall time, CPU (server and bench) and the server's memory, and
    /// the server's CPU per `unit` (µs) if `count` > 0.
    fn finish(self, r: &mut Report, unit: &str, count: u64) -> f64 {
        let wall_s = self.wall.elapsed().as_secs_f64();
        r.putf("wall_s", wall_s);
        if let (Some(a), Some(b)) = (self.self_start_s, cpu_s("self")) {
            r.putf("bench_cpu_s", b - a);
        }
        if let Some(pid) = &self.server_pid {
            if let (Some(a), Some(b)) = (self.server_start_s, cpu_s(pid)) {
                r.putf("server_cpu_s", b - a);
                r.putf("server_cpu_pct", (b - a) / wall_s * 100.0);
                if count > 0 {
                    r.putf(
                        &format!("server_cpu_us_per_{unit}"),
                        (b - a) * 1e6 / count as f64,
                    );
                }
            }
            if let Some(kb) = status_kb(pid, "VmHWM:") {
                r.put("server_vmhwm_kb", kb);
            }
            if let Some(kb) = status_kb(pid, "VmRSS:") {
                r.put("server_vmrss_kb", kb);
            }
        }
        wall_s
    }
}

// ----- a line-protocol client --------------------------------------------------------------

/// One connection speaking the line protocol, one request in flight.
struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    line: String,
    /// Job ids from `jobs_changed` notifications not yet consumed.
    notified: Vec<JobId>,
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))
}

impl Conn {
    fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            line: String::new(),
            notified: Vec::new(),
        })
    }

    /// Sends one command line and returns the `{"return": ...}` line (notifications that
    /// arrive first are remembered). An `exception` is an error.
    fn call(&mut self, request: &str) -> io::Result<&str> {
        self.writer.write_all(request.as_bytes())?;
        loop {
            self.read_line()?;
            if self.line.starts_with("{\"return\"") {
                return Ok(&self.line);
            }
            if !self.take_notification() {
                return Err(io::Error::other(format!(
                    "server answered {}",
                    self.line.trim_end()
                )));
            }
        }
    }

    fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        Ok(())
    }

    /// If the current line is a notification, remember its job ids and say so.
    fn take_notification(&mut self) -> bool {
        if let Some(ids) = parse_jobs_changed(&self.line) {
            self.notified.extend(ids);
            true
        } else {
            self.line.starts_with("{\"machines_changed\"")
        }
    }

    /// Blocks until a `jobs_changed` naming `job` arrives (or has arrived).
    fn wait_notification(&mut self, job: JobId) -> io::Result<()> {
        loop {
            if self.notified.contains(&job) {
                self.notified.clear();
                return Ok(());
            }
            self.read_line()?;
            if !self.take_notification() {
                return Err(io::Error::other(format!(
                    "unexpected line {}",
                    self.line.trim_end()
                )));
            }
        }
    }
}

/// The ids of a `{"jobs_changed": [1, 2]}` line.
fn parse_jobs_changed(line: &str) -> Option<Vec<JobId>> {
    let rest = line.strip_prefix("{\"jobs_changed\": [")?;
    let list = &rest[..rest.find(']')?];
    Some(
        list.split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
    )
}

/// The integer after `"key": ` in a reply line (replies are Python-json.dumps formatted).
fn int_field(line: &str, key: &str) -> Option<i64> {
    let pat = format!("\"{key}\": ");
    let start = line.find(&pat)? + pat.len();
    let digits: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

fn cmd(name: &str, args: &str, kwargs: &str) -> String {
    format!("{{\"command\": \"{name}\", \"args\": [{args}], \"kwargs\": {{{kwargs}}}}}\n")
}

const JOB_KWARGS: &str = "\"owner\": \"bench\", \"keepalive\": 60.0";

fn create_job(c: &mut Conn, args: &str) -> io::Result<JobId> {
    let line = c.call(&cmd("create_job", args, JOB_KWARGS))?;
    int_field(line, "return")
        .map(|id| id as JobId)
        .ok_or_else(|| io::Error::other(format!("create_job answered {}", line.trim_end())))
}

fn job_state(c: &mut Conn, job: JobId) -> io::Result<i64> {
    let line = c.call(&cmd("get_job_state", &job.to_string(), ""))?;
    int_field(line, "state")
        .ok_or_else(|| io::Error::other(format!("get_job_state answered {}", line.trim_end())))
}

// ----- version / keepalive / churn ----------------------------------------------------------

const PHASE_WARMUP: u8 = 0;
const PHASE_MEASURE: u8 = 1;
const PHASE_STOP: u8 = 2;

/// What one client thread measured.
#[derive(Default)]
struct ClientResult {
    /// Latency of each measured unit (request, or churn cycle), in ns.
    latencies_ns: Vec<u64>,
    /// Requests sent while measuring.
    requests: u64,
    /// Churn: jobs that were destroyed before becoming ready.
    failed_jobs: u64,
}

fn run_request_loop(args: &Args) -> Result<Report, String> {
    let addr = resolve(&args.addr)?;
    let phase = Arc::new(AtomicU8::new(PHASE_WARMUP));
    let ready = Arc::new(Barrier::new(args.clients + 1));
    let mut threads = Vec::new();
    for _ in 0..args.clients {
        let phase = Arc::clone(&phase);
        let ready = Arc::clone(&ready);
        let workload = args.workload.clone();
        let boards = args.boards;
        let notify = args.notify;
        threads.push(std::thread::spawn(move || -> io::Result<ClientResult> {
            let conn = Conn::connect(addr);
            // Always reach the barrier, so one failed client cannot hang the run.
            let mut c = match conn {
                Ok(mut c) => {
                    let held = if workload == "keepalive" {
                        match create_job(&mut c, "1") {
                            Ok(id) => Some(id),
                            Err(e) => {
                                ready.wait();
                                return Err(e);
                            }
                        }
                    } else {
                        None
                    };
                    ready.wait();
                    (c, held)
                }
                Err(e) => {
                    ready.wait();
                    return Err(e);
                }
            };
            let mut r = ClientResult::default();
            let result = match workload.as_str() {
                "version" => version_loop(&mut c.0, &phase, &mut r),
                "keepalive" => keepalive_loop(&mut c.0, c.1.unwrap(), &phase, &mut r),
                _ => churn_loop(&mut c.0, boards, notify, &phase, &mut r),
            };
            if let Some(id) = c.1 {
                let _ = c.0.call(&cmd("destroy_job", &id.to_string(), ""));
            }
            result.map(|()| r)
        }));
    }
    ready.wait();
    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    let window = CpuWindow::start(args.server_pid);
    phase.store(PHASE_MEASURE, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    phase.store(PHASE_STOP, Ordering::SeqCst);
    let mut r = Report::new(args);
    r.put("clients", args.clients as u64);
    let mut all = ClientResult::default();
    let mut errors = Vec::new();
    // The window ends when the clients stop; collect first so the join is not counted.
    let results: Vec<_> = threads.into_iter().map(|t| t.join()).collect();
    for res in results {
        match res {
            Ok(Ok(c)) => {
                all.latencies_ns.extend(c.latencies_ns);
                all.requests += c.requests;
                all.failed_jobs += c.failed_jobs;
            }
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(_) => errors.push("a client thread panicked".into()),
        }
    }
    if !errors.is_empty() {
        return Err(format!(
            "{} of {} clients failed, first: {}",
            errors.len(),
            args.clients,
            errors[0]
        ));
    }
    let churn = args.workload == "churn";
    let units = all.latencies_ns.len() as u64;
    let wall = window.finish(&mut r, if churn { "job" } else { "req" }, units);
    if churn {
        r.put("boards", args.boards as u64);
        r.put("wait", if args.notify { "notify" } else { "poll" });
        r.put("jobs", units);
        r.putf("jobs_per_s", units as f64 / wall);
        r.put("requests", all.requests);
        r.putf("req_per_s", all.requests as f64 / wall);
        r.put("failed_jobs", all.failed_jobs);
        r.latencies("cycle", &mut all.latencies_ns);
    } else {
        r.put("requests", units);
        r.putf("req_per_s", units as f64 / wall);
        r.latencies("lat", &mut all.latencies_ns);
    }
    Ok(r)
}

fn version_loop(c: &mut Conn, phase: &AtomicU8, r: &mut ClientResult) -> io::Result<()> {
    let req = cmd("version", "", "");
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == PHASE_STOP {
            return Ok(());
        }
        let t = Instant::now();
        c.call(&req)?;
        if p == PHASE_MEASURE {
            r.latencies_ns.push(t.elapsed().as_nanos() as u64);
        }
    }
}

fn keepalive_loop(
    c: &mut Conn,
    job: JobId,
    phase: &AtomicU8,
    r: &mut ClientResult,
) -> io::Result<()> {
    let reqs = [
        cmd("job_keepalive", &job.to_string(), ""),
        cmd("get_job_state", &job.to_string(), ""),
    ];
    let mut i = 0;
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == PHASE_STOP {
            return Ok(());
        }
        let t = Instant::now();
        c.call(&reqs[i & 1])?;
        i += 1;
        if p == PHASE_MEASURE {
            r.latencies_ns.push(t.elapsed().as_nanos() as u64);
        }
    }
}

/// create → wait until ready (polling, or notify_job + notifications) → destroy.
fn churn_loop(
    c: &mut Conn,
    boards: u32,
    notify: bool,
    phase: &AtomicU8,
    r: &mut ClientResult,
) -> io::Result<()> {
    let shape = boards.to_string();
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == PHASE_STOP {
            return Ok(());
        }
        let t = Instant::now();
        let mut requests = 0;
        let job = create_job(c, &shape)?;
        requests += 1;
        if notify {
            c.notified.clear();
            c.call(&cmd("notify_job", &job.to_string(), ""))?;
            requests += 1;
        }
        let mut failed = false;
        loop {
            let state = job_state(c, job)?;
            requests += 1;
            match state {
                3 => break,
                4 | 0 => {
                    failed = true;
                    break;
                }
                _ if notify => c.wait_notification(job)?,
                _ => {}
            }
        }
        c.call(&cmd("destroy_job", &job.to_string(), ""))?;
        requests += 1;
        if notify {
            // Stop hearing about this job (its destruction would otherwise be announced).
            c.call(&cmd("no_notify_job", &job.to_string(), ""))?;
            requests += 1;
        }
        if p == PHASE_MEASURE && phase.load(Ordering::Relaxed) == PHASE_MEASURE {
            if failed {
                r.failed_jobs += 1;
            } else {
                r.latencies_ns.push(t.elapsed().as_nanos() as u64);
            }
            r.requests += requests;
        }
    }
}

// ----- fanout --------------------------------------------------------------------------------

/// Shared between the driver and the watcher thread.
struct FanoutShared {
    /// The job id whose notification is awaited (0: none).
    target: AtomicU64,
    stop: AtomicBool,
    /// Notification lines received while measuring.
    lines: AtomicU64,
    measuring: AtomicBool,
}

fn run_fanout(args: &Args) -> Result<Report, String> {
    use polling::{Event as PollEvent, Events, Poller};
    let addr = resolve(&args.addr)?;
    let n = args.watchers;
    let mut watchers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = Conn::connect(addr).map_err(|e| format!("connect: {e}"))?;
        c.call(&cmd("notify_job", "", ""))
            .map_err(|e| format!("notify_job: {e}"))?;
        watchers.push(c);
    }
    let epoch = Instant::now();
    let shared = Arc::new(FanoutShared {
        target: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        lines: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
    });
    let poller = Arc::new(Poller::new().map_err(|e| e.to_string())?);
    let streams: Vec<TcpStream> = watchers
        .into_iter()
        .map(|c| {
            c.writer.set_nonblocking(true).unwrap();
            c.writer
        })
        .collect();
    for (i, s) in streams.iter().enumerate() {
        // SAFETY: the streams outlive the poller's use of them (both end with this function,
        // and the watcher thread is joined first).
        // Level-triggered: no re-arming per notification (the bench's own cost stays out of
        // the figure as far as it can).
        unsafe { poller.add_with_mode(s, PollEvent::readable(i), polling::PollMode::Level) }
            .map_err(|e| e.to_string())?;
    }
    // The watcher thread: one epoll loop over every watcher (a thread each would measure
    // the scheduler of a 2-core machine rather than the server). It tells the driver, which
    // blocks meanwhile (a spinning driver would take a core from the server), when every
    // watcher has heard of the target: ns after `epoch`.
    let (heard_all_tx, heard_all) = crossbeam::channel::unbounded::<(u64, u64)>();
    let watcher = {
        let shared = Arc::clone(&shared);
        let poller = Arc::clone(&poller);
        std::thread::spawn(move || {
            let mut streams = streams;
            let mut partial: Vec<Vec<u8>> = vec![Vec::new(); streams.len()];
            // Highest job id each watcher has heard of (ids grow, so "heard of the target"
            // is "max >= target"), and when it first reached the current target (each
            // watcher's time is taken when its event is handled).
            let mut max_heard = vec![0u64; streams.len()];
            let mut heard_at_ns = vec![0u64; streams.len()];
            let mut heard_count = 0usize;
            let mut last_heard_ns = 0u64;
            let mut counted_target = 0u64;
            let mut events = Events::new();
            let mut buf = vec![0u8; 64 * 1024];
            while !shared.stop.load(Ordering::Relaxed) {
                events.clear();
                let _ = poller.wait(&mut events, Some(Duration::from_millis(20)));
                let target = shared.target.load(Ordering::SeqCst);
                if target != counted_target {
                    counted_target = target;
                    // Notifications can beat the driver's publication of the target.
                    let early: Vec<usize> = (0..streams.len())
                        .filter(|&i| max_heard[i] >= target)
                        .collect();
                    heard_count = early.len();
                    last_heard_ns = early.iter().map(|&i| heard_at_ns[i]).max().unwrap_or(0);
                    if heard_count == streams.len() {
                        // Everyone heard before the driver even published the target.
                        let _ = heard_all_tx.send((target, last_heard_ns));
                    }
                }
                // Every notification in this batch had arrived when the wait returned: time
                // them all then, not after the bench has parsed the ones before them.
                let now_ns = epoch.elapsed().as_nanos() as u64;
                for ev in events.iter() {
                    let i = ev.key;
                    loop {
                        match streams[i].read(&mut buf) {
                            Ok(0) => break,
                            Ok(k) => partial[i].extend_from_slice(&buf[..k]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => break,
                        }
                    }
                    while let Some(pos) = partial[i].iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = partial[i].drain(..=pos).collect();
                        let text = String::from_utf8_lossy(&line);
                        if let Some(ids) = parse_jobs_changed(&text) {
                            if shared.measuring.load(Ordering::Relaxed) {
                                shared.lines.fetch_add(1, Ordering::Relaxed);
                            }
                            let m = ids.into_iter().max().unwrap_or(0);
                            if m > max_heard[i] {
                                let before = max_heard[i];
                                max_heard[i] = m;
                                heard_at_ns[i] = now_ns;
                                if counted_target != 0
                                    && before < counted_target
                                    && m >= counted_target
                                {
                                    heard_count += 1;
                                    last_heard_ns = last_heard_ns.max(now_ns);
                                    if heard_count == streams.len() {
                                        let _ = heard_all_tx.send((counted_target, last_heard_ns));
                                    }
                                }
                            }
                        }
                    }
                }
            }
            for s in &streams {
                let _ = poller.delete(s);
            }
            streams.clear();
        })
    };

    let mut driver = Conn::connect(addr).map_err(|e| format!("connect: {e}"))?;
    // From sending the change (create_job) until the last watcher has its notification:
    // includes making the change durable (our journal's fsync).
    let mut latencies = Vec::new();
    // From the change's acknowledgement reaching the driver until the last watcher has its
    // notification: the fan-out itself (the server sends the reply, then the notifications).
    let mut after_reply = Vec::new();
    let mut rounds = 0u64;
    let warmup_end = Instant::now() + Duration::from_secs_f64(args.warmup);
    let mut window: Option<CpuWindow> = None;
    let mut end = None;
    let outcome = (|| -> Result<(), String> {
        loop {
            let now = Instant::now();
            if window.is_none() && now >= warmup_end {
                window = Some(CpuWindow::start(args.server_pid));
                shared.measuring.store(true, Ordering::SeqCst);
                end = Some(now + Duration::from_secs_f64(args.seconds));
            }
            if end.is_some_and(|e| now >= e) {
                return Ok(());
            }
            let t0_ns = epoch.elapsed().as_nanos() as u64;
            let job = create_job(&mut driver, "1").map_err(|e| e.to_string())?;
            let acked_ns = epoch.elapsed().as_nanos() as u64;
            shared.target.store(job, Ordering::SeqCst);
            let _ = poller.notify();
            let heard = loop {
                match heard_all.recv_timeout(Duration::from_secs(5)) {
                    Ok((target, ns)) if target == job => break ns,
                    Ok(_) => continue, // a late report for an earlier round
                    Err(_) => {
                        return Err(format!("not every watcher heard of job {job} within 5 s"))
                    }
                }
            };
            if window.is_some() {
                latencies.push(heard.saturating_sub(t0_ns));
                after_reply.push(heard.saturating_sub(acked_ns));
                rounds += 1;
            }
            driver
                .call(&cmd("destroy_job", &job.to_string(), ""))
                .map_err(|e| e.to_string())?;
        }
    })();
    shared.stop.store(true, Ordering::SeqCst);
    let _ = poller.notify();
    let _ = watcher.join();
    outcome?;
    let mut r = Report::new(args);
    r.put("watchers", n as u64);
    let lines = shared.lines.load(Ordering::SeqCst);
    let wall = window
        .expect("the window opens after the warm-up")
        .finish(&mut r, "line", lines);
    r.put("rounds", rounds);
    r.putf("rounds_per_s", rounds as f64 / wall);
    r.put("lines", lines);
    r.latencies("reach_all", &mut latencies);
    r.latencies("after_reply", &mut after_reply);
    Ok(r)
}

// ----- the floor: a server that does nothing ------------------------------------------------

/// A minimal line server on `--addr`: every line gets the `version` reply, from one
/// level-triggered `polling` loop with non-blocking, TCP_NODELAY sockets, one `recv` and one
/// `send` per request, and nothing else (no parsing, no journal, no core). `version`
/// against it measures what this machine's kernel charges a server for one loopback
/// request, the floor under any server's CPU per request. Runs until killed.
fn run_echo_server(args: &Args) -> Result<Report, String> {
    use polling::{Event as PollEvent, Events, PollMode, Poller};
    use std::net::TcpListener;
    const LISTENER: usize = usize::MAX - 1; // (usize::MAX is polling's own)
    const REPLY: &[u8] = b"{\"return\": \"1.0.0\"}\n";
    let listener = TcpListener::bind(resolve(&args.addr)?).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let poller = Poller::new().map_err(|e| e.to_string())?;
    // SAFETY: every source is deleted from the poller before it is dropped (the listener
    // lives as long as the loop, which never ends).
    unsafe { poller.add_with_mode(&listener, PollEvent::readable(LISTENER), PollMode::Level) }
        .map_err(|e| e.to_string())?;
    eprintln!("echo-server listening on {}", args.addr);
    let mut conns: Vec<Option<TcpStream>> = Vec::new();
    let mut events = Events::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    loop {
        events.clear();
        poller.wait(&mut events, None).map_err(|e| e.to_string())?;
        for ev in events.iter() {
            if ev.key == LISTENER {
                while let Ok((s, _)) = listener.accept() {
                    let _ = s.set_nonblocking(true);
                    let _ = s.set_nodelay(true);
                    let key = conns
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or(conns.len());
                    // SAFETY: deleted before it is dropped, below.
                    if unsafe {
                        poller.add_with_mode(&s, PollEvent::readable(key), PollMode::Level)
                    }
                    .is_ok()
                    {
                        if key == conns.len() {
                            conns.push(Some(s));
                        } else {
                            conns[key] = Some(s);
                        }
                    }
                }
                continue;
            }
            let Some(s) = conns[ev.key].as_mut() else {
                continue;
            };
            let lines = match s.read(&mut buf) {
                Ok(0) => None,
                Ok(n) => Some(buf[..n].iter().filter(|&&b| b == b'\n').count()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(0),
                Err(_) => None,
            };
            match lines {
                Some(n) => {
                    out.clear();
                    for _ in 0..n {
                        out.extend_from_slice(REPLY);
                    }
                    // One request in flight per client: the socket buffer never fills.
                    if !out.is_empty() && s.write_all(&out).is_err() {
                        let s = conns[ev.key].take().expect("present");
                        let _ = poller.delete(&s);
                    }
                }
                None => {
                    let s = conns[ev.key].take().expect("present");
                    let _ = poller.delete(&s);
                }
            }
        }
    }
}

// ----- connections and connect bursts -----------------------------------------------------------

/// Reads one reply line from each of `streams` (non-blocking, polled); returns how many
/// answered within `timeout`.
fn await_one_line_each(streams: &[TcpStream], timeout: Duration) -> Result<usize, String> {
    use polling::{Event as PollEvent, Events, Poller};
    let poller = Poller::new().map_err(|e| e.to_string())?;
    for (i, s) in streams.iter().enumerate() {
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        // SAFETY: deleted below before the streams can be dropped.
        unsafe { poller.add(s, PollEvent::readable(i)) }.map_err(|e| e.to_string())?;
    }
    let mut got = vec![false; streams.len()];
    let mut answered = 0;
    let deadline = Instant::now() + timeout;
    let mut events = Events::new();
    let mut buf = [0u8; 4096];
    while answered < streams.len() && Instant::now() < deadline {
        events.clear();
        let _ = poller.wait(&mut events, Some(Duration::from_millis(50)));
        for ev in events.iter() {
            let mut s = &streams[ev.key];
            let mut rearm = true;
            match s.read(&mut buf) {
                Ok(k) if k > 0 && buf[..k].contains(&b'\n') => {
                    if !got[ev.key] {
                        got[ev.key] = true;
                        answered += 1;
                    }
                    rearm = false;
                }
                Ok(0) => rearm = false,
                _ => {}
            }
            if rearm {
                let _ = poller.modify(&streams[ev.key], PollEvent::readable(ev.key));
            }
        }
    }
    for s in streams {
        let _ = poller.delete(s);
        let _ = s.set_nonblocking(false);
    }
    Ok(answered)
}

/// Open N idle connections, check each is served, report the server's memory at that count.
fn run_connections(args: &Args) -> Result<Report, String> {
    let addr = resolve(&args.addr)?;
    let pid = args.server_pid.map(|p| p.to_string());
    let mut r = Report::new(args);
    let rss_before = pid.as_deref().and_then(|p| status_kb(p, "VmRSS:"));
    let window = CpuWindow::start(args.server_pid);
    let t = Instant::now();
    let mut streams = Vec::with_capacity(args.connections);
    let mut connect_error = None;
    // A connect slower than 0.5 s had its SYN dropped and retransmitted (a full accept
    // backlog, or a loopback port still in TIME_WAIT from earlier runs): counted apart.
    let mut slow_connects = 0u64;
    let deadline = t + Duration::from_secs_f64(args.connect_deadline);
    for _ in 0..args.connections {
        if Instant::now() > deadline {
            connect_error = Some(format!(
                "connect deadline of {} s passed",
                args.connect_deadline
            ));
            break;
        }
        let c = Instant::now();
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                streams.push(s);
                if c.elapsed() > Duration::from_millis(500) {
                    slow_connects += 1;
                }
            }
            Err(e) => {
                connect_error = Some(e.to_string());
                break;
            }
        }
    }
    let connect_s = t.elapsed().as_secs_f64();
    // Idle for a moment so the server has accepted everything, then ask each for its version.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let req = cmd("version", "", "");
    for mut s in &streams {
        let _ = s.write_all(req.as_bytes());
    }
    let served = await_one_line_each(&streams, Duration::from_secs(30))?;
    let serve_s = t.elapsed().as_secs_f64();
    // Held idle again: the resident memory at this count.
    std::thread::sleep(Duration::from_millis(200));
    r.put("connections", args.connections as u64);
    r.put("opened", streams.len() as u64);
    r.put("served", served as u64);
    if let Some(e) = connect_error {
        r.put("connect_error", e);
    }
    r.putf("connect_all_s", connect_s);
    r.put("slow_connects", slow_connects);
    r.putf("serve_all_s", serve_s);
    if let Some(kb) = rss_before {
        r.put("server_vmrss_before_kb", kb);
    }
    let rss_after = pid.as_deref().and_then(|p| status_kb(p, "VmRSS:"));
    if let (Some(a), Some(b)) = (rss_before, rss_after) {
        if !streams.is_empty() {
            r.putf(
                "server_kb_per_conn",
                (b as f64 - a as f64) / streams.len() as f64,
            );
        }
    }
    window.finish(&mut r, "conn", streams.len() as u64);
    Ok(r)
}

/// N threads connect at the same instant, each asks for the version once and keeps its
/// connection open until every thread is done (so all N are open together).
fn run_burst(args: &Args) -> Result<Report, String> {
    let addr = resolve(&args.addr)?;
    let n = args.connections;
    let go = Arc::new(Barrier::new(n + 1));
    let mut threads = Vec::with_capacity(n);
    for _ in 0..n {
        let go = Arc::clone(&go);
        let t = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || -> Result<(u64, Conn), String> {
                go.wait();
                let t = Instant::now();
                let mut c = Conn::connect(addr).map_err(|e| format!("connect: {e}"))?;
                c.call(&cmd("version", "", ""))
                    .map_err(|e| format!("version: {e}"))?;
                // The connection goes back to the main thread, which closes them all at the end.
                Ok((t.elapsed().as_nanos() as u64, c))
            })
            .map_err(|e| format!("cannot start thread: {e}"))?;
        threads.push(t);
    }
    let window = CpuWindow::start(args.server_pid);
    let t = Instant::now();
    go.wait();
    let mut latencies = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut open = Vec::with_capacity(n);
    for h in threads {
        match h.join() {
            Ok(Ok((ns, c))) => {
                latencies.push(ns);
                open.push(c);
            }
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("thread panicked".into()),
        }
    }
    let all_s = t.elapsed().as_secs_f64();
    let mut r = Report::new(args);
    r.put("connections", n as u64);
    r.put("served", latencies.len() as u64);
    r.put("failed", errors.len() as u64);
    if let Some(e) = errors.first() {
        r.put("first_error", e.clone());
    }
    r.putf("all_served_s", all_s);
    let count = latencies.len() as u64;
    r.latencies("conn_to_reply", &mut latencies);
    window.finish(&mut r, "conn", count);
    drop(open);
    Ok(r)
}

// ----- a model facility for the offline workloads ------------------------------------------

/// xorshift64*: a small deterministic generator (runs are repeatable).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

/// The journal being written by the generator: batches of encoded events, snapshots
/// every `SNAPSHOT_EVERY_EVENTS` as the server takes them.
struct JournalSink {
    journal: spalloc_journal::Journal,
    batch: Vec<Vec<u8>>,
    written: u64,
    last_snapshot: u64,
    /// Take snapshots (which let the journal drop the segments they cover).
    snapshots: bool,
}

/// A core kept busy the way a facility would: jobs of mixed sizes come and go, keeping the
/// 1,200-board machine 50–80% full; BMP requests complete at once.
struct Facility {
    core: Core,
    now_us: u64,
    rng: Rng,
    /// Live jobs and how many boards each holds (0 while queued).
    live: Vec<(JobId, u32)>,
    used_boards: u64,
    total_boards: u64,
    keepalive_s: Option<f64>,
    sink: Option<JournalSink>,
    /// Events folded so far.
    events: u64,
    /// Ticks folded by `step`, and the time they took.
    ticks: u64,
    tick_time: Duration,
}

impl Facility {
    fn new(config: spalloc::config::Config, keepalive_s: Option<f64>, now_us: u64) -> Facility {
        let total_boards = config.machines.iter().map(|m| m.boards.len() as u64).sum();
        let mut f = Facility {
            core: Core::new(),
            now_us,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            live: Vec::new(),
            used_boards: 0,
            total_boards,
            keepalive_s,
            sink: None,
            events: 0,
            ticks: 0,
            tick_time: Duration::ZERO,
        };
        f.event(Event::Configure { now_us, config });
        f
    }

    /// Fold one event (recording it if a journal is being written), then complete every
    /// BMP request it caused, as the server would with instant BMPs.
    fn event(&mut self, e: Event) -> Option<spalloc::core::Response> {
        let reply = self.core.handle(&e);
        self.events += 1;
        if let Some(sink) = &mut self.sink {
            sink.batch.push(spalloc::server::encode_event(&e));
        }
        let mut done = Vec::new();
        while let Some(effect) = self.core.poll_effect() {
            if let Effect::Bmp(r) = effect {
                done.push(r.id);
            }
        }
        for request_id in done {
            self.event(Event::BmpDone {
                now_us: self.now_us,
                request_id,
                failure: None,
                failed_boards: Vec::new(),
                bmp_unreachable: false,
            });
        }
        reply
    }

    fn command(&mut self, command: Command) -> Option<spalloc::core::Response> {
        self.event(Event::Command {
            now_us: self.now_us,
            peer: "127.0.0.1".to_string(),
            command,
        })
    }

    /// A job shape from a mix seen at a facility: mostly small jobs, a few large ones.
    fn shape(&mut self) -> JobRequest {
        match self.rng.below(100) {
            0..=39 => JobRequest::OneBoard,
            40..=59 => JobRequest::Boards(self.rng.range(2, 12)),
            60..=79 => JobRequest::Triads(self.rng.range(1, 3), self.rng.range(1, 3)),
            80..=94 => JobRequest::Boards(self.rng.range(13, 60)),
            _ => JobRequest::Triads(self.rng.range(4, 6), self.rng.range(4, 6)),
        }
    }

    fn create_request(&mut self) -> Command {
        let request = self.shape();
        let mut c: CreateJob = spalloc::core::sim::job(request);
        c.owner = "bench".into();
        c.keepalive_s = self.keepalive_s;
        c.min_ratio = 0.333;
        c.target = JobTarget::Tags(vec!["default".into()]);
        Command::CreateJob(c)
    }

    fn boards_of(&self, job: JobId) -> u32 {
        self.core
            .job_machine_info(job)
            .boards
            .map_or(0, |b| b.len() as u32)
    }

    /// Re-count boards of jobs that were queued (a destroy may have let them in).
    fn recount_queued(&mut self) {
        for i in 0..self.live.len() {
            if self.live[i].1 == 0 {
                let b = self.boards_of(self.live[i].0);
                self.live[i].1 = b;
                self.used_boards += u64::from(b);
            }
        }
    }

    fn fill(&self) -> f64 {
        self.used_boards as f64 / self.total_boards as f64
    }

    /// Create or destroy, keeping the machine 50–80% full. Returns (was a create, time of
    /// the core's work: the command and the BMP completions it caused).
    fn step(&mut self) -> (bool, Duration) {
        // Freed boards drain (power off, then the free delay) before a tick releases them.
        if self.core.tick_due(self.now_us) {
            let t = Instant::now();
            self.event(Event::Tick {
                now_us: self.now_us,
            });
            self.tick_time += t.elapsed();
            self.ticks += 1;
            self.recount_queued();
        }
        let fill = self.fill();
        // The queue is FIFO (a large job at its head holds back the rest, as in the
        // original), so a facility with a queue stops submitting until it drains.
        let queued = self.live.iter().filter(|j| j.1 == 0).count();
        let create = if self.live.is_empty() {
            true
        } else if queued >= 4 {
            false
        } else if fill < 0.5 {
            true
        } else if fill > 0.8 {
            false
        } else {
            self.rng.below(2) == 0
        };
        if create {
            let command = self.create_request();
            let t = Instant::now();
            let reply = self.command(command);
            let took = t.elapsed();
            if let Some(spalloc::core::Response::JobId(id)) = reply {
                let b = self.boards_of(id);
                self.used_boards += u64::from(b);
                self.live.push((id, b));
            }
            (true, took)
        } else {
            let i = self.rng.below(self.live.len() as u64) as usize;
            let (id, b) = self.live.swap_remove(i);
            self.used_boards -= u64::from(b);
            let t = Instant::now();
            self.command(Command::DestroyJob {
                job_id: id,
                reason: None,
            });
            let took = t.elapsed();
            self.recount_queued();
            (false, took)
        }
    }

    /// Append the pending batch to the journal, and snapshot as the server does.
    fn flush(&mut self, force: bool) -> Result<(), String> {
        let Some(sink) = &mut self.sink else {
            return Ok(());
        };
        if sink.batch.is_empty() || (!force && sink.batch.len() < 1000) {
            return Ok(());
        }
        let last = sink
            .journal
            .append_batch(sink.batch.iter().map(|b| b.as_slice()))
            .map_err(|e| format!("journal: {e}"))?;
        sink.written += sink.batch.len() as u64;
        sink.batch.clear();
        if sink.snapshots && last >= sink.last_snapshot + spalloc::server::SNAPSHOT_EVERY_EVENTS {
            let bytes = rmp_serde::to_vec_named(&self.core).map_err(|e| e.to_string())?;
            sink.journal
                .write_snapshot(last, &bytes)
                .map_err(|e| format!("snapshot: {e}"))?;
            sink.last_snapshot = last;
        }
        Ok(())
    }
}

fn load_config(path: &Path) -> Result<spalloc::config::Config, String> {
    let mut c = spalloc::config::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    c.seconds_before_free_s = 0.0;
    Ok(c)
}

fn mean_us(total: Duration, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        total.as_secs_f64() * 1e6 / n as f64
    }
}

/// Allocation cost: create_job + destroy_job on a fragmenting machine kept 50–80% full.
fn run_core(args: &Args) -> Result<Report, String> {
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
    let mut r = Report::new(args);
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

/// Where generated journals go: `--journal`, or a fresh directory under /tmp.
fn journal_dir(args: &Args) -> PathBuf {
    args.journal.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("spalloc-bench-journal-{}", std::process::id()))
    })
}

/// Write a journal of about `events` events from the model facility: 80% keepalives /
/// get_job_state on live jobs, the rest creates and destroys with their BMP completions,
/// ticks when due; snapshots as the server takes them.
fn generate_journal(args: &Args, dir: &Path, snapshots: bool) -> Result<u64, String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let opened = spalloc_journal::Journal::open(dir).map_err(|e| format!("journal: {e}"))?;
    let config = load_config(&args.config)?;
    // Start in the past, 200 µs per step, so a restart finds the history behind it.
    let step_us = 200;
    let start = spalloc::timefmt::now_us() - args.events * step_us - 60_000_000;
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
    while f.events < args.events {
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
fn run_replay(args: &Args) -> Result<Report, String> {
    let dir = journal_dir(args);
    let t = Instant::now();
    let written = if args.reuse_journal {
        0
    } else {
        // No snapshots: every event stays in the journal, to be folded from the first.
        generate_journal(args, &dir, false)?
    };
    let generate_s = t.elapsed().as_secs_f64();
    let bytes: u64 = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let mut r = Report::new(args);
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

/// Time from starting `spalloc-server` on a journal of N events (with snapshots) until it
/// accepts a connection; the server is killed (SIGKILL, so no shutdown snapshot changes the
/// journal's shape) after each try.
fn run_restart(args: &Args) -> Result<Report, String> {
    let dir = journal_dir(args);
    let mut r = Report::new(args);
    if !args.reuse_journal {
        let t = Instant::now();
        let written = generate_journal(args, &dir, true)?;
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

// ----- the HTTP status port ------------------------------------------------------------------

/// One `GET path` on a fresh connection (the server closes after each response); the
/// response's size.
fn http_get(addr: SocketAddr, path: &str) -> io::Result<usize> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    if !body.starts_with(b"HTTP/1.1 200") {
        return Err(io::Error::other(format!(
            "GET {path}: {}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        )));
    }
    Ok(body.len())
}

/// `--clients` connections scrape `/metrics` back to back: the cost of one scrape.
fn run_http_metrics(args: &Args) -> Result<Report, String> {
    let addr = resolve(&args.http_addr)?;
    let bytes = http_get(addr, "/metrics").map_err(|e| e.to_string())?;
    let phase = Arc::new(AtomicU8::new(0)); // 0 warm-up, 1 measuring, 2 stop
    let threads: Vec<_> = (0..args.clients)
        .map(|_| {
            let phase = Arc::clone(&phase);
            std::thread::spawn(move || -> io::Result<Vec<u64>> {
                let mut samples = Vec::new();
                loop {
                    let p = phase.load(Ordering::Relaxed);
                    if p == 2 {
                        return Ok(samples);
                    }
                    let t = Instant::now();
                    http_get(addr, "/metrics")?;
                    if p == 1 && phase.load(Ordering::Relaxed) == 1 {
                        samples.push(t.elapsed().as_nanos() as u64);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    let window = CpuWindow::start(args.server_pid);
    phase.store(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    phase.store(2, Ordering::SeqCst);
    let mut r = Report::new(args);
    let mut samples = Vec::new();
    for t in threads {
        samples.extend(
            t.join()
                .map_err(|_| "a client panicked")?
                .map_err(|e| e.to_string())?,
        );
    }
    let n = samples.len() as u64;
    let wall = window.finish(&mut r, "scrape", n);
    r.put("clients", args.clients as u64);
    r.put("response_bytes", bytes as u64);
    r.put("scrapes", n);
    r.putf("scrapes_per_s", n as f64 / wall);
    r.latencies("scrape", &mut samples);
    Ok(r)
}

/// `--watchers` status pages subscribe to `/events`; a driver creates a job and times until
/// every page has been sent a state holding it, then destroys it, for `--seconds`. Every
/// change is pushed to every page (at most every 100 ms), so this is the cost of the
/// fan-out: server CPU per pushed event, and the latency a page sees.
fn run_http_fanout(args: &Args) -> Result<Report, String> {
    let http = resolve(&args.http_addr)?;
    let addr = resolve(&args.addr)?;
    let epoch = Instant::now();
    // Each page reports (page, newest job id it has seen, ns after epoch, event bytes).
    let (seen_tx, seen) = crossbeam::channel::unbounded::<(usize, u64, u64, usize)>();
    let stop = Arc::new(AtomicBool::new(false));
    let mut pages = Vec::new();
    for i in 0..args.watchers {
        let mut s = TcpStream::connect(http).map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n")
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        let tx = seen_tx.clone();
        let stop = Arc::clone(&stop);
        pages.push(std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 256 * 1024];
            let mut newest = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = match s.read(&mut chunk) {
                    Ok(0) => {
                        eprintln!("page {i}: the server closed its event stream");
                        return;
                    }
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue
                    }
                    Err(e) => {
                        eprintln!("page {i}: {e}");
                        return;
                    }
                };
                let now_ns = epoch.elapsed().as_nanos() as u64;
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = buf.drain(..end + 2).collect();
                    let Some(at) = event.windows(6).position(|w| w == b"data: ") else {
                        continue;
                    };
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&event[at + 6..])
                    else {
                        continue;
                    };
                    let max = v["facility"]["jobs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|j| j["job_id"].as_u64())
                        .max()
                        .unwrap_or(0);
                    newest = newest.max(max);
                    let _ = tx.send((i, newest, now_ns, event.len()));
                }
            }
        }));
    }
    let mut driver = Conn::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let mut newest = vec![0u64; args.watchers];
    let mut latencies = Vec::new();
    let mut events = 0u64;
    let mut event_bytes = 0u64;
    let mut cycles = 0u64;
    let warm_until = Instant::now() + Duration::from_secs_f64(args.warmup);
    let mut window: Option<(CpuWindow, Instant)> = None;
    loop {
        let now = Instant::now();
        if window.is_none() && now >= warm_until {
            window = Some((CpuWindow::start(args.server_pid), now));
            events = 0;
            event_bytes = 0;
        }
        if let Some((_, started)) = &window {
            if started.elapsed().as_secs_f64() >= args.seconds {
                break;
            }
        }
        let sent_ns = epoch.elapsed().as_nanos() as u64;
        let job = create_job(&mut driver, "").map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last_ns = 0u64;
        while newest.iter().any(|&n| n < job) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or(format!("not every page heard of job {job} within 10 s"))?;
            let (page, n, at, len) = seen.recv_timeout(left).map_err(|e| {
                format!("waiting for every page to hear of job {job} (newest per page: {newest:?}): {e}")
            })?;
            events += 1;
            event_bytes += len as u64;
            if newest[page] < job && n >= job {
                last_ns = last_ns.max(at);
            }
            newest[page] = newest[page].max(n);
        }
        driver
            .call(&cmd("destroy_job", &job.to_string(), ""))
            .map_err(|e| e.to_string())?;
        if window.is_some() {
            latencies.push(last_ns.saturating_sub(sent_ns));
            cycles += 1;
        }
    }
    // Pages still reading what the last cycle pushed are counted as they come.
    while let Ok((_, _, _, len)) = seen.try_recv() {
        events += 1;
        event_bytes += len as u64;
    }
    stop.store(true, Ordering::SeqCst);
    let mut r = Report::new(args);
    let (window, _) = window.ok_or("the run ended in its warm-up")?;
    let wall = window.finish(&mut r, "pushed_event", events);
    for p in pages {
        let _ = p.join();
    }
    r.put("pages", args.watchers as u64);
    r.put("cycles", cycles);
    r.putf("cycles_per_s", cycles as f64 / wall);
    r.put("pushed_events", events);
    r.putf(
        "mean_event_bytes",
        if events > 0 {
            event_bytes as f64 / events as f64
        } else {
            0.0
        },
    );
    r.latencies("reach_all_pages", &mut latencies);
    Ok(r)
}
