//! The pass: one iteration of the loop (see the parent module's docs for its four steps).
//! Gather the pass's inputs into events and actions, persist them (commit, or defer a
//! keepalive-only pass), fold them in arrival order answering each client, then release
//! the outputs. Also what the loop waits for between passes (`next_wait`), and what becomes
//! of a pass's events when the journal cannot record them (`refused`).

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use polling::Events;

use super::connections::JobCounts;
use super::durability::Refused;
use super::metrics::RefusedBecause;
use super::touched::Touched;
use super::{admin, http, Action, Server, ADMIN_LISTENER_KEY, LISTENER_KEY};
use crate::bmp::BmpCompletion;
use crate::core::{Event, TimeUs};
use crate::protocol;

/// The loop wakes at least this often even when idle (to notice signals promptly).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// The most elements a pass buffer keeps between passes: a burst's larger buffers are
/// given back rather than held for the rest of the server's life.
const BUFFER_KEPT_MAX: usize = 4096;

/// What a pass fills and empties (the ready list, the pass's events and actions, the
/// connections it touched), kept between passes so that a busy loop does not allocate them
/// anew each time. Empty between passes. (The ready list needs no bound of its own: it
/// holds one poller event batch.)
#[derive(Default)]
pub(super) struct PassBuffers {
    ready: Vec<(usize, bool, bool)>,
    events: Vec<Event>,
    actions: Vec<Action>,
    touched: Touched,
}

impl PassBuffers {
    /// Take back a pass's buffers, emptied.
    fn keep(&mut self, mut events: Vec<Event>, mut actions: Vec<Action>, touched: Touched) {
        debug_assert!(actions.is_empty());
        events.clear();
        events.shrink_to(BUFFER_KEPT_MAX);
        actions.shrink_to(BUFFER_KEPT_MAX);
        (self.events, self.actions, self.touched) = (events, actions, touched);
    }
}

