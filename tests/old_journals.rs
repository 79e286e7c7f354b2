//! Journals written before the server modelled CPython's `set.pop()` (when a single board
//! came from the lowest free z) still resume with every job on the boards it was given: the
//! old records replay by the old rule, an old snapshot's plain free-board lists decode, and
//! only then does an `Event::Rules` switch to the original's choice. The fixtures were written
//! by that version (tests/fixtures/journals-before-set-model/make.py).
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn boards(c: &mut Client, job: u64) -> serde_json::Value {
    c.call("get_job_machine_info", json!([job]), json!({}))["boards"].clone()
}

fn resume(fixture: &str) {
    let dir = scratch_dir(&format!("old-journal-{fixture}"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/journals-before-set-model")
        .join(fixture);
    copy_dir(&src, &dir.join("journal"));
    // No --config: the machine comes from the journal (its BMPs on 127.251.77.x).
    let mut server = Server::start_with(&dir, None, &[]);
    assert!(
        server
            .wait_for_log(
                "now chosen by CPython (were Smallest)",
                Duration::from_secs(10)
            )
            .is_some(),
        "{}",
        server.log_text()
    );
    let mut c = server.client();
    // Job 3 was given z=0 (the lowest free board then); replaying by today's rule would have
    // put it on z=2 and moved a running job.
    assert_eq!(boards(&mut c, 2), json!([[0, 0, 1]]));
    assert_eq!(boards(&mut c, 3), json!([[0, 0, 0]]));
    assert_eq!(c.state(1)["state"], json!(4));
    // The one board left is free, and taken next.
    let j4 = c.create(json!([]), json!({"keepalive": null}));
    assert_eq!(j4, 4);
    assert_eq!(boards(&mut c, 4), json!([[0, 0, 2]]));
    server.stop();
    // The journal, old records and new ones together, verifies offline and resumes again.
    let v = replay_json(&dir.join("journal"), &["--verify"]);
    assert_eq!(v["ok"], json!(true), "{v}");
    let server = Server::start_with(&dir, None, &[]);
    let mut c = server.client();
    assert_eq!(boards(&mut c, 3), json!([[0, 0, 0]]));
    assert_eq!(boards(&mut c, 4), json!([[0, 0, 2]]));
    assert!(
        !server.log_text().contains("now chosen by"),
        "rules journaled once"
    );
}

/// Both fixtures in one test: their simulated BMPs share one address, so never at once.
#[test]
fn journals_written_before_the_set_model_resume_with_the_same_boards() {
    // Records only (the old server was killed): replayed from the first record.
    resume("records");
    // A snapshot holding the triad's free boards as the plain sorted list of that version.
    resume("snapshot");
}
