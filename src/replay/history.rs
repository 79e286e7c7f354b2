//! The whole life of one job: creation, allocation, power, keepalive resets, and exactly why
//! and when it ended.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::core::{Command, Core, EndReason, Event, JobId, Lifecycle, Response, TimeUs};
use crate::timefmt::format_iso;

use super::{
    bmp_json, bmp_text, call_text, command_job, command_text, event_text, fold_all, job_state_name,
    ReplayError, Source, Step,
};

// ----- one job's life -------------------------------------------------------------------------

/// One line of a job's timeline.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Entry {
    /// Record.
    pub seq: u64,
    /// Time of the event.
    pub time_us: TimeUs,
    /// What kind of thing happened (`created`, `allocated`, `bmp`, `ended`, `log`…).
    pub kind: &'static str,
    /// What happened.
    pub text: String,
}

/// A moment in a job's life: record and time.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Moment {
    /// Record.
    pub seq: u64,
    /// Time.
    pub time_us: TimeUs,
}

/// A reset of the job's keepalive timer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Reset {
    /// When.
    pub at: Moment,
    /// What reset it (`get_job_state from 1.2.3.4`, `allocation`, `server restart`…).
    pub what: String,
}

/// The whole life of one job.
#[derive(Debug, serde::Serialize)]
pub struct JobHistory {
    /// The job.
    pub job_id: JobId,
    /// Creation (if within the replayed history): who, from where, what.
    pub created: Option<Value>,
    /// The job was already live in the starting snapshot (early history deleted).
    pub live_at_start: bool,
    /// Machine and boards, once allocated: `[x, y, z]` logical and `[c, f, b]` physical.
    pub allocation: Option<Value>,
    /// Keepalive interval, seconds.
    pub keepalive_s: Option<f64>,
    /// Client commands that reset the keepalive timer.
    pub touches: u64,
    /// The hosts they came from.
    pub touch_hosts: BTreeSet<String>,
    /// The last keepalive-timer reset.
    pub last_reset: Option<Reset>,
    /// The longest gap between two resets (microseconds), and the two resets.
    pub longest_gap: Option<(u64, Reset, Reset)>,
    /// BMP requests: id, what, issued at, outcome.
    pub bmp: Vec<Value>,
    /// When and why it ended: moment, reason, and the event that caused it.
    pub ended: Option<Value>,
    /// When its boards were released after it ended.
    pub released: Option<Moment>,
    /// Everything, in order.
    pub timeline: Vec<Entry>,
    /// The job's state at the end of the journal (`get_job_state`).
    pub final_state: Value,
}

impl JobHistory {
    /// Fold the journal, following one job.
    pub fn build(source: &Source, job_id: JobId) -> Result<JobHistory, ReplayError> {
        let start = source.folder();
        let at_start = start
            .core
            .list_jobs()
            .into_iter()
            .find(|j| j.job_id == job_id);
        let mut h = JobHistory {
            job_id,
            created: None,
            live_at_start: at_start.is_some(),
            allocation: None,
            keepalive_s: at_start.as_ref().and_then(|j| j.keepalive),
            touches: 0,
            touch_hosts: BTreeSet::new(),
            last_reset: None,
            longest_gap: None,
            bmp: Vec::new(),
            ended: None,
            released: None,
            timeline: Vec::new(),
            final_state: Value::Null,
        };
        if let Some(j) = &at_start {
            let t = (j.start_time * 1e6).round() as TimeUs;
            h.timeline.push(Entry {
                seq: source.start_seq,
                time_us: t,
                kind: "live_at_start",
                text: format!(
                    "already live in the starting snapshot: created {} by {:?} as {}, last host {}, \
                     state {}",
                    format_iso(t),
                    j.owner,
                    call_text(&j.args_json, &j.kwargs_json),
                    j.keepalivehost,
                    job_state_name(j.state)
                ),
            });
            if let (Some(m), Some(b)) = (&j.allocated_machine_name, &j.boards) {
                h.allocation = Some(allocation_json(&start.core, m, b, None));
            }
        }
        let mut live = at_start.is_some();
        let end = fold_all(source, |step, folder| {
            h.observe(step, &folder.core, &mut live);
            true
        })?;
        if h.created.is_none() && !h.live_at_start && h.timeline.is_empty() {
            let before = start.core.job_state(job_id);
            if source.start_seq > 0 && before.state == 4 {
                return Err(ReplayError::usage(format!(
                    "job {job_id} ended before the retained history (records before #{} were \
                     deleted by retention); the starting snapshot remembers only its reason: {}",
                    source.start_seq + 1,
                    before.reason.as_deref().unwrap_or("(no reason)")
                )));
            }
            return Err(ReplayError::usage(format!(
                "job {job_id} does not appear in the replayed journal (records #{}..#{}; jobs \
                 created there are numbered below {})",
                source.start_seq + 1,
                source.last_seq(),
                end.core.next_job_id()
            )));
        }
        h.final_state = serde_json::to_value(end.core.job_state(job_id)).unwrap_or(Value::Null);
        Ok(h)
    }

