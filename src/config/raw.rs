//! Stages 0 and 1 of reading a configuration: the JSON with duplicate keys kept (`Json`),
//! then a walk by hand that checks types, unknown and required keys and ranges, reporting
//! each problem with its path, into raw (not yet validated) machines. Shorthand forms
//! (`single_board`, `standard_ips`, `spinner_csv`) are read here, expanded in `validate`.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::address::parse_quad;
use super::spinner::spinner_csv;
use super::*;

// Stage 0: JSON with duplicate keys kept, so that they can be reported with their path.
// ---------------------------------------------------------------------------------------------

/// A JSON value whose objects keep every entry in file order. `serde_json::Value` silently
/// keeps the last of two equal keys, which would hide a mistake such as a second `"width"`.
#[derive(Debug)]
pub(super) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json, E> {
                serde_json::Number::from_f64(v)
                    .map(Json::Number)
                    .ok_or_else(|| E::custom("number is not finite"))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::String(v))
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
                Json::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Json::Array(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, Json>()? {
                    v.push((k, x));
                }
                Ok(Json::Object(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Json {
    /// How the value is described in "expected X, found Y" messages.
    pub(super) fn describe(&self) -> String {
        match self {
            Json::Null => "null".to_string(),
            Json::Bool(b) => format!("{b}"),
            Json::Number(n) => format!("{n}"),
            Json::String(s) if s.chars().count() > 40 => {
                format!("{:?}...", s.chars().take(40).collect::<String>())
            }
            Json::String(s) => format!("{s:?}"),
            Json::Array(_) => "an array".to_string(),
            Json::Object(_) => "an object".to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 1: types, unknown keys and required keys, each problem with its path.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }
}

/// `path.key`, or `key` at the top level.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// An object whose keys have been checked against the allowed ones.
pub(super) struct Obj<'a> {
    pub(super) path: String,
    pub(super) entries: &'a [(String, Json)],
}

impl<'a> Obj<'a> {
    /// The value of `key` (the first one, if duplicated) and its path.
    pub(super) fn get(&self, key: &str) -> Option<(&'a Json, String)> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| (v, join(&self.path, key)))
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    /// The value of a required `key`, reporting its absence.
    pub(super) fn required(&self, p: &mut Problems, key: &str) -> Option<(&'a Json, String)> {
        let found = self.get(key);
        if found.is_none() {
            p.add(&join(&self.path, key), "required field missing");
        }
        found
    }
}

pub(super) fn object<'a>(
    p: &mut Problems,
    v: &'a Json,
    path: &str,
    allowed: &[&str],
) -> Option<Obj<'a>> {
    let Json::Object(entries) = v else {
        p.add(path, format!("expected an object, found {}", v.describe()));
        return None;
    };
    let mut seen = BTreeSet::new();
    for (k, _) in entries {
        if !allowed.contains(&k.as_str()) {
            p.add(&join(path, k), "unknown field");
        } else if !seen.insert(k.as_str()) {
            p.add(&join(path, k), "duplicate field");
        }
    }
    Some(Obj {
        path: path.to_string(),
        entries,
    })
}

pub(super) fn array<'a>(p: &mut Problems, v: &'a Json, path: &str) -> Option<&'a [Json]> {
    match v {
        Json::Array(a) => Some(a),
        _ => {
            p.add(path, format!("expected an array, found {}", v.describe()));
            None
        }
    }
}

pub(super) fn string<'a>(p: &mut Problems, v: &'a Json, path: &str) -> Option<&'a str> {
    match v {
        Json::String(s) => Some(s),
        _ => {
            p.add(path, format!("expected a string, found {}", v.describe()));
            None
        }
    }
}

/// A non-empty string without leading or trailing white space: names, tags, hosts.
pub(super) fn word<'a>(p: &mut Problems, v: &'a Json, path: &str) -> Option<&'a str> {
    let s = string(p, v, path)?;
    if s.is_empty() {
        p.add(path, "must not be empty");
        None
    } else if s.trim() != s {
        p.add(path, format!("{s:?} has leading or trailing white space"));
        None
    } else {
        Some(s)
    }
}

/// A non-negative integer no larger than `max`.
pub(super) fn uint(p: &mut Problems, v: &Json, path: &str, max: u64) -> Option<u64> {
    let n = match v {
        Json::Number(n) => n.as_u64(),
        _ => None,
    };
    match n {
        Some(n) if n <= max => Some(n),
        Some(n) => {
            p.add(path, format!("must be at most {max}, found {n}"));
            None
        }
        None => {
            p.add(
                path,
                format!("expected a non-negative integer, found {}", v.describe()),
            );
            None
        }
    }
}

