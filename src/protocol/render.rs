//! Replies and notifications to wire bytes, key for key as the original built its dicts.

use super::json::{self, Json};
use crate::core::types::{
    JobId, JobStateReply, JobSummary, MachineInfoReply, MachineSummary, Response, WhereIsReply,
};

/// `{"<key>": <value>}\n` in Python's `json.dumps` format.
fn line(key: &str, value: &Json) -> Vec<u8> {
    let mut out = String::from("{");
    json::write_str(&mut out, key);
    out.push_str(": ");
    json::write_json(&mut out, value);
    out.push_str("}\n");
    out.into_bytes()
}

pub(super) fn response(r: &Response) -> Vec<u8> {
    match r {
        // Admin answers arrive rendered (serde_json, compact: one line).
        Response::Json(text) => format!("{{\"return\": {text}}}\n").into_bytes(),
        Response::Error(msg) => exception(msg),
        // The commonest replies by far (a keepalive's, a poll's), written straight out
        // rather than built as a `Json` tree first: the same text, a tenth of the
        // allocations.
        Response::Null => b"{\"return\": null}\n".to_vec(),
        Response::JobState(s) => job_state_line(s),
        _ => line("return", &response_value(r)),
    }
}

/// `{"return": <job_state(s)>}\n`, written directly (what `line` would make of it).
fn job_state_line(s: &JobStateReply) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(160);
    let _ = write!(out, "{{\"return\": {{\"state\": {}, \"power\": ", s.state);
    out.push_str(match s.power {
        None => "null",
        Some(true) => "true",
        Some(false) => "false",
    });
    out.push_str(", \"keepalive\": ");
    opt_float(&mut out, s.keepalive);
    out.push_str(", \"reason\": ");
    opt_str(&mut out, s.reason.as_deref());
    out.push_str(", \"start_time\": ");
    opt_float(&mut out, s.start_time);
    out.push_str(", \"keepalivehost\": ");
    opt_str(&mut out, s.keepalivehost.as_deref());
    out.push_str("}}\n");
    out.into_bytes()
}

fn opt_float(out: &mut String, f: Option<f64>) {
    match f {
        None => out.push_str("null"),
        Some(f) => json::write_float(out, f),
    }
}

fn opt_str(out: &mut String, s: Option<&str>) {
    match s {
        None => out.push_str("null"),
        Some(s) => json::write_str(out, s),
    }
}

pub(super) fn exception(msg: &str) -> Vec<u8> {
    line("exception", &Json::Str(msg.to_owned()))
}

pub(super) fn jobs_changed(ids: &[JobId]) -> Vec<u8> {
    line(
        "jobs_changed",
        &Json::Array(ids.iter().map(|&id| uint(id)).collect()),
    )
}

pub(super) fn machines_changed(names: &[String]) -> Vec<u8> {
    line(
        "machines_changed",
        &Json::Array(names.iter().map(|n| string(n)).collect()),
    )
}

pub(super) fn version(v: &str) -> Vec<u8> {
    // (Every client asks this on connecting: written straight out, as `line` would.)
    let mut out = String::with_capacity(16 + v.len());
    out.push_str("{\"return\": ");
    json::write_str(&mut out, v);
    out.push_str("}\n");
    out.into_bytes()
}

fn response_value(r: &Response) -> Json {
    match r {
        Response::Null => Json::Null,
        Response::JobId(id) => uint(*id),
        Response::JobState(s) => job_state(s),
        Response::MachineInfo(m) => machine_info(m),
        Response::Jobs(jobs) => Json::Array(jobs.iter().map(job_summary).collect()),
        Response::Machines(machines) => Json::Array(machines.iter().map(machine_summary).collect()),
        Response::Triple(t) => opt(t.as_ref(), |t| uints(t)),
        Response::WhereIs(w) => opt(w.as_ref(), where_is),
        Response::Json(_) | Response::Error(_) => unreachable!("rendered by response()"),
    }
}

/// `get_job_state`: the original's `JobStateTuple._asdict()` order.
fn job_state(s: &JobStateReply) -> Json {
    object([
        ("state", uint(u64::from(s.state))),
        ("power", opt(s.power.as_ref(), |&b| Json::Bool(b))),
        ("keepalive", opt(s.keepalive.as_ref(), |&f| Json::Float(f))),
        ("reason", opt(s.reason.as_deref(), string)),
        (
            "start_time",
            opt(s.start_time.as_ref(), |&f| Json::Float(f)),
        ),
        ("keepalivehost", opt(s.keepalivehost.as_deref(), string)),
    ])
}

/// `get_job_machine_info`: the dict literal's order in the original.
fn machine_info(m: &MachineInfoReply) -> Json {
    object([
        ("width", opt(m.width.as_ref(), |&w| uint(u64::from(w)))),
        ("height", opt(m.height.as_ref(), |&h| uint(u64::from(h)))),
        (
            "connections",
            opt(m.connections.as_ref(), |conns| {
                Json::Array(
                    conns
                        .iter()
                        .map(|((x, y), host)| {
                            Json::Array(vec![Json::Array(vec![int(*x), int(*y)]), string(host)])
                        })
                        .collect(),
                )
            }),
        ),
        ("machine_name", opt(m.machine_name.as_deref(), string)),
        ("boards", opt(m.boards.as_ref(), |b| boards(b))),
    ])
}

