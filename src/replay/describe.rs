//! One event in words (`--events`, timelines) and as JSON: commands as the client called
//! them, BMP requests, admin actions, and what each step caused.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::core::{BmpAction, BmpRequest, Command, Event, JobId};
use crate::timefmt::format_iso;

use super::Step;

// ----- describing events ----------------------------------------------------------------------

/// `create_job`'s recorded arguments as a call: `create_job(2, 3, tags=["x"])`.
pub(super) fn call_text(args_json: &str, kwargs_json: &str) -> String {
    let mut parts = Vec::new();
    match serde_json::from_str::<Value>(args_json) {
        Ok(Value::Array(a)) => parts.extend(a.iter().map(Value::to_string)),
        _ => parts.push(args_json.to_string()),
    }
    match serde_json::from_str::<Value>(kwargs_json) {
        Ok(Value::Object(m)) => parts.extend(m.iter().map(|(k, v)| format!("{k}={v}"))),
        _ => parts.push(kwargs_json.to_string()),
    }
    format!("create_job({})", parts.join(", "))
}

/// A command as a Python-ish call: `create_job(1, owner="me", keepalive=60, tags=["x"])`.
pub fn command_text(c: &Command) -> String {
    match c {
        Command::CreateJob(c) => {
            let mut parts = Vec::new();
            match serde_json::from_str::<Value>(&c.args_json) {
                Ok(Value::Array(a)) => parts.extend(a.iter().map(Value::to_string)),
                _ => parts.push(c.args_json.clone()),
            }
            parts.push(format!("owner={}", Value::String(c.owner.clone())));
            parts.push(format!(
                "keepalive={}",
                c.keepalive_s.map_or("None".to_string(), |k| k.to_string())
            ));
            match serde_json::from_str::<Value>(&c.kwargs_json) {
                Ok(Value::Object(m)) => parts.extend(m.iter().map(|(k, v)| format!("{k}={v}"))),
                _ => parts.push(c.kwargs_json.clone()),
            }
            format!("create_job({})", parts.join(", "))
        }
        Command::JobKeepalive { job_id } => format!("job_keepalive({job_id})"),
        Command::GetJobState { job_id } => format!("get_job_state({job_id})"),
        Command::GetJobMachineInfo { job_id } => format!("get_job_machine_info({job_id})"),
        Command::PowerOnJobBoards { job_id } => format!("power_on_job_boards({job_id})"),
        Command::PowerOffJobBoards { job_id } => format!("power_off_job_boards({job_id})"),
        Command::DestroyJob {
            job_id,
            reason: Some(r),
        } => format!("destroy_job({job_id}, reason={})", Value::String(r.clone())),
        Command::DestroyJob {
            job_id,
            reason: None,
        } => format!("destroy_job({job_id})"),
        Command::ReportProblem {
            ip,
            x,
            y,
            p,
            description,
        } => format!(
            "report_problem({}, x={x}, y={y}, p={}, description={})",
            Value::String(ip.clone()),
            p.map_or("None".to_string(), |p| p.to_string()),
            description
                .as_ref()
                .map_or("None".to_string(), |d| Value::String(d.clone()).to_string())
        ),
        other => format!("{other:?}"),
    }
}

/// The job a command is about, if any.
pub fn command_job(c: &Command) -> Option<JobId> {
    match c {
        Command::JobKeepalive { job_id }
        | Command::GetJobState { job_id }
        | Command::GetJobMachineInfo { job_id }
        | Command::PowerOnJobBoards { job_id }
        | Command::PowerOffJobBoards { job_id }
        | Command::DestroyJob { job_id, .. } => Some(*job_id),
        _ => None,
    }
}

/// `power-on of boards [0, 1, 2] on m (cabinet 0, frame 1) via 10.0.0.1`.
pub fn bmp_text(r: &BmpRequest) -> String {
    let (what, boards, links) = match &r.action {
        BmpAction::PowerOn { boards, stop_links } => ("power-on", boards, stop_links.len()),
        BmpAction::PowerOff { boards } => ("power-off", boards, 0),
    };
    let mut s = format!(
        "{what} of boards {boards:?} on {} (cabinet {}, frame {}) via BMP {}",
        r.machine, r.cabinet, r.frame, r.address
    );
    if links > 0 {
        let _ = write!(s, ", stopping {links} links");
    }
    s
}

pub(super) fn bmp_json(r: &BmpRequest) -> Value {
    let (what, boards) = match &r.action {
        BmpAction::PowerOn { boards, .. } => ("power-on", boards),
        BmpAction::PowerOff { boards } => ("power-off", boards),
    };
    json!({"id": r.id, "job_id": r.job_id, "action": what, "machine": r.machine,
           "cabinet": r.cabinet, "frame": r.frame, "boards": boards, "address": r.address})
}

