//! The original spalloc_server's own controller and job-queue cases (behaviour.md §B, §C and
//! the distilled cases of §F), replayed through the `Sim` harness with exact expectations.
use std::collections::BTreeSet;

use spalloc::config::{Config, MachineConfig};
use spalloc::core::coordinates::{board_down_link, Board, Link};
use spalloc::core::sim::{config, job, machine_with, simple_machine, Sim, PEER};
use spalloc::core::*;

// ----- helpers ---------------------------------------------------------------------------

fn tens(b: Board) -> [u32; 3] {
    [b.x * 10, b.y * 10, b.z * 10]
}

/// The original's `big_m`: 4x2, identity physical map.
fn big_m() -> MachineConfig {
    simple_machine("big_m", 4, 2)
}

/// The original's `big_m_with_hole`: 4x2, (2,1,0) dead, physical (x*10, y*10, z*10).
fn big_m_with_hole() -> MachineConfig {
    machine_with(
        "big_m",
        4,
        2,
        &[Board::new(2, 1, 0)],
        &[],
        tens,
        |c, f| format!("10.2.{c}.{f}"),
        |b| format!("11.{}.{}.{}", b.x, b.y, b.z),
    )
}

fn with_tags(mut m: MachineConfig, tags: &[&str]) -> MachineConfig {
    let mut t: Vec<String> = tags.iter().map(|s| s.to_string()).collect();
    t.sort();
    t.dedup();
    m.tags = t;
    m
}

fn triads(w: i64, h: i64) -> CreateJob {
    job(JobRequest::Triads(w, h))
}

fn on_machine(mut c: CreateJob, m: &str) -> CreateJob {
    c.target = JobTarget::Machine(m.to_string());
    c
}

fn tagged(mut c: CreateJob, tags: &[&str]) -> CreateJob {
    let mut t: Vec<String> = tags.iter().map(|s| s.to_string()).collect();
    t.sort();
    c.target = JobTarget::Tags(t);
    c
}

fn chip(sim: &Sim, m: &str, x: i64, y: i64) -> Option<WhereIsReply> {
    sim.where_is(WhereIs::MachineChip {
        machine: m.to_string(),
        chip_x: x,
        chip_y: y,
    })
}

fn job_chip(sim: &Sim, id: JobId, x: i64, y: i64) -> Option<WhereIsReply> {
    sim.where_is(WhereIs::JobChip {
        job_id: id,
        chip_x: x,
        chip_y: y,
    })
}

/// State without the keepalive side effect.
fn peek(sim: &Sim, id: JobId) -> JobStateReply {
    sim.core.job_state(id)
}

fn machine_of(sim: &Sim, id: JobId) -> Option<String> {
    sim.core.job_machine_info(id).machine_name
}

fn boards_of(sim: &Sim, id: JobId) -> Vec<[u32; 3]> {
    sim.core.job_machine_info(id).boards.unwrap_or_default()
}

/// The queue of every machine (by name, priority order), read from the serialised state.
fn queues(sim: &Sim) -> Vec<(String, Vec<u64>)> {
    // Read the queues out of the serialised state (the core keeps them private).
    #[derive(serde::Deserialize)]
    struct CoreView {
        queue: QueueView,
    }
    #[derive(serde::Deserialize)]
    struct QueueView {
        machines: Vec<MachineView>,
    }
    #[derive(serde::Deserialize)]
    struct MachineView {
        name: String,
        queue: Vec<u64>,
    }
    let bytes = rmp_serde::to_vec_named(&sim.core).unwrap();
    let v: CoreView = rmp_serde::from_slice(&bytes).unwrap();
    v.queue
        .machines
        .into_iter()
        .map(|m| (m.name, m.queue))
        .collect()
}

fn queue_of(sim: &Sim, name: &str) -> Vec<u64> {
    queues(sim)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, q)| q)
        .unwrap()
}

fn take_machines_changed(sim: &mut Sim) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    sim.notifications.retain(|n| match n {
        Effect::MachinesChanged(names) => {
            out.push(names.clone());
            false
        }
        _ => true,
    });
    out
}

fn flat_jobs(batches: Vec<Vec<JobId>>) -> BTreeSet<JobId> {
    batches.into_iter().flatten().collect()
}

fn flat_machines(batches: Vec<Vec<String>>) -> BTreeSet<String> {
    batches.into_iter().flatten().collect()
}

fn set<T: Ord + Clone>(xs: &[T]) -> BTreeSet<T> {
    xs.iter().cloned().collect()
}

fn reconfigure(sim: &mut Sim, c: Config) {
    sim.event(Event::Configure {
        now_us: sim.now_us,
        config: c,
    });
}

fn command_from(sim: &mut Sim, peer: &str, command: Command) -> Option<Response> {
    sim.event(Event::Command {
        now_us: sim.now_us,
        peer: peer.to_string(),
        command,
    })
}

// ----- where_is (distilled cases 4, 6, 7, 8; TestWhereIs) -----------------------------------

#[test]
fn case4_double_config_where_is() {
    let m0 = machine_with(
        "m0",
        1,
        2,
        &[],
        &[],
        tens,
        |c, f| format!("10.0.{c}.{f}"),
        |b| format!("11.0.{}.{}.{}", b.x, b.y, b.z),
    );
    let m1 = machine_with(
        "m1",
        3,
        4,
        &[Board::new(0, 0, 1)],
        &[(Board::new(1, 1, 1), Link::North)],
        tens,
        |c, f| format!("10.1.{c}.{f}"),
        |b| format!("11.1.{}.{}.{}", b.x, b.y, b.z),
    );
    let mut sim = Sim::new(config(vec![m0, m1], 0.1));
    let ms = sim.core.list_machines();
    assert_eq!(ms.len(), 2);
    assert_eq!(ms[0].name, "m0");
    assert_eq!(ms[1].name, "m1");
    assert_eq!(ms[1].dead_boards, vec![[0, 0, 1]]);
    assert_eq!(ms[1].dead_links, vec![[1, 1, 1, 2]]);
    assert_eq!((ms[1].width, ms[1].height), (3, 4));
    assert_eq!(ms[0].tags, vec!["default".to_string()]);

    assert_eq!(sim.create(JobRequest::Triads(1, 1)), 1);
    assert_eq!(machine_of(&sim, 1).as_deref(), Some("m0"));
    let r = job_chip(&sim, 1, 5, 9).unwrap();
    assert_eq!(
        r,
        WhereIsReply {
            machine: "m0".into(),
            logical: [0, 0, 2],
            physical: [0, 0, 20],
            chip: [5, 9],
            board_chip: [1, 1],
            job_id: Some(1),
            job_chip: Some([5, 9]),
        }
    );
    let r = sim
        .where_is(WhereIs::Logical {
            machine: "m1".into(),
            x: 2,
            y: 1,
            z: 1,
        })
        .unwrap();
    assert_eq!(
        r,
        WhereIsReply {
            machine: "m1".into(),
            logical: [2, 1, 1],
            physical: [20, 10, 10],
            chip: [32, 16],
            board_chip: [0, 0],
            job_id: None,
            job_chip: None,
        }
    );
    assert_eq!(
        sim.where_is(WhereIs::Logical {
            machine: "bad".into(),
            x: 0,
            y: 0,
            z: 0
        }),
        None
    );
    // The same through the command path.
    assert_eq!(
        sim.cmd(Command::WhereIs(WhereIs::Logical {
            machine: "bad".into(),
            x: 0,
            y: 0,
            z: 0
        })),
        Response::WhereIs(None)
    );
}

