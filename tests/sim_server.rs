//! Property tests over the deterministic simulation of the whole server loop
//! (`spalloc::server::sim`): many seeds, each a run with crashes, journal outages, failing
//! BMPs (some blaming boards), configuration reloads, an admin on the admin channel
//! (drains, undrains, emergency stops and resumes) and clients speaking the line protocol
//! (some of them not reading, some reporting problems with their boards), checked as it
//! goes.
//!
//! A failing seed is printed; `SPALLOC_SEED=<seed> cargo test --test sim_server` runs only
//! that seed, and prints its server log.

use spalloc::server::sim::{run, Report, SimConfig};

/// Seeds run by the ordinary test run (bounded: a few seconds in a debug build).
const SEEDS: u64 = 200;

fn check(report: &Report) {
    if !report.violations.is_empty() {
        for line in &report.log {
            eprintln!("  log: {line}");
        }
        panic!(
            "seed {} broke the simulation's properties (re-run it with SPALLOC_SEED={}):\n{}",
            report.seed,
            report.seed,
            report.violations.join("\n")
        );
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("SPALLOC_SEED") {
        Ok(s) => vec![s.trim().parse().expect("SPALLOC_SEED is a number")],
        Err(_) => {
            // A different range each run is tempting, but a red CI run must be re-runnable:
            // the base is fixed, and SPALLOC_SEEDS_FROM moves it for longer searches.
            let from = std::env::var("SPALLOC_SEEDS_FROM")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0u64);
            (from..from + SEEDS).collect()
        }
    }
}

