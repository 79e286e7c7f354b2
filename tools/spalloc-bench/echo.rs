//! `echo-server`: the floor, a line server that does nothing but answer.

use argh::FromArgs;
use std::io::{self, Read, Write};
use std::net::TcpStream;

use crate::client::resolve;
use crate::report::Report;

/// Serve --addr until killed, answering every line with the version reply: the floor for `version`.
#[derive(FromArgs)]
#[argh(subcommand, name = "echo-server")]
pub struct EchoServer {
    /// server address, default 127.0.0.1:22244
    #[argh(option, default = "String::from(\"127.0.0.1:22244\")")]
    pub addr: String,
}

/// A minimal line server on `--addr`: every line gets the `version` reply, from one
/// level-triggered `polling` loop with non-blocking, TCP_NODELAY sockets, one `recv` and one
/// `send` per request, and nothing else (no parsing, no journal, no core). `version`
/// against it measures what this machine's kernel charges a server for one loopback
/// request, the floor under any server's CPU per request. Runs until killed.
pub fn run_echo_server(args: &EchoServer) -> Result<Report, String> {
    use polling::{Event as PollEvent, Events, PollMode, Poller};
    use std::net::TcpListener;
    const LISTENER: usize = usize::MAX - 1; // (usize::MAX is polling's own)
    const REPLY: &[u8] = b"{\"return\": \"1.0.0\"}\n";
    let listener = TcpListener::bind(resolve(&args.addr)?).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let poller = Poller::new().map_err(|e| e.to_string())?;
    // SAFETY: every source is deleted from the poller before it is dropped (the listener
    // lives as long as the loop, which never ends).
    unsafe { poller.add_with_mode(&listener, PollEvent::readable(LISTENER), PollMode::Level) }
        .map_err(|e| e.to_string())?;
    eprintln!("echo-server listening on {}", args.addr);
    let mut conns: Vec<Option<TcpStream>> = Vec::new();
    let mut events = Events::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    loop {
        events.clear();
        poller.wait(&mut events, None).map_err(|e| e.to_string())?;
        for ev in events.iter() {
            if ev.key == LISTENER {
                while let Ok((s, _)) = listener.accept() {
                    let _ = s.set_nonblocking(true);
                    let _ = s.set_nodelay(true);
                    let key = conns
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or(conns.len());
                    // SAFETY: deleted before it is dropped, below.
                    if unsafe {
                        poller.add_with_mode(&s, PollEvent::readable(key), PollMode::Level)
                    }
                    .is_ok()
                    {
                        if key == conns.len() {
                            conns.push(Some(s));
                        } else {
                            conns[key] = Some(s);
                        }
                    }
                }
                continue;
            }
            let Some(s) = conns[ev.key].as_mut() else {
                continue;
            };
            let lines = match s.read(&mut buf) {
                Ok(0) => None,
                Ok(n) => Some(buf[..n].iter().filter(|&&b| b == b'\n').count()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(0),
                Err(_) => None,
            };
            match lines {
                Some(n) => {
                    out.clear();
                    for _ in 0..n {
                        out.extend_from_slice(REPLY);
                    }
                    // One request in flight per client: the socket buffer never fills.
                    if !out.is_empty() && s.write_all(&out).is_err() {
                        let s = conns[ev.key].take().expect("present");
                        let _ = poller.delete(&s);
                    }
                }
                None => {
                    let s = conns[ev.key].take().expect("present");
                    let _ = poller.delete(&s);
                }
            }
        }
    }
}
