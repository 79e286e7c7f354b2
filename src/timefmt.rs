//! Time as the server reads it: the wall clock ([`now_us`], read only outside the core, which
//! takes time from events) and the ISO 8601 formatting and parsing, which are the core's
//! ([`spalloc_core::timefmt`]) because its admin replies carry times.

pub use crate::core::timefmt::{format_iso, parse_time};
use crate::core::TimeUs;

/// The wall clock in microseconds since the Unix epoch (the only clock the server reads;
/// the core never does).
pub fn now_us() -> TimeUs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as TimeUs)
        .unwrap_or(0)
}
