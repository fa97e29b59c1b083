//! Sampler statistics: what a [`super::Sampler`] counts, read by the engine as a snapshot once
//! a second (it describes them as the `shardtel_sampler_*` metric families).
//! Counters only grow; the `buffered_*` and decision cache sizes describe the moment of the
//! snapshot.

use hdrhistogram::Histogram;

use super::policy::Vote;
use super::DecisionReason;

/// Votes of one top-level policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyStats {
    /// The policy's name.
    pub name: String,
    /// Whether it is a `drop` policy (votes drop or not-sample, never sample).
    pub is_drop: bool,
    /// Traces it voted to sample.
    pub sample: u64,
    /// Traces it did not vote to sample (for a `drop` policy: traces it did not match).
    pub not_sample: u64,
    /// Traces a `drop` policy matched (and so dropped).
    pub drop: u64,
}

impl PolicyStats {
    pub(crate) fn count(&mut self, vote: Vote) {
        match vote {
            Vote::Sample => self.sample += 1,
            Vote::NotSample => self.not_sample += 1,
            Vote::Drop => self.drop += 1,
        }
    }
}

/// Statistics of one core's sampler. Cheap to clone for a published snapshot except for the
/// latency histogram (a few KiB).
#[derive(Clone, Debug)]
pub struct SamplerStats {
    /// Spans given to [`super::Sampler::add`].
    pub spans_received: u64,
    /// Traces that started buffering (a trace whose cached decision was forgotten and that
    /// receives spans again counts again).
    pub traces_received: u64,
    /// Decided traces, by reason (index: [`DecisionReason::index`]).
    pub decisions: [u64; DecisionReason::ALL.len()],
    /// Traces decided sampled.
    pub traces_sampled: u64,
    /// Traces decided not sampled.
    pub traces_not_sampled: u64,
    /// Spans of traces decided sampled (at decision time; late spans not included).
    pub spans_sampled: u64,
    /// Spans of traces decided not sampled.
    pub spans_not_sampled: u64,
    /// Spans of already-sampled traces forwarded as they arrived.
    pub late_spans_forwarded: u64,
    /// Spans of already-not-sampled traces dropped as they arrived.
    pub late_spans_dropped: u64,
    /// Traces dropped undecided at shutdown (`on_shutdown = "drop"`).
    pub shutdown_dropped_traces: u64,
    /// Their spans.
    pub shutdown_dropped_spans: u64,
    /// Per top-level policy, in configuration order.
    pub policies: Vec<PolicyStats>,
    /// Decision time − first span's arrival, in microseconds (1% precision, clamped to
    /// [`SamplerStats::MAX_LATENCY_US`]).
    pub decision_latency_us: Histogram<u64>,
    /// Sum of the recorded latencies, in microseconds.
    pub decision_latency_sum_us: u64,
    /// Traces buffered now.
    pub buffered_traces: u64,
    /// Spans buffered now.
    pub buffered_spans: u64,
    /// Wire bytes of the buffered spans.
    pub buffered_span_bytes: u64,
    /// Bytes charged against `max_buffered_bytes_per_core`: this core's share of every retained
    /// request buffer (at least a quarter of it), their indexes, and the trace table entries.
    pub buffered_bytes: u64,
    /// Request batches retained now.
    pub buffered_batches: u64,
    /// Trace ids in the decision cache as sampled.
    pub cache_sampled: u64,
    /// Trace ids in the decision cache as not sampled.
    pub cache_not_sampled: u64,
    /// Sparse batches whose buffered spans were copied into a small buffer of their own.
    pub compactions: u64,
    /// Spans copied by those compactions.
    pub compacted_spans: u64,
    /// Bytes of the buffers they made (the bytes copied).
    pub compacted_bytes: u64,
    /// Batches compressed (`buffer_compression = "lz4"`): one per added batch with buffered
    /// spans, one per compaction.
    pub compressed_batches: u64,
    /// Bytes they held before compression (spans and their resource and scope headers).
    pub compression_in_bytes: u64,
    /// Bytes of the compressed blocks made.
    pub compression_out_bytes: u64,
    /// Time spent copying and compressing them, in nanoseconds.
    pub compression_nanos: u64,
    /// Compressed blocks held now.
    pub compressed_held_bytes: u64,
    /// Their size uncompressed.
    pub compressed_held_plain_bytes: u64,
    /// Blocks decompressed (to export kept spans, or to compact), not counting cache hits.
    pub decompressions: u64,
    /// Bytes they gave.
    pub decompressed_bytes: u64,
    /// Time spent decompressing, in nanoseconds.
    pub decompression_nanos: u64,
    /// Kept spans exported from an already decompressed block.
    pub decompression_cache_hits: u64,
    /// Bytes of decompressed blocks kept for the next decisions (bounded, not charged).
    pub decompressed_cached_bytes: u64,
}

impl SamplerStats {
    /// Largest recorded decision latency (24 h, the longest `decision_wait`); larger values
    /// are recorded as this.
    pub const MAX_LATENCY_US: u64 = 24 * 3600 * 1_000_000;
    /// Precision of the latency histogram: 2 significant digits (1%), about 30 KiB.
    pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 2;

    /// Zeroed statistics for the top-level policies `(name, is_drop)`, in configuration order.
    pub fn new(policies: impl Iterator<Item = (String, bool)>) -> Self {
        SamplerStats {
            spans_received: 0,
            traces_received: 0,
            decisions: [0; DecisionReason::ALL.len()],
            traces_sampled: 0,
            traces_not_sampled: 0,
            spans_sampled: 0,
            spans_not_sampled: 0,
            late_spans_forwarded: 0,
            late_spans_dropped: 0,
            shutdown_dropped_traces: 0,
            shutdown_dropped_spans: 0,
            policies: policies
                .map(|(name, is_drop)| PolicyStats {
                    name,
                    is_drop,
                    sample: 0,
                    not_sample: 0,
                    drop: 0,
                })
                .collect(),
            decision_latency_us: Histogram::new_with_bounds(
                1,
                Self::MAX_LATENCY_US,
                Self::LATENCY_SIGNIFICANT_DIGITS,
            )
            .expect("valid histogram bounds"),
            decision_latency_sum_us: 0,
            buffered_traces: 0,
            buffered_spans: 0,
            buffered_span_bytes: 0,
            buffered_bytes: 0,
            buffered_batches: 0,
            cache_sampled: 0,
            cache_not_sampled: 0,
            compactions: 0,
            compacted_spans: 0,
            compacted_bytes: 0,
            compressed_batches: 0,
            compression_in_bytes: 0,
            compression_out_bytes: 0,
            compression_nanos: 0,
            compressed_held_bytes: 0,
            compressed_held_plain_bytes: 0,
            decompressions: 0,
            decompressed_bytes: 0,
            decompression_nanos: 0,
            decompression_cache_hits: 0,
            decompressed_cached_bytes: 0,
        }
    }

    /// Traces decided for `reason`.
    pub fn decided(&self, reason: DecisionReason) -> u64 {
        self.decisions[reason.index()]
    }

    /// Traces decided for any reason.
    pub fn decided_total(&self) -> u64 {
        self.decisions.iter().sum()
    }

    /// Traces decided early because a bound would have been crossed.
    pub fn decided_early(&self) -> u64 {
        DecisionReason::ALL
            .iter()
            .filter(|r| r.is_bound())
            .map(|r| self.decided(*r))
            .sum()
    }
}
