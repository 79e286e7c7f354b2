//! The server's configuration: the JSON file format of `docs/configuration.md`, validated
//! into plain data that the core folds and the journal records.
//!
//! [`load`] reads a file and [`parse`] a string. Parsing happens in two stages (as ripgrep
//! separates low-level from high-level arguments):
//!
//! 1. *Raw*: the JSON is walked by hand (not derived), so that every unknown key, duplicate
//!    key, wrong type and out-of-range number is reported with its path
//!    (`machines[2].boardz: unknown field`) rather than only the first one serde meets.
//!    Shorthand forms (`single_board`, `standard_ips`, `spinner_csv`) are read here too.
//! 2. *Validated*: shorthands are expanded exactly as the original's `Machine.single_board`,
//!    `Machine.with_standard_ips` and `board_locations_from_spinner` did, and each machine is
//!    checked alone (size, positions, duplicates, BMPs) and against the others (unique names,
//!    BMP addresses and board IPs), e.g.
//!    `machines[0].boards[5]: board (3, 0, 0) lies outside the 2x2 machine`.
//!
//! A machine with a stage-1 problem is left out of stage 2 so that one mistake does not
//! cascade into a page of follow-on errors; everything else is reported in one go, and the
//! whole file is rejected if anything is wrong ([`ConfigError`] lists one problem per line).
//!
//! A validated [`Config`] is the value carried by the core's configuration event, so it is
//! deliberately plain: vectors in a canonical (sorted) order, no maps keyed by tuples, so that
//! equal configurations compare equal whatever order the file listed things in.
//! [`Config::to_json`] writes it back in the explicit form.
//!
//! The validated types are the core's (`spalloc_core::config`, re-exported here); this module
//! reads and checks them: `raw` (stages 0 and 1), `spinner` (the SpiNNer CSV shorthand),
//! `address` (dotted quads for `standard_ips`) and `validate` (stage 2).

use crate::core::coordinates::{Board, Link};
// The validated types are the core's (it folds them); the server reads and validates them.
pub use crate::core::config::{
    check_host, split_address, BmpConfig, BmpTimings, BoardConfig, Config, HealthConfig,
    MachineConfig, DEFAULT_BMP_PORT,
};

use std::fmt;
use std::path::Path;

mod address;
mod raw;
mod spinner;
mod validate;

use raw::{raw_config, Json, Problems};
use validate::validate;

/// The largest width or height, in triads, a machine may have. The real machines are at most
/// 20x20; the bound keeps a typo (`"width": 20000`) from making validation enumerate billions
/// of board positions.
pub const MAX_TRIADS_PER_SIDE: u32 = 256;

/// The largest number of seconds any duration in the file may hold (one year). It keeps the
/// values far from the range where converting them to a `Duration` or adding them to a clock
/// would overflow.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// The largest `max_retired_jobs`: each retired job costs a few dozen bytes.
pub const MAX_RETIRED_JOBS: u64 = 10_000_000;

/// The largest value of any retry or attempt count in the `bmp` block.
pub const MAX_ATTEMPTS: u64 = 1000;

/// The number of board slots in a frame: board numbers run from 0 to 23.
pub const BOARDS_PER_FRAME: u32 = 24;

/// One thing wrong with a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where in the file, e.g. `machines[2].boards[5].ip`; empty for the file as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a configuration was rejected: every problem found, in file order as far as possible.
/// The file is rejected whole, so there is always at least one problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems, each with its path.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn single(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            problems: vec![Problem {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

/// Reads and validates the configuration file at `path`. A relative `spinner_csv` path is
/// taken relative to the directory holding the file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::single(
            "",
            format!("cannot read configuration file {}: {e}", path.display()),
        )
    })?;
    let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&text, base_dir)
}

