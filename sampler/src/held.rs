//! Retained batches in the sampler's own form: the request's index without a trace id per span.
//!
//! While a batch is retained, every span of it the sampler still needs is referenced from its
//! pending trace (`table::SpanRef`), and that trace knows the id. So [`super::Sampler::add`]
//! converts the batch's span entries (28 bytes each: scope, range, trace id) into
//! [`HeldSpan`]s (12 bytes: scope, range) in one sequential pass into one vector per batch,
//! and kept spans get their trace id back from their trace when they are exported
//! ([`HeldBatch::kept`]). That is 16 bytes less per buffered span.

use std::ops::Range;

use bytes::Bytes;
use shardtel_protocol::scan::{
    ReleaseToken, ResourceEntry, Rewrites, ScopeEntry, SpanBatch, SpanEntry, TracesIndex,
};
use shardtel_protocol::span::SpanView;
use shardtel_protocol::TraceId;

/// A retained span: its scope and its body's range in the buffer (`SpanEntry` without the
/// trace id).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeldSpan {
    /// Index into [`HeldIndex::scopes`].
    pub(crate) scope: u32,
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl HeldSpan {
    fn of(e: &SpanEntry) -> HeldSpan {
        HeldSpan {
            scope: e.scope,
            start: e.range.start,
            end: e.range.end,
        }
    }

    /// The body's length in the buffer.
    pub(crate) fn len(&self) -> u32 {
        self.end - self.start
    }
}

/// [`TracesIndex`] with [`HeldSpan`]s (same fields, same invariants).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeldIndex {
    pub(crate) resources: Vec<ResourceEntry>,
    pub(crate) scopes: Vec<ScopeEntry>,
    /// One entry per span, allocated to its exact size.
    pub(crate) spans: Vec<HeldSpan>,
    pub(crate) headers: Vec<Range<u32>>,
    pub(crate) rewrites: Rewrites,
    pub(crate) span_prefixes_minimal: bool,
}

/// [`SpanBatch`] with a [`HeldIndex`].
#[derive(Clone)]
pub(crate) struct HeldBatch {
    pub(crate) buf: Bytes,
    pub(crate) index: HeldIndex,
    pub(crate) release_token: Option<ReleaseToken>,
}

impl std::fmt::Debug for HeldBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldBatch")
            .field("buf", &self.buf)
            .field("index", &self.index)
            .field("release_token", &self.release_token.is_some())
            .finish()
    }
}

impl HeldBatch {
    /// `batch` in the held form, and its span entries (for their trace ids while it is
    /// added): one pass over the entries, one allocation.
    pub(crate) fn split(batch: SpanBatch) -> (HeldBatch, Vec<SpanEntry>) {
        let SpanBatch {
            buf,
            index:
                TracesIndex {
                    resources,
                    scopes,
                    spans: entries,
                    headers,
                    rewrites,
                    span_prefixes_minimal,
                },
            release_token,
        } = batch;
        let spans = entries.iter().map(HeldSpan::of).collect();
        let held = HeldBatch {
            buf,
            index: HeldIndex {
                resources,
                scopes,
                spans,
                headers,
                rewrites,
                span_prefixes_minimal,
            },
            release_token,
        };
        (held, entries)
    }

    /// The bytes of span `i`'s body (its rewritten body, if a processor rewrote it).
    #[inline]
    pub(crate) fn span(&self, i: usize) -> &[u8] {
        if let Some(b) = self.index.rewrites.span(i as u32) {
            return b;
        }
        let s = &self.index.spans[i];
        &self.buf[s.start as usize..s.end as usize]
    }

    /// Span `i`'s trace id, read from its body (`None` for a span whose bytes are not held, or
    /// without a valid trace id). For the rare paths that need the id of a span they do not
    /// reach through its trace.
    pub(crate) fn read_trace_id(&self, i: usize) -> Option<TraceId> {
        let body = self.span(i);
        if body.is_empty() {
            return None;
        }
        TraceId::try_from(SpanView::new(body).trace_id()).ok()
    }

