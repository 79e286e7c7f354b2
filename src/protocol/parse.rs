//! Request lines to [`Parsed`]: the framing checks, Python's argument binding, and the
//! per-command argument validation.

use super::common::common_line;
use super::json::{self, py_repr_str, py_str, Json};
use super::Parsed;
use crate::core::types::{Command, CreateJob, JobId, JobRequest, JobTarget, WhereIs};

/// Keyword arguments, in the client's order, with `client` already removed.
type Kwargs = [(String, Json)];

/// See [`super::parse_line`]: the common lines by their bytes, everything else in full.
pub(super) fn parse_line(line: &[u8]) -> Parsed {
    match common_line(line) {
        Some(parsed) => {
            debug_assert_eq!(
                parsed,
                parse_general(line),
                "the common-line shortcut disagrees"
            );
            parsed
        }
        None => parse_general(line),
    }
}

/// Any line: the framing checks, then Python's argument binding and the command's checks.
pub(super) fn parse_general(line: &[u8]) -> Parsed {
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(e) => return Parsed::Fatal(format!("request is not valid UTF-8: {e}")),
    };
    let entries = match json::parse(text) {
        Ok(Json::Object(entries)) => entries,
        Ok(other) => {
            return Parsed::Fatal(format!(
                "request must be a JSON object, not {}",
                json_kind(&other)
            ))
        }
        Err(e) => return Parsed::Fatal(format!("request is not valid JSON: {e}")),
    };
    let field = |name: &str| entries.iter().find(|(k, _)| k == name).map(|(_, v)| v);

    let name = match field("command") {
        Some(Json::Str(name)) => name.as_str(),
        Some(other) => {
            return Parsed::Fatal(format!(
                "\"command\" must be a string, not {}",
                json_kind(other)
            ))
        }
        None => return Parsed::Fatal("request has no \"command\"".to_owned()),
    };
    let args: &[Json] = match field("args") {
        None => &[],
        Some(Json::Array(args)) => args,
        Some(other) => {
            return Parsed::Fatal(format!(
                "\"args\" must be a JSON array, not {}",
                json_kind(other)
            ))
        }
    };
    let kwargs: Vec<(String, Json)> = match field("kwargs") {
        None => Vec::new(),
        // The original deletes `client` before dispatch (old clients sent their name there).
        Some(Json::Object(kwargs)) => kwargs
            .iter()
            .filter(|(k, _)| k != "client")
            .cloned()
            .collect(),
        Some(other) => {
            return Parsed::Fatal(format!(
                "\"kwargs\" must be a JSON object, not {}",
                json_kind(other)
            ))
        }
    };

    match dispatch(name, args, &kwargs) {
        Some(Ok(parsed)) => parsed,
        Some(Err(msg)) => Parsed::Exception(msg),
        None => Parsed::Exception(format!("unknown command: {}", py_repr_str(name))),
    }
}

/// `None` for an unknown command name.
fn dispatch(name: &str, args: &[Json], kwargs: &Kwargs) -> Option<Result<Parsed, String>> {
    let result = match name {
        "version" => {
            bind(&Sig::fixed("version", "_client", &[], 0), args, kwargs).map(|_| Parsed::Version)
        }
        "create_job" => create_job(args, kwargs).map(|c| Parsed::Core(Command::CreateJob(c))),
        "job_keepalive" => job_command(name, args, kwargs)
            .map(|job_id| Parsed::Core(Command::JobKeepalive { job_id })),
        "get_job_state" => job_command(name, args, kwargs)
            .map(|job_id| Parsed::Core(Command::GetJobState { job_id })),
        "get_job_machine_info" => job_command(name, args, kwargs)
            .map(|job_id| Parsed::Core(Command::GetJobMachineInfo { job_id })),
        "power_on_job_boards" => job_command(name, args, kwargs)
            .map(|job_id| Parsed::Core(Command::PowerOnJobBoards { job_id })),
        "power_off_job_boards" => job_command(name, args, kwargs)
            .map(|job_id| Parsed::Core(Command::PowerOffJobBoards { job_id })),
        "destroy_job" => destroy_job(args, kwargs),
        "notify_job" => notify_job(name, args, kwargs).map(Parsed::NotifyJob),
        "no_notify_job" => notify_job(name, args, kwargs).map(Parsed::NoNotifyJob),
        "notify_machine" => notify_machine(name, args, kwargs).map(Parsed::NotifyMachine),
        "no_notify_machine" => notify_machine(name, args, kwargs).map(Parsed::NoNotifyMachine),
        "list_jobs" => bind(&Sig::fixed("list_jobs", "_client", &[], 0), args, kwargs)
            .map(|_| Parsed::Core(Command::ListJobs)),
        "list_machines" => bind(
            &Sig::fixed("list_machines", "_client", &[], 0),
            args,
            kwargs,
        )
        .map(|_| Parsed::Core(Command::ListMachines)),
        "get_board_position" => board_lookup(name, args, kwargs)
            .map(|(machine, x, y, z)| Parsed::Core(Command::GetBoardPosition { machine, x, y, z })),
        "get_board_at_position" => {
            board_lookup(name, args, kwargs).map(|(machine, cabinet, frame, board)| {
                Parsed::Core(Command::GetBoardAtPosition {
                    machine,
                    cabinet,
                    frame,
                    board,
                })
            })
        }
        "where_is" => where_is(args, kwargs).map(|w| Parsed::Core(Command::WhereIs(w))),
        "report_problem" => report_problem(args, kwargs),
        _ => return None,
    };
    Some(result)
}

