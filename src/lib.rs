//! spalloc-server: the SpiNNaker partitioning server, rebuilt as an event-sourced program.
//!
//! The crate is split the way the data flows:
//!
//! * [`core`] is the pure, deterministic state machine (job queue, board allocator, pack
//!   tree). It takes [`core::Event`]s, each carrying the time, and the caller drains its
//!   outputs (notifications, BMP requests, log lines). It does no I/O and never reads a clock.
//! * [`config`] reads and validates the JSON configuration into plain data the core folds.
//! * [`protocol`] turns JSON lines from clients into typed commands and typed replies back into
//!   JSON exactly as the original Python server wrote them.
//! * [`bmp`] drives the boards' management processors (SCP over UDP), one thread per BMP,
//!   and contains a faithful BMP simulator.
//! * [`logsafe`] escapes client-supplied strings for log lines.
//! * [`server`] is the `polling` loop that ties sockets, journal, core and BMP threads together.
//! * [`testkit`] is the line-protocol client of the tests and the benchmark.
#![warn(missing_docs)]

pub mod bmp;
pub mod check_config;
pub mod cli;
pub mod config;
/// The core is its own crate (`spalloc-core`, in `core/`), so that nothing in it can do I/O;
/// it keeps its old path here.
pub use spalloc_core as core;
/// Escaping of client-supplied strings for log lines (the core's, which escapes them in its
/// log effects).
pub use spalloc_core::logsafe;
pub mod protocol;
pub mod replay;
pub mod server;
pub mod testkit;
pub mod timefmt;
