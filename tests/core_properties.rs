//! Property tests of the core over random event sequences: random machines (dead boards and
//! links, tags), random jobs of every shape, destroys, power commands, keepalives, time steps,
//! BMP completions (at once, or by hand in random order, some failing), configuration changes
//! (minor and major) and restarts.
//!
//! Each scenario is generated from a `u64` seed by an explicit, deterministic generator, so a
//! failure prints a seed (and the shrunk operation list) that reproduces it exactly.
use std::collections::{BTreeMap, BTreeSet};

use quickcheck::{Arbitrary, Gen, QuickCheck};
use spalloc::config::{Config, MachineConfig};
use spalloc::core::coordinates::{Board, Link};
use spalloc::core::sim::{config, job, machine_with, Sim};
use spalloc::core::*;

// ----- a small deterministic generator -------------------------------------------------------

use spalloc::core::rng::Rng;

const TAGS: [&str; 3] = ["default", "a", "b"];

// ----- scenarios -----------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct MachineSpec {
    name: String,
    width: u32,
    height: u32,
    tags: Vec<String>,
    dead_boards: BTreeSet<Board>,
    dead_links: BTreeSet<(Board, Link)>,
    /// Physical layout: false = one frame per triad, true = one frame per row.
    row_frames: bool,
    /// Bumped by a major change of the Ethernet IPs.
    ip_version: u32,
}

impl MachineSpec {
    fn random(rng: &mut Rng, name: String) -> MachineSpec {
        let width = rng.range_i64(1, 4) as u32;
        let height = rng.range_i64(1, 4) as u32;
        let mut m = MachineSpec {
            name,
            width,
            height,
            tags: random_tags(rng, false),
            dead_boards: BTreeSet::new(),
            dead_links: BTreeSet::new(),
            row_frames: rng.below(100) < 50,
            ip_version: 0,
        };
        for _ in 0..rng.range_i64(0, 3) {
            let b = m.random_board(rng);
            m.dead_boards.insert(b);
        }
        for _ in 0..rng.range_i64(0, 3) {
            let b = m.random_board(rng);
            m.dead_links.insert((b, *rng.pick(&Link::ALL)));
        }
        m
    }

    fn random_board(&self, rng: &mut Rng) -> Board {
        Board::new(
            rng.range_i64(0, self.width as i64 - 1) as u32,
            rng.range_i64(0, self.height as i64 - 1) as u32,
            rng.range_i64(0, 2) as u32,
        )
    }

    fn config(&self) -> MachineConfig {
        let dead: Vec<Board> = self.dead_boards.iter().copied().collect();
        let links: Vec<(Board, Link)> = self.dead_links.iter().copied().collect();
        let name = self.name.clone();
        let v = self.ip_version;
        let row_frames = self.row_frames;
        let mut m = machine_with(
            &self.name,
            self.width,
            self.height,
            &dead,
            &links,
            move |b| {
                if row_frames {
                    [0, b.y, b.x * 3 + b.z]
                } else {
                    [b.x, b.y, b.z]
                }
            },
            {
                let name = name.clone();
                move |c, f| format!("bmp-{name}-{c}-{f}")
            },
            move |b| format!("eth-{name}-{}-{}-{}-v{v}", b.x, b.y, b.z),
        );
        m.tags = self.tags.clone();
        m
    }
}

fn random_tags(rng: &mut Rng, allow_empty: bool) -> Vec<String> {
    let mut t: Vec<String> = TAGS
        .iter()
        .filter(|_| rng.below(100) < if allow_empty { 35 } else { 60 })
        .map(|s| s.to_string())
        .collect();
    if t.is_empty() && !allow_empty {
        t.push("default".to_string());
    }
    t.sort();
    t
}

