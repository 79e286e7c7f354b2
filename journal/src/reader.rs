//! The reader: lock-free, read-only access to all retained history, for the
//! replay tool and for inspection while a server is writing.
//!
//! A reader never modifies files. It treats an incomplete tail of the last
//! segment as the end of the journal (a writer may be in the middle of
//! appending it), but a bad record followed by a valid one is still an error.
//! Retention in a concurrently running writer may delete old segments while
//! a reader iterates; that surfaces as an `Error::Io` naming the file.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::files::list_dir;
use crate::format::{parse_frame, Frame, SEGMENT_HEADER_BYTES};
use crate::segment::{
    check_header, check_last_header, classify_bad, read_and_check_header, scan_frames,
};
use crate::snapshot::{read_snapshot_file, Snapshot, SnapshotInfo};
use crate::{Error, Problem};

/// A read-only view of a journal directory as of [`Reader::open`].
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    /// `(first_seq, path)` of every segment, oldest first.
    segments: Vec<(u64, PathBuf)>,
    snapshots: Vec<SnapshotInfo>,
    first_seq: u64,
    /// The last record before the end or the damage of the last segment.
    last_seq: u64,
    /// The last segment has a bad record followed by good ones.
    last_segment_damaged: bool,
}

/// What [`Reader::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Valid records found.
    pub records: u64,
    /// Oldest retained record.
    pub first_seq: u64,
    /// Newest complete record.
    pub last_seq: u64,
    /// Snapshot files that checked out.
    pub snapshots_ok: usize,
    /// An incomplete tail of the last segment (a writer would cut it; it may
    /// also be a batch being written right now).
    pub torn_tail: Option<Problem>,
    /// The first damage found, in journal order: segments oldest first, then
    /// snapshots. `None` means the journal is sound.
    pub first_bad: Option<Problem>,
}

