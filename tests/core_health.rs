//! Board health in the core: automatic drains after failures in consecutive jobs, recovery
//! of a job whose boards failed, problem reports, admin drains and the emergency stop; and
//! that a drained board is never given to a new job, whatever happens around it.

use quickcheck::{QuickCheck, TestResult};
use spalloc::core::coordinates::Board;
use spalloc::core::rules::Rules;
use spalloc::core::sim::{config, job, simple_machine, Sim, PEER};
use spalloc::core::*;

fn sim(width: u32, height: u32) -> Sim {
    let mut sim = Sim::new(config(vec![simple_machine("m", width, height)], 0.0));
    sim.bmp_auto = false;
    sim
}

/// Complete the oldest pending request with a failure blamed on `failed` (board numbers in
/// its frame); returns it.
fn fail_next(sim: &mut Sim, failed: &[u32]) -> BmpRequest {
    let r = sim.bmp_pending.pop_front().expect("a pending request");
    sim.event(Event::BmpDone {
        now_us: sim.now_us,
        request_id: r.id,
        failure: Some(format!("Requests failed on BMP {}", r.address)),
        failed_boards: failed.to_vec(),
        bmp_unreachable: false,
    });
    r
}

/// Complete every pending request (and those this issues) successfully.
fn settle(sim: &mut Sim) {
    while sim.complete_next_bmp(None).is_some() {}
}

fn admin(sim: &mut Sim, action: AdminAction) -> Response {
    sim.event(Event::Admin {
        now_us: sim.now_us,
        actor: "ann".into(),
        action,
    })
    .expect("admin events answer")
}

fn boards_of(sim: &mut Sim, id: JobId) -> Vec<[u32; 3]> {
    sim.core.job_machine_info(id).boards.unwrap_or_default()
}

fn dead(sim: &Sim) -> Vec<[u32; 3]> {
    sim.core.list_machines()[0].dead_boards.clone()
}

fn logical(x: u32, y: u32, z: u32) -> BoardRef {
    BoardRef::Logical {
        machine: "m".into(),
        x,
        y,
        z,
    }
}

#[test]
fn a_job_whose_board_fails_becomes_ready_on_other_boards() {
    let mut sim = sim(1, 2);
    let id = sim.create(JobRequest::Triads(1, 1));
    assert_eq!(
        boards_of(&mut sim, id),
        vec![[0, 0, 0], [0, 0, 1], [0, 0, 2]]
    );
    let failed = fail_next(&mut sim, &[1]);
    assert!(matches!(failed.action, BmpAction::PowerOn { .. }));
    // Given the other triad at once (the failed one is still held while it powers off).
    assert_eq!(
        boards_of(&mut sim, id),
        vec![[0, 1, 0], [0, 1, 1], [0, 1, 2]]
    );
    settle(&mut sim);
    let s = sim.core.job_state(id);
    assert_eq!((s.state, s.power), (3, Some(true)), "{:?}", sim.log);
    // One failure is not enough to drain; the old triad is free again.
    assert!(dead(&sim).is_empty());
    let other = sim.create(JobRequest::Triads(1, 1));
    assert_eq!(
        boards_of(&mut sim, other),
        vec![[0, 0, 0], [0, 0, 1], [0, 0, 2]]
    );
}

/// A power change asked for while the power-on was in flight (coalesced, issue 16) is for
/// the boards that failed: the job moved to new boards is powered on as a new job is, and
/// nothing is left waiting to be issued for a job that, meanwhile, holds no boards.
#[test]
fn a_coalesced_power_change_does_not_outlive_the_boards_it_was_for() {
    let mut sim = sim(1, 2);
    let _other = sim.create(JobRequest::Triads(1, 1));
    settle(&mut sim);
    let id = sim.create(JobRequest::Triads(1, 1));
    assert_eq!(
        boards_of(&mut sim, id),
        vec![[0, 1, 0], [0, 1, 1], [0, 1, 2]]
    );
    sim.cmd(Command::PowerOffJobBoards { job_id: id });
    fail_next(&mut sim, &[1]);
    // Back in the queue (the only other triad is taken), with no change left to issue.
    assert_eq!(sim.core.job_state(id).state, 1);
    sim.advance(5.0);
    settle(&mut sim);
    sim.advance(5.0);
    sim.core.check_invariants().unwrap();
    // (It waited for a triad: here the one it gave up, once powered off.)
    let s = sim.core.job_state(id);
    assert_eq!((s.state, s.power), (3, Some(true)), "{:?}", sim.log);
    sim.core.check_invariants().unwrap();
}