    fn push(&mut self, step: &Step, kind: &'static str, text: String) {
        self.timeline.push(Entry {
            seq: step.seq,
            time_us: step.event.now_us(),
            kind,
            text,
        });
    }

    fn reset(&mut self, step: &Step, what: String) {
        let r = Reset {
            at: Moment {
                seq: step.seq,
                time_us: step.event.now_us(),
            },
            what,
        };
        if let Some(prev) = &self.last_reset {
            let gap = r.at.time_us.saturating_sub(prev.at.time_us);
            if !matches!(&self.longest_gap, Some((g, _, _)) if gap <= *g) {
                self.longest_gap = Some((gap, prev.clone(), r.clone()));
            }
        }
        self.last_reset = Some(r);
    }

    fn observe(&mut self, step: &Step, core: &Core, live: &mut bool) {
        let id = self.job_id;
        let now = step.event.now_us();
        // Commands about this job (from a client).
        if let Event::Command { peer, command, .. } = &step.event {
            if step.created == Some(id) {
                if let Command::CreateJob(c) = command {
                    self.keepalive_s = c.keepalive_s;
                    self.created = Some(json!({
                        "seq": step.seq, "time": format_iso(now), "time_us": now,
                        "owner": c.owner, "peer": peer, "command": command_text(command),
                        "args": c.args_json, "kwargs": c.kwargs_json, "keepalive_s": c.keepalive_s,
                    }));
                }
                *live = true;
                self.reset(step, format!("creation from {peer}"));
            } else if command_job(command) == Some(id) {
                let touches = !matches!(command, Command::DestroyJob { .. });
                if *live && touches {
                    self.touches += 1;
                    self.touch_hosts.insert(peer.clone());
                    self.reset(step, format!("{} from {peer}", command_text(command)));
                }
                let notable = !matches!(
                    command,
                    Command::JobKeepalive { .. }
                        | Command::GetJobState { .. }
                        | Command::GetJobMachineInfo { .. }
                );
                if notable || !*live {
                    let suffix = if *live {
                        ""
                    } else {
                        " (job not live: no effect)"
                    };
                    self.push(
                        step,
                        "command",
                        format!("{peer} called {}{suffix}", command_text(command)),
                    );
                }
            }
        }
        if let Event::Restarted { .. } = step.event {
            if *live {
                self.push(
                    step,
                    "restart",
                    "server restarted: keepalive timer reset".into(),
                );
                self.reset(step, "server restart".into());
            }
        }
        if let Event::KeptAliveUnrecorded { job_ids, .. } = &step.event {
            if *live && job_ids.contains(&id) {
                self.push(
                    step,
                    "keepalive",
                    "keepalives answered while the journal could not be written: timer reset"
                        .into(),
                );
                self.reset(step, "keepalives answered during a journal outage".into());
            }
        }
        if let (Event::BmpDone { failure, .. }, Some(r)) = (&step.event, &step.completed) {
            if r.job_id == id {
                let outcome = match failure {
                    None => "ok".to_string(),
                    Some(f) => format!("FAILED: {f}"),
                };
                self.push(
                    step,
                    "bmp_done",
                    format!("BMP request {} done: {outcome} ({})", r.id, bmp_text(r)),
                );
                let entry = match self.bmp.iter_mut().find(|b| b["id"] == json!(r.id)) {
                    Some(e) => e,
                    None => {
                        // Issued before the replayed history began.
                        self.bmp.push(bmp_json(r));
                        self.bmp.last_mut().expect("just pushed")
                    }
                };
                entry["outcome"] = json!(failure
                    .clone()
                    .map_or("ok".to_string(), |f| format!("failed: {f}")));
                entry["done_seq"] = json!(step.seq);
                entry["done_time"] = json!(format_iso(now));
            }
        }
        // The job's life, from the core's lifecycle effects.
        for l in &step.lifecycle {
            match l {
                Lifecycle::Queued {
                    job_id,
                    owner,
                    host,
                } if *job_id == id => {
                    let what = match &step.event {
                        Event::Command {
                            command: command @ Command::CreateJob(_),
                            ..
                        } => command_text(command),
                        _ => "create_job".to_string(),
                    };
                    self.push(
                        step,
                        "created",
                        format!("created by {owner:?} from {host}: {what}; queued"),
                    );
                }
                Lifecycle::Allocated {
                    job_id,
                    machine,
                    boards,
                } if *job_id == id => {
                    let b: Vec<[u32; 3]> = boards.iter().map(|b| [b.x, b.y, b.z]).collect();
                    let a = allocation_json(core, machine, &b, Some(step));
                    self.push(
                        step,
                        "allocated",
                        format!(
                            "allocated {} boards on {machine}: {}",
                            b.len(),
                            boards_text(core, machine, &b)
                        ),
                    );
                    self.allocation = Some(a);
                    // Allocation powers the boards on, which resets the keepalive timer.
                    self.reset(step, "allocation (boards powered on)".into());
                }
                Lifecycle::Powering { job_id, on } if *job_id == id => {
                    let what = if *on { "on" } else { "off" };
                    self.push(step, "powering", format!("powering its boards {what}"));
                }
                Lifecycle::Ready { job_id, power } if *job_id == id => {
                    let what = if *power { "on" } else { "off" };
                    self.push(step, "ready", format!("ready: boards {what}"));
                }
                _ => {}
            }
        }
        for r in step.issued.iter().filter(|r| r.job_id == id) {
            self.push(
                step,
                "bmp",
                format!("BMP request {} issued: {}", r.id, bmp_text(r)),
            );
            let mut v = bmp_json(r);
            v["issued_seq"] = json!(step.seq);
            v["issued_time"] = json!(format_iso(now));
            v["outcome"] = Value::Null;
            self.bmp.push(v);
        }
        if let Some((_, reason)) = step.ended.iter().find(|(j, _)| *j == id) {
            *live = false;
            let cause = self.cause(step);
            // (The reason came from a client: escaped for the admin's terminal.)
            let reason_text =
                crate::logsafe::escape(reason.as_deref().unwrap_or("(no reason)")).into_owned();
            self.push(
                step,
                "ended",
                format!(
                    "ENDED ({}): {reason_text} — cause: {cause}",
                    step.end_reason(id).map_or("?", EndReason::name)
                ),
            );
            self.ended = Some(json!({
                "seq": step.seq, "time": format_iso(now), "time_us": now,
                "reason": reason, "cause": cause, "event": event_text(step),
                "end_reason": step.end_reason(id).map(EndReason::name),
            }));
        }
        if step.released.contains(&id) {
            self.push(
                step,
                "released",
                "boards released (power-off finished)".into(),
            );
            self.released = Some(Moment {
                seq: step.seq,
                time_us: now,
            });
        }
    }