/// Every property holds over many seeds: nothing acknowledged is lost across crashes, nothing
/// refused as not carried out comes back after one, the journal replays to the live state, no
/// kept-alive job expires, no board is in two jobs; no job is given a board out of service,
/// dead or held for a power-off, and no board is powered on while held or left on with no
/// job; clients that read are served and never dropped, those that stop reading are dropped
/// past the output bounds; reloads apply valid files only; admin drains hold until undrained,
/// reported boards are drained, an emergency stop leaves no job live and nothing powered on
/// (see `spalloc::server::sim`).
#[test]
fn properties_hold_over_many_seeds() {
    let cfg = SimConfig::default();
    let started = std::time::Instant::now();
    let mut totals = Report::default();
    let seeds = seeds();
    for &seed in &seeds {
        let r = run(seed, &cfg);
        if std::env::var("SPALLOC_SEED").is_ok() {
            eprintln!("{r:#?}");
        }
        check(&r);
        totals.passes += r.passes;
        totals.crashes += r.crashes;
        totals.requests += r.requests;
        totals.jobs_acknowledged += r.jobs_acknowledged;
        totals.refused += r.refused;
        totals.refused_maybe_recorded += r.refused_maybe_recorded;
        totals.refusals_checked_after_restart += r.refusals_checked_after_restart;
        totals.bmp_completed += r.bmp_completed;
        totals.bmp_failed += r.bmp_failed;
        totals.unsynced_survived += r.unsynced_survived;
        totals.boards_blamed += r.boards_blamed;
        totals.boards_out_of_service += r.boards_out_of_service;
        totals.boards_drained += r.boards_drained;
        totals.jobs_reallocated += r.jobs_reallocated;
        totals.allocations_checked += r.allocations_checked;
        totals.power_offs_failed += r.power_offs_failed;
        totals.readers_paused += r.readers_paused;
        totals.readers_stopped += r.readers_stopped;
        totals.readers_resumed += r.readers_resumed;
        totals.slow_readers_disconnected += r.slow_readers_disconnected;
        totals.backlog_max = totals.backlog_max.max(r.backlog_max);
        totals.writable_with_backlog += r.writable_with_backlog;
        totals.disconnected_at_total_bound += r.disconnected_at_total_bound;
        totals.reloads += r.reloads;
        totals.reloads_applied += r.reloads_applied;
        totals.admin_drains += r.admin_drains;
        totals.admin_undrains += r.admin_undrains;
        totals.undrained_boards_reallocated += r.undrained_boards_reallocated;
        totals.emergency_stops += r.emergency_stops;
        totals.emergency_stops_with_jobs += r.emergency_stops_with_jobs;
        totals.jobs_created_in_emergency += r.jobs_created_in_emergency;
        totals.emergency_resumes += r.emergency_resumes;
        totals.allocations_after_resume += r.allocations_after_resume;
        totals.problem_reports += r.problem_reports;
        totals.boards_drained_by_reports += r.boards_drained_by_reports;
    }
    let took = started.elapsed().as_secs_f64();
    eprintln!(
        "{} seeds in {took:.1} s ({:.0} seeds/s): {} passes, {} crashes, {} requests, {} jobs \
         acknowledged, {} refused for journal trouble ({} as maybe recorded; {} refused as not \
         carried out and checked after a restart), {} BMP completions ({} failed), {} records \
         of failed writes kept by crashes; {} boards blamed by failed power-ons, {} \
         seen out of service ({} drained), {} jobs re-allocated, {} allocations checked, {} \
         power-offs failed; {} clients paused reading ({} read again), {} stopped, {} \
         disconnected for not reading ({} at the total bound), largest backlog {} bytes, \
         {} writable with a backlog; \
         {} reloads ({} applied); admin: {} drains, {} undrains ({} boards given to a job \
         again), {} emergency stops ({} with live jobs; {} jobs created during one, cancelled), \
         {} resumes ({} allocations after one); {} problem reports ({} boards drained by \
         reports)",
        seeds.len(),
        seeds.len() as f64 / took,
        totals.passes,
        totals.crashes,
        totals.requests,
        totals.jobs_acknowledged,
        totals.refused,
        totals.refused_maybe_recorded,
        totals.refusals_checked_after_restart,
        totals.bmp_completed,
        totals.bmp_failed,
        totals.unsynced_survived,
        totals.boards_blamed,
        totals.boards_out_of_service,
        totals.boards_drained,
        totals.jobs_reallocated,
        totals.allocations_checked,
        totals.power_offs_failed,
        totals.readers_paused,
        totals.readers_resumed,
        totals.readers_stopped,
        totals.slow_readers_disconnected,
        totals.disconnected_at_total_bound,
        totals.backlog_max,
        totals.writable_with_backlog,
        totals.reloads,
        totals.reloads_applied,
        totals.admin_drains,
        totals.admin_undrains,
        totals.undrained_boards_reallocated,
        totals.emergency_stops,
        totals.emergency_stops_with_jobs,
        totals.jobs_created_in_emergency,
        totals.emergency_resumes,
        totals.allocations_after_resume,
        totals.problem_reports,
        totals.boards_drained_by_reports
    );
    // The runs must exercise what they claim to (else a property holds vacuously).
    if seeds.len() > 1 {
        assert!(totals.crashes > 0 && totals.refused > 0 && totals.bmp_failed > 0);
        assert!(totals.jobs_acknowledged > 0);
        // Refusals a restart came after, and failed batches that could not be cut off.
        assert!(totals.refusals_checked_after_restart > 0);
        assert!(totals.refused_maybe_recorded > 0 && totals.unsynced_survived > 0);
        // Board health: failures blamed on boards, boards taken out of service (drained
        // after repeated failures, not only frames whose BMP did not answer), jobs given
        // new boards, power-offs failing (boards held), and allocations checked.
        assert!(totals.boards_blamed > 0 && totals.boards_drained > 0);
        assert!(totals.boards_out_of_service > totals.boards_drained);
        assert!(totals.jobs_reallocated > 0 && totals.power_offs_failed > 0);
        assert!(totals.allocations_checked > 0);
        // Output bounds: clients stopped reading, backlogs reached output_bytes_max, the
        // server disconnected such clients, paused ones read again and were sent their
        // backlog when their pipe had room.
        assert!(totals.readers_paused > 0 && totals.readers_stopped > 0);
        assert!(totals.backlog_max > cfg.output_bytes_max as u64);
        assert!(totals.slow_readers_disconnected > 0 && totals.readers_resumed > 0);
        assert!(totals.writable_with_backlog > 0);
        assert!(totals.reloads_applied > 0);
        // The admin channel: drains and undrains done (undrained boards given to jobs
        // again), emergency stops that destroyed jobs and cancelled new ones, resumes after
        // which service went on; problem reports acknowledged, some draining their board.
        assert!(totals.admin_drains > 0 && totals.admin_undrains > 0);
        assert!(totals.undrained_boards_reallocated > 0);
        assert!(totals.emergency_stops_with_jobs > 0 && totals.jobs_created_in_emergency > 0);
        assert!(totals.emergency_resumes > 0 && totals.allocations_after_resume > 0);
        assert!(totals.problem_reports > 0 && totals.boards_drained_by_reports > 0);
    }
}

