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
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use argh::FromArgs;
use spalloc::bmp::scp::resolve_address;
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

    /// milliseconds each exchange takes before its reply is sent (one BMP answers one
    /// request at a time, so its requests queue; different BMPs run in parallel); default 0
    #[argh(option, default = "0")]
    latency_ms: u64,

    /// print every request received, with its reply code
    #[argh(switch)]
    log: bool,

    /// make a board fail, for trying out board health without hardware; repeatable:
    /// HOST[:PORT]/BOARD=KIND[*N] with KIND power (ignores power-on), fpga (wrong FPGA
    /// id), link (link setup refused), or HOST[:PORT]=silent[*N] (the BMP answers
    /// nothing); *N: only the next N times (power-ons, or commands), else always.
    /// Example: --fault 127.0.0.1:17893/5=fpga
    #[argh(option)]
    fault: Vec<String>,
}

fn main() -> ExitCode {
    let args: Args = match spalloc::cli::parse("spalloc-bmp-sim") {
        Ok(args) => args,
        Err(code) => return code,
    };
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
        latency_ms: args.latency_ms,
        ..SimOptions::default()
    };
    let faults = args
        .fault
        .iter()
        .map(|f| spalloc::bmp::parse_fault_spec(f))
        .collect::<Result<Vec<_>, _>>()?;
    for f in &faults {
        if !f.endpoint.is_some_and(|e| endpoints.contains(&e)) {
            return Err(format!(
                "fault {f:?} names a BMP this simulator does not serve ({endpoints:?})"
            ));
        }
    }
    let sim = Simulator::start(&endpoints, options).map_err(|e| e.to_string())?;
    for f in faults {
        println!("spalloc-bmp-sim: injecting {f:?}");
        sim.inject(f);
    }
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

/// Every BMP address in a configuration file, with where it came from, read through the
/// server's own configuration loader (so every shorthand form is understood exactly as the
/// server understands it).
fn config_addresses(path: &str) -> Result<Vec<(String, String)>, String> {
    let config = spalloc::config::load(std::path::Path::new(path))
        .map_err(|e| format!("{path} is not a valid configuration:\n{e}"))?;
    Ok(config
        .machines
        .iter()
        .flat_map(|m| {
            m.bmps.iter().map(move |b| {
                (
                    b.address.clone(),
                    format!(
                        "{path}: machine {} (cabinet {}, frame {})",
                        m.name, b.cabinet, b.frame
                    ),
                )
            })
        })
        .collect())
}
