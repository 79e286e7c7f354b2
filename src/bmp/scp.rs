//! SCP-over-SDP packets as a SpiNN-5 BMP speaks them, and a blocking client for one BMP.
//!
//! Wire format (all little-endian), see `bmp-protocol.md` §1.2–1.5:
//!
//! ```text
//! 0  2  pad (00 00)          10 2 cmd_rc
//! 2  1  flags (0x87 req)     12 2 seq
//! 3  1  tag (0xFF)           14 4 arg1   (requests; replies carry payload from 14)
//! 4  1  dest port<<5 | cpu   18 4 arg2
//! 5  1  srce port<<5 | cpu   22 4 arg3
//! 6  2  dest addr (y, x)     26 …  data (0–256 bytes)
//! 8  2  srce addr (y, x)
//! ```
//!
//! The board number travels in the low five bits of byte 4; cabinet and frame only choose the
//! UDP endpoint. [`ScpClient`] keeps one command in flight at a time (the BMP firmware is
//! single-threaded and has eight buffers), matches replies by sequence number, ignores stale
//! ones, and resends on timeout as the reference clients do (§1.6–1.7).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

/// The UDP port every BMP listens on.
pub const SCP_PORT: u16 = crate::config::DEFAULT_BMP_PORT;

/// Command: read the BMP's version (`CMD_VER`).
pub const CMD_VER: u16 = 0;
/// Command: read FPGA registers over SPI (`CMD_FPGA_READ`, a.k.a. `CMD_LINK_READ`).
pub const CMD_FPGA_READ: u16 = 17;
/// Command: write FPGA registers over SPI (`CMD_FPGA_WRITE`, a.k.a. `CMD_LINK_WRITE`).
pub const CMD_FPGA_WRITE: u16 = 18;
/// Command: set LEDs (not used by the server).
pub const CMD_LED: u16 = 25;
/// Command: read BMP information (not used by the server).
pub const CMD_BMP_INFO: u16 = 48;
/// Command: power boards on or off (`CMD_POWER`).
pub const CMD_POWER: u16 = 57;

/// SDP flags of a request that wants a reply.
pub const FLAGS_REPLY_EXPECTED: u8 = 0x87;
/// SDP flags the BMP puts on its replies (the request's flags with bit 7 cleared).
pub const FLAGS_REPLY: u8 = 0x07;
/// SDP tag of a request that wants a reply.
pub const TAG_REPLY: u8 = 0xFF;
/// Source port/CPU byte clients send: port 7, CPU 31.
pub const SRCE_PORT_CPU: u8 = 0xFF;

/// Bytes of a request before its data: pad, SDP header, cmd, seq and three args.
pub const REQUEST_HEADER_BYTES: usize = 26;
/// Bytes of a reply before its payload: pad, SDP header, rc and seq.
pub const REPLY_HEADER_BYTES: usize = 14;
/// Most data bytes one packet may carry (`SDP_BUF_SIZE`).
pub const MAX_DATA_BYTES: usize = 256;
/// Boards per frame; board numbers are 0..BOARDS_PER_FRAME.
pub const BOARDS_PER_FRAME: u32 = 24;

/// The FPGA main-bank `FLAG` register; bits 1–0 hold the FPGA's ID.
pub const FPGA_FLAG_ADDR: u32 = 0x0004_0004;
/// Mask of the FPGA ID in the `FLAG` register.
pub const FPGA_FLAG_ID_MASK: u32 = 0x3;
/// Offset of the `STOP` register inside a link bank.
pub const STOP_OFFSET: u32 = 0x5C;
/// Distance between two link register banks.
pub const BANK_STRIDE: u32 = 0x1_0000;

/// An SCP return code (the `cmd_rc` field of a reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReturnCode(pub u16);

