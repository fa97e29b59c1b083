//! Kafka messages ingested together: the consecutive messages of one signal that a poll round
//! returns become one request, because protobuf `Export*ServiceRequest`s concatenate into a
//! valid request (their merge). One request is one ingest-log frame and one group-commit entry,
//! so the per-core bound on unreleased frames (`durability::MAX_UNRELEASED`) counts requests of
//! up to [`GroupLimits`] each, not messages.
//!
//! Each message is validated on its own before it joins ([`check`]): a malformed one is skipped
//! (its offset still recorded, so it is committed with the request), and the request built from
//! the others is valid. Values are copied out of librdkafka's buffers once, straight into a
//! buffer of the request's exact size ([`RequestGroup::build`]). OTLP/JSON values are converted
//! to protobuf first, then joined the same way.
//!
//! Pure state: the receiver polls librdkafka and hands each message here.

use bytes::Bytes;
use shardtel_config::KafkaEncoding;
use shardtel_protocol::scan::{scan_logs, scan_metrics, TracesIndex};
use shardtel_protocol::Signal;

use super::offsets::PartitionKey;

/// Bounds of one request built from messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GroupLimits {
    /// Protobuf bytes (a single larger message is a request of its own).
    pub(crate) max_bytes: usize,
    /// Messages.
    pub(crate) max_messages: usize,
}

/// A message value that passed [`check`].
#[derive(Debug)]
pub(crate) enum Checked {
    /// Valid protobuf as it is in the message.
    AsIs,
    /// The protobuf converted from the message's OTLP/JSON.
    Converted(Bytes),
}

impl Checked {
    /// Protobuf bytes it adds to a request whose message value is `value`.
    pub(crate) fn len(&self, value: &[u8]) -> usize {
        match self {
            Checked::AsIs => value.len(),
            Checked::Converted(pb) => pb.len(),
        }
    }
}

/// Validates a message value of `signal` (converting OTLP/JSON to protobuf, see [`convert`])
/// as the receivers validate a request; `index` is scratch for traces. A value larger than
/// `max_bytes` is refused. The error says what is wrong.
pub(crate) fn check(
    signal: Signal,
    encoding: KafkaEncoding,
    value: &[u8],
    index: &mut TracesIndex,
    max_bytes: usize,
) -> Result<Checked, String> {
    if value.len() > max_bytes {
        return Err(too_large(value.len(), max_bytes));
    }
    let converted = match encoding {
        KafkaEncoding::OtlpProto => None,
        KafkaEncoding::OtlpJson => Some(convert(signal, value, max_bytes)?),
    };
    check_converted(signal, value, converted, index)
}

/// The error for a message value larger than `max_bytes`.
pub(crate) fn too_large(len: usize, max_bytes: usize) -> String {
    format!("message of {len} bytes is larger than receivers.kafka.max_message_bytes ({max_bytes})")
}

/// Converts an OTLP/JSON message value to protobuf of at most `max_bytes` (streaming: it
/// costs its output). A panic while converting is contained: the message is malformed.
pub(crate) fn convert(signal: Signal, value: &[u8], max_bytes: usize) -> Result<Bytes, String> {
    let converted = shardtel_sinks::panics::contain(|| {
        shardtel_protocol::json::to_protobuf_within(signal, value, max_bytes)
    });
    match converted {
        Ok(Ok(pb)) => Ok(Bytes::from(pb)),
        Ok(Err(e)) => Err(format!("invalid OTLP JSON: {e}")),
        Err(panicked) => Err(format!("invalid OTLP JSON: {panicked}")),
    }
}

/// Validates a message value whose protobuf is `converted` (from OTLP/JSON) or the value
/// itself.
pub(crate) fn check_converted(
    signal: Signal,
    value: &[u8],
    converted: Option<Bytes>,
    index: &mut TracesIndex,
) -> Result<Checked, String> {
    let pb = converted.as_deref().unwrap_or(value);
    let scanned = match signal {
        Signal::Traces => index.scan(pb),
        Signal::Metrics => scan_metrics(pb).map(drop),
        Signal::Logs => scan_logs(pb).map(drop),
    };
    scanned.map_err(|e| {
        format!(
            "malformed {}: {e}",
            match signal {
                Signal::Traces => "ExportTraceServiceRequest",
                Signal::Metrics => "ExportMetricsServiceRequest",
                Signal::Logs => "ExportLogsServiceRequest",
            }
        )
    })?;
    Ok(converted.map_or(Checked::AsIs, Checked::Converted))
}

