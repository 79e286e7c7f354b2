//! No client can hurt another (issue 16): each attack of the issue, at small scale, against
//! the real binary (a debug build: a broken core invariant kills it), with a bystander whose
//! requests must keep being answered and whose job must stay alive.
//!
//! Limits are lowered with `--limit` so each edge is reached in a fraction of a second; the
//! defaults are the same code with bigger numbers. Every wait is a bounded wait for a
//! condition. Each test prints the server's peak memory (`VmHWM`) and the bystander's worst
//! round trip, the figures quoted in the note; those are observations, not
//! assertions (speed targets live in benchmarks), except for a generous bound that only a
//! starved bystander would miss.
mod common;
mod reliability_support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bmp_net, cannot_run, scratch_dir, simple_config, Server};
use reliability_support::*;
use serde_json::{json, Value};

/// A bystander's request must be answered within this, however hard its neighbours push (a
/// generous bound for a loaded 2-core machine; the issue saw 2 s and 30 s).
const BYSTANDER_BOUND: Duration = Duration::from_secs(10);
/// Longest wait for any reply in these tests.
const REPLY_WAIT: Duration = Duration::from_secs(20);

/// Peak resident memory of process `pid` in KiB (`VmHWM`).
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The figures for the note: one line per attack.
fn report(attack: &str, pid: u32, worst: Duration) {
    eprintln!(
        "ISOLATION {attack}: server peak memory {} MiB, bystander worst round trip {} ms",
        peak_kib(pid) / 1024,
        worst.as_millis()
    );
}

fn assert_alive(server: &mut Server, attack: &str) {
    assert!(
        process_alive(&mut server.child),
        "the server died during {attack}; log:\n{}",
        server.log_text()
    );
}

/// One machine "m" of two triads in one frame (one BMP), fast timings, with a 0.1 s
/// post-power-on delay as in the report.
fn one_bmp_config() -> Value {
    let net = bmp_net();
    let boards: Vec<Value> = (0..2)
        .flat_map(|x| {
            (0..3).map(move |z| {
                json!({"x": x, "y": 0, "z": z, "cabinet": 0, "frame": 0, "board": 3 * x + z,
                       "ip": format!("11.{x}.0.{z}")})
            })
        })
        .collect();
    json!({
        "ip": "127.0.0.1", "port": 0, "seconds_before_free": 0.1,
        "bmp": {"post_power_on_delay": 0.1, "power_on_timeout": 1.0, "command_timeout": 0.2,
                "command_retries": 1, "request_attempts": 2, "retry_delay": 0.05,
                "fpga_attempts": 2},
        "machines": [{"name": "m", "width": 2, "height": 1,
                      "bmps": [{"cabinet": 0, "frame": 0, "address": format!("{net}.1")}],
                      "boards": boards}]
    })
}

