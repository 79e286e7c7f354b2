//! One client connection: its socket, its input buffer cut into lines, its bounded output
//! buffer, and its notification watches.
//!
//! Reading and writing never block: the socket is non-blocking and registered level-triggered
//! (a readable socket is reported every pass until it is read; the loop changes the interest
//! only when the client needs to hear of writability or stops reading, [`Client::registered`]),
//! which spares an `epoll_ctl` per request that oneshot re-arming cost. A line longer than
//! [`crate::protocol::MAX_LINE_BYTES`] and an output backlog longer than `output_bytes_max`
//! (`server::limits`) are both bounded: the first gets an error and the connection closed,
//! the second closes the connection of a client that has stopped reading (the server
//! decides). Watches are bounded by `watch_entries_max` ([`Watch::len`]).

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use crate::core::JobId;

/// Spare buffer room a connection keeps between passes (input and output each).
pub const KEPT_CAPACITY_BYTES: usize = 16 * 1024;

/// How much is read from one client in one loop pass, so that one fast sender cannot starve
/// the others.
pub const READ_PER_PASS_BYTES: usize = 64 * 1024;

/// Which notifications a client asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Watch<T: Ord> {
    /// None.
    #[default]
    Nothing,
    /// Every job (or machine).
    All,
    /// These.
    Some(BTreeSet<T>),
}

impl<T: Ord + Clone> Watch<T> {
    /// `notify_*(id)`: watch `id`, or everything for `None`. Adding one while watching all
    /// changes nothing.
    pub fn add(&mut self, id: Option<T>) {
        match (id, &mut *self) {
            (None, _) => *self = Watch::All,
            (Some(_), Watch::All) => {}
            (Some(id), Watch::Some(set)) => {
                set.insert(id);
            }
            (Some(id), Watch::Nothing) => *self = Watch::Some(BTreeSet::from([id])),
        }
    }

    /// `no_notify_*(id)`: stop watching `id`, or everything for `None`. Removing one while
    /// watching all does nothing; removing the last one clears the watch.
    pub fn remove(&mut self, id: Option<T>) {
        match (id, &mut *self) {
            (None, _) => *self = Watch::Nothing,
            (Some(_), Watch::All | Watch::Nothing) => {}
            (Some(id), Watch::Some(set)) => {
                set.remove(&id);
                if set.is_empty() {
                    *self = Watch::Nothing;
                }
            }
        }
    }

    /// Entries held: one per item watched individually, one for "all", none for nothing.
    pub fn len(&self) -> usize {
        match self {
            Watch::Nothing => 0,
            Watch::All => 1,
            Watch::Some(set) => set.len(),
        }
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        matches!(self, Watch::Nothing)
    }

    /// The changed items this watch selects, in the order given.
    pub fn select<'a>(&self, changed: &'a [T]) -> Vec<&'a T> {
        match self {
            Watch::Nothing => Vec::new(),
            Watch::All => changed.iter().collect(),
            Watch::Some(set) => changed.iter().filter(|c| set.contains(c)).collect(),
        }
    }
}

thread_local! {
    /// Where [`Client::read`] receives into before appending to a client's input (one per
    /// thread: the server's loop is one).
    static READ_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; 16 * 1024].into_boxed_slice());
}

/// What reading from a client produced.
pub enum ReadOutcome {
    /// Some bytes (maybe no complete line yet); the socket may have more.
    Open,
    /// The peer closed its end, or the connection failed.
    Closed,
}

/// A client's connection: its socket, or in the simulation of the server loop
/// (`server::sim`) the server's end of an in-memory pipe.
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// The simulation's connection.
    Sim(SimPipe),
}

impl Stream {
    /// Change the poller's interest in this connection (the simulation's needs none: the
    /// simulation says which connections are ready).
    pub fn modify_with_mode(
        &self,
        poller: &polling::Poller,
        interest: polling::Event,
        mode: polling::PollMode,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => poller.modify_with_mode(s, interest, mode),
            Stream::Sim(_) => Ok(()),
        }
    }

    /// Stop polling this connection.
    pub fn delete(&self, poller: &polling::Poller) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => poller.delete(s),
            Stream::Sim(_) => Ok(()),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Sim(p) => p.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Sim(p) => p.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What an in-memory connection holds: the bytes each way, and which ends have closed.
