//! Client-supplied strings made safe for log lines.
//!
//! Owner names, destroy reasons, tags and machine names come from clients; a log line is read
//! by an admin in a terminal or by tools that split on newlines. Logged raw, a `\n` in an
//! owner forges a whole log line (`ERROR journal write failed ...`) and an ANSI escape
//! sequence reaches the admin's terminal. [`escape`] makes such a string one harmless run of
//! printable text: control characters (C0, DEL, C1), the bidirectional and invisible
//! formatting characters that reorder or hide text, and the backslash itself (so the result is
//! unambiguous) are written as Rust-style escapes (`\n`, `\u{1b}`, `\\`). Anything else,
//! including non-ASCII letters, is kept, so ordinary names read as they were typed.
//!
//! Every log line that carries a client's string goes through here; the logger itself also
//! escapes control characters (other than the newlines of its own multi-line messages) as a
//! last line of defence (`server::Logger`).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must be escaped in a log line.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || c == '\\'
        // Bidirectional overrides and isolates, zero-width and other invisible formatting.
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `s` with every control or invisible character escaped (module docs). Borrows when there is
/// nothing to escape, the common case.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A whole log message made safe for one terminal line per line: control characters other
/// than `\n` escaped (the logger's last line of defence; client strings are escaped with
/// [`escape`] where they enter a message, which also escapes their newlines).
pub fn escape_message(msg: &str) -> Cow<'_, str> {
    if !msg.chars().any(|c| c != '\n' && c.is_control()) {
        return Cow::Borrowed(msg);
    }
    let mut out = String::with_capacity(msg.len() + 8);
    for c in msg.chars() {
        match c {
            '\n' => out.push('\n'),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings_are_borrowed_unchanged() {
        for s in ["alice", "Zoë Müller", "lab-42 (spinn)", ""] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s));
        }
    }

    #[test]
    fn newlines_and_escapes_cannot_forge_lines_or_reach_the_terminal() {
        let forged = "x\n2026-12-03T07:00:00Z ERROR journal write failed\r\u{1b}[31mred\u{7}";
        let e = escape(forged);
        assert!(!e.chars().any(|c| c.is_control()), "{e}");
        assert_eq!(
            e,
            "x\\n2026-12-03T07:00:00Z ERROR journal write failed\\r\\u{1b}[31mred\\u{7}"
        );
        // Unambiguous: a literal backslash-n differs from a newline.
        assert_eq!(escape("a\\nb"), "a\\\\nb");
        assert_eq!(escape("a\u{202e}b\u{85}"), "a\\u{202e}b\\u{85}");
    }

    #[test]
    fn messages_keep_their_own_newlines() {
        assert_eq!(escape_message("a\nb"), "a\nb");
        assert_eq!(escape_message("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
    }
}
