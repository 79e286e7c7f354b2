//! A deterministic simulation of the whole server loop, in the manner of quinn-proto's test
//! `Pair` and TigerBeetle's VOPR: the production pass ([`Server::pass`]) runs against a
//! simulated world that a seed decides entirely.
//!
//! - **Time** is the simulation's: each pass is given its `now`, and the loop's own wait
//!   ([`Server::next_wait`]) says when the next pass is due if nothing else happens first.
//! - **The journal** is [`MemJournal`], behind the durability module's [`Storage`] seam, with
//!   an inline flusher (no thread). It fails writes, fsyncs and snapshots when told to, and,
//!   like the journal, cuts a failed batch off at once; when told to fail that cut too, a
//!   crash before the next write keeps what was synced plus, like a real disk, any prefix of
//!   the failed batch (the bytes may have reached the disk). Restarts go through the
//!   production recovery fold ([`recovery::fold`]) and start-up batch
//!   ([`startup::journal_startup`]).
//! - **Clients** speak the real JSON line protocol over in-memory pipes ([`client::SimPipe`]):
//!   the server reads, parses, answers and notifies through its production code. A pipe
//!   holds at most [`SimConfig::pipe_bytes_max`] toward the client, like a socket's buffers
//!   (a write that does not fit is cut short or would block), and is reported writable,
//!   level-triggered, while the server wants to write and it has room. Some clients stop
//!   reading for a while, some for good (and keep sending requests), so the server's
//!   output bounds (`output_bytes_max`, `output_total_bytes_max`, set small) are reached.
//! - **BMPs** are the channels the BMP threads use ([`BmpRuntime::simulated`]): requests are
//!   taken from the server and completed after a simulated delay, sometimes failing: the BMP
//!   does not answer, or answers with an error, and a share of failed power-ons blame some
//!   of their boards (`failed_boards`, as the runtime does for wrong FPGA ids). Each run has
//!   up to [`SimConfig::flaky_boards_max`] flaky boards whose power-ons fail more often, so
//!   boards reach `drain_after_failures` and are drained, and jobs are given new boards.
//!
//! Every run is replayable from its seed (`SPALLOC_SEED` in `tests/sim_server.rs`), and
//! checks, as it goes: nothing a client was told is lost across crashes (acknowledged jobs
//! and destructions are in the state after every restart, and no job id is handed out
//! twice), nothing a client was told was not carried out comes back after a crash (no
//! refused `create_job` or `destroy_job` is in the journal after a restart), no job a
//! connected client keeps alive expires, no board is in two live jobs, and at the end
//! replaying the journal gives the live state byte for byte. Board health: a job
//! given boards in a pass got none that was out of service before it (drained, or in a frame
//! whose BMP does not answer), and none held for a power-off in flight or failed; and the
//! server never powers a board on while a power-off of it is in flight or failed last (the
//! simulated hardware keeps that record, apart from the server's). Reloads: an admin
//! edits the configuration file (a real file, read by the production SIGHUP path) to mark
//! a board dead or alive again or change a health threshold, or writes one that is not
//! valid; afterwards the configuration in force is the file's (or the previous one, if the
//! journal refused it), a file that is not valid changes nothing, and no job is given a
//! board dead in the configuration. The admin channel: an admin connected like one accepted
//! from the admin socket ([`Server::connect_admin_simulated`]; the production admin code
//! reads, journals, folds and answers) drains boards (undraining them later), undrains
//! boards drained by anyone, asks for the status, and in some runs stops everything
//! (`emergency_stop`) and resumes seconds later; clients report problems (`report_problem`)
//! with boards of their jobs, by the IPs `get_job_machine_info` gave them. A board the
//! admin was told it drained stays out of service (across restarts and reloads) and is given
//! to no new job until it is told it undrained, after which it is in service; a board
//! reported `drain_after_reports` times (acknowledged) since it was last put back in service
//! is drained; an emergency stop destroys every live job with its reason, and while it is
//! in force no job is live (a new one is cancelled at once), no power-on is issued anew and,
//! with no BMP work in flight, no board is on. Output: a client that
//! always reads is never disconnected and is never left waiting for a reply (whoever else
//! stopped reading); the server disconnects only clients that stopped reading, and logs
//! why; no backlog exceeds `output_bytes_max` plus one reply; a backlog always has write
//! interest registered, and a writable pass sends it until the pipe is full; the server's
//! count of unsent output is its clients' sum.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam::channel::{Receiver, Sender};
use polling::{Event as PollEvent, Poller};
use spalloc_journal::Error as JournalError;

use super::client::{self, Client, PipeState, SimPipe, Stream};
use super::clock::EventClock;
use super::durability::{Durability, Storage};
use super::{recovery, startup, Limits, Logger, Options, Server, ServerParts};
use crate::bmp::{BmpCompletion, BmpRuntime};
use crate::config::Config;
use crate::core::coordinates::Board;
use crate::core::health::DrainActor;
use crate::core::rng::Rng;
use crate::core::types::{BmpAction, BmpRequestId};
use crate::core::{BmpRequest, Command, Event, JobId, TimeUs, TIMED_OUT};

/// Where the simulated journal "is", for messages.
const SIM_JOURNAL: &str = "(simulated journal)";

// ----- the journal in memory ----------------------------------------------------------------

/// The simulated disk: records and the newest snapshot, and the failures to inject.
#[derive(Debug, Default)]
pub struct MemDisk {
    /// Every durable record; record `seq` is at `seq - 1`.
    records: Vec<Vec<u8>>,
    /// The newest snapshot: the sequence number it covers, and the encoded core.
    snapshot: Option<(u64, Vec<u8>)>,
    /// Records of a batch whose write or fsync failed and that could not be cut off (see
    /// `needs_cut`): they may or may not be on the disk. A crash keeps a prefix of them, of
    /// the simulation's choosing (a complete record comes back as the journal's open replays
    /// it; a partial one it cuts as a torn tail).
    unsynced: Vec<Vec<u8>>,
    /// A failed batch is not cut off yet: like the journal, the next write or snapshot cuts
    /// it first, and writes nothing if that fails. (Set with `unsynced` possibly empty: half
    /// a one-record batch is a torn record, not a record.)
    needs_cut: bool,
    /// The next this-many batch writes fail (half the batch written).
    pub fail_writes: u32,
    /// Then the next this-many fsyncs fail (the whole batch written, not synced).
    pub fail_syncs: u32,
    /// The next this-many cuts of a failed batch fail (at once, or retried before a write).
    pub fail_cuts: u32,
    /// The next this-many snapshot writes fail.
    pub fail_snapshots: u32,
    /// Sabotage, to show the checks catch a broken disk: a crash also loses the last
    /// `lose_on_crash` durable records (an fsync that lied).
    pub lose_on_crash: usize,
    /// Sabotage, to show the checks catch it: a failed batch is not cut off at once but
    /// left until the next write (the journal before it cut at once), and the error still
    /// says nothing of it remains.
    pub keep_failed_batches: bool,
    /// Records that survived crashes from failed batches (a finding worth counting).
    pub unsynced_survived: u64,
}

impl MemDisk {
    /// The process died: what was synced stays, with a prefix (`keep` of them) of the records
    /// of a failed batch not cut off; a sabotaged disk also loses its last records.
    fn crash(&mut self, rng: &mut Rng) {
        let keep = rng.below(self.unsynced.len() as u64 + 1) as usize;
        self.unsynced_survived += keep as u64;
        let survived: Vec<Vec<u8>> = self.unsynced.drain(..).take(keep).collect();
        self.records.extend(survived);
        self.needs_cut = false;
        let covered = self.snapshot.as_ref().map_or(0, |s| s.0) as usize;
        let lose = self.lose_on_crash.min(self.records.len() - covered);
        self.records.truncate(self.records.len() - lose);
    }

    /// Cut off a failed batch, if one is left (the journal's truncate to its durable length),
    /// unless a cut failure is injected.
    fn cut(&mut self) -> std::io::Result<()> {
        if !self.needs_cut {
            return Ok(());
        }
        if self.fail_cuts > 0 {
            self.fail_cuts -= 1;
            return Err(std::io::Error::other("injected truncate failure"));
        }
        self.unsynced.clear();
        self.needs_cut = false;
        Ok(())
    }

    /// A batch's `what` failed after `landed` (a prefix of its records) reached the disk: as
    /// the journal does, cut it off at once; the error says whether that worked.
    fn failed(&mut self, landed: Vec<Vec<u8>>, what: &str) -> JournalError {
        self.unsynced = landed;
        self.needs_cut = true;
        let source = std::io::Error::other(format!("injected {what} failure"));
        let cut = if self.keep_failed_batches {
            Ok(())
        } else {
            self.cut()
        };
        match cut {
            Ok(()) => JournalError::Io {
                path: PathBuf::from(SIM_JOURNAL),
                source,
            },
            Err(cut_error) => JournalError::UncutBatch {
                path: PathBuf::from(SIM_JOURNAL),
                source,
                cut_error,
            },
        }
    }

    /// Before a write or snapshot: cut off what a failed batch may have left, or fail.
    fn prepare(&mut self) -> Result<(), JournalError> {
        self.cut().map_err(|source| JournalError::Io {
            path: PathBuf::from(SIM_JOURNAL),
            source,
        })
    }
}

/// The journal of the simulation: a [`Storage`] over a [`MemDisk`] that outlives each
/// simulated server process.
#[derive(Clone, Default)]
pub struct MemJournal(pub Arc<Mutex<MemDisk>>);

impl MemJournal {
    fn disk(&self) -> std::sync::MutexGuard<'_, MemDisk> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn injected(what: &str) -> JournalError {
    JournalError::Io {
        path: PathBuf::from(SIM_JOURNAL),
        source: std::io::Error::other(format!("injected {what} failure")),
    }
}

impl Storage for MemJournal {
    fn append_batch(
        &mut self,
        records: &mut dyn Iterator<Item = &[u8]>,
    ) -> Result<u64, JournalError> {
        let batch: Vec<Vec<u8>> = records.map(<[u8]>::to_vec).collect();
        let mut disk = self.disk();
        if batch.is_empty() {
            return Ok(disk.records.len() as u64);
        }
        // A write first cuts off what a failed one may have left.
        disk.prepare()?;
        if disk.fail_writes > 0 {
            disk.fail_writes -= 1;
            return Err(disk.failed(batch[..batch.len() / 2].to_vec(), "write"));
        }
        if disk.fail_syncs > 0 {
            disk.fail_syncs -= 1;
            return Err(disk.failed(batch, "fsync"));
        }
        disk.records.extend(batch);
        Ok(disk.records.len() as u64)
    }

    fn next_seq(&self) -> u64 {
        self.disk().records.len() as u64 + 1
    }

    fn write_snapshot(&mut self, covered_seq: u64, data: &[u8]) -> Result<(), JournalError> {
        let mut disk = self.disk();
        assert!(covered_seq <= disk.records.len() as u64);
        disk.prepare()?;
        if disk.fail_snapshots > 0 {
            disk.fail_snapshots -= 1;
            return Err(injected("snapshot"));
        }
        disk.snapshot = Some((covered_seq, data.to_vec()));
        Ok(())
    }

    #[cfg(test)]
    fn inject_failures(&mut self, writes: u32, syncs: u32) {
        let mut disk = self.disk();
        disk.fail_writes = writes;
        disk.fail_syncs = syncs;
    }

    #[cfg(test)]
    fn inject_cut_failures(&mut self, cuts: u32) {
        self.disk().fail_cuts = cuts;
    }
}

// ----- a simulated server process -----------------------------------------------------------

