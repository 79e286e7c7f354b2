//! `connections`: N idle connections opened one after another, each served; the server's
//! memory at that count.

use argh::FromArgs;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::client::{await_one_line_each, cmd, resolve};
use crate::report::{status_kb, CpuWindow, Report};

/// Open N idle connections one after another, check each is served, report the server's memory.
#[derive(FromArgs)]
#[argh(subcommand, name = "connections")]
pub struct Connections {
    /// server address, default 127.0.0.1:22244
    #[argh(option, default = "String::from(\"127.0.0.1:22244\")")]
    pub addr: String,
    /// idle connections to open (default 10000)
    #[argh(option, default = "10000")]
    pub connections: usize,
    /// stop opening connections after this many seconds (default 90)
    #[argh(option, default = "90.0")]
    pub connect_deadline: f64,
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

/// Open N idle connections, check each is served, report the server's memory at that count.
pub fn run_connections(args: &Connections) -> Result<Report, String> {
    let addr = resolve(&args.addr)?;
    let pid = args.server_pid.map(|p| p.to_string());
    let mut r = Report::new("connections", &args.label);
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