fn exception_of(r: &Value) -> &str {
    r["exception"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an exception, got {r}"))
}

// ----- power storms --------------------------------------------------------------------

#[test]
fn a_power_storm_neither_fails_nor_starves_the_neighbours_job() {
    let dir = scratch_dir("iso-power");
    let mut server = Server::start(&dir, &one_bmp_config(), &[]);
    let pid = server.child.id();
    let bystander = Bystander::start(server.port, BYSTANDER_BOUND, false);
    // The attacker's job: one triad, powered.
    let mut attacker = Conn::connect(server.port, REPLY_WAIT).unwrap();
    let storm_job = attacker
        .call(
            "create_job",
            json!([1]),
            json!({"owner": "storm", "keepalive": null}),
        )
        .unwrap();
    // The neighbour's job on the same BMP, created while the storm rages.
    let mut neighbour = common::Client::connect(server.port);
    // 2,000 alternating power changes, pipelined, the last one "off".
    let mut lines = Vec::new();
    for i in 0..2_000 {
        let cmd = if i % 2 == 0 {
            "power_on_job_boards"
        } else {
            "power_off_job_boards"
        };
        lines.extend_from_slice(
            (json!({"command": cmd, "args": [storm_job]}).to_string() + "\n").as_bytes(),
        );
    }
    let writer = {
        let mut s = attacker.stream.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&lines).unwrap())
    };
    let start = Instant::now();
    let job = neighbour.create(json!([1]), json!({"keepalive": null}));
    // The neighbour's job becomes ready (3) well within the bound, and stays alive.
    let s = neighbour.wait_state(job, 3, BYSTANDER_BOUND);
    let to_ready = start.elapsed();
    assert_eq!(s["power"], json!(true), "{s}");
    writer.join().unwrap();
    for _ in 0..2_000 {
        let r = attacker.reply().unwrap();
        assert_eq!(r, json!({"return": null}));
    }
    // The storm's job ends in the state it asked for last (off), and nothing failed.
    let s = poll_until(BYSTANDER_BOUND, Duration::from_millis(20), || {
        let s = neighbour.state(storm_job.as_u64().unwrap());
        (s["state"] == 3).then_some(s)
    })
    .expect("the storm's job settles");
    assert_eq!(s["power"], json!(false), "latest wins: {s}");
    let s = neighbour.state(job);
    assert_eq!(
        (s["state"].clone(), s["power"].clone()),
        (json!(3), json!(true))
    );
    let log = server.log_text();
    assert!(!log.contains("queue full"), "{log}");
    assert!(!log.contains("Machine configuration failed"), "{log}");
    assert_alive(&mut server, "the power storm");
    let worst = bystander.finish().1;
    eprintln!(
        "power storm: neighbour's job ready {} ms after its create_job",
        to_ready.as_millis()
    );
    report("power storm (2,000 changes)", pid, worst);
}

// ----- descriptor exhaustion -----------------------------------------------------------

/// The server started through `sh -c 'ulimit -n N; exec ...'`: its log and port.
struct Limited {
    child: std::process::Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_with_nofile(dir: &std::path::Path, cfg: &Value, nofile: u32, args: &[&str]) -> Limited {
    let cfg_path = dir.join("machines.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_spalloc-server"))
        .arg("--journal")
        .arg(dir.join("journal"))
        .arg("--config")
        .arg(&cfg_path)
        .arg("--simulate-bmps")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn sh");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let log2 = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log2.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    let end = Instant::now() + REPLY_WAIT;
    let port = loop {
        let left = end
            .checked_duration_since(Instant::now())
            .expect("server started");
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("server did not start: {:?}", log.lock().unwrap()));
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.rsplit(':').next().unwrap().trim().parse().unwrap();
        }
    };
    Limited { child, port, log }
}

#[test]
fn running_out_of_descriptors_never_stops_the_listener() {
    if !std::path::Path::new("/bin/sh").exists() {
        cannot_run("no /bin/sh to lower the descriptor limit with");
        return;
    }
    let dir = scratch_dir("iso-emfile");
    // Far fewer descriptors than the bound on clients (set explicitly, so kept): the accepts
    // run out of descriptors (EMFILE) long before the bound is reached.
    let server = start_with_nofile(
        &dir,
        &simple_config(&bmp_net(), json!({})),
        64,
        &[
            "--limit",
            "clients_max=1000",
            "--limit",
            "accept_backoff_ms=20",
        ],
    );
    let pid = server.child.id();
    let bystander = Bystander::start(server.port, BYSTANDER_BOUND, false);
    // Connect until the server cannot take more: every connection is either served or told
    // the server is full; none is left hanging once the server has had its back-off.
    let mut served = Vec::new();
    let mut refused = 0;
    for _ in 0..120 {
        let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
        c.send(b"{\"command\": \"version\"}\n").unwrap();
        match c.line() {
            Ok(v) if v == json!({"return": "1.0.0"}) => served.push(c),
            Ok(v) => {
                assert!(exception_of(&v).starts_with("server is full"), "{v}");
                assert!(c.line().is_err(), "closed after the refusal");
                refused += 1;
            }
            Err(e) => panic!("a connection got no answer: {e}"),
        }
    }
    assert!(refused > 0, "the descriptor limit was never reached");
    let log = server.log.lock().unwrap().join("\n");
    assert!(log.contains("cannot accept a connection"), "{log}");
    // The clients leave; newcomers are accepted again (the listener was re-armed).
    let had = served.len();
    served.clear();
    let back = poll_until(REPLY_WAIT, Duration::from_millis(20), || {
        let mut c = Conn::connect(server.port, REPLY_WAIT).ok()?;
        (c.call("version", json!([]), json!({})).ok()? == json!("1.0.0")).then_some(c)
    });
    assert!(
        back.is_some(),
        "no connection accepted after descriptors were freed"
    );
    let worst = bystander.finish().1;
    eprintln!("descriptor exhaustion: {had} clients served, {refused} told the server is full");
    report("descriptor exhaustion (ulimit -n 64)", pid, worst);
}

