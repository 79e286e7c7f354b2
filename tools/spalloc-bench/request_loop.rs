//! `version`, `keepalive` and `churn`: N client threads, each with one request in flight,
//! measured over a window after a warm-up.

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use argh::FromArgs;
use spalloc::core::JobId;

use crate::client::{cmd, create_job, job_state, resolve, Conn};
use crate::report::{CpuWindow, Report};

/// `version` in a loop: the loop's overhead (nothing journaled).
#[derive(FromArgs)]
#[argh(subcommand, name = "version")]
pub struct Version {
    /// server address, default 127.0.0.1:22244
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
    /// the server's process id, to report its CPU time and memory
    #[argh(option)]
    server_pid: Option<u32>,
    /// also print the result as one JSON object
    #[argh(switch)]
    pub json: bool,
    /// a label copied into the result (e.g. ours, original)
    #[argh(option, default = "String::from(\"-\")")]
    label: String,
}

/// Each client holds a 1-board job and alternates job_keepalive / get_job_state.
#[derive(FromArgs)]
#[argh(subcommand, name = "keepalive")]
pub struct Keepalive {
    /// server address, default 127.0.0.1:22244
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
    /// the server's process id, to report its CPU time and memory
    #[argh(option)]
    server_pid: Option<u32>,
    /// also print the result as one JSON object
    #[argh(switch)]
    pub json: bool,
    /// a label copied into the result (e.g. ours, original)
    #[argh(option, default = "String::from(\"-\")")]
    label: String,
}

/// create_job → get_job_state until ready (or notify_job) → destroy_job, in a loop.
#[derive(FromArgs)]
#[argh(subcommand, name = "churn")]
pub struct Churn {
    /// server address, default 127.0.0.1:22244
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
    /// boards per job (default 1)
    #[argh(option, default = "1")]
    boards: u32,
    /// wait for readiness with notify_job instead of polling get_job_state
    #[argh(switch)]
    notify: bool,
    /// the server's process id, to report its CPU time and memory
    #[argh(option)]
    server_pid: Option<u32>,
    /// also print the result as one JSON object
    #[argh(switch)]
    pub json: bool,
    /// a label copied into the result (e.g. ours, original)
    #[argh(option, default = "String::from(\"-\")")]
    label: String,
}

/// What the three workloads share, from their command lines.
struct Loop<'a> {
    workload: &'static str,
    addr: &'a str,
    clients: usize,
    seconds: f64,
    warmup: f64,
    boards: u32,
    notify: bool,
    server_pid: Option<u32>,
    label: &'a str,
}

impl Version {
    pub fn run(&self) -> Result<Report, String> {
        run_request_loop(&Loop {
            workload: "version",
            addr: &self.addr,
            clients: self.clients,
            seconds: self.seconds,
            warmup: self.warmup,
            boards: 1,
            notify: false,
            server_pid: self.server_pid,
            label: &self.label,
        })
    }
}

impl Keepalive {
    pub fn run(&self) -> Result<Report, String> {
        run_request_loop(&Loop {
            workload: "keepalive",
            addr: &self.addr,
            clients: self.clients,
            seconds: self.seconds,
            warmup: self.warmup,
            boards: 1,
            notify: false,
            server_pid: self.server_pid,
            label: &self.label,
        })
    }
}

impl Churn {
    pub fn run(&self) -> Result<Report, String> {
        run_request_loop(&Loop {
            workload: "churn",
            addr: &self.addr,
            clients: self.clients,
            seconds: self.seconds,
            warmup: self.warmup,
            boards: self.boards,
            notify: self.notify,
            server_pid: self.server_pid,
            label: self.label.as_str(),
        })
    }
}

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

fn run_request_loop(args: &Loop) -> Result<Report, String> {
    let addr = resolve(args.addr)?;
    let phase = Arc::new(AtomicU8::new(PHASE_WARMUP));
    let ready = Arc::new(Barrier::new(args.clients + 1));
    let mut threads = Vec::new();
    for _ in 0..args.clients {
        let phase = Arc::clone(&phase);
        let ready = Arc::clone(&ready);
        let workload = args.workload;
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
            let result = match workload {
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
    let mut r = Report::new(args.workload, args.label);
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
