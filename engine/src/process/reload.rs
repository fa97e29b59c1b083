//! Reloading the configuration (SIGHUP, `shardtel reload`) on a thread of its own, one reload
//! at a time:
//!
//! 1. read and validate the file again ([`ConfigSource`]); a file with problems changes nothing
//!    and each problem is logged;
//! 2. compare it with the running one (`shardtel_config::reload::compare`): keys that only a
//!    restart can change refuse the whole reload, naming every such key;
//! 3. ask every core to prepare the change on its own reactor; if one cannot, every core drops
//!    what it prepared (nothing changed);
//! 4. ask every core to commit: each swaps the new processors, sampler settings and export
//!    queues in at once, between two of its own tasks (no lock on the data path).
//!
//! Each reload is counted by outcome (`shardtel_config_reloads_total{result}`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use shardtel_config::reload::{self, LiveChanges};
use shardtel_config::Config;

use crate::reactor::reload::{ReloadMessage, ReloadReply};
use crate::reactor::snapshot::CoreSnapshot;
use crate::telemetry::{Board, ReloadOutcome};

/// Reads and validates the configuration file again: the configuration, or every problem
/// found (one per line).
pub type ConfigSource = Box<dyn Fn() -> Result<Config, String> + Send>;

/// How long a core has to answer one step of a reload (preparing starts changed exporters).
const CORE_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The reload thread's state.
pub(super) struct Reloader {
    pub(super) source: ConfigSource,
    /// The configuration as read from the file (what a new file is compared with).
    pub(super) file_config: Config,
    /// The configuration the cores run (the file's, with buffers fitted to the memory limit).
    pub(super) running: Config,
    /// A memory limiter fitted the buffers at start-up.
    pub(super) memory_limited: bool,
    /// One channel into each core.
    pub(super) cores: Vec<mpsc::Sender<ReloadMessage>>,
    pub(super) replies: mpsc::Receiver<ReloadReply>,
    pub(super) board: Arc<Board<CoreSnapshot>>,
    pub(super) shutdown: Arc<AtomicBool>,
}

impl Reloader {
    /// Reloads once per request until the requests end or shutdown starts.
    pub(super) fn run(mut self, requests: mpsc::Receiver<()>) {
        for () in requests {
            if self.shutdown.load(Ordering::Acquire) {
                log::warn!("reload ignored: the process is draining");
                continue;
            }
            crate::telemetry::sd_notify::reloading();
            let outcome = self.reload();
            self.board.count_reload(outcome);
            crate::telemetry::sd_notify::ready(&format!("serving (last reload: {outcome:?})"));
        }
    }

    fn reload(&mut self) -> ReloadOutcome {
        log::info!("reloading the configuration");
        let new = match (self.source)() {
            Ok(config) => config,
            Err(problems) => {
                for line in problems.lines() {
                    log::error!("reload failed, nothing changed: {line}");
                }
                return ReloadOutcome::Failure;
            }
        };
        let mut changes = match reload::compare(&self.file_config, &new) {
            Ok(changes) => changes,
            Err(refused) => {
                log::error!("{refused}; nothing changed");
                return ReloadOutcome::Refused;
            }
        };
        if let Some(refused) = kafka_commit_delay_grows(&self.file_config, &new) {
            log::error!("{refused}; nothing changed");
            return ReloadOutcome::Refused;
        }
        let mut fitted = new.clone();
        if self.memory_limited {
            reload::carry_fitted_bounds(&self.running, &mut fitted);
        }
        if changes.log_level {
            set_log_level(&new.telemetry.log_level);
            changes.log_level = false;
        }
        if !changes.is_empty() {
            // Certificates and keys are read here, never on a reactor.
            let exporter_tls = match crate::pipeline::exporter_tls(&fitted) {
                Ok(tls) => Arc::new(tls),
                Err(e) => {
                    log::error!("reload failed, nothing changed: {e}");
                    return ReloadOutcome::Failure;
                }
            };
            let (config, shared) = (Arc::new(fitted.clone()), Arc::new(changes.clone()));
            let prepared = self.ask_all(|| ReloadMessage::Prepare {
                config: config.clone(),
                changes: shared.clone(),
                exporter_tls: exporter_tls.clone(),
            });
            if let Err(problems) = prepared {
                for line in &problems {
                    log::error!("reload failed, nothing changed: {line}");
                }
                let _ = self.ask_all(|| ReloadMessage::Abort);
                return ReloadOutcome::Failure;
            }
            if let Err(problems) = self.ask_all(|| ReloadMessage::Commit) {
                // Prepared on every core, so a commit cannot fail; a core that did not answer in
                // time commits when it gets to it.
                for line in &problems {
                    log::error!("reload: {line}");
                }
            }
        }
        let described = describe(&self.file_config, &new, &changes);
        self.file_config = new;
        self.running = fitted;
        log::info!("reloaded: {described}");
        ReloadOutcome::Success
    }

