//! Durability, with one owner: the journal, the records folded but not yet written, the
//! thread that writes them in the background, snapshots, and the journal's health.
//!
//! The server loop talks to this module only through [`Durability`]:
//!
//! - [`Durability::commit`] makes a pass's events durable (one batch, one fsync) behind any
//!   deferred records, before they are folded ("persist, then apply");
//! - [`Durability::defer`] keeps the records of keepalive-only events the loop has already
//!   folded and answered (see the `server` module docs for why that is safe); they go into
//!   the journal, in fold order, ahead of the next committed batch or from the
//!   [flusher](flusher) thread after [`DEFERRED_FLUSH_US`];
//! - [`Durability::poll`] does the housekeeping of each pass (a finished background write,
//!   a flush that is due, the end of an outage);
//! - [`Durability::maybe_snapshot`] / [`Durability::snapshot_and_wait`] store the core.
//!
//! The invariant everything here keeps: **the journal receives every folded event exactly
//! once, in fold order.** Records handed to the flusher are not in `deferred` until they
//! come back; a failed background write puts them back in front; and a commit takes the
//! journal back (so any failed records are in front again) *before* it notes where its own
//! events begin, so that refusing them cuts off exactly its own events and never a deferred
//! record that was already folded and answered.

mod deferred;
mod flusher;
mod outage;
mod storage;

use std::sync::Arc;

use polling::Poller;
use spalloc_journal::Journal;

use crate::core::{Core, Event, TimeUs};
use crate::server::Logger;
use deferred::Deferred;
use flusher::{FlushDone, Flusher};
use outage::Health;
pub use storage::Storage;

/// Keepalive-only events wait in memory about this long before they are written and
/// fsync'd in the background...
pub const DEFERRED_FLUSH_US: TimeUs = 200_000;
/// ...and at most this many wait (counting those being written): past it, the server
/// journals keepalives like any change, which bounds the memory they hold.
pub const DEFERRED_MAX_RECORDS: usize = 65_536;
/// After a snapshot could not be written, the next is not tried for this long.
const SNAPSHOT_RETRY_US: TimeUs = 10_000_000;

/// Why a pass's events were refused: the `Err` of [`Durability::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The journal's trouble, worded for the refused commands' clients.
    pub why: String,
    /// The failed batch could not be cut off the journal
    /// ([`spalloc_journal::Error::batch_may_remain`]): it is not folded, but it may be replayed
    /// if the server stops before its next journal write cuts it, so the refused commands may
    /// or may not end up carried out. When false, nothing of the batch can come back.
    pub may_be_recorded: bool,
}

/// The owner of everything on disk (module docs).
pub struct Durability {
    /// The journal; `None` while it is lent to the flusher.
    journal: Option<Box<dyn Storage>>,
    /// Folded, not yet written (not counting those lent to the flusher).
    deferred: Deferred,
    flusher: Flusher,
    health: Health,
    /// The sequence number the newest snapshot covers.
    last_snapshot_seq: u64,
    snapshot_every_events: u64,
    /// After a failed snapshot, none is tried before this.
    snapshot_retry_at_us: TimeUs,
    log: Logger,
    /// How long each journal write took, until the server takes them (for the metrics).
    write_times: Vec<std::time::Duration>,
    /// Journal writes failed since [`Durability::take_write_failures`] was last called.
    write_failures: u64,
}

/// At most this many journal write durations wait to be taken ([`Durability::take_write_times`]);
/// the server takes them every pass, so this only bounds a caller that never does.
const WRITE_TIMES_MAX: usize = 1024;

impl Durability {
    /// Take charge of `journal`, whose newest snapshot covers `last_snapshot_seq`; snapshot
    /// every `snapshot_every_events`. The flusher thread wakes `poller` when it finishes.
    pub fn new(
        journal: Journal,
        last_snapshot_seq: u64,
        snapshot_every_events: u64,
        poller: Arc<Poller>,
        log: Logger,
    ) -> Result<Durability, String> {
        Ok(Durability::with_storage(
            Box::new(journal),
            last_snapshot_seq,
            snapshot_every_events,
            Flusher::start(poller)?,
            log,
        ))
    }

