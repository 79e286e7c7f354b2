//! A job's life as data: the core emits `Effect::Lifecycle` steps (queued, allocated with
//! its boards, powering, ready, ended with a typed reason and its text), and keeps the typed
//! end reason of retired jobs beside the text clients see.

use spalloc::core::coordinates::Board;
use spalloc::core::sim::{config, job, simple_machine, Sim, PEER};
use spalloc::core::*;

/// The lifecycle steps emitted since the last call.
fn steps(sim: &mut Sim) -> Vec<Lifecycle> {
    let mut out = Vec::new();
    sim.notifications.retain(|n| match n {
        Effect::Lifecycle(step) => {
            out.push(step.clone());
            false
        }
        _ => true,
    });
    out
}

#[test]
fn a_job_life_is_told_step_by_step() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 2)], 1.0));
    let id = sim.create(JobRequest::Boards(2));
    assert_eq!(
        steps(&mut sim),
        vec![
            Lifecycle::Queued {
                job_id: id,
                owner: "me".into(),
                host: PEER.into()
            },
            Lifecycle::Allocated {
                job_id: id,
                machine: "m".into(),
                // (Two boards take a whole triad, as in the original.)
                boards: vec![
                    Board::new(0, 0, 0),
                    Board::new(0, 0, 1),
                    Board::new(0, 0, 2)
                ]
            },
            Lifecycle::Powering {
                job_id: id,
                on: true
            },
            Lifecycle::Ready {
                job_id: id,
                power: true
            },
        ]
    );
    sim.cmd(Command::PowerOffJobBoards { job_id: id });
    assert_eq!(
        steps(&mut sim),
        vec![
            Lifecycle::Powering {
                job_id: id,
                on: false
            },
            Lifecycle::Ready {
                job_id: id,
                power: false
            },
        ]
    );
    assert_eq!(sim.core.end_reason(id), None, "live");
    sim.destroy(id, Some("finished"));
    assert_eq!(
        steps(&mut sim),
        vec![Lifecycle::Ended {
            job_id: id,
            reason: EndReason::Owner,
            text: Some("finished".into())
        }]
    );
    assert_eq!(sim.core.end_reason(id), Some(EndReason::Owner));
    assert_eq!(sim.state(id).reason.as_deref(), Some("finished"));
}

/// Every way a job can end has its typed reason, beside the text the original gives.
#[test]
fn every_end_has_its_typed_reason() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 1)], 1.0));
    let ended = |sim: &mut Sim| -> Vec<(JobId, EndReason, Option<String>)> {
        steps(sim)
            .into_iter()
            .filter_map(|s| match s {
                Lifecycle::Ended {
                    job_id,
                    reason,
                    text,
                } => Some((job_id, reason, text)),
                _ => None,
            })
            .collect()
    };

    // Keepalive expiry.
    let mut c = job(JobRequest::OneBoard);
    c.keepalive_s = Some(1.0);
    let expiring = sim.create_job(c);
    sim.advance(1.5);
    assert_eq!(
        ended(&mut sim),
        vec![(
            expiring,
            EndReason::KeepaliveExpired,
            Some(TIMED_OUT.into())
        )]
    );

    // No machine can ever hold it: cancelled while queued.
    let huge = sim.create(JobRequest::Triads(5, 5));
    assert_eq!(
        ended(&mut sim),
        vec![(
            huge,
            EndReason::NoSuitableMachine,
            Some(format!("Cancelled: {NO_SUITABLE_MACHINE}"))
        )]
    );

    // The hardware fails.
    sim.advance(2.0); // the expired job's boards are free again
    sim.bmp_auto = false;
    let failing = sim.create(JobRequest::OneBoard);
    sim.complete_next_bmp(Some("Requests failed on BMP 10.1.0.0"));
    let e = ended(&mut sim);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].0, e[0].1), (failing, EndReason::BoardFailure));
    sim.complete_all_bmp();

    // The machine goes away under a job.
    sim.bmp_auto = true;
    sim.advance(2.0);
    let doomed = sim.create(JobRequest::OneBoard);
    assert_eq!(sim.state(doomed).state, 3);
    let mut bigger = simple_machine("m", 2, 1);
    bigger.tags = vec!["default".into()];
    sim.event(Event::Configure {
        now_us: sim.now_us,
        config: config(vec![bigger], 1.0),
    });
    assert_eq!(
        ended(&mut sim),
        vec![(
            doomed,
            EndReason::MachineRemoved,
            Some(MACHINE_REMOVED.into())
        )]
    );
    for (id, reason) in [
        (expiring, EndReason::KeepaliveExpired),
        (huge, EndReason::NoSuitableMachine),
        (failing, EndReason::BoardFailure),
        (doomed, EndReason::MachineRemoved),
    ] {
        assert_eq!(sim.core.end_reason(id), Some(reason), "job {id}");
    }
}

/// Typed reasons leave the history with their text, and survive a snapshot.
#[test]
fn typed_reasons_are_bounded_and_kept_in_snapshots() {
    let mut cfg = config(vec![simple_machine("m", 1, 1)], 1.0);
    cfg.max_retired_jobs = 2;
    let mut sim = Sim::new(cfg);
    let ids: Vec<JobId> = (0..3)
        .map(|_| {
            let id = sim.create(JobRequest::OneBoard);
            sim.destroy(id, None);
            sim.advance(2.0);
            id
        })
        .collect();
    assert_eq!(sim.core.end_reason(ids[0]), None, "beyond the history");
    let bytes = rmp_serde::to_vec_named(&sim.core).unwrap();
    let back: Core = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back.end_reason(ids[2]), Some(EndReason::Owner));
    assert!(back == sim.core);
}