impl ReturnCode {
    /// Success.
    pub const OK: ReturnCode = ReturnCode(0x80);
    /// Bad packet length.
    pub const LEN: ReturnCode = ReturnCode(0x81);
    /// Bad checksum.
    pub const SUM: ReturnCode = ReturnCode(0x82);
    /// Unknown command.
    pub const CMD: ReturnCode = ReturnCode(0x83);
    /// Bad argument.
    pub const ARG: ReturnCode = ReturnCode(0x84);
    /// Bad SDP port.
    pub const PORT: ReturnCode = ReturnCode(0x85);
    /// Timeout inside the BMP (EEPROM, FPGA load…).
    pub const TIMEOUT: ReturnCode = ReturnCode(0x86);
    /// The target board is not on the CAN bus.
    pub const ROUTE: ReturnCode = ReturnCode(0x87);
    /// Bad CPU.
    pub const CPU: ReturnCode = ReturnCode(0x88);
    /// Dead destination.
    pub const DEAD: ReturnCode = ReturnCode(0x89);
    /// No free buffer.
    pub const BUF: ReturnCode = ReturnCode(0x8a);
    /// CAN open timed out.
    pub const P2P_NOREPLY: ReturnCode = ReturnCode(0x8b);
    /// CAN open rejected.
    pub const P2P_REJECT: ReturnCode = ReturnCode(0x8c);
    /// Destination busy.
    pub const P2P_BUSY: ReturnCode = ReturnCode(0x8d);
    /// CAN data timed out.
    pub const P2P_TIMEOUT: ReturnCode = ReturnCode(0x8e);
    /// Packet transmission failed.
    pub const PKT_TX: ReturnCode = ReturnCode(0x8f);

    /// The code's name as the firmware headers spell it, or `RC_UNKNOWN`.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x80 => "RC_OK",
            0x81 => "RC_LEN",
            0x82 => "RC_SUM",
            0x83 => "RC_CMD",
            0x84 => "RC_ARG",
            0x85 => "RC_PORT",
            0x86 => "RC_TIMEOUT",
            0x87 => "RC_ROUTE",
            0x88 => "RC_CPU",
            0x89 => "RC_DEAD",
            0x8a => "RC_BUF",
            0x8b => "RC_P2P_NOREPLY",
            0x8c => "RC_P2P_REJECT",
            0x8d => "RC_P2P_BUSY",
            0x8e => "RC_P2P_TIMEOUT",
            0x8f => "RC_PKT_TX",
            _ => "RC_UNKNOWN",
        }
    }

    /// Whether the BMP may answer differently if asked again (SpiNNMan's `RETRY_CODES`):
    /// such replies use up one resend instead of failing the command at once.
    pub fn is_transient(self) -> bool {
        matches!(self.0, 0x81 | 0x86 | 0x8b | 0x8d | 0x8e)
    }
}

impl fmt::Display for ReturnCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.name(), self.0)
    }
}

/// A command's name, for messages and logs.
pub fn command_name(cmd: u16) -> &'static str {
    match cmd {
        CMD_VER => "VER",
        CMD_FPGA_READ => "FPGA_READ",
        CMD_FPGA_WRITE => "FPGA_WRITE",
        CMD_LED => "LED",
        CMD_BMP_INFO => "BMP_INFO",
        CMD_POWER => "POWER",
        _ => "UNKNOWN",
    }
}

/// One SCP request to a BMP, before it gets a sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScpRequest {
    /// Target board (0..24), encoded as the SDP destination CPU.
    pub board: u32,
    /// Command code.
    pub cmd: u16,
    /// The three arguments; unused ones are sent as 0.
    pub args: [u32; 3],
    /// Data after the arguments (at most [`MAX_DATA_BYTES`]).
    pub data: Vec<u8>,
}

impl ScpRequest {
    /// The UDP payload of this request with sequence number `seq` (§1.2). Always wants a reply.
    pub fn encode(&self, seq: u16) -> Vec<u8> {
        let mut out = Vec::with_capacity(REQUEST_HEADER_BYTES + self.data.len());
        out.extend_from_slice(&[0, 0]);
        out.push(FLAGS_REPLY_EXPECTED);
        out.push(TAG_REPLY);
        // Destination port 0 (the command handler); the board is the "CPU".
        out.push((self.board & 0x1F) as u8);
        out.push(SRCE_PORT_CPU);
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&self.cmd.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        for arg in self.args {
            out.extend_from_slice(&arg.to_le_bytes());
        }
        out.extend_from_slice(&self.data);
        out
    }

    /// `CMD_VER` to `board`.
    pub fn version(board: u32) -> ScpRequest {
        ScpRequest {
            board,
            cmd: CMD_VER,
            args: [0; 3],
            data: Vec::new(),
        }
    }

