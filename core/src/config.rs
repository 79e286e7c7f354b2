//! The validated configuration: plain data that the core folds and the journal records (it is
//! the value carried by [`crate::Event::Configure`]).
//!
//! Only the *validated* form lives here. Reading the file, the raw JSON walk and the
//! validation that turns raw into validated are the server's (`spalloc::config`), because
//! they do I/O (the file, a `spinner_csv` file beside it) and the core does none.
//!
//! A validated [`Config`] is deliberately plain: vectors in a canonical (sorted) order, no maps
//! keyed by tuples, so that equal configurations compare equal whatever order the file listed
//! things in. [`Config::to_json`] writes it back in the explicit form.

use serde::{Deserialize, Serialize};

use crate::coordinates::{Board, Link};

/// A fully validated server configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Address to listen on ("0.0.0.0" for all interfaces).
    pub ip: String,
    /// TCP port to listen on.
    pub port: u16,
    /// Longest time between two checks for expired keepalives and boards due for release.
    pub timeout_check_interval_s: f64,
    /// How many destroyed jobs' reasons are remembered.
    pub max_retired_jobs: usize,
    /// How long freed boards are held back before they are handed out again.
    pub seconds_before_free_s: f64,
    /// Hardware-control timings and retry counts.
    pub bmp: BmpTimings,
    /// Machines in priority order, highest first.
    pub machines: Vec<MachineConfig>,
    /// When boards are taken out of service and how hard a job is recovered (absent from
    /// records written before board health existed: the defaults).
    #[serde(default)]
    pub health: HealthConfig,
    /// Board faults for the BMP simulator of `--simulate-bmps` (`spalloc-bmp-sim --fault`
    /// specs, `spalloc::bmp::parse_fault_spec`), so a demo or test configuration can show a
    /// failing board without hardware. Read at start-up; ignored (with a warning) without
    /// `--simulate-bmps`. (Absent from older records: none.)
    #[serde(default)]
    pub simulated_faults: Vec<String>,
}

/// The `health` block: thresholds of board health ([`crate::health`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// A board whose power-on, FPGA check or link setup fails in this many consecutive jobs
    /// is drained automatically (0: never).
    pub drain_after_failures: u32,
    /// A board reported this many times (`report_problem`) since it was last put back in
    /// service is drained (0: never).
    pub drain_after_reports: u32,
    /// How many times a job whose power-on failed because of its boards is given new boards
    /// before it is destroyed (0: destroyed at once, as the original did).
    pub recovery_attempts: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            drain_after_failures: 2,
            drain_after_reports: 2,
            recovery_attempts: 2,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ip: "0.0.0.0".to_string(),
            port: 22244,
            timeout_check_interval_s: 5.0,
            max_retired_jobs: 1200,
            seconds_before_free_s: 30.0,
            bmp: BmpTimings::default(),
            machines: Vec::new(),
            health: HealthConfig::default(),
            simulated_faults: Vec::new(),
        }
    }
}

/// The `bmp` block: how the BMP threads time and retry their work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BmpTimings {
    /// Sleep after a power-on before the FPGAs are checked.
    pub post_power_on_delay_s: f64,
    /// How long to wait for the reply to a power command (sent once).
    pub power_on_timeout_s: f64,
    /// How long to wait for the reply to any other command before resending.
    pub command_timeout_s: f64,
    /// How many times a non-power command is resent after a timeout.
    pub command_retries: u32,
    /// How many times a whole request is attempted before the job fails.
    pub request_attempts: u32,
    /// Sleep between two attempts of a whole request.
    pub retry_delay_s: f64,
    /// How many power-ons are tried to get correct FPGA IDs.
    pub fpga_attempts: u32,
}

impl Default for BmpTimings {
    fn default() -> Self {
        BmpTimings {
            post_power_on_delay_s: 5.0,
            power_on_timeout_s: 10.0,
            command_timeout_s: 1.0,
            command_retries: 3,
            request_attempts: 2,
            retry_delay_s: 15.0,
            fpga_attempts: 3,
        }
    }
}

/// One machine, validated: every working board has a location and an IP, every frame holding
/// a working board has a BMP. Vectors are sorted so that equal machines compare equal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineConfig {
    /// Unique machine name.
    pub name: String,
    /// Tags, sorted and without duplicates.
    pub tags: Vec<String>,
    /// Width in triads.
    pub width: u32,
    /// Height in triads.
    pub height: u32,
    /// Dead boards, sorted.
    pub dead_boards: Vec<Board>,
    /// Dead links (as seen from the sending board), sorted.
    pub dead_links: Vec<(Board, Link)>,
    /// The BMP of every (cabinet, frame), sorted by (cabinet, frame).
    pub bmps: Vec<BmpConfig>,
    /// Every working board, sorted by logical coordinate.
    pub boards: Vec<BoardConfig>,
}

/// The BMP that controls one frame.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BmpConfig {
    /// Cabinet number.
    pub cabinet: u32,
    /// Frame number within the cabinet.
    pub frame: u32,
    /// `host` or `host:port` (port 17893 when absent).
    pub address: String,
}