#[derive(Debug, Default)]
pub struct PipeState {
    /// Sent by the client, not yet read by the server.
    pub to_server: VecDeque<u8>,
    /// Written by the server, not yet read by the client.
    pub to_client: Vec<u8>,
    /// The client has finished sending (the server reads end-of-file once it has read
    /// `to_server`).
    pub client_shut: bool,
    /// The client has gone: the server's writes fail.
    pub client_gone: bool,
    /// The server has closed its end (dropped the client).
    pub server_closed: bool,
    /// Most bytes `to_client` holds, like a socket's buffers (`None`: unbounded): a write
    /// that does not fit is cut short, or would block if nothing fits.
    pub to_client_max: Option<usize>,
}

/// The server's end of an in-memory connection (the simulation's). Non-blocking like a
/// socket: a read with nothing to read would block, unless the client has shut down.
pub struct SimPipe(pub Arc<Mutex<PipeState>>);

impl SimPipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if p.to_server.is_empty() {
            return if p.client_shut || p.client_gone {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(p.to_server.len());
        for (b, byte) in buf.iter_mut().zip(p.to_server.drain(..n)) {
            *b = byte;
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if p.client_gone {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = p
            .to_client_max
            .map_or(buf.len(), |max| max.saturating_sub(p.to_client.len()));
        if room == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(buf.len());
        p.to_client.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Drop for SimPipe {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .server_closed = true;
    }
}

/// A connected client.
pub struct Client {
    /// The connection.
    pub stream: Stream,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The peer's IP as text (the `keepalivehost` of jobs it touches).
    pub peer_ip: String,
    /// Bytes received: lines already taken (`taken` of them), then those not yet cut into
    /// lines.
    input: Vec<u8>,
    /// How many bytes at the front of `input` [`Client::next_line`] has handed out.
    taken: usize,
    /// Bytes waiting to be sent.
    output: Vec<u8>,
    /// Offset of the first unsent byte of `output`.
    output_sent: usize,
    /// Close once the output is flushed (after a fatal protocol error).
    pub closing: bool,
    /// The peer has finished sending (or the connection failed): nothing more to read, but
    /// lines already received are still answered.
    pub eof: bool,
    /// Job notifications wanted.
    pub jobs: Watch<JobId>,
    /// Machine notifications wanted.
    pub machines: Watch<String>,
    /// The interest (readable, writable) the poller holds for this socket, level-triggered:
    /// changed only when the wanted interest differs.
    pub registered: (bool, bool),
}

impl Client {
    /// Wrap an accepted, non-blocking stream.
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Client {
        Client::on(Stream::Tcp(stream), peer)
    }

    /// A client on `stream` (a socket, or the simulation's pipe).
    pub fn on(stream: Stream, peer: SocketAddr) -> Client {
        Client {
            stream,
            peer,
            peer_ip: peer.ip().to_string(),
            input: Vec::new(),
            taken: 0,
            output: Vec::new(),
            output_sent: 0,
            closing: false,
            eof: false,
            jobs: Watch::Nothing,
            machines: Watch::Nothing,
            registered: (true, false),
        }
    }

    /// Read what is available (up to [`READ_PER_PASS_BYTES`]), but nothing while more than
    /// `max_line_bytes` of input is still waiting to be cut into lines: the unanswered input
    /// of a connection is bounded, and a sender faster than its share waits in its socket.
    /// (Input left unread always holds a complete line or one too long, so [`has_line`]
    /// is true and the loop makes progress: it never spins on a socket it does not read.)
    ///
    /// [`has_line`]: Client::has_line
    pub fn read(&mut self, max_line_bytes: usize) -> ReadOutcome {
        if self.eof {
            return ReadOutcome::Closed;
        }
        READ_BUF.with(|buf| self.read_into(&mut buf.borrow_mut()[..], max_line_bytes))
    }

    /// [`Client::read`] through `buf` (the thread's scratch buffer: zeroing 16 KiB on the
    /// stack for every read showed in profiles of the keepalive load).
    fn read_into(&mut self, buf: &mut [u8], max_line_bytes: usize) -> ReadOutcome {
        if self.taken > 0 {
            self.shrink_input();
        }
        let mut total = 0;
        while total < READ_PER_PASS_BYTES && self.input.len() <= max_line_bytes {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    return ReadOutcome::Closed;
                }
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    total += n;
                    if n < buf.len() {
                        // A short read drained the socket: skip the read that would only
                        // say "would block" (one syscall per request). Data arriving later
                        // makes the socket readable again, so the loop comes back.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.eof = true;
                    return ReadOutcome::Closed;
                }
            }
        }
        ReadOutcome::Open
    }

    /// Whether [`Client::next_line`] has something to give (a line, or a line too long).
    pub fn has_line(&self, max_bytes: usize) -> bool {
        let rest = &self.input[self.taken..];
        rest.len() > max_bytes || rest.contains(&b'\n')
    }

    /// Drop the lines already taken, and give back the input buffer's spare room (a pass
    /// may read [`READ_PER_PASS_BYTES`]; an idle connection keeps at most
    /// [`KEPT_CAPACITY_BYTES`] beyond its unfinished line).
    pub fn shrink_input(&mut self) {
        self.input.drain(..self.taken);
        self.taken = 0;
        self.input
            .shrink_to(self.input.len().max(KEPT_CAPACITY_BYTES));
    }

    /// Take the next complete line (without its `\n` or a trailing `\r`), where it lies in
    /// the input buffer (lines are parsed in place, and the buffer is compacted once, by
    /// [`Client::shrink_input`]). `Err(len)` if the unfinished line already exceeds
    /// `max_bytes`.
    pub fn next_line(&mut self, max_bytes: usize) -> Option<Result<&[u8], usize>> {
        let start = self.taken;
        let rest = &self.input[start..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) if i > max_bytes => {
                self.taken += i + 1;
                Some(Err(i))
            }
            Some(i) => {
                self.taken += i + 1;
                let line = &self.input[start..start + i];
                Some(Ok(line.strip_suffix(b"\r").unwrap_or(line)))
            }
            None if rest.len() > max_bytes => {
                let n = rest.len();
                self.taken = self.input.len();
                Some(Err(n))
            }
            None => None,
        }
    }