    /// `CMD_POWER` naming the boards in `mask`, sent to `board` (always 0 in practice: the
    /// firmware mishandles power commands addressed elsewhere).
    pub fn power(on: bool, mask: u32, board: u32) -> ScpRequest {
        ScpRequest {
            board,
            cmd: CMD_POWER,
            args: [u32::from(on), mask, 0],
            data: Vec::new(),
        }
    }

    /// `CMD_FPGA_READ` of one word at `addr` of `fpga` on `board`.
    pub fn fpga_read(board: u32, fpga: u32, addr: u32) -> ScpRequest {
        ScpRequest {
            board,
            cmd: CMD_FPGA_READ,
            args: [addr & !3, 4, fpga],
            data: Vec::new(),
        }
    }

    /// `CMD_FPGA_WRITE` of one word `value` at `addr` of `fpga` on `board`.
    pub fn fpga_write(board: u32, fpga: u32, addr: u32, value: u32) -> ScpRequest {
        ScpRequest {
            board,
            cmd: CMD_FPGA_WRITE,
            args: [addr & !3, 4, fpga],
            data: value.to_le_bytes().to_vec(),
        }
    }
}

/// A reply from a BMP: return code, echoed sequence number and payload (from offset 14).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScpReply {
    /// The return code.
    pub rc: ReturnCode,
    /// The sequence number of the request it answers.
    pub seq: u16,
    /// Everything after the sequence number.
    pub payload: Vec<u8>,
}

impl ScpReply {
    /// Parse a reply datagram. Rejects anything shorter than the 14-byte header and any flags
    /// byte other than `0x07`, as SpiNNMan does; ignores pad, tag and addresses.
    pub fn decode(bytes: &[u8]) -> Result<ScpReply, ScpError> {
        if bytes.len() < REPLY_HEADER_BYTES {
            return Err(ScpError::Malformed(format!(
                "reply of {} bytes is shorter than the {REPLY_HEADER_BYTES}-byte header",
                bytes.len()
            )));
        }
        if bytes[2] != FLAGS_REPLY {
            return Err(ScpError::Malformed(format!(
                "reply has SDP flags 0x{:02x}, expected 0x{FLAGS_REPLY:02x}",
                bytes[2]
            )));
        }
        Ok(ScpReply {
            rc: ReturnCode(u16::from_le_bytes([bytes[10], bytes[11]])),
            seq: u16::from_le_bytes([bytes[12], bytes[13]]),
            payload: bytes[REPLY_HEADER_BYTES..].to_vec(),
        })
    }

    /// Encode a reply as the BMP does (§1.4), for a simulator: `rx_board` is the board of the
    /// BMP that answers, `dest_port_cpu` and `dest_addr` are echoed from the request.
    pub fn encode(
        &self,
        rx_board: u32,
        frame_id: u16,
        dest_port_cpu: u8,
        dest_addr: u16,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(REPLY_HEADER_BYTES + self.payload.len());
        out.extend_from_slice(&[0, 0, FLAGS_REPLY, 8]);
        out.push((7 << 5) | (rx_board & 0x1F) as u8);
        out.push(dest_port_cpu);
        out.extend_from_slice(&frame_id.to_le_bytes());
        out.extend_from_slice(&dest_addr.to_le_bytes());
        out.extend_from_slice(&self.rc.0.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }
}

/// What `CMD_VER` says about a BMP (§2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// Code block the firmware runs from (1 or 2).
    pub code_block: u8,
    /// The frame's ID from the backplane EEPROM.
    pub frame_id: u8,
    /// The board's CAN ID.
    pub can_id: u8,
    /// The board that answered.
    pub board_id: u8,
    /// Most data bytes per packet the BMP accepts.
    pub buffer_size: u16,
    /// Build date, Unix seconds.
    pub build_date: u32,
    /// Firmware name, e.g. `BC&MP`.
    pub name: String,
    /// Hardware name, e.g. `Spin5-BMP`.
    pub hardware: String,
    /// Version `(major, minor, patch)`.
    pub version: (u32, u32, u32),
}