/// A run is a function of its seed: the same seed gives the same report (every reply to
/// every client, at the same times, hashed), and another seed another.
#[test]
fn a_seed_replays_exactly() {
    let cfg = SimConfig::default();
    let a = run(7, &cfg);
    assert_eq!(a, run(7, &cfg));
    assert_ne!(a.trace, run(8, &cfg).trace);
}

/// The checks catch a disk whose fsync lies (a crash loses the last records written), and
/// the failing seed reproduces its failure exactly.
#[test]
fn a_lying_disk_is_caught_and_its_seed_reproduces() {
    let cfg = SimConfig {
        lose_on_crash: 3,
        crashes_max: 3,
        ..SimConfig::default()
    };
    let failing = (0..50)
        .map(|seed| run(seed, &cfg))
        .find(|r| !r.violations.is_empty())
        .expect("losing synced records must break a property on some seed");
    assert!(
        failing
            .violations
            .iter()
            .any(|v| v.contains("acknowledged") || v.contains("handed out twice")),
        "{:?}",
        failing.violations
    );
    let again = run(failing.seed, &cfg);
    assert_eq!(again.violations, failing.violations);
    assert_eq!(again, failing);
}

/// The checks catch a journal that leaves a failed batch on the disk until its next write
/// (as the journal did before it cut a failed batch off at once): a crash in between brings
/// back a command its client was told was not carried out. The failing seed reproduces.
#[test]
fn a_journal_that_keeps_refused_batches_is_caught() {
    let cfg = SimConfig {
        keep_failed_batches: true,
        // (A refusal followed by a crash before the next write, as often as can be.)
        crash_after_refusal_chance: 1.0,
        disk_faults_max: 4,
        ..SimConfig::default()
    };
    let failing = (0..400)
        .map(|seed| run(seed, &cfg))
        .find(|r| !r.violations.is_empty())
        .expect("replaying refused batches must break a property on some seed");
    eprintln!("seed {} found it", failing.seed);
    assert!(
        failing
            .violations
            .iter()
            .all(|v| v.contains("refused at") && v.contains("as not carried out")),
        "{:?}",
        failing.violations
    );
    assert_eq!(run(failing.seed, &cfg), failing);
}

/// A board that a configuration reload marks dead while a job holds it is powered off when
/// the job ends (the job keeps the board, as documented: dead-board changes modify the
/// machine in place). It used not to be: the machine's location table was rebuilt from the
/// new configuration, which no longer lists the board, and the job's power-off was built
/// from it. Seed 0 showed it (board (1, 1, 2) of job 7, allocated at t≈19.2 s and marked
/// dead just after; the job's power-off at t≈29.2 s named boards [0, 1] of its frame only),
/// and checks it here with the hardware's record of every board's power.
#[test]
fn a_board_marked_dead_while_held_is_powered_off() {
    let cfg = SimConfig {
        reload_kills_held_boards: true,
        ..SimConfig::default()
    };
    check(&run(0, &cfg));
}

/// An emergency stop's power-off of a whole frame (the sweep, job id 0) holds the frame's
/// boards from new jobs until it succeeds, and one that fails is retried, as a job's failed
/// power-off is. It used to be only logged: seed 4 showed it (after the stop the sweep of
/// cabinet 1, frame 0 failed; after the resume, job 8 was given boards (1, 0, 0..2) at
/// t≈22.2 s and powered them on while their power was unknown).
#[test]
fn an_emergency_stops_failed_sweep_holds_its_boards() {
    let cfg = SimConfig {
        sweep_holds_boards: true,
        ..SimConfig::default()
    };
    check(&run(4, &cfg));
}