#[test]
fn case6_where_is_machine_chip_on_big_m() {
    let sim = Sim::new(config(vec![big_m()], 0.1));
    let logical = [
        ((0, 0), [0, 0, 0]),
        ((1, 1), [0, 0, 0]),
        ((3, 3), [0, 0, 0]),
        ((7, 7), [0, 0, 0]),
        ((0, 4), [3, 0, 1]),
        ((44, 4), [3, 0, 1]),
        ((3, 11), [3, 0, 1]),
        ((5, 0), [0, 1, 2]),
        ((4, 20), [0, 1, 2]),
        ((0, 12), [0, 1, 0]),
        ((36, 12), [3, 1, 0]),
        ((-1, -1), [3, 1, 2]),
    ];
    for ((x, y), l) in logical {
        let r = chip(&sim, "big_m", x, y).unwrap();
        assert_eq!(r.logical, l, "logical of chip ({x}, {y})");
        // Identity physical map.
        assert_eq!(r.physical, l, "physical of chip ({x}, {y})");
        assert_eq!(r.machine, "big_m");
        assert_eq!((r.job_id, r.job_chip), (None, None));
    }
    for ((x, y), c) in [
        ((0, 0), [0, 0]),
        ((32, 10), [32, 10]),
        ((-1, 0), [47, 0]),
        ((0, -1), [0, 23]),
        ((0, 24), [0, 0]),
        ((48, 0), [0, 0]),
    ] {
        assert_eq!(
            chip(&sim, "big_m", x, y).unwrap().chip,
            c,
            "chip ({x}, {y})"
        );
    }
    for ((x, y), bc) in [
        ((0, 0), [0, 0]),
        ((4, 7), [4, 7]),
        ((7, 7), [7, 7]),
        ((7, 4), [7, 4]),
        ((8, 4), [0, 0]),
        ((4, 8), [0, 0]),
        ((-1, -1), [7, 3]),
    ] {
        assert_eq!(
            chip(&sim, "big_m", x, y).unwrap().board_chip,
            bc,
            "board_chip of ({x}, {y})"
        );
    }
    // test_failed_search
    assert_eq!(chip(&sim, "bad", 0, 0), None);
    assert_eq!(
        sim.where_is(WhereIs::Physical {
            machine: "bad".into(),
            cabinet: 0,
            frame: 0,
            board: 0
        }),
        None
    );
    assert_eq!(
        sim.where_is(WhereIs::Physical {
            machine: "big_m".into(),
            cabinet: 9001,
            frame: 9001,
            board: 9001
        }),
        None
    );
    // test_input_logical
    for ((x, y, z), c) in [
        ((0, 0, 0), [0, 0]),
        ((0, 0, 1), [8, 4]),
        ((0, 0, 2), [4, 8]),
        ((3, 1, 2), [40, 20]),
        ((-1, -1, 2), [40, 20]),
    ] {
        let r = sim
            .where_is(WhereIs::Logical {
                machine: "big_m".into(),
                x,
                y,
                z,
            })
            .unwrap();
        assert_eq!(r.chip, c, "logical ({x}, {y}, {z})");
        assert_eq!(r.board_chip, [0, 0]);
    }
}

#[test]
fn case7_where_is_jobs_on_big_m() {
    let mut sim = Sim::new(config(vec![big_m()], 0.1));
    assert_eq!(sim.create(JobRequest::Triads(2, 2)), 1);
    assert_eq!(sim.create(JobRequest::Board(3, 1, 2)), 2);
    let b1: BTreeSet<[u32; 3]> = boards_of(&sim, 1).into_iter().collect();
    let want: BTreeSet<[u32; 3]> = (0..2)
        .flat_map(|x| (0..2).flat_map(move |y| (0..3).map(move |z| [x, y, z])))
        .collect();
    assert_eq!(b1, want);
    assert_eq!(boards_of(&sim, 2), vec![[3, 1, 2]]);
    for ((x, y), id) in [
        ((0, 0), Some(1)),
        ((0, 12), Some(1)),
        ((8, 23), Some(1)),
        ((19, 19), Some(1)),
        ((8, 2), Some(1)),
        ((0, 4), None),
        ((3, 23), None),
        ((40, 20), Some(2)),
        ((-1, -1), Some(2)),
        ((-1, 0), Some(2)),
        ((-1, 4), None),
    ] {
        assert_eq!(
            chip(&sim, "big_m", x, y).unwrap().job_id,
            id,
            "job of ({x}, {y})"
        );
    }
    for ((x, y), jc) in [
        ((0, 0), Some([0, 0])),
        ((1, 1), Some([1, 1])),
        ((4, 8), Some([4, 8])),
        ((8, 4), Some([8, 4])),
        ((8, 2), Some([8, 2])),
        ((23, 23), Some([23, 23])),
        ((27, 23), Some([27, 23])),
        ((28, 23), None),
        ((24, 0), None),
        ((0, 4), None),
        ((24, 12), None),
        ((40, 20), Some([0, 0])),
        ((-1, -1), Some([7, 3])),
        ((41, 0), Some([1, 4])),
    ] {
        assert_eq!(
            chip(&sim, "big_m", x, y).unwrap().job_chip,
            jc,
            "job_chip of ({x}, {y})"
        );
    }
    let i1 = sim.core.job_machine_info(1);
    assert_eq!((i1.width, i1.height), (Some(28), Some(24)));
    let i2 = sim.core.job_machine_info(2);
    assert_eq!((i2.width, i2.height), (Some(8), Some(8)));
}

#[test]
fn case8_where_is_on_big_m_with_hole() {
    let mut sim = Sim::new(config(vec![big_m_with_hole()], 0.1));
    assert_eq!(sim.create(JobRequest::Triads(2, 2)), 1);
    assert_eq!(sim.create(JobRequest::Triads(2, 1)), 2);
    assert_eq!(boards_of(&sim, 2)[0], [2, 0, 0]);
    for ((x, y), c) in [((0, 0), [24, 0]), ((4, 8), [28, 8]), ((11, 15), [35, 15])] {
        let r = job_chip(&sim, 2, x, y).unwrap();
        assert_eq!(r.machine, "big_m");
        assert_eq!(r.chip, c, "job 2 chip ({x}, {y})");
        assert_eq!(r.job_id, Some(2));
    }
    for ((x, y), c) in [((0, 0), [0, 0]), ((27, 23), [27, 23])] {
        let r = job_chip(&sim, 1, x, y).unwrap();
        assert_eq!(r.chip, c, "job 1 chip ({x}, {y})");
    }
    // test_input_bad_job_chip
    assert_eq!(job_chip(&sim, 1, 24, 12), None);
    assert_eq!(job_chip(&sim, 1, 0, 4), None);
    assert_eq!(job_chip(&sim, 3, 0, 0), None);
    // Dead board.
    assert_eq!(chip(&sim, "big_m", 24, 12), None);
    assert_eq!(
        sim.where_is(WhereIs::Physical {
            machine: "big_m".into(),
            cabinet: 20,
            frame: 10,
            board: 0
        }),
        None
    );
    // test_return_physical_board
    for ((x, y), p) in [
        ((0, 0), [0, 0, 0]),
        ((1, 1), [0, 0, 0]),
        ((3, 3), [0, 0, 0]),
        ((7, 7), [0, 0, 0]),
        ((0, 4), [30, 0, 10]),
        ((44, 4), [30, 0, 10]),
        ((3, 11), [30, 0, 10]),
        ((5, 0), [0, 10, 20]),
        ((4, 20), [0, 10, 20]),
        ((0, 12), [0, 10, 0]),
        ((36, 12), [30, 10, 0]),
        ((-1, -1), [30, 10, 20]),
    ] {
        assert_eq!(
            chip(&sim, "big_m", x, y).unwrap().physical,
            p,
            "physical of ({x}, {y})"
        );
    }
    // test_input_physical
    for ((c, f, b), ch) in [
        ((0, 0, 0), [0, 0]),
        ((0, 0, 10), [8, 4]),
        ((0, 0, 20), [4, 8]),
        ((30, 10, 20), [40, 20]),
    ] {
        let r = sim
            .where_is(WhereIs::Physical {
                machine: "big_m".into(),
                cabinet: c,
                frame: f,
                board: b,
            })
            .unwrap();
        assert_eq!(r.chip, ch, "physical ({c}, {f}, {b})");
    }
}

// ----- board positions (case 5; test_get_board_position / _at_position) ---------------------

#[test]
fn case5_board_positions() {
    let m = machine_with(
        "m",
        1,
        2,
        &[],
        &[],
        tens,
        |c, f| format!("10.0.{c}.{f}"),
        |b| format!("11.{}.{}.{}", b.x, b.y, b.z),
    );
    let mut sim = Sim::new(config(vec![m], 0.1));
    let pos = |sim: &mut Sim, m: &str, x, y, z| {
        sim.cmd(Command::GetBoardPosition {
            machine: m.into(),
            x,
            y,
            z,
        })
    };
    let at = |sim: &mut Sim, m: &str, c, f, b| {
        sim.cmd(Command::GetBoardAtPosition {
            machine: m.into(),
            cabinet: c,
            frame: f,
            board: b,
        })
    };
    assert_eq!(
        pos(&mut sim, "m", 0, 0, 2),
        Response::Triple(Some([0, 0, 20]))
    );
    assert_eq!(at(&mut sim, "m", 0, 0, 21), Response::Triple(None));
    assert_eq!(
        at(&mut sim, "m", 0, 0, 20),
        Response::Triple(Some([0, 0, 2]))
    );
    assert_eq!(pos(&mut sim, "bad", 0, 0, 0), Response::Triple(None));
    assert_eq!(at(&mut sim, "bad", 0, 0, 0), Response::Triple(None));

    // The original's 1x1 identity cases.
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 1)], 0.1));
    for z in 0..3 {
        assert_eq!(
            pos(&mut sim, "m", 0, 0, z),
            Response::Triple(Some([0, 0, z as u32]))
        );
        assert_eq!(
            at(&mut sim, "m", 0, 0, z),
            Response::Triple(Some([0, 0, z as u32]))
        );
    }
    for (x, y, z) in [(1, 0, 0), (0, 1, 0), (0, 0, 3), (-1, 0, 0)] {
        assert_eq!(pos(&mut sim, "m", x, y, z), Response::Triple(None));
        assert_eq!(at(&mut sim, "m", x, y, z), Response::Triple(None));
    }
}

