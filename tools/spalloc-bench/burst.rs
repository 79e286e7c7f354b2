//! `burst`: N simultaneous connects (a barrier), each asking for the version once.

use argh::FromArgs;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use crate::client::{cmd, resolve, Conn};
use crate::report::{CpuWindow, Report};

/// N threads connect at the same instant, each asks for the version once.
#[derive(FromArgs)]
#[argh(subcommand, name = "burst")]
pub struct Burst {
    /// server address, default 127.0.0.1:22244
    #[argh(option, default = "String::from(\"127.0.0.1:22244\")")]
    pub addr: String,
    /// simultaneous connects (default 10000)
    #[argh(option, default = "10000")]
    pub connections: usize,
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

/// N threads connect at the same instant, each asks for the version once and keeps its
/// connection open until every thread is done (so all N are open together).
pub fn run_burst(args: &Burst) -> Result<Report, String> {
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
    let mut r = Report::new("burst", &args.label);
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
