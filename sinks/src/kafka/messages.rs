//! Cutting an export batch into Kafka message values: one trace per message (split when larger
//! than the limit), or whole metrics/logs requests cut at `ResourceMetrics`/`ResourceLogs`
//! boundaries.
//!
//! A trace message is written once, straight into a reused buffer: new length prefixes, the
//! resource and scope header fields it needs, and its spans' bytes ([`TraceMessages`]); no
//! per-message or per-span allocation. Metrics and logs messages are slices of the batch.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use shardtel_protocol::hash::TraceIdHashBuilder;
use shardtel_protocol::scan::{ScanError, SpanBatch};
use shardtel_protocol::series::resource_key_of;
use shardtel_protocol::wire::{put_varint, varint_len, Key, Reader, WireError, WireType};
use shardtel_protocol::TraceId;

/// Upper bound of a length-delimited field's key and length prefix.
const PREFIX_BOUND: usize = 1 + 5;
/// Tags of `ExportTraceServiceRequest.resource_spans`, and of `ResourceSpans.scope_spans` /
/// `ScopeSpans.spans` (field 2 of their message, length-delimited).
const TAG_RESOURCE_SPANS: u8 = 0x0a;
const TAG_CHILD: u8 = 0x12;
/// "No span" in the per-span chains of [`TraceMessages`].
const NONE: u32 = u32::MAX;

/// The largest message value that fits a topic whose `max.message.bytes` is `max_message_bytes`
/// (librdkafka and the broker check the record batch, not the value): the record batch header
/// (61 bytes), one record's framing (at most 32 bytes of varints and flags), a 16-byte key, and
/// room for a compression frame that does not shrink (lz4 and zstd add a few bytes per block;
/// 1/1024 of the size covers both).
pub(crate) fn value_limit(max_message_bytes: usize) -> usize {
    const FRAMING: usize = 61 + 32 + 16;
    max_message_bytes
        .saturating_sub(FRAMING + max_message_bytes / 1024)
        .max(1)
}

/// The messages of one `ExportTraceServiceRequest`, or of several indexed span batches: one
/// per trace, several with the same key when a trace's encoding exceeds the limit. Traces come
/// in order of first appearance; within a message, spans keep their order. (Public for the
/// benches.)
///
/// ```
/// # use bytes::Bytes;
/// let mut messages = shardtel_sinks::TraceMessages::new(Bytes::new(), 1 << 20).unwrap();
/// let mut value = Vec::new();
/// while let Some((_trace_id, _spans)) = messages.next_into(&mut value) {
///     // produce `value` with key `trace_id`
/// }
/// ```
pub struct TraceMessages {
    /// The spans, in batches (each a buffer and its index); spans are numbered across them.
    batches: Vec<Arc<SpanBatch>>,
    /// Per batch: the number of its first span.
    bases: Vec<u32>,
    /// Per span: its batch.
    owner: Vec<u32>,
    max_bytes: usize,
    /// Per trace, in order of first appearance: its id and first span.
    traces: Vec<(TraceId, u32)>,
    /// Per span: the next span of its trace, or [`NONE`].
    next: Vec<u32>,
    /// The trace being cut, and its next span to write.
    trace: usize,
    cursor: u32,
    /// Scratch: the spans of the message being written, and its scopes' body lengths.
    part: Vec<u32>,
    scope_lens: Vec<usize>,
}

/// Where span `g` (numbered across the batches) is: its batch's index, buffer and position.
#[derive(Clone, Copy)]
struct Spans<'a> {
    batches: &'a [Arc<SpanBatch>],
    bases: &'a [u32],
    owner: &'a [u32],
}

impl<'a> Spans<'a> {
    #[inline]
    fn locate(&self, g: u32) -> (u32, &'a SpanBatch, usize) {
        let b = self.owner[g as usize];
        (
            b,
            &self.batches[b as usize],
            (g - self.bases[b as usize]) as usize,
        )
    }