#[derive(Clone, Debug)]
enum ConfigChange {
    /// New tags for machine i.
    Tags(usize, Vec<String>),
    /// Toggle a dead board of machine i.
    ToggleDeadBoard(usize, (u32, u32, u32)),
    /// Toggle a dead link of machine i.
    ToggleDeadLink(usize, (u32, u32, u32), Link),
    /// Change every Ethernet IP of machine i (major).
    Ips(usize),
    /// Change the size of machine i (major).
    Resize(usize, u32, u32),
    /// Remove machine i.
    Remove(usize),
    /// Add a new machine.
    Add(MachineSpec),
    /// Reverse the priority order.
    Reverse,
    /// New seconds_before_free and max_retired_jobs.
    Settings(f64, usize),
}

#[derive(Clone, Debug)]
enum Op {
    Create(CreateJob),
    /// Destroy the job picked by the index (into the ids handed out so far, or unknown).
    Destroy(usize, Option<String>),
    PowerOn(usize),
    PowerOff(usize),
    Keepalive(usize),
    GetState(usize),
    MachineInfo(usize),
    /// Advance the clock by this many milliseconds.
    Advance(u64),
    /// Complete the pending BMP request picked by the index; fail it if true.
    BmpDone(usize, bool),
    /// Complete every pending BMP request successfully.
    BmpAll,
    Configure(ConfigChange),
    /// Snapshot the state through rmp-serde, load it back and tell the core it restarted.
    Restart,
}

#[derive(Clone, Debug)]
struct Scenario {
    seed: u64,
    machines: Vec<MachineSpec>,
    seconds_before_free: f64,
    max_retired_jobs: usize,
    manual_bmp: bool,
    ops: Vec<Op>,
}

fn random_create(rng: &mut Rng, machine_names: &[String]) -> CreateJob {
    let request = match rng.range_i64(0, 5) {
        0 => JobRequest::OneBoard,
        1 | 2 => JobRequest::Boards(rng.range_i64(-1, 14)),
        3 | 4 => JobRequest::Triads(rng.range_i64(0, 4), rng.range_i64(0, 4)),
        _ => JobRequest::Board(
            rng.range_i64(-1, 3),
            rng.range_i64(-1, 3),
            rng.range_i64(-1, 3),
        ),
    };
    let mut c = job(request);
    c.target = match rng.range_i64(0, 9) {
        0 => JobTarget::Machine("nosuch".to_string()),
        1 | 2 if !machine_names.is_empty() => JobTarget::Machine(rng.pick(machine_names).clone()),
        3 | 4 => JobTarget::Tags(random_tags(rng, true)),
        _ => JobTarget::Tags(vec!["default".to_string()]),
    };
    c.min_ratio = *rng.pick(&[0.0, 0.0, 0.5, 1.0, 2.0]);
    c.max_dead_boards = *rng.pick(&[None, None, Some(-1), Some(0), Some(1), Some(3)]);
    c.max_dead_links = *rng.pick(&[None, None, Some(-1), Some(0), Some(2)]);
    c.require_torus = rng.below(100) < 15;
    c.keepalive_s = *rng.pick(&[
        Some(60.0),
        None,
        Some(0.5),
        Some(3.0),
        Some(0.0),
        Some(-1.0),
    ]);
    c.owner = rng.pick(&["me", "you"]).to_string();
    c
}

