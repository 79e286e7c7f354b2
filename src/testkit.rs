//! The line-protocol client of the tests and the benchmark (the server never uses it).
//!
//! One JSON object per line each way: a request `{"command", "args", "kwargs"}`, answered in
//! order by a line holding `return` or `exception`, with notifications (`jobs_changed`,
//! `machines_changed`) interleaved whenever the server has some. [`LineClient`] is the one
//! implementation of that framing; callers connect the stream their own way (timeouts,
//! `TCP_NODELAY`), choose whether notifications are kept, and either parse each line
//! ([`LineClient::reply`], [`LineClient::call`]) or read it as text ([`LineClient::read_text`])
//! when the parsing would cost more than the server's work being measured.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};

/// Why no line could be read.
#[derive(Debug)]
pub enum LineError {
    /// The server closed the connection.
    Closed,
    /// Reading failed (a timeout, a reset).
    Read(io::Error),
    /// The line was not JSON.
    Bad {
        /// The line as received.
        line: String,
        /// Why it does not parse.
        error: serde_json::Error,
    },
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::Closed => write!(f, "connection closed"),
            LineError::Read(e) => write!(f, "read: {e}"),
            LineError::Bad { line, error } => write!(f, "bad line {line:?}: {error}"),
        }
    }
}

/// The request line for `command`: `{"command": ..., "args": ..., "kwargs": ...}` and a
/// newline.
pub fn request_line(command: &str, args: Value, kwargs: Value) -> String {
    json!({"command": command, "args": args, "kwargs": kwargs}).to_string() + "\n"
}

/// One connection speaking the line protocol. Every call returns `Err` with the cause when
/// the server is gone, closes the connection, or does not answer within the stream's read
/// timeout; it never panics, so it also serves tests that kill the server under it.
pub struct LineClient {
    /// The connection (for raw writes, timeouts, shutting it down).
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// Notifications received while waiting for replies, oldest first (if kept).
    pub notifications: Vec<Value>,
    /// Keep notifications in [`LineClient::notifications`] (off: they are skipped).
    pub keep_notifications: bool,
}

impl LineClient {
    /// A client on a stream the caller connected and configured; notifications skipped.
    pub fn new(stream: TcpStream) -> io::Result<LineClient> {
        let reader = BufReader::new(stream.try_clone()?);
        Ok(LineClient {
            stream,
            reader,
            notifications: Vec::new(),
            keep_notifications: false,
        })
    }

    /// Connect to the server on `port` of 127.0.0.1 within `timeout`; replies are awaited
    /// (and writes may block) at most `timeout`.
    pub fn connect(port: u16, timeout: Duration) -> Result<LineClient, String> {
        let stream = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        LineClient::new(stream).map_err(|e| e.to_string())
    }

    /// Send raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("write: {e}"))
    }

    /// Append the next line, newline included, to `line` as text; its length in bytes (0:
    /// the server closed the connection).
    pub fn read_text(&mut self, line: &mut String) -> io::Result<usize> {
        self.reader.read_line(line)
    }

    /// The next line from the server, parsed.
    pub fn next_line(&mut self) -> Result<Value, LineError> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(LineError::Closed),
            Ok(_) => serde_json::from_str(&line).map_err(|error| LineError::Bad { line, error }),
            Err(e) => Err(LineError::Read(e)),
        }
    }

    /// The next line from the server, parsed (the error as text).
    pub fn line(&mut self) -> Result<Value, String> {
        self.next_line().map_err(|e| e.to_string())
    }

    /// The next line from the server, unparsed (its length in bytes, newline included).
    pub fn raw_line(&mut self) -> Result<usize, String> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => Err("connection closed".into()),
            Ok(n) => Ok(n),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// The next reply (`return` or `exception`); notifications on the way are kept or
    /// skipped as [`LineClient::keep_notifications`] says.
    pub fn next_reply(&mut self) -> Result<Value, LineError> {
        loop {
            let v = self.next_line()?;
            if v.get("return").is_some() || v.get("exception").is_some() {
                return Ok(v);
            }
            if self.keep_notifications {
                self.notifications.push(v);
            }
        }
    }

    /// The next reply (the error as text).
    pub fn reply(&mut self) -> Result<Value, String> {
        self.next_reply().map_err(|e| e.to_string())
    }

    /// Send one command and wait for its whole reply object.
    pub fn call_raw(&mut self, command: &str, args: Value, kwargs: Value) -> Result<Value, String> {
        self.send(request_line(command, args, kwargs).as_bytes())?;
        self.reply()
    }

    /// Send one command; its `return` value, or `Err` for an exception reply too.
    pub fn call(&mut self, command: &str, args: Value, kwargs: Value) -> Result<Value, String> {
        let r = self.call_raw(command, args, kwargs)?;
        match r.get("return") {
            Some(v) => Ok(v.clone()),
            None => Err(format!("{command} raised {r}")),
        }
    }
}