    /// The span's body bytes.
    #[inline]
    fn body(&self, g: u32) -> &'a [u8] {
        let (_, batch, i) = self.locate(g);
        let r = &batch.index.spans[i].range;
        &batch.buf[r.start as usize..r.end as usize]
    }

    /// (batch, scope) and (batch, resource) of a span, as comparable keys.
    #[inline]
    fn scope(&self, g: u32) -> (u64, u64) {
        let (b, batch, i) = self.locate(g);
        let scope = batch.index.spans[i].scope;
        let resource = batch.index.scopes[scope as usize].resource;
        (
            (u64::from(b) << 32) | u64::from(scope),
            (u64::from(b) << 32) | u64::from(resource),
        )
    }

    /// The header fields (complete encoded fields) of a scope or resource key of
    /// [`Spans::scope`].
    fn headers(&self, key: u64, scope: bool) -> impl Iterator<Item = &'a [u8]> + 'a {
        let batch = &self.batches[(key >> 32) as usize];
        let i = (key & u64::from(u32::MAX)) as usize;
        let range = if scope {
            batch.index.scopes[i].headers.clone()
        } else {
            batch.index.resources[i].headers.clone()
        };
        batch.index.headers[range.start as usize..range.end as usize]
            .iter()
            .map(move |r| &batch.buf[r.start as usize..r.end as usize])
    }
}

impl TraceMessages {
    /// Scans `request` and groups its spans by trace; values stay within `max_bytes` unless a
    /// single span (with its resource and scope) is larger. `request` holds spans validated on
    /// their way in (an export batch): only its structure is scanned again
    /// ([`SpanBatch::scan_structure`]).
    pub fn new(request: Bytes, max_bytes: usize) -> Result<Self, ScanError> {
        Ok(Self::from_batches(
            vec![Arc::new(SpanBatch::scan_structure(request)?)],
            max_bytes,
        ))
    }

    /// Groups the spans of already indexed batches (the owner cores' own indexes, handed over
    /// with the export batch: nothing is joined or scanned again). A batch with spans or
    /// resources a processor rewrote is re-encoded and re-indexed first.
    pub fn from_batches(mut batches: Vec<Arc<SpanBatch>>, max_bytes: usize) -> Self {
        for batch in &mut batches {
            if !batch.index.rewrites.is_empty() {
                let mut enc = shardtel_protocol::reframe::Encoded::default();
                shardtel_protocol::reframe::encode_traces(batch, &mut enc);
                *batch = Arc::new(
                    SpanBatch::scan_structure(enc.to_bytes())
                        .expect("a re-encoded span batch scans"),
                );
            }
        }
        let total: usize = batches.iter().map(|b| b.index.spans.len()).sum();
        let mut bases = Vec::with_capacity(batches.len());
        let mut owner = Vec::with_capacity(total);
        let mut next = vec![NONE; total];
        let mut traces: Vec<(TraceId, u32)> = Vec::new();
        // Per trace: its index in `traces` and its last span so far.
        let mut open: HashMap<TraceId, (u32, u32), TraceIdHashBuilder> =
            HashMap::with_capacity_and_hasher(total / 4, TraceIdHashBuilder::default());
        let mut g = 0u32;
        for (b, batch) in batches.iter().enumerate() {
            bases.push(g);
            for span in &batch.index.spans {
                owner.push(b as u32);
                match open.get_mut(&span.trace_id) {
                    Some((_, last)) => {
                        next[*last as usize] = g;
                        *last = g;
                    }
                    None => {
                        open.insert(span.trace_id, (traces.len() as u32, g));
                        traces.push((span.trace_id, g));
                    }
                }
                g += 1;
            }
        }
        let cursor = traces.first().map_or(NONE, |t| t.1);
        TraceMessages {
            batches,
            bases,
            owner,
            max_bytes,
            traces,
            next,
            trace: 0,
            cursor,
            part: Vec::new(),
            scope_lens: Vec::new(),
        }
    }

    /// Spans in the request.
    #[cfg(test)]
    fn spans(&self) -> usize {
        self.owner.len()
    }

    /// Writes the next message value into `value` (cleared first); returns its key and span
    /// count, or `None` when every span was written.
    pub fn next_into(&mut self, value: &mut Vec<u8>) -> Option<(TraceId, usize)> {
        while self.cursor == NONE {
            self.trace += 1;
            self.cursor = self.traces.get(self.trace)?.1;
        }
        let key = self.traces[self.trace].0;
        let spans = Spans {
            batches: &self.batches,
            bases: &self.bases,
            owner: &self.owner,
        };
        self.cursor = take_part(
            spans,
            &self.next,
            self.cursor,
            self.max_bytes,
            &mut self.part,
        );
        write_trace_message(spans, &self.part, &mut self.scope_lens, value);
        Some((key, self.part.len()))
    }
}