/// What the simulation holds of one server process: the server, and its BMP channels.
struct Process {
    server: Server,
    bmp_requests: Receiver<BmpRequest>,
    bmp_completions: Sender<BmpCompletion>,
}

impl Server {
    /// Start a server on the simulated journal at event time `now`: the production recovery
    /// fold and start-up batch, then the BMP work in flight re-issued (to the simulated
    /// BMPs). No socket is served (the listener is bound on loopback only because the
    /// server owns one; the simulation never makes it ready).
    fn simulated(
        opts: Options,
        config: &Config,
        journal: MemJournal,
        log: Logger,
        now: TimeUs,
    ) -> Result<Process, String> {
        let (snapshot, records) = {
            let disk = journal.disk();
            let covered = disk.snapshot.as_ref().map_or(0, |s| s.0);
            let records: Vec<(u64, Vec<u8>)> = disk
                .records
                .iter()
                .enumerate()
                .skip(covered as usize)
                .map(|(i, r)| (i as u64 + 1, r.clone()))
                .collect();
            (disk.snapshot.clone(), records)
        };
        let folded = recovery::fold(
            snapshot.as_ref().map(|(seq, data)| (*seq, &data[..])),
            records.iter().map(|(seq, r)| (*seq, &r[..])),
            Path::new(SIM_JOURNAL),
        )?;
        let mut core = folded.core;
        let now = now.max(core.now_us());
        let mut storage = journal.clone();
        startup::journal_startup(
            &opts,
            Some(config),
            &mut core,
            (folded.warm, folded.configured),
            now,
            &mut storage,
            &log,
        )?;
        let (completions_tx, completions) = crossbeam::channel::unbounded();
        let (bmp, bmp_requests) = BmpRuntime::simulated(config.bmp.clone(), completions_tx.clone());
        let poller = Arc::new(Poller::new().map_err(|e| e.to_string())?);
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let durability = Durability::simulated(
            Box::new(storage),
            folded.snapshot_seq,
            opts.snapshot_every_events,
            log.clone(),
        );
        let mut server = Server::assemble(ServerParts {
            opts,
            log,
            poller,
            listener,
            core,
            durability,
            clock: EventClock::anchored(now, now, Instant::now()),
            bmp,
            completions,
            signals: Arc::default(),
            spare_fd: None,
            simulator: None,
            admin_listener: None,
            admin_path: PathBuf::new(),
            http: None,
        });
        server.resume();
        Ok(Process {
            server,
            bmp_requests,
            bmp_completions: completions_tx,
        })
    }

    /// Connect a simulated client from `peer`: its key, and the client's end of the pipe.
    fn connect_simulated(&mut self, peer: SocketAddr) -> (usize, Arc<Mutex<PipeState>>) {
        let pipe = Arc::new(Mutex::new(PipeState::default()));
        let key = self.next_client_key;
        self.next_client_key += 1;
        let stream = client::Stream::Sim(SimPipe(Arc::clone(&pipe)));
        self.clients.insert(key, Client::on(stream, peer));
        (key, pipe)
    }

    /// Open an admin connection as [`Server::accept_admin`] does for one accepted from the
    /// admin socket: the server's end of a socket pair, non-blocking and registered with the
    /// poller, served from then on by the production admin code (`read_admin`, the pass's
    /// journaling and folding, `rearm_admin`). Returns its key and the admin's end.
    fn connect_admin_simulated(&mut self) -> std::io::Result<(usize, UnixStream)> {
        let (server_end, admin_end) = UnixStream::pair()?;
        server_end.set_nonblocking(true)?;
        admin_end.set_nonblocking(true)?;
        let key = self.next_admin_key;
        self.next_admin_key += 1;
        // SAFETY: deleted from the poller before it is dropped (close_admin), or dropped
        // with the poller when the simulated process dies.
        unsafe { self.poller.add(&server_end, PollEvent::readable(key))? };
        self.admin_conns
            .insert(key, super::admin::AdminConn::new(server_end));
        Ok((key, admin_end))
    }
}

// ----- the simulation -----------------------------------------------------------------------

/// How big a simulated run is, and how hostile.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Simulated time the run lasts.
    pub duration_us: TimeUs,
    /// Clients (each reconnects after every disconnection).
    pub clients: usize,
    /// Server crashes in the run (at most; each at a random time).
    pub crashes_max: u64,
    /// Chance that a client's being refused for journal trouble is soon followed by a crash
    /// (at most `crashes_max` such crashes per run, besides the others): the moment when
    /// what is left of a refused batch on the disk decides what a restart brings back.
    pub crash_after_refusal_chance: f64,
    /// Journal outages (failing writes or fsyncs) in the run (at most).
    pub disk_faults_max: u64,
    /// Chance that a BMP request fails.
    pub bmp_failure_chance: f64,
    /// Chance that a failed power-on the BMP answered blames some of its boards (wrong FPGA
    /// ids, a board's own error code: `BmpCompletion::failed_boards`), so the board-health
    /// machinery (failure counts, drains, re-allocation of the job) runs.
    pub bmp_blame_chance: f64,
    /// Boards (at most) that are flaky in a run (chosen by the seed, each run its own).
    pub flaky_boards_max: u64,
    /// Chance that a power-on including a flaky board fails, blaming it (failures
    /// concentrate on bad boards, so some reach `drain_after_failures` in a row).
    pub flaky_failure_chance: f64,
    /// Journaled events between snapshots.
    pub snapshot_every_events: u64,
    /// Configuration reloads (SIGHUP after the file changed) in the run (at most): a board
    /// marked dead or alive again, a health threshold changed, or a file that is not valid.
    pub reloads_max: u64,
    /// Whether a reload may mark dead a board a job holds (the job keeps it, and must
    /// power it off when it ends: [`crate::core::rules::Rules::power_dead_held_boards`]).
    pub reload_kills_held_boards: bool,
    /// Bytes each connection's pipe holds toward the client (its socket buffers): the
    /// server's writes beyond it are cut short or would block until the client reads.
    pub pipe_bytes_max: usize,
    /// The server's `output_bytes_max` (small, so clients that stop reading reach it).
    pub output_bytes_max: usize,
    /// The server's `output_total_bytes_max`.
    pub output_total_bytes_max: usize,
    /// The server's `reply_bytes_max`.
    pub reply_bytes_max: usize,
    /// Chance, at each thing a reading client does, that it stops reading for a while (1 to
    /// 20 s).
    pub pause_chance: f64,
    /// Chance, at each thing a reading client does, that it never reads on this
    /// connection again.
    pub stop_reading_chance: f64,
    /// Admin actions over the admin channel in the run (at most): drains (each undrained
    /// later), undrains of boards drained by anyone, and status queries.
    pub admin_actions_max: u64,
    /// Chance that a run has an emergency stop (resumed some seconds later).
    pub emergency_stop_chance: f64,
    /// Whether an emergency stop's power-offs of whole frames count as holding their boards
    /// in the hardware's record the checks use, as a job's power-offs do (no job may be
    /// given a board whose power-off is in flight or failed last). True: the server holds
    /// them ([`crate::core::rules::Rules::hold_unswept_frames`]).
    pub sweep_holds_boards: bool,
    /// Sabotage (see [`MemDisk::lose_on_crash`]): 0 for a correct disk.
    pub lose_on_crash: usize,
    /// Sabotage (see [`MemDisk::keep_failed_batches`]): false for a correct journal.
    pub keep_failed_batches: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            duration_us: 60_000_000,
            clients: 4,
            crashes_max: 2,
            crash_after_refusal_chance: 0.5,
            disk_faults_max: 2,
            bmp_failure_chance: 0.1,
            bmp_blame_chance: 0.6,
            flaky_boards_max: 2,
            flaky_failure_chance: 0.5,
            snapshot_every_events: 40,
            reloads_max: 3,
            reload_kills_held_boards: true,
            admin_actions_max: 6,
            emergency_stop_chance: 0.3,
            sweep_holds_boards: true,
            lose_on_crash: 0,
            keep_failed_batches: false,
            pipe_bytes_max: 8 * 1024,
            output_bytes_max: 8 * 1024,
            output_total_bytes_max: 16 * 1024,
            reply_bytes_max: 16 * 1024,
            pause_chance: 0.03,
            stop_reading_chance: 0.01,
        }
    }
}

/// What a run did and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Passes of the loop run.
    pub passes: u64,
    /// Server crashes (and restarts).
    pub crashes: u64,
    /// Requests sent by the clients.
    pub requests: u64,
    /// Jobs created, as acknowledged to clients.
    pub jobs_acknowledged: u64,
    /// Commands refused for journal trouble.
    pub refused: u64,
    /// Of those, refused as "may or may not have been carried out" (the failed batch could
    /// not be cut off the journal).
    pub refused_maybe_recorded: u64,
    /// Commands refused as not carried out that a restart came after (each checked to be
    /// absent from the journal then: the property is not vacuous).
    pub refusals_checked_after_restart: u64,
    /// BMP requests completed (and failed).
    pub bmp_completed: u64,
    /// BMP requests failed.
    pub bmp_failed: u64,
    /// Records of failed journal writes that a crash kept (see [`MemDisk::unsynced`]).
    pub unsynced_survived: u64,
    /// Boards blamed by failed power-ons (`failed_boards`, counted per completion).
    pub boards_blamed: u64,
    /// Boards seen out of service (drained, or in a frame whose BMP does not answer) at the
    /// end of some pass, each counted once per run.
    pub boards_out_of_service: u64,
    /// Of those, boards seen drained (after `drain_after_failures` failures).
    pub boards_drained: u64,
    /// Jobs seen to give up their boards while live (re-queued after a blamed failure).
    pub jobs_reallocated: u64,
    /// Allocations checked against the boards out of service when they were made.
    pub allocations_checked: u64,
    /// Power-offs that failed (their boards are unknown: held until one succeeds).
    pub power_offs_failed: u64,
    /// Configuration reloads signalled to a running server (valid files and not).
    pub reloads: u64,
    /// Valid configurations seen applied by a reload.
    pub reloads_applied: u64,
    /// Drains the admin asked for and was told were done.
    pub admin_drains: u64,
    /// Undrains the admin asked for and was told were done.
    pub admin_undrains: u64,
    /// Boards an admin undrained that a new job was given afterwards.
    pub undrained_boards_reallocated: u64,
    /// Emergency stops acknowledged to the admin.
    pub emergency_stops: u64,
    /// Of those, stops that destroyed live jobs (the property is not vacuous).
    pub emergency_stops_with_jobs: u64,
    /// Jobs created during an emergency stop (each seen cancelled at once).
    pub jobs_created_in_emergency: u64,
    /// Resumes acknowledged to the admin.
    pub emergency_resumes: u64,
    /// Allocations made after a resume in the run.
    pub allocations_after_resume: u64,
    /// `report_problem`s acknowledged to clients (about a board of their own job).
    pub problem_reports: u64,
    /// Boards seen drained by problem reports (each once per run).
    pub boards_drained_by_reports: u64,
    /// Clients that stopped reading for a while.
    pub readers_paused: u64,
    /// Clients that stopped reading for good (on that connection).
    pub readers_stopped: u64,
    /// Paused clients that read again while still connected.
    pub readers_resumed: u64,
    /// Clients the server disconnected that had stopped reading (at some time).
    pub slow_readers_disconnected: u64,
    /// Of those, disconnected with all clients' output at `output_total_bytes_max` (the
    /// server's log says which bound).
    pub disconnected_at_total_bound: u64,
    /// The largest output backlog the server held for one client (at the end of a pass).
    pub backlog_max: u64,
    /// Clients reported writable to a pass with output waiting for them.
    pub writable_with_backlog: u64,
    /// A hash of everything every client received, and when: equal for equal runs.
    pub trace: u64,
    /// Broken properties, in the order found (empty: the run passed).
    pub violations: Vec<String>,
    /// The server's log lines (for reading a failing run).
    pub log: Vec<String>,
}

