//! Where replay starts: the journal opened read-only, the state to start from (record 1, or
//! the oldest snapshot that reaches the oldest retained record when retention deleted the
//! start), the decoded records after it, positions in the journal as the command line gives
//! them, and the errors of replay as an admin reads them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use spalloc_journal::{Error as JournalError, Reader};

use crate::core::{Core, Event, TimeUs};
use crate::server::decode_event;
use crate::timefmt::{format_iso, parse_time};

use super::Folder;

// ----- positions ------------------------------------------------------------------------------

/// A point in the journal given on the command line: a record's sequence number or a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// A record's sequence number (`#123` or `seq:123`).
    Seq(u64),
    /// A time, microseconds since the Unix epoch (ISO-8601 or Unix seconds).
    Time(TimeUs),
}

/// Parse a position: `#N` or `seq:N` is sequence number N; anything else is a time as
/// [`parse_time`] reads it (ISO-8601, or Unix seconds — so a bare number is *always* a time,
/// never a sequence number, which keeps the two unambiguous).
pub fn parse_position(text: &str) -> Result<Position, String> {
    let t = text.trim();
    if let Some(n) = t.strip_prefix('#').or_else(|| t.strip_prefix("seq:")) {
        return n.trim().parse::<u64>().map(Position::Seq).map_err(|_| {
            format!("{text:?} is not a sequence number (write #N or seq:N, N a whole number)")
        });
    }
    parse_time(t).map(Position::Time).map_err(|e| {
        format!(
            "{e}; for a record's sequence number write #N or seq:N (a bare number is Unix seconds)"
        )
    })
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Seq(s) => write!(f, "#{s}"),
            Position::Time(t) => write!(f, "{}", format_iso(*t)),
        }
    }
}

// ----- errors ---------------------------------------------------------------------------------

/// What kind of failure a [`ReplayError`] is; decides the tool's exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad arguments (a sequence number out of range, an unknown job…).
    Usage,
    /// The journal cannot be read at all (missing, unknown format version, I/O).
    Journal,
    /// The journal is damaged or disagrees with itself (what `--verify` looks for).
    Damage,
}

/// A failure, worded for an admin.
#[derive(Clone, Debug)]
pub struct ReplayError {
    /// What kind.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
}

