//! The server's configuration: the JSON file format of `docs/configuration.md`, validated
//! into plain data that the core folds and the journal records.
//!
//! [`load`] reads a file and [`parse`] a string. Parsing happens in two stages (as ripgrep
//! separates low-level from high-level arguments):
//!
//! 1. *Raw*: the JSON is walked by hand (not derived), so that every unknown key, duplicate
//!    key, wrong type and out-of-range number is reported with its path
//!    (`machines[2].boardz: unknown field`) rather than only the first one serde meets.
//!    Shorthand forms (`single_board`, `standard_ips`, `spinner_csv`) are read here too.
//! 2. *Validated*: shorthands are expanded exactly as the original's `Machine.single_board`,
//!    `Machine.with_standard_ips` and `board_locations_from_spinner` did, and each machine is
//!    checked alone (size, positions, duplicates, BMPs) and against the others (unique names,
//!    BMP addresses and board IPs), e.g.
//!    `machines[0].boards[5]: board (3, 0, 0) lies outside the 2x2 machine`.
//!
//! A machine with a stage-1 problem is left out of stage 2 so that one mistake does not
//! cascade into a page of follow-on errors; everything else is reported in one go, and the
//! whole file is rejected if anything is wrong ([`ConfigError`] lists one problem per line).
//!
//! A validated [`Config`] is the value carried by the core's configuration event, so it is
//! deliberately plain: vectors in a canonical (sorted) order, no maps keyed by tuples, so that
//! equal configurations compare equal whatever order the file listed things in.
//! [`Config::to_json`] writes it back in the explicit form.

use serde::Deserialize;

use crate::core::coordinates::{Board, Link};
// The validated types are the core's (it folds them); the server reads and validates them.
pub use crate::core::config::{
    check_host, split_address, BmpConfig, BmpTimings, BoardConfig, Config, HealthConfig,
    MachineConfig, DEFAULT_BMP_PORT,
};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

/// The largest width or height, in triads, a machine may have. The real machines are at most
/// 20x20; the bound keeps a typo (`"width": 20000`) from making validation enumerate billions
/// of board positions.
pub const MAX_TRIADS_PER_SIDE: u32 = 256;

/// The largest number of seconds any duration in the file may hold (one year). It keeps the
/// values far from the range where converting them to a `Duration` or adding them to a clock
/// would overflow.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// The largest `max_retired_jobs`: each retired job costs a few dozen bytes.
pub const MAX_RETIRED_JOBS: u64 = 10_000_000;

/// The largest value of any retry or attempt count in the `bmp` block.
pub const MAX_ATTEMPTS: u64 = 1000;

/// The number of board slots in a frame: board numbers run from 0 to 23.
pub const BOARDS_PER_FRAME: u32 = 24;

/// One thing wrong with a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where in the file, e.g. `machines[2].boards[5].ip`; empty for the file as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a configuration was rejected: every problem found, in file order as far as possible.
/// The file is rejected whole, so there is always at least one problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems, each with its path.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn single(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            problems: vec![Problem {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

/// Reads and validates the configuration file at `path`. A relative `spinner_csv` path is
/// taken relative to the directory holding the file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::single(
            "",
            format!("cannot read configuration file {}: {e}", path.display()),
        )
    })?;
    let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&text, base_dir)
}

/// Parses and validates a configuration from its JSON text. `base_dir` is where relative
/// `spinner_csv` paths are looked up (the configuration file's directory).
pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    // A syntax error leaves nothing to walk, so it is the one problem that stops everything.
    let json: Json = serde_json::from_str(text)
        .map_err(|e| ConfigError::single("", format!("invalid JSON: {e}")))?;
    let mut p = Problems::default();
    let raw = raw_config(&mut p, &json, base_dir);
    let config = validate(&mut p, raw);
    if p.0.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems: p.0 })
    }
}

// Stage 0: JSON with duplicate keys kept, so that they can be reported with their path.
// ---------------------------------------------------------------------------------------------

/// A JSON value whose objects keep every entry in file order. `serde_json::Value` silently
/// keeps the last of two equal keys, which would hide a mistake such as a second `"width"`.
#[derive(Debug)]
enum Json {
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
    fn describe(&self) -> String {
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
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }
}

/// `path.key`, or `key` at the top level.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// An object whose keys have been checked against the allowed ones.
struct Obj<'a> {
    path: String,
    entries: &'a [(String, Json)],
}

impl<'a> Obj<'a> {
    /// The value of `key` (the first one, if duplicated) and its path.
    fn get(&self, key: &str) -> Option<(&'a Json, String)> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| (v, join(&self.path, key)))
    }

    fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    /// The value of a required `key`, reporting its absence.
    fn required(&self, p: &mut Problems, key: &str) -> Option<(&'a Json, String)> {
        let found = self.get(key);
        if found.is_none() {
            p.add(&join(&self.path, key), "required field missing");
        }
        found
    }
}

fn object<'a>(p: &mut Problems, v: &'a Json, path: &str, allowed: &[&str]) -> Option<Obj<'a>> {
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

fn array<'a>(p: &mut Problems, v: &'a Json, path: &str) -> Option<&'a [Json]> {
    match v {
        Json::Array(a) => Some(a),
        _ => {
            p.add(path, format!("expected an array, found {}", v.describe()));
            None
        }
    }
}

fn string<'a>(p: &mut Problems, v: &'a Json, path: &str) -> Option<&'a str> {
    match v {
        Json::String(s) => Some(s),
        _ => {
            p.add(path, format!("expected a string, found {}", v.describe()));
            None
        }
    }
}

