//! Property: whatever request lines arrive, `spalloc::protocol::parse_line` and the core's
//! handling of every command it produces never panic, the core's invariants hold after every
//! event, and every reply renders.
//!
//! quickcheck generates scripts of request lines built from hostile JSON (wrong types in
//! every argument position of every command, huge, negative and fractional numbers, numbers
//! beyond 64 bits and beyond f64, `NaN`/`Infinity` literals, deep nesting, bad UTF-8, random
//! byte damage) interleaved with clock advances and BMP completions (successful or failed),
//! and feeds them to a [`Sim`] (which checks invariants after every event).
mod reliability_support;

use std::sync::atomic::{AtomicU64, Ordering};

use quickcheck::{Arbitrary, Gen, QuickCheck};
use reliability_support::{COMMANDS, KEYWORDS};
use spalloc::core::sim::{config, simple_machine, Sim};
use spalloc::core::{Command, Event};
use spalloc::protocol::{self, Parsed};

/// Lines fed to `parse_line`, over all cases (printed at the end).
static LINES: AtomicU64 = AtomicU64::new(0);
/// Commands that reached the core.
static CORE_COMMANDS: AtomicU64 = AtomicU64::new(0);

/// JSON number and value texts chosen to hit edges: 64-bit limits, beyond them, f64 limits,
/// negative zero, literals that are not JSON.
const ATOMS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "-1",
    "-2",
    "7",
    "1.0",
    "2.5",
    "-0.0",
    "-0",
    "0.25",
    "1e-320",
    "1e308",
    "-1e308",
    "1e999",
    "NaN",
    "Infinity",
    "-Infinity",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "4611686018427387904",
    "1000000000000000000",
    "100000000000000000000000000000",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "true",
    "false",
    "null",
    "\"\"",
    "\"m\"",
    "\"a\"",
    "\"b\"",
    "\"default\"",
    "\"nan\"",
    "\"inf\"",
    "\"-inf\"",
    "\"1e400\"",
    "\"5\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"h\\u00e9\\u00e9\"",
    "[]",
    "{}",
    "[1, 1]",
    "[\"default\"]",
    "[\"a\", 1]",
    "{\"a\": 1}",
];

/// One step of a script.
#[derive(Clone)]
enum Step {
    /// A request line (bytes, maybe not UTF-8).
    Line(Vec<u8>),
    /// Let this many milliseconds pass (ticking at deadlines).
    Advance(u32),
    /// Complete the oldest pending BMP request, failing it if `true`.
    Bmp(bool),
    /// Switch BMP requests between completing at once and waiting.
    AutoBmp(bool),
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Lines as text, so a failing case can be read and replayed by hand.
            Step::Line(bytes) => write!(f, "Line({:?})", String::from_utf8_lossy(bytes)),
            Step::Advance(ms) => write!(f, "Advance({ms} ms)"),
            Step::Bmp(fail) => write!(f, "Bmp(fail: {fail})"),
            Step::AutoBmp(on) => write!(f, "AutoBmp({on})"),
        }
    }
}

#[derive(Clone, Debug)]
struct Script(Vec<Step>);

fn choose<'a, T>(g: &mut Gen, items: &'a [T]) -> &'a T {
    g.choose(items).expect("non-empty")
}

fn below(g: &mut Gen, n: u32) -> u32 {
    u32::arbitrary(g) % n
}

