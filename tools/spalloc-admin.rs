//! `spalloc-admin`: the administrator's tool. It talks to a running server over its admin
//! socket (a Unix-domain socket only the service's user can open, `admin.sock` in the journal
//! directory by default) to take boards out of service and put them back, list boards not in
//! service and users' problem reports, and stop everything in an emergency.
//!
//! Argument parsing is here; the work is one JSON line to the server and one back.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use serde_json::{json, Value};

/// Administer a running spalloc-server: drain and undrain boards, list boards out of service
/// and problem reports, emergency stop and resume.
#[derive(FromArgs)]
#[argh(
    example = "{command_name} --journal /var/lib/spalloc drain spin24 3 1 2 --reason \"fan broken\"\n{command_name} --journal /var/lib/spalloc drain spin24 --physical 0 1 5 --reason \"red LED\"\n{command_name} --journal /var/lib/spalloc undrain --ip 10.2.0.9\n{command_name} --journal /var/lib/spalloc boards --drained\n{command_name} --journal /var/lib/spalloc emergency-stop --reason \"machine room fire alarm\"",
    note = "Every action is journaled (with $USER as the actor) and shown by spalloc-replay.\nA drained board is never given to a new job and shows as dead in list_machines; a job\nalready running on it keeps it until it ends.",
    error_code(1, "the server refused the request or could not be reached"),
    error_code(2, "bad command line")
)]
struct Args {
    /// the server's journal directory (the admin socket is DIR/admin.sock)
    #[argh(option)]
    journal: Option<PathBuf>,
    /// the admin socket, if the server was started with --admin-socket
    #[argh(option)]
    socket: Option<PathBuf>,
    #[argh(subcommand)]
    command: Sub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Sub {
    Drain(Drain),
    Undrain(Undrain),
    Boards(Boards),
    Reports(Reports),
    EmergencyStop(EmergencyStop),
    Resume(Resume),
    Status(Status),
}

/// Take a board out of service: MACHINE X Y Z, or MACHINE --physical CABINET FRAME BOARD, or
/// --ip IP.
#[derive(FromArgs)]
#[argh(subcommand, name = "drain")]
struct Drain {
    /// the board: MACHINE X Y Z (logical), or MACHINE C F B with --physical
    #[argh(positional)]
    board: Vec<String>,
    /// the numbers are cabinet, frame and board
    #[argh(switch)]
    physical: bool,
    /// the board whose Ethernet chip has this IP address (instead of MACHINE X Y Z)
    #[argh(option)]
    ip: Option<String>,
    /// why (shown in listings and the journal)
    #[argh(option)]
    reason: String,
}

/// Put a board back in service (its failure count and report count start again).
#[derive(FromArgs)]
#[argh(subcommand, name = "undrain")]
struct Undrain {
    /// the board: MACHINE X Y Z (logical), or MACHINE C F B with --physical
    #[argh(positional)]
    board: Vec<String>,
    /// the numbers are cabinet, frame and board
    #[argh(switch)]
    physical: bool,
    /// the board whose Ethernet chip has this IP address (instead of MACHINE X Y Z)
    #[argh(option)]
    ip: Option<String>,
}

/// List boards with anything on record: drains (reason, actor, time), reports, failures.
#[derive(FromArgs)]
#[argh(subcommand, name = "boards")]
struct Boards {
    /// only boards out of service
    #[argh(switch)]
    drained: bool,
    /// print the server's JSON
    #[argh(switch)]
    json: bool,
}

/// List every problem report (report_problem), oldest first.
#[derive(FromArgs)]
#[argh(subcommand, name = "reports")]
struct Reports {
    /// print the server's JSON
    #[argh(switch)]
    json: bool,
}

/// Power every job's boards off, destroy every live job with the reason, and cancel every
/// new job until `resume`.
#[derive(FromArgs)]
#[argh(subcommand, name = "emergency-stop")]
struct EmergencyStop {
    /// why (every destroyed job's reason says it)
    #[argh(option)]
    reason: String,
}

/// Whether an emergency stop is in force, BMPs not answering, drained boards, live jobs.
#[derive(FromArgs)]
#[argh(subcommand, name = "status")]
struct Status {
    /// print the server's JSON
    #[argh(switch)]
    json: bool,
}

/// End an emergency stop: new jobs are accepted again.
#[derive(FromArgs)]
#[argh(subcommand, name = "resume")]
struct Resume {}

fn main() -> ExitCode {
    let args: Args = match spalloc::cli::parse("spalloc-admin") {
        Ok(args) => args,
        Err(code) => return code,
    };
    let socket = match (&args.socket, &args.journal) {
        (Some(s), _) => s.clone(),
        (None, Some(j)) => j.join("admin.sock"),
        (None, None) => {
            eprintln!("spalloc-admin: give --journal DIR (or --socket PATH); see --help");
            return ExitCode::from(2);
        }
    };
    let (request, render): (Value, Render) = match build(&args.command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spalloc-admin: {e}\nRun spalloc-admin --help for more information.");
            return ExitCode::from(2);
        }
    };
    match call(&socket, &request) {
        Ok(value) => {
            print!("{}", render(&value));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spalloc-admin: {e}");
            ExitCode::FAILURE
        }
    }
}

