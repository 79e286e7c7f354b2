//! Reconfiguration: folding a new configuration into the live state (machines added,
//! changed in place, replaced or removed, and the jobs that lose their boards).

use super::machines::unavailable;
use super::*;

impl Core {
    pub(super) fn handle_configure(&mut self, now: TimeUs, new: &Config) {
        let old_names: Vec<String> = self.queue.machines.iter().map(|m| m.name.clone()).collect();
        // How the log words it (the same words as `spalloc-server --check-config`).
        let described: BTreeMap<String, crate::reconfigure::MachineChange> =
            crate::reconfigure::diff(&self.config, new)
                .machines
                .into_iter()
                .collect();
        let mut destroyed: BTreeMap<String, Vec<JobId>> = BTreeMap::new();
        self.config.ip = new.ip.clone();
        self.config.port = new.port;
        self.config.timeout_check_interval_s = new.timeout_check_interval_s;
        self.config.bmp = new.bmp.clone();
        self.config.max_retired_jobs = new.max_retired_jobs;
        self.trim_retired();
        self.config.seconds_before_free_s = new.seconds_before_free_s;
        self.config.health = new.health.clone();
        // (Used only by the server at start-up, for --simulate-bmps.)
        self.config.simulated_faults = new.simulated_faults.clone();

        let new_by_name: BTreeMap<&str, &MachineConfig> =
            new.machines.iter().map(|m| (m.name.as_str(), m)).collect();
        let mut removed = Vec::new();
        let mut changed = Vec::new();
        for name in &old_names {
            let old = &self.machines[name].config;
            match new_by_name.get(name.as_str()) {
                None => removed.push(name.clone()),
                Some(n) if *n == old => {}
                Some(n) if Machine::is_major_change(old, n) => removed.push(name.clone()),
                Some(_) => changed.push(name.clone()),
            }
        }
        let added: Vec<&MachineConfig> = new
            .machines
            .iter()
            .filter(|m| !self.machines.contains_key(&m.name) || removed.contains(&m.name))
            .collect();

        // Remove machines (destroying their jobs), as the original does inside its
        // "postponed" job-queue context: no queue processing until the end.
        for name in &removed {
            let victims: Vec<JobId> = self
                .jobs
                .values()
                .filter(|j| j.allocation.as_ref().is_some_and(|a| a.machine == *name))
                .map(|j| j.id)
                .collect();
            let what = described
                .get(name)
                .map_or_else(|| format!("removed {name}"), |c| c.describe(name));
            destroyed.insert(name.clone(), victims.clone());
            for id in victims {
                self.log(format!(
                    "job {id}: destroyed because the configuration {what}"
                ));
                self.teardown(
                    id,
                    Some(MACHINE_REMOVED.to_string()),
                    EndReason::MachineRemoved,
                );
            }
            self.queue.machines.retain(|m| m.name != *name);
            self.health.forget_frames(name);
            self.sweep_retries.retain(|r| r.request.machine != *name);
            self.machines.remove(name);
        }
        for name in &changed {
            let n = new_by_name[name.as_str()];
            let qm = self
                .queue
                .machine_mut(name)
                .expect("changed machine exists");
            qm.tags = n.tags.iter().cloned().collect();
            let mut dead: BTreeSet<Board> = n.dead_boards.iter().copied().collect();
            dead.extend(unavailable(&self.health, n));
            qm.allocator
                .set_dead(dead, n.dead_links.iter().copied().collect());
            // Rebuild the lookups too: a revived board brings its location and IP, and one
            // marked dead keeps its location for the power requests of a job holding it.
            let m = self.machines.get_mut(name).expect("changed machine exists");
            *m = m.changed_to(n.clone(), self.rules.power_dead_held_boards);
        }
        let free_us = (self.config.seconds_before_free_s.max(0.0) * 1e6) as u64;
        for n in &added {
            let uid = self.next_machine_uid;
            self.next_machine_uid += 1;
            let m = Machine::new(uid, (*n).clone());
            let mut allocator = m.allocator(free_us, self.rules.pop);
            // Drains survive a reload (and the rebuild of a machine): keyed by name.
            if self.health.affects(&n.name) {
                let mut dead: BTreeSet<Board> = n.dead_boards.iter().copied().collect();
                dead.extend(unavailable(&self.health, n));
                allocator.set_dead(dead, n.dead_links.iter().copied().collect());
            }
            self.queue.machines.push(QueueMachine {
                uid,
                name: n.name.clone(),
                tags: n.tags.iter().cloned().collect(),
                allocator,
                queue: VecDeque::new(),
            });
            self.machines.insert(n.name.clone(), m);
        }
        // Priority follows the new configuration's order.
        let order: BTreeMap<&str, usize> = new
            .machines
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), i))
            .collect();
        self.queue.machines.sort_by_key(|m| order[m.name.as_str()]);
        self.config.machines = new.machines.clone();

        for name in removed
            .iter()
            .chain(&changed)
            .chain(added.iter().map(|m| &m.name))
        {
            self.changed_machines.insert(name.clone());
        }
        if !(removed.is_empty() && changed.is_empty() && added.is_empty()) {
            // One clause per machine that changes: "replaced spin4x2 (board IPs changed):
            // destroyed jobs 2, 5, 6; added spin5".
            let clauses: Vec<String> = described
                .iter()
                .map(|(name, c)| match destroyed.get(name) {
                    Some(ids) => format!(
                        "{}: {}",
                        c.describe(name),
                        crate::reconfigure::destroyed_text(ids)
                    ),
                    None if c.destroys_jobs() => format!("{}: no jobs destroyed", c.describe(name)),
                    None => c.describe(name),
                })
                .collect();
            self.log(format!(
                "configuration applied: {} machines; {}",
                self.queue.machines.len(),
                clauses.join("; ")
            ));
        }
        let mut out = Vec::new();
        self.queue.regenerate(now, &mut out);
        self.apply_outcomes(now, out);
    }
}
