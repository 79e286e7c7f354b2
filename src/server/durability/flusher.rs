//! The thread that writes deferred records, and snapshots, while the loop keeps serving.
//!
//! The journal itself travels to the thread with each job and comes back with the result:
//! while it is lent out nothing else can be appended, so nothing can overtake the records
//! being written, and a failed write hands them back to go first again. A snapshot job
//! carries the encoded core (whose state is exactly the fold of the journal plus the records
//! it hands over): the thread appends those records and then writes the snapshot as
//! covering them, so neither the fsyncs nor the snapshot's file work stall the loop.

use std::sync::Arc;

use crossbeam::channel::{self, Receiver, Sender};
use polling::Poller;

use super::deferred::Deferred;
use super::storage::Storage;

/// A finished background write: the journal back, the records it was given, and how the
/// write went (the sequence number of the last record, as `append_batch` returns it).
pub struct FlushDone {
    /// The journal, lent to the thread for the write.
    pub journal: Box<dyn Storage>,
    /// The records written (or not: see `result`).
    pub records: Deferred,
    /// The write's outcome.
    pub result: Result<u64, spalloc_journal::Error>,
    /// If a snapshot was asked for and the records were written: the sequence number it
    /// covers, or why it could not be written.
    pub snapshot: Option<Result<u64, spalloc_journal::Error>>,
    /// How long the append and its fsync took (for the metrics).
    pub write_took: std::time::Duration,
}

/// What the thread is given: the journal, records to append, and maybe an encoded core to
/// write as a snapshot covering them.
type Job = (Box<dyn Storage>, Deferred, Option<Vec<u8>>);

/// The thread that writes deferred records while the loop keeps serving.
pub struct Flusher {
    /// `None` for the [inline](Flusher::inline) flusher.
    to_thread: Option<Sender<Job>>,
    done: Receiver<FlushDone>,
    /// The inline flusher's finished write (the thread's sends it over `done`).
    inline_done: Option<FlushDone>,
    in_flight: bool,
    /// Records in the write under way (0 when none).
    in_flight_records: usize,
}

impl Flusher {
    /// Start the thread; it wakes `poller` when a write finishes.
    pub fn start(poller: Arc<Poller>) -> Result<Flusher, String> {
        // One write at a time: the journal itself travels with the request.
        let (to_thread, requests) = channel::bounded::<Job>(1);
        let (finished, done) = channel::bounded(1);
        std::thread::Builder::new()
            .name("journal-flush".into())
            .spawn(move || {
                for (journal, records, state) in requests {
                    if finished.send(write(journal, records, state)).is_err() {
                        return;
                    }
                    let _ = poller.notify();
                }
            })
            .map_err(|e| format!("cannot start the journal thread: {e}"))?;
        Ok(Flusher {
            to_thread: Some(to_thread),
            done,
            inline_done: None,
            in_flight: false,
            in_flight_records: 0,
        })
    }

    /// A flusher without a thread, for the simulation: each write is done when it is
    /// started, and `Durability` takes it back at once ([`Flusher::finished_inline`]).
    pub fn inline() -> Flusher {
        Flusher {
            to_thread: None,
            done: channel::never(),
            inline_done: None,
            in_flight: false,
            in_flight_records: 0,
        }
    }

    /// Whether the journal is lent out.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Records being written (they still count against the bound on waiting records).
    pub fn in_flight_records(&self) -> usize {
        self.in_flight_records
    }

    /// Lend `journal` to the thread to write `records`, and then `snapshot` (the encoded
    /// core, folded up to and including `records`) if given.
    pub fn start_write(
        &mut self,
        journal: Box<dyn Storage>,
        records: Deferred,
        snapshot: Option<Vec<u8>>,
    ) {
        debug_assert!(!self.in_flight);
        self.in_flight_records = records.len();
        match &self.to_thread {
            Some(to_thread) => to_thread
                .send((journal, records, snapshot))
                .expect("the journal thread runs as long as the server"),
            None => self.inline_done = Some(write(journal, records, snapshot)),
        }
        self.in_flight = true;
    }

    /// The inline flusher's write, finished when it was started; `None` for the thread's.
    pub fn finished_inline(&mut self) -> Option<FlushDone> {
        let done = self.inline_done.take();
        if done.is_some() {
            self.in_flight = false;
            self.in_flight_records = 0;
        }
        done
    }

    /// The finished write, if it has finished (`wait`: block until it has).
    pub fn finished(&mut self, wait: bool) -> Option<FlushDone> {
        if !self.in_flight {
            return None;
        }
        if let Some(done) = self.finished_inline() {
            return Some(done);
        }
        let done = if wait {
            Some(
                self.done
                    .recv()
                    .expect("the journal thread runs as long as the server"),
            )
        } else {
            self.done.try_recv().ok()
        };
        if done.is_some() {
            self.in_flight = false;
            self.in_flight_records = 0;
        }
        done
    }
}

/// Append `records` to `journal` and then, if given, write `snapshot` as covering them:
/// one background write (in the thread, or inline).
fn write(mut journal: Box<dyn Storage>, records: Deferred, snapshot: Option<Vec<u8>>) -> FlushDone {
    let started = std::time::Instant::now();
    let result = journal.append_batch(&mut records.records());
    let write_took = started.elapsed();
    let snapshot = match (&result, snapshot) {
        (Ok(last_seq), Some(bytes)) => Some(
            journal
                .write_snapshot(*last_seq, &bytes)
                .map(|()| *last_seq),
        ),
        _ => None,
    };
    FlushDone {
        journal,
        records,
        result,
        snapshot,
        write_took,
    }
}