/// The shape of a JSON value for framing errors ("an array", "a string", ...).
fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Int(_) | Json::Float(_) => "a number",
        Json::Str(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// Python's argument binding.

/// A command's Python signature, minus `self` and the client parameter which the original
/// always fills positionally (`command(self, client, *args, **kwargs)`). Those two still count
/// in CPython's messages ("takes 3 positional arguments but 4 were given"), and naming them as
/// keywords gives "got multiple values", so they are modelled too.
struct Sig<'n> {
    /// The method name; messages say `SpallocServer.<name>()` as CPython 3.10+ does.
    name: &'n str,
    /// The name of the method's client parameter (`client` or `_client`).
    client: &'static str,
    /// The named parameters after `self` and the client.
    params: &'static [&'static str],
    /// How many trailing `params` have defaults.
    defaults: usize,
    /// Has `*args`.
    var_args: bool,
    /// Has `**kwargs`.
    var_kwargs: bool,
}

impl<'n> Sig<'n> {
    const fn fixed(
        name: &'n str,
        client: &'static str,
        params: &'static [&'static str],
        defaults: usize,
    ) -> Sig<'n> {
        Sig {
            name,
            client,
            params,
            defaults,
            var_args: false,
            var_kwargs: false,
        }
    }
}

/// The arguments bound to a [`Sig`]: one slot per named parameter (`None`: not given, so the
/// default applies), plus the `*args` and `**kwargs` overflow.
struct Bound<'a> {
    slots: Vec<Option<&'a Json>>,
    extra_kwargs: Vec<(&'a str, &'a Json)>,
}

/// Binds arguments as CPython does, raising its errors in its order: keyword problems first
/// (in the client's order), then too many positional arguments, then missing ones.
fn bind<'a>(sig: &Sig<'_>, args: &'a [Json], kwargs: &'a Kwargs) -> Result<Bound<'a>, String> {
    let func = format!("SpallocServer.{}()", sig.name);
    let mut slots: Vec<Option<&Json>> = vec![None; sig.params.len()];
    for (slot, arg) in slots.iter_mut().zip(args) {
        *slot = Some(arg);
    }
    let too_many = args.len() > sig.params.len() && !sig.var_args;

    let mut extra_kwargs = Vec::new();
    for (key, value) in kwargs {
        if key == "self" || key == sig.client {
            return Err(format!("{func} got multiple values for argument '{key}'"));
        }
        match sig.params.iter().position(|p| p == key) {
            Some(i) => match slots.get_mut(i) {
                Some(slot @ None) => *slot = Some(value),
                _ => return Err(format!("{func} got multiple values for argument '{key}'")),
            },
            None if sig.var_kwargs => extra_kwargs.push((key.as_str(), value)),
            None => return Err(format!("{func} got an unexpected keyword argument '{key}'")),
        }
    }

    if too_many {
        let argcount = sig.params.len() + 2;
        let given = args.len() + 2;
        return Err(if sig.defaults > 0 {
            format!(
                "{func} takes from {} to {argcount} positional arguments but {given} were given",
                argcount - sig.defaults
            )
        } else {
            format!("{func} takes {argcount} positional arguments but {given} were given")
        });
    }

    let required = sig.params.len().saturating_sub(sig.defaults);
    let missing: Vec<String> = sig.params[..required]
        .iter()
        .zip(&slots)
        .filter(|(_, slot)| slot.is_none())
        .map(|(name, _)| format!("'{name}'"))
        .collect();
    if !missing.is_empty() {
        let names = match missing.as_slice() {
            [one] => one.clone(),
            [first, second] => format!("{first} and {second}"),
            [init @ .., last] => format!("{}, and {last}", init.join(", ")),
            [] => String::new(),
        };
        let plural = if missing.len() == 1 { "" } else { "s" };
        return Err(format!(
            "{func} missing {} required positional argument{plural}: {names}",
            missing.len()
        ));
    }

    Ok(Bound {
        slots,
        extra_kwargs,
    })
}

