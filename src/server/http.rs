//! The read-only HTTP port (`--http ADDR:PORT`): the status page, its live event stream,
//! Prometheus metrics and a small JSON API, served by the server's own `polling` loop.
//!
//! | path | what |
//! |---|---|
//! | `/` | the status page (`status.html`); its script is `/status.js` |
//! | `/events` | Server-Sent Events: the facility as JSON, at once and after every change |
//! | `/metrics` | Prometheus exposition ([`super::metrics`]) |
//! | `/api/machines`, `/api/jobs`, `/api/jobs/ID` | JSON |
//!
//! Nothing here blocks and nothing here changes state: the loop hands over the sockets that
//! are ready ([`Http::serve`]) after each pass has folded its events, and requests are
//! answered from the core as it then stands. Requests are parsed by `httparse`; every
//! response closes its connection (`Connection: close`), except an event stream, which
//! stays open and receives one `facility` event per change, rendered once for all
//! subscribers and sent no more often than every [`PUSH_INTERVAL_US`].
//!
//! Everything is bounded: a request's size ([`REQUEST_MAX_BYTES`]) and the time to send it
//! ([`REQUEST_TIMEOUT_US`]), the connections ([`MAX_CONNECTIONS`]) and the subscribers
//! ([`MAX_SUBSCRIBERS`]) at once, and the output a subscriber may leave unread
//! ([`SUBSCRIBER_BACKLOG_BYTES`]): a slower one is dropped (its page reconnects and starts
//! from the current state), never buffered without bound. Client text (owners, reasons)
//! reaches the page only as JSON strings (serde escapes them), and the page's script puts
//! it in the document only as text; the Content-Security-Policy forbids inline script
//! anyway.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use polling::{Event as PollEvent, Poller};
use serde::Serialize;

use super::metrics::Metrics;
use crate::core::view::FacilityView;
use crate::core::{Core, EndReason, JobId, JobState, TimeUs};

/// The most bytes a request (line and headers) may have.
pub const REQUEST_MAX_BYTES: usize = 8 * 1024;
/// The most headers a request may have.
const REQUEST_MAX_HEADERS: usize = 32;
/// A connection (other than an event stream) still open this long after it was accepted is
/// closed: it has not sent a whole request, or not read its response, in that time.
pub const REQUEST_TIMEOUT_US: TimeUs = 10_000_000;
/// The most HTTP connections (event streams included) open at once, by default.
pub const MAX_CONNECTIONS: usize = 128;
/// The most event-stream subscribers at once, by default.
pub const MAX_SUBSCRIBERS: usize = 32;
/// The most output a subscriber may leave unread before it is dropped, by default.
pub const SUBSCRIBER_BACKLOG_BYTES: usize = 4 * 1024 * 1024;
/// Changes are pushed to subscribers at most this often (several changes in between make
/// one push of the state after them).
pub const PUSH_INTERVAL_US: TimeUs = 100_000;
/// Subscribers get the state at least this often even when nothing changed, so a page's
/// keepalive countdowns are corrected after keepalives (which are not changes).
pub const REFRESH_INTERVAL_US: TimeUs = 5_000_000;
/// How many ended jobs the page lists (newest first).
pub const ENDED_SHOWN: usize = 20;
/// The listener's key in the poller; connections take keys from [`KEY_BASE`] up.
/// (The key map is in `server/mod.rs`.)
pub const LISTENER_KEY: usize = usize::MAX - 3;
/// Connection keys start here (the protocol port's clients count up from 0) and stay below
/// the admin socket's ([`super::admin::ADMIN_KEY_BASE`]).
const KEY_BASE: usize = 1 << (usize::BITS - 3);

// The HTTP port's keys overlap no other socket's (the admin socket's connections start at
// ADMIN_KEY_BASE; the admin and protocol listeners are usize::MAX - 2 and - 1).
const _: () = assert!(KEY_BASE < super::admin::ADMIN_KEY_BASE && LISTENER_KEY < usize::MAX - 2);

const PAGE_HTML: &str = include_str!("status.html");
const PAGE_JS: &str = include_str!("status.js");