impl VersionInfo {
    /// Decode the payload of an OK `CMD_VER` reply (args then the strings).
    pub fn decode(payload: &[u8]) -> Result<VersionInfo, ScpError> {
        let bad = |why: &str| Err(ScpError::Malformed(format!("VER reply: {why}")));
        if payload.len() < 12 {
            return bad(&format!(
                "{} payload bytes, need at least 12",
                payload.len()
            ));
        }
        let word = |i: usize| u32::from_le_bytes(payload[i..i + 4].try_into().expect("4 bytes"));
        let (arg1, arg2, arg3) = (word(0), word(4), word(8));
        let data = &payload[12..];
        // Fields are NUL-terminated; a missing final NUL is tolerated for the last one.
        let mut fields = data.split(|&b| b == 0);
        let name_hw = String::from_utf8_lossy(fields.next().unwrap_or(&[])).into_owned();
        let Some((name, hardware)) = name_hw.split_once('/') else {
            return bad(&format!("name {name_hw:?} has no '/'"));
        };
        if hardware.contains('/') {
            return bad(&format!("name {name_hw:?} has more than one '/'"));
        }
        let version = if arg2 >> 16 == 0xFFFF {
            let text = String::from_utf8_lossy(fields.next().unwrap_or(&[])).into_owned();
            let parts: Vec<Option<u32>> = text.split('.').map(|p| p.parse().ok()).collect();
            match parts.as_slice() {
                [Some(a), Some(b), Some(c)] => (*a, *b, *c),
                _ => return bad(&format!("version {text:?} is not N.N.N")),
            }
        } else {
            let v = arg2 >> 16;
            (v / 100, v % 100, 0)
        };
        let [board_id, can_id, frame_id, code_block] = arg1.to_le_bytes();
        Ok(VersionInfo {
            code_block,
            frame_id,
            can_id,
            board_id,
            buffer_size: (arg2 & 0xFFFF) as u16,
            build_date: arg3,
            name: name.to_string(),
            hardware: hardware.to_string(),
            version,
        })
    }
}

impl fmt::Display for VersionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.version;
        write!(
            f,
            "{}/{} {a}.{b}.{c} (board {}, frame {})",
            self.name, self.hardware, self.board_id, self.frame_id
        )
    }
}

/// Why an SCP command failed.
#[derive(Debug)]
pub enum ScpError {
    /// The socket failed (other than a timeout).
    Io(io::Error),
    /// No matching reply arrived after every send.
    Timeout {
        /// The command.
        cmd: u16,
        /// Its target board.
        board: u32,
        /// How many times it was sent.
        sends: u32,
    },
    /// The BMP answered with an error code.
    ReturnCode {
        /// The command.
        cmd: u16,
        /// Its target board.
        board: u32,
        /// The code.
        rc: ReturnCode,
    },
    /// A reply could not be understood.
    Malformed(String),
}

impl fmt::Display for ScpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScpError::Io(e) => write!(f, "socket error: {e}"),
            ScpError::Timeout { cmd, board, sends } => write!(
                f,
                "no reply to {} for board {board} after {sends} send(s)",
                command_name(*cmd)
            ),
            ScpError::ReturnCode { cmd, board, rc } => {
                write!(
                    f,
                    "{} for board {board} failed with {rc}",
                    command_name(*cmd)
                )
            }
            ScpError::Malformed(why) => write!(f, "malformed reply: {why}"),
        }
    }
}

impl std::error::Error for ScpError {}

impl From<io::Error> for ScpError {
    fn from(e: io::Error) -> Self {
        ScpError::Io(e)
    }
}

/// How long [`ScpClient`] waits and how often it resends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientTimeouts {
    /// Wait for a `CMD_POWER` reply; power commands are sent once (a resent power-on would
    /// reboot the FPGAs again, and the reply to a power-on of board 0 is slow by design).
    pub power_timeout: Duration,
    /// Wait for any other reply before resending.
    pub command_timeout: Duration,
    /// Resends of a non-power command after a timeout or a transient error code.
    pub command_retries: u32,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            power_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(1),
            command_retries: 3,
        }
    }
}

/// Split a BMP address, `host` or `host:port` (or `[v6]:port`), into host and port; the port
/// defaults to [`SCP_PORT`]. The configuration's own parser decides, so the two never disagree.
pub fn split_address(address: &str) -> Result<(String, u16), String> {
    crate::config::split_address(address.trim()).map(|(h, p)| (h.to_string(), p))
}

/// Resolve a BMP address (`host` or `host:port`) to a socket address.
pub fn resolve_address(address: &str) -> io::Result<SocketAddr> {
    let (host, port) =
        split_address(address).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{address:?} resolves to nothing"),
            )
        })
}

