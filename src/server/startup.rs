//! Start-up and shut-down: recover the journal, journal the start-up batch (rules, restart,
//! configuration), start the BMP threads (and the simulator if asked), bind the admin
//! socket, the listener and the HTTP port, then re-issue the BMP requests in flight; and, at
//! the end, close everything and take a last snapshot. Also the configuration reload on
//! SIGHUP and the signal thread that notices it.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use polling::{Event as PollEvent, Poller};

use super::clock::EventClock;
use super::durability::{Durability, Storage};
use super::{
    admin, encode_event, http, limits, recovery, Limits, Logger, Options, Server, ServerParts,
    SignalFlags, ADMIN_LISTENER_KEY, LISTENER_KEY,
};
use crate::bmp::BmpRuntime;
use crate::config::{self, Config};
use crate::core::rules::Rules;
use crate::core::{Core, Effect, Event, TimeUs};

impl Server {
    pub(super) fn start(opts: Options, log: Logger) -> Result<Server, String> {
        let config = match &opts.config {
            Some(path) => Some(config::load(path).map_err(|e| {
                format!("configuration file {} is not valid:\n{e}", path.display())
            })?),
            None => None,
        };
        if opts.cold_start {
            recovery::set_journal_aside(&opts.journal, &log)?;
        }
        let recovered = recovery::open_and_replay(&opts.journal, opts.retain_days, &log)?;
        let mut core = recovered.core;
        let mut journal = recovered.journal;
        let clock = EventClock::start(core.now_us());
        let now = clock.now_us();

        journal_startup(
            &opts,
            config.as_ref(),
            &mut core,
            (recovered.warm, recovered.configured),
            now,
            &mut journal,
            &log,
        )?;
        let config = core.config().clone();

        // BMPs: a simulator first if asked, then the threads that talk to them.
        // Faults come from the configuration's `simulated_faults` and `--simulate-fault`.
        let simulator = if opts.simulate_bmps {
            Some(start_simulator(
                &config,
                &log,
                &opts.simulate_faults,
                opts.simulated_bmp_latency_ms,
            )?)
        } else {
            if !config.simulated_faults.is_empty() {
                log.warn(&format!(
                    "simulated_faults in the configuration ignored: the BMPs are real \
                     (they apply only with --simulate-bmps): {:?}",
                    config.simulated_faults
                ));
            }
            None
        };
        let poller = Arc::new(Poller::new().map_err(|e| format!("cannot create a poller: {e}"))?);
        let (tx, completions) = crossbeam::channel::unbounded();
        let waker_poller = Arc::clone(&poller);
        let bmp_log = log.clone();
        let bmp = BmpRuntime::new(
            config.bmp.clone(),
            tx,
            Arc::new(move || {
                let _ = waker_poller.notify();
            }),
            Arc::new(move |line: String| bmp_log.info(&line)),
        );

        // The admin socket first: it exists by the time the listening line is printed.
        let admin_path = opts
            .admin_socket
            .clone()
            .unwrap_or_else(|| admin::default_path(&opts.journal));
        let admin_listener = match admin::bind(&admin_path) {
            Ok(l) => {
                // SAFETY: deleted from the poller before it is dropped (shut_down).
                unsafe { poller.add(&l, PollEvent::readable(ADMIN_LISTENER_KEY)) }
                    .map_err(|e| format!("cannot watch the admin socket: {e}"))?;
                log.info(&format!("admin socket at {}", admin_path.display()));
                Some(l)
            }
            // Asked for explicitly: an admin expects it, so do not start without it.
            Err(e) if opts.admin_socket.is_some() => return Err(e),
            // The default place: users must not lose the service for it.
            Err(e) => {
                log.warn(&format!(
                    "{e}; serving without the admin channel (give --admin-socket PATH)"
                ));
                None
            }
        };

        let ip = opts.ip.clone().unwrap_or_else(|| config.ip.clone());
        let port = opts.port.unwrap_or(config.port);
        let ip_addr: IpAddr = if ip.is_empty() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            ip.parse()
                .map_err(|_| format!("listen address {ip:?} is not an IP address"))?
        };
        let listener = listen(
            SocketAddr::new(ip_addr, port),
            opts.limits.listen_backlog_max,
        )
        .map_err(|e| format!("cannot listen on {ip_addr}:{port}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot configure the listener: {e}"))?;
        // SAFETY: the listener is deleted from the poller before it is dropped (shut_down).
        unsafe { poller.add(&listener, PollEvent::readable(LISTENER_KEY)) }
            .map_err(|e| format!("cannot watch the listener: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        log.info(&format!(
            "spalloc-server {} listening on {local} with {} machines, journal {}",
            env!("CARGO_PKG_VERSION"),
            config.machines.len(),
            opts.journal.display()
        ));
        // Tests and scripts that ask for port 0 learn the real port from this line.
        if port == 0 {
            eprintln!("listening on {local}");
        }