/// A non-empty string without leading or trailing white space: names, tags, hosts.
fn word<'a>(p: &mut Problems, v: &'a Json, path: &str) -> Option<&'a str> {
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
fn uint(p: &mut Problems, v: &Json, path: &str, max: u64) -> Option<u64> {
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

fn uint32(p: &mut Problems, v: &Json, path: &str) -> Option<u32> {
    uint(p, v, path, u64::from(u32::MAX)).map(|n| n as u32)
}

/// A number of seconds: finite, within [`MAX_SECONDS`], and greater than zero unless
/// `zero_ok` (a delay may be zero; a timeout or a check interval may not).
fn seconds(p: &mut Problems, v: &Json, path: &str, zero_ok: bool) -> Option<f64> {
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

fn link(p: &mut Problems, v: &Json, path: &str) -> Option<Link> {
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
fn tuple<'a>(
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

fn board_xyz(p: &mut Problems, a: &[Json], path: &str) -> Option<Board> {
    let x = uint32(p, &a[0], &index(path, 0));
    let y = uint32(p, &a[1], &index(path, 1));
    let z = uint32(p, &a[2], &index(path, 2));
    Some(Board::new(x?, y?, z?))
}

/// A board as the file gives it; `ip` is absent in the `standard_ips` form until derived.
#[derive(Clone, Debug)]
struct RawBoard {
    /// Where the board was given (`machines[0].boards[3]` or `machines[0].spinner_csv:4`).
    path: String,
    /// Where its IP was given or derived from.
    ip_path: String,
    logical: Board,
    cabinet: u32,
    frame: u32,
    board: u32,
    ip: Option<String>,
}

#[derive(Clone, Debug)]
struct RawBmp {
    path: String,
    cabinet: u32,
    frame: u32,
    address: String,
}

/// The six dotted-quad parameters of `standard_ips`, as 32-bit integers.
#[derive(Clone, Debug)]
struct StandardIps {
    base_ip: u32,
    cabinet_stride: u32,
    frame_stride: u32,
    board_stride: u32,
    bmp_offset: u32,
    spinnaker_offset: u32,
}

#[derive(Debug)]
enum Form {
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
struct RawMachine {
    path: String,
    name: String,
    tags: Vec<String>,
    size: Option<(Option<u32>, Option<u32>)>,
    dead_boards: Vec<(Board, String)>,
    dead_links: Vec<(Board, Link, String)>,
    form: Form,
}

struct RawConfig {
    config: Config,
    machines: Vec<RawMachine>,
}

const TOP_KEYS: &[&str] = &[
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
const HEALTH_KEYS: &[&str] = &[
    "drain_after_failures",
    "drain_after_reports",
    "recovery_attempts",
];
/// Largest value of a `health` threshold.
const MAX_HEALTH_COUNT: u64 = 1000;
const BMP_KEYS: &[&str] = &[
    "post_power_on_delay",
    "power_on_timeout",
    "command_timeout",
    "command_retries",
    "request_attempts",
    "retry_delay",
    "fpga_attempts",
];
const MACHINE_KEYS: &[&str] = &[
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
const STANDARD_IPS_KEYS: &[&str] = &[
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
fn raw_config(p: &mut Problems, json: &Json, base_dir: &Path) -> RawConfig {
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

fn raw_machine(p: &mut Problems, v: &Json, path: &str, base_dir: &Path) -> Option<RawMachine> {
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

fn raw_bmps(p: &mut Problems, v: &Json, path: &str) -> Option<Vec<RawBmp>> {
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

fn raw_boards(p: &mut Problems, v: &Json, path: &str, with_ip: bool) -> Option<Vec<RawBoard>> {
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

/// A dotted quad `a.b.c.d` as the 32-bit number `a·2²⁴ + b·2¹⁶ + c·2⁸ + d`.
fn parse_quad(s: &str) -> Result<u32, String> {
    let bad =
        || format!("malformed IPv4 address {s:?} (expected four numbers 0-255 separated by dots)");
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return Err(bad());
    }
    let mut n = 0u32;
    for part in parts {
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let byte: u32 = part.parse().map_err(|_| bad())?;
        if byte > 255 {
            return Err(bad());
        }
        n = (n << 8) | byte;
    }
    Ok(n)
}

fn format_quad(n: u32) -> String {
    let [a, b, c, d] = n.to_be_bytes();
    format!("{a}.{b}.{c}.{d}")
}

/// Reads a `spinner-ethernet-chips` CSV as the original's `board_locations_from_spinner`:
/// each row gives the chip coordinate of a board's Ethernet chip and its (cabinet, frame,
/// board); the machine's size in triads is inferred from the largest chip coordinates
/// (`max // 12 + 1`), and each chip is converted to the board holding it with
/// [`chip_to_board`](crate::core::coordinates::chip_to_board) on a machine of that size.
fn spinner_csv(p: &mut Problems, file: &Path, path: &str) -> Option<Vec<RawBoard>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            p.add(path, format!("cannot read {}: {e}", file.display()));
            return None;
        }
    };
    let clean = |s: &str| s.trim().trim_matches('"').trim().to_string();
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        p.add(
            path,
            format!(
                "{} is empty (expected a header line naming board,cabinet,frame,x,y)",
                file.display()
            ),
        );
        return None;
    };
    let columns: Vec<String> = header.split(',').map(clean).collect();
    let mut col = BTreeMap::new();
    for name in ["board", "cabinet", "frame", "x", "y"] {
        match columns.iter().position(|c| c == name) {
            Some(i) => {
                col.insert(name, i);
            }
            None => p.add(
                path,
                format!("{}: the header line has no column {name:?}", file.display()),
            ),
        }
    }
    if col.len() < 5 {
        return None;
    }
    let before = p.0.len();
    // (chip x, chip y) -> (line path, cabinet, frame, board), in file order.
    let mut chips: Vec<((u32, u32), String, [u32; 3])> = Vec::new();
    let mut seen: HashMap<(u32, u32), String> = HashMap::new();
    for (n, line) in lines {
        let line_path = format!("{path}:{}", n + 1);
        let fields: Vec<String> = line.split(',').map(clean).collect();
        let mut get = |name: &str| -> Option<u32> {
            let text = fields.get(col[name]).map(String::as_str).unwrap_or("");
            match text.parse::<u32>() {
                Ok(v) => Some(v),
                Err(_) => {
                    p.add(
                        &line_path,
                        format!("column {name:?}: expected a non-negative integer, found {text:?}"),
                    );
                    None
                }
            }
        };
        let (b, c, f, x, y) = (
            get("board"),
            get("cabinet"),
            get("frame"),
            get("x"),
            get("y"),
        );
        let (Some(b), Some(c), Some(f), Some(x), Some(y)) = (b, c, f, x, y) else {
            continue;
        };
        if let Some(first) = seen.get(&(x, y)) {
            p.add(
                &line_path,
                format!("chip ({x}, {y}) is already given at {first}"),
            );
            continue;
        }
        seen.insert((x, y), line_path.clone());
        chips.push(((x, y), line_path, [c, f, b]));
    }
    if p.0.len() != before {
        return None;
    }
    let max_x = chips.iter().map(|((x, _), _, _)| *x).max().unwrap_or(0);
    let max_y = chips.iter().map(|((_, y), _, _)| *y).max().unwrap_or(0);
    let w_chips = (i64::from(max_x) / 12 + 1) * 12;
    let h_chips = (i64::from(max_y) / 12 + 1) * 12;
    let mut by_board: HashMap<Board, String> = HashMap::new();
    let mut out = Vec::new();
    for ((x, y), line_path, [c, f, b]) in chips {
        let logical =
            crate::core::coordinates::chip_to_board(i64::from(x), i64::from(y), w_chips, h_chips);
        // The original's dictionary would silently keep the last of two such rows.
        if let Some(first) = by_board.get(&logical) {
            p.add(
                &line_path,
                format!("chip ({x}, {y}) is on board {logical}, already given at {first}"),
            );
            continue;
        }
        by_board.insert(logical, line_path.clone());
        out.push(RawBoard {
            path: line_path.clone(),
            ip_path: line_path,
            logical,
            cabinet: c,
            frame: f,
            board: b,
            ip: None,
        });
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Stage 2: shorthands expanded, every machine checked alone, then the machines against each
// other.
// ---------------------------------------------------------------------------------------------

/// A machine whose shorthand has been expanded: every BMP and board IP known.
struct Resolved {
    raw: RawMachine,
    bmps: Vec<RawBmp>,
    boards: Vec<RawBoard>,
}

fn resolve(mut raw: RawMachine) -> Resolved {
    let form = std::mem::replace(
        &mut raw.form,
        Form::Explicit {
            bmps: Vec::new(),
            boards: Vec::new(),
        },
    );
    let (bmps, boards) = match form {
        Form::Explicit { bmps, boards } => (bmps, boards),
        Form::SingleBoard { bmp, ip } => {
            let sb = join(&raw.path, "single_board");
            // As the original's `single_board`: a 1x1 machine whose triad has only board 0.
            raw.size = Some((Some(1), Some(1)));
            raw.dead_boards = vec![
                (Board::new(0, 0, 1), sb.clone()),
                (Board::new(0, 0, 2), sb.clone()),
            ];
            raw.dead_links = Vec::new();
            let bmps = vec![RawBmp {
                path: join(&sb, "bmp"),
                cabinet: 0,
                frame: 0,
                address: bmp,
            }];
            let boards = vec![RawBoard {
                path: sb.clone(),
                ip_path: join(&sb, "ip"),
                logical: Board::new(0, 0, 0),
                cabinet: 0,
                frame: 0,
                board: 0,
                ip: Some(ip),
            }];
            (bmps, boards)
        }
        Form::Standard { ips, mut boards } => {
            // The original computes with unbounded integers and keeps the low 32 bits when
            // formatting, which is wrapping 32-bit arithmetic.
            let frame_base = |c: u32, f: u32| {
                ips.base_ip
                    .wrapping_add(ips.cabinet_stride.wrapping_mul(c))
                    .wrapping_add(ips.frame_stride.wrapping_mul(f))
            };
            let si = join(&raw.path, "standard_ips");
            let frames: BTreeSet<(u32, u32)> =
                boards.iter().map(|b| (b.cabinet, b.frame)).collect();
            let bmps = frames
                .into_iter()
                .map(|(c, f)| RawBmp {
                    path: si.clone(),
                    cabinet: c,
                    frame: f,
                    address: format_quad(frame_base(c, f).wrapping_add(ips.bmp_offset)),
                })
                .collect();
            for b in &mut boards {
                let ip = frame_base(b.cabinet, b.frame)
                    .wrapping_add(ips.board_stride.wrapping_mul(b.board))
                    .wrapping_add(ips.spinnaker_offset);
                b.ip = Some(format_quad(ip));
            }
            (bmps, boards)
        }
    };
    Resolved { raw, bmps, boards }
}

fn inside(b: Board, w: u32, h: u32) -> bool {
    b.x < w && b.y < h && b.z < 3
}

/// Checks one machine alone; `None` if it has any problem.
fn validate_machine(p: &mut Problems, r: &Resolved) -> Option<MachineConfig> {
    let before = p.0.len();
    let m = &r.raw;
    let (width, height) = match m.size {
        Some((Some(w), Some(h))) => {
            for (v, key) in [(w, "width"), (h, "height")] {
                if v == 0 || v > MAX_TRIADS_PER_SIDE {
                    p.add(
                        &join(&m.path, key),
                        format!("must be 1-{MAX_TRIADS_PER_SIDE} triads, found {v}"),
                    );
                }
            }
            (w, h)
        }
        Some((w, _)) => {
            let given = if w.is_some() { "width" } else { "height" };
            p.add(
                &m.path,
                format!("width and height must be given together (only {given} is given)"),
            );
            return None;
        }
        None => {
            let all = r
                .boards
                .iter()
                .map(|b| b.logical)
                .chain(m.dead_boards.iter().map(|(b, _)| *b));
            let Some((w, h)) = all.fold(None, |acc: Option<(u32, u32)>, b| {
                let (w, h) = acc.unwrap_or((0, 0));
                Some((w.max(b.x.saturating_add(1)), h.max(b.y.saturating_add(1))))
            }) else {
                p.add(
                    &m.path,
                    "cannot infer width and height: no boards and no dead boards",
                );
                return None;
            };
            if w > MAX_TRIADS_PER_SIDE || h > MAX_TRIADS_PER_SIDE {
                p.add(
                    &m.path,
                    format!("inferred size {w}x{h} exceeds the largest machine ({MAX_TRIADS_PER_SIDE}x{MAX_TRIADS_PER_SIDE} triads)"),
                );
            }
            (w, h)
        }
    };
    if p.0.len() != before {
        // Every position check below depends on a sane size.
        return None;
    }

    let mut dead: BTreeMap<Board, &str> = BTreeMap::new();
    for (b, path) in &m.dead_boards {
        if !inside(*b, width, height) {
            p.add(
                path,
                format!("dead board {b} lies outside the {width}x{height} machine"),
            );
        } else {
            dead.entry(*b).or_insert(path);
        }
    }
    let mut dead_links = BTreeSet::new();
    for (b, l, path) in &m.dead_links {
        if !inside(*b, width, height) {
            p.add(
                path,
                format!("dead link on board {b} lies outside the {width}x{height} machine"),
            );
        } else {
            dead_links.insert((*b, *l));
        }
    }

    let mut logical: BTreeMap<Board, &str> = BTreeMap::new();
    let mut physical: HashMap<(u32, u32, u32), &str> = HashMap::new();
    let mut frames: BTreeMap<(u32, u32), &str> = BTreeMap::new();
    let mut boards = Vec::new();
    for b in &r.boards {
        let l = b.logical;
        if !inside(l, width, height) {
            p.add(
                &b.path,
                format!("board {l} lies outside the {width}x{height} machine"),
            );
        } else if let Some(first) = logical.get(&l) {
            p.add(&b.path, format!("board {l} is already listed at {first}"));
        } else if let Some(d) = dead.get(&l) {
            p.add(&b.path, format!("board {l} is also listed as dead at {d}"));
        } else {
            logical.insert(l, &b.path);
        }
        if b.board >= BOARDS_PER_FRAME {
            p.add(
                &b.path,
                format!(
                    "board number {} is out of range 0-{}",
                    b.board,
                    BOARDS_PER_FRAME - 1
                ),
            );
        }
        let pos = (b.cabinet, b.frame, b.board);
        if let Some(first) = physical.get(&pos) {
            p.add(
                &b.path,
                format!(
                    "physical position (cabinet {}, frame {}, board {}) is already used by {first}",
                    b.cabinet, b.frame, b.board
                ),
            );
        } else {
            physical.insert(pos, &b.path);
        }
        frames.entry((b.cabinet, b.frame)).or_insert(&b.path);
        let ip = b.ip.clone().unwrap_or_default();
        if let Err(e) = check_host(&ip) {
            p.add(
                &b.ip_path,
                format!("invalid IP address or host name {ip:?}: {e}"),
            );
        }
        boards.push(BoardConfig {
            logical: l,
            cabinet: b.cabinet,
            frame: b.frame,
            board: b.board,
            ip,
        });
    }

    // The original insists that every board of the rectangle is either working or dead.
    if p.0.len() == before {
        let missing: Vec<String> = (0..width)
            .flat_map(|x| (0..height).flat_map(move |y| (0..3).map(move |z| Board::new(x, y, z))))
            .filter(|b| !logical.contains_key(b) && !dead.contains_key(b))
            .map(|b| b.to_string())
            .collect();
        if !missing.is_empty() {
            let shown = missing
                .iter()
                .take(8)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            let more = if missing.len() > 8 {
                format!(" and {} more", missing.len() - 8)
            } else {
                String::new()
            };
            p.add(
                &m.path,
                format!("{} board(s) of the {width}x{height} machine neither listed nor dead: {shown}{more}", missing.len()),
            );
        }
    }

    let mut bmp_at: BTreeMap<(u32, u32), &str> = BTreeMap::new();
    let mut bmps = Vec::new();
    for b in &r.bmps {
        if let Some(first) = bmp_at.get(&(b.cabinet, b.frame)) {
            p.add(
                &b.path,
                format!(
                    "a BMP for cabinet {}, frame {} is already given at {first}",
                    b.cabinet, b.frame
                ),
            );
            continue;
        }
        bmp_at.insert((b.cabinet, b.frame), &b.path);
        if let Err(e) = split_address(&b.address) {
            p.add(
                &address_path(b),
                format!("invalid BMP address {:?}: {e}", b.address),
            );
        }
        bmps.push(BmpConfig {
            cabinet: b.cabinet,
            frame: b.frame,
            address: b.address.clone(),
        });
    }
    for ((c, f), first_board) in &frames {
        if !bmp_at.contains_key(&(*c, *f)) {
            p.add(
                &join(&m.path, "bmps"),
                format!("no BMP for cabinet {c}, frame {f}, which holds working boards (e.g. {first_board})"),
            );
        }
    }

    if p.0.len() != before {
        return None;
    }
    let tags: BTreeSet<String> = m.tags.iter().cloned().collect();
    boards.sort();
    bmps.sort();
    Some(MachineConfig {
        name: m.name.clone(),
        tags: tags.into_iter().collect(),
        width,
        height,
        dead_boards: dead.into_keys().collect(),
        dead_links: dead_links.into_iter().collect(),
        bmps,
        boards,
    })
}

/// Where a BMP's address was given: the `address` field of an explicit entry, else the
/// entry itself (`single_board.bmp`, `standard_ips`).
fn address_path(b: &RawBmp) -> String {
    if b.path.ends_with(']') {
        join(&b.path, "address")
    } else {
        b.path.clone()
    }
}

fn validate(p: &mut Problems, raw: RawConfig) -> Config {
    let mut config = raw.config;
    let resolved: Vec<Resolved> = raw.machines.into_iter().map(resolve).collect();
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut bmp_addresses: HashMap<(String, u16), String> = HashMap::new();
    let mut board_ips: HashMap<String, &str> = HashMap::new();
    for r in &resolved {
        let m = &r.raw;
        if let Some(first) = names.get(m.name.as_str()) {
            p.add(
                &join(&m.path, "name"),
                format!("machine name {:?} is already used by {first}", m.name),
            );
        } else {
            names.insert(&m.name, &m.path);
        }
        for b in &r.bmps {
            // "h" and "h:17893" are the same BMP; host names compare without case.
            let Ok((host, port)) = split_address(&b.address) else {
                continue;
            };
            let key = (host.to_ascii_lowercase(), port);
            let here = format!(
                "{} (cabinet {}, frame {})",
                address_path(b),
                b.cabinet,
                b.frame
            );
            if let Some(first) = bmp_addresses.get(&key) {
                p.add(
                    &address_path(b),
                    format!("BMP address {:?} is already used by {first}", b.address),
                );
            } else {
                bmp_addresses.insert(key, here);
            }
        }
        for b in &r.boards {
            let ip = b.ip.as_deref().unwrap_or_default();
            if let Some(first) = board_ips.get(&ip.to_ascii_lowercase()) {
                p.add(
                    &b.ip_path,
                    format!("board IP {ip:?} is already used by {first}"),
                );
            } else {
                board_ips.insert(ip.to_ascii_lowercase(), &b.ip_path);
            }
        }
        if let Some(mc) = validate_machine(p, r) {
            config.machines.push(mc);
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(v: serde_json::Value) -> Config {
        match parse(&v.to_string(), Path::new(".")) {
            Ok(c) => c,
            Err(e) => panic!("unexpected error:\n{e}"),
        }
    }

    /// The problems, one string each, as `Display` prints them.
    fn errs(v: serde_json::Value) -> Vec<String> {
        errs_text(&v.to_string())
    }

    fn errs_text(text: &str) -> Vec<String> {
        match parse(text, Path::new(".")) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => {
                let lines: Vec<String> = e.to_string().lines().map(str::to_string).collect();
                assert_eq!(lines.len(), e.problems.len());
                lines
            }
        }
    }

    /// A valid 1x1 machine with all three boards, in the explicit form.
    fn m1(name: &str, n: u32) -> serde_json::Value {
        json!({
            "name": name,
            "bmps": [{"cabinet": 0, "frame": 0, "address": format!("10.{n}.0.0")}],
            "boards": [
                {"x": 0, "y": 0, "z": 0, "cabinet": 0, "frame": 0, "board": 0, "ip": format!("10.{n}.0.1")},
                {"x": 0, "y": 0, "z": 1, "cabinet": 0, "frame": 0, "board": 1, "ip": format!("10.{n}.0.9")},
                {"x": 0, "y": 0, "z": 2, "cabinet": 0, "frame": 0, "board": 2, "ip": format!("10.{n}.0.17")},
            ]
        })
    }

    #[test]
    fn simulated_faults_are_checked_specs_and_survive_to_json() {
        let c = ok(json!({
            "simulated_faults": ["10.0.0.0/1=fpga", "10.0.0.0:17893=silent*2"],
            "machines": [m1("m", 0)],
        }));
        assert_eq!(
            c.simulated_faults,
            vec!["10.0.0.0/1=fpga", "10.0.0.0:17893=silent*2"]
        );
        assert_eq!(ok(c.to_json()), c);
        assert!(!ok(json!({"machines": [m1("m", 0)]}))
            .to_json()
            .as_object()
            .unwrap()
            .contains_key("simulated_faults"));
        let e = errs(json!({
            "simulated_faults": ["10.0.0.0/1=melt", 7],
            "machines": [m1("m", 0)],
        }));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("simulated_faults[0]: "), "{e:?}");
        assert!(e[1].starts_with("simulated_faults[1]: "), "{e:?}");
    }

    /// `m1` with one field replaced.
    fn m1_with(key: &str, value: serde_json::Value) -> serde_json::Value {
        let mut m = m1("m", 0);
        m[key] = value;
        json!({"machines": [m]})
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = ok(json!({}));
        assert_eq!(c, Config::default());
        assert_eq!(c.ip, "0.0.0.0");
        assert_eq!(c.port, 22244);
        assert_eq!(c.timeout_check_interval_s, 5.0);
        assert_eq!(c.max_retired_jobs, 1200);
        assert_eq!(c.seconds_before_free_s, 30.0);
        assert_eq!(c.bmp, BmpTimings::default());
        assert_eq!(c.bmp.post_power_on_delay_s, 5.0);
        assert_eq!(c.bmp.power_on_timeout_s, 10.0);
        assert_eq!(c.bmp.command_timeout_s, 1.0);
        assert_eq!(c.bmp.command_retries, 3);
        assert_eq!(c.bmp.request_attempts, 2);
        assert_eq!(c.bmp.retry_delay_s, 15.0);
        assert_eq!(c.bmp.fpga_attempts, 3);
    }

    #[test]
    fn top_level_values_are_read() {
        let c = ok(json!({
            "ip": "127.0.0.1", "port": 0, "timeout_check_interval": 0.5, "max_retired_jobs": 0,
            "seconds_before_free": 0,
            "bmp": {"post_power_on_delay": 0.1, "power_on_timeout": 2, "command_timeout": 0.2,
                    "command_retries": 0, "request_attempts": 1, "retry_delay": 1, "fpga_attempts": 4},
        }));
        assert_eq!(c.ip, "127.0.0.1");
        assert_eq!(c.port, 0);
        assert_eq!(c.timeout_check_interval_s, 0.5);
        assert_eq!(c.max_retired_jobs, 0);
        assert_eq!(c.seconds_before_free_s, 0.0);
        let want = BmpTimings {
            post_power_on_delay_s: 0.1,
            power_on_timeout_s: 2.0,
            command_timeout_s: 0.2,
            command_retries: 0,
            request_attempts: 1,
            retry_delay_s: 1.0,
            fpga_attempts: 4,
        };
        assert_eq!(c.bmp, want);
        // The original's "" means every interface.
        assert_eq!(ok(json!({"ip": ""})).ip, "0.0.0.0");
    }

    #[test]
    fn syntax_errors_stop_at_once() {
        let e = errs_text("{\"port\": ");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("invalid JSON: "), "{e:?}");
        assert!(e[0].contains("line 1"), "{e:?}");
    }

    #[test]
    fn top_level_type_and_range_errors() {
        assert_eq!(errs(json!([])), ["expected an object, found an array"]);
        assert_eq!(
            errs(json!({
                "ip": 5, "port": 65536, "timeout_check_interval": 0, "max_retired_jobs": -1,
                "seconds_before_free": "30", "machines": {}, "extra": 1, "bmp": []
            })),
            [
                "extra: unknown field",
                "ip: expected a string, found 5",
                "port: must be at most 65535, found 65536",
                "timeout_check_interval: must be a number of seconds greater than 0 and at most 31536000, found 0",
                "max_retired_jobs: expected a non-negative integer, found -1",
                "seconds_before_free: expected a number of seconds, found \"30\"",
                "bmp: expected an object, found an array",
                "machines: expected an array, found an object",
            ]
        );
        assert_eq!(
            errs(json!({"ip": "a b"})),
            ["ip: invalid character ' ' in host \"a b\""]
        );
        assert_eq!(
            errs(json!({"port": 1.5})),
            ["port: expected a non-negative integer, found 1.5"]
        );
        assert_eq!(
            errs(json!({"seconds_before_free": -1, "max_retired_jobs": 1e12})),
            [
                "max_retired_jobs: expected a non-negative integer, found 1000000000000.0",
                "seconds_before_free: must be a number of seconds at least 0 and at most 31536000, found -1",
            ]
        );
        assert_eq!(
            errs(json!({"timeout_check_interval": 1e9})),
            ["timeout_check_interval: must be a number of seconds greater than 0 and at most 31536000, found 1000000000.0"]
        );
    }

    #[test]
    fn bmp_block_errors() {
        assert_eq!(
            errs(json!({"bmp": {
                "post_power_on_delay": -0.5, "power_on_timeout": 0, "command_timeout": null,
                "command_retries": 1001, "request_attempts": 0, "retry_delay": true,
                "fpga_attempts": 0, "post_power_on_delay_s": 1
            }})),
            [
                "bmp.post_power_on_delay_s: unknown field",
                "bmp.post_power_on_delay: must be a number of seconds at least 0 and at most 31536000, found -0.5",
                "bmp.power_on_timeout: must be a number of seconds greater than 0 and at most 31536000, found 0",
                "bmp.command_timeout: expected a number of seconds, found null",
                "bmp.retry_delay: expected a number of seconds, found true",
                "bmp.command_retries: must be at most 1000, found 1001",
                "bmp.request_attempts: must be at least 1, found 0",
                "bmp.fpga_attempts: must be at least 1, found 0",
            ]
        );
    }

    #[test]
    fn duplicate_keys_are_reported_with_their_path() {
        let text = r#"{"port": 1, "machines": [{"name": "a", "name": "b", "bmps": [], "boards": []}], "port": 2}"#;
        assert_eq!(
            errs_text(text),
            ["port: duplicate field", "machines[0].name: duplicate field"]
        );
    }

    #[test]
    fn explicit_machine() {
        let c = ok(json!({"machines": [{
            "name": "m1",
            "tags": ["b", "default", "b"],
            "width": 2, "height": 1,
            "dead_boards": [[1, 0, 2], [0, 0, 2], [1, 0, 2]],
            "dead_links": [[1, 0, 1, "north"], [0, 0, 0, 3], [0, 0, 0, "west"]],
            "bmps": [
                {"cabinet": 0, "frame": 1, "address": "127.0.0.1:17001"},
                {"cabinet": 0, "frame": 0, "address": "10.0.0.0"},
            ],
            "boards": [
                {"x": 1, "y": 0, "z": 1, "cabinet": 0, "frame": 1, "board": 1, "ip": "10.0.1.9"},
                {"x": 1, "y": 0, "z": 0, "cabinet": 0, "frame": 1, "board": 0, "ip": "10.0.1.1"},
                {"x": 0, "y": 0, "z": 1, "cabinet": 0, "frame": 0, "board": 1, "ip": "10.0.0.9"},
                {"x": 0, "y": 0, "z": 0, "cabinet": 0, "frame": 0, "board": 0, "ip": "10.0.0.1"},
            ],
        }]}));
        let m = c.machine("m1").expect("m1");
        assert!(c.machine("m2").is_none());
        assert_eq!(m.tags, ["b", "default"]);
        assert_eq!((m.width, m.height), (2, 1));
        assert_eq!(m.dead_boards, [Board::new(0, 0, 2), Board::new(1, 0, 2)]);
        assert_eq!(
            m.dead_links,
            [
                (Board::new(0, 0, 0), Link::West),
                (Board::new(1, 0, 1), Link::North)
            ]
        );
        assert_eq!(
            m.bmps,
            [
                BmpConfig {
                    cabinet: 0,
                    frame: 0,
                    address: "10.0.0.0".into()
                },
                BmpConfig {
                    cabinet: 0,
                    frame: 1,
                    address: "127.0.0.1:17001".into()
                },
            ]
        );
        let logical: Vec<Board> = m.boards.iter().map(|b| b.logical).collect();
        assert_eq!(
            logical,
            [
                Board::new(0, 0, 0),
                Board::new(0, 0, 1),
                Board::new(1, 0, 0),
                Board::new(1, 0, 1)
            ]
        );
        assert_eq!(
            m.boards[3],
            BoardConfig {
                logical: Board::new(1, 0, 1),
                cabinet: 0,
                frame: 1,
                board: 1,
                ip: "10.0.1.9".into()
            }
        );
        assert_eq!(
            (m.bmps[0].host(), m.bmps[0].port()),
            ("10.0.0.0", DEFAULT_BMP_PORT)
        );
        assert_eq!((m.bmps[1].host(), m.bmps[1].port()), ("127.0.0.1", 17001));
    }

    #[test]
    fn tags_default_and_order_does_not_matter() {
        let a = ok(json!({"machines": [m1("m", 0)]}));
        assert_eq!(a.machines[0].tags, ["default"]);
        let mut reversed = m1("m", 0);
        let boards = reversed["boards"].as_array_mut().expect("array");
        boards.reverse();
        reversed["tags"] = json!(["default", "default"]);
        assert_eq!(ok(json!({"machines": [reversed]})), a);
        // An empty tag list is allowed: the machine is only reachable by name.
        assert!(ok(m1_with("tags", json!([]))).machines[0].tags.is_empty());
    }

    #[test]
    fn machine_type_errors_name_every_path() {
        assert_eq!(
            errs(json!({"machines": [
                {"name": "a", "boardz": [], "bmps": [], "boards": []},
                {"name": "", "tags": ["x", "", 3, " y"], "width": -1, "height": "2", "bmps": 1, "boards": [1]},
                {"bmps": [{"cabinet": 0, "frame": 0}], "boards": [{"x": 0, "y": 0, "z": 0}]},
                {"name": "d", "dead_boards": [[0, 0], 1, [0, 0, "a"]], "dead_links": [[0, 0, 0, "up"], [0, 0, 0, 6], [0, 0, 0]],
                 "bmps": [], "boards": []},
                {"name": "e"},
                7,
            ]})),
            [
                "machines[0].boardz: unknown field",
                "machines[1].name: must not be empty",
                "machines[1].tags[1]: must not be empty",
                "machines[1].tags[2]: expected a string, found 3",
                "machines[1].tags[3]: \" y\" has leading or trailing white space",
                "machines[1].width: expected a non-negative integer, found -1",
                "machines[1].height: expected a non-negative integer, found \"2\"",
                "machines[1].bmps: expected an array, found 1",
                "machines[1].boards[0]: expected an object, found 1",
                "machines[2].name: required field missing",
                "machines[2].bmps[0].address: required field missing",
                "machines[2].boards[0].cabinet: required field missing",
                "machines[2].boards[0].frame: required field missing",
                "machines[2].boards[0].board: required field missing",
                "machines[2].boards[0].ip: required field missing",
                "machines[3].dead_boards[0]: expected [x, y, z], found an array of 2 elements",
                "machines[3].dead_boards[1]: expected an array, found 1",
                "machines[3].dead_boards[2][2]: expected a non-negative integer, found \"a\"",
                "machines[3].dead_links[0][3]: expected a link name (east, north_east, north, west, south_west, south) or number 0-5, found \"up\"",
                "machines[3].dead_links[1][3]: expected a link name (east, north_east, north, west, south_west, south) or number 0-5, found 6",
                "machines[3].dead_links[2]: expected [x, y, z, link], found an array of 3 elements",
                "machines[4].bmps: required field missing",
                "machines[4].boards: required field missing",
                "machines[5]: expected an object, found 7",
            ]
        );
    }

    #[test]
    fn size_is_inferred_from_boards_and_dead_boards() {
        let mut m = m1("m", 0);
        m["dead_boards"] = json!([[2, 1, 0]]);
        m["width"] = json!(3);
        m["height"] = json!(2);
        // Without the size the rectangle 3x2 is inferred, and its missing boards reported.
        let e = errs(m1_with("dead_boards", json!([[2, 1, 0]])));
        assert_eq!(
            e,
            ["machines[0]: 14 board(s) of the 3x2 machine neither listed nor dead: (0, 1, 0), (0, 1, 1), (0, 1, 2), (1, 0, 0), (1, 0, 1), (1, 0, 2), (1, 1, 0), (1, 1, 1) and 6 more"]
        );
        // The same as giving 3x2 explicitly.
        assert_eq!(errs(json!({"machines": [m]})), e);
        let c = ok(json!({"machines": [m1("m", 0)]}));
        assert_eq!((c.machines[0].width, c.machines[0].height), (1, 1));
        // A dead board counts as a board of the rectangle; the working ones are the others.
        let mut m = m1("m", 0);
        m["boards"].as_array_mut().expect("array").pop();
        m["dead_boards"] = json!([[0, 0, 2]]);
        let c = ok(json!({"machines": [m]}));
        assert_eq!(
            (
                c.machines[0].width,
                c.machines[0].height,
                c.machines[0].boards.len()
            ),
            (1, 1, 2)
        );
    }

    #[test]
    fn size_errors() {
        assert_eq!(
            errs(m1_with("width", json!(1))),
            ["machines[0]: width and height must be given together (only width is given)"]
        );
        assert_eq!(
            errs(m1_with("height", json!(1))),
            ["machines[0]: width and height must be given together (only height is given)"]
        );
        let mut m = m1("m", 0);
        m["width"] = json!(0);
        m["height"] = json!(257);
        assert_eq!(
            errs(json!({"machines": [m]})),
            [
                "machines[0].width: must be 1-256 triads, found 0",
                "machines[0].height: must be 1-256 triads, found 257"
            ]
        );
        assert_eq!(
            errs(json!({"machines": [{"name": "e", "bmps": [], "boards": []}]})),
            ["machines[0]: cannot infer width and height: no boards and no dead boards"]
        );
        assert_eq!(
            errs(
                json!({"machines": [{"name": "e", "dead_boards": [[300, 0, 0]], "bmps": [], "boards": []}]})
            ),
            ["machines[0]: inferred size 301x1 exceeds the largest machine (256x256 triads)"]
        );
    }

    #[test]
    fn boards_must_lie_inside_the_machine() {
        let mut m = m1("m", 0);
        m["width"] = json!(1);
        m["height"] = json!(1);
        m["boards"].as_array_mut().expect("array").extend([
            json!({"x": 1, "y": 0, "z": 0, "cabinet": 0, "frame": 0, "board": 3, "ip": "a"}),
            json!({"x": 0, "y": 0, "z": 3, "cabinet": 0, "frame": 0, "board": 4, "ip": "b"}),
        ]);
        m["dead_boards"] = json!([[0, 1, 0]]);
        m["dead_links"] = json!([[0, 0, 3, 0], [0, 0, 0, 0]]);
        assert_eq!(
            errs(json!({"machines": [m]})),
            [
                "machines[0].dead_boards[0]: dead board (0, 1, 0) lies outside the 1x1 machine",
                "machines[0].dead_links[0]: dead link on board (0, 0, 3) lies outside the 1x1 machine",
                "machines[0].boards[3]: board (1, 0, 0) lies outside the 1x1 machine",
                "machines[0].boards[4]: board (0, 0, 3) lies outside the 1x1 machine",
            ]
        );
    }

    #[test]
    fn board_listing_conflicts() {
        let mut m = m1("m", 0);
        m["dead_boards"] = json!([[0, 0, 2]]);
        let boards = m["boards"].as_array_mut().expect("array");
        boards
            .push(json!({"x": 0, "y": 0, "z": 1, "cabinet": 0, "frame": 0, "board": 7, "ip": "x"}));
        boards
            .push(json!({"x": 0, "y": 0, "z": 1, "cabinet": 0, "frame": 0, "board": 7, "ip": "y"}));
        boards.push(
            json!({"x": 0, "y": 0, "z": 1, "cabinet": 0, "frame": 0, "board": 24, "ip": "z"}),
        );
        assert_eq!(
            errs(json!({"machines": [m]})),
            [
                "machines[0].boards[2]: board (0, 0, 2) is also listed as dead at machines[0].dead_boards[0]",
                "machines[0].boards[3]: board (0, 0, 1) is already listed at machines[0].boards[1]",
                "machines[0].boards[4]: board (0, 0, 1) is already listed at machines[0].boards[1]",
                "machines[0].boards[4]: physical position (cabinet 0, frame 0, board 7) is already used by machines[0].boards[3]",
                "machines[0].boards[5]: board (0, 0, 1) is already listed at machines[0].boards[1]",
                "machines[0].boards[5]: board number 24 is out of range 0-23",
            ]
        );
    }

    #[test]
    fn board_ips_must_be_hosts() {
        let mut m = m1("m", 0);
        m["boards"][1]["ip"] = json!("");
        m["boards"][2]["ip"] = json!("10.0.0.1 ");
        assert_eq!(
            errs(json!({"machines": [m]})),
            [
                "machines[0].boards[1].ip: invalid IP address or host name \"\": empty host",
                "machines[0].boards[2].ip: invalid IP address or host name \"10.0.0.1 \": invalid character ' ' in host \"10.0.0.1 \"",
            ]
        );
    }

    #[test]
    fn every_frame_with_boards_needs_one_bmp() {
        let mut m = m1("m", 0);
        m["boards"][2]["frame"] = json!(1);
        m["boards"][1]["cabinet"] = json!(2);
        m["bmps"] = json!([
            {"cabinet": 0, "frame": 0, "address": "10.0.0.0"},
            {"cabinet": 0, "frame": 0, "address": "10.0.0.100"},
            {"cabinet": 5, "frame": 0, "address": "10.0.0.200"},
        ]);
        assert_eq!(
            errs(json!({"machines": [m]})),
            [
                "machines[0].bmps[1]: a BMP for cabinet 0, frame 0 is already given at machines[0].bmps[0]",
                "machines[0].bmps: no BMP for cabinet 0, frame 1, which holds working boards (e.g. machines[0].boards[2])",
                "machines[0].bmps: no BMP for cabinet 2, frame 0, which holds working boards (e.g. machines[0].boards[1])",
            ]
        );
    }

    #[test]
    fn bmp_addresses() {
        assert_eq!(split_address("h"), Ok(("h", 17893)));
        assert_eq!(split_address("h:1"), Ok(("h", 1)));
        assert_eq!(split_address("[::1]:5"), Ok(("::1", 5)));
        assert_eq!(split_address("[::1]"), Ok(("::1", 17893)));
        assert_eq!(split_address("fe80::1"), Ok(("fe80::1", 17893)));
        for (address, message) in [
            ("h:0", "port 0 is not a valid BMP port (1-65535)"),
            ("h:", "invalid port \"\" (expected 1-65535)"),
            ("h:65536", "invalid port \"65536\" (expected 1-65535)"),
            ("h:+5", "invalid port \"+5\" (expected 1-65535)"),
            (":5", "empty host"),
            ("", "empty host"),
            ("[::1", "\"[::1\": missing ']' after an IPv6 address"),
            ("[::1]5", "\"[::1]5\": expected ':port' after ']'"),
        ] {
            assert_eq!(
                split_address(address),
                Err(message.to_string()),
                "{address}"
            );
            let mut m = m1("m", 0);
            m["bmps"][0]["address"] = json!(address);
            assert_eq!(
                errs(json!({"machines": [m]})),
                [format!(
                    "machines[0].bmps[0].address: invalid BMP address {address:?}: {message}"
                )]
            );
        }
    }

    #[test]
    fn names_bmps_and_ips_are_unique_across_machines() {
        let mut b = m1("a", 1);
        b["bmps"][0]["address"] = json!("10.0.0.0:17893");
        b["boards"][2]["ip"] = json!("10.0.0.17");
        let mut c = m1("c", 2);
        c["boards"][0]["ip"] = json!("10.2.0.9");
        c["bmps"][0]["address"] = json!("10.0.0.0:17894");
        assert_eq!(
            errs(json!({"machines": [m1("a", 0), b, c]})),
            [
                "machines[1].name: machine name \"a\" is already used by machines[0]",
                "machines[1].bmps[0].address: BMP address \"10.0.0.0:17893\" is already used by machines[0].bmps[0].address (cabinet 0, frame 0)",
                "machines[1].boards[2].ip: board IP \"10.0.0.17\" is already used by machines[0].boards[2].ip",
                "machines[2].boards[1].ip: board IP \"10.2.0.9\" is already used by machines[2].boards[0].ip",
            ]
        );
    }

    #[test]
    fn bad_machines_do_not_hide_other_machines_problems() {
        assert_eq!(
            errs(
                json!({"machines": [{"name": "a", "boardz": 1}, m1_with("width", json!(1))["machines"][0]]})
            ),
            [
                "machines[0].boardz: unknown field",
                "machines[0].bmps: required field missing",
                "machines[0].boards: required field missing",
                "machines[1]: width and height must be given together (only width is given)",
            ]
        );
    }

    #[test]
    fn single_board_shorthand() {
        let c = ok(json!({"machines": [
            {"name": "b", "tags": ["single"], "single_board": {"bmp": "10.0.1.0", "ip": "10.0.1.1"}},
            {"name": "c", "single_board": {"bmp": "127.0.0.1:17894", "ip": "10.0.1.2"}},
        ]}));
        let b = &c.machines[0];
        assert_eq!(b.tags, ["single"]);
        assert_eq!((b.width, b.height), (1, 1));
        assert_eq!(b.dead_boards, [Board::new(0, 0, 1), Board::new(0, 0, 2)]);
        assert!(b.dead_links.is_empty());
        assert_eq!(
            b.bmps,
            [BmpConfig {
                cabinet: 0,
                frame: 0,
                address: "10.0.1.0".into()
            }]
        );
        assert_eq!(
            b.boards,
            [BoardConfig {
                logical: Board::new(0, 0, 0),
                cabinet: 0,
                frame: 0,
                board: 0,
                ip: "10.0.1.1".into()
            }]
        );
        assert_eq!(c.machines[1].tags, ["default"]);
        // Equal to the explicit form it stands for.
        assert_eq!(ok(c.to_json()), c);
    }

    #[test]
    fn single_board_errors() {
        assert_eq!(
            errs(json!({"machines": [
                {"name": "b", "width": 1, "boards": [], "single_board": {"bmp": "h", "ipp": "x"}},
                {"name": "c", "single_board": {"bmp": "h:0", "ip": ""}},
                {"name": "d", "single_board": {"bmp": "q", "ip": "i"}},
                {"name": "e", "single_board": {"bmp": "q", "ip": "i"}},
            ]})),
            [
                "machines[0].width: not allowed together with single_board",
                "machines[0].boards: not allowed together with single_board",
                "machines[0].single_board.ipp: unknown field",
                "machines[0].single_board.ip: required field missing",
                "machines[1].single_board.ip: invalid IP address or host name \"\": empty host",
                "machines[1].single_board.bmp: invalid BMP address \"h:0\": port 0 is not a valid BMP port (1-65535)",
                "machines[3].single_board.bmp: BMP address \"q\" is already used by machines[2].single_board.bmp (cabinet 0, frame 0)",
                "machines[3].single_board.ip: board IP \"i\" is already used by machines[2].single_board.ip",
            ]
        );
    }

    /// The 2x1-triad machine of `standard_ips_shorthand`, listed board by board.
    fn standard_boards() -> serde_json::Value {
        json!([
            {"x": 0, "y": 0, "z": 0, "cabinet": 0, "frame": 0, "board": 0},
            {"x": 0, "y": 0, "z": 1, "cabinet": 0, "frame": 0, "board": 1},
            {"x": 0, "y": 0, "z": 2, "cabinet": 0, "frame": 0, "board": 2},
            {"x": 1, "y": 0, "z": 0, "cabinet": 1, "frame": 2, "board": 5},
            {"x": 1, "y": 0, "z": 1, "cabinet": 1, "frame": 2, "board": 3},
        ])
    }

    #[test]
    fn standard_ips_shorthand() {
        let c = ok(json!({"machines": [{
            "name": "s", "dead_boards": [[1, 0, 2]], "boards": standard_boards(),
            "standard_ips": {"base_ip": "10.2.0.0"},
        }]}));
        let m = &c.machines[0];
        assert_eq!((m.width, m.height), (2, 1));
        // BMP: base + cabinet·0.0.5.0 + frame·0.0.1.0 + 0; board: ... + board·0.0.0.8 + 0.0.0.1.
        assert_eq!(
            m.bmps,
            [
                BmpConfig {
                    cabinet: 0,
                    frame: 0,
                    address: "10.2.0.0".into()
                },
                BmpConfig {
                    cabinet: 1,
                    frame: 2,
                    address: "10.2.7.0".into()
                },
            ]
        );
        let ips: Vec<&str> = m.boards.iter().map(|b| b.ip.as_str()).collect();
        assert_eq!(
            ips,
            [
                "10.2.0.1",
                "10.2.0.9",
                "10.2.0.17",
                "10.2.7.41",
                "10.2.7.25"
            ]
        );

        // Every parameter, with a carry across bytes and the wrap of 32-bit addition.
        let c = ok(json!({"machines": [{
            "name": "s", "dead_boards": [[1, 0, 2]], "boards": standard_boards(),
            "standard_ips": {"base_ip": "255.255.255.0", "cabinet_stride": "0.0.1.0",
                             "frame_stride": "0.0.0.64", "board_stride": "0.0.0.40",
                             "bmp_offset": "0.0.0.3", "spinnaker_offset": "0.0.0.200"},
        }]}));
        let m = &c.machines[0];
        let bmps: Vec<&str> = m.bmps.iter().map(|b| b.address.as_str()).collect();
        // Cabinet 1 frame 2: 255.255.255.0 + 0.0.1.0 + 0.0.0.128 wraps to 0.0.0.128.
        assert_eq!(bmps, ["255.255.255.3", "0.0.0.131"]);
        let ips: Vec<&str> = m.boards.iter().map(|b| b.ip.as_str()).collect();
        assert_eq!(
            ips,
            [
                "255.255.255.200",
                "255.255.255.240",
                "0.0.0.24",
                "0.0.2.16",
                "0.0.1.192"
            ]
        );

        // Omitted parameters take the original's defaults (base 192.168.0.0).
        let c = ok(json!({"machines": [{
            "name": "s", "width": 2, "height": 1, "dead_boards": [[1, 0, 2]],
            "boards": standard_boards(), "standard_ips": {},
        }]}));
        assert_eq!(c.machines[0].bmps[1].address, "192.168.7.0");
        assert_eq!(ok(c.to_json()), c);
    }

    #[test]
    fn standard_ips_errors() {
        assert_eq!(
            errs(json!({"machines": [
                {"name": "a", "bmps": [], "boards": [{"x": 0, "y": 0, "z": 0, "cabinet": 0, "frame": 0, "board": 0, "ip": "1"}],
                 "standard_ips": {"base_ip": "10.2.0", "board_stride": "0.0.0.256", "frame_stride": 5, "offset": "0.0.0.1"}},
                {"name": "b", "standard_ips": {}},
                {"name": "c", "standard_ips": {}, "boards": [], "spinner_csv": "x.csv"},
                {"name": "d", "spinner_csv": "x.csv", "bmps": [], "boards": []},
            ]})),
            [
                "machines[0].bmps: not allowed together with standard_ips (BMP addresses are derived)",
                "machines[0].standard_ips.offset: unknown field",
                "machines[0].standard_ips.base_ip: malformed IPv4 address \"10.2.0\" (expected four numbers 0-255 separated by dots)",
                "machines[0].boards[0].ip: unknown field",
                "machines[1]: standard_ips needs boards or spinner_csv",
                "machines[2].spinner_csv: not allowed together with boards",
                "machines[3].spinner_csv: only allowed together with standard_ips (the CSV gives no IP addresses)",
            ]
        );
        // Each parameter is checked (the first malformed one stops that machine's derivation).
        for bad in [
            "0.0.0.256",
            "1.2.3.4.5",
            "a.b.c.d",
            "1..2.3",
            "0.0.0.-1",
            "1.2.3.0004",
        ] {
            assert_eq!(
                errs(json!({"machines": [{"name": "a", "boards": standard_boards(),
                                          "standard_ips": {"board_stride": bad}}]})),
                [format!(
                    "machines[0].standard_ips.board_stride: malformed IPv4 address {bad:?} (expected four numbers 0-255 separated by dots)"
                )]
            );
        }
        assert_eq!(
            errs(
                json!({"machines": [{"name": "a", "boards": standard_boards(), "standard_ips": {"base_ip": 5}}]})
            ),
            ["machines[0].standard_ips.base_ip: expected a string, found 5"]
        );
        // Derived addresses take part in the uniqueness checks.
        assert_eq!(
            errs(json!({"machines": [
                {"name": "a", "dead_boards": [[1, 0, 2]], "boards": standard_boards(), "standard_ips": {}},
                {"name": "b", "single_board": {"bmp": "192.168.7.0", "ip": "192.168.0.9"}},
            ]})),
            [
                "machines[1].single_board.bmp: BMP address \"192.168.7.0\" is already used by machines[0].standard_ips (cabinet 1, frame 2)",
                "machines[1].single_board.ip: board IP \"192.168.0.9\" is already used by machines[0].boards[1]",
            ]
        );
    }

    /// A scratch directory for one test.
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("spalloc-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn spinner_csv_follows_board_locations_from_spinner() {
        let dir = scratch("csv");
        // Columns in another order than the header the brief names, an extra column, and
        // the Ethernet chips of a 2x1-triad machine (24x12 chips) minus board (1, 0, 2).
        std::fs::write(
            dir.join("chips.csv"),
            "cabinet,frame,board,x,y,extra\n0,0,0,0,0,a\n0,0,1,8,4,b\n0,0,2,4,8,c\n\n1,2,5,12,0,d\n1,2,3,20,4,e\n",
        )
        .expect("write csv");
        let config = json!({"machines": [{
            "name": "s", "dead_boards": [[1, 0, 2]], "spinner_csv": "chips.csv",
            "standard_ips": {"base_ip": "10.2.0.0"},
        }]});
        std::fs::write(dir.join("c.json"), config.to_string()).expect("write json");
        let from_csv = load(&dir.join("c.json")).expect("loads");
        let listed = ok(json!({"machines": [{
            "name": "s", "dead_boards": [[1, 0, 2]], "boards": standard_boards(),
            "standard_ips": {"base_ip": "10.2.0.0"},
        }]}));
        assert_eq!(from_csv, listed);

        // Problems in the CSV are reported with the file's line numbers.
        std::fs::write(
            dir.join("bad.csv"),
            "board,cabinet,frame,x,y\n0,0,0,0,0\n1,0,0,0,0\n2,0,0,x,1\n3,0,0,1,1\n",
        )
        .expect("write csv");
        std::fs::write(dir.join("nocol.csv"), "board,cabinet,x,y\n").expect("write csv");
        let e = match parse(
            &json!({"machines": [
                {"name": "a", "spinner_csv": "bad.csv", "standard_ips": {}},
                {"name": "b", "spinner_csv": "nocol.csv", "standard_ips": {}},
                {"name": "c", "spinner_csv": "missing.csv", "standard_ips": {}},
            ]})
            .to_string(),
            &dir,
        ) {
            Err(e) => e.problems,
            Ok(c) => panic!("{c:?}"),
        };
        let lines: Vec<String> = e.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            lines[0],
            "machines[0].spinner_csv:3: chip (0, 0) is already given at machines[0].spinner_csv:2"
        );
        assert_eq!(
            lines[1],
            "machines[0].spinner_csv:4: column \"x\": expected a non-negative integer, found \"x\""
        );
        assert_eq!(
            lines[2],
            format!(
                "machines[1].spinner_csv: {}: the header line has no column \"frame\"",
                dir.join("nocol.csv").display()
            )
        );
        assert!(
            lines[3].starts_with(&format!(
                "machines[2].spinner_csv: cannot read {}: ",
                dir.join("missing.csv").display()
            )),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 4);

        // Two chips of the same board: the original would silently keep one.
        std::fs::write(
            dir.join("same.csv"),
            "board,cabinet,frame,x,y\n0,0,0,0,0\n1,0,0,1,1\n",
        )
        .expect("write csv");
        let e = parse(
            &json!({"machines": [{"name": "a", "spinner_csv": "same.csv", "standard_ips": {}}]})
                .to_string(),
            &dir,
        )
        .expect_err("same board");
        assert_eq!(
            e.to_string(),
            "machines[0].spinner_csv:3: chip (1, 1) is on board (0, 0, 0), already given at machines[0].spinner_csv:2"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn load_reports_unreadable_files() {
        let e = load(Path::new("/nonexistent/spalloc.json")).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with("cannot read configuration file /nonexistent/spalloc.json: "),
            "{e}"
        );
    }

    #[test]
    fn to_json_round_trips() {
        let c = ok(json!({
            "ip": "127.0.0.1", "port": 1234, "timeout_check_interval": 0.25, "max_retired_jobs": 7,
            "seconds_before_free": 2.5,
            "bmp": {"post_power_on_delay": 0.1, "command_retries": 9},
            "machines": [
                {"name": "b", "tags": ["z", "a"], "single_board": {"bmp": "10.9.0.0:5", "ip": "h"}},
                {"name": "s", "dead_boards": [[1, 0, 2]], "dead_links": [[0, 0, 0, "south_west"]],
                 "boards": standard_boards(), "standard_ips": {}},
                m1("m", 3),
            ],
        }));
        let back = ok(c.to_json());
        assert_eq!(back, c);
        assert_eq!(
            c.machines
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>(),
            ["b", "s", "m"]
        );
        assert_eq!(
            c.to_json()["machines"][1]["dead_links"],
            json!([[0, 0, 0, "south_west"]])
        );
    }

    #[test]
    fn errors_display_one_per_line() {
        let e = ConfigError {
            problems: vec![
                Problem {
                    path: "a.b".into(),
                    message: "x".into(),
                },
                Problem {
                    path: String::new(),
                    message: "y".into(),
                },
            ],
        };
        assert_eq!(e.to_string(), "a.b: x\ny");
        let _: &dyn std::error::Error = &e;
    }
}
