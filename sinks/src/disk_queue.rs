//! The disk side of an [`crate::ExportQueue`] with `queue.storage = "disk"`: closed batches are
//! appended to a per-core write-ahead log (`shardtel-wal`), senders read them back in order and
//! the log's checkpoint advances past a batch only once the destination accepted it (or it
//! failed for good).
//!
//! Frame of a batch: type = 1 + signal index, payload = items (u64 little-endian) followed by
//! the encoded `Export*ServiceRequest`.
//!
//! Memory stays flat whatever the backlog: batches wait in memory only until their append is
//! durable (bounded by `DiskQueueSettings::memory_bytes`), senders read one frame each from disk (or from the
//! log's small cache of recent commits), and nothing else is held.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use glommio::sync::Semaphore;
use shardtel_config::QueueOverflow;
use shardtel_protocol::Signal;
use shardtel_wal::{Append, Wal, WalError, WalOptions, WalReader, WalStats};

use crate::batch::Batch;

/// Per-frame bytes besides the request: the header and the item count.
const FRAME_OVERHEAD: usize = shardtel_wal::frame::HEADER_LEN + 8;

/// Where and how an exporter's disk queue lives (from `engine.data_dir` and `[engine.wal]`).
#[derive(Clone, Debug)]
pub struct DiskQueueSettings {
    /// The root of all queues: `engine.data_dir/queues`.
    pub root: PathBuf,
    /// Segment size before the queue's own bound is applied (`[engine.wal] segment_size`).
    pub segment_size: u64,
    /// `[engine.wal] group_commit_interval`.
    pub group_commit_interval: std::time::Duration,
    /// `[engine.wal] group_commit_bytes`.
    pub group_commit_bytes: usize,
    /// Bytes of batches a disk queue holds in memory until they are durable (open batches,
    /// closed batches waiting for their append, appends waiting for their group commit), at
    /// most its `max_bytes`. Default [`DiskQueueSettings::MEMORY_BYTES`]; the memory limiter may lower it.
    pub memory_bytes: usize,
    /// Bytes of recent commits a disk queue keeps in memory for senders that are caught up.
    /// Default [`DiskQueueSettings::CACHE_BYTES`]; the memory limiter may lower it.
    pub cache_bytes: usize,
}

impl DiskQueueSettings {
    /// Default of [`DiskQueueSettings::memory_bytes`].
    pub const MEMORY_BYTES: usize = 64 << 20;
    /// Default of [`DiskQueueSettings::cache_bytes`].
    pub const CACHE_BYTES: usize = 8 << 20;

    /// What one disk queue of `max_bytes` holds in memory at most, besides batches being sent:
    /// appends not yet durable and the cache of recent commits.
    pub fn memory_bound(memory_bytes: usize, cache_bytes: usize, max_bytes: usize) -> usize {
        memory_bytes.min(max_bytes) + cache_bytes
    }
}

/// The directory of exporter `name`'s queue on `core`: `root/NAME/coreN`, with every byte of
/// the name outside `[A-Za-z0-9._-]` written as `%XX` (so `otlp/tempo` is `otlp%2Ftempo`).
pub fn queue_dir(root: &Path, name: &str, core: usize) -> PathBuf {
    let mut escaped = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') && !name.starts_with('.') {
            escaped.push(b as char);
        } else {
            escaped.push_str(&format!("%{b:02X}"));
        }
    }
    root.join(escaped).join(format!("core{core}"))
}

pub(crate) struct DiskQueue {
    wal: Wal,
    overflow: QueueOverflow,
    memory_bytes: usize,
    reader: RefCell<Option<WalReader>>,
    read_lock: Semaphore,
    in_flight: RefCell<BTreeSet<u64>>,
    fetched_upto: Cell<u64>,
    corrupt_frames: Cell<u64>,
}