// ---------------------------------------------------------------------------------------------
// Value conversions.

/// A job id as the original's dict lookup sees it: ids are ints ≥ 1, and Python's hash
/// equality makes `5.0` (and `True`, which is `1`) find job 5 (1). Anything else — `"5"`,
/// `-1`, `5.5`, `null` — finds nothing, which id 0 (never allocated) reproduces.
fn job_id_of(value: &Json) -> JobId {
    match value {
        Json::Int(i) => u64::try_from(*i).unwrap_or(0),
        Json::Bool(b) => u64::from(*b),
        // 2^64 as f64 is exact, so `< 18446744073709551616.0` keeps the cast in range.
        Json::Float(f) if f.fract() == 0.0 && *f >= 1.0 && *f < 18_446_744_073_709_551_616.0 => {
            *f as u64
        }
        _ => 0,
    }
}

/// Why a value is not usable as an integer argument.
enum IntError {
    /// Not an integral number (the Python type name).
    NotInt(&'static str),
    /// Integral but outside `i64`.
    Range,
}

/// An integer argument: a JSON integer, a float with an integral value (Python accepts `2.0`
/// wherever it compares or hashes), or a bool (`True == 1` in Python).
fn int_of(value: &Json) -> Result<i64, IntError> {
    match value {
        Json::Int(i) => i64::try_from(*i).map_err(|_| IntError::Range),
        Json::Bool(b) => Ok(i64::from(*b)),
        Json::Float(f) if f.fract() == 0.0 => {
            // -2^63 is exact as f64 and 2^63 is the first value out of range.
            if *f >= -9_223_372_036_854_775_808.0 && *f < 9_223_372_036_854_775_808.0 {
                Ok(*f as i64)
            } else {
                Err(IntError::Range)
            }
        }
        other => Err(IntError::NotInt(other.py_type())),
    }
}

/// [`int_of`] with a message naming the argument (`what` is e.g. `argument 'x'`).
fn int_arg(func: &str, what: &str, value: &Json) -> Result<i64, String> {
    int_of(value).map_err(|e| match e {
        IntError::NotInt(ty) => format!("{func} {what} must be an integer, not '{ty}'"),
        IntError::Range => format!("{func} {what} is out of range"),
    })
}

/// Python's `float(value)` for the values JSON can produce.
fn py_float(value: &Json) -> Result<f64, String> {
    match value {
        Json::Int(i) => Ok(*i as f64),
        Json::Float(f) => Ok(*f),
        Json::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Json::Str(s) => parse_py_float_str(s)
            .ok_or_else(|| format!("could not convert string to float: {}", py_repr_str(s))),
        other => Err(format!(
            "float() argument must be a string or a real number, not '{}'",
            other.py_type()
        )),
    }
}

/// Python's `float(str)`: surrounding whitespace is ignored, underscores may separate digits,
/// and the rest is a decimal literal or `inf`/`infinity`/`nan` with an optional sign (Rust's
/// `f64::from_str` grammar, case-insensitive specials included, matches Python's for these).
fn parse_py_float_str(s: &str) -> Option<f64> {
    let trimmed = s.trim();
    let bytes = trimmed.as_bytes();
    let mut cleaned = String::with_capacity(trimmed.len());
    for (i, c) in trimmed.char_indices() {
        if c == '_' {
            let before = i.checked_sub(1).and_then(|j| bytes.get(j));
            let after = bytes.get(i + 1);
            let digit = |b: Option<&u8>| b.is_some_and(u8::is_ascii_digit);
            if !(digit(before) && digit(after)) {
                return None;
            }
        } else {
            cleaned.push(c);
        }
    }
    cleaned.parse::<f64>().ok()
}

// ---------------------------------------------------------------------------------------------
// Commands.

/// `job_keepalive`, `get_job_state`, `get_job_machine_info`, `power_on/off_job_boards`:
/// `(self, client, job_id)`.
fn job_command(name: &str, args: &[Json], kwargs: &Kwargs) -> Result<JobId, String> {
    let sig = Sig::fixed(name, "client", &["job_id"], 0);
    let bound = bind(&sig, args, kwargs)?;
    Ok(bound.slots.first().copied().flatten().map_or(0, job_id_of))
}

/// `destroy_job(self, client, job_id, reason=None)`.
fn destroy_job(args: &[Json], kwargs: &Kwargs) -> Result<Parsed, String> {
    let sig = Sig::fixed("destroy_job", "client", &["job_id", "reason"], 1);
    let bound = bind(&sig, args, kwargs)?;
    let job_id = bound.slots.first().copied().flatten().map_or(0, job_id_of);
    // The original stores the reason object as is; a string is what every client sends, and
    // `str()` keeps other values readable without letting them break the core's `String`.
    let reason = match bound.slots.get(1).copied().flatten() {
        None | Some(Json::Null) => None,
        Some(value) => Some(py_str(value)),
    };
    Ok(Parsed::Core(Command::DestroyJob { job_id, reason }))
}

/// `report_problem(board_ip, x, y, p=None, description=None)`, the Java server's v1
/// compatibility command: the board's Ethernet IP, the chip (and core) that misbehaved, and
/// the user's words.
fn report_problem(args: &[Json], kwargs: &Kwargs) -> Result<Parsed, String> {
    let name = "report_problem";
    let sig = Sig::fixed(
        name,
        "client",
        &["board_ip", "x", "y", "p", "description"],
        2,
    );
    let bound = bind(&sig, args, kwargs)?;
    let slot = |i: usize| bound.slots.get(i).copied().flatten();
    let ip = match slot(0) {
        Some(Json::Str(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "SpallocServer.{name}() argument 'board_ip' must be a string, not '{}'",
                other.py_type()
            ))
        }
        None => {
            return Err(format!(
                "SpallocServer.{name}() missing argument 'board_ip'"
            ))
        }
    };
    let int = |i: usize, what: &str| -> Result<Option<i64>, String> {
        match slot(i) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => int_arg(name, what, v).map(Some),
        }
    };
    let x = int(1, "x")?.ok_or_else(|| format!("SpallocServer.{name}() needs 'x'"))?;
    let y = int(2, "y")?.ok_or_else(|| format!("SpallocServer.{name}() needs 'y'"))?;
    let p = int(3, "p")?;
    let description = match slot(4) {
        None | Some(Json::Null) => None,
        Some(Json::Str(s)) => Some(s.clone()),
        Some(other) => Some(py_str(other)),
    };
    Ok(Parsed::Core(Command::ReportProblem {
        ip,
        x,
        y,
        p,
        description,
    }))
}

