//! The request lines that make up nearly all of a busy server's traffic, recognised by their
//! exact bytes.
//!
//! A client holding a job sends `job_keepalive` (or polls `get_job_state`) every few seconds
//! for as long as the job lives, and every client asks `version()` when it connects. The
//! Python client writes each request with `json.dumps({"command": name, "args": args,
//! "kwargs": kwargs})`, so those lines always have the same shape:
//!
//! ```text
//! {"command": "job_keepalive", "args": [42], "kwargs": {}}
//! {"command": "version", "args": [], "kwargs": {}}
//! ```
//!
//! [`common_line`] matches exactly that shape, for `version()` and the commands whose only
//! argument is a `job_id`, without building a JSON tree (the general path builds one, binds
//! the arguments as CPython would and checks every value). Anything else, even the same call
//! spelt another way (other spacing, key order, `5.0`, keywords), is `None` and takes the
//! general path. For the lines it accepts, the answer is by construction the general path's:
//! debug builds check every one, and a property test compares the two on near misses.

use super::Parsed;
use crate::core::types::{Command, JobId};

/// Everything before the command name.
const HEAD: &[u8] = b"{\"command\": \"";
/// Between the command name and the arguments.
const MIDDLE: &[u8] = b"\", \"args\": [";
/// After the arguments: no keyword arguments.
const TAIL: &[u8] = b"], \"kwargs\": {}}";
/// The most digits of a `job_id` taken here: 18 keeps every value below 2^63 (larger ids,
/// which the server never hands out, take the general path).
const ID_DIGITS_MAX: usize = 18;

/// The meaning of `line` if it is one of the common requests in the Python client's exact
/// spelling; `None` for anything else (which the general parser then handles).
pub(super) fn common_line(line: &[u8]) -> Option<Parsed> {
    let rest = line.strip_prefix(HEAD)?.strip_suffix(TAIL)?;
    let name_end = rest.iter().position(|&b| b == b'"')?;
    let (name, args) = (&rest[..name_end], rest[name_end..].strip_prefix(MIDDLE)?);
    if args.is_empty() {
        return (name == b"version").then_some(Parsed::Version);
    }
    let job_id = positive_integer(args)?;
    let command = match name {
        b"job_keepalive" => Command::JobKeepalive { job_id },
        b"get_job_state" => Command::GetJobState { job_id },
        b"get_job_machine_info" => Command::GetJobMachineInfo { job_id },
        b"power_on_job_boards" => Command::PowerOnJobBoards { job_id },
        b"power_off_job_boards" => Command::PowerOffJobBoards { job_id },
        _ => return None,
    };
    Some(Parsed::Core(command))
}