// ----- machine info (case 9, §C) -------------------------------------------------------------

fn wh(machine: MachineConfig, req: JobRequest) -> (u32, u32) {
    let mut sim = Sim::new(config(vec![machine], 0.1));
    let id = sim.create(req.clone());
    let i = sim.machine_info(id);
    (
        i.width.unwrap_or_else(|| panic!("{req:?} not allocated")),
        i.height.unwrap(),
    )
}

#[test]
fn case9_machine_info_widths_and_heights() {
    use JobRequest::*;
    let m23 = || simple_machine("m", 2, 3);
    assert_eq!(wh(m23(), OneBoard), (8, 8));
    assert_eq!(wh(m23(), Triads(1, 1)), (16, 16));
    assert_eq!(wh(m23(), Triads(2, 1)), (24, 16));
    assert_eq!(wh(m23(), Triads(2, 3)), (24, 36));
    let m42 = || simple_machine("m", 4, 2);
    assert_eq!(wh(m42(), Triads(2, 1)), (28, 16));
    assert_eq!(wh(m42(), Triads(2, 2)), (28, 24));
    assert_eq!(wh(m42(), Triads(4, 2)), (48, 24));
    assert_eq!(wh(m42(), Triads(4, 1)), (48, 16));
    assert_eq!(wh(m42(), Boards(5)), (16, 24));
    assert_eq!(wh(m42(), Boards(7)), (28, 24));

    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.1));
    let id = sim.create(JobRequest::Triads(1, 1));
    let i = sim.machine_info(id);
    assert_eq!((i.width, i.height), (Some(12), Some(16)));
    assert_eq!(i.machine_name.as_deref(), Some("m"));
    let conns: BTreeSet<((i64, i64), String)> = i.connections.unwrap().into_iter().collect();
    assert_eq!(
        conns,
        set(&[
            ((0, 0), "11.0.0.0".to_string()),
            ((8, 4), "11.0.0.1".to_string()),
            ((4, 8), "11.0.0.2".to_string()),
        ])
    );
    let boards: BTreeSet<[u32; 3]> = i.boards.unwrap().into_iter().collect();
    assert_eq!(boards, set(&[[0, 0, 0], [0, 0, 1], [0, 0, 2]]));
    // Unknown job: all null.
    let i = sim.machine_info(1234);
    assert_eq!(
        (i.width, i.height, i.connections, i.machine_name, i.boards),
        (None, None, None, None, None)
    );

    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.1));
    let id = sim.create(JobRequest::Triads(1, 2));
    let i = sim.machine_info(id);
    assert_eq!((i.width, i.height), (Some(12), Some(24)));
    let conns: BTreeSet<(i64, i64)> = i.connections.unwrap().into_iter().map(|c| c.0).collect();
    assert_eq!(
        conns,
        set(&[(0, 0), (8, 4), (4, 8), (0, 12), (8, 16), (4, 20)])
    );
}

#[test]
fn b6_machine_info_height_with_dead_top_right_triad() {
    let dead = [
        Board::new(1, 1, 0),
        Board::new(1, 1, 1),
        Board::new(1, 1, 2),
    ];
    let m = machine_with(
        "m",
        3,
        3,
        &dead,
        &[],
        |b| [b.x, b.y, b.z],
        |c, f| format!("10.1.{c}.{f}"),
        |b| format!("11.{}.{}.{}", b.x, b.y, b.z),
    );
    let mut sim = Sim::new(config(vec![m], 0.1));
    let id = sim.create(JobRequest::Triads(2, 2));
    let i = sim.machine_info(id);
    assert_eq!(i.boards.as_ref().map(Vec::len), Some(9));
    // The original said 28x16 (lexicographic max board); we fix it (§B.6).
    assert_eq!((i.width, i.height), (Some(28), Some(28)));
}

// ----- the queue (§B.5) ----------------------------------------------------------------------

#[test]
fn b5_enqueue_job_example() {
    let machines = vec![
        simple_machine("1x4", 1, 4),
        simple_machine("1x2", 1, 2),
        simple_machine("1x5", 1, 5),
        with_tags(simple_machine("1x2_pie", 1, 2), &["pie", "chips"]),
        with_tags(simple_machine("1x2_curry", 1, 2), &["curry", "chips"]),
    ];
    let mut sim = Sim::new(config(machines, 0.1));
    let j100 = sim.create_job(triads(1, 1));
    assert_eq!(machine_of(&sim, j100).as_deref(), Some("1x4"));
    assert_eq!(
        set(&boards_of(&sim, j100)),
        set(&[[0, 0, 0], [0, 0, 1], [0, 0, 2]])
    );
    let j110 = sim.create_job(triads(1, 4));
    assert_eq!(machine_of(&sim, j110).as_deref(), Some("1x5"));
    let j120 = sim.create_job(triads(1, 3));
    assert_eq!(machine_of(&sim, j120).as_deref(), Some("1x4"));
    let j130 = sim.create_job(on_machine(triads(1, 1), "1x5"));
    assert_eq!(machine_of(&sim, j130).as_deref(), Some("1x5"));
    let j140 = sim.create_job(triads(1, 2));
    assert_eq!(machine_of(&sim, j140).as_deref(), Some("1x2"));

    let j150 = sim.create_job(triads(1, 1));
    assert_eq!(peek(&sim, j150).state, 1);
    assert_eq!(
        queues(&sim),
        vec![
            ("1x4".to_string(), vec![j150]),
            ("1x2".to_string(), vec![j150]),
            ("1x5".to_string(), vec![j150]),
            ("1x2_pie".to_string(), vec![]),
            ("1x2_curry".to_string(), vec![]),
        ]
    );
    let j160 = sim.create_job(tagged(triads(1, 1), &["chips"]));
    assert_eq!(machine_of(&sim, j160).as_deref(), Some("1x2_pie"));
    let j170 = sim.create_job(tagged(triads(1, 1), &["curry", "chips"]));
    assert_eq!(machine_of(&sim, j170).as_deref(), Some("1x2_curry"));
    let j180 = sim.create_job(tagged(triads(1, 2), &["chips"]));
    assert_eq!(peek(&sim, j180).state, 1);
    assert_eq!(queue_of(&sim, "1x4"), vec![j150]);
    assert_eq!(queue_of(&sim, "1x2_pie"), vec![j180]);
    assert_eq!(queue_of(&sim, "1x2_curry"), vec![j180]);
    let j190 = sim.create_job(tagged(triads(1, 2), &[]));
    assert_eq!(peek(&sim, j190).state, 1);
    for m in ["1x4", "1x2", "1x5"] {
        assert_eq!(queue_of(&sim, m), vec![j150, j190], "{m}");
    }
    for m in ["1x2_pie", "1x2_curry"] {
        assert_eq!(queue_of(&sim, m), vec![j180, j190], "{m}");
    }
    let cancelled = |sim: &Sim, id| {
        let s = peek(sim, id);
        (s.state, s.reason)
    };
    let no = Some("Cancelled: No suitable machines available.".to_string());
    let j200 = sim.create_job(on_machine(triads(1, 1), "xxx"));
    assert_eq!(cancelled(&sim, j200), (4, no.clone()));
    let j210 = sim.create_job(tagged(triads(1, 1), &["xxx"]));
    assert_eq!(cancelled(&sim, j210), (4, no.clone()));
    let j220 = sim.create_job(triads(10, 10));
    assert_eq!(cancelled(&sim, j220), (4, no.clone()));
    // Queues untouched by the cancelled ones.
    assert_eq!(queue_of(&sim, "1x4"), vec![j150, j190]);

    // The job on several queues goes to the first machine that frees up.
    sim.destroy(j140, None);
    sim.advance(0.2);
    assert_eq!(machine_of(&sim, j150).as_deref(), Some("1x2"));
    assert_eq!(peek(&sim, j190).state, 1);
}

