//! Misbehaving clients against the real server (a debug build: a broken core invariant or
//! any panic kills it, so "alive after each phase" is the oracle), and every limit at its
//! edge.
//!
//! The fuzzer is seeded (`SPALLOC_SEED=N` replays its inputs) and prints how many inputs it
//! tried. Throughout, a bystander client does `version`/`list_jobs` round trips, each wait
//! capped, and must keep being answered; resident memory must stay bounded.
mod common;
mod reliability_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{bmp_net, scratch_dir, simple_config, Server};
use reliability_support::*;
use serde_json::{json, Value};

/// Longest a bystander round trip may take while others abuse the server.
const BYSTANDER_WAIT: Duration = Duration::from_secs(15);

/// After each phase: the server is alive and the bystander got answers during it.
fn phase_done(server: &mut Server, bystander: &Bystander, before: u64, phase: &str) -> u64 {
    assert!(
        process_alive(&mut server.child),
        "the server died during phase {phase}; log:\n{}",
        server.log_text()
    );
    bystander.progressed(before);
    let n = bystander.count();
    eprintln!("phase {phase}: server alive, bystander answered {n} times so far");
    n
}

/// Values of every JSON type and every numeric edge, as text.
const BAD_VALUES: &[&str] = &[
    "null",
    "true",
    "\"str\"",
    "\"\"",
    "1.5",
    "-1",
    "0",
    "-0.0",
    "1e308",
    "-1e308",
    "1e999",
    "NaN",
    "Infinity",
    "-Infinity",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "1000000000000000000",
    "4611686018427387904",
    "100000000000000000000000000000",
    "[]",
    "[1, [2]]",
    "{}",
    "{\"a\": null}",
    "\"\\ud800\"",
];

/// One random request line (never containing `\n` inside, never blank).
fn random_line(rng: &mut Rng) -> Vec<u8> {
    let mut line = match rng.below(10) {
        // Random bytes.
        0 => (0..rng.below(300))
            .map(|_| rng.next_u64() as u8)
            .collect::<Vec<u8>>(),
        // Deep nesting, around and far beyond the parser's limit.
        1 => {
            let d = *rng.pick(&[120usize, 128, 129, 5000, 30_000]);
            format!(
                "{{\"command\": \"version\", \"args\": {}{}}}",
                "[".repeat(d),
                "]".repeat(d)
            )
            .into_bytes()
        }
        _ => {
            let command = rng.pick(COMMANDS);
            let args: Vec<String> = (0..rng.below(5))
                .map(|_| {
                    if rng.chance(0.5) {
                        rng.pick(BAD_VALUES).to_string()
                    } else {
                        rng.range(0, 12).to_string()
                    }
                })
                .collect();
            let mut kwargs: Vec<String> = (0..rng.below(4))
                .map(|_| format!("\"{}\": {}", rng.pick(KEYWORDS), rng.pick(BAD_VALUES)))
                .collect();
            if *command == "create_job" && rng.chance(0.7) {
                kwargs.push("\"owner\": \"fuzz\"".into());
            }
            let mut text = format!(
                "{{\"command\": \"{command}\", \"args\": [{}], \"kwargs\": {{{}}}}}",
                args.join(", "),
                kwargs.join(", ")
            )
            .into_bytes();
            if rng.chance(0.1) && !text.is_empty() {
                let i = rng.below(text.len() as u64) as usize;
                text[i] = rng.next_u64() as u8;
            }
            text
        }
    };
    for b in line.iter_mut() {
        if *b == b'\n' {
            *b = b'x';
        }
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        line.push(b'x');
    }
    line.push(b'\n');
    line
}

/// Send `lines` one at a time, reading each reply; a connection the server closes (after a
/// framing error) is replaced. Returns the number of lines sent.
fn send_lines(port: u16, lines: &[Vec<u8>]) -> u64 {
    let mut conn: Option<Conn> = None;
    let mut sent = 0;
    for line in lines {
        let c = match &mut conn {
            Some(c) => c,
            None => conn.insert(Conn::connect(port, REPLY_WAIT).expect("connect")),
        };
        sent += 1;
        if c.send(line).is_err() {
            conn = None;
            continue;
        }
        match c.reply() {
            Ok(v) => {
                // A framing error is answered, then the connection is closed.
                let msg = v["exception"].as_str().unwrap_or("");
                if msg.starts_with("request ")
                    || msg.starts_with("\"command\"")
                    || msg.starts_with("\"args\"")
                    || msg.starts_with("\"kwargs\"")
                    || msg.starts_with("line too long")
                {
                    conn = None;
                }
            }
            Err(e) if e.contains("closed") || e.contains("reset") => conn = None,
            Err(e) => panic!("no reply to {:?}: {e}", String::from_utf8_lossy(line)),
        }
    }
    sent
}

