//! The server driving (simulated) BMPs over real UDP: hardware work interrupted by a crash is
//! redone after the restart.
mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn power_on_interrupted_by_sigkill_is_redone_after_restart() {
    let dir = scratch_dir("bmp-restart");
    let net = bmp_net();
    // A long post-power-on delay keeps the job in state 2 (power) long enough to kill it there.
    let slow = simple_config(
        &net,
        json!({"bmp": {"post_power_on_delay": 30.0, "power_on_timeout": 1.0,
        "command_timeout": 0.2, "command_retries": 1, "request_attempts": 2, "retry_delay": 0.05, "fpga_attempts": 2}}),
    );
    let server = Server::start(&dir, &slow, &[]);
    let mut c = server.client();
    let j = c.create(json!([1, 1]), json!({}));
    let s = c.state(j);
    assert_eq!(
        (s["state"].as_u64(), s["power"].as_bool()),
        (Some(2), Some(true))
    );
    server.kill9();

    // Same machines, fast BMP timings: only the bmp block differs, so the job is kept.
    let fast = simple_config(&net, json!({}));
    let mut server = Server::start(&dir, &fast, &[]);
    let mut c = server.client();
    let s = c.wait_state(j, 3, Duration::from_secs(15));
    assert_eq!(s["power"], true);
    assert!(
        server
            .wait_for_log("re-issuing 1 BMP requests", Duration::from_secs(5))
            .is_some(),
        "{}",
        server.log_text()
    );
    assert_eq!(
        c.call("get_job_machine_info", json!([j]), json!({}))["boards"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}