impl Scenario {
    fn generate(seed: u64, max_ops: usize) -> Scenario {
        let mut rng = Rng::new(seed);
        let machines: Vec<MachineSpec> = (0..rng.range_i64(1, 3))
            .map(|i| MachineSpec::random(&mut rng, format!("m{i}")))
            .collect();
        let mut names: Vec<String> = machines.iter().map(|m| m.name.clone()).collect();
        let n_ops = rng.range_i64(1, max_ops.max(1) as i64) as usize;
        let mut ops = Vec::with_capacity(n_ops);
        let mut added = 0;
        for _ in 0..n_ops {
            let pick = rng.next_u64() as usize % 64;
            let op = match rng.range_i64(0, 99) {
                0..=29 => Op::Create(random_create(&mut rng, &names)),
                30..=39 => Op::Destroy(
                    pick,
                    rng.pick(&[None, Some("Because.".to_string()), Some(String::new())])
                        .clone(),
                ),
                40..=43 => Op::PowerOn(pick),
                44..=47 => Op::PowerOff(pick),
                48..=50 => Op::Keepalive(pick),
                51..=52 => Op::GetState(pick),
                53 => Op::MachineInfo(pick),
                54..=67 => Op::Advance(*rng.pick(&[0, 1, 10, 100, 500, 1_000, 3_000, 40_000])),
                68..=79 => Op::BmpDone(pick, rng.below(100) < 20),
                80..=82 => Op::BmpAll,
                83..=96 => {
                    let i = rng.next_u64() as usize % 8;
                    let change = match rng.range_i64(0, 10) {
                        0 | 1 => ConfigChange::Tags(i, random_tags(&mut rng, false)),
                        2 | 3 => ConfigChange::ToggleDeadBoard(
                            i,
                            (
                                rng.range_i64(0, 3) as u32,
                                rng.range_i64(0, 3) as u32,
                                rng.range_i64(0, 2) as u32,
                            ),
                        ),
                        4 => ConfigChange::ToggleDeadLink(
                            i,
                            (
                                rng.range_i64(0, 3) as u32,
                                rng.range_i64(0, 3) as u32,
                                rng.range_i64(0, 2) as u32,
                            ),
                            *rng.pick(&Link::ALL),
                        ),
                        5 => ConfigChange::Ips(i),
                        6 => ConfigChange::Resize(
                            i,
                            rng.range_i64(1, 4) as u32,
                            rng.range_i64(1, 4) as u32,
                        ),
                        7 => ConfigChange::Remove(i),
                        8 => {
                            added += 1;
                            let name = format!("n{added}");
                            names.push(name.clone());
                            ConfigChange::Add(MachineSpec::random(&mut rng, name))
                        }
                        9 => ConfigChange::Reverse,
                        _ => ConfigChange::Settings(
                            *rng.pick(&[0.0, 0.1, 1.0, 30.0]),
                            *rng.pick(&[0, 1, 3, 1200]),
                        ),
                    };
                    Op::Configure(change)
                }
                _ => Op::Restart,
            };
            ops.push(op);
        }
        Scenario {
            seed,
            machines,
            seconds_before_free: *rng.pick(&[0.0, 0.1, 1.0, 30.0]),
            max_retired_jobs: *rng.pick(&[0, 1, 3, 1200]),
            manual_bmp: rng.below(100) < 50,
            ops,
        }
    }
}

impl Arbitrary for Scenario {
    fn arbitrary(g: &mut Gen) -> Scenario {
        Scenario::generate(u64::arbitrary(g), g.size().min(60))
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Scenario>> {
        // Drop halves, then single operations.
        let me = self.clone();
        let n = self.ops.len();
        let mut candidates = Vec::new();
        if n > 1 {
            let mut s = me.clone();
            s.ops.truncate(n / 2);
            candidates.push(s);
            let mut s = me.clone();
            s.ops.drain(..n / 2);
            candidates.push(s);
        }
        for i in (0..n).rev() {
            let mut s = me.clone();
            s.ops.remove(i);
            candidates.push(s);
        }
        Box::new(candidates.into_iter())
    }
}

// ----- running a scenario --------------------------------------------------------------------

struct Run {
    sim: Sim,
    machines: Vec<MachineSpec>,
    seconds_before_free: f64,
    max_retired_jobs: usize,
    /// Every id create_job returned, in order.
    ids: Vec<JobId>,
    /// The longest hold-back any machine may have been created with.
    max_free_s: f64,
}

impl Run {
    fn config(&self) -> Config {
        let mut c = config(
            self.machines.iter().map(MachineSpec::config).collect(),
            self.seconds_before_free,
        );
        c.max_retired_jobs = self.max_retired_jobs;
        c
    }

