//! The admin channel: a Unix-domain socket only the service's own user can reach (mode 0600,
//! `admin.sock` in the journal directory unless `--admin-socket PATH` moves it), served by
//! the same `polling` loop as the clients.
//!
//! It speaks the client protocol's JSON lines: `{"command": NAME, "kwargs": {...}}` in,
//! `{"return": VALUE}` or `{"exception": TEXT}` out. Listings (`boards`, `reports`,
//! `status`) are answered from the state at once; actions (`drain`, `undrain`,
//! `emergency_stop`, `resume`) become [`Event::Admin`] and are answered, like every change,
//! once journaled and folded. An action the core would refuse (an unknown board, a board
//! already drained) is refused before it is journaled, so a typo leaves no trace.
//!
//! Why a Unix socket: the file mode is the access control (no passwords to manage, nothing
//! on the network), and `spalloc-admin` finds it from the journal directory the admin
//! already knows.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::core::{AdminAction, BoardRef, Event, TimeUs};

/// The socket's name in the journal directory when `--admin-socket` is not given.
pub const DEFAULT_SOCKET_NAME: &str = "admin.sock";
/// Longest admin request line.
pub const MAX_ADMIN_LINE_BYTES: usize = 64 * 1024;
/// Most admin connections at once (more are refused with an exception).
pub const MAX_ADMIN_CONNECTIONS: usize = 64;
/// Most unread output per admin connection before it is dropped.
pub const MAX_ADMIN_OUTPUT_BYTES: usize = 64 * 1024 * 1024;
/// Poller keys of admin connections start here (client keys count up from 0).
pub const ADMIN_KEY_BASE: usize = 1 << 62;

/// Bind the admin socket at `path` with mode 0600, replacing a stale socket left by a
/// server that did not stop cleanly (the journal's lock says no other server runs here).
/// It is bound under a temporary name and renamed into place once its mode is set, so it
/// is never reachable with a wider mode.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(format!(
                "admin socket path {} exists and is not a socket; remove it or choose \
                 another with --admin-socket",
                path.display()
            ));
        }
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    // Bind under the temporary name, restrict, rename into place. (A path longer than a
    // socket address holds is reached through the directory's descriptor.)
    let (_dir, short) = reachable(&tmp)
        .map_err(|e| format!("cannot open the directory of {}: {e}", tmp.display()))?;
    let listener = UnixListener::bind(&short)
        .map_err(|e| format!("cannot create the admin socket {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict the admin socket {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| format!("cannot place the admin socket at {}: {e}", path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot configure the admin socket: {e}"))?;
    Ok(listener)
}

/// Longest socket path used as is; longer ones go through `/proc/self/fd` (a Unix socket
/// address holds 108 bytes, and journal directories can be deep).
const MAX_DIRECT_PATH_BYTES: usize = 100;

/// A path to `path` short enough for a socket address: itself, or (Linux) the entry in its
/// directory reached through an open descriptor of that directory, which the caller keeps
/// open while it binds or connects.
fn reachable(path: &Path) -> io::Result<(Option<std::fs::File>, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    if path.as_os_str().as_bytes().len() <= MAX_DIRECT_PATH_BYTES {
        return Ok((None, path.to_path_buf()));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path.file_name().ok_or(io::ErrorKind::InvalidInput)?;
    let dir = std::fs::File::open(dir.unwrap_or(Path::new(".")))?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    Ok((Some(dir), short))
}

/// Connect to an admin socket (however long its path), for `spalloc-admin`.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let (_dir, short) = reachable(path)?;
    UnixStream::connect(short)
}

/// Where the admin socket goes by default.
pub fn default_path(journal: &Path) -> PathBuf {
    journal.join(DEFAULT_SOCKET_NAME)
}

/// One admin connection.
pub struct AdminConn {
    /// The socket.
    pub stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Close once the output is flushed.
    pub closing: bool,
}

impl AdminConn {
    /// Wrap an accepted, non-blocking stream.
    pub fn new(stream: UnixStream) -> AdminConn {
        AdminConn {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            closing: false,
        }
    }

