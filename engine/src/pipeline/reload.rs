//! A reload on this core, in two steps so that every core changes or none does:
//! [`Pipeline::prepare_reload`] builds what the new configuration needs (processors compiled,
//! the sampler's policies checked, changed exporters started) and can fail;
//! [`Pipeline::apply_reload`] swaps it in at once and cannot fail.
//!
//! What a swap leaves alone: a request being processed finishes with the processors it started
//! with (it holds them); an export queue keeps what it holds, its counters and its disk log,
//! and sends it with the new settings from its next attempt on (attempts in flight finish with
//! the old ones; see `shardtel_sinks::ExportQueue::apply_settings`); the sampler keeps every
//! buffered trace (see `shardtel_sampler::Sampler::reconfigure` for which policies decide which
//! trace).

use std::rc::Rc;

use shardtel_config::reload::LiveChanges;
use shardtel_config::{Config, ProcessorConfig, TailSamplingConfig};
use shardtel_processors::Processors;
use shardtel_sampler::{CoreShare, Sampler};
use shardtel_sinks::{ExportQueue, PreparedSettings};

use super::{BuildError, ExporterTls, Pipeline};

/// What a core built for a reload, waiting for every other core to have built theirs.
/// `!Send`: it stays on its core.
pub struct PreparedReload {
    processors: Option<Processors>,
    sampler: Option<TailSamplingConfig>,
    exporters: Vec<(Rc<ExportQueue>, PreparedSettings)>,
}

/// Why a core could not prepare a reload.
pub type ReloadError = Box<BuildError>;

impl Pipeline {
    /// Builds what `changes` need from `config` (validated, and fitted to the memory limit like
    /// the running one; `exporter_tls`: its exporters' TLS, read off the reactors); nothing
    /// changes yet.
    pub async fn prepare_reload(
        &self,
        config: &Config,
        changes: &LiveChanges,
        exporter_tls: &ExporterTls,
    ) -> Result<PreparedReload, ReloadError> {
        let processors = if changes.processors {
            Some(Processors::build(config).map_err(|e| Box::new(BuildError::from(e)))?)
        } else {
            None
        };
        let sampler = match (changes.sampler, tail_sampling(config)) {
            (true, Some((name, cfg))) => {
                // Compiled here so that applying cannot fail.
                let share = CoreShare {
                    core: self.core,
                    cores: self.cores,
                };
                Sampler::new(cfg, share).map_err(|source| {
                    Box::new(BuildError::Sampler {
                        name: name.to_string(),
                        source,
                    })
                })?;
                Some(cfg.clone())
            }
            _ => None,
        };
        let exporters = self.exporters.prepare_settings(
            config,
            &changes.exporters,
            self.cores,
            exporter_tls,
        )?;
        Ok(PreparedReload {
            processors,
            sampler,
            exporters,
        })
    }

    /// Swaps in what [`Pipeline::prepare_reload`] built.
    pub fn apply_reload(&self, prepared: PreparedReload) {
        let PreparedReload {
            processors,
            sampler,
            exporters,
        } = prepared;
        if let Some(mut new) = processors {
            new.carry_over(&self.processors());
            self.processors.replace(Rc::new(new));
        }
        if let (Some(cfg), Some(sampler)) = (sampler, &self.sampler) {
            let share = CoreShare {
                core: self.core,
                cores: self.cores,
            };
            if let Err(e) = sampler.borrow_mut().reconfigure(&cfg, share) {
                // prepare_reload compiled the same policies.
                log::error!(
                    "core {}: tail sampling policies not reloaded: {e}",
                    self.core
                );
            }
        }
        for (queue, settings) in exporters {
            queue.apply_settings(settings);
        }
    }
}

/// The tail sampler of the traces pipeline in `config`: its name and settings.
fn tail_sampling(config: &Config) -> Option<(&str, &TailSamplingConfig)> {
    config
        .pipelines
        .traces
        .as_ref()?
        .processors
        .iter()
        .find_map(|name| match config.processors.get(name) {
            Some(ProcessorConfig::TailSampling(cfg)) => Some((name.as_str(), cfg)),
            _ => None,
        })
}
