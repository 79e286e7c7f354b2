//! Whether the journal can be written, with hysteresis.
//!
//! A journal write that fails starts an *outage*: an ERROR is logged once (then every
//! [`OUTAGE_ERROR_REPEAT_US`] while it lasts), work the server starts itself is retried at
//! most every [`OUTAGE_RETRY_US`], and keepalives are answered without being recorded (see
//! the `server` module docs). A write that succeeds makes the journal *writable* again at
//! once (what was written is durable and is folded), but the outage is only declared over,
//! and logged as such, once writes have kept succeeding for [`OUTAGE_CLEAR_US`]. On a nearly
//! full disk small writes sometimes fit and large ones do not: without the hysteresis every
//! such flip logged an ERROR and a recovery, several times a second. A failure within the
//! hysteresis window is a *relapse* of the same outage, counted, not logged again.

use crate::core::TimeUs;
use crate::server::Logger;

/// While the journal fails, ticks and BMP completions are retried at most this often.
pub const OUTAGE_RETRY_US: TimeUs = 100_000;
/// While the journal fails, the ERROR is repeated this often (not per refused batch).
pub const OUTAGE_ERROR_REPEAT_US: TimeUs = 10_000_000;
/// Writes must keep succeeding this long before an outage is declared over.
pub const OUTAGE_CLEAR_US: TimeUs = 3_000_000;

/// A period during which the journal could not be written (or not for long).
#[derive(Debug)]
struct Outage {
    /// When the first write failed.
    since_us: TimeUs,
    /// Batches refused so far.
    refused_batches: u64,
    /// Times a write failed again after one had succeeded.
    relapses: u64,
    /// When the ERROR was last logged.
    logged_us: TimeUs,
    /// Work the server starts itself is not retried before this.
    retry_at_us: TimeUs,
    /// Since when writes have succeeded (`None`: the last write failed).
    writable_since_us: Option<TimeUs>,
}

/// The journal's health as the server sees it.
#[derive(Debug, Default)]
pub struct Health {
    outage: Option<Outage>,
}

impl Health {
    /// True while the last journal write failed.
    pub fn failing(&self) -> bool {
        self.outage
            .as_ref()
            .is_some_and(|o| o.writable_since_us.is_none())
    }

    /// True unless an outage is declared (failing, or writable but not for long enough).
    pub fn clear(&self) -> bool {
        self.outage.is_none()
    }

    /// Whether work the server starts itself (ticks, BMP completions, deferred records)
    /// should be tried at `now`.
    pub fn retry_due(&self, now: TimeUs) -> bool {
        !matches!(&self.outage, Some(o) if o.writable_since_us.is_none() && now < o.retry_at_us)
    }

    /// While failing: when work the server starts itself is next tried.
    pub fn retry_at(&self) -> Option<TimeUs> {
        self.outage
            .as_ref()
            .filter(|o| o.writable_since_us.is_none())
            .map(|o| o.retry_at_us)
    }

    /// When [`Health::poll`] next has something to do: declare an outage over once writes
    /// have held. While writes fail there is nothing to poll for: the retry time
    /// ([`Health::retry_at`]) is a deadline only for work waiting to be written, and an idle
    /// loop woken by it would wake again at once, and again, once it had passed (found by
    /// the simulation, `server::sim`).
    pub fn next_deadline(&self) -> Option<TimeUs> {
        let writable_since = self.outage.as_ref()?.writable_since_us?;
        Some(writable_since.saturating_add(OUTAGE_CLEAR_US))
    }

