//! The records of events already folded but not yet written: encoded back to back, in fold
//! order, so that they can go into the journal ahead of anything folded after them (in one
//! `append_batch` with a pass's own events, or lent to the flusher thread).

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
