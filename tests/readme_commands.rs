//! Every command in README.md is run, so the README cannot rot: the `spalloc-replay` and
//! migration commands here, on a journal and a configuration of this test's own; the quick
//! start by `.ci/run`, which this test checks runs each of them word for word.
mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::json;

/// The command lines of the README's `sh` blocks, without trailing comments.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut in_sh = false;
    let mut out = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if in_sh {
            // A comment is two or more spaces then '#' (the commands contain no such text).
            let cmd = match line.find("  #") {
                Some(i) => &line[..i],
                None => line,
            };
            if !cmd.trim().is_empty() {
                out.push(cmd.trim().to_string());
            }
        }
    }
    out
}

fn ci_script() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run")).unwrap()
}

#[test]
fn every_readme_command_is_run_somewhere() {
    let ci = ci_script();
    let requirements =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/requirements.txt"))
            .unwrap();
    let commands = readme_commands();
    assert!(
        commands.len() >= 10,
        "README commands not found: {commands:?}"
    );
    for cmd in &commands {
        let covered = if let Some(args) = cmd.strip_prefix("cargo build --release --bins && ") {
            // .ci/run runs it with its own journal directory.
            let ci_form = format!(
                "cargo build --release --bins && {}",
                args.replace("/tmp/spalloc-demo", "\"$tmp/journal\"")
            );
            ci.contains(&ci_form)
        } else if cmd == "cargo test --workspace" {
            ci.lines().any(|l| {
                l.trim_start().starts_with("timeout") && l.contains("cargo test --workspace")
            })
        } else if cmd == "bash .ci/run" {
            true // CI itself
        } else if let Some(pip) = cmd
            .strip_prefix("python3 -m venv /tmp/spalloc-venv && /tmp/spalloc-venv/bin/pip install ")
        {
            ci.contains("python3 -m venv")
                && requirements
                    .lines()
                    .any(|r| format!("'{}'", r.trim()) == pip)
        } else if let Some(tool) = cmd.strip_prefix("/tmp/spalloc-venv/bin/") {
            ci.contains(&format!("smoke_client {tool}"))
        } else if let Some(pip) =
            cmd.strip_prefix("python3 -m venv ../orig-venv && ../orig-venv/bin/pip install ")
        {
            // The original server for the differential test: the same pin CI installs.
            let pinned = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/requirements-original.txt"),
            )
            .unwrap();
            ci.contains("requirements-original.txt")
                && pinned.lines().any(|r| format!("'{}'", r.trim()) == pip)
        } else if cmd == "cargo build" {
            // `cargo test --workspace` builds the same binaries first.
            ci.contains("cargo test --workspace")
        } else if let Some(args) = cmd.strip_prefix("python3 e2e/differential.py ") {
            // .ci/run runs the differential test's command line on a few seeds.
            ci.contains("e2e/differential.py")
                && args
                    .split_whitespace()
                    .filter(|a| a.starts_with("--"))
                    .all(|flag| ci.contains(flag))
        } else {
            // Run below: by readme_replay_and_migration_commands_work (spalloc-replay,
            // spalloc-server --check-config, the migration tool) and
            // readme_board_health_commands_work (the server with a simulated fault,
            // spalloc-admin).
            [
                "spalloc-replay ",
                "tools/spalloc-config-from-py ",
                "spalloc-server ",
                "spalloc-admin ",
            ]
            .iter()
            .any(|p| cmd.starts_with(p))
        };
        assert!(
            covered,
            "README command not run by any test or by .ci/run: {cmd}"
        );
    }
}

/// The README's Python example (its one `python` block) is what `.ci/run` runs against the
/// quick start's server: CI extracts it from README.md, so the two cannot drift apart.
#[test]
fn readme_python_example_is_run_by_ci() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let blocks = readme.matches("```python\n").count();
    assert_eq!(blocks, 1, "one Python example in the README");
    assert!(readme.contains("from spalloc_client import Job"));
    let ci = ci_script();
    assert!(
        ci.contains("readme_python_example") && ci.contains("```python"),
        ".ci/run must extract and run the README's Python example"
    );
}

