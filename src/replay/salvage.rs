//! `spalloc-replay DIR --salvage OUT`: a way out of a corrupt journal that keeps what is good.
//!
//! [`spalloc_journal::salvage`] copies every good record before the first damage (and the
//! snapshots that cover only kept records) into the new directory `OUT`, byte for byte.
//! This module then proves the result usable the way the server will use it (it opens, and
//! every kept record decodes and folds) and says exactly what was lost: the damage, the last
//! record kept and its time, the bytes and files left out, and the intact records that had
//! to go because they follow the damage. Start the server with `--journal OUT`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use spalloc_journal::SalvageReport;

use super::{fold_all, ReplayError, Source};
use crate::timefmt::format_iso;

/// What a salvage kept and lost.
pub struct Salvage {
    /// The damaged journal.
    pub from: PathBuf,
    /// The new one.
    pub to: PathBuf,
    /// The journal layer's account.
    pub report: SalvageReport,
    /// Time of the last record kept (if any was kept and replayed).
    pub last_time_us: Option<u64>,
    /// Live jobs in the salvaged state.
    pub live_jobs: Vec<u64>,
}

/// Salvage `dir` into `out` and check the result folds.
pub fn salvage(dir: &Path, out: &Path) -> Result<Salvage, ReplayError> {
    let report = spalloc_journal::salvage(dir, out)?;
    let source = Source::open(out)?;
    let mut last_time_us = None;
    let end = fold_all(&source, |step, _| {
        last_time_us = Some(step.event.now_us());
        true
    })?;
    Ok(Salvage {
        from: dir.to_path_buf(),
        to: out.to_path_buf(),
        report,
        last_time_us,
        live_jobs: end.core.live_job_ids(),
    })
}

impl Salvage {
    /// Every record number lost, as text: `#51..#80 (30 records)`, or the damaged part.
    fn lost_lines(&self) -> Vec<String> {
        let r = &self.report;
        let mut lines = Vec::new();
        for d in &r.dropped {
            let what = match d.intact_records {
                Some((first, 0)) => format!("no records (first seq {first})"),
                Some((first, n)) => format!(
                    "records #{first}..#{} ({n} intact records that follow the damage)",
                    first + n - 1
                ),
                None if d.offset == 0 => "the whole file (unreadable)".to_string(),
                None => format!("everything from offset {}", d.offset),
            };
            lines.push(format!(
                "{}: {} bytes left out: {what}",
                d.file.display(),
                d.bytes
            ));
        }
        for (file, why) in &r.snapshots_dropped {
            lines.push(format!("snapshot {} left out: {why}", file.display()));
        }
        lines
    }

    /// For an admin.
    pub fn text(&self) -> String {
        let r = &self.report;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Salvaged {} into {}",
            self.from.display(),
            self.to.display()
        );
        match &r.damage {
            Some(p) => {
                let _ = writeln!(out, "Damage: {p}");
            }
            None => out.push_str("Damage: none found (the new journal is a complete copy)\n"),
        }
        if let Some(t) = &r.torn_tail {
            let _ = writeln!(
                out,
                "Also left out: an incomplete last batch (a crash mid-write, never acknowledged): {t}"
            );
        }
        let _ = writeln!(
            out,
            "Kept: records #{}..#{} ({} records){}, {} snapshots {:?}",
            r.first_seq,
            r.last_seq,
            (r.last_seq + 1).saturating_sub(r.first_seq),
            self.last_time_us
                .map(|t| format!(", the last at {}", format_iso(t)))
                .unwrap_or_default(),
            r.snapshots_kept.len(),
            r.snapshots_kept
        );
        let lost = self.lost_lines();
        if lost.is_empty() {
            out.push_str("Lost: nothing\n");
        } else {
            let _ = writeln!(
                out,
                "Lost: every record after #{} — whatever clients were told after that is not \
                 in the new journal:",
                r.last_seq
            );
            for l in lost {
                let _ = writeln!(out, "  {l}");
            }
        }
        let _ = writeln!(
            out,
            "The salvaged state has {} live jobs {:?}. Start the server with --journal {} \
             (keep {} for inspection).",
            self.live_jobs.len(),
            self.live_jobs,
            self.to.display(),
            self.from.display()
        );
        out
    }

    /// Machine-readable.
    pub fn json(&self) -> Value {
        let r = &self.report;
        json!({
            "from": self.from,
            "to": self.to,
            "damage": r.damage.as_ref().map(ToString::to_string),
            "torn_tail": r.torn_tail.as_ref().map(ToString::to_string),
            "first_seq": r.first_seq,
            "last_seq": r.last_seq,
            "last_time": self.last_time_us.map(format_iso),
            "snapshots_kept": r.snapshots_kept,
            "dropped": r.dropped.iter().map(|d| json!({
                "file": d.file, "offset": d.offset, "bytes": d.bytes,
                "intact_records": d.intact_records.map(|(f, n)| json!({"first_seq": f, "count": n})),
            })).collect::<Vec<_>>(),
            "snapshots_dropped": r.snapshots_dropped.iter().map(|(f, why)| json!({"file": f, "why": why})).collect::<Vec<_>>(),
            "lost": self.lost_lines(),
            "live_jobs": self.live_jobs,
        })
    }
}