#[test]
fn b5_priority_follows_config_order() {
    // test_move_machine_to_end, through a reordering configuration.
    let ms = || {
        vec![
            simple_machine("m0", 1, 1),
            simple_machine("m1", 1, 1),
            simple_machine("m2", 1, 1),
        ]
    };
    let mut sim = Sim::new(config(ms(), 0.1));
    let a = sim.create_job(triads(1, 1));
    assert_eq!(machine_of(&sim, a).as_deref(), Some("m0"));
    let mut reordered = ms();
    let m1 = reordered.remove(1);
    reordered.push(m1);
    reconfigure(&mut sim, config(reordered, 0.1));
    let names: Vec<String> = sim
        .core
        .list_machines()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, vec!["m0", "m2", "m1"]);
    assert_eq!(peek(&sim, a).state, 3, "a reorder keeps jobs");
    let b = sim.create_job(triads(1, 1));
    assert_eq!(machine_of(&sim, b).as_deref(), Some("m2"));
    let c = sim.create_job(triads(1, 1));
    assert_eq!(machine_of(&sim, c).as_deref(), Some("m1"));
}

#[test]
fn b5_strict_fifo_per_machine() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 1.0));
    let a = sim.create_job(triads(1, 1));
    assert_eq!(peek(&sim, a).state, 3);
    let b = sim.create_job(triads(1, 2)); // cannot fit while a runs
    let c = sim.create_job(triads(1, 1)); // would fit, but b blocks the queue
    assert_eq!(peek(&sim, b).state, 1);
    assert_eq!(peek(&sim, c).state, 1);
    assert_eq!(queue_of(&sim, "m"), vec![b, c]);
    sim.destroy(a, None);
    assert_eq!(peek(&sim, b).state, 1, "held back for seconds_before_free");
    sim.advance(1.0);
    assert_eq!(peek(&sim, b).state, 3);
    assert_eq!(boards_of(&sim, b).len(), 6);
    assert_eq!(peek(&sim, c).state, 1);

    // A job limited to one machine can be overtaken by one that can run elsewhere.
    let mut sim = Sim::new(config(
        vec![simple_machine("m0", 1, 1), simple_machine("m1", 1, 1)],
        0.1,
    ));
    let x = sim.create_job(on_machine(triads(1, 1), "m0"));
    let y = sim.create_job(on_machine(triads(1, 1), "m0")); // queued on m0 only
    let z = sim.create_job(triads(1, 1)); // m0 blocked by y, but m1 free
    assert_eq!(machine_of(&sim, x).as_deref(), Some("m0"));
    assert_eq!(peek(&sim, y).state, 1);
    assert_eq!(machine_of(&sim, z).as_deref(), Some("m1"));
}

#[test]
fn case10_queue_and_release() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 2.0));
    let mut torus = triads(1, 2);
    torus.require_torus = true;
    let j1 = sim.create_job(torus);
    let i = sim.machine_info(j1);
    assert_eq!(i.boards.map(|b| b.len()), Some(6));
    assert_eq!((i.width, i.height), (Some(12), Some(24)));
    let j2 = sim.create(JobRequest::Triads(1, 1));
    let j3 = sim.create(JobRequest::Boards(2));
    assert_eq!((peek(&sim, j2).state, peek(&sim, j3).state), (1, 1));
    sim.destroy(j1, None);
    sim.take_jobs_changed();
    sim.advance(1.9);
    assert_eq!((peek(&sim, j2).state, peek(&sim, j3).state), (1, 1));
    assert!(sim.take_jobs_changed().is_empty());
    sim.advance(0.2);
    assert_eq!((peek(&sim, j2).state, peek(&sim, j3).state), (3, 3));
    assert!(boards_of(&sim, j2).iter().all(|b| b[..2] == [0, 0]));
    assert_eq!(boards_of(&sim, j2).len(), 3);
    assert!(boards_of(&sim, j3).iter().all(|b| b[..2] == [0, 1]));
    let batches = sim.take_jobs_changed();
    assert_eq!(
        batches[0],
        vec![j2, j3],
        "both allocated in one pass: {batches:?}"
    );
}

// ----- retired jobs (case 11) ----------------------------------------------------------------

#[test]
fn case11_max_retired_jobs() {
    let mut c = config(vec![], 0.1);
    c.max_retired_jobs = 3;
    let mut sim = Sim::new(c.clone());
    let ids: Vec<JobId> = (0..4).map(|_| sim.create(JobRequest::OneBoard)).collect();
    let states = |sim: &Sim| ids.iter().map(|&i| peek(sim, i).state).collect::<Vec<_>>();
    assert_eq!(states(&sim), vec![0, 4, 4, 4]);
    c.max_retired_jobs = 1;
    reconfigure(&mut sim, c.clone());
    assert_eq!(states(&sim), vec![0, 0, 0, 4]);
    c.max_retired_jobs = 0;
    reconfigure(&mut sim, c.clone());
    assert_eq!(states(&sim), vec![0, 0, 0, 0]);
    let j = sim.create(JobRequest::OneBoard);
    assert_eq!(peek(&sim, j).state, 0);
    assert_eq!(states(&sim), vec![0, 0, 0, 0]);
    assert!(j > ids[3], "ids keep increasing");
}

#[test]
fn b6_max_retired_zero_never_leaks_boards() {
    let mut c = config(vec![simple_machine("m", 2, 2)], 0.5);
    c.max_retired_jobs = 0;
    // (1,1) at triad (0,0), one board from triad (0,1), four boards on triads (1,0)-(1,1).
    let mut sim = Sim::new(c);
    sim.bmp_auto = false;
    for round in 0..5 {
        let ids: Vec<JobId> = vec![
            sim.create(JobRequest::Triads(1, 1)),
            sim.create(JobRequest::OneBoard),
            sim.create(JobRequest::Boards(4)),
        ];
        for &id in &ids {
            assert_eq!(peek(&sim, id).state, 2, "round {round} job {id}");
        }
        // Destroy while the power-on is still outstanding, so the job is forgotten long
        // before its boards may be released.
        for &id in &ids {
            sim.destroy(id, None);
            assert_eq!(peek(&sim, id).state, 0);
        }
        sim.complete_all_bmp();
        sim.advance(0.6);
        assert!(sim.core.is_idle(), "round {round}: boards leaked");
    }
    // The whole machine is allocatable again.
    sim.bmp_auto = true;
    let mut t = triads(2, 2);
    t.require_torus = true;
    let id = sim.create_job(t);
    assert_eq!(peek(&sim, id).state, 3);
}

// ----- keepalive (case 12) -------------------------------------------------------------------

#[test]
fn case12_keepalive_expiry() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.1));
    let mut c = job(JobRequest::OneBoard);
    c.keepalive_s = Some(0.15);
    let id = sim.create_job(c);
    let mut forever = job(JobRequest::OneBoard);
    forever.keepalive_s = None;
    let f = sim.create_job(forever);
    sim.advance(0.05);
    assert_eq!(peek(&sim, id).state, 3);
    sim.advance(0.35);
    let s = peek(&sim, id);
    assert_eq!((s.state, s.reason.as_deref()), (4, Some("Job timed out.")));
    // No keepalive brings it back.
    sim.cmd(Command::JobKeepalive { job_id: id });
    assert_eq!(peek(&sim, id).state, 4);
    sim.advance(1000.0);
    assert_eq!(peek(&sim, f).state, 3, "no keepalive: never times out");
    assert_eq!(peek(&sim, f).keepalive, None);
}

#[test]
fn case12_keepalive_kept_alive_by_polling() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.1));
    let mut c = job(JobRequest::OneBoard);
    c.keepalive_s = Some(0.1);
    let id = sim.create_job(c);
    for _ in 0..4 {
        sim.advance(0.05);
        sim.cmd(Command::JobKeepalive { job_id: id });
    }
    for _ in 0..4 {
        sim.advance(0.05);
        assert_eq!(sim.state(id).state, 3);
    }
    sim.advance(0.15);
    assert_eq!(peek(&sim, id).reason.as_deref(), Some("Job timed out."));
}