/// One `list_jobs` entry: the original's `JobTuple._asdict()` order.
fn job_summary(j: &JobSummary) -> Json {
    object([
        ("job_id", uint(j.job_id)),
        ("owner", string(&j.owner)),
        ("start_time", Json::Float(j.start_time)),
        ("keepalive", opt(j.keepalive.as_ref(), |&f| Json::Float(f))),
        ("state", uint(u64::from(j.state))),
        ("power", opt(j.power.as_ref(), |&b| Json::Bool(b))),
        ("args", embedded(&j.args_json, || Json::Array(Vec::new()))),
        (
            "kwargs",
            embedded(&j.kwargs_json, || Json::Object(Vec::new())),
        ),
        (
            "allocated_machine_name",
            opt(j.allocated_machine_name.as_deref(), string),
        ),
        ("boards", opt(j.boards.as_ref(), |b| boards(b))),
        ("keepalivehost", string(&j.keepalivehost)),
    ])
}

/// One `list_machines` entry: the original's `MachineTuple._asdict()` order.
fn machine_summary(m: &MachineSummary) -> Json {
    object([
        ("name", string(&m.name)),
        (
            "tags",
            Json::Array(m.tags.iter().map(|t| string(t)).collect()),
        ),
        ("width", uint(u64::from(m.width))),
        ("height", uint(u64::from(m.height))),
        ("dead_boards", boards(&m.dead_boards)),
        (
            "dead_links",
            Json::Array(m.dead_links.iter().map(|l| uints(l)).collect()),
        ),
    ])
}

/// `where_is`: the dict literal's order in the original controller.
fn where_is(w: &WhereIsReply) -> Json {
    object([
        ("machine", string(&w.machine)),
        ("logical", uints(&w.logical)),
        ("physical", uints(&w.physical)),
        ("chip", ints(&w.chip)),
        ("board_chip", ints(&w.board_chip)),
        ("job_id", opt(w.job_id.as_ref(), |&id| uint(id))),
        ("job_chip", opt(w.job_chip.as_ref(), |c| ints(c))),
    ])
}

/// JSON text stored by the parser (`args_json`/`kwargs_json`), re-rendered so its layout is
/// Python's whatever wrote it. Text that does not parse (never produced by this module) falls
/// back to an empty value rather than corrupting the reply line.
fn embedded(text: &str, fallback: impl FnOnce() -> Json) -> Json {
    json::parse(text).unwrap_or_else(|_| fallback())
}

fn object<const N: usize>(entries: [(&str, Json); N]) -> Json {
    Json::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn opt<T: ?Sized>(value: Option<&T>, f: impl FnOnce(&T) -> Json) -> Json {
    value.map_or(Json::Null, f)
}

fn string(s: &str) -> Json {
    Json::Str(s.to_owned())
}

fn uint(n: u64) -> Json {
    Json::Int(i128::from(n))
}

fn int(n: i64) -> Json {
    Json::Int(i128::from(n))
}

fn uints(ns: &[u32]) -> Json {
    Json::Array(ns.iter().map(|&n| uint(u64::from(n))).collect())
}

fn ints(ns: &[i64]) -> Json {
    Json::Array(ns.iter().map(|&n| int(n)).collect())
}

fn boards(bs: &[[u32; 3]]) -> Json {
    Json::Array(bs.iter().map(|b| uints(b)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct renderers write exactly what the general path (a `Json` tree, then
    /// `json.dumps` layout) writes.
    #[test]
    fn direct_replies_match_the_general_path() {
        let states = [
            JobStateReply {
                state: 3,
                power: Some(true),
                keepalive: Some(60.0),
                reason: None,
                start_time: Some(1795252596.759151),
                keepalivehost: Some("127.0.0.1".to_owned()),
            },
            JobStateReply {
                state: 4,
                power: None,
                keepalive: None,
                reason: Some("Destroyed: \"bye\" \u{e9}\n".to_owned()),
                start_time: None,
                keepalivehost: None,
            },
            JobStateReply {
                state: 1,
                power: Some(false),
                keepalive: Some(0.25),
                reason: Some(String::new()),
                start_time: Some(-0.0),
                keepalivehost: Some("::1".to_owned()),
            },
        ];
        for s in &states {
            let general = line("return", &job_state(s));
            assert_eq!(
                String::from_utf8(job_state_line(s)).unwrap(),
                String::from_utf8(general).unwrap()
            );
        }
        assert_eq!(
            response(&Response::Null),
            line("return", &response_value(&Response::Null))
        );
        for v in ["1.0.0", "", "a \"quoted\" \\ \u{e9}\u{1f600}\n\u{7f}"] {
            assert_eq!(
                String::from_utf8(version(v)).unwrap(),
                String::from_utf8(line("return", &string(v))).unwrap()
            );
        }
    }
}