    /// Sends `message()` to every core and waits for every answer: the problems of those that
    /// failed or did not answer in time.
    fn ask_all(&self, message: impl Fn() -> ReloadMessage) -> Result<(), Vec<String>> {
        while self.replies.try_recv().is_ok() {} // late answers of an earlier step
        let mut problems = Vec::new();
        for (core, tx) in self.cores.iter().enumerate() {
            if tx.send(message()).is_err() {
                problems.push(format!("core {core} has stopped"));
            }
        }
        let deadline = Instant::now() + CORE_ANSWER_TIMEOUT;
        let mut answered = vec![false; self.cores.len()];
        while answered.iter().any(|a| !a) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                Ok((core, outcome)) => {
                    answered[core] = true;
                    if let Err(e) = outcome {
                        problems.push(format!("core {core}: {e}"));
                    }
                }
                Err(_) => {
                    for (core, _) in answered.iter().enumerate().filter(|(_, a)| !**a) {
                        problems.push(format!(
                            "core {core} did not answer within {} s",
                            CORE_ANSWER_TIMEOUT.as_secs()
                        ));
                    }
                    break;
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Without durability, the Kafka receiver commits an offset once its data had time to leave
/// (`commit_delay`: the commit interval plus the pipeline's longest `decision_wait` and batch
/// timeout), a delay set at start-up: a reload that would lengthen it is refused, or offsets
/// could be committed before their data left.
fn kafka_commit_delay_grows(old: &Config, new: &Config) -> Option<String> {
    let kafka = old.receivers.kafka.as_ref()?;
    if old.engine.durability == shardtel_config::Durability::AckAfterSync {
        return None;
    }
    let (before, after) = (
        crate::receivers::kafka::commit_delay(old, kafka),
        crate::receivers::kafka::commit_delay(new, kafka),
    );
    (after > before).then(|| {
        format!(
            "reload refused: the longer decision_wait or exporter batch.timeout would make the \
             Kafka receiver's commit delay {after:?} (set to {before:?} at start-up, without \
             durability); restart to apply it"
        )
    })
}

/// What a successful reload changed, for the log.
fn describe(old: &Config, new: &Config, changes: &LiveChanges) -> String {
    let mut parts = Vec::new();
    if !changes.is_empty() {
        parts.push(changes.describe());
    }
    if old.telemetry.log_level != new.telemetry.log_level {
        parts.push(format!("log level {}", new.telemetry.log_level));
    }
    if parts.is_empty() {
        "nothing the running pipelines use changed".to_string()
    } else {
        parts.join("; ")
    }
}

/// Sets the log level, unless `SHARDTEL_LOG` (which overrides the file) is set.
fn set_log_level(level: &str) {
    if std::env::var_os("SHARDTEL_LOG").is_some() {
        log::warn!("telemetry.log_level changed, but SHARDTEL_LOG overrides it");
        return;
    }
    if let Ok(filter) = level.parse::<log::LevelFilter>() {
        log::set_max_level(filter);
    }
}