    /// A write failed with `e`: start or extend the outage, logging as the module says.
    /// Returns the message for the commands refused because of it.
    pub fn failed(&mut self, e: &dyn std::fmt::Display, now: TimeUs, log: &Logger) -> String {
        let msg =
            format!("journal write failed ({e}); changes are refused until it can be written");
        match &mut self.outage {
            None => {
                log.error(&msg);
                self.outage = Some(Outage {
                    since_us: now,
                    refused_batches: 1,
                    relapses: 0,
                    logged_us: now,
                    retry_at_us: now + OUTAGE_RETRY_US,
                    writable_since_us: None,
                });
            }
            Some(o) => {
                o.refused_batches += 1;
                o.retry_at_us = now + OUTAGE_RETRY_US;
                if o.writable_since_us.take().is_some() {
                    o.relapses += 1;
                }
                if now >= o.logged_us + OUTAGE_ERROR_REPEAT_US {
                    o.logged_us = now;
                    log.error(&format!(
                        "{msg} (for {:.0} s now; {} batches refused, {} relapses after brief recoveries)",
                        now.saturating_sub(o.since_us) as f64 / 1e6,
                        o.refused_batches,
                        o.relapses
                    ));
                }
            }
        }
        msg
    }

    /// A write succeeded at `now`.
    pub fn written(&mut self, now: TimeUs) {
        if let Some(o) = &mut self.outage {
            if o.writable_since_us.is_none() {
                o.writable_since_us = Some(now);
            }
        }
    }

    /// Declare the outage over (and log it) once writes have succeeded long enough.
    pub fn poll(&mut self, now: TimeUs, log: &Logger) {
        let over = matches!(&self.outage,
            Some(Outage { writable_since_us: Some(t), .. }) if now >= t.saturating_add(OUTAGE_CLEAR_US));
        if over {
            let o = self.outage.take().expect("matched");
            let writable_at = o.writable_since_us.expect("matched");
            log.info(&format!(
                "journal: writable again after {:.1} s; {} batches of changes were refused meanwhile{}",
                writable_at.saturating_sub(o.since_us) as f64 / 1e6,
                o.refused_batches,
                match o.relapses {
                    0 => String::new(),
                    n => format!(" ({n} brief recoveries failed again before it held)"),
                }
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flapping (fail, succeed, fail, … every 100 ms) is one outage: one ERROR, no recovery
    /// logged until writes have held for [`OUTAGE_CLEAR_US`], then exactly one.
    #[test]
    fn flapping_is_one_outage() {
        let log = Logger::capture();
        let mut h = Health::default();
        assert!(h.clear() && !h.failing() && h.retry_due(0));
        let mut t = 1_000_000;
        for _ in 0..20 {
            h.failed(&"disk full", t, &log);
            assert!(h.failing() && !h.retry_due(t + 1) && h.retry_due(t + OUTAGE_RETRY_US));
            t += 50_000;
            h.written(t);
            assert!(!h.failing() && !h.clear());
            h.poll(t, &log);
            t += 50_000;
        }
        let lines = log.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("ERROR journal write failed (disk full)"));
        // Held: declared over once, at the end of the window and not before.
        h.written(t);
        let writable_at = t - 50_000;
        h.poll(writable_at + OUTAGE_CLEAR_US - 1, &log);
        assert!(!h.clear());
        assert_eq!(h.next_deadline(), Some(writable_at + OUTAGE_CLEAR_US));
        h.poll(writable_at + OUTAGE_CLEAR_US, &log);
        assert!(h.clear() && h.next_deadline().is_none());
        let lines = log.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[1].contains("journal: writable again")
                && lines[1].contains("20 batches")
                && lines[1].contains("19 brief recoveries"),
            "{}",
            lines[1]
        );
    }

    /// A long outage repeats its ERROR every [`OUTAGE_ERROR_REPEAT_US`], not per batch.
    #[test]
    fn long_outage_repeats_its_error_slowly() {
        let log = Logger::capture();
        let mut h = Health::default();
        for i in 0..300u64 {
            h.failed(&"read-only file system", i * OUTAGE_RETRY_US, &log);
        }
        // 30 s of failures: the first line and one every 10 s.
        assert_eq!(log.lines().len(), 3, "{:?}", log.lines());
    }
}
