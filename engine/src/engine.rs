//! Process start-up and shutdown: resolve cores, build the mesh, bind the
//! telemetry endpoints, start one pinned executor per core, wait for them to
//! serve, and drain them on SIGTERM/SIGINT.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use shardtel_config::Config;

use crate::core::{self, CoreSetup};
use crate::mesh;
use crate::telemetry::{self, Board};

/// Why the engine could not run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The core list could not be resolved.
    #[error("invalid core layout: {0}")]
    Cores(String),
    /// A telemetry address could not be bound.
    #[error("failed to bind the {what} endpoint on {addr}: {source}")]
    Bind {
        /// Which endpoint.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A reactor failed to start.
    #[error("failed to start the reactor for cpu {cpu}: {message}")]
    Executor {
        /// The CPU.
        cpu: usize,
        /// What went wrong.
        message: String,
    },
    /// A core failed during start-up.
    #[error("{0}")]
    Startup(String),
    /// Signal handling could not be installed.
    #[error("failed to install signal handlers: {0}")]
    Signals(std::io::Error),
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
    let cpus = config
        .engine
        .cores
        .resolve()
        .map_err(|e| EngineError::Cores(e.to_string()))?;
    let cores = cpus.len();
    let _data_dir_lock = crate::durability::lock_data_dir(&config).map_err(EngineError::Startup)?;
    crate::durability::report_orphaned_logs(&config);
    let board = Board::new(cores);
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
        telemetry::serve(listener, board.clone(), endpoint);
        log::info!("{what} endpoint on http://{addr}");
    }

    let (config, memory) =
        crate::memory_limiter::setup(config, cores).map_err(EngineError::Startup)?;
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
        };
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shardtel-core{id}"))
            .spawn(move || core::run(setup))
            .map_err(|e| EngineError::Executor {
                cpu,
                message: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..cores {
        match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(_)) => {}
            Ok(Err(message)) => {
                failure = Some(message);
                break;
            }
            Err(_) => {
                failure = Some("a core did not start within 60 s".into());
                break;
            }
        }
    }
    if let Some(message) = failure {
        shutdown.store(true, Ordering::Release);
        for h in handles {
            let _ = h.join();
        }
        return Err(EngineError::Startup(message));
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