/// `notify_job` / `no_notify_job(self, client, job_id=None)`.
fn notify_job(name: &str, args: &[Json], kwargs: &Kwargs) -> Result<Option<JobId>, String> {
    let sig = Sig::fixed(name, "client", &["job_id"], 1);
    let bound = bind(&sig, args, kwargs)?;
    Ok(match bound.slots.first().copied().flatten() {
        None | Some(Json::Null) => None,
        // A value that is no job id watches id 0, which never changes: as in the original,
        // where such a value sits in the watch set and never matches.
        Some(value) => Some(job_id_of(value)),
    })
}

/// `notify_machine` / `no_notify_machine(self, client, machine_name=None)`.
fn notify_machine(name: &str, args: &[Json], kwargs: &Kwargs) -> Result<Option<String>, String> {
    let sig = Sig::fixed(name, "client", &["machine_name"], 1);
    let bound = bind(&sig, args, kwargs)?;
    match bound.slots.first().copied().flatten() {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Str(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "SpallocServer.{name}() argument 'machine_name' must be a string or None, not '{}'",
            other.py_type()
        )),
    }
}

/// `get_board_position` / `get_board_at_position(self, _client, machine_name, x, y, z)`.
/// (The original names the physical coordinates `x, y, z` too, so those are the keywords.)
fn board_lookup(
    name: &str,
    args: &[Json],
    kwargs: &Kwargs,
) -> Result<(String, i64, i64, i64), String> {
    let sig = Sig::fixed(name, "_client", &["machine_name", "x", "y", "z"], 0);
    let bound = bind(&sig, args, kwargs)?;
    let func = format!("SpallocServer.{name}()");
    let get = |i: usize| bound.slots.get(i).copied().flatten().unwrap_or(&Json::Null);
    let machine = match get(0) {
        Json::Str(s) => s.clone(),
        other => {
            return Err(format!(
                "{func} argument 'machine_name' must be a string, not '{}'",
                other.py_type()
            ))
        }
    };
    let x = int_arg(&func, "argument 'x'", get(1))?;
    let y = int_arg(&func, "argument 'y'", get(2))?;
    let z = int_arg(&func, "argument 'z'", get(3))?;
    Ok((machine, x, y, z))
}