#[test]
fn case12_which_commands_count_as_keepalive() {
    let touching: Vec<fn(JobId) -> Command> = vec![
        |job_id| Command::JobKeepalive { job_id },
        |job_id| Command::GetJobState { job_id },
        |job_id| Command::GetJobMachineInfo { job_id },
        |job_id| Command::PowerOnJobBoards { job_id },
        |job_id| Command::PowerOffJobBoards { job_id },
    ];
    let not_touching: Vec<fn(JobId) -> Command> = vec![
        |_| Command::DestroyJob {
            job_id: 999,
            reason: None,
        },
        |_| Command::ListJobs,
        |job_id| {
            Command::WhereIs(WhereIs::JobChip {
                job_id,
                chip_x: 0,
                chip_y: 0,
            })
        },
        |_| {
            Command::WhereIs(WhereIs::Logical {
                machine: "m".into(),
                x: 0,
                y: 0,
                z: 0,
            })
        },
        |_| Command::ListMachines,
    ];
    for (i, (make, resets)) in touching
        .iter()
        .map(|m| (m, true))
        .chain(not_touching.iter().map(|m| (m, false)))
        .enumerate()
    {
        let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.1));
        let mut c = job(JobRequest::OneBoard);
        c.keepalive_s = Some(1.0);
        let id = sim.create_job(c);
        assert_eq!(peek(&sim, id).keepalivehost.as_deref(), Some(PEER));
        sim.advance(0.8);
        let cmd = make(id);
        command_from(&mut sim, "10.9.9.9", cmd.clone());
        sim.advance(0.5); // 1.3 s after creation, 0.5 s after the command
        let s = peek(&sim, id);
        if resets {
            assert_eq!(s.state, 3, "case {i} {cmd:?} should reset the timer");
            assert_eq!(s.keepalivehost.as_deref(), Some("10.9.9.9"), "{cmd:?}");
            sim.advance(0.6);
            assert_eq!(
                peek(&sim, id).state,
                4,
                "{cmd:?}: expires 1 s after the reset"
            );
        } else {
            assert_eq!(
                (s.state, s.reason.as_deref()),
                (4, Some("Job timed out.")),
                "case {i} {cmd:?} must not reset the timer"
            );
        }
    }
    // keepalivehost of a live job not touched by another peer is unchanged; and
    // job_keepalive of an unknown job is a harmless null.
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.1));
    assert_eq!(
        sim.cmd(Command::JobKeepalive { job_id: 77 }),
        Response::Null
    );
    let id = sim.create(JobRequest::OneBoard);
    command_from(&mut sim, "10.9.9.9", Command::ListJobs);
    assert_eq!(sim.core.list_jobs()[0].keepalivehost, PEER);
    assert_eq!(peek(&sim, id).keepalivehost.as_deref(), Some(PEER));
}

// ----- BMP failure (case 17) -----------------------------------------------------------------

#[test]
fn case17_bmp_failure() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 1.0));
    sim.bmp_auto = false;
    let id = sim.create(JobRequest::OneBoard);
    assert_eq!(peek(&sim, id).state, 2);
    assert_eq!(sim.bmp_pending.len(), 1);
    assert_eq!(sim.bmp_pending[0].address, "10.1.0.0");
    sim.take_jobs_changed();
    let r = sim
        .complete_next_bmp(Some("Requests failed on BMP 10.1.0.0"))
        .unwrap();
    assert!(matches!(r.action, BmpAction::PowerOn { .. }));
    let s = peek(&sim, id);
    assert_eq!(
        (s.state, s.reason.as_deref()),
        (
            4,
            Some("Machine configuration failed. Error: Requests failed on BMP 10.1.0.0")
        )
    );
    assert_eq!(flat_jobs(sim.take_jobs_changed()), set(&[id]));
    // The teardown powers the board off.
    assert_eq!(sim.bmp_pending.len(), 1);
    assert_eq!(
        sim.bmp_pending[0].action,
        BmpAction::PowerOff { boards: vec![0] }
    );
    // The board cannot be reused until the power-off is done and the hold-back passed.
    let other = sim.create(JobRequest::Board(0, 0, 0));
    assert_eq!(peek(&sim, other).state, 1);
    sim.advance(5.0);
    assert_eq!(peek(&sim, other).state, 1, "power-off still outstanding");
    sim.complete_next_bmp(None);
    assert!(sim.take_jobs_changed().iter().all(|b| !b.contains(&id)));
    sim.advance(0.9);
    assert_eq!(
        peek(&sim, other).state,
        1,
        "held back for seconds_before_free"
    );
    sim.advance(0.2);
    assert_eq!(peek(&sim, other).state, 2);
    assert_eq!(boards_of(&sim, other), vec![[0, 0, 0]]);
    // A failing power-off holds the board until the BMP answers (a deliberate difference:
    // the original released it at once, to fail the next job the same way): the power-off
    // is retried every `retry_delay`, and the board is released only once one succeeds.
    sim.destroy(other, Some("bye"));
    sim.complete_next_bmp(None); // the power-on
    sim.complete_next_bmp(Some("Requests failed on BMP 10.1.0.0")); // the power-off
    assert_eq!(peek(&sim, other).reason.as_deref(), Some("bye"));
    assert!(sim.bmp_pending.is_empty());
    let retry_s = sim.core.config().bmp.retry_delay_s;
    sim.advance(retry_s - 0.1);
    assert!(sim.bmp_pending.is_empty() && !sim.core.is_idle());
    let third = sim.create(JobRequest::Board(0, 0, 0));
    assert_eq!(
        peek(&sim, third).state,
        1,
        "a board whose power-off failed was reused"
    );
    sim.advance(0.2);
    assert_eq!(sim.bmp_pending.len(), 1, "the power-off is retried");
    assert_eq!(
        sim.bmp_pending[0].action,
        BmpAction::PowerOff { boards: vec![0] }
    );
    sim.complete_next_bmp(Some("Requests failed on BMP 10.1.0.0")); // still failing
    sim.advance(retry_s + 0.1);
    sim.complete_next_bmp(None); // answered at last
    assert_eq!(
        peek(&sim, third).state,
        1,
        "held back for seconds_before_free"
    );
    sim.advance(1.1);
    assert_eq!(peek(&sim, third).state, 2);
    sim.destroy(third, None);
    sim.complete_all_bmp();
    sim.advance(1.1);
    assert!(sim.core.is_idle());
}

/// Journals written before the hold replay as they were served: under the old rules a
/// failed power-off releases the boards at once (`core::rules`).
#[test]
fn case17_failed_power_off_under_the_old_rules_releases_at_once() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 1.0));
    sim.event(Event::Rules {
        now_us: sim.now_us,
        rules: spalloc::core::rules::Rules::default(),
    });
    assert!(!sim.core.rules().hold_failed_power_off);
    let id = sim.create(JobRequest::OneBoard);
    sim.bmp_auto = false;
    sim.destroy(id, Some("bye"));
    sim.complete_next_bmp(Some("Requests failed on BMP 10.1.0.0")); // the power-off
    assert!(sim.bmp_pending.is_empty());
    sim.advance(1.1);
    assert!(sim.core.is_idle(), "the old rules held the boards");
    assert!(
        sim.bmp_pending.is_empty(),
        "the old rules retried the power-off"
    );
}

#[test]
fn case17_failure_of_one_frame_of_many() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.5));
    sim.bmp_auto = false;
    let id = sim.create(JobRequest::Triads(1, 2));
    assert_eq!(sim.bmp_pending.len(), 2);
    sim.complete_next_bmp(Some("Requests failed on BMP 10.1.0.0"));
    assert_eq!(peek(&sim, id).state, 4);
    // Power-on of frame (0,1) still outstanding, plus two power-offs.
    assert_eq!(sim.bmp_pending.len(), 3);
    let other = sim.create(JobRequest::Triads(1, 1));
    sim.complete_next_bmp(None);
    sim.complete_next_bmp(None);
    sim.advance(2.0);
    assert_eq!(
        peek(&sim, other).state,
        1,
        "one power-off is still outstanding"
    );
    sim.complete_next_bmp(None);
    sim.advance(0.4);
    assert_eq!(peek(&sim, other).state, 1);
    sim.advance(0.2);
    assert_eq!(peek(&sim, other).state, 2);
}

// ----- config reload (case 18) ---------------------------------------------------------------