pub(super) fn uint32(p: &mut Problems, v: &Json, path: &str) -> Option<u32> {
    uint(p, v, path, u64::from(u32::MAX)).map(|n| n as u32)
}

/// A number of seconds: finite, within [`MAX_SECONDS`], and greater than zero unless
/// `zero_ok` (a delay may be zero; a timeout or a check interval may not).
pub(super) fn seconds(p: &mut Problems, v: &Json, path: &str, zero_ok: bool) -> Option<f64> {
    let Json::Number(n) = v else {
        p.add(
            path,
            format!("expected a number of seconds, found {}", v.describe()),
        );
        return None;
    };
    let s = n.as_f64().unwrap_or(f64::NAN);
    let ok_low = if zero_ok { s >= 0.0 } else { s > 0.0 };
    if !s.is_finite() || !ok_low || s > MAX_SECONDS {
        let low = if zero_ok {
            "at least 0"
        } else {
            "greater than 0"
        };
        p.add(
            path,
            format!("must be a number of seconds {low} and at most {MAX_SECONDS}, found {n}"),
        );
        return None;
    }
    Some(s)
}

pub(super) fn link(p: &mut Problems, v: &Json, path: &str) -> Option<Link> {
    let l = match v {
        Json::String(s) => Link::from_name(s),
        Json::Number(n) => n.as_u64().and_then(Link::from_number),
        _ => None,
    };
    if l.is_none() {
        p.add(
            path,
            format!(
                "expected a link name (east, north_east, north, west, south_west, south) \
                 or number 0-5, found {}",
                v.describe()
            ),
        );
    }
    l
}

/// `[x, y, z]` (with `n == 3`) or `[x, y, z, link]` (with `n == 4`): the fixed-length arrays
/// of `dead_boards` and `dead_links`.
pub(super) fn tuple<'a>(
    p: &mut Problems,
    v: &'a Json,
    path: &str,
    n: usize,
    what: &str,
) -> Option<&'a [Json]> {
    let a = array(p, v, path)?;
    if a.len() != n {
        p.add(
            path,
            format!("expected {what}, found an array of {} elements", a.len()),
        );
        return None;
    }
    Some(a)
}

pub(super) fn board_xyz(p: &mut Problems, a: &[Json], path: &str) -> Option<Board> {
    let x = uint32(p, &a[0], &index(path, 0));
    let y = uint32(p, &a[1], &index(path, 1));
    let z = uint32(p, &a[2], &index(path, 2));
    Some(Board::new(x?, y?, z?))
}

/// A board as the file gives it; `ip` is absent in the `standard_ips` form until derived.
#[derive(Clone, Debug)]
pub(super) struct RawBoard {
    /// Where the board was given (`machines[0].boards[3]` or `machines[0].spinner_csv:4`).
    pub(super) path: String,
    /// Where its IP was given or derived from.
    pub(super) ip_path: String,
    pub(super) logical: Board,
    pub(super) cabinet: u32,
    pub(super) frame: u32,
    pub(super) board: u32,
    pub(super) ip: Option<String>,
}

#[derive(Clone, Debug)]
pub(super) struct RawBmp {
    pub(super) path: String,
    pub(super) cabinet: u32,
    pub(super) frame: u32,
    pub(super) address: String,
}

/// The six dotted-quad parameters of `standard_ips`, as 32-bit integers.
#[derive(Clone, Debug)]
pub(super) struct StandardIps {
    pub(super) base_ip: u32,
    pub(super) cabinet_stride: u32,
    pub(super) frame_stride: u32,
    pub(super) board_stride: u32,
    pub(super) bmp_offset: u32,
    pub(super) spinnaker_offset: u32,
}

#[derive(Debug)]
pub(super) enum Form {
    Explicit {
        bmps: Vec<RawBmp>,
        boards: Vec<RawBoard>,
    },
    SingleBoard {
        bmp: String,
        ip: String,
    },
    Standard {
        ips: StandardIps,
        boards: Vec<RawBoard>,
    },
}

#[derive(Debug)]
pub(super) struct RawMachine {
    pub(super) path: String,
    pub(super) name: String,
    pub(super) tags: Vec<String>,
    pub(super) size: Option<(Option<u32>, Option<u32>)>,
    pub(super) dead_boards: Vec<(Board, String)>,
    pub(super) dead_links: Vec<(Board, Link, String)>,
    pub(super) form: Form,
}