#[test]
fn readme_replay_and_migration_commands_work() {
    let dir = scratch_dir("readme");
    let server = Server::start(&dir, &simple_config(&bmp_net(), json!({})), &[]);
    let mut c = server.client();
    // Job 42 must exist for `--job 42`: make 41 that are cancelled at once, then a real one.
    for _ in 0..41 {
        c.create(json!([9, 9]), json!({}));
    }
    assert_eq!(c.create(json!([]), json!({})), 42);
    c.wait_state(42, 3, std::time::Duration::from_secs(15));
    let journal = server.journal.clone();
    let mut ran = 0;
    for cmd in readme_commands() {
        if let Some(args) = cmd.strip_prefix("spalloc-replay ") {
            let args: Vec<String> = args
                .split_whitespace()
                .map(|a| a.replace("/var/lib/spalloc", journal.to_str().unwrap()))
                .collect();
            if args.iter().any(|a| a == "--salvage") {
                // It makes a new directory next to the journal; there must be none yet.
                assert!(!Path::new(args.last().unwrap()).exists());
            }
            let out = Command::new(env!("CARGO_BIN_EXE_spalloc-replay"))
                .args(&args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "`{cmd}` failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        } else if let Some(args) = cmd.strip_prefix("spalloc-server --check-config ") {
            let args: Vec<String> = args
                .split_whitespace()
                .map(|a| {
                    a.replace(
                        "/etc/spalloc/machines.json",
                        server.config.to_str().unwrap(),
                    )
                })
                .map(|a| a.replace("/var/lib/spalloc", journal.to_str().unwrap()))
                .collect();
            let out = Command::new(env!("CARGO_BIN_EXE_spalloc-server"))
                .arg("--check-config")
                .args(&args)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "`{cmd}` failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("change nothing"), "{stdout}");
            ran += 1;
        } else if let Some(args) = cmd.strip_prefix("tools/spalloc-config-from-py ") {
            let fixture =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/three_board.py");
            let output = dir.join("machines-from-py.json");
            let args: Vec<String> = args
                .split_whitespace()
                .map(|a| a.replace("/etc/spalloc/spalloc.cfg", fixture.to_str().unwrap()))
                .map(|a| a.replace("/etc/spalloc/machines.json", output.to_str().unwrap()))
                .collect();
            let out = Command::new("python3")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/spalloc-config-from-py"))
                .args(&args)
                .env("SPALLOC_SERVER", env!("CARGO_BIN_EXE_spalloc-server"))
                .output()
                .expect("python3 is needed to run tools/spalloc-config-from-py");
            assert!(
                out.status.success(),
                "`{cmd}` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let config = spalloc::config::load(&output).expect("the migrated configuration loads");
            assert_eq!(config.machines.len(), 1);
            ran += 1;
        }
    }
    assert_eq!(
        ran, 10,
        "expected eight spalloc-replay commands, one --check-config and one migration command"
    );
}

/// The board-health commands: the server with a simulated failing board on the example
/// configuration (on a port of its own), then every `spalloc-admin` line in order, word for
/// word through `sh` (only the journal directory differs).
#[test]
fn readme_board_health_commands_work() {
    let dir = scratch_dir("readme-health");
    let commands = readme_commands();
    let server_cmd = commands
        .iter()
        .find(|c| c.starts_with("spalloc-server ") && c.contains("--simulate-fault"))
        .expect("the README shows the server with a simulated fault");
    let words: Vec<&str> = server_cmd.split_whitespace().skip(1).collect();
    assert_eq!(
        &words[..2],
        &["--journal", "/tmp/spalloc-demo"],
        "{server_cmd}"
    );
    let config_at = words.iter().position(|w| *w == "--config").unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join(words[config_at + 1]);
    let rest: Vec<&str> = words[2..]
        .iter()
        .enumerate()
        .filter(|(i, _)| *i + 2 != config_at && *i + 2 != config_at + 1)
        .map(|(_, w)| *w)
        .chain(["--port", "0"])
        .collect();
    let server = Server::start_plain(&dir, Some(&config), &rest);
    let journal = server.journal.to_str().unwrap().to_string();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_spalloc-admin"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    for cmd in commands.iter().filter(|c| c.starts_with("spalloc-admin ")) {
        let line = cmd.replace("/tmp/spalloc-demo", &journal);
        let out = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{cmd}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 6, "only {ran} spalloc-admin commands in the README");
    // What they did: board 5 of frame 1, i.e. (1, 1, 2), is still drained; (3, 1, 2) is back.
    let mut c = server.client();
    let machines = c.call("list_machines", json!([]), json!({}));
    assert_eq!(machines[0]["dead_boards"], json!([[1, 1, 2]]), "{machines}");
}
