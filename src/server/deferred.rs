//! Keepalive-only events that are folded and answered before they are journaled, and the
//! thread that writes them. (A pass's fsync'd events are encoded into the same buffer,
//! behind them, and written with them in one batch.)
//!
//! Why this is safe is explained in the `server` module docs: such an event moves nothing
//! but a keepalive deadline, and a restart resets every deadline. What must still hold is
//! that the journal receives every folded event, in fold order, so a replay (and a
//! snapshot's check against it) sees exactly what the live server folded. Hence:
//!
//! - [`Deferred`] keeps the encoded records back to back, in fold order;
//! - they are written either ahead of the next fsync'd batch (same `append_batch`, same
//!   fsync), or by the [`Flusher`] thread, which borrows the journal for the write so the
//!   loop keeps answering while the disk works. While the journal is lent out nothing else
//!   can be appended, so nothing can overtake the records being written; a failed write
//!   hands them back to go first again.
//!
//! The same thread writes the periodic snapshots: the loop encodes the core (whose state is
//! exactly the fold of the journal plus the records it hands over), and the thread appends
//! those records and then writes the snapshot as covering them. Neither the fsyncs nor the
//! snapshot's file work stall the loop.

use std::sync::Arc;

use crossbeam::channel::{self, Receiver, Sender};
use polling::Poller;
use spalloc_journal::Journal;

use crate::core::{Event, TimeUs};

/// Encoded events, back to back, in fold order.
#[derive(Default)]
pub struct Deferred {
    bytes: Vec<u8>,
    /// End offset of each record in `bytes`.
    ends: Vec<usize>,
    /// When the oldest record was folded.
    since_us: TimeUs,
}

impl Deferred {
    /// Records held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// When the oldest record was folded (meaningless when empty).
    pub fn since_us(&self) -> TimeUs {
        self.since_us
    }

    /// Encode and keep `event`, folded at `now`.
    pub fn push(&mut self, event: &Event, now: TimeUs) {
        if self.is_empty() {
            self.since_us = now;
        }
        crate::server::write_event(&mut self.bytes, event);
        self.ends.push(self.bytes.len());
    }

    /// The records, oldest first.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(s, &e)| &self.bytes[s..e])
    }

    /// Put `older` (records folded before these) in front.
    pub fn prepend(&mut self, mut older: Deferred) {
        if older.is_empty() {
            return;
        }
        let shift = older.bytes.len();
        older.bytes.extend_from_slice(&self.bytes);
        older.ends.extend(self.ends.iter().map(|e| e + shift));
        *self = older; // its `since_us` is the older one
    }

    /// Keep only the oldest `len` records.
    pub fn truncate(&mut self, len: usize) {
        if len < self.ends.len() {
            self.bytes
                .truncate(if len == 0 { 0 } else { self.ends[len - 1] });
            self.ends.truncate(len);
        }
    }

    /// Forget every record (they are written), keeping the buffers' capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// A finished background write: the journal back, the records it was given, and how the
/// write went (the sequence number of the last record, as `append_batch` returns it).
pub struct FlushDone {
    /// The journal, lent to the thread for the write.
    pub journal: Journal,
    /// The records written (or not: see `result`).
    pub records: Deferred,
    /// The write's outcome.
    pub result: Result<u64, spalloc_journal::Error>,
    /// If a snapshot was asked for and the records were written: the sequence number it
    /// covers, or why it could not be written.
    pub snapshot: Option<Result<u64, spalloc_journal::Error>>,
}

/// What the thread is given: the journal, records to append, and maybe an encoded core to
/// write as a snapshot covering them.
type Job = (Journal, Deferred, Option<Vec<u8>>);

/// The thread that writes deferred records while the loop keeps serving.
pub struct Flusher {
    to_thread: Sender<Job>,
    done: Receiver<FlushDone>,
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
                for (mut journal, records, state) in requests {
                    let result = journal.append_batch(records.records());
                    let snapshot = match (&result, state) {
                        (Ok(last_seq), Some(bytes)) => Some(
                            journal
                                .write_snapshot(*last_seq, &bytes)
                                .map(|()| *last_seq),
                        ),
                        _ => None,
                    };
                    if finished
                        .send(FlushDone {
                            journal,
                            records,
                            result,
                            snapshot,
                        })
                        .is_err()
                    {
                        return;
                    }
                    let _ = poller.notify();
                }
            })
            .map_err(|e| format!("cannot start the journal thread: {e}"))?;
        Ok(Flusher {
            to_thread,
            done,
            in_flight: false,
            in_flight_records: 0,
        })
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
    pub fn start_write(&mut self, journal: Journal, records: Deferred, snapshot: Option<Vec<u8>>) {
        debug_assert!(!self.in_flight);
        self.in_flight_records = records.len();
        self.to_thread
            .send((journal, records, snapshot))
            .expect("the journal thread runs as long as the server");
        self.in_flight = true;
    }

    /// The finished write, if it has finished (`wait`: block until it has).
    pub fn finished(&mut self, wait: bool) -> Option<FlushDone> {
        if !self.in_flight {
            return None;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(t: TimeUs) -> Event {
        Event::Tick { now_us: t }
    }

    fn decoded(d: &Deferred) -> Vec<Event> {
        d.records()
            .map(|r| crate::server::decode_event(r).unwrap())
            .collect()
    }

    #[test]
    fn keeps_order_across_prepend_and_clear() {
        let mut older = Deferred::default();
        older.push(&tick(1), 10);
        older.push(&tick(2), 11);
        let mut newer = Deferred::default();
        newer.push(&tick(3), 20);
        newer.prepend(older);
        assert_eq!(decoded(&newer), vec![tick(1), tick(2), tick(3)]);
        assert_eq!(newer.len(), 3);
        assert_eq!(newer.since_us(), 10);
        newer.truncate(2);
        assert_eq!(decoded(&newer), vec![tick(1), tick(2)]);
        newer.truncate(5);
        assert_eq!(newer.len(), 2);
        newer.truncate(0);
        assert!(newer.is_empty());
        newer.push(&tick(5), 25);
        newer.clear();
        assert!(newer.is_empty());
        assert_eq!(newer.records().count(), 0);
        newer.push(&tick(4), 30);
        assert_eq!(decoded(&newer), vec![tick(4)]);
        assert_eq!(newer.since_us(), 30);
    }
}
