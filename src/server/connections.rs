//! Connections: accepting protocol clients (bounded by `clients_max`, with a back-off when
//! out of descriptors) and admin connections, reading their input and cutting it into
//! requests (each client's share of a pass, checked against the limits before anything is
//! journaled), queuing replies within the output bounds, re-arming and closing.

use std::collections::BTreeMap;
use std::io;

use polling::{Event as PollEvent, PollMode};

use super::client::{Client, ReadOutcome};
use super::metrics::{DisconnectedBecause, RefusedBecause};
use super::touched::Touched;
use super::{admin, Action, Limits, Server, ADMIN_LISTENER_KEY, LISTENER_KEY};
use crate::core::{Command, Core, Event, Response, TimeUs};
use crate::protocol::{self, Parsed};

/// At most this many connections are accepted in one pass, so a connect storm cannot starve
/// the clients already connected.
const ACCEPTS_PER_PASS: usize = 1024;
/// While `accept` keeps failing, its ERROR is repeated at most this often (with a count).
const ACCEPT_ERROR_LOG_US: TimeUs = 10_000_000;

impl Server {
    /// Accept waiting connections (at most [`ACCEPTS_PER_PASS`]), then re-arm the listener.
    ///
    /// When `accept` fails (out of descriptors, most likely: `EMFILE`/`ENFILE`), the
    /// listener is left disarmed for `accept_backoff_ms` rather than spin, and the pass after
    /// the back-off calls this again, which re-arms it: the server never stops accepting for
    /// good. The spare descriptor is given up to accept one waiting connection and tell it
    /// the server is full, then taken back.
    pub(super) fn accept(&mut self, now: TimeUs) {
        if now < self.accept_paused_until_us {
            self.accept_paused = true; // `pass` calls again once the back-off is over
            return;
        }
        self.accept_paused = false;
        for _ in 0..ACCEPTS_PER_PASS {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.clients.len() >= self.opts.limits.clients_max {
                        self.refuse_full(stream);
                        continue;
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let key = self.next_client_key;
                    self.next_client_key += 1;
                    // SAFETY: the stream is deleted from the poller before it is dropped
                    // (`close_client`).
                    // Level-triggered: see `rearm`.
                    if unsafe {
                        self.poller.add_with_mode(
                            &stream,
                            PollEvent::readable(key),
                            PollMode::Level,
                        )
                    }
                    .is_err()
                    {
                        continue;
                    }
                    self.clients.insert(key, Client::new(stream, peer));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A connection reset before it was accepted: nothing wrong with the server.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // Out of file descriptors, most likely. Free the spare to tell one
                    // waiting connection why, then back off briefly rather than spin.
                    if self.spare_fd.take().is_some() {
                        if let Ok((stream, _)) = self.listener.accept() {
                            self.refuse_full(stream);
                        }
                        self.spare_fd = std::fs::File::open("/dev/null").ok();
                    }
                    let backoff_us = self.opts.limits.accept_backoff_ms.saturating_mul(1000);
                    // One ERROR, then one every 10 s with a count: a long exhaustion must
                    // not flood the log with a line per back-off.
                    self.accept_errors += 1;
                    if now
                        >= self
                            .accept_error_logged_us
                            .saturating_add(ACCEPT_ERROR_LOG_US)
                    {
                        self.log.error(&format!(
                            "cannot accept a connection: {e} ({} clients connected; {} failed \
                             accepts since the last such line); waiting clients are told the \
                             server is full, accepting again every {} ms",
                            self.clients.len(),
                            self.accept_errors,
                            self.opts.limits.accept_backoff_ms
                        ));
                        self.accept_errors = 0;
                        self.accept_error_logged_us = now;
                    }
                    self.accept_paused_until_us = now.saturating_add(backoff_us);
                    self.accept_paused = true;
                    return; // left disarmed until the back-off is over (`pass`)
                }
            }
        }
        if self
            .poller
            .modify(&self.listener, PollEvent::readable(LISTENER_KEY))
            .is_err()
        {
            // Should not happen; try again shortly rather than never.
            self.accept_paused_until_us = now.saturating_add(100_000);
            self.accept_paused = true;
        }
    }

    /// Tell a connection beyond `clients_max` (or one accepted with the spare descriptor)
    /// that the server is full, and close it. One non-blocking write: a client that does not
    /// read cannot hold the loop.
    fn refuse_full(&self, stream: std::net::TcpStream) {
        self.metrics.connection_refused();
        let _ = stream.set_nonblocking(true);
        let msg = format!(
            "server is full ({} clients); try again later",
            self.clients.len().min(self.opts.limits.clients_max)
        );
        let mut s = stream;
        let _ = io::Write::write(&mut s, &protocol::render_exception(&msg));
    }

    /// Read from a client and cut its input into requests (its share of the pass), keeping
    /// `input_total` up to date.
    pub(super) fn read_client(
        &mut self,
        key: usize,
        now: TimeUs,
        events: &mut Vec<Event>,
        actions: &mut Vec<Action>,
        job_counts: &mut Option<JobCounts>,
    ) {
        let before = self.clients.get(&key).map_or(0, Client::pending_input);
        self.handle_input(key, now, events, actions, job_counts);
        let after = self.clients.get(&key).map_or(0, Client::pending_input);
        self.input_total = self.input_total + after - before;
    }

    /// Past `input_total_bytes_max`: disconnect the clients holding the most unhandled
    /// input (an unfinished line never ended, most likely) until back under it.
    pub(super) fn bound_input(&mut self) {
        while self.input_total > self.opts.limits.input_total_bytes_max {
            let Some((&key, c)) = self.clients.iter().max_by_key(|(_, c)| c.pending_input()) else {
                break;
            };
            self.log.info(&format!(
                "client {} disconnected: it holds {} bytes of requests it has not finished \
                 sending, and all clients' unhandled input is at input_total_bytes_max = {}",
                c.peer,
                c.pending_input(),
                self.opts.limits.input_total_bytes_max
            ));
            self.metrics
                .client_disconnected(DisconnectedBecause::InputUnfinished);
            self.close_client(key);
        }
    }

    fn handle_input(
        &mut self,
        key: usize,
        now: TimeUs,
        events: &mut Vec<Event>,
        actions: &mut Vec<Action>,
        job_counts: &mut Option<JobCounts>,
    ) {
        let limits = &self.opts.limits;
        let core = &self.core;
        let Some(client) = self.clients.get_mut(&key) else {
            return;
        };
        if client.closing {
            return;
        }
        let outcome = client.read(protocol::MAX_LINE_BYTES);
        // This client's share of the pass (at least one request).
        let (mut requests, mut bytes) = (0usize, 0usize);
        let mut fatal = false;
        // `watch_total` follows this client's watch sets: brought up to date before each
        // request (whose limit check reads it) and after the last.
        let mut watched = client.watch_entries();
        while requests < limits.requests_per_pass_max && bytes < limits.request_bytes_per_pass_max {
            let Some(line) = client.next_line(protocol::MAX_LINE_BYTES) else {
                break;
            };
            requests += 1;
            bytes += line.map_or(0, <[u8]>::len) + 1;
            let parsed = match line {
                // (Parsed in place in the client's input buffer.)
                Ok(line) if line.iter().all(u8::is_ascii_whitespace) => {
                    continue; // blank lines are skipped, as by the original
                }
                Ok(line) => protocol::parse_line(line),
                Err(len) => {
                    let msg = format!(
                        "line too long ({len} bytes; the limit is {} bytes); closing the connection",
                        protocol::MAX_LINE_BYTES
                    );
                    actions.push(Action::Send {
                        client: key,
                        bytes: protocol::render_exception(&msg),
                    });
                    actions.push(Action::Close { client: key });
                    self.metrics
                        .client_disconnected(DisconnectedBecause::LineTooLong);
                    fatal = true;
                    break;
                }
            };
            self.watch_total = self.watch_total + client.watch_entries() - watched;
            watched = client.watch_entries();
            match parsed {
                Parsed::Version => actions.push(Action::Send {
                    client: key,
                    bytes: protocol::render_version(protocol::VERSION),
                }),
                Parsed::NotifyJob(Some(_))
                    if client.jobs.len() >= limits.watch_entries_max
                        || self.watch_total >= limits.watch_entries_total_max =>
                {
                    actions.push(watch_refused(key, limits, self.watch_total));
                    self.metrics.command_refused(RefusedBecause::Limit);
                }
                Parsed::NotifyJob(id) => {
                    client.jobs.add(id);
                    actions.push(null_reply(key));
                }
                Parsed::NoNotifyJob(id) => {
                    client.jobs.remove(id);
                    actions.push(null_reply(key));
                }
                Parsed::NotifyMachine(Some(name)) if name.len() > limits.string_bytes_max => {
                    actions.push(Action::Send {
                        client: key,
                        bytes: protocol::render_exception(&too_long(
                            "machine name",
                            name.len(),
                            limits,
                        )),
                    });
                    self.metrics.command_refused(RefusedBecause::Limit);
                }
                Parsed::NotifyMachine(Some(_))
                    if client.machines.len() >= limits.watch_entries_max
                        || self.watch_total >= limits.watch_entries_total_max =>
                {
                    actions.push(watch_refused(key, limits, self.watch_total));
                    self.metrics.command_refused(RefusedBecause::Limit);
                }
                Parsed::NotifyMachine(name) => {
                    client.machines.add(name);
                    actions.push(null_reply(key));
                }
                Parsed::NoNotifyMachine(name) => {
                    client.machines.remove(name);
                    actions.push(null_reply(key));
                }
                Parsed::Core(command) if command.is_read_only() => actions.push(Action::Query {
                    client: key,
                    command,
                }),
                Parsed::Core(command) => {
                    // Past a limit: refused before it is journaled, so nothing changes (and
                    // older journals, written without these limits, replay unchanged).
                    if let Err(msg) =
                        check_command(&command, &client.peer_ip, limits, core, job_counts)
                    {
                        actions.push(Action::Send {
                            client: key,
                            bytes: protocol::render_exception(&msg),
                        });
                        self.metrics.command_refused(RefusedBecause::Limit);
                        continue;
                    }
                    actions.push(Action::Event {
                        client: Some(key),
                        index: events.len(),
                    });
                    events.push(Event::Command {
                        now_us: now,
                        peer: client.peer_ip.clone(),
                        command,
                    });
                }
                Parsed::Exception(msg) => actions.push(Action::Send {
                    client: key,
                    bytes: protocol::render_exception(&msg),
                }),
                Parsed::Fatal(msg) => {
                    actions.push(Action::Send {
                        client: key,
                        bytes: protocol::render_exception(&msg),
                    });
                    actions.push(Action::Close { client: key });
                    self.metrics
                        .client_disconnected(DisconnectedBecause::NotARequest);
                    fatal = true;
                    break;
                }
            }
        }
        self.watch_total = self.watch_total + client.watch_entries() - watched;
        client.shrink_input();
        if fatal {
            return; // (closed once its output is flushed; nothing more is read)
        }
        if !client.closing && client.has_line(protocol::MAX_LINE_BYTES) {
            // More than its share: the rest next pass (and nothing more read while more
            // than a line's worth waits).
            self.unfinished_input.insert(key);
            return;
        }
        if let ReadOutcome::Closed = outcome {
            // Answer what it sent before hanging up (it may only have shut down its write
            // half), then close.
            actions.push(Action::Close { client: key });
        }
    }

    /// Queue `bytes` (a reply or notification) for a client, within the output bounds.
    ///
    /// What is bounded is the *backlog*: output the client has been sent the chance to read
    /// and has not. A client whose backlog (after trying to send it now) exceeds
    /// `output_bytes_max`, or that has any backlog while all clients' unsent output is at
    /// `output_total_bytes_max`, is disconnected: it is not reading. One reply may be bigger
    /// than `output_bytes_max`; one bigger than `reply_bytes_max` is replaced by an
    /// exception saying so, and the client stays connected.
    pub(super) fn send(&mut self, key: usize, bytes: &[u8], touched: &mut Touched) {
        if key >= admin::ADMIN_KEY_BASE {
            if let Some(c) = self.admin_conns.get_mut(&key) {
                touched.insert(key);
                if !c.queue(bytes) {
                    self.log
                        .info("admin connection dropped: it left too much output unread");
                    self.close_admin(key);
                }
            }
            return;
        }
        let limits = &self.opts.limits;
        let Some(client) = self.clients.get_mut(&key) else {
            return;
        };
        touched.insert(key);
        let too_big;
        let bytes = if bytes.len() > limits.reply_bytes_max {
            too_big = protocol::render_exception(&format!(
                "the reply is too large to send ({} bytes; the limit is {} bytes, \
                 reply_bytes_max)",
                bytes.len(),
                limits.reply_bytes_max
            ));
            &too_big[..]
        } else {
            bytes
        };
        let mut backlog = client.pending_output();
        let over = |backlog: usize, total: usize| {
            backlog > 0
                && (backlog > limits.output_bytes_max
                    || total + bytes.len() > limits.output_total_bytes_max)
        };
        if over(backlog, self.output_total) {
            // Perhaps the socket has room by now: try before blaming the client.
            let failed = client.flush().is_err();
            let after = client.pending_output();
            self.output_total = self.output_total + after - backlog;
            backlog = after;
            if failed {
                self.close_client(key);
                return;
            }
        }
        if over(backlog, self.output_total) {
            let why = if backlog > limits.output_bytes_max {
                format!("output_bytes_max = {}", limits.output_bytes_max)
            } else {
                format!(
                    "and all clients' unsent output is at output_total_bytes_max = {}",
                    limits.output_total_bytes_max
                )
            };
            self.log.info(&format!(
                "client {} disconnected: it left more than {} bytes of replies unread \
                 ({backlog} bytes sent to it and not read; {why})",
                client.peer,
                backlog.min(limits.output_bytes_max)
            ));
            self.metrics
                .client_disconnected(DisconnectedBecause::OutputUnread);
            self.close_client(key);
            return;
        }
        client.queue(bytes);
        self.output_total += bytes.len();
    }

    pub(super) fn flush_client(&mut self, key: usize) {
        if key >= admin::ADMIN_KEY_BASE {
            return; // flushed by rearm
        }
        if let Some(c) = self.clients.get_mut(&key) {
            let before = c.pending_output();
            let failed = c.flush().is_err();
            self.output_total = self.output_total + c.pending_output() - before;
            if failed {
                self.close_client(key);
            }
        }
    }

    /// Send queued output and bring the client's interest up to date, or close it.
    ///
    /// Clients are registered level-triggered, so an event does not disarm them: the
    /// registration changes only when the interest wanted does (output left over to be
    /// written, or nothing more to read once closing or at end of input, which a
    /// level-triggered socket at EOF would otherwise report every pass). Oneshot
    /// registration cost an `epoll_ctl` per request to re-arm. A socket with unread input
    /// keeps being reported, so a client whose share of a pass left lines or bytes behind
    /// is come back to (as `unfinished_input` does for lines already read).
    pub(super) fn rearm(&mut self, key: usize) {
        if key >= admin::ADMIN_KEY_BASE {
            self.rearm_admin(key);
            return;
        }
        self.flush_client(key);
        let Some(c) = self.clients.get_mut(&key) else {
            return;
        };
        if c.closing && c.pending_output() == 0 {
            self.close_client(key);
            return;
        }
        let wanted = (!c.closing && !c.eof, c.pending_output() > 0);
        if wanted == c.registered {
            return;
        }
        let interest = PollEvent::new(key, wanted.0, wanted.1);
        if c.stream
            .modify_with_mode(&self.poller, interest, PollMode::Level)
            .is_err()
        {
            self.close_client(key);
            return;
        }
        c.registered = wanted;
    }

    pub(super) fn close_client(&mut self, key: usize) {
        self.unfinished_input.remove(&key);
        if let Some(c) = self.clients.remove(&key) {
            self.output_total -= c.pending_output();
            self.watch_total -= c.watch_entries();
            self.input_total -= c.pending_input();
            let _ = c.stream.delete(&self.poller);
        }
        debug_assert!(
            self.clients.len() > 64
                || self.input_total
                    == self
                        .clients
                        .values()
                        .map(Client::pending_input)
                        .sum::<usize>()
        );
        debug_assert!(
            self.clients.len() > 64
                || self.output_total
                    == self
                        .clients
                        .values()
                        .map(Client::pending_output)
                        .sum::<usize>()
        );
    }
}

