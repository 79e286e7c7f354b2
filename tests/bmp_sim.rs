//! The simulator on its own, spoken to with raw datagrams: exact reply bytes, return codes,
//! register behaviour and the loopback-only rule.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use spalloc::bmp::scp::{ClientTimeouts, ScpClient, ScpRequest, CMD_VER};
use spalloc::bmp::{BoardPower, Fault, FaultKind, ReturnCode, ScpError, SimOptions, Simulator};
use spalloc::core::coordinates::Link;

const WAIT: Duration = Duration::from_secs(10);

fn start(options: SimOptions) -> (Simulator, SocketAddr) {
    let sim = Simulator::start(&["127.0.0.1:0".parse().unwrap()], options).unwrap();
    let addr = sim.endpoints()[0];
    (sim, addr)
}

fn raw(addr: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn exchange(s: &UdpSocket, bytes: &[u8]) -> Vec<u8> {
    s.send(bytes).unwrap();
    let mut buf = [0u8; 512];
    let n = s.recv(&mut buf).expect("a reply within the wait");
    buf[..n].to_vec()
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn rc(reply: &[u8]) -> u16 {
    u16::from_le_bytes([reply[10], reply[11]])
}

fn client(addr: SocketAddr) -> ScpClient {
    let t = ClientTimeouts {
        power_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        command_retries: 0,
    };
    ScpClient::connect(addr, t).unwrap()
}

#[test]
fn ver_reply_is_byte_for_byte_the_worked_example() {
    let (_sim, addr) = start(SimOptions::default());
    let s = raw(addr);
    let reply = exchange(&s, &ScpRequest::version(3).encode(1));
    assert_eq!(
        reply,
        hex(
            "00 00 07 08 e0 03 00 00 00 00 80 00 01 00 03 03 00 01 00 01 ff ff 00 00 00 5b \
             42 43 26 4d 50 2f 53 70 69 6e 35 2d 42 4d 50 00 32 2e 31 2e 32 00"
        )
    );
    let reply = exchange(&s, &ScpRequest::power(true, 7, 0).encode(2));
    assert_eq!(reply, hex("00 00 07 08 e0 00 00 00 00 00 80 00 02 00"));
    let reply = exchange(&s, &ScpRequest::fpga_read(2, 1, 0x40004).encode(4));
    assert_eq!(
        reply,
        hex("00 00 07 08 e0 02 00 00 00 00 80 00 04 00 01 00 00 00")
    );
}

#[test]
fn return_codes() {
    let (sim, addr) = start(SimOptions {
        present_boards: 0b111,
        ..SimOptions::default()
    });
    let s = raw(addr);
    let mut port = ScpRequest::version(0).encode(1);
    port[4] = 1 << 5; // Port 1, board 0.
    assert_eq!(rc(&exchange(&s, &port)), ReturnCode::PORT.0);
    assert_eq!(
        rc(&exchange(&s, &ScpRequest::version(5).encode(2))),
        ReturnCode::ROUTE.0
    );
    assert_eq!(
        rc(&exchange(&s, &ScpRequest::version(0).encode(3)[..20])),
        ReturnCode::LEN.0
    );
    let unknown = ScpRequest {
        board: 0,
        cmd: 99,
        args: [0; 3],
        data: vec![],
    };
    let reply = exchange(&s, &unknown.encode(4));
    assert_eq!((rc(&reply), reply.len()), (ReturnCode::CMD.0, 14));
    let mut power = ScpRequest::power(true, 1, 0);
    power.args[0] = 2;
    assert_eq!(rc(&exchange(&s, &power.encode(5))), ReturnCode::ARG.0);
    assert_eq!(
        rc(&exchange(&s, &ScpRequest::fpga_read(0, 3, 0).encode(6))),
        ReturnCode::ARG.0
    );
    let mut big = ScpRequest::fpga_read(0, 0, 0);
    big.args[1] = 260;
    assert_eq!(rc(&exchange(&s, &big.encode(7))), ReturnCode::ARG.0);
    sim.inject(Fault::new(FaultKind::AbsentBoard).board(1));
    assert_eq!(
        rc(&exchange(&s, &ScpRequest::fpga_read(1, 0, 0).encode(8))),
        ReturnCode::ROUTE.0
    );
    let seqs: Vec<(u16, Option<u16>)> = sim.log().iter().map(|e| (e.seq, e.rc)).collect();
    assert_eq!(seqs.len(), 8);
    assert_eq!(seqs[7], (8, Some(0x87)));
}

#[test]
fn registers_power_and_stop_bits() {
    let (sim, addr) = start(SimOptions {
        off_read_value: 0xDEAD,
        ..SimOptions::default()
    });
    let mut c = client(addr);
    // Off: reads give the off value, writes are ignored.
    assert_eq!(c.fpga_read(1, 0, 0x40004).unwrap(), 0xDEAD);
    c.fpga_write(1, 0, 0x5C, 1).unwrap();
    assert!(!sim.link_stop(addr, 1, Link::East));
    c.power(true, 0b10, 0).unwrap();
    assert_eq!(sim.board_power(addr, 1), Some(BoardPower::On));
    for f in 0..3 {
        assert_eq!(c.fpga_read(1, f, 0x40004).unwrap(), f);
    }
    // STOP keeps bit 0 only; read-only registers ignore writes; RW main registers keep them.
    c.fpga_write(1, 2, 0x1005C, 3).unwrap();
    assert_eq!(c.fpga_read(1, 2, 0x1005C).unwrap(), 1);
    assert!(sim.link_stop(addr, 1, Link::NorthEast));
    c.fpga_write(1, 2, 0x40004, 0).unwrap();
    assert_eq!(c.fpga_read(1, 2, 0x40004).unwrap(), 2);
    assert_eq!(c.fpga_read(1, 0, 0x40008).unwrap(), 0xFFFF_FFFF);
    c.fpga_write(1, 0, 0x40008, 0x1234).unwrap();
    assert_eq!(c.fpga_read(1, 0, 0x40008).unwrap(), 0x1234);
    // Power-on of a board that is on reboots it: STOP back to 0.
    c.power(true, 0b10, 0).unwrap();
    assert!(!sim.link_stop(addr, 1, Link::NorthEast));
    c.power(false, 0b10, 0).unwrap();
    assert_eq!(sim.board_power(addr, 1), Some(BoardPower::Off));
    assert_eq!(c.version(0).unwrap().version, (2, 1, 2));
}

#[test]
fn boot_time_blocks_a_power_on_of_board_zero_only() {
    let (sim, addr) = start(SimOptions {
        boot_ms: 300,
        ..SimOptions::default()
    });
    let mut c = client(addr);
    let t = std::time::Instant::now();
    c.power(true, 0b10, 0).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "board 1 is acknowledged at once"
    );
    assert_eq!(sim.board_power(addr, 1), Some(BoardPower::Booting));
    // A command for a booting board waits for the boot (the real BMP is busy).
    assert_eq!(c.fpga_read(1, 1, 0x40004).unwrap(), 1);
    let t = std::time::Instant::now();
    c.power(true, 0b1, 0).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.board_power(addr, 0), Some(BoardPower::On));
}