/// What the command line asked of the HTTP port.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Most connections at once.
    pub max_connections: usize,
    /// Most event-stream subscribers at once.
    pub max_subscribers: usize,
    /// Most unread output per subscriber before it is dropped.
    pub subscriber_backlog_bytes: usize,
}

impl HttpOptions {
    /// The defaults, listening on `addr`.
    pub fn new(addr: SocketAddr) -> HttpOptions {
        HttpOptions {
            addr,
            max_connections: MAX_CONNECTIONS,
            max_subscribers: MAX_SUBSCRIBERS,
            subscriber_backlog_bytes: SUBSCRIBER_BACKLOG_BYTES,
        }
    }
}

/// True if `key` is one of the HTTP port's (listener or connection).
pub fn owns_key(key: usize) -> bool {
    key == LISTENER_KEY || (KEY_BASE..super::admin::ADMIN_KEY_BASE).contains(&key)
}

/// One connection.
struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    sent: usize,
    opened_us: TimeUs,
    /// An event stream (after its response header).
    subscriber: bool,
    /// Close once the output is sent.
    closing: bool,
}

impl Conn {
    fn pending(&self) -> usize {
        self.output.len() - self.sent
    }

    /// Send what the socket takes; `Err` if the connection failed.
    fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.output.len() {
            match self.stream.write(&self.output[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.output.len() {
            self.output.clear();
            self.sent = 0;
        } else if self.sent > 64 * 1024 {
            self.output.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }
}

/// A job that ended, as the page lists it.
#[derive(Clone, Debug, Serialize)]
pub struct EndedJob {
    /// The job.
    pub job_id: JobId,
    /// Why, typed (`owner`, `keepalive_expired`, …).
    pub reason: &'static str,
    /// Why, as its client is told (client text when its owner gave it).
    pub text: Option<String>,
    /// When (event time, µs since the Unix epoch).
    pub ended_us: TimeUs,
}

/// What an event stream carries: the facility, and the jobs that ended lately.
#[derive(Serialize)]
struct Status<'a> {
    version: &'static str,
    /// The server's clock when this was sent (the page's countdowns run from it).
    sent_us: TimeUs,
    facility: &'a FacilityView,
    ended: &'a VecDeque<EndedJob>,
    journal: JournalStatus,
}

/// The journal's health as the page shows it: while its writes fail, the server refuses
/// changes (a banner says so), which the facility view alone would not show.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
struct JournalStatus {
    /// The journal's last write failed: changes are refused.
    failing: bool,
    /// Since when (the server's clock), while failing.
    since_us: Option<TimeUs>,
}

/// A job as `/api/jobs/ID` shows one that has ended.
#[derive(Serialize)]
struct RetiredJob {
    job_id: JobId,
    state: &'static str,
    reason: Option<String>,
    end_reason: Option<&'static str>,
}

/// The HTTP port.
pub struct Http {
    opts: HttpOptions,
    poller: Arc<Poller>,
    listener: TcpListener,
    conns: BTreeMap<usize, Conn>,
    next_key: usize,
    /// The facility changed since the last push.
    changed: bool,
    last_push_us: TimeUs,
    ended: VecDeque<EndedJob>,
    journal: JournalStatus,
    /// The time of the pass being served.
    now_us: TimeUs,
    log: super::Logger,
}

impl Http {
    /// Listen on `opts.addr`.
    pub fn start(
        opts: HttpOptions,
        poller: Arc<Poller>,
        log: super::Logger,
    ) -> Result<Http, String> {
        let listener = TcpListener::bind(opts.addr)
            .map_err(|e| format!("cannot listen for HTTP on {}: {e}", opts.addr))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot configure the HTTP listener: {e}"))?;
        // SAFETY: the listener is deleted from the poller before it is dropped (`Drop`).
        unsafe { poller.add(&listener, PollEvent::readable(LISTENER_KEY)) }
            .map_err(|e| format!("cannot watch the HTTP listener: {e}"))?;
        Ok(Http {
            opts,
            poller,
            listener,
            conns: BTreeMap::new(),
            next_key: KEY_BASE,
            changed: false,
            last_push_us: 0,
            ended: VecDeque::new(),
            journal: JournalStatus::default(),
            now_us: 0,
            log,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Event-stream subscribers connected now.
    pub fn subscribers(&self) -> usize {
        self.conns.values().filter(|c| c.subscriber).count()
    }

    /// The facility changed (a job or machine did): subscribers hear of it.
    pub fn note_change(&mut self) {
        self.changed = true;
    }

    /// Whether the journal's last write failed, as of `now`: when that changes, subscribers
    /// hear of it.
    pub fn note_journal(&mut self, failing: bool, now: TimeUs) {
        if failing != self.journal.failing {
            self.journal = JournalStatus {
                failing,
                since_us: failing.then_some(now),
            };
            self.changed = true;
        }
    }

    /// A job ended: the page lists it (the newest [`ENDED_SHOWN`]).
    pub fn note_ended(
        &mut self,
        job_id: JobId,
        reason: EndReason,
        text: Option<String>,
        now: TimeUs,
    ) {
        if self.ended.len() == ENDED_SHOWN {
            self.ended.pop_back();
        }
        self.ended.push_front(EndedJob {
            job_id,
            reason: reason.name(),
            text,
            ended_us: now,
        });
        self.changed = true;
    }

    /// When the loop must next call [`Http::serve`] even if no socket is ready: a push held
    /// back by [`PUSH_INTERVAL_US`], a refresh, or a request timing out.
    pub fn next_deadline(&self) -> Option<TimeUs> {
        let push = if self.subscribers() == 0 {
            None
        } else if self.changed {
            Some(self.last_push_us + PUSH_INTERVAL_US)
        } else {
            Some(self.last_push_us + REFRESH_INTERVAL_US)
        };
        let timeout = self
            .conns
            .values()
            .filter(|c| !c.subscriber)
            .map(|c| c.opened_us + REQUEST_TIMEOUT_US)
            .min();
        [push, timeout].into_iter().flatten().min()
    }

    /// Serve the sockets `ready` reported (keys this port owns), then push the state to
    /// subscribers if it is due, and close connections whose request timed out.
    pub fn serve(
        &mut self,
        ready: &[(usize, bool, bool)],
        now: TimeUs,
        core: &Core,
        metrics: &Metrics,
        clients: usize,
    ) {
        self.now_us = now;
        let mut view: Option<FacilityView> = None;
        for &(key, readable, _writable) in ready {
            if key == LISTENER_KEY {
                self.accept(now);
                continue;
            }
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            if conn.flush().is_err() {
                self.close(key);
                continue;
            }
            if readable {
                self.read(key, core, metrics, clients, &mut view);
            }
            self.rearm(key);
        }
        let push_due = now >= self.last_push_us + PUSH_INTERVAL_US
            && (self.changed || now >= self.last_push_us + REFRESH_INTERVAL_US);
        if push_due && self.subscribers() > 0 {
            let view = view.get_or_insert_with(|| core.facility_view());
            let event = self.render_event(view);
            let keys: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.subscriber)
                .map(|(k, _)| *k)
                .collect();
            for key in keys {
                self.push(key, &event);
            }
            self.changed = false;
            self.last_push_us = now;
        }
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.subscriber && now >= c.opened_us + REQUEST_TIMEOUT_US)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.close(key);
        }
    }

    fn accept(&mut self, now: TimeUs) {
        loop {
            match self.listener.accept() {
                Ok((stream, _peer)) => {
                    if self.conns.len() >= self.opts.max_connections {
                        // Read what already came (closing on unread input would reset the
                        // connection before the client reads why), then say why.
                        let mut s = stream;
                        let _ = s.set_nonblocking(true);
                        let mut sink = [0u8; 4096];
                        for _ in 0..4 {
                            if !matches!(s.read(&mut sink), Ok(n) if n > 0) {
                                break;
                            }
                        }
                        let _ = s.write_all(&response(
                            "503 Service Unavailable",
                            "text/plain; charset=utf-8",
                            b"too many connections; try again later\n",
                        ));
                        continue;
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let key = self.next_key;
                    self.next_key += 1;
                    // SAFETY: the stream is deleted from the poller before it is dropped
                    // (`close`).
                    if unsafe { self.poller.add(&stream, PollEvent::readable(key)) }.is_err() {
                        continue;
                    }
                    self.conns.insert(
                        key,
                        Conn {
                            stream,
                            input: Vec::new(),
                            output: Vec::new(),
                            sent: 0,
                            opened_us: now,
                            subscriber: false,
                            closing: false,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock, or out of descriptors: the next readiness tries again.
                Err(_) => break,
            }
        }
        let _ = self
            .poller
            .modify(&self.listener, PollEvent::readable(LISTENER_KEY));
    }

    /// Read from a connection; answer its request once it is whole.
    fn read(
        &mut self,
        key: usize,
        core: &Core,
        metrics: &Metrics,
        clients: usize,
        view: &mut Option<FacilityView>,
    ) {
        let conn = self.conns.get_mut(&key).expect("checked by the caller");
        let mut buf = [0u8; 4096];
        let mut eof = false;
        let mut total = 0;
        // (At most a request's worth per pass, so a client that keeps sending cannot keep
        // the loop here.)
        while total <= REQUEST_MAX_BYTES {
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    total += n;
                    if conn.subscriber || conn.closing {
                        continue; // nothing more is expected: ignored
                    }
                    conn.input.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if conn.subscriber || conn.closing {
            if eof {
                self.close(key);
            }
            return;
        }
        let mut headers = [httparse::EMPTY_HEADER; REQUEST_MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = match req.parse(&conn.input) {
            Ok(httparse::Status::Complete(_)) => Ok((
                req.method.unwrap_or("").to_string(),
                req.path.unwrap_or("/").to_string(),
            )),
            Ok(httparse::Status::Partial) if conn.input.len() > REQUEST_MAX_BYTES => Err(
                error_response("431 Request Header Fields Too Large", "request too large"),
            ),
            Ok(httparse::Status::Partial) if eof => {
                self.close(key);
                return;
            }
            Ok(httparse::Status::Partial) => return,
            Err(httparse::Error::TooManyHeaders) => Err(error_response(
                "431 Request Header Fields Too Large",
                "too many headers",
            )),
            Err(e) => Err(error_response(
                "400 Bad Request",
                &format!("bad request: {e}"),
            )),
        };
        let reply = match parsed {
            Ok((method, path)) => self.route(key, &method, &path, core, metrics, clients, view),
            Err(bytes) => Some(bytes),
        };
        let conn = self.conns.get_mut(&key).expect("still open");
        conn.input = Vec::new();
        if let Some(bytes) = reply {
            conn.output.extend_from_slice(&bytes);
            conn.closing = true;
        }
    }

    /// Answer one request: the response bytes, or `None` if the connection became an
    /// event stream (its header and first event are queued).
    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        key: usize,
        method: &str,
        target: &str,
        core: &Core,
        metrics: &Metrics,
        clients: usize,
        view: &mut Option<FacilityView>,
    ) -> Option<Vec<u8>> {
        if method != "GET" && method != "HEAD" {
            return Some(error_response(
                "405 Method Not Allowed",
                "only GET and HEAD: this port is read-only",
            ));
        }
        let path = target.split(['?', '#']).next().unwrap_or("/");
        let mut get_view =
            || -> FacilityView { view.get_or_insert_with(|| core.facility_view()).clone() };
        let full = match path {
            "/" | "/index.html" => {
                response("200 OK", "text/html; charset=utf-8", PAGE_HTML.as_bytes())
            }
            "/status.js" => response(
                "200 OK",
                "text/javascript; charset=utf-8",
                PAGE_JS.as_bytes(),
            ),
            "/metrics" => {
                let v = get_view();
                let text = metrics.render(&v, clients, self.subscribers());
                response(
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text.as_bytes(),
                )
            }
            "/api/machines" => json_response(&get_view().machines),
            "/api/jobs" => json_response(&get_view().jobs),
            "/events" if method == "HEAD" => {
                return Some(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
                        .to_vec(),
                );
            }
            "/events" => {
                if self.subscribers() >= self.opts.max_subscribers {
                    return Some(error_response(
                        "503 Service Unavailable",
                        "too many status pages open; try again later",
                    ));
                }
                let v = get_view();
                let event = self.render_event(&v);
                let conn = self.conns.get_mut(&key).expect("open");
                conn.subscriber = true;
                conn.output.extend_from_slice(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n",
                );
                // Reconnect a second after the server goes away (a restart).
                conn.output.extend_from_slice(b"retry: 1000\n\n");
                conn.output.extend_from_slice(&event);
                return None;
            }
            p => match p.strip_prefix("/api/jobs/").map(str::parse::<JobId>) {
                Some(Ok(id)) => {
                    let v = get_view();
                    if let Some(job) = v.jobs.iter().find(|j| j.job_id == id) {
                        json_response(job)
                    } else if core.job_state(id).state == JobState::Destroyed.number() {
                        json_response(&RetiredJob {
                            job_id: id,
                            state: "destroyed",
                            reason: core.job_state(id).reason,
                            end_reason: core.end_reason(id).map(EndReason::name),
                        })
                    } else {
                        error_response("404 Not Found", "no such job")
                    }
                }
                Some(Err(_)) => error_response("404 Not Found", "a job id is a number"),
                None => error_response("404 Not Found", "no such page"),
            },
        };
        if method == "HEAD" {
            let end = full
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(full.len(), |i| i + 4);
            return Some(full[..end].to_vec());
        }
        Some(full)
    }

    fn render_event(&self, view: &FacilityView) -> Vec<u8> {
        let status = Status {
            version: env!("CARGO_PKG_VERSION"),
            sent_us: self.now_us,
            facility: view,
            ended: &self.ended,
            journal: self.journal,
        };
        // Compact JSON has no raw newline (serde escapes those in strings), so it is one
        // `data:` line.
        let json = serde_json::to_string(&status).expect("the status serialises");
        let mut event = Vec::with_capacity(json.len() + 32);
        event.extend_from_slice(b"event: facility\ndata: ");
        event.extend_from_slice(json.as_bytes());
        event.extend_from_slice(b"\n\n");
        event
    }

    /// Queue an event for a subscriber, or drop it if it has fallen too far behind.
    fn push(&mut self, key: usize, event: &[u8]) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.pending() + event.len() > self.opts.subscriber_backlog_bytes {
            let peer = conn
                .stream
                .peer_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            self.log.info(&format!(
                "status page {peer} disconnected: it left more than {} bytes unread",
                self.opts.subscriber_backlog_bytes
            ));
            self.close(key);
            return;
        }
        conn.output.extend_from_slice(event);
        debug_assert!(conn.pending() <= self.opts.subscriber_backlog_bytes);
        if conn.flush().is_err() {
            self.close(key);
            return;
        }
        if conn.pending() > 0 {
            self.rearm(key);
        }
    }

    /// Re-arm a connection's interest (oneshot mode), or close it once done.
    fn rearm(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.flush().is_err() || (c.closing && c.pending() == 0) {
            self.close(key);
            return;
        }
        // Subscribers stay readable so that a closed page is noticed.
        let interest = PollEvent::new(key, !c.closing, c.pending() > 0);
        if self.poller.modify(&c.stream, interest).is_err() {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(c) = self.conns.remove(&key) {
            let _ = self.poller.delete(&c.stream);
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let keys: Vec<usize> = self.conns.keys().copied().collect();
        for key in keys {
            self.close(key);
        }
        let _ = self.poller.delete(&self.listener);
    }
}

fn response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self'\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn json_response<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let body = serde_json::to_vec(value).expect("views serialise");
    response("200 OK", "application/json", &body)
}

fn error_response(status: &str, message: &str) -> Vec<u8> {
    response(
        status,
        "text/plain; charset=utf-8",
        format!("{message}\n").as_bytes(),
    )
}