/// A job that had to wait after a failed power-on can be given the same boards back; if the
/// board fails again that is a second failure (a new allocation), so the board is drained
/// and the job becomes ready without it.
#[test]
fn a_job_given_its_failing_board_back_drains_it_and_becomes_ready_without_it() {
    let mut sim = sim(1, 2);
    let _other = sim.create(JobRequest::Triads(1, 1));
    settle(&mut sim);
    let id = sim.create(JobRequest::Triads(1, 1));
    fail_next(&mut sim, &[1]);
    // Waits; its old triad is powered off, released, and given back to it.
    settle_offs(&mut sim);
    assert_eq!(
        boards_of(&mut sim, id),
        vec![[0, 1, 0], [0, 1, 1], [0, 1, 2]],
        "{:?}",
        sim.log
    );
    fail_next(&mut sim, &[1]);
    assert_eq!(dead(&sim), vec![[0, 1, 1]], "{:?}", sim.log);
    // Ready on the rest of that triad (the drained board left out), not destroyed.
    settle(&mut sim);
    let s = sim.core.job_state(id);
    assert_eq!((s.state, s.power), (3, Some(true)), "{:?}", sim.log);
    assert_eq!(boards_of(&mut sim, id), vec![[0, 1, 0], [0, 1, 2]]);
    sim.core.check_invariants().unwrap();
}

#[test]
fn a_board_failing_in_two_consecutive_jobs_is_drained_until_undrained() {
    let mut sim = sim(1, 2);
    let a = sim.create(JobRequest::Triads(1, 1));
    fail_next(&mut sim, &[1]); // job a's (0, 0) triad: board (0, 0, 1) fails once
    settle(&mut sim);
    assert_eq!(sim.core.job_state(a).state, 3);
    let b = sim.create(JobRequest::Triads(1, 1));
    assert_eq!(boards_of(&mut sim, b)[1], [0, 0, 1]);
    fail_next(&mut sim, &[1]); // and again in job b
    assert_eq!(dead(&sim), vec![[0, 0, 1]]);
    let rec = sim.core.health().board("m", Board::new(0, 0, 1)).unwrap();
    let drain = rec.drain.as_ref().unwrap();
    assert_eq!(drain.actor, spalloc::core::health::DrainActor::Automatic);
    assert_eq!(
        drain.reason,
        format!("power-on failed in jobs {a} and {b}: Requests failed on BMP 10.1.0.0")
    );
    settle(&mut sim);
    // Job b waited for its old triad to power off and got it again, without the drained
    // board (a job tolerates dead boards unless it says otherwise).
    assert_eq!(sim.core.job_state(b).state, 3);
    assert_eq!(boards_of(&mut sim, b), vec![[0, 0, 0], [0, 0, 2]]);
    sim.destroy(a, None);
    sim.destroy(b, None);
    settle(&mut sim);
    // A drained board is never allocated: the specific board is impossible now.
    let c = sim.create(JobRequest::Board(0, 0, 1));
    assert_eq!(sim.core.job_state(c).state, 4);
    let d = sim.create(JobRequest::Board(0, 0, 2));
    settle(&mut sim);
    assert_eq!(boards_of(&mut sim, d), vec![[0, 0, 2]]);
    // Undrained: back in service, failures forgotten.
    assert!(matches!(
        admin(
            &mut sim,
            AdminAction::Undrain {
                board: logical(0, 0, 1)
            }
        ),
        Response::Json(_)
    ));
    assert!(dead(&sim).is_empty());
    assert!(sim.core.health().board("m", Board::new(0, 0, 1)).is_none());
    let e = sim.create(JobRequest::Board(0, 0, 1));
    settle(&mut sim);
    assert_eq!(boards_of(&mut sim, e), vec![[0, 0, 1]]);
}

