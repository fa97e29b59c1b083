//! Straggler compaction: the few spans still buffered from a mostly released request buffer are
//! copied into a small buffer of their own, so the big one can be freed.
//!
//! This is the sampler's only copy of span bytes. It happens when a retained batch is *sparse*
//! (`table::BatchCost::is_sparse`: some of this core's spans in it are decided, and the rest,
//! counted at the part's average span size, need less than a quarter of what the core is
//! charged for the buffer) and has stayed so for a quarter of `decision_wait`. So it copies only
//! spans of traces that outlive most of their request's other traces by a long way, and each
//! copy is small next to the charge it releases (see the module docs of [`super`]).

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use shardtel_protocol::scan::{ResourceEntry, ScopeEntry, SpanBatch, SpanEntry, TracesIndex};

use super::table::span_field_len;

const TAG_SPANS: u8 = 2 << 3 | 2;

/// A new batch holding only spans `live` (ascending indices into `batch.index.spans`) of
/// `batch`, with their resources' and scopes' header fields; span `live[k]` of `batch` is span
/// `k` of the result. The buffer is laid out as the re-framing encoder reads it (header fields,
/// then each span as a `spans` field), and every vector is allocated to its exact size.
pub(crate) fn compact(batch: &SpanBatch, live: &[u32]) -> SpanBatch {
    debug_assert!(live.windows(2).all(|w| w[0] < w[1]));
    let old = &batch.index;
    let buf = &batch.buf;
    let header_bytes = |h: &Range<u32>| -> usize {
        old.headers[h.start as usize..h.end as usize]
            .iter()
            .map(|r| (r.end - r.start) as usize)
            .sum()
    };
    // Sizes first, for exact allocations.
    let (mut resources, mut scopes, mut headers, mut bytes) = (0, 0, 0, 0usize);
    walk(old, live, |resource, scope, span| {
        for h in resource
            .map(|r| &r.headers)
            .into_iter()
            .chain(scope.map(|s| &s.headers))
        {
            headers += (h.end - h.start) as usize;
            bytes += header_bytes(h);
        }
        resources += usize::from(resource.is_some());
        scopes += usize::from(scope.is_some());
        bytes += span_field_len(u64::from(span.range.end - span.range.start)) as usize;
    });
    let mut out = BytesMut::with_capacity(bytes);
    let mut index = TracesIndex {
        resources: Vec::with_capacity(resources),
        scopes: Vec::with_capacity(scopes),
        spans: Vec::with_capacity(live.len()),
        headers: Vec::with_capacity(headers),
    };
    let copy_headers = |h: &Range<u32>, out: &mut BytesMut, new: &mut Vec<Range<u32>>| {
        let first = new.len() as u32;
        for r in &old.headers[h.start as usize..h.end as usize] {
            let at = out.len() as u32;
            out.put_slice(&buf[r.start as usize..r.end as usize]);
            new.push(at..out.len() as u32);
        }
        first..new.len() as u32
    };
    walk(old, live, |resource, scope, span| {
        if let Some(r) = resource {
            let headers = copy_headers(&r.headers, &mut out, &mut index.headers);
            index.resources.push(ResourceEntry { headers });
        }
        if let Some(s) = scope {
            let headers = copy_headers(&s.headers, &mut out, &mut index.headers);
            index.scopes.push(ScopeEntry {
                resource: index.resources.len() as u32 - 1,
                headers,
            });
        }
        let body = &buf[span.range.start as usize..span.range.end as usize];
        out.put_u8(TAG_SPANS);
        let mut len = body.len() as u64;
        while len >= 0x80 {
            out.put_u8((len as u8) | 0x80);
            len >>= 7;
        }
        out.put_u8(len as u8);
        let at = out.len() as u32;
        out.put_slice(body);
        index.spans.push(SpanEntry {
            scope: index.scopes.len() as u32 - 1,
            range: at..out.len() as u32,
            trace_id: span.trace_id,
        });
    });
    debug_assert_eq!(out.len(), bytes);
    let buf: Bytes = out.freeze();
    SpanBatch { buf, index }
}

/// Visits spans `live` of `index` in order, each with the resource and the scope it opens (the
/// first span under a resource or scope), if any.
fn walk<'a>(
    index: &'a TracesIndex,
    live: &[u32],
    mut visit: impl FnMut(Option<&'a ResourceEntry>, Option<&'a ScopeEntry>, &'a SpanEntry),
) {
    let (mut last_scope, mut last_resource) = (u32::MAX, u32::MAX);
    for &i in live {
        let span = &index.spans[i as usize];
        let (mut resource, mut scope) = (None, None);
        if span.scope != last_scope {
            let s = &index.scopes[span.scope as usize];
            if s.resource != last_resource {
                resource = Some(&index.resources[s.resource as usize]);
                last_resource = s.resource;
            }
            scope = Some(s);
            last_scope = span.scope;
        }
        visit(resource, scope, span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::table::batch_cost;
    use crate::sampler::testing::{batch_of, kv, span, ResourceSpec};
    use shardtel_protocol::proto::common::v1::any_value::Value;
    use shardtel_protocol::reframe::{encode_trace_spans, Encoded};

    fn encoded(batch: &SpanBatch, spans: &[u32]) -> Vec<u8> {
        let mut enc = Encoded::default();
        encode_trace_spans(batch, spans, &mut enc);
        enc.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn keeps_the_spans_and_their_resources_and_scopes_only() {
        let res = |name: &str| ResourceSpec {
            attrs: vec![kv("service.name", Value::StringValue(name.into()))],
        };
        let batch = batch_of(&[
            (res("a"), vec![span(1, 1), span(2, 1).pad(300), span(3, 1)]),
            (res("b"), vec![span(4, 1), span(5, 1)]),
            (res("c"), vec![span(6, 1).pad(200)]),
        ]);
        let live = [1, 4, 5];
        let small = compact(&batch, &live);
        // The same request as encoding those spans from the original buffer.
        assert_eq!(
            encoded(&small, &[0, 1, 2]),
            encoded(&batch, &live),
            "compacted spans re-encode identically"
        );
        assert_eq!(
            (
                small.index.resources.len(),
                small.index.scopes.len(),
                small.index.spans.len()
            ),
            (3, 3, 3)
        );
        for (k, &i) in live.iter().enumerate() {
            assert_eq!(
                small.index.spans[k].trace_id,
                batch.index.spans[i as usize].trace_id
            );
            assert_eq!(small.span_body(k), batch.span_body(i as usize));
        }
        // Exact allocations; the whole buffer is this core's part.
        let cost = batch_cost(&small);
        assert_eq!(cost.own, cost.buf);
        assert_eq!(small.index.spans.capacity(), 3);
        assert!(cost.buf < batch.buf.len() as u64);
        // A subset of one resource.
        let one = compact(&batch, &[2]);
        assert_eq!(encoded(&one, &[0]), encoded(&batch, &[2]));
        assert_eq!(one.index.resources.len(), 1);
    }
}
