//! Results: an ordered list of `key=value` pairs printed as one line (and as JSON), and
//! the server's CPU time and memory over a measured window, read from /proc.

use std::process::Command as Process;
use std::time::Instant;

/// An ordered list of `key=value` results.
pub struct Report(Vec<(String, serde_json::Value)>);

impl Report {
    pub fn new(workload: &str, label: &str) -> Report {
        let mut r = Report(Vec::new());
        r.put("workload", workload);
        r.put("label", label);
        r
    }

    pub fn put(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.0.push((key.to_string(), value.into()));
    }

    /// A float rounded to 3 significant decimals (readable lines).
    pub fn putf(&mut self, key: &str, value: f64) {
        let v = if value.abs() >= 100.0 {
            value.round()
        } else {
            (value * 1000.0).round() / 1000.0
        };
        self.put(key, v);
    }

    /// Latency percentiles (from nanoseconds) as `<prefix>_p50_us` etc.
    pub fn latencies(&mut self, prefix: &str, samples: &mut [u64]) {
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

    pub fn print(&self, json: bool) {
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

/// Clock ticks per second for /proc times (`getconf CLK_TCK`; 100 on every Linux seen).
pub fn clock_ticks_per_s() -> f64 {
    Process::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime+stime of a process (all threads), in seconds.
pub fn cpu_s(pid: &str) -> Option<f64> {
    cpu_times_s(pid).map(|(user, system)| user + system)
}

/// CPU seconds used by a process so far, in user space and in the kernel (`self` for this
/// process).
pub fn cpu_times_s(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 after "pid (comm) ".
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / clock_ticks_per_s(), stime / clock_ticks_per_s()))
}

/// A `kB` field of /proc/PID/status (VmHWM, VmRSS).
pub fn status_kb(pid: &str, field: &str) -> Option<u64> {
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
pub struct CpuWindow {
    server_pid: Option<String>,
    /// The server's CPU so far when the window started: user, kernel.
    server_start_s: Option<(f64, f64)>,
    self_start_s: Option<f64>,
    wall: Instant,
}

impl CpuWindow {
    pub fn start(server_pid: Option<u32>) -> CpuWindow {
        let server_pid = server_pid.map(|p| p.to_string());
        CpuWindow {
            server_start_s: server_pid.as_deref().and_then(cpu_times_s),
            self_start_s: cpu_s("self"),
            server_pid,
            wall: Instant::now(),
        }
    }

    /// Ends the window: adds wall time, CPU (server and bench) and the server's memory, and
    /// the server's CPU per `unit` (µs) if `count` > 0.
    pub fn finish(self, r: &mut Report, unit: &str, count: u64) -> f64 {
        let wall_s = self.wall.elapsed().as_secs_f64();
        r.putf("wall_s", wall_s);
        if let (Some(a), Some(b)) = (self.self_start_s, cpu_s("self")) {
            r.putf("bench_cpu_s", b - a);
        }
        if let Some(pid) = &self.server_pid {
            if let (Some((user_a, sys_a)), Some((user_b, sys_b))) =
                (self.server_start_s, cpu_times_s(pid))
            {
                let (user, sys) = (user_b - user_a, sys_b - sys_a);
                r.putf("server_cpu_s", user + sys);
                r.putf("server_cpu_pct", (user + sys) / wall_s * 100.0);
                if count > 0 {
                    r.putf(
                        &format!("server_cpu_us_per_{unit}"),
                        (user + sys) * 1e6 / count as f64,
                    );
                    // The server's own code apart from the kernel's work for it (mostly
                    // the wake-ups its replies cause, which depend on how the scheduler
                    // places the clients on a small machine): what a change to the server's
                    // code moves, with less of the run-to-run noise.
                    r.putf(
                        &format!("server_user_us_per_{unit}"),
                        user * 1e6 / count as f64,
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