/// The next offset to consume of every partition a request's messages (and the malformed
/// messages skipped while it was built) came from: what may be marked processed once the
/// request was accepted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupOffsets(Vec<(PartitionKey, i64)>);

impl GroupOffsets {
    /// Records that `offset` of `topic[partition]` was consumed (messages of a partition come in
    /// order).
    pub(crate) fn consumed(&mut self, topic: &str, partition: i32, offset: i64) {
        match self
            .0
            .iter_mut()
            .find(|((t, p), _)| *p == partition && t == topic)
        {
            Some((_, next)) => *next = offset + 1,
            None => self.0.push(((topic.to_string(), partition), offset + 1)),
        }
    }

    /// True when no offset was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (partition, next offset) pairs.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(PartitionKey, i64)> {
        self.0.iter()
    }
}

/// A request built from messages.
#[derive(Debug)]
pub(crate) struct Built {
    /// Its signal.
    pub(crate) signal: Signal,
    /// The request: the messages' protobuf, concatenated.
    pub(crate) body: Bytes,
    /// Messages in it.
    pub(crate) messages: u64,
    /// Their value bytes as consumed (OTLP/JSON before conversion).
    pub(crate) value_bytes: u64,
}

/// The messages of one signal gathered in a poll round, not yet copied. `M` is the message
/// (librdkafka's, which owns the value; a test's bytes).
#[derive(Debug)]
pub(crate) struct RequestGroup<M> {
    signal: Option<Signal>,
    members: Vec<(M, Checked)>,
    bytes: usize,
    value_bytes: u64,
    offsets: GroupOffsets,
}

impl<M> Default for RequestGroup<M> {
    fn default() -> Self {
        RequestGroup {
            signal: None,
            members: Vec::new(),
            bytes: 0,
            value_bytes: 0,
            offsets: GroupOffsets::default(),
        }
    }
}

impl<M> RequestGroup<M> {
    /// Whether a checked message of `signal` adding `len` protobuf bytes may join: always when
    /// the group is empty, else when it has the same signal and stays within `limits`.
    pub(crate) fn admits(&self, signal: Signal, len: usize, limits: GroupLimits) -> bool {
        self.members.is_empty()
            || (self.signal == Some(signal)
                && self.members.len() < limits.max_messages
                && self.bytes.saturating_add(len) <= limits.max_bytes)
    }

    /// Adds a checked message (call [`RequestGroup::admits`] first) whose value has
    /// `value_len` bytes and adds `len` protobuf bytes (see [`Checked::len`]). Record its offset
    /// with [`RequestGroup::consumed`].
    pub(crate) fn push(
        &mut self,
        signal: Signal,
        message: M,
        (len, value_len): (usize, usize),
        checked: Checked,
    ) {
        debug_assert!(self.members.is_empty() || self.signal == Some(signal));
        self.signal = Some(signal);
        self.bytes += len;
        self.value_bytes += value_len as u64;
        self.members.push((message, checked));
    }

    /// Records that `offset` of `topic[partition]` was consumed: a message that joined, or one
    /// skipped as malformed. It is processed together with the messages gathered so far.
    pub(crate) fn consumed(&mut self, topic: &str, partition: i32, offset: i64) {
        self.offsets.consumed(topic, partition, offset);
    }

