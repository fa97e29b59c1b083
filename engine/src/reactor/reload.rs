//! A reload reaching a core: the process sends each core a [`ReloadMessage`] through its own
//! channel; the serving core reads its channel between its periodic tasks (never on the data
//! path) and applies it on its own reactor, in two steps (prepare on every core, then commit or
//! abort), answering each with a [`ReloadReply`].

use std::sync::mpsc;
use std::sync::Arc;

use shardtel_config::reload::LiveChanges;
use shardtel_config::Config;

use super::Core;
use crate::pipeline::{ExporterTls, PreparedReload};

/// What the process asks of a core.
pub enum ReloadMessage {
    /// Build what `changes` need from `config`; change nothing yet.
    Prepare {
        /// The new configuration, validated and fitted to the memory limit.
        config: Arc<Config>,
        /// What changes.
        changes: Arc<LiveChanges>,
        /// The TLS settings of its exporters with `https://` endpoints (files read by the
        /// process, never on a reactor).
        exporter_tls: Arc<ExporterTls>,
    },
    /// Swap in what was prepared.
    Commit,
    /// Drop what was prepared.
    Abort,
}

/// A core's answer: its index, and whether the step worked (or why not).
pub type ReloadReply = (usize, Result<(), String>);

/// A core's end of the reload channels.
pub struct ReloadInbox {
    /// Messages from the process.
    pub messages: mpsc::Receiver<ReloadMessage>,
    /// Where the core answers.
    pub replies: mpsc::Sender<ReloadReply>,
}

impl ReloadInbox {
    /// Handles the messages waiting, if any; `prepared` holds what a `Prepare` built until the
    /// `Commit` or `Abort` that follows.
    pub(super) async fn handle_waiting(&self, core: &Core, prepared: &mut Option<PreparedReload>) {
        while let Ok(message) = self.messages.try_recv() {
            let outcome = match message {
                ReloadMessage::Prepare {
                    config,
                    changes,
                    exporter_tls,
                } => {
                    let built = core
                        .pipeline
                        .prepare_reload(&config, &changes, &exporter_tls);
                    match built.await {
                        Ok(p) => {
                            *prepared = Some(p);
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                ReloadMessage::Commit => match prepared.take() {
                    Some(p) => {
                        core.pipeline.apply_reload(p);
                        Ok(())
                    }
                    None => Err("nothing prepared".to_string()),
                },
                ReloadMessage::Abort => {
                    *prepared = None;
                    Ok(())
                }
            };
            let _ = self.replies.send((core.id, outcome));
        }
    }
}