    /// Take charge of the simulation's `storage` (`server::sim`, kept in memory), with the
    /// [inline](Flusher::inline) flusher: a background write happens at once, in the loop's
    /// thread, so every simulated run is deterministic.
    pub fn simulated(
        storage: Box<dyn Storage>,
        last_snapshot_seq: u64,
        snapshot_every_events: u64,
        log: Logger,
    ) -> Durability {
        Durability::with_storage(
            storage,
            last_snapshot_seq,
            snapshot_every_events,
            Flusher::inline(),
            log,
        )
    }

    fn with_storage(
        storage: Box<dyn Storage>,
        last_snapshot_seq: u64,
        snapshot_every_events: u64,
        flusher: Flusher,
        log: Logger,
    ) -> Durability {
        Durability {
            journal: Some(storage),
            deferred: Deferred::default(),
            flusher,
            health: Health::default(),
            write_times: Vec::new(),
            write_failures: 0,
            last_snapshot_seq,
            snapshot_every_events,
            snapshot_retry_at_us: 0,
            log,
        }
    }

    /// Whether `count` more keepalive-only records may wait unwritten.
    pub fn has_room(&self, count: usize) -> bool {
        self.waiting_records() + count <= DEFERRED_MAX_RECORDS
    }

    /// Records folded and not yet written, including any being written now.
    pub fn waiting_records(&self) -> usize {
        self.deferred.len() + self.flusher.in_flight_records()
    }

    /// True while the journal's last write failed: changes are refused.
    pub fn failing(&self) -> bool {
        self.health.failing()
    }

    /// Whether work the server starts itself (ticks, BMP completions) should be tried now:
    /// while the journal fails, only every so often, so a due tick cannot make the loop spin.
    pub fn retry_due(&self, now: TimeUs) -> bool {
        self.health.retry_due(now)
    }

    /// While the journal fails: when work the server starts itself is next tried.
    pub fn retry_at(&self) -> Option<TimeUs> {
        self.health.retry_at()
    }

    /// Keep the records of `events`, already folded at `now` (keepalive-only, and
    /// [`Durability::has_room`] for them), to be written later.
    pub fn defer(&mut self, events: &[Event], now: TimeUs) {
        debug_assert!(self.has_room(events.len()));
        for e in events {
            self.deferred.push(e, now);
        }
        self.start_flush_if_due(now);
    }

    /// Make `events` durable, behind every deferred record, with one fsync; they may be
    /// folded only if this returns `Ok`. On `Err` (what to tell the refused commands'
    /// clients) nothing of `events` is kept in memory, and every deferred record still is;
    /// nothing of `events` is in the journal either, unless [`Refused::may_be_recorded`].
    pub fn commit(&mut self, events: &[Event], now: TimeUs) -> Result<(), Refused> {
        if events.is_empty() {
            self.start_flush_if_due(now);
            return Ok(());
        }
        // First the journal back, with any records of a failed background write in front
        // again; only then is it known where this batch begins.
        self.take_journal_back();
        let waiting = self.deferred.len();
        for e in events {
            self.deferred.push(e, now);
        }
        let written = self.write_deferred(now);
        if written.is_err() {
            self.deferred.truncate(waiting);
        }
        debug_assert_eq!(
            self.deferred.len(),
            if written.is_ok() { 0 } else { waiting }
        );
        written
    }

    /// Each pass: take back a finished background write, start one if records are due,
    /// and declare an outage over once writes have held.
    pub fn poll(&mut self, now: TimeUs) {
        if let Some(done) = self.flusher.finished(false) {
            self.flush_finished(done, now);
        }
        self.start_flush_if_due(now);
        self.health.poll(now, &self.log);
    }

