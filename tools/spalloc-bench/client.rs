//! A line-protocol client for the network workloads: one connection, one request in
//! flight, notifications remembered; and the few commands the workloads send.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use spalloc::core::JobId;
use spalloc::testkit::LineClient;

/// One connection speaking the line protocol, one request in flight.
pub struct Conn {
    /// The shared line-protocol client; lines are read as text, not parsed (parsing would
    /// cost more than the server's work being measured).
    pub client: LineClient,
    pub line: String,
    /// Job ids from `jobs_changed` notifications not yet consumed.
    pub notified: Vec<JobId>,
}

pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Conn {
            client: LineClient::new(s)?,
            line: String::new(),
            notified: Vec::new(),
        })
    }

    /// Sends one command line and returns the `{"return": ...}` line (notifications that
    /// arrive first are remembered). An `exception` is an error.
    pub fn call(&mut self, request: &str) -> io::Result<&str> {
        self.client
            .send(request.as_bytes())
            .map_err(io::Error::other)?;
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

    pub fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        if self.client.read_text(&mut self.line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        Ok(())
    }

    /// If the current line is a notification, remember its job ids and say so.
    pub fn take_notification(&mut self) -> bool {
        if let Some(ids) = parse_jobs_changed(&self.line) {
            self.notified.extend(ids);
            true
        } else {
            self.line.starts_with("{\"machines_changed\"")
        }
    }

    /// Blocks until a `jobs_changed` naming `job` arrives (or has arrived).
    pub fn wait_notification(&mut self, job: JobId) -> io::Result<()> {
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
pub fn parse_jobs_changed(line: &str) -> Option<Vec<JobId>> {
    let rest = line.strip_prefix("{\"jobs_changed\": [")?;
    let list = &rest[..rest.find(']')?];
    Some(
        list.split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
    )
}

/// The integer after `"key": ` in a reply line (replies are Python-json.dumps formatted).
pub fn int_field(line: &str, key: &str) -> Option<i64> {
    let pat = format!("\"{key}\": ");
    let start = line.find(&pat)? + pat.len();
    let digits: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

pub fn cmd(name: &str, args: &str, kwargs: &str) -> String {
    format!("{{\"command\": \"{name}\", \"args\": [{args}], \"kwargs\": {{{kwargs}}}}}\n")
}

pub const JOB_KWARGS: &str = "\"owner\": \"bench\", \"keepalive\": 60.0";

pub fn create_job(c: &mut Conn, args: &str) -> io::Result<JobId> {
    let line = c.call(&cmd("create_job", args, JOB_KWARGS))?;
    int_field(line, "return")
        .map(|id| id as JobId)
        .ok_or_else(|| io::Error::other(format!("create_job answered {}", line.trim_end())))
}

pub fn job_state(c: &mut Conn, job: JobId) -> io::Result<i64> {
    let line = c.call(&cmd("get_job_state", &job.to_string(), ""))?;
    int_field(line, "state")
        .ok_or_else(|| io::Error::other(format!("get_job_state answered {}", line.trim_end())))
}

/// Reads one reply line from each of `streams` (non-blocking, polled); returns how many
/// answered within `timeout`.
pub fn await_one_line_each(streams: &[TcpStream], timeout: Duration) -> Result<usize, String> {
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