#[test]
fn case18_config_reload() {
    let m = || simple_machine("m", 1, 2);
    let n = || {
        machine_with(
            "n",
            1,
            1,
            &[],
            &[],
            |b| [b.x, b.y, b.z],
            |c, f| format!("10.5.{c}.{f}"),
            |b| format!("12.{}.{}.{}", b.x, b.y, b.z),
        )
    };
    let mut sim = Sim::new(config(vec![m(), n()], 0.1));
    assert_eq!(
        flat_machines(take_machines_changed(&mut sim)),
        set(&["m".to_string(), "n".to_string()])
    );
    let a = sim.create(JobRequest::Triads(1, 1));
    let b = sim.create_job(on_machine(triads(1, 1), "n"));
    let q = sim.create_job(on_machine(triads(1, 1), "n")); // queued on n only
    assert_eq!(machine_of(&sim, a).as_deref(), Some("m"));
    assert_eq!(machine_of(&sim, b).as_deref(), Some("n"));
    assert_eq!(peek(&sim, q).state, 1);
    take_machines_changed(&mut sim);
    sim.take_jobs_changed();

    // Same config: nothing happens.
    reconfigure(&mut sim, config(vec![m(), n()], 0.1));
    assert!(take_machines_changed(&mut sim).is_empty());
    assert!(sim.take_jobs_changed().is_empty());

    // Minor change: tags and dead links. Jobs kept.
    let mut m2 = with_tags(m(), &["default", "extra"]);
    m2.dead_links = vec![(Board::new(0, 0, 0), Link::North)];
    reconfigure(&mut sim, config(vec![m2.clone(), n()], 0.1));
    assert_eq!(
        flat_machines(take_machines_changed(&mut sim)),
        set(&["m".to_string()])
    );
    assert_eq!(peek(&sim, a).state, 3);
    assert_eq!(peek(&sim, b).state, 3);
    assert_eq!(peek(&sim, q).state, 1);
    let lm = sim.core.list_machines();
    assert_eq!(lm[0].tags, vec!["default".to_string(), "extra".to_string()]);
    assert_eq!(lm[0].dead_links, vec![[0, 0, 0, 2]]);
    assert!(sim
        .bmp_log
        .iter()
        .all(|r| matches!(r.action, BmpAction::PowerOn { .. })));

    // Major change: an Ethernet IP of n changes. Its job is destroyed; the queued job
    // stays queued (it can still run there) and then gets the new machine.
    let mut n2 = n();
    n2.boards[0].ip = "12.9.9.9".to_string();
    reconfigure(&mut sim, config(vec![m2.clone(), n2.clone()], 0.1));
    assert_eq!(
        flat_machines(take_machines_changed(&mut sim)),
        set(&["n".to_string()])
    );
    let s = peek(&sim, b);
    assert_eq!(
        (s.state, s.reason.as_deref()),
        (4, Some("Machine removed."))
    );
    assert_eq!(peek(&sim, a).state, 3);
    assert_eq!(peek(&sim, q).state, 3, "the rebuilt machine is empty");
    assert_eq!(machine_of(&sim, q).as_deref(), Some("n"));
    assert_eq!(sim.machine_info(q).connections.unwrap()[0].1, "12.9.9.9");

    // Removing a machine: its jobs are destroyed, queued jobs that only it could run are
    // cancelled.
    let q2 = sim.create_job(on_machine(triads(1, 1), "n"));
    assert_eq!(peek(&sim, q2).state, 1);
    take_machines_changed(&mut sim);
    reconfigure(&mut sim, config(vec![m2.clone()], 0.1));
    assert_eq!(
        flat_machines(take_machines_changed(&mut sim)),
        set(&["n".to_string()])
    );
    assert_eq!(peek(&sim, q).reason.as_deref(), Some("Machine removed."));
    let s = peek(&sim, q2);
    assert_eq!(
        (s.state, s.reason.as_deref()),
        (4, Some("Cancelled: No suitable machines available."))
    );
    assert_eq!(sim.core.list_machines().len(), 1);

    // Adding one: queued jobs may now start on it.
    let q3 = sim.create(JobRequest::Triads(1, 2)); // m has a running 1x1
    assert_eq!(peek(&sim, q3).state, 1);
    reconfigure(
        &mut sim,
        config(vec![m2.clone(), simple_machine("big", 1, 2)], 0.1),
    );
    assert_eq!(
        flat_machines(take_machines_changed(&mut sim)),
        set(&["big".to_string()])
    );
    assert_eq!(machine_of(&sim, q3).as_deref(), Some("big"));
    let names: Vec<String> = sim
        .core
        .list_machines()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, vec!["m", "big"]);

    // A minor change that makes a queued job impossible cancels it.
    let q4 = sim.create_job(tagged(triads(1, 2), &["extra"]));
    assert_eq!(peek(&sim, q4).state, 1);
    reconfigure(
        &mut sim,
        config(vec![m(), simple_machine("big", 1, 2)], 0.1),
    );
    let s = peek(&sim, q4);
    assert_eq!(
        (s.state, s.reason.as_deref()),
        (4, Some("Cancelled: No suitable machines available."))
    );
    assert_eq!(peek(&sim, a).state, 3);
    // Removing everything.
    reconfigure(&mut sim, config(vec![], 0.1));
    assert_eq!(peek(&sim, a).reason.as_deref(), Some("Machine removed."));
    assert_eq!(peek(&sim, q3).reason.as_deref(), Some("Machine removed."));
    assert!(sim.core.live_job_ids().is_empty());
    sim.complete_all_bmp();
    assert!(sim.core.is_idle());
}

#[test]
fn case18_queue_survives_atomic_machine_swap() {
    // test_atomic_machine_change: remove m0 and add m1 in one configuration.
    let mut sim = Sim::new(config(vec![simple_machine("m0", 1, 1)], 0.1));
    let ids: Vec<JobId> = (0..4)
        .map(|_| sim.create(JobRequest::Triads(1, 1)))
        .collect();
    assert_eq!(peek(&sim, ids[1]).state, 1);
    reconfigure(&mut sim, config(vec![simple_machine("m1", 2, 1)], 0.1));
    assert_eq!(
        peek(&sim, ids[0]).reason.as_deref(),
        Some("Machine removed.")
    );
    assert_eq!(machine_of(&sim, ids[1]).as_deref(), Some("m1"));
    assert_eq!(machine_of(&sim, ids[2]).as_deref(), Some("m1"));
    assert_eq!(peek(&sim, ids[3]).state, 1);
}

// ----- destroy reasons -----------------------------------------------------------------------

#[test]
fn destroy_reasons() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.1));
    sim.bmp_auto = false;
    let j1 = sim.create(JobRequest::Triads(1, 2));
    let j2 = sim.create(JobRequest::Triads(1, 2));
    let j3 = sim.create(JobRequest::Triads(1, 2));
    let before = sim.bmp_log.len();
    sim.destroy(j2, Some("Because."));
    let s = peek(&sim, j2);
    assert_eq!(
        (s.state, s.reason.as_deref()),
        (4, Some("Cancelled: Because."))
    );
    assert_eq!(
        (s.power, s.keepalive, s.start_time, s.keepalivehost),
        (None, None, None, None)
    );
    sim.destroy(j3, None);
    assert_eq!(peek(&sim, j3).reason.as_deref(), Some("Cancelled: "));
    assert_eq!(sim.bmp_log.len(), before, "cancelling powers nothing down");
    sim.complete_all_bmp();
    sim.destroy(j1, Some("Because you too."));
    assert_eq!(peek(&sim, j1).reason.as_deref(), Some("Because you too."));
    let offs: Vec<&BmpRequest> = sim.bmp_log[before..].iter().collect();
    assert_eq!(offs.len(), 2);
    for r in offs {
        assert_eq!(
            r.action,
            BmpAction::PowerOff {
                boards: vec![0, 1, 2]
            }
        );
    }
    sim.complete_all_bmp();
    sim.advance(0.2);
    let j4 = sim.create(JobRequest::OneBoard);
    sim.destroy(j4, None);
    let s = peek(&sim, j4);
    assert_eq!((s.state, s.reason), (4, None));
    // Unknown or already destroyed: no-op.
    sim.destroy(1234, Some("x"));
    sim.destroy(j4, Some("again"));
    assert_eq!(peek(&sim, j4).reason, None);
    assert_eq!(peek(&sim, 1234).state, 0);
}

// ----- BMP requests --------------------------------------------------------------------------

/// The periphery of a set of boards on a w x h machine, computed from `board_down_link`.
fn periphery(boards: &[Board], w: u32, h: u32) -> BTreeSet<(Board, Link)> {
    let set: BTreeSet<Board> = boards.iter().copied().collect();
    boards
        .iter()
        .flat_map(|&b| Link::ALL.iter().map(move |&l| (b, l)))
        .filter(|&(b, l)| !set.contains(&board_down_link(b, l, w, h).0))
        .collect()
}

fn power_on_parts(r: &BmpRequest) -> (Vec<u32>, Vec<(u32, Link)>) {
    match &r.action {
        BmpAction::PowerOn { boards, stop_links } => (boards.clone(), stop_links.clone()),
        other => panic!("expected a power-on, got {other:?}"),
    }
}