#[test]
fn the_default_bound_on_clients_fits_the_descriptor_limit() {
    if !std::path::Path::new("/bin/sh").exists() {
        cannot_run("no /bin/sh to lower the descriptor limit with");
        return;
    }
    let dir = scratch_dir("iso-fit");
    let server = start_with_nofile(&dir, &simple_config(&bmp_net(), json!({})), 100, &[]);
    // 100 descriptors, 64 kept for the server: 36 clients, then a clean refusal.
    let mut clients = Vec::new();
    for _ in 0..36 {
        let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
        c.call("version", json!([]), json!({})).unwrap();
        clients.push(c);
    }
    let mut extra = Conn::connect(server.port, REPLY_WAIT).unwrap();
    assert_eq!(
        extra.line().unwrap(),
        json!({"exception": "server is full (36 clients); try again later"})
    );
    let log = server.log.lock().unwrap().join("\n");
    assert!(
        log.contains("clients_max lowered from 20000 to 36"),
        "{log}"
    );
    assert!(!log.contains("cannot accept"), "{log}");
}

/// The listen backlog is the `listen_backlog_max` asked for (std's would be 128), so a
/// connect storm waits in the kernel instead of having its SYNs dropped. Read with `ss`,
/// which shows a listening socket's backlog as its Send-Q.
#[test]
fn the_listen_backlog_is_the_limit_asked_for() {
    let dir = scratch_dir("iso-backlog");
    let server = Server::start(
        &dir,
        &simple_config(&bmp_net(), json!({})),
        &["--limit", "listen_backlog_max=777"],
    );
    let out = match Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", server.port)])
        .output()
    {
        Ok(out) if out.status.success() => out,
        _ => {
            cannot_run("no working `ss` (iproute2) to read the listen backlog with");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("LISTEN"))
        .unwrap_or_else(|| panic!("no listening socket in: {text}"));
    let send_q: u32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    assert_eq!(send_q, 777.min(somaxconn), "{line}");
}

// ----- memory --------------------------------------------------------------------------

#[test]
fn a_client_cannot_grow_its_watch_set_without_bound() {
    let dir = scratch_dir("iso-watch");
    let mut server = Server::start(
        &dir,
        &simple_config(&bmp_net(), json!({})),
        &[
            "--limit",
            "watch_entries_max=50",
            "--limit",
            "watch_entries_total_max=120",
            "--limit",
            "string_bytes_max=100",
        ],
    );
    let pid = server.child.id();
    let bystander = Bystander::start(server.port, BYSTANDER_BOUND, false);
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    // A name past the string bound is refused outright.
    let r = c
        .call_raw("notify_machine", json!(["n".repeat(101)]), json!({}))
        .unwrap();
    assert!(exception_of(&r).contains("string_bytes_max"), "{r}");
    // Distinct names, pipelined: the first 50 accepted, the rest refused naming the limit.
    let mut lines = String::new();
    for i in 0..2_000 {
        lines += &(json!({"command": "notify_machine", "args": [format!("{i:0>90}")]}).to_string()
            + "\n");
    }
    c.send(lines.as_bytes()).unwrap();
    let mut accepted = 0;
    for _ in 0..2_000 {
        let r = c.reply().unwrap();
        if r == json!({"return": null}) {
            accepted += 1;
        } else {
            assert!(exception_of(&r).contains("watch_entries_max"), "{r}");
        }
    }
    assert_eq!(accepted, 50);
    // Watching everything still works (one entry), and the connection is served.
    assert_eq!(
        c.call("notify_machine", json!([]), json!({})).unwrap(),
        Value::Null
    );
    // Jobs: the same bound.
    let mut refused = 0;
    for id in 1..=60 {
        let r = c.call_raw("notify_job", json!([id]), json!({})).unwrap();
        if r.get("exception").is_some() {
            assert!(exception_of(&r).contains("watch_entries_max"), "{r}");
            refused += 1;
        }
    }
    assert_eq!(refused, 10);
    // Many connections cannot multiply the bound: the first holds 51 (all machines, one
    // entry, and 50 jobs), a second 50 more, a third only the 19 left of 120.
    let mut second = Conn::connect(server.port, REPLY_WAIT).unwrap();
    let mut third = Conn::connect(server.port, REPLY_WAIT).unwrap();
    let add = |conn: &mut Conn, n: usize, tag: &str| -> usize {
        (0..n)
            .filter(|i| {
                let r = conn
                    .call_raw("notify_machine", json!([format!("{tag}{i}")]), json!({}))
                    .unwrap();
                if r.get("exception").is_some() {
                    assert!(exception_of(&r).contains("watch_entries_total_max"), "{r}");
                    false
                } else {
                    true
                }
            })
            .count()
    };
    assert_eq!(add(&mut second, 50, "b"), 50);
    assert_eq!(add(&mut third, 50, "c"), 19, "120 in all");
    // Entries of a connection that leaves are given back.
    drop(c);
    let more = poll_until(REPLY_WAIT, Duration::from_millis(20), || {
        (add(&mut third, 1, "again") == 1).then_some(())
    });
    assert!(
        more.is_some(),
        "the entries of a closed connection were not given back"
    );
    assert_alive(&mut server, "the watch flood");
    report("watch flood (2,000 names)", pid, bystander.finish().1);
}

/// Clients that pipeline `list_jobs` and never read: dropped once their backlog passes
/// `output_bytes_max` or all unsent output passes `output_total_bytes_max`, with a log line
/// that says so; the bystander and a reader that keeps up are served throughout.
#[test]
fn clients_that_never_read_are_dropped_within_the_output_budget() {
    let dir = scratch_dir("iso-output");
    let mut server = Server::start(
        &dir,
        &simple_config(&bmp_net(), json!({})),
        &[
            "--limit",
            "output_bytes_max=1000000",
            "--limit",
            "output_total_bytes_max=4000000",
        ],
    );
    let pid = server.child.id();
    let bystander = Bystander::start(server.port, BYSTANDER_BOUND, false);
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    for _ in 0..30 {
        c.call(
            "create_job",
            json!([1, 2]),
            json!({"owner": "o", "keepalive": null}),
        )
        .unwrap();
    }
    // Twelve clients that never read: each writes list_jobs until the server drops it.
    let floods: Vec<_> = (0..12)
        .map(|_| {
            let port = server.port;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_write_timeout(Some(REPLY_WAIT)).unwrap();
                let one = b"{\"command\": \"list_jobs\"}\n";
                let chunk: Vec<u8> = one.iter().copied().cycle().take(one.len() * 500).collect();
                let end = Instant::now() + Duration::from_secs(60);
                while Instant::now() < end {
                    if s.write_all(&chunk).is_err() {
                        return true;
                    }
                }
                false
            })
        })
        .collect();
    for f in floods {
        assert!(
            f.join().unwrap(),
            "a client that never reads was not dropped"
        );
    }
    let line = server
        .wait_for_log("disconnected: it left more than", REPLY_WAIT)
        .expect("the drop is logged");
    assert!(
        line.contains("output_bytes_max") || line.contains("output_total_bytes_max"),
        "{line}"
    );
    // The reader is served as before.
    let jobs = c.call("list_jobs", json!([]), json!({})).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 30);
    assert_alive(&mut server, "the never-reading clients");
    report(
        "12 clients never reading list_jobs",
        pid,
        bystander.finish().1,
    );
}

