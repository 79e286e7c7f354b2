//! `--verify`: checksums, the core's invariants after every event, and every snapshot
//! against the fold.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};
use spalloc_journal::{Error as JournalError, Reader};

use crate::core::Core;
use crate::timefmt::format_iso;

use super::{event_text, ErrorKind, ReplayError, Source};

// ----- verify ---------------------------------------------------------------------------------

/// How often [`verify`] reports progress, in events.
pub const VERIFY_PROGRESS_EVERY: u64 = 10_000;

/// What `--verify` found.
#[derive(Debug, Default)]
pub struct VerifyOutcome {
    /// The first problem, if any.
    pub problem: Option<String>,
    /// Remarks that are not problems (retention, a tail being written…).
    pub notes: Vec<String>,
    /// Oldest and newest record.
    pub first_seq: u64,
    /// Newest record.
    pub last_seq: u64,
    /// Records whose checksums were checked.
    pub records_checked: u64,
    /// Events folded with the invariants checked after each.
    pub events_folded: u64,
    /// Snapshots compared with the fold (covered seqs).
    pub snapshots_compared: Vec<u64>,
}

impl VerifyOutcome {
    /// Human-readable.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        match &self.problem {
            Some(p) => {
                let _ = writeln!(out, "PROBLEM: {p}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "OK: records #{}..#{}: {} checksums good, {} events folded with the invariants \
                     holding after each, {} snapshots agree with the fold {:?}",
                    self.first_seq,
                    self.last_seq,
                    self.records_checked,
                    self.events_folded,
                    self.snapshots_compared.len(),
                    self.snapshots_compared
                );
            }
        }
        out
    }

    /// Machine-readable.
    pub fn json(&self) -> Value {
        json!({
            "ok": self.problem.is_none(),
            "problem": self.problem,
            "notes": self.notes,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "records_checked": self.records_checked,
            "events_folded": self.events_folded,
            "snapshots_compared": self.snapshots_compared,
        })
    }
}

