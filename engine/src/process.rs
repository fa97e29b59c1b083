//! The process: lock the data directory, read the TLS files and tokens of the edges, fit memory
//! to the limit, bind the telemetry endpoints, start one pinned reactor per core with its ends
//! of the mesh, wait for them to serve (then tell systemd: [`telemetry::sd_notify`]), reload
//! the configuration on SIGHUP ([`reload`]), and drain them on SIGTERM/SIGINT. A reactor that
//! dies of a panic makes the process drain the others (within `engine.shutdown_timeout`) and
//! fail with [`EngineError::CorePanicked`], so that a supervisor restarts it.

mod reload;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use shardtel_config::Config;

use crate::durability::{self, Checkpoints, DataDirError};
use crate::memory_limiter::{self, MemoryLimiterError};
use crate::pipeline::{self, mesh, BuildError};
use crate::reactor::reload::ReloadInbox;
use crate::reactor::snapshot::CoreSnapshot;
use crate::reactor::{self, CoreSetup, CoreStartError};
use crate::receivers::otlp::connections;
use crate::receivers::security::{SecurityError, ServerSecurity};
use crate::telemetry::{self, Board, CoreState};

pub use reload::ConfigSource;

/// How long the process waits for each core to report that it started.
const CORE_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the engine could not run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The core list could not be resolved.
    #[error("invalid core layout: {0}")]
    Cores(#[source] shardtel_config::ConfigError),
    /// `engine.data_dir` could not be locked.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The memory limiter could not start or fit the buffers to its limit.
    #[error(transparent)]
    Memory(#[from] MemoryLimiterError),
    /// A telemetry address could not be bound.
    #[error("failed to bind the {what} endpoint on {addr}: {source}")]
    Bind {
        /// Which endpoint.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A reactor failed to start.
    #[error("failed to start the reactor for cpu {cpu}: {source}")]
    Executor {
        /// The CPU.
        cpu: usize,
        /// What glommio reported.
        #[source]
        source: glommio::GlommioError<()>,
    },
    /// A core failed during start-up.
    #[error(transparent)]
    CoreStart(Box<CoreStartError>),
    /// A core did not report within 60 s.
    #[error("a core did not start within {} s", CORE_START_TIMEOUT.as_secs())]
    CoreStartTimeout,
    /// A server receiver's TLS files or token file could not be read or parsed.
    #[error(transparent)]
    ReceiverSecurity(#[from] SecurityError),
    /// An exporter's TLS files could not be read or parsed.
    #[error(transparent)]
    ExporterTls(Box<BuildError>),
    /// Signal handling could not be installed.
    #[error("failed to install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The thread that watches a reactor could not be started.
    #[error("failed to start the thread that watches the reactor of cpu {cpu}: {source}")]
    Supervisor {
        /// The CPU.
        cpu: usize,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A reactor died of a panic; the other cores were drained.
    #[error("core {core} (cpu {cpu}) stopped by a panic: {message}")]
    CorePanicked {
        /// The core.
        core: usize,
        /// Its CPU.
        cpu: usize,
        /// The panic's message.
        message: String,
    },
}

/// How much longer than `engine.shutdown_timeout` the process waits for the other cores after a
/// reactor died, before it exits anyway.
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// Runs shardtel until SIGTERM or SIGINT, then drains and returns. `source` reads the
/// configuration file again on SIGHUP (without one, SIGHUP is logged and ignored).
pub fn run(config: Config, source: Option<ConfigSource>) -> Result<(), EngineError> {
    let shutdown = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(EngineError::Signals)?;
    let (reload_tx, reload_rx) = mpsc::channel();
    let reloadable = source.is_some();
    {
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("shardtel-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if sig == signal_hook::consts::SIGHUP {
                        if !reloadable {
                            log::warn!(
                                "SIGHUP: running on the embedded default, there is no file to reload"
                            );
                        } else if reload_tx.send(()).is_err() {
                            log::warn!("SIGHUP: reloads have stopped");
                        }
                        continue;
                    }
                    if shutdown.swap(true, Ordering::AcqRel) {
                        log::warn!("second signal {sig}: exiting without draining");
                        std::process::exit(130);
                    }
                    log::info!("signal {sig}: draining (send it again to exit at once)");
                    telemetry::sd_notify::stopping();
                }
            })
            .map_err(EngineError::Signals)?;
    }
    let reload = source.map(|source| (source, reload_rx));
    run_until(config, shutdown, reload)
}

/// Runs until `shutdown` is set, then drains and returns. With `reload`, each message on its
/// channel reloads the configuration from its source.
pub fn run_until(
    config: Config,
    shutdown: Arc<AtomicBool>,
    reload: Option<(ConfigSource, mpsc::Receiver<()>)>,
) -> Result<(), EngineError> {
    reactor::failure::install_panic_hook();
    let file_config = config.clone();
    let cpus = config.engine.cores.resolve().map_err(EngineError::Cores)?;
    let cores = cpus.len();
    let _data_dir_lock = durability::lock_data_dir(&config)?;
    durability::report_orphaned_logs(&config);
    // Certificates, keys and tokens are read here, never on a reactor; their reload threads
    // re-read them.
    let security = ServerSecurity::new(&config.receivers)?;
    let exporter_tls = Arc::new(pipeline::exporter_tls(&config).map_err(EngineError::ExporterTls)?);
    let board = Board::<CoreSnapshot>::new(&cpus);
    for (what, addr, endpoint) in [
        (
            "health",
            config.telemetry.health,
            telemetry::Endpoint::Health,
        ),
        (
            "metrics",
            config.telemetry.metrics,
            telemetry::Endpoint::Metrics,
        ),
    ] {
        let Some(addr) = addr else { continue };
        let listener =
            TcpListener::bind(addr).map_err(|source| EngineError::Bind { what, addr, source })?;
        if let Err(e) = telemetry::serve(listener, board.clone(), endpoint) {
            log::error!("failed to start the {what} endpoint's thread: {e}");
            continue;
        }
        log::info!("{what} endpoint on http://{addr}");
    }

    let connection_bounds = config
        .receivers
        .otlp
        .as_ref()
        .map(|otlp| connections::bounds(otlp, cores));
    let (config, memory) = memory_limiter::setup(config, cores, connection_bounds.as_ref())?;
    crate::pipeline::sampling::check_capacity(&config, cores);
    let memory_limited = memory.is_some();
    let config = Arc::new(config);
    let checkpoints = Checkpoints::default();
    let (ready_tx, ready_rx) = mpsc::channel();
    // Each reactor's end (its thread's join), reported by a thread of its own: the first
    // panic is noticed at once, whichever core it hits.
    let (exit_tx, exits) = mpsc::channel::<(usize, Result<(), String>)>();
    let (reply_tx, replies) = mpsc::channel();
    let mut reload_senders = Vec::new();
    for (id, (cpu, ends)) in cpus
        .iter()
        .copied()
        .zip(mesh::build(cores, config.engine.channel_capacity))
        .enumerate()
    {
        let setup = CoreSetup {
            id,
            cpu,
            cores,
            config: config.clone(),
            mesh: ends,
            board: board.clone(),
            shutdown: shutdown.clone(),
            ready: ready_tx.clone(),
            memory: memory.clone(),
            checkpoints: checkpoints.clone(),
            security: security.clone(),
            exporter_tls: exporter_tls.clone(),
            reload: reload.is_some().then(|| {
                let (tx, messages) = mpsc::channel();
                reload_senders.push(tx);
                ReloadInbox {
                    messages,
                    replies: reply_tx.clone(),
                }
            }),
        };
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shardtel-core{id}"))
            .spawn(move || reactor::run(setup))
            .map_err(|source| EngineError::Executor { cpu, source })?;
        let exit_tx = exit_tx.clone();
        std::thread::Builder::new()
            .name(format!("shardtel-watch{id}"))
            .spawn(move || {
                let outcome = handle.join().map_err(|e| match e {
                    glommio::GlommioError::BuilderError(
                        glommio::BuilderErrorKind::ThreadPanic(payload),
                    ) => shardtel_sinks::panics::Panicked::of(&*payload).message,
                    other => other.to_string(),
                });
                let _ = exit_tx.send((id, outcome));
            })
            .map_err(|source| EngineError::Supervisor { cpu, source })?;
    }
    drop((ready_tx, exit_tx));
    let mut supervisor = Supervisor {
        cpus: &cpus,
        board: &board,
        checkpoints: &checkpoints,
        shutdown: &shutdown,
        exits,
        running: cores,
        panicked: None,
        deadline: None,
        drain: config.engine.shutdown_timeout + DRAIN_MARGIN,
    };
    if let Err(e) = supervisor.wait_ready(&ready_rx) {
        shutdown.store(true, Ordering::Release);
        supervisor.wait_all();
        return Err(e);
    }
    if let Some((source, requests)) = reload {
        let reloader = reload::Reloader {
            source,
            file_config,
            running: (*config).clone(),
            memory_limited,
            cores: reload_senders,
            replies,
            board: board.clone(),
            shutdown: shutdown.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("shardtel-reload".into())
            .spawn(move || reloader.run(requests));
        if let Err(e) = spawned {
            log::error!("failed to start the reload thread, SIGHUP will do nothing: {e}");
        }
    }
    telemetry::sd_notify::ready(&format!("serving on {cores} cores (cpus {cpus:?})"));
    if let Some(otlp) = &config.receivers.otlp {
        let default = shardtel_config::OtlpReceiverConfig::default();
        let addrs: Vec<String> = [
            ("OTLP/gRPC", "grpc", otlp.grpc, default.grpc),
            ("OTLP/HTTP", "http", otlp.http, default.http),
        ]
        .into_iter()
        .filter_map(|(what, key, addr, default)| {
            Some(listener_description(what, key, addr?, default))
        })
        .collect();
        log::info!(
            "serving {} on {cores} cores (cpus {cpus:?})",
            addrs.join(", ")
        );
    }
    supervisor.wait_all();
    if let Some(e) = supervisor.failure() {
        return Err(e);
    }
    log::info!("drained; exiting");
    Ok(())
}

/// Waits for the reactors: for each to report ready, then for each to end. The first that
/// dies of a panic is marked failed (if its panic hook did not already) and makes the others
/// drain; the process then waits at most `shutdown_timeout` + [`DRAIN_MARGIN`] for them.
struct Supervisor<'a> {
    cpus: &'a [usize],
    board: &'a Board<CoreSnapshot>,
    checkpoints: &'a Checkpoints,
    shutdown: &'a AtomicBool,
    /// (core, its end: `Err` with the panic's message when it panicked).
    exits: mpsc::Receiver<(usize, Result<(), String>)>,
    /// Reactors not yet ended.
    running: usize,
    /// The first core that panicked, and the message.
    panicked: Option<(usize, String)>,
    /// When the process stops waiting for the others.
    deadline: Option<Instant>,
    drain: Duration,
}

impl Supervisor<'_> {
    /// Waits until every core reported ready (or one failed, or [`CORE_START_TIMEOUT`]).
    fn wait_ready(
        &mut self,
        ready: &mpsc::Receiver<Result<usize, CoreStartError>>,
    ) -> Result<(), EngineError> {
        let deadline = Instant::now() + CORE_START_TIMEOUT;
        let mut started = 0;
        while started < self.cpus.len() {
            match ready.recv_timeout(Duration::from_millis(20)) {
                Ok(Ok(_)) => started += 1,
                Ok(Err(e)) => return Err(EngineError::CoreStart(Box::new(e))),
                Err(_) => {
                    while let Ok(exit) = self.exits.try_recv() {
                        self.ended(exit);
                    }
                    if let Some(e) = self.failure() {
                        return Err(e);
                    }
                    if Instant::now() >= deadline {
                        return Err(EngineError::CoreStartTimeout);
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits for every reactor to end (after a panic, until the drain deadline).
    fn wait_all(&mut self) {
        while self.running > 0 {
            let exit = match self.deadline {
                None => self.exits.recv().ok(),
                Some(at) => self
                    .exits
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                    .ok(),
            };
            let Some(exit) = exit else {
                log::error!(
                    "{} cores did not drain within {:?}; exiting anyway",
                    self.running,
                    self.drain
                );
                return;
            };
            self.ended(exit);
        }
    }

    /// A reactor ended.
    fn ended(&mut self, (core, outcome): (usize, Result<(), String>)) {
        self.running -= 1;
        let Err(message) = outcome else { return };
        if self.panicked.is_some() {
            return;
        }
        self.checkpoints.freeze();
        self.board.set_state(core, CoreState::Failed);
        log::error!(
            "core {core} (cpu {}) stopped by a panic: {message}; draining the other cores (at most {:?}), then exiting",
            self.cpus[core],
            self.drain
        );
        self.shutdown.store(true, Ordering::Release);
        telemetry::sd_notify::stopping();
        self.deadline = Some(Instant::now() + self.drain);
        self.panicked = Some((core, message));
    }

    /// The error to exit with, when a core panicked.
    fn failure(&self) -> Option<EngineError> {
        self.panicked
            .as_ref()
            .map(|(core, message)| EngineError::CorePanicked {
                core: *core,
                cpu: self.cpus[*core],
                message: message.clone(),
            })
    }
}

/// How the start-up log names a receiver's listener: its address, which interfaces that
/// reaches, and whether it is the default (`receivers.otlp.<key>` not set).
fn listener_description(
    what: &str,
    key: &str,
    addr: std::net::SocketAddr,
    default: Option<std::net::SocketAddr>,
) -> String {
    let reach = if addr.ip().is_loopback() {
        "loopback only"
    } else if addr.ip().is_unspecified() {
        "all interfaces"
    } else {
        "one interface"
    };
    if Some(addr) == default {
        format!("{what} on {addr} ({reach}: the default; set receivers.otlp.{key} to choose)")
    } else {
        format!("{what} on {addr} ({reach})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_say_what_they_reach_and_when_they_are_the_default() {
        let loopback = "127.0.0.1:4317".parse().unwrap();
        assert_eq!(
            listener_description("OTLP/gRPC", "grpc", loopback, Some(loopback)),
            "OTLP/gRPC on 127.0.0.1:4317 (loopback only: the default; set receivers.otlp.grpc to choose)"
        );
        assert_eq!(
            listener_description("OTLP/HTTP", "http", "0.0.0.0:4318".parse().unwrap(), None),
            "OTLP/HTTP on 0.0.0.0:4318 (all interfaces)"
        );
    }
}
