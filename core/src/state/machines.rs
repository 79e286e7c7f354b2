//! The machines: each configured machine's static description and the lookups the
//! controller needs (board slots, IPs, locations, a fresh allocator), and which boards are
//! out of use.

use super::*;

/// Where board `b` sits in a machine's dense per-board tables (`locations`, `ip_table`):
/// `(x * height + y) * 3 + z`, or `None` outside a `width`x`height` triad machine.
pub(super) fn board_slot(config: &MachineConfig, b: Board) -> Option<usize> {
    let (w, h) = (config.width, config.height);
    (b.x < w && b.y < h && b.z < 3)
        .then(|| (b.x as usize * h as usize + b.y as usize) * 3 + b.z as usize)
}

impl Machine {
    pub(super) fn ip_table(
        config: &MachineConfig,
        ips: &BTreeMap<Board, Arc<str>>,
    ) -> Vec<Option<Arc<str>>> {
        let mut table = vec![None; config.width as usize * config.height as usize * 3];
        for (&b, ip) in ips {
            if let Some(i) = board_slot(config, b) {
                table[i] = Some(ip.clone());
            }
        }
        table
    }

    /// The Ethernet IP of a logical board, if the configuration lists it.
    pub(super) fn ip(&self, b: Board) -> Option<&Arc<str>> {
        match board_slot(&self.config, b) {
            Some(i) => self.ip_table[i].as_ref(),
            None => self.ips.get(&b), // not in the table (none is listed there)
        }
    }

    pub(super) fn new(uid: u64, config: MachineConfig) -> Machine {
        let mut locations = vec![None; config.width as usize * config.height as usize * 3];
        for b in &config.boards {
            if let Some(i) = board_slot(&config, b.logical) {
                locations[i] = Some([b.cabinet, b.frame, b.board]);
            }
        }
        let ips = config
            .boards
            .iter()
            .map(|b| (b.logical, Arc::from(b.ip.as_str())))
            .collect();
        let ip_table = Machine::ip_table(&config, &ips);
        let bmps = config
            .bmps
            .iter()
            .map(|b| ((b.cabinet, b.frame), b.address.clone()))
            .collect();
        Machine {
            uid,
            config,
            locations,
            ips,
            bmps,
            ip_table,
            dead_locations: BTreeMap::new(),
        }
    }

    /// The machine as `config` (a change of tags, dead boards or dead links only) describes
    /// it, replacing `self`. Boards the new configuration marks dead keep the location they
    /// had, for power requests only, when `keep_dead_locations` ([`Rules::power_dead_held_boards`]):
    /// a job may still hold them, and must power them off.
    pub(super) fn changed_to(&self, config: MachineConfig, keep_dead_locations: bool) -> Machine {
        let mut m = Machine::new(self.uid, config);
        if keep_dead_locations {
            for &b in &m.config.dead_boards {
                if let Some(at) = self
                    .location(b)
                    .or_else(|| self.dead_locations.get(&b).copied())
                {
                    m.dead_locations.insert(b, at);
                }
            }
        }
        m
    }

    /// Where to send power requests for board `b`: its location, or the one it had before a
    /// reload marked it dead (see `dead_locations`).
    pub(super) fn power_location(&self, b: Board) -> Option<[u32; 3]> {
        self.location(b)
            .or_else(|| self.dead_locations.get(&b).copied())
    }

    /// The (cabinet, frame, board) of a logical board, if it exists and works.
    pub(super) fn location(&self, b: Board) -> Option<[u32; 3]> {
        board_slot(&self.config, b).and_then(|i| self.locations[i])
    }

    pub(super) fn allocator(&self, seconds_before_free_us: u64, pop_rule: PopRule) -> Allocator {
        let mut a = Allocator::new(
            self.config.width,
            self.config.height,
            self.config.dead_boards.iter().copied().collect(),
            self.config.dead_links.iter().copied().collect(),
            seconds_before_free_us,
        );
        a.set_pop_rule(pop_rule);
        a
    }

    /// True if a change from `self` to `new` needs the machine rebuilt (jobs destroyed):
    /// anything but tags, dead boards and dead links. A board listed in one configuration
    /// and dead in the other is a dead-board change (a board cannot be both listed and dead,
    /// so marking it dead necessarily drops its entry), not a change of the board list.
    /// (The same test as the reasons `spalloc-server --check-config` and the reload log
    /// give, so that they can never disagree: boards are sorted by logical coordinate in a
    /// validated configuration, so comparing them by coordinate is comparing the lists.)
    pub(super) fn is_major_change(old: &MachineConfig, new: &MachineConfig) -> bool {
        !crate::reconfigure::replace_reasons(old, new).is_empty()
    }
}

/// The boards of a machine not to be given to new jobs besides its dead ones: the drained
/// boards, and every board of a frame whose BMP does not answer or that an emergency stop
/// has not yet powered off.
pub(super) fn unavailable(health: &Health, config: &MachineConfig) -> BTreeSet<Board> {
    let mut out = health.drained(&config.name);
    let held = |c: u32, f: u32| {
        let frame = (config.name.clone(), c, f);
        health.unreachable.contains(&frame) || health.unswept.contains(&frame)
    };
    if health
        .unreachable
        .iter()
        .chain(&health.unswept)
        .any(|(m, _, _)| *m == config.name)
    {
        out.extend(
            config
                .boards
                .iter()
                .filter(|b| held(b.cabinet, b.frame))
                .map(|b| b.logical),
        );
    }
    // Only boards of the machine: the allocator's dead set is within its bounds.
    out.retain(|b| b.x < config.width && b.y < config.height && b.z < 3);
    out
}
