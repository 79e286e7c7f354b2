//! `spalloc-bmp-sim`: simulated SpiNN-5 BMPs on loopback, for running the server without
//! hardware.
//!
//! It serves every BMP named by a server configuration file (`machines[].bmps[].address`,
//! `machines[].single_board.bmp`, or the BMPs derived from `standard_ips`), and/or the
//! addresses given with `--address`. Only loopback addresses are served: a configuration that
//! names a real BMP is refused rather than half-simulated. It runs until killed (SIGINT or
//! SIGTERM).

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use argh::FromArgs;
use serde_json::Value;
use spalloc::bmp::scp::{resolve_address, split_address};
use spalloc::bmp::{ReturnCode, SimLogEntry, SimOptions, Simulator};

/// Simulate the BMPs of a spalloc configuration on loopback UDP sockets.
///
/// Example: spalloc-bmp-sim --config machines.json --boot-ms 1500 --log
#[derive(FromArgs)]
struct Args {
    /// server configuration file (JSON) whose BMPs to serve; every BMP address in it must be
    /// a loopback address (127.0.0.0/8 or ::1), default port 17893
    #[argh(option)]
    config: Option<String>,

    /// a BMP address to serve, host or host:port (loopback only); repeatable
    #[argh(option)]
    address: Vec<String>,

    /// milliseconds from power-on until a board's FPGAs are loaded (real hardware: about
    /// 1500); a power-on that includes board 0 is answered only after this long; default 0
    #[argh(option, default = "0")]
    boot_ms: u64,

    /// answer as legacy (major version 1) firmware, so servers skip FPGA checks and link
    /// writes
    #[argh(switch)]
    legacy: bool,

    /// print every request received, with its reply code
    #[argh(switch)]
    log: bool,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spalloc-bmp-sim: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let mut addresses: Vec<(String, String)> = Vec::new();
    if let Some(path) = &args.config {
        addresses.extend(config_addresses(path)?);
    }
    addresses.extend(
        args.address
            .iter()
            .map(|a| (a.clone(), "--address".to_string())),
    );
    if addresses.is_empty() {
        return Err("nothing to serve: give --config FILE and/or --address HOST[:PORT]".into());
    }
    let mut endpoints = BTreeSet::new();
    for (address, origin) in &addresses {
        let addr = resolve_address(address)
            .map_err(|e| format!("BMP address {address:?} ({origin}): {e}"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "BMP address {address:?} ({origin}) is not a loopback address; \
                 spalloc-bmp-sim only serves 127.0.0.0/8 and ::1"
            ));
        }
        endpoints.insert(addr);
    }
    let endpoints: Vec<SocketAddr> = endpoints.into_iter().collect();
    let on_request: Option<spalloc::bmp::sim::RequestObserver> = if args.log {
        Some(Arc::new(|e: &SimLogEntry| print_entry(e)))
    } else {
        None
    };
    let options = SimOptions {
        boot_ms: args.boot_ms,
        legacy_firmware: args.legacy,
        on_request,
        ..SimOptions::default()
    };
    let sim = Simulator::start(&endpoints, options).map_err(|e| e.to_string())?;
    for endpoint in sim.endpoints() {
        println!("spalloc-bmp-sim: serving BMP {endpoint}");
    }
    let _ = std::io::stdout().flush();
    // Serve until a signal ends the process; the simulator's threads do all the work.
    loop {
        std::thread::park();
    }
}

fn print_entry(e: &SimLogEntry) {
    let outcome = match (e.rc, e.replied) {
        (None, _) => "dropped".to_string(),
        (Some(rc), true) => ReturnCode(rc).name().to_string(),
        (Some(rc), false) => format!("{} (reply not sent)", ReturnCode(rc).name()),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{} <- {} seq {}: {} -> {outcome}",
        e.endpoint,
        e.source,
        e.seq,
        e.describe()
    );
    let _ = out.flush();
}

/// Every BMP address in a configuration file, with where it came from.
///
/// This reads only the few keys it needs with `serde_json::Value`, so that it does not depend
/// on the server's full configuration parser.
fn config_addresses(path: &str) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let root: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: bad JSON: {e}"))?;
    let machines = match root.get("machines") {
        None => return Ok(Vec::new()),
        Some(Value::Array(m)) => m,
        Some(_) => return Err(format!("{path}: machines: expected a list")),
    };
    let mut out = Vec::new();
    for (i, machine) in machines.iter().enumerate() {
        let at = format!("{path}: machines[{i}]");
        if let Some(single) = machine.get("single_board") {
            let bmp = single
                .get("bmp")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}.single_board.bmp: expected a string"))?;
            out.push((bmp.to_string(), format!("{at}.single_board.bmp")));
            continue;
        }
        if let Some(bmps) = machine.get("bmps") {
            let bmps = bmps
                .as_array()
                .ok_or_else(|| format!("{at}.bmps: expected a list"))?;
            for (j, bmp) in bmps.iter().enumerate() {
                let address = bmp
                    .get("address")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{at}.bmps[{j}].address: expected a string"))?;
                out.push((address.to_string(), format!("{at}.bmps[{j}]")));
            }
            continue;
        }
        if let Some(standard) = machine.get("standard_ips") {
            out.extend(standard_bmps(machine, standard, &at)?);
        }
    }
    // Validate the syntax early so that errors name the configuration path.
    for (address, origin) in &out {
        split_address(address).map_err(|e| format!("{origin}: {e}"))?;
    }
    Ok(out)
}

/// The BMPs of a `standard_ips` machine: for every (cabinet, frame) holding a board,
/// base + cabinet·cabinet_stride + frame·frame_stride + bmp_offset.
fn standard_bmps(
    machine: &Value,
    standard: &Value,
    at: &str,
) -> Result<Vec<(String, String)>, String> {
    let quad = |key: &str| -> Result<u32, String> {
        let text = standard
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}.standard_ips.{key}: expected a dotted quad"))?;
        text.parse::<Ipv4Addr>()
            .map(u32::from)
            .map_err(|_| format!("{at}.standard_ips.{key}: {text:?} is not a dotted quad"))
    };
    let (base, cabinet_stride, frame_stride) = (
        quad("base_ip")?,
        quad("cabinet_stride")?,
        quad("frame_stride")?,
    );
    let bmp_offset = if standard.get("bmp_offset").is_some() {
        quad("bmp_offset")?
    } else {
        0
    };
    let boards = machine.get("boards").and_then(Value::as_array).ok_or_else(|| {
        format!("{at}: standard_ips needs a boards list here (spinner_csv is not read by this tool; use --address)")
    })?;
    let mut frames = BTreeSet::new();
    for (k, board) in boards.iter().enumerate() {
        let field = |name: &str| {
            board
                .get(name)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| format!("{at}.boards[{k}].{name}: expected a number"))
        };
        frames.insert((field("cabinet")?, field("frame")?));
    }
    Ok(frames
        .into_iter()
        .map(|(c, f)| {
            let ip = base
                .wrapping_add(c.wrapping_mul(cabinet_stride))
                .wrapping_add(f.wrapping_mul(frame_stride))
                .wrapping_add(bmp_offset);
            (
                Ipv4Addr::from(ip).to_string(),
                format!("{at} (cabinet {c}, frame {f})"),
            )
        })
        .collect())
}
