//! The spalloc journal: an append-only, checksummed, fsync'd log of opaque
//! records, with snapshots, for an event-sourced server.
//!
//! The server appends every input of one loop pass as one batch
//! ([`Journal::append_batch`], one fsync), applies it only once that
//! returns, and now and then stores its state with
//! [`Journal::write_snapshot`]. On restart, [`Journal::open`] yields the
//! newest valid snapshot and the records after it. [`Reader`] reads all
//! retained history without a lock, for the replay tool.
//!
//! # Layout
//!
//! A journal is a directory holding:
//!
//! * `LOCK`: the writer's `flock` (exclusive, non-blocking) and its pid.
//! * `segment-<first_seq:020>.log`: records, in checksummed frames
//!   (`u32 LE len | u32 LE crc32c(payload) | payload`) after a 20-byte header
//!   (magic `SPAJ`, u16 version, u16 flags, u64 first seq, crc32c of the
//!   header). See [`format`](mod@format) for the byte layout.
//! * `snapshot-<covered_seq:020>.snap`: a state covering records
//!   `1..=covered_seq`, with a checksummed header (magic `SPAS`).
//! * `*.tmp`: files being created; renamed into place once complete.
//! * `*.corrupt`: snapshots found damaged by a writer, kept for inspection.
//!
//! Sequence numbers start at 1 and are contiguous across segments and
//! snapshots. Records are 1 byte to [`RECORD_BYTES_MAX`] long.
//!
//! # Durability
//!
//! * A batch is one `write` and one `fdatasync`; `append_batch` returns only
//!   after both succeeded.
//! * Segment and snapshot files are created as a temp file, fsync'd, renamed,
//!   and then the directory is fsync'd, so a final name always names a
//!   complete file. The directory is also fsync'd after deletions.
//! * A new segment starts after each snapshot and once the current one
//!   reaches [`Options::segment_bytes_max`]. The old segment is complete and
//!   durable before the new one exists, so only the *last* segment can have
//!   a torn tail.
//! * Retention (after each snapshot): keep the newest two snapshots and every
//!   segment holding records after the older of the two. With
//!   [`Options::retain_for`] (the server's `--retain-days`), also keep every
//!   segment written within that period, and every snapshot from the one
//!   where the kept history starts; only older files are deleted, oldest
//!   first, and only up to a retained snapshot, so the kept history always
//!   replays. Restart work is bounded by the snapshot interval either way
//!   (a start reads only the segments after the older snapshot); disk use
//!   by the retention period's records, or by about two snapshot intervals.
//! * A batch whose write or fsync fails is cut off (truncate to the durable
//!   length, fsync) by the failing `append_batch` before it returns, so a
//!   refused batch cannot come back after a crash. If that cut fails too the
//!   error is [`Error::UncutBatch`] and the batch's outcome is unknown until
//!   the next write cuts it; see [`Journal`] ("After an I/O error"), which
//!   also says why truncating, not retrying the fsync, is what makes a failed
//!   fsync safe.
//!
//! # Recovery
//!
//! What [`Journal::open`] does with what it finds. "Cut" means truncating the
//! last segment at the offset of the first bad byte, fsyncing, and returning
//! a [`TailRepair`] naming the file and offset. "Refuse" means returning
//! [`Error::Corrupt`] (file and offset) or the named error without modifying
//! anything. The guiding rule (TigerBeetle's torn write versus corruption):
//! damage with *nothing valid after it* at the end of the last segment is
//! the signature of a crash mid-write, whose batch was never acknowledged,
//! so cutting it loses nothing; damage with a valid record after it, or in
//! any segment but the last, hit acknowledged data, and is refused.
//! [`Reader`] applies the same table but never cuts or deletes: it treats a
//! tail that would be cut as the end of the journal.
//!
//! | Case | Found | Done |
//! |------|-------|------|
//! | R1 | Directory missing or empty | Create it and `segment-…01.log` (reader: `Error::NoJournal`) |
//! | R2 | Another writer holds `LOCK` | Refuse: `Error::Locked` with the dir and the holder's pid |
//! | R3 | `*.tmp` files | Delete (interrupted create/snapshot; the final name was never made) |
//! | R4 | Header with a version or flags we do not know (segment or snapshot) | Refuse: `Error::UnknownVersion` / `Error::UnknownFlags` |
//! | R5 | Last segment shorter than its header, or all zeros | Refuse: segments are created whole (R3), so a short or zeroed header under a final name is damage after the fact, and the segment may have held acknowledged records |
//! | R6 | Any other bad segment header (magic, checksum, seq differs from the name) | Refuse |
//! | R7 | Last segment ends in a partial frame header (< 8 bytes) | Cut |
//! | R8 | Last segment's final frame is shorter than its length field | Cut |
//! | R9 | Length field 0 or > `RECORD_BYTES_MAX` with no valid frame after it | Cut (garbage or zeros after a torn write) |
//! | R10 | Checksum mismatch with no valid frame after it, in the last segment | Cut (torn write) |
//! | R11 | Any bad frame (R7–R10) followed anywhere by a valid frame | Refuse: acknowledged records follow the damage |
//! | R12 | Any bad frame in a segment that is not the last | Refuse |
//! | R13 | Garbage after the last valid frame of the last segment, containing no valid frame | Cut (as R9/R10) |
//! | R14 | Sequence gap or overlap between segments (record counts do not meet the next segment's first seq) | Refuse |
//! | R15 | Newest snapshot damaged (short, bad checksum, length mismatch, seq differs from name) | Rename to `*.corrupt`, fall back to the next older snapshot and its records; report in `Opened::discarded_snapshots` |
//! | R16 | No valid snapshot, and the oldest segment starts at 1 | Replay everything from record 1 |
//! | R17 | No valid snapshot reaches the oldest retained record (oldest segment starts after `covered_seq + 1`) | Refuse |
//! | R18 | A valid snapshot covers records beyond the last record | Refuse (records it covers are missing) |
//! | R19 | Snapshot files but no segment files | Refuse |
//! | R20 | Crash during `write_snapshot` | Covered by R3 and R15: every step (temp write, rename, new segment, deletions) leaves a journal that opens to the same state |
//! | R21 | Damage (R6–R12, R15) in an older segment or snapshot kept only as the fallback for R15 | Open (this start does not need it); reported in `Opened::fallback_damage` for the server to warn about |
//! | R22 | A create (segment or snapshot) fails part-way, e.g. on a full disk | Its temp file is deleted at once, not left taking space until the next open (R3) |
//! | R23 | Bytes of a batch whose `append_batch` failed (write or fsync) | None after a plain `Error::Io`: the failing call cut them before returning. Only after `Error::UncutBatch` (the cut failed too) and a crash before the next write or snapshot retried it can they be found: a partial copy is cut (R7–R10), a complete one replayed like any valid record (that error said the outcome was unknown) |
//!
//! When a journal is refused, [`salvage`] copies every good record before the first
//! damage into a new directory (byte for byte) and lists exactly what it left out.
//!
//! Checks are made, and the whole open can still fail, before anything is
//! modified: cuts, renames and deletions happen only once the journal is
//! known to be usable.
//!
//! Known limit: a power loss can persist later pages of an unacknowledged
//! batch but not earlier ones. That looks like R11 and is refused, which is
//! the safe failure (an operator can inspect it with [`Reader::verify`]),
//! but it is a refusal nonetheless.
//!
//! # Example
//!
//! ```
//! # let dir = std::env::temp_dir().join(format!("spalloc-journal-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use spalloc_journal::{Journal, Reader};
//! let mut opened = Journal::open(&dir)?;
//! let last = opened.journal.append_batch([&b"first"[..], &b"second"[..]])?;
//! assert_eq!(last, 2);
//! opened.journal.write_snapshot(2, b"state after 2")?;
//! drop(opened);
//!
//! let opened = Journal::open(&dir)?;
//! assert_eq!(opened.snapshot.as_ref().map(|s| s.covered_seq), Some(2));
//! assert!(opened.records_after_snapshot.is_empty());
//!
//! let reader = Reader::open(&dir)?;
//! let all: Vec<_> = reader.records_from(1)?.collect::<Result<_, _>>()?;
//! assert_eq!(all, vec![(1, b"first".to_vec()), (2, b"second".to_vec())]);
//! # drop(opened); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), spalloc_journal::Error>(())
//! ```

#![warn(missing_docs)]

mod error;
mod files;
pub mod format;
mod reader;
mod salvage;
mod segment;
mod snapshot;
#[cfg(test)]
mod test_dir;
mod writer;

pub use error::{Error, Problem};
pub use files::LOCK_FILE_NAME;
pub use format::{RECORD_BYTES_MAX, SNAPSHOT_BYTES_MAX};
pub use reader::{Reader, Records, VerifyReport};
pub use salvage::{salvage, Dropped, SalvageReport};
pub use snapshot::{Snapshot, SnapshotInfo};
pub use writer::{Journal, Opened, Options, TailRepair, SEGMENT_BYTES_MAX_DEFAULT, SNAPSHOTS_KEPT};