/// Every command, with every argument position (positional and keyword) holding every bad
/// value in turn.
fn wrong_types_everywhere() -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    for command in COMMANDS {
        let owner = if *command == "create_job" {
            "\"owner\": \"t\""
        } else {
            ""
        };
        for arity in 1..5 {
            for pos in 0..arity {
                for bad in BAD_VALUES {
                    let args: Vec<&str> = (0..arity)
                        .map(|i| if i == pos { *bad } else { "1" })
                        .collect();
                    lines.push(
                        format!(
                            "{{\"command\": \"{command}\", \"args\": [{}], \"kwargs\": {{{owner}}}}}\n",
                            args.join(", ")
                        )
                        .into_bytes(),
                    );
                }
            }
        }
        for kw in KEYWORDS {
            for bad in BAD_VALUES {
                let extra = if *command == "create_job" && *kw != "owner" {
                    ", \"owner\": \"t\""
                } else {
                    ""
                };
                lines.push(
                    format!(
                        "{{\"command\": \"{command}\", \"args\": [], \"kwargs\": {{\"{kw}\": {bad}{extra}}}}}\n"
                    )
                    .into_bytes(),
                );
            }
        }
    }
    lines
}

/// Send `list_machines` requests without ever reading; returns the bytes written and
/// whether the server dropped the connection (bounded: 256 MiB or 60 s).
fn never_reading_client(port: u16) -> (u64, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let one = b"{\"command\": \"list_machines\"}\n";
    let chunk: Vec<u8> = one.iter().copied().cycle().take(one.len() * 2000).collect();
    let end = Instant::now() + Duration::from_secs(60);
    let mut written = 0u64;
    while written < 256 << 20 && Instant::now() < end {
        match s.write_all(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            Err(_) => return (written, true),
        }
    }
    (written, false)
}

