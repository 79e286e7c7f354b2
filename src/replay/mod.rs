//! Journal replay for the incident debugger `spalloc-replay`.
//!
//! Everything here answers questions from the exact events a server folded, through the same
//! [`Core::handle`] the server runs: the journal is read with [`spalloc_journal::Reader`]
//! (no lock, never modifies a file, so it is safe while a server is writing), every record is
//! decoded with [`crate::server::decode_event`], folded, and the core's effects (log lines,
//! BMP requests, changed jobs) are collected per event into a [`Step`]. The tool's modes are
//! visitors over those steps:
//!
//! * [`Summary`]: time span, counts, snapshots, machines and the state at the end;
//! * [`describe_step`] / [`step_json`]: one line (or one JSON object) per event;
//! * [`JobHistory`]: the whole life of one job, and exactly why and when it ended;
//! * [`state_at`] with [`state_text`] / [`state_json`]: the state at a moment, with a map of
//!   each machine's boards;
//! * [`verify`]: checksums, invariants after every event, and snapshots against the fold;
//! * [`usage`]: accounting (`--usage`, `--jobs`) from the lifecycle effects;
//! * [`salvage`]: a new journal from the good records of a damaged one.
//!
//! One child module per concept: `source` (the journal opened, where replay starts,
//! positions, errors), `fold` (records folded into [`Step`]s), `describe` (an event in words
//! and JSON), `state` (the state at a moment), `summary`, `history` (one job's life),
//! `verify`, and the public [`usage`] and [`salvage`]; the first seven are re-exported here.
//!
//! Retention may have deleted the oldest segments. Replay then starts from the oldest
//! retained snapshot that reaches the oldest retained record ([`Source::open`]) and says so in
//! [`Source::notes`], because everything before it is unknowable.

mod describe;
mod fold;
mod history;
pub mod salvage;
mod source;
mod state;
mod summary;
pub mod usage;
mod verify;

pub use describe::*;
pub use fold::*;
pub use history::*;
pub use source::*;
pub use state::*;
pub use summary::*;
pub use verify::*;
