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

use bytes::{BufMut, BytesMut};
use shardtel_protocol::scan::{ResourceEntry, ScopeEntry};

use super::held::{HeldBatch, HeldIndex, HeldSpan};
use super::table::span_field_len;

const TAG_SPANS: u8 = 2 << 3 | 2;

/// A new batch holding only spans `live` (ascending indices into `batch.index.spans`) of
/// `batch`, with their resources' and scopes' header fields; span `live[k]` of `batch` is span
/// `k` of the result. The buffer is laid out as the re-framing encoder reads it (header fields,
/// then each span as a `spans` field), and every vector is allocated to its exact size.
pub(crate) fn compact(batch: &HeldBatch, live: &[u32]) -> HeldBatch {
    let (resources, scopes, headers, bytes) = sizes(batch, live);
    let mut out = BytesMut::with_capacity(bytes);
    let mut index = HeldIndex {
        resources: Vec::with_capacity(resources),
        scopes: Vec::with_capacity(scopes),
        spans: Vec::with_capacity(live.len()),
        headers: Vec::with_capacity(headers),
        rewrites: Default::default(),
        // `write` gives every span the shortest prefix.
        span_prefixes_minimal: true,
    };
    write(batch, live, &mut out, &mut index);
    debug_assert_eq!(out.len(), bytes);
    // The copy keeps what the original buffer's data depends on (with durability on: the
    // request's ingest-log frame, which must not be released while these spans are only in
    // memory), but not the original buffer itself.
    let buf = match &batch.release_token {
        Some(token) => shardtel_protocol::scan::keep_alive(out.freeze(), token.clone()),
        None => out.freeze(),
    };
    HeldBatch {
        buf,
        index,
        release_token: batch.release_token.clone(),
    }
}

/// Like [`compact`], but the copy goes to `out` (cleared first, reused between batches) and
/// the index keeps every span's position: span `i` of `batch` is span `i` of the result, and a
/// span not in `live` has an empty range (no byte of it is copied; nothing may read it). So
/// references to the batch's spans stay valid without being rewritten. Every vector of the
/// index is allocated to its exact size.
pub(crate) fn compact_in_place(batch: &HeldBatch, live: &[u32], out: &mut Vec<u8>) -> HeldIndex {
    let (resources, scopes, headers, bytes) = sizes(batch, live);
    out.clear();
    out.reserve(bytes);
    let mut index = HeldIndex {
        resources: Vec::with_capacity(resources),
        scopes: Vec::with_capacity(scopes),
        spans: Vec::with_capacity(live.len()),
        headers: Vec::with_capacity(headers),
        rewrites: Default::default(),
        // `write` gives every span the shortest prefix.
        span_prefixes_minimal: true,
    };
    write(batch, live, out, &mut index);
    debug_assert_eq!(out.len(), bytes);
    let copied = std::mem::take(&mut index.spans);
    let mut copied = copied.into_iter().peekable();
    let mut live = live.iter().peekable();
    let mut spans = Vec::with_capacity(batch.index.spans.len());
    for i in 0..batch.index.spans.len() {
        if live.next_if_eq(&&(i as u32)).is_some() {
            spans.push(copied.next().expect("one copied span per live span"));
        } else {
            // After the copied span before it, so that `scope` stays non-decreasing.
            let scope = spans.last().map_or(0, |s: &HeldSpan| s.scope);
            spans.push(HeldSpan {
                scope,
                start: 0,
                end: 0,
            });
        }
    }
    index.spans = spans;
    index
}

/// (resources, scopes, header ranges, bytes) of the copy of spans `live` of `batch`.
fn sizes(batch: &HeldBatch, live: &[u32]) -> (usize, usize, usize, usize) {
    debug_assert!(live.windows(2).all(|w| w[0] < w[1]));
    let old = &batch.index;
    let header_bytes = |h: &Range<u32>| -> usize {
        old.headers[h.start as usize..h.end as usize]
            .iter()
            .map(|r| (r.end - r.start) as usize)
            .sum()
    };
    let (mut resources, mut scopes, mut headers, mut bytes) = (0, 0, 0, 0usize);
    walk(old, live, |resource, scope, i| {
        if let Some((r, entry)) = resource {
            match old.rewrites.resource(r) {
                Some(b) => {
                    headers += 1;
                    bytes += b.len();
                }
                None => {
                    headers += (entry.headers.end - entry.headers.start) as usize;
                    bytes += header_bytes(&entry.headers);
                }
            }
        }
        if let Some(h) = scope.map(|s| &s.headers) {
            headers += (h.end - h.start) as usize;
            bytes += header_bytes(h);
        }
        resources += usize::from(resource.is_some());
        scopes += usize::from(scope.is_some());
        bytes += span_field_len(batch.span(i as usize).len() as u64) as usize;
    });
    (resources, scopes, headers, bytes)
}