pub(super) struct RawConfig {
    pub(super) config: Config,
    pub(super) machines: Vec<RawMachine>,
}

pub(super) const TOP_KEYS: &[&str] = &[
    "ip",
    "port",
    "timeout_check_interval",
    "max_retired_jobs",
    "seconds_before_free",
    "bmp",
    "machines",
    "health",
    "simulated_faults",
];
pub(super) const HEALTH_KEYS: &[&str] = &[
    "drain_after_failures",
    "drain_after_reports",
    "recovery_attempts",
];
/// Largest value of a `health` threshold.
pub(super) const MAX_HEALTH_COUNT: u64 = 1000;
pub(super) const BMP_KEYS: &[&str] = &[
    "post_power_on_delay",
    "power_on_timeout",
    "command_timeout",
    "command_retries",
    "request_attempts",
    "retry_delay",
    "fpga_attempts",
];
pub(super) const MACHINE_KEYS: &[&str] = &[
    "name",
    "tags",
    "width",
    "height",
    "dead_boards",
    "dead_links",
    "bmps",
    "boards",
    "single_board",
    "standard_ips",
    "spinner_csv",
];
pub(super) const STANDARD_IPS_KEYS: &[&str] = &[
    "base_ip",
    "cabinet_stride",
    "frame_stride",
    "board_stride",
    "bmp_offset",
    "spinnaker_offset",
];

/// Stage 1 of the whole file. Top-level values are simple enough to be range-checked here;
/// machines that have any problem are left out so that stage 2 does not pile follow-on
/// errors onto them.
pub(super) fn raw_config(p: &mut Problems, json: &Json, base_dir: &Path) -> RawConfig {
    let mut config = Config::default();
    let mut machines = Vec::new();
    let Some(top) = object(p, json, "", TOP_KEYS) else {
        return RawConfig { config, machines };
    };
    if let Some((v, path)) = top.get("ip") {
        // The original's "" meant every interface, as does "0.0.0.0".
        match string(p, v, &path) {
            Some("") => config.ip = "0.0.0.0".to_string(),
            Some(s) => match check_host(s) {
                Ok(()) => config.ip = s.to_string(),
                Err(e) => p.add(&path, e),
            },
            None => {}
        }
    }
    if let Some((v, path)) = top.get("port") {
        // Port 0 asks the OS for any free port, which tests use.
        if let Some(n) = uint(p, v, &path, u64::from(u16::MAX)) {
            config.port = n as u16;
        }
    }
    if let Some((v, path)) = top.get("timeout_check_interval") {
        if let Some(s) = seconds(p, v, &path, false) {
            config.timeout_check_interval_s = s;
        }
    }
    if let Some((v, path)) = top.get("max_retired_jobs") {
        if let Some(n) = uint(p, v, &path, MAX_RETIRED_JOBS) {
            config.max_retired_jobs = n as usize;
        }
    }
    if let Some((v, path)) = top.get("seconds_before_free") {
        if let Some(s) = seconds(p, v, &path, true) {
            config.seconds_before_free_s = s;
        }
    }
    if let Some((v, path)) = top.get("bmp") {
        if let Some(b) = object(p, v, &path, BMP_KEYS) {
            let t = &mut config.bmp;
            let secs = |p: &mut Problems, key: &str, zero_ok: bool, field: &mut f64| {
                if let Some((v, path)) = b.get(key) {
                    if let Some(s) = seconds(p, v, &path, zero_ok) {
                        *field = s;
                    }
                }
            };
            secs(p, "post_power_on_delay", true, &mut t.post_power_on_delay_s);
            secs(p, "power_on_timeout", false, &mut t.power_on_timeout_s);
            secs(p, "command_timeout", false, &mut t.command_timeout_s);
            secs(p, "retry_delay", true, &mut t.retry_delay_s);
            // Retries may be zero (send once); attempts may not (nothing would be tried).
            let count = |p: &mut Problems, key: &str, min: u64, field: &mut u32| {
                if let Some((v, path)) = b.get(key) {
                    match uint(p, v, &path, MAX_ATTEMPTS) {
                        Some(n) if n < min => {
                            p.add(&path, format!("must be at least {min}, found {n}"))
                        }
                        Some(n) => *field = n as u32,
                        None => {}
                    }
                }
            };
            count(p, "command_retries", 0, &mut t.command_retries);
            count(p, "request_attempts", 1, &mut t.request_attempts);
            count(p, "fpga_attempts", 1, &mut t.fpga_attempts);
        }
    }
    if let Some((v, path)) = top.get("health") {
        if let Some(h) = object(p, v, &path, HEALTH_KEYS) {
            let t = &mut config.health;
            for (key, field) in [
                ("drain_after_failures", &mut t.drain_after_failures),
                ("drain_after_reports", &mut t.drain_after_reports),
                ("recovery_attempts", &mut t.recovery_attempts),
            ] {
                if let Some((v, path)) = h.get(key) {
                    if let Some(n) = uint(p, v, &path, MAX_HEALTH_COUNT) {
                        *field = n as u32;
                    }
                }
            }
        }
    }
    if let Some((v, path)) = top.get("simulated_faults") {
        if let Some(list) = array(p, v, &path) {
            for (i, f) in list.iter().enumerate() {
                let path = index(&path, i);
                if let Some(spec) = string(p, f, &path) {
                    match crate::bmp::parse_fault_spec(spec) {
                        Ok(_) => config.simulated_faults.push(spec.to_string()),
                        Err(e) => p.add(&path, e),
                    }
                }
            }
        }
    }
    if let Some((v, path)) = top.get("machines") {
        if let Some(list) = array(p, v, &path) {
            for (i, m) in list.iter().enumerate() {
                let before = p.0.len();
                let raw = raw_machine(p, m, &index(&path, i), base_dir);
                if let (Some(raw), true) = (raw, p.0.len() == before) {
                    machines.push(raw);
                }
            }
        }
    }
    RawConfig { config, machines }
}