    /// Messages gathered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Builds the request (copying each value once into a buffer of the exact size; a lone
    /// converted JSON message is used as it is) and takes the offsets, leaving the group empty.
    /// `value` gives a message's value. The request is `None` when only skipped messages were
    /// recorded.
    pub(crate) fn build(&mut self, value: impl Fn(&M) -> &[u8]) -> (Option<Built>, GroupOffsets) {
        let offsets = std::mem::take(&mut self.offsets);
        let members = std::mem::take(&mut self.members);
        let (bytes, value_bytes) = (self.bytes, self.value_bytes);
        let signal = self.signal.take();
        self.bytes = 0;
        self.value_bytes = 0;
        let Some(signal) = signal.filter(|_| !members.is_empty()) else {
            return (None, offsets);
        };
        let messages = members.len() as u64;
        let body = match <[(M, Checked); 1]>::try_from(members) {
            Ok([(_, Checked::Converted(pb))]) => pb,
            Ok([(m, Checked::AsIs)]) => Bytes::copy_from_slice(value(&m)),
            Err(members) => {
                let mut body = Vec::with_capacity(bytes);
                for (m, checked) in &members {
                    match checked {
                        Checked::AsIs => body.extend_from_slice(value(m)),
                        Checked::Converted(pb) => body.extend_from_slice(pb),
                    }
                }
                debug_assert_eq!(body.len(), bytes);
                Bytes::from(body)
            }
        };
        let built = Built {
            signal,
            body,
            messages,
            value_bytes,
        };
        (Some(built), offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
    use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
    use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
    use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use shardtel_protocol::proto::metrics::v1::{
        metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use shardtel_protocol::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

    const LIMITS: GroupLimits = GroupLimits {
        max_bytes: 1 << 20,
        max_messages: 100,
    };

    fn traces(trace: u8, spans: u32) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|i| Span {
                            trace_id: vec![trace; 16],
                            span_id: vec![i as u8 + 1; 8],
                            name: format!("s{trace}-{i}"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn metrics(name: &str) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: name.into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                value: Some(number_data_point::Value::AsInt(1)),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// Offers each (topic, partition, value) in turn, as the receiver does in a poll round;
    /// returns the index of the first message that does not fit (the next round's first).
    fn gather(
        group: &mut RequestGroup<Vec<u8>>,
        signal: Signal,
        encoding: KafkaEncoding,
        messages: &[(i32, Vec<u8>)],
        limits: GroupLimits,
    ) -> Option<usize> {
        let mut index = TracesIndex::default();
        for (offset, (partition, value)) in messages.iter().enumerate() {
            match check(signal, encoding, value, &mut index, 1 << 20) {
                Err(_) => group.consumed("t", *partition, offset as i64),
                Ok(checked) => {
                    let len = checked.len(value);
                    if !group.admits(signal, len, limits) {
                        return Some(offset);
                    }
                    group.consumed("t", *partition, offset as i64);
                    group.push(signal, value.clone(), (len, value.len()), checked);
                }
            }
        }
        None
    }

    #[test]
    fn consecutive_messages_become_one_request_that_decodes_to_their_merge() {
        let reqs: Vec<ExportTraceServiceRequest> = (1..=5).map(|t| traces(t, t as u32)).collect();
        let messages: Vec<(i32, Vec<u8>)> = reqs
            .iter()
            .enumerate()
            .map(|(i, r)| (i as i32 % 2, r.encode_to_vec()))
            .collect();
        let mut group = RequestGroup::default();
        let rest = gather(
            &mut group,
            Signal::Traces,
            KafkaEncoding::OtlpProto,
            &messages,
            LIMITS,
        );
        assert_eq!(rest, None);
        assert_eq!(group.len(), 5);
        let (built, offsets) = group.build(|m| m);
        let built = built.unwrap();
        assert_eq!(built.signal, Signal::Traces);
        assert_eq!(built.messages, 5);
        let total: usize = messages.iter().map(|(_, v)| v.len()).sum();
        assert_eq!((built.body.len(), built.value_bytes), (total, total as u64));
        let merged = ExportTraceServiceRequest {
            resource_spans: reqs.iter().flat_map(|r| r.resource_spans.clone()).collect(),
        };
        assert_eq!(
            ExportTraceServiceRequest::decode(built.body.clone()).unwrap(),
            merged
        );
        let mut index = TracesIndex::default();
        index.scan(&built.body).unwrap();
        assert_eq!(index.spans.len(), 15);
        // Partition 0 had offsets 0, 2, 4; partition 1 had 1, 3.
        let next: Vec<_> = offsets.iter().map(|((_, p), n)| (*p, *n)).collect();
        assert_eq!(next, [(0, 5), (1, 4)]);
        // The group is empty again.
        assert_eq!(group.len(), 0);
        let (none, offsets) = group.build(|m| m);
        assert!(none.is_none() && offsets.is_empty());
    }

    #[test]
    fn a_malformed_message_is_skipped_and_its_offset_kept_with_the_request() {
        let good: Vec<Vec<u8>> = (1..=3).map(|t| traces(t, 2).encode_to_vec()).collect();
        let bad_trace_id = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 3],
                        span_id: vec![1; 8],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let messages = vec![
            (0, good[0].clone()),
            (0, b"\x0a\xff\xff garbage".to_vec()),
            (0, good[1].clone()),
            (0, bad_trace_id),
            (0, good[2].clone()),
        ];
        let mut group = RequestGroup::default();
        assert_eq!(
            gather(
                &mut group,
                Signal::Traces,
                KafkaEncoding::OtlpProto,
                &messages,
                LIMITS
            ),
            None
        );
        let (built, offsets) = group.build(|m| m);
        let built = built.unwrap();
        assert_eq!(built.messages, 3);
        let mut index = TracesIndex::default();
        index
            .scan(&built.body)
            .expect("the request holds the good messages only");
        assert_eq!(index.spans.len(), 6);
        assert_eq!(offsets.iter().collect::<Vec<_>>(), [&(("t".into(), 0), 5)]);
        // Only malformed messages: no request, their offsets processed.
        let mut group = RequestGroup::default();
        let only_bad = vec![(3, b"\x0a\x05".to_vec())];
        gather(
            &mut group,
            Signal::Traces,
            KafkaEncoding::OtlpProto,
            &only_bad,
            LIMITS,
        );
        let (built, offsets) = group.build(|m| m);
        assert!(built.is_none());
        assert_eq!(offsets.iter().collect::<Vec<_>>(), [&(("t".into(), 3), 1)]);
    }

    #[test]
    fn requests_stay_within_the_byte_and_message_limits() {
        let value = traces(9, 3).encode_to_vec();
        let messages: Vec<(i32, Vec<u8>)> = (0..25).map(|_| (0, value.clone())).collect();
        // Bytes: four values fit.
        let limits = GroupLimits {
            max_bytes: value.len() * 4 + value.len() / 2,
            max_messages: 100,
        };
        let mut group = RequestGroup::default();
        let rest = gather(
            &mut group,
            Signal::Traces,
            KafkaEncoding::OtlpProto,
            &messages,
            limits,
        );
        assert_eq!(rest, Some(4));
        assert_eq!(group.build(|m| m).0.unwrap().body.len(), value.len() * 4);
        // Messages: ten.
        let limits = GroupLimits {
            max_bytes: 1 << 20,
            max_messages: 10,
        };
        let rest = gather(
            &mut group,
            Signal::Traces,
            KafkaEncoding::OtlpProto,
            &messages,
            limits,
        );
        assert_eq!(rest, Some(10));
        assert_eq!(group.build(|m| m).0.unwrap().messages, 10);
        // A message larger than the limit is a request of its own.
        let limits = GroupLimits {
            max_bytes: 10,
            max_messages: 10,
        };
        let rest = gather(
            &mut group,
            Signal::Traces,
            KafkaEncoding::OtlpProto,
            &messages,
            limits,
        );
        assert_eq!(rest, Some(1));
        let (built, offsets) = group.build(|m| m);
        assert_eq!(built.unwrap().body, value);
        assert_eq!(offsets.iter().collect::<Vec<_>>(), [&(("t".into(), 0), 1)]);
    }

    #[test]
    fn another_signal_starts_another_request() {
        let mut group: RequestGroup<Vec<u8>> = RequestGroup::default();
        let value = metrics("m").encode_to_vec();
        let checked = check(
            Signal::Metrics,
            KafkaEncoding::OtlpProto,
            &value,
            &mut TracesIndex::default(),
            1 << 20,
        )
        .unwrap();
        assert!(
            group.admits(Signal::Logs, 0, LIMITS),
            "an empty group takes anything"
        );
        let len = checked.len(&value);
        group.push(Signal::Metrics, value.clone(), (len, value.len()), checked);
        assert!(group.admits(Signal::Metrics, value.len(), LIMITS));
        assert!(!group.admits(Signal::Logs, 0, LIMITS));
        assert!(!group.admits(Signal::Traces, 0, LIMITS));
        let (built, _) = group.build(|m| m);
        let built = built.unwrap();
        assert_eq!(built.signal, Signal::Metrics);
        assert_eq!(
            ExportMetricsServiceRequest::decode(built.body).unwrap(),
            metrics("m")
        );
    }

    #[test]
    fn json_messages_are_converted_then_joined() {
        let reqs = [metrics("a"), metrics("b"), metrics("c")];
        let json: Vec<(i32, Vec<u8>)> = reqs
            .iter()
            .map(|r| {
                let pb = r.encode_to_vec();
                (
                    0,
                    shardtel_protocol::json::from_protobuf(Signal::Metrics, &pb).unwrap(),
                )
            })
            .chain([(0, b"{\"resourceMetrics\": 7}".to_vec())])
            .collect();
        let mut group = RequestGroup::default();
        gather(
            &mut group,
            Signal::Metrics,
            KafkaEncoding::OtlpJson,
            &json,
            LIMITS,
        );
        let (built, offsets) = group.build(|m| m);
        let built = built.unwrap();
        assert_eq!(built.messages, 3);
        let json_bytes: usize = json[..3].iter().map(|(_, v)| v.len()).sum();
        assert_eq!(built.value_bytes, json_bytes as u64);
        // (The JSON round trip adds the empty resource and scope the JSON writer spells out.)
        let merged = ExportMetricsServiceRequest {
            resource_metrics: json[..3]
                .iter()
                .flat_map(|(_, v)| {
                    let pb = shardtel_protocol::json::to_protobuf(Signal::Metrics, v).unwrap();
                    ExportMetricsServiceRequest::decode(pb)
                        .unwrap()
                        .resource_metrics
                })
                .collect(),
        };
        let names: Vec<String> = merged
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| m.name.clone())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(
            ExportMetricsServiceRequest::decode(built.body).unwrap(),
            merged
        );
        assert_eq!(offsets.iter().collect::<Vec<_>>(), [&(("t".into(), 0), 4)]);
        // A lone converted message is the request, without another copy.
        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); 2],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let value =
            shardtel_protocol::json::from_protobuf(Signal::Logs, &logs.encode_to_vec()).unwrap();
        let checked = check(
            Signal::Logs,
            KafkaEncoding::OtlpJson,
            &value,
            &mut TracesIndex::default(),
            1 << 20,
        )
        .unwrap();
        let Checked::Converted(pb) = &checked else {
            panic!("converted")
        };
        let pb = pb.clone();
        let len = checked.len(&value);
        group.push(Signal::Logs, value.clone(), (len, value.len()), checked);
        let built = group.build(|m| m).0.unwrap();
        assert_eq!(built.body.as_ptr(), pb.as_ptr());
        let records = ExportLogsServiceRequest::decode(built.body)
            .unwrap()
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum::<usize>();
        assert_eq!(records, 2);
    }

    #[test]
    fn check_names_the_problem() {
        let mut index = TracesIndex::default();
        let e = check(
            Signal::Traces,
            KafkaEncoding::OtlpJson,
            b"{not json",
            &mut index,
            1 << 20,
        )
        .unwrap_err();
        assert!(e.starts_with("invalid OTLP JSON: invalid json"), "{e}");
        let e = check(
            Signal::Logs,
            KafkaEncoding::OtlpProto,
            b"\x0a\x05\x01",
            &mut index,
            1 << 20,
        )
        .unwrap_err();
        assert!(e.starts_with("malformed ExportLogsServiceRequest: "), "{e}");
        // Larger than max_message_bytes, as it is in Kafka (JSON before conversion).
        let json = br#"{"resourceLogs":[]}"#;
        let e = check(Signal::Logs, KafkaEncoding::OtlpJson, json, &mut index, 10).unwrap_err();
        assert_eq!(
            e,
            "message of 19 bytes is larger than receivers.kafka.max_message_bytes (10)"
        );
        // A value of empty spans converts to what it costs: two bytes a span.
        let spans = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            vec!["{}"; 1000].join(",")
        );
        let pb = convert(Signal::Traces, spans.as_bytes(), 1 << 20).unwrap();
        assert!(pb.len() < 2010, "{}", pb.len());
        let e = convert(Signal::Traces, spans.as_bytes(), 1000).unwrap_err();
        assert!(e.contains("larger than 1000 bytes"), "{e}");
    }
}