#[test]
fn recovery_gives_up_after_its_tries_with_the_reason() {
    let mut sim = sim(1, 2);
    let id = sim.create(JobRequest::Triads(1, 1));
    // Fails on triad (0, 0), then on (0, 1), then on (0, 0) again: two re-allocations.
    for _ in 0..2 {
        fail_next(&mut sim, &[1]);
        settle_offs(&mut sim);
    }
    fail_next(&mut sim, &[1]);
    let s = sim.core.job_state(id);
    assert_eq!(s.state, 4, "{:?}", sim.log);
    assert_eq!(
        s.reason.as_deref(),
        Some("Machine configuration failed. Error: Requests failed on BMP 10.1.0.0 (after 2 re-allocations)")
    );
    assert_eq!(sim.core.end_reason(id), Some(EndReason::BoardFailure));
    // (0, 0, 1) failed in two allocations of the job: drained; (0, 1, 1) once: not.
    assert_eq!(dead(&sim), vec![[0, 0, 1]]);
}

/// A job asking for exactly one board that fails twice (the second time after being given
/// it again) is destroyed once the board is drained: no other board can ever satisfy it.
#[test]
fn a_job_for_exactly_a_failing_board_ends_when_the_board_is_drained() {
    let mut sim = sim(1, 1);
    let id = sim.create(JobRequest::Board(0, 0, 0));
    fail_next(&mut sim, &[0]);
    settle_offs(&mut sim);
    fail_next(&mut sim, &[0]);
    let s = sim.core.job_state(id);
    assert_eq!(s.state, 4, "{:?}", sim.log);
    assert!(
        s.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("Machine configuration failed. Error: ")),
        "{s:?}"
    );
    assert_eq!(sim.core.end_reason(id), Some(EndReason::BoardFailure));
    assert_eq!(dead(&sim), vec![[0, 0, 0]]);
}

/// Complete pending power-offs only (so a re-queued job's next power-on stays pending).
fn settle_offs(sim: &mut Sim) {
    while let Some(i) = sim
        .bmp_pending
        .iter()
        .position(|r| matches!(r.action, BmpAction::PowerOff { .. }))
    {
        let r = sim.bmp_pending.remove(i).unwrap();
        sim.bmp_pending.push_front(r);
        sim.complete_next_bmp(None);
    }
}

#[test]
fn a_failure_nobody_is_blamed_for_destroys_the_job_as_before() {
    let mut sim = sim(1, 2);
    let id = sim.create(JobRequest::Triads(1, 1));
    fail_next(&mut sim, &[]);
    assert_eq!(sim.core.job_state(id).state, 4);
    assert!(sim.core.health().boards.is_empty());
}

#[test]
fn under_the_old_rules_nothing_is_recovered_or_remembered() {
    let mut sim = sim(1, 2);
    sim.event(Event::Rules {
        now_us: sim.now_us,
        rules: Rules::default(),
    });
    let id = sim.create(JobRequest::Triads(1, 1));
    fail_next(&mut sim, &[1]);
    assert_eq!(sim.core.job_state(id).state, 4);
    assert!(sim.core.health().boards.is_empty());
}

