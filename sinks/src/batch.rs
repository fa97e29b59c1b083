//! Per-signal batches bounded by item count, bytes and age.
//!
//! A batch is the concatenation of encoded `Export*ServiceRequest` pieces of
//! one signal: protobuf concatenation of repeated fields is itself a valid
//! request, so pieces are kept as `Bytes` chunks and never copied together.

use std::time::{Duration, Instant};

use bytes::Bytes;
use shardtel_protocol::reframe::Encoded;
use shardtel_protocol::scan::SpanBatch;
use shardtel_protocol::Signal;
use std::sync::Arc;

/// Limits of one batch (from `shardtel_config::BatchConfig`); zero means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchLimits {
    /// Close the batch once it holds this many items.
    pub max_items: usize,
    /// Close the batch before it would grow past this many bytes. A single
    /// piece larger than this becomes a batch of its own.
    pub max_bytes: usize,
    /// Close the batch this long after its first piece (zero: at once).
    pub timeout: Duration,
}

/// A closed batch: one export request's worth of one signal.
#[derive(Clone, Debug)]
pub(crate) struct Batch {
    /// The signal of every piece.
    pub signal: Signal,
    /// The request, in pieces.
    pub chunks: Vec<Bytes>,
    /// Total length of `chunks`.
    pub bytes: usize,
    /// Bytes it is charged against the queue's `max_bytes`: `bytes`, or more when its chunks
    /// keep larger buffers alive (see [`crate::ExportQueue::try_push_held`]).
    pub held: usize,
    /// Spans, points or records in it.
    pub items: u64,
    /// Traces only, for queues that keep them (see [`crate::ExportQueue::wants_span_index`]):
    /// each piece's spans as its owner core indexed them, in piece order — when every piece
    /// came with its index; empty otherwise (and always after a disk queue). Shared with the
    /// core that made them, never copied; the buffers are the chunks' own, and the index
    /// entries (about 30 bytes per span) are not charged against `queue.max_bytes`, which
    /// bounds them through the spans' bytes.
    pub traces: Vec<Arc<SpanBatch>>,
}

impl Batch {
    /// `chunks` as one contiguous buffer (copies unless there is one chunk).
    pub(crate) fn join(chunks: &[Bytes]) -> Bytes {
        match chunks {
            [one] => one.clone(),
            chunks => {
                let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
                for chunk in chunks {
                    out.extend_from_slice(chunk);
                }
                Bytes::from(out)
            }
        }
    }
}

#[derive(Debug, Default)]
struct OpenBatch {
    chunks: Vec<Bytes>,
    bytes: usize,
    held: usize,
    items: u64,
    opened_at: Option<Instant>,
    traces: Vec<Arc<SpanBatch>>,
    /// A piece came without its index: the batch hands over none.
    unindexed: bool,
}

impl OpenBatch {
    fn take(&mut self, signal: Signal) -> Option<Batch> {
        self.opened_at.take()?;
        let mut traces = std::mem::take(&mut self.traces);
        if std::mem::replace(&mut self.unindexed, false) {
            traces.clear();
        }
        Some(Batch {
            signal,
            chunks: std::mem::take(&mut self.chunks),
            bytes: std::mem::replace(&mut self.bytes, 0),
            held: std::mem::replace(&mut self.held, 0),
            items: std::mem::replace(&mut self.items, 0),
            traces,
        })
    }
}

const SIGNALS: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

/// The open batches of one exporter on one core, one per signal.
#[derive(Debug)]
pub(crate) struct Batcher {
    limits: BatchLimits,
    open: [OpenBatch; 3],
}

impl Batcher {
    pub(crate) fn new(limits: BatchLimits) -> Self {
        Self {
            limits,
            open: Default::default(),
        }
    }

    /// Adds a piece; hands every batch this closes to `emit` (at most two:
    /// the one the piece did not fit into, and the one it filled).
    /// Returns true when the piece opened a new batch (the timer must look).
    #[cfg(test)]
    pub(crate) fn push(
        &mut self,
        signal: Signal,
        piece: Encoded,
        items: u64,
        now: Instant,
        emit: impl FnMut(Batch),
    ) -> bool {
        self.push_held(signal, piece, None, 0, items, now, emit)
    }

