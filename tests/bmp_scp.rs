//! `ScpClient` against a hand-driven fake BMP on loopback, so that every stale, duplicate,
//! malformed or missing reply happens exactly when the test says.

use std::net::UdpSocket;
use std::thread::JoinHandle;
use std::time::Duration;

use spalloc::bmp::scp::{
    ClientTimeouts, ScpClient, ScpError, ScpReply, ScpRequest, CMD_FPGA_READ, CMD_VER,
};
use spalloc::bmp::ReturnCode;

/// Longest any wait in these tests may take.
const WAIT: Duration = Duration::from_secs(10);

struct FakeBmp {
    socket: UdpSocket,
}

impl FakeBmp {
    fn new() -> FakeBmp {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        FakeBmp { socket }
    }

    fn client(&self, timeouts: ClientTimeouts) -> ScpClient {
        ScpClient::connect(self.socket.local_addr().unwrap(), timeouts).unwrap()
    }

    /// Receive one request: (bytes, seq).
    fn recv(&self) -> (Vec<u8>, std::net::SocketAddr, u16) {
        let mut buf = [0u8; 512];
        let (len, src) = self
            .socket
            .recv_from(&mut buf)
            .expect("a request within the wait");
        (
            buf[..len].to_vec(),
            src,
            u16::from_le_bytes([buf[12], buf[13]]),
        )
    }

    /// Whether another request arrives within `within`.
    fn more(&self, within: Duration) -> bool {
        self.socket.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 512];
        let got = self.socket.recv_from(&mut buf).is_ok();
        self.socket.set_read_timeout(Some(WAIT)).unwrap();
        got
    }

    fn reply(&self, to: std::net::SocketAddr, rc: ReturnCode, seq: u16, payload: &[u8]) {
        let bytes = ScpReply {
            rc,
            seq,
            payload: payload.to_vec(),
        }
        .encode(0, 0, 0, 0);
        self.socket.send_to(&bytes, to).unwrap();
    }
}

fn ver_payload(board: u32) -> Vec<u8> {
    let mut p = Vec::new();
    for a in [(1 << 24) | (board << 8) | board, 0xFFFF_0100, 0] {
        p.extend_from_slice(&a.to_le_bytes());
    }
    p.extend_from_slice(b"BC&MP/Spin5-BMP\x002.1.2\0");
    p
}

fn timeouts(command_ms: u64, retries: u32) -> ClientTimeouts {
    ClientTimeouts {
        power_timeout: Duration::from_millis(200),
        command_timeout: Duration::from_millis(command_ms),
        command_retries: retries,
    }
}

fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    std::thread::spawn(f)
}

#[test]
fn stale_replies_are_skipped_and_the_right_one_matched() {
    let bmp = FakeBmp::new();
    let mut client = bmp.client(timeouts(2000, 0));
    let call = spawn(move || (client.version(3), client));
    let (bytes, src, seq) = bmp.recv();
    assert_eq!(bytes, ScpRequest::version(3).encode(seq));
    // An old sequence number with a reply that would be wrong anyway, then the right one.
    bmp.reply(src, ReturnCode::OK, seq.wrapping_sub(1), &[1, 2, 3]);
    bmp.reply(src, ReturnCode::ARG, seq.wrapping_sub(1), &[]);
    bmp.reply(src, ReturnCode::OK, seq, &ver_payload(3));
    let (result, _) = call.join().unwrap();
    let info = result.unwrap();
    assert_eq!((info.version, info.board_id), ((2, 1, 2), 3));
}

#[test]
fn duplicate_reply_is_ignored_by_the_next_command() {
    let bmp = FakeBmp::new();
    let mut client = bmp.client(timeouts(2000, 0));
    let call = spawn(move || {
        let v = client.version(0).map(|v| v.version);
        let r = client.fpga_read(1, 2, 0x40004);
        (v, r)
    });
    let (_, src, seq) = bmp.recv();
    bmp.reply(src, ReturnCode::OK, seq, &ver_payload(0));
    bmp.reply(src, ReturnCode::OK, seq, &ver_payload(0));
    let (bytes, src, seq2) = bmp.recv();
    assert_eq!(
        seq2,
        seq.wrapping_add(1),
        "each command takes the next sequence number"
    );
    assert_eq!(bytes, ScpRequest::fpga_read(1, 2, 0x40004).encode(seq2));
    bmp.reply(src, ReturnCode::OK, seq2, &2u32.to_le_bytes());
    let (v, r) = call.join().unwrap();
    assert_eq!(v.unwrap(), (2, 1, 2));
    assert_eq!(r.unwrap(), 2);
}

#[test]
fn lost_replies_are_resent_with_the_same_bytes() {
    let bmp = FakeBmp::new();
    let mut client = bmp.client(timeouts(200, 3));
    let call = spawn(move || client.fpga_write(4, 1, 0x1005C, 1));
    let first = bmp.recv();
    let second = bmp.recv();
    let third = bmp.recv();
    assert_eq!(first.0, second.0);
    assert_eq!(second.0, third.0);
    bmp.reply(third.1, ReturnCode::OK, third.2, &[]);
    call.join().unwrap().unwrap();
}