#[test]
fn an_unanswering_bmp_keeps_its_boards_from_new_jobs_until_it_answers() {
    let mut sim = sim(1, 2);
    let id = sim.create(JobRequest::Triads(1, 1));
    let r = sim.bmp_pending.pop_front().unwrap();
    sim.event(Event::BmpDone {
        now_us: sim.now_us,
        request_id: r.id,
        failure: Some("Requests failed on BMP 10.1.0.0".into()),
        failed_boards: vec![],
        bmp_unreachable: true,
    });
    assert_eq!(sim.core.job_state(id).state, 4);
    assert_eq!(dead(&sim), vec![[0, 0, 0], [0, 0, 1], [0, 0, 2]]);
    // Nothing drained: it is the BMP, not the boards.
    assert!(sim.core.health().boards.is_empty());
    // The job's power-off is the BMP's next request; its answer brings the boards back.
    settle(&mut sim);
    assert!(dead(&sim).is_empty());
}

#[test]
fn two_reports_drain_a_board_and_the_running_job_keeps_it() {
    let mut sim = sim(1, 1);
    let id = sim.create(JobRequest::Board(0, 0, 2));
    settle(&mut sim);
    let report = |d: &str| Command::ReportProblem {
        ip: "11.0.0.2".into(),
        x: 0,
        y: 0,
        p: Some(3),
        description: Some(d.into()),
    };
    assert_eq!(sim.cmd(report("red")), Response::Null);
    assert!(dead(&sim).is_empty());
    assert_eq!(sim.cmd(report("red again")), Response::Null);
    assert_eq!(dead(&sim), vec![[0, 0, 2]]);
    let rec = sim.core.health().board("m", Board::new(0, 0, 2)).unwrap();
    assert_eq!(rec.reports.len(), 2);
    assert_eq!(rec.reports[0].job_id, Some(id));
    assert_eq!(rec.reports[0].host, PEER);
    assert_eq!(
        rec.drain.as_ref().unwrap().reason,
        "2 problem reports: red; red again"
    );
    assert_eq!(
        sim.core.job_state(id).state,
        3,
        "the running job keeps the board"
    );
    assert!(matches!(
        sim.cmd(Command::ReportProblem {
            ip: "1.2.3.4".into(),
            x: 0,
            y: 0,
            p: None,
            description: None
        }),
        Response::Error(_)
    ));
    sim.destroy(id, None);
    settle(&mut sim);
    let again = sim.create(JobRequest::Board(0, 0, 2));
    assert_eq!(sim.core.job_state(again).state, 4, "never allocated again");
}

#[test]
fn admin_drains_survive_a_configuration_change_and_file_dead_wins() {
    let mut sim = sim(1, 1);
    admin(
        &mut sim,
        AdminAction::Drain {
            board: BoardRef::Ip("11.0.0.1".into()),
            reason: "fan".into(),
        },
    );
    assert!(matches!(
        admin(
            &mut sim,
            AdminAction::Drain {
                board: logical(0, 0, 1),
                reason: "again".into()
            }
        ),
        Response::Error(_)
    ));
    let mut c = config(vec![simple_machine("m", 1, 1)], 0.0);
    c.machines[0].tags = vec!["default".into(), "new".into()];
    sim.event(Event::Configure {
        now_us: sim.now_us,
        config: c.clone(),
    });
    assert_eq!(dead(&sim), vec![[0, 0, 1]]);
    // Rebuilt (a major change) and back: still drained.
    sim.event(Event::Configure {
        now_us: sim.now_us,
        config: config(vec![simple_machine("m", 1, 2)], 0.0),
    });
    assert_eq!(dead(&sim), vec![[0, 0, 1]]);
    // Undrained while the file says dead: dead.
    let mut c = config(
        vec![spalloc::core::sim::machine_with(
            "m",
            1,
            2,
            &[Board::new(0, 0, 1)],
            &[],
            |b| [b.x, b.y, b.z],
            |c, f| format!("10.1.{c}.{f}"),
            |b| format!("11.{}.{}.{}", b.x, b.y, b.z),
        )],
        0.0,
    );
    c.machines[0].tags = vec!["default".into()];
    sim.event(Event::Configure {
        now_us: sim.now_us,
        config: c,
    });
    admin(
        &mut sim,
        AdminAction::Undrain {
            board: logical(0, 0, 1),
        },
    );
    assert_eq!(dead(&sim), vec![[0, 0, 1]]);
    let id = sim.create(JobRequest::Board(0, 0, 1));
    assert_eq!(sim.core.job_state(id).state, 4);
}

