//! The writer: recovery on open, group commit, snapshots, rotation and
//! retention. See the crate docs for the recovery case table.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::files::{create_atomically, list_dir, lock_dir, sync_dir};
use crate::format::{
    encode_frame, encode_segment_header, segment_file_name, CORRUPT_SUFFIX, RECORD_BYTES_MAX,
    SEGMENT_HEADER_BYTES, SNAPSHOT_BYTES_MAX,
};
use crate::segment::{check_last_header, read_and_check_header, scan_frames};
use crate::snapshot::{read_snapshot_file, write_snapshot_file, Snapshot, SnapshotInfo};
use crate::{Error, Problem};

/// Default size at which the writer starts a new segment (64 MiB). Bounds
/// the work of scanning the last segment on open and the memory used to read
/// one segment.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// How many snapshots retention keeps. Two, so that a damaged newest snapshot
/// can fall back to the previous one and the records after it.
pub const SNAPSHOTS_KEPT: usize = 2;

/// Tuning for [`Journal::open_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Once the current segment reaches this size, the next batch goes to a
    /// new segment. Segments can exceed it by one batch.
    pub segment_bytes_max: u64,
    /// Keep history by age: a segment is deleted only once it, and every
    /// segment before it, was last written longer ago than this, and a
    /// retained snapshot covers it (so replay can start after it). `None`
    /// keeps only what a restart needs (two snapshot intervals).
    ///
    /// Age is the file's modification time: a segment is never written
    /// again once the next one exists, so that is its last record's time.
    pub retain_for: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            retain_for: None,
        }
    }
}

/// A torn tail cut off when opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailRepair {
    /// The segment that was cut.
    pub file: PathBuf,
    /// Its new length: the offset at which the cut was made.
    pub offset: u64,
    /// How many bytes were removed.
    pub bytes_cut: u64,
    /// What the first removed bytes were (e.g. "partial record").
    pub what: String,
}

/// The result of [`Journal::open`]: the writer, plus what the server folds to
/// rebuild its state (the snapshot, then the records after it).
#[derive(Debug)]
pub struct Opened {
    /// The writer, holding the lock.
    pub journal: Journal,
    /// The newest valid snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// Every record after the snapshot (or every record, without one), in
    /// order, as `(seq, payload)`.
    pub records_after_snapshot: Vec<(u64, Vec<u8>)>,
    /// The torn tail cut off, if there was one; the server should log it.
    pub repaired: Option<TailRepair>,
    /// Snapshots found damaged and skipped (renamed to `*.corrupt`); the
    /// server should log them.
    pub discarded_snapshots: Vec<Problem>,
    /// Damage in the older segments and snapshots kept only as a fallback
    /// (R21): not needed for this open, so not refused, but the fallback is
    /// gone; the server should warn.
    pub fallback_damage: Vec<Problem>,
}

/// The journal writer. Holds the directory's exclusive lock until dropped.
///
/// # After an I/O error
///
/// If [`Journal::append_batch`] fails, the batch is not durable and
/// [`Journal::next_seq`] is unchanged; the caller must not apply or
/// acknowledge it. The segment may hold part or all of the failed batch, so
/// before returning the error the failing call cuts the segment back to its
/// last durable length and fsyncs that cut. The error is then a plain
/// [`Error::Io`], and nothing of the batch is on disk: a crash at any later
/// point cannot bring it back, so the caller may tell its client the batch
/// was not carried out.
///
/// If the cut fails too, the error is [`Error::UncutBatch`]
/// ([`Error::batch_may_remain`], [`Journal::has_uncut_tail`]): the batch may
/// still be on disk. The next `append_batch` or `write_snapshot` first retries
/// the cut, and writes nothing unless it succeeds, so retrying is always safe
/// and a failed batch is never followed by a later one in the file (never
/// duplicated). But if the process dies before a cut succeeds, the next open
/// cuts a partial copy as a torn tail and replays a complete one: the outcome
/// of such a batch is unknown, and the caller must say so rather than claim
/// it was not carried out. It is never the other way round, a reported
/// success that is lost.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    options: Options,
    /// Held for its lock; never read.
    _lock: File,
    /// `(first_seq, path)` of every retained segment; the last is current.
    segments: Vec<(u64, PathBuf)>,
    /// The current segment, positioned at `durable_len_bytes` when healthy.
    file: File,
    /// Length of the current segment known to be on disk.
    durable_len_bytes: u64,
    /// Sequence number the next appended record gets.
    next_seq: u64,
    /// Snapshots not known to be bad, oldest first.
    snapshots: Vec<SnapshotInfo>,
    /// A write or fsync failed: truncate to `durable_len_bytes` first.
    needs_truncate: bool,
    /// A directory fsync after creating the current segment failed: redo it
    /// before any record goes into that segment.
    dir_sync_pending: bool,
    /// Reused batch buffer, so a batch costs one allocation at most.
    buf: Vec<u8>,
    /// Test hook: fail this many upcoming writes (after writing half).
    #[cfg(any(test, feature = "fault-injection"))]
    fail_writes: u32,
    /// Test hook: fail this many upcoming fsyncs of batches.
    #[cfg(any(test, feature = "fault-injection"))]
    fail_syncs: u32,
    /// Test hook: fail this many upcoming cuts of a failed batch.
    #[cfg(any(test, feature = "fault-injection"))]
    fail_cuts: u32,
}