/// `where_is(self, _client, **kwargs)` with exactly one of four keyword sets.
fn where_is(args: &[Json], kwargs: &Kwargs) -> Result<WhereIs, String> {
    let sig = Sig {
        name: "where_is",
        client: "_client",
        params: &[],
        defaults: 0,
        var_args: false,
        var_kwargs: true,
    };
    let bound = bind(&sig, args, kwargs)?;
    let func = "SpallocServer.where_is()";

    // Keys are unique (the parser merges repeats), so sorted lists compare as sets.
    let mut names: Vec<&str> = bound.extra_kwargs.iter().map(|(k, _)| *k).collect();
    names.sort_unstable();
    let get = |key: &str| {
        bound
            .extra_kwargs
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(&Json::Null, |(_, v)| *v)
    };
    let int = |key: &str| int_arg(func, &format!("argument '{key}'"), get(key));
    let machine = || match get("machine") {
        Json::Str(s) => Ok(s.clone()),
        other => Err(format!(
            "{func} argument 'machine' must be a string, not '{}'",
            other.py_type()
        )),
    };
    match names.as_slice() {
        ["machine", "x", "y", "z"] => Ok(WhereIs::Logical {
            machine: machine()?,
            x: int("x")?,
            y: int("y")?,
            z: int("z")?,
        }),
        ["board", "cabinet", "frame", "machine"] => Ok(WhereIs::Physical {
            machine: machine()?,
            cabinet: int("cabinet")?,
            frame: int("frame")?,
            board: int("board")?,
        }),
        ["chip_x", "chip_y", "machine"] => Ok(WhereIs::MachineChip {
            machine: machine()?,
            chip_x: int("chip_x")?,
            chip_y: int("chip_y")?,
        }),
        ["chip_x", "chip_y", "job_id"] => Ok(WhereIs::JobChip {
            job_id: job_id_of(get("job_id")),
            chip_x: int("chip_x")?,
            chip_y: int("chip_y")?,
        }),
        // The original joins a set, so its order is arbitrary; sorted is deterministic.
        _ => Err(format!("Invalid arguments: {}", names.join(", "))),
    }
}

/// The keyword arguments `create_job` understands (besides `owner` and `keepalive`, which the
/// server layer consumes).
const CREATE_JOB_KWARGS: &[&str] = &[
    "owner",
    "keepalive",
    "machine",
    "tags",
    "min_ratio",
    "max_dead_boards",
    "max_dead_links",
    "require_torus",
];

/// What `create_job`'s positional arguments stand for, in order (the original's
/// `Allocator.alloc` parameters).
const POSITIONAL_NAMES: [&str; 7] = [
    "x_or_num_or_width",
    "y_or_height",
    "z",
    "max_dead_boards",
    "max_dead_links",
    "require_torus",
    "min_ratio",
];