#[test]
fn emergency_stop_ends_every_job_and_refuses_new_ones_until_resume() {
    let mut sim = sim(1, 2);
    let running = sim.create(JobRequest::Triads(1, 1));
    settle(&mut sim);
    let other = sim.create(JobRequest::Triads(1, 1));
    let queued = sim.create(JobRequest::Triads(1, 1));
    assert_eq!(sim.core.job_state(queued).state, 1);
    admin(
        &mut sim,
        AdminAction::EmergencyStop {
            reason: "fire".into(),
        },
    );
    for id in [running, other, queued] {
        assert_eq!(sim.core.job_state(id).state, 4);
        assert_eq!(sim.core.end_reason(id), Some(EndReason::EmergencyStop));
    }
    assert_eq!(
        sim.core.job_state(running).reason.as_deref(),
        Some("Emergency stop: fire")
    );
    // Every job's boards are powered off, and then every board of every frame.
    let offs: Vec<(JobId, Vec<u32>)> = sim
        .bmp_pending
        .iter()
        .filter_map(|r| match &r.action {
            BmpAction::PowerOff { boards } => Some((r.job_id, boards.clone())),
            BmpAction::PowerOn { .. } => None,
        })
        .collect();
    assert_eq!(offs.iter().filter(|(j, _)| *j != 0).count(), 2, "{offs:?}");
    let sweep: Vec<&Vec<u32>> = offs
        .iter()
        .filter(|(j, _)| *j == 0)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(sweep, vec![&vec![0, 1, 2], &vec![0, 1, 2]], "one per frame");
    settle(&mut sim);
    let refused = sim.create(JobRequest::OneBoard);
    assert_eq!(
        sim.core.job_state(refused).reason.as_deref(),
        Some("Cancelled: Emergency stop: fire")
    );
    admin(&mut sim, AdminAction::Resume);
    let ok = sim.create(JobRequest::OneBoard);
    settle(&mut sim);
    assert_eq!(sim.core.job_state(ok).state, 3);
}

/// An emergency stop's power-off of a frame holds the frame's boards from new jobs until it
/// succeeds; one that fails is retried after `retry_delay` (found by the whole-server
/// simulation: a failed one used to be only logged, and after `resume` its boards, their
/// power unknown, went to a new job). Journals written before replay as they were served:
/// under the old rules the boards are given out at once.
#[test]
fn an_emergency_stops_failed_power_off_holds_its_frame_until_a_retry_succeeds() {
    for current in [true, false] {
        let mut sim = sim(1, 2);
        sim.check = true;
        if !current {
            sim.event(Event::Rules {
                now_us: sim.now_us,
                rules: Rules {
                    hold_unswept_frames: false,
                    ..Rules::CURRENT
                },
            });
        }
        admin(
            &mut sim,
            AdminAction::EmergencyStop {
                reason: "fire".into(),
            },
        );
        assert_eq!(sim.bmp_pending.len(), 2, "one power-off per frame");
        let failed = fail_next(&mut sim, &[]);
        sim.complete_next_bmp(None).expect("the other frame's");
        admin(&mut sim, AdminAction::Resume);
        let a = sim.create(JobRequest::Triads(1, 1));
        let b = sim.create(JobRequest::Triads(1, 1));
        let on_failed_frame = |sim: &mut Sim, id| {
            let boards = boards_of(sim, id);
            !boards.is_empty()
                && boards
                    .iter()
                    .all(|b| [b[0], b[1]] == [failed.cabinet, failed.frame])
        };
        if !current {
            assert!(
                !boards_of(&mut sim, a).is_empty() && !boards_of(&mut sim, b).is_empty(),
                "the old rules gave out both frames at once"
            );
            continue;
        }
        // The admin sees the frame held; only the frame whose power-off succeeded is given out.
        assert_eq!(
            sim.core.health_boards_json(false)["unswept_frames"],
            serde_json::json!([{"machine": "m", "cabinet": failed.cabinet, "frame": failed.frame}])
        );
        assert!(!boards_of(&mut sim, a).is_empty());
        assert!(!on_failed_frame(&mut sim, a));
        assert_eq!(
            sim.core.job_state(b).state,
            1,
            "b waits for the failed frame"
        );
        // The power-off is retried after retry_delay (15 s by default) and succeeds: only
        // then does b get the frame.
        settle_jobs_only(&mut sim);
        sim.advance(10.0);
        assert!(
            sim.bmp_pending.iter().all(|r| r.job_id != 0),
            "retried too soon"
        );
        assert_eq!(sim.core.job_state(b).state, 1);
        sim.advance(6.0);
        let retry = sim
            .bmp_pending
            .iter()
            .position(|r| r.job_id == 0)
            .expect("the failed power-off is retried");
        let r = sim.bmp_pending.remove(retry).unwrap();
        assert_eq!((r.cabinet, r.frame), (failed.cabinet, failed.frame));
        assert_eq!(r.action, failed.action);
        assert_ne!(r.id, failed.id, "a retry has a new id");
        succeed(&mut sim, &r);
        assert!(
            on_failed_frame(&mut sim, b),
            "b gets the frame once it is off"
        );
        assert_eq!(
            sim.core.health_boards_json(false)["unswept_frames"],
            serde_json::json!([])
        );
    }
}

