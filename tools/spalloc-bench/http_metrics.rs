//! `http-metrics`: `/metrics` scraped back to back on fresh connections.

use argh::FromArgs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::resolve;
use crate::report::{CpuWindow, Report};

/// --clients connections scrape /metrics back to back.
#[derive(FromArgs)]
#[argh(subcommand, name = "http-metrics")]
pub struct HttpMetrics {
    /// the server's HTTP address (--http), default 127.0.0.1:22280
    #[argh(option, default = "String::from(\"127.0.0.1:22280\")")]
    pub http_addr: String,
    /// client connections, each with one request in flight (default 50)
    #[argh(option, default = "50")]
    pub clients: usize,
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
pub fn run_http_metrics(args: &HttpMetrics) -> Result<Report, String> {
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
    let mut r = Report::new("http-metrics", &args.label);
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