impl DiskQueue {
    pub(crate) async fn open(
        dir: &Path,
        name: &str,
        core: usize,
        max_bytes: usize,
        overflow: QueueOverflow,
        settings: &DiskQueueSettings,
    ) -> Result<DiskQueue, WalError> {
        let max_bytes = max_bytes as u64;
        let segment = settings
            .segment_size
            .min(max_bytes / 8)
            .max(64 << 10)
            .div_ceil(4096)
            * 4096;
        let options = WalOptions {
            segment_bytes: segment,
            max_bytes,
            group_commit_interval: settings.group_commit_interval,
            group_commit_bytes: settings.group_commit_bytes,
            checkpoint_interval: std::time::Duration::from_millis(200),
            cache_bytes: settings.cache_bytes,
            name: format!("exporter {name} (core {core}) disk queue"),
        };
        let wal = Wal::open(dir, options).await?;
        let recovery = wal.recovery();
        if recovery.recovered_frames > 0 {
            log::info!(
                "exporter {name} (core {core}): resuming {} queued batches from disk",
                recovery.recovered_frames
            );
        }
        let start = wal.checkpoint_lsn();
        Ok(DiskQueue {
            reader: RefCell::new(Some(wal.reader(start))),
            wal,
            overflow,
            memory_bytes: settings.memory_bytes.min(max_bytes as usize).max(1),
            read_lock: Semaphore::new(1),
            in_flight: RefCell::new(BTreeSet::new()),
            fetched_upto: Cell::new(start),
            corrupt_frames: Cell::new(0),
        })
    }

    /// Whether a piece of `bytes` may join the `held` bytes in memory: within the memory bound
    /// (or alone), and with room on disk for everything held. With `drop_oldest`, the oldest
    /// segments are dropped (counted) to make room.
    pub(crate) fn admits(&self, held: usize, bytes: usize) -> bool {
        if held + bytes > self.memory_bytes && held > 0 {
            return false;
        }
        loop {
            if self.wal.has_room(held + bytes + FRAME_OVERHEAD) {
                return true;
            }
            if self.overflow != QueueOverflow::DropOldest || !self.drop_oldest() {
                return false;
            }
        }
    }

    /// Drops the oldest segment; false when there is none to drop.
    pub(crate) fn drop_oldest(&self) -> bool {
        match self.wal.drop_oldest_segment() {
            Some((frames, bytes)) => {
                log::warn!(
                    "{}: full; dropped the oldest {frames} batches ({bytes} bytes)",
                    self.wal.dir().display()
                );
                true
            }
            None => false,
        }
    }

    pub(crate) fn overflow(&self) -> QueueOverflow {
        self.overflow
    }

    /// Appends a closed batch (never waits; see [`Append::durable`]).
    pub(crate) fn append(&self, batch: &Batch) -> Result<Append, WalError> {
        let mut payload = Vec::with_capacity(batch.chunks.len() + 1);
        payload.push(Bytes::copy_from_slice(&batch.items.to_le_bytes()));
        payload.extend(batch.chunks.iter().cloned());
        self.wal.append(1 + batch.signal.index() as u8, payload)
    }

    /// The next batch to send and its LSN, waiting until one is durable; `None` once the log
    /// is closed. Frames that do not decode are counted, logged and skipped.
    pub(crate) async fn fetch(&self) -> Result<Option<(u64, Batch)>, WalError> {
        let Ok(_permit) = self.read_lock.acquire_permit(1).await else {
            return Ok(None);
        };
        loop {
            let Some(mut reader) = self.reader.borrow_mut().take() else {
                return Ok(None);
            };
            let read = reader.next_wait().await;
            *self.reader.borrow_mut() = Some(reader);
            let Some(frame) = read? else { return Ok(None) };
            self.fetched_upto.set(frame.lsn + 1);
            let signal = match frame.kind {
                1 => Some(Signal::Traces),
                2 => Some(Signal::Metrics),
                3 => Some(Signal::Logs),
                _ => None,
            };
            let (Some(signal), Some(items)) = (signal, frame.payload.get(..8)) else {
                self.corrupt_frames.set(self.corrupt_frames.get() + 1);
                log::error!(
                    "{}: skipping frame {} of unknown type {}",
                    self.wal.dir().display(),
                    frame.lsn,
                    frame.kind
                );
                self.done(frame.lsn);
                continue;
            };
            let items = u64::from_le_bytes(items.try_into().expect("8 bytes"));
            let request = frame.payload.slice(8..);
            self.in_flight.borrow_mut().insert(frame.lsn);
            return Ok(Some((
                frame.lsn,
                Batch {
                    signal,
                    bytes: request.len(),
                    held: request.len(),
                    chunks: vec![request],
                    items,
                    traces: Vec::new(),
                },
            )));
        }
    }