/// Appends spans `live` of `batch` to `out`, laid out as the re-framing encoder reads them
/// (header fields, then each span as a `spans` field), and their entries to `index`.
fn write<B>(batch: &HeldBatch, live: &[u32], out: &mut B, index: &mut HeldIndex)
where
    B: BufMut + std::ops::Deref<Target = [u8]>,
{
    let old = &batch.index;
    let buf = &batch.buf;
    let copy_headers = |h: &Range<u32>, out: &mut B, new: &mut Vec<Range<u32>>| {
        let first = new.len() as u32;
        for r in &old.headers[h.start as usize..h.end as usize] {
            let at = out.len() as u32;
            out.put_slice(&buf[r.start as usize..r.end as usize]);
            new.push(at..out.len() as u32);
        }
        first..new.len() as u32
    };
    walk(old, live, |resource, scope, i| {
        if let Some((r, entry)) = resource {
            let headers = match old.rewrites.resource(r) {
                // A processor rewrote this resource: its new header fields, as one range.
                Some(b) => {
                    let at = out.len() as u32;
                    out.put_slice(b);
                    index.headers.push(at..out.len() as u32);
                    index.headers.len() as u32 - 1..index.headers.len() as u32
                }
                None => copy_headers(&entry.headers, out, &mut index.headers),
            };
            index.resources.push(ResourceEntry { headers });
        }
        if let Some(s) = scope {
            let headers = copy_headers(&s.headers, out, &mut index.headers);
            index.scopes.push(ScopeEntry {
                resource: index.resources.len() as u32 - 1,
                headers,
            });
        }
        // The span as processors left it (rewritten spans are not in `buf`).
        let body = batch.span(i as usize);
        out.put_u8(TAG_SPANS);
        let mut len = body.len() as u64;
        while len >= 0x80 {
            out.put_u8((len as u8) | 0x80);
            len >>= 7;
        }
        out.put_u8(len as u8);
        let at = out.len() as u32;
        out.put_slice(body);
        index.spans.push(HeldSpan {
            scope: index.scopes.len() as u32 - 1,
            start: at,
            end: out.len() as u32,
        });
    });
}

/// Visits spans `live` of `index` in order, each with the resource and the scope it opens (the
/// first span under a resource or scope), if any.
fn walk<'a>(
    index: &'a HeldIndex,
    live: &[u32],
    mut visit: impl FnMut(Option<(u32, &'a ResourceEntry)>, Option<&'a ScopeEntry>, u32),
) {
    let (mut last_scope, mut last_resource) = (u32::MAX, u32::MAX);
    for &i in live {
        let span = &index.spans[i as usize];
        let (mut resource, mut scope) = (None, None);
        if span.scope != last_scope {
            let s = &index.scopes[span.scope as usize];
            if s.resource != last_resource {
                resource = Some((s.resource, &index.resources[s.resource as usize]));
                last_resource = s.resource;
            }
            scope = Some(s);
            last_scope = span.scope;
        }
        visit(resource, scope, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::batch_cost;
    use crate::testing::{batch_of, kv, span, ResourceSpec};
    use shardtel_protocol::proto::common::v1::any_value::Value;
    use shardtel_protocol::reframe::{encode_trace_spans, Encoded};
    use shardtel_protocol::scan::{ReleaseToken, SpanBatch};

    /// [`super::compact`] of a batch as received, as a batch again.
    fn compact(batch: &SpanBatch, live: &[u32]) -> SpanBatch {
        super::compact(&HeldBatch::from(batch.clone()), live).to_batch()
    }

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
        let small = super::compact(&HeldBatch::from(batch.clone()), &live);
        let cost = batch_cost(&small);
        assert_eq!(cost.own, cost.buf);
        assert_eq!(small.index.spans.capacity(), 3);
        assert!(cost.buf < batch.buf.len() as u64);
        // A subset of one resource.
        let one = compact(&batch, &[2]);
        assert_eq!(encoded(&one, &[0]), encoded(&batch, &[2]));
        assert_eq!(one.index.resources.len(), 1);
    }

    #[test]
    fn keeps_the_hold_but_not_the_original_buffer() {
        let mut batch = batch_of(&[(
            ResourceSpec::default(),
            vec![span(1, 1), span(2, 1).pad(500)],
        )]);
        let token: ReleaseToken = std::sync::Arc::new(());
        let watch = std::sync::Arc::downgrade(&token);
        batch.release_token = Some(token);
        let original = batch.buf.clone();
        let small = compact(&batch, &[0]);
        drop(batch);
        // The original buffer is no longer needed by the copy ...
        assert!(original.is_unique());
        // ... but the release token lives as long as the copy or any slice of it does.
        let slice = small.buf.slice(0..1);
        drop(small);
        assert!(watch.upgrade().is_some());
        drop(slice);
        assert!(watch.upgrade().is_none());
    }

    #[test]
    fn copies_spans_and_resources_as_processors_rewrote_them() {
        let res = ResourceSpec {
            attrs: vec![kv("service.name", Value::StringValue("a".into()))],
        };
        let mut batch = batch_of(&[(res, vec![span(1, 1), span(2, 1)])]);
        let rewritten = batch_of(&[(
            ResourceSpec {
                attrs: vec![kv("service.name", Value::StringValue("b".into()))],
            },
            vec![span(3, 1).pad(40)],
        )]);
        // Span 1 and resource 0 replaced by those of another request.
        let header = rewritten.index.resources[0].headers.clone();
        let header = &rewritten.index.headers[header.start as usize..header.end as usize];
        let header = rewritten
            .buf
            .slice(header[0].start as usize..header[header.len() - 1].end as usize);
        batch.index.rewrites.spans.push((1, rewritten.span_body(0)));
        batch.index.rewrites.resources.push((0, header));
        let small = compact(&batch, &[1]);
        assert_eq!(encoded(&small, &[0]), encoded(&batch, &[1]));
        assert_eq!(small.span_body(0), rewritten.span_body(0));
    }
}