    /// [`Batcher::push`] of a piece charged `held` bytes (at least its length), with its spans'
    /// index when the queue keeps them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push_held(
        &mut self,
        signal: Signal,
        piece: Encoded,
        index: Option<Arc<SpanBatch>>,
        held: usize,
        items: u64,
        now: Instant,
        mut emit: impl FnMut(Batch),
    ) -> bool {
        let limits = self.limits;
        let open = &mut self.open[signal.index()];
        if open.opened_at.is_some()
            && limits.max_bytes > 0
            && open.bytes + piece.len > limits.max_bytes
        {
            if let Some(batch) = open.take(signal) {
                emit(batch);
            }
        }
        let opened = open.opened_at.is_none();
        if opened {
            open.opened_at = Some(now);
        }
        open.bytes += piece.len;
        open.held += held.max(piece.len);
        open.items += items;
        open.chunks.extend(piece.chunks);
        match index {
            Some(index) if !open.unindexed => open.traces.push(index),
            Some(_) => {}
            None => {
                open.unindexed = true;
                open.traces.clear();
            }
        }
        let full = (limits.max_items > 0 && open.items >= limits.max_items as u64)
            || (limits.max_bytes > 0 && open.bytes >= limits.max_bytes)
            || limits.timeout.is_zero();
        if full {
            if let Some(batch) = open.take(signal) {
                emit(batch);
            }
            return false;
        }
        opened
    }

    /// When the oldest open batch times out.
    /// New limits for the batches opened from now on (a reload).
    pub(crate) fn set_limits(&mut self, limits: BatchLimits) {
        self.limits = limits;
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.open
            .iter()
            .filter_map(|b| b.opened_at)
            .min()
            .map(|opened| opened + self.limits.timeout)
    }

    /// Closes the batches whose timeout passed at `now`.
    pub(crate) fn flush_expired(&mut self, now: Instant, mut emit: impl FnMut(Batch)) {
        let timeout = self.limits.timeout;
        for (open, signal) in self.open.iter_mut().zip(SIGNALS) {
            if open.opened_at.is_some_and(|t| t + timeout <= now) {
                if let Some(batch) = open.take(signal) {
                    emit(batch);
                }
            }
        }
    }

    /// Closes every open batch.
    pub(crate) fn flush_all(&mut self, mut emit: impl FnMut(Batch)) {
        for (open, signal) in self.open.iter_mut().zip(SIGNALS) {
            if let Some(batch) = open.take(signal) {
                emit(batch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(len: usize) -> Encoded {
        Encoded {
            chunks: vec![Bytes::from(vec![0u8; len])],
            len,
        }
    }

    fn limits(max_items: usize, max_bytes: usize, timeout_ms: u64) -> BatchLimits {
        BatchLimits {
            max_items,
            max_bytes,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn closes_at_max_items() {
        let mut batcher = Batcher::new(limits(10, 0, 1000));
        let now = Instant::now();
        let mut out = Vec::new();
        assert!(batcher.push(Signal::Traces, piece(5), 4, now, |b| out.push(b)));
        assert!(!batcher.push(Signal::Traces, piece(5), 4, now, |b| out.push(b)));
        assert!(out.is_empty());
        batcher.push(Signal::Traces, piece(5), 4, now, |b| out.push(b));
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].items, out[0].bytes, out[0].chunks.len()),
            (12, 15, 3)
        );
        assert_eq!(batcher.next_deadline(), None);
    }

    #[test]
    fn never_grows_past_max_bytes() {
        let mut batcher = Batcher::new(limits(0, 100, 1000));
        let now = Instant::now();
        let mut out = Vec::new();
        batcher.push(Signal::Logs, piece(60), 1, now, |b| out.push(b));
        // 60 + 60 > 100: the first batch closes, the piece starts a new one.
        assert!(batcher.push(Signal::Logs, piece(60), 1, now, |b| out.push(b)));
        assert_eq!(out.iter().map(|b| b.bytes).collect::<Vec<_>>(), [60]);
        // Exactly reaching the limit closes it.
        batcher.push(Signal::Logs, piece(40), 1, now, |b| out.push(b));
        assert_eq!(out.iter().map(|b| b.bytes).collect::<Vec<_>>(), [60, 100]);
        // An oversized piece is a batch of its own.
        batcher.push(Signal::Logs, piece(10), 1, now, |b| out.push(b));
        batcher.push(Signal::Logs, piece(500), 1, now, |b| out.push(b));
        assert_eq!(
            out.iter().map(|b| b.bytes).collect::<Vec<_>>(),
            [60, 100, 10, 500]
        );
    }

    #[test]
    fn signals_batch_separately_and_time_out() {
        let mut batcher = Batcher::new(limits(100, 0, 50));
        let t0 = Instant::now();
        let mut out = Vec::new();
        batcher.push(Signal::Traces, piece(1), 1, t0, |b| out.push(b));
        let t1 = t0 + Duration::from_millis(20);
        batcher.push(Signal::Metrics, piece(2), 1, t1, |b| out.push(b));
        assert_eq!(
            batcher.next_deadline(),
            Some(t0 + Duration::from_millis(50))
        );
        batcher.flush_expired(t0 + Duration::from_millis(50), |b| out.push(b));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].signal, Signal::Traces);
        assert_eq!(
            batcher.next_deadline(),
            Some(t1 + Duration::from_millis(50))
        );
        batcher.flush_all(|b| out.push(b));
        assert_eq!(out[1].signal, Signal::Metrics);
        assert_eq!(batcher.next_deadline(), None);
    }

    #[test]
    fn zero_timeout_closes_every_push() {
        let mut batcher = Batcher::new(limits(100, 0, 0));
        let mut out = Vec::new();
        assert!(!batcher.push(Signal::Traces, piece(3), 1, Instant::now(), |b| out.push(b)));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn join_concatenates_chunks() {
        let batch = Batch {
            signal: Signal::Traces,
            chunks: vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")],
            bytes: 3,
            held: 3,
            items: 1,
            traces: Vec::new(),
        };
        assert_eq!(Batch::join(&batch.chunks), Bytes::from_static(b"abc"));
    }
}
