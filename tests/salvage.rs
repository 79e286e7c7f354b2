//! A way out of a corrupt journal: the server refuses a journal damaged in the middle;
//! `spalloc-replay DIR --salvage OUT` writes a new one with every record before the damage,
//! says exactly what was lost, and the server starts from it and serves.
mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// Offsets of every frame's payload in a segment file (20-byte header, then
/// `u32 len | u32 crc | payload` frames).
fn frame_payloads(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut pos = 20;
    let mut out = Vec::new();
    while pos + 8 <= buf.len() {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 || pos + 8 + len > buf.len() {
            break;
        }
        out.push((pos + 8, len));
        pos += 8 + len;
    }
    out
}

#[test]
fn salvaged_journal_starts_and_serves() {
    let dir = scratch_dir("salvage");
    let cfg = simple_config(&bmp_net(), json!({}));
    let server = Server::start(&dir, &cfg, &[]);
    let journal = server.journal.clone();
    let mut c = server.client();
    let first = c.create(json!([1]), json!({"keepalive": null, "owner": "kept"}));
    c.wait_state(first, 3, WAIT);
    let mut later = Vec::new();
    for _ in 0..3 {
        later.push(c.create(json!([1]), json!({"keepalive": null, "owner": "late"})));
    }
    drop(c);
    server.kill9();

    // Damage a record in the middle of the (only, last) segment: valid records follow it,
    // so it is corruption, not a torn tail, and the server must refuse.
    let mut segments: Vec<_> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    assert_eq!(segments.len(), 1);
    let mut buf = std::fs::read(&segments[0]).unwrap();
    let frames = frame_payloads(&buf);
    let total = frames.len() as u64;
    // The record creating the second job: find it by its owner.
    let victim = frames
        .iter()
        .position(|(at, len)| buf[*at..*at + *len].windows(4).any(|w| w == b"late"))
        .expect("a record of a 'late' job");
    let (at, _) = frames[victim];
    buf[at] ^= 0xff;
    std::fs::write(&segments[0], &buf).unwrap();

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_spalloc-server"))
        .arg("--journal")
        .arg(&journal)
        .arg("--port")
        .arg("0")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cannot open the journal"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let out_dir = scratch_dir("salvaged");
    let out = out_dir.join("journal");
    let (code, text, err) = replay(&journal, &["--salvage", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}{err}");
    let kept = victim as u64; // records #1..#victim (the damaged one is record victim + 1)
    assert!(
        text.contains(&format!("Kept: records #1..#{kept} ({kept} records)")),
        "{text}"
    );
    assert!(text.contains("Damage: "), "{text}");
    assert!(
        text.contains(&format!("Lost: every record after #{kept}")),
        "{text}"
    );
    let (code, verdict, _) = replay(&journal, &["--verify"]);
    assert_eq!(code, 1, "the original is left as it was: {verdict}");
    // Salvaging into a directory that is not empty is refused, and changes nothing.
    let (code, _, err) = replay(&journal, &["--salvage", out.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("must be new or empty"), "{err}");

    // JSON says the same, and names the bytes left out.
    let out2 = scratch_dir("salvaged-json").join("journal");
    let j = replay_json(&journal, &["--salvage", out2.to_str().unwrap()]);
    assert_eq!(j["last_seq"], kept);
    assert_eq!(j["dropped"][0]["offset"].as_u64(), Some((at - 8) as u64));
    assert!(total > kept + 1);

    // The salvaged journal verifies, replays, and a server starts from it and serves.
    let v = replay_json(&out, &["--verify"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["last_seq"], kept);
    let mut server = Server::start_with(&out_dir, None, &["--port", "0"]);
    assert!(
        server
            .wait_for_log("WARNING new journal", Duration::ZERO)
            .is_none(),
        "{}",
        server.log_text()
    );
    let mut c = server.client();
    assert_eq!(
        c.state(first)["state"],
        3,
        "the job before the damage is kept"
    );
    let next = c.create(json!([1]), json!({"keepalive": null}));
    c.wait_state(next, 3, WAIT);
    assert!(server.stop().success());
}