/// A blocking SCP client for one BMP, over a connected UDP socket.
///
/// One command is in flight at a time. Each new command takes the next sequence number;
/// a resend reuses it (the firmware does not de-duplicate, so every resend executes again).
/// Replies whose sequence number is not the one in flight are stale (a late or duplicated
/// answer to an earlier command) and are ignored while the client keeps waiting; so are
/// datagrams that are not well-formed replies at all.
#[derive(Debug)]
pub struct ScpClient {
    socket: UdpSocket,
    peer: SocketAddr,
    next_seq: u16,
    timeouts: ClientTimeouts,
    /// The socket's read timeout as last set, so that a wait as long as the last one (every
    /// command of a kind waits as long) costs no `setsockopt`.
    read_timeout: Option<Duration>,
}

impl ScpClient {
    /// A client for the BMP at `peer`. Binds an ephemeral port on the loopback address when
    /// `peer` is loopback (so tests never touch another interface), else on any address.
    pub fn connect(peer: SocketAddr, timeouts: ClientTimeouts) -> io::Result<ScpClient> {
        let local: SocketAddr = match peer.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(ip) if ip.is_loopback() => (Ipv6Addr::LOCALHOST, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local)?;
        // Connecting makes the kernel drop datagrams from anyone but the BMP.
        socket.connect(peer)?;
        Ok(ScpClient {
            socket,
            peer,
            next_seq: 0,
            timeouts,
            read_timeout: None,
        })
    }

    /// The BMP this client talks to.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The current timeouts.
    pub fn timeouts(&self) -> ClientTimeouts {
        self.timeouts
    }

    /// Change the timeouts used by later commands.
    pub fn set_timeouts(&mut self, timeouts: ClientTimeouts) {
        self.timeouts = timeouts;
    }

    /// Send `request` and wait for its OK reply, resending as [`ClientTimeouts`] says.
    /// A non-OK code fails at once, except transient codes, which use up a resend.
    pub fn call(&mut self, request: &ScpRequest) -> Result<ScpReply, ScpError> {
        let (timeout, sends) = if request.cmd == CMD_POWER {
            (self.timeouts.power_timeout, 1)
        } else {
            (
                self.timeouts.command_timeout,
                self.timeouts.command_retries.saturating_add(1),
            )
        };
        self.call_with(request, timeout, sends)
    }