pub(super) fn raw_machine(
    p: &mut Problems,
    v: &Json,
    path: &str,
    base_dir: &Path,
) -> Option<RawMachine> {
    let m = object(p, v, path, MACHINE_KEYS)?;
    let name = m
        .required(p, "name")
        .and_then(|(v, path)| word(p, v, &path));
    let mut tags = vec!["default".to_string()];
    if let Some((v, path)) = m.get("tags") {
        if let Some(list) = array(p, v, &path) {
            tags = list
                .iter()
                .enumerate()
                .filter_map(|(i, t)| word(p, t, &index(&path, i)).map(str::to_string))
                .collect();
        }
    }
    let width = m.get("width").and_then(|(v, path)| uint32(p, v, &path));
    let height = m.get("height").and_then(|(v, path)| uint32(p, v, &path));
    let mut dead_boards = Vec::new();
    if let Some((v, path)) = m.get("dead_boards") {
        for (i, d) in array(p, v, &path).unwrap_or_default().iter().enumerate() {
            let path = index(&path, i);
            if let Some(a) = tuple(p, d, &path, 3, "[x, y, z]") {
                if let Some(b) = board_xyz(p, a, &path) {
                    dead_boards.push((b, path));
                }
            }
        }
    }
    let mut dead_links = Vec::new();
    if let Some((v, path)) = m.get("dead_links") {
        for (i, d) in array(p, v, &path).unwrap_or_default().iter().enumerate() {
            let path = index(&path, i);
            if let Some(a) = tuple(p, d, &path, 4, "[x, y, z, link]") {
                let b = board_xyz(p, a, &path);
                let l = link(p, &a[3], &index(&path, 3));
                if let (Some(b), Some(l)) = (b, l) {
                    dead_links.push((b, l, path));
                }
            }
        }
    }

    let form = if let Some((v, sb_path)) = m.get("single_board") {
        // The shorthand fixes everything but the name, tags and the two addresses.
        for key in [
            "width",
            "height",
            "dead_boards",
            "dead_links",
            "bmps",
            "boards",
            "standard_ips",
            "spinner_csv",
        ] {
            if m.has(key) {
                p.add(&join(path, key), "not allowed together with single_board");
            }
        }
        let sb = object(p, v, &sb_path, &["bmp", "ip"])?;
        let bmp = sb
            .required(p, "bmp")
            .and_then(|(v, path)| string(p, v, &path));
        let ip = sb
            .required(p, "ip")
            .and_then(|(v, path)| string(p, v, &path));
        Form::SingleBoard {
            bmp: bmp?.to_string(),
            ip: ip?.to_string(),
        }
    } else if let Some((v, si_path)) = m.get("standard_ips") {
        if m.has("bmps") {
            p.add(
                &join(path, "bmps"),
                "not allowed together with standard_ips (BMP addresses are derived)",
            );
        }
        let si = object(p, v, &si_path, STANDARD_IPS_KEYS)?;
        let mut quad = |key: &str, default: &str| -> Option<u32> {
            match si.get(key) {
                None => parse_quad(default).ok(),
                Some((v, path)) => {
                    let s = string(p, v, &path)?;
                    parse_quad(s).map_err(|e| p.add(&path, e)).ok()
                }
            }
        };
        // The defaults are the original's `with_standard_ips` defaults.
        let ips = (|| {
            Some(StandardIps {
                base_ip: quad("base_ip", "192.168.0.0")?,
                cabinet_stride: quad("cabinet_stride", "0.0.5.0")?,
                frame_stride: quad("frame_stride", "0.0.1.0")?,
                board_stride: quad("board_stride", "0.0.0.8")?,
                bmp_offset: quad("bmp_offset", "0.0.0.0")?,
                spinnaker_offset: quad("spinnaker_offset", "0.0.0.1")?,
            })
        })();
        let boards = match (m.get("boards"), m.get("spinner_csv")) {
            (Some(_), Some((_, csv_path))) => {
                p.add(&csv_path, "not allowed together with boards");
                None
            }
            (Some((v, path)), None) => raw_boards(p, v, &path, false),
            (None, Some((v, path))) => {
                let file = string(p, v, &path)?;
                spinner_csv(p, &base_dir.join(file), &path)
            }
            (None, None) => {
                p.add(path, "standard_ips needs boards or spinner_csv");
                None
            }
        };
        Form::Standard {
            ips: ips?,
            boards: boards?,
        }
    } else {
        if let Some((_, csv_path)) = m.get("spinner_csv") {
            p.add(
                &csv_path,
                "only allowed together with standard_ips (the CSV gives no IP addresses)",
            );
        }
        let bmps = m
            .required(p, "bmps")
            .and_then(|(v, path)| raw_bmps(p, v, &path));
        let boards = m
            .required(p, "boards")
            .and_then(|(v, path)| raw_boards(p, v, &path, true));
        Form::Explicit {
            bmps: bmps?,
            boards: boards?,
        }
    };
    let size = match (m.has("width"), m.has("height")) {
        (false, false) => None,
        _ => Some((width, height)),
    };
    Some(RawMachine {
        path: path.to_string(),
        name: name?.to_string(),
        tags,
        size,
        dead_boards,
        dead_links,
        form,
    })
}

