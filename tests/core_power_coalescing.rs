//! Power changes are coalesced per job (`Rules::coalesce_power`): while a job's BMP requests
//! are in flight, further changes only record the state wanted (the latest wins); and one
//! job's changes are rate-bounded (`power_change_gap_us` after a burst). Journals written
//! under the old rules replay as served: every change issued at once.

use spalloc::core::rules::Rules;
use spalloc::core::sim::{config, machine_with, simple_machine, Sim};
use spalloc::core::*;

fn power(sim: &mut Sim, job_id: JobId, on: bool) {
    sim.cmd(if on {
        Command::PowerOnJobBoards { job_id }
    } else {
        Command::PowerOffJobBoards { job_id }
    });
}

fn is_on(r: &BmpRequest) -> bool {
    matches!(r.action, BmpAction::PowerOn { .. })
}

/// A job on a one-frame machine whose first power-on is still in flight.
fn powering_job() -> (Sim, JobId) {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 1)], 0.0));
    sim.bmp_auto = false;
    let id = sim.create(JobRequest::Boards(1));
    assert_eq!(sim.bmp_pending.len(), 1);
    (sim, id)
}

#[test]
fn a_storm_of_changes_leaves_one_pending_and_the_latest_wins() {
    let (mut sim, id) = powering_job();
    for i in 0..1_000 {
        power(&mut sim, id, i % 2 == 1); // ..., on, off, on; the last (i = 999) is on
    }
    power(&mut sim, id, false); // the very last word: off
                                // Nothing more was issued while the first request is in flight.
    assert_eq!(sim.bmp_log.len(), 1);
    let s = sim.state(id);
    assert_eq!((s.state, s.power), (JobState::Power as u8, Some(false)));
    // Its completion issues the one change wanted, the latest: off.
    sim.complete_next_bmp(None);
    assert_eq!(sim.bmp_pending.len(), 1);
    assert!(!is_on(&sim.bmp_pending[0]));
    sim.complete_all_bmp();
    let s = sim.state(id);
    assert_eq!((s.state, s.power), (JobState::Ready as u8, Some(false)));
    assert_eq!(sim.bmp_log.len(), 2, "one request per frame at a time");
}

#[test]
fn a_neighbour_on_the_same_bmp_waits_behind_at_most_one_request_of_the_storm() {
    // Two triads in one frame (one BMP).
    let m = machine_with(
        "m",
        2,
        1,
        &[],
        &[],
        |b| [0, 0, b.x * 3 + b.z],
        |c, f| format!("10.1.{c}.{f}"),
        |b| format!("11.{}.{}.{}", b.x, b.y, b.z),
    );
    let mut sim = Sim::new(config(vec![m], 0.0));
    sim.bmp_auto = false;
    let storm = sim.create(JobRequest::Boards(1));
    let neighbour = sim.create(JobRequest::Boards(1));
    // Both on the same frame (same BMP address).
    assert_eq!(sim.bmp_pending[0].address, sim.bmp_pending[1].address);
    for i in 0..500 {
        power(&mut sim, storm, i % 2 == 0);
    }
    // The BMP's queue holds one request per job, whatever the storm.
    let per_job = |sim: &Sim, id| sim.bmp_pending.iter().filter(|r| r.job_id == id).count();
    assert_eq!((per_job(&sim, storm), per_job(&sim, neighbour)), (1, 1));
    sim.complete_next_bmp(None); // the storm's first
    sim.complete_next_bmp(None); // the neighbour's: next in line
    assert_eq!(sim.state(neighbour).state, JobState::Ready as u8);
    assert_eq!(sim.state(neighbour).power, Some(true));
}

#[test]
fn changes_beyond_the_burst_wait_for_the_rate() {
    let mut sim = Sim::new(config(vec![simple_machine("m", 1, 1)], 0.0));
    let id = sim.create(JobRequest::Boards(1)); // power-on: change 1, completed at once
    let burst = Rules::CURRENT.power_change_burst as usize;
    for i in 1..burst {
        power(&mut sim, id, i % 2 == 0);
    }
    assert_eq!(sim.bmp_log.len(), burst, "a burst goes through at once");
    assert_eq!(sim.state(id).state, JobState::Ready as u8);
    power(&mut sim, id, true);
    power(&mut sim, id, false);
    assert_eq!(sim.bmp_log.len(), burst, "beyond the burst: waits");
    let s = sim.state(id);
    assert_eq!((s.state, s.power), (JobState::Power as u8, Some(false)));
    // The core asks to be woken when the rate allows the next change, and issues it then.
    let deadline = sim
        .core
        .poll_deadline()
        .expect("a deadline for the waiting change");
    assert!(deadline > sim.now_us && deadline <= sim.now_us + Rules::CURRENT.power_change_gap_us);
    sim.advance(Rules::CURRENT.power_change_gap_us as f64 / 1e6);
    assert_eq!(sim.bmp_log.len(), burst + 1);
    assert!(!is_on(sim.bmp_log.last().unwrap()));
    assert_eq!(sim.state(id).state, JobState::Ready as u8);
    // Destroying a job whose change waits powers it off once, and frees it.
    power(&mut sim, id, true);
    sim.destroy(id, Some("done"));
    sim.advance(0.0);
    assert!(sim.core.is_idle(), "nothing left behind");
}

#[test]
fn old_rules_issue_every_change_at_once() {
    let (mut sim, id) = powering_job();
    sim.event(Event::Rules {
        now_us: sim.now_us,
        rules: Rules::default(),
    });
    for i in 0..10 {
        power(&mut sim, id, i % 2 == 0);
    }
    assert_eq!(sim.bmp_log.len(), 11, "one request per change, as before");
    sim.complete_all_bmp();
    assert_eq!(sim.state(id).state, JobState::Ready as u8);
}
