//! The rules that choose boards are part of the journal: a journal written before the server
//! modelled CPython's `set.pop()` (no `Event::Rules` in it) replays to the boards it chose
//! then (the lowest free z), and from an `Event::Rules` on, boards follow the original.
use spalloc::core::rules::Rules;
use spalloc::core::sim::{config, job, simple_machine, PEER};
use spalloc::core::PopRule;
use spalloc::core::*;

const T0: TimeUs = 1_700_000_000_000_000;

fn fold(core: &mut Core, e: Event) -> Option<Response> {
    let r = core.handle(&e);
    core.discard_effects();
    core.check_invariants().unwrap();
    r
}

fn command(core: &mut Core, command: Command) -> Option<Response> {
    fold(
        core,
        Event::Command {
            now_us: T0,
            peer: PEER.into(),
            command,
        },
    )
}

/// Complete every BMP request issued so far.
fn complete_all(core: &mut Core) {
    for id in 1..200 {
        fold(
            core,
            Event::BmpDone {
                now_us: T0,
                request_id: id,
                failure: None,
                failed_boards: Vec::new(),
                bmp_unreachable: false,
            },
        );
    }
}

/// One 1x1 machine: take boards 0 and 1, give 0 back, then ask for two more boards. Returns
/// the z of the boards of the last two jobs.
fn scenario(core: &mut Core, rules: Option<PopRule>) -> Vec<u32> {
    if let Some(pop) = rules {
        let rules = Rules {
            pop,
            ..Rules::default()
        };
        fold(core, Event::Rules { now_us: T0, rules });
    }
    fold(
        core,
        Event::Configure {
            now_us: T0,
            config: config(vec![simple_machine("m", 1, 1)], 0.0),
        },
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        match command(core, Command::CreateJob(job(JobRequest::OneBoard))) {
            Some(Response::JobId(id)) => ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    complete_all(core);
    command(
        core,
        Command::DestroyJob {
            job_id: ids[0],
            reason: None,
        },
    );
    complete_all(core);
    let mut zs = Vec::new();
    for _ in 0..2 {
        let Some(Response::JobId(id)) =
            command(core, Command::CreateJob(job(JobRequest::OneBoard)))
        else {
            panic!("no job id")
        };
        let owners = core.board_owners();
        let z = owners[0]
            .1
            .iter()
            .find(|(_, j)| **j == id)
            .map(|(b, _)| b.z)
            .expect("allocated");
        zs.push(z);
    }
    zs
}

#[test]
fn a_journal_without_rules_replays_with_the_old_choice() {
    let mut core = Core::at_journal_start();
    assert_eq!(core.pop_rule(), PopRule::Smallest);
    assert_eq!(scenario(&mut core, None), vec![0, 2]);
}

#[test]
fn after_the_rules_event_boards_follow_cpython() {
    let mut core = Core::at_journal_start();
    assert_eq!(scenario(&mut core, Some(PopRule::CPython)), vec![2, 0]);
    assert_eq!(Core::new().pop_rule(), PopRule::CURRENT);
}

#[test]
fn the_rules_event_switches_machines_already_configured_and_survives_snapshots() {
    let mut core = Core::at_journal_start();
    scenario(&mut core, None);
    fold(
        &mut core,
        Event::Rules {
            now_us: T0,
            rules: Rules::CURRENT,
        },
    );
    // A snapshot round trip keeps the rules and each triad's set, table and finger.
    let bytes = rmp_serde::to_vec_named(&core).unwrap();
    let back: Core = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(rmp_serde::to_vec_named(&back).unwrap(), bytes);
    assert_eq!(back.pop_rule(), PopRule::CPython);
    // Journal records of the new event decode.
    let e = Event::Rules {
        now_us: T0,
        rules: Rules::CURRENT,
    };
    let decoded = spalloc::server::decode_event(&spalloc::server::encode_event(&e)).unwrap();
    assert_eq!(decoded, e);
}