/// The event alone: `127.0.0.1 destroy_job(3)`, `BMP request 4 done: ok (…)`, `tick`…
pub fn event_text(step: &Step) -> String {
    match &step.event {
        Event::Command { peer, command, .. } => {
            let mut s = format!("{peer} {}", command_text(command));
            if let Some(id) = step.created {
                let _ = write!(s, " -> job {id}");
            }
            s
        }
        Event::BmpDone {
            request_id,
            failure,
            failed_boards,
            bmp_unreachable,
            ..
        } => {
            let mut outcome = match failure {
                None => "ok".to_string(),
                Some(f) => format!("FAILED: {f}"),
            };
            if !failed_boards.is_empty() {
                let _ = write!(outcome, " [failed boards {failed_boards:?}]");
            }
            if *bmp_unreachable {
                outcome.push_str(" [BMP not answering]");
            }
            match &step.completed {
                Some(r) => format!(
                    "BMP request {request_id} for job {} done: {outcome} ({})",
                    r.job_id,
                    bmp_text(r)
                ),
                None => format!("BMP request {request_id} (unknown) done: {outcome}"),
            }
        }
        Event::Tick { .. } => "tick".to_string(),
        Event::Configure { config, .. } => {
            let machines: Vec<String> = config
                .machines
                .iter()
                .map(|m| format!("{} {}x{}", m.name, m.width, m.height))
                .collect();
            format!("configure: machines [{}]", machines.join(", "))
        }
        Event::Restarted { grace_us: 0, .. } => {
            "server restarted (keepalive timers reset)".to_string()
        }
        Event::Restarted { grace_us, .. } => format!(
            "server restarted (keepalive timers reset, at least {:.1} s of grace)",
            *grace_us as f64 / 1e6
        ),
        Event::KeptAliveUnrecorded { job_ids, .. } => format!(
            "journal writable again: keepalive timers reset for jobs {job_ids:?}, whose \
             keepalives were answered while it could not be written"
        ),
        Event::Rules { rules, .. } => format!(
            "rules: single boards by {:?}, boards held after a failed power-off: {}, \
             board health: {}, power changes coalesced: {} (one per {} ms after a burst of {})",
            rules.pop,
            rules.hold_failed_power_off,
            rules.board_health,
            rules.coalesce_power,
            rules.power_change_gap_us / 1000,
            rules.power_change_burst
        ),
        Event::Admin { actor, action, .. } => format!("admin {actor}: {}", admin_text(action)),
    }
}

/// An admin action in words: `drain spin24 (3, 1, 2) "fan broken"`, `emergency stop …`.
pub fn admin_text(a: &crate::core::AdminAction) -> String {
    use crate::core::{AdminAction, BoardRef};
    let board = |b: &BoardRef| match b {
        BoardRef::Logical { machine, x, y, z } => format!("{machine} ({x}, {y}, {z})"),
        BoardRef::Physical {
            machine,
            cabinet,
            frame,
            board,
        } => format!("{machine} cabinet {cabinet} frame {frame} board {board}"),
        BoardRef::Ip(ip) => format!("board at IP {ip}"),
    };
    match a {
        AdminAction::Drain { board: b, reason } => {
            format!("drain {} ({})", board(b), Value::String(reason.clone()))
        }
        AdminAction::Undrain { board: b } => format!("undrain {}", board(b)),
        AdminAction::EmergencyStop { reason } => {
            format!("EMERGENCY STOP ({})", Value::String(reason.clone()))
        }
        AdminAction::Resume => "resume after emergency stop".to_string(),
    }
}

/// One line for one folded event: `#SEQ TIME EVENT => consequences`.
pub fn describe_step(step: &Step) -> String {
    let mut line = format!(
        "#{} {} {}",
        step.seq,
        format_iso(step.event.now_us()),
        event_text(step)
    );
    let mut effects: Vec<String> = step.logs.clone();
    effects.extend(
        step.issued
            .iter()
            .map(|r| format!("BMP request {} issued: {}", r.id, bmp_text(r))),
    );
    effects.extend(
        step.released
            .iter()
            .map(|id| format!("job {id}: boards released")),
    );
    if !effects.is_empty() {
        let _ = write!(line, " => {}", effects.join("; "));
    }
    line
}

pub(super) fn event_kind(e: &Event) -> &'static str {
    match e {
        Event::Command { .. } => "command",
        Event::BmpDone { .. } => "bmp_done",
        Event::Tick { .. } => "tick",
        Event::Configure { .. } => "configure",
        Event::Restarted { .. } => "restarted",
        Event::KeptAliveUnrecorded { .. } => "kept_alive_unrecorded",
        Event::Rules { .. } => "rules",
        Event::Admin { .. } => "admin",
    }
}

/// One folded event as a JSON object (one line of `--events --json`).
pub fn step_json(step: &Step) -> Value {
    let mut v = json!({
        "seq": step.seq,
        "time": format_iso(step.event.now_us()),
        "time_us": step.event.now_us(),
        "kind": event_kind(&step.event),
        "text": event_text(step),
        "event": serde_json::to_value(&step.event).unwrap_or(Value::Null),
        "log": step.logs,
        "bmp_issued": step.issued.iter().map(bmp_json).collect::<Vec<_>>(),
        "created": step.created,
        "allocated": step.allocated,
        "ended": step.ended.iter().map(|(id, r)| json!({"job_id": id, "reason": r})).collect::<Vec<_>>(),
        "released": step.released,
    });
    if let Event::Command { peer, command, .. } = &step.event {
        v["peer"] = json!(peer);
        v["command"] = json!(command_text(command));
    }
    if let Event::BmpDone { failure, .. } = &step.event {
        v["bmp_completed"] = step.completed.as_ref().map_or(Value::Null, bmp_json);
        v["failure"] = json!(failure);
    }
    v
}
