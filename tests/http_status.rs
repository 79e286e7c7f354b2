//! The HTTP port (`--http`): the JSON API, the metrics, the event stream and every bound,
//! against the real binary over real TCP. (The page itself is tested in a real browser by
//! e2e/test_status_page.py.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::http::{get, http_port, knock, raw, sample, wait_until, Subscriber, WAIT};
use common::{bmp_net, scratch_dir, simple_config, Server};
use serde_json::{json, Value};

/// A server with its HTTP port on an ephemeral loopback port; returns it and that port.
fn start(tag: &str, config: Value, extra: &[&str]) -> (Server, u16) {
    let dir = scratch_dir(tag);
    let mut args = vec!["--http", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut server = Server::start(&dir, &config, &args);
    let port = http_port(&mut server);
    (server, port)
}

#[test]
fn the_api_shows_machines_jobs_and_ended_jobs() {
    let net = bmp_net();
    let (server, port) = start("http-api", simple_config(&net, json!({})), &[]);

    let machines = get(port, "/api/machines");
    assert_eq!(machines.status, 200);
    assert_eq!(machines.header("content-type"), Some("application/json"));
    let machines = machines.json();
    assert_eq!(machines.as_array().unwrap().len(), 1);
    let m = &machines[0];
    assert_eq!(m["name"], "m");
    let boards = m["boards"].as_array().unwrap();
    assert_eq!(boards.len(), 6, "every board of the 1x2 machine");
    let b = boards
        .iter()
        .find(|b| b["logical"] == json!([0, 1, 2]))
        .unwrap();
    assert_eq!(b["physical"], json!([0, 1, 2]));
    assert_eq!(b["ip"], "11.0.1.2");
    assert_eq!(b["state"], "free");

    // Client text with every character JSON must escape, and HTML's.
    let owner = "<script>\"quote\"\\ \n</script> & é";
    let mut c = server.client();
    let id = c.create(json!([1, 1]), json!({"owner": owner, "keepalive": 30.0}));
    c.wait_state(id, 3, WAIT);
    let jobs = get(port, "/api/jobs").json();
    let job = &jobs[0];
    assert_eq!(job["job_id"], id);
    assert_eq!(job["owner"], owner, "the owner round-trips exactly");
    assert_eq!(job["state"], "ready");
    assert_eq!(job["power"], true);
    assert_eq!(job["machine"], "m");
    assert_eq!(job["boards"].as_array().unwrap().len(), 3);
    assert_eq!(job["keepalive_s"], 30.0);
    assert!(job["keepalive_until_us"].as_u64().unwrap() > job["start_time_us"].as_u64().unwrap());
    assert_eq!(get(port, &format!("/api/jobs/{id}")).json(), *job);
    // Its boards show whose they are.
    let held = get(port, "/api/machines").json()[0]["boards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["job"] == id && b["state"] == "job")
        .count();
    assert_eq!(held, 3);

    c.call("destroy_job", json!([id, "done <b>"]), json!({}));
    let ended = get(port, &format!("/api/jobs/{id}")).json();
    assert_eq!(
        ended,
        json!({"job_id": id, "state": "destroyed", "reason": "done <b>", "end_reason": "owner"})
    );
    assert_eq!(get(port, "/api/jobs/999").status, 404);
    assert_eq!(get(port, "/api/jobs/x").status, 404);
    assert_eq!(get(port, "/nothing").status, 404);
    // The page and its script.
    let page = get(port, "/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    assert!(page.text().contains("/status.js"));
    assert_eq!(get(port, "/status.js").status, 200);
    // HEAD: the headers alone.
    let head = raw(port, b"HEAD /api/jobs HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

/// BMP requests that succeeded, over every BMP.
/// Refusals and disconnections are counted by reason, every reason's series there from the
/// start at zero, and the journal's health is shown.
#[test]
fn metrics_count_refusals_and_disconnections() {
    let net = bmp_net();
    let (server, port) = start(
        "http-metrics-refusals",
        simple_config(&net, json!({})),
        &[
            "--limit",
            "jobs_per_owner_max=1",
            "--limit",
            "clients_max=1",
        ],
    );
    let m = get(port, "/metrics").text();
    for series in [
        "spalloc_commands_refused_total{reason=\"journal\"}",
        "spalloc_commands_refused_total{reason=\"limit\"}",
        "spalloc_clients_disconnected_total{reason=\"output_unread\"}",
        "spalloc_clients_disconnected_total{reason=\"input_unfinished\"}",
        "spalloc_clients_disconnected_total{reason=\"line_too_long\"}",
        "spalloc_clients_disconnected_total{reason=\"not_a_request\"}",
        "spalloc_connections_refused_total",
        "spalloc_journal_write_failures_total",
        "spalloc_journal_failing",
    ] {
        assert_eq!(sample(&m, series), Some(0.0), "{series}:\n{m}");
    }

    // Past jobs_per_owner_max: refused by a limit.
    let mut c = server.client();
    c.create(json!([]), json!({"owner": "lab"}));
    let refused = c.call_raw("create_job", json!([]), json!({"owner": "lab"}));
    assert!(refused.get("exception").is_some(), "{refused}");
    // A second client while the first is connected: the server is full.
    let mut second = server.client();
    let full = second.read_line();
    assert!(
        full.as_ref().and_then(|v| v.get("exception")).is_some(),
        "{full:?}"
    );
    // A line that is not a request: answered, then disconnected.
    c.send_raw(b"not json\n");
    assert!(c
        .read_line()
        .and_then(|v| v.get("exception").cloned())
        .is_some());
    assert_eq!(c.read_line(), None, "still connected after a framing error");
    // A line longer than the protocol allows, from a client that may now connect.
    wait_until("the first client to be gone", || {
        sample(&get(port, "/metrics").text(), "spalloc_connected_clients") == Some(0.0)
    });
    let mut long = server.client();
    long.send_raw(&vec![b'x'; 70 * 1024]);
    long.send_raw(b"\n");
    assert!(long
        .read_line()
        .and_then(|v| v.get("exception").cloned())
        .is_some());
    assert_eq!(
        long.read_line(),
        None,
        "still connected after a line too long"
    );

    let m = get(port, "/metrics").text();
    let count = |series: &str| sample(&m, series).unwrap_or_else(|| panic!("{series}:\n{m}"));
    assert_eq!(
        count("spalloc_commands_refused_total{reason=\"limit\"}"),
        1.0
    );
    assert_eq!(
        count("spalloc_commands_refused_total{reason=\"journal\"}"),
        0.0
    );
    assert_eq!(count("spalloc_connections_refused_total"), 1.0);
    assert_eq!(
        count("spalloc_clients_disconnected_total{reason=\"not_a_request\"}"),
        1.0
    );
    assert_eq!(
        count("spalloc_clients_disconnected_total{reason=\"line_too_long\"}"),
        1.0
    );
    assert_eq!(count("spalloc_journal_failing"), 0.0);
    assert!(m.contains("# TYPE spalloc_commands_refused counter"), "{m}");
}

fn bmp_requests_ok(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("spalloc_bmp_requests_total{") && l.contains("outcome=\"ok\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn metrics_count_what_happened() {
    let net = bmp_net();
    let (server, port) = start("http-metrics", simple_config(&net, json!({})), &[]);
    let mut c = server.client();
    let id = c.create(json!([1, 1]), json!({"keepalive": 0.3}));
    c.wait_state(id, 3, WAIT);
    // Expires (nothing keeps it alive), and its boards are powered off (the power-off is
    // counted when the BMP answers, which can be after the job has ended).
    wait_until(
        "the keepalive to expire and the boards to be powered off",
        || {
            let m = get(port, "/metrics").text();
            sample(&m, "spalloc_jobs_ended_total{reason=\"keepalive_expired\"}") == Some(1.0)
                && bmp_requests_ok(&m) >= 2.0
        },
    );
    let id2 = c.create(json!([]), json!({}));
    c.call("destroy_job", json!([id2]), json!({}));
    let m = get(port, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let m = m.text();
    assert!(m.ends_with("# EOF\n"));
    assert_eq!(
        sample(&m, "spalloc_jobs_ended_total{reason=\"owner\"}"),
        Some(1.0)
    );
    assert!(m.contains("# TYPE spalloc_jobs_ended counter"));
    assert!(sample(&m, "spalloc_events_journaled_total").unwrap() >= 4.0);
    assert_eq!(sample(&m, "spalloc_connected_clients"), Some(1.0));
    assert_eq!(sample(&m, "spalloc_jobs{state=\"ready\"}"), Some(0.0));
    let total: f64 = ["free", "job", "powering", "powering_off", "dead", "drained"]
        .iter()
        .map(|s| {
            sample(
                &m,
                &format!("spalloc_boards{{machine=\"m\",state=\"{s}\"}}"),
            )
            .unwrap_or_else(|| panic!("no boards series for {s}:\n{m}"))
        })
        .sum();
    assert_eq!(total, 6.0);
    // Power on and off went to both frames' BMPs, and were timed.
    assert!(bmp_requests_ok(&m) >= 2.0, "{m}");
    assert!(m.contains("# TYPE spalloc_bmp_request_duration_seconds histogram"));
    assert!(m.contains("spalloc_bmp_request_duration_seconds_bucket{"));
    assert!(sample(&m, "spalloc_journal_fsync_duration_seconds_count").unwrap() >= 1.0);
    assert!(m.contains("spalloc_build_info{version=\""));
}

/// A board taken out of service shows as drained on the page's API and in the metrics, and
/// as its job's while a job still holds it.
#[test]
fn drained_boards_are_shown_as_drained() {
    let net = bmp_net();
    let (server, port) = start("http-drained", simple_config(&net, json!({})), &[]);
    let board_state = |b: [u32; 3]| {
        let machines = get(port, "/api/machines").json();
        let board = machines[0]["boards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["logical"] == json!(b))
            .cloned()
            .unwrap();
        (board["state"].clone(), board["drained"].clone())
    };
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_spalloc-admin"))
            .arg("--journal")
            .arg(&server.journal)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "spalloc-admin {args:?}: {out:?}");
    };
    assert_eq!(board_state([0, 0, 1]), (json!("free"), json!(false)));
    admin(&["drain", "m", "0", "0", "1", "--reason", "fan broken"]);
    assert_eq!(board_state([0, 0, 1]), (json!("drained"), json!(true)));
    let m = get(port, "/metrics").text();
    assert_eq!(
        sample(&m, "spalloc_boards{machine=\"m\",state=\"drained\"}"),
        Some(1.0),
        "{m}"
    );
    // A job on a board drained under it keeps it; the board shows the job's state.
    admin(&["undrain", "m", "0", "0", "1"]);
    let mut c = server.client();
    let id = c.create(json!([0, 0, 1]), json!({}));
    c.wait_state(id, 3, WAIT);
    admin(&["drain", "m", "0", "0", "1", "--reason", "red LED"]);
    assert_eq!(board_state([0, 0, 1]), (json!("job"), json!(true)));
}

#[test]
fn the_event_stream_pushes_every_change() {
    let net = bmp_net();
    let (server, port) = start("http-sse", simple_config(&net, json!({})), &[]);
    let mut sub = Subscriber::connect(port);
    let first = sub.next();
    assert_eq!(first["facility"]["jobs"], json!([]));
    assert_eq!(
        first["journal"],
        json!({"failing": false, "since_us": null}),
        "the journal is healthy"
    );
    assert_eq!(
        first["facility"]["machines"][0]["boards"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let mut c = server.client();
    let id = c.create(json!([1, 2]), json!({"owner": "alice"}));
    let seen = sub.until(|v| v["facility"]["jobs"][0]["job_id"] == id);
    assert_eq!(seen["facility"]["jobs"][0]["owner"], "alice");
    // A job waiting for boards is queued, with its place.
    let queued = c.create(json!([1, 1]), json!({"owner": "bob"}));
    let seen = sub.until(|v| v["facility"]["machines"][0]["queue"] == json!([queued]));
    assert_eq!(seen["facility"]["jobs"][1]["state"], "queued");
    c.call("destroy_job", json!([id, "bye"]), json!({}));
    let seen = sub.until(|v| v["ended"][0]["job_id"] == id);
    assert_eq!(seen["ended"][0]["reason"], "owner");
    assert_eq!(seen["ended"][0]["text"], "bye");
    let m = get(port, "/metrics").text();
    assert_eq!(sample(&m, "spalloc_status_subscribers"), Some(1.0));
}

#[test]
fn bad_and_oversized_requests_get_errors() {
    let net = bmp_net();
    let (server, port) = start("http-bad", simple_config(&net, json!({})), &[]);
    let post = raw(
        port,
        b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post.status, 405);
    assert_eq!(raw(port, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n").status, 400);
    // Headers beyond the size bound: refused without waiting for their end.
    let mut big = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
    big.resize(big.len() + 9 * 1024, b'a');
    assert_eq!(raw(port, &big).status, 431);
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..40 {
        many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(raw(port, &many).status, 431);
    // The protocol port and the HTTP port both still serve.
    assert_eq!(get(port, "/api/jobs").status, 200);
    let mut c = server.client();
    assert_eq!(c.job_ids(), Vec::<u64>::new());
}

#[test]
fn connections_and_subscribers_are_bounded() {
    let net = bmp_net();
    let (_server, port) = start(
        "http-bounds",
        simple_config(&net, json!({})),
        &["--http-max-connections", "3", "--http-max-subscribers", "1"],
    );
    let _one = Subscriber::connect(port);
    // A second subscriber is turned away, and so is a connection past the limit.
    assert_eq!(get(port, "/events").status, 503);
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // (Once the idle connections are accepted they hold their slots, and the next one is
    // told why it is refused; before that it is accepted and closed for sending nothing.)
    wait_until("a connection past the limit to be refused", || {
        knock(port) == Some(503)
    });
    drop(idle);
    wait_until("the slots to free", || knock(port).is_none());
    assert_eq!(get(port, "/api/jobs").status, 200);
}

#[test]
fn a_subscriber_that_stops_reading_is_dropped() {
    // A machine big enough that each event is large (10x10 triads: 300 boards).
    let net = bmp_net();
    let mut boards = Vec::new();
    for x in 0..10u32 {
        for y in 0..10u32 {
            for z in 0..3u32 {
                let n = (x * 10 + y) * 3 + z;
                boards.push(
                    json!({"x": x, "y": y, "z": z, "cabinet": 0, "frame": n / 24,
                                   "board": n % 24, "ip": format!("11.1.{}.{}", n / 200, n % 200)}),
                );
            }
        }
    }
    let bmps: Vec<Value> = (0..13)
        .map(|f| json!({"cabinet": 0, "frame": f, "address": format!("{net}.{}", f + 1)}))
        .collect();
    let config = simple_config(
        &net,
        json!({"machines": [{"name": "big", "width": 10, "height": 10, "bmps": bmps, "boards": boards}]}),
    );
    let (server, port) = start(
        "http-slow",
        config,
        &["--http-subscriber-backlog-bytes", "100000"],
    );
    // A subscriber with a tiny receive window, that never reads after its headers.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    socket.connect(&addr.into()).unwrap();
    let mut slow: TcpStream = socket.into();
    slow.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let metrics = || get(port, "/metrics").text();
    wait_until("the subscriber to be counted", || {
        sample(&metrics(), "spalloc_status_subscribers") == Some(1.0)
    });
    // Changes, each pushing ~30 KB, until the server gives up on it.
    let mut c = server.client();
    wait_until("the slow subscriber to be dropped", || {
        let id = c.create(json!([]), json!({}));
        c.call("destroy_job", json!([id]), json!({}));
        sample(&metrics(), "spalloc_status_subscribers") == Some(0.0)
    });
    // What it was sent ends: the connection is closed, not left hanging.
    slow.set_read_timeout(Some(WAIT)).unwrap();
    let mut sink = Vec::new();
    slow.read_to_end(&mut sink).expect("closed by the server");
    assert!(sink.len() < 100_000 + 4 * 1024 * 1024);
    // Everyone else is still served.
    let mut fast = Subscriber::connect(port);
    assert_eq!(fast.next()["facility"]["machines"][0]["name"], "big");
}

#[test]
fn http_is_off_unless_asked_and_loopback_unless_allowed() {
    let net = bmp_net();
    let dir = scratch_dir("http-off");
    let server = Server::start(&dir, &simple_config(&net, json!({})), &[]);
    assert!(
        !server.log_text().contains("status page"),
        "{}",
        server.log_text()
    );
    drop(server);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spalloc-server"))
        .args([
            "--journal",
            dir.join("j2").to_str().unwrap(),
            "--http",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--http-allow-remote"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spalloc-server"))
        .args([
            "--journal",
            dir.join("j3").to_str().unwrap(),
            "--http",
            "nonsense",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ADDR:PORT"));
}

#[test]
fn a_request_never_finished_is_cut_off() {
    let net = bmp_net();
    let (_server, port) = start("http-slowloris", simple_config(&net, json!({})), &[]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(); // and never the blank line
    s.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("closed by the server, not by the read timeout");
    assert!(rest.is_empty());
    // REQUEST_TIMEOUT_US is 10 s: not before it (the bound, not a timing target).
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}