    /// Read what is there; false if the peer hung up.
    pub fn read(&mut self) -> bool {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    if self.input.len() > 4 * MAX_ADMIN_LINE_BYTES {
                        return true; // the rest waits for the next pass
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    /// The next complete line; `Err` if a line exceeds [`MAX_ADMIN_LINE_BYTES`].
    pub fn next_line(&mut self) -> Option<Result<Vec<u8>, ()>> {
        match self.input.iter().position(|&b| b == b'\n') {
            Some(i) if i > MAX_ADMIN_LINE_BYTES => {
                self.input.clear();
                Some(Err(()))
            }
            Some(i) => {
                let mut line: Vec<u8> = self.input.drain(..=i).collect();
                line.pop();
                Some(Ok(line))
            }
            None if self.input.len() > MAX_ADMIN_LINE_BYTES => {
                self.input.clear();
                Some(Err(()))
            }
            None => None,
        }
    }

    /// Queue bytes; false past [`MAX_ADMIN_OUTPUT_BYTES`].
    pub fn queue(&mut self, bytes: &[u8]) -> bool {
        self.output.extend_from_slice(bytes);
        self.output.len() <= MAX_ADMIN_OUTPUT_BYTES
    }

    /// Bytes not yet sent.
    pub fn pending_output(&self) -> usize {
        self.output.len()
    }

    /// Send what the socket takes.
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A read-only admin question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminQuery {
    /// Boards with anything on record (`drained`: only those out of service).
    Boards {
        /// Only drained boards.
        drained: bool,
    },
    /// Every problem report.
    Reports,
    /// Emergency stop, unreachable frames, counts.
    Status,
}

/// What one admin line asks for.
#[derive(Debug)]
pub enum AdminRequest {
    /// Answer from the state.
    Query(AdminQuery),
    /// Journal and fold this.
    Action {
        /// Who (as the tool says; the socket's mode already limits who can connect).
        actor: String,
        /// What.
        action: AdminAction,
    },
}

/// Parse one admin line.
pub fn parse(line: &[u8]) -> Result<AdminRequest, String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = &v else {
        return Err("a request must be a JSON object".into());
    };
    let command = obj
        .get("command")
        .and_then(Value::as_str)
        .ok_or("a request needs a string \"command\"")?;
    let empty = serde_json::Map::new();
    let kwargs = match obj.get("kwargs") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(k)) => k,
        Some(_) => return Err("\"kwargs\" must be an object".into()),
    };
    let allowed: &[&str] = match command {
        "drain" => &["board", "reason", "actor"],
        "undrain" => &["board", "actor"],
        "emergency_stop" => &["reason", "actor"],
        "resume" => &["actor"],
        "boards" => &["drained"],
        "reports" | "status" => &[],
        other => return Err(format!("unknown admin command {other:?}")),
    };
    if let Some(k) = kwargs.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("{command}: unknown argument {k:?}"));
    }
    let text = |key: &str| -> Result<String, String> {
        match kwargs.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{command}: {key:?} must be a string")),
            None => Err(format!("{command}: {key:?} is required")),
        }
    };
    let actor = match kwargs.get("actor") {
        Some(Value::String(s)) if !s.is_empty() => crate::core::health::bounded(s),
        _ => "unknown".to_string(),
    };
    let action = match command {
        "drain" => AdminAction::Drain {
            board: board_ref(command, kwargs.get("board"))?,
            reason: text("reason")?,
        },
        "undrain" => AdminAction::Undrain {
            board: board_ref(command, kwargs.get("board"))?,
        },
        "emergency_stop" => AdminAction::EmergencyStop {
            reason: text("reason")?,
        },
        "resume" => AdminAction::Resume,
        "boards" => {
            let drained = match kwargs.get("drained") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err("boards: \"drained\" must be true or false".into()),
            };
            return Ok(AdminRequest::Query(AdminQuery::Boards { drained }));
        }
        "reports" => return Ok(AdminRequest::Query(AdminQuery::Reports)),
        _ => return Ok(AdminRequest::Query(AdminQuery::Status)),
    };
    Ok(AdminRequest::Action { actor, action })
}