#[test]
fn fuzzed_clients_never_break_the_server() {
    let mut rng = Rng::new(seed("fuzzed_clients_never_break_the_server"));
    let dir = scratch_dir("fuzz");
    let cfg = simple_config(&bmp_net(), json!({"max_retired_jobs": 50}));
    let mut server = Server::start(&dir, &cfg, &[]);
    let pid = server.child.id();
    let rss_start = rss_kib(pid).unwrap();
    let bystander = Bystander::start(server.port, BYSTANDER_WAIT, true);
    let mut n = bystander.count();
    let mut inputs = 0u64;
    let mut flood_requests = 0u64;

    // 1. Random request lines from four clients at once.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let mut r = rng.fork();
            let port = server.port;
            std::thread::spawn(move || {
                let lines: Vec<Vec<u8>> = (0..600).map(|_| random_line(&mut r)).collect();
                send_lines(port, &lines)
            })
        })
        .collect();
    for t in threads {
        inputs += t.join().unwrap();
    }
    n = phase_done(&mut server, &bystander, n, "random lines");

    // 2. Wrong types in every argument position of every command.
    inputs += send_lines(server.port, &wrong_types_everywhere());
    n = phase_done(&mut server, &bystander, n, "wrong types everywhere");

    // 3. Huge and negative board counts: refused, or jobs no machine can hold.
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    for args in [
        json!([1_000_000_000_000_000_000u64]),
        json!([4_611_686_018_427_387_904u64, 4_611_686_018_427_387_904u64]),
        json!([-1]),
        json!([-4_611_686_018_427_387_904i64, 5]),
        json!([i64::MAX, i64::MAX, i64::MAX]),
        json!([i64::MIN, 0, 0]),
        json!([0]),
        json!([0, 0]),
    ] {
        inputs += 1;
        let r = c
            .call_raw("create_job", args.clone(), json!({"owner": "huge"}))
            .unwrap();
        if let Some(id) = r["return"].as_u64() {
            let s = c.call("get_job_state", json!([id]), json!({})).unwrap();
            assert_eq!(s["state"], 4, "create_job{args} should be impossible: {s}");
        }
    }
    n = phase_done(&mut server, &bystander, n, "huge board counts");

    // 4. Invalid UTF-8, and lines far beyond the limit (answered with an error, closed).
    for bytes in [
        b"\xff\xfe{\"command\": \"version\"}\n".to_vec(),
        b"{\"command\": \"ver\xc3\x28sion\"}\n".to_vec(),
        [vec![b'x'; 10 << 20], b"\n".to_vec()].concat(),
        [
            b"{\"command\": \"version\", \"args\": [\"".to_vec(),
            vec![b'a'; 200_000],
        ]
        .concat(),
    ] {
        inputs += 1;
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(REPLY_WAIT)).unwrap();
        // The server may close before everything is written: that is its right.
        let _ = s.write_all(&bytes);
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.contains("\"exception\""),
            "no error for {} bytes: {text}",
            bytes.len()
        );
    }
    n = phase_done(&mut server, &bystander, n, "bad UTF-8 and huge lines");

    // 5. Thousands of rapid connects and disconnects, some mid-line.
    for i in 0..3000 {
        inputs += 1;
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        match i % 3 {
            0 => {}
            1 => {
                let _ = s.write_all(b"{\"command\": \"list_j");
            }
            _ => {
                let _ = s.write_all(
                    b"{\"command\": \"create_job\", \"kwargs\": {\"owner\": \"gone\"}}\n",
                );
            }
        }
    }
    n = phase_done(&mut server, &bystander, n, "connect storm");

    // 6. Clients that never read flood list_machines until the server drops them.
    let floods: Vec<_> = (0..3)
        .map(|_| {
            let port = server.port;
            std::thread::spawn(move || never_reading_client(port))
        })
        .collect();
    for f in floods {
        let (written, dropped) = f.join().unwrap();
        flood_requests += written / 30;
        assert!(dropped, "a client that never reads was not disconnected");
    }
    assert!(server
        .wait_for_log("disconnected: it left more than", Duration::from_secs(10))
        .is_some());
    phase_done(&mut server, &bystander, n, "never-reading clients");

    let (answered, _) = bystander.finish();
    let rss_end = rss_kib(pid).unwrap();
    eprintln!(
        "fuzz: {inputs} inputs tried, plus {flood_requests} requests from clients that never \
         read; bystander answered {answered} times; VmRSS {rss_start} KiB at start, {rss_end} \
         KiB at the end"
    );
    assert!(rss_end < 200 * 1024, "memory grew to {rss_end} KiB");
    assert!(server.stop().success());
}

#[test]
fn line_length_limit_at_its_edge() {
    let dir = scratch_dir("line-edge");
    let server = Server::start(&dir, &simple_config(&bmp_net(), json!({})), &[]);
    let max = spalloc::protocol::MAX_LINE_BYTES;
    // A valid request padded with spaces to `len` bytes, then the newline.
    let padded = |len: usize| -> Vec<u8> {
        let mut l = b"{\"command\": \"version\"}".to_vec();
        l.resize(len, b' ');
        l.push(b'\n');
        l
    };
    // Exactly the limit: answered, and the connection stays open.
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    c.send(&padded(max)).unwrap();
    assert_eq!(c.reply().unwrap(), json!({"return": "1.0.0"}));
    assert_eq!(
        c.call("version", json!([]), json!({})).unwrap(),
        json!("1.0.0")
    );
    // One byte more: refused and closed.
    c.send(&padded(max + 1)).unwrap();
    let r = c.reply().unwrap();
    assert!(
        r["exception"]
            .as_str()
            .is_some_and(|m| m.starts_with("line too long")),
        "{r}"
    );
    assert!(
        c.line().is_err(),
        "connection left open after a too-long line"
    );
    // The same, sent in pieces and before its newline arrives: refused as soon as it is
    // known to be too long.
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    for piece in padded(max + 1)[..max + 1].chunks(7000) {
        c.send(piece).unwrap();
    }
    let r = c.reply().unwrap();
    assert!(r["exception"]
        .as_str()
        .is_some_and(|m| m.starts_with("line too long")));
}