#[test]
fn bmp_requests_for_allocation_power_and_destroy() {
    // A (1,1) job on the 1x2 machine: one frame, all three boards, the links leaving triad
    // (0,0) stopped (test_create_job).
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.1));
    sim.bmp_auto = false;
    let id = sim.create(JobRequest::Triads(1, 1));
    assert_eq!(sim.bmp_pending.len(), 1);
    let r = sim.bmp_pending[0].clone();
    assert_eq!(
        (r.job_id, r.machine.as_str(), r.cabinet, r.frame),
        (id, "m", 0, 0)
    );
    assert_eq!(r.address, "10.1.0.0");
    let (boards, links) = power_on_parts(&r);
    assert_eq!(boards, vec![0, 1, 2]);
    let want: BTreeSet<(u32, Link)> = (0..3)
        .flat_map(|z| Link::ALL.iter().map(move |&l| (z, l)))
        .filter(|&(z, l)| {
            let t = board_down_link(Board::new(0, 0, z), l, 1, 2).0;
            (t.x, t.y) != (0, 0)
        })
        .collect();
    assert_eq!(links.len(), want.len(), "no duplicate stop links");
    assert_eq!(links.iter().copied().collect::<BTreeSet<_>>(), want);
    assert_eq!(peek(&sim, id).state, 2);
    sim.complete_all_bmp();
    assert_eq!(peek(&sim, id).state, 3);

    // power_off: PowerOff without links; power_on again: PowerOn with the links (a reset).
    sim.cmd(Command::PowerOffJobBoards { job_id: id });
    let s = peek(&sim, id);
    assert_eq!((s.state, s.power), (2, Some(false)));
    assert_eq!(sim.bmp_pending.len(), 1);
    assert_eq!(
        sim.bmp_pending[0].action,
        BmpAction::PowerOff {
            boards: vec![0, 1, 2]
        }
    );
    sim.complete_all_bmp();
    let s = peek(&sim, id);
    assert_eq!((s.state, s.power), (3, Some(false)));
    sim.cmd(Command::PowerOnJobBoards { job_id: id });
    assert_eq!(sim.bmp_pending.len(), 1);
    let (boards, links2) = power_on_parts(&sim.bmp_pending[0]);
    assert_eq!(boards, vec![0, 1, 2]);
    assert_eq!(links2, links);
    sim.complete_all_bmp();
    let s = peek(&sim, id);
    assert_eq!((s.state, s.power), (3, Some(true)));

    // Power commands on queued and unknown jobs do nothing (but answer null).
    let queued = sim.create(JobRequest::Triads(1, 2));
    assert_eq!(peek(&sim, queued).state, 1);
    let n = sim.bmp_log.len();
    for job_id in [queued, 1234] {
        assert_eq!(
            sim.cmd(Command::PowerOnJobBoards { job_id }),
            Response::Null
        );
        assert_eq!(
            sim.cmd(Command::PowerOffJobBoards { job_id }),
            Response::Null
        );
    }
    assert_eq!(sim.bmp_log.len(), n);
    assert_eq!(peek(&sim, queued).state, 1);
    assert_eq!(peek(&sim, queued).power, None);

    // Destroy: PowerOff of the job's boards.
    sim.destroy(id, None);
    assert_eq!(sim.bmp_pending.len(), 1);
    assert_eq!(
        sim.bmp_pending[0].action,
        BmpAction::PowerOff {
            boards: vec![0, 1, 2]
        }
    );
}

#[test]
fn bmp_requests_one_per_frame_with_frame_periphery() {
    // A 2x1 block on the 4x2 identity machine spans frames (cabinet 0, frame 0) and (1, 0).
    let mut sim = Sim::new(config(vec![big_m()], 0.1));
    sim.bmp_auto = false;
    let id = sim.create(JobRequest::Triads(2, 1));
    let boards: Vec<Board> = boards_of(&sim, id)
        .into_iter()
        .map(|[x, y, z]| Board::new(x, y, z))
        .collect();
    assert_eq!(boards.len(), 6);
    let per = periphery(&boards, 4, 2);
    let reqs: Vec<BmpRequest> = sim.bmp_pending.iter().cloned().collect();
    assert_eq!(reqs.len(), 2);
    let mut seen = BTreeSet::new();
    for r in &reqs {
        assert_eq!(r.address, format!("10.1.{}.{}", r.cabinet, r.frame));
        let (bs, links) = power_on_parts(r);
        assert_eq!(bs, vec![0, 1, 2]);
        for (n, l) in links {
            // Identity map: cabinet = x, frame = y, board = z.
            assert!(
                seen.insert((Board::new(r.cabinet, r.frame, n), l)),
                "duplicate link"
            );
        }
    }
    let frames: BTreeSet<(u32, u32)> = reqs.iter().map(|r| (r.cabinet, r.frame)).collect();
    assert_eq!(frames, set(&[(0, 0), (1, 0)]));
    assert_eq!(seen, per);
    // State 2 until every frame is done.
    sim.complete_next_bmp(None);
    assert_eq!(peek(&sim, id).state, 2);
    sim.complete_next_bmp(None);
    assert_eq!(peek(&sim, id).state, 3);

    // A full-machine torus has no periphery at all.
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.1));
    sim.bmp_auto = false;
    let mut t = triads(1, 2);
    t.require_torus = true;
    sim.create_job(t);
    assert_eq!(sim.bmp_pending.len(), 2);
    for r in sim.bmp_pending.iter() {
        assert_eq!(power_on_parts(r), (vec![0, 1, 2], vec![]));
    }
    // A single board stops all six of its links.
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.1));
    sim.bmp_auto = false;
    sim.create(JobRequest::OneBoard);
    let (bs, links) = power_on_parts(&sim.bmp_pending[0]);
    assert_eq!(bs, vec![0]);
    assert_eq!(links, Link::ALL.iter().map(|&l| (0, l)).collect::<Vec<_>>());
}

#[test]
fn destroy_while_powering_on_frees_after_all_requests() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.0));
    sim.bmp_auto = false;
    let id = sim.create(JobRequest::Triads(1, 2));
    assert_eq!(sim.bmp_pending.len(), 2);
    sim.complete_next_bmp(None); // one frame powered on
    sim.destroy(id, None);
    assert_eq!(peek(&sim, id).state, 4);
    assert_eq!(sim.bmp_pending.len(), 3); // a power-on and two power-offs
    let next = sim.create(JobRequest::Triads(1, 1));
    sim.take_jobs_changed();
    for left in (1..=3).rev() {
        sim.advance(1.0);
        assert_eq!(
            peek(&sim, next).state,
            1,
            "{left} requests still outstanding"
        );
        let jc = sim.take_jobs_changed();
        sim.complete_next_bmp(None);
        // The destroyed job is never reported again by a BMP completion.
        assert!(jc
            .iter()
            .chain(sim.take_jobs_changed().iter())
            .all(|b| !b.contains(&id)));
    }
    sim.advance(0.0);
    assert_eq!(peek(&sim, next).state, 2);
}

// ----- notifications (§A "A job is marked changed on…") --------------------------------------

#[test]
fn changed_jobs() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.1));
    sim.bmp_auto = false;
    sim.take_jobs_changed();
    // Allocation (pre-power-on).
    let j0 = sim.create(JobRequest::Triads(1, 2));
    assert_eq!(sim.take_jobs_changed(), vec![vec![j0]]);
    // Power-on completes: only the last completion marks the job.
    sim.complete_next_bmp(None);
    assert!(sim.take_jobs_changed().is_empty());
    sim.complete_next_bmp(None);
    assert_eq!(sim.take_jobs_changed(), vec![vec![j0]]);
    // Queued.
    let j1 = sim.create(JobRequest::OneBoard);
    assert_eq!(sim.take_jobs_changed(), vec![vec![j1]]);
    // Destroyed; another job allocated once the boards come back.
    sim.destroy(j0, None);
    assert_eq!(sim.take_jobs_changed(), vec![vec![j0]]);
    sim.complete_all_bmp(); // the power-offs
    assert!(sim.take_jobs_changed().is_empty());
    sim.advance(0.2);
    assert_eq!(flat_jobs(sim.take_jobs_changed()), set(&[j1]));
    assert_eq!(peek(&sim, j1).state, 2);
    sim.complete_all_bmp();
    assert_eq!(sim.take_jobs_changed(), vec![vec![j1]]);
    // Power control.
    sim.cmd(Command::PowerOffJobBoards { job_id: j1 });
    assert_eq!(sim.take_jobs_changed(), vec![vec![j1]]);
    sim.complete_all_bmp();
    assert_eq!(sim.take_jobs_changed(), vec![vec![j1]]);
    // Impossible job: changed even though it is cancelled at once.
    let j2 = sim.create(JobRequest::Triads(2, 3));
    assert_eq!(sim.take_jobs_changed(), vec![vec![j2]]);
    assert_eq!(peek(&sim, j2).state, 4);
    // Reads do not mark anything.
    sim.state(j1);
    sim.machine_info(j1);
    sim.cmd(Command::JobKeepalive { job_id: j1 });
    assert!(sim.take_jobs_changed().is_empty());
}

