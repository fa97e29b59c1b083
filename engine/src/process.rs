//! The process: lock the data directory, read the TLS files and tokens of the edges, fit memory
//! to the limit, bind the telemetry endpoints, start one pinned reactor per core with its ends
//! of the mesh, wait for them to serve, and drain them on SIGTERM/SIGINT.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use shardtel_config::Config;

use crate::durability::{self, DataDirError};
use crate::memory_limiter::{self, MemoryLimiterError};
use crate::pipeline::{self, mesh, BuildError};
use crate::reactor::snapshot::CoreSnapshot;
use crate::reactor::{self, CoreSetup, CoreStartError};
use crate::receivers::otlp::{connections, OtlpSecurity, SecurityError};
use crate::telemetry::{self, Board};

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
    /// The OTLP listeners' TLS files or token file could not be read or parsed.
    #[error(transparent)]
    ReceiverSecurity(#[from] SecurityError),
    /// An exporter's TLS files could not be read or parsed.
    #[error(transparent)]
    ExporterTls(Box<BuildError>),
    /// Signal handling could not be installed.
    #[error("failed to install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// Runs shardtel until SIGTERM or SIGINT, then drains and returns.
pub fn run(config: Config) -> Result<(), EngineError> {
    let shutdown = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(EngineError::Signals)?;
    {
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("shardtel-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if shutdown.swap(true, Ordering::AcqRel) {
                        log::warn!("second signal {sig}: exiting without draining");
                        std::process::exit(130);
                    }
                    log::info!("signal {sig}: draining (send it again to exit at once)");
                }
            })
            .map_err(EngineError::Signals)?;
    }
    run_until(config, shutdown)
}

/// Runs until `shutdown` is set, then drains and returns.
pub fn run_until(config: Config, shutdown: Arc<AtomicBool>) -> Result<(), EngineError> {
    let cpus = config.engine.cores.resolve().map_err(EngineError::Cores)?;
    let cores = cpus.len();
    let _data_dir_lock = durability::lock_data_dir(&config)?;
    durability::report_orphaned_logs(&config);
    // Certificates, keys and tokens are read here, never on a reactor; their reload threads
    // re-read them.
    let otlp_security = match &config.receivers.otlp {
        Some(otlp) => OtlpSecurity::new(otlp)?,
        None => OtlpSecurity::default(),
    };
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
    let config = Arc::new(config);
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(cores);
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
            otlp_security: otlp_security.clone(),
            exporter_tls: exporter_tls.clone(),
        };
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shardtel-core{id}"))
            .spawn(move || reactor::run(setup))
            .map_err(|source| EngineError::Executor { cpu, source })?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..cores {
        match ready_rx.recv_timeout(CORE_START_TIMEOUT) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                failure = Some(EngineError::CoreStart(Box::new(e)));
                break;
            }
            Err(_) => {
                failure = Some(EngineError::CoreStartTimeout);
                break;
            }
        }
    }
    if let Some(e) = failure {
        shutdown.store(true, Ordering::Release);
        for h in handles {
            let _ = h.join();
        }
        return Err(e);
    }
    if let Some(otlp) = &config.receivers.otlp {
        let addrs: Vec<String> = [
            otlp.grpc.map(|a| format!("OTLP/gRPC on {a}")),
            otlp.http.map(|a| format!("OTLP/HTTP on {a}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        log::info!(
            "serving {} on {cores} cores (cpus {cpus:?})",
            addrs.join(", ")
        );
    }
    for h in handles {
        let _ = h.join();
    }
    log::info!("drained; exiting");
    Ok(())
}