impl ReplayError {
    pub(super) fn usage(message: impl Into<String>) -> ReplayError {
        ReplayError {
            kind: ErrorKind::Usage,
            message: message.into(),
        }
    }
    pub(super) fn damage(message: impl Into<String>) -> ReplayError {
        ReplayError {
            kind: ErrorKind::Damage,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<JournalError> for ReplayError {
    fn from(e: JournalError) -> ReplayError {
        let kind = match e {
            JournalError::Corrupt { .. } => ErrorKind::Damage,
            JournalError::NotRetained { .. } => ErrorKind::Usage,
            _ => ErrorKind::Journal,
        };
        ReplayError {
            kind,
            message: e.to_string(),
        }
    }
}

// ----- the source: where replay starts --------------------------------------------------------

/// A journal opened for replay, and the state replay starts from.
pub struct Source {
    reader: Reader,
    pub(super) start_core: Core,
    /// The starting state covers records `1..=start_seq` (0: replay starts from nothing).
    pub start_seq: u64,
    /// The snapshot replay starts from, if early history was deleted by retention.
    pub start_snapshot: Option<PathBuf>,
    /// Things the reader should know about the replay (retention, skipped snapshots).
    pub notes: Vec<String>,
}

impl Source {
    /// Open `dir` read-only. Replays from record 1 when it is retained; otherwise from the
    /// oldest readable snapshot that reaches the oldest retained record.
    pub fn open(dir: &Path) -> Result<Source, ReplayError> {
        let reader = Reader::open(dir)?;
        let first = reader.first_seq();
        if first == 1 {
            return Ok(Source {
                reader,
                start_core: Core::at_journal_start(),
                start_seq: 0,
                start_snapshot: None,
                notes: Vec::new(),
            });
        }
        let mut skipped = Vec::new();
        for info in reader.snapshots() {
            if info.covered_seq + 1 < first || info.covered_seq > reader.last_seq() {
                continue;
            }
            let core = reader
                .read_snapshot(&info)
                .map_err(|e| e.to_string())
                .and_then(|s| rmp_serde::from_slice::<Core>(&s.data).map_err(|e| e.to_string()));
            match core {
                Ok(core) => {
                    let mut notes = vec![format!(
                        "records #1..#{} are no longer retained (deleted by retention): replay \
                         starts from the snapshot of record #{} ({}), so anything before it is \
                         known only as that snapshot's state",
                        first - 1,
                        info.covered_seq,
                        info.file.display()
                    )];
                    if info.covered_seq >= first {
                        notes.push(format!(
                            "records #{first}..#{} are retained but precede that snapshot; they \
                             are not replayed",
                            info.covered_seq
                        ));
                    }
                    notes.extend(skipped);
                    return Ok(Source {
                        reader,
                        start_core: core,
                        start_seq: info.covered_seq,
                        start_snapshot: Some(info.file.clone()),
                        notes,
                    });
                }
                Err(e) => skipped.push(format!("snapshot {} skipped: {e}", info.file.display())),
            }
        }
        Err(ReplayError::damage(format!(
            "records #1..#{} of {} are no longer retained and no readable snapshot reaches \
             record #{first}, so no state can be rebuilt{}",
            first - 1,
            dir.display(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({})", skipped.join("; "))
            }
        )))
    }

    /// Open `dir` read-only to learn its *current* state quickly: replay starts from the newest
    /// readable snapshot (falling back to [`Source::open`] when none can be used), so only
    /// the records after it are folded. For previews (`spalloc-server --check-config
    /// --journal`), not for histories.
    pub fn open_latest(dir: &Path) -> Result<Source, ReplayError> {
        let reader = Reader::open(dir)?;
        let (first, last) = (reader.first_seq(), reader.last_seq());
        for info in reader.snapshots().into_iter().rev() {
            if info.covered_seq + 1 < first || info.covered_seq > last {
                continue;
            }
            let core = reader
                .read_snapshot(&info)
                .ok()
                .and_then(|s| rmp_serde::from_slice::<Core>(&s.data).ok());
            if let Some(core) = core {
                return Ok(Source {
                    reader,
                    start_core: core,
                    start_seq: info.covered_seq,
                    start_snapshot: Some(info.file.clone()),
                    notes: Vec::new(),
                });
            }
        }
        Source::open(dir)
    }

    /// The underlying reader.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// The oldest retained record.
    pub fn first_seq(&self) -> u64 {
        self.reader.first_seq()
    }

    /// The newest complete record.
    pub fn last_seq(&self) -> u64 {
        self.reader.last_seq()
    }

    /// A folder holding the starting state.
    pub fn folder(&self) -> Folder {
        Folder::new(self.start_core.clone(), self.start_seq)
    }

    /// Every record after the starting state, decoded.
    pub fn records(
        &self,
    ) -> Result<impl Iterator<Item = Result<(u64, Event), ReplayError>> + '_, ReplayError> {
        let records = self.reader.records_from(self.start_seq + 1)?;
        Ok(records.map(|r| {
            let (seq, bytes) = r?;
            let event = decode_event(&bytes).map_err(|e| {
                ReplayError::damage(format!("record #{seq} cannot be decoded as an event: {e}"))
            })?;
            Ok((seq, event))
        }))
    }

    /// Check that a sequence number names a record this replay can show (`allow_start`: the
    /// starting state itself, e.g. `--at #0` on a complete journal).
    pub fn check_seq(&self, seq: u64, allow_start: bool) -> Result<(), ReplayError> {
        let lo = if allow_start {
            self.start_seq
        } else {
            self.start_seq + 1
        };
        if seq < lo || seq > self.last_seq() {
            let mut msg = format!(
                "sequence number #{seq} is out of range: this journal holds records #{}..#{}",
                self.first_seq(),
                self.last_seq()
            );
            if self.start_seq > 0 {
                let _ = write!(
                    msg,
                    ", and replay can start only after the snapshot of record #{}",
                    self.start_seq
                );
            }
            return Err(ReplayError::usage(msg));
        }
        Ok(())
    }
}
