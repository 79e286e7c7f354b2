//! spalloc-server over real TCP: every command's reply shape, and the error cases.
mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn start(tag: &str) -> (Server, std::path::PathBuf) {
    let dir = scratch_dir(tag);
    let server = Server::start(&dir, &simple_config(&bmp_net(), json!({})), &[]);
    (server, dir)
}

#[test]
fn version_and_every_command_shape() {
    let (server, _dir) = start("shapes");
    let mut c = server.client();
    let v = c.call("version", json!([]), json!({}));
    let parts: Vec<u64> = v
        .as_str()
        .unwrap()
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        parts.len() == 3 && (0, 4, 0) <= (parts[0], parts[1], parts[2]) && parts[0] < 2,
        "{v}"
    );
    // The "client" keyword is ignored, as by the original.
    assert_eq!(c.call("version", json!([]), json!({"client": "x"})), v);

    let j = c.create(json!([]), json!({"tags": ["default"]}));
    let s = c.wait_state(j, 3, Duration::from_secs(10));
    assert_eq!(s["power"], true);
    assert_eq!(s["keepalive"], 60.0);
    assert_eq!(s["reason"], Value::Null);
    assert_eq!(s["keepalivehost"], "127.0.0.1");
    assert!(s["start_time"].as_f64().unwrap() > 1.6e9);
    let keys: Vec<&String> = s.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 6);

    let info = c.call("get_job_machine_info", json!([j]), json!({}));
    assert_eq!(
        info,
        json!({"width": 8, "height": 8, "connections": [[[0, 0], "11.0.0.0"]],
                            "machine_name": "m", "boards": [[0, 0, 0]]})
    );
    assert_eq!(c.call("job_keepalive", json!([j]), json!({})), Value::Null);
    assert_eq!(
        c.call("job_keepalive", json!([999]), json!({})),
        Value::Null
    );

    let q = c.create(json!([1, 2]), json!({"require_torus": true}));
    assert_eq!(c.state(q)["state"], 1);
    assert_eq!(
        c.call("get_job_machine_info", json!([q]), json!({})),
        json!({"width": null, "height": null, "connections": null, "machine_name": null, "boards": null})
    );
    let bad = c.create(json!([2, 2]), json!({}));
    assert_eq!(
        c.state(bad),
        json!({"state": 4, "power": null, "keepalive": null,
        "reason": "Cancelled: No suitable machines available.", "start_time": null, "keepalivehost": null})
    );
    assert_eq!(
        c.state(12345),
        json!({"state": 0, "power": null, "keepalive": null,
        "reason": null, "start_time": null, "keepalivehost": null})
    );

    let jobs = c.call("list_jobs", json!([]), json!({}));
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["args"], json!([]));
    assert_eq!(jobs[0]["kwargs"], json!({"tags": ["default"]}));
    assert_eq!(jobs[0]["allocated_machine_name"], "m");
    assert_eq!(jobs[0]["boards"], json!([[0, 0, 0]]));
    assert_eq!(jobs[1]["args"], json!([1, 2]));
    assert_eq!(jobs[1]["kwargs"], json!({"require_torus": true}));
    assert_eq!(jobs[1]["boards"], Value::Null);
    assert_eq!(jobs[1]["state"], 1);

    let ms = c.call("list_machines", json!([]), json!({}));
    assert_eq!(
        ms,
        json!([{"name": "m", "tags": ["default"], "width": 1, "height": 2,
                            "dead_boards": [], "dead_links": []}])
    );
    assert_eq!(
        c.call("get_board_position", json!(["m", 0, 1, 2]), json!({})),
        json!([0, 1, 2])
    );
    assert_eq!(
        c.call("get_board_position", json!(["nope", 0, 0, 0]), json!({})),
        Value::Null
    );
    assert_eq!(
        c.call("get_board_at_position", json!(["m", 0, 1, 2]), json!({})),
        json!([0, 1, 2])
    );
    assert_eq!(
        c.call("get_board_at_position", json!(["m", 0, 9, 2]), json!({})),
        Value::Null
    );
    let w = c.call(
        "where_is",
        json!([]),
        json!({"machine": "m", "x": 0, "y": 0, "z": 0}),
    );
    assert_eq!(
        w,
        json!({"machine": "m", "logical": [0, 0, 0], "physical": [0, 0, 0], "chip": [0, 0],
                         "board_chip": [0, 0], "job_id": j, "job_chip": [0, 0]})
    );
    let w = c.call(
        "where_is",
        json!([]),
        json!({"job_id": j, "chip_x": 1, "chip_y": 1}),
    );
    assert_eq!(w["board_chip"], json!([1, 1]));
    let w = c.call(
        "where_is",
        json!([]),
        json!({"machine": "m", "cabinet": 0, "frame": 1, "board": 1}),
    );
    assert_eq!(w["logical"], json!([0, 1, 1]));
    let w = c.call(
        "where_is",
        json!([]),
        json!({"machine": "m", "chip_x": 8, "chip_y": 4}),
    );
    assert_eq!(w["logical"], json!([0, 0, 1]));

    assert_eq!(
        c.call("power_off_job_boards", json!([j]), json!({})),
        Value::Null
    );
    let s = c.wait_state(j, 3, Duration::from_secs(10));
    assert_eq!(s["power"], false);
    assert_eq!(
        c.call("power_on_job_boards", json!([j]), json!({})),
        Value::Null
    );
    assert_eq!(c.wait_state(j, 3, Duration::from_secs(10))["power"], true);
    assert_eq!(
        c.call("destroy_job", json!([j]), json!({"reason": "finished"})),
        Value::Null
    );
    assert_eq!(c.state(j)["reason"], "finished");
    assert_eq!(c.call("destroy_job", json!([q]), json!({})), Value::Null);
    assert_eq!(c.state(q)["reason"], "Cancelled: ");
    for cmd in [
        "notify_job",
        "no_notify_job",
        "notify_machine",
        "no_notify_machine",
    ] {
        assert_eq!(c.call(cmd, json!([]), json!({})), Value::Null);
    }
}

