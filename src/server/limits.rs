//! Every bound the server puts on what clients can make it hold or do, in one place, named
//! with its unit (TigerBeetle style: a limit is a number an admin can read, not a surprise).
//!
//! One client must never cost another its service: each limit below caps a resource one
//! client (or one host, or one owner) could otherwise grow without bound — memory, file
//! descriptors, CPU per request, BMP time. A request past a limit gets an exception that
//! names the limit and changes nothing; a client that stops reading its replies is dropped,
//! with a log line saying so. Limits on what is *stored* (string lengths, numbers of jobs)
//! are checked before a command is journaled, so journals written before a limit existed
//! (with longer strings, more jobs) still replay as they were served.
//!
//! Every limit can be set with `--limit NAME=VALUE` (listed in `--help`, documented in the
//! README's Limits section); [`LIMITS`] is the table both are checked against.

/// The bounds in force (module docs). `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Clients connected at once; more are told "server is full" and disconnected. Lowered
    /// at start-up to fit the process's file-descriptor limit.
    pub clients_max: usize,
    /// Output a client may leave unread (its backlog) before it is disconnected. One reply
    /// may be bigger (it is queued whole) as long as the backlog before it is below this.
    pub output_bytes_max: usize,
    /// Unsent output across all clients. Past it, a client that already has a backlog is
    /// disconnected rather than given more.
    pub output_total_bytes_max: usize,
    /// Received and not yet handled input across all clients (unfinished lines, requests
    /// waiting for their share of a pass). Past it, the client holding the most is
    /// disconnected.
    pub input_total_bytes_max: usize,
    /// A single reply larger than this is not sent: the caller gets an exception instead.
    pub reply_bytes_max: usize,
    /// Jobs and machines one client may watch individually (`notify_job(id)`,
    /// `notify_machine(name)`); watching everything costs one entry.
    pub watch_entries_max: usize,
    /// Such watch entries across all clients (each holds at most `string_bytes_max` of
    /// name), so many connections cannot multiply `watch_entries_max`.
    pub watch_entries_total_max: usize,
    /// Length of an owner, a destroy reason, a tag or a machine name in a request.
    pub string_bytes_max: usize,
    /// Tags in one `create_job`.
    pub tags_max: usize,
    /// Live jobs (queued or holding boards) in the whole server.
    pub jobs_max: usize,
    /// Live jobs of one owner.
    pub jobs_per_owner_max: usize,
    /// Live jobs created from one client host.
    pub jobs_per_host_max: usize,
    /// Connections the kernel may hold waiting to be accepted (the `listen` backlog; the
    /// kernel caps it at `net.core.somaxconn`). Std's fixed 128 made a burst of 1,000
    /// connects wait a SYN retransmit (~1 s) for the last of them.
    pub listen_backlog_max: usize,
    /// Pause before accepting again after `accept` failed (out of file descriptors).
    pub accept_backoff_ms: u64,
    /// One job's sustained rate of power changes: one per this many milliseconds (after a
    /// burst), the rest coalesced. Journaled as part of the rules (`core::rules`).
    pub power_change_gap_ms: u64,
    /// Power changes one job may make back to back before `power_change_gap_ms` applies.
    pub power_change_burst_max: u64,
    /// Requests of one client handled in one pass of the loop; the rest wait for the next
    /// pass, so a client that pipelines thousands cannot make everyone wait for them.
    pub requests_per_pass_max: usize,
    /// Bytes of one client's requests handled in one pass (at least one request).
    pub request_bytes_per_pass_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            clients_max: 20_000,
            output_bytes_max: 16 * 1024 * 1024,
            output_total_bytes_max: 512 * 1024 * 1024,
            reply_bytes_max: 64 * 1024 * 1024,
            input_total_bytes_max: 256 * 1024 * 1024,
            watch_entries_max: 4_096,
            watch_entries_total_max: 262_144,
            string_bytes_max: 1_024,
            tags_max: 64,
            jobs_max: 20_000,
            jobs_per_owner_max: 2_000,
            jobs_per_host_max: 5_000,
            listen_backlog_max: 4_096,
            accept_backoff_ms: 100,
            power_change_gap_ms: crate::core::rules::POWER_CHANGE_GAP_US / 1000,
            power_change_burst_max: crate::core::rules::POWER_CHANGE_BURST as u64,
            requests_per_pass_max: 64,
            request_bytes_per_pass_max: 64 * 1024,
        }
    }
}

/// One settable limit: its name (as given to `--limit`), what it bounds, and its field.
pub struct LimitSpec {
    /// The name, with its unit.
    pub name: &'static str,
    /// What it bounds, for `--help` and errors.
    pub what: &'static str,
    get: fn(&Limits) -> u64,
    set: fn(&mut Limits, u64),
}

impl LimitSpec {
    /// The value of this limit in `limits`.
    pub fn get(&self, limits: &Limits) -> u64 {
        (self.get)(limits)
    }
}

macro_rules! spec {
    ($name:ident, $what:expr) => {
        LimitSpec {
            name: stringify!($name),
            what: $what,
            get: |l| l.$name as u64,
            set: |l, v| l.$name = v as _,
        }
    };
}