impl Journal {
    /// Opens (creating if missing) the journal in `dir` for writing, with
    /// default options. Recovers from a crash as described in the crate docs.
    pub fn open(dir: &Path) -> Result<Opened, Error> {
        Journal::open_with(dir, Options::default())
    }

    /// Opens the journal in `dir` for writing with the given options.
    pub fn open_with(dir: &Path, options: Options) -> Result<Opened, Error> {
        assert!(options.segment_bytes_max > 0);
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let lock = lock_dir(dir)?;
        let listing = list_dir(dir)?;

        // Temp files are interrupted creates; the final names were never
        // made, so nothing refers to them. Deleted once the checks passed.
        let remove_temps = || -> Result<(), Error> {
            for tmp in &listing.temps {
                fs::remove_file(tmp).map_err(Error::io(tmp))?;
            }
            Ok(())
        };
        let segments = listing.segments.clone();
        if segments.is_empty() {
            if let Some((_, snap)) = listing.snapshots.last() {
                return Err(Error::corrupt(
                    snap,
                    0,
                    "snapshot files exist but no segment files: the records after the snapshot are missing",
                ));
            }
            remove_temps()?;
            let mut journal = Journal::new(dir, options, lock, segments, Vec::new(), 1)?;
            journal.rotate()?;
            return Ok(Opened {
                journal,
                snapshot: None,
                records_after_snapshot: Vec::new(),
                repaired: None,
                discarded_snapshots: Vec::new(),
                fallback_damage: Vec::new(),
            });
        }

        // Headers of all but the last segment. Their records are only read
        // if they come after the snapshot, but a damaged or foreign header
        // is refused either way.
        let last_index = segments.len() - 1;
        for (seq, path) in &segments[..last_index] {
            read_and_check_header(path, *seq)?;
        }

        // The last segment is read whole: it is where a torn tail can be.
        let (last_first_seq, last_path) = segments[last_index].clone();
        let last_buf = fs::read(&last_path).map_err(Error::io(&last_path))?;
        check_last_header(&last_buf, &last_path, last_first_seq)?;
        let last_scan = scan_frames(&last_buf, &last_path, true, |_| {})?;
        let repaired = last_scan.tail.as_ref().map(|(offset, what)| TailRepair {
            file: last_path.clone(),
            offset: *offset as u64,
            bytes_cut: (last_buf.len() - offset) as u64,
            what: what.clone(),
        });
        let last_count = last_scan.count;
        let last_seq = last_first_seq + last_count - 1;
        let first_seq = segments[0].0;

        // The newest snapshot that checks out. Damaged ones are skipped
        // (falling back to an older one plus its records, which retention
        // keeps), but one that claims records we do not have is refused.
        let mut snapshot = None;
        let mut discarded = Vec::new();
        for (covered_seq, path) in listing.snapshots.iter().rev() {
            match read_snapshot_file(path, *covered_seq) {
                Ok(s) => {
                    snapshot = Some(s);
                    break;
                }
                Err(e @ Error::Corrupt { .. }) => discarded.push(Problem::from_error(&e, path)),
                Err(e) => return Err(e),
            }
        }
        let replay_from_seq = match &snapshot {
            Some(s) if s.covered_seq > last_seq => {
                return Err(Error::corrupt(
                    &segments[last_index].1,
                    0,
                    format!(
                        "snapshot covers records up to {} but the journal ends at record {last_seq}: records are missing",
                        s.covered_seq
                    ),
                ))
            }
            Some(s) if s.covered_seq + 1 < first_seq => {
                return Err(Error::corrupt(
                    &segments[0].1,
                    0,
                    format!(
                        "the newest usable snapshot covers records up to {}, but the oldest retained record is {first_seq}: records {}..{} are missing",
                        s.covered_seq,
                        s.covered_seq + 1,
                        first_seq - 1
                    ),
                ))
            }
            Some(s) => s.covered_seq + 1,
            None if first_seq != 1 => {
                return Err(Error::corrupt(
                    &segments[0].1,
                    0,
                    format!(
                        "the oldest segment starts at record {first_seq} and no usable snapshot covers the records before it"
                    ),
                ))
            }
            None => 1,
        };

        // Read every segment holding records from `replay_from_seq` on. The
        // non-last ones must be complete and end exactly where the next
        // begins; a gap or overlap means lost or foreign data.
        let start_index = segments
            .iter()
            .rposition(|(seq, _)| *seq <= replay_from_seq)
            .unwrap_or(0);
        let mut records = Vec::new();
        for i in start_index..last_index {
            let (seg_first_seq, path) = &segments[i];
            let buf = fs::read(path).map_err(Error::io(path))?;
            let mut seq = *seg_first_seq;
            let scan = scan_frames(&buf, path, false, |payload| {
                if seq >= replay_from_seq {
                    records.push((seq, payload.to_vec()));
                }
                seq += 1;
            })?;
            let next_first_seq = segments[i + 1].0;
            if seg_first_seq + scan.count != next_first_seq {
                return Err(Error::corrupt(
                    path,
                    scan.valid_end as u64,
                    format!(
                        "segment ends after record {}, but the next segment {} starts at record {next_first_seq}",
                        seg_first_seq + scan.count - 1,
                        segments[i + 1].1.display()
                    ),
                ));
            }
        }
        // The older segments and snapshots are kept only as a fallback should the
        // newest snapshot go bad (R15). This open does not need them, but damage in
        // them means that fallback is gone: reported, not refused (R21).
        // History kept for its age (`Options::retain_for`) before the older
        // snapshot is not part of that fallback: it is read by the replay tool,
        // not here, so that a start does not read months of segments.
        let in_use = snapshot.as_ref().map(|s| s.covered_seq);
        let fallback_snapshot = listing
            .snapshots
            .iter()
            .rev()
            .filter(|(seq, path)| Some(*seq) < in_use && !discarded.iter().any(|p| &p.file == path))
            .map(|(seq, _)| *seq)
            .next();
        let fallback_from_seq = fallback_snapshot.map_or(1, |s| s + 1);
        let mut fallback_damage = Vec::new();
        for (i, (seg_first_seq, path)) in segments[..start_index].iter().enumerate() {
            if segments[i + 1].0 - 1 < fallback_from_seq {
                continue;
            }
            let buf = fs::read(path).map_err(Error::io(path))?;
            match scan_frames(&buf, path, false, |_| {}) {
                Ok(scan) if seg_first_seq + scan.count != segments[i + 1].0 => fallback_damage
                    .push(Problem {
                        file: path.clone(),
                        offset: scan.valid_end as u64,
                        what: format!(
                            "segment ends after record {}, but the next one starts at record {}",
                            seg_first_seq + scan.count - 1,
                            segments[i + 1].0
                        ),
                    }),
                Ok(_) => {}
                Err(e @ Error::Corrupt { .. }) => {
                    fallback_damage.push(Problem::from_error(&e, path))
                }
                Err(e) => return Err(e),
            }
        }
        for (covered_seq, path) in &listing.snapshots {
            if Some(*covered_seq) != fallback_snapshot || discarded.iter().any(|p| &p.file == path)
            {
                continue;
            }
            match read_snapshot_file(path, *covered_seq) {
                Ok(_) => {}
                Err(e @ Error::Corrupt { .. }) => {
                    fallback_damage.push(Problem::from_error(&e, path))
                }
                Err(e) => return Err(e),
            }
        }

        let mut seq = last_first_seq;
        // Re-walking the checked prefix is cheap and avoids keeping ranges
        // around.
        scan_frames(
            &last_buf[..last_scan.valid_end],
            &last_path,
            false,
            |payload| {
                if seq >= replay_from_seq {
                    records.push((seq, payload.to_vec()));
                }
                seq += 1;
            },
        )?;
        debug_assert!(records
            .first()
            .map_or(true, |(seq, _)| *seq == replay_from_seq));
        debug_assert!(records.windows(2).all(|w| w[0].0 + 1 == w[1].0));
        debug_assert!(records.last().map_or(true, |(seq, _)| *seq == last_seq));
        drop(last_buf);

        // All checks passed; only now modify anything.
        remove_temps()?;
        let mut snapshots = Vec::new();
        for (covered_seq, path) in &listing.snapshots {
            if discarded.iter().any(|p| &p.file == path) {
                let mut bad = path.as_os_str().to_owned();
                bad.push(CORRUPT_SUFFIX);
                fs::rename(path, &bad).map_err(Error::io(path))?;
            } else {
                let size_bytes = fs::metadata(path).map_err(Error::io(path))?.len();
                snapshots.push(SnapshotInfo {
                    covered_seq: *covered_seq,
                    size_bytes,
                    file: path.clone(),
                });
            }
        }
        let mut journal = Journal::new(dir, options, lock, segments, snapshots, last_seq + 1)?;
        journal.segments.pop();
        journal.open_segment(last_first_seq, last_path, last_scan.valid_end as u64)?;
        if last_scan.tail.is_some() {
            journal.needs_truncate = true;
            journal.truncate_to_durable()?;
        }
        sync_dir(dir)?;
        Ok(Opened {
            journal,
            snapshot,
            records_after_snapshot: records,
            repaired,
            discarded_snapshots: discarded,
            fallback_damage,
        })
    }

