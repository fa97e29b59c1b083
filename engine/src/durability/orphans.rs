//! Logs no core of this process owns: ingest logs and export queues of cores that no longer
//! exist (the core count shrank), drained by the remaining cores, and queues of exporters no
//! longer configured, reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use shardtel_config::{Config, WalConfig};
use shardtel_protocol::Signal;
use shardtel_sinks::ExportQueue;

use super::ingest_log::{Checkpoints, IngestLog, Tracked, CHECKPOINT_EVERY};

/// The orphaned logs core `core` of `cores` drains: ingest logs and exporter queues of cores
/// `core + k * cores` (k ≥ 1) that exist on disk, as (ingest dirs, (exporter, queue dir)).
pub fn orphans_of(
    config: &Config,
    data_dir: &Path,
    core: usize,
    cores: usize,
) -> (Vec<PathBuf>, Vec<(String, PathBuf)>) {
    let mine = |n: usize| n >= cores && n % cores == core;
    let core_of = |name: &std::ffi::OsStr| -> Option<usize> {
        name.to_str()?.strip_prefix("core")?.parse().ok()
    };
    let mut ingest = Vec::new();
    if let Ok(entries) = std::fs::read_dir(data_dir.join("ingest")) {
        for e in entries.flatten() {
            if core_of(&e.file_name()).is_some_and(mine) {
                ingest.push(e.path());
            }
        }
    }
    let root = data_dir.join("queues");
    let mut queues = Vec::new();
    for name in config.exporters.keys() {
        let Some(dir) = shardtel_sinks::queue_dir(&root, name, 0)
            .parent()
            .map(Path::to_path_buf)
        else {
            continue;
        };
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if core_of(&e.file_name()).is_some_and(mine) {
                    queues.push((name.clone(), e.path()));
                }
            }
        }
    }
    ingest.sort();
    queues.sort();
    (ingest, queues)
}

/// Replays the ingest logs in `dirs` (of cores that no longer exist) on core `core`, handing
/// each frame to `replay` (which routes it through the core's own ingest log), waits until
/// their frames are released, then removes them.
pub async fn drain_orphaned_ingest_logs<F, Fut>(
    core: usize,
    dirs: &[PathBuf],
    cfg: &WalConfig,
    checkpoints: &Checkpoints,
    mut replay: F,
) where
    F: FnMut(Signal, Tracked) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for dir in dirs {
        let orphan = match IngestLog::open_dir(dir, core, cfg, checkpoints.clone()).await {
            Ok(orphan) => orphan,
            Err(e) => {
                log::error!("core {core}: {e}");
                continue;
            }
        };
        log::info!(
            "core {core}: draining the orphaned ingest log {} ({} requests)",
            dir.display(),
            orphan.recovered_frames()
        );
        let replayed = orphan.replay(&mut replay).await;
        if !replayed.complete {
            // What was not read stays in the directory for the next start.
            orphan.close().await;
            log::error!(
                "core {core}: the orphaned ingest log {} was not drained whole; it is kept \
                 for the next start",
                dir.display()
            );
            continue;
        }
        let n = replayed.frames;
        while orphan.unreleased_frames() > 0 {
            orphan.advance();
            glommio::timer::sleep(CHECKPOINT_EVERY).await;
        }
        orphan.close().await;
        drop(orphan);
        let path = dir.clone();
        let _ = glommio::executor()
            .spawn_blocking(move || std::fs::remove_dir_all(path))
            .await;
        log::info!(
            "core {core}: drained {n} requests of the orphaned ingest log {}",
            dir.display()
        );
    }
}

/// Moves each orphaned export queue into this core's queue of the same exporter, in the
/// background.
pub fn adopt_orphaned_queues(
    queues: &BTreeMap<String, Rc<ExportQueue>>,
    orphans: Vec<(String, PathBuf)>,
) {
    for (name, dir) in orphans {
        let Some(queue) = queues.get(&name).cloned() else {
            continue;
        };
        glommio::spawn_local(async move {
            match queue.adopt_orphan(&dir).await {
                Ok(n) => log::info!(
                    "exporter {name}: moved {n} batches of the orphaned queue {}",
                    dir.display()
                ),
                Err(e) => log::error!("exporter {name}: orphaned queue {}: {e}", dir.display()),
            }
        })
        .detach();
    }
}

/// Warns about write-ahead logs no core will open (at start-up, with `std::fs`): queues of
/// exporters no longer configured, when they still hold data. (Logs of cores that no longer
/// exist are drained by the remaining cores, see [`orphans_of`].)
pub fn report_orphaned_logs(config: &Config) {
    let root = config.engine.data_dir.join("queues");
    let Ok(exporters) = std::fs::read_dir(&root) else {
        return;
    };
    for exporter in exporters.flatten() {
        let configured = config.exporters.keys().any(|name| {
            shardtel_sinks::queue_dir(&root, name, 0).parent() == Some(&exporter.path())
        });
        if configured {
            continue;
        }
        let bytes: u64 = walk_segments(&exporter.path());
        if bytes > 0 {
            log::warn!(
                "{} holds {bytes} bytes of queued batches of an exporter that is no longer configured; they are not sent: configure the exporter again to send them, or remove the directory",
                exporter.path().display()
            );
        }
    }
}

fn walk_segments(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk_segments(&path)
            } else if path.extension().is_some_and(|x| x == "seg") {
                e.metadata().map_or(0, |m| m.len())
            } else {
                0
            }
        })
        .sum()
}
