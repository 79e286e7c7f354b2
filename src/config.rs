//! The server's configuration: the JSON file format of `config-format.md`, validated into plain
//! data that the core folds and the journal records.
//!
//! Parsing happens in two stages (as ripgrep separates low-level from high-level arguments):
//! the raw serde structures mirror the file and only check types and unknown keys; validation
//! then builds a [`Config`] whose every machine is complete and consistent, or reports every
//! problem with its path (`machines[2].boards[5].x: outside the machine`).
//!
//! A validated [`Config`] is the value carried by the core's configuration event, so it is
//! deliberately plain: vectors in a canonical (sorted) order, no maps keyed by tuples.

use serde::{Deserialize, Serialize};

use crate::core::coordinates::{Board, Link};

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
