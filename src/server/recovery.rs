//! Start-up: opening the journal and rebuilding the core from it.
//!
//! The state is the newest valid snapshot plus every record after it, folded through the
//! same [`Core::handle`] the live server uses, with the effects discarded (they happened
//! before the restart; BMP work still outstanding is re-issued by the caller from the core's
//! own record of it).

use std::path::Path;

use std::time::Duration;

use spalloc_journal::{Journal, Options};

use super::{decode_event, Logger};
use crate::core::{Core, Event};

/// What start-up recovered.
pub struct Recovered {
    /// The open journal, ready for appending.
    pub journal: Journal,
    /// The state after every journaled event.
    pub core: Core,
    /// True if the journal held anything (a warm start).
    pub warm: bool,
    /// True if a configuration was ever applied.
    pub configured: bool,
    /// The sequence number the newest snapshot covers (0 if none).
    pub snapshot_seq: u64,
}

/// Open (creating if needed) the journal in `dir` and fold it into a core.
///
/// `retain_days` is the history kept (segments are deleted by age once a snapshot covers
/// them). A directory that holds no journal yet is logged as a WARNING: a mistyped
/// `--journal` would otherwise start an empty server silently beside the real history.
pub fn open_and_replay(dir: &Path, retain_days: u32, log: &Logger) -> Result<Recovered, String> {
    let existed = std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("segment-") && name.ends_with(".log")
            })
        })
        .unwrap_or(false);
    let options = Options {
        retain_for: Some(Duration::from_secs(u64::from(retain_days) * 86_400)),
        ..Options::default()
    };
    let opened =
        Journal::open_with(dir, options).map_err(|e| format!("cannot open the journal: {e}"))?;
    if !existed {
        log.warn(&format!(
            "new journal at {}, no history: if this server has run before, check --journal",
            dir.display()
        ));
    }
    if let Some(r) = &opened.repaired {
        log.info(&format!(
            "journal: cut a torn tail of {} bytes at offset {} of {} ({}): the last write before a crash",
            r.bytes_cut,
            r.offset,
            r.file.display(),
            r.what
        ));
    }
    for p in &opened.discarded_snapshots {
        log.error(&format!("journal: ignored a damaged snapshot: {p}"));
    }
    for p in &opened.fallback_damage {
        log.warn(&format!(
            "journal: damage in a file kept only as the fallback should the newest snapshot \
             go bad: {p}. This start does not need it, but that fallback is gone; check the \
             disk, and see spalloc-replay DIR --verify"
        ));
    }
    let Folded {
        core,
        warm,
        configured,
        snapshot_seq,
    } = fold(
        opened
            .snapshot
            .as_ref()
            .map(|s| (s.covered_seq, &s.data[..])),
        opened
            .records_after_snapshot
            .iter()
            .map(|(seq, bytes)| (*seq, &bytes[..])),
        dir,
    )?;
    if warm {
        log.info(&format!(
            "journal: recovered {} events after the snapshot of record {snapshot_seq}; {} live jobs",
            opened.records_after_snapshot.len(),
            core.live_job_ids().len()
        ));
    }
    Ok(Recovered {
        journal: opened.journal,
        core,
        warm,
        configured,
        snapshot_seq,
    })
}

/// A journal folded into a core (see [`fold`]).
pub struct Folded {
    /// The state after every journaled event.
    pub core: Core,
    /// True if the journal held anything (a warm start).
    pub warm: bool,
    /// True if a configuration was ever applied.
    pub configured: bool,
    /// The sequence number the snapshot covers (0 if none).
    pub snapshot_seq: u64,
}

/// Fold a journal's newest snapshot (its covered sequence number and bytes) and the records
/// after it into a core, with the effects discarded. `dir` names the journal in errors.
/// (The server's start-up, and the simulation's restarts from its journal in memory.)
pub fn fold<'a>(
    snapshot: Option<(u64, &[u8])>,
    records: impl ExactSizeIterator<Item = (u64, &'a [u8])>,
    dir: &Path,
) -> Result<Folded, String> {
    let (mut core, snapshot_seq) = match snapshot {
        Some((covered_seq, data)) => {
            let core: Core = rmp_serde::from_slice(data).map_err(|e| {
                format!(
                    "the snapshot of record {} in {} cannot be read: {e}",
                    covered_seq,
                    dir.display()
                )
            })?;
            (core, covered_seq)
        }
        None => (Core::at_journal_start(), 0),
    };
    let mut configured = snapshot.is_some();
    let warm = snapshot.is_some() || records.len() > 0;
    for (seq, bytes) in records {
        let event = decode_event(bytes).map_err(|e| {
            format!(
                "journal record {seq} in {} cannot be decoded: {e}",
                dir.display()
            )
        })?;
        configured |= matches!(event, Event::Configure { .. });
        core.handle(&event);
        core.discard_effects();
    }
    Ok(Folded {
        core,
        warm,
        configured,
        snapshot_seq,
    })
}

/// `--cold-start`: rename an existing journal directory aside (never delete it) so the
/// server starts from nothing.
pub fn set_journal_aside(dir: &Path, log: &Logger) -> Result<(), String> {
    let non_empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if !non_empty {
        return Ok(());
    }
    let stamp = crate::timefmt::format_iso(crate::timefmt::now_us() / 1_000_000 * 1_000_000)
        .replace(':', "");
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "journal".into());
    let aside = dir.with_file_name(format!("{name}.before-cold-start-{stamp}"));
    std::fs::rename(dir, &aside).map_err(|e| {
        format!(
            "--cold-start: cannot move {} aside to {}: {e}",
            dir.display(),
            aside.display()
        )
    })?;
    log.info(&format!(
        "--cold-start: kept the old journal as {}",
        aside.display()
    ));
    Ok(())
}
