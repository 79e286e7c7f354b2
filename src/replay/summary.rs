//! What the whole journal holds: time span, counts by kind, snapshots, jobs ended by reason,
//! BMP requests, and the state at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::core::{Event, TimeUs};
use crate::timefmt::format_iso;

use super::{event_kind, fold_all, state_json, state_text, time_of, Folder, ReplayError, Source};

// ----- summary --------------------------------------------------------------------------------

/// What the whole journal holds.
pub struct Summary {
    /// The directory.
    pub dir: PathBuf,
    /// Oldest and newest retained records.
    pub first_seq: u64,
    /// Newest retained record.
    pub last_seq: u64,
    /// Where replay started.
    pub start_seq: u64,
    /// Notes from [`Source::open`].
    pub notes: Vec<String>,
    /// Events folded.
    pub events: u64,
    /// Events by kind.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Time of the first and last folded event.
    pub span: Option<(TimeUs, TimeUs)>,
    /// Snapshot files: covered seq, size in bytes.
    pub snapshots: Vec<(u64, u64)>,
    /// Jobs created.
    pub jobs_created: u64,
    /// Jobs that ended, by reason.
    pub ended_by_reason: BTreeMap<String, u64>,
    /// BMP requests issued, and how many failed.
    pub bmp_issued: u64,
    /// BMP completions that failed.
    pub bmp_failed: u64,
    /// The state at the end.
    pub end: Folder,
}

impl Summary {
    /// Fold the whole journal.
    pub fn build(source: &Source) -> Result<Summary, ReplayError> {
        let mut by_kind = BTreeMap::new();
        let (mut events, mut created, mut issued, mut failed) = (0, 0, 0, 0);
        let mut ended = BTreeMap::new();
        let mut span: Option<(TimeUs, TimeUs)> = None;
        let end = fold_all(source, |step, _| {
            events += 1;
            *by_kind.entry(event_kind(&step.event)).or_insert(0) += 1;
            let t = step.event.now_us();
            span = Some(span.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
            created += u64::from(step.created.is_some());
            issued += step.issued.len() as u64;
            failed += u64::from(matches!(
                step.event,
                Event::BmpDone {
                    failure: Some(_),
                    ..
                }
            ));
            for (_, r) in &step.ended {
                *ended
                    .entry(r.clone().unwrap_or_else(|| "(no reason)".into()))
                    .or_insert(0) += 1;
            }
            true
        })?;
        Ok(Summary {
            dir: source.reader().dir().to_path_buf(),
            first_seq: source.first_seq(),
            last_seq: source.last_seq(),
            start_seq: source.start_seq,
            notes: source.notes.clone(),
            events,
            by_kind,
            span,
            snapshots: source
                .reader()
                .snapshots()
                .iter()
                .map(|s| (s.covered_seq, s.size_bytes))
                .collect(),
            jobs_created: created,
            ended_by_reason: ended,
            bmp_issued: issued,
            bmp_failed: failed,
            end,
        })
    }

    /// Human-readable.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let _ = writeln!(
            out,
            "Journal {}: records #{}..#{}, {} events replayed (from #{})",
            self.dir.display(),
            self.first_seq,
            self.last_seq,
            self.events,
            self.start_seq + 1
        );
        match self.span {
            Some((a, b)) => {
                let _ = writeln!(
                    out,
                    "Time span: {} to {} ({:.3} s)",
                    format_iso(a),
                    format_iso(b),
                    (b - a) as f64 / 1e6
                );
            }
            None => out.push_str("Time span: no events\n"),
        }
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let _ = writeln!(out, "Events: {}", kinds.join(", "));
        let snaps: Vec<String> = self
            .snapshots
            .iter()
            .map(|(s, b)| format!("#{s} ({b} bytes)"))
            .collect();
        let _ = writeln!(
            out,
            "Snapshots: {}",
            if snaps.is_empty() {
                "none".to_string()
            } else {
                snaps.join(", ")
            }
        );
        let ended: u64 = self.ended_by_reason.values().sum();
        let _ = writeln!(out, "Jobs: {} created, {ended} ended", self.jobs_created);
        for (r, n) in &self.ended_by_reason {
            let _ = writeln!(out, "  {n} x {r}");
        }
        let _ = writeln!(
            out,
            "BMP requests: {} issued, {} failed",
            self.bmp_issued, self.bmp_failed
        );
        let _ = writeln!(
            out,
            "State at the end ({}):",
            time_of(&self.end, None).replace(" (the starting snapshot)", "")
        );
        out.push_str(&state_text(&self.end, false));
        out
    }

    /// Machine-readable.
    pub fn json(&self) -> Value {
        json!({
            "dir": self.dir,
            "notes": self.notes,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "start_seq": self.start_seq,
            "events": self.events,
            "events_by_kind": self.by_kind,
            "first_time": self.span.map(|s| format_iso(s.0)),
            "last_time": self.span.map(|s| format_iso(s.1)),
            "snapshots": self.snapshots.iter().map(|(s, b)| json!({"covered_seq": s, "size_bytes": b})).collect::<Vec<_>>(),
            "jobs_created": self.jobs_created,
            "jobs_ended": self.ended_by_reason.values().sum::<u64>(),
            "ended_by_reason": self.ended_by_reason,
            "bmp_issued": self.bmp_issued,
            "bmp_failed": self.bmp_failed,
            "end": state_json(&self.end),
        })
    }
}