#[test]
fn a_reply_too_big_to_send_gets_an_exception_and_a_big_one_is_not_blamed() {
    let dir = scratch_dir("iso-reply");
    let mut server = Server::start(
        &dir,
        &simple_config(&bmp_net(), json!({})),
        &[
            "--limit",
            "output_bytes_max=2000",
            "--limit",
            "reply_bytes_max=10000",
        ],
    );
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    for _ in 0..20 {
        c.call(
            "create_job",
            json!([1, 2]),
            json!({"owner": "o", "keepalive": null}),
        )
        .unwrap();
    }
    // About 6 KB: bigger than the backlog bound, yet delivered whole to a client that reads.
    let jobs = c.call("list_jobs", json!([]), json!({})).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 20);
    for _ in 0..60 {
        c.call(
            "create_job",
            json!([1, 2]),
            json!({"owner": "o", "keepalive": null}),
        )
        .unwrap();
    }
    // About 21 KB: past reply_bytes_max. An exception line, and the connection stays.
    let r = c.call_raw("list_jobs", json!([]), json!({})).unwrap();
    assert!(exception_of(&r).contains("reply_bytes_max"), "{r}");
    assert_eq!(
        c.call("version", json!([]), json!({})).unwrap(),
        json!("1.0.0")
    );
    assert!(
        !server.log_text().contains("disconnected"),
        "{}",
        server.log_text()
    );
    assert_alive(&mut server, "big replies");
}