    fn pick_job(&self, pick: usize) -> JobId {
        if self.ids.is_empty() || pick % 8 == 7 {
            1000 + pick as JobId // an unknown job
        } else {
            self.ids[pick % self.ids.len()]
        }
    }

    fn configure(&mut self) {
        let c = self.config();
        self.sim.event(Event::Configure {
            now_us: self.sim.now_us,
            config: c,
        });
    }

    fn apply(&mut self, op: &Op) {
        let sim = &mut self.sim;
        match op {
            Op::Create(c) => {
                let id = sim.create_job(c.clone());
                self.ids.push(id);
            }
            Op::Destroy(p, reason) => {
                let id = self.pick_job(*p);
                self.sim.destroy(id, reason.as_deref());
            }
            Op::PowerOn(p) => {
                let job_id = self.pick_job(*p);
                self.sim.cmd(Command::PowerOnJobBoards { job_id });
            }
            Op::PowerOff(p) => {
                let job_id = self.pick_job(*p);
                self.sim.cmd(Command::PowerOffJobBoards { job_id });
            }
            Op::Keepalive(p) => {
                let job_id = self.pick_job(*p);
                self.sim.cmd(Command::JobKeepalive { job_id });
            }
            Op::GetState(p) => {
                let job_id = self.pick_job(*p);
                self.sim.state(job_id);
            }
            Op::MachineInfo(p) => {
                let job_id = self.pick_job(*p);
                self.sim.machine_info(job_id);
            }
            Op::Advance(ms) => sim.advance(*ms as f64 / 1000.0),
            Op::BmpDone(p, fail) => {
                if !sim.bmp_pending.is_empty() {
                    let i = p % sim.bmp_pending.len();
                    let r = sim.bmp_pending.remove(i).expect("in range");
                    let failure = fail.then(|| format!("Requests failed on BMP {}", r.address));
                    sim.event(Event::BmpDone {
                        now_us: sim.now_us,
                        request_id: r.id,
                        failure,
                        failed_boards: Vec::new(),
                        bmp_unreachable: false,
                    });
                }
            }
            Op::BmpAll => sim.complete_all_bmp(),
            Op::Restart => {
                let bytes = rmp_serde::to_vec_named(&sim.core).expect("serialise");
                let back: Core = rmp_serde::from_slice(&bytes).expect("deserialise");
                assert!(back == sim.core, "snapshot round trip changed the state");
                sim.core = back;
                sim.event(Event::Restarted {
                    now_us: sim.now_us,
                    grace_us: 0,
                });
            }
            Op::Configure(change) => {
                let n = self.machines.len();
                match change {
                    ConfigChange::Tags(i, tags) if n > 0 => {
                        self.machines[i % n].tags = tags.clone();
                    }
                    ConfigChange::ToggleDeadBoard(i, (x, y, z)) if n > 0 => {
                        let m = &mut self.machines[i % n];
                        let b = Board::new(x % m.width, y % m.height, *z);
                        if !m.dead_boards.remove(&b) {
                            m.dead_boards.insert(b);
                        }
                    }
                    ConfigChange::ToggleDeadLink(i, (x, y, z), l) if n > 0 => {
                        let m = &mut self.machines[i % n];
                        let k = (Board::new(x % m.width, y % m.height, *z), *l);
                        if !m.dead_links.remove(&k) {
                            m.dead_links.insert(k);
                        }
                    }
                    ConfigChange::Ips(i) if n > 0 => self.machines[i % n].ip_version += 1,
                    ConfigChange::Resize(i, w, h) if n > 0 => {
                        let m = &mut self.machines[i % n];
                        m.width = *w;
                        m.height = *h;
                        m.dead_boards.retain(|b| b.x < *w && b.y < *h);
                        m.dead_links.retain(|(b, _)| b.x < *w && b.y < *h);
                    }
                    ConfigChange::Remove(i) if n > 0 => {
                        self.machines.remove(i % n);
                    }
                    ConfigChange::Add(spec) => {
                        if !self.machines.iter().any(|m| m.name == spec.name) {
                            self.machines.push(spec.clone());
                        }
                    }
                    ConfigChange::Reverse => self.machines.reverse(),
                    ConfigChange::Settings(free, retired) => {
                        self.seconds_before_free = *free;
                        self.max_retired_jobs = *retired;
                        self.max_free_s = self.max_free_s.max(*free);
                    }
                    _ => {}
                }
                self.configure();
            }
        }
    }

