//! What a new configuration does to the machines, in an admin's terms.
//!
//! [`diff`] compares two validated configurations machine by machine: added, removed,
//! *replaced* (a change of size, BMPs, or a working board's position or IP: the machine is
//! rebuilt and the jobs on it are destroyed, as the original does) or *changed in place*
//! (tags, dead boards, dead links: jobs keep running), plus the listen address and the other
//! settings. The core's reload log line and `spalloc-server --check-config --journal` both
//! word a reload with it, so the preview and the log say the same thing.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, MachineConfig};
use crate::coordinates::Board;

/// What a new configuration does to one machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineChange {
    /// A new machine.
    Added,
    /// Gone from the new configuration: its jobs are destroyed.
    Removed,
    /// Rebuilt (its jobs are destroyed), for these reasons (`size changed`, `board IPs
    /// changed`…).
    Replaced(Vec<&'static str>),
    /// Changed in place (`tags`, `dead boards`, `dead links`, `priority`): jobs keep running.
    Changed(Vec<&'static str>),
}

impl MachineChange {
    /// Whether the jobs on the machine are destroyed.
    pub fn destroys_jobs(&self) -> bool {
        matches!(self, MachineChange::Removed | MachineChange::Replaced(_))
    }

    /// `replaced spin4x2 (board IPs changed)`, `added spin5`…
    pub fn describe(&self, name: &str) -> String {
        match self {
            MachineChange::Added => format!("added {name}"),
            MachineChange::Removed => format!("removed {name}"),
            MachineChange::Replaced(why) => format!("replaced {name} ({})", why.join(", ")),
            MachineChange::Changed(what) => format!("changed {name} ({})", what.join(", ")),
        }
    }
}

/// Everything a new configuration changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Machines that change, in the new configuration's order, then the removed ones.
    pub machines: Vec<(String, MachineChange)>,
    /// Listen address changes (`port 22244 -> 22245`): they take effect at the next restart.
    pub listen: Vec<String>,
    /// Other settings that change (`bmp timings`, `max_retired_jobs 1200 -> 100`…).
    pub settings: Vec<String>,
}

impl ConfigDiff {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.machines.is_empty() && self.listen.is_empty() && self.settings.is_empty()
    }
}

/// Why a machine must be rebuilt rather than changed in place (empty: it need not be).
/// Boards listed dead in either version do not count: marking a board dead is an in-place
/// change.
pub fn replace_reasons(old: &MachineConfig, new: &MachineConfig) -> Vec<&'static str> {
    let mut why = Vec::new();
    if old.width != new.width || old.height != new.height {
        why.push("size changed");
    }
    if old.bmps != new.bmps {
        why.push("BMPs changed");
    }
    let dead: BTreeSet<Board> = old
        .dead_boards
        .iter()
        .chain(&new.dead_boards)
        .copied()
        .collect();
    let live = |c: &MachineConfig| -> BTreeMap<Board, ((u32, u32, u32), String)> {
        c.boards
            .iter()
            .filter(|b| !dead.contains(&b.logical))
            .map(|b| (b.logical, ((b.cabinet, b.frame, b.board), b.ip.clone())))
            .collect()
    };
    let (a, b) = (live(old), live(new));
    if a.keys().ne(b.keys()) {
        why.push("boards added or removed");
    }
    let common = || a.iter().filter_map(|(k, v)| b.get(k).map(|w| (v, w)));
    if common().any(|(v, w)| v.0 != w.0) {
        why.push("board positions changed");
    }
    if common().any(|(v, w)| v.1 != w.1) {
        why.push("board IPs changed");
    }
    why
}

/// What changes in place on a machine that is not rebuilt.
fn in_place_changes(old: &MachineConfig, new: &MachineConfig) -> Vec<&'static str> {
    let mut what = Vec::new();
    if old.tags != new.tags {
        what.push("tags");
    }
    if old.dead_boards != new.dead_boards {
        what.push("dead boards");
    }
    if old.dead_links != new.dead_links {
        what.push("dead links");
    }
    if what.is_empty() && old != new {
        // Equal in every respect above yet different: boards both listed and dead.
        what.push("board list");
    }
    what
}

/// Compare two configurations (see the module docs).
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let mut d = ConfigDiff::default();
    let old_by_name: BTreeMap<&str, &MachineConfig> =
        old.machines.iter().map(|m| (m.name.as_str(), m)).collect();
    let new_names: BTreeSet<&str> = new.machines.iter().map(|m| m.name.as_str()).collect();
    let old_order: Vec<&str> = old
        .machines
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| new_names.contains(n))
        .collect();
    let new_order: Vec<&str> = new
        .machines
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| old_by_name.contains_key(n))
        .collect();
    let reordered = old_order != new_order;
    for m in &new.machines {
        let change = match old_by_name.get(m.name.as_str()) {
            None => Some(MachineChange::Added),
            Some(o) => {
                let why = replace_reasons(o, m);
                if !why.is_empty() {
                    Some(MachineChange::Replaced(why))
                } else {
                    let mut what = in_place_changes(o, m);
                    let moved = old_order.iter().position(|n| *n == m.name)
                        != new_order.iter().position(|n| *n == m.name);
                    if reordered && moved {
                        what.push("priority");
                    }
                    (!what.is_empty()).then_some(MachineChange::Changed(what))
                }
            }
        };
        if let Some(c) = change {
            d.machines.push((m.name.clone(), c));
        }
    }
    for m in &old.machines {
        if !new_names.contains(m.name.as_str()) {
            d.machines.push((m.name.clone(), MachineChange::Removed));
        }
    }
    if old.ip != new.ip {
        d.listen.push(format!("ip {:?} -> {:?}", old.ip, new.ip));
    }
    if old.port != new.port {
        d.listen.push(format!("port {} -> {}", old.port, new.port));
    }
    if old.bmp != new.bmp {
        d.settings.push("bmp timings".to_string());
    }
    if old.max_retired_jobs != new.max_retired_jobs {
        d.settings.push(format!(
            "max_retired_jobs {} -> {}",
            old.max_retired_jobs, new.max_retired_jobs
        ));
    }
    if old.seconds_before_free_s != new.seconds_before_free_s {
        d.settings.push(format!(
            "seconds_before_free {} -> {}",
            old.seconds_before_free_s, new.seconds_before_free_s
        ));
    }
    if old.simulated_faults != new.simulated_faults {
        d.settings
            .push("simulated_faults (takes effect at the next restart)".to_string());
    }
    if old.timeout_check_interval_s != new.timeout_check_interval_s {
        d.settings.push(format!(
            "timeout_check_interval {} -> {}",
            old.timeout_check_interval_s, new.timeout_check_interval_s
        ));
    }
    d
}

/// `destroyed jobs 2, 5, 6`, `destroyed job 3` or `no jobs destroyed`.
pub fn destroyed_text(ids: &[u64]) -> String {
    match ids {
        [] => "no jobs destroyed".to_string(),
        [one] => format!("destroyed job {one}"),
        many => format!(
            "destroyed jobs {}",
            many.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destroyed_text_reads_well() {
        assert_eq!(destroyed_text(&[]), "no jobs destroyed");
        assert_eq!(destroyed_text(&[3]), "destroyed job 3");
        assert_eq!(destroyed_text(&[2, 5, 6]), "destroyed jobs 2, 5, 6");
    }
}
