//! `fanout`: W watchers notify_job() on every job; a driver creates a job and times until
//! every watcher has heard of it, then destroys it.

use argh::FromArgs;
use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{cmd, create_job, parse_jobs_changed, resolve, Conn};
use crate::report::{CpuWindow, Report};

/// W connections notify_job() on every job; a driver creates a job and times until every watcher has heard of it.
#[derive(FromArgs)]
#[argh(subcommand, name = "fanout")]
pub struct Fanout {
    /// server address, default 127.0.0.1:22244
    #[argh(option, default = "String::from(\"127.0.0.1:22244\")")]
    pub addr: String,
    /// watcher connections (default 100)
    #[argh(option, default = "100")]
    pub watchers: usize,
    /// measured seconds (default 10)
    #[argh(option, default = "10.0")]
    pub seconds: f64,
    /// warm-up seconds before measuring (default 1)
    #[argh(option, default = "1.0")]
    pub warmup: f64,
    /// the server's process id, to report its CPU time and memory
    #[argh(option)]
    pub server_pid: Option<u32>,
    /// also print the result as one JSON object
    #[argh(switch)]
    pub json: bool,
    /// a label copied into the result (e.g. ours, original)
    #[argh(option, default = "String::from(\"-\")")]
    pub label: String,
}

/// Shared between the driver and the watcher thread.
struct FanoutShared {
    /// The job id whose notification is awaited (0: none).
    target: AtomicU64,
    stop: AtomicBool,
    /// Notification lines received while measuring.
    lines: AtomicU64,
    measuring: AtomicBool,
}

pub fn run_fanout(args: &Fanout) -> Result<Report, String> {
    use polling::{Event as PollEvent, Events, Poller};
    let addr = resolve(&args.addr)?;
    let n = args.watchers;
    let mut watchers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = Conn::connect(addr).map_err(|e| format!("connect: {e}"))?;
        c.call(&cmd("notify_job", "", ""))
            .map_err(|e| format!("notify_job: {e}"))?;
        // Only the socket is kept: the line reader's duplicate descriptor goes now, or
        // 10,000 watchers would need 20,000 descriptors while they connect.
        watchers.push(c.client.stream);
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
        .map(|stream| {
            stream.set_nonblocking(true).unwrap();
            stream
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
    let mut r = Report::new("fanout", &args.label);
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
