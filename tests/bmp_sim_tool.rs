//! The `spalloc-bmp-sim` tool: serves a configuration's BMPs on loopback, answers SCP, and
//! refuses what it must.
mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;
use spalloc::bmp::scp::ClientTimeouts;
use spalloc::bmp::ScpClient;

#[test]
fn serves_every_bmp_of_a_configuration() {
    let dir = scratch_dir("bmp-sim-tool");
    let net = bmp_net();
    let cfg_path = dir.join("machines.json");
    std::fs::write(
        &cfg_path,
        serde_json::to_vec(&simple_config(&net, json!({}))).unwrap(),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spalloc-bmp-sim"))
        .arg("--config")
        .arg(&cfg_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut served = Vec::new();
    while served.len() < 2 {
        let line = lines
            .next()
            .expect("the simulator announces its BMPs")
            .unwrap();
        if let Some(addr) = line.strip_prefix("spalloc-bmp-sim: serving BMP ") {
            served.push(addr.trim().to_string());
        }
    }
    served.sort();
    assert_eq!(
        served,
        vec![format!("{net}.1:17893"), format!("{net}.2:17893")]
    );
    let timeouts = ClientTimeouts {
        power_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_millis(500),
        command_retries: 3,
    };
    for addr in &served {
        let peer: SocketAddr = addr.parse().unwrap();
        let mut scp = ScpClient::connect(peer, timeouts).unwrap();
        let v = scp.version(0).expect("CMD_VER answered");
        assert_eq!(v.name, "BC&MP");
        scp.power(true, 0b111, 0).expect("CMD_POWER answered");
        assert_eq!(
            scp.fpga_read(1, 2, 0x40004).unwrap() & 3,
            2,
            "FPGA 2 reports its ID after power-on"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn refuses_non_loopback_addresses_and_nothing_to_serve() {
    let out = Command::new(env!("CARGO_BIN_EXE_spalloc-bmp-sim"))
        .arg("--address")
        .arg("10.1.2.3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loopback"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_spalloc-bmp-sim"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `--fault` makes a chosen board fail (here: FPGA 1 of board 1 reports a wrong id after
/// each power-on, while board 0 is fine); a malformed spec or a BMP it does not serve is
/// refused with exit status 2.
#[test]
fn injected_board_faults() {
    let dir = scratch_dir("bmp-sim-fault");
    let net = bmp_net();
    let cfg_path = dir.join("machines.json");
    std::fs::write(
        &cfg_path,
        serde_json::to_vec(&simple_config(&net, json!({}))).unwrap(),
    )
    .unwrap();
    for bad in [format!("{net}.1/1=melt"), "127.0.0.99/1=fpga".to_string()] {
        let out = Command::new(env!("CARGO_BIN_EXE_spalloc-bmp-sim"))
            .arg("--config")
            .arg(&cfg_path)
            .arg("--fault")
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("fault"),
            "{out:?}"
        );
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_spalloc-bmp-sim"))
        .arg("--config")
        .arg(&cfg_path)
        .arg("--fault")
        .arg(format!("{net}.1/1=fpga"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut served = 0;
    while served < 2 {
        let line = lines.next().expect("announced").unwrap();
        served += usize::from(line.starts_with("spalloc-bmp-sim: serving BMP "));
    }
    let timeouts = ClientTimeouts {
        power_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_millis(500),
        command_retries: 3,
    };
    let peer: SocketAddr = format!("{net}.1:17893").parse().unwrap();
    let mut scp = ScpClient::connect(peer, timeouts).unwrap();
    scp.power(true, 0b11, 0).expect("CMD_POWER answered");
    assert_eq!(
        scp.fpga_read(0, 1, 0x40004).unwrap() & 3,
        1,
        "board 0 is fine"
    );
    assert_ne!(
        scp.fpga_read(1, 1, 0x40004).unwrap() & 3,
        1,
        "board 1 misreports"
    );
    let _ = child.kill();
    let _ = child.wait();
}
