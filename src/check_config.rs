//! `spalloc-server --check-config FILE [--journal DIR]`: validate a configuration file and,
//! given a journal, preview what reloading it would do, without touching a running server.
//!
//! The preview is not a guess: the journal is read without a lock (as `spalloc-replay`
//! reads it), its current state rebuilt through the same [`Core::handle`] the server runs,
//! and the new configuration folded into a copy of that state exactly as SIGHUP would fold
//! it. The jobs that fold ends are the jobs a reload would destroy, each with the reason its
//! owner would see. (Only what happens between the preview and the reload can change that.)

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{self, Config};
use crate::core::reconfigure::{self, ConfigDiff};
use crate::core::{Core, Effect, EndReason, Event, JobId, Lifecycle};
use crate::replay::{fold_all, Source};
use crate::timefmt::format_iso;

/// One job a reload would end.
#[derive(Clone, Debug, PartialEq)]
pub struct Destroyed {
    /// The job.
    pub job_id: JobId,
    /// Its owner.
    pub owner: String,
    /// The machine it holds boards on (`None`: queued).
    pub machine: Option<String>,
    /// Why, typed.
    pub reason: EndReason,
    /// Why, as its owner would read it.
    pub text: Option<String>,
}

/// What reloading a configuration would do to a journal's current state.
#[derive(Clone, Debug)]
pub struct Preview {
    /// The state previewed against: after this record (0: an empty journal).
    pub seq: u64,
    /// That state's time.
    pub now_us: u64,
    /// Live jobs in that state.
    pub live_jobs: usize,
    /// Whether the journal had ever been configured.
    pub configured: bool,
    /// The changes.
    pub diff: ConfigDiff,
    /// The jobs the reload would end, ascending.
    pub destroyed: Vec<Destroyed>,
}

/// Rebuild the journal's current state and fold `config` into a copy of it.
pub fn preview(journal: &Path, config: &Config) -> Result<Preview, String> {
    let source = Source::open_latest(journal)
        .map_err(|e| format!("cannot read the journal in {}: {e}", journal.display()))?;
    let folder = fold_all(&source, |_, _| true)
        .map_err(|e| format!("cannot replay the journal in {}: {e}", journal.display()))?;
    let core: Core = folder.sim.core;
    let configured = !core.config().machines.is_empty();
    let diff = reconfigure::diff(core.config(), config);
    let jobs = core.list_jobs();
    let mut after = core.clone();
    after.discard_effects();
    after.handle(&Event::Configure {
        now_us: core.now_us(),
        config: config.clone(),
    });
    let mut destroyed = Vec::new();
    while let Some(effect) = after.poll_effect() {
        if let Effect::Lifecycle(Lifecycle::Ended {
            job_id,
            reason,
            text,
        }) = effect
        {
            let j = jobs.iter().find(|j| j.job_id == job_id);
            destroyed.push(Destroyed {
                job_id,
                owner: j.map(|j| j.owner.clone()).unwrap_or_default(),
                machine: j.and_then(|j| j.allocated_machine_name.clone()),
                reason,
                text,
            });
        }
    }
    destroyed.sort_by_key(|d| d.job_id);
    Ok(Preview {
        seq: folder.seq,
        now_us: core.now_us(),
        live_jobs: jobs.len(),
        configured,
        diff,
        destroyed,
    })
}

impl Preview {
    /// The preview for an admin.
    pub fn text(&self, journal: &Path) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Against the journal {} (its state after record #{}, {}; {} live jobs), a reload would:",
            journal.display(),
            self.seq,
            format_iso(self.now_us),
            self.live_jobs
        );
        if !self.configured {
            out.push_str("  (the journal holds no configuration yet: this is the first one)\n");
        }
        if self.diff.is_empty() {
            out.push_str("  change nothing: the file is the configuration in force\n");
            return out;
        }
        for (name, change) in &self.diff.machines {
            let ids: Vec<JobId> = self
                .destroyed
                .iter()
                .filter(|d| d.machine.as_deref() == Some(name.as_str()))
                .map(|d| d.job_id)
                .collect();
            if change.destroys_jobs() {
                let _ = writeln!(
                    out,
                    "  {}: {}",
                    change.describe(name),
                    reconfigure::destroyed_text(&ids)
                );
            } else if matches!(change, reconfigure::MachineChange::Added) {
                let _ = writeln!(out, "  {}", change.describe(name));
            } else {
                let _ = writeln!(out, "  {}: jobs kept", change.describe(name));
            }
        }
        for l in &self.diff.listen {
            let _ = writeln!(
                out,
                "  listen {l}: takes effect at the next restart, not on reload"
            );
        }
        for s in &self.diff.settings {
            let _ = writeln!(out, "  change {s}");
        }
        if self.destroyed.is_empty() {
            out.push_str("  destroy no jobs\n");
        } else {
            let _ = writeln!(
                out,
                "Jobs destroyed ({}): {}",
                self.destroyed.len(),
                reconfigure::destroyed_text(
                    &self.destroyed.iter().map(|d| d.job_id).collect::<Vec<_>>()
                )
                .trim_start_matches("destroyed ")
            );
            for d in &self.destroyed {
                let _ = writeln!(
                    out,
                    "  job {} (owner {:?}, {}): {} ({})",
                    d.job_id,
                    d.owner,
                    d.machine
                        .as_deref()
                        .map_or("queued".to_string(), |m| format!("on {m}")),
                    d.text.as_deref().unwrap_or("(no reason)"),
                    d.reason.name()
                );
            }
        }
        out
    }
}