#[test]
fn faults_are_scoped_and_counted() {
    let (sim, addr) = start(SimOptions::default());
    let mut c = client(addr);
    sim.inject(
        Fault::new(FaultKind::ErrorCode(0x8c))
            .endpoint(addr)
            .board(2)
            .cmd(CMD_VER)
            .times(2),
    );
    assert!(c.version(1).is_ok());
    for _ in 0..2 {
        let err = c.version(2).unwrap_err();
        assert!(
            matches!(
                err,
                ScpError::ReturnCode {
                    rc: ReturnCode::P2P_REJECT,
                    ..
                }
            ),
            "{err}"
        );
    }
    assert!(c.version(2).is_ok());
    let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
    sim.inject(Fault::new(FaultKind::GoSilent).endpoint(other));
    assert!(c.version(0).is_ok());
    sim.inject(Fault::new(FaultKind::GoSilent));
    let mut quick = ScpClient::connect(
        addr,
        ClientTimeouts {
            power_timeout: Duration::from_millis(50),
            command_timeout: Duration::from_millis(50),
            command_retries: 1,
        },
    )
    .unwrap();
    assert!(matches!(
        quick.version(0),
        Err(ScpError::Timeout { sends: 2, .. })
    ));
    sim.clear_faults();
    assert!(quick.version(0).is_ok());
    sim.clear_log();
    assert!(sim.log().is_empty());
}

#[test]
fn only_loopback_addresses_are_simulated() {
    let err =
        Simulator::start(&["10.1.2.3:0".parse().unwrap()], SimOptions::default()).unwrap_err();
    assert!(err.to_string().contains("only loopback"), "{err}");
}

#[test]
fn several_endpoints_are_independent() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = Simulator::start(&[any, any], SimOptions::default()).unwrap();
    let [a, b] = [sim.endpoints()[0], sim.endpoints()[1]];
    assert_ne!(a, b);
    client(a).power(true, 0b1, 0).unwrap();
    assert_eq!(sim.board_power(a, 0), Some(BoardPower::On));
    assert_eq!(sim.board_power(b, 0), Some(BoardPower::Off));
    assert_eq!(sim.transcript(a), vec!["POWER on 0x1".to_string()]);
    assert!(sim.transcript(b).is_empty());
}

/// `latency_ms` holds every reply at least that long, and one BMP answers one request at a
/// time: three requests sent together are answered in arrival order, the last no sooner
/// than three latencies after they were sent. (Lower bounds only: a busy machine can make
/// the replies later, never earlier.)
#[test]
fn latency_delays_each_reply_and_one_bmp_answers_serially() {
    const LATENCY_MS: u64 = 40;
    let (sim, addr) = start(SimOptions {
        latency_ms: LATENCY_MS,
        ..SimOptions::default()
    });
    let latency = Duration::from_millis(LATENCY_MS);
    let s = raw(addr);
    let t = std::time::Instant::now();
    let reply = exchange(&s, &ScpRequest::version(0).encode(1));
    let one = t.elapsed();
    assert_eq!(rc(&reply), ReturnCode::OK.0);
    assert!(
        one >= latency,
        "one exchange took {one:?}, less than {latency:?}"
    );

    let t = std::time::Instant::now();
    for seq in [2u16, 3, 4] {
        s.send(&ScpRequest::version(0).encode(seq)).unwrap();
    }
    let mut buf = [0u8; 512];
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let n = s.recv(&mut buf).expect("a reply within the wait");
        seqs.push(u16::from_le_bytes([buf[12], buf[13]]));
        assert_eq!(rc(&buf[..n]), ReturnCode::OK.0);
    }
    let three = t.elapsed();
    assert_eq!(seqs, vec![2, 3, 4]);
    assert!(
        three >= latency * 3,
        "three queued exchanges took {three:?}, less than {:?}",
        latency * 3
    );
    assert_eq!(sim.log().len(), 4);
}