    fn new(
        dir: &Path,
        options: Options,
        lock: File,
        segments: Vec<(u64, PathBuf)>,
        snapshots: Vec<SnapshotInfo>,
        next_seq: u64,
    ) -> Result<Journal, Error> {
        debug_assert!(next_seq >= 1);
        // Placeholder until open_segment/rotate sets the real one; the lock
        // file is a harmless handle to duplicate.
        let file = lock.try_clone().map_err(Error::io(dir))?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            segments,
            file,
            durable_len_bytes: 0,
            next_seq,
            snapshots,
            needs_truncate: false,
            dir_sync_pending: false,
            buf: Vec::new(),
            #[cfg(any(test, feature = "fault-injection"))]
            fail_writes: 0,
            #[cfg(any(test, feature = "fault-injection"))]
            fail_syncs: 0,
            #[cfg(any(test, feature = "fault-injection"))]
            fail_cuts: 0,
        })
    }

    /// Makes an existing segment current, appending at `len_bytes`.
    fn open_segment(&mut self, first_seq: u64, path: PathBuf, len_bytes: u64) -> Result<(), Error> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        file.seek(SeekFrom::Start(len_bytes))
            .map_err(Error::io(&path))?;
        self.file = file;
        self.durable_len_bytes = len_bytes;
        self.segments.push((first_seq, path));
        Ok(())
    }

    /// Starts a new segment whose first record will be `next_seq`.
    fn rotate(&mut self) -> Result<(), Error> {
        debug_assert!(!self.needs_truncate, "the old segment must be clean");
        debug_assert!(self
            .segments
            .last()
            .map_or(true, |(first, _)| *first < self.next_seq));
        let path = self.dir.join(segment_file_name(self.next_seq));
        let header = encode_segment_header(self.next_seq);
        let (file, dir_synced) = create_atomically(&self.dir, &path, &[&header])?;
        // The new file exists under its final name, so it is current even if
        // the directory fsync failed: appending to the old segment now would
        // overlap it. The fsync is retried before the first record goes in.
        self.file = file;
        self.durable_len_bytes = SEGMENT_HEADER_BYTES as u64;
        self.segments.push((self.next_seq, path));
        self.dir_sync_pending = dir_synced.is_err();
        dir_synced
    }

    /// Undoes a failed write: cuts the segment back to its durable length.
    fn truncate_to_durable(&mut self) -> Result<(), Error> {
        let path = self.segments.last().expect("a current segment").1.clone();
        self.cut_to_durable().map_err(Error::io(&path))
    }

    /// Cuts the current segment back to `durable_len_bytes`, fsyncs the cut and
    /// positions the file there; clears `needs_truncate` only if all of that
    /// succeeded.
    fn cut_to_durable(&mut self) -> std::io::Result<()> {
        debug_assert!(self.needs_truncate);
        #[cfg(any(test, feature = "fault-injection"))]
        if self.fail_cuts > 0 {
            self.fail_cuts -= 1;
            return Err(std::io::Error::other("injected truncate failure"));
        }
        let len = self.durable_len_bytes;
        self.file.set_len(len)?;
        self.file.seek(SeekFrom::Start(len))?;
        self.file.sync_all()?;
        self.needs_truncate = false;
        Ok(())
    }

    /// A batch's write or fsync failed with `source`: cut off whatever of it
    /// reached the file, at once, and say whether that worked.
    ///
    /// Why at once, and not at the next write as the journal used to:
    /// until the next write, a crash would leave the failed batch's bytes in
    /// the segment, and a complete copy is indistinguishable from acknowledged
    /// records, so the next open would replay a batch whose commands the
    /// server had refused ("a refusal changes nothing" would be false).
    ///
    /// Why truncating is the way to learn what the file holds after a failed
    /// fdatasync ("fsyncgate"): Linux may mark the pages whose writeback
    /// failed clean again (or drop them), and reports the error once per open
    /// file, so a second fdatasync can succeed although the bytes never
    /// reached the disk. The writer therefore never retries the fsync of a
    /// failed batch and never counts it as durable. Instead it drops the
    /// pages in doubt: after `set_len(durable_len_bytes)` the file has no
    /// bytes past the durable length whatever became of those pages, and
    /// what is left was made durable by earlier fsyncs that succeeded. The
    /// fsync after the cut makes the new length itself durable, and, as the
    /// old error has been reported, only a new failure makes it fail. Only
    /// when all of that succeeded is the batch known to be gone.
    fn undo_failed_batch(&mut self, path: PathBuf, source: std::io::Error) -> Error {
        match self.cut_to_durable() {
            Ok(()) => Error::Io { path, source },
            // `needs_truncate` stays set: the next write retries the cut first.
            Err(cut_error) => Error::UncutBatch {
                path,
                source,
                cut_error,
            },
        }
    }

    /// Brings the writer to a clean state before writing anything.
    fn prepare(&mut self) -> Result<(), Error> {
        if self.needs_truncate {
            self.truncate_to_durable()?;
        }
        if self.dir_sync_pending {
            sync_dir(&self.dir)?;
            self.dir_sync_pending = false;
        }
        Ok(())
    }

    /// Appends `records` as one batch made durable with one fsync, and
    /// returns the sequence number of the last record in the journal. The
    /// first record ever is 1. An empty batch writes nothing.
    ///
    /// Nothing is written if any record is empty or larger than
    /// [`RECORD_BYTES_MAX`](crate::RECORD_BYTES_MAX).
    pub fn append_batch<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<u64, Error> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut count = 0u64;
        for (index, record) in records.into_iter().enumerate() {
            if record.is_empty() {
                self.buf = buf;
                return Err(Error::EmptyRecord { index });
            }
            if record.len() > RECORD_BYTES_MAX {
                self.buf = buf;
                return Err(Error::TooLarge {
                    len_bytes: record.len(),
                    max_bytes: RECORD_BYTES_MAX,
                });
            }
            encode_frame(&mut buf, record);
            count += 1;
        }
        let result = if count == 0 {
            Ok(self.next_seq - 1)
        } else {
            self.write_batch(&buf, count)
        };
        // Keep the buffer's capacity for the next batch, unless a huge batch
        // made it large enough to be worth returning.
        if buf.capacity() <= 4 * RECORD_BYTES_MAX {
            self.buf = buf;
        }
        result
    }

    fn write_batch(&mut self, bytes: &[u8], count: u64) -> Result<u64, Error> {
        self.prepare()?;
        if self.durable_len_bytes > SEGMENT_HEADER_BYTES as u64
            && self.durable_len_bytes >= self.options.segment_bytes_max
        {
            self.rotate()?;
        }
        let path = self.segments.last().expect("a current segment").1.clone();
        // From here on a failure may leave bytes past the durable length.
        self.needs_truncate = true;
        // fdatasync is enough: it also flushes the file size, which is the
        // only metadata needed to read the appended bytes back.
        if let Err(source) = self.write_bytes(bytes).and_then(|()| self.sync_data()) {
            return Err(self.undo_failed_batch(path, source));
        }
        self.needs_truncate = false;
        self.durable_len_bytes += bytes.len() as u64;
        self.next_seq += count;
        debug_assert_eq!(
            self.file.stream_position().ok(),
            Some(self.durable_len_bytes)
        );
        Ok(self.next_seq - 1)
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        #[cfg(any(test, feature = "fault-injection"))]
        if self.fail_writes > 0 {
            self.fail_writes -= 1;
            // Like a full disk: part of the batch lands, then an error.
            self.file.write_all(&bytes[..bytes.len() / 2])?;
            return Err(std::io::Error::other("injected write failure"));
        }
        self.file.write_all(bytes)
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        #[cfg(any(test, feature = "fault-injection"))]
        if self.fail_syncs > 0 {
            self.fail_syncs -= 1;
            return Err(std::io::Error::other("injected fsync failure"));
        }
        self.file.sync_data()
    }

    /// Test hook (feature `fault-injection`): the next `writes` batch writes
    /// fail after writing half the batch, and then the next `syncs` batch
    /// fsyncs fail, simulating a full or failing disk.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject_failures(&mut self, writes: u32, syncs: u32) {
        self.fail_writes = writes;
        self.fail_syncs = syncs;
    }

    /// Test hook (feature `fault-injection`): the next `cuts` cuts of a failed
    /// batch fail, whether made at once by the failing call or retried before
    /// the next write, simulating a disk that cannot even truncate.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject_cut_failures(&mut self, cuts: u32) {
        self.fail_cuts = cuts;
    }

    /// Whether a failed batch could not be cut off (see "After an I/O error"):
    /// until the next write or snapshot cuts it, it may be on disk and would
    /// be replayed if the process stopped.
    pub fn has_uncut_tail(&self) -> bool {
        self.needs_truncate
    }

    /// The sequence number the next appended record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The retained snapshots, oldest first.
    pub fn snapshots(&self) -> &[SnapshotInfo] {
        &self.snapshots
    }

    /// Stores `data`, the state after folding every record with
    /// `seq <= covered_seq`, then starts a new segment and applies retention:
    /// the newest [`SNAPSHOTS_KEPT`] snapshots are kept, with every segment
    /// holding records after the older of them; older files are deleted.
    ///
    /// `covered_seq` must be at most `next_seq() - 1` and at least the newest
    /// snapshot's. A crash at any point leaves a journal that opens to the
    /// same state: the snapshot is written to a temp file and renamed only
    /// once complete, and nothing is deleted until it is durable.
    pub fn write_snapshot(&mut self, covered_seq: u64, data: &[u8]) -> Result<(), Error> {
        let last_seq = self.next_seq - 1;
        let newest = self.snapshots.last().map(|s| s.covered_seq);
        if covered_seq > last_seq || newest.is_some_and(|n| covered_seq < n) {
            return Err(Error::BadSnapshotSeq {
                covered_seq,
                last_seq,
                newest_snapshot_seq: newest,
            });
        }
        if data.len() > SNAPSHOT_BYTES_MAX {
            return Err(Error::TooLarge {
                len_bytes: data.len(),
                max_bytes: SNAPSHOT_BYTES_MAX,
            });
        }
        self.prepare()?;
        let file = write_snapshot_file(&self.dir, covered_seq, data)?;
        if newest == Some(covered_seq) {
            self.snapshots.pop();
        }
        self.snapshots.push(SnapshotInfo {
            covered_seq,
            size_bytes: (crate::format::SNAPSHOT_HEADER_BYTES + data.len()) as u64,
            file,
        });
        let current_first_seq = self.segments.last().expect("a current segment").0;
        if current_first_seq < self.next_seq {
            self.rotate()?;
        }
        self.apply_retention()
    }

    /// Deletes what retention no longer needs. Segments go oldest first, so
    /// a crash part-way leaves a contiguous run; snapshots go last, so a
    /// crash never leaves a snapshot without the segments after it.
    ///
    /// The horizon (the newest record that may be deleted) is the older of
    /// the two newest snapshots, so a restart can always fall back (R15).
    /// With [`Options::retain_for`] it is at most the newest snapshot whose
    /// records are all in segments older than the retention period, so the
    /// history of that period stays readable, and so does every snapshot
    /// after the horizon: those are the points from which later deletions
    /// can start (each is where a segment begins).
    fn apply_retention(&mut self) -> Result<(), Error> {
        if self.snapshots.len() < SNAPSHOTS_KEPT {
            return Ok(());
        }
        let restart_horizon = self.snapshots[self.snapshots.len() - SNAPSHOTS_KEPT].covered_seq;
        let horizon_seq = match self.options.retain_for {
            None => restart_horizon,
            Some(age) => self.age_horizon(age).min(restart_horizon),
        };
        let mut deleted = false;
        // A segment can go when its last record (the next segment's first
        // minus one) is covered by the horizon snapshot. Never the last.
        while self.segments.len() > 1 && self.segments[1].0 - 1 <= horizon_seq {
            let (_, path) = self.segments.remove(0);
            fs::remove_file(&path).map_err(Error::io(&path))?;
            deleted = true;
        }
        let first_kept = self
            .snapshots
            .iter()
            .position(|s| s.covered_seq >= horizon_seq)
            .unwrap_or(self.snapshots.len());
        for info in self.snapshots.drain(..first_kept) {
            fs::remove_file(&info.file).map_err(Error::io(&info.file))?;
            deleted = true;
        }
        if deleted {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The newest snapshot's covered seq such that every segment holding
    /// only records up to it was last modified before `now - age` (0 if
    /// none). A file whose age cannot be read counts as young: when in
    /// doubt, keep.
    fn age_horizon(&self, age: Duration) -> u64 {
        let Some(cutoff) = SystemTime::now().checked_sub(age) else {
            return 0;
        };
        let old = |path: &Path| {
            fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff)
        };
        let mut horizon = 0;
        let mut seg = 0; // segments[..seg] are known to be old
        for snap in &self.snapshots {
            while seg + 1 < self.segments.len() && self.segments[seg + 1].0 - 1 <= snap.covered_seq
            {
                if !old(&self.segments[seg].1) {
                    return horizon;
                }
                seg += 1;
            }
            horizon = snap.covered_seq;
        }
        horizon
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    fn all_records(dir: &Path) -> Vec<(u64, Vec<u8>)> {
        let opened = Journal::open(dir).unwrap();
        assert!(opened.snapshot.is_none());
        opened.records_after_snapshot
    }

    /// Retention by age: ten "restarts" (a snapshot each) delete nothing while the files
    /// are young; once the first segments are older than the period, exactly those go, with
    /// a snapshot kept where the remaining history starts; the reader still reads it all.
    #[test]
    fn retention_by_age_keeps_history_across_snapshots() {
        let t = TestDir::new("retain-age");
        let dir = t.path();
        let day = Duration::from_secs(86_400);
        let opts = Options {
            retain_for: Some(90 * day),
            ..Options::default()
        };
        for round in 0..10u8 {
            let mut j = Journal::open_with(dir, opts.clone()).unwrap().journal;
            let last = j.append_batch([&[round][..], &[round, 1][..]]).unwrap();
            j.write_snapshot(last, &[round]).unwrap();
        }
        let listing = list_dir(dir).unwrap();
        assert_eq!(listing.segments.len(), 11, "{listing:?}");
        assert_eq!(listing.segments[0].0, 1);
        assert_eq!(listing.snapshots.len(), 10);
        let reader = crate::Reader::open(dir).unwrap();
        assert_eq!(reader.records_from(1).unwrap().count(), 20);

        // Age the first three segments (records 1..=6) past the period.
        let long_ago = SystemTime::now() - 100 * day;
        for (_, path) in &listing.segments[..3] {
            File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let mut j = Journal::open_with(dir, opts.clone()).unwrap().journal;
        let last = j.append_batch([&b"x"[..]]).unwrap();
        j.write_snapshot(last, b"s").unwrap();
        drop(j);
        let listing = list_dir(dir).unwrap();
        assert_eq!(listing.segments[0].0, 7, "{listing:?}");
        assert_eq!(listing.snapshots[0].0, 6, "{listing:?}");
        let reader = crate::Reader::open(dir).unwrap();
        assert_eq!(reader.first_seq(), 7);
        assert_eq!(reader.records_from(7).unwrap().count(), 15);
        // The writer still opens it to the newest state.
        let opened = Journal::open_with(dir, opts).unwrap();
        assert_eq!(opened.snapshot.unwrap().covered_seq, 21);
    }

    /// Without `retain_for`, the old rule: two snapshots and the records after the older.
    #[test]
    fn retention_without_age_keeps_two_snapshots() {
        let t = TestDir::new("retain-count");
        let dir = t.path();
        for round in 0..5u8 {
            let mut j = Journal::open(dir).unwrap().journal;
            let last = j.append_batch([&[round][..]]).unwrap();
            j.write_snapshot(last, &[round]).unwrap();
        }
        let listing = list_dir(dir).unwrap();
        let snaps: Vec<u64> = listing.snapshots.iter().map(|s| s.0).collect();
        assert_eq!(snaps, vec![4, 5]);
        assert_eq!(listing.segments[0].0, 5);
    }

    #[test]
    fn failed_write_is_truncated_and_retry_succeeds() {
        let t = TestDir::new("failed-write");
        {
            let mut j = Journal::open(t.path()).unwrap().journal;
            assert_eq!(j.append_batch([&b"one"[..]]).unwrap(), 1);
            j.inject_failures(1, 0);
            let err = j.append_batch([&b"two"[..], &b"three"[..]]).unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{err}");
            assert_eq!(j.next_seq(), 2, "a failed batch does not advance seq");
            // The retry truncates the half-written batch first.
            assert_eq!(j.append_batch([&b"two"[..], &b"three"[..]]).unwrap(), 3);
        }
        let got = all_records(t.path());
        let want: Vec<(u64, Vec<u8>)> = vec![
            (1, b"one".to_vec()),
            (2, b"two".to_vec()),
            (3, b"three".to_vec()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn failed_fsync_is_truncated_and_retry_succeeds() {
        let t = TestDir::new("failed-sync");
        {
            let mut j = Journal::open(t.path()).unwrap().journal;
            j.inject_failures(0, 1);
            assert!(j.append_batch([&b"lost"[..]]).is_err());
            assert_eq!(j.next_seq(), 1);
            assert_eq!(j.append_batch([&b"kept"[..]]).unwrap(), 1);
        }
        assert_eq!(all_records(t.path()), vec![(1, b"kept".to_vec())]);
    }

    /// The length of the current segment on disk, and the writer's durable length.
    fn lengths(j: &Journal) -> (u64, u64) {
        let path = &j.segments.last().unwrap().1;
        (fs::metadata(path).unwrap().len(), j.durable_len_bytes)
    }

    /// A failed write is cut off by the failing call itself: nothing of it is
    /// left past the durable length, so a crash right after (here: a drop
    /// without any further write) has nothing to cut or replay.
    #[test]
    fn failed_batch_is_cut_at_once_so_a_crash_leaves_nothing_of_it() {
        let t = TestDir::new("failed-no-repair");
        {
            let mut j = Journal::open(t.path()).unwrap().journal;
            j.append_batch([&b"one"[..]]).unwrap();
            j.inject_failures(1, 0);
            let err = j.append_batch([&b"two-two-two"[..]]).unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{err}");
            assert!(!err.batch_may_remain() && !j.has_uncut_tail(), "{err}");
            let (on_disk, durable) = lengths(&j);
            assert_eq!(on_disk, durable, "the half batch was left on disk");
            // Dropped without a retry: nothing of the failed batch is left.
        }
        let opened = Journal::open(t.path()).unwrap();
        assert_eq!(opened.records_after_snapshot, vec![(1, b"one".to_vec())]);
        assert_eq!(opened.repaired, None, "nothing was left to repair");
    }

    /// A failed fsync leaves the whole batch in the file (the write itself
    /// succeeded), complete and checksummed: before the cut at once, a crash
    /// then replayed a batch the caller had been told failed. Now the failing
    /// call cuts it, so the next open finds only the durable records.
    #[test]
    fn failed_fsync_batch_is_not_replayed_after_a_crash() {
        let t = TestDir::new("failed-sync-crash");
        {
            let mut j = Journal::open(t.path()).unwrap().journal;
            j.append_batch([&b"one"[..]]).unwrap();
            j.inject_failures(0, 1);
            let err = j.append_batch([&b"refused"[..], &b"too"[..]]).unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{err}");
            assert!(!err.batch_may_remain() && !j.has_uncut_tail(), "{err}");
            assert_eq!(j.next_seq(), 2);
            let (on_disk, durable) = lengths(&j);
            assert_eq!(on_disk, durable, "the unsynced batch was left on disk");
        }
        let opened = Journal::open(t.path()).unwrap();
        assert_eq!(opened.records_after_snapshot, vec![(1, b"one".to_vec())]);
        assert_eq!(opened.repaired, None);
        assert_eq!(opened.journal.next_seq(), 2);
    }

    /// When the cut of a failed batch fails too, the error says the batch may
    /// remain (it is all still there: a reader sees it), and the next write
    /// cuts it before writing, so it never ends up in the journal next to
    /// what follows. While the cut keeps failing, nothing more is written, and
    /// such a write's own batch is plainly not on disk.
    #[test]
    fn failed_cut_is_reported_and_the_next_write_still_cuts_it() {
        let t = TestDir::new("failed-cut");
        {
            let mut j = Journal::open(t.path()).unwrap().journal;
            j.append_batch([&b"one"[..]]).unwrap();
            j.inject_failures(0, 1);
            j.inject_cut_failures(2);
            let err = j.append_batch([&b"maybe"[..]]).unwrap_err();
            assert!(matches!(err, Error::UncutBatch { .. }), "{err}");
            assert!(err.batch_may_remain() && j.has_uncut_tail());
            assert!(err.to_string().contains("may stay in the journal"), "{err}");
            let (on_disk, durable) = lengths(&j);
            assert!(
                on_disk > durable,
                "the injected fsync failure wrote the batch"
            );
            // What a crash now would replay: the failed batch, complete.
            let reader = crate::Reader::open(t.path()).unwrap();
            let seen: Vec<_> = reader
                .records_from(1)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(seen, vec![(1, b"one".to_vec()), (2, b"maybe".to_vec())]);

            // The retried cut fails: this batch is refused unwritten.
            let err = j.append_batch([&b"not-written"[..]]).unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{err}");
            assert!(!err.batch_may_remain() && j.has_uncut_tail(), "{err}");
            assert_eq!(
                lengths(&j).0,
                on_disk,
                "a batch was written after an uncut one"
            );

            // The cut works again: the tail goes, then the batch is written.
            assert_eq!(j.append_batch([&b"two"[..]]).unwrap(), 2);
            assert!(!j.has_uncut_tail());
        }
        let opened = Journal::open(t.path()).unwrap();
        assert_eq!(
            opened.records_after_snapshot,
            vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
        );
        assert_eq!(opened.repaired, None);
    }

    /// The window the error warns of: a failed batch whose cut failed, and a
    /// crash before any later write, is replayed whole by the next open (its
    /// outcome is unknown, which is why the error says so); a snapshot, like a
    /// write, cuts it first.
    #[test]
    fn uncut_failed_batch_is_replayed_after_a_crash_unless_a_snapshot_cuts_it() {
        let t = TestDir::new("uncut-crash");
        {
            let mut j = Journal::open(t.path()).unwrap().journal;
            j.append_batch([&b"one"[..]]).unwrap();
            j.inject_failures(0, 1);
            j.inject_cut_failures(1);
            assert!(j
                .append_batch([&b"maybe"[..]])
                .unwrap_err()
                .batch_may_remain());
        }
        let opened = Journal::open(t.path()).unwrap();
        assert_eq!(
            opened.records_after_snapshot,
            vec![(1, b"one".to_vec()), (2, b"maybe".to_vec())]
        );
        let mut j = opened.journal;
        j.inject_failures(0, 1);
        j.inject_cut_failures(1);
        assert!(j
            .append_batch([&b"gone"[..]])
            .unwrap_err()
            .batch_may_remain());
        j.write_snapshot(2, b"state").unwrap();
        assert!(!j.has_uncut_tail());
        drop(j);
        let opened = Journal::open(t.path()).unwrap();
        assert_eq!(opened.snapshot.unwrap().covered_seq, 2);
        assert!(opened.records_after_snapshot.is_empty());
        assert_eq!(opened.journal.next_seq(), 3);
    }

    #[test]
    fn invalid_records_write_nothing() {
        let t = TestDir::new("invalid-records");
        let mut j = Journal::open(t.path()).unwrap().journal;
        let big = vec![1u8; RECORD_BYTES_MAX + 1];
        let err = j.append_batch([&b"ok"[..], &big[..]]).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        let err = j.append_batch([&b"ok"[..], &b""[..]]).unwrap_err();
        assert!(matches!(err, Error::EmptyRecord { index: 1 }), "{err}");
        assert_eq!(j.append_batch([]).unwrap(), 0);
        assert_eq!(j.next_seq(), 1);
        let max = vec![2u8; RECORD_BYTES_MAX];
        assert_eq!(j.append_batch([&max[..]]).unwrap(), 1);
        drop(j);
        assert_eq!(all_records(t.path())[0].1.len(), RECORD_BYTES_MAX);
    }

    #[test]
    fn bad_snapshot_seq_is_refused() {
        let t = TestDir::new("bad-snapshot-seq");
        let mut j = Journal::open(t.path()).unwrap().journal;
        j.append_batch([&b"a"[..], &b"b"[..]]).unwrap();
        assert!(matches!(
            j.write_snapshot(3, b"s"),
            Err(Error::BadSnapshotSeq { .. })
        ));
        j.write_snapshot(2, b"s").unwrap();
        assert!(matches!(
            j.write_snapshot(1, b"s"),
            Err(Error::BadSnapshotSeq { .. })
        ));
    }
}
