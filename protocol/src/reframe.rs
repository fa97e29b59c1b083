//! Re-framing encoder: writes an `ExportTraceServiceRequest` for (part of) a [`SpanBatch`]
//! without copying span bytes; and, with [`encode_items`], an `ExportLogsServiceRequest` or
//! `ExportMetricsServiceRequest` for a subset of its log records or metrics (the same layout
//! and field numbers, indexed by [`TracesIndex::scan_items`]).
//!
//! Only the length prefixes of `ResourceSpans`, `ScopeSpans` (and of spans whose original
//! prefix cannot be reused) are written; span bodies and resource/scope header fields are
//! `Bytes` slices of the original request. Adjacent slices of the same buffer are merged, so a
//! run of consecutive spans is a single chunk.
//!
//! Protobuf concatenation merges repeated fields, so appending several batches to one
//! [`Encoded`] yields one valid request.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use crate::scan::{Rewrites, SpanBatch, TracesIndex};
use crate::wire::{put_varint, varint_len};

/// An encoded protobuf message as a chain of chunks: new length prefixes (small owned chunks)
/// and slices of original buffers (no copy). Implements [`bytes::Buf`] (so it can be a hyper
/// body chunk source); reading advances through (and drops) the chunks.
#[derive(Default, Clone, Debug)]
pub struct Encoded {
    /// The chunks, in order. Never contains empty chunks.
    pub chunks: Vec<Bytes>,
    /// Total length of the chunks in bytes (remaining, when used as a `Buf`).
    pub len: usize,
}

impl Encoded {
    /// An empty message.
    pub fn new() -> Self {
        Encoded::default()
    }

    /// A contiguous copy of the whole message.
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            chunks => {
                let mut out = BytesMut::with_capacity(self.len);
                for c in chunks {
                    out.extend_from_slice(c);
                }
                out.freeze()
            }
        }
    }

    /// Appends a chunk.
    pub fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.len += b.len();
        self.chunks.push(b);
    }

    /// Appends `src[range]`, merged with the previous chunk when that chunk ends exactly where
    /// `range` starts in the same buffer.
    pub fn push_slice(&mut self, src: &Bytes, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        let base = src.as_ptr() as usize;
        if let Some(last) = self.chunks.last_mut() {
            let last_start = last.as_ptr() as usize;
            let last_end = last_start + last.len();
            if last_start >= base && last_end == base + range.start {
                let merged = src.slice(last_start - base..range.end);
                self.len += range.len();
                *last = merged;
                return;
            }
        }
        self.push(src.slice(range));
    }

    /// True when the message has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every chunk.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }
}

impl Buf for Encoded {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.first().map(|c| &c[..]).unwrap_or(&[])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of an Encoded");
        self.len -= cnt;
        let mut drop = 0;
        for c in self.chunks.iter_mut() {
            if cnt == 0 {
                break;
            }
            if cnt >= c.len() {
                cnt -= c.len();
                drop += 1;
            } else {
                c.advance(cnt);
                cnt = 0;
            }
        }
        self.chunks.drain(..drop);
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, c) in dst.iter_mut().zip(&self.chunks) {
            *slot = std::io::IoSlice::new(c);
            n += 1;
        }
        n
    }
}

/// Tag byte of `ExportTraceServiceRequest.resource_spans`, `ResourceSpans.scope_spans` and
/// `ScopeSpans.spans` (field 1 or 2, length-delimited).
const TAG_RESOURCE_SPANS: u8 = 0x0a;
const TAG_CHILD: u8 = 0x12;

/// Appends, as ExportTraceServiceRequest fields, the ResourceSpans of `batch` to `out`
/// (including resources and scopes without spans). Because protobuf concatenation of two
/// encodings of the same message merges their repeated fields, appending several batches
/// yields one valid request. Only length prefixes are written; span/header bytes are `Bytes`
/// slices.
pub fn encode_traces(batch: &SpanBatch, out: &mut Encoded) {
    let n = batch.index.spans.len();
    let rewrites = Overlay::of(&batch.index, None);
    encode(
        &batch.buf,
        &batch.index,
        rewrites,
        n,
        |i| i as u32,
        true,
        out,
    );
}