#[test]
fn jobs_are_bounded_per_owner_per_host_and_overall() {
    let dir = scratch_dir("iso-jobs");
    let mut server = Server::start(
        &dir,
        &simple_config(&bmp_net(), json!({})),
        &[
            "--limit",
            "jobs_per_owner_max=20",
            "--limit",
            "jobs_per_host_max=30",
            "--limit",
            "jobs_max=1000",
        ],
    );
    let pid = server.child.id();
    let bystander = Bystander::start(server.port, BYSTANDER_BOUND, false);
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    // Pipelined: the limit holds within one pass too.
    let mut lines = String::new();
    for _ in 0..100 {
        lines += "{\"command\": \"create_job\", \"args\": [1, 2], \"kwargs\": {\"owner\": \"greedy\", \"keepalive\": null}}\n";
    }
    c.send(lines.as_bytes()).unwrap();
    let mut created = 0;
    for _ in 0..100 {
        let r = c.reply().unwrap();
        if r.get("return").is_some() {
            created += 1;
        } else {
            assert!(exception_of(&r).contains("jobs_per_owner_max"), "{r}");
        }
    }
    assert_eq!(created, 20);
    // Another owner on the same host: up to the host's bound.
    let mut other = 0;
    for _ in 0..20 {
        let r = c
            .call_raw(
                "create_job",
                json!([1, 2]),
                json!({"owner": "other", "keepalive": null}),
            )
            .unwrap();
        match r.get("return") {
            Some(_) => other += 1,
            None => assert!(exception_of(&r).contains("jobs_per_host_max"), "{r}"),
        }
    }
    assert_eq!(other, 10);
    // A refused create_job consumed no job id and changed nothing: 30 live jobs.
    assert_eq!(
        c.call("list_jobs", json!([]), json!({}))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        30
    );
    // Once some end, the owner may create again.
    c.call("destroy_job", json!([1]), json!({})).unwrap();
    let id = c
        .call(
            "create_job",
            json!([1, 2]),
            json!({"owner": "greedy", "keepalive": null}),
        )
        .unwrap();
    assert_eq!(id, json!(31), "no ids consumed by refusals");
    assert_alive(&mut server, "the job flood");
    report(
        "job flood (100 pipelined create_job)",
        pid,
        bystander.finish().1,
    );
}

#[test]
fn jobs_max_bounds_the_whole_server() {
    let dir = scratch_dir("iso-jobs-max");
    let server = Server::start(
        &dir,
        &simple_config(&bmp_net(), json!({})),
        &["--limit", "jobs_max=5"],
    );
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    for i in 0..5 {
        c.call(
            "create_job",
            json!([1, 2]),
            json!({"owner": format!("o{i}"), "keepalive": null}),
        )
        .unwrap();
    }
    let r = c
        .call_raw(
            "create_job",
            json!([1, 2]),
            json!({"owner": "late", "keepalive": null}),
        )
        .unwrap();
    assert!(exception_of(&r).contains("jobs_max"), "{r}");
}