    /// A batch of spans `spans` (ascending span indices, each with its trace id) for export:
    /// span `spans[k]` is span `k` of the result. The buffer is shared, the resources, scopes
    /// and header ranges are copied whole (allocations per batch, not per span).
    pub(crate) fn kept(&self, spans: &[(u32, TraceId)]) -> SpanBatch {
        debug_assert!(spans.windows(2).all(|w| w[0].0 < w[1].0));
        let held = &self.index;
        let entries = spans
            .iter()
            .map(|&(i, trace_id)| {
                let s = held.spans[i as usize];
                SpanEntry {
                    scope: s.scope,
                    range: s.start..s.end,
                    trace_id,
                }
            })
            .collect();
        let rewrites = if held.rewrites.is_empty() {
            Rewrites::default()
        } else {
            Rewrites {
                spans: spans
                    .iter()
                    .enumerate()
                    .filter_map(|(k, &(i, _))| Some((k as u32, held.rewrites.span(i)?.clone())))
                    .collect(),
                resources: held.rewrites.resources.clone(),
            }
        };
        SpanBatch {
            buf: self.buf.clone(),
            index: TracesIndex {
                resources: held.resources.clone(),
                scopes: held.scopes.clone(),
                spans: entries,
                headers: held.headers.clone(),
                rewrites,
                span_prefixes_minimal: held.span_prefixes_minimal,
            },
            release_token: self.release_token.clone(),
        }
    }
}

#[cfg(test)]
impl HeldBatch {
    /// Every span as a [`SpanBatch`], with the trace ids read from the spans' bodies (zero for
    /// a span whose bytes are not held).
    pub(crate) fn to_batch(&self) -> SpanBatch {
        let ids: Vec<(u32, TraceId)> = (0..self.index.spans.len())
            .map(|i| (i as u32, self.read_trace_id(i).unwrap_or_default()))
            .collect();
        self.kept(&ids)
    }
}

#[cfg(test)]
impl From<SpanBatch> for HeldBatch {
    fn from(batch: SpanBatch) -> HeldBatch {
        HeldBatch::split(batch).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{batch_of, kv, span, ResourceSpec};
    use shardtel_protocol::proto::common::v1::any_value::Value;

    #[test]
    fn a_held_span_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<HeldSpan>(), 12);
        assert_eq!(std::mem::size_of::<SpanEntry>(), 28);
    }

    #[test]
    fn kept_spans_get_their_trace_ids_back() {
        let res = |name: &str| ResourceSpec {
            attrs: vec![kv("service.name", Value::StringValue(name.into()))],
        };
        let batch = batch_of(&[
            (res("a"), vec![span(1, 1), span(2, 1).pad(30)]),
            (res("b"), vec![span(3, 1), span(4, 1)]),
        ]);
        let original = batch.clone();
        let (held, entries) = HeldBatch::split(batch);
        assert_eq!(entries, original.index.spans);
        assert_eq!(held.index.spans.capacity(), 4);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(held.span(i), original.span(i));
            assert_eq!(held.read_trace_id(i), Some(e.trace_id));
        }
        let pick = [(1, entries[1].trace_id), (3, entries[3].trace_id)];
        let kept = held.kept(&pick);
        let mut a = shardtel_protocol::reframe::Encoded::default();
        shardtel_protocol::reframe::encode_trace_spans(&kept, &[0, 1], &mut a);
        let mut b = shardtel_protocol::reframe::Encoded::default();
        shardtel_protocol::reframe::encode_trace_spans(&original, &[1, 3], &mut b);
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(kept.index.spans[0], original.index.spans[1]);
        assert_eq!(kept.index.spans[1], original.index.spans[3]);
    }

    #[test]
    fn kept_spans_keep_what_processors_rewrote() {
        let res = |name: &str| ResourceSpec {
            attrs: vec![kv("service.name", Value::StringValue(name.into()))],
        };
        let mut batch = batch_of(&[(res("a"), vec![span(1, 1), span(2, 1), span(3, 1)])]);
        let other = batch_of(&[(res("b"), vec![span(2, 9).pad(40)])]);
        let header = other.index.resources[0].headers.clone();
        let header = &other.index.headers[header.start as usize..header.end as usize];
        let header = other
            .buf
            .slice(header[0].start as usize..header[header.len() - 1].end as usize);
        batch.index.rewrites.spans.push((1, other.span_body(0)));
        batch.index.rewrites.resources.push((0, header));
        let original = batch.clone();
        let held = HeldBatch::from(batch);
        let ids = |i: usize| (i as u32, original.index.spans[i].trace_id);
        let kept = held.kept(&[ids(1), ids(2)]);
        assert_eq!(kept.index.rewrites.spans.len(), 1);
        assert_eq!(kept.index.rewrites.spans[0].0, 0);
        let mut a = shardtel_protocol::reframe::Encoded::default();
        shardtel_protocol::reframe::encode_trace_spans(&kept, &[0, 1], &mut a);
        let mut b = shardtel_protocol::reframe::Encoded::default();
        shardtel_protocol::reframe::encode_trace_spans(&original, &[1, 2], &mut b);
        assert_eq!(a.to_bytes(), b.to_bytes());
    }
}