/// Same as [`encode_traces`], for a subset of spans of the batch (indices into
/// `batch.index.spans`, ascending). Resources and scopes without a selected span are left out.
/// Indices that are not ascending are sorted (and deduplicated) first, at the cost of a copy.
pub fn encode_trace_spans(batch: &SpanBatch, spans: &[u32], out: &mut Encoded) {
    encode_trace_spans_rewritten(batch, spans, None, out);
}

/// [`encode_trace_spans`] with more rewrites than the batch's own: a span or resource in
/// `extra` is written as it is there (over the batch's rewrite, if any). This lets a shared
/// batch be encoded with changes made for one export only, without copying its index.
pub fn encode_trace_spans_rewritten(
    batch: &SpanBatch,
    spans: &[u32],
    extra: Option<&Rewrites>,
    out: &mut Encoded,
) {
    encode_items(&batch.buf, &batch.index, spans, extra, out);
}

/// [`encode_trace_spans_rewritten`] over a buffer and its index, for any signal indexed into a
/// [`TracesIndex`] (see [`TracesIndex::scan_items`]: the items of a logs or metrics request
/// are its "spans", and the output is an `ExportLogsServiceRequest` or
/// `ExportMetricsServiceRequest` with the same field numbers). Items in `extra` are written as
/// they are there; every other item and header is a slice of `buf`.
pub fn encode_items(
    buf: &Bytes,
    index: &TracesIndex,
    items: &[u32],
    extra: Option<&Rewrites>,
    out: &mut Encoded,
) {
    let rewrites = Overlay::of(index, extra);
    if items.windows(2).all(|w| w[0] < w[1]) {
        encode(buf, index, rewrites, items.len(), |i| items[i], false, out);
    } else {
        let mut sorted = items.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        encode(
            buf,
            index,
            rewrites,
            sorted.len(),
            |i| sorted[i],
            false,
            out,
        );
    }
}

/// The rewrites an encoding applies: `extra`'s first, then the batch's own.
#[derive(Clone, Copy)]
struct Overlay<'a> {
    base: &'a Rewrites,
    extra: Option<&'a Rewrites>,
}

impl<'a> Overlay<'a> {
    fn of(index: &'a TracesIndex, extra: Option<&'a Rewrites>) -> Self {
        Overlay {
            base: &index.rewrites,
            extra: extra.filter(|e| !e.is_empty()),
        }
    }

    #[inline]
    fn span(&self, i: u32) -> Option<&'a Bytes> {
        self.extra
            .and_then(|e| e.span(i))
            .or_else(|| self.base.span(i))
    }

    #[inline]
    fn resource(&self, r: u32) -> Option<&'a Bytes> {
        self.extra
            .and_then(|e| e.resource(r))
            .or_else(|| self.base.resource(r))
    }
}

/// Encoded size of a span field (key, minimal length prefix, body).
#[inline]
fn span_field_len(r: &Range<u32>) -> usize {
    let len = (r.end - r.start) as usize;
    1 + varint_len(len as u64) + len
}

/// Encoded size of span `i`'s field, rewritten or not.
#[inline]
fn span_len(rewrites: Overlay<'_>, i: u32, r: &Range<u32>) -> usize {
    match rewrites.span(i) {
        Some(b) => 1 + varint_len(b.len() as u64) + b.len(),
        None => span_field_len(r),
    }
}

fn headers_len(index: &TracesIndex, h: &Range<u32>) -> usize {
    index.headers[h.start as usize..h.end as usize]
        .iter()
        .map(|r| (r.end - r.start) as usize)
        .sum()
}

/// True when the bytes before the span body in the original buffer are exactly the minimal
/// `spans` key and length, so that slice can be reused as the prefix.
#[inline]
fn original_prefix_ok(buf: &[u8], r: &Range<u32>) -> bool {
    let len = (r.end - r.start) as u64;
    let plen = 1 + varint_len(len);
    let start = r.start as usize;
    if start < plen {
        return false;
    }
    let p = &buf[start - plen..start];
    if p[0] != TAG_CHILD {
        return false;
    }
    let mut v = 0u64;
    for (i, &b) in p[1..].iter().enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if (b < 0x80) != (i == plen - 2) {
            return false;
        }
    }
    v == len
}