        let http = match &opts.http {
            Some(h) => {
                let http = http::Http::start(h.clone(), Arc::clone(&poller), log.clone())?;
                let addr = http.local_addr().map_err(|e| e.to_string())?;
                log.info(&format!(
                    "status page on http://{addr}/ (metrics at /metrics)"
                ));
                if h.addr.port() == 0 {
                    eprintln!("http listening on {addr}");
                }
                Some(http)
            }
            None => None,
        };
        // Each client needs a descriptor: a bound above what the process may open would turn
        // the next connections into accept failures (EMFILE) instead of a clear refusal.
        let mut opts = opts;
        if let Some(nofile) = Limits::open_files_soft_limit() {
            let fit = nofile.saturating_sub(limits::RESERVED_FDS).max(1) as usize;
            if opts.limits.clients_max > fit && opts.fit_clients_to_fds {
                log.warn(&format!(
                    "clients_max lowered from {} to {fit}: the process may open {nofile} files \
                     and keeps {} for itself (raise LimitNOFILE / ulimit -n to allow more)",
                    opts.limits.clients_max,
                    limits::RESERVED_FDS
                ));
                opts.limits.clients_max = fit;
            } else if opts.limits.clients_max > fit {
                log.warn(&format!(
                    "clients_max {} is more than the {nofile} files the process may open allow \
                     ({fit} after {} kept for the server): past that, connections wait in the \
                     backlog and are refused as descriptors run out",
                    opts.limits.clients_max,
                    limits::RESERVED_FDS
                ));
            }
        }

        let signals = Arc::new(SignalFlags::default());
        start_signal_thread(Arc::clone(&signals), Arc::clone(&poller))?;

        let durability = Durability::new(
            journal,
            recovered.snapshot_seq,
            opts.snapshot_every_events,
            Arc::clone(&poller),
            log.clone(),
        )?;
        let mut server = Server::assemble(ServerParts {
            opts,
            log,
            poller,
            listener,
            core,
            durability,
            clock,
            bmp,
            completions,
            signals,
            spare_fd: std::fs::File::open("/dev/null").ok(),
            simulator,
            admin_listener,
            admin_path,
            http,
        });
        server.resume();
        Ok(server)
    }

    /// Log what the start-up batch did, then re-issue every BMP request in flight (those
    /// interrupted by the restart and those just issued) in issue order.
    pub(super) fn resume(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            if let Effect::Log(line) = effect {
                self.log.info(&line);
            }
        }
        let resumed: Vec<_> = self.core.outstanding_bmp_requests().cloned().collect();
        if !resumed.is_empty() {
            self.log.info(&format!(
                "re-issuing {} BMP requests that were in flight",
                resumed.len()
            ));
        }
        for r in resumed {
            self.submit_bmp(r);
        }
    }

    pub(super) fn reload_config(&mut self) -> Option<Config> {
        let Some(path) = self.opts.config.clone() else {
            self.log
                .error("SIGHUP: no --config file was given, so there is nothing to re-read");
            return None;
        };
        match config::load(&path) {
            Ok(c) if c == *self.core.config() => {
                self.log
                    .info(&format!("SIGHUP: {} unchanged", path.display()));
                None
            }
            Ok(c) => {
                self.log
                    .info(&format!("SIGHUP: applying {}", path.display()));
                // Only what really changed is named; an override on the command line
                // (`--ip`, `--port`) wins over the file's value, now and after a restart.
                let old = self.core.config();
                let mut listen = Vec::new();
                if c.ip != old.ip && self.opts.ip.is_none() {
                    listen.push(format!("address {} -> {}", old.ip, c.ip));
                }
                if c.port != old.port && self.opts.port.is_none() {
                    listen.push(format!("port {} -> {}", old.port, c.port));
                }
                if !listen.is_empty() {
                    self.log.info(&format!(
                        "listen {}: takes effect at the next restart",
                        listen.join(", ")
                    ));
                }
                self.bmp.set_timings(c.bmp.clone());
                Some(c)
            }
            Err(e) => {
                self.log.error(&format!(
                    "SIGHUP: {} is not valid, keeping the current configuration:\n{e}",
                    path.display()
                ));
                None
            }
        }
    }

    pub(super) fn shut_down(mut self) -> Result<(), String> {
        self.http = None;
        let _ = self.poller.delete(&self.listener);
        if let Some(l) = &self.admin_listener {
            let _ = self.poller.delete(l);
            let _ = std::fs::remove_file(&self.admin_path);
        }
        let keys: Vec<usize> = self.admin_conns.keys().copied().collect();
        for key in keys {
            self.close_admin(key);
        }
        let keys: Vec<usize> = self.clients.keys().copied().collect();
        for key in keys {
            self.close_client(key);
        }
        self.durability
            .snapshot_and_wait(&self.core, self.clock.now_us());
        self.bmp.shutdown();
        self.log.info("stopped; powered boards are left on");
        Ok(())
    }
}