/// A JSON integer literal `1..=10^18-1` written without sign, leading zeros, fraction or
/// exponent; `None` for anything else.
fn positive_integer(digits: &[u8]) -> Option<JobId> {
    if digits.is_empty()
        || digits.len() > ID_DIGITS_MAX
        || digits[0] == b'0'
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let value = digits
        .iter()
        .fold(0, |n: JobId, &d| n * 10 + JobId::from(d - b'0'));
    debug_assert!(value > 0);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse::parse_general;
    use quickcheck::QuickCheck;

    fn line(name: &str, args: &str) -> Vec<u8> {
        format!("{{\"command\": \"{name}\", \"args\": [{args}], \"kwargs\": {{}}}}").into_bytes()
    }

    /// The client's own spellings are taken here (so the fast path cannot quietly become
    /// dead code), with the general path's meaning.
    #[test]
    fn the_python_clients_lines_are_recognised_with_the_general_meaning() {
        let cases = [
            line("version", ""),
            line("job_keepalive", "1"),
            line("job_keepalive", "42"),
            line("get_job_state", "7"),
            line("get_job_machine_info", "123456789012345678"),
            line("power_on_job_boards", "3"),
            line("power_off_job_boards", "99"),
        ];
        for l in cases {
            let fast = common_line(&l);
            assert!(fast.is_some(), "{}", String::from_utf8_lossy(&l));
            assert_eq!(
                fast,
                Some(parse_general(&l)),
                "{}",
                String::from_utf8_lossy(&l)
            );
        }
        assert_eq!(
            common_line(&line("job_keepalive", "42")),
            Some(Parsed::Core(Command::JobKeepalive { job_id: 42 }))
        );
    }

    /// Near misses go to the general path, which gives them their own meaning (an error,
    /// a binding message, id 0 for an id no job has, ...).
    #[test]
    fn near_misses_are_left_to_the_general_parser() {
        let cases: Vec<Vec<u8>> = vec![
            line("version", "1"),
            line("job_keepalive", ""),
            line("job_keepalive", "0"),
            line("job_keepalive", "01"),
            line("job_keepalive", "-1"),
            line("job_keepalive", "5.0"),
            line("job_keepalive", "1e3"),
            line("job_keepalive", "1, 2"),
            line("job_keepalive", " 1"),
            line("job_keepalive", "\"1\""),
            line("job_keepalive", "1234567890123456789"),
            line("destroy_job", "1"),
            line("list_jobs", ""),
            line("jobkeepalive", "1"),
            line("job_keepalive\\u0020", "1"),
            b"{\"command\": \"job_keepalive\", \"args\": [1], \"kwargs\": {\"job_id\": 1}}"
                .to_vec(),
            b"{\"command\":\"job_keepalive\",\"args\":[1],\"kwargs\":{}}".to_vec(),
            b"{\"args\": [1], \"command\": \"job_keepalive\", \"kwargs\": {}}".to_vec(),
            b"{\"command\": \"job_keepalive\", \"args\": [1], \"kwargs\": {}} ".to_vec(),
            b"{\"command\": \"job_keepalive\", \"args\": [1]}".to_vec(),
            b"{\"command\": \"job_keepalive\", \"args\": [1], \"kwargs\": {}, \"x\": 1}".to_vec(),
            b"{\"command\": \"\", \"args\": [], \"kwargs\": {}}".to_vec(),
        ];
        for l in cases {
            assert_eq!(common_line(&l), None, "{}", String::from_utf8_lossy(&l));
        }
    }

    /// Whatever the bytes, the fast path either declines or agrees with the general one.
    /// Lines are the common shape with a random command, a random id from digits and signs,
    /// and perhaps one byte inserted or replaced anywhere, so most are accepted or near misses.
    #[test]
    fn agrees_with_the_general_parser_or_declines() {
        // Every command: those taken here and those that must be left alone.
        const NAMES: &[&str] = crate::protocol::COMMANDS;
        const ID_BYTES: &[u8] = b"0123456789-.e, \"";
        const EDIT_BYTES: &[u8] = b" \"{}[],:0159-.aek\\\n\t";
        fn prop(name: u8, id: Vec<u8>, edit: Option<(u16, u8, bool)>) -> bool {
            let name = NAMES[usize::from(name) % NAMES.len()];
            let id: String = id
                .iter()
                .take(22)
                .map(|b| char::from(ID_BYTES[usize::from(*b) % ID_BYTES.len()]))
                .collect();
            let mut l = line(name, &id);
            if let Some((at, byte, insert)) = edit {
                let at = usize::from(at) % (l.len() + 1);
                let byte = EDIT_BYTES[usize::from(byte) % EDIT_BYTES.len()];
                if insert || at == l.len() {
                    l.insert(at, byte);
                } else {
                    l[at] = byte;
                }
            }
            match common_line(&l) {
                None => true,
                Some(fast) => fast == parse_general(&l),
            }
        }
        QuickCheck::new()
            .tests(20_000)
            .quickcheck(prop as fn(u8, Vec<u8>, Option<(u16, u8, bool)>) -> bool);
        // And every command with every small id: accepted, and agreeing.
        for name in NAMES {
            for id in 1..=200u64 {
                let l = line(name, &id.to_string());
                if let Some(fast) = common_line(&l) {
                    assert_eq!(fast, parse_general(&l), "{}", String::from_utf8_lossy(&l));
                }
            }
        }
    }
}