/// Parses and validates a configuration from its JSON text. `base_dir` is where relative
/// `spinner_csv` paths are looked up (the configuration file's directory).
pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    // A syntax error leaves nothing to walk, so it is the one problem that stops everything.
    let json: Json = serde_json::from_str(text)
        .map_err(|e| ConfigError::single("", format!("invalid JSON: {e}")))?;
    let mut p = Problems::default();
    let raw = raw_config(&mut p, &json, base_dir);
    let config = validate(&mut p, raw);
    if p.0.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems: p.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(v: serde_json::Value) -> Config {
        match parse(&v.to_string(), Path::new(".")) {
            Ok(c) => c,
            Err(e) => panic!("unexpected error:\n{e}"),
        }
    }

    /// The problems, one string each, as `Display` prints them.
    fn errs(v: serde_json::Value) -> Vec<String> {
        errs_text(&v.to_string())
    }

    fn errs_text(text: &str) -> Vec<String> {
        match parse(text, Path::new(".")) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => {
                let lines: Vec<String> = e.to_string().lines().map(str::to_string).collect();
                assert_eq!(lines.len(), e.problems.len());
                lines
            }
        }
    }

    /// A valid 1x1 machine with all three boards, in the explicit form.
    fn m1(name: &str, n: u32) -> serde_json::Value {
        json!({
            "name": name,
            "bmps": [{"cabinet": 0, "frame": 0, "address": format!("10.{n}.0.0")}],
            "boards": [
                {"x": 0, "y": 0, "z": 0, "cabinet": 0, "frame": 0, "board": 0, "ip": format!("10.{n}.0.1")},
                {"x": 0, "y": 0, "z": 1, "cabinet": 0, "frame": 0, "board": 1, "ip": format!("10.{n}.0.9")},
                {"x": 0, "y": 0, "z": 2, "cabinet": 0, "frame": 0, "board": 2, "ip": format!("10.{n}.0.17")},
            ]
        })
    }

    #[test]
    fn simulated_faults_are_checked_specs_and_survive_to_json() {
        let c = ok(json!({
            "simulated_faults": ["10.0.0.0/1=fpga", "10.0.0.0:17893=silent*2"],
            "machines": [m1("m", 0)],
        }));
        assert_eq!(
            c.simulated_faults,
            vec!["10.0.0.0/1=fpga", "10.0.0.0:17893=silent*2"]
        );
        assert_eq!(ok(c.to_json()), c);
        assert!(!ok(json!({"machines": [m1("m", 0)]}))
            .to_json()
            .as_object()
            .unwrap()
            .contains_key("simulated_faults"));
        let e = errs(json!({
            "simulated_faults": ["10.0.0.0/1=melt", 7],
            "machines": [m1("m", 0)],
        }));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("simulated_faults[0]: "), "{e:?}");
        assert!(e[1].starts_with("simulated_faults[1]: "), "{e:?}");
    }

    /// `m1` with one field replaced.
    fn m1_with(key: &str, value: serde_json::Value) -> serde_json::Value {
        let mut m = m1("m", 0);
        m[key] = value;
        json!({"machines": [m]})
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = ok(json!({}));
        assert_eq!(c, Config::default());
        assert_eq!(c.ip, "0.0.0.0");
        assert_eq!(c.port, 22244);
        assert_eq!(c.timeout_check_interval_s, 5.0);
        assert_eq!(c.max_retired_jobs, 1200);
        assert_eq!(c.seconds_before_free_s, 30.0);
        assert_eq!(c.bmp, BmpTimings::default());
        assert_eq!(c.bmp.post_power_on_delay_s, 5.0);
        assert_eq!(c.bmp.power_on_timeout_s, 10.0);
        assert_eq!(c.bmp.command_timeout_s, 1.0);
        assert_eq!(c.bmp.command_retries, 3);
        assert_eq!(c.bmp.request_attempts, 2);
        assert_eq!(c.bmp.retry_delay_s, 15.0);
        assert_eq!(c.bmp.fpga_attempts, 3);
    }

    #[test]
    fn top_level_values_are_read() {
        let c = ok(json!({
            "ip": "127.0.0.1", "port": 0, "timeout_check_interval": 0.5, "max_retired_jobs": 0,
            "seconds_before_free": 0,
            "bmp": {"post_power_on_delay": 0.1, "power_on_timeout": 2, "command_timeout": 0.2,
                    "command_retries": 0, "request_attempts": 1, "retry_delay": 1, "fpga_attempts": 4},
        }));
        assert_eq!(c.ip, "127.0.0.1");
        assert_eq!(c.port, 0);
        assert_eq!(c.timeout_check_interval_s, 0.5);
        assert_eq!(c.max_retired_jobs, 0);
        assert_eq!(c.seconds_before_free_s, 0.0);
        let want = BmpTimings {
            post_power_on_delay_s: 0.1,
            power_on_timeout_s: 2.0,
            command_timeout_s: 0.2,
            command_retries: 0,
            request_attempts: 1,
            retry_delay_s: 1.0,
            fpga_attempts: 4,
        };
        assert_eq!(c.bmp, want);
        // The original's "" means every interface.
        assert_eq!(ok(json!({"ip": ""})).ip, "0.0.0.0");
    }

    #[test]
    fn syntax_errors_stop_at_once() {
        let e = errs_text("{\"port\": ");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("invalid JSON: "), "{e:?}");
        assert!(e[0].contains("line 1"), "{e:?}");
    }

    #[test]
    fn top_level_type_and_range_errors() {
        assert_eq!(errs(json!([])), ["expected an object, found an array"]);
        assert_eq!(
            errs(json!({
                "ip": 5, "port": 65536, "timeout_check_interval": 0, "max_retired_jobs": -1,
                "seconds_before_free": "30", "machines": {}, "extra": 1, "bmp": []
            })),
            [
                "extra: unknown field",
                "ip: expected a string, found 5",
                "port: must be at most 65535, found 65536",
                "timeout_check_interval: must be a number of seconds greater than 0 and at most 31536000, found 0",
                "max_retired_jobs: expected a non-negative integer, found -1",
                "seconds_before_free: expected a number of seconds, found \"30\"",
                "bmp: expected an object, found an array",
                "machines: expected an array, found an object",
            ]
        );
        assert_eq!(
            errs(json!({"ip": "a b"})),
            ["ip: invalid character ' ' in host \"a b\""]
        );
        assert_eq!(
            errs(json!({"port": 1.5})),
            ["port: expected a non-negative integer, found 1.5"]
        );
        assert_eq!(
            errs(json!({"seconds_before_free": -1, "max_retired_jobs": 1e12})),
            [
                "max_retired_jobs: expected a non-negative integer, found 1000000000000.0",
                "seconds_before_free: must be a number of seconds at least 0 and at most 31536000, found -1",
            ]
        );
        assert_eq!(
            errs(json!({"timeout_check_interval": 1e9})),
            ["timeout_check_interval: must be a number of seconds greater than 0 and at most 31536000, found 1000000000.0"]
        );
    }

    #[test]
    fn bmp_block_errors() {
        assert_eq!(
            errs(json!({"bmp": {
                "post_power_on_delay": -0.5, "power_on_timeout": 0, "command_timeout": null,
                "command_retries": 1001, "request_attempts": 0, "retry_delay": true,
                "fpga_attempts": 0, "post_power_on_delay_s": 1
            }})),
            [
                "bmp.post_power_on_delay_s: unknown field",
                "bmp.post_power_on_delay: must be a number of seconds at least 0 and at most 31536000, found -0.5",
                "bmp.power_on_timeout: must be a number of seconds greater than 0 and at most 31536000, found 0",
                "bmp.command_timeout: expected a number of seconds, found null",
                "bmp.retry_delay: expected a number of seconds, found true",
                "bmp.command_retries: must be at most 1000, found 1001",
                "bmp.request_attempts: must be at least 1, found 0",
                "bmp.fpga_attempts: must be at least 1, found 0",
            ]
        );
    }

    #[test]
    fn duplicate_keys_are_reported_with_their_path() {
        let text = r#"{"port": 1, "machines": [{"name": "a", "name": "b", "bmps": [], "boards": []}], "port": 2}"#;
        assert_eq!(
            errs_text(text),
            ["port: duplicate field", "machines[0].name: duplicate field"]
        );
    }

    #[test]
    fn explicit_machine() {
        let c = ok(json!({"machines": [{
            "name": "m1",
            "tags": ["b", "default", "b"],
            "width": 2, "height": 1,
            "dead_boards": [[1, 0, 2], [0, 0, 2], [1, 0, 2]],
            "dead_links": [[1, 0, 1, "north"], [0, 0, 0, 3], [0, 0, 0, "west"]],
            "bmps": [
                {"cabinet": 0, "frame": 1, "address": "127.0.0.1:17001"},
                {"cabinet": 0, "frame": 0, "address": "10.0.0.0"},
            ],
            "boards": [
                {"x": 1, "y": 0, "z": 1, "cabinet": 0, "frame": 1, "board": 1, "ip": "10.0.1.9"},
                {"x": 1, "y": 0, "z": 0, "cabinet": 0, "frame": 1, "board": 0, "ip": "10.0.1.1"},
                {"x": 0, "y": 0, "z": 1, "cabinet": 0, "frame": 0, "board": 1, "ip": "10.0.0.9"},
                {"x": 0, "y": 0, "z": 0, "cabinet": 0, "frame": 0, "board": 0, "ip": "10.0.0.1"},
            ],
        }]}));
        let m = c.machine("m1").expect("m1");
        assert!(c.machine("m2").is_none());
        assert_eq!(m.tags, ["b", "default"]);
        assert_eq!((m.width, m.height), (2, 1));
        assert_eq!(m.dead_boards, [Board::new(0, 0, 2), Board::new(1, 0, 2)]);
        assert_eq!(
            m.dead_links,
            [
                (Board::new(0, 0, 0), Link::West),
                (Board::new(1, 0, 1), Link::North)
            ]
        );
        assert_eq!(
            m.bmps,
            [
                BmpConfig {
                    cabinet: 0,
                    frame: 0,
                    address: "10.0.0.0".into()
                },
                BmpConfig {
                    cabinet: 0,
                    frame: 1,
                    address: "127.0.0.1:17001".into()
                },
            ]
        );
        let logical: Vec<Board> = m.boards.iter().map(|b| b.logical).collect();
        assert_eq!(
            logical,
            [
                Board::new(0, 0, 0),
                Board::new(0, 0, 1),
                Board::new(1, 0, 0),
                Board::new(1, 0, 1)
            ]
        );
        assert_eq!(
            m.boards[3],
            BoardConfig {
                logical: Board::new(1, 0, 1),
                cabinet: 0,
                frame: 1,
                board: 1,
                ip: "10.0.1.9".into()
            }
        );
        assert_eq!(
            (m.bmps[0].host(), m.bmps[0].port()),
            ("10.0.0.0", DEFAULT_BMP_PORT)
        );
        assert_eq!((m.bmps[1].host(), m.bmps[1].port()), ("127.0.0.1", 17001));
    }

    #[test]
    fn tags_default_and_order_does_not_matter() {
        let a = ok(json!({"machines": [m1("m", 0)]}));
        assert_eq!(a.machines[0].tags, ["default"]);
        let mut reversed = m1("m", 0);
        let boards = reversed["boards"].as_array_mut().expect("array");
        boards.reverse();
        reversed["tags"] = json!(["default", "default"]);
        assert_eq!(ok(json!({"machines": [reversed]})), a);
        // An empty tag list is allowed: the machine is only reachable by name.
        assert!(ok(m1_with("tags", json!([]))).machines[0].tags.is_empty());
    }

    #[test]
    fn machine_type_errors_name_every_path() {
        assert_eq!(
            errs(json!({"machines": [
                {"name": "a", "boardz": [], "bmps": [], "boards": []},
                {"name": "", "tags": ["x", "", 3, " y"], "width": -1, "height": "2", "bmps": 1, "boards": [1]},
                {"bmps": [{"cabinet": 0, "frame": 0}], "boards": [{"x": 0, "y": 0, "z": 0}]},
                {"name": "d", "dead_boards": [[0, 0], 1, [0, 0, "a"]], "dead_links": [[0, 0, 0, "up"], [0, 0, 0, 6], [0, 0, 0]],
                 "bmps": [], "boards": []},
                {"name": "e"},
                7,
            ]})),
            [
                "machines[0].boardz: unknown field",
                "machines[1].name: must not be empty",
                "machines[1].tags[1]: must not be empty",
                "machines[1].tags[2]: expected a string, found 3",
                "machines[1].tags[3]: \" y\" has leading or trailing white space",
                "machines[1].width: expected a non-negative integer, found -1",
                "machines[1].height: expected a non-negative integer, found \"2\"",
                "machines[1].bmps: expected an array, found 1",
                "machines[1].boards[0]: expected an object, found 1",
                "machines[2].name: required field missing",
                "machines[2].bmps[0].address: required field missing",
                "machines[2].boards[0].cabinet: required field missing",
                "machines[2].boards[0].frame: required field missing",
                "machines[2].boards[0].board: required field missing",
                "machines[2].boards[0].ip: required field missing",
                "machines[3].dead_boards[0]: expected [x, y, z], found an array of 2 elements",
                "machines[3].dead_boards[1]: expected an array, found 1",
                "machines[3].dead_boards[2][2]: expected a non-negative integer, found \"a\"",
                "machines[3].dead_links[0][3]: expected a link name (east, north_east, north, west, south_west, south) or number 0-5, found \"up\"",
                "machines[3].dead_links[1][3]: expected a link name (east, north_east, north, west, south_west, south) or number 0-5, found 6",
                "machines[3].dead_links[2]: expected [x, y, z, link], found an array of 3 elements",
                "machines[4].bmps: required field missing",
                "machines[4].boards: required field missing",
                "machines[5]: expected an object, found 7",
            ]
        );
    }

    #[test]
    fn size_is_inferred_from_boards_and_dead_boards() {
        let mut m = m1("m", 0);
        m["dead_boards"] = json!([[2, 1, 0]]);
        m["width"] = json!(3);
        m["height"] = json!(2);
        // Without the size the rectangle 3x2 is inferred, and its missing boards reported.
        let e = errs(m1_with("dead_boards", json!([[2, 1, 0]])));
        assert_eq!(
            e,
            ["machines[0]: 14 board(s) of the 3x2 machine neither listed nor dead: (0, 1, 0), (0, 1, 1), (0, 1, 2), (1, 0, 0), (1, 0, 1), (1, 0, 2), (1, 1, 0), (1, 1, 1) and 6 more"]
        );
        // The same as giving 3x2 explicitly.
        assert_eq!(errs(json!({"machines": [m]})), e);
        let c = ok(json!({"machines": [m1("m", 0)]}));
        assert_eq!((c.machines[0].width, c.machines[0].height), (1, 1));
        // A dead board counts as a board of the rectangle; the working ones are the others.
        let mut m = m1("m", 0);
        m["boards"].as_array_mut().expect("array").pop();
        m["dead_boards"] = json!([[0, 0, 2]]);
        let c = ok(json!({"machines": [m]}));
        assert_eq!(
            (
                c.machines[0].width,
                c.machines[0].height,
                c.machines[0].boards.len()
            ),
            (1, 1, 2)
        );
    }

    #[test]
    fn size_errors() {
        assert_eq!(
            errs(m1_with("width", json!(1))),
            ["machines[0]: width and height must be given together (only width is given)"]
        );
        assert_eq!(
            errs(m1_with("height", json!(1))),
            ["machines[0]: width and height must be given together (only height is given)"]
        );
        let mut m = m1("m", 0);
        m["width"] = json!(0);
        m["height"] = json!(257);
        assert_eq!(
            errs(json!({"machines": [m]})),
            [
                "machines[0].width: must be 1-256 triads, found 0",
                "machines[0].height: must be 1-256 triads, found 257"
            ]
        );
        assert_eq!(
            errs(json!({"machines": [{"name": "e", "bmps": [], "boards": []}]})),
            ["machines[0]: cannot infer width and height: no boards and no dead boards"]
        );
        assert_eq!(
            errs(
                json!({"machines": [{"name": "e", "dead_boards": [[300, 0, 0]], "bmps": [], "boards": []}]})
            ),
            ["machines[0]: inferred size 301x1 exceeds the largest machine (256x256 triads)"]
        );
    }

    #[test]
    fn boards_must_lie_inside_the_machine() {
        let mut m = m1("m", 0);
        m["width"] = json!(1);
        m["height"] = json!(1);
        m["boards"].as_array_mut().expect("array").extend([
            json!({"x": 1, "y": 0, "z": 0, "cabinet": 0, "frame": 0, "board": 3, "ip": "a"}),
            json!({"x": 0, "y": 0, "z": 3, "cabinet": 0, "frame": 0, "board": 4, "ip": "b"}),
        ]);
        m["dead_boards"] = json!([[0, 1, 0]]);
        m["dead_links"] = json!([[0, 0, 3, 0], [0, 0, 0, 0]]);
        assert_eq!(
            errs(json!({"machines": [m]})),
            [
                "machines[0].dead_boards[0]: dead board (0, 1, 0) lies outside the 1x1 machine",
                "machines[0].dead_links[0]: dead link on board (0, 0, 3) lies outside the 1x1 machine",
                "machines[0].boards[3]: board (1, 0, 0) lies outside the 1x1 machine",
                "machines[0].boards[4]: board (0, 0, 3) lies outside the 1x1 machine",
            ]
        );
    }

    #[test]
    fn board_listing_conflicts() {
        let mut m = m1("m", 0);
        m["dead_boards"] = json!([[0, 0, 2]]);
        let boards = m["boards"].as_array_mut().expect("array");
        boards
            .push(json!({"x": 0, "y": 0, "z": 1, "cabinet": 0, "frame": 0, "board": 7, "ip": "x"}));
        boards
            .push(json!({"x": 0, "y": 0, "z": 1, "cabinet": 0, "frame": 0, "board": 7, "ip": "y"}));
        boards.push(
            json!({"x": 0, "y": 0, "z": 1, "cabinet": 0, "frame": 0, "board": 24, "ip": "z"}),
        );
        assert_eq!(
            errs(json!({"machines": [m]})),
            [
                "machines[0].boards[2]: board (0, 0, 2) is also listed as dead at machines[0].dead_boards[0]",
                "machines[0].boards[3]: board (0, 0, 1) is already listed at machines[0].boards[1]",
                "machines[0].boards[4]: board (0, 0, 1) is already listed at machines[0].boards[1]",
                "machines[0].boards[4]: physical position (cabinet 0, frame 0, board 7) is already used by machines[0].boards[3]",
                "machines[0].boards[5]: board (0, 0, 1) is already listed at machines[0].boards[1]",
                "machines[0].boards[5]: board number 24 is out of range 0-23",
            ]
        );
    }

    #[test]
    fn board_ips_must_be_hosts() {
        let mut m = m1("m", 0);
        m["boards"][1]["ip"] = json!("");
        m["boards"][2]["ip"] = json!("10.0.0.1 ");
        assert_eq!(
            errs(json!({"machines": [m]})),
            [
                "machines[0].boards[1].ip: invalid IP address or host name \"\": empty host",
                "machines[0].boards[2].ip: invalid IP address or host name \"10.0.0.1 \": invalid character ' ' in host \"10.0.0.1 \"",
            ]
        );
    }

    #[test]
    fn every_frame_with_boards_needs_one_bmp() {
        let mut m = m1("m", 0);
        m["boards"][2]["frame"] = json!(1);
        m["boards"][1]["cabinet"] = json!(2);
        m["bmps"] = json!([
            {"cabinet": 0, "frame": 0, "address": "10.0.0.0"},
            {"cabinet": 0, "frame": 0, "address": "10.0.0.100"},
            {"cabinet": 5, "frame": 0, "address": "10.0.0.200"},
        ]);
        assert_eq!(
            errs(json!({"machines": [m]})),
            [
                "machines[0].bmps[1]: a BMP for cabinet 0, frame 0 is already given at machines[0].bmps[0]",
                "machines[0].bmps: no BMP for cabinet 0, frame 1, which holds working boards (e.g. machines[0].boards[2])",
                "machines[0].bmps: no BMP for cabinet 2, frame 0, which holds working boards (e.g. machines[0].boards[1])",
            ]
        );
    }

    #[test]
    fn bmp_addresses() {
        assert_eq!(split_address("h"), Ok(("h", 17893)));
        assert_eq!(split_address("h:1"), Ok(("h", 1)));
        assert_eq!(split_address("[::1]:5"), Ok(("::1", 5)));
        assert_eq!(split_address("[::1]"), Ok(("::1", 17893)));
        assert_eq!(split_address("fe80::1"), Ok(("fe80::1", 17893)));
        for (address, message) in [
            ("h:0", "port 0 is not a valid BMP port (1-65535)"),
            ("h:", "invalid port \"\" (expected 1-65535)"),
            ("h:65536", "invalid port \"65536\" (expected 1-65535)"),
            ("h:+5", "invalid port \"+5\" (expected 1-65535)"),
            (":5", "empty host"),
            ("", "empty host"),
            ("[::1", "\"[::1\": missing ']' after an IPv6 address"),
            ("[::1]5", "\"[::1]5\": expected ':port' after ']'"),
        ] {
            assert_eq!(
                split_address(address),
                Err(message.to_string()),
                "{address}"
            );
            let mut m = m1("m", 0);
            m["bmps"][0]["address"] = json!(address);
            assert_eq!(
                errs(json!({"machines": [m]})),
                [format!(
                    "machines[0].bmps[0].address: invalid BMP address {address:?}: {message}"
                )]
            );
        }
    }

    #[test]
    fn names_bmps_and_ips_are_unique_across_machines() {
        let mut b = m1("a", 1);
        b["bmps"][0]["address"] = json!("10.0.0.0:17893");
        b["boards"][2]["ip"] = json!("10.0.0.17");
        let mut c = m1("c", 2);
        c["boards"][0]["ip"] = json!("10.2.0.9");
        c["bmps"][0]["address"] = json!("10.0.0.0:17894");
        assert_eq!(
            errs(json!({"machines": [m1("a", 0), b, c]})),
            [
                "machines[1].name: machine name \"a\" is already used by machines[0]",
                "machines[1].bmps[0].address: BMP address \"10.0.0.0:17893\" is already used by machines[0].bmps[0].address (cabinet 0, frame 0)",
                "machines[1].boards[2].ip: board IP \"10.0.0.17\" is already used by machines[0].boards[2].ip",
                "machines[2].boards[1].ip: board IP \"10.2.0.9\" is already used by machines[2].boards[0].ip",
            ]
        );
    }

    #[test]
    fn bad_machines_do_not_hide_other_machines_problems() {
        assert_eq!(
            errs(
                json!({"machines": [{"name": "a", "boardz": 1}, m1_with("width", json!(1))["machines"][0]]})
            ),
            [
                "machines[0].boardz: unknown field",
                "machines[0].bmps: required field missing",
                "machines[0].boards: required field missing",
                "machines[1]: width and height must be given together (only width is given)",
            ]
        );
    }

    #[test]
    fn single_board_shorthand() {
        let c = ok(json!({"machines": [
            {"name": "b", "tags": ["single"], "single_board": {"bmp": "10.0.1.0", "ip": "10.0.1.1"}},
            {"name": "c", "single_board": {"bmp": "127.0.0.1:17894", "ip": "10.0.1.2"}},
        ]}));
        let b = &c.machines[0];
        assert_eq!(b.tags, ["single"]);
        assert_eq!((b.width, b.height), (1, 1));
        assert_eq!(b.dead_boards, [Board::new(0, 0, 1), Board::new(0, 0, 2)]);
        assert!(b.dead_links.is_empty());
        assert_eq!(
            b.bmps,
            [BmpConfig {
                cabinet: 0,
                frame: 0,
                address: "10.0.1.0".into()
            }]
        );
        assert_eq!(
            b.boards,
            [BoardConfig {
                logical: Board::new(0, 0, 0),
                cabinet: 0,
                frame: 0,
                board: 0,
                ip: "10.0.1.1".into()
            }]
        );
        assert_eq!(c.machines[1].tags, ["default"]);
        // Equal to the explicit form it stands for.
        assert_eq!(ok(c.to_json()), c);
    }

    #[test]
    fn single_board_errors() {
        assert_eq!(
            errs(json!({"machines": [
                {"name": "b", "width": 1, "boards": [], "single_board": {"bmp": "h", "ipp": "x"}},
                {"name": "c", "single_board": {"bmp": "h:0", "ip": ""}},
                {"name": "d", "single_board": {"bmp": "q", "ip": "i"}},
                {"name": "e", "single_board": {"bmp": "q", "ip": "i"}},
            ]})),
            [
                "machines[0].width: not allowed together with single_board",
                "machines[0].boards: not allowed together with single_board",
                "machines[0].single_board.ipp: unknown field",
                "machines[0].single_board.ip: required field missing",
                "machines[1].single_board.ip: invalid IP address or host name \"\": empty host",
                "machines[1].single_board.bmp: invalid BMP address \"h:0\": port 0 is not a valid BMP port (1-65535)",
                "machines[3].single_board.bmp: BMP address \"q\" is already used by machines[2].single_board.bmp (cabinet 0, frame 0)",
                "machines[3].single_board.ip: board IP \"i\" is already used by machines[2].single_board.ip",
            ]
        );
    }

    /// The 2x1-triad machine of `standard_ips_shorthand`, listed board by board.
    fn standard_boards() -> serde_json::Value {
        json!([
            {"x": 0, "y": 0, "z": 0, "cabinet": 0, "frame": 0, "board": 0},
            {"x": 0, "y": 0, "z": 1, "cabinet": 0, "frame": 0, "board": 1},
            {"x": 0, "y": 0, "z": 2, "cabinet": 0, "frame": 0, "board": 2},
            {"x": 1, "y": 0, "z": 0, "cabinet": 1, "frame": 2, "board": 5},
            {"x": 1, "y": 0, "z": 1, "cabinet": 1, "frame": 2, "board": 3},
        ])
    }

    #[test]
    fn standard_ips_shorthand() {
        let c = ok(json!({"machines": [{
            "name": "s", "dead_boards": [[1, 0, 2]], "boards": standard_boards(),
            "standard_ips": {"base_ip": "10.2.0.0"},
        }]}));
        let m = &c.machines[0];
        assert_eq!((m.width, m.height), (2, 1));
        // BMP: base + cabinet·0.0.5.0 + frame·0.0.1.0 + 0; board: ... + board·0.0.0.8 + 0.0.0.1.
        assert_eq!(
            m.bmps,
            [
                BmpConfig {
                    cabinet: 0,
                    frame: 0,
                    address: "10.2.0.0".into()
                },
                BmpConfig {
                    cabinet: 1,
                    frame: 2,
                    address: "10.2.7.0".into()
                },
            ]
        );
        let ips: Vec<&str> = m.boards.iter().map(|b| b.ip.as_str()).collect();
        assert_eq!(
            ips,
            [
                "10.2.0.1",
                "10.2.0.9",
                "10.2.0.17",
                "10.2.7.41",
                "10.2.7.25"
            ]
        );

        // Every parameter, with a carry across bytes and the wrap of 32-bit addition.
        let c = ok(json!({"machines": [{
            "name": "s", "dead_boards": [[1, 0, 2]], "boards": standard_boards(),
            "standard_ips": {"base_ip": "255.255.255.0", "cabinet_stride": "0.0.1.0",
                             "frame_stride": "0.0.0.64", "board_stride": "0.0.0.40",
                             "bmp_offset": "0.0.0.3", "spinnaker_offset": "0.0.0.200"},
        }]}));
        let m = &c.machines[0];
        let bmps: Vec<&str> = m.bmps.iter().map(|b| b.address.as_str()).collect();
        // Cabinet 1 frame 2: 255.255.255.0 + 0.0.1.0 + 0.0.0.128 wraps to 0.0.0.128.
        assert_eq!(bmps, ["255.255.255.3", "0.0.0.131"]);
        let ips: Vec<&str> = m.boards.iter().map(|b| b.ip.as_str()).collect();
        assert_eq!(
            ips,
            [
                "255.255.255.200",
                "255.255.255.240",
                "0.0.0.24",
                "0.0.2.16",
                "0.0.1.192"
            ]
        );

        // Omitted parameters take the original's defaults (base 192.168.0.0).
        let c = ok(json!({"machines": [{
            "name": "s", "width": 2, "height": 1, "dead_boards": [[1, 0, 2]],
            "boards": standard_boards(), "standard_ips": {},
        }]}));
        assert_eq!(c.machines[0].bmps[1].address, "192.168.7.0");
        assert_eq!(ok(c.to_json()), c);
    }

    #[test]
    fn standard_ips_errors() {
        assert_eq!(
            errs(json!({"machines": [
                {"name": "a", "bmps": [], "boards": [{"x": 0, "y": 0, "z": 0, "cabinet": 0, "frame": 0, "board": 0, "ip": "1"}],
                 "standard_ips": {"base_ip": "10.2.0", "board_stride": "0.0.0.256", "frame_stride": 5, "offset": "0.0.0.1"}},
                {"name": "b", "standard_ips": {}},
                {"name": "c", "standard_ips": {}, "boards": [], "spinner_csv": "x.csv"},
                {"name": "d", "spinner_csv": "x.csv", "bmps": [], "boards": []},
            ]})),
            [
                "machines[0].bmps: not allowed together with standard_ips (BMP addresses are derived)",
                "machines[0].standard_ips.offset: unknown field",
                "machines[0].standard_ips.base_ip: malformed IPv4 address \"10.2.0\" (expected four numbers 0-255 separated by dots)",
                "machines[0].boards[0].ip: unknown field",
                "machines[1]: standard_ips needs boards or spinner_csv",
                "machines[2].spinner_csv: not allowed together with boards",
                "machines[3].spinner_csv: only allowed together with standard_ips (the CSV gives no IP addresses)",
            ]
        );
        // Each parameter is checked (the first malformed one stops that machine's derivation).
        for bad in [
            "0.0.0.256",
            "1.2.3.4.5",
            "a.b.c.d",
            "1..2.3",
            "0.0.0.-1",
            "1.2.3.0004",
        ] {
            assert_eq!(
                errs(json!({"machines": [{"name": "a", "boards": standard_boards(),
                                          "standard_ips": {"board_stride": bad}}]})),
                [format!(
                    "machines[0].standard_ips.board_stride: malformed IPv4 address {bad:?} (expected four numbers 0-255 separated by dots)"
                )]
            );
        }
        assert_eq!(
            errs(
                json!({"machines": [{"name": "a", "boards": standard_boards(), "standard_ips": {"base_ip": 5}}]})
            ),
            ["machines[0].standard_ips.base_ip: expected a string, found 5"]
        );
        // Derived addresses take part in the uniqueness checks.
        assert_eq!(
            errs(json!({"machines": [
                {"name": "a", "dead_boards": [[1, 0, 2]], "boards": standard_boards(), "standard_ips": {}},
                {"name": "b", "single_board": {"bmp": "192.168.7.0", "ip": "192.168.0.9"}},
            ]})),
            [
                "machines[1].single_board.bmp: BMP address \"192.168.7.0\" is already used by machines[0].standard_ips (cabinet 1, frame 2)",
                "machines[1].single_board.ip: board IP \"192.168.0.9\" is already used by machines[0].boards[1]",
            ]
        );
    }

    /// A scratch directory for one test.
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("spalloc-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn spinner_csv_follows_board_locations_from_spinner() {
        let dir = scratch("csv");
        // Columns in another order than the header the brief names, an extra column, and
        // the Ethernet chips of a 2x1-triad machine (24x12 chips) minus board (1, 0, 2).
        std::fs::write(
            dir.join("chips.csv"),
            "cabinet,frame,board,x,y,extra\n0,0,0,0,0,a\n0,0,1,8,4,b\n0,0,2,4,8,c\n\n1,2,5,12,0,d\n1,2,3,20,4,e\n",
        )
        .expect("write csv");
        let config = json!({"machines": [{
            "name": "s", "dead_boards": [[1, 0, 2]], "spinner_csv": "chips.csv",
            "standard_ips": {"base_ip": "10.2.0.0"},
        }]});
        std::fs::write(dir.join("c.json"), config.to_string()).expect("write json");
        let from_csv = load(&dir.join("c.json")).expect("loads");
        let listed = ok(json!({"machines": [{
            "name": "s", "dead_boards": [[1, 0, 2]], "boards": standard_boards(),
            "standard_ips": {"base_ip": "10.2.0.0"},
        }]}));
        assert_eq!(from_csv, listed);

        // Problems in the CSV are reported with the file's line numbers.
        std::fs::write(
            dir.join("bad.csv"),
            "board,cabinet,frame,x,y\n0,0,0,0,0\n1,0,0,0,0\n2,0,0,x,1\n3,0,0,1,1\n",
        )
        .expect("write csv");
        std::fs::write(dir.join("nocol.csv"), "board,cabinet,x,y\n").expect("write csv");
        let e = match parse(
            &json!({"machines": [
                {"name": "a", "spinner_csv": "bad.csv", "standard_ips": {}},
                {"name": "b", "spinner_csv": "nocol.csv", "standard_ips": {}},
                {"name": "c", "spinner_csv": "missing.csv", "standard_ips": {}},
            ]})
            .to_string(),
            &dir,
        ) {
            Err(e) => e.problems,
            Ok(c) => panic!("{c:?}"),
        };
        let lines: Vec<String> = e.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            lines[0],
            "machines[0].spinner_csv:3: chip (0, 0) is already given at machines[0].spinner_csv:2"
        );
        assert_eq!(
            lines[1],
            "machines[0].spinner_csv:4: column \"x\": expected a non-negative integer, found \"x\""
        );
        assert_eq!(
            lines[2],
            format!(
                "machines[1].spinner_csv: {}: the header line has no column \"frame\"",
                dir.join("nocol.csv").display()
            )
        );
        assert!(
            lines[3].starts_with(&format!(
                "machines[2].spinner_csv: cannot read {}: ",
                dir.join("missing.csv").display()
            )),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 4);

        // Two chips of the same board: the original would silently keep one.
        std::fs::write(
            dir.join("same.csv"),
            "board,cabinet,frame,x,y\n0,0,0,0,0\n1,0,0,1,1\n",
        )
        .expect("write csv");
        let e = parse(
            &json!({"machines": [{"name": "a", "spinner_csv": "same.csv", "standard_ips": {}}]})
                .to_string(),
            &dir,
        )
        .expect_err("same board");
        assert_eq!(
            e.to_string(),
            "machines[0].spinner_csv:3: chip (1, 1) is on board (0, 0, 0), already given at machines[0].spinner_csv:2"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn load_reports_unreadable_files() {
        let e = load(Path::new("/nonexistent/spalloc.json")).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with("cannot read configuration file /nonexistent/spalloc.json: "),
            "{e}"
        );
    }

    #[test]
    fn to_json_round_trips() {
        let c = ok(json!({
            "ip": "127.0.0.1", "port": 1234, "timeout_check_interval": 0.25, "max_retired_jobs": 7,
            "seconds_before_free": 2.5,
            "bmp": {"post_power_on_delay": 0.1, "command_retries": 9},
            "machines": [
                {"name": "b", "tags": ["z", "a"], "single_board": {"bmp": "10.9.0.0:5", "ip": "h"}},
                {"name": "s", "dead_boards": [[1, 0, 2]], "dead_links": [[0, 0, 0, "south_west"]],
                 "boards": standard_boards(), "standard_ips": {}},
                m1("m", 3),
            ],
        }));
        let back = ok(c.to_json());
        assert_eq!(back, c);
        assert_eq!(
            c.machines
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>(),
            ["b", "s", "m"]
        );
        assert_eq!(
            c.to_json()["machines"][1]["dead_links"],
            json!([[0, 0, 0, "south_west"]])
        );
    }

    #[test]
    fn errors_display_one_per_line() {
        let e = ConfigError {
            problems: vec![
                Problem {
                    path: "a.b".into(),
                    message: "x".into(),
                },
                Problem {
                    path: String::new(),
                    message: "y".into(),
                },
            ],
        };
        assert_eq!(e.to_string(), "a.b: x\ny");
        let _: &dyn std::error::Error = &e;
    }
}