/// A request a client sent and awaits the reply to (replies come in order).
#[derive(Clone, Debug)]
enum Req {
    Create,
    Destroy(JobId),
    Keepalive,
    Query,
    Notify,
    Garbage,
    /// `get_job_machine_info` of one of its jobs (whose boards' IPs it notes).
    MachineInfo(JobId),
    /// `report_problem` about a board (logical) of its job.
    ReportProblem([u32; 3]),
}

/// A request the simulated admin sent over the admin channel and awaits the reply to.
#[derive(Clone, Debug)]
enum AdminReq {
    Drain([u32; 3]),
    Undrain([u32; 3]),
    EmergencyStop,
    Resume,
    Status,
}

/// The simulated admin's connection to the admin channel (of the running process).
struct AdminLink {
    key: usize,
    stream: UnixStream,
    inbuf: Vec<u8>,
    pending: VecDeque<AdminReq>,
    /// It wrote since the last pass (the server's end is readable).
    unread: bool,
}

/// A `create_job` or `destroy_job` a client was told was not carried out: the event the
/// server would have journaled for it, as far as the client knows it.
#[derive(Clone, Debug)]
struct RefusedCommand {
    /// The event time of the pass that refused it (the pass that read it: replies to
    /// changes leave in the pass their event was committed or refused in).
    at_us: TimeUs,
    /// The client's IP, as the server records it.
    peer: String,
    /// What it asked for.
    req: Req,
    /// A restart has come since it was refused (and was checked).
    restarted: bool,
    /// Found in the journal (reported once).
    found: bool,
}

impl RefusedCommand {
    /// Whether the journaled `event` is this command.
    fn is(&self, event: &Event) -> bool {
        let Event::Command {
            now_us,
            peer,
            command,
        } = event
        else {
            return false;
        };
        *now_us == self.at_us
            && *peer == self.peer
            && match (&self.req, command) {
                (Req::Create, Command::CreateJob(_)) => true,
                (Req::Destroy(j), Command::DestroyJob { job_id, .. }) => job_id == j,
                _ => false,
            }
    }
}

/// A client's connection.
struct Conn {
    key: usize,
    pipe: Arc<Mutex<PipeState>>,
    inbuf: Vec<u8>,
    /// Requests awaiting their replies, and when each was sent.
    pending: VecDeque<(Req, TimeUs)>,
    reading: Reading,
    /// Since when it reads (again).
    reading_since: TimeUs,
    /// It has stopped reading at some time on this connection.
    ever_paused: bool,
}

/// Whether a client reads what the server sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// After every pass, everything.
    Always,
    /// Not until this time.
    PausedUntil(TimeUs),
    /// Never again (on this connection); it keeps sending requests.
    Never,
}

/// A simulated client.
struct SimClient {
    owner: String,
    peer: SocketAddr,
    /// Keeps its jobs alive (a keepalive every third of the keepalive time) while connected.
    diligent: bool,
    conn: Option<Conn>,
    /// Its jobs: acknowledged, not (known to be) destroyed.
    jobs: BTreeSet<JobId>,
    /// Board IPs of its jobs, as `get_job_machine_info` told it.
    board_ips: Vec<(JobId, String)>,
}

/// Something due at a simulated time.
#[derive(Clone, Debug)]
enum Due {
    /// Client `n` does something (or connects).
    Client(usize),
    /// Client `n` keeps its jobs alive.
    Keepalive(usize),
    /// A BMP completes a request of server process `n`.
    Bmp(u64, BmpCompletion),
    /// The server process dies.
    Crash,
    /// The server process is started again.
    Restart,
    /// The disk starts failing.
    DiskFault,
    /// The configuration file is changed and the server told to re-read it (SIGHUP).
    Reload,
    /// The admin drains, undrains or asks for the status.
    Admin,
    /// The admin puts back in service a board it drained (if it is still drained).
    Undrain([u32; 3]),
    /// The admin stops everything.
    EmergencyStop,
    /// The admin resumes service (if an emergency stop is in force; again later if it
    /// could not be recorded).
    Resume,
}

/// The keepalive interval the simulated clients ask for.
const KEEPALIVE_S: f64 = 10.0;
/// How often a diligent client sends its keepalives.
const KEEPALIVE_EVERY_US: TimeUs = 3_000_000;
/// The simulated machine's name (2x2 triads: cabinet x, frame y, board z).
const MACHINE: &str = "m";
/// Event time at the start of every run (any fixed time).
const EPOCH_US: TimeUs = 1_800_000_000_000_000;
/// A client that reads the reply to its `create_job` later than this after sending it does
/// not count on keeping the job alive (its first keepalive may come after the job's
/// `KEEPALIVE_S`, counted from its creation).
const CREATE_REPLY_IN_TIME_US: TimeUs = 4_000_000;
/// Longest a client that reads waits for a reply (from its request, or from when it read
/// again): the server answers everyone, whoever else stopped reading.
const REPLY_WAIT_MAX_US: TimeUs = 15_000_000;
/// The job id an emergency stop's power-offs of whole frames carry (the core's
/// `SWEEP_JOB_ID`: no job has it).
const SWEEP_JOB_ID: JobId = 0;
/// At most this many passes at one instant (a loop that never waits is a bug).
const PASSES_AT_ONE_INSTANT_MAX: u32 = 1000;

struct World {
    cfg: SimConfig,
    rng: Rng,
    now: TimeUs,
    next_seq: u64,
    due: BTreeMap<(TimeUs, u64), Due>,
    disk: MemJournal,
    log: Logger,
    /// The configuration file's content (the last valid one written): what a restart reads.
    config: Config,
    /// The configuration the run started with (every board's location).
    base_config: Config,
    /// A reload signalled and not yet seen through a pass: the configuration in force before,
    /// and the file's, if valid.
    reload_pending: Option<(Config, Option<Config>)>,
    process: Option<Process>,
    /// Which process incarnation is running (BMP completions of older ones are dropped).
    incarnation: u64,
    clients: Vec<SimClient>,
    /// Connections the clients hung up on, until the server has closed its end.
    hung_up: Vec<(usize, Arc<Mutex<PipeState>>)>,
    /// Job ids acknowledged to their creators.
    created: BTreeSet<JobId>,
    /// Job ids whose destruction was acknowledged.
    destroyed: BTreeSet<JobId>,
    /// Changes clients were told were not carried out.
    refused: Vec<RefusedCommand>,
    /// Crashes scheduled because a client was refused (`SimConfig::crash_after_refusal_chance`).
    crashes_after_refusal: u64,
    /// BMP requests of the running process not completed yet (to know what a completion
    /// was for).
    bmp_requests: BTreeMap<BmpRequestId, BmpRequest>,
    /// The hardware: physical boards whose last power-off failed (their power is unknown),
    /// and power-offs in flight per board (of the running process).
    power_off_failed: BTreeSet<[u32; 3]>,
    power_off_in_flight: BTreeMap<[u32; 3], u32>,
    /// The boards' power as the BMPs left it (absent: off).
    power: BTreeMap<[u32; 3], Power>,
    /// When each BMP (by address) finishes the last request it was given: a BMP carries
    /// out its requests one at a time, in order, as the runtime's thread per BMP does.
    bmp_busy_until: BTreeMap<String, TimeUs>,
    /// Each live job's boards when last seen (a change is a new allocation).
    seen_boards: BTreeMap<JobId, Vec<[u32; 3]>>,
    /// Frames (cabinet, frame) of answered BMP completions handed to the server and maybe
    /// not yet folded: such a frame may have been reachable for a moment.
    answered_frames: BTreeSet<(u32, u32)>,
    /// The flaky boards of the run (physical).
    flaky: BTreeSet<[u32; 3]>,
    /// Boards seen out of service, and seen drained (for the report).
    out_of_service_seen: BTreeSet<[u32; 3]>,
    drained_seen: BTreeSet<[u32; 3]>,
    /// The admin's connection to the running process.
    admin: Option<AdminLink>,
    /// Boards the admin was told it drained and not told it undrained since (logical);
    /// and as they were when the current pass began.
    admin_drained: BTreeSet<[u32; 3]>,
    admin_drained_before: BTreeSet<[u32; 3]>,
    /// Boards undrained by the admin not yet seen given to a new job.
    undrained_watch: BTreeSet<[u32; 3]>,
    /// Problem reports acknowledged per board (logical) since the admin was told it was put
    /// back in service; boards whose count is uncertain (an undrain that may or may not
    /// have been recorded) are left out until the next acknowledged undrain.
    reports_acked: BTreeMap<[u32; 3], u32>,
    reports_uncertain: BTreeSet<[u32; 3]>,
    /// Boards seen drained by reports (for the report).
    drained_by_reports_seen: BTreeSet<[u32; 3]>,
    /// An emergency stop was in force before and after the pass being checked.
    emergency_throughout: bool,
    /// A resume was acknowledged in the run.
    resumed: bool,
    /// Since when an emergency stop has been seen in force (after a pass or a restart).
    emergency_since: Option<TimeUs>,
    report: Report,
}

/// FNV-1a of some bytes (a file name for a content).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Write `text` to `path` unless it is there already, whole or not at all (a temporary
/// file renamed): simulations in parallel may write the same file.
fn write_once(dir: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    static TEMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let n = TEMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = dir.join(format!(".{}-{n}.tmp", std::process::id()));
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)
}

/// A board's power, as the simulated BMPs left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Power {
    On,
    Off,
    /// Its last request failed.
    Unknown,
}

/// A live job as the checks see it: its id, machine name and boards (logical).
type LiveJob = (JobId, String, Vec<[u32; 3]>);

/// The boards the core holds out of service (of the simulated machine `m`): dead ones in
/// the configuration in force and drained ones (logical), and the frames whose BMP does
/// not answer.
struct OutOfService {
    dead: BTreeSet<[u32; 3]>,
    drained: BTreeSet<[u32; 3]>,
    unreachable: BTreeSet<(u32, u32)>,
}

fn out_of_service(core: &crate::core::Core) -> OutOfService {
    let health = core.health();
    OutOfService {
        dead: core
            .config()
            .machine(MACHINE)
            .map(|m| m.dead_boards.iter().map(|b| [b.x, b.y, b.z]).collect())
            .unwrap_or_default(),
        drained: health
            .drained(MACHINE)
            .into_iter()
            .map(|b| [b.x, b.y, b.z])
            .collect(),
        unreachable: health
            .unreachable
            .iter()
            .filter(|(m, _, _)| m == MACHINE)
            .map(|&(_, c, f)| (c, f))
            .collect(),
    }
}