    /// Queue bytes to send. (The server bounds how much may wait: `Limits`.)
    pub fn queue(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    /// Entries in its watch sets (what `watch_entries_total_max` counts).
    pub fn watch_entries(&self) -> usize {
        self.jobs.len() + self.machines.len()
    }

    /// Bytes received and not yet handled (an unfinished line, or requests waiting for
    /// their share of a pass).
    pub fn pending_input(&self) -> usize {
        self.input.len() - self.taken
    }

    /// Bytes queued and not yet sent.
    pub fn pending_output(&self) -> usize {
        self.output.len() - self.output_sent
    }

    /// Send as much queued output as the socket takes. `Err` if the connection failed.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.output_sent < self.output.len() {
            match self.stream.write(&self.output[self.output_sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.output_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.output_sent == self.output.len() {
            self.output.clear();
            self.output_sent = 0;
            // A big reply's buffer is not kept for the life of the connection: thousands of
            // clients that each once read a big list would otherwise pin its size each.
            self.output.shrink_to(KEPT_CAPACITY_BYTES);
        } else if self.output_sent > 64 * 1024 {
            // Keep the buffer from growing forever under a slow reader.
            self.output.drain(..self.output_sent);
            self.output_sent = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bounded simulated pipe behaves as a socket: a write that does not fit is cut short,
    /// one with no room would block, and room made by the reader is used again.
    #[test]
    fn a_bounded_sim_pipe_cuts_writes_short_and_would_block() {
        let state = Arc::new(Mutex::new(PipeState {
            to_client_max: Some(5),
            ..PipeState::default()
        }));
        let mut pipe = SimPipe(Arc::clone(&state));
        assert_eq!(pipe.write(b"abc").unwrap(), 3);
        assert_eq!(pipe.write(b"defg").unwrap(), 2);
        let e = pipe.write(b"h").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(state.lock().unwrap().to_client, b"abcde");
        state.lock().unwrap().to_client.drain(..4);
        assert_eq!(pipe.write(b"fghijk").unwrap(), 4);
        assert_eq!(state.lock().unwrap().to_client, b"efghi");
        state.lock().unwrap().client_gone = true;
        assert_eq!(
            pipe.write(b"x").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[test]
    fn watch_rules() {
        let mut w: Watch<u64> = Watch::Nothing;
        w.add(Some(3));
        w.add(Some(5));
        assert_eq!(w.select(&[1, 3, 5]), vec![&3, &5]);
        w.remove(Some(3));
        w.remove(Some(5));
        assert_eq!(w, Watch::Nothing);
        w.add(None);
        w.add(Some(7));
        assert_eq!(w, Watch::All);
        w.remove(Some(7));
        assert_eq!(w, Watch::All);
        assert_eq!(w.select(&[1, 2]).len(), 2);
        w.remove(None);
        assert_eq!(w, Watch::Nothing);
    }
}
