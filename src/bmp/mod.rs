//! BMP control: talking to SpiNN-5 Board Management Processors, and simulating them.
//!
//! The server powers boards on and off and cuts the links that leave an allocation by sending
//! SCP commands over UDP to each frame's BMP (see `bmp-protocol.md`). The pieces:
//!
//! * [`scp`]: the packet format (SDP header, SCP command and reply, return codes), the
//!   `CMD_VER` decoder, and [`ScpClient`], a blocking one-command-at-a-time client with
//!   sequence numbers, timeouts and resends.
//! * [`runtime`]: [`BmpRuntime`], one OS thread per BMP endpoint that carries out the core's
//!   [`BmpRequest`](crate::core::BmpRequest)s in order (power on, check the FPGAs, stop the
//!   boundary links; or power off), retries whole requests, and reports each outcome as a
//!   [`BmpCompletion`] on a channel followed by a wake-up call.
//! * [`sim`]: [`Simulator`], BMPs on loopback UDP sockets that answer like the firmware does,
//!   keep a log of what they were asked, and inject faults; used by the tests and by the
//!   `spalloc-bmp-sim` tool.
//!
//! Everything is plain threads and `crossbeam` channels; nothing here is async.

pub mod runtime;
pub mod scp;
pub mod sim;

pub use runtime::{link_stop_register, BmpCompletion, BmpRuntime, LogSink, Waker};
pub use scp::{ReturnCode, ScpClient, ScpError, ScpReply, ScpRequest, VersionInfo};
pub use sim::{
    config_endpoints, parse_fault_spec, BoardPower, Fault, FaultKind, SimLogEntry, SimOptions,
    Simulator,
};