#[test]
fn client_limit_at_its_edge() {
    let dir = scratch_dir("clients-edge");
    let server = Server::start(
        &dir,
        &simple_config(&bmp_net(), json!({})),
        &["--max-clients", "50"],
    );
    // 50 clients, each known to be registered (answered).
    let mut clients: Vec<Conn> = (0..50)
        .map(|_| {
            let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
            c.call("version", json!([]), json!({})).unwrap();
            c
        })
        .collect();
    // The 51st is told and closed.
    let mut extra = Conn::connect(server.port, REPLY_WAIT).unwrap();
    assert_eq!(
        extra.line().unwrap(),
        json!({"exception": "server is full (50 clients); try again later"})
    );
    assert!(extra.line().is_err());
    // The 50 are still served.
    for c in clients.iter_mut() {
        c.call("version", json!([]), json!({})).unwrap();
    }
    // One leaves; a newcomer gets its place once the server has noticed the departure.
    drop(clients.pop());
    let newcomer = poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
        let mut c = Conn::connect(server.port, REPLY_WAIT).ok()?;
        c.call("version", json!([]), json!({})).ok().map(|_| c)
    });
    assert!(newcomer.is_some(), "no place freed after a client left");
}

#[test]
fn output_limit_drops_only_clients_that_do_not_read() {
    let dir = scratch_dir("output-edge");
    let mut server = Server::start(&dir, &simple_config(&bmp_net(), json!({})), &[]);
    let bystander = Bystander::start(server.port, BYSTANDER_WAIT, true);
    // Thirty queued jobs make list_jobs about 9 KB.
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    for _ in 0..30 {
        c.call(
            "create_job",
            json!([1, 2]),
            json!({"owner": "o", "keepalive": null}),
        )
        .unwrap();
    }
    // A slow reader that keeps up: list_jobs replies worth more than the output bound in
    // total, asked for in batches whose replies (about 2 MB) stay well under the bound, and
    // read in small pieces with pauses.
    let mut slow = Conn::connect(server.port, REPLY_WAIT).unwrap();
    let one = b"{\"command\": \"list_jobs\"}\n";
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 200).collect();
    let mut received_bytes = 0usize;
    while received_bytes <= spalloc::server::Limits::default().output_bytes_max + (1 << 20) {
        slow.send(&batch).unwrap();
        for i in 0..200 {
            received_bytes += slow.raw_line().expect("the slow reader was dropped");
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    eprintln!("slow reader received {received_bytes} bytes of replies");
    assert!(received_bytes > spalloc::server::Limits::default().output_bytes_max);
    // A client that never reads is dropped once its unread output passes the bound.
    let (written, dropped) = never_reading_client(server.port);
    assert!(
        dropped,
        "not dropped after writing {written} bytes of requests"
    );
    let before = bystander.count();
    phase_done(&mut server, &bystander, before, "output bound");
    bystander.finish();
    // The slow reader is still connected and served.
    assert_eq!(
        slow.call("version", json!([]), json!({})).unwrap(),
        json!("1.0.0")
    );
}

#[test]
fn retired_job_history_at_its_edge() {
    let dir = scratch_dir("retired-edge");
    let server = Server::start(
        &dir,
        &simple_config(&bmp_net(), json!({"max_retired_jobs": 5})),
        &[],
    );
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        let id = c
            .call(
                "create_job",
                json!([]),
                json!({"owner": "r", "keepalive": null}),
            )
            .unwrap()
            .as_u64()
            .unwrap();
        c.call(
            "destroy_job",
            json!([id]),
            json!({"reason": format!("r{i}")}),
        )
        .unwrap();
        ids.push(id);
        if i == 4 {
            // Exactly at the limit: all five reasons remembered.
            for (k, id) in ids.iter().enumerate() {
                let s = c.call("get_job_state", json!([id]), json!({})).unwrap();
                assert_eq!(s["reason"], json!(format!("r{k}")), "{s}");
            }
        }
    }
    // One more: the oldest is forgotten (state 0, unknown), the other five are kept.
    let s = c.call("get_job_state", json!([ids[0]]), json!({})).unwrap();
    assert_eq!(s["state"], 0, "{s}");
    for (k, id) in ids.iter().enumerate().skip(1) {
        let s = c.call("get_job_state", json!([id]), json!({})).unwrap();
        assert_eq!(
            (s["state"].clone(), s["reason"].clone()),
            (json!(4), json!(format!("r{k}")))
        );
    }
    let _: Value = c.call("list_jobs", json!([]), json!({})).unwrap();
}
