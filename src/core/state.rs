//! placeholder
/// The core state machine.
pub struct Core;
