//! The client protocol: one JSON object per `\n`-terminated line in each direction.
//!
//! A request is `{"command": str, "args": [...], "kwargs": {...}}` (`args` and `kwargs` may be
//! left out) and maps onto a Python method call on the original server,
//! `SpallocServer.<command>(self, client, *args, **kwargs)`. This module reproduces that call:
//! [`parse_line`] binds the arguments the way CPython would (same error messages) and checks
//! their values, producing a typed [`Parsed`]; the `render_*` functions write replies and
//! notifications byte for byte as the original's `json.dumps` did (`", "` and `": "`
//! separators, `ensure_ascii`, Python float `repr`, the original's dict key order).
//!
//! Where this module deliberately differs from the original:
//!
//! * **Errors that closed the connection.** Framing errors (not UTF-8, not JSON, not an
//!   object, no string `command`, `args` not an array, `kwargs` not an object) still close the
//!   connection, but now after a reply `{"exception": msg}` ([`Parsed::Fatal`]) instead of
//!   silently. An unknown command name only gets an exception reply and the connection stays
//!   open ([`Parsed::Exception`]).
//! * **`create_job` is validated completely before the job exists** (behaviour.md §B.6): an
//!   unknown keyword, `machine` with `tags`, `require_torus` with a board request, a bad
//!   keepalive, non-integer shape arguments and non-string tags are exceptions and consume no
//!   job id. The original registered the job first (a zombie job, and for machine+tags a crash
//!   of its server thread when the keepalive expired).
//! * **Values the original would have carried along as raw Python objects** are either
//!   converted or refused: `tags` must be a list of strings (the original turned the string
//!   `"abc"` into `{"a","b","c"}`, which matches nothing); `machine`, `machine_name` and the
//!   coordinates of `get_board_position`, `get_board_at_position` and `where_is` must be a string
//!   or integers (the original answered `null` or crashed with an internal `TypeError`);
//!   `min_ratio` must be a number (`null` means the default 0.0); `require_torus` must be a
//!   bool, number or null; a `destroy_job` reason that is not a string is stored as Python's
//!   `str()` of it; a non-finite keepalive (`"inf"`, `"nan"`) is refused.
//! * **More than four positional arguments to `create_job`** are an exception here; the
//!   original reported an error from deep inside its allocator, after creating the job.
//! * **Messages for these new checks** are our own wording; messages the original produced
//!   (CPython's binding errors with `SpallocServer.<name>()`, `owner must be specified for all
//!   jobs`, `could not convert string to float: 'abc'`, `Only one of machine and tags may be
//!   specified for a job.`, `require_torus must be False when allocating boards.`,
//!   `Invalid arguments: ...`) are reproduced word for word, except that `where_is`'s
//!   `Invalid arguments` lists the names sorted (the original joined a set).
//! * **Numbers**: integer literals beyond 64 bits are read as floats (serde_json without
//!   `arbitrary_precision`), so a 30-digit integer is echoed by `list_jobs` in float notation;
//!   `NaN`/`Infinity` literals and numbers beyond the f64 range are invalid JSON here
//!   (Python's `json.loads` accepted them).
//! * **Nesting deeper than 128 levels** is a framing error (serde_json's recursion limit),
//!   which also guarantees the recursive code here cannot exhaust the stack.
//! * **`version()`** answers [`VERSION`], a version every client accepts, not `"1!7.0.0"`.

mod common;
mod json;
mod parse;
mod render;
#[cfg(test)]
mod tests;

use crate::core::types::{Command, JobId, Response};

/// The longest request line the server accepts, in bytes, excluding the `\n`.
///
/// The original buffered without limit. Real requests are a few hundred bytes (the largest,
/// `create_job` with every keyword, is about 250), so 64 KiB leaves generous room for long
/// owner names and tag lists while bounding the memory one client can pin and the work one
/// line can cause. The server enforces it (this module parses whatever it is given).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// What `version()` answers.
///
/// The original 7.0.0 answered `"1!7.0.0"`, which no client can parse: clients split the
/// version at `.` and convert every part with `int()`. Current clients (`spalloc` 1!7.x)
/// accept `[0.1.0, 7.0.0)` and the old 2.0.1 client accepts `[0.4.0, 2.0.0)`, so the answer
/// must lie in `[0.4.0, 2.0.0)`. `1.0.0` is what spalloc_server 1.0.0 itself answered, and this
/// server speaks that protocol (with `keepalivehost` and `{"exception"}` replies), so every
/// client written against it — and every later one — accepts us.
pub const VERSION: &str = "1.0.0";

/// Every command a request may name, in the original's order of definition (plus
/// `report_problem`, the Java server's v1 compatibility command): for tests and fuzzers that
/// need the list. Any other name is an "unknown command".
pub const COMMANDS: &[&str] = &[
    "version",
    "create_job",
    "job_keepalive",
    "get_job_state",
    "get_job_machine_info",
    "power_on_job_boards",
    "power_off_job_boards",
    "destroy_job",
    "notify_job",
    "no_notify_job",
    "notify_machine",
    "no_notify_machine",
    "list_jobs",
    "list_machines",
    "get_board_position",
    "get_board_at_position",
    "where_is",
    "report_problem",
];

/// The meaning of one request line.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// `version()`: the server answers with [`render_version`]`(`[`VERSION`]`)`.
    Version,
    /// `notify_job(job_id)`: watch one job, or every job (`None`).
    NotifyJob(Option<JobId>),
    /// `no_notify_job(job_id)`: stop watching one job, or every job (`None`).
    NoNotifyJob(Option<JobId>),
    /// `notify_machine(machine_name)`: watch one machine, or every machine (`None`).
    NotifyMachine(Option<String>),
    /// `no_notify_machine(machine_name)`: stop watching one machine, or every machine (`None`).
    NoNotifyMachine(Option<String>),
    /// A command for the core (journaled first unless [`Command::is_read_only`]).
    Core(Command),
    /// The call is wrong (arity, keywords, argument values): reply with
    /// [`render_exception`] and keep the connection open.
    Exception(String),
    /// The line is not a request at all: reply with [`render_exception`], then close the
    /// connection.
    Fatal(String),
}

/// Parses one request line (without its `\n`; the caller skips blank lines).
///
/// Never panics, whatever the bytes.
///
/// Ids: `job_id` arguments follow the original's dictionary lookup, where `5.0` (and `true`,
/// Python's `1`) find job 5 (1) and anything else that is not a positive integer (`"5"`, `-1`,
/// `2.5`) finds no job. Such ids become 0, which is never allocated. A *missing* `job_id` is an
/// arity error.
pub fn parse_line(line: &[u8]) -> Parsed {
    parse::parse_line(line)
}

/// `{"return": <value>}\n` for a command's reply, in the original's byte format.
pub fn render_response(r: &Response) -> Vec<u8> {
    render::response(r)
}

/// `{"exception": "<msg>"}\n`.
pub fn render_exception(msg: &str) -> Vec<u8> {
    render::exception(msg)
}

/// `{"jobs_changed": [1, 2]}\n`, in the order given.
pub fn render_jobs_changed(ids: &[JobId]) -> Vec<u8> {
    render::jobs_changed(ids)
}

/// `{"machines_changed": ["m", ...]}\n`, in the order given.
pub fn render_machines_changed(names: &[String]) -> Vec<u8> {
    render::machines_changed(names)
}

/// `{"return": "<v>"}\n`, the reply to `version()` (normally with [`VERSION`]).
pub fn render_version(v: &str) -> Vec<u8> {
    render::version(v)
}