    /// Why the step that ended the job did so, in words.
    fn cause(&self, step: &Step) -> String {
        match &step.event {
            Event::Tick { now_us } => match &self.last_reset {
                Some(r) => format!(
                    "keepalive expired: the timer was last reset at #{} {} by {}, {:.3} s \
                     earlier; the keepalive is {}",
                    r.at.seq,
                    format_iso(r.at.time_us),
                    r.what,
                    now_us.saturating_sub(r.at.time_us) as f64 / 1e6,
                    self.keepalive_s
                        .map_or("not set".to_string(), |k| format!("{k} s"))
                ),
                None => "keepalive expired (no reset within the replayed history)".into(),
            },
            Event::Command { peer, command, .. } => match command {
                Command::DestroyJob { .. } => format!("{peer} called {}", command_text(command)),
                _ => format!(
                    "{peer} called {}: no configured machine can ever satisfy the request",
                    command_text(command)
                ),
            },
            Event::BmpDone { .. } => format!("hardware failure: {}", event_text(step)),
            Event::Configure { .. } => format!(
                "a new configuration removed or changed its machine ({})",
                event_text(step)
            ),
            Event::Restarted { .. } => "server restart".into(),
            Event::KeptAliveUnrecorded { .. } => "journal recovery".into(),
            Event::Rules { .. } => event_text(step),
            Event::Admin { .. } => format!("an administrator: {}", event_text(step)),
        }
    }