type Render = fn(&Value) -> String;

fn actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// The board object of a drain/undrain from its command-line forms.
fn board(words: &[String], physical: bool, ip: &Option<String>) -> Result<Value, String> {
    if let Some(ip) = ip {
        if !words.is_empty() || physical {
            return Err("give either --ip IP or MACHINE X Y Z, not both".into());
        }
        return Ok(json!({"ip": ip}));
    }
    let [machine, a, b, c] = words else {
        return Err(format!(
            "the board is MACHINE X Y Z (or MACHINE C F B with --physical, or --ip IP); got {} \
             words",
            words.len()
        ));
    };
    let n = |s: &String| {
        s.parse::<u32>()
            .map_err(|_| format!("{s:?} is not a board coordinate (a non-negative integer)"))
    };
    Ok(if physical {
        json!({"machine": machine, "cabinet": n(a)?, "frame": n(b)?, "board": n(c)?})
    } else {
        json!({"machine": machine, "x": n(a)?, "y": n(b)?, "z": n(c)?})
    })
}

/// An answer as it came: one line of JSON (`--json`, and the actions' replies).
fn as_json(v: &Value) -> String {
    format!("{v}\n")
}

fn build(sub: &Sub) -> Result<(Value, Render), String> {
    Ok(match sub {
        Sub::Drain(d) => (
            json!({"command": "drain", "kwargs": {
                "board": board(&d.board, d.physical, &d.ip)?, "reason": d.reason, "actor": actor()}}),
            as_json,
        ),
        Sub::Undrain(d) => (
            json!({"command": "undrain", "kwargs": {
                "board": board(&d.board, d.physical, &d.ip)?, "actor": actor()}}),
            as_json,
        ),
        Sub::Boards(b) => (
            json!({"command": "boards", "kwargs": {"drained": b.drained}}),
            if b.json { as_json } else { render_boards },
        ),
        Sub::Reports(r) => (
            json!({"command": "reports"}),
            if r.json { as_json } else { render_reports },
        ),
        Sub::EmergencyStop(e) => (
            json!({"command": "emergency_stop", "kwargs": {"reason": e.reason, "actor": actor()}}),
            as_json,
        ),
        Sub::Status(st) => (
            json!({"command": "status"}),
            if st.json { as_json } else { render_status },
        ),
        Sub::Resume(_) => (
            json!({"command": "resume", "kwargs": {"actor": actor()}}),
            as_json,
        ),
    })
}

/// Send one request line and read the answer line.
fn call(socket: &PathBuf, request: &Value) -> Result<Value, String> {
    let mut stream = spalloc::server::admin::connect(socket).map_err(|e| {
        format!(
            "cannot reach the server's admin socket {}: {e} (is the server running, and are \
             you its user?)",
            socket.display()
        )
    })?;
    let timeout = Some(Duration::from_secs(30));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    let mut line = request.to_string();
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| format!("no answer from the server: {e}"))?;
    let v: Value = serde_json::from_str(&answer)
        .map_err(|e| format!("the server's answer is not JSON ({e}): {answer:?}"))?;
    if let Some(e) = v.get("exception") {
        return Err(e.as_str().map_or_else(|| e.to_string(), str::to_string));
    }
    v.get("return")
        .cloned()
        .ok_or_else(|| format!("unexpected answer: {answer}"))
}

