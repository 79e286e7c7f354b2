//! The clock that stamps events: monotonic, anchored to the wall clock once, at start.
//!
//! Event times drive every timer in the core (keepalive expiry, board release, retries).
//! Read from the wall clock, an NTP step forward would expire every keepalive at once, and a
//! step backward would freeze every timer for as long as the step. So the server reads the
//! wall clock only at start-up, to anchor a monotonic clock (`Instant`, which never steps):
//! `now = anchor + (monotonic now - monotonic at start)`.
//!
//! The anchor is never earlier than the last event already journaled (`floor_us`), so event
//! time never goes backward across a restart either, even if the wall clock was set back
//! while the server was down. (The core also refuses to let time run backwards, but a
//! backward anchor would have stretched every deadline by the step.)
//!
//! Event times therefore stay close to the wall clock but are not re-synchronised with it:
//! after a wall-clock step the two differ by the step until the next restart. Log lines
//! carry the wall clock; event times (what `spalloc-replay` shows) carry this clock.

use std::time::Instant;

use crate::core::TimeUs;

/// A monotonic clock in microseconds since the Unix epoch (module docs).
#[derive(Clone, Copy, Debug)]
pub struct EventClock {
    anchor_us: TimeUs,
    start: Instant,
}

impl EventClock {
    /// Anchor at the wall clock now, or at `floor_us` (the last journaled event's time) if
    /// the wall clock is behind it.
    pub fn start(floor_us: TimeUs) -> EventClock {
        EventClock::anchored(crate::timefmt::now_us(), floor_us, Instant::now())
    }

    /// Anchor at `wall_us` (or `floor_us`, if later) as of the monotonic instant `start`.
    pub fn anchored(wall_us: TimeUs, floor_us: TimeUs, start: Instant) -> EventClock {
        EventClock {
            anchor_us: wall_us.max(floor_us),
            start,
        }
    }

    /// The time now.
    pub fn now_us(&self) -> TimeUs {
        self.at(Instant::now())
    }

    /// The time at the monotonic instant `mono` (not before the start).
    pub fn at(&self, mono: Instant) -> TimeUs {
        let elapsed = mono.saturating_duration_since(self.start);
        self.anchor_us
            .saturating_add(elapsed.as_micros().min(TimeUs::MAX as u128) as TimeUs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const WALL: TimeUs = 1_780_000_000_000_000; // some wall-clock reading

    /// The wall clock is read once: whatever it does afterwards (here: it is not even
    /// consulted), event time advances exactly with the monotonic clock.
    #[test]
    fn advances_with_the_monotonic_clock_only() {
        let t0 = Instant::now();
        let c = EventClock::anchored(WALL, 0, t0);
        assert_eq!(c.at(t0), WALL);
        assert_eq!(c.at(t0 + Duration::from_millis(1500)), WALL + 1_500_000);
        assert_eq!(
            c.at(t0 + Duration::from_secs(90 * 86_400)),
            WALL + 90 * 86_400 * 1_000_000
        );
        // An instant before the start (another thread's reading) is the start.
        assert_eq!(
            c.at(t0.checked_sub(Duration::from_secs(1)).unwrap_or(t0)),
            WALL
        );
    }

    /// Restarts: a wall clock set back while the server was down does not take event time
    /// back before the last journaled event; a wall clock ahead is taken as it is.
    #[test]
    fn never_goes_back_across_a_restart() {
        let t0 = Instant::now();
        let last_event = WALL + 3_600_000_000;
        let behind = EventClock::anchored(WALL, last_event, t0);
        assert_eq!(behind.at(t0), last_event);
        assert_eq!(
            behind.at(t0 + Duration::from_secs(2)),
            last_event + 2_000_000
        );
        let ahead = EventClock::anchored(last_event + 5, last_event, t0);
        assert_eq!(ahead.at(t0), last_event + 5);
    }
}
