//! The journal's error type. Every variant names the file or directory it is
//! about, because the person reading the message is an operator deciding
//! what to do with a journal directory at 3 a.m.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong opening, writing or reading a journal.
#[derive(Debug)]
pub enum Error {
    /// Another process (or another `Journal` in this one) holds the lock.
    Locked {
        /// The journal directory.
        dir: PathBuf,
        /// The holder's pid, if it had written it yet.
        pid: Option<u32>,
    },
    /// A file carries a format version this code does not know.
    UnknownVersion {
        /// The file.
        file: PathBuf,
        /// The version found.
        version: u16,
    },
    /// A file carries header flags this code does not know.
    UnknownFlags {
        /// The file.
        file: PathBuf,
        /// The flags found.
        flags: u16,
    },
    /// Damage that cannot be a torn tail: refusing is the only safe choice,
    /// because going on would silently drop acknowledged records.
    Corrupt {
        /// The damaged file (or the directory, for problems between files).
        file: PathBuf,
        /// Byte offset of the damage in the file.
        offset: u64,
        /// What was found.
        what: String,
    },
    /// An I/O error from the operating system.
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A batch's write or fsync failed (`source`), and cutting the segment back to its
    /// durable length failed too (`cut_error`). Unlike a plain [`Error::Io`] from
    /// `append_batch`, after which nothing of the batch is in the journal, the failed
    /// batch (whole or in part) may still be in the segment: the next `append_batch` or
    /// `write_snapshot` cuts it off before writing anything, but if the process dies before
    /// that succeeds, a complete copy is replayed by the next open. Its outcome is unknown
    /// (see [`Error::batch_may_remain`]).
    UncutBatch {
        /// The segment.
        path: PathBuf,
        /// Why the batch failed.
        source: io::Error,
        /// Why it could not be cut off.
        cut_error: io::Error,
    },
    /// A record or snapshot larger than the limit.
    TooLarge {
        /// Its size.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// An empty record (the format reserves length 0; see `format`).
    EmptyRecord {
        /// Position of the record within the batch.
        index: usize,
    },
    /// The directory does not exist or holds no journal.
    NoJournal {
        /// The directory.
        dir: PathBuf,
    },
    /// Records before `first_seq` were deleted by retention.
    NotRetained {
        /// The sequence number asked for.
        seq: u64,
        /// The oldest retained record.
        first_seq: u64,
    },
    /// `write_snapshot` was called with a sequence number it cannot cover.
    BadSnapshotSeq {
        /// The sequence number passed.
        covered_seq: u64,
        /// The last record written.
        last_seq: u64,
        /// The newest existing snapshot's covered sequence number.
        newest_snapshot_seq: Option<u64>,
    },
}

impl Error {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the failed call's batch may still be in the journal (and so be replayed
    /// after a crash): true only for [`Error::UncutBatch`]. After any other error from
    /// [`Journal::append_batch`](crate::Journal::append_batch) nothing of the batch is on
    /// disk, now or after a crash.
    pub fn batch_may_remain(&self) -> bool {
        matches!(self, Error::UncutBatch { .. })
    }

    pub(crate) fn corrupt(file: &Path, offset: u64, what: impl Into<String>) -> Error {
        Error::Corrupt {
            file: file.to_path_buf(),
            offset,
            what: what.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Locked { dir, pid: Some(pid) } => write!(
                f,
                "journal {} is locked by another writer (pid {pid}); only one server may use a journal at a time",
                dir.display()
            ),
            Error::Locked { dir, pid: None } => write!(
                f,
                "journal {} is locked by another writer (pid unknown); only one server may use a journal at a time",
                dir.display()
            ),
            Error::UnknownVersion { file, version } => write!(
                f,
                "{}: journal format version {version} is not supported (this build knows version {}); was it written by a newer spalloc?",
                file.display(),
                crate::format::FORMAT_VERSION
            ),
            Error::UnknownFlags { file, flags } => write!(
                f,
                "{}: journal header flags {flags:#06x} are not supported; was it written by a newer spalloc?",
                file.display()
            ),
            Error::Corrupt { file, offset, what } => write!(
                f,
                "{} is corrupt at byte offset {offset}: {what}; refusing to continue so that no acknowledged record is dropped",
                file.display()
            ),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::UncutBatch {
                path,
                source,
                cut_error,
            } => write!(
                f,
                "{}: {source}; cutting the failed batch off failed too ({cut_error}), so it may \
                 stay in the journal, and be replayed if the process stops, until a later write \
                 cuts it off",
                path.display()
            ),
            Error::TooLarge {
                len_bytes,
                max_bytes,
            } => write!(
                f,
                "record of {len_bytes} bytes exceeds the journal's limit of {max_bytes} bytes"
            ),
            Error::EmptyRecord { index } => {
                write!(f, "record {index} of the batch is empty; records must not be empty")
            }
            Error::NoJournal { dir } => {
                write!(f, "{} is not a journal directory (no such directory, or no segment files in it)", dir.display())
            }
            Error::NotRetained { seq, first_seq } => write!(
                f,
                "record {seq} is no longer retained; the oldest retained record is {first_seq}"
            ),
            Error::BadSnapshotSeq {
                covered_seq,
                last_seq,
                newest_snapshot_seq,
            } => write!(
                f,
                "cannot write a snapshot covering record {covered_seq}: the last record is {last_seq} and the newest snapshot covers {}",
                match newest_snapshot_seq {
                    Some(s) => s.to_string(),
                    None => "nothing".into(),
                }
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::UncutBatch { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A damaged spot found while opening or verifying, reported rather than
/// returned as an error because the journal could still be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte offset of the damage.
    pub offset: u64,
    /// What was found.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at byte offset {}: {}",
            self.file.display(),
            self.offset,
            self.what
        )
    }
}

impl Problem {
    /// Converts an error into a problem report; non-corruption errors keep
    /// their message.
    pub(crate) fn from_error(e: &Error, fallback_file: &Path) -> Problem {
        match e {
            Error::Corrupt { file, offset, what } => Problem {
                file: file.clone(),
                offset: *offset,
                what: what.clone(),
            },
            other => Problem {
                file: fallback_file.to_path_buf(),
                offset: 0,
                what: other.to_string(),
            },
        }
    }
}