/// Check a journal: every frame's checksum ([`Reader::verify`]); fold every event with
/// [`Core::check_invariants`] after each; and compare the fold at each snapshot's covered
/// record with the snapshot, byte for byte (`rmp_serde::to_vec_named`). Comparing at the
/// covered record suffices: folding on from equal states gives equal states. `Err` only when
/// the journal cannot be read at all (missing directory, unknown format version, I/O);
/// damage and disagreements are reported in [`VerifyOutcome::problem`] (the first found).
///
/// Checking the invariants costs about as much as the core's own debug checks, which grow
/// with the machines' size, so `progress(seq, last_seq)` is called every
/// [`VERIFY_PROGRESS_EVERY`] events for a caller that wants to show it.
pub fn verify(
    dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyOutcome, ReplayError> {
    let mut out = VerifyOutcome::default();
    let reader = match Reader::open(dir) {
        Ok(r) => r,
        Err(e @ JournalError::Corrupt { .. }) => {
            out.problem = Some(format!("the journal cannot be opened: {e}"));
            return Ok(out);
        }
        Err(e) => return Err(e.into()),
    };
    let report = reader.verify()?;
    out.first_seq = report.first_seq;
    out.last_seq = report.last_seq;
    out.records_checked = report.records;
    if let Some(t) = &report.torn_tail {
        out.notes.push(format!(
            "incomplete tail (a batch being written now, or a crash's torn write that the \
             server will cut): {t}"
        ));
    }
    if let Some(p) = report.first_bad {
        out.problem = Some(format!("damaged journal: {p}"));
        return Ok(out);
    }
    drop(reader);
    let source = match Source::open(dir) {
        Ok(s) => s,
        Err(e) if e.kind == ErrorKind::Damage => {
            out.problem = Some(e.message);
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    out.notes.extend(source.notes.iter().cloned());
    if let Err(e) = source.start_core.check_invariants() {
        out.problem = Some(format!(
            "the starting snapshot of record #{} breaks an invariant: {e}",
            source.start_seq
        ));
        return Ok(out);
    }
    let mut snapshots: BTreeMap<u64, spalloc_journal::SnapshotInfo> = BTreeMap::new();
    for info in source.reader().snapshots() {
        if info.covered_seq > source.start_seq {
            snapshots.insert(info.covered_seq, info);
        } else if info.covered_seq < source.start_seq {
            out.notes.push(format!(
                "snapshot of record #{} predates the retained history: not compared",
                info.covered_seq
            ));
        } else {
            out.notes.push(format!(
                "snapshot of record #{} is where replay starts: nothing earlier to compare it with",
                info.covered_seq
            ));
        }
    }
    let mut problem = None;
    let mut folder = source.folder();
    let mut fold = || -> Result<(), ReplayError> {
        for r in source.records()? {
            let (seq, event) = r?;
            let step = folder.apply(seq, event);
            out.events_folded += 1;
            if out.events_folded % VERIFY_PROGRESS_EVERY == 0 {
                progress(step.seq, out.last_seq);
            }
            if let Err(e) = folder.core.check_invariants() {
                problem = Some(format!(
                    "invariant broken after record #{} ({} {}): {e}",
                    step.seq,
                    format_iso(step.event.now_us()),
                    event_text(&step)
                ));
                return Ok(());
            }
            if let Some(info) = snapshots.get(&step.seq) {
                match compare_snapshot(&source, info, &folder.core) {
                    Ok(None) => out.snapshots_compared.push(step.seq),
                    Ok(Some(theirs)) => {
                        // Kept history can hold snapshots written by an older version, whose
                        // encoding of the same state differs. A server that started from it
                        // folded on from it, so the fold does too.
                        out.snapshots_compared.push(step.seq);
                        out.notes.push(format!(
                            "snapshot of record #{} agrees with the fold in everything visible \
                             but not byte for byte (written by another version?): replay goes \
                             on from it, as the server did",
                            step.seq
                        ));
                        folder.core = theirs;
                    }
                    Err(p) => {
                        problem = Some(p);
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    };
    match fold() {
        Ok(()) => {}
        Err(e) if e.kind == ErrorKind::Damage => problem = problem.or(Some(e.message)),
        Err(e) => return Err(e),
    }
    out.problem = problem;
    Ok(out)
}

/// `Ok(None)`: the snapshot equals the fold byte for byte. `Ok(Some(snapshot))`: they differ
/// only in encoding (every visible part of the state agrees). `Err`: they disagree.
fn compare_snapshot(
    source: &Source,
    info: &spalloc_journal::SnapshotInfo,
    folded: &Core,
) -> Result<Option<Core>, String> {
    let snap = source
        .reader()
        .read_snapshot(info)
        .map_err(|e| format!("snapshot {} cannot be read: {e}", info.file.display()))?;
    let ours = rmp_serde::to_vec_named(folded).map_err(|e| e.to_string())?;
    if ours == snap.data {
        return Ok(None);
    }
    let from = if source.start_seq == 0 {
        "from the beginning".to_string()
    } else {
        format!("from the snapshot of record #{}", source.start_seq)
    };
    let detail = match rmp_serde::from_slice::<Core>(&snap.data) {
        Err(e) => format!("the snapshot cannot even be decoded: {e}"),
        Ok(theirs) => match difference(&theirs, folded) {
            None => return Ok(Some(theirs)),
            Some(d) => d,
        },
    };
    Err(format!(
        "snapshot of record #{} ({}) disagrees with folding the records {from}: {detail}",
        info.covered_seq,
        info.file.display()
    ))
}

/// The first visible difference between a snapshot's state and the folded one (`None`: they
/// differ only in encoding).
fn difference(snap: &Core, folded: &Core) -> Option<String> {
    if snap.now_us() != folded.now_us() {
        return Some(format!(
            "its time is {}, the fold's {}",
            format_iso(snap.now_us()),
            format_iso(folded.now_us())
        ));
    }
    if snap.next_job_id() != folded.next_job_id() {
        return Some(format!(
            "its next job id is {}, the fold's {}",
            snap.next_job_id(),
            folded.next_job_id()
        ));
    }
    if snap.live_job_ids() != folded.live_job_ids() {
        return Some(format!(
            "its live jobs are {:?}, the fold's {:?}",
            snap.live_job_ids(),
            folded.live_job_ids()
        ));
    }
    if snap.board_owners() != folded.board_owners() {
        return Some("the boards' owners differ".to_string());
    }
    if snap.list_jobs() != folded.list_jobs() {
        return Some("the jobs' details differ".to_string());
    }
    None
}