/// Run the check: print the verdict (and the preview) on stdout, every problem on stderr.
/// Returns whether the file is valid and, given a journal, it could be previewed.
pub fn run(file: &Path, journal: Option<&Path>) -> bool {
    let config = match config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "{} is NOT valid ({} problems):",
                file.display(),
                e.problems.len()
            );
            for p in &e.problems {
                eprintln!("  {p}");
            }
            return false;
        }
    };
    println!(
        "{} is valid: {} machines, {} working boards",
        file.display(),
        config.machines.len(),
        config
            .machines
            .iter()
            .map(|m| m.boards.len())
            .sum::<usize>()
    );
    let Some(journal) = journal else {
        return true;
    };
    match preview(journal, &config) {
        Ok(p) => {
            print!("{}", p.text(journal));
            true
        }
        Err(e) => {
            eprintln!("{e}");
            false
        }
    }
}

/// The tests of the configuration diff ([`crate::core::reconfigure`]) that build their
/// configurations from the file form, which only the server parses (the core crate cannot).
#[cfg(test)]
mod reconfigure_tests {
    use crate::config::Config;
    use crate::core::reconfigure::*;

    fn cfg(text: &str) -> Config {
        crate::config::parse(text, std::path::Path::new(".")).unwrap()
    }

    const BASE: &str = r#"{"machines": [
        {"name": "a", "single_board": {"bmp": "10.0.1.0", "ip": "10.0.1.1"}},
        {"name": "b", "single_board": {"bmp": "10.0.2.0", "ip": "10.0.2.1"}}]}"#;

    #[test]
    fn identical_configurations_differ_in_nothing() {
        assert!(diff(&cfg(BASE), &cfg(BASE)).is_empty());
    }

    #[test]
    fn ip_change_is_a_replacement_tag_change_is_not_and_port_is_named() {
        let new = cfg(r#"{"port": 22245, "machines": [
            {"name": "a", "tags": ["x"], "single_board": {"bmp": "10.0.1.0", "ip": "10.0.1.1"}},
            {"name": "b", "single_board": {"bmp": "10.0.2.0", "ip": "10.0.2.9"}},
            {"name": "c", "single_board": {"bmp": "10.0.3.0", "ip": "10.0.3.1"}}]}"#);
        let d = diff(&cfg(BASE), &new);
        assert_eq!(
            d.machines,
            vec![
                ("a".to_string(), MachineChange::Changed(vec!["tags"])),
                (
                    "b".to_string(),
                    MachineChange::Replaced(vec!["board IPs changed"])
                ),
                ("c".to_string(), MachineChange::Added),
            ]
        );
        assert_eq!(d.listen, vec!["port 22244 -> 22245".to_string()]);
        assert_eq!(
            d.machines[1].1.describe("b"),
            "replaced b (board IPs changed)"
        );
    }

    #[test]
    fn removal_and_priority() {
        let new = cfg(r#"{"machines": [
            {"name": "b", "single_board": {"bmp": "10.0.2.0", "ip": "10.0.2.1"}}]}"#);
        let d = diff(&cfg(BASE), &new);
        assert_eq!(d.machines, vec![("a".to_string(), MachineChange::Removed)]);
        let swapped = cfg(r#"{"machines": [
            {"name": "b", "single_board": {"bmp": "10.0.2.0", "ip": "10.0.2.1"}},
            {"name": "a", "single_board": {"bmp": "10.0.1.0", "ip": "10.0.1.1"}}]}"#);
        let d = diff(&cfg(BASE), &swapped);
        assert!(d
            .machines
            .iter()
            .all(|(_, c)| *c == MachineChange::Changed(vec!["priority"])));
        assert!(d.listen.is_empty());
    }
}
