//! `spalloc-server`: the SpiNNaker partitioning server. Parses the command line and hands
//! over to [`spalloc::server::run`]; everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

/// The SpiNNaker partitioning server (spalloc): shares SpiNNaker machines among users.
///
/// State is kept in an append-only journal directory; a restart resumes every job.
/// Clients speak the spalloc JSON protocol (e.g. `pip install spalloc`).
#[derive(FromArgs)]
struct Args {
    /// journal directory (created if missing), e.g. /var/lib/spalloc
    #[argh(option)]
    journal: Option<PathBuf>,
    /// JSON configuration file; without it the configuration recorded in the journal is used
    #[argh(option)]
    config: Option<PathBuf>,
    /// TCP port to listen on (overrides the file; default 22244)
    #[argh(option)]
    port: Option<u16>,
    /// IP address to listen on (overrides the file; default all interfaces)
    #[argh(option)]
    ip: Option<String>,
    /// start with no jobs, moving the old journal aside (it is renamed, not deleted)
    #[argh(switch)]
    cold_start: bool,
    /// only log errors
    #[argh(switch)]
    quiet: bool,
    /// run a BMP simulator in-process at every configured BMP address (loopback only), so no
    /// hardware is needed
    #[argh(switch)]
    simulate_bmps: bool,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    /// most clients connected at once (default 20000); hidden: for tests of the limit
    #[argh(option, hidden_help)]
    max_clients: Option<usize>,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    if args.version {
        println!("spalloc-server {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let Some(journal) = args.journal else {
        eprintln!("spalloc-server: --journal DIR is required (see --help)");
        return ExitCode::from(2);
    };
    let opts = spalloc::server::Options {
        journal,
        config: args.config,
        port: args.port,
        ip: args.ip,
        cold_start: args.cold_start,
        quiet: args.quiet,
        simulate_bmps: args.simulate_bmps,
        max_clients: args.max_clients.unwrap_or(spalloc::server::MAX_CLIENTS),
    };
    match spalloc::server::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spalloc-server: {e}");
            ExitCode::FAILURE
        }
    }
}