    /// Human-readable.
    pub fn text(&self, notes: &[String]) -> String {
        let mut out = String::new();
        for n in notes {
            let _ = writeln!(out, "note: {n}");
        }
        let _ = writeln!(out, "Job {}", self.job_id);
        match &self.created {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  created:   #{} {} by {} from {}",
                    c["seq"],
                    c["time"].as_str().unwrap_or(""),
                    c["owner"],
                    c["peer"].as_str().unwrap_or("")
                );
                let _ = writeln!(out, "  request:   {}", c["command"].as_str().unwrap_or(""));
            }
            None if self.live_at_start => {
                let _ = writeln!(
                    out,
                    "  created:   before the replayed history (live in the starting snapshot)"
                );
            }
            None => {
                let _ = writeln!(out, "  created:   before the replayed history");
            }
        }
        match &self.allocation {
            Some(a) => {
                let _ = writeln!(
                    out,
                    "  boards:    {} on {}{}: {}",
                    a["boards"].as_array().map_or(0, Vec::len),
                    a["machine"].as_str().unwrap_or(""),
                    a["time"]
                        .as_str()
                        .map(|t| format!(" (allocated #{} {t})", a["seq"]))
                        .unwrap_or_default(),
                    a["text"].as_str().unwrap_or("")
                );
            }
            None => out.push_str("  boards:    never allocated\n"),
        }
        let _ = writeln!(
            out,
            "  keepalive: {}; {} client touches from {}",
            self.keepalive_s
                .map_or("none".to_string(), |k| format!("{k} s")),
            self.touches,
            if self.touch_hosts.is_empty() {
                "nobody".to_string()
            } else {
                self.touch_hosts
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        if let Some((gap, a, b)) = &self.longest_gap {
            let _ = writeln!(
                out,
                "             longest gap between timer resets {:.3} s: #{} {} ({}) to #{} {} ({})",
                *gap as f64 / 1e6,
                a.at.seq,
                format_iso(a.at.time_us),
                a.what,
                b.at.seq,
                format_iso(b.at.time_us),
                b.what
            );
        }
        if let Some(r) = &self.last_reset {
            let _ = writeln!(
                out,
                "             last reset #{} {} ({})",
                r.at.seq,
                format_iso(r.at.time_us),
                r.what
            );
        }
        let failed = self
            .bmp
            .iter()
            .filter(|b| {
                b["outcome"]
                    .as_str()
                    .is_some_and(|o| o.starts_with("failed"))
            })
            .count();
        let pending = self.bmp.iter().filter(|b| b["outcome"].is_null()).count();
        let _ = writeln!(
            out,
            "  BMP:       {} requests, {} failed, {} unfinished",
            self.bmp.len(),
            failed,
            pending
        );
        match &self.ended {
            Some(e) => {
                let _ = writeln!(
                    out,
                    "  ended:     #{} {}: {}",
                    e["seq"],
                    e["time"].as_str().unwrap_or(""),
                    e["reason"].as_str().unwrap_or("(no reason)")
                );
                let _ = writeln!(out, "  why:       {}", e["cause"].as_str().unwrap_or(""));
                match &self.released {
                    Some(m) => {
                        let _ = writeln!(out, "  released:  #{} {}", m.seq, format_iso(m.time_us));
                    }
                    None if self.allocation.is_some() => {
                        out.push_str("  released:  not yet (power-off unfinished)\n")
                    }
                    None => {}
                }
            }
            None => out.push_str("  ended:     no, still live at the end of the journal\n"),
        }
        out.push_str("Timeline:\n");
        for e in &self.timeline {
            let _ = writeln!(out, "  #{:<6} {}  {}", e.seq, format_iso(e.time_us), e.text);
        }
        out
    }
}

fn boards_text(core: &Core, machine: &str, boards: &[[u32; 3]]) -> String {
    boards
        .iter()
        .map(|b| {
            let phys = core.query(&Command::GetBoardPosition {
                machine: machine.to_string(),
                x: b[0] as i64,
                y: b[1] as i64,
                z: b[2] as i64,
            });
            match phys {
                Response::Triple(Some([c, f, n])) => {
                    format!("({}, {}, {}) [c{c} f{f} b{n}]", b[0], b[1], b[2])
                }
                _ => format!("({}, {}, {})", b[0], b[1], b[2]),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn allocation_json(core: &Core, machine: &str, boards: &[[u32; 3]], step: Option<&Step>) -> Value {
    json!({
        "machine": machine,
        "boards": boards,
        "text": boards_text(core, machine, boards),
        "seq": step.map(|s| s.seq),
        "time": step.map(|s| format_iso(s.event.now_us())),
    })
}
