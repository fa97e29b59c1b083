//! Counters of one exporter on one core, published as `Copy` snapshots: the queue's, which
//! every kind has, and a slot for each kind's own counters (defined with that kind:
//! [`crate::KafkaProducerStats`], [`crate::prometheus::ConversionStats`]).

use shardtel_protocol::Signal;

/// Snapshot of one exporter instance on one core. Arrays are indexed by
/// [`Signal::index`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExporterStats {
    /// Spans / points / records the backend accepted.
    pub sent_items: [u64; 3],
    /// Items that failed permanently, ran out of retries, or were rejected in
    /// a partial success.
    pub failed_items: [u64; 3],
    /// Export requests (batches) that succeeded, including partial successes.
    pub sent_requests: [u64; 3],
    /// Export requests that failed permanently or ran out of retries.
    pub failed_requests: [u64; 3],
    /// Items refused by `try_push` with `QueueFull`.
    pub refused_items: [u64; 3],
    /// Retried attempts per signal.
    pub retries_by_signal: [u64; 3],
    /// Retried attempts, all signals.
    pub retries: u64,
    /// Bytes held: open batches, queued batches and batches in flight.
    pub queue_bytes: usize,
    /// Closed batches waiting for a sender.
    pub queued_batches: usize,
    /// Batches being sent (including those waiting to retry).
    pub in_flight: usize,
    /// Message counters of a `kafka` exporter (zero for other kinds).
    pub kafka: crate::kafka::KafkaProducerStats,
    /// Conversion counters of a `prometheusremotewrite` exporter (zero for other kinds).
    pub prometheus: crate::prometheus::ConversionStats,
    /// The disk queue's log, with `queue.storage = "disk"`.
    pub disk: Option<shardtel_wal::WalStats>,
}

/// The counters of one signal, picked out of an [`ExporterStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalStats {
    /// See [`ExporterStats::sent_items`].
    pub sent_items: u64,
    /// See [`ExporterStats::failed_items`].
    pub failed_items: u64,
    /// See [`ExporterStats::sent_requests`].
    pub sent_requests: u64,
    /// See [`ExporterStats::failed_requests`].
    pub failed_requests: u64,
    /// See [`ExporterStats::refused_items`].
    pub refused_items: u64,
    /// See [`ExporterStats::retries_by_signal`].
    pub retries: u64,
}

impl ExporterStats {
    /// The counters of `signal`.
    pub fn signal(&self, signal: Signal) -> SignalStats {
        let i = signal.index();
        SignalStats {
            sent_items: self.sent_items[i],
            failed_items: self.failed_items[i],
            sent_requests: self.sent_requests[i],
            failed_requests: self.failed_requests[i],
            refused_items: self.refused_items[i],
            retries: self.retries_by_signal[i],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_picks_its_column() {
        let mut stats = ExporterStats::default();
        stats.sent_items[Signal::Metrics.index()] = 3;
        stats.retries_by_signal[Signal::Logs.index()] = 2;
        assert_eq!(stats.signal(Signal::Metrics).sent_items, 3);
        assert_eq!(stats.signal(Signal::Traces).sent_items, 0);
        assert_eq!(stats.signal(Signal::Logs).retries, 2);
        for (i, signal) in Signal::ALL.into_iter().enumerate() {
            assert_eq!(signal.index(), i);
        }
    }
}
