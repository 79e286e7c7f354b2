//! HTTP for the tests of the server's `--http` port: one-shot requests over raw TCP, the
//! metrics' samples, and an event-stream subscriber.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Server;

/// How long a test waits for an HTTP answer or a condition.
pub const WAIT: Duration = Duration::from_secs(20);

/// The HTTP port a server started with `--http 127.0.0.1:0` listens on (from its log).
pub fn http_port(server: &mut Server) -> u16 {
    let line = server
        .wait_for_log("http listening on ", WAIT)
        .unwrap_or_else(|| panic!("no HTTP port; log:\n{}", server.log_text()));
    line.rsplit(':').next().unwrap().trim().parse().unwrap()
}

/// A response: status code, headers (lower-case names), body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8")
    }
}

/// Send raw request bytes and read the whole response (the server closes after it).
pub fn raw(port: u16, request: &[u8]) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request).unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes)
        .expect("the server closes after its response");
    parse_response(&bytes)
}

pub fn parse_response(bytes: &[u8]) -> Response {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(bytes)));
    let head = std::str::from_utf8(&bytes[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    Response {
        status,
        headers,
        body: bytes[end + 4..].to_vec(),
    }
}

/// Connect and send nothing (half-closing at once): the status of the response, if any.
pub fn knock(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).expect("closed by the server");
    (!bytes.is_empty()).then(|| parse_response(&bytes).status)
}

pub fn get(port: u16, path: &str) -> Response {
    raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
    )
}

/// The value of the first sample line of the exposition starting with `series`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// Wait (bounded) until `f` holds.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `text/event-stream` subscriber.
pub struct Subscriber {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Subscriber {
    pub fn connect(port: u16) -> Subscriber {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
            .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            .unwrap();
        let mut sub = Subscriber {
            stream,
            buf: Vec::new(),
        };
        let head = sub.read_until(b"\r\n\r\n");
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        assert!(String::from_utf8_lossy(&head).contains("text/event-stream"));
        sub
    }

    pub fn read_until(&mut self, delim: &[u8]) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(delim.len()).position(|w| w == delim) {
                return self.buf.drain(..i + delim.len()).collect();
            }
            let mut chunk = [0u8; 65536];
            let n = self
                .stream
                .read(&mut chunk)
                .expect("an event before the timeout");
            assert!(n > 0, "the stream ended");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next `facility` event's data.
    pub fn next(&mut self) -> Value {
        loop {
            let event = String::from_utf8(self.read_until(b"\n\n")).unwrap();
            if let Some(data) = event
                .strip_prefix("event: facility\ndata: ")
                .map(|d| d.trim_end())
            {
                return serde_json::from_str(data).unwrap();
            }
        }
    }

    /// Events until one satisfies `pred` (bounded by the read timeout).
    pub fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.next();
            if pred(&v) {
                return v;
            }
        }
    }
}
