//! Cutting an export batch into Kafka messages: one trace per message (split when larger than
//! the limit), or whole metrics/logs requests cut at `ResourceMetrics`/`ResourceLogs`
//! boundaries.
//!
//! Spans are re-framed from slices of the batch buffer ([`encode_trace_spans`]); only the new
//! length prefixes are written. Metrics and logs messages are slices of the batch itself.

use bytes::Bytes;
use shardtel_protocol::reframe::{encode_trace_spans, Encoded};
use shardtel_protocol::scan::{ScanError, SpanBatch, TracesIndex};
use shardtel_protocol::wire::{varint_len, Reader, WireError};
use shardtel_protocol::TraceId;

/// Upper bound of a length-delimited field's key and length prefix.
const PREFIX_BOUND: usize = 1 + 5;

/// One message to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OutMessage {
    /// The trace ID for trace messages; no key for metrics and logs.
    pub key: Option<TraceId>,
    /// An encoded `Export*ServiceRequest`.
    pub payload: Bytes,
    /// Spans, points or records in it (spans only; 0 for the other signals, which are counted
    /// per batch).
    pub spans: u64,
}

/// Appends to `out` one message per trace of the `ExportTraceServiceRequest` in `request`
/// (several with the same key when a trace's encoding exceeds `max_bytes`), in order of
/// trace ID.
pub(crate) fn trace_messages(
    request: Bytes,
    max_bytes: usize,
    out: &mut Vec<OutMessage>,
) -> Result<(), ScanError> {
    let batch = SpanBatch::scan(request)?;
    let spans = &batch.index.spans;
    let mut order: Vec<u32> = (0..spans.len() as u32).collect();
    // Stable: within a trace, spans keep their (ascending) request order.
    order.sort_by(|a, b| {
        spans[*a as usize]
            .trace_id
            .cmp(&spans[*b as usize].trace_id)
    });
    let mut enc = Encoded::new();
    let mut part = Vec::new();
    for trace in order.chunk_by(|a, b| spans[*a as usize].trace_id == spans[*b as usize].trace_id) {
        let key = spans[trace[0] as usize].trace_id;
        for_each_part(&batch.index, trace, max_bytes, &mut part, |part| {
            enc.clear();
            encode_trace_spans(&batch, part, &mut enc);
            debug_assert!(
                part.len() == 1 || enc.len <= max_bytes,
                "split part of {} bytes exceeds {max_bytes}",
                enc.len
            );
            out.push(OutMessage {
                key: Some(key),
                payload: enc.to_bytes(),
                spans: part.len() as u64,
            });
        });
    }
    Ok(())
}

/// Calls `emit` with consecutive runs of `spans` (ascending indices into `index.spans`) whose
/// re-framed encoding stays within `max_bytes`; a single span larger than that is a run of
/// its own. The bound counts every resource and scope header a run needs once, with
/// worst-case length prefixes.
fn for_each_part(
    index: &TracesIndex,
    spans: &[u32],
    max_bytes: usize,
    part: &mut Vec<u32>,
    mut emit: impl FnMut(&[u32]),
) {
    let header_len = |ranges: &mut dyn Iterator<Item = std::ops::Range<usize>>| -> usize {
        ranges.map(|r| r.len()).sum()
    };
    part.clear();
    let mut size = 0usize;
    let mut scope = u32::MAX;
    let mut resource = u32::MAX;
    for &i in spans {
        let entry = &index.spans[i as usize];
        let body = (entry.range.end - entry.range.start) as usize;
        let span_len = 1 + varint_len(body as u64) + body;
        let entry_resource = index.scopes[entry.scope as usize].resource;
        let new_scope = PREFIX_BOUND + header_len(&mut index.scope_headers(entry.scope));
        let new_resource = PREFIX_BOUND + header_len(&mut index.resource_headers(entry_resource));
        let mut cost = span_len;
        if entry.scope != scope {
            cost += new_scope;
            if entry_resource != resource {
                cost += new_resource;
            }
        }
        if !part.is_empty() && size + cost > max_bytes {
            emit(part);
            part.clear();
            cost = span_len + new_scope + new_resource;
            size = 0;
        }
        part.push(i);
        size += cost;
        scope = entry.scope;
        resource = entry_resource;
    }
    if !part.is_empty() {
        emit(part);
    }
}

