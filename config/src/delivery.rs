//! The delivery settings every exporter shares: `[exporters.NAME.batch]`, `.retry` and
//! `.queue` (how batches are cut, retried and held), decoded the same way for every type.

use std::time::Duration;

use toml::de::DeValue;

use crate::decode::{self, Decoder, Section};
use crate::engine::Durability;

/// `[exporters.NAME.batch]`: a batch is sent when it reaches `max_items` or `max_bytes`, or
/// `timeout` after its first item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Items (spans, metric data points, log records) per batch, at least 1. Default 8192.
    pub max_items: usize,
    /// Encoded bytes per batch, at least 1 KiB. Default 4 MiB.
    pub max_bytes: usize,
    /// Longest time an item waits in an unfilled batch. Default 200ms.
    pub timeout: Duration,
}

impl BatchConfig {
    /// The keys `batch` accepts.
    pub const KEYS: &'static [&'static str] = &["max_items", "max_bytes", "timeout"];
    /// Smallest accepted `max_bytes`.
    pub const MIN_BYTES: u64 = 1 << 10;
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_items: 8192,
            max_bytes: 4 << 20,
            timeout: Duration::from_millis(200),
        }
    }
}

/// `[exporters.NAME.retry]`: exponential backoff for failed exports that can be retried.
///
/// [`Default`] gives the defaults with `engine.durability = "none"`; a decoded configuration
/// gets `max_elapsed_time` for its durability ([`RetryConfig::default_max_elapsed_time`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Retry at all. Default true.
    pub enabled: bool,
    /// Wait before the first retry; doubles each time. Default 100ms.
    pub initial_interval: Duration,
    /// Longest wait between two attempts. Default 5s.
    pub max_interval: Duration,
    /// Give up on a batch after this long; zero retries forever. Default: zero (never give
    /// up) with `engine.durability = "ack_after_sync"`, 300s with `"none"`
    /// ([`Self::default_max_elapsed_time`]).
    pub max_elapsed_time: Duration,
}

impl RetryConfig {
    /// The keys `retry` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "enabled",
        "initial_interval",
        "max_interval",
        "max_elapsed_time",
    ];

    /// The default `max_elapsed_time` with `engine.durability = durability` (applied when the
    /// file leaves it out, in `exporters::resolve_delivery_defaults`). With `"ack_after_sync"`
    /// zero, retry until the destination accepts: a batch given up is released from the
    /// ingest log (and checkpointed past in a disk queue), so giving up after a while would
    /// lose acknowledged data whenever a destination is down longer than that. The bounded
    /// queue then fills and receivers refuse with retryable errors, which pushes the waiting
    /// back to the clients. With `"none"` 300s, the OpenTelemetry Collector's default.
    pub fn default_max_elapsed_time(durability: Durability) -> Duration {
        match durability {
            Durability::AckAfterSync => Duration::ZERO,
            Durability::None => Duration::from_secs(300),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(5),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

/// `[exporters.NAME.queue]`: batches waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Where batches wait. Default: `disk` with `engine.durability = "ack_after_sync"`,
    /// `memory` with `"none"`; `memory` for `kafka` exporters ([`Self::default_storage`]).
    pub storage: QueueStorage,
    /// Bytes queued per core (on disk, or in memory); when full, receivers refuse new data with
    /// a retryable error, or the oldest data is dropped with `overflow = "drop_oldest"`.
    /// Default 1 GiB on disk, 64 MiB in memory.
    pub max_bytes: usize,
    /// What a full queue does. Default [`QueueOverflow::Refuse`].
    pub overflow: QueueOverflow,
}

/// `queue.storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueStorage {
    /// `"disk"`: a write-ahead log per core under `engine.data_dir/queues/NAME/coreN`.
    Disk,
    /// `"memory"`: lost on a crash.
    Memory,
}

/// `queue.overflow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueOverflow {
    /// `"refuse"`: receivers refuse new data with a retryable error (gRPC `UNAVAILABLE`, HTTP
    /// 503 with `Retry-After`).
    Refuse,
    /// `"drop_oldest"`: the oldest queued data (a whole segment) is dropped and counted
    /// (disk queues only).
    DropOldest,
}