/// Run the simulation for `seed`.
pub fn run(seed: u64, cfg: &SimConfig) -> Report {
    let mut rng = Rng::new(seed);
    let machine = crate::core::sim::simple_machine(MACHINE, 2, 2);
    let config = crate::core::sim::config(vec![machine], 0.0);
    let clients = (0..cfg.clients)
        .map(|i| SimClient {
            owner: format!("owner{}", i % 3),
            peer: SocketAddr::from(([127, 0, 0, 1 + (i % 3) as u8], 40_000 + i as u16)),
            diligent: rng.chance(0.75),
            conn: None,
            jobs: BTreeSet::new(),
            board_ips: Vec::new(),
        })
        .collect();
    let disk = MemJournal::default();
    disk.disk().lose_on_crash = cfg.lose_on_crash;
    disk.disk().keep_failed_batches = cfg.keep_failed_batches;
    let mut w = World {
        cfg: cfg.clone(),
        rng,
        now: EPOCH_US,
        next_seq: 0,
        due: BTreeMap::new(),
        disk,
        log: Logger::capture(),
        base_config: config.clone(),
        config,
        reload_pending: None,
        process: None,
        incarnation: 0,
        clients,
        hung_up: Vec::new(),
        created: BTreeSet::new(),
        destroyed: BTreeSet::new(),
        refused: Vec::new(),
        crashes_after_refusal: 0,
        bmp_requests: BTreeMap::new(),
        power_off_failed: BTreeSet::new(),
        power_off_in_flight: BTreeMap::new(),
        power: BTreeMap::new(),
        bmp_busy_until: BTreeMap::new(),
        seen_boards: BTreeMap::new(),
        answered_frames: BTreeSet::new(),
        flaky: BTreeSet::new(),
        out_of_service_seen: BTreeSet::new(),
        drained_seen: BTreeSet::new(),
        admin: None,
        admin_drained: BTreeSet::new(),
        admin_drained_before: BTreeSet::new(),
        undrained_watch: BTreeSet::new(),
        reports_acked: BTreeMap::new(),
        reports_uncertain: BTreeSet::new(),
        drained_by_reports_seen: BTreeSet::new(),
        emergency_throughout: false,
        resumed: false,
        emergency_since: None,
        report: Report {
            seed,
            trace: 0xcbf2_9ce4_8422_2325,
            ..Report::default()
        },
    };
    w.run();
    w.report.log = w.log.lines();
    w.report
}

impl World {
    fn at(&mut self, t: TimeUs, d: Due) {
        self.next_seq += 1;
        self.due.insert((t, self.next_seq), d);
    }

    fn violation(&mut self, what: String) {
        if self.report.violations.len() < 20 {
            self.report
                .violations
                .push(format!("t={}us: {what}", self.now - EPOCH_US));
        }
    }

    fn hash(&mut self, bytes: &[u8]) {
        for &b in self.now.to_le_bytes().iter().chain(bytes) {
            self.report.trace ^= u64::from(b);
            self.report.trace = self.report.trace.wrapping_mul(0x100_0000_01b3);
        }
    }