fn board_name(b: &Value) -> String {
    let xyz = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    format!(
        "{} ({})",
        b["machine"].as_str().unwrap_or("?"),
        xyz(&b["board"])
    )
}

fn render_boards(v: &Value) -> String {
    let mut out = String::new();
    if let Some(e) = v.get("emergency_stop").filter(|e| !e.is_null()) {
        out += &format!(
            "EMERGENCY STOP in force since {} by {}: {}\n",
            e["at"].as_str().unwrap_or("?"),
            clean(e["by"].as_str().unwrap_or("?")),
            clean(e["reason"].as_str().unwrap_or(""))
        );
    }
    for f in v["unreachable_frames"].as_array().into_iter().flatten() {
        out += &format!(
            "BMP not answering: {} cabinet {} frame {} (its boards are not given to new jobs)\n",
            f["machine"].as_str().unwrap_or("?"),
            f["cabinet"],
            f["frame"]
        );
    }
    let boards = v["boards"].as_array().cloned().unwrap_or_default();
    if boards.is_empty() {
        out += "every board is in service, with nothing on record\n";
    }
    for b in boards {
        let physical = b["physical"]
            .as_array()
            .map(|p| format!(" c{} f{} b{}", p[0], p[1], p[2]))
            .unwrap_or_default();
        let ip = b["ip"]
            .as_str()
            .map(|s| format!(" {s}"))
            .unwrap_or_default();
        out += &format!("{}{physical}{ip}: ", board_name(&b));
        match b.get("drain").filter(|d| !d.is_null()) {
            Some(d) => {
                out += &format!(
                    "DRAINED by {} ({}) at {}: {}\n",
                    d["actor"].as_str().unwrap_or("?"),
                    clean(d["by"].as_str().unwrap_or("?")),
                    d["at"].as_str().unwrap_or("?"),
                    clean(d["reason"].as_str().unwrap_or(""))
                )
            }
            None => out += "in service\n",
        }
        out += &format!(
            "    {} reports ({} since last in service), {} consecutive failed jobs\n",
            b["reports"].as_array().map_or(0, Vec::len),
            b["reports_since_service"],
            b["consecutive_failures"]
        );
        for r in b["reports"].as_array().into_iter().flatten() {
            out += &format!("    report {}\n", report_line(r));
        }
        for f in b["failures"].as_array().into_iter().flatten() {
            out += &format!(
                "    failure {} job {}: {}\n",
                f["at"].as_str().unwrap_or("?"),
                f["job_id"],
                clean(f["reason"].as_str().unwrap_or(""))
            );
        }
    }
    out
}

fn report_line(r: &Value) -> String {
    format!(
        "{} from {} (job {}, chip {}{}): {}",
        r["at"].as_str().unwrap_or("?"),
        r["host"].as_str().unwrap_or("?"),
        r["job_id"],
        r["chip"],
        if r["core"].is_null() {
            String::new()
        } else {
            format!(", core {}", r["core"])
        },
        clean(r["description"].as_str().unwrap_or("(no description)"))
    )
}

fn render_reports(v: &Value) -> String {
    let reports = v.as_array().cloned().unwrap_or_default();
    if reports.is_empty() {
        return "no problem reports\n".into();
    }
    reports
        .iter()
        .map(|r| format!("{}: {}\n", board_name(r), report_line(r)))
        .collect()
}

fn render_status(v: &Value) -> String {
    let mut out = match v.get("emergency_stop").filter(|e| !e.is_null()) {
        Some(e) => format!(
            "EMERGENCY STOP in force since {} by {}: {}\n",
            e["at"].as_str().unwrap_or("?"),
            clean(e["by"].as_str().unwrap_or("?")),
            clean(e["reason"].as_str().unwrap_or(""))
        ),
        None => "in service (no emergency stop)\n".to_string(),
    };
    let frames = v["unreachable_frames"].as_array().map_or(0, Vec::len);
    let drained = v["boards"].as_array().map_or(0, Vec::len);
    out += &format!(
        "{} live jobs, {drained} boards drained, {frames} BMPs not answering\n",
        v["live_jobs"]
    );
    out
}

/// Users' words (report descriptions, reasons built from them) made safe for a terminal:
/// control characters and invisible direction overrides are shown escaped, not obeyed (the
/// server's own escaping for its log, `spalloc::logsafe`).
fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    spalloc::logsafe::escape(text)
}
