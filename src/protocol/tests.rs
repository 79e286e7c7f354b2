//! Unit tests: parsing (every command, positionally and by keyword, every error message),
//! rendering (exact bytes of the original's replies), and never panicking on any input.
//!
//! Expected Python messages and bytes were checked against CPython 3.11 (`json.dumps`,
//! `float()`, and stub methods with the original's signatures).

use super::json::{self, py_float_repr, py_repr, py_repr_str, Json};
use super::*;
use crate::core::types::{
    CreateJob, JobRequest, JobStateReply, JobSummary, JobTarget, MachineInfoReply, MachineSummary,
    WhereIs, WhereIsReply,
};

fn p(line: &str) -> Parsed {
    parse_line(line.as_bytes())
}

fn core(line: &str) -> Command {
    match p(line) {
        Parsed::Core(c) => c,
        other => panic!("{line}: expected a core command, got {other:?}"),
    }
}

fn exception(line: &str) -> String {
    match p(line) {
        Parsed::Exception(msg) => msg,
        other => panic!("{line}: expected an exception, got {other:?}"),
    }
}

fn is_fatal(line: &[u8]) -> bool {
    matches!(parse_line(line), Parsed::Fatal(_))
}

fn create(line: &str) -> CreateJob {
    match core(line) {
        Command::CreateJob(c) => c,
        other => panic!("{line}: expected create_job, got {other:?}"),
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("rendered output is UTF-8")
}

// ---------------------------------------------------------------------------------------------
// Framing.

#[test]
fn protocol_evil_calls_are_fatal() {
    for line in [
        &b"{"[..],
        b"{}",
        b"{\"command\":123}",
        b"{\"command\":null}",
        b"{\"command\":\"version\",\"args\":\"hoho\"}",
        b"{\"command\":\"version\",\"args\":null}",
        b"{\"command\":\"version\",\"args\":{}}",
        b"{\"command\":\"version\",\"kwargs\":\"hoho\"}",
        b"{\"command\":\"version\",\"kwargs\":[]}",
        b"{\"command\":\"version\",\"kwargs\":null}",
        b"[1,2]",
        b"\"version\"",
        b"[\"command\"]",
        b"42",
        b"null",
        b"{\"command\":\"version\"} trailing",
        b"{\"command\":\"version\",\"args\":[NaN]}",
        b"{\"command\":\"vers\xffion\"}",
        b"\xff\xfe",
        b"{\"command\":\"version\",\"args\":[\"\\ud800\"]}",
    ] {
        assert!(is_fatal(line), "{}", String::from_utf8_lossy(line));
    }
}

#[test]
fn protocol_fatal_messages_are_clear() {
    assert_eq!(
        p("{}"),
        Parsed::Fatal("request has no \"command\"".to_owned())
    );
    assert_eq!(
        p("[1,2]"),
        Parsed::Fatal("request must be a JSON object, not an array".to_owned())
    );
    assert_eq!(
        p(r#"{"command":"version","args":"hoho"}"#),
        Parsed::Fatal("\"args\" must be a JSON array, not a string".to_owned())
    );
    assert!(matches!(parse_line(b"\xff"), Parsed::Fatal(m) if m.contains("UTF-8")));
    assert!(matches!(p("{"), Parsed::Fatal(m) if m.starts_with("request is not valid JSON")));
}

#[test]
fn protocol_deep_nesting_is_fatal_not_a_crash() {
    for depth in [200, 10_000, 1_000_000] {
        let arrays = format!(
            "{{\"command\":\"version\",\"args\":{}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert!(is_fatal(arrays.as_bytes()));
        let objects = format!(
            "{{\"command\":\"version\",\"kwargs\":{}1{}}}",
            "{\"a\":".repeat(depth),
            "}".repeat(depth)
        );
        assert!(is_fatal(objects.as_bytes()));
    }
    // Moderate nesting is fine and is echoed by list_jobs.
    let nested = format!("{}{}", "[".repeat(50), "]".repeat(50));
    assert!(matches!(
        p(&format!(
            r#"{{"command":"create_job","args":[{nested}],"kwargs":{{"owner":"o"}}}}"#
        )),
        Parsed::Exception(_)
    ));
}

#[test]
fn protocol_huge_numbers_do_not_overflow() {
    assert!(is_fatal(br#"{"command":"get_job_state","args":[1e400]}"#));
    assert_eq!(
        core(r#"{"command":"get_job_state","args":[99999999999999999999999999999]}"#),
        Command::GetJobState { job_id: 0 }
    );
    assert_eq!(
        core(r#"{"command":"get_job_state","args":[18446744073709551615]}"#),
        Command::GetJobState { job_id: u64::MAX }
    );
    assert_eq!(
        core(r#"{"command":"get_job_state","args":[1e300]}"#),
        Command::GetJobState { job_id: 0 }
    );
    assert_eq!(
        exception(r#"{"command":"create_job","args":[1e30],"kwargs":{"owner":"o"}}"#),
        "SpallocServer.create_job() positional argument 1 is out of range"
    );
    assert_eq!(
        exception(
            r#"{"command":"create_job","args":[9223372036854775808],"kwargs":{"owner":"o"}}"#
        ),
        "SpallocServer.create_job() positional argument 1 is out of range"
    );
    assert_eq!(
        create(r#"{"command":"create_job","args":[-9223372036854775808],"kwargs":{"owner":"o"}}"#)
            .request,
        JobRequest::Boards(i64::MIN)
    );
}

#[test]
fn protocol_unknown_command_keeps_the_connection() {
    assert_eq!(
        p(r#"{"command":"no such command"}"#),
        Parsed::Exception("unknown command: 'no such command'".to_owned())
    );
    assert_eq!(
        exception(r#"{"command":"foo","args":[1],"kwargs":{"a":2}}"#),
        "unknown command: 'foo'"
    );
    // Malformed args win over the unknown name: the line is not a request.
    assert!(is_fatal(br#"{"command":"foo","args":3}"#));
}

#[test]
fn protocol_client_kwarg_is_ignored() {
    assert_eq!(
        p(r#"{"command":"version","kwargs":{"client":"hoho"}}"#),
        Parsed::Version
    );
    assert_eq!(
        core(r#"{"command":"get_job_state","args":[3],"kwargs":{"client":"x"}}"#),
        Command::GetJobState { job_id: 3 }
    );
    let c = create(r#"{"command":"create_job","kwargs":{"owner":"me","client":"c"}}"#);
    assert_eq!(c.kwargs_json, "{}");
}

#[test]
fn protocol_whitespace_extra_keys_and_duplicates() {
    assert_eq!(p(" {\"command\" : \"version\"}\r"), Parsed::Version);
    assert_eq!(
        p(r#"{"command":"version","extra":[1,2,3]}"#),
        Parsed::Version
    );
    // Python's dict keeps the last value of a repeated key.
    assert_eq!(
        core(r#"{"command":"version","command":"list_jobs"}"#),
        Command::ListJobs
    );
}

// ---------------------------------------------------------------------------------------------
// Every command, positionally and by keyword.

#[test]
fn protocol_version() {
    assert_eq!(p(r#"{"command":"version"}"#), Parsed::Version);
    assert_eq!(
        p(r#"{"command":"version","args":[],"kwargs":{}}"#),
        Parsed::Version
    );
    assert_eq!(
        exception(r#"{"command":"version","args":[1]}"#),
        "SpallocServer.version() takes 2 positional arguments but 3 were given"
    );
    assert_eq!(
        exception(r#"{"command":"version","kwargs":{"bogus":1}}"#),
        "SpallocServer.version() got an unexpected keyword argument 'bogus'"
    );
    assert_eq!(
        exception(r#"{"command":"version","kwargs":{"_client":1}}"#),
        "SpallocServer.version() got multiple values for argument '_client'"
    );
}

#[test]
fn protocol_job_id_commands() {
    type MakeCommand = fn(JobId) -> Command;
    let cases: [(&str, MakeCommand); 5] = [
        ("job_keepalive", |job_id| Command::JobKeepalive { job_id }),
        ("get_job_state", |job_id| Command::GetJobState { job_id }),
        ("get_job_machine_info", |job_id| {
            Command::GetJobMachineInfo { job_id }
        }),
        ("power_on_job_boards", |job_id| Command::PowerOnJobBoards {
            job_id,
        }),
        ("power_off_job_boards", |job_id| {
            Command::PowerOffJobBoards { job_id }
        }),
    ];
    for (name, make) in cases {
        let cmd = |rest: &str| format!(r#"{{"command":"{name}"{rest}}}"#);
        assert_eq!(core(&cmd(r#","args":[3]"#)), make(3));
        assert_eq!(core(&cmd(r#","kwargs":{"job_id":3}"#)), make(3));
        assert_eq!(
            exception(&cmd("")),
            format!("SpallocServer.{name}() missing 1 required positional argument: 'job_id'")
        );
        assert_eq!(
            exception(&cmd(r#","args":[1,2]"#)),
            format!("SpallocServer.{name}() takes 3 positional arguments but 4 were given")
        );
        assert_eq!(
            exception(&cmd(r#","args":[1],"kwargs":{"job_id":1}"#)),
            format!("SpallocServer.{name}() got multiple values for argument 'job_id'")
        );
        assert_eq!(
            exception(&cmd(r#","kwargs":{"job_id":1,"bogus":2}"#)),
            format!("SpallocServer.{name}() got an unexpected keyword argument 'bogus'")
        );
        assert_eq!(
            exception(&cmd(r#","kwargs":{"self":1}"#)),
            format!("SpallocServer.{name}() got multiple values for argument 'self'")
        );
        assert!(is_fatal(cmd(r#","args":[1,"#).as_bytes()));
    }
    // CPython reports keyword problems before surplus positional arguments.
    assert_eq!(
        exception(r#"{"command":"get_job_state","args":[1,2],"kwargs":{"job_id":2}}"#),
        "SpallocServer.get_job_state() got multiple values for argument 'job_id'"
    );
}

#[test]
fn protocol_job_id_lookup_quirks() {
    let state = |arg: &str| match core(&format!(r#"{{"command":"get_job_state","args":[{arg}]}}"#))
    {
        Command::GetJobState { job_id } => job_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(state("5"), 5);
    assert_eq!(state("5.0"), 5);
    assert_eq!(state("true"), 1);
    assert_eq!(state("false"), 0);
    assert_eq!(state("\"5\""), 0);
    assert_eq!(state("-1"), 0);
    assert_eq!(state("0"), 0);
    assert_eq!(state("5.5"), 0);
    assert_eq!(state("-0.0"), 0);
    assert_eq!(state("null"), 0);
    assert_eq!(state("[5]"), 0);
    assert_eq!(state("{}"), 0);
}

#[test]
fn protocol_destroy_job() {
    assert_eq!(
        core(r#"{"command":"destroy_job","args":[2]}"#),
        Command::DestroyJob {
            job_id: 2,
            reason: None
        }
    );
    assert_eq!(
        core(r#"{"command":"destroy_job","args":[2,"bye"]}"#),
        Command::DestroyJob {
            job_id: 2,
            reason: Some("bye".to_owned())
        }
    );
    assert_eq!(
        core(r#"{"command":"destroy_job","args":[2],"kwargs":{"reason":"Test reason..."}}"#),
        Command::DestroyJob {
            job_id: 2,
            reason: Some("Test reason...".to_owned())
        }
    );
    assert_eq!(
        core(r#"{"command":"destroy_job","kwargs":{"reason":null,"job_id":7}}"#),
        Command::DestroyJob {
            job_id: 7,
            reason: None
        }
    );
    assert_eq!(
        core(r#"{"command":"destroy_job","args":[2,42]}"#),
        Command::DestroyJob {
            job_id: 2,
            reason: Some("42".to_owned())
        }
    );
    assert_eq!(
        core(r#"{"command":"destroy_job","args":[2,[1,"a",null,true,2.5,{"k":"v"}]]}"#),
        Command::DestroyJob {
            job_id: 2,
            reason: Some("[1, 'a', None, True, 2.5, {'k': 'v'}]".to_owned())
        }
    );
    assert_eq!(
        exception(r#"{"command":"destroy_job"}"#),
        "SpallocServer.destroy_job() missing 1 required positional argument: 'job_id'"
    );
    assert_eq!(
        exception(r#"{"command":"destroy_job","kwargs":{"reason":"x"}}"#),
        "SpallocServer.destroy_job() missing 1 required positional argument: 'job_id'"
    );
    assert_eq!(
        exception(r#"{"command":"destroy_job","args":[1,2,3]}"#),
        "SpallocServer.destroy_job() takes from 3 to 4 positional arguments but 5 were given"
    );
    assert_eq!(
        exception(r#"{"command":"destroy_job","args":[1],"kwargs":{"job_id":1}}"#),
        "SpallocServer.destroy_job() got multiple values for argument 'job_id'"
    );
    assert_eq!(
        exception(r#"{"command":"destroy_job","args":[1,"a"],"kwargs":{"reason":"b"}}"#),
        "SpallocServer.destroy_job() got multiple values for argument 'reason'"
    );
}

#[test]
fn protocol_notify_commands() {
    assert_eq!(p(r#"{"command":"notify_job"}"#), Parsed::NotifyJob(None));
    assert_eq!(
        p(r#"{"command":"notify_job","args":[null]}"#),
        Parsed::NotifyJob(None)
    );
    assert_eq!(
        p(r#"{"command":"notify_job","args":[4]}"#),
        Parsed::NotifyJob(Some(4))
    );
    assert_eq!(
        p(r#"{"command":"notify_job","kwargs":{"job_id":4.0}}"#),
        Parsed::NotifyJob(Some(4))
    );
    assert_eq!(
        p(r#"{"command":"notify_job","args":["4"]}"#),
        Parsed::NotifyJob(Some(0))
    );
    assert_eq!(
        p(r#"{"command":"no_notify_job","args":[4]}"#),
        Parsed::NoNotifyJob(Some(4))
    );
    assert_eq!(
        p(r#"{"command":"no_notify_job","kwargs":{"job_id":null}}"#),
        Parsed::NoNotifyJob(None)
    );
    assert_eq!(
        exception(r#"{"command":"notify_job","args":[1,2]}"#),
        "SpallocServer.notify_job() takes from 2 to 3 positional arguments but 4 were given"
    );
    assert_eq!(
        exception(r#"{"command":"no_notify_job","kwargs":{"machine_name":"m"}}"#),
        "SpallocServer.no_notify_job() got an unexpected keyword argument 'machine_name'"
    );

    assert_eq!(
        p(r#"{"command":"notify_machine"}"#),
        Parsed::NotifyMachine(None)
    );
    assert_eq!(
        p(r#"{"command":"notify_machine","args":["m"]}"#),
        Parsed::NotifyMachine(Some("m".to_owned()))
    );
    assert_eq!(
        p(r#"{"command":"notify_machine","kwargs":{"machine_name":"m"}}"#),
        Parsed::NotifyMachine(Some("m".to_owned()))
    );
    assert_eq!(
        p(r#"{"command":"no_notify_machine","args":[null]}"#),
        Parsed::NoNotifyMachine(None)
    );
    assert_eq!(
        p(r#"{"command":"no_notify_machine","kwargs":{"machine_name":"m"}}"#),
        Parsed::NoNotifyMachine(Some("m".to_owned()))
    );
    assert_eq!(
        exception(r#"{"command":"notify_machine","args":[3]}"#),
        "SpallocServer.notify_machine() argument 'machine_name' must be a string or None, \
         not 'int'"
    );
    assert_eq!(
        exception(r#"{"command":"no_notify_machine","args":["a","b"]}"#),
        "SpallocServer.no_notify_machine() takes from 2 to 3 positional arguments but 4 were \
         given"
    );
}

#[test]
fn protocol_list_commands() {
    assert_eq!(core(r#"{"command":"list_jobs"}"#), Command::ListJobs);
    assert_eq!(
        core(r#"{"command":"list_machines","args":[],"kwargs":{}}"#),
        Command::ListMachines
    );
    assert_eq!(
        exception(r#"{"command":"list_jobs","args":[1]}"#),
        "SpallocServer.list_jobs() takes 2 positional arguments but 3 were given"
    );
    assert_eq!(
        exception(r#"{"command":"list_machines","kwargs":{"x":1}}"#),
        "SpallocServer.list_machines() got an unexpected keyword argument 'x'"
    );
}

#[test]
fn protocol_board_position_commands() {
    assert_eq!(
        core(r#"{"command":"get_board_position","args":["m",0,0,2]}"#),
        Command::GetBoardPosition {
            machine: "m".to_owned(),
            x: 0,
            y: 0,
            z: 2
        }
    );
    assert_eq!(
        core(r#"{"command":"get_board_position","args":["m"],"kwargs":{"z":2,"y":1.0,"x":0}}"#),
        Command::GetBoardPosition {
            machine: "m".to_owned(),
            x: 0,
            y: 1,
            z: 2
        }
    );
    assert_eq!(
        core(r#"{"command":"get_board_at_position","args":["m",0,0,20]}"#),
        Command::GetBoardAtPosition {
            machine: "m".to_owned(),
            cabinet: 0,
            frame: 0,
            board: 20
        }
    );
    // The original's parameter names are x, y, z here too.
    assert_eq!(
        core(
            r#"{"command":"get_board_at_position","kwargs":{"machine_name":"m","x":1,"y":2,"z":3}}"#
        ),
        Command::GetBoardAtPosition {
            machine: "m".to_owned(),
            cabinet: 1,
            frame: 2,
            board: 3
        }
    );
    assert_eq!(
        exception(r#"{"command":"get_board_position"}"#),
        "SpallocServer.get_board_position() missing 4 required positional arguments: \
         'machine_name', 'x', 'y', and 'z'"
    );
    assert_eq!(
        exception(r#"{"command":"get_board_position","args":["m",1]}"#),
        "SpallocServer.get_board_position() missing 2 required positional arguments: 'y' and 'z'"
    );
    assert_eq!(
        exception(r#"{"command":"get_board_at_position","args":["m",1,2,3,4]}"#),
        "SpallocServer.get_board_at_position() takes 6 positional arguments but 7 were given"
    );
    assert_eq!(
        exception(r#"{"command":"get_board_at_position","args":["m",1,2],"kwargs":{"cabinet":1}}"#),
        "SpallocServer.get_board_at_position() got an unexpected keyword argument 'cabinet'"
    );
    assert_eq!(
        exception(r#"{"command":"get_board_position","args":["m","a",0,0]}"#),
        "SpallocServer.get_board_position() argument 'x' must be an integer, not 'str'"
    );
    assert_eq!(
        exception(r#"{"command":"get_board_position","args":["m",0,0.5,0]}"#),
        "SpallocServer.get_board_position() argument 'y' must be an integer, not 'float'"
    );
    assert_eq!(
        exception(r#"{"command":"get_board_position","args":[null,0,0,0]}"#),
        "SpallocServer.get_board_position() argument 'machine_name' must be a string, not \
         'NoneType'"
    );
}

#[test]
fn protocol_where_is() {
    assert_eq!(
        core(r#"{"command":"where_is","kwargs":{"machine":"m1","x":2,"y":1,"z":1}}"#),
        Command::WhereIs(WhereIs::Logical {
            machine: "m1".to_owned(),
            x: 2,
            y: 1,
            z: 1
        })
    );
    assert_eq!(
        core(
            r#"{"command":"where_is","kwargs":{"cabinet":20,"frame":10,"board":0,"machine":"m"}}"#
        ),
        Command::WhereIs(WhereIs::Physical {
            machine: "m".to_owned(),
            cabinet: 20,
            frame: 10,
            board: 0
        })
    );
    assert_eq!(
        core(r#"{"command":"where_is","kwargs":{"machine":"m","chip_x":-1,"chip_y":-1}}"#),
        Command::WhereIs(WhereIs::MachineChip {
            machine: "m".to_owned(),
            chip_x: -1,
            chip_y: -1
        })
    );
    assert_eq!(
        core(r#"{"command":"where_is","kwargs":{"job_id":1,"chip_x":5,"chip_y":9}}"#),
        Command::WhereIs(WhereIs::JobChip {
            job_id: 1,
            chip_x: 5,
            chip_y: 9
        })
    );
    assert_eq!(
        core(r#"{"command":"where_is","kwargs":{"job_id":"1","chip_x":5,"chip_y":9}}"#),
        Command::WhereIs(WhereIs::JobChip {
            job_id: 0,
            chip_x: 5,
            chip_y: 9
        })
    );
    assert_eq!(
        exception(r#"{"command":"where_is","kwargs":{"machine":"m","x":0}}"#),
        "Invalid arguments: machine, x"
    );
    assert_eq!(
        exception(r#"{"command":"where_is"}"#),
        "Invalid arguments: "
    );
    assert_eq!(
        exception(
            r#"{"command":"where_is","kwargs":{"machine":"m","x":0,"y":0,"z":0,"job_id":1}}"#
        ),
        "Invalid arguments: job_id, machine, x, y, z"
    );
    assert_eq!(
        exception(r#"{"command":"where_is","args":["m"]}"#),
        "SpallocServer.where_is() takes 2 positional arguments but 3 were given"
    );
    assert_eq!(
        exception(r#"{"command":"where_is","kwargs":{"_client":1}}"#),
        "SpallocServer.where_is() got multiple values for argument '_client'"
    );
    assert_eq!(
        exception(r#"{"command":"where_is","kwargs":{"machine":"m","x":"0","y":0,"z":0}}"#),
        "SpallocServer.where_is() argument 'x' must be an integer, not 'str'"
    );
    assert_eq!(
        exception(r#"{"command":"where_is","kwargs":{"machine":1,"x":0,"y":0,"z":0}}"#),
        "SpallocServer.where_is() argument 'machine' must be a string, not 'int'"
    );
}

// ---------------------------------------------------------------------------------------------
// create_job.

#[test]
fn protocol_create_job_shapes() {
    let shape = |args: &str| {
        create(&format!(
            r#"{{"command":"create_job","args":{args},"kwargs":{{"owner":"me"}}}}"#
        ))
        .request
    };
    assert_eq!(shape("[]"), JobRequest::OneBoard);
    assert_eq!(shape("[1]"), JobRequest::OneBoard);
    assert_eq!(shape("[1.0]"), JobRequest::OneBoard);
    assert_eq!(shape("[true]"), JobRequest::OneBoard);
    assert_eq!(shape("[4]"), JobRequest::Boards(4));
    assert_eq!(shape("[0]"), JobRequest::Boards(0));
    assert_eq!(shape("[-3]"), JobRequest::Boards(-3));
    assert_eq!(shape("[2.0]"), JobRequest::Boards(2));
    assert_eq!(shape("[4, 2]"), JobRequest::Triads(4, 2));
    assert_eq!(shape("[3, 2, 1]"), JobRequest::Board(3, 2, 1));
    assert_eq!(shape("[1, 2, 3, 4]"), JobRequest::Board(1, 2, 3));
    let c = create(r#"{"command":"create_job","args":[1,2,3,4],"kwargs":{"owner":"me"}}"#);
    assert_eq!(c.max_dead_boards, Some(4));
    assert_eq!(c.args_json, "[1, 2, 3, 4]");
    assert_eq!(c.kwargs_json, "{}");
    // The original's Allocator.alloc(x, y, z, max_dead_boards, max_dead_links, require_torus,
    // min_ratio): every positional argument after z stands for a keyword.
    let c =
        create(r#"{"command":"create_job","args":[1,2,0,4,5,false,0.5],"kwargs":{"owner":"me"}}"#);
    assert_eq!(c.request, JobRequest::Board(1, 2, 0));
    assert_eq!(
        (
            c.max_dead_boards,
            c.max_dead_links,
            c.require_torus,
            c.min_ratio
        ),
        (Some(4), Some(5), false, 0.5)
    );
    assert_eq!(c.args_json, "[1, 2, 0, 4, 5, false, 0.5]");
}

#[test]
fn protocol_create_job_defaults() {
    let c = create(r#"{"command":"create_job","kwargs":{"owner":"me"}}"#);
    assert_eq!(
        c,
        CreateJob {
            owner: "me".to_owned(),
            keepalive_s: Some(60.0),
            request: JobRequest::OneBoard,
            target: JobTarget::Tags(vec!["default".to_owned()]),
            min_ratio: 0.0,
            max_dead_boards: None,
            max_dead_links: None,
            require_torus: false,
            args_json: "[]".to_owned(),
            kwargs_json: "{}".to_owned(),
        }
    );
}

#[test]
fn protocol_create_job_as_the_real_client_sends_it() {
    // spalloc_client's Job: every keyword, nulls included, int keepalive from the CLI.
    let c = create(
        r#"{"command": "create_job", "args": [2], "kwargs": {"owner": "alice", "keepalive": 60, "machine": null, "tags": ["default", "b", "default"], "min_ratio": 0.333, "max_dead_boards": 0, "max_dead_links": null, "require_torus": false}}"#,
    );
    assert_eq!(c.owner, "alice");
    assert_eq!(c.keepalive_s, Some(60.0));
    assert_eq!(c.request, JobRequest::Boards(2));
    assert_eq!(
        c.target,
        JobTarget::Tags(vec!["b".to_owned(), "default".to_owned()])
    );
    assert_eq!(c.min_ratio, 0.333);
    assert_eq!(c.max_dead_boards, Some(0));
    assert_eq!(c.max_dead_links, None);
    assert!(!c.require_torus);
    assert_eq!(c.args_json, "[2]");
    assert_eq!(
        c.kwargs_json,
        r#"{"machine": null, "tags": ["default", "b"], "min_ratio": 0.333, "max_dead_boards": 0, "max_dead_links": null, "require_torus": false}"#
    );

    let c = create(
        r#"{"command":"create_job","args":[3,2,1],"kwargs":{"owner":"me","machine":"m","tags":null}}"#,
    );
    assert_eq!(c.target, JobTarget::Machine("m".to_owned()));
    assert_eq!(c.kwargs_json, r#"{"machine": "m", "tags": null}"#);
}

#[test]
fn protocol_create_job_list_jobs_echo_of_behaviour_examples() {
    let c = create(r#"{"command":"create_job","kwargs":{"tags":["default"],"owner":"me"}}"#);
    assert_eq!(
        (c.args_json.as_str(), c.kwargs_json.as_str()),
        ("[]", r#"{"tags": ["default"]}"#)
    );
    let c = create(
        r#"{"command":"create_job","args":[1,2],"kwargs":{"owner":"me","require_torus":true}}"#,
    );
    assert_eq!(
        (c.args_json.as_str(), c.kwargs_json.as_str()),
        ("[1, 2]", r#"{"require_torus": true}"#)
    );
    assert!(c.require_torus);
    let c = create(
        r#"{"command":"create_job","args":[2.0, 1],"kwargs":{"owner":"me","tags":[],"min_ratio":1}}"#,
    );
    assert_eq!(c.args_json, "[2.0, 1]");
    assert_eq!(c.kwargs_json, r#"{"tags": [], "min_ratio": 1}"#);
    assert_eq!(c.target, JobTarget::Tags(vec![]));
    assert_eq!(c.min_ratio, 1.0);
}

#[test]
fn protocol_create_job_owner() {
    let owner = |v: &str| {
        create(&format!(
            r#"{{"command":"create_job","kwargs":{{"owner":{v}}}}}"#
        ))
        .owner
    };
    assert_eq!(owner("\"me\""), "me");
    assert_eq!(owner("\"\""), "");
    assert_eq!(owner("5"), "5");
    assert_eq!(owner("5.0"), "5.0");
    assert_eq!(owner("1e16"), "1e+16");
    assert_eq!(owner("true"), "True");
    assert_eq!(owner("false"), "False");
    assert_eq!(owner("[1, \"a\"]"), "[1, 'a']");
    assert_eq!(owner("{\"a\": null}"), "{'a': None}");
    for line in [
        r#"{"command":"create_job"}"#,
        r#"{"command":"create_job","kwargs":{"owner":null}}"#,
        r#"{"command":"create_job","args":[1],"kwargs":{"keepalive":5}}"#,
    ] {
        assert_eq!(exception(line), "owner must be specified for all jobs");
    }
}

#[test]
fn protocol_create_job_keepalive() {
    let keepalive = |v: &str| {
        create(&format!(
            r#"{{"command":"create_job","kwargs":{{"owner":"o","keepalive":{v}}}}}"#
        ))
        .keepalive_s
    };
    assert_eq!(keepalive("null"), None);
    assert_eq!(keepalive("5"), Some(5.0));
    assert_eq!(keepalive("0.15"), Some(0.15));
    assert_eq!(keepalive("-1"), Some(-1.0));
    assert_eq!(keepalive("true"), Some(1.0));
    assert_eq!(keepalive("\"5\""), Some(5.0));
    assert_eq!(keepalive("\" 2.5 \""), Some(2.5));
    assert_eq!(keepalive("\"1_000\""), Some(1000.0));
    assert_eq!(keepalive("\"1e2\""), Some(100.0));
    assert_eq!(keepalive("\".5\""), Some(0.5));
    let err = |v: &str| {
        exception(&format!(
            r#"{{"command":"create_job","kwargs":{{"owner":"o","keepalive":{v}}}}}"#
        ))
    };
    assert_eq!(err("\"abc\""), "could not convert string to float: 'abc'");
    assert_eq!(
        err("\"it's\""),
        "could not convert string to float: \"it's\""
    );
    assert_eq!(err("\"\""), "could not convert string to float: ''");
    assert_eq!(err("\"1__0\""), "could not convert string to float: '1__0'");
    assert_eq!(err("\"_1\""), "could not convert string to float: '_1'");
    assert_eq!(err("\"1_\""), "could not convert string to float: '1_'");
    assert_eq!(err("\"0x10\""), "could not convert string to float: '0x10'");
    assert_eq!(
        err("\"x\\ny\""),
        "could not convert string to float: 'x\\ny'"
    );
    assert_eq!(
        err("[1]"),
        "float() argument must be a string or a real number, not 'list'"
    );
    assert_eq!(
        err("{}"),
        "float() argument must be a string or a real number, not 'dict'"
    );
    assert_eq!(
        err("\"inf\""),
        "keepalive must be a finite number of seconds or None, not 'inf'"
    );
    assert_eq!(
        err("\"nan\""),
        "keepalive must be a finite number of seconds or None, not 'nan'"
    );
    // The original checks owner before keepalive.
    assert_eq!(
        exception(r#"{"command":"create_job","kwargs":{"keepalive":"abc"}}"#),
        "owner must be specified for all jobs"
    );
}

#[test]
fn protocol_create_job_errors_consume_no_id() {
    let err = |args: &str, kwargs: &str| {
        exception(&format!(
            r#"{{"command":"create_job","args":{args},"kwargs":{{"owner":"o"{kwargs}}}}}"#
        ))
    };
    assert_eq!(
        err("[]", r#","machine":"m","tags":["a"]"#),
        "Only one of machine and tags may be specified for a job."
    );
    assert_eq!(
        err("[]", r#","machine":"m","tags":[]"#),
        "Only one of machine and tags may be specified for a job."
    );
    for args in ["[]", "[1]", "[1,2,3]", "[1,2,3,0]"] {
        assert_eq!(
            err(args, r#","require_torus":true"#),
            "require_torus must be False when allocating boards."
        );
    }
    assert_eq!(
        err("[]", r#","require_torus":1"#),
        "require_torus must be False when allocating boards."
    );
    assert!(
        create(r#"{"command":"create_job","args":[2],"kwargs":{"owner":"o","require_torus":1}}"#)
            .require_torus
    );
    // For a board the original asserts `require_torus is False`: 0 and null fail it too.
    for value in ["0", "null"] {
        assert_eq!(
            err("[]", &format!(r#","require_torus":{value}"#)),
            "require_torus must be False when allocating boards."
        );
    }
    assert!(
        !create(r#"{"command":"create_job","kwargs":{"owner":"o","require_torus":false}}"#)
            .require_torus
    );
    assert!(
        !create(
            r#"{"command":"create_job","args":[2,1],"kwargs":{"owner":"o","require_torus":0}}"#
        )
        .require_torus
    );
    assert_eq!(
        err("[2]", r#","require_torus":"yes""#),
        "require_torus must be a bool, not 'str'"
    );
    assert_eq!(
        err("[]", r#","bogus":1"#),
        "SpallocServer.create_job() got an unexpected keyword argument 'bogus'"
    );
    assert_eq!(
        err("[]", r#","job_id":1"#),
        "SpallocServer.create_job() got an unexpected keyword argument 'job_id'"
    );
    assert_eq!(
        err("[]", r#","self":1"#),
        "SpallocServer.create_job() got multiple values for argument 'self'"
    );
    assert_eq!(
        err("[1,2,3,4]", r#","max_dead_boards":1"#),
        "SpallocServer.create_job() got multiple values for argument 'max_dead_boards'"
    );
    assert_eq!(
        err("[1,2,3,4,5,0,0.5,8]", ""),
        "SpallocServer.create_job() takes at most 7 positional arguments (x, y, z, \
         max_dead_boards, max_dead_links, require_torus, min_ratio) but 8 were given"
    );
    assert_eq!(
        err("[1,2,3,4,5]", r#","max_dead_links":1"#),
        "SpallocServer.create_job() got multiple values for argument 'max_dead_links'"
    );
    assert_eq!(
        err("[1,2,0,4,5,true]", ""),
        "require_torus must be False when allocating boards."
    );
    assert_eq!(
        err("[4]", r#","min_ratio":-0.5"#),
        "Aspect ratio cannot be negative."
    );
    assert_eq!(
        err("[\"2\"]", ""),
        "SpallocServer.create_job() positional argument 1 must be an integer, not 'str'"
    );
    assert_eq!(
        err("[2, 1.5]", ""),
        "SpallocServer.create_job() positional argument 2 must be an integer, not 'float'"
    );
    assert_eq!(
        err("[null]", ""),
        "SpallocServer.create_job() positional argument 1 must be an integer, not 'NoneType'"
    );
    assert_eq!(
        err("[]", r#","tags":"single""#),
        "tags must be a list of strings, not 'str'"
    );
    assert_eq!(
        err("[]", r#","tags":["a", 1]"#),
        "tags must be a list of strings, not a list containing 'int'"
    );
    assert_eq!(
        err("[]", r#","machine":3"#),
        "machine must be a string or None, not 'int'"
    );
    assert_eq!(
        err("[]", r#","min_ratio":"0.5""#),
        "min_ratio must be a number, not 'str'"
    );
    assert_eq!(
        err("[]", r#","max_dead_boards":"1""#),
        "max_dead_boards must be an integer or None, not 'str'"
    );
    assert_eq!(
        err("[]", r#","max_dead_links":0.5"#),
        "max_dead_links must be an integer or None, not 'float'"
    );
    let c = create(
        r#"{"command":"create_job","kwargs":{"owner":"o","max_dead_boards":2.0,"max_dead_links":3,"min_ratio":null}}"#,
    );
    assert_eq!(
        (c.max_dead_boards, c.max_dead_links, c.min_ratio),
        (Some(2), Some(3), 0.0)
    );
}

// ---------------------------------------------------------------------------------------------
// Rendering.

#[test]
fn protocol_render_job_state_examples() {
    let live = JobStateReply {
        state: 3,
        power: Some(true),
        keepalive: Some(60.0),
        reason: None,
        start_time: Some(1795252596.759151),
        keepalivehost: Some("127.0.0.1".to_owned()),
    };
    assert_eq!(
        text(render_response(&Response::JobState(live))),
        "{\"return\": {\"state\": 3, \"power\": true, \"keepalive\": 60.0, \"reason\": null, \
         \"start_time\": 1795252596.759151, \"keepalivehost\": \"127.0.0.1\"}}\n"
    );
    let destroyed = JobStateReply {
        state: 4,
        power: None,
        keepalive: None,
        reason: Some("bye".to_owned()),
        start_time: None,
        keepalivehost: None,
    };
    assert_eq!(
        text(render_response(&Response::JobState(destroyed))),
        "{\"return\": {\"state\": 4, \"power\": null, \"keepalive\": null, \"reason\": \"bye\", \
         \"start_time\": null, \"keepalivehost\": null}}\n"
    );
    let unknown = JobStateReply {
        state: 0,
        power: None,
        keepalive: None,
        reason: None,
        start_time: None,
        keepalivehost: None,
    };
    assert_eq!(
        text(render_response(&Response::JobState(unknown))),
        "{\"return\": {\"state\": 0, \"power\": null, \"keepalive\": null, \"reason\": null, \
         \"start_time\": null, \"keepalivehost\": null}}\n"
    );
}

#[test]
fn protocol_render_machine_info() {
    let info = MachineInfoReply {
        width: Some(12),
        height: Some(16),
        connections: Some(vec![
            ((4, 8), "127.0.1.6".to_owned()),
            ((0, 0), "127.0.1.4".to_owned()),
            ((8, 4), "127.0.1.5".to_owned()),
        ]),
        machine_name: Some("m".to_owned()),
        boards: Some(vec![[0, 1, 2], [0, 1, 0], [0, 1, 1]]),
    };
    assert_eq!(
        text(render_response(&Response::MachineInfo(info))),
        "{\"return\": {\"width\": 12, \"height\": 16, \"connections\": [[[4, 8], \"127.0.1.6\"], \
         [[0, 0], \"127.0.1.4\"], [[8, 4], \"127.0.1.5\"]], \"machine_name\": \"m\", \
         \"boards\": [[0, 1, 2], [0, 1, 0], [0, 1, 1]]}}\n"
    );
    let none = MachineInfoReply {
        width: None,
        height: None,
        connections: None,
        machine_name: None,
        boards: None,
    };
    assert_eq!(
        text(render_response(&Response::MachineInfo(none))),
        "{\"return\": {\"width\": null, \"height\": null, \"connections\": null, \
         \"machine_name\": null, \"boards\": null}}\n"
    );
}

#[test]
fn protocol_render_list_jobs_entry_from_parsed_create_job() {
    let c = create(r#"{"command":"create_job","kwargs":{"owner":"you","tags":["single"]}}"#);
    let job = JobSummary {
        job_id: 4,
        owner: c.owner,
        start_time: 1795252597.263302,
        keepalive: c.keepalive_s,
        state: 2,
        power: Some(true),
        args_json: c.args_json,
        kwargs_json: c.kwargs_json,
        allocated_machine_name: Some("board".to_owned()),
        boards: Some(vec![[0, 0, 0]]),
        keepalivehost: "127.0.0.1".to_owned(),
    };
    assert_eq!(
        text(render_response(&Response::Jobs(vec![job.clone()]))),
        "{\"return\": [{\"job_id\": 4, \"owner\": \"you\", \"start_time\": 1795252597.263302, \
         \"keepalive\": 60.0, \"state\": 2, \"power\": true, \"args\": [], \"kwargs\": \
         {\"tags\": [\"single\"]}, \"allocated_machine_name\": \"board\", \"boards\": \
         [[0, 0, 0]], \"keepalivehost\": \"127.0.0.1\"}]}\n"
    );
    // Queued: no machine, no boards, unknown host.
    let queued = JobSummary {
        keepalive: None,
        state: 1,
        power: None,
        args_json: "[1,2]".to_owned(),
        kwargs_json: "{\"require_torus\":true}".to_owned(),
        allocated_machine_name: None,
        boards: None,
        keepalivehost: String::new(),
        ..job
    };
    assert_eq!(
        text(render_response(&Response::Jobs(vec![queued]))),
        "{\"return\": [{\"job_id\": 4, \"owner\": \"you\", \"start_time\": 1795252597.263302, \
         \"keepalive\": null, \"state\": 1, \"power\": null, \"args\": [1, 2], \"kwargs\": \
         {\"require_torus\": true}, \"allocated_machine_name\": null, \"boards\": null, \
         \"keepalivehost\": \"\"}]}\n"
    );
    assert_eq!(
        text(render_response(&Response::Jobs(vec![]))),
        "{\"return\": []}\n"
    );
}

#[test]
fn protocol_render_list_machines_entry() {
    let m = MachineSummary {
        name: "m".to_owned(),
        tags: vec!["default".to_owned(), "extra".to_owned()],
        width: 1,
        height: 2,
        dead_boards: vec![],
        dead_links: vec![[0, 0, 0, 2]],
    };
    assert_eq!(
        text(render_response(&Response::Machines(vec![m]))),
        "{\"return\": [{\"name\": \"m\", \"tags\": [\"default\", \"extra\"], \"width\": 1, \
         \"height\": 2, \"dead_boards\": [], \"dead_links\": [[0, 0, 0, 2]]}]}\n"
    );
}

#[test]
fn protocol_render_where_is_triples_and_scalars() {
    let w = WhereIsReply {
        machine: "m0".to_owned(),
        logical: [0, 0, 2],
        physical: [0, 0, 20],
        chip: [5, 9],
        board_chip: [1, 1],
        job_id: Some(1),
        job_chip: Some([5, 9]),
    };
    assert_eq!(
        text(render_response(&Response::WhereIs(Some(w)))),
        "{\"return\": {\"machine\": \"m0\", \"logical\": [0, 0, 2], \"physical\": [0, 0, 20], \
         \"chip\": [5, 9], \"board_chip\": [1, 1], \"job_id\": 1, \"job_chip\": [5, 9]}}\n"
    );
    let w = WhereIsReply {
        machine: "m1".to_owned(),
        logical: [2, 1, 1],
        physical: [20, 10, 10],
        chip: [32, 16],
        board_chip: [0, 0],
        job_id: None,
        job_chip: None,
    };
    assert_eq!(
        text(render_response(&Response::WhereIs(Some(w)))),
        "{\"return\": {\"machine\": \"m1\", \"logical\": [2, 1, 1], \"physical\": [20, 10, 10], \
         \"chip\": [32, 16], \"board_chip\": [0, 0], \"job_id\": null, \"job_chip\": null}}\n"
    );
    assert_eq!(
        text(render_response(&Response::WhereIs(None))),
        "{\"return\": null}\n"
    );
    assert_eq!(
        text(render_response(&Response::Triple(Some([0, 0, 20])))),
        "{\"return\": [0, 0, 20]}\n"
    );
    assert_eq!(
        text(render_response(&Response::Triple(None))),
        "{\"return\": null}\n"
    );
    assert_eq!(
        text(render_response(&Response::Null)),
        "{\"return\": null}\n"
    );
    assert_eq!(
        text(render_response(&Response::JobId(42))),
        "{\"return\": 42}\n"
    );
}

#[test]
fn protocol_render_notifications_version_exceptions() {
    assert_eq!(
        text(render_jobs_changed(&[2, 3])),
        "{\"jobs_changed\": [2, 3]}\n"
    );
    assert_eq!(
        text(render_machines_changed(&[
            "m".to_owned(),
            "n\u{e9}".to_owned()
        ])),
        "{\"machines_changed\": [\"m\", \"n\\u00e9\"]}\n"
    );
    assert_eq!(text(render_version(VERSION)), "{\"return\": \"1.0.0\"}\n");
    assert_eq!(
        text(render_exception("owner must be specified for all jobs")),
        "{\"exception\": \"owner must be specified for all jobs\"}\n"
    );
    assert_eq!(
        text(render_exception(
            "could not convert string to float: 'a\"b'"
        )),
        "{\"exception\": \"could not convert string to float: 'a\\\"b'\"}\n"
    );
}

#[test]
fn protocol_version_is_acceptable_to_every_client() {
    let parts: Vec<u32> = VERSION
        .split('.')
        .map(|p| p.parse().expect("all-integer version"))
        .collect();
    assert_eq!(parts.len(), 3);
    assert!(parts >= vec![0, 4, 0] && parts < vec![2, 0, 0]);
}

#[test]
fn protocol_ensure_ascii() {
    let mut out = String::new();
    json::write_str(
        &mut out,
        "a\u{e9}\u{2603}\u{1F600}\u{7f}\u{1}\"\\\n\t\u{8}\u{c}\r/<",
    );
    assert_eq!(
        out,
        r#""a\u00e9\u2603\ud83d\ude00\u007f\u0001\"\\\n\t\b\f\r/<""#
    );
    // Round trip: client text comes back as the client's text (escapes re-rendered).
    let c = create(
        r#"{"command":"create_job","kwargs":{"owner":"J\u00fcrgen","tags":["\ud83d\ude00"]}}"#,
    );
    assert_eq!(c.owner, "J\u{fc}rgen");
    assert_eq!(c.kwargs_json, r#"{"tags": ["\ud83d\ude00"]}"#);
}

#[test]
fn protocol_python_float_repr() {
    for (x, python) in [
        (60.0, "60.0"),
        (5.0, "5.0"),
        (0.1, "0.1"),
        (1795252596.759151, "1795252596.759151"),
        (1e16, "1e+16"),
        (1e-05, "1e-05"),
        (123456789012345680000.0, "1.2345678901234568e+20"),
        (0.0001, "0.0001"),
        (1e15, "1000000000000000.0"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (1e100, "1e+100"),
        (1.5e-300, "1.5e-300"),
        (9999999999999998.0, "9999999999999998.0"),
        (-123.456, "-123.456"),
        (-5.0, "-5.0"),
        (9007199254740994.0, "9007199254740994.0"),
        (4503599627370497.0, "4503599627370497.0"),
        (1234.5, "1234.5"),
        (9.223372036854776e18, "9.223372036854776e+18"),
        (0.333, "0.333"),
        (f64::MAX, "1.7976931348623157e+308"),
        (5e-324, "5e-324"),
        // An exact tie between two shortest strings: Python takes the even one.
        (f64::from_bits(14056971409238181993), "-1435142960558618.2"),
    ] {
        assert_eq!(py_float_repr(x), python, "{x:e}");
        // Again, from the remembered texts.
        assert_eq!(py_float_repr(x), python, "{x:e} (remembered)");
    }
    // Many more floats than remembered slots, twice over: every text still its own.
    let many: Vec<f64> = (1..1000)
        .map(|i| 1795252596.759151 + f64::from(i) * 0.001)
        .collect();
    let first: Vec<String> = many.iter().map(|&x| py_float_repr(x)).collect();
    for (x, text) in many.iter().zip(&first) {
        assert_eq!(&py_float_repr(*x), text);
        assert_eq!(text.parse::<f64>(), Ok(*x));
    }
    let render = |x: f64| Json::Float(x).to_python_json();
    assert_eq!(render(f64::NAN), "NaN");
    assert_eq!(render(f64::INFINITY), "Infinity");
    assert_eq!(render(f64::NEG_INFINITY), "-Infinity");
}

#[test]
fn protocol_python_repr() {
    assert_eq!(py_repr_str("abc"), "'abc'");
    assert_eq!(py_repr_str("it's"), "\"it's\"");
    assert_eq!(py_repr_str("a\"b'"), "'a\"b\\''");
    assert_eq!(py_repr_str("\u{1}"), "'\\x01'");
    assert_eq!(py_repr_str("\u{e9}"), "'\u{e9}'");
    assert_eq!(
        py_repr_str("\u{a0}\u{85}\u{200b}\u{f0000}\u{2603}\u{e9}\u{7f}"),
        "'\\xa0\\x85\\u200b\\U000f0000\u{2603}\u{e9}\\x7f'"
    );
    assert_eq!(
        py_repr(&json::parse(r#"[1, "a", null, true, 2.5, {"k": "v"}]"#).unwrap()),
        "[1, 'a', None, True, 2.5, {'k': 'v'}]"
    );
}

// ---------------------------------------------------------------------------------------------
// Never panic.

/// A string made of JSON-ish tokens, so random inputs get past the tokenizer often.
#[derive(Clone, Debug)]
struct JsonIsh(String);

impl quickcheck::Arbitrary for JsonIsh {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        const TOKENS: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            " ",
            "\"command\"",
            "\"args\"",
            "\"kwargs\"",
            "\"client\"",
            "\"self\"",
            "\"_client\"",
            "\"create_job\"",
            "\"version\"",
            "\"where_is\"",
            "\"get_job_state\"",
            "\"destroy_job\"",
            "\"notify_job\"",
            "\"notify_machine\"",
            "\"get_board_position\"",
            "\"get_board_at_position\"",
            "\"list_jobs\"",
            "\"job_id\"",
            "\"owner\"",
            "\"keepalive\"",
            "\"tags\"",
            "\"machine\"",
            "\"machine_name\"",
            "\"x\"",
            "\"y\"",
            "\"z\"",
            "\"chip_x\"",
            "\"chip_y\"",
            "\"reason\"",
            "\"min_ratio\"",
            "\"max_dead_boards\"",
            "\"require_torus\"",
            "\"max_dead_links\"",
            "\"abc\"",
            "\"inf\"",
            "\"1_0\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud800\"",
            "null",
            "true",
            "false",
            "0",
            "1",
            "-1",
            "2.0",
            "1e400",
            "-0",
            "0.5",
            "18446744073709551616",
            "9223372036854775808",
            "-9223372036854775809",
            "1e19",
            "-1e19",
            "NaN",
            "\"",
            "\\",
        ];
        let n = <usize as quickcheck::Arbitrary>::arbitrary(g) % 40;
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(g.choose(TOKENS).copied().unwrap_or("{"));
        }
        JsonIsh(s)
    }
}

/// A well-formed request with random arguments for a random (mostly real) command.
#[derive(Clone, Debug)]
struct Request(String);

fn arbitrary_json(g: &mut quickcheck::Gen, depth: usize) -> Json {
    use quickcheck::Arbitrary;
    let choice = u8::arbitrary(g) % if depth == 0 { 6 } else { 8 };
    match choice {
        0 => Json::Null,
        1 => Json::Bool(bool::arbitrary(g)),
        2 => Json::Int(i128::from(i64::arbitrary(g))),
        3 => Json::Int(i128::from(u8::arbitrary(g) % 8)),
        4 => {
            let f = f64::arbitrary(g);
            Json::Float(if f.is_finite() { f } else { 0.5 })
        }
        5 => Json::Str(
            g.choose(&["m", "default", "abc", "5", " 2.5 ", "", "\u{1F600}"])
                .copied()
                .unwrap_or("m")
                .to_owned(),
        ),
        6 => Json::Array(
            (0..usize::arbitrary(g) % 5)
                .map(|_| arbitrary_json(g, depth - 1))
                .collect(),
        ),
        _ => Json::Object(
            (0..usize::arbitrary(g) % 5)
                .map(|_| (arbitrary_key(g), arbitrary_json(g, depth - 1)))
                .collect(),
        ),
    }
}

fn arbitrary_key(g: &mut quickcheck::Gen) -> String {
    g.choose(&[
        "owner",
        "keepalive",
        "machine",
        "tags",
        "min_ratio",
        "max_dead_boards",
        "max_dead_links",
        "require_torus",
        "job_id",
        "reason",
        "machine_name",
        "x",
        "y",
        "z",
        "cabinet",
        "frame",
        "board",
        "chip_x",
        "chip_y",
        "client",
        "_client",
        "self",
        "bogus",
    ])
    .copied()
    .unwrap_or("x")
    .to_owned()
}

impl quickcheck::Arbitrary for Request {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        // Every command, and now and then one that does not exist.
        let name = g
            .choose(&[COMMANDS, &["bogus"]].concat())
            .copied()
            .unwrap_or("version");
        let args = Json::Array(
            (0..usize::arbitrary(g) % 6)
                .map(|_| arbitrary_json(g, 2))
                .collect(),
        );
        let kwargs = Json::Object(
            (0..usize::arbitrary(g) % 6)
                .map(|_| (arbitrary_key(g), arbitrary_json(g, 2)))
                .collect(),
        );
        let request = Json::Object(vec![
            ("command".to_owned(), Json::Str(name.to_owned())),
            ("args".to_owned(), args),
            ("kwargs".to_owned(), kwargs),
        ]);
        Request(request.to_python_json())
    }
}

/// Parsing never panics, and whatever it accepts renders back to valid JSON.
fn check(line: &[u8]) -> bool {
    match parse_line(line) {
        Parsed::Core(Command::CreateJob(c)) => {
            json::parse(&c.args_json).is_ok() && json::parse(&c.kwargs_json).is_ok()
        }
        Parsed::Exception(msg) | Parsed::Fatal(msg) => {
            json::parse(&text(render_exception(&msg))).is_ok()
        }
        _ => true,
    }
}

#[test]
fn protocol_quickcheck_never_panics_on_bytes() {
    fn prop(bytes: Vec<u8>) -> bool {
        check(&bytes)
    }
    quickcheck::QuickCheck::new()
        .tests(2000)
        .quickcheck(prop as fn(Vec<u8>) -> bool);
}

#[test]
fn protocol_quickcheck_never_panics_on_json_ish() {
    fn prop(s: JsonIsh) -> bool {
        check(s.0.as_bytes())
    }
    quickcheck::QuickCheck::new()
        .tests(3000)
        .quickcheck(prop as fn(JsonIsh) -> bool);
}

#[test]
fn protocol_quickcheck_never_panics_on_requests() {
    fn prop(r: Request) -> bool {
        // Valid requests never close the connection.
        check(r.0.as_bytes()) && !matches!(parse_line(r.0.as_bytes()), Parsed::Fatal(_))
    }
    quickcheck::QuickCheck::new()
        .tests(3000)
        .quickcheck(prop as fn(Request) -> bool);
}

#[test]
fn protocol_create_job_kwargs_echo_round_trips() {
    // Whatever create_job accepts, list_jobs can echo byte-identically to Python's dumps of
    // the same (parsed) kwargs, minus owner and keepalive.
    let c = create(
        r#"{"command":"create_job","args":[4,2],"kwargs":{"max_dead_links":1.5e3,"owner":"o","machine":"big\u00e9","keepalive":null}}"#,
    );
    assert_eq!(
        c.kwargs_json,
        r#"{"max_dead_links": 1500.0, "machine": "big\u00e9"}"#
    );
    assert_eq!(c.keepalive_s, None);
}

/// Large objects find repeated keys through an index: the same first positions and last
/// values as the scan (Python's dict), on both sides of the switch-over.
#[test]
fn large_objects_keep_python_dict_order_with_repeats() {
    for n in [3usize, 15, 16, 17, 40, 2_000] {
        let mut text = String::from("{");
        let mut expect: Vec<(String, i64)> = Vec::new();
        for i in 0..(n * 2) {
            let k = format!("k{}", (i * 7) % n);
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!("\"{k}\": {i}"));
            match expect.iter_mut().find(|(e, _)| *e == k) {
                Some(e) => e.1 = i as i64,
                None => expect.push((k, i as i64)),
            }
        }
        text.push('}');
        let got = match super::json::parse(&text).unwrap() {
            super::json::Json::Object(entries) => entries,
            other => panic!("{other:?}"),
        };
        let got: Vec<(String, i64)> = got
            .into_iter()
            .map(|(k, v)| match v {
                super::json::Json::Int(i) => (k, i as i64),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, expect, "n = {n}");
    }
}

/// [`COMMANDS`] names every command the parser knows: each is dispatched (an exception about
/// its arguments at worst, never "unknown command"), and a name not in it is unknown.
#[test]
fn protocol_commands_lists_every_known_command() {
    for name in COMMANDS {
        let line = format!("{{\"command\": \"{name}\", \"args\": [], \"kwargs\": {{}}}}");
        match p(&line) {
            Parsed::Exception(msg) => assert!(!msg.starts_with("unknown command"), "{name}: {msg}"),
            Parsed::Fatal(msg) => panic!("{name}: {msg}"),
            _ => {}
        }
    }
    assert!(exception("{\"command\": \"bogus\"}").starts_with("unknown command"));
}