/// Moves into `part` the spans of a trace's chain from `first` whose re-framed encoding stays
/// within `max_bytes` (at least one); returns the first span left over, or [`NONE`]. The bound
/// counts every resource and scope header the part needs, with worst-case length prefixes.
fn take_part(
    spans: Spans<'_>,
    next: &[u32],
    first: u32,
    max_bytes: usize,
    part: &mut Vec<u32>,
) -> u32 {
    let headers =
        |key: u64, scope: bool| -> usize { spans.headers(key, scope).map(<[u8]>::len).sum() };
    part.clear();
    let (mut size, mut scope, mut resource) = (0usize, u64::MAX, u64::MAX);
    let mut i = first;
    while i != NONE {
        let body = spans.body(i).len();
        let mut cost = 1 + varint_len(body as u64) + body;
        let (s, r) = spans.scope(i);
        if s != scope {
            cost += PREFIX_BOUND + headers(s, true);
            if r != resource {
                cost += PREFIX_BOUND + headers(r, false);
                resource = r;
            }
            scope = s;
        }
        if !part.is_empty() && size + cost > max_bytes {
            return i;
        }
        part.push(i);
        size += cost;
        i = next[i as usize];
    }
    NONE
}

/// Writes into `out` (cleared first) an `ExportTraceServiceRequest` holding the spans `part`
/// (ascending numbers) under their resources and scopes.
fn write_trace_message(
    spans: Spans<'_>,
    part: &[u32],
    scope_lens: &mut Vec<usize>,
    out: &mut Vec<u8>,
) {
    let span_len = |g: u32| spans.body(g).len();
    let scope_of = |g: u32| spans.scope(g).0;
    let resource_of = |g: u32| spans.scope(g).1;
    out.clear();
    let mut at = 0;
    while at < part.len() {
        // One ResourceSpans: the run of spans under the same resource.
        let resource = resource_of(part[at]);
        let end = at
            + part[at..]
                .iter()
                .take_while(|&&i| resource_of(i) == resource)
                .count();
        scope_lens.clear();
        let mut resource_len: usize = spans.headers(resource, false).map(<[u8]>::len).sum();
        let mut s = at;
        while s < end {
            let scope = scope_of(part[s]);
            let run = part[s..end].iter().take_while(|&&i| scope_of(i) == scope);
            let mut len: usize = spans.headers(scope, true).map(<[u8]>::len).sum();
            let mut n = 0;
            for &i in run {
                len += 1 + varint_len(span_len(i) as u64) + span_len(i);
                n += 1;
            }
            resource_len += 1 + varint_len(len as u64) + len;
            scope_lens.push(len);
            s += n;
        }
        out.push(TAG_RESOURCE_SPANS);
        put_varint(out, resource_len as u64);
        for h in spans.headers(resource, false) {
            out.extend_from_slice(h);
        }
        let mut s = at;
        for &len in scope_lens.iter() {
            let scope = scope_of(part[s]);
            out.push(TAG_CHILD);
            put_varint(out, len as u64);
            for h in spans.headers(scope, true) {
                out.extend_from_slice(h);
            }
            while s < end && scope_of(part[s]) == scope {
                let body = spans.body(part[s]);
                out.push(TAG_CHILD);
                put_varint(out, body.len() as u64);
                out.extend_from_slice(body);
                s += 1;
            }
        }
        at = end;
    }
}

/// The key of a metrics or logs message: the resource key ([`resource_key_of`]: a hash of
/// `service.namespace`, `service.name` and `service.instance.id`) of its resources, 8 bytes
/// big-endian. Every message of one service instance has the same key, so the partitioner
/// puts them on one partition, and one processor of a consumer group gets all of them: what
/// it keeps per series (delta → cumulative for remote write) or per stream (Loki's order)
/// stays on one machine.
pub(crate) type ResourceKey = [u8; 8];

/// The [`ResourceKey`] of a top-level `ResourceMetrics`/`ResourceLogs` body (field 1 of both
/// is the `Resource`; none counts as an empty one).
fn resource_key(body: &[u8]) -> Result<ResourceKey, WireError> {
    let mut reader = Reader::new(body);
    let mut resource = 0..0;
    while !reader.is_empty() {
        let key = reader.read_key()?;
        match len_field(&mut reader, key, 1)? {
            Some(range) => resource = range,
            None => reader.skip(key)?,
        }
    }
    Ok(resource_key_of(&body[resource]).to_be_bytes())
}

