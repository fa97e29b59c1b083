//! `[engine.wal]`: the write-ahead logs — the ingest log of every core (used with
//! `engine.durability = "ack_after_sync"`) and the disk export queues share these settings.

use std::time::Duration;

use crate::decode::{self, Decoder, Section};

/// `[engine.wal]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Bound on each core's ingest log: bytes of requests on disk whose spans are not yet
    /// decided and handed to the export queues. When full, receivers refuse with a retryable
    /// error. Default 1 GiB.
    pub ingest_max_bytes: u64,
    /// Segment files are pre-allocated to this size and rolled over when full. Default 64 MiB;
    /// a log uses segments of at most an eighth of its `max_bytes`.
    pub segment_size: u64,
    /// How long the first request of a group commit may wait for others. Default 2 ms.
    pub group_commit_interval: Duration,
    /// A group commit starts at once when this many bytes wait. Default 1 MiB.
    pub group_commit_bytes: u64,
}

impl WalConfig {
    /// The keys `[engine.wal]` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "ingest_max_bytes",
        "segment_size",
        "group_commit_interval",
        "group_commit_bytes",
    ];
    /// Smallest `segment_size`.
    pub const MIN_SEGMENT_SIZE: u64 = 64 << 10;
    /// Smallest `ingest_max_bytes`.
    pub const MIN_INGEST_MAX_BYTES: u64 = 1 << 20;
    /// Longest `group_commit_interval`.
    pub const MAX_GROUP_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

    /// The segment size for a log bounded by `max_bytes`: `segment_size`, but at most an
    /// eighth of the bound (so that consumed segments waiting for deletion never fill it), at
    /// least [`WalConfig::MIN_SEGMENT_SIZE`], a multiple of 4 KiB.
    pub fn segment_bytes_for(&self, max_bytes: u64) -> u64 {
        let segment = self
            .segment_size
            .min(max_bytes / 8)
            .max(Self::MIN_SEGMENT_SIZE);
        segment / 4096 * 4096
    }
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            ingest_max_bytes: 1 << 30,
            segment_size: 64 << 20,
            group_commit_interval: Duration::from_millis(2),
            group_commit_bytes: 1 << 20,
        }
    }
}

pub(crate) fn decode(d: &mut Decoder<'_>, engine: &Section<'_, '_>) -> WalConfig {
    let s = d.section(engine, "wal", WalConfig::KEYS);
    let default = WalConfig::default();
    WalConfig {
        ingest_max_bytes: d.field_or(&s, "ingest_max_bytes", default.ingest_max_bytes, |v| {
            decode::min_size(decode::size(v)?, WalConfig::MIN_INGEST_MAX_BYTES)
        }),
        segment_size: d.field_or(&s, "segment_size", default.segment_size, |v| {
            decode::min_size(decode::size(v)?, WalConfig::MIN_SEGMENT_SIZE)
        }),
        group_commit_interval: d.field_or(
            &s,
            "group_commit_interval",
            default.group_commit_interval,
            |v| {
                let interval = decode::duration(v)?;
                if interval > WalConfig::MAX_GROUP_COMMIT_INTERVAL {
                    return Err(crate::ConfigErrorKind::TooLarge {
                        value: crate::format_duration(interval),
                        max: crate::format_duration(WalConfig::MAX_GROUP_COMMIT_INTERVAL),
                    });
                }
                Ok(interval)
            },
        ),
        group_commit_bytes: d.field_or(&s, "group_commit_bytes", default.group_commit_bytes, |v| {
            decode::min_size(decode::size(v)?, 4096)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_bytes_follow_the_bound() {
        let c = WalConfig::default();
        assert_eq!(c.segment_bytes_for(1 << 30), 64 << 20);
        assert_eq!(c.segment_bytes_for(64 << 20), 8 << 20);
        assert_eq!(c.segment_bytes_for(1 << 20), 128 << 10);
        assert_eq!(c.segment_bytes_for(4096), WalConfig::MIN_SEGMENT_SIZE);
    }
}