/// Appends to `out` the metrics or logs request in `request` as messages of at most
/// `max_bytes`, cut between its top-level `ResourceMetrics`/`ResourceLogs` fields (one that
/// is larger on its own is a message of its own). Every message is a slice of `request`.
pub(crate) fn request_messages(
    request: &Bytes,
    max_bytes: usize,
    out: &mut Vec<OutMessage>,
) -> Result<(), WireError> {
    let mut reader = Reader::new(request);
    let mut start = 0usize;
    let mut end = 0usize;
    while !reader.is_empty() {
        let key = reader.read_key()?;
        reader.skip(key)?;
        let field_end = reader.position();
        if end > start && field_end - start > max_bytes {
            out.push(slice_message(request, start, end));
            start = end;
        }
        end = field_end;
    }
    if end > start {
        out.push(slice_message(request, start, end));
    }
    Ok(())
}

fn slice_message(request: &Bytes, start: usize, end: usize) -> OutMessage {
    OutMessage {
        key: None,
        payload: request.slice(start..end),
        spans: 0,
    }
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

    /// Decoded spans per key, and the messages' sizes.
    fn decode_all(msgs: &[OutMessage]) -> BTreeMap<TraceId, Vec<Span>> {
        let mut by_key: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
        for m in msgs {
            let req = ExportTraceServiceRequest::decode(m.payload.clone()).unwrap();
            let mut n = 0;
            for rs in req.resource_spans {
                assert!(rs.resource.is_some(), "resource header kept");
                for ss in rs.scope_spans {
                    assert!(ss.scope.is_some(), "scope header kept");
                    for sp in ss.spans {
                        assert_eq!(
                            sp.trace_id,
                            m.key.unwrap().to_vec(),
                            "one trace per message"
                        );
                        by_key.entry(m.key.unwrap()).or_default().push(sp);
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
        let mut out = Vec::new();
        trace_messages(Bytes::from(req.encode_to_vec()), 1 << 20, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        let keys: Vec<_> = out.iter().map(|m| m.key.unwrap()[0]).collect();
        assert_eq!(keys, [1, 2, 3]);
        let got = decode_all(&out);
        let names =
            |t: u8| -> Vec<String> { got[&[t; 16]].iter().map(|s| s.name.clone()).collect() };
        assert_eq!(names(1), ["1-0-", "1-2-"]);
        assert_eq!(names(2), ["2-1-", "2-4-"]);
        assert_eq!(names(3), ["3-3-"]);
    }

    #[test]
    fn big_trace_is_split_under_the_limit_with_the_same_key() {
        let spans: Vec<Span> = (0..100).map(|i| span(9, i, 200)).collect();
        let (a, b) = spans.split_at(37);
        let req = request(vec![a.to_vec(), vec![span(4, 1000, 0)], b.to_vec()]);
        let limit = 4096;
        let mut out = Vec::new();
        trace_messages(Bytes::from(req.encode_to_vec()), limit, &mut out).unwrap();
        let nines: Vec<&OutMessage> = out.iter().filter(|m| m.key == Some([9; 16])).collect();
        assert!(nines.len() >= 6, "{} parts", nines.len());
        for m in &nines {
            assert!(m.payload.len() <= limit, "{} > {limit}", m.payload.len());
        }
        // Nothing lost or duplicated, in order.
        let got = decode_all(&out);
        assert_eq!(got[&[9; 16]], spans);
        assert_eq!(got[&[4; 16]].len(), 1);
    }

    #[test]
    fn span_larger_than_the_limit_goes_alone() {
        let req = request(vec![vec![span(5, 0, 3000), span(5, 1, 10), span(5, 2, 10)]]);
        let mut out = Vec::new();
        trace_messages(Bytes::from(req.encode_to_vec()), 1024, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].spans, 1);
        assert!(out[0].payload.len() > 1024);
        assert_eq!(out[1].spans, 2);
        assert_eq!(decode_all(&out)[&[5; 16]].len(), 3);
    }

    #[test]
    fn malformed_batch_is_an_error() {
        let mut out = Vec::new();
        assert!(trace_messages(Bytes::from_static(&[0x0a, 0x05, 1]), 1024, &mut out).is_err());
        assert!(out.is_empty());
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
        for m in &out {
            assert!(m.payload.len() <= 1000);
            assert!(m.key.is_none());
            all.extend(
                ExportLogsServiceRequest::decode(m.payload.clone())
                    .unwrap()
                    .resource_logs,
            );
        }
        assert_eq!(all, req.resource_logs);
        // Everything fits: the request goes as one zero-copy slice.
        let mut whole = Vec::new();
        request_messages(&bytes, 1 << 20, &mut whole).unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].payload, bytes);
    }
}
