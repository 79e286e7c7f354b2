//! Every binary accepts `-h` (as well as `--help`) and prints its usage, exit status 0; a
//! bad command line is exit status 2 in every one (`spalloc::cli`).
mod common;

use std::process::Command;

#[test]
fn every_binary_accepts_dash_h() {
    for bin in [
        env!("CARGO_BIN_EXE_spalloc-server"),
        env!("CARGO_BIN_EXE_spalloc-replay"),
        env!("CARGO_BIN_EXE_spalloc-bench"),
        env!("CARGO_BIN_EXE_spalloc-bmp-sim"),
        env!("CARGO_BIN_EXE_spalloc-admin"),
    ] {
        let out = Command::new(bin).arg("--no-such-option").output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bin} --no-such-option: {out:?}"
        );
        for flag in ["-h", "--help"] {
            let out = Command::new(bin).arg(flag).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{bin} {flag}: {out:?}");
            assert!(text.starts_with("Usage: "), "{bin} {flag}: {text}");
        }
    }
    // The Python tool too (where python3 exists).
    let tool =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/spalloc-config-from-py");
    match Command::new("python3").arg(&tool).arg("-h").output() {
        Ok(out) => {
            assert!(out.status.success());
            assert!(String::from_utf8_lossy(&out.stdout).starts_with("usage: "));
        }
        Err(_) => common::cannot_run("python3 not found: spalloc-config-from-py -h not checked"),
    }
}