// ----- the admin channel (module `admin`) ----------------------------------------------------

impl Server {
    pub(super) fn accept_admin(&mut self) {
        let Some(listener) = self.admin_listener.as_ref() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if self.admin_conns.len() >= admin::MAX_ADMIN_CONNECTIONS {
                        let mut s = stream;
                        let _ = io::Write::write_all(
                            &mut s,
                            &protocol::render_exception("too many admin connections"),
                        );
                        continue;
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let key = self.next_admin_key;
                    self.next_admin_key += 1;
                    // SAFETY: deleted from the poller before it is dropped (close_admin).
                    if unsafe { self.poller.add(&stream, PollEvent::readable(key)) }.is_err() {
                        continue;
                    }
                    self.admin_conns.insert(key, admin::AdminConn::new(stream));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if let Some(l) = &self.admin_listener {
            let _ = self
                .poller
                .modify(l, PollEvent::readable(ADMIN_LISTENER_KEY));
        }
    }

    pub(super) fn read_admin(
        &mut self,
        key: usize,
        now: TimeUs,
        events: &mut Vec<Event>,
        actions: &mut Vec<Action>,
    ) {
        let Some(conn) = self.admin_conns.get_mut(&key) else {
            return;
        };
        if conn.closing {
            return;
        }
        let open = conn.read();
        while let Some(line) = conn.next_line() {
            let Ok(line) = line else {
                actions.push(Action::Send {
                    client: key,
                    bytes: protocol::render_exception("line too long"),
                });
                actions.push(Action::Close { client: key });
                break;
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match admin::parse(&line) {
                Err(e) => actions.push(Action::Send {
                    client: key,
                    bytes: protocol::render_exception(&e),
                }),
                Ok(admin::AdminRequest::Query(q)) => {
                    let value = match q {
                        admin::AdminQuery::Boards { drained } => {
                            self.core.health_boards_json(drained)
                        }
                        admin::AdminQuery::Reports => self.core.health_reports_json(),
                        admin::AdminQuery::Status => {
                            let mut v = self.core.health_boards_json(true);
                            v["live_jobs"] = self.core.live_job_ids().len().into();
                            v
                        }
                    };
                    actions.push(Action::Send {
                        client: key,
                        bytes: protocol::render_response(&Response::Json(value.to_string())),
                    });
                }
                Ok(admin::AdminRequest::Action { actor, action }) => {
                    // Refused before it is journaled: a mistyped board leaves no trace.
                    // (Checked again when folded, against the state then.)
                    if let Err(e) = self.core.check_admin(&action) {
                        actions.push(Action::Send {
                            client: key,
                            bytes: protocol::render_exception(&e),
                        });
                        continue;
                    }
                    actions.push(Action::Event {
                        client: Some(key),
                        index: events.len(),
                    });
                    events.push(admin::event(now, actor, action));
                }
            }
        }
        if !open {
            actions.push(Action::Close { client: key });
        }
    }

    fn rearm_admin(&mut self, key: usize) {
        let Some(c) = self.admin_conns.get_mut(&key) else {
            return;
        };
        if c.flush().is_err() || (c.closing && c.pending_output() == 0) {
            self.close_admin(key);
            return;
        }
        let interest = PollEvent::new(key, !c.closing, c.pending_output() > 0);
        if self.poller.modify(&c.stream, interest).is_err() {
            self.close_admin(key);
        }
    }

    pub(super) fn close_admin(&mut self, key: usize) {
        if let Some(c) = self.admin_conns.remove(&key) {
            let _ = self.poller.delete(&c.stream);
        }
    }
}

/// The `{"return": null}` reply of the `notify_*` commands.
fn null_reply(client: usize) -> Action {
    Action::Send {
        client,
        bytes: protocol::render_response(&Response::Null),
    }
}

/// The exception for a `notify_*` past `watch_entries_max` (or, with all clients'
/// watches at `total`, past `watch_entries_total_max`).
fn watch_refused(client: usize, limits: &Limits, total: usize) -> Action {
    let msg = if total >= limits.watch_entries_total_max {
        format!(
            "the server already holds {total} watches of single jobs or machines for its \
             clients, the most it keeps (watch_entries_total_max); watch all of them with no \
             argument instead"
        )
    } else {
        format!(
            "this connection already watches {} jobs or machines one by one, the most \
             allowed (watch_entries_max); watch all of them with no argument instead",
            limits.watch_entries_max
        )
    };
    Action::Send {
        client,
        bytes: protocol::render_exception(&msg),
    }
}

/// The message for a string past `string_bytes_max`.
fn too_long(what: &str, len: usize, limits: &Limits) -> String {
    format!(
        "{what} is too long ({len} bytes; the limit is {} bytes, string_bytes_max)",
        limits.string_bytes_max
    )
}

/// Live jobs per owner and per host: the core's, counted once per pass (on its first
/// `create_job`), plus the pass's own accepted `create_job`s.
pub(super) struct JobCounts {
    total: usize,
    by_owner: BTreeMap<String, usize>,
    by_host: BTreeMap<String, usize>,
}

impl JobCounts {
    fn of(core: &Core) -> JobCounts {
        let mut c = JobCounts {
            total: 0,
            by_owner: BTreeMap::new(),
            by_host: BTreeMap::new(),
        };
        for (owner, host) in core.live_job_owners() {
            c.total += 1;
            *c.by_owner.entry(owner.to_owned()).or_default() += 1;
            if let Some(h) = host {
                *c.by_host.entry(h.to_owned()).or_default() += 1;
            }
        }
        c
    }
}

/// Whether a state-changing command is within the limits (a `create_job` also counts
/// towards the pass's job counts). `Err` is the exception to answer, naming the limit.
fn check_command(
    command: &Command,
    peer: &str,
    limits: &Limits,
    core: &Core,
    counts: &mut Option<JobCounts>,
) -> Result<(), String> {
    match command {
        Command::DestroyJob {
            reason: Some(r), ..
        } if r.len() > limits.string_bytes_max => Err(too_long("reason", r.len(), limits)),
        Command::CreateJob(c) => {
            if c.owner.len() > limits.string_bytes_max {
                return Err(too_long("owner", c.owner.len(), limits));
            }
            match &c.target {
                crate::core::JobTarget::Machine(m) if m.len() > limits.string_bytes_max => {
                    return Err(too_long("machine name", m.len(), limits));
                }
                crate::core::JobTarget::Tags(tags) => {
                    if tags.len() > limits.tags_max {
                        return Err(format!(
                            "too many tags ({}; the limit is {}, tags_max)",
                            tags.len(),
                            limits.tags_max
                        ));
                    }
                    if let Some(t) = tags.iter().find(|t| t.len() > limits.string_bytes_max) {
                        return Err(too_long("a tag", t.len(), limits));
                    }
                }
                _ => {}
            }
            let counts = counts.get_or_insert_with(|| JobCounts::of(core));
            let owner = counts.by_owner.get(&c.owner).copied().unwrap_or(0);
            let host = counts.by_host.get(peer).copied().unwrap_or(0);
            if counts.total >= limits.jobs_max {
                return Err(format!(
                    "the server already has {} live jobs, the most it takes (jobs_max); \
                     try again when some have ended",
                    counts.total
                ));
            }
            if owner >= limits.jobs_per_owner_max {
                return Err(format!(
                    "owner {:?} already has {owner} live jobs, the most one owner may have \
                     (jobs_per_owner_max)",
                    c.owner
                ));
            }
            if host >= limits.jobs_per_host_max {
                return Err(format!(
                    "host {peer} already has {host} live jobs, the most one host may have \
                     (jobs_per_host_max)"
                ));
            }
            counts.total += 1;
            *counts.by_owner.entry(c.owner.clone()).or_default() += 1;
            *counts.by_host.entry(peer.to_owned()).or_default() += 1;
            Ok(())
        }
        _ => Ok(()),
    }
}