/// One working board: where it is logically and physically, and its Ethernet chip's IP.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BoardConfig {
    /// Logical coordinate.
    pub logical: Board,
    /// Cabinet number.
    pub cabinet: u32,
    /// Frame number.
    pub frame: u32,
    /// Board number within the frame (0..24).
    pub board: u32,
    /// IP address (or host name) of the board's Ethernet-connected chip.
    pub ip: String,
}

/// The port a BMP listens on when its address names none (SCP over UDP).
pub const DEFAULT_BMP_PORT: u16 = 17893;

impl Config {
    /// The machine with the given name, if configured.
    pub fn machine(&self, name: &str) -> Option<&MachineConfig> {
        self.machines.iter().find(|m| m.name == name)
    }

    /// The configuration in the file format, every machine in the explicit form;
    /// `spalloc::config::parse` reads it back into an equal `Config`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let machines: Vec<serde_json::Value> = self
            .machines
            .iter()
            .map(|m| {
                json!({
                    "name": m.name,
                    "tags": m.tags,
                    "width": m.width,
                    "height": m.height,
                    "dead_boards": m.dead_boards.iter().map(|b| json!([b.x, b.y, b.z])).collect::<Vec<_>>(),
                    "dead_links": m.dead_links.iter().map(|(b, l)| json!([b.x, b.y, b.z, l.name()])).collect::<Vec<_>>(),
                    "bmps": m.bmps.iter().map(|b| json!({
                        "cabinet": b.cabinet, "frame": b.frame, "address": b.address,
                    })).collect::<Vec<_>>(),
                    "boards": m.boards.iter().map(|b| json!({
                        "x": b.logical.x, "y": b.logical.y, "z": b.logical.z,
                        "cabinet": b.cabinet, "frame": b.frame, "board": b.board, "ip": b.ip,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let mut json = json!({
            "ip": self.ip,
            "port": self.port,
            "timeout_check_interval": self.timeout_check_interval_s,
            "max_retired_jobs": self.max_retired_jobs,
            "seconds_before_free": self.seconds_before_free_s,
            "bmp": {
                "post_power_on_delay": self.bmp.post_power_on_delay_s,
                "power_on_timeout": self.bmp.power_on_timeout_s,
                "command_timeout": self.bmp.command_timeout_s,
                "command_retries": self.bmp.command_retries,
                "request_attempts": self.bmp.request_attempts,
                "retry_delay": self.bmp.retry_delay_s,
                "fpga_attempts": self.bmp.fpga_attempts,
            },
            "health": {
                "drain_after_failures": self.health.drain_after_failures,
                "drain_after_reports": self.health.drain_after_reports,
                "recovery_attempts": self.health.recovery_attempts,
            },
            "machines": machines,
        });
        if !self.simulated_faults.is_empty() {
            json["simulated_faults"] = json!(self.simulated_faults);
        }
        json
    }
}

impl BmpConfig {
    /// The host part of the address (without brackets for an IPv6 literal).
    pub fn host(&self) -> &str {
        // Validated addresses always split; the fallback only serves hand-built values.
        split_address(&self.address)
            .map(|(h, _)| h)
            .unwrap_or(&self.address)
    }

    /// The UDP port of the BMP: the one in the address, else [`DEFAULT_BMP_PORT`].
    pub fn port(&self) -> u16 {
        split_address(&self.address)
            .map(|(_, p)| p)
            .unwrap_or(DEFAULT_BMP_PORT)
    }
}

/// Splits a BMP address, `host`, `host:port`, `[v6]` or `[v6]:port` (a bare IPv6 literal
/// with several colons is taken as a host), into host and port, the port defaulting to
/// [`DEFAULT_BMP_PORT`]. The error says what is wrong.
pub fn split_address(address: &str) -> Result<(&str, u16), String> {
    fn port(text: &str) -> Result<u16, String> {
        match text.parse::<u16>() {
            Ok(0) => Err("port 0 is not a valid BMP port (1-65535)".to_string()),
            Ok(p) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
            _ => Err(format!("invalid port {text:?} (expected 1-65535)")),
        }
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{address:?}: missing ']' after an IPv6 address"))?;
        match after {
            "" => (host, DEFAULT_BMP_PORT),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, port(p)?),
                None => return Err(format!("{address:?}: expected ':port' after ']'")),
            },
        }
    } else {
        match address.matches(':').count() {
            0 => (address, DEFAULT_BMP_PORT),
            1 => {
                let (h, p) = address.split_once(':').unwrap_or((address, ""));
                (h, port(p)?)
            }
            // Several colons: an IPv6 literal without brackets, so without a port.
            _ => (address, DEFAULT_BMP_PORT),
        }
    };
    check_host(host)?;
    Ok((host, port))
}

/// A host name or IP literal: non-empty, no whitespace, no characters that would make it
/// ambiguous in `host:port` form.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host".to_string());
    }
    if let Some(c) = host
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "[]/".contains(*c))
    {
        return Err(format!("invalid character {c:?} in host {host:?}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