/// A board in any of the three forms: `{"machine", "x", "y", "z"}`,
/// `{"machine", "cabinet", "frame", "board"}` or `{"ip"}`.
fn board_ref(command: &str, v: Option<&Value>) -> Result<BoardRef, String> {
    let Some(Value::Object(b)) = v else {
        return Err(format!(
            "{command}: \"board\" must be an object: {{machine, x, y, z}}, \
             {{machine, cabinet, frame, board}} or {{ip}}"
        ));
    };
    let num = |k: &str| -> Result<u32, String> {
        b.get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("{command}: board {k:?} must be a non-negative integer"))
    };
    let machine = || -> Result<String, String> {
        b.get("machine")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{command}: the board needs a \"machine\""))
    };
    let keys: Vec<&str> = b.keys().map(String::as_str).collect();
    let has = |k: &[&str]| {
        let mut want: Vec<&str> = k.to_vec();
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        want == got
    };
    if has(&["ip"]) {
        match b.get("ip") {
            Some(Value::String(ip)) => Ok(BoardRef::Ip(ip.clone())),
            _ => Err(format!("{command}: board \"ip\" must be a string")),
        }
    } else if has(&["machine", "x", "y", "z"]) {
        Ok(BoardRef::Logical {
            machine: machine()?,
            x: num("x")?,
            y: num("y")?,
            z: num("z")?,
        })
    } else if has(&["machine", "cabinet", "frame", "board"]) {
        Ok(BoardRef::Physical {
            machine: machine()?,
            cabinet: num("cabinet")?,
            frame: num("frame")?,
            board: num("board")?,
        })
    } else {
        Err(format!(
            "{command}: the board must be {{machine, x, y, z}}, {{machine, cabinet, frame, \
             board}} or {{ip}}, not keys {keys:?}"
        ))
    }
}

/// The event for an admin action read at `now_us`.
pub fn event(now_us: TimeUs, actor: String, action: AdminAction) -> Event {
    Event::Admin {
        now_us,
        actor,
        action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_board_form_and_refuses_junk() {
        let p = |s: &str| parse(s.as_bytes());
        match p(
            r#"{"command":"drain","kwargs":{"board":{"machine":"m","x":1,"y":0,"z":2},"reason":"fan","actor":"ann"}}"#,
        ) {
            Ok(AdminRequest::Action {
                actor,
                action: AdminAction::Drain { board, reason },
            }) => {
                assert_eq!(actor, "ann");
                assert_eq!(reason, "fan");
                assert_eq!(
                    board,
                    BoardRef::Logical {
                        machine: "m".into(),
                        x: 1,
                        y: 0,
                        z: 2
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p(r#"{"command":"undrain","kwargs":{"board":{"ip":"10.0.0.1"}}}"#),
            Ok(AdminRequest::Action {
                action: AdminAction::Undrain {
                    board: BoardRef::Ip(_)
                },
                ..
            })
        ));
        assert!(matches!(
            p(
                r#"{"command":"undrain","kwargs":{"board":{"machine":"m","cabinet":0,"frame":1,"board":3}}}"#
            ),
            Ok(AdminRequest::Action {
                action: AdminAction::Undrain {
                    board: BoardRef::Physical { .. }
                },
                ..
            })
        ));
        assert!(matches!(
            p(r#"{"command":"boards","kwargs":{"drained":true}}"#),
            Ok(AdminRequest::Query(AdminQuery::Boards { drained: true }))
        ));
        for bad in [
            "nope",
            "[]",
            r#"{"command":"shutdown"}"#,
            r#"{"command":"drain","kwargs":{"board":{"machine":"m","x":1,"y":0},"reason":"r"}}"#,
            r#"{"command":"drain","kwargs":{"board":{"machine":"m","x":-1,"y":0,"z":0},"reason":"r"}}"#,
            r#"{"command":"drain","kwargs":{"board":{"ip":"1"}}}"#,
            r#"{"command":"resume","kwargs":{"force":true}}"#,
        ] {
            assert!(p(bad).is_err(), "{bad} accepted");
        }
    }
}