/// Complete the pending requests of jobs (not an emergency stop's), and those they issue.
fn settle_jobs_only(sim: &mut Sim) {
    while let Some(i) = sim.bmp_pending.iter().position(|r| r.job_id != 0) {
        let r = sim.bmp_pending.remove(i).unwrap();
        succeed(sim, &r);
    }
}

/// Complete `r` (taken from the pending requests) successfully.
fn succeed(sim: &mut Sim, r: &BmpRequest) {
    sim.event(Event::BmpDone {
        now_us: sim.now_us,
        request_id: r.id,
        failure: None,
        failed_boards: Vec::new(),
        bmp_unreachable: false,
    });
}

/// Random mixes of jobs, failures blamed on boards, reports, drains and undrains: the
/// invariants hold after every event (the simulator checks), no job is ever *given* a board
/// that was drained at the time, and replaying the events rebuilds the same state.
#[test]
fn drained_boards_are_never_allocated_and_replay_is_exact() {
    fn prop(ops: Vec<(u8, u8)>) -> TestResult {
        let mut sim = sim(2, 2);
        sim.check = true;
        let mut live: Vec<JobId> = Vec::new();
        for (op, arg) in ops.into_iter().take(60) {
            let b = Board::new(
                u32::from(arg) % 2,
                u32::from(arg / 2) % 2,
                u32::from(arg / 4) % 3,
            );
            match op % 9 {
                8 => {
                    let action = if sim.core.health().emergency.is_some() {
                        AdminAction::Resume
                    } else {
                        AdminAction::EmergencyStop {
                            reason: "stop".into(),
                        }
                    };
                    admin(&mut sim, action);
                }
                0 | 1 => {
                    let req = match arg % 3 {
                        0 => JobRequest::OneBoard,
                        1 => JobRequest::Triads(1, 1),
                        _ => JobRequest::Boards(2),
                    };
                    live.push(sim.create_job(job(req)));
                }
                2 => {
                    if !sim.bmp_pending.is_empty() {
                        let r = &sim.bmp_pending[0];
                        let failed = match &r.action {
                            BmpAction::PowerOn { boards, .. } => {
                                vec![boards[usize::from(arg) % boards.len()]]
                            }
                            BmpAction::PowerOff { .. } => vec![],
                        };
                        fail_next(&mut sim, &failed);
                    }
                }
                3 => {
                    sim.complete_next_bmp(None);
                }
                4 => {
                    let _ = sim.cmd(Command::ReportProblem {
                        ip: format!("11.{}.{}.{}", b.x, b.y, b.z),
                        x: 0,
                        y: 0,
                        p: None,
                        description: Some("bad".into()),
                    });
                }
                5 => {
                    let action = if arg % 2 == 0 {
                        AdminAction::Drain {
                            board: logical(b.x, b.y, b.z),
                            reason: "r".into(),
                        }
                    } else {
                        AdminAction::Undrain {
                            board: logical(b.x, b.y, b.z),
                        }
                    };
                    admin(&mut sim, action);
                }
                6 => {
                    if let Some(&id) = live.get(usize::from(arg) % live.len().max(1)) {
                        sim.destroy(id, None);
                    }
                }
                _ => settle(&mut sim),
            }
        }
        // Every allocation step names only boards in service at that moment: replay the
        // events one by one and look at each step's allocations against the drains before it.
        let mut replay = Core::at_journal_start();
        for e in &sim.events {
            let drained_before: Vec<Board> = replay
                .health()
                .records()
                .filter(|(_, _, h)| h.drain.is_some())
                .map(|(_, b, _)| b)
                .collect();
            let unreachable = !replay.health().unreachable.is_empty();
            replay.handle(e);
            let mut allocated_after_drain = false;
            while let Some(effect) = replay.poll_effect() {
                if let Effect::Lifecycle(Lifecycle::Allocated { boards, .. }) = effect {
                    allocated_after_drain |= boards.iter().any(|b| drained_before.contains(b));
                }
            }
            if allocated_after_drain && !unreachable {
                // A drain in this very event can come after the allocation it made; only a
                // drain already in force counts.
                let drained_now: Vec<Board> = replay
                    .health()
                    .records()
                    .filter(|(_, _, h)| h.drain.is_some())
                    .map(|(_, b, _)| b)
                    .collect();
                if drained_before.iter().all(|b| drained_now.contains(b)) {
                    return TestResult::error(format!("a drained board was allocated by {e:?}"));
                }
            }
        }
        if replay != sim.core {
            return TestResult::error("replay differs");
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(prop as fn(Vec<(u8, u8)>) -> TestResult);
}

#[test]
fn boards_given_up_whose_power_off_fails_are_held_until_it_succeeds() {
    let mut sim = sim(1, 2);
    let a = sim.create(JobRequest::Triads(1, 1));
    fail_next(&mut sim, &[1]);
    // Job a's new power-on (triad (0, 1)) and the old triad's power-off are pending.
    settle_ons(&mut sim);
    assert_eq!(sim.core.job_state(a).state, 3);
    let off = sim.bmp_pending.front().cloned().unwrap();
    assert!(matches!(off.action, BmpAction::PowerOff { .. }));
    fail_next(&mut sim, &[]);
    let b = sim.create(JobRequest::Triads(1, 1));
    assert_eq!(sim.core.job_state(b).state, 1, "the old triad is held back");
    sim.advance(sim.core.config().bmp.retry_delay_s + 1.0);
    let retry = sim
        .bmp_pending
        .front()
        .cloned()
        .expect("the power-off issued again");
    assert_eq!(retry.action, off.action);
    assert_ne!(retry.id, off.id);
    settle(&mut sim);
    assert_eq!(sim.core.job_state(b).state, 3);
    assert_eq!(
        boards_of(&mut sim, b),
        vec![[0, 0, 0], [0, 0, 1], [0, 0, 2]]
    );
}

/// Complete pending power-ons only.
fn settle_ons(sim: &mut Sim) {
    while let Some(i) = sim
        .bmp_pending
        .iter()
        .position(|r| matches!(r.action, BmpAction::PowerOn { .. }))
    {
        let r = sim.bmp_pending.remove(i).unwrap();
        sim.bmp_pending.push_front(r);
        sim.complete_next_bmp(None);
    }
}