    /// Send `request` up to `sends` times, waiting `timeout` for a reply after each send.
    pub fn call_with(
        &mut self,
        request: &ScpRequest,
        timeout: Duration,
        sends: u32,
    ) -> Result<ScpReply, ScpError> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let bytes = request.encode(seq);
        let sends = sends.max(1);
        let mut last_error: Option<ScpError> = None;
        for _ in 0..sends {
            if let Err(e) = self.socket.send(&bytes) {
                // An ICMP "port unreachable" from an earlier send surfaces here on a connected
                // socket; treat it like a lost packet, the BMP may come back.
                if e.kind() != io::ErrorKind::ConnectionRefused {
                    return Err(ScpError::Io(e));
                }
            }
            match self.wait_reply(request, seq, timeout)? {
                Some(reply) if reply.rc == ReturnCode::OK => return Ok(reply),
                Some(reply) if reply.rc.is_transient() => {
                    last_error = Some(ScpError::ReturnCode {
                        cmd: request.cmd,
                        board: request.board,
                        rc: reply.rc,
                    })
                }
                Some(reply) => {
                    return Err(ScpError::ReturnCode {
                        cmd: request.cmd,
                        board: request.board,
                        rc: reply.rc,
                    })
                }
                None => {}
            }
        }
        Err(last_error.unwrap_or(ScpError::Timeout {
            cmd: request.cmd,
            board: request.board,
            sends,
        }))
    }

    /// Wait up to `timeout` for the reply carrying `seq`; `None` if none came.
    fn wait_reply(
        &mut self,
        request: &ScpRequest,
        seq: u16,
        timeout: Duration,
    ) -> Result<Option<ScpReply>, ScpError> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2 + 8 + 4 + 12 + MAX_DATA_BYTES + 64];
        let mut first = true;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // A zero read timeout means "block forever", so never pass one. The first wait
            // is the whole timeout (the microseconds since `deadline` was taken do not
            // matter), so when it is the one set last time it is not set again: one
            // `setsockopt` per exchange saved. After a stale or stray datagram, what is left.
            let remaining = if first {
                timeout.max(Duration::from_millis(1))
            } else {
                (deadline - now).max(Duration::from_millis(1))
            };
            first = false;
            if self.read_timeout != Some(remaining) {
                self.read_timeout = None; // (unknown if setting it fails)
                self.socket.set_read_timeout(Some(remaining))?;
                self.read_timeout = Some(remaining);
            }
            let len = match self.socket.recv(&mut buf) {
                Ok(len) => len,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                // Nothing listening (yet): keep waiting out the timeout like a lost packet.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ScpError::Io(e)),
            };
            // A datagram that is not a reply at all (a runt, or not SCP) says nothing about
            // the command in flight: ignored like a stale reply, so the real reply right
            // behind it still counts.
            let Ok(reply) = ScpReply::decode(&buf[..len]) else {
                continue;
            };
            if reply.seq != seq {
                continue; // Stale: a late or duplicate answer to an earlier command.
            }
            if reply.rc == ReturnCode::OK {
                check_reply_length(request, &reply)?;
            }
            return Ok(Some(reply));
        }
    }

    /// Read the version of `board`'s BMP.
    pub fn version(&mut self, board: u32) -> Result<VersionInfo, ScpError> {
        let reply = self.call(&ScpRequest::version(board))?;
        VersionInfo::decode(&reply.payload)
    }

    /// Power the boards in `mask` on or off, sending the command to `board` (pass 0: the
    /// firmware only handles power commands reliably on the frame's root BMP).
    pub fn power(&mut self, on: bool, mask: u32, board: u32) -> Result<(), ScpError> {
        self.call(&ScpRequest::power(on, mask, board)).map(|_| ())
    }

    /// Read one word of an FPGA register.
    pub fn fpga_read(&mut self, board: u32, fpga: u32, addr: u32) -> Result<u32, ScpError> {
        let reply = self.call(&ScpRequest::fpga_read(board, fpga, addr))?;
        Ok(u32::from_le_bytes(
            reply.payload[..4].try_into().expect("length checked"),
        ))
    }

    /// Write one word of an FPGA register.
    pub fn fpga_write(
        &mut self,
        board: u32,
        fpga: u32,
        addr: u32,
        value: u32,
    ) -> Result<(), ScpError> {
        self.call(&ScpRequest::fpga_write(board, fpga, addr, value))
            .map(|_| ())
    }
}

