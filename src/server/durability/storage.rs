//! Where the durability module keeps the journal: the seam between it and the disk.
//!
//! The server stores events in a [`Journal`] (the `spalloc-journal` crate); the simulation
//! of the whole server loop (`server::sim`) stores them in memory, with failures and crashes
//! it chooses. Both sit behind [`Storage`], which is exactly the part of the journal that
//! [`Durability`](super::Durability) and its flusher use, so the durability code the
//! simulation runs is the production code.

use spalloc_journal::{Error, Journal};

/// An append-only, fsync'd record store with snapshots (what `Durability` needs of the
/// journal). `Send`: the flusher thread borrows it for background writes.
pub trait Storage: Send {
    /// Append `records` as one batch made durable with one fsync; the sequence number of
    /// the last record (see [`Journal::append_batch`]). On `Err` none of the batch counts
    /// as written, and none of it is left in the store, unless the error says it may be
    /// ([`Error::batch_may_remain`]: the failed batch could not be cut off, and comes back
    /// after a crash unless a later write or snapshot cuts it first).
    fn append_batch(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<u64, Error>;

    /// The sequence number the next appended record will get.
    fn next_seq(&self) -> u64;

    /// Store `data`, the state after every record up to `covered_seq`
    /// (see [`Journal::write_snapshot`]).
    fn write_snapshot(&mut self, covered_seq: u64, data: &[u8]) -> Result<(), Error>;

    /// Test hook: the next `writes` batch writes fail, then the next `syncs` fsyncs.
    #[cfg(test)]
    fn inject_failures(&mut self, writes: u32, syncs: u32);

    /// Test hook: the next `cuts` cuts of a failed batch fail.
    #[cfg(test)]
    fn inject_cut_failures(&mut self, cuts: u32);
}

impl Storage for Journal {
    fn append_batch(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<u64, Error> {
        Journal::append_batch(self, records)
    }

    fn next_seq(&self) -> u64 {
        Journal::next_seq(self)
    }

    fn write_snapshot(&mut self, covered_seq: u64, data: &[u8]) -> Result<(), Error> {
        Journal::write_snapshot(self, covered_seq, data)
    }

    #[cfg(test)]
    fn inject_failures(&mut self, writes: u32, syncs: u32) {
        Journal::inject_failures(self, writes, syncs)
    }

    #[cfg(test)]
    fn inject_cut_failures(&mut self, cuts: u32) {
        Journal::inject_cut_failures(self, cuts)
    }
}