    /// Checks made after every operation, independently of the core's own invariants.
    fn check(&self) {
        self.sim
            .core
            .check_invariants()
            .unwrap_or_else(|e| panic!("invariant: {e}"));
        // No board in two live allocations (from the public view).
        let mut held: BTreeMap<(String, [u32; 3]), JobId> = BTreeMap::new();
        for j in self.sim.core.list_jobs() {
            match (&j.allocated_machine_name, &j.boards) {
                (Some(m), Some(boards)) => {
                    assert!(
                        j.state == 2 || j.state == 3,
                        "allocated job {} state {}",
                        j.job_id,
                        j.state
                    );
                    for b in boards {
                        if let Some(other) = held.insert((m.clone(), *b), j.job_id) {
                            panic!("board {b:?} of {m} held by jobs {other} and {}", j.job_id);
                        }
                    }
                }
                (None, None) => assert_eq!(j.state, 1, "job {} unallocated", j.job_id),
                _ => panic!("job {} half allocated", j.job_id),
            }
        }
        // board_owners agrees with list_jobs for live jobs.
        for (m, owners) in self.sim.core.board_owners() {
            for ((hm, b), id) in &held {
                if *hm == m {
                    assert_eq!(owners.get(&Board::new(b[0], b[1], b[2])), Some(id));
                }
            }
        }
        // Job ids never repeat and only increase.
        assert!(
            self.ids.windows(2).all(|w| w[0] < w[1]),
            "ids {:?}",
            self.ids
        );
        assert!(self
            .ids
            .last()
            .map_or(true, |&l| l < self.sim.core.next_job_id()));
    }
}

fn run(s: &Scenario) -> Run {
    let mut r = Run {
        sim: Sim::new(Config::default()),
        machines: s.machines.clone(),
        seconds_before_free: s.seconds_before_free,
        max_retired_jobs: s.max_retired_jobs,
        ids: Vec::new(),
        max_free_s: s.seconds_before_free,
    };
    r.sim.bmp_auto = !s.manual_bmp;
    r.configure();
    r.check();
    for op in &s.ops {
        r.apply(op);
        r.check();
    }
    r
}

fn drained_effects(core: &mut Core) {
    while core.poll_effect().is_some() {}
}

// ----- properties ----------------------------------------------------------------------------

fn quickcheck(prop: fn(Scenario) -> bool) {
    // Scenarios are sized by `Gen::size` (at most 60 operations, see `Arbitrary`).
    QuickCheck::new().tests(100).quickcheck(prop);
}

/// No board is ever in two live allocations, and every invariant holds after every event
/// (the Sim checks after each event, `Run::check` after each operation).
fn prop_no_double_allocation(s: Scenario) -> bool {
    let r = run(&s);
    r.sim.core.check_invariants().is_ok()
}

/// Destroying every job, finishing all hardware work and waiting out the hold-back leaves
/// every machine empty.
fn prop_frees_everything(s: Scenario) -> bool {
    let mut r = run(&s);
    for id in r.sim.core.live_job_ids() {
        r.sim.destroy(id, Some("cleanup"));
    }
    r.sim.complete_all_bmp();
    assert!(r.sim.core.live_job_ids().is_empty());
    // Boards whose power-off failed are held until a retried power-off succeeds (issue
    // 15): let time pass for the retries and answer them, until the BMPs have nothing left.
    let retry_s = r.sim.core.config().bmp.retry_delay_s;
    for _ in 0..10 {
        r.sim
            .advance(r.max_free_s.max(r.seconds_before_free).max(retry_s) + 1.0);
        if r.sim.bmp_pending.is_empty() {
            break;
        }
        r.sim.complete_all_bmp();
    }
    r.check();
    let idle = r.sim.core.is_idle();
    if !idle {
        eprintln!("seed {} not idle: {:?}", s.seed, r.sim.core.board_owners());
    }
    // And the machines are whole again: every machine takes a full-size job.
    if idle {
        r.sim.bmp_auto = true;
        for m in r.machines.clone() {
            if m.dead_boards.contains(&Board::new(0, 0, 0)) {
                continue; // the bottom-left rule rejects any block
            }
            let mut c = job(JobRequest::Triads(m.width as i64, m.height as i64));
            c.target = JobTarget::Machine(m.name.clone());
            let id = r.sim.create_job(c);
            let st = r.sim.core.job_state(id);
            if st.state != 3 {
                eprintln!("seed {}: full-size job on {} got {st:?}", s.seed, m.name);
                return false;
            }
        }
    }
    idle
}

/// Folding the same events into a fresh core gives an identical state.
fn prop_replay_is_identical(s: Scenario) -> bool {
    let r = run(&s);
    let mut replay = Core::at_journal_start();
    for e in &r.sim.events {
        replay.handle(e);
        drained_effects(&mut replay);
    }
    let a = rmp_serde::to_vec_named(&r.sim.core).unwrap();
    let b = rmp_serde::to_vec_named(&replay).unwrap();
    a == b && replay == r.sim.core
}

/// A serialised state reads back equal, and re-serialises to the same bytes.
fn prop_snapshot_round_trip(s: Scenario) -> bool {
    let r = run(&s);
    let bytes = rmp_serde::to_vec_named(&r.sim.core).unwrap();
    let back: Core = rmp_serde::from_slice(&bytes).unwrap();
    let again = rmp_serde::to_vec_named(&back).unwrap();
    back == r.sim.core && again == bytes
}

/// The server answers keepalive-only commands before they are durable (they are journaled
/// lazily, see `server` module docs). That is safe only if losing any run of them in a crash
/// changes nothing after the restart: fold the scenario, then a run of keepalive-only
/// commands (job_keepalive, get_job_state, get_job_machine_info from each job's keepalive
/// host, and for unknown jobs from anyone) later in time, then a restart; the state must be
/// byte-identical to folding the restart alone. A keepalive from a *different* host is not
/// keepalive-only (it changes `keepalivehost`), and indeed changes the state.
fn prop_keepalive_only_lost_in_crash_changes_nothing(s: Scenario) -> bool {
    let r = run(&s);
    let base = r.sim.core.clone();
    let mut with = base.clone();
    let start_us = r.sim.now_us;
    let mut rng = Rng::new(s.seed ^ 0x6b65_6570_616c_6976);
    let mut ids = base.live_job_ids();
    ids.push(base.next_job_id() + 3); // unknown
    let mut t = start_us;
    for _ in 0..rng.range_i64(1, 20) {
        t += rng.range_i64(0, 2_000_000) as u64;
        let job_id = *rng.pick(&ids);
        let command = match rng.range_i64(0, 2) {
            0 => Command::JobKeepalive { job_id },
            1 => Command::GetJobState { job_id },
            _ => Command::GetJobMachineInfo { job_id },
        };
        let peer = base
            .job_state(job_id)
            .keepalivehost
            .unwrap_or_else(|| "10.9.9.9".to_string());
        if !with.is_keepalive_only(&peer, &command) {
            eprintln!(
                "seed {}: {command:?} from {peer} not keepalive-only",
                s.seed
            );
            return false;
        }
        with.handle(&Event::Command {
            now_us: t,
            peer,
            command,
        });
        drained_effects(&mut with);
    }
    let restart = Event::Restarted {
        now_us: t + rng.range_i64(0, 5_000_000) as u64,
        grace_us: 30_000_000,
    };
    let mut without = base.clone();
    without.handle(&restart);
    with.handle(&restart);
    drained_effects(&mut without);
    drained_effects(&mut with);
    if rmp_serde::to_vec_named(&with).unwrap() != rmp_serde::to_vec_named(&without).unwrap() {
        eprintln!(
            "seed {}: lost keepalives changed the restarted state",
            s.seed
        );
        return false;
    }
    // The classification is not vacuous: from another host it is a real change.
    if let Some(&job_id) = base.live_job_ids().first() {
        let command = Command::JobKeepalive { job_id };
        if base.is_keepalive_only("10.9.9.9", &command) {
            return false;
        }
        let mut other = base.clone();
        other.handle(&Event::Command {
            now_us: t,
            peer: "10.9.9.9".to_string(),
            command,
        });
        other.handle(&restart);
        drained_effects(&mut other);
        return rmp_serde::to_vec_named(&other).unwrap()
            != rmp_serde::to_vec_named(&without).unwrap();
    }
    true
}

/// Job ids never repeat (and the next id is beyond all of them), across restarts too.
fn prop_job_ids_unique(s: Scenario) -> bool {
    let r = run(&s);
    let unique: BTreeSet<JobId> = r.ids.iter().copied().collect();
    unique.len() == r.ids.len()
        && r.ids
            .iter()
            .enumerate()
            .all(|(i, &id)| id == i as JobId + 1)
        && r.sim.core.next_job_id() == r.ids.len() as JobId + 1
}

#[test]
fn no_double_allocation() {
    quickcheck(prop_no_double_allocation);
}

#[test]
fn frees_everything() {
    quickcheck(prop_frees_everything);
}

#[test]
fn replay_is_identical() {
    quickcheck(prop_replay_is_identical);
}

#[test]
fn snapshot_round_trip() {
    quickcheck(prop_snapshot_round_trip);
}

#[test]
fn keepalive_only_lost_in_crash_changes_nothing() {
    quickcheck(prop_keepalive_only_lost_in_crash_changes_nothing);
}

#[test]
fn job_ids_unique() {
    quickcheck(prop_job_ids_unique);
}

/// The same properties over a fixed set of seeds (reproducible in CI, and longer runs).
#[test]
fn fixed_seeds() {
    for seed in 0..150u64 {
        let s = Scenario::generate(seed, 80);
        assert!(prop_no_double_allocation(s.clone()), "seed {seed}");
        assert!(prop_frees_everything(s.clone()), "seed {seed}");
        assert!(prop_replay_is_identical(s.clone()), "seed {seed}");
        assert!(prop_snapshot_round_trip(s.clone()), "seed {seed}");
        assert!(prop_job_ids_unique(s), "seed {seed}");
    }
}

/// The generator really exercises the interesting paths.
#[test]
fn generator_covers_the_interesting_paths() {
    let mut allocated = 0;
    let mut queued = 0;
    let mut cancelled = 0;
    let mut failed = 0;
    let mut removed = 0;
    let mut timed_out = 0;
    for seed in 0..100u64 {
        let r = run(&Scenario::generate(seed, 60));
        for &id in &r.ids {
            let st = r.sim.core.job_state(id);
            match (st.state, st.reason.as_deref()) {
                (2 | 3, _) => allocated += 1,
                (1, _) => queued += 1,
                (4, Some(x)) if x.starts_with("Cancelled") => cancelled += 1,
                (4, Some(x)) if x.starts_with("Machine configuration failed") => failed += 1,
                (4, Some("Machine removed.")) => removed += 1,
                (4, Some("Job timed out.")) => timed_out += 1,
                _ => {}
            }
        }
    }
    eprintln!(
        "allocated {allocated} queued {queued} cancelled {cancelled} failed {failed} \
         removed {removed} timed out {timed_out}"
    );
    assert!(allocated > 50 && queued > 10 && cancelled > 50);
    assert!(failed > 0 && removed > 0 && timed_out > 0);
}
