//! The binaries' command lines: parsed by argh, with `-h` taken as `--help`, and one rule
//! for what an early exit means, so every tool behaves alike.
//!
//! Exit status 2 is a bad command line in every tool (argh's own 1 would read as the tool's
//! failure: a failed start, a problem `--verify` found, a refused admin action).

use std::io::Write;
use std::process::ExitCode;

/// Parse this process's arguments as `T`, for the program called `name`. `Err` carries the
/// exit status once `--help` has been printed (0) or a bad command line reported (2).
pub fn parse<T: argh::FromArgs>(name: &str) -> Result<T, ExitCode> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = argv
        .iter()
        .map(|a| if a == "-h" { "--help" } else { a.as_str() })
        .collect();
    T::from_args(&[name], &rest).map_err(|early| match early.status {
        Ok(()) => {
            // (Ignoring a closed pipe, as in `spalloc-replay --help | head`.)
            let _ = writeln!(std::io::stdout(), "{}", early.output);
            ExitCode::SUCCESS
        }
        Err(()) => {
            eprintln!("{}\nRun {name} --help for more information.", early.output);
            ExitCode::from(2)
        }
    })
}