pub(super) fn raw_bmps(p: &mut Problems, v: &Json, path: &str) -> Option<Vec<RawBmp>> {
    let list = array(p, v, path)?;
    let mut out = Vec::new();
    for (i, b) in list.iter().enumerate() {
        let path = index(path, i);
        let Some(o) = object(p, b, &path, &["cabinet", "frame", "address"]) else {
            continue;
        };
        let cabinet = o
            .required(p, "cabinet")
            .and_then(|(v, path)| uint32(p, v, &path));
        let frame = o
            .required(p, "frame")
            .and_then(|(v, path)| uint32(p, v, &path));
        let address = o
            .required(p, "address")
            .and_then(|(v, path)| string(p, v, &path));
        if let (Some(cabinet), Some(frame), Some(address)) = (cabinet, frame, address) {
            out.push(RawBmp {
                path,
                cabinet,
                frame,
                address: address.to_string(),
            });
        }
    }
    Some(out)
}

pub(super) fn raw_boards(
    p: &mut Problems,
    v: &Json,
    path: &str,
    with_ip: bool,
) -> Option<Vec<RawBoard>> {
    let list = array(p, v, path)?;
    let keys: &[&str] = if with_ip {
        &["x", "y", "z", "cabinet", "frame", "board", "ip"]
    } else {
        &["x", "y", "z", "cabinet", "frame", "board"]
    };
    let mut out = Vec::new();
    for (i, b) in list.iter().enumerate() {
        let path = index(path, i);
        let Some(o) = object(p, b, &path, keys) else {
            continue;
        };
        let mut num = |key: &str| o.required(p, key).and_then(|(v, path)| uint32(p, v, &path));
        let (x, y, z) = (num("x"), num("y"), num("z"));
        let (cabinet, frame, board) = (num("cabinet"), num("frame"), num("board"));
        let ip = if with_ip {
            o.required(p, "ip")
                .and_then(|(v, path)| string(p, v, &path))
                .map(|s| Some(s.to_string()))
        } else {
            Some(None)
        };
        if let (Some(x), Some(y), Some(z), Some(cabinet), Some(frame), Some(board), Some(ip)) =
            (x, y, z, cabinet, frame, board, ip)
        {
            let ip_path = if with_ip {
                join(&path, "ip")
            } else {
                path.clone()
            };
            out.push(RawBoard {
                path,
                ip_path,
                logical: Board::new(x, y, z),
                cabinet,
                frame,
                board,
                ip,
            });
        }
    }
    Some(out)
}
