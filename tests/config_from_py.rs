//! `tools/spalloc-config-from-py` converts original (Python) configuration files into JSON
//! that `config::parse` accepts and that means the same thing.
//!
//! The fixtures in `tests/fixtures/` are configurations in the style of the original
//! server's manual and tests; where a `.json` twin exists, it is the configuration written
//! by hand in the JSON format, and the converted file must validate to an equal `Config`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use spalloc::config::{self, Config};
use spalloc::core::coordinates::{Board, Link};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("tests").join("fixtures")
}

/// Runs the tool, or `None` (with a notice) where there is no python3 to run it. Under
/// `CI=true` a missing python3 fails the test instead: CI must never pass a check it did
/// not run.
fn run(args: &[&str]) -> Option<Output> {
    if Command::new("python3").arg("--version").output().is_err() {
        common::cannot_run("python3 not found, so spalloc-config-from-py cannot be tested");
        return None;
    }
    let out = Command::new("python3")
        .arg(root().join("tools").join("spalloc-config-from-py"))
        .args(args)
        .env("SPALLOC_SERVER", env!("CARGO_BIN_EXE_spalloc-server"))
        .current_dir(root())
        .output()
        .expect("run python3");
    Some(out)
}

/// Converts a fixture and validates the result.
fn convert(fixture: &str) -> Option<Config> {
    let path = fixtures().join(fixture);
    let out = run(&[path.to_str().expect("utf-8 path")])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{fixture}: exit {:?}\n{stderr}",
        out.status
    );
    match config::parse(&stdout, &fixtures()) {
        Ok(c) => Some(c),
        Err(e) => panic!("{fixture}: converted JSON rejected:\n{e}\n{stdout}"),
    }
}

fn hand_written(fixture: &str) -> Config {
    match config::load(&fixtures().join(fixture)) {
        Ok(c) => c,
        Err(e) => panic!("{fixture}:\n{e}"),
    }
}

#[test]
fn the_manuals_three_board_machine() {
    let Some(c) = convert("three_board.py") else {
        return;
    };
    assert_eq!(c, hand_written("three_board.json"));
    let m = &c.machines[0];
    assert_eq!((m.width, m.height), (1, 1));
    assert_eq!(
        m.boards.iter().map(|b| b.board).collect::<Vec<_>>(),
        [0, 2, 5]
    );
    assert_eq!(c.ip, "0.0.0.0");
}

#[test]
fn a_single_board_keeps_the_shorthand() {
    let Some(c) = convert("single_board.py") else {
        return;
    };
    assert_eq!(c, hand_written("single_board.json"));
    assert_eq!(c.machines[0].tags, ["single", "test"]);
    assert_eq!(
        (
            c.timeout_check_interval_s,
            c.max_retired_jobs,
            c.seconds_before_free_s
        ),
        (0.5, 7, 2.0)
    );
    let out = run(&[fixtures().join("single_board.py").to_str().expect("utf-8")]).expect("python3");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"single_board\""));
}

#[test]
fn standard_ips_with_a_spinner_csv_matches_our_own_derivation() {
    // The tool derives the IPs and board coordinates in Python; the JSON twin lets
    // `config` derive them from the same CSV. Both must agree.
    let Some(c) = convert("standard_ips.py") else {
        return;
    };
    assert_eq!(c, hand_written("standard_ips.json"));
    let m = &c.machines[0];
    assert_eq!((m.width, m.height, m.boards.len()), (2, 2, 11));
    assert_eq!(
        m.dead_links,
        [
            (Board::new(0, 0, 0), Link::North),
            (Board::new(1, 0, 1), Link::West)
        ]
    );
    // The original's port is deprecated and ignored, so it is not carried over.
    assert_eq!(c.port, 22244);
    let out = run(&[fixtures().join("standard_ips.py").to_str().expect("utf-8")]).expect("python3");
    assert!(String::from_utf8_lossy(&out.stderr).contains("port 1234 is not carried over"));
}

#[test]
fn scripted_machines_as_in_the_originals_tests() {
    let Some(c) = convert("scripted.py") else {
        return;
    };
    let names: Vec<&str> = c.machines.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["m0", "m1"]);
    let m1 = c.machine("m1").expect("m1");
    assert_eq!(m1.tags, ["big", "default"]);
    assert_eq!((m1.width, m1.height), (3, 4));
    assert_eq!(m1.dead_boards, [Board::new(0, 0, 1)]);
    assert_eq!(
        m1.dead_links,
        [
            (Board::new(1, 1, 1), Link::North),
            (Board::new(2, 3, 0), Link::South)
        ]
    );
    assert_eq!(m1.boards.len(), 35);
    let b = m1
        .boards
        .iter()
        .find(|b| b.logical == Board::new(2, 1, 1))
        .expect("board (2, 1, 1)");
    assert_eq!(
        (b.cabinet, b.frame, b.board, b.ip.as_str()),
        (20, 10, 10, "11.12.1.1")
    );
    assert_eq!(m1.bmps.len(), 12);
}

#[test]
fn output_file_option() {
    let dir = std::env::temp_dir().join(format!("spalloc-from-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out_file = dir.join("out.json");
    let Some(out) = run(&[
        fixtures().join("three_board.py").to_str().expect("utf-8"),
        "-o",
        out_file.to_str().expect("utf-8"),
    ]) else {
        return;
    };
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert_eq!(
        config::load(&out_file).expect("loads"),
        hand_written("three_board.json")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_configurations_fail_with_the_originals_message() {
    let Some(out) = run(&[fixtures().join("broken.py").to_str().expect("utf-8")]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TypeError: Both or neither of width and height must be specified."),
        "{stderr}"
    );

    let Some(out) = run(&["--help"]) else { return };
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("-o FILE"));
    let Some(out) = run(&[Path::new("/nonexistent.py").to_str().expect("utf-8")]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1));
}

/// What the tool writes is checked by `spalloc-server --check-config`: its verdict is shown,
/// a failing check writes nothing, and `--journal` previews the change against a journal.
#[test]
fn output_is_checked_by_the_server() {
    let dir = std::env::temp_dir().join(format!("spalloc-from-py-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let fixture = fixtures().join("three_board.py");
    let fixture = fixture.to_str().expect("utf-8");
    let Some(out) = run(&[fixture]) else { return };
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the output is valid: 1 machines, 3 working boards"),
        "{stderr}"
    );

    // A checker that fails: nothing is written, exit 1.
    let out_file = dir.join("out.json");
    let out_path = out_file.to_str().expect("utf-8");
    let Some(out) = run(&[fixture, "-o", out_path, "--server", "/bin/false"]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1));
    assert!(!out_file.exists());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed spalloc-server's check; nothing written"),
        "{stderr}"
    );
    let Some(out) = run(&[fixture, "--server", "/nonexistent/spalloc-server"]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1));

    // Against an empty journal: the preview says every machine is added.
    let journal = dir.join("journal");
    drop(spalloc_journal::Journal::open(&journal).expect("journal"));
    let Some(out) = run(&[fixture, "--journal", journal.to_str().expect("utf-8")]) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("a reload would:"), "{stderr}");
    assert!(stderr.contains("added "), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