/// The start-up batch, journaled and folded: a warm start resets keepalives (with a grace);
/// this version's rules and a configuration that differs from the journal's are applied.
/// (`recovered`: whether the journal held anything, and whether it held a configuration.)
pub(super) fn journal_startup(
    opts: &Options,
    config: Option<&Config>,
    core: &mut Core,
    recovered: (bool, bool),
    now: TimeUs,
    journal: &mut dyn Storage,
    log: &Logger,
) -> Result<(), String> {
    let (warm, configured) = recovered;
    // The start-up batch: a warm start resets keepalives (with a grace); a configuration
    // that differs from the journal's is applied as a diff.
    let mut startup = Vec::new();
    // This version's rules from here on (a journal that older versions wrote replays by
    // theirs up to this record: `core::rules`).
    let rules: Rules = opts.limits.rules();
    if core.rules() != rules {
        startup.push(Event::Rules { now_us: now, rules });
    }
    if warm {
        startup.push(Event::Restarted {
            now_us: now,
            grace_us: opts.restart_grace_us,
        });
    }
    match (config, configured) {
        (Some(c), configured) if !configured || c != core.config() => {
            startup.push(Event::Configure {
                now_us: now,
                config: c.clone(),
            })
        }
        (Some(_), _) => {}
        (None, true) => {
            log.info("no --config given: resuming with the configuration in the journal")
        }
        (None, false) => {
            return Err(format!(
                "no configuration: the journal in {} holds none, so give one with --config FILE",
                opts.journal.display()
            ))
        }
    }
    if !startup.is_empty() {
        let encoded: Vec<Vec<u8>> = startup.iter().map(encode_event).collect();
        journal
            .append_batch(&mut encoded.iter().map(|e| e.as_slice()))
            .map_err(|e| {
                format!(
                    "cannot write the journal in {}: {e}",
                    opts.journal.display()
                )
            })?;
        for e in &startup {
            core.handle(e);
        }
    }
    Ok(())
}

fn start_signal_thread(flags: Arc<SignalFlags>, poller: Arc<Poller>) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    flags.reload.store(true, Ordering::SeqCst);
                } else {
                    flags.stop.store(true, Ordering::SeqCst);
                }
                let _ = poller.notify();
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// A listening socket with the backlog asked for. Std's `TcpListener::bind` always asks for
/// 128, which a connect storm overflows (the kernel drops the SYNs past it and the clients
/// retry a second later); socket2 is the well-kept way to choose it. As std does, the
/// address is reusable at once after a restart (`SO_REUSEADDR`).
fn listen(addr: SocketAddr, backlog: usize) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as usize) as i32)?;
    Ok(socket.into())
}

fn start_simulator(
    config: &Config,
    log: &Logger,
    faults: &[String],
    latency_ms: u64,
) -> Result<crate::bmp::Simulator, String> {
    let mut specs: Vec<(&str, &str)> = config
        .simulated_faults
        .iter()
        .map(|f| ("configuration simulated_faults", f.as_str()))
        .collect();
    specs.extend(faults.iter().map(|f| ("--simulate-fault", f.as_str())));
    let faults = specs
        .iter()
        .map(|(from, f)| crate::bmp::parse_fault_spec(f).map_err(|e| format!("{from}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let addrs = crate::bmp::config_endpoints(config)?;
    if let Some(f) = faults
        .iter()
        .find(|f| !f.endpoint.is_some_and(|e| addrs.contains(&e)))
    {
        return Err(format!(
            "simulated fault {f:?} (--simulate-fault or simulated_faults) names a BMP the configuration does not have"
        ));
    }
    let options = crate::bmp::SimOptions {
        latency_ms,
        ..crate::bmp::SimOptions::default()
    };
    let sim = crate::bmp::Simulator::start(&addrs, options)
        .map_err(|e| format!("cannot start the BMP simulator: {e}"))?;
    for f in faults {
        log.info(&format!("simulated BMPs: injecting {f:?}"));
        sim.inject(f);
    }
    log.info(&format!("simulating {} BMPs in-process", addrs.len()));
    Ok(sim)
}