    fn run(&mut self) {
        let end = EPOCH_US + self.cfg.duration_us;
        self.start_process();
        for i in 0..self.clients.len() {
            let t = self.now + self.rng.below(1_000_000);
            self.at(t, Due::Client(i));
            let t = self.now + self.rng.below(KEEPALIVE_EVERY_US);
            self.at(t, Due::Keepalive(i));
        }
        let boards: Vec<[u32; 3]> = self.base_config.machines[0]
            .boards
            .iter()
            .map(|b| [b.cabinet, b.frame, b.board])
            .collect();
        for _ in 0..self.rng.below(self.cfg.flaky_boards_max + 1) {
            let b = *self.rng.pick(&boards);
            self.flaky.insert(b);
        }
        for _ in 0..self.rng.below(self.cfg.crashes_max + 1) {
            let t = self.now + self.rng.below(self.cfg.duration_us);
            self.at(t, Due::Crash);
        }
        for _ in 0..self.rng.below(self.cfg.reloads_max + 1) {
            let t = self.now + self.rng.below(self.cfg.duration_us);
            self.at(t, Due::Reload);
        }
        for _ in 0..self.rng.below(self.cfg.disk_faults_max + 1) {
            let t = self.now + self.rng.below(self.cfg.duration_us);
            self.at(t, Due::DiskFault);
        }
        for _ in 0..self.rng.below(self.cfg.admin_actions_max + 1) {
            let t = self.now + self.rng.below(self.cfg.duration_us);
            self.at(t, Due::Admin);
        }
        if self.rng.chance(self.cfg.emergency_stop_chance) {
            // (Early enough that service after the resume is seen.)
            let t = self.now + self.rng.below(self.cfg.duration_us / 2);
            self.at(t, Due::EmergencyStop);
        }
        let mut passes_now = 0u32;
        while self.now < end {
            // The next thing to happen: something due, or the server's own next pass.
            let due_at = self.due.keys().next().map(|k| k.0);
            let wait_at = self
                .process
                .as_ref()
                .map(|p| self.now + p.server.next_wait(self.now).as_micros() as TimeUs);
            let next = [due_at, wait_at].into_iter().flatten().min().unwrap_or(end);
            if next > self.now {
                passes_now = 0;
            }
            self.now = next.min(end);
            while let Some(entry) = self.due.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let d = entry.remove();
                self.happen(d);
            }
            if self.process.is_some() {
                passes_now += 1;
                if passes_now > PASSES_AT_ONE_INSTANT_MAX {
                    let why = self.process.as_ref().map(|p| {
                        let s = &p.server;
                        format!(
                            "core deadline {:?}, tick due {}, unjournaled completions {}, \
                             unrecorded keepalives {}, unfinished input {:?}, durability \
                             deadline {:?}, retry at {:?}",
                            s.core.poll_deadline().map(|d| d as i64 - self.now as i64),
                            s.core.tick_due(self.now),
                            s.unjournaled_completions.len(),
                            s.kept_alive_unrecorded.len(),
                            s.unfinished_input,
                            s.durability
                                .next_deadline()
                                .map(|d| d as i64 - self.now as i64),
                            s.durability.retry_at().map(|d| d as i64 - self.now as i64),
                        )
                    });
                    self.violation(format!(
                        "the loop keeps passing without time moving: {why:?}"
                    ));
                    break;
                }
                self.pass();
            }
        }
        self.finish();
        self.check_refused(false);
        self.report.unsynced_survived = self.disk.disk().unsynced_survived;
        self.report.boards_out_of_service = self.out_of_service_seen.len() as u64;
        self.report.boards_drained = self.drained_seen.len() as u64;
        self.report.boards_drained_by_reports = self.drained_by_reports_seen.len() as u64;
        self.report.disconnected_at_total_bound = self
            .log
            .lines()
            .iter()
            .filter(|l| l.contains("of replies unread") && l.contains("output_total_bytes_max"))
            .count() as u64;
    }

    fn happen(&mut self, d: Due) {
        match d {
            Due::Client(i) => self.client_acts(i),
            Due::Keepalive(i) => {
                if self.clients[i].diligent {
                    let jobs: Vec<JobId> = self.clients[i].jobs.iter().copied().collect();
                    for j in jobs {
                        self.send(
                            i,
                            Req::Keepalive,
                            &format!(
                                r#"{{"command": "job_keepalive", "args": [{j}], "kwargs": {{}}}}"#
                            ),
                        );
                    }
                }
                self.at(self.now + KEEPALIVE_EVERY_US, Due::Keepalive(i));
            }
            Due::Bmp(incarnation, c) => {
                if incarnation == self.incarnation {
                    if let Some(p) = &self.process {
                        self.report.bmp_completed += 1;
                        self.report.bmp_failed += u64::from(c.failure.is_some());
                        let _ = p.bmp_completions.send(c.clone());
                        self.bmp_completed(&c);
                    }
                }
            }
            Due::Crash => {
                if self.process.take().is_some() {
                    self.report.crashes += 1;
                    self.log.info("SIM: crash");
                    let mut disk = self.disk.disk();
                    disk.crash(&mut self.rng);
                    drop(disk);
                    self.disconnect_all();
                    self.admin = None;
                    let t = self.now + self.rng.range(100_000, 20_000_000);
                    self.at(t, Due::Restart);
                }
            }
            Due::Restart => self.start_process(),
            Due::Reload => self.reload(),
            Due::Admin => self.admin_acts(),
            Due::Undrain(b) => {
                let drained = self.process.as_ref().is_some_and(|p| {
                    p.server
                        .core
                        .health()
                        .drain_of(MACHINE, Board::new(b[0], b[1], b[2]))
                        .is_some()
                });
                if drained {
                    let r = self.board_ref(b);
                    self.admin_send(
                        AdminReq::Undrain(b),
                        &format!(
                            r#"{{"command": "undrain", "kwargs": {{"board": {r}, "actor": "sim"}}}}"#
                        ),
                    );
                }
            }
            Due::EmergencyStop => {
                self.admin_send(
                    AdminReq::EmergencyStop,
                    r#"{"command": "emergency_stop", "kwargs": {"reason": "sim: cooling failed", "actor": "sim"}}"#,
                );
                let t = self.now + self.rng.range(2_000_000, 15_000_000);
                self.at(t, Due::Resume);
            }
            Due::Resume => {
                let stopped = self
                    .process
                    .as_ref()
                    .map_or(true, |p| p.server.core.health().emergency.is_some());
                if stopped {
                    self.admin_send(
                        AdminReq::Resume,
                        r#"{"command": "resume", "kwargs": {"actor": "sim"}}"#,
                    );
                    // (Again, in case it could not be recorded or no server ran.)
                    self.at(self.now + 2_000_000, Due::Resume);
                }
            }
            Due::DiskFault => {
                let mut disk = self.disk.disk();
                match self.rng.below(4) {
                    0 => disk.fail_writes += 1 + self.rng.below(3) as u32,
                    1 => disk.fail_syncs += 1 + self.rng.below(3) as u32,
                    2 => disk.fail_snapshots += 1,
                    _ => {
                        // A disk that cannot even truncate: failed batches stay until a
                        // later cut works.
                        disk.fail_syncs += 1 + self.rng.below(3) as u32;
                        disk.fail_cuts += 1 + self.rng.below(3) as u32;
                    }
                }
            }
        }
    }

    /// An admin edits the configuration file (a board marked dead or alive again, a health
    /// threshold changed, or a mistake that is not valid JSON) and sends SIGHUP. The file is
    /// real (named by its content, in one directory, so runs in parallel never see each
    /// other's half-written files), read by the production reload.
    fn reload(&mut self) {
        let mut next = self.config.clone();
        let valid = match self.rng.below(4) {
            0 | 1 => {
                // Toggle a board's death, keeping a working board in every frame (a frame
                // with none would need its BMP dropped: a different change).
                let base = &self.base_config.machines[0];
                let b = self.rng.pick(&base.boards).clone();
                let held = self.held(b.logical);
                let m = &mut next.machines[0];
                let frame_has_dead = base.boards.iter().any(|o| {
                    (o.cabinet, o.frame) == (b.cabinet, b.frame)
                        && m.dead_boards.contains(&o.logical)
                });
                if let Some(i) = m.dead_boards.iter().position(|&d| d == b.logical) {
                    m.dead_boards.remove(i);
                } else if !frame_has_dead && (!held || self.cfg.reload_kills_held_boards) {
                    m.dead_boards.push(b.logical);
                    m.dead_boards.sort_unstable();
                }
                let dead = m.dead_boards.clone();
                m.boards = base
                    .boards
                    .iter()
                    .filter(|o| !dead.contains(&o.logical))
                    .cloned()
                    .collect();
                true
            }
            2 => {
                next.health.drain_after_failures = 1 + self.rng.below(3) as u32;
                true
            }
            _ => false,
        };
        let text = if valid {
            serde_json::to_string_pretty(&next.to_json()).expect("a configuration encodes")
        } else {
            "{\"machines\": [".to_string()
        };
        let dir = std::env::temp_dir().join("spalloc-sim-configs");
        let path = dir.join(format!("{:016x}.json", fnv(text.as_bytes())));
        if let Err(e) = write_once(&dir, &path, &text) {
            self.violation(format!("cannot write {}: {e}", path.display()));
            return;
        }
        let file = if valid {
            match crate::config::parse(&text, &dir) {
                Ok(c) => {
                    self.config = c.clone();
                    Some(c)
                }
                Err(e) => {
                    self.violation(format!("the simulation wrote a bad configuration: {e}"));
                    return;
                }
            }
        } else {
            None
        };
        self.log.info(&format!(
            "SIM: configuration file {} ({}); SIGHUP",
            path.display(),
            if valid { "valid" } else { "not valid" }
        ));
        if let Some(p) = &mut self.process {
            p.server.opts.config = Some(path);
            p.server
                .signals
                .reload
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.report.reloads += 1;
            self.reload_pending = Some((p.server.core.config().clone(), file));
        }
    }

    /// Whether a board is held by a live job of the running server or named by a BMP
    /// request in flight (or no server runs: a restart may find it held).
    fn held(&self, b: Board) -> bool {
        let Some(p) = &self.process else { return true };
        let core = &p.server.core;
        let l = [b.x, b.y, b.z];
        let at = self.location(l);
        core.live_job_ids().into_iter().any(|id| {
            core.job_machine_info(id)
                .boards
                .is_some_and(|bs| bs.contains(&l))
        }) || self.bmp_requests.values().any(|r| {
            let (BmpAction::PowerOn { boards, .. } | BmpAction::PowerOff { boards }) = &r.action;
            boards.iter().any(|&n| Some([r.cabinet, r.frame, n]) == at)
        })
    }

    /// After the pass that took a reload: the configuration in force is the file's (or,
    /// if the journal refused to record it, the one before); a file that is not valid
    /// changed nothing.
    fn check_reload(&mut self) {
        let Some((before, file)) = self.reload_pending.take() else {
            return;
        };
        let Some(p) = &self.process else { return };
        let now = p.server.core.config();
        match file {
            Some(f) if *now == f => self.report.reloads_applied += 1,
            _ if *now == before => {}
            Some(_) => self.violation(
                "after a reload the configuration in force is neither the file's nor the \
                 one before"
                    .into(),
            ),
            None => self.violation(
                "a configuration file that is not valid changed the configuration in force".into(),
            ),
        }
    }

    /// Start a server process on the disk (a failed start is a crash: retried later).
    fn start_process(&mut self) {
        let opts = Options {
            journal: PathBuf::from(SIM_JOURNAL),
            config: None,
            port: None,
            ip: None,
            cold_start: false,
            quiet: false,
            simulate_bmps: false,
            limits: Limits::default(),
            fit_clients_to_fds: false,
            snapshot_every_events: self.cfg.snapshot_every_events,
            restart_grace_us: super::RESTART_GRACE_US,
            retain_days: super::RETAIN_DAYS,
            admin_socket: None,
            simulate_faults: Vec::new(),
            simulated_bmp_latency_ms: 0,
            http: None,
        };
        let opts = Options {
            limits: Limits {
                output_bytes_max: self.cfg.output_bytes_max,
                output_total_bytes_max: self.cfg.output_total_bytes_max,
                reply_bytes_max: self.cfg.reply_bytes_max,
                ..Limits::default()
            },
            ..opts
        };
        match Server::simulated(
            opts,
            &self.config,
            self.disk.clone(),
            self.log.clone(),
            self.now,
        ) {
            Ok(p) => {
                self.incarnation += 1;
                // The old process's BMP work died with it (its completions are dropped);
                // what the new one resumes is taken below. Allocations recovered from the
                // journal are not new ones.
                self.bmp_requests.clear();
                self.power_off_in_flight.clear();
                self.bmp_busy_until.clear();
                self.answered_frames.clear();
                self.seen_boards = p
                    .server
                    .core
                    .live_job_ids()
                    .into_iter()
                    .map(|id| {
                        (
                            id,
                            p.server
                                .core
                                .job_machine_info(id)
                                .boards
                                .unwrap_or_default(),
                        )
                    })
                    .collect();
                // (A restart re-issues the BMP work in flight, in order: a power-on in
                // flight when the stop came is issued again, its power-off after it. Only
                // power-ons issued anew are checked.)
                self.emergency_throughout = false;
                if p.server.core.health().emergency.is_none() {
                    self.emergency_since = None;
                } else if self.emergency_since.is_none() {
                    self.emergency_since = Some(self.now);
                }
                self.process = Some(p);
                self.check_acknowledged();
                self.check_refused(true);
                self.take_bmp_requests();
            }
            Err(e) => {
                self.log.info(&format!("SIM: start-up failed: {e}"));
                self.disk.disk().crash(&mut self.rng);
                let t = self.now + self.rng.range(100_000, 5_000_000);
                self.at(t, Due::Restart);
            }
        }
    }

    /// One pass of the production loop, with the clients whose pipes have something to
    /// read (or have closed) ready; then what the clients and BMPs received.
    fn pass(&mut self) {
        let Some(p) = &mut self.process else { return };
        let mut ready = Vec::new();
        for c in &self.clients {
            if let Some(conn) = &c.conn {
                let pipe = conn.pipe.lock().unwrap();
                let readable =
                    !pipe.to_server.is_empty() || (pipe.client_shut && !pipe.server_closed);
                // Writable, level-triggered as the poller registers clients: reported while
                // the server wants to write and the pipe has room.
                let wants = p
                    .server
                    .clients
                    .get(&conn.key)
                    .is_some_and(|c| c.registered.1);
                let room = pipe
                    .to_client_max
                    .map_or(true, |m| pipe.to_client.len() < m);
                if readable || (wants && room) {
                    ready.push((conn.key, readable, wants && room));
                }
            }
        }
        self.hung_up
            .retain(|(_, pipe)| !pipe.lock().unwrap().server_closed);
        for (key, _) in &self.hung_up {
            ready.push((*key, true, false));
        }
        if let Some(a) = &mut self.admin {
            let wants = p
                .server
                .admin_conns
                .get(&a.key)
                .is_some_and(|c| c.pending_output() > 0);
            if a.unread || wants {
                ready.push((a.key, a.unread, wants));
            }
            a.unread = false;
        }
        ready.sort_unstable();
        let before = out_of_service(&p.server.core);
        let emergency_before = p.server.core.health().emergency.is_some();
        self.admin_drained_before = self.admin_drained.clone();
        // Backlogs the writable clients had before the pass.
        let writable: Vec<(usize, usize)> = ready
            .iter()
            .filter(|r| r.2)
            .map(|r| {
                (
                    r.0,
                    p.server.clients.get(&r.0).map_or(0, |c| c.pending_output()),
                )
            })
            .collect();
        p.server.pass(self.now, &ready, false);
        self.report.passes += 1;
        let emergency_after = p.server.core.health().emergency.is_some();
        self.emergency_throughout = emergency_before && emergency_after;
        if !emergency_after {
            self.emergency_since = None;
        } else if self.emergency_since.is_none() {
            self.emergency_since = Some(self.now);
        }
        self.check_writable(&writable);
        self.check_reload();
        self.take_bmp_requests();
        for i in 0..self.clients.len() {
            self.receive(i);
        }
        // (After the clients': in a pass the admin's events come after theirs.)
        self.receive_admin();
        let Some(p) = &self.process else { return };
        let core = &p.server.core;
        // Every live job's machine and boards, looked up once for the checks.
        let live: Vec<LiveJob> = core
            .live_job_ids()
            .into_iter()
            .map(|id| {
                let m = core.job_machine_info(id);
                (
                    id,
                    m.machine_name.unwrap_or_default(),
                    m.boards.unwrap_or_default(),
                )
            })
            .collect();
        self.check_state(&live);
        self.check_allocations(&before, &live);
        self.check_output();
        self.check_admin(&live);
    }

    /// Take the BMP requests the server issued, check them against the hardware's state,
    /// and schedule their completions: a share fail (the BMP did not answer, or answered
    /// with an error), and a share of the failed power-ons the BMP answered blame some of
    /// the request's boards, as the BMP runtime does for wrong FPGA ids.
    fn take_bmp_requests(&mut self) {
        let Some(p) = &self.process else { return };
        let requests: Vec<BmpRequest> = p.bmp_requests.try_iter().collect();
        for r in requests {
            let mut fails = self.rng.chance(self.cfg.bmp_failure_chance);
            let unreachable = fails && self.rng.chance(0.5);
            let mut failed_boards = Vec::new();
            let flaky: Vec<u32> = match &r.action {
                BmpAction::PowerOn { boards, .. } => boards
                    .iter()
                    .copied()
                    .filter(|&n| self.flaky.contains(&[r.cabinet, r.frame, n]))
                    .collect(),
                BmpAction::PowerOff { .. } => Vec::new(),
            };
            if !unreachable && !flaky.is_empty() && self.rng.chance(self.cfg.flaky_failure_chance) {
                fails = true;
                failed_boards = flaky;
            }
            match &r.action {
                BmpAction::PowerOn { boards, .. } => {
                    let mut held = Vec::new();
                    for &n in boards {
                        let b = [r.cabinet, r.frame, n];
                        if self.power_off_failed.contains(&b)
                            || self.power_off_in_flight.get(&b).is_some_and(|&k| k > 0)
                        {
                            held.push(n);
                        }
                    }
                    if !held.is_empty() {
                        self.violation(format!(
                            "job {} powers on board(s) {held:?} of cabinet {}, frame {} while a \
                             power-off of them is in flight or failed last",
                            r.job_id, r.cabinet, r.frame
                        ));
                    }
                    if self.emergency_throughout {
                        self.violation(format!(
                            "job {} powers on board(s) {boards:?} of cabinet {}, frame {} during \
                             an emergency stop",
                            r.job_id, r.cabinet, r.frame
                        ));
                    }
                    if fails
                        && !unreachable
                        && failed_boards.is_empty()
                        && self.rng.chance(self.cfg.bmp_blame_chance)
                    {
                        // Each board blamed with even chance, at least one (ascending, as
                        // the request lists them).
                        failed_boards = boards
                            .iter()
                            .copied()
                            .filter(|_| self.rng.chance(0.5))
                            .collect();
                        if failed_boards.is_empty() && !boards.is_empty() {
                            failed_boards.push(*self.rng.pick(boards));
                        }
                    }
                }
                BmpAction::PowerOff { .. }
                    if r.job_id == SWEEP_JOB_ID && !self.cfg.sweep_holds_boards => {}
                BmpAction::PowerOff { boards } => {
                    for &n in boards {
                        *self
                            .power_off_in_flight
                            .entry([r.cabinet, r.frame, n])
                            .or_default() += 1;
                    }
                }
            }
            let completion = BmpCompletion {
                request_id: r.id,
                failure: fails.then(|| format!("Requests failed on BMP {}", r.address)),
                failed_boards,
                bmp_unreachable: unreachable,
            };
            let busy = self.bmp_busy_until.entry(r.address.clone()).or_default();
            let t = (self.now + self.rng.range(1_000, 3_000_000)).max(*busy + 1);
            *busy = t;
            self.bmp_requests.insert(r.id, r);
            self.at(t, Due::Bmp(self.incarnation, completion));
        }
    }

    /// A completion was handed to the running server: what it means for the hardware.
    fn bmp_completed(&mut self, c: &BmpCompletion) {
        let Some(r) = self.bmp_requests.remove(&c.request_id) else {
            return;
        };
        self.report.boards_blamed += c.failed_boards.len() as u64;
        if !c.bmp_unreachable {
            self.answered_frames.insert((r.cabinet, r.frame));
        }
        let (boards, on) = match &r.action {
            BmpAction::PowerOn { boards, .. } => (boards, true),
            BmpAction::PowerOff { boards } => (boards, false),
        };
        for &n in boards {
            let power = match (c.failure.is_some(), on) {
                (true, _) => Power::Unknown,
                (false, true) => Power::On,
                (false, false) => Power::Off,
            };
            self.power.insert([r.cabinet, r.frame, n], power);
        }
        let sweep_unheld = r.job_id == SWEEP_JOB_ID && !self.cfg.sweep_holds_boards;
        if let (BmpAction::PowerOff { boards }, false) = (&r.action, sweep_unheld) {
            self.report.power_offs_failed += u64::from(c.failure.is_some());
            for &n in boards {
                let b = [r.cabinet, r.frame, n];
                if let Some(k) = self.power_off_in_flight.get_mut(&b) {
                    *k = k.saturating_sub(1);
                }
                if c.failure.is_some() {
                    self.power_off_failed.insert(b);
                } else {
                    self.power_off_failed.remove(&b);
                }
            }
        }
    }

    /// Where a logical board of the simulated machine is: (cabinet, frame, board).
    fn location(&self, b: [u32; 3]) -> Option<[u32; 3]> {
        self.base_config.machines[0]
            .boards
            .iter()
            .find(|c| c.logical == Board::new(b[0], b[1], b[2]))
            .map(|c| [c.cabinet, c.frame, c.board])
    }

    /// After every pass: a job given boards in the pass (new, or re-allocated after a
    /// blamed failure) got none that was out of service before the pass (drained, and still
    /// after it; or in a frame whose BMP did not answer, and still did not after the pass;
    /// or drained by the admin, as it was told, and not undrained since), and none whose
    /// power-off is in flight or failed last (held back: their power is unknown).
    fn check_allocations(&mut self, before: &OutOfService, live: &[LiveJob]) {
        let Some(p) = &self.process else { return };
        let core = &p.server.core;
        let after = out_of_service(core);
        let mut found = Vec::new();
        let mut seen = BTreeMap::new();
        for (id, _, boards) in live {
            let (id, boards) = (*id, boards.clone());
            let prev = self.seen_boards.get(&id);
            if prev.is_some_and(|b| !b.is_empty()) && boards.is_empty() {
                self.report.jobs_reallocated += 1;
            }
            if !boards.is_empty() && prev != Some(&boards) {
                self.report.allocations_checked += 1;
                self.report.allocations_after_resume += u64::from(self.resumed);
                for &b in &boards {
                    let Some(at) = self.location(b) else { continue };
                    let frame = (at[0], at[1]);
                    if before.dead.contains(&b) && after.dead.contains(&b) {
                        found.push(format!(
                            "job {id} was given board {b:?}, dead in the configuration"
                        ));
                    }
                    // (Drained before and after: one undrained in the pass may be given to a
                    // job the undrain let through.)
                    if before.drained.contains(&b) && after.drained.contains(&b) {
                        found.push(format!("job {id} was given board {b:?}, drained before"));
                    }
                    if self.admin_drained_before.contains(&b) && self.admin_drained.contains(&b) {
                        found.push(format!(
                            "job {id} was given board {b:?}, which the admin was told it drained"
                        ));
                    }
                    if self.undrained_watch.remove(&b) {
                        self.report.undrained_boards_reallocated += 1;
                    }
                    if before.unreachable.contains(&frame)
                        && after.unreachable.contains(&frame)
                        && !self.answered_frames.contains(&frame)
                    {
                        found.push(format!(
                            "job {id} was given board {b:?} of frame {frame:?}, whose BMP \
                             does not answer"
                        ));
                    }
                    if self.power_off_failed.contains(&at)
                        || self.power_off_in_flight.get(&at).is_some_and(|&k| k > 0)
                    {
                        found.push(format!(
                            "job {id} was given board {b:?}, held for a power-off in flight \
                             or failed"
                        ));
                    }
                }
            }
            seen.insert(id, boards);
        }
        // No board is left powered on with nobody to power it off: one that is on is held
        // by a live job or has a request in flight (a power-off, most likely).
        let mut held: BTreeSet<[u32; 3]> = live
            .iter()
            .flat_map(|(_, _, boards)| boards.iter())
            .filter_map(|&b| self.location(b))
            .collect();
        for r in self.bmp_requests.values() {
            let (BmpAction::PowerOn { boards, .. } | BmpAction::PowerOff { boards }) = &r.action;
            held.extend(boards.iter().map(|&n| [r.cabinet, r.frame, n]));
        }
        for (b, power) in &self.power {
            if *power == Power::On && !held.contains(b) {
                found.push(format!(
                    "board {b:?} (cabinet, frame, board) is left powered on: no live job holds \
                     it and no BMP request for it is in flight"
                ));
            }
        }
        self.seen_boards = seen;
        if p.server.unjournaled_completions.is_empty() {
            // Every completion handed over is folded now.
            self.answered_frames.clear();
        }
        for &b in &after.drained {
            self.drained_seen.insert(b);
            self.out_of_service_seen.insert(b);
        }
        for c in &self.base_config.machines[0].boards {
            if after.unreachable.contains(&(c.cabinet, c.frame)) {
                let l = c.logical;
                self.out_of_service_seen.insert([l.x, l.y, l.z]);
            }
        }
        for f in found {
            self.violation(f);
        }
    }

    fn client_acts(&mut self, i: usize) {
        let next = self.now + self.rng.range(100_000, 3_000_000);
        self.at(next, Due::Client(i));
        if self.clients[i].conn.is_none() {
            if let Some(p) = &mut self.process {
                let (key, pipe) = p.server.connect_simulated(self.clients[i].peer);
                pipe.lock().unwrap().to_client_max = Some(self.cfg.pipe_bytes_max);
                self.clients[i].conn = Some(Conn {
                    key,
                    pipe,
                    inbuf: Vec::new(),
                    pending: VecDeque::new(),
                    reading: Reading::Always,
                    reading_since: self.now,
                    ever_paused: false,
                });
            }
            return;
        }
        // A reading client may stop reading for a while, or for good; a paused one reads
        // again once its time has come. One not reading keeps sending requests (mostly
        // list_jobs, the biggest reply), as a client stuck in a loop would.
        let now = self.now;
        let conn = self.clients[i].conn.as_mut().expect("connected");
        match conn.reading {
            Reading::Always => {
                if self.rng.chance(self.cfg.stop_reading_chance) {
                    conn.reading = Reading::Never;
                    conn.ever_paused = true;
                    self.report.readers_stopped += 1;
                    self.log
                        .info(&format!("SIM: client {i} stops reading for good"));
                } else if self.rng.chance(self.cfg.pause_chance) {
                    conn.reading =
                        Reading::PausedUntil(now + self.rng.range(1_000_000, 20_000_000));
                    conn.ever_paused = true;
                    self.report.readers_paused += 1;
                    self.log
                        .info(&format!("SIM: client {i} stops reading for a while"));
                }
            }
            Reading::PausedUntil(t) if t <= now => {
                conn.reading = Reading::Always;
                conn.reading_since = now;
                self.report.readers_resumed += 1;
                self.log.info(&format!("SIM: client {i} reads again"));
            }
            Reading::PausedUntil(_) | Reading::Never => {}
        }
        if conn.reading != Reading::Always && self.rng.chance(0.7) {
            self.send(
                i,
                Req::Query,
                r#"{"command": "list_jobs", "args": [], "kwargs": {}}"#,
            );
            return;
        }
        let owner = self.clients[i].owner.clone();
        let roll = self.rng.below(100);
        let own: Vec<JobId> = self.clients[i].jobs.iter().copied().collect();
        match roll {
            0..=29 => {
                let args = match self.rng.below(3) {
                    0 => "[]".to_string(),
                    1 => format!("[{}]", 1 + self.rng.below(4)),
                    _ => "[1, 1]".to_string(),
                };
                self.send(i, Req::Create, &format!(
                    r#"{{"command": "create_job", "args": {args}, "kwargs": {{"owner": "{owner}", "keepalive": {KEEPALIVE_S:?}}}}}"#
                ));
            }
            30..=44 if !own.is_empty() => {
                let j = *self.rng.pick(&own);
                self.send(i, Req::Destroy(j), &format!(
                    r#"{{"command": "destroy_job", "args": [{j}], "kwargs": {{"reason": "sim"}}}}"#
                ));
            }
            45..=69 => {
                let j = own.first().copied().unwrap_or(1 + self.rng.below(20));
                let line = match self.rng.below(3) {
                    0 => {
                        format!(r#"{{"command": "get_job_state", "args": [{j}], "kwargs": {{}}}}"#)
                    }
                    1 => {
                        let line = format!(
                            r#"{{"command": "get_job_machine_info", "args": [{j}], "kwargs": {{}}}}"#
                        );
                        self.send(i, Req::MachineInfo(j), &line);
                        return;
                    }
                    _ => r#"{"command": "list_jobs", "args": [], "kwargs": {}}"#.to_string(),
                };
                self.send(i, Req::Query, &line);
            }
            70..=79 => self.send(
                i,
                Req::Notify,
                r#"{"command": "notify_job", "args": [], "kwargs": {}}"#,
            ),
            80..=84 => self.send(
                i,
                Req::Garbage,
                r#"{"command": "no_such_command", "args": [], "kwargs": {}}"#,
            ),
            88..=91 => {
                // A problem with a board of one of its jobs, named by the IP that
                // get_job_machine_info gave it.
                let jobs = &self.clients[i].jobs;
                let known: Vec<(JobId, String)> = self.clients[i]
                    .board_ips
                    .iter()
                    .filter(|(j, _)| jobs.contains(j))
                    .cloned()
                    .collect();
                if known.is_empty() {
                    return;
                }
                let (_, ip) = self.rng.pick(&known).clone();
                let Some(b) = self.base_config.machines[0]
                    .boards
                    .iter()
                    .find(|c| c.ip == ip)
                    .map(|c| [c.logical.x, c.logical.y, c.logical.z])
                else {
                    self.violation(format!("get_job_machine_info named IP {ip:?}, no board's"));
                    return;
                };
                let (x, y) = (self.rng.below(8), self.rng.below(8));
                let line = if self.rng.chance(0.5) {
                    format!(
                        r#"{{"command": "report_problem", "args": ["{ip}", {x}, {y}], "kwargs": {{"description": "sim: chip ({x}, {y}) hangs"}}}}"#
                    )
                } else {
                    let p = 1 + self.rng.below(17);
                    format!(
                        r#"{{"command": "report_problem", "args": ["{ip}"], "kwargs": {{"x": {x}, "y": {y}, "p": {p}}}}}"#
                    )
                };
                self.send(i, Req::ReportProblem(b), &line);
            }
            85..=87 => {
                // Hang up (its jobs are no longer kept alive).
                if let Some(conn) = self.clients[i].conn.take() {
                    let mut pipe = conn.pipe.lock().unwrap();
                    pipe.client_shut = true;
                    pipe.client_gone = true;
                    drop(pipe);
                    self.hung_up.push((conn.key, conn.pipe));
                }
                self.clients[i].jobs.clear();
            }
            _ => {}
        }
    }

    fn send(&mut self, i: usize, req: Req, line: &str) {
        let Some(conn) = &mut self.clients[i].conn else {
            return;
        };
        let mut pipe = conn.pipe.lock().unwrap();
        if pipe.server_closed {
            return;
        }
        pipe.to_server.extend(line.as_bytes());
        pipe.to_server.push_back(b'\n');
        conn.pending.push_back((req, self.now));
        self.report.requests += 1;
    }

    /// Take what the server wrote to client `i` and act on each reply.
    fn receive(&mut self, i: usize) {
        let Some(conn) = &mut self.clients[i].conn else {
            return;
        };
        let reading = conn.reading == Reading::Always;
        let (bytes, closed) = {
            let mut pipe = conn.pipe.lock().unwrap();
            let bytes = if reading {
                std::mem::take(&mut pipe.to_client)
            } else {
                Vec::new()
            };
            (bytes, pipe.server_closed)
        };
        conn.inbuf.extend_from_slice(&bytes);
        let mut lines = Vec::new();
        while let Some(n) = conn.inbuf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = conn.inbuf.drain(..=n).collect();
            lines.push(line);
        }
        for line in lines {
            self.hash(&line);
            let v: serde_json::Value = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(e) => {
                    self.violation(format!("client {i} got a line that is not JSON ({e})"));
                    continue;
                }
            };
            if v.get("jobs_changed").is_some() || v.get("machines_changed").is_some() {
                continue;
            }
            let Some((req, sent)) = self.clients[i]
                .conn
                .as_mut()
                .and_then(|c| c.pending.pop_front())
            else {
                self.violation(format!("client {i} got a reply it did not ask for: {v}"));
                continue;
            };
            self.on_reply(i, req, sent, &v);
        }
        if closed {
            // The server hung up (a crash closes no connection the clients still hold):
            // only on a client that left its output unread. Reconnect later.
            let Some(conn) = self.clients[i].conn.take() else {
                return;
            };
            if !conn.ever_paused {
                self.violation(format!(
                    "client {i}, which read everything it was sent, was disconnected by the \
                     server with {} replies outstanding",
                    conn.pending.len()
                ));
                return;
            }
            // Its jobs are no longer kept alive.
            self.log
                .info(&format!("SIM: client {i} finds itself disconnected"));
            self.clients[i].jobs.clear();
            self.report.slow_readers_disconnected += 1;
            let logged = self
                .log
                .lines()
                .iter()
                .filter(|l| l.contains("of replies unread"))
                .count() as u64;
            if logged < self.report.slow_readers_disconnected {
                self.violation(format!(
                    "client {i} was disconnected by the server while not reading, but not \
                     for its unread output ({logged} such disconnections logged, {} seen)",
                    self.report.slow_readers_disconnected
                ));
            }
        }
    }

    /// After a pass: a client reported writable was sent its backlog until it was all sent
    /// or the pipe was full (before the client read from it).
    fn check_writable(&mut self, writable: &[(usize, usize)]) {
        let Some(p) = &self.process else { return };
        let mut found = Vec::new();
        for &(key, backlog) in writable {
            self.report.writable_with_backlog += u64::from(backlog > 0);
            let Some(c) = p.server.clients.get(&key) else {
                continue;
            };
            let Stream::Sim(pipe) = &c.stream else {
                continue;
            };
            let pipe = pipe.0.lock().unwrap();
            let full = pipe
                .to_client_max
                .is_some_and(|m| pipe.to_client.len() >= m);
            if c.pending_output() > 0 && !full {
                found.push(format!(
                    "connection {key} was writable with {backlog} bytes waiting, and after the \
                     pass {} bytes wait with the pipe not full ({} of {:?} bytes)",
                    c.pending_output(),
                    pipe.to_client.len(),
                    pipe.to_client_max
                ));
            }
        }
        for f in found {
            self.violation(f);
        }
    }

    /// After every pass: the server's count of unsent output is the sum of its clients'
    /// backlogs; no backlog is past `output_bytes_max` plus one reply (a client that stops
    /// reading is disconnected once past the bound); and a client that reads is not left
    /// waiting for a reply.
    fn check_output(&mut self) {
        let Some(p) = &self.process else { return };
        let s = &p.server;
        let mut found = Vec::new();
        let mut sum = 0;
        for (key, c) in &s.clients {
            let backlog = c.pending_output();
            sum += backlog;
            self.report.backlog_max = self.report.backlog_max.max(backlog as u64);
            if backlog > 0 && !c.registered.1 {
                found.push(format!(
                    "connection {key} has {backlog} bytes of output waiting and no interest in \
                     writability: they would wait for its next request"
                ));
            }
            if backlog > self.cfg.output_bytes_max + self.cfg.reply_bytes_max {
                found.push(format!(
                    "connection {key} has {backlog} bytes of output unread, past \
                     output_bytes_max = {} plus one reply",
                    self.cfg.output_bytes_max
                ));
            }
        }
        if sum != s.output_total {
            found.push(format!(
                "the server counts {} bytes of unsent output, its clients hold {sum}",
                s.output_total
            ));
        }
        for (i, c) in self.clients.iter().enumerate() {
            let Some(conn) = &c.conn else { continue };
            if conn.reading != Reading::Always {
                continue;
            }
            if let Some((req, sent)) = conn.pending.front() {
                let waited = self.now - (*sent).max(conn.reading_since);
                if waited > REPLY_WAIT_MAX_US {
                    found.push(format!(
                        "client {i} has waited {:.1} s for the reply to {req:?}",
                        waited as f64 / 1e6
                    ));
                }
            }
        }
        for f in found {
            self.violation(f);
        }
    }

    fn on_reply(&mut self, i: usize, req: Req, sent: TimeUs, v: &serde_json::Value) {
        let exception = v.get("exception").and_then(|e| e.as_str());
        if let Some(e) = exception {
            if e.contains("could not record") {
                self.report.refused += 1;
                if self.crashes_after_refusal < self.cfg.crashes_max
                    && self.rng.chance(self.cfg.crash_after_refusal_chance)
                {
                    self.crashes_after_refusal += 1;
                    let t = self.now + self.rng.below(300_000);
                    self.at(t, Due::Crash);
                }
            }
            if e.contains("may or may not have been carried out") {
                self.report.refused_maybe_recorded += 1;
            }
            if e.contains("so it was not carried out") {
                if let Req::Create | Req::Destroy(_) = req {
                    self.refused.push(RefusedCommand {
                        at_us: self.now,
                        peer: self.clients[i].peer.ip().to_string(),
                        req: req.clone(),
                        restarted: false,
                        found: false,
                    });
                }
            }
        }
        match req {
            Req::Create => {
                if let Some(id) = v.get("return").and_then(|r| r.as_u64()) {
                    self.report.jobs_acknowledged += 1;
                    if !self.created.insert(id) {
                        self.violation(format!(
                            "job id {id} handed out twice: an acknowledged create_job was lost"
                        ));
                    }
                    // During an emergency stop a new job is cancelled at once (one asked for
                    // after the stop was seen in force, which it has been since).
                    let stopped = self
                        .process
                        .as_ref()
                        .filter(|_| self.emergency_since.is_some_and(|t| sent > t))
                        .map(|p| p.server.core.job_state(id));
                    if let Some(s) = stopped {
                        let reason = s.reason.as_deref().unwrap_or("");
                        if s.state != 4 || !reason.contains("Emergency stop") {
                            self.violation(format!(
                                "job {id}, created during an emergency stop, is {s:?}"
                            ));
                        } else if reason.starts_with("Cancelled: Emergency stop") {
                            self.report.jobs_created_in_emergency += 1;
                        }
                    }
                    // A client keeps alive the jobs it hears of in time: one that read the
                    // reply late (it had stopped reading) may find the job expired already.
                    if self.clients[i].diligent && self.now - sent <= CREATE_REPLY_IN_TIME_US {
                        self.clients[i].jobs.insert(id);
                    }
                }
            }
            Req::Destroy(id) => {
                if exception.is_none() {
                    self.destroyed.insert(id);
                    self.clients[i].jobs.remove(&id);
                }
            }
            Req::Garbage => {
                if exception.is_none() {
                    self.violation(format!("an unknown command was answered with {v}"));
                }
            }
            Req::MachineInfo(j) => {
                let conns = v
                    .get("return")
                    .and_then(|r| r.get("connections"))
                    .and_then(|c| c.as_array());
                if let (Some(conns), true) = (conns, self.clients[i].jobs.contains(&j)) {
                    let c = &mut self.clients[i];
                    let jobs = &c.jobs;
                    c.board_ips.retain(|(k, _)| jobs.contains(k) && *k != j);
                    for conn in conns {
                        if let Some(ip) = conn.get(1).and_then(|ip| ip.as_str()) {
                            c.board_ips.push((j, ip.to_string()));
                        }
                    }
                }
            }
            Req::ReportProblem(b) => match exception {
                // The documented reply: null.
                None if v.get("return").is_some_and(|r| r.is_null()) => {
                    self.report.problem_reports += 1;
                    *self.reports_acked.entry(b).or_default() += 1;
                }
                None => self.violation(format!("report_problem was answered with {v}")),
                // (Journal trouble, counted above; or the board was marked dead by a reload
                // since the client heard of it, and so has no IP in the configuration.)
                Some(e) if e.contains("could not record") => {
                    if e.contains("may or may not") {
                        self.reports_uncertain.insert(b);
                    }
                }
                Some(e) if e.contains("no board has the IP address") => {
                    let dead = self
                        .process
                        .as_ref()
                        .is_some_and(|p| out_of_service(&p.server.core).dead.contains(&b));
                    if !dead {
                        self.violation(format!(
                            "report_problem about board {b:?}, not dead, was refused: {e}"
                        ));
                    }
                }
                Some(e) => {
                    self.violation(format!("report_problem about board {b:?} was refused: {e}"))
                }
            },
            Req::Keepalive | Req::Query | Req::Notify => {}
        }
    }

    /// A board of the simulated machine, as the admin channel names it: by logical
    /// coordinates, physical location or IP, chosen at random.
    fn board_ref(&mut self, b: [u32; 3]) -> String {
        let c = self.base_config.machines[0]
            .boards
            .iter()
            .find(|c| c.logical == Board::new(b[0], b[1], b[2]))
            .cloned()
            .expect("a board of the machine");
        match self.rng.below(3) {
            0 => format!(
                r#"{{"machine": "{MACHINE}", "x": {}, "y": {}, "z": {}}}"#,
                b[0], b[1], b[2]
            ),
            1 => format!(
                r#"{{"machine": "{MACHINE}", "cabinet": {}, "frame": {}, "board": {}}}"#,
                c.cabinet, c.frame, c.board
            ),
            _ => format!(r#"{{"ip": "{}"}}"#, c.ip),
        }
    }

    /// The admin sends a line over the admin channel, connecting first if it is not (as
    /// `spalloc-admin` does for each command). With no server running, nothing happens.
    fn admin_send(&mut self, req: AdminReq, line: &str) {
        let Some(p) = &mut self.process else { return };
        if self.admin.is_none() {
            match p.server.connect_admin_simulated() {
                Ok((key, stream)) => {
                    self.admin = Some(AdminLink {
                        key,
                        stream,
                        inbuf: Vec::new(),
                        pending: VecDeque::new(),
                        unread: false,
                    })
                }
                Err(e) => {
                    self.violation(format!("cannot make an admin connection: {e}"));
                    return;
                }
            }
        }
        let a = self.admin.as_mut().expect("connected");
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        if let Err(e) = a.stream.write_all(&bytes) {
            self.violation(format!("the admin cannot write to its connection: {e}"));
            self.admin = None;
            return;
        }
        a.pending.push_back(req);
        a.unread = true;
    }

    /// A drain (to be undrained later), an undrain of a board drained by anyone, or a
    /// status query.
    fn admin_acts(&mut self) {
        let Some(p) = &self.process else { return };
        let drained: Vec<[u32; 3]> = out_of_service(&p.server.core).drained.into_iter().collect();
        let roll = self.rng.below(10);
        if roll < 5 || (roll < 9 && drained.is_empty()) {
            let c = self.rng.pick(&self.base_config.machines[0].boards).clone();
            let b = [c.logical.x, c.logical.y, c.logical.z];
            let r = self.board_ref(b);
            self.admin_send(
                AdminReq::Drain(b),
                &format!(
                    r#"{{"command": "drain", "kwargs": {{"board": {r}, "reason": "sim: fan", "actor": "sim"}}}}"#
                ),
            );
        } else if roll < 9 {
            let b = *self.rng.pick(&drained);
            let r = self.board_ref(b);
            self.admin_send(
                AdminReq::Undrain(b),
                &format!(r#"{{"command": "undrain", "kwargs": {{"board": {r}}}}}"#),
            );
        } else {
            self.admin_send(AdminReq::Status, r#"{"command": "status"}"#);
        }
    }

    /// Take what the server wrote to the admin and act on each reply.
    fn receive_admin(&mut self) {
        let Some(a) = &mut self.admin else { return };
        let mut buf = [0u8; 16 * 1024];
        let mut closed = false;
        loop {
            match a.stream.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => a.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let mut replies = Vec::new();
        while let Some(n) = a.inbuf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = a.inbuf.drain(..=n).collect();
            replies.push((a.pending.pop_front(), line));
        }
        let outstanding = a.pending.len();
        for (req, line) in replies {
            let v: serde_json::Value = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(e) => {
                    self.violation(format!("the admin got a line that is not JSON ({e})"));
                    continue;
                }
            };
            let Some(req) = req else {
                self.violation(format!("the admin got a reply it did not ask for: {v}"));
                continue;
            };
            self.on_admin_reply(req, &v);
        }
        if closed {
            self.admin = None;
            self.violation(format!(
                "the server closed the admin's connection with {outstanding} replies outstanding"
            ));
        }
    }

    fn on_admin_reply(&mut self, req: AdminReq, v: &serde_json::Value) {
        let ret = v.get("return");
        let exception = v.get("exception").and_then(|e| e.as_str());
        let maybe = exception.is_some_and(|e| e.contains("may or may not"));
        let said = |key: &str| ret.and_then(|r| r.get(key)).is_some();
        match req {
            AdminReq::Drain(b) => {
                if said("drained") {
                    self.report.admin_drains += 1;
                    self.admin_drained.insert(b);
                    let t = self.now + self.rng.range(2_000_000, 20_000_000);
                    self.at(t, Due::Undrain(b));
                } else if exception.is_none() {
                    self.violation(format!("drain of {b:?} was answered with {v}"));
                }
            }
            AdminReq::Undrain(b) => {
                if said("undrained") {
                    self.report.admin_undrains += 1;
                    // In service from the pass that folded it (the admin's events come
                    // last in a pass: nothing after it can drain the board again there).
                    let drained = self.process.as_ref().and_then(|p| {
                        let h = p.server.core.health();
                        h.drain_of(MACHINE, Board::new(b[0], b[1], b[2])).cloned()
                    });
                    if let Some(d) = drained {
                        self.violation(format!(
                            "board {b:?}, which the admin was told it undrained, is out of \
                             service ({d:?})"
                        ));
                    }
                    self.admin_drained.remove(&b);
                    self.reports_acked.remove(&b);
                    self.reports_uncertain.remove(&b);
                    self.undrained_watch.insert(b);
                } else if maybe {
                    // It may be in service again, its reports' count started again.
                    self.admin_drained.remove(&b);
                    self.reports_uncertain.insert(b);
                } else if exception.is_none() {
                    self.violation(format!("undrain of {b:?} was answered with {v}"));
                }
            }
            AdminReq::EmergencyStop => {
                let Some(ids) = ret
                    .and_then(|r| r.get("destroyed"))
                    .and_then(|d| d.as_array())
                else {
                    if exception.is_none() {
                        self.violation(format!("emergency_stop was answered with {v}"));
                    }
                    return;
                };
                self.report.emergency_stops += 1;
                self.report.emergency_stops_with_jobs += u64::from(!ids.is_empty());
                // Every live job is destroyed, with the stop's reason.
                let Some(p) = &self.process else { return };
                let mut found = Vec::new();
                for id in ids.iter().filter_map(|i| i.as_u64()) {
                    let s = p.server.core.job_state(id);
                    if s.state != 4
                        || !s
                            .reason
                            .as_deref()
                            .is_some_and(|r| r.contains("Emergency stop"))
                    {
                        found.push(format!(
                            "job {id}, destroyed by the emergency stop, is {s:?}"
                        ));
                    }
                }
                for f in found {
                    self.violation(f);
                }
            }
            AdminReq::Resume => {
                if said("resumed") {
                    self.report.emergency_resumes += 1;
                    self.resumed = true;
                } else if exception.is_none() {
                    self.violation(format!("resume was answered with {v}"));
                }
            }
            AdminReq::Status => {
                if exception.is_some() || ret.and_then(|r| r.get("live_jobs")).is_none() {
                    self.violation(format!("status was answered with {v}"));
                }
            }
        }
    }

    /// After every pass: a board the admin was told it drained is out of service until it
    /// is told it was undrained (drains survive restarts and reloads); a board reported
    /// `drain_after_reports` times (acknowledged) since it was last put back in service is
    /// drained; while an emergency stop is in force (before and after the pass), no job is
    /// live (every live job destroyed, every new one cancelled at once) and, with no BMP
    /// request in flight, no board is left powered on.
    fn check_admin(&mut self, live: &[LiveJob]) {
        let Some(p) = &self.process else { return };
        let core = &p.server.core;
        let health = core.health();
        let mut found = Vec::new();
        for &b in &self.admin_drained {
            if health
                .drain_of(MACHINE, Board::new(b[0], b[1], b[2]))
                .is_none()
            {
                found.push(format!(
                    "board {b:?}, which the admin was told it drained, is in service"
                ));
            }
        }
        let threshold = core.config().health.drain_after_reports;
        for (&b, &n) in &self.reports_acked {
            if threshold > 0
                && n >= threshold
                && !self.reports_uncertain.contains(&b)
                && health
                    .drain_of(MACHINE, Board::new(b[0], b[1], b[2]))
                    .is_none()
            {
                found.push(format!(
                    "board {b:?} was reported {n} times since it was last put back in service \
                     (drain_after_reports = {threshold}) and is in service"
                ));
            }
        }
        if let Some(m) = health.boards.get(MACHINE) {
            for (b, h) in m {
                if h.drain
                    .as_ref()
                    .is_some_and(|d| d.actor == DrainActor::Reports)
                {
                    self.drained_by_reports_seen.insert([b.x, b.y, b.z]);
                }
            }
        }
        if self.emergency_throughout {
            if !live.is_empty() {
                let ids: Vec<JobId> = live.iter().map(|l| l.0).collect();
                found.push(format!("job(s) {ids:?} are live during an emergency stop"));
            }
            if self.bmp_requests.is_empty() {
                for (b, power) in &self.power {
                    if *power == Power::On {
                        found.push(format!(
                            "board {b:?} (cabinet, frame, board) is powered on during an \
                             emergency stop with no BMP request in flight"
                        ));
                    }
                }
            }
        }
        for f in found {
            self.violation(f);
        }
    }

    /// The server process is gone: every connection with it.
    fn disconnect_all(&mut self) {
        for c in &mut self.clients {
            c.conn = None;
        }
        self.hung_up.clear();
    }

    /// After a restart: everything acknowledged is in the recovered state.
    fn check_acknowledged(&mut self) {
        let Some(p) = &self.process else { return };
        let core = &p.server.core;
        let mut found = Vec::new();
        for &id in &self.created {
            let s = core.job_state(id);
            if s.state == 0 {
                found.push(format!(
                    "job {id}, acknowledged to its client, is unknown after the restart ({s:?})"
                ));
            }
        }
        for &id in &self.destroyed {
            let s = core.job_state(id);
            if s.state != 4 {
                found.push(format!(
                    "job {id}, whose destruction was acknowledged, is not destroyed after the restart ({s:?})"
                ));
            }
        }
        for f in found {
            self.violation(f);
        }
    }

    /// After a restart (`restarted`), and at the end: no command a client was told was not
    /// carried out is in the journal, so none is in effect, whatever crashes came between
    /// (a refusal changes nothing).
    fn check_refused(&mut self, restarted: bool) {
        if self.refused.is_empty() {
            return;
        }
        let mut found = Vec::new();
        {
            let disk = self.disk.disk();
            for (i, record) in disk.records.iter().enumerate() {
                let Ok(event) = crate::server::decode_event(record) else {
                    continue; // (the recovery fold reports those)
                };
                for r in self.refused.iter_mut().filter(|r| !r.found && r.is(&event)) {
                    r.found = true;
                    found.push(format!(
                        "{:?} from {}, refused at t={}us as not carried out, is record {} of \
                         the journal {}: it is in effect",
                        r.req,
                        r.peer,
                        r.at_us - EPOCH_US,
                        i + 1,
                        if restarted {
                            "after a restart"
                        } else {
                            "at the end of the run"
                        }
                    ));
                }
            }
        }
        if restarted {
            for r in &mut self.refused {
                if !r.restarted {
                    r.restarted = true;
                    self.report.refusals_checked_after_restart += 1;
                }
            }
        }
        for f in found {
            self.violation(f);
        }
    }

    /// After every pass: no kept-alive job expired, no board is in two live jobs.
    fn check_state(&mut self, live: &[LiveJob]) {
        let Some(p) = &self.process else { return };
        let core = &p.server.core;
        let mut found = Vec::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            if !c.diligent || c.conn.is_none() {
                continue;
            }
            let mut gone = Vec::new();
            for &id in &c.jobs {
                let s = core.job_state(id);
                if s.state == 4 {
                    if s.reason.as_deref() == Some(TIMED_OUT) {
                        found.push(format!("job {id}, kept alive by client {i}, expired"));
                    }
                    gone.push(id);
                }
            }
            for id in gone {
                c.jobs.remove(&id);
            }
        }
        let mut owner: BTreeMap<(String, [u32; 3]), JobId> = BTreeMap::new();
        for (id, machine, boards) in live {
            let (id, machine) = (*id, machine.clone());
            for &b in boards {
                if let Some(other) = owner.insert((machine.clone(), b), id) {
                    found.push(format!(
                        "board {b:?} of {machine} is in jobs {other} and {id}"
                    ));
                }
            }
        }
        for f in found {
            self.violation(f);
        }
    }

    /// At the end: with the disk healthy, write everything down; replaying the journal (from
    /// the start, and from the snapshot) gives the live state byte for byte.
    fn finish(&mut self) {
        let Some(p) = &mut self.process else { return };
        {
            let mut disk = self.disk.disk();
            disk.fail_writes = 0;
            disk.fail_syncs = 0;
            disk.fail_cuts = 0;
            disk.fail_snapshots = 0;
        }
        // Anything the server still owes the journal (unrecorded keepalives, completions).
        for _ in 0..10 {
            self.now += 1_000;
            p.server.pass(self.now, &[], false);
        }
        p.server
            .durability
            .snapshot_and_wait(&p.server.core, self.now);
        let live = rmp_serde::to_vec_named(&p.server.core).expect("the core encodes");
        let disk = self.disk.disk();
        let all: Vec<(u64, &[u8])> = disk
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 1, &r[..]))
            .collect();
        let from_start = recovery::fold(None, all.iter().copied(), Path::new(SIM_JOURNAL));
        let covered = disk.snapshot.as_ref().map_or(0, |s| s.0) as usize;
        let from_snapshot = recovery::fold(
            disk.snapshot.as_ref().map(|(s, d)| (*s, &d[..])),
            all[covered..].iter().copied(),
            Path::new(SIM_JOURNAL),
        );
        drop(disk);
        for (what, folded) in [("the start", from_start), ("the snapshot", from_snapshot)] {
            match folded {
                Ok(f) => {
                    let replayed = rmp_serde::to_vec_named(&f.core).expect("the core encodes");
                    if replayed != live {
                        self.violation(format!(
                            "replaying the journal from {what} does not give the live state \
                             ({} bytes against {})",
                            replayed.len(),
                            live.len()
                        ));
                    }
                }
                Err(e) => self.violation(format!("the journal does not replay from {what}: {e}")),
            }
        }
    }
}
