//! `http-fanout`: N status pages follow `/events` while a driver creates and destroys
//! one-board jobs; the cost of pushing every change to every page.

use argh::FromArgs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{cmd, create_job, resolve, Conn};
use crate::report::{CpuWindow, Report};

/// --watchers status pages follow /events while a driver creates and destroys jobs.
#[derive(FromArgs)]
#[argh(subcommand, name = "http-fanout")]
pub struct HttpFanout {
    /// the server's HTTP address (--http), default 127.0.0.1:22280
    #[argh(option, default = "String::from(\"127.0.0.1:22280\")")]
    pub http_addr: String,
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

/// `--watchers` status pages subscribe to `/events`; a driver creates a job and times until
/// every page has been sent a state holding it, then destroys it, for `--seconds`. Every
/// change is pushed to every page (at most every 100 ms), so this is the cost of the
/// fan-out: server CPU per pushed event, and the latency a page sees.
pub fn run_http_fanout(args: &HttpFanout) -> Result<Report, String> {
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
    let mut r = Report::new("http-fanout", &args.label);
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