    /// Marks the batch of `lsn` finished (accepted, or failed for good); the checkpoint moves
    /// to the lowest batch still in flight.
    pub(crate) fn done(&self, lsn: u64) {
        let mut in_flight = self.in_flight.borrow_mut();
        in_flight.remove(&lsn);
        let checkpoint = in_flight
            .first()
            .copied()
            .unwrap_or_else(|| self.fetched_upto.get());
        drop(in_flight);
        self.wal.checkpoint(checkpoint);
    }

    /// True when every durable batch was sent (or failed for good).
    pub(crate) fn is_empty(&self) -> bool {
        self.in_flight.borrow().is_empty() && self.wal.checkpoint_lsn() >= self.wal.next_lsn()
    }

    pub(crate) fn stats(&self) -> WalStats {
        self.wal.stats()
    }

    /// Commits, persists the checkpoint and stops the log's tasks.
    pub(crate) async fn close(&self) {
        self.wal.close().await;
    }

    /// Moves every batch of the queue in `orphan` (a core that no longer exists) into this
    /// queue: each is appended here and made durable before the orphan's checkpoint passes it;
    /// then the orphan's directory is removed. Returns the batches moved.
    pub(crate) async fn adopt(&self, orphan: &Path, name: &str) -> Result<u64, WalError> {
        let options = WalOptions {
            name: format!("exporter {name} orphaned queue {}", orphan.display()),
            ..WalOptions::default()
        };
        let old = Wal::open(orphan, options).await?;
        let mut reader = old.reader(old.checkpoint_lsn());
        let mut moved = 0;
        while let Some(frame) = reader.next().await? {
            let mut wait = std::time::Duration::from_millis(10);
            loop {
                match self.wal.append(frame.kind, vec![frame.payload.clone()]) {
                    Ok(append) => match append.durable().await {
                        Ok(_) => break,
                        Err(e) => log::warn!("{}: {e}; retrying", self.wal.dir().display()),
                    },
                    Err(e @ WalError::TooLarge { .. }) => {
                        // Cannot happen with the same segment size; if the new queue's is
                        // smaller, the batch cannot move: say so, and count it as dropped.
                        log::error!(
                            "{}: dropped a batch of {} bytes from the orphaned queue {}: {e}",
                            self.wal.dir().display(),
                            frame.payload.len(),
                            orphan.display()
                        );
                        self.wal.count_dropped(1, frame.payload.len() as u64);
                        break;
                    }
                    Err(_) => {}
                }
                glommio::timer::sleep(wait).await;
                wait = crate::retry::grow(wait, std::time::Duration::from_secs(1));
            }
            old.checkpoint(frame.lsn + 1);
            moved += 1;
        }
        old.close().await;
        drop(old);
        let dir = orphan.to_path_buf();
        let removed = glommio::executor()
            .spawn_blocking(move || std::fs::remove_dir_all(dir))
            .await;
        if let Err(e) = removed {
            log::warn!("failed to remove {}: {e}", orphan.display());
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_dirs_escape_names() {
        let root = Path::new("/d/queues");
        assert_eq!(
            queue_dir(root, "otlp/tempo", 3),
            Path::new("/d/queues/otlp%2Ftempo/core3")
        );
        assert_eq!(
            queue_dir(root, "file_traces", 0),
            Path::new("/d/queues/file_traces/core0")
        );
        assert_eq!(
            queue_dir(root, "..", 0),
            Path::new("/d/queues/%2E%2E/core0")
        );
    }
}