    /// When [`Durability::poll`] next has something to do, if ever.
    pub fn next_deadline(&self) -> Option<TimeUs> {
        let flush = (!self.deferred.is_empty() && !self.flusher.in_flight()).then(|| {
            let due = self.deferred.since_us() + DEFERRED_FLUSH_US;
            // While the journal fails, not before the next retry.
            self.health.retry_at().map_or(due, |retry| due.max(retry))
        });
        [flush, self.health.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Every `--snapshot-every` journaled events, take a snapshot of `core` (which must
    /// be the fold of everything committed and deferred) in the background.
    pub fn maybe_snapshot(&mut self, core: &Core, now: TimeUs) {
        // While the journal is lent out, or in trouble, a later pass tries.
        let Some(journal) = &self.journal else {
            return;
        };
        let last = journal.next_seq().saturating_sub(1);
        if last >= self.last_snapshot_seq + self.snapshot_every_events
            && self.health.clear()
            && now >= self.snapshot_retry_at_us
        {
            self.start_snapshot(core, now);
        }
    }

    /// A snapshot of everything folded so far (`core`), waited for: at shutdown.
    pub fn snapshot_and_wait(&mut self, core: &Core, now: TimeUs) {
        self.take_journal_back();
        let last = self.journal_mut().next_seq().saturating_sub(1);
        if self.deferred.is_empty() && last == self.last_snapshot_seq {
            return;
        }
        self.start_snapshot(core, now);
        self.take_journal_back();
    }

    /// Hand the encoded core to the flusher with the deferred records it already reflects,
    /// to be written as a snapshot covering them; the outcome comes back with the write.
    fn start_snapshot(&mut self, core: &Core, now: TimeUs) {
        self.take_journal_back();
        match rmp_serde::to_vec_named(core) {
            Ok(bytes) => {
                let journal = self.journal.take().expect("just taken back");
                let records = std::mem::take(&mut self.deferred);
                self.flusher.start_write(journal, records, Some(bytes));
                self.finish_inline(now);
            }
            Err(e) => self.snapshot_failed(&format!("cannot encode the state: {e}"), now),
        }
    }

    /// A snapshot could not be written: log it, and wait [`SNAPSHOT_RETRY_US`] before the
    /// next try (not every pass: a failing disk must not also get a flooded log).
    fn snapshot_failed(&mut self, why: &str, now: TimeUs) {
        self.log.error(&format!("cannot write a snapshot: {why}"));
        self.snapshot_retry_at_us = now + SNAPSHOT_RETRY_US;
    }

    /// Lend the journal to the flusher for the deferred records, if the oldest has waited
    /// long enough (or there are many), and the journal is not failing (then only when a
    /// retry is due).
    fn start_flush_if_due(&mut self, now: TimeUs) {
        let due = now >= self.deferred.since_us() + DEFERRED_FLUSH_US
            || self.deferred.len() >= DEFERRED_MAX_RECORDS;
        if self.deferred.is_empty()
            || !due
            || !self.health.retry_due(now)
            || self.flusher.in_flight()
        {
            return;
        }
        let journal = self
            .journal
            .take()
            .expect("the journal is here when not lent");
        self.flusher
            .start_write(journal, std::mem::take(&mut self.deferred), None);
        self.finish_inline(now);
    }

    /// With the [inline](Flusher::inline) flusher (the simulation's), a write has finished
    /// as soon as it started: take it back now, at event time `now`, as the pass after a
    /// background write would. (The thread's flusher never has one here.)
    fn finish_inline(&mut self, now: TimeUs) {
        if let Some(done) = self.flusher.finished_inline() {
            self.flush_finished(done, now);
        }
    }

    /// A background write ended: take the journal back; if the write failed, its records
    /// go first again.
    fn flush_finished(&mut self, done: FlushDone, now: TimeUs) {
        self.note_write(done.write_took);
        self.journal = Some(done.journal);
        match done.result {
            Ok(_) => self.health.written(now),
            Err(e) => {
                self.deferred.prepend(done.records);
                self.write_failed(&e, now);
            }
        }
        match done.snapshot {
            Some(Ok(covered_seq)) => self.last_snapshot_seq = covered_seq,
            Some(Err(e)) => self.snapshot_failed(&e.to_string(), now),
            None => {}
        }
    }

    /// Wait for a background write, if one is under way, and take the journal back.
    fn take_journal_back(&mut self) {
        if let Some(done) = self.flusher.finished(true) {
            self.flush_finished(done, crate::timefmt::now_us());
        }
        debug_assert!(self.journal.is_some());
    }

    fn journal_mut(&mut self) -> &mut dyn Storage {
        self.journal
            .as_deref_mut()
            .expect("the journal is here when not lent")
    }

    /// Append the deferred records as one batch with one fsync (the journal is here).
    fn write_deferred(&mut self, now: TimeUs) -> Result<(), Refused> {
        let journal = self
            .journal
            .as_mut()
            .expect("the journal is here when not lent");
        let started = std::time::Instant::now();
        let result = journal.append_batch(&mut self.deferred.records());
        self.note_write(started.elapsed());
        match result {
            Ok(_) => {
                self.deferred.clear();
                self.health.written(now);
                Ok(())
            }
            Err(e) => Err(Refused {
                may_be_recorded: e.batch_may_remain(),
                why: self.write_failed(&e, now),
            }),
        }
    }

    /// Remember how long a journal write (append and fsync) took, for the metrics; at most
    /// [`WRITE_TIMES_MAX`] wait to be taken.
    fn note_write(&mut self, took: std::time::Duration) {
        if self.write_times.len() < WRITE_TIMES_MAX {
            self.write_times.push(took);
        }
    }

    /// A journal write failed with `e`: counted for the metrics, and the outage noted (the
    /// message for refused commands).
    fn write_failed(&mut self, e: &spalloc_journal::Error, now: TimeUs) -> String {
        self.write_failures += 1;
        self.health.failed(e, now, &self.log)
    }

    /// How many journal writes failed since the last call, for the metrics.
    pub fn take_write_failures(&mut self) -> u64 {
        std::mem::take(&mut self.write_failures)
    }

    /// The durations of the journal writes (each an append and its fsync) since the last
    /// call, for the metrics.
    pub fn take_write_times(&mut self) -> Vec<std::time::Duration> {
        std::mem::take(&mut self.write_times)
    }

    /// The journal, for a test to inject faults into (waits for a background write).
    #[cfg(test)]
    fn journal_for_test(&mut self) -> &mut dyn Storage {
        self.take_journal_back();
        self.journal_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Command;
    use spalloc_journal::Reader;

    fn keepalive(job_id: u64, t: TimeUs) -> Event {
        Event::Command {
            now_us: t,
            peer: "10.0.0.1".into(),
            command: Command::JobKeepalive { job_id },
        }
    }

    fn journaled(dir: &std::path::Path) -> Vec<Event> {
        let reader = Reader::open(dir).unwrap();
        reader
            .records_from(reader.first_seq())
            .unwrap()
            .map(|r| crate::server::decode_event(&r.unwrap().1).unwrap())
            .collect()
    }

    fn durability(tag: &str) -> (Durability, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("spalloc-durability-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let journal = Journal::open(&dir).unwrap().journal;
        let poller = Arc::new(Poller::new().unwrap());
        let d = Durability::new(journal, 0, 1_000_000, poller, Logger::capture()).unwrap();
        (d, dir)
    }

    /// The interleaving of issue 15: deferred keepalives (folded and answered) are lent to
    /// the flusher, whose write fails; a commit then fails too. The commit must refuse only
    /// its own events: the keepalives stay, and go into the journal, in order and once,
    /// ahead of the next commit that succeeds.
    #[test]
    fn failed_background_and_foreground_writes_lose_no_deferred_record() {
        let (mut d, dir) = durability("interleave");
        let folded = [keepalive(1, 10), keepalive(2, 11), keepalive(1, 12)];
        // Both the flusher's write and the next foreground write fail.
        d.journal_for_test().inject_failures(2, 0);
        d.defer(&folded[..1], 10);
        d.defer(&folded[1..], 11);
        // Due: lent to the flusher, whose write fails.
        d.poll(10 + DEFERRED_FLUSH_US);
        assert_eq!(d.waiting_records(), 3);
        let refused = [Event::Tick { now_us: 500_000 }];
        let err = d.commit(&refused, 500_000).unwrap_err();
        assert!(err.why.contains("journal write failed"), "{err:?}");
        assert!(
            !err.may_be_recorded,
            "the failed batch was cut off: {err:?}"
        );
        assert!(d.failing());
        assert_eq!(d.waiting_records(), 3, "a deferred keepalive was dropped");
        // Both failures are counted for the metrics, once.
        assert_eq!(d.take_write_failures(), 2);
        assert_eq!(d.take_write_failures(), 0);
        let accepted = [Event::Tick { now_us: 700_000 }];
        d.commit(&accepted, 700_000).unwrap();
        assert!(!d.failing());
        assert_eq!(d.take_write_failures(), 0);
        let mut want = folded.to_vec();
        want.extend(accepted);
        assert_eq!(journaled(&dir), want);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A commit whose failed batch cannot be cut off the journal says its events may be
    /// recorded (a crash now would replay them); one whose batch was cut off says not, and
    /// nothing of it is in the journal. Either way the deferred keepalive goes in once, in
    /// its place, and no refused event is in the journal once a commit succeeds.
    #[test]
    fn a_batch_that_cannot_be_cut_off_is_refused_as_maybe_recorded() {
        let (mut d, dir) = durability("uncut");
        d.commit(&[Event::Tick { now_us: 1 }], 1).unwrap();
        d.defer(&[keepalive(1, 10)], 10);
        // Two fsyncs fail; the first failed batch's cut fails too.
        d.journal_for_test().inject_failures(0, 2);
        d.journal_for_test().inject_cut_failures(1);
        let err = d.commit(&[Event::Tick { now_us: 20 }], 20).unwrap_err();
        assert!(err.may_be_recorded, "{err:?}");
        assert!(
            err.why.contains("cutting the failed batch off failed too"),
            "{err:?}"
        );
        // What a restart now would replay:
        let maybe = vec![
            Event::Tick { now_us: 1 },
            keepalive(1, 10),
            Event::Tick { now_us: 20 },
        ];
        assert_eq!(journaled(&dir), maybe);
        // The next commit cuts it off first; its own batch fails, and is cut off.
        let err = d.commit(&[Event::Tick { now_us: 30 }], 30).unwrap_err();
        assert!(!err.may_be_recorded, "{err:?}");
        assert_eq!(journaled(&dir), vec![Event::Tick { now_us: 1 }]);
        assert_eq!(d.waiting_records(), 1);
        d.commit(&[Event::Tick { now_us: 40 }], 40).unwrap();
        assert_eq!(
            journaled(&dir),
            vec![
                Event::Tick { now_us: 1 },
                keepalive(1, 10),
                Event::Tick { now_us: 40 }
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Deferred records are written by the flusher once due, and a snapshot written at
    /// shutdown covers them.
    #[test]
    fn deferred_records_are_flushed_and_covered_by_the_shutdown_snapshot() {
        let (mut d, dir) = durability("flush");
        d.commit(&[Event::Tick { now_us: 1 }], 1).unwrap();
        d.defer(&[keepalive(3, 5)], 5);
        d.poll(5 + DEFERRED_FLUSH_US);
        d.take_journal_back();
        assert_eq!(d.waiting_records(), 0);
        d.defer(&[keepalive(3, 9)], 9);
        d.snapshot_and_wait(&Core::new(), 10);
        assert_eq!(d.last_snapshot_seq, 3);
        assert_eq!(
            journaled(&dir),
            vec![Event::Tick { now_us: 1 }, keepalive(3, 5), keepalive(3, 9)]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
