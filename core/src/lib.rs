//! The core: a pure, deterministic state machine of job queue, board allocator and pack tree.
//!
//! Everything that decides who gets which boards lives here, and nothing here does I/O or
//! reads a clock. The shape follows quinn-proto: inputs are [`Event`]s, each carrying the time
//! (`now_us`, microseconds since the Unix epoch, taken once by the caller and journaled with
//! the event); outputs wait in queues until the caller drains them with [`Core::poll_effect`].
//! The caller persists each event *before* handing it to [`Core::handle`] and releases the
//! effects only afterwards (raft-rs's "persist the Ready, then advance"), so replaying the
//! journal through `handle` rebuilds exactly the same state.
//!
//! Determinism rules: no `HashMap` iteration reaches an outcome (all maps are `BTreeMap`s or
//! vectors), no randomness, and time comes only from events.
//!
//! This is a crate of its own (`spalloc-core`) so that the rules are checked, not only
//! promised: its dependencies are serde, serde_json and rmp-serde and nothing that does I/O,
//! and its `clippy.toml` forbids the std APIs for files, sockets, clocks, threads, processes,
//! the environment and hash-ordered collections (CI runs `cargo clippy -p spalloc-core` with
//! those lints denied). The server (`spalloc`) re-exports this crate as `spalloc::core`.
#![warn(missing_docs)]

mod allocator;
mod area_to_rect;
pub mod codec;
pub mod config;
pub mod coordinates;
pub mod health;
pub mod logsafe;
mod pack_tree;
mod pyset;
mod queue;
pub mod reconfigure;
pub mod rng;
pub mod rules;
pub mod sim;
mod state;
pub mod timefmt;
pub mod types;

pub use allocator::PopRule;
pub use state::view;
pub use state::{Core, MACHINE_REMOVED, NO_SUITABLE_MACHINE, TIMED_OUT};
pub use types::*;