fn encode(
    buf: &Bytes,
    index: &TracesIndex,
    rewrites: Overlay<'_>,
    count: usize,
    span_at: impl Fn(usize) -> u32,
    include_empty: bool,
    out: &mut Encoded,
) {
    assert!(
        index.spans.windows(2).all(|w| w[0].scope <= w[1].scope)
            && index
                .scopes
                .windows(2)
                .all(|w| w[0].resource <= w[1].resource),
        "TracesIndex invariant broken: spans must be ordered by scope and scopes by resource"
    );
    if index.resources.is_empty() {
        return;
    }
    // Owned prefixes go into one buffer, split off as they are written (one allocation).
    let mut prefixes =
        BytesMut::with_capacity((index.resources.len() * 2 + index.scopes.len()) * 6 + 16);
    let mut cursor = 0usize; // position in the selected spans
    let mut scope_cursor = 0usize; // first scope of the current resource
    for (ri, resource) in index.resources.iter().enumerate() {
        let ri = ri as u32;
        let scope_end = scope_cursor
            + index.scopes[scope_cursor..]
                .iter()
                .take_while(|s| s.resource == ri)
                .count();
        let resource_rewrite = rewrites.resource(ri);
        // Pass one: sizes.
        let mut res_len = match resource_rewrite {
            Some(b) => b.len(),
            None => headers_len(index, &resource.headers),
        };
        let mut c = cursor;
        let mut any_span = false;
        for si in scope_cursor..scope_end {
            let scope = &index.scopes[si];
            let mut scope_len = headers_len(index, &scope.headers);
            let mut has = false;
            while c < count {
                let i = span_at(c);
                let s = &index.spans[i as usize];
                if s.scope as usize != si {
                    break;
                }
                scope_len += span_len(rewrites, i, &s.range);
                has = true;
                c += 1;
            }
            if has || include_empty {
                res_len += 1 + varint_len(scope_len as u64) + scope_len;
            }
            any_span |= has;
        }
        if !any_span && !include_empty {
            scope_cursor = scope_end;
            continue;
        }
        // Pass two: emit.
        prefixes.extend_from_slice(&[TAG_RESOURCE_SPANS]);
        put_varint(&mut prefixes, res_len as u64);
        out.push(prefixes.split().freeze());
        match resource_rewrite {
            Some(b) => out.push(b.clone()),
            None => {
                for h in
                    &index.headers[resource.headers.start as usize..resource.headers.end as usize]
                {
                    out.push_slice(buf, h.start as usize..h.end as usize);
                }
            }
        }
        for si in scope_cursor..scope_end {
            let scope = &index.scopes[si];
            let first = cursor;
            let mut scope_len = headers_len(index, &scope.headers);
            while cursor < count {
                let i = span_at(cursor);
                let s = &index.spans[i as usize];
                if s.scope as usize != si {
                    break;
                }
                scope_len += span_len(rewrites, i, &s.range);
                cursor += 1;
            }
            if first == cursor && !include_empty {
                continue;
            }
            prefixes.extend_from_slice(&[TAG_CHILD]);
            put_varint(&mut prefixes, scope_len as u64);
            out.push(prefixes.split().freeze());
            for h in &index.headers[scope.headers.start as usize..scope.headers.end as usize] {
                out.push_slice(buf, h.start as usize..h.end as usize);
            }
            for i in first..cursor {
                let si = span_at(i);
                if let Some(b) = rewrites.span(si) {
                    prefixes.extend_from_slice(&[TAG_CHILD]);
                    put_varint(&mut prefixes, b.len() as u64);
                    out.push(prefixes.split().freeze());
                    out.push(b.clone());
                    continue;
                }
                let r = &index.spans[si as usize].range;
                let len = (r.end - r.start) as usize;
                if index.span_prefixes_minimal || original_prefix_ok(buf, r) {
                    let plen = 1 + varint_len(len as u64);
                    out.push_slice(buf, r.start as usize - plen..r.end as usize);
                } else {
                    prefixes.extend_from_slice(&[TAG_CHILD]);
                    put_varint(&mut prefixes, len as u64);
                    out.push(prefixes.split().freeze());
                    out.push_slice(buf, r.start as usize..r.end as usize);
                }
            }
        }
        scope_cursor = scope_end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
    use crate::proto::common::v1::InstrumentationScope;
    use crate::proto::resource::v1::Resource;
    use crate::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn span(t: u8) -> Span {
        Span {
            trace_id: vec![t; 16],
            span_id: vec![t; 8],
            name: format!("s{t}"),
            ..Default::default()
        }
    }

    fn request() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        dropped_attributes_count: 1,
                        ..Default::default()
                    }),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "a".into(),
                                ..Default::default()
                            }),
                            spans: vec![span(1), span(2), span(3)],
                            schema_url: "x".into(),
                        },
                        ScopeSpans {
                            spans: vec![],
                            ..Default::default()
                        },
                    ],
                    schema_url: "r".into(),
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(4)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn whole_batch_round_trips() {
        let req = request();
        let batch = SpanBatch::scan(Bytes::from(req.encode_to_vec())).unwrap();
        let mut out = Encoded::default();
        encode_traces(&batch, &mut out);
        assert_eq!(out.len, out.chunks.iter().map(|c| c.len()).sum::<usize>());
        assert_eq!(
            ExportTraceServiceRequest::decode(out.to_bytes()).unwrap(),
            req
        );
        // Spans 1..3 are one run: the chunk count stays small.
        assert!(out.chunks.len() <= 12, "{}", out.chunks.len());
    }

    /// A request whose second span's field prefix is not minimal (its length as a two-byte
    /// varint): the scan says so, and re-framing then writes that span's prefix anew instead
    /// of reusing it. For minimal prefixes, the flag changes nothing in the output.
    #[test]
    fn span_prefixes_minimal_or_not() {
        let (a, b) = (span(1).encode_to_vec(), span(2).encode_to_vec());
        let mut scope = vec![0x12, a.len() as u8];
        scope.extend(&a);
        scope.extend([0x12, 0x80 | b.len() as u8, 0x00]);
        scope.extend(&b);
        let mut resource = vec![0x12, scope.len() as u8];
        resource.extend(&scope);
        let mut buf = vec![0x0a, resource.len() as u8];
        buf.extend(&resource);
        let odd = SpanBatch::scan(Bytes::from(buf)).unwrap();
        assert!(!odd.index.span_prefixes_minimal);
        let mut out = Encoded::default();
        encode_trace_spans(&odd, &[0, 1], &mut out);
        let got = ExportTraceServiceRequest::decode(out.to_bytes()).unwrap();
        assert_eq!(
            got.resource_spans[0].scope_spans[0].spans,
            vec![span(1), span(2)]
        );

        let req = request();
        let mut batch = SpanBatch::scan(Bytes::from(req.encode_to_vec())).unwrap();
        assert!(batch.index.span_prefixes_minimal);
        let mut parts = Vec::new();
        batch
            .index
            .partition(2, |t| usize::from(t[0] % 2), &mut parts);
        assert!(parts.iter().all(|p| p.span_prefixes_minimal));
        for spans in [&[0u32, 1, 2, 3][..], &[1, 3], &[2]] {
            let mut fast = Encoded::default();
            encode_trace_spans(&batch, spans, &mut fast);
            batch.index.span_prefixes_minimal = false;
            let mut checked = Encoded::default();
            encode_trace_spans(&batch, spans, &mut checked);
            batch.index.span_prefixes_minimal = true;
            assert_eq!(fast.to_bytes(), checked.to_bytes());
        }
    }

    #[test]
    fn subsets_and_concatenation() {
        let req = request();
        let batch = SpanBatch::scan(Bytes::from(req.encode_to_vec())).unwrap();
        let mut out = Encoded::default();
        encode_trace_spans(&batch, &[1, 3], &mut out);
        let got = ExportTraceServiceRequest::decode(out.to_bytes()).unwrap();
        assert_eq!(got.resource_spans.len(), 2);
        assert_eq!(got.resource_spans[0].scope_spans.len(), 1);
        assert_eq!(got.resource_spans[0].scope_spans[0].spans, vec![span(2)]);
        assert_eq!(got.resource_spans[0].scope_spans[0].schema_url, "x");
        assert_eq!(got.resource_spans[0].schema_url, "r");
        assert_eq!(got.resource_spans[1].scope_spans[0].spans, vec![span(4)]);
        // Appending a second batch merges into one request.
        encode_trace_spans(&batch, &[0], &mut out);
        let got = ExportTraceServiceRequest::decode(out.to_bytes()).unwrap();
        assert_eq!(got.resource_spans.len(), 3);
        // Unordered or repeated indices are sorted first.
        let mut a = Encoded::default();
        encode_trace_spans(&batch, &[3, 1, 1], &mut a);
        let mut b = Encoded::default();
        encode_trace_spans(&batch, &[1, 3], &mut b);
        assert_eq!(a.to_bytes(), b.to_bytes());
        // Empty selection writes nothing.
        let mut empty = Encoded::default();
        encode_trace_spans(&batch, &[], &mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn extra_rewrites_apply_over_the_batch_without_changing_it() {
        let req = request();
        let mut batch = SpanBatch::scan(Bytes::from(req.encode_to_vec())).unwrap();
        let own = Bytes::from(span(20).encode_to_vec());
        batch.index.rewrites.spans.push((1, own));
        let extra = Rewrites {
            spans: vec![(0, Bytes::from(span(10).encode_to_vec()))],
            resources: vec![(1, {
                let mut fields = Vec::new();
                Resource {
                    dropped_attributes_count: 7,
                    ..Default::default()
                }
                .encode_length_delimited(&mut fields)
                .unwrap();
                let mut header = vec![0x0a];
                header.extend_from_slice(&fields);
                Bytes::from(header)
            })],
        };
        let mut out = Encoded::default();
        encode_trace_spans_rewritten(&batch, &[0, 1, 3], Some(&extra), &mut out);
        let got = ExportTraceServiceRequest::decode(out.to_bytes()).unwrap();
        assert_eq!(
            got.resource_spans[0].scope_spans[0].spans,
            vec![span(10), span(20)]
        );
        assert_eq!(
            got.resource_spans[1]
                .resource
                .as_ref()
                .unwrap()
                .dropped_attributes_count,
            7
        );
        assert_eq!(got.resource_spans[1].scope_spans[0].spans, vec![span(4)]);
        // The batch itself is unchanged, and no extra rewrites means its own.
        let mut plain = Encoded::default();
        encode_trace_spans_rewritten(&batch, &[0, 1], None, &mut plain);
        let got = ExportTraceServiceRequest::decode(plain.to_bytes()).unwrap();
        assert_eq!(
            got.resource_spans[0].scope_spans[0].spans,
            vec![span(1), span(20)]
        );
    }

    #[test]
    fn buf_impl_walks_chunks() {
        let req = request();
        let batch = SpanBatch::scan(Bytes::from(req.encode_to_vec())).unwrap();
        let mut out = Encoded::default();
        encode_traces(&batch, &mut out);
        let whole = out.to_bytes();
        let mut copy = Vec::new();
        let mut e = out.clone();
        while e.has_remaining() {
            let n = e.chunk().len().min(3);
            copy.extend_from_slice(&e.chunk()[..n]);
            e.advance(n);
        }
        assert_eq!(copy, whole);
        let mut e = out.clone();
        assert_eq!(e.copy_to_bytes(whole.len()), whole);
    }

    #[test]
    fn non_minimal_prefix_is_rewritten() {
        // A span whose length prefix is padded to two bytes.
        let body = span(9).encode_to_vec();
        assert!(body.len() < 128);
        let mut scope = vec![TAG_CHILD, 0x80 | body.len() as u8, 0x00];
        scope.extend_from_slice(&body);
        let mut rs = vec![TAG_CHILD];
        put_varint(&mut rs, scope.len() as u64);
        rs.extend_from_slice(&scope);
        let mut req = vec![TAG_RESOURCE_SPANS];
        put_varint(&mut req, rs.len() as u64);
        req.extend_from_slice(&rs);
        let batch = SpanBatch::scan(Bytes::from(req)).unwrap();
        let mut out = Encoded::default();
        encode_traces(&batch, &mut out);
        let got = ExportTraceServiceRequest::decode(out.to_bytes()).unwrap();
        assert_eq!(got.resource_spans[0].scope_spans[0].spans, vec![span(9)]);
    }
}