impl Server {
    pub(super) fn serve(&mut self) -> Result<(), String> {
        let mut events = Events::new();
        loop {
            let wait = self.next_wait(self.clock.now_us());
            events.clear();
            match self.poller.wait(&mut events, Some(wait)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("polling failed: {e}")),
            }
            let stopping = self.signals.stop.load(Ordering::SeqCst);
            let mut ready = std::mem::take(&mut self.buffers.ready);
            ready.clear();
            ready.extend(events.iter().map(|e| (e.key, e.readable, e.writable)));
            self.pass(self.clock.now_us(), &ready, stopping);
            self.buffers.ready = ready;
            if stopping {
                self.log.info("stopping: signal received");
                return Ok(());
            }
        }
    }

    /// How long the loop may sleep: until the core's next deadline, or sooner for work of
    /// its own still to be journaled (BMP completions, unrecorded keepalives), but while
    /// the journal cannot be written not before the next retry (a deadline already past
    /// would otherwise make the loop spin); or until durability has housekeeping to do.
    pub(super) fn next_wait(&self, now: TimeUs) -> Duration {
        let mut deadline = self.core.poll_deadline();
        if !self.unjournaled_completions.is_empty() || !self.kept_alive_unrecorded.is_empty() {
            deadline = Some(now);
        }
        if !self.unfinished_input.is_empty() {
            return Duration::ZERO;
        }
        if let Some(retry_at) = self.durability.retry_at() {
            deadline = deadline.map(|d| d.max(retry_at));
        }
        let http = self.http.as_ref().and_then(|h| h.next_deadline());
        let paused = self.accept_paused.then_some(self.accept_paused_until_us);
        let deadline = [deadline, self.durability.next_deadline(), http, paused]
            .into_iter()
            .flatten()
            .min();
        deadline
            .map(|d| Duration::from_micros(d.saturating_sub(now)))
            .map_or(MAX_WAIT, |d| d.min(MAX_WAIT))
    }

    /// One pass of the loop (see the module docs), at event time `now` (the clock's, or
    /// the simulation's).
    pub(super) fn pass(&mut self, now: TimeUs, ready: &[(usize, bool, bool)], stopping: bool) {
        self.durability.poll(now);
        let retry_due = self.durability.retry_due(now);
        let mut events = std::mem::take(&mut self.buffers.events);
        let mut actions = std::mem::take(&mut self.buffers.actions);
        let mut touched = std::mem::take(&mut self.buffers.touched);
        debug_assert!(events.is_empty() && actions.is_empty());
        // Live jobs per owner and host, counted on the pass's first create_job.
        let mut job_counts: Option<JobCounts> = None;

        // A listener paused after a failed accept: its back-off is over, so accept again
        // (which re-arms it).
        if self.accept_paused && now >= self.accept_paused_until_us && !stopping {
            self.accept(now);
        }
        if self.signals.reload.swap(false, Ordering::SeqCst) {
            if let Some(config) = self.reload_config() {
                actions.push(Action::Event {
                    client: None,
                    index: events.len(),
                });
                events.push(Event::Configure {
                    now_us: now,
                    config,
                });
            }
        }
        // Keepalives answered while the journal could not record them: the first thing
        // recorded once it can (before any tick could expire those jobs).
        if !self.kept_alive_unrecorded.is_empty() && retry_due {
            actions.push(Action::Event {
                client: None,
                index: events.len(),
            });
            events.push(Event::KeptAliveUnrecorded {
                now_us: now,
                job_ids: self.kept_alive_unrecorded.iter().copied().collect(),
            });
        }
        let fresh: Vec<BmpCompletion> = self.completions.try_iter().collect();
        for c in &fresh {
            if let Some((started, bmp)) = self.bmp_started.remove(&c.request_id) {
                self.metrics
                    .bmp_request(&bmp, c.failure.is_some(), started.elapsed());
            }
        }
        let completions: Vec<BmpCompletion> = self
            .unjournaled_completions
            .drain(..)
            .chain(fresh)
            .collect();
        for c in completions {
            actions.push(Action::Event {
                client: None,
                index: events.len(),
            });
            events.push(Event::BmpDone {
                now_us: now,
                request_id: c.request_id,
                failure: c.failure,
                failed_boards: c.failed_boards,
                bmp_unreachable: c.bmp_unreachable,
            });
        }
        // Clients with requests left from their share of the last pass (taken before this
        // pass's reads put back those with more left still).
        let unfinished = std::mem::take(&mut self.unfinished_input);
        for &(key, readable, writable) in ready {
            if http::owns_key(key) {
                continue; // served after the pass's changes are folded (below)
            }
            if key == LISTENER_KEY {
                if !stopping {
                    self.accept(now);
                }
                continue;
            }
            if key == ADMIN_LISTENER_KEY {
                if !stopping {
                    self.accept_admin();
                }
                continue;
            }
            if key >= admin::ADMIN_KEY_BASE {
                touched.insert(key);
                if readable && !stopping {
                    self.read_admin(key, now, &mut events, &mut actions);
                }
                continue;
            }
            touched.insert(key);
            if writable {
                self.flush_client(key);
            }
            if readable && !stopping {
                self.read_client(key, now, &mut events, &mut actions, &mut job_counts);
            }
        }
        for key in unfinished {
            // (Those read above this pass were handled with their readiness.)
            let read_now = ready.iter().any(|&(k, readable, _)| k == key && readable);
            if stopping || read_now {
                continue; // (handled above)
            }
            touched.insert(key);
            self.read_client(key, now, &mut events, &mut actions, &mut job_counts);
        }
        self.bound_input();
        if self.core.tick_due(now) && retry_due {
            actions.push(Action::Event {
                client: None,
                index: events.len(),
            });
            events.push(Event::Tick { now_us: now });
        }

        // Persist, then apply, then release.
        let durable = if self.can_defer(&events) {
            self.durability.defer(&events, now);
            Ok(())
        } else {
            // (Not around a configuration reload: an admin who saw it logged expects every
            // later answer to show it.)
            let reload = events.iter().any(|e| matches!(e, Event::Configure { .. }));
            if !events.is_empty() && !reload {
                actions = self.answer_early(actions, &mut touched);
            }
            self.durability.commit(&events, now)
        };
        if durable.is_ok() {
            self.metrics.events_journaled(events.len());
        }
        for action in actions.drain(..) {
            match action {
                Action::Event { client, index } => {
                    let event = &events[index];
                    if let Err(why) = &durable {
                        self.refused(client, event, why, now, &mut touched);
                        continue;
                    }
                    if let Event::KeptAliveUnrecorded { .. } = event {
                        self.kept_alive_unrecorded.clear();
                    }
                    self.fold(client, event, &mut touched);
                }
                // (Not for a client dropped earlier in the pass: a never-reading client's
                // pipelined queries would otherwise all be computed and rendered for nobody.)
                Action::Query { client, command } if self.clients.contains_key(&client) => {
                    let r = self.core.query(&command);
                    self.send(client, &protocol::render_response(&r), &mut touched);
                }
                Action::Query { .. } => {}
                Action::Send { client, bytes } => self.send(client, &bytes, &mut touched),
                Action::Close { client } => {
                    if let Some(c) = self.clients.get_mut(&client) {
                        c.closing = true;
                        touched.insert(client);
                    }
                    if let Some(c) = self.admin_conns.get_mut(&client) {
                        c.closing = true;
                        touched.insert(client);
                    }
                }
            }
        }
        let bmp_requests = self.release_effects(&mut touched);
        // (Protocol clients are level-triggered: `rearm` changes a registration only when
        // the interest wanted changed. Admin connections are oneshot and re-armed.)
        for key in touched.drain_sorted() {
            self.rearm(key);
        }
        self.buffers.keep(events, actions, touched);
        // BMP requests go after every reply and notification is sent: handing one over
        // wakes a BMP thread, which would otherwise compete with those sends for the CPU.
        for r in bmp_requests {
            self.submit_bmp(r);
        }
        self.durability.maybe_snapshot(&self.core, now);
        for took in self.durability.take_write_times() {
            self.metrics.journal_write(took);
        }
        self.metrics.journal_health(
            self.durability.take_write_failures(),
            self.durability.failing(),
        );
        // The HTTP port last: it answers from the state this pass left.
        if let Some(h) = &mut self.http {
            h.note_journal(self.durability.failing(), now);
            let http_ready: Vec<(usize, bool, bool)> = ready
                .iter()
                .copied()
                .filter(|&(k, _, _)| http::owns_key(k))
                .collect();
            h.serve(
                &http_ready,
                now,
                &self.core,
                &self.metrics,
                self.clients.len(),
            );
        }
    }

    /// Hand a request to its BMP's thread, noting when (for the metrics).
    pub(super) fn submit_bmp(&mut self, r: crate::core::BmpRequest) {
        self.bmp_started
            .insert(r.id, (Instant::now(), r.address.clone()));
        self.bmp.submit(r);
    }

    /// Fold a durable (or deferred) event and send its reply, if any, to `client`.
    fn fold(&mut self, client: Option<usize>, event: &Event, touched: &mut Touched) {
        let reply = self.core.handle(event);
        #[cfg(debug_assertions)]
        if let Err(e) = self.core.check_invariants() {
            panic!("core invariant broken after {event:?}: {e}");
        }
        if let (Some(c), Some(r)) = (client, reply) {
            self.send(c, &protocol::render_response(&r), touched);
        }
    }

    /// An event of a pass the journal could not record (`why`). A change is refused (its
    /// client told so: that it was not carried out, or, if the failed batch could not be cut
    /// off the journal, that it may or may not have been, as a restart before the next
    /// journal write would replay it), and a BMP completion kept to be retried. But a
    /// keepalive is never refused because of the server's own trouble: it is folded and kept
    /// to be written later if there is room, else answered without folding and its job's
    /// timer reset once the journal can be written ([`Event::KeptAliveUnrecorded`]). Either
    /// way no kept-alive job can expire of the outage, and the journal still receives every
    /// folded event in order (nothing else of this pass is folded).
    fn refused(
        &mut self,
        client: Option<usize>,
        event: &Event,
        why: &Refused,
        now: TimeUs,
        touched: &mut Touched,
    ) {
        match event {
            Event::BmpDone {
                request_id,
                failure,
                failed_boards,
                bmp_unreachable,
                ..
            } => self.unjournaled_completions.push_back(BmpCompletion {
                request_id: *request_id,
                failure: failure.clone(),
                failed_boards: failed_boards.clone(),
                bmp_unreachable: *bmp_unreachable,
            }),
            Event::Command { peer, command, .. } if self.core.is_keepalive_only(peer, command) => {
                if self.durability.has_room(1) {
                    self.durability.defer(std::slice::from_ref(event), now);
                    self.metrics.events_journaled(1);
                    self.fold(client, event, touched);
                } else {
                    if let Some(job) = self.core.kept_alive_job(command) {
                        self.kept_alive_unrecorded.insert(job);
                    }
                    if let Some(c) = client {
                        let r = self.core.peek_keepalive(command);
                        self.send(c, &protocol::render_response(&r), touched);
                    }
                }
            }
            _ => {
                if let Some(c) = client {
                    // Never "not carried out" unless that is certain: a batch left in the
                    // journal comes back if the server stops before the next write cuts it.
                    let msg = if why.may_be_recorded {
                        format!(
                            "the server could not record this command, nor remove what it had \
                             written of it, so it may or may not have been carried out (it is \
                             not in effect now, but may take effect if the server restarts \
                             before its journal is next written): {}",
                            why.why
                        )
                    } else {
                        format!(
                            "the server could not record this command, so it was not carried out: {}",
                            why.why
                        )
                    };
                    self.send(c, &protocol::render_exception(&msg), touched);
                    self.metrics.command_refused(RefusedBecause::Journal);
                }
            }
        }
    }

    /// Whether the pass's events may skip the fsync: all keepalive-only (module docs), with
    /// room for them among the deferred records.
    fn can_defer(&self, events: &[Event]) -> bool {
        !events.is_empty()
            && self.durability.has_room(events.len())
            && events.iter().all(|e| match e {
                Event::Command { peer, command, .. } => self.core.is_keepalive_only(peer, command),
                _ => false,
            })
    }

    /// Before a pass's fsync: carry out at once the actions that depend on nothing in the
    /// pass (module docs) and send their output; return the rest, in order.
    fn answer_early(&mut self, actions: Vec<Action>, touched: &mut Touched) -> Vec<Action> {
        let mut waiting: BTreeSet<usize> = BTreeSet::new();
        let mut answered: BTreeSet<usize> = BTreeSet::new();
        let mut rest = Vec::with_capacity(actions.len());
        for action in actions {
            match action {
                Action::Event {
                    client: Some(c), ..
                } => {
                    waiting.insert(c);
                    rest.push(action);
                }
                Action::Query { client, command } if !waiting.contains(&client) => {
                    if self.clients.contains_key(&client) {
                        let r = self.core.query(&command);
                        self.send(client, &protocol::render_response(&r), touched);
                        answered.insert(client);
                    }
                }
                Action::Send { client, bytes } if !waiting.contains(&client) => {
                    self.send(client, &bytes, touched);
                    answered.insert(client);
                }
                other => rest.push(other),
            }
        }
        for key in answered {
            self.flush_client(key);
        }
        rest
    }
}