#[test]
fn changed_machines() {
    let mut sim = Sim::new(config(
        vec![simple_machine("m0", 1, 2), simple_machine("m1", 1, 2)],
        0.1,
    ));
    assert_eq!(
        take_machines_changed(&mut sim),
        vec![vec!["m0".to_string(), "m1".to_string()]]
    );
    let m0_foo = with_tags(simple_machine("m0", 1, 2), &["foo"]);
    reconfigure(
        &mut sim,
        config(vec![m0_foo.clone(), simple_machine("m1", 1, 2)], 0.1),
    );
    assert_eq!(
        take_machines_changed(&mut sim),
        vec![vec!["m0".to_string()]]
    );
    reconfigure(
        &mut sim,
        config(vec![m0_foo.clone(), simple_machine("m1", 2, 2)], 0.1),
    );
    assert_eq!(
        take_machines_changed(&mut sim),
        vec![vec!["m1".to_string()]]
    );
    reconfigure(&mut sim, config(vec![simple_machine("m1", 2, 2)], 0.1));
    assert_eq!(
        take_machines_changed(&mut sim),
        vec![vec!["m0".to_string()]]
    );
    // Allocation.
    let id = sim.create(JobRequest::OneBoard);
    assert_eq!(
        take_machines_changed(&mut sim),
        vec![vec!["m1".to_string()]]
    );
    // Power cycling does not change the machine.
    sim.cmd(Command::PowerOffJobBoards { job_id: id });
    sim.cmd(Command::PowerOnJobBoards { job_id: id });
    assert!(take_machines_changed(&mut sim).is_empty());
    // Destroying (at destroy time, not at release).
    sim.destroy(id, None);
    assert_eq!(
        take_machines_changed(&mut sim),
        vec![vec!["m1".to_string()]]
    );
    sim.advance(0.2);
    assert!(take_machines_changed(&mut sim).is_empty());
}

#[test]
fn list_jobs_shape() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.1));
    let a = sim.create(JobRequest::OneBoard);
    let mut t = triads(1, 2);
    t.require_torus = true;
    t.owner = "you".into();
    t.keepalive_s = None;
    t.kwargs_json = r#"{"require_torus": true}"#.into();
    let b = sim.create_job(t);
    let jobs = sim.core.list_jobs();
    assert_eq!(jobs.len(), 2);
    assert_eq!((jobs[0].job_id, jobs[1].job_id), (a, b));
    assert_eq!(
        (jobs[0].owner.as_str(), jobs[1].owner.as_str()),
        ("me", "you")
    );
    assert_eq!((jobs[0].keepalive, jobs[1].keepalive), (Some(60.0), None));
    assert_eq!((jobs[0].state, jobs[1].state), (3, 1));
    assert_eq!((jobs[0].power, jobs[1].power), (Some(true), None));
    assert_eq!(jobs[1].args_json, "[1, 2]");
    assert_eq!(jobs[1].kwargs_json, r#"{"require_torus": true}"#);
    assert_eq!(jobs[0].allocated_machine_name.as_deref(), Some("m"));
    assert_eq!(jobs[1].allocated_machine_name, None);
    assert_eq!(jobs[0].boards, Some(vec![[0, 0, 0]]));
    assert_eq!(jobs[1].boards, None);
    let t0 = sim.now_us as f64 / 1e6;
    assert!((jobs[0].start_time - t0).abs() < 1e-6);
}

// ----- dead boards changed by a reload (found by the property tests) ---------------------------

fn with_dead(mut m: MachineConfig, dead: &[Board]) -> MachineConfig {
    m.boards.retain(|b| !dead.contains(&b.logical));
    m.dead_boards = dead.to_vec();
    m.dead_boards.sort();
    m
}

#[test]
fn reload_marking_a_board_dead_is_a_minor_change() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 0.1));
    let a = sim.create(JobRequest::Triads(1, 1));
    take_machines_changed(&mut sim);
    // Our configuration cannot list a dead board, so marking one dead drops its entry; that
    // is still only a dead-board change (§B.5): running jobs are kept.
    let dead = [Board::new(0, 1, 2)];
    reconfigure(
        &mut sim,
        config(vec![with_dead(simple_machine("m", 1, 2), &dead)], 0.1),
    );
    assert_eq!(take_machines_changed(&mut sim), vec![vec!["m".to_string()]]);
    assert_eq!(peek(&sim, a).state, 3);
    assert_eq!(sim.core.list_machines()[0].dead_boards, vec![[0, 1, 2]]);
    // And back to life, with its location and IP known again.
    reconfigure(&mut sim, config(vec![simple_machine("m", 1, 2)], 0.1));
    assert_eq!(peek(&sim, a).state, 3);
    let b = sim.create(JobRequest::Board(0, 1, 2));
    let i = sim.machine_info(b);
    assert_eq!(i.connections, Some(vec![((0, 0), "11.0.1.2".to_string())]));
    assert_eq!(
        sim.bmp_log.last().map(|r| r.action.clone()),
        Some(BmpAction::PowerOn {
            boards: vec![2],
            stop_links: Link::ALL.iter().map(|&l| (2, l)).collect()
        })
    );
}

/// A board marked dead by a reload while a job holds it is powered off with the job's other
/// boards when the job ends (found by the whole-server simulation: the reload dropped its
/// location, so the job's power-off left it out and it stayed on). Journals written before
/// replay as they were served: under the old rules it is left out.
#[test]
fn a_board_marked_dead_while_held_is_powered_off_with_its_job() {
    for current in [true, false] {
        let mut sim = Sim::new(config(vec![simple_machine("m", 1, 1)], 0.0));
        if !current {
            sim.event(Event::Rules {
                now_us: sim.now_us,
                rules: spalloc::core::rules::Rules::default(),
            });
        }
        let a = sim.create(JobRequest::Triads(1, 1));
        assert_eq!(peek(&sim, a).state, 3);
        reconfigure(
            &mut sim,
            config(
                vec![with_dead(simple_machine("m", 1, 1), &[Board::new(0, 0, 2)])],
                0.0,
            ),
        );
        assert_eq!(peek(&sim, a).state, 3, "the job keeps its boards");
        // It is dead to everything else: no location, no board at its position.
        assert_eq!(
            sim.core.query(&Command::GetBoardPosition {
                machine: "m".into(),
                x: 0,
                y: 0,
                z: 2
            }),
            Response::Triple(None)
        );
        sim.destroy(a, None);
        let off = sim.bmp_log.last().map(|r| r.action.clone());
        let boards = if current { vec![0, 1, 2] } else { vec![0, 1] };
        assert_eq!(
            off,
            Some(BmpAction::PowerOff { boards }),
            "current rules: {current}"
        );
    }
}

#[test]
fn single_boards_follow_dead_board_changes() {
    let m = || simple_machine("m", 1, 1);
    let mut sim = Sim::new(config(vec![m()], 0.0));
    let a = sim.create(JobRequest::OneBoard);
    assert_eq!(boards_of(&sim, a), vec![[0, 0, 0]]);
    // (0,0,1) dies while free: it is not handed out.
    reconfigure(
        &mut sim,
        config(vec![with_dead(m(), &[Board::new(0, 0, 1)])], 0.0),
    );
    let b = sim.create(JobRequest::OneBoard);
    assert_eq!(boards_of(&sim, b), vec![[0, 0, 2]]);
    // (0,0,0) dies while allocated and (0,0,1) comes back: only (0,0,1) is free.
    reconfigure(
        &mut sim,
        config(vec![with_dead(m(), &[Board::new(0, 0, 0)])], 0.0),
    );
    assert_eq!(peek(&sim, a).state, 3);
    let c = sim.create(JobRequest::OneBoard);
    assert_eq!(boards_of(&sim, c), vec![[0, 0, 1]]);
    let d = sim.create(JobRequest::OneBoard);
    assert_eq!(peek(&sim, d).state, 1);
    // (0,0,0) comes back while still allocated: it is not free either.
    reconfigure(&mut sim, config(vec![m()], 0.0));
    assert_eq!(peek(&sim, d).state, 1);
    for id in [a, b, c, d] {
        sim.destroy(id, None);
    }
    sim.advance(0.1);
    assert!(sim.core.is_idle(), "the triad went back to the pack tree");
    let mut t = triads(1, 1);
    t.require_torus = true;
    let e = sim.create_job(t);
    assert_eq!(boards_of(&sim, e).len(), 3);
}