#[test]
fn long_strings_are_refused_before_they_are_journaled() {
    let dir = scratch_dir("iso-strings");
    let mut server = Server::start(
        &dir,
        &simple_config(&bmp_net(), json!({})),
        &["--limit", "string_bytes_max=64", "--limit", "tags_max=4"],
    );
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    let journal_size = || -> u64 {
        std::fs::read_dir(&server.journal)
            .unwrap()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    let before = journal_size();
    let long = "x".repeat(65);
    for (args, kwargs, limit) in [
        (json!([]), json!({"owner": long}), "string_bytes_max"),
        (
            json!([]),
            json!({"owner": "o", "tags": [long]}),
            "string_bytes_max",
        ),
        (
            json!([]),
            json!({"owner": "o", "machine": long}),
            "string_bytes_max",
        ),
        (
            json!([]),
            json!({"owner": "o", "tags": ["a", "b", "c", "d", "e"]}),
            "tags_max",
        ),
    ] {
        let r = c.call_raw("create_job", args, kwargs).unwrap();
        assert!(exception_of(&r).contains(limit), "{r}");
    }
    let id = c
        .call(
            "create_job",
            json!([]),
            json!({"owner": "o", "keepalive": null}),
        )
        .unwrap();
    assert_eq!(id, json!(1), "refusals consumed no id");
    let r = c
        .call_raw("destroy_job", json!([1]), json!({"reason": long}))
        .unwrap();
    assert!(exception_of(&r).contains("string_bytes_max"), "{r}");
    let state = c.call("get_job_state", json!([1]), json!({})).unwrap();
    assert_ne!(state["state"], json!(4), "the job lives on: {state}");
    // Only the one accepted job was journaled (a few hundred bytes), none of the long strings.
    assert!(
        journal_size() - before < 2_000,
        "journal grew by {}",
        journal_size() - before
    );
    assert_alive(&mut server, "long strings");
}

// ----- CPU -----------------------------------------------------------------------------

#[test]
fn lines_of_many_keys_and_tags_do_not_slow_the_bystander() {
    let dir = scratch_dir("iso-cpu");
    let mut server = Server::start(&dir, &simple_config(&bmp_net(), json!({})), &[]);
    let pid = server.child.id();
    let bystander = Bystander::start(server.port, BYSTANDER_BOUND, false);
    // A line just under 64 KiB of distinct keys (about 6,500), and a create_job of about
    // 6,800 tags; each from 8 connections, 20 times.
    let mut keys = String::from("{\"command\": \"version\"");
    let mut i = 0;
    while keys.len() < 64 * 1024 - 20 {
        keys += &format!(",\"k{i}\":0");
        i += 1;
    }
    keys += "}\n";
    let tags: Vec<String> = (0..6_800).map(|i| format!("{i}")).collect();
    let tagged =
        json!({"command": "create_job", "kwargs": {"owner": "o", "tags": tags}}).to_string() + "\n";
    assert!(tagged.len() < 64 * 1024);
    let threads: Vec<_> = (0..8)
        .map(|n| {
            let port = server.port;
            let line = if n % 2 == 0 {
                keys.clone()
            } else {
                tagged.clone()
            };
            std::thread::spawn(move || {
                let mut c = Conn::connect(port, REPLY_WAIT).unwrap();
                for _ in 0..20 {
                    c.send(line.as_bytes()).unwrap();
                    let r = c.reply().unwrap();
                    if n % 2 == 1 {
                        assert!(exception_of(&r).contains("tags_max"), "{r}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_alive(&mut server, "the heavy lines");
    let worst = bystander.finish().1;
    eprintln!("heavy lines: {i} keys per line");
    report("8 connections of 64 KiB many-key/tag lines", pid, worst);
}

// ----- logs ----------------------------------------------------------------------------

#[test]
fn client_strings_cannot_forge_log_lines_or_reach_the_terminal() {
    let dir = scratch_dir("iso-logs");
    let mut server = Server::start(&dir, &simple_config(&bmp_net(), json!({})), &[]);
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    let forged = "2026-12-03T07:00:00Z ERROR journal write failed: disk on fire";
    let owner = format!("eve\n{forged}\u{1b}[2J\u{1b}[31m");
    let id = c
        .call(
            "create_job",
            json!([]),
            json!({"owner": owner, "keepalive": null}),
        )
        .unwrap();
    c.call(
        "destroy_job",
        json!([id]),
        json!({"reason": format!("bye\r\n{forged}\u{7}")}),
    )
    .unwrap();
    server
        .wait_for_log("destroyed: bye", REPLY_WAIT)
        .expect("the destroy is logged");
    let log = server.log_text();
    for line in log.lines() {
        assert!(!line.starts_with(forged), "forged line: {line:?}");
        assert!(
            !line.contains('\u{1b}') && !line.contains('\u{7}'),
            "{line:?}"
        );
    }
    assert!(
        log.contains("created by eve\\n2026-12-03T07:00:00Z ERROR"),
        "{log}"
    );
    assert!(log.contains("\\u{1b}[2J"), "{log}");
}

// ----- the limits are documented --------------------------------------------------------

#[test]
fn help_and_readme_list_every_limit_with_its_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_spalloc-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let defaults = spalloc::server::Limits::default();
    for spec in spalloc::server::limits::LIMITS {
        let v = spec.get(&defaults);
        assert!(
            help.contains(spec.name) && help.contains(&format!("[{v}")),
            "--help lacks {} [{v}]:\n{help}",
            spec.name
        );
        assert!(
            readme.contains(&format!("`{}`", spec.name)),
            "README lacks {}",
            spec.name
        );
    }
    // A bad setting is a clear error (exit 2) naming the limits.
    let out = Command::new(env!("CARGO_BIN_EXE_spalloc-server"))
        .args(["--journal", "/nonexistent", "--limit", "tags=3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no limit is called \"tags\"") && err.contains("tags_max"),
        "{err}"
    );
}

/// A line that reaches exactly the line bound before its newline is refused like any longer
/// one (the server reads on past the bound instead of waiting, and spinning, on input it
/// would never cut into a line).
#[test]
fn a_line_exactly_at_the_bound_is_refused_not_stuck() {
    let dir = scratch_dir("iso-edge-line");
    let mut server = Server::start(&dir, &simple_config(&bmp_net(), json!({})), &[]);
    let bystander = Bystander::start(server.port, BYSTANDER_BOUND, false);
    let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
    c.send(&vec![b' '; spalloc::protocol::MAX_LINE_BYTES])
        .unwrap();
    c.send(b"{\"command\": \"version\"}\n").unwrap();
    let r = c.line().unwrap();
    assert!(exception_of(&r).starts_with("line too long"), "{r}");
    assert_alive(&mut server, "a line at the bound");
    bystander.finish().1;
}

/// Clients that send most of a line and never finish it (slowloris): past
/// `input_total_bytes_max` the one holding the most is dropped, logged; the bystander and a
/// client whose requests are whole are served throughout.
#[test]
fn unfinished_lines_are_bounded_across_clients() {
    let dir = scratch_dir("iso-input");
    let mut server = Server::start(
        &dir,
        &simple_config(&bmp_net(), json!({})),
        &["--limit", "input_total_bytes_max=300000"],
    );
    let pid = server.child.id();
    let bystander = Bystander::start(server.port, BYSTANDER_BOUND, false);
    // Ten clients, each 60,000 bytes of a line never ended (600,000 in all).
    let holders: Vec<Conn> = (0..10)
        .map(|_| {
            let mut c = Conn::connect(server.port, REPLY_WAIT).unwrap();
            c.send(&vec![b' '; 60_000]).unwrap();
            c
        })
        .collect();
    server
        .wait_for_log("input_total_bytes_max", REPLY_WAIT)
        .expect("a client holding unfinished input is dropped");
    // Once the server has read what they sent, at most 300,000 bytes (five) are held: the
    // others find their connection closed.
    let closed = poll_until(REPLY_WAIT, Duration::from_millis(20), || {
        let n = holders.iter().filter(|c| is_closed(&c.stream)).count();
        (n >= 5).then_some(n)
    })
    .expect("at least five of the ten were dropped");
    assert!(closed <= 10);
    assert_alive(&mut server, "unfinished lines");
    report(
        "10 clients holding 60 KB unfinished lines",
        pid,
        bystander.finish().1,
    );
}

/// Whether the server has closed this connection (it sends nothing on it otherwise).
fn is_closed(stream: &TcpStream) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut b = [0u8; 1];
    match (&*stream).read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}