/// Check that an OK reply's payload has the length its command implies.
fn check_reply_length(request: &ScpRequest, reply: &ScpReply) -> Result<(), ScpError> {
    let n = reply.payload.len();
    let ok = match request.cmd {
        CMD_POWER | CMD_FPGA_WRITE => n == 0,
        CMD_FPGA_READ => n == request.args[1] as usize,
        CMD_VER => n >= 12,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(ScpError::Malformed(format!(
            "{} reply for board {} has {n} payload bytes",
            command_name(request.cmd),
            request.board
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn ver_request_matches_worked_example() {
        assert_eq!(
            ScpRequest::version(3).encode(1),
            hex("00 00 87 ff 03 ff 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00")
        );
    }

    #[test]
    fn power_requests_match_worked_examples() {
        assert_eq!(
            ScpRequest::power(true, 0b111, 0).encode(2),
            hex("00 00 87 ff 00 ff 00 00 00 00 39 00 02 00 01 00 00 00 07 00 00 00 00 00 00 00")
        );
        assert_eq!(
            ScpRequest::power(false, 0b11_0000, 0).encode(3),
            hex("00 00 87 ff 00 ff 00 00 00 00 39 00 03 00 00 00 00 00 30 00 00 00 00 00 00 00")
        );
    }

    #[test]
    fn fpga_requests_match_worked_examples() {
        assert_eq!(
            ScpRequest::fpga_read(2, 1, FPGA_FLAG_ADDR).encode(4),
            hex("00 00 87 ff 02 ff 00 00 00 00 11 00 04 00 04 00 04 00 04 00 00 00 01 00 00 00")
        );
        assert_eq!(
            ScpRequest::fpga_write(2, 2, 0x1005C, 1).encode(5),
            hex("00 00 87 ff 02 ff 00 00 00 00 12 00 05 00 5c 00 01 00 04 00 00 00 02 00 00 00 01 00 00 00")
        );
    }

    #[test]
    fn replies_match_worked_examples() {
        let ver = hex(
            "00 00 07 08 e0 03 00 00 00 00 80 00 01 00 03 03 00 01 00 01 ff ff 00 00 00 5b \
             42 43 26 4d 50 2f 53 70 69 6e 35 2d 42 4d 50 00 32 2e 31 2e 32 00",
        );
        let reply = ScpReply::decode(&ver).unwrap();
        assert_eq!((reply.rc, reply.seq), (ReturnCode::OK, 1));
        assert_eq!(reply.encode(0, 0, 0x03, 0), ver);
        let info = VersionInfo::decode(&reply.payload).unwrap();
        assert_eq!(info.version, (2, 1, 2));
        assert_eq!(
            (info.name.as_str(), info.hardware.as_str()),
            ("BC&MP", "Spin5-BMP")
        );
        assert_eq!(
            (info.code_block, info.frame_id, info.can_id, info.board_id),
            (1, 0, 3, 3)
        );
        assert_eq!(info.buffer_size, 256);

        let ok = hex("00 00 07 08 e0 00 00 00 00 00 80 00 02 00");
        let reply = ScpReply {
            rc: ReturnCode::OK,
            seq: 2,
            payload: vec![],
        };
        assert_eq!(ScpReply::decode(&ok).unwrap(), reply);
        assert_eq!(reply.encode(0, 0, 0x00, 0), ok);

        let read = hex("00 00 07 08 e0 02 00 00 00 00 80 00 04 00 01 00 00 00");
        let reply = ScpReply {
            rc: ReturnCode::OK,
            seq: 4,
            payload: vec![1, 0, 0, 0],
        };
        assert_eq!(reply.encode(0, 0, 0x02, 0), read);

        let err = hex("00 00 07 08 e0 02 00 00 00 00 84 00 05 00");
        let reply = ScpReply::decode(&err).unwrap();
        assert_eq!(
            (reply.rc, reply.seq, reply.rc.name()),
            (ReturnCode::ARG, 5, "RC_ARG")
        );
    }

    #[test]
    fn malformed_replies_are_rejected() {
        assert!(matches!(
            ScpReply::decode(&[0; 13]),
            Err(ScpError::Malformed(_))
        ));
        let mut bad_flags = hex("00 00 87 08 e0 00 00 00 00 00 80 00 02 00");
        assert!(matches!(
            ScpReply::decode(&bad_flags),
            Err(ScpError::Malformed(_))
        ));
        bad_flags[2] = 0x07;
        assert!(ScpReply::decode(&bad_flags).is_ok());
        let read = ScpRequest::fpga_read(0, 0, 0);
        let short = ScpReply {
            rc: ReturnCode::OK,
            seq: 0,
            payload: vec![1, 2],
        };
        assert!(check_reply_length(&read, &short).is_err());
    }

    #[test]
    fn legacy_version_decodes() {
        let mut payload = Vec::new();
        payload.extend_from_slice(&0x0100_0000u32.to_le_bytes());
        payload.extend_from_slice(&((136u32 << 16) | 256).to_le_bytes());
        payload.extend_from_slice(&0u32.to_le_bytes());
        payload.extend_from_slice(b"BC&MP/Spin5-BMP\0");
        assert_eq!(VersionInfo::decode(&payload).unwrap().version, (1, 36, 0));
        payload.truncate(12);
        payload.extend_from_slice(b"BC&MP\0");
        assert!(VersionInfo::decode(&payload).is_err());
    }

    #[test]
    fn addresses_split() {
        assert_eq!(
            split_address("10.0.0.1").unwrap(),
            ("10.0.0.1".into(), 17893)
        );
        assert_eq!(
            split_address("127.0.0.1:17001").unwrap(),
            ("127.0.0.1".into(), 17001)
        );
        assert_eq!(
            split_address("bmp.example").unwrap(),
            ("bmp.example".into(), 17893)
        );
        assert_eq!(
            split_address("bmp.example:5").unwrap(),
            ("bmp.example".into(), 5)
        );
        assert_eq!(split_address("::1").unwrap(), ("::1".into(), 17893));
        assert_eq!(split_address("[::1]:7").unwrap(), ("::1".into(), 7));
        assert!(split_address("h:notaport").is_err());
        assert!(split_address("").is_err());
    }
}