impl QueueConfig {
    /// The keys `queue` accepts.
    pub const KEYS: &'static [&'static str] = &["storage", "max_bytes", "overflow"];
    /// Default `max_bytes` of a disk queue.
    pub const DISK_MAX_BYTES: usize = 1 << 30;
    /// Default `max_bytes` of a memory queue.
    pub const MEMORY_MAX_BYTES: usize = 64 << 20;

    /// The default `storage` of an exporter's queue: `disk` with `engine.durability =
    /// "ack_after_sync"`, `memory` with `"none"` — except for `kafka` exporters, whose queue is
    /// in memory either way. Kafka is itself a replicated log: with durability on, a batch
    /// keeps its ingest-log frames until the broker acknowledged every message of it, so a
    /// crash replays it from the ingest log, and a disk queue would only write every batch a
    /// second time (it cost the gateway 16 % of its throughput; `BENCHMARKS.md`). What a
    /// disk queue adds is room to spill while the broker is down; `storage = "disk"` keeps it.
    pub fn default_storage(kafka: bool, durability: Durability) -> QueueStorage {
        if kafka {
            QueueStorage::Memory
        } else {
            Self::for_durability(durability).storage
        }
    }

    /// The defaults with `engine.durability = durability`.
    pub fn for_durability(durability: Durability) -> Self {
        match durability {
            Durability::AckAfterSync => QueueConfig::default(),
            Durability::None => QueueConfig {
                storage: QueueStorage::Memory,
                max_bytes: Self::MEMORY_MAX_BYTES,
                overflow: QueueOverflow::Refuse,
            },
        }
    }
}

impl Default for QueueConfig {
    /// The defaults with the default durability (`ack_after_sync`): 1 GiB on disk, refuse.
    fn default() -> Self {
        QueueConfig {
            storage: QueueStorage::Disk,
            max_bytes: Self::DISK_MAX_BYTES,
            overflow: QueueOverflow::Refuse,
        }
    }
}

pub(crate) fn decode_batch(d: &mut Decoder<'_>, parent: &Section<'_, '_>) -> BatchConfig {
    let s = d.section(parent, "batch", BatchConfig::KEYS);
    let default = BatchConfig::default();
    BatchConfig {
        max_items: d.field_or(&s, "max_items", default.max_items, |v| {
            Ok(decode::in_range(decode::count(v, u64::MAX)?, 1, 1 << 24)? as usize)
        }),
        max_bytes: d.field_or(&s, "max_bytes", default.max_bytes, |v| {
            Ok(decode::min_size(decode::size(v)?, BatchConfig::MIN_BYTES)? as usize)
        }),
        timeout: d.field_or(&s, "timeout", default.timeout, decode::duration),
    }
}

pub(crate) fn decode_retry(d: &mut Decoder<'_>, parent: &Section<'_, '_>) -> RetryConfig {
    let s = d.section(parent, "retry", RetryConfig::KEYS);
    let default = RetryConfig::default();
    let interval =
        |v: &DeValue<'_>| decode::min_duration(decode::duration(v)?, Duration::from_millis(1));
    RetryConfig {
        enabled: d.field_or(&s, "enabled", default.enabled, decode::boolean),
        initial_interval: d.field_or(&s, "initial_interval", default.initial_interval, interval),
        max_interval: d.field_or(&s, "max_interval", default.max_interval, interval),
        max_elapsed_time: d.field_or(
            &s,
            "max_elapsed_time",
            default.max_elapsed_time,
            decode::duration,
        ),
    }
}

/// Decodes `queue`. `storage` and `max_bytes` left out get their defaults for
/// `engine.durability` later, in `exporters::resolve_queue_defaults`.
pub(crate) fn decode_queue(d: &mut Decoder<'_>, parent: &Section<'_, '_>) -> QueueConfig {
    let s = d.section(parent, "queue", QueueConfig::KEYS);
    let default = QueueConfig::default();
    QueueConfig {
        storage: d.field_or(&s, "storage", default.storage, |v| {
            Ok(match decode::one_of(v, &["disk", "memory"])? {
                "disk" => QueueStorage::Disk,
                _ => QueueStorage::Memory,
            })
        }),
        max_bytes: d.field_or(&s, "max_bytes", default.max_bytes, |v| {
            Ok(decode::min_size(decode::size(v)?, BatchConfig::MIN_BYTES)? as usize)
        }),
        overflow: d.field_or(&s, "overflow", default.overflow, |v| {
            Ok(match decode::one_of(v, &["refuse", "drop_oldest"])? {
                "refuse" => QueueOverflow::Refuse,
                _ => QueueOverflow::DropOldest,
            })
        }),
    }
}