/// Every limit, in the order `--help` and the README list them.
pub const LIMITS: &[LimitSpec] = &[
    spec!(clients_max, "clients connected at once"),
    spec!(
        output_bytes_max,
        "unread output per client before it is dropped"
    ),
    spec!(output_total_bytes_max, "unsent output across all clients"),
    spec!(reply_bytes_max, "largest single reply"),
    spec!(
        input_total_bytes_max,
        "received, unhandled input across all clients"
    ),
    spec!(watch_entries_max, "jobs and machines watched per client"),
    spec!(
        watch_entries_total_max,
        "jobs and machines watched, all clients"
    ),
    spec!(string_bytes_max, "owner, reason, tag, machine name length"),
    spec!(tags_max, "tags per create_job"),
    spec!(jobs_max, "live jobs in all"),
    spec!(jobs_per_owner_max, "live jobs per owner"),
    spec!(jobs_per_host_max, "live jobs per client host"),
    spec!(
        listen_backlog_max,
        "connections waiting to be accepted (listen backlog)"
    ),
    spec!(accept_backoff_ms, "pause after a failed accept"),
    spec!(
        power_change_gap_ms,
        "one power change per job per this long, sustained"
    ),
    spec!(power_change_burst_max, "power changes per job back to back"),
    spec!(
        requests_per_pass_max,
        "one client's requests handled per loop pass"
    ),
    spec!(
        request_bytes_per_pass_max,
        "one client's request bytes handled per loop pass"
    ),
];

impl Limits {
    /// The core's rules with this server's power-change rate (`power_change_gap_ms`,
    /// `power_change_burst_max`): what the server journals and applies at start-up.
    pub fn rules(&self) -> crate::core::rules::Rules {
        crate::core::rules::Rules {
            power_change_gap_us: self.power_change_gap_ms.saturating_mul(1000),
            power_change_burst: self.power_change_burst_max.min(u32::MAX as u64) as u32,
            ..crate::core::rules::Rules::CURRENT
        }
    }

    /// Apply one `NAME=VALUE` setting. Values are whole numbers (`_` separators allowed);
    /// zero is refused (it would shut a door entirely), except for the back-off.
    pub fn set(&mut self, setting: &str) -> Result<(), String> {
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("--limit {setting:?}: expected NAME=VALUE"))?;
        let spec = LIMITS
            .iter()
            .find(|s| s.name == name.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = LIMITS.iter().map(|s| s.name).collect();
                format!(
                    "--limit {setting:?}: no limit is called {:?}; the limits are {}",
                    name.trim(),
                    names.join(", ")
                )
            })?;
        let v: u64 = value.trim().replace('_', "").parse().map_err(|_| {
            format!(
                "--limit {setting:?}: {:?} is not a whole number",
                value.trim()
            )
        })?;
        if v == 0 && !spec.name.ends_with("_ms") {
            return Err(format!(
                "--limit {setting:?}: {} must be at least 1",
                spec.name
            ));
        }
        if v > u32::MAX as u64 && spec.name == "power_change_burst_max" {
            return Err(format!("--limit {setting:?}: {v} is too large"));
        }
        if v > usize::MAX as u64 / 2 {
            return Err(format!("--limit {setting:?}: {v} is too large"));
        }
        (spec.set)(self, v);
        Ok(())
    }

    /// The soft `RLIMIT_NOFILE` of this process, read from `/proc/self/limits` (Linux;
    /// `None` elsewhere or if unlimited).
    pub fn open_files_soft_limit() -> Option<u64> {
        let text = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }
}

/// Descriptors kept back from clients for the journal, snapshots, BMP sockets and the
/// poller when `clients_max` is fitted to the descriptor limit.
pub const RESERVED_FDS: u64 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_is_settable_by_name() {
        for spec in LIMITS {
            let mut l = Limits::default();
            l.set(&format!("{}=1_234", spec.name)).unwrap();
            assert_eq!(spec.get(&l), 1234, "{}", spec.name);
            assert_ne!(spec.get(&Limits::default()), 1234);
        }
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let mut l = Limits::default();
        let e = l.set("tags=3").unwrap_err();
        assert!(
            e.contains("no limit is called \"tags\"") && e.contains("tags_max"),
            "{e}"
        );
        assert!(l.set("tags_max").unwrap_err().contains("NAME=VALUE"));
        assert!(l
            .set("tags_max=x")
            .unwrap_err()
            .contains("not a whole number"));
        assert!(l.set("tags_max=0").unwrap_err().contains("at least 1"));
        assert_eq!(l, Limits::default());
        l.set("accept_backoff_ms=0").unwrap();
        assert_eq!(l.accept_backoff_ms, 0);
    }

    #[test]
    fn default_limits_give_the_current_rules() {
        assert_eq!(
            Limits::default().rules(),
            crate::core::rules::Rules::CURRENT
        );
        let mut l = Limits::default();
        l.set("power_change_gap_ms=250").unwrap();
        assert_eq!(l.rules().power_change_gap_us, 250_000);
    }

    #[test]
    fn names_carry_units() {
        for spec in LIMITS {
            assert!(
                spec.name.ends_with("_max") || spec.name.ends_with("_ms"),
                "{}",
                spec.name
            );
        }
    }
}