#[test]
fn no_reply_at_all_times_out_after_every_send() {
    let bmp = FakeBmp::new();
    let mut client = bmp.client(timeouts(30, 2));
    let call = spawn(move || client.version(0));
    for _ in 0..3 {
        bmp.recv();
    }
    let err = call.join().unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            ScpError::Timeout {
                cmd: CMD_VER,
                board: 0,
                sends: 3
            }
        ),
        "{err}"
    );
    assert!(!bmp.more(Duration::from_millis(100)));
}

#[test]
fn power_is_sent_once() {
    let bmp = FakeBmp::new();
    let mut client = bmp.client(timeouts(30, 5));
    let call = spawn(move || client.power(true, 0b111, 0));
    let (bytes, _, seq) = bmp.recv();
    assert_eq!(bytes, ScpRequest::power(true, 7, 0).encode(seq));
    let err = call.join().unwrap().unwrap_err();
    assert!(matches!(err, ScpError::Timeout { sends: 1, .. }), "{err}");
    assert!(
        !bmp.more(Duration::from_millis(100)),
        "power must not be resent"
    );
}

#[test]
fn fatal_codes_fail_at_once_and_transient_codes_are_resent() {
    let bmp = FakeBmp::new();
    let mut client = bmp.client(timeouts(2000, 3));
    let call = spawn(move || {
        let fatal = client.fpga_read(0, 0, 0x40004);
        let transient = client.fpga_read(0, 1, 0x40004);
        (fatal, transient)
    });
    let (_, src, seq) = bmp.recv();
    bmp.reply(src, ReturnCode::ARG, seq, &[]);
    let (_, src, seq) = bmp.recv();
    bmp.reply(src, ReturnCode::P2P_TIMEOUT, seq, &[]);
    let (_, src, seq_again) = bmp.recv();
    assert_eq!(seq, seq_again);
    bmp.reply(src, ReturnCode::OK, seq, &1u32.to_le_bytes());
    let (fatal, transient) = call.join().unwrap();
    let err = fatal.unwrap_err();
    assert!(
        matches!(
            err,
            ScpError::ReturnCode {
                cmd: CMD_FPGA_READ,
                board: 0,
                rc: ReturnCode::ARG
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("RC_ARG"), "{err}");
    assert_eq!(transient.unwrap(), 1);
}

/// A datagram that is not a well-formed reply (a runt, or wrong SDP flags) says nothing
/// about the command in flight: it is ignored like a stale reply, and the valid reply right
/// behind it is taken (it used to fail the whole attempt).
#[test]
fn runt_and_foreign_datagrams_are_ignored() {
    let bmp = FakeBmp::new();
    let mut client = bmp.client(timeouts(2000, 0));
    let call = spawn(move || {
        let after_runt = client.version(0).map(|v| v.version);
        let after_bad_flags = client.version(0).map(|v| v.version);
        [after_runt, after_bad_flags]
    });
    let (_, src, seq) = bmp.recv();
    bmp.socket
        .send_to(&[0, 0, 7, 8, 0xE0, 0, 0, 0, 0, 0], src)
        .unwrap();
    bmp.socket.send_to(&[], src).unwrap();
    bmp.reply(src, ReturnCode::OK, seq, &ver_payload(0));
    let (_, src, seq) = bmp.recv();
    let mut bytes = ScpReply {
        rc: ReturnCode::OK,
        seq,
        payload: ver_payload(0),
    }
    .encode(0, 0, 0, 0);
    bytes[2] = 0x87;
    bmp.socket.send_to(&bytes, src).unwrap();
    bmp.reply(src, ReturnCode::OK, seq, &ver_payload(0));
    for (i, result) in call.join().unwrap().into_iter().enumerate() {
        assert_eq!(
            result.unwrap_or_else(|e| panic!("case {i}: {e}")),
            (2, 1, 2)
        );
    }
    assert!(
        !bmp.more(Duration::from_millis(300)),
        "a command was resent"
    );
}

/// A well-formed reply to the command in flight whose payload is wrong is an error.
#[test]
fn malformed_replies_are_errors() {
    let bmp = FakeBmp::new();
    let mut client = bmp.client(timeouts(2000, 0));
    let call = spawn(move || {
        let short_read = client.fpga_read(0, 0, 0x40004);
        let long_write = client.fpga_write(0, 0, 0x5C, 1);
        let bad_version = client.version(0);
        [short_read.map(|_| ()), long_write, bad_version.map(|_| ())]
    });
    let (_, src, seq) = bmp.recv();
    bmp.reply(src, ReturnCode::OK, seq, &[1, 0]);
    let (_, src, seq) = bmp.recv();
    bmp.reply(src, ReturnCode::OK, seq, &[0; 4]);
    let (_, src, seq) = bmp.recv();
    let mut payload = ver_payload(0);
    payload.truncate(12);
    payload.extend_from_slice(b"BC&MP/Spin5-BMP\x00two\0");
    bmp.reply(src, ReturnCode::OK, seq, &payload);
    for (i, result) in call.join().unwrap().into_iter().enumerate() {
        let err = result.expect_err("malformed reply accepted");
        assert!(matches!(err, ScpError::Malformed(_)), "case {i}: {err}");
    }
}