/// A JSON value text: mostly atoms, sometimes arrays or objects of them, rarely deep.
fn value(g: &mut Gen, depth: u32) -> String {
    match below(g, 12) {
        0 if depth < 3 => {
            let n = below(g, 5);
            let items: Vec<String> = (0..n).map(|_| value(g, depth + 1)).collect();
            format!("[{}]", items.join(", "))
        }
        1 if depth < 3 => {
            let n = below(g, 4);
            let items: Vec<String> = (0..n)
                .map(|_| format!("\"{}\": {}", choose(g, KEYWORDS), value(g, depth + 1)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        2 => {
            // Deep nesting around the parser's limit of 128.
            let d = 100 + below(g, 60) as usize;
            format!("{}{}", "[".repeat(d), "]".repeat(d))
        }
        3 => format!("{}", i64::arbitrary(g)),
        4 => format!("{:?}", f64::arbitrary(g)),
        5 => format!("{:?}", String::arbitrary(g)),
        // Small job ids often, so commands hit live jobs.
        6 | 7 => format!("{}", 1 + below(g, 12)),
        _ => choose(g, ATOMS).to_string(),
    }
}

/// An integer at an edge: tiny, negative, near and beyond 32 and 64 bits, or a board count
/// no machine has; as text, so it can exceed what any Rust integer holds.
fn edge_int(g: &mut Gen) -> String {
    const EDGES: &[&str] = &[
        "0",
        "1",
        "1",
        "2",
        "2",
        "3",
        "-1",
        "-7",
        "4",
        "6",
        "12",
        "100",
        "1000000000000000000",
        "4611686018427387904",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "18446744073709551615",
        "4294967295",
        "4294967296",
        "2.0",
        "1e18",
        "1e300",
    ];
    choose(g, EDGES).to_string()
}

/// A well-formed call (right command name, usual arity, known keywords) whose values are
/// at edges, so that it gets past the parser and into the core.
fn wellformed_line(g: &mut Gen) -> Vec<u8> {
    let command = *choose(g, COMMANDS);
    let val = |g: &mut Gen| -> String {
        match below(g, 6) {
            0 => value(g, 1),
            _ => edge_int(g),
        }
    };
    let (args, kwargs): (Vec<String>, Vec<String>) = match command {
        "create_job" => {
            let n = below(g, 4);
            let args = (0..n).map(|_| val(g)).collect();
            let mut kw = vec!["\"owner\": \"qc\"".to_string()];
            for k in [
                "keepalive",
                "machine",
                "tags",
                "min_ratio",
                "max_dead_boards",
                "max_dead_links",
                "require_torus",
            ] {
                if below(g, 4) == 0 {
                    let v = match k {
                        "machine" => choose(g, &["\"a\"", "\"b\"", "\"zz\"", "null"]).to_string(),
                        "tags" => {
                            choose(g, &["[\"big\"]", "[\"default\"]", "[]", "null"]).to_string()
                        }
                        "require_torus" => choose(g, &["true", "false", "null", "1"]).to_string(),
                        "keepalive" => choose(
                            g,
                            &["null", "0", "0.001", "-5", "1e308", "5", "\"10\"", "1e-300"],
                        )
                        .to_string(),
                        _ => val(g),
                    };
                    kw.push(format!("\"{k}\": {v}"));
                }
            }
            (args, kw)
        }
        "destroy_job" => (
            vec![val(g)],
            if bool::arbitrary(g) {
                vec![format!("\"reason\": {}", value(g, 1))]
            } else {
                vec![]
            },
        ),
        "get_board_position" | "get_board_at_position" => {
            let m = choose(g, &["\"a\"", "\"b\"", "\"zz\""]).to_string();
            (vec![m, val(g), val(g), val(g)], vec![])
        }
        "where_is" => {
            let m = choose(g, &["\"a\"", "\"b\""]).to_string();
            let kw = match below(g, 4) {
                0 => vec![
                    format!("\"machine\": {m}"),
                    format!("\"x\": {}", val(g)),
                    format!("\"y\": {}", val(g)),
                    format!("\"z\": {}", val(g)),
                ],
                1 => vec![
                    format!("\"machine\": {m}"),
                    format!("\"cabinet\": {}", val(g)),
                    format!("\"frame\": {}", val(g)),
                    format!("\"board\": {}", val(g)),
                ],
                2 => vec![
                    format!("\"machine\": {m}"),
                    format!("\"chip_x\": {}", val(g)),
                    format!("\"chip_y\": {}", val(g)),
                ],
                _ => vec![
                    format!("\"job_id\": {}", val(g)),
                    format!("\"chip_x\": {}", val(g)),
                    format!("\"chip_y\": {}", val(g)),
                ],
            };
            (vec![], kw)
        }
        "list_jobs" | "list_machines" | "version" => (vec![], vec![]),
        "notify_machine" | "no_notify_machine" => {
            (vec![choose(g, &["\"a\"", "null"]).to_string()], vec![])
        }
        _ => (vec![val(g)], vec![]),
    };
    format!(
        "{{\"command\": \"{command}\", \"args\": [{}], \"kwargs\": {{{}}}}}",
        args.join(", "),
        kwargs.join(", ")
    )
    .into_bytes()
}

/// A request line: a command object with random `args` and `kwargs` (sometimes of the
/// wrong type or missing), sometimes damaged byte by byte.
fn line(g: &mut Gen) -> Vec<u8> {
    let command = match below(g, 20) {
        0 => value(g, 0),
        1 => "\"bogus\"".to_string(),
        2 => "\"\"".to_string(),
        _ => format!("\"{}\"", choose(g, COMMANDS)),
    };
    let nargs = below(g, 6);
    let args: Vec<String> = (0..nargs).map(|_| value(g, 1)).collect();
    let nkw = below(g, 5);
    let mut kwargs: Vec<String> = (0..nkw)
        .map(|_| format!("\"{}\": {}", choose(g, KEYWORDS), value(g, 1)))
        .collect();
    if command == "\"create_job\"" && bool::arbitrary(g) {
        kwargs.push("\"owner\": \"qc\"".to_string());
    }
    let mut parts = vec![format!("\"command\": {command}")];
    match below(g, 10) {
        0 => {}
        1 => parts.push(format!("\"args\": {}", value(g, 1))),
        _ => parts.push(format!("\"args\": [{}]", args.join(", "))),
    }
    match below(g, 10) {
        0 => {}
        1 => parts.push(format!("\"kwargs\": {}", value(g, 1))),
        _ => parts.push(format!("\"kwargs\": {{{}}}", kwargs.join(", "))),
    }
    let mut bytes = format!("{{{}}}", parts.join(", ")).into_bytes();
    match below(g, 10) {
        0 if !bytes.is_empty() => {
            let i = below(g, bytes.len() as u32) as usize;
            bytes[i] = u8::arbitrary(g);
        }
        1 => {
            let keep = below(g, bytes.len() as u32 + 1) as usize;
            bytes.truncate(keep);
        }
        2 => bytes = Vec::<u8>::arbitrary(g),
        3 => bytes.extend_from_slice(&[0xff, 0xfe, b'"']),
        _ => {}
    }
    bytes
}

impl Arbitrary for Step {
    fn arbitrary(g: &mut Gen) -> Step {
        match below(g, 20) {
            0..=5 => Step::Line(line(g)),
            6..=13 => Step::Line(wellformed_line(g)),
            14 | 15 => Step::Advance(below(g, 120_000)),
            16 | 17 => Step::Bmp(bool::arbitrary(g)),
            _ => Step::AutoBmp(bool::arbitrary(g)),
        }
    }
}

impl Arbitrary for Script {
    fn arbitrary(g: &mut Gen) -> Script {
        let n = 1 + below(g, 60);
        Script((0..n).map(|_| Step::arbitrary(g)).collect())
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Script>> {
        Box::new(self.0.shrink().map(Script))
    }
}

/// Run one script; panics (caught by quickcheck as a failure) if anything breaks.
fn run(script: Script) -> bool {
    let mut a = simple_machine("a", 2, 2);
    a.tags = vec!["default".into(), "big".into()];
    let b = simple_machine("b", 1, 1);
    let mut sim = Sim::new(config(vec![a, b], 1.0));
    for step in script.0 {
        match step {
            Step::Line(bytes) => {
                LINES.fetch_add(1, Ordering::Relaxed);
                match protocol::parse_line(&bytes) {
                    Parsed::Core(command) => {
                        CORE_COMMANDS.fetch_add(1, Ordering::Relaxed);
                        let reply = if command.is_read_only() {
                            sim.core.query(&command)
                        } else {
                            sim.cmd(command.clone())
                        };
                        let text = protocol::render_response(&reply);
                        assert!(text.ends_with(b"\n"), "{command:?} rendered {text:?}");
                        serde_json::from_slice::<serde_json::Value>(&text).unwrap_or_else(|e| {
                            panic!("reply to {command:?} is not JSON ({e}): {text:?}")
                        });
                        if let Command::CreateJob(_) = command {
                            // Every job must at least be answerable.
                            let _ = sim.core.list_jobs();
                        }
                    }
                    Parsed::Exception(msg) | Parsed::Fatal(msg) => {
                        let text = protocol::render_exception(&msg);
                        serde_json::from_slice::<serde_json::Value>(&text)
                            .expect("exception is JSON");
                    }
                    _ => {}
                }
            }
            Step::Advance(ms) => sim.advance(ms as f64 / 1000.0),
            Step::Bmp(fail) => {
                sim.complete_next_bmp(fail.then_some("Requests failed on BMP 10.1.0.0"));
            }
            Step::AutoBmp(on) => {
                sim.bmp_auto = on;
                if on {
                    sim.complete_all_bmp();
                }
            }
        }
    }
    // Everything must wind down: destroy all, finish the hardware, let the boards go.
    sim.bmp_auto = true;
    sim.complete_all_bmp();
    for id in sim.core.live_job_ids() {
        sim.destroy(id, Some("end"));
    }
    sim.complete_all_bmp();
    // (Boards whose power-off failed are held until a retried power-off succeeds: let the
    // retry delay pass too.)
    sim.advance(sim.core.config().bmp.retry_delay_s + 2.0);
    assert!(
        sim.core.is_idle(),
        "boards leaked: {:?}",
        sim.core.board_owners()
    );
    // And the journal of it replays to the same state.
    let mut replayed = spalloc::core::Core::at_journal_start();
    for e in &sim.events {
        let bytes = spalloc::server::encode_event(e);
        let decoded: Event = spalloc::server::decode_event(&bytes).expect("decodes");
        replayed.handle(&decoded);
        replayed.discard_effects();
    }
    assert_eq!(replayed.list_jobs(), sim.core.list_jobs());
    assert_eq!(replayed.next_job_id(), sim.core.next_job_id());
    true
}

#[test]
fn any_request_line_never_breaks_parser_or_core() {
    let tests: u64 = std::env::var("SPALLOC_QC_TESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    QuickCheck::new()
        .tests(tests)
        .max_tests(tests * 2)
        .quickcheck(run as fn(Script) -> bool);
    eprintln!(
        "parse_line + core: {} scripts, {} lines, {} commands reached the core",
        tests,
        LINES.load(Ordering::Relaxed),
        CORE_COMMANDS.load(Ordering::Relaxed)
    );
}

/// Pure random bytes (not shaped like requests) through `parse_line`.
#[test]
fn random_bytes_never_break_the_parser() {
    let mut rng = reliability_support::Rng::new(reliability_support::seed(
        "random_bytes_never_break_the_parser",
    ));
    let mut n = 0;
    for _ in 0..20_000 {
        let len = rng.below(200) as usize;
        let alphabet = b"{}[]\",:0123456789.eE+-truefalsnul \\\xff\xc3\xa9command args kwargs";
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.chance(0.8) {
                    *rng.pick(alphabet)
                } else {
                    rng.next_u64() as u8
                }
            })
            .collect();
        let _ = protocol::parse_line(&bytes);
        n += 1;
    }
    eprintln!("parse_line: {n} random byte strings");
}

/// The board counts and shapes named in the issue, explicitly: each is refused by the
/// parser or becomes a job that no machine can hold (destroyed at once as unsatisfiable),
/// and nothing panics.
#[test]
fn huge_and_negative_shapes_are_refused_or_cancelled() {
    let mut sim = Sim::new(config(vec![simple_machine("a", 2, 2)], 1.0));
    let shapes = [
        "[1000000000000000000]",
        "[4611686018427387904, 4611686018427387904]",
        "[9223372036854775807, 9223372036854775807]",
        "[-9223372036854775808, -9223372036854775808]",
        "[-1]",
        "[0]",
        "[-5, -5]",
        "[0, 0]",
        "[1, 1, 9223372036854775807]",
        "[-1, -1, -1]",
        "[9223372036854775807, 0, 0]",
        "[18446744073709551615]",
        "[1e30]",
        "[1e18, 1e18]",
        "[2.5]",
    ];
    for args in shapes {
        for kwargs in [
            "{\"owner\": \"x\"}",
            "{\"owner\": \"x\", \"min_ratio\": 1e308, \"max_dead_boards\": -1}",
            "{\"owner\": \"x\", \"max_dead_boards\": 9223372036854775807, \"max_dead_links\": -9223372036854775808}",
            "{\"owner\": \"x\", \"keepalive\": 1e308}",
            "{\"owner\": \"x\", \"keepalive\": -1e308}",
        ] {
            let line = format!("{{\"command\": \"create_job\", \"args\": {args}, \"kwargs\": {kwargs}}}");
            match protocol::parse_line(line.as_bytes()) {
                Parsed::Core(c @ Command::CreateJob(_)) => {
                    let id = match sim.cmd(c) {
                        spalloc::core::Response::JobId(id) => id,
                        other => panic!("{line}: {other:?}"),
                    };
                    let s = sim.state(id);
                    assert!(
                        s.state == 4 || s.state == 3 || s.state == 1,
                        "{line}: state {s:?}"
                    );
                    sim.advance(0.5);
                    sim.destroy(id, Some("done"));
                }
                Parsed::Exception(_) => {}
                other => panic!("{line}: parsed as {other:?}"),
            }
        }
    }
    sim.advance(2.0);
    assert!(sim.core.is_idle());
}

/// Regression (found by the property above): `where_is` with coordinates near 2^63 overflowed
/// `12 * x` and killed a debug server. The answer is now computed exactly, as the original's
/// Python integers did, then reduced modulo the machine's size.
#[test]
fn where_is_with_huge_coordinates_wraps_exactly() {
    let sim = Sim::new(config(vec![simple_machine("b", 1, 1)], 1.0));
    let cases = [
        // x = -1 → chip -12 ≡ 0; y = 10^18 → chip 12·10^18 ≡ 0; z beyond 2 counts as 0.
        (
            "{\"machine\": \"b\", \"x\": -1, \"y\": 1000000000000000000, \"z\": 4294967295}",
            [0, 0, 0],
        ),
        (
            "{\"machine\": \"b\", \"x\": 9223372036854775807, \"y\": -9223372036854775808, \"z\": 1}",
            [0, 0, 1],
        ),
        (
            "{\"machine\": \"b\", \"chip_x\": 9223372036854775807, \"chip_y\": -9223372036854775808}",
            // 2^63-1 ≡ 7 and -2^63 ≡ 4 (mod 12): chip (7, 4) is on board 0 of the triad.
            [0, 0, 0],
        ),
    ];
    for (kwargs, logical) in cases {
        let line = format!("{{\"command\": \"where_is\", \"kwargs\": {kwargs}}}");
        let Parsed::Core(c) = protocol::parse_line(line.as_bytes()) else {
            panic!("{line} did not parse");
        };
        match sim.core.query(&c) {
            spalloc::core::Response::WhereIs(Some(r)) => assert_eq!(r.logical, logical, "{line}"),
            other => panic!("{line}: {other:?}"),
        }
    }
}
