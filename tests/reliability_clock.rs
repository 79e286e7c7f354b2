//! Wall-clock steps move no timer: the real server under libfaketime, its wall clock
//! stepped a day forward and a day back while it runs (and set back across a restart).
//!
//! Event times used to be wall-clock readings: a forward NTP step expired every keepalive at
//! once, and a backward step froze every timer for as long as the step. The server now
//! stamps events with a monotonic clock anchored to the wall clock at start.
//!
//! Needs libfaketime (Debian's `faketime` package; `.ci/run` installs it). Without it the
//! test fails under `CI=true` and is skipped with a notice elsewhere.
mod common;
mod reliability_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use reliability_support::poll_until;
use serde_json::{json, Value};

fn libfaketime() -> Option<PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    dirs.filter_map(|d| d.ok())
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists())
}

/// A server whose wall clock is the real one plus the offset in `offset_file`, read at
/// every clock reading (so the test can step it); its monotonic clock is left alone.
fn start(dir: &Path, cfg: &Value, lib: &Path, offset_file: &Path) -> Server {
    let path = dir.join("machines.json");
    std::fs::write(&path, serde_json::to_vec_pretty(cfg).unwrap()).unwrap();
    Server::start_env(
        dir,
        Some(&path),
        &["--simulate-bmps", "--restart-grace-s", "0"],
        &[
            ("LD_PRELOAD", lib.to_str().unwrap()),
            ("FAKETIME_TIMESTAMP_FILE", offset_file.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
}

#[test]
fn wall_clock_steps_move_no_timer() {
    let Some(lib) = libfaketime() else {
        cannot_run("libfaketime is not installed (Debian: apt-get install faketime)");
        return;
    };
    let dir = scratch_dir("clock-steps");
    let offset = dir.join("faketime-offset");
    std::fs::write(&offset, "+0\n").unwrap();
    let cfg = simple_config(&bmp_net(), json!({}));
    let mut server = start(&dir, &cfg, &lib, &offset);
    let mut c = server.client();

    // A job whose owner checks in every 30 s or so: a 60 s keepalive.
    let patient = c.create(json!([1]), json!({"keepalive": 60.0}));
    c.wait_state(patient, 3, Duration::from_secs(20));

    // The wall clock jumps a day ahead. With wall-clock event times, the next tick found
    // the patient job a day overdue and destroyed it.
    std::fs::write(&offset, "+1d\n").unwrap();
    // Something to make a pass, and a tick to come due: a job with a short keepalive that
    // nobody keeps alive, whose expiry (about 1 s from now, by the monotonic clock) makes
    // the server fold a tick after the step.
    let short = c.create(json!([1]), json!({"keepalive": 1.0}));
    poll_until(Duration::from_secs(20), Duration::from_millis(20), || {
        (!c.job_ids().contains(&short)).then_some(())
    })
    .expect("the short job never expired");
    assert!(
        c.job_ids().contains(&patient),
        "a forward wall-clock step expired a job kept alive: {}",
        server.log_text()
    );

    // And a day back (two days behind where it was). With wall-clock event times, every
    // timer froze for a day: this job would never expire.
    std::fs::write(&offset, "-1d\n").unwrap();
    let frozen = c.create(json!([1]), json!({"keepalive": 1.0}));
    poll_until(Duration::from_secs(20), Duration::from_millis(20), || {
        (!c.job_ids().contains(&frozen)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "after a backward step, a 1 s keepalive never expired:\n{}",
            server.log_text()
        )
    });
    assert_eq!(
        c.call("get_job_state", json!([frozen]), json!({}))["reason"],
        "Job timed out."
    );

    // Across a restart with the wall clock still a day back: event time never goes back.
    // (A crash, not a clean stop, so that the whole history stays in the segments.)
    drop(c);
    let journal = server.journal.clone();
    server.kill9();
    server = start(&dir, &cfg, &lib, &offset);
    let mut c = server.client();
    let after = c.create(json!([1]), json!({"keepalive": null}));
    drop(c);
    assert!(server.stop().success());
    let events = replay_ok(&journal, &["--events", "--json"]);
    let times: Vec<u64> = events
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            e["time_us"].as_u64().unwrap()
        })
        .collect();
    assert!(times.len() > 5, "{events}");
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "event time went backwards: {times:?}"
    );
    assert!(events.contains(&format!("job {after}")), "{events}");
}
