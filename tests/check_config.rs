//! `spalloc-server --check-config FILE [--journal DIR]` against the real binary: every problem
//! of an invalid file listed; a preview against a running server's journal that names
//! exactly the jobs the reload then destroys; and the reload's log in the same terms.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn check(file: &Path, journal: Option<&Path>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spalloc-server"));
    cmd.arg("--check-config").arg(file);
    if let Some(j) = journal {
        cmd.arg("--journal").arg(j);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn two_machines(net: &str) -> Value {
    let mut cfg = simple_config(net, json!({}));
    cfg["machines"].as_array_mut().unwrap().push(json!(
        {"name": "n", "tags": ["other"], "single_board": {"bmp": format!("{net}.3"), "ip": "11.0.9.1"}}
    ));
    cfg
}

#[test]
fn invalid_file_lists_every_problem() {
    let dir = scratch_dir("check-invalid");
    let file = dir.join("bad.json");
    std::fs::write(
        &file,
        r#"{"prot": 1, "machines": [{"name": "a", "single_board": {"bmp": "10.0.0.1", "ip": "10.0.0.2"}},
                                   {"name": "a", "single_board": {"bmp": "10.0.0.3", "ip": "10.0.0.4"}}]}"#,
    )
    .unwrap();
    let (code, out, err) = check(&file, None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("NOT valid (2 problems)"), "{err}");
    assert!(err.contains("prot"), "{err}");
    assert!(err.contains("machines[1]"), "{err}");

    let good = dir.join("good.json");
    std::fs::write(
        &good,
        r#"{"machines": [{"name": "a", "single_board": {"bmp": "10.0.0.1", "ip": "10.0.0.2"}}]}"#,
    )
    .unwrap();
    let (code, out, err) = check(&good, None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("is valid: 1 machines, 1 working boards"),
        "{out}"
    );

    // A journal that cannot be read is a failure too, named.
    let (code, _, err) = check(&good, Some(&dir.join("no-such-journal")));
    assert_eq!(code, 1);
    assert!(err.contains("cannot read the journal"), "{err}");
}

#[test]
fn preview_predicts_exactly_the_jobs_a_reload_destroys() {
    let dir = scratch_dir("check-preview");
    let net = bmp_net();
    let cfg = two_machines(&net);
    let mut server = Server::start(&dir, &cfg, &[]);
    let mut c = server.client();
    let on_m: Vec<u64> = (0..2)
        .map(|_| c.create(json!([1]), json!({"keepalive": null, "machine": "m"})))
        .collect();
    let on_n = c.create(json!([1]), json!({"keepalive": null, "machine": "n"}));
    for id in on_m.iter().chain([&on_n]) {
        c.wait_state(*id, 3, WAIT);
    }

    // The same file: nothing changes.
    let (code, out, err) = check(&server.config, Some(&server.journal));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("change nothing"), "{out}");

    // m's board IPs change, n gets a tag, a machine is added; the port stays.
    let mut new = cfg.clone();
    for b in new["machines"][0]["boards"].as_array_mut().unwrap() {
        let ip = b["ip"].as_str().unwrap().replace("11.0.", "12.0.");
        b["ip"] = json!(ip);
    }
    new["machines"][1]["tags"] = json!(["other", "more"]);
    new["machines"].as_array_mut().unwrap().push(json!(
        {"name": "extra", "single_board": {"bmp": format!("{net}.4"), "ip": "11.0.8.1"}}
    ));
    let new_file = dir.join("new.json");
    std::fs::write(&new_file, serde_json::to_vec_pretty(&new).unwrap()).unwrap();
    let (code, out, err) = check(&new_file, Some(&server.journal));
    assert_eq!(code, 0, "{out}{err}");
    let expect_m = format!(
        "replaced m (board IPs changed): destroyed jobs {}, {}",
        on_m[0], on_m[1]
    );
    assert!(out.contains(&expect_m), "{out}");
    assert!(out.contains("changed n (tags): jobs kept"), "{out}");
    assert!(out.contains("added extra"), "{out}");
    assert!(
        !out.contains("port"),
        "an unchanged port is not a change: {out}"
    );
    for id in &on_m {
        assert!(
            out.contains(&format!("  job {id} (owner")),
            "job {id} listed: {out}"
        );
    }
    assert!(!out.contains(&format!("  job {on_n} (")), "{out}");

    // Now really reload: exactly those jobs end, and the log says so in the same words.
    std::fs::copy(&new_file, &server.config).unwrap();
    server.signal("HUP");
    let line = server
        .wait_for_log("configuration applied: 3 machines", WAIT)
        .unwrap_or_else(|| panic!("no reload; log:\n{}", server.log_text()));
    assert!(line.contains(&expect_m), "{line}");
    assert!(line.contains("added extra"), "{line}");
    for id in &on_m {
        assert_eq!(c.state(*id)["state"], 4, "job {id} destroyed");
    }
    assert_eq!(c.state(on_n)["state"], 3, "job on n kept");
    assert!(
        !server.log_text().contains("listen port"),
        "unchanged listen address reported: {}",
        server.log_text()
    );
    assert!(server.stop().success());
}