#[test]
fn errors_keep_the_connection_open() {
    let (server, _dir) = start("errors");
    let mut c = server.client();
    let r = c.call_raw("get_job_state", json!([]), json!({}));
    assert_eq!(
        r["exception"],
        "SpallocServer.get_job_state() missing 1 required positional argument: 'job_id'"
    );
    let r = c.call_raw("get_job_state", json!([1, 2]), json!({}));
    assert_eq!(
        r["exception"],
        "SpallocServer.get_job_state() takes 3 positional arguments but 4 were given"
    );
    let r = c.call_raw("create_job", json!([]), json!({}));
    assert_eq!(r["exception"], "owner must be specified for all jobs");
    let r = c.call_raw(
        "create_job",
        json!([]),
        json!({"owner": "me", "keepalive": "abc"}),
    );
    assert_eq!(r["exception"], "could not convert string to float: 'abc'");
    let r = c.call_raw("where_is", json!([]), json!({"machine": "m", "x": 0}));
    assert!(
        r["exception"]
            .as_str()
            .unwrap()
            .starts_with("Invalid arguments:"),
        "{r}"
    );
    let r = c.call_raw("no_such_command", json!([]), json!({}));
    assert!(
        r["exception"].as_str().unwrap().contains("no_such_command"),
        "{r}"
    );
    // §B.6: machine and tags together is an error and consumes no job id (no zombie job).
    let r = c.call_raw(
        "create_job",
        json!([]),
        json!({"owner": "me", "machine": "m", "tags": ["x"]}),
    );
    assert_eq!(
        r["exception"],
        "Only one of machine and tags may be specified for a job."
    );
    let r = c.call_raw(
        "create_job",
        json!([1, 1, 1]),
        json!({"owner": "me", "require_torus": true}),
    );
    assert_eq!(
        r["exception"],
        "require_torus must be False when allocating boards."
    );
    assert_eq!(c.call("list_jobs", json!([]), json!({})), json!([]));
    assert_eq!(c.create(json!([]), json!({})), 1);
    // Blank lines are skipped; pipelined commands are answered in order.
    c.send_raw(
        b"\n\n{\"command\": \"version\"}\n{\"command\": \"get_job_state\", \"args\": [1]}\n",
    );
    assert!(c.reply().unwrap()["return"].is_string());
    assert!(c.reply().unwrap()["return"].is_object());
    // Pipelined around a change: a read-only command before it may be answered before the
    // change's fsync, one after it must wait and see it; the replies stay in order.
    c.send_raw(
        b"{\"command\": \"list_jobs\"}\n\
          {\"command\": \"create_job\", \"args\": [1], \"kwargs\": {\"owner\": \"me\"}}\n\
          {\"command\": \"list_jobs\"}\n{\"command\": \"version\"}\n",
    );
    let before = c.reply().unwrap()["return"].as_array().unwrap().len();
    let id = c.reply().unwrap()["return"].as_u64().unwrap();
    let after = c.reply().unwrap()["return"].as_array().unwrap().clone();
    assert_eq!(after.len(), before + 1);
    assert_eq!(after.last().unwrap()["job_id"], id);
    assert!(c.reply().unwrap()["return"].is_string());
}

#[test]
fn evil_calls_close_only_their_own_connection() {
    let (server, _dir) = start("evil");
    let mut bystander = server.client();
    for evil in [
        &b"{\n"[..],
        b"{}\n",
        b"{\"command\": 123}\n",
        b"[1, 2]\n",
        b"\"version\"\n",
        b"{\"command\": \"version\", \"args\": \"hoho\"}\n",
        b"{\"command\": \"version\", \"kwargs\": \"hoho\"}\n",
        b"{\"command\": \"version\", \"args\": null}\n",
        b"\xff\xfe\xfd garbage\n",
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
    ] {
        let mut c = server.client();
        c.send_raw(evil);
        let r = c.read_line().unwrap_or_else(|| panic!("no reply to {evil:?}"));
        assert!(r["exception"].is_string(), "{evil:?} -> {r}");
        assert!(c.read_line().is_none(), "connection left open after {evil:?}");
        assert!(bystander.call("version", json!([]), json!({})).is_string());
    }
    // A huge line without a newline is refused once it passes the limit.
    let mut c = server.client();
    c.send_raw(&vec![b'x'; 70 * 1024]);
    let r = c.read_line().unwrap();
    assert!(r["exception"].as_str().unwrap().contains("too long"), "{r}");
    assert!(c.read_line().is_none());
    // A client that sends and disconnects without reading does not disturb anyone.
    let mut rude = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    std::io::Write::write_all(&mut rude, b"{\"command\": \"list_machines\"}\n").unwrap();
    drop(rude);
    assert!(bystander.call("list_jobs", json!([]), json!({})).is_array());
    let mut buf = [0u8; 1];
    bystander
        .stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    assert!(
        bystander.stream.read(&mut buf).is_err(),
        "nothing unsolicited"
    );
}
