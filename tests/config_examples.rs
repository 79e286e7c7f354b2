//! The example configurations in `examples/` load, validate, and keep every BMP on loopback
//! so that `--simulate-bmps` can serve them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use spalloc::config::{self, Config};

fn example(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    match config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("{} does not load:\n{e}", path.display()),
    }
}

fn assert_loopback_bmps(c: &Config) {
    for m in &c.machines {
        for b in &m.bmps {
            let ip: Ipv4Addr = b
                .host()
                .parse()
                .unwrap_or_else(|_| panic!("{}: {:?} is not an IPv4 address", m.name, b.address));
            assert!(
                ip.is_loopback(),
                "{}: BMP {} is not on loopback",
                m.name,
                b.address
            );
        }
        for b in &m.boards {
            assert!(
                b.ip.starts_with("127."),
                "{}: board IP {} is not in 127/8",
                m.name,
                b.ip
            );
        }
    }
    // Distinct (host, port) pairs, so one simulator socket per BMP.
    let endpoints: BTreeSet<(String, u16)> = c
        .machines
        .iter()
        .flat_map(|m| m.bmps.iter().map(|b| (b.host().to_string(), b.port())))
        .collect();
    assert_eq!(
        endpoints.len(),
        c.machines.iter().map(|m| m.bmps.len()).sum::<usize>()
    );
}

#[test]
fn machines_json_is_the_demo_configuration() {
    let c = example("machines.json");
    assert_eq!(c.seconds_before_free_s, 5.0);
    assert_eq!(c.timeout_check_interval_s, 1.0);
    assert_eq!(c.bmp.post_power_on_delay_s, 0.1);
    assert_eq!(c.bmp.retry_delay_s, 1.0);
    assert_eq!(c.bmp.command_timeout_s, 0.2);
    assert_eq!(c.bmp.power_on_timeout_s, 2.0);
    let names: Vec<&str> = c.machines.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["spin4x2", "board"]);

    let m = c.machine("spin4x2").expect("spin4x2");
    assert_eq!(m.tags, ["default"]);
    assert_eq!((m.width, m.height), (4, 2));
    assert_eq!(m.boards.len(), 24);
    assert!(m.dead_boards.is_empty());
    let frames: Vec<(u32, u32)> = m.bmps.iter().map(|b| (b.cabinet, b.frame)).collect();
    assert_eq!(frames, [(0, 0), (0, 1)]);
    for f in 0..2 {
        assert_eq!(
            m.boards
                .iter()
                .filter(|b| b.cabinet == 0 && b.frame == f)
                .count(),
            12
        );
    }

    let b = c.machine("board").expect("board");
    assert_eq!(b.tags, ["single"]);
    assert_eq!(
        (b.width, b.height, b.boards.len(), b.dead_boards.len()),
        (1, 1, 1, 2)
    );
    assert_loopback_bmps(&c);
}

#[test]
fn spin1m_json_is_a_million_core_machine() {
    let c = example("spin1m.json");
    assert_eq!(c.machines.len(), 1);
    let m = &c.machines[0];
    assert_eq!((m.width, m.height), (20, 20));
    assert_eq!(m.boards.len(), 1200);
    assert_eq!(m.bmps.len(), 50);
    assert!(m.bmps.iter().all(|b| b.cabinet < 10 && b.frame < 5));
    assert_eq!(m.bmps[0].address, "127.16.0.0");
    assert_eq!(m.bmps[49].address, "127.16.49.0");
    assert_eq!(m.boards[0].ip, "127.16.0.1");
    assert_loopback_bmps(&c);
    // The explicit form of the same machine reads back equal.
    assert_eq!(
        config::parse(&c.to_json().to_string(), Path::new(".")).expect("round trip"),
        c
    );
}