/// The body of a length-delimited field number `field` just keyed by `key` (the reader moves
/// past it), or `None` (the reader stays) for any other field.
fn len_field(
    reader: &mut Reader<'_>,
    key: Key,
    field: u32,
) -> Result<Option<std::ops::Range<usize>>, WireError> {
    if key.field == field && key.wire_type == WireType::Len {
        reader.read_len().map(Some)
    } else {
        Ok(None)
    }
}

/// Appends to `out` the metrics or logs request in `request` as keyed values of at most
/// `max_bytes`: consecutive top-level `ResourceMetrics`/`ResourceLogs` fields with the same
/// [`ResourceKey`] share a value, cut between them when larger than the limit (one that is
/// larger on its own is a value of its own). Every value is a slice of `request`.
pub(crate) fn request_messages(
    request: &Bytes,
    max_bytes: usize,
    out: &mut Vec<(ResourceKey, Bytes)>,
) -> Result<(), WireError> {
    let mut reader = Reader::new(request);
    let (mut start, mut end) = (0usize, 0usize);
    let mut current: Option<ResourceKey> = None;
    while !reader.is_empty() {
        let field_start = reader.position();
        let key = reader.read_key()?;
        // Fields other than resources (unknown to OTLP) stay with the value they follow.
        let resource = match len_field(&mut reader, key, 1)? {
            Some(body) => Some(resource_key(&request[body])?),
            None => {
                reader.skip(key)?;
                None
            }
        };
        let field_end = reader.position();
        let other_key = resource.is_some_and(|k| current.is_some_and(|c| c != k));
        if end > start && (other_key || field_end - start > max_bytes) {
            out.push((current.unwrap_or_default(), request.slice(start..end)));
            start = field_start;
        }
        if resource.is_some() {
            current = resource;
        }
        end = field_end;
    }
    if end > start {
        out.push((current.unwrap_or_default(), request.slice(start..end)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
    use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
    use shardtel_protocol::proto::common::v1::InstrumentationScope;
    use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use shardtel_protocol::proto::resource::v1::Resource;
    use shardtel_protocol::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use std::collections::BTreeMap;

    fn span(trace: u8, i: u32, pad: usize) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: i.to_be_bytes().repeat(2),
            name: format!("{trace}-{i}-{}", "x".repeat(pad)),
            ..Default::default()
        }
    }

    fn request(groups: Vec<Vec<Span>>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: groups
                .into_iter()
                .enumerate()
                .map(|(r, spans)| ResourceSpans {
                    resource: Some(Resource {
                        dropped_attributes_count: r as u32 + 1,
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: format!("scope{r}"),
                            ..Default::default()
                        }),
                        spans,
                        schema_url: "s".into(),
                    }],
                    schema_url: "r".into(),
                })
                .collect(),
        }
    }

    struct Out {
        key: TraceId,
        value: Vec<u8>,
        spans: usize,
    }

    fn messages(req: &ExportTraceServiceRequest, max: usize) -> Vec<Out> {
        let mut m = TraceMessages::new(Bytes::from(req.encode_to_vec()), max).unwrap();
        let mut out = Vec::new();
        let mut value = Vec::new();
        while let Some((key, spans)) = m.next_into(&mut value) {
            out.push(Out {
                key,
                value: value.clone(),
                spans,
            });
        }
        assert_eq!(out.iter().map(|o| o.spans).sum::<usize>(), m.spans());
        out
    }

    /// Decoded spans per key; checks every message holds one trace, its key.
    fn decode_all(msgs: &[Out]) -> BTreeMap<TraceId, Vec<Span>> {
        let mut by_key: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
        for m in msgs {
            let req = ExportTraceServiceRequest::decode(&m.value[..]).unwrap();
            let mut n = 0;
            for rs in req.resource_spans {
                assert!(rs.resource.is_some(), "resource header kept");
                assert_eq!(rs.schema_url, "r");
                for ss in rs.scope_spans {
                    assert!(ss.scope.is_some(), "scope header kept");
                    for sp in ss.spans {
                        assert_eq!(sp.trace_id, m.key.to_vec(), "one trace per message");
                        by_key.entry(m.key).or_default().push(sp);
                        n += 1;
                    }
                }
            }
            assert_eq!(n, m.spans);
        }
        by_key
    }

    #[test]
    fn one_message_per_trace_with_all_its_spans() {
        let req = request(vec![
            vec![span(1, 0, 0), span(2, 1, 0), span(1, 2, 0)],
            vec![span(3, 3, 0), span(2, 4, 0)],
        ]);
        let out = messages(&req, 1 << 20);
        assert_eq!(out.len(), 3);
        let keys: Vec<_> = out.iter().map(|m| m.key[0]).collect();
        assert_eq!(keys, [1, 2, 3], "order of first appearance");
        let got = decode_all(&out);
        let names =
            |t: u8| -> Vec<String> { got[&[t; 16]].iter().map(|s| s.name.clone()).collect() };
        assert_eq!(names(1), ["1-0-", "1-2-"]);
        assert_eq!(names(2), ["2-1-", "2-4-"]);
        assert_eq!(names(3), ["3-3-"]);
    }

    #[test]
    fn a_message_of_the_whole_request_is_the_request() {
        // One trace: the message decodes to the request (header fields come first, so the
        // bytes differ where the original put `schema_url` after the children).
        let req = request(vec![
            vec![span(7, 0, 3), span(7, 1, 3)],
            vec![span(7, 2, 3)],
        ]);
        let out = messages(&req, 1 << 20);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value.len(), req.encoded_len());
        assert_eq!(
            ExportTraceServiceRequest::decode(&out[0].value[..]).unwrap(),
            req
        );
    }

    #[test]
    fn big_trace_is_split_under_the_limit_with_the_same_key() {
        let spans: Vec<Span> = (0..100).map(|i| span(9, i, 200)).collect();
        let (a, b) = spans.split_at(37);
        let req = request(vec![a.to_vec(), vec![span(4, 1000, 0)], b.to_vec()]);
        let limit = 4096;
        let out = messages(&req, limit);
        let nines: Vec<&Out> = out.iter().filter(|m| m.key == [9; 16]).collect();
        assert!(nines.len() >= 6, "{} parts", nines.len());
        for m in &nines {
            assert!(m.value.len() <= limit, "{} > {limit}", m.value.len());
        }
        // Nothing lost or duplicated, in order.
        let got = decode_all(&out);
        assert_eq!(got[&[9; 16]], spans);
        assert_eq!(got[&[4; 16]].len(), 1);
    }

    #[test]
    fn span_larger_than_the_limit_goes_alone() {
        let req = request(vec![vec![span(5, 0, 3000), span(5, 1, 10), span(5, 2, 10)]]);
        let out = messages(&req, 1024);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].spans, 1);
        assert!(out[0].value.len() > 1024);
        assert_eq!(out[1].spans, 2);
        assert_eq!(decode_all(&out)[&[5; 16]].len(), 3);
    }

    #[test]
    fn value_limit_leaves_room_for_the_record_batch() {
        assert_eq!(value_limit(1_000_000), 1_000_000 - 109 - 976);
        assert_eq!(value_limit(1024), 1024 - 109 - 1);
        assert_eq!(value_limit(10), 1);
    }

    #[test]
    fn random_requests_round_trip_within_the_limit() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..300u32 {
            let mut n = 0u32;
            let req = ExportTraceServiceRequest {
                resource_spans: (0..rng.usize(1..4))
                    .map(|r| ResourceSpans {
                        resource: Some(Resource {
                            dropped_attributes_count: r as u32,
                            ..Default::default()
                        }),
                        scope_spans: (0..rng.usize(1..4))
                            .map(|sc| ScopeSpans {
                                scope: Some(InstrumentationScope {
                                    name: format!("s{sc}"),
                                    ..Default::default()
                                }),
                                spans: (0..rng.usize(0..12))
                                    .map(|_| {
                                        n += 1;
                                        span(rng.u8(0..5), round * 1000 + n, rng.usize(0..400))
                                    })
                                    .collect(),
                                schema_url: String::new(),
                            })
                            .collect(),
                        schema_url: "r".into(),
                    })
                    .collect(),
            };
            let mut expected: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
            for sp in req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                let key: TraceId = sp.trace_id.clone().try_into().unwrap();
                expected.entry(key).or_default().push(sp.clone());
            }
            let limit = rng.usize(200..4000);
            let out = messages(&req, limit);
            for m in &out {
                assert!(
                    m.value.len() <= limit || m.spans == 1,
                    "{} > {limit}",
                    m.value.len()
                );
            }
            assert_eq!(decode_all(&out), expected, "round {round}");

            // From the owner cores' indexes instead: the spans spread over up to 3 batches of
            // the same buffer (a trace across several), one of them with a rewritten span.
            let full = SpanBatch::scan(Bytes::from(req.encode_to_vec())).unwrap();
            let parts = rng.usize(1..4);
            let assign: Vec<usize> = (0..full.index.spans.len())
                .map(|_| rng.usize(0..parts))
                .collect();
            let mut batches: Vec<SpanBatch> = (0..parts)
                .map(|p| {
                    let mut b = full.clone();
                    b.index.retain_spans(|i| assign[i as usize] == p);
                    b
                })
                .collect();
            if let Some(first) = batches[0].index.spans.first() {
                let key = first.trace_id;
                let body = batches[0].span(0).to_vec();
                let mut renamed = Span::decode(&body[..]).unwrap();
                let old = renamed.clone();
                renamed.name.push_str("-rewritten");
                batches[0].index.rewrites.spans = vec![(0, Bytes::from(renamed.encode_to_vec()))];
                let spans = expected.get_mut(&key).unwrap();
                let at = spans.iter().position(|s| *s == old).unwrap();
                spans[at] = renamed;
            }
            let mut m =
                TraceMessages::from_batches(batches.into_iter().map(Arc::new).collect(), limit);
            let (mut out, mut value) = (Vec::new(), Vec::new());
            while let Some((key, spans)) = m.next_into(&mut value) {
                assert!(
                    value.len() <= limit || spans == 1,
                    "{} > {limit}",
                    value.len()
                );
                out.push(Out {
                    key,
                    value: value.clone(),
                    spans,
                });
            }
            let mut got = decode_all(&out);
            for spans in got.values_mut().chain(expected.values_mut()) {
                spans.sort_by(|a, b| a.name.cmp(&b.name));
            }
            assert_eq!(got, expected, "round {round}, from {parts} indexed batches");
        }
    }

    #[test]
    fn malformed_batch_is_an_error() {
        assert!(TraceMessages::new(Bytes::from_static(&[0x0a, 0x05, 1]), 1024).is_err());
    }

    #[test]
    fn logs_are_cut_between_resources() {
        let resource = |i: usize| ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    severity_text: format!("{i}-{}", "y".repeat(300)),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let req = ExportLogsServiceRequest {
            resource_logs: (0..10).map(resource).collect(),
        };
        let bytes = Bytes::from(req.encode_to_vec());
        let mut out = Vec::new();
        request_messages(&bytes, 1000, &mut out).unwrap();
        assert!(out.len() >= 4, "{}", out.len());
        let mut all = Vec::new();
        for (key, m) in &out {
            assert!(m.len() <= 1000);
            assert_eq!(
                *key,
                resource_key_of(&[]).to_be_bytes(),
                "no resource: one key"
            );
            all.extend(
                ExportLogsServiceRequest::decode(m.clone())
                    .unwrap()
                    .resource_logs,
            );
        }
        assert_eq!(all, req.resource_logs);
        // Everything fits: the request goes as one zero-copy slice.
        let mut whole = Vec::new();
        request_messages(&bytes, 1 << 20, &mut whole).unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].1, bytes);
    }

    #[test]
    fn metrics_and_logs_are_keyed_by_service_instance() {
        use shardtel_protocol::proto::common::v1::{any_value, AnyValue, KeyValue};
        let attr = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        };
        let resource = |service: &str, instance: &str, records: usize| ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    attr("service.name", service),
                    attr("service.instance.id", instance),
                    attr("host.name", "h"),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default(); records],
                ..Default::default()
            }],
            ..Default::default()
        };
        // a, a, b, a: three runs; the first two resources share a value.
        let req = ExportLogsServiceRequest {
            resource_logs: vec![
                resource("a", "1", 2),
                resource("a", "1", 3),
                resource("b", "1", 1),
                resource("a", "1", 1),
            ],
        };
        let bytes = Bytes::from(req.encode_to_vec());
        let mut out = Vec::new();
        request_messages(&bytes, 1 << 20, &mut out).unwrap();
        let key = |service: &[u8], instance: &[u8]| {
            shardtel_protocol::series::resource_key(b"", service, instance).to_be_bytes()
        };
        let keys: Vec<_> = out.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [key(b"a", b"1"), key(b"b", b"1"), key(b"a", b"1")]);
        let decoded: Vec<_> = out
            .iter()
            .map(|(_, v)| {
                ExportLogsServiceRequest::decode(v.clone())
                    .unwrap()
                    .resource_logs
            })
            .collect();
        assert_eq!(decoded[0], req.resource_logs[..2]);
        assert_eq!(decoded[1], req.resource_logs[2..3]);
        assert_eq!(decoded[2], req.resource_logs[3..]);
        // Other instances of the same service get other keys.
        assert_ne!(key(b"a", b"1"), key(b"a", b"2"));
    }
}