/// `create_job(self, client, *args, **kwargs)`, validated completely before any job exists
/// (the original found some of these errors only after registering the job: behaviour.md §B.6).
/// Checks run in the original's order where it had one: tags, owner, keepalive, then the rest.
fn create_job(args: &[Json], kwargs: &Kwargs) -> Result<CreateJob, String> {
    let sig = Sig {
        name: "create_job",
        client: "client",
        params: &[],
        defaults: 0,
        var_args: true,
        var_kwargs: true,
    };
    // Only `self=` can fail here; everything else lands in `*args`/`**kwargs`.
    bind(&sig, args, kwargs)?;
    let func = "SpallocServer.create_job()";
    let kw = |name: &str| kwargs.iter().find(|(k, _)| k == name).map(|(_, v)| v);

    // `tags`: the original does `set(tags)`; only a list of strings can match machine tags.
    let tags: Option<Vec<String>> = match kw("tags") {
        None | Some(Json::Null) => None,
        Some(Json::Array(items)) => Some(
            items
                .iter()
                .map(|item| match item {
                    Json::Str(s) => Ok(s.clone()),
                    other => Err(format!(
                        "tags must be a list of strings, not a list containing '{}'",
                        other.py_type()
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(other) => {
            return Err(format!(
                "tags must be a list of strings, not '{}'",
                other.py_type()
            ))
        }
    };

    let owner = match kw("owner") {
        None | Some(Json::Null) => return Err("owner must be specified for all jobs".to_owned()),
        Some(value) => py_str(value),
    };

    let keepalive_s = match kw("keepalive") {
        None => Some(60.0),
        Some(Json::Null) => None,
        Some(value) => {
            let seconds = py_float(value)?;
            // Python would accept "inf"/"nan" strings; a non-finite timer is either "never"
            // (which `null` already says) or undefined, so it is refused.
            if !seconds.is_finite() {
                return Err(format!(
                    "keepalive must be a finite number of seconds or None, not {}",
                    json::py_repr(value)
                ));
            }
            Some(seconds)
        }
    };

    // The original passes the positional arguments on to `Allocator.alloc(x_or_num_or_width,
    // y_or_height, z, max_dead_boards, max_dead_links, require_torus, min_ratio)`: the first
    // three give the shape, and after a specific board's x, y, z come those four keywords.
    if args.len() > POSITIONAL_NAMES.len() {
        return Err(format!(
            "{func} takes at most {} positional arguments (x, y, z, max_dead_boards, \
             max_dead_links, require_torus, min_ratio) but {} were given",
            POSITIONAL_NAMES.len(),
            args.len()
        ));
    }
    // x, y, z (or n, or w, h) must be integers; max_dead_boards and max_dead_links may be
    // null, as their keywords may.
    let ints = args
        .iter()
        .take(5)
        .enumerate()
        .map(|(i, arg)| match arg {
            Json::Null if i >= 3 => Ok(None),
            _ => int_arg(func, &format!("positional argument {}", i + 1), arg).map(Some),
        })
        .collect::<Result<Vec<Option<i64>>, String>>()?;
    for (i, name) in POSITIONAL_NAMES.iter().enumerate().skip(3) {
        if i < args.len() && kw(name).is_some() {
            return Err(format!("{func} got multiple values for argument '{name}'"));
        }
    }
    // A keyword, or the positional argument that stands for it.
    let arg_or_kw = |i: usize| args.get(i).or_else(|| kw(POSITIONAL_NAMES[i]));
    let shape: Vec<i64> = ints.iter().take(3).flatten().copied().collect();
    let request = match shape[..] {
        [] | [1] => JobRequest::OneBoard,
        [n] => JobRequest::Boards(n),
        [w, h] => JobRequest::Triads(w, h),
        [x, y, z, ..] => JobRequest::Board(x, y, z),
    };

    for (key, _) in kwargs {
        if !CREATE_JOB_KWARGS.contains(&key.as_str()) {
            return Err(format!("{func} got an unexpected keyword argument '{key}'"));
        }
    }

    let machine = match kw("machine") {
        None | Some(Json::Null) => None,
        Some(Json::Str(s)) => Some(s.clone()),
        Some(other) => {
            return Err(format!(
                "machine must be a string or None, not '{}'",
                other.py_type()
            ))
        }
    };
    let target = match (machine, tags) {
        (Some(_), Some(_)) => {
            return Err("Only one of machine and tags may be specified for a job.".to_owned())
        }
        (Some(name), None) => JobTarget::Machine(name),
        (None, Some(mut tags)) => {
            tags.sort();
            tags.dedup();
            JobTarget::Tags(tags)
        }
        (None, None) => JobTarget::Tags(vec!["default".to_owned()]),
    };

    let min_ratio = match arg_or_kw(6) {
        // `null` is taken as the default: the original only trips over it for n-board jobs.
        None | Some(Json::Null) => 0.0,
        Some(Json::Int(i)) => *i as f64,
        Some(Json::Float(f)) => *f,
        Some(Json::Bool(b)) => f64::from(u8::from(*b)),
        Some(other) => {
            return Err(format!(
                "min_ratio must be a number, not '{}'",
                other.py_type()
            ))
        }
    };

    let optional_int = |name: &str| -> Result<Option<i64>, String> {
        match kw(name) {
            None | Some(Json::Null) => Ok(None),
            Some(value) => int_of(value).map(Some).map_err(|e| match e {
                IntError::NotInt(ty) => format!("{name} must be an integer or None, not '{ty}'"),
                IntError::Range => format!("{name} is out of range"),
            }),
        }
    };
    let max_dead_boards = match ints.get(3) {
        Some(&n) => n,
        None => optional_int("max_dead_boards")?,
    };
    let max_dead_links = match ints.get(4) {
        Some(&n) => n,
        None => optional_int("max_dead_links")?,
    };

    // The original tests `if require_torus:`; numbers and null have an obvious truth value.
    let require_torus = match arg_or_kw(5) {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(Json::Int(i)) => *i != 0,
        Some(Json::Float(f)) => *f != 0.0,
        Some(other) => {
            return Err(format!(
                "require_torus must be a bool, not '{}'",
                other.py_type()
            ))
        }
    };
    // For a board the original insists on `require_torus is False`: true, and also null or 0
    // (an AssertionError with no message there), left a zombie job; refused up front here.
    if matches!(request, JobRequest::OneBoard | JobRequest::Board(..))
        && arg_or_kw(5).is_some_and(|v| *v != Json::Bool(false))
    {
        return Err("require_torus must be False when allocating boards.".to_owned());
    }
    // The original's area_to_rect raises this for an n-boards request (after registering the
    // job, so that it lingers as a zombie: refused up front here, as the cases above).
    if min_ratio < 0.0 && matches!(request, JobRequest::Boards(n) if n > 0) {
        return Err("Aspect ratio cannot be negative.".to_owned());
    }

    Ok(CreateJob {
        owner,
        keepalive_s,
        request,
        target,
        min_ratio,
        max_dead_boards,
        max_dead_links,
        require_torus,
        args_json: Json::Array(args.to_vec()).to_python_json(),
        kwargs_json: listed_kwargs(kwargs).to_python_json(),
    })
}

/// The keyword arguments as the original's `list_jobs` shows them: the client's, minus `owner`
/// and `keepalive`, in the client's order, with `tags` turned from a set back into a list
/// (duplicates gone; the original's set order was arbitrary, the client's order is kept).
fn listed_kwargs(kwargs: &Kwargs) -> Json {
    let entries = kwargs
        .iter()
        .filter(|(k, _)| k != "owner" && k != "keepalive")
        .map(|(k, v)| {
            let v = match (k.as_str(), v) {
                ("tags", Json::Array(items)) => {
                    // (Found through a set, not by scanning: thousands of tags would
                    // otherwise cost their square; they are all strings by now.)
                    let mut seen: std::collections::BTreeSet<&str> = Default::default();
                    let mut unique: Vec<Json> = Vec::with_capacity(items.len());
                    for item in items {
                        let new = match item {
                            Json::Str(s) => seen.insert(s.as_str()),
                            other => !unique.contains(other),
                        };
                        if new {
                            unique.push(item.clone());
                        }
                    }
                    Json::Array(unique)
                }
                _ => v.clone(),
            };
            (k.clone(), v)
        })
        .collect();
    Json::Object(entries)
}