impl Reader {
    /// Opens the journal in `dir` for reading. Takes no lock.
    pub fn open(dir: &Path) -> Result<Reader, Error> {
        if !dir.is_dir() {
            return Err(Error::NoJournal {
                dir: dir.to_path_buf(),
            });
        }
        let listing = list_dir(dir)?;
        let Some((last_first_seq, last_path)) = listing.segments.last().cloned() else {
            return Err(Error::NoJournal {
                dir: dir.to_path_buf(),
            });
        };
        let last_index = listing.segments.len() - 1;
        for (seq, path) in &listing.segments[..last_index] {
            read_and_check_header(path, *seq)?;
        }
        let buf = fs::read(&last_path).map_err(Error::io(&last_path))?;
        // Damage in the last segment does not stop the open, so that
        // `verify` can report it; iteration still runs into it and errors.
        let mut count = 0;
        check_last_header(&buf, &last_path, last_first_seq)?;
        let result = scan_frames(&buf, &last_path, true, |_| count += 1);
        let damaged = matches!(result, Err(Error::Corrupt { .. }));
        if !damaged {
            result?;
        }
        let mut snapshots = Vec::new();
        for (covered_seq, path) in listing.snapshots {
            // A snapshot deleted by retention since the listing is just gone.
            if let Ok(meta) = fs::metadata(&path) {
                snapshots.push(SnapshotInfo {
                    covered_seq,
                    size_bytes: meta.len(),
                    file: path,
                });
            }
        }
        Ok(Reader {
            dir: dir.to_path_buf(),
            first_seq: listing.segments[0].0,
            last_seq: last_first_seq + count - 1,
            last_segment_damaged: damaged,
            segments: listing.segments,
            snapshots,
        })
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The snapshot files, oldest first (not yet checked; see
    /// [`Reader::read_snapshot`]).
    pub fn snapshots(&self) -> Vec<SnapshotInfo> {
        self.snapshots.clone()
    }

    /// Reads and checks a snapshot.
    pub fn read_snapshot(&self, info: &SnapshotInfo) -> Result<Snapshot, Error> {
        read_snapshot_file(&info.file, info.covered_seq)
    }

    /// The oldest retained record's sequence number.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The newest complete record's sequence number (`first_seq() - 1` if
    /// there are none). If the last segment is damaged (a bad record followed
    /// by valid ones), the last record before the damage; iterating then
    /// ends with the error, and [`Reader::verify`] reports it.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Iterates over `(seq, payload)` for every record from `seq` through
    /// [`Reader::last_seq`]. Records before [`Reader::first_seq`] are no
    /// longer retained, which is an error; starting after the last record
    /// yields nothing. Each segment is read with one `read` into a reused
    /// buffer, so the cost per record is one allocation for its payload.
    pub fn records_from(&self, seq: u64) -> Result<Records, Error> {
        if seq < self.first_seq {
            return Err(Error::NotRetained {
                seq,
                first_seq: self.first_seq,
            });
        }
        let index = self
            .segments
            .iter()
            .rposition(|(first, _)| *first <= seq)
            .unwrap_or(0);
        Ok(Records {
            segments: self.segments.clone(),
            index,
            loaded: false,
            buf: Vec::new(),
            pos: 0,
            next_seq: self.segments[index].0,
            start_seq: seq,
            // With damage, read on into it so the caller gets the error.
            end_seq: if self.last_segment_damaged {
                u64::MAX
            } else {
                self.last_seq
            },
            done: seq > self.last_seq && !self.last_segment_damaged,
        })
    }

    /// Checks every frame of every segment and every snapshot, and reports
    /// the first damage found. Errors only on I/O failure.
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        let mut report = VerifyReport {
            segments: self.segments.len(),
            records: 0,
            first_seq: self.first_seq,
            last_seq: self.first_seq - 1,
            snapshots_ok: 0,
            torn_tail: None,
            first_bad: None,
        };
        let note = |report: &mut VerifyReport, e: &Error, file: &Path| {
            if report.first_bad.is_none() {
                report.first_bad = Some(Problem::from_error(e, file));
            }
        };
        let last_index = self.segments.len() - 1;
        let mut expected_seq = self.first_seq;
        for (i, (first_seq, path)) in self.segments.iter().enumerate() {
            let is_last = i == last_index;
            if *first_seq != expected_seq {
                let e = Error::corrupt(
                    path,
                    0,
                    format!("segment starts at record {first_seq}, expected {expected_seq} (a segment is missing or overlaps)"),
                );
                note(&mut report, &e, path);
            }
            expected_seq = *first_seq;
            let buf = fs::read(path).map_err(Error::io(path))?;
            let header = if is_last {
                check_last_header(&buf, path, *first_seq)
            } else {
                check_header(&buf, path, *first_seq)
            };
            if let Err(e) = header {
                note(&mut report, &e, path);
                continue;
            }
            match scan_frames(&buf, path, is_last, |_| {}) {
                Ok(scan) => {
                    report.records += scan.count;
                    expected_seq += scan.count;
                    if let Some((offset, what)) = scan.tail {
                        report.torn_tail = Some(Problem {
                            file: path.clone(),
                            offset: offset as u64,
                            what,
                        });
                    }
                }
                Err(e) => note(&mut report, &e, path),
            }
        }
        report.last_seq = expected_seq - 1;
        let reaches_first = |covered_seq: u64| covered_seq + 1 >= self.first_seq;
        let mut usable_snapshot = self.first_seq == 1;
        for info in &self.snapshots {
            match self.read_snapshot(info) {
                Ok(_) if info.covered_seq > report.last_seq => {
                    let e = Error::corrupt(
                        &info.file,
                        0,
                        format!(
                            "snapshot covers records up to {} but the journal ends at {}",
                            info.covered_seq, report.last_seq
                        ),
                    );
                    note(&mut report, &e, &info.file);
                }
                Ok(_) => {
                    report.snapshots_ok += 1;
                    usable_snapshot |= reaches_first(info.covered_seq);
                }
                Err(e @ Error::Io { .. }) => return Err(e),
                Err(e) => note(&mut report, &e, &info.file),
            }
        }
        if !usable_snapshot {
            let e = Error::corrupt(
                &self.segments[0].1,
                0,
                format!(
                    "the oldest segment starts at record {} and no valid snapshot covers the records before it",
                    self.first_seq
                ),
            );
            note(&mut report, &e, &self.segments[0].1);
        }
        Ok(report)
    }
}

/// Iterator over `(seq, payload)`; see [`Reader::records_from`]. After the
/// first error it yields nothing more.
#[derive(Debug)]
pub struct Records {
    segments: Vec<(u64, PathBuf)>,
    /// Index of the segment in `buf` (or to load next).
    index: usize,
    loaded: bool,
    buf: Vec<u8>,
    /// Offset of the next frame in `buf`.
    pos: usize,
    /// Sequence number of the frame at `pos`.
    next_seq: u64,
    start_seq: u64,
    /// Last sequence number to yield (the reader's `last_seq` at open).
    end_seq: u64,
    done: bool,
}

impl Records {
    fn load(&mut self) -> Result<(), Error> {
        let Some((first_seq, path)) = self.segments.get(self.index) else {
            return Err(Error::corrupt(
                self.segments.last().map_or(Path::new(""), |s| &s.1),
                0,
                format!(
                    "the journal ends before record {} (it was complete when the reader opened)",
                    self.next_seq
                ),
            ));
        };
        if *first_seq != self.next_seq {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "segment starts at record {first_seq}, but the previous one ended before record {}",
                    self.next_seq
                ),
            ));
        }
        self.buf.clear();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut self.buf))
            .map_err(Error::io(path))?;
        let is_last = self.index + 1 == self.segments.len();
        if is_last {
            check_last_header(&self.buf, path, *first_seq)?;
        } else {
            check_header(&self.buf, path, *first_seq)?;
        }
        self.pos = SEGMENT_HEADER_BYTES;
        self.loaded = true;
        Ok(())
    }

    fn step(&mut self) -> Result<Option<(u64, Vec<u8>)>, Error> {
        while self.next_seq <= self.end_seq {
            if !self.loaded {
                self.load()?;
            }
            let is_last = self.index + 1 == self.segments.len();
            match parse_frame(&self.buf, self.pos) {
                Frame::Record { payload, next } => {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.pos = next;
                    if seq >= self.start_seq {
                        return Ok(Some((seq, self.buf[payload].to_vec())));
                    }
                }
                Frame::End if !is_last => {
                    self.index += 1;
                    self.loaded = false;
                }
                Frame::End => break,
                Frame::Bad(what) => {
                    let path = &self.segments[self.index].1;
                    classify_bad(&self.buf, self.pos, what, path, is_last)?;
                    break;
                }
            }
        }
        Ok(None)
    }
}

impl Iterator for Records {
    type Item = Result<(u64, Vec<u8>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
