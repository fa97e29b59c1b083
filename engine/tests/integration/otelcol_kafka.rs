//! Kafka interop with the OpenTelemetry Collector, both ways, through the real processes and the
//! real broker (Apache Kafka on 127.0.0.1:9092, see `kafka.rs`; the Collector as in
//! `otelcol.rs`):
//!
//! - shardtel's Kafka exporter (a gateway: OTLP in → kafka) → the Collector's `kafka` receiver
//!   (`otlp_proto`, `configs/kafka-to-file.yaml`) → its file exporters: every span, metric data
//!   point and log record arrives once and unchanged, though shardtel cut the requests into
//!   one message per trace (and a big trace into several) and metrics and logs into messages
//!   keyed by service instance;
//! - the Collector's `kafka` exporter with `partition_traces_by_id` (`configs/kafka-gateway.yaml`),
//!   fed by the OpenTelemetry SDK with every trace split over three requests → shardtel's Kafka
//!   receiver (a consumer group, one consumer per core) → tail sampling with the reference
//!   policy → files: every kept trace complete, every error, slow and VIP trace kept, exactly
//!   the traces the policy keeps, nothing duplicated.
//!
//! Each test creates its own topics and consumer groups. Without the broker or the Collector
//! these tests fail, unless `SHARDTEL_KAFKA_OPTIONAL=1` / `SHARDTEL_OTELCOL_OPTIONAL=1`, which
//! make them skip with a loud message.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanRef, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::KeyValue as SdkKeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource as SdkResource;
use prost::Message;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::proto::common::v1::any_value;
use shardtel_protocol::Signal;

use crate::gen::{flatten, request, span};
use crate::harness::{read_traces, wait_until, Shardtel};
use crate::kafka::{
    broker, broker_available, create_topic_on, read_topic_on, span_ids, unique_topic,
};
use crate::otelcol::{
    assert_same, flatten_logs, flatten_metrics, hex, logs_request, metrics_request, otelcol_bin,
    post, read_collector_file, Otelcol,
};
use crate::test_config::{millis, Batch, Component, Pipeline, TailSampling};

// ---- shardtel's Kafka exporter → the Collector's kafka receiver --------------------------

/// shardtel as a gateway (OTLP/HTTP in, its Kafka exporter out, 16 KiB messages, values in
/// `encoding`) → three topics → the Collector's `kafka` receiver (one receiver, three signals,
/// the same `encoding`) → its file exporters. Traces come as 12 requests each holding one piece
/// of 40 traces (sent 200 ms apart, so a trace is several messages), and one trace of 300 spans
/// that shardtel cuts into several messages; metrics and logs as 10 requests each. After both
/// processes stopped, the Collector's files hold every span, data point and record exactly
/// once, unchanged (with their resources and scopes), and the Collector counted them on its
/// Kafka transport with nothing it could not decode.
fn shardtel_to_collector_over_kafka(test: &str, encoding: &str) {
    if !broker_available(test) {
        return;
    }
    let Some(bin) = otelcol_bin(test) else {
        return;
    };
    let broker = broker();
    let traces_topic = unique_topic("st2oc-spans");
    let metrics_topic = unique_topic("st2oc-metrics");
    let logs_topic = unique_topic("st2oc-logs");
    create_topic_on(&broker, &traces_topic, 4);
    create_topic_on(&broker, &metrics_topic, 2);
    create_topic_on(&broker, &logs_topic, 2);
    let mut collector = Otelcol::start_without_otlp(
        &bin,
        "kafka-to-file",
        &[
            ("KAFKA_BROKER", broker.clone()),
            ("KAFKA_GROUP", unique_topic("st2oc-group")),
            ("KAFKA_TRACES_TOPIC", traces_topic.clone()),
            ("KAFKA_METRICS_TOPIC", metrics_topic.clone()),
            ("KAFKA_LOGS_TOPIC", logs_topic.clone()),
            ("KAFKA_ENCODING", encoding.to_string()),
        ],
    );
    let mut st = Shardtel::start_config(|c| {
        c.exporter(
            "kafka",
            Component::kafka_exporter(&[broker.as_str()])
                .set("traces_topic", traces_topic.as_str())
                .set("metrics_topic", metrics_topic.as_str())
                .set("logs_topic", logs_topic.as_str())
                .set("max_message_bytes", "16KiB")
                .set("encoding", encoding)
                .batch(Batch::timeout(millis(50))),
        )
        .traces(Pipeline::otlp_to(&["kafka"]))
        .metrics(Pipeline::otlp_to(&["kafka"]))
        .logs(Pipeline::otlp_to(&["kafka"]))
    });

    // Request `piece` holds span `piece` of each of 40 traces; then one trace of 300 spans
    // (about 60 KB) in one request.
    let mut traces: Vec<ExportTraceServiceRequest> = (0..12u64)
        .map(|piece| request((0..40).map(|t| span(61, t, piece)).collect()))
        .collect();
    traces.push(request((0..300).map(|i| span(62, 0, i)).collect()));
    let metrics: Vec<ExportMetricsServiceRequest> = (0..10).map(metrics_request).collect();
    let logs: Vec<ExportLogsServiceRequest> = (0..10).map(logs_request).collect();
    for req in &traces {
        st.post_traces(req);
        // Longer than the exporter's 50 ms batch timeout: each piece goes out in messages of
        // its own instead of being joined with the next one in a batch.
        std::thread::sleep(millis(200));
    }
    for req in &metrics {
        post(&st, "/v1/metrics", req.encode_to_vec());
    }
    for req in &logs {
        post(&st, "/v1/logs", req.encode_to_vec());
    }
    let expected_spans = flatten(&traces);
    let expected_points = flatten_metrics(&metrics);
    let expected_records = flatten_logs(&logs);
    assert_eq!(
        (
            expected_spans.len(),
            expected_points.len(),
            expected_records.len()
        ),
        (12 * 40 + 300, 60, 200)
    );

    let out = collector.out();
    let got = |out: &Path| {
        (
            flatten(&read_collector_file(out, "traces", Signal::Traces)),
            flatten_metrics(&read_collector_file(out, "metrics", Signal::Metrics)),
            flatten_logs(&read_collector_file(out, "logs", Signal::Logs)),
        )
    };
    let all_arrived = wait_until(90, || {
        let (t, m, l) = got(&out);
        t.len() >= expected_spans.len()
            && m.len() >= expected_points.len()
            && l.len() >= expected_records.len()
    });
    let (t, m, l) = got(&out);
    assert!(
        all_arrived,
        "the Collector wrote {} of {} spans, {} of {} data points, {} of {} log records; \
         shardtel metrics:\n{}\nCollector log:\n{}",
        t.len(),
        expected_spans.len(),
        m.len(),
        expected_points.len(),
        l.len(),
        expected_records.len(),
        st.metrics(),
        collector.log()
    );
    // shardtel cut the traces into one message per trace and batch (12 × 40 when no two
    // pieces share a batch), the big trace into several, and sent every span once. At least
    // three trace messages per trace on average, so the Collector read most traces in pieces.
    let produced = st.metric_sum("shardtel_exporter_kafka_produced_messages_total", "");
    // (At least one message each for metrics and logs.)
    assert!(
        produced >= 3 * 41 + 2,
        "shardtel produced only {produced} messages"
    );
    assert_eq!(
        st.metric_sum("shardtel_exporter_kafka_failed_messages_total", ""),
        0,
        "messages the broker refused (too large?); shardtel log:\n{}",
        st.log()
    );
    eprintln!("shardtel → kafka → the Collector: {produced} messages");
    assert_eq!(
        st.metric_sum("shardtel_exporter_sent_spans_total", "exporter=\"kafka\""),
        expected_spans.len() as u64,
        "{}",
        st.metrics()
    );
    // The Collector took every item from Kafka and could decode every message.
    for (signal, n) in [
        ("spans", expected_spans.len()),
        ("metric_points", expected_points.len()),
        ("log_records", expected_records.len()),
    ] {
        let name = format!("otelcol_receiver_accepted_{signal}");
        assert_eq!(
            collector.metric_sum(&name, "transport=\"kafka\""),
            n as u64,
            "{name} on the Kafka transport; Collector log:\n{}",
            collector.log()
        );
    }
    for failed in [
        "otelcol_kafka_receiver_unmarshal_failed_spans",
        "otelcol_kafka_receiver_unmarshal_failed_metric_points",
        "otelcol_kafka_receiver_unmarshal_failed_log_records",
        "otelcol_receiver_refused_spans",
        "otelcol_receiver_failed_spans",
    ] {
        assert_eq!(collector.metric_sum(failed, ""), 0, "{failed}");
    }
    // After both stopped (shardtel drained, the Collector committed and closed its files):
    // exactly once, unchanged.
    assert_eq!(st.stop(), 0, "{}", st.log());
    collector.stop();
    let (t, m, l) = got(&out);
    assert_same(
        &t,
        &expected_spans,
        "spans (with their resources and scopes)",
    );
    assert_same(&m, &expected_points, "metric data points");
    assert_same(&l, &expected_records, "log records");
}

#[test]
fn shardtel_kafka_exporter_to_collector_kafka_receiver() {
    shardtel_to_collector_over_kafka(
        "shardtel_kafka_exporter_to_collector_kafka_receiver",
        "otlp_proto",
    );
}

#[test]
fn shardtel_kafka_exporter_otlp_json_to_collector_kafka_receiver() {
    shardtel_to_collector_over_kafka(
        "shardtel_kafka_exporter_otlp_json_to_collector_kafka_receiver",
        "otlp_json",
    );
}

// ---- the Collector's kafka exporter → shardtel's Kafka receiver → tail sampling -----------

/// Why the reference policy must keep a trace, or that it keeps it only by chance (the 10 %
/// baseline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A child span has status ERROR (policy `errors`).
    Error,
    /// The root starts 2 s before the rest (policy `slow`, 1 s).
    Slow,
    /// A child span has `user.id = "vip"` (policy `vip`).
    Vip,
    /// None of those: kept when the probabilistic hash says so (policy `baseline`, 10 %).
    Plain,
}

impl Kind {
    fn of(t: u64) -> Self {
        match t % 10 {
            1 => Kind::Error,
            4 => Kind::Slow,
            7 => Kind::Vip,
            _ => Kind::Plain,
        }
    }
}

/// (trace id (hex), name, `seq` attribute) of a span.
type SpanRecord = (String, String, i64);
/// Span id (hex) → its record.
type SentSpans = BTreeMap<String, SpanRecord>;
/// Span id (hex) → every record exported for it, and trace id (hex) → the cores that
/// exported its spans.
type Exported = (
    BTreeMap<String, Vec<SpanRecord>>,
    BTreeMap<String, BTreeSet<usize>>,
);

/// Pieces of every trace: children 0 and 1; 2 and 3; 4 and the root.
const PIECES: [&[usize]; 3] = [&[0, 1], &[2, 3], &[4, 5]];
/// Children per trace (index 5 in [`PIECES`] is the root).
const CHILDREN: usize = 5;

/// Sends `traces` traces of a root and [`CHILDREN`] children through the OpenTelemetry SDK's
/// OTLP/gRPC exporter to `endpoint`, each trace in three pieces ([`PIECES`]): every trace's
/// spans are started first, then the pieces are ended, each followed by a flush and a pause
/// longer than the Collector's batch timeout, so that every piece leaves the Collector in a
/// Kafka message of its own. Timestamps are set explicitly, so a trace's duration is 10 ms
/// however long the sending takes (2 s for [`Kind::Slow`]). The error span is in the second
/// piece and the VIP span and the root in the last, so that the sampler must see them all.
///
/// Returns what was sent and each trace's [`Kind`] by trace id (hex).
fn send_split_traces(endpoint: String, traces: u64) -> (SentSpans, BTreeMap<String, Kind>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_resource(
                SdkResource::builder()
                    .with_service_name("kafka-interop")
                    .build(),
            )
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer("kafka-interop");
        let base = SystemTime::now();
        let ms = |n: u64| Duration::from_millis(n);
        let mut sent = SentSpans::new();
        let mut kinds = BTreeMap::new();
        let mut open = Vec::new();
        for t in 0..traces {
            let kind = Kind::of(t);
            let root_start = if kind == Kind::Slow {
                base - Duration::from_secs(2)
            } else {
                base
            };
            // `seq` numbers the spans: the root's, then its children's.
            let seq = (t * (CHILDREN as u64 + 1)) as i64;
            let root_name = format!("kafka-root-{t}");
            let root = tracer
                .span_builder(root_name.clone())
                .with_start_time(root_start)
                .with_attributes([SdkKeyValue::new("seq", seq)])
                .start(&tracer);
            let root_sc = root.span_context().clone();
            let trace_id = root_sc.trace_id().to_string();
            kinds.insert(trace_id.clone(), kind);
            sent.insert(
                root_sc.span_id().to_string(),
                (trace_id.clone(), root_name, seq),
            );
            let cx = opentelemetry::Context::current_with_span(root);
            let children: Vec<_> = (0..CHILDREN)
                .map(|c| {
                    let name = format!("kafka-child-{t}-{c}");
                    let seq = seq + 1 + c as i64;
                    let user = if kind == Kind::Vip && c == 4 {
                        "vip".to_string()
                    } else {
                        format!("user-{c}")
                    };
                    let mut child = tracer
                        .span_builder(name.clone())
                        .with_start_time(base + ms(1 + c as u64))
                        .with_attributes([
                            SdkKeyValue::new("seq", seq),
                            SdkKeyValue::new("user.id", user),
                        ])
                        .start_with_context(&tracer, &cx);
                    if kind == Kind::Error && c == 2 {
                        child.set_status(Status::error("failed"));
                    }
                    sent.insert(
                        child.span_context().span_id().to_string(),
                        (trace_id.clone(), name, seq),
                    );
                    Some(child)
                })
                .collect();
            open.push((cx, children));
        }
        for (p, piece) in PIECES.iter().enumerate() {
            for (cx, children) in &mut open {
                for &c in *piece {
                    if c == CHILDREN {
                        let root: SpanRef<'_> = cx.span();
                        root.end_with_timestamp(base + ms(10));
                    } else {
                        let mut child = children[c].take().unwrap();
                        child.end_with_timestamp(base + ms(1 + c as u64) + ms(1) / 2);
                    }
                }
            }
            provider.force_flush().unwrap();
            if p + 1 < PIECES.len() {
                std::thread::sleep(ms(700));
            }
        }
        provider.shutdown().unwrap();
        (sent, kinds)
    })
}

/// The spans shardtel's file exporters wrote: span id (hex) → every (trace id, name, `seq`)
/// written for it (more than one: a duplicate), and trace id → the cores that wrote its spans.
fn exported(out: &Path) -> Exported {
    let mut spans: BTreeMap<String, Vec<_>> = BTreeMap::new();
    let mut cores: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (core, req) in read_traces(out) {
        for sp in req
            .resource_spans
            .into_iter()
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
        {
            let seq = sp
                .attributes
                .iter()
                .find(|a| a.key == "seq")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    any_value::Value::IntValue(v) => Some(*v),
                    _ => None,
                })
                .unwrap_or(-1);
            let trace = hex(&sp.trace_id);
            cores.entry(trace.clone()).or_default().insert(core);
            spans
                .entry(hex(&sp.span_id))
                .or_default()
                .push((trace, sp.name.clone(), seq));
        }
    }
    (spans, cores)
}

/// The OpenTelemetry SDK → the Collector (OTLP/gRPC in, batch, its `kafka` exporter with
/// `partition_traces_by_id`, `otlp_proto`) → a 6-partition topic → shardtel's Kafka receiver
/// (a consumer group: one consumer per core) → tail sampling with the reference policy
/// (`tests/fixtures/reference-sampling.toml`: errors, slower than 1 s, `user.id = "vip"`, 10 %
/// of the rest; `decision_wait` 10 s) → files.
///
/// The topic is read back first: every Collector message holds the spans of one trace and is
/// keyed by its ID (32 hex characters), a trace's messages share a partition, and every trace
/// came in several messages. Then: each trace decided once; exactly the traces the policy
/// keeps were exported (every error, slow and VIP trace, and the plain ones whose hash is in
/// the 10 %), each complete, each span once, each trace by one core.
#[test]
fn collector_kafka_exporter_to_shardtel_kafka_receiver_with_tail_sampling() {
    let test = "collector_kafka_exporter_to_shardtel_kafka_receiver_with_tail_sampling";
    if !broker_available(test) {
        return;
    }
    let Some(bin) = otelcol_bin(test) else {
        return;
    };
    let broker = broker();
    let partitions = 6;
    let topic = unique_topic("oc2st-spans");
    let group = unique_topic("oc2st-group");
    create_topic_on(&broker, &topic, partitions);
    let sampling = TailSampling::reference();
    let decision_wait = sampling.decision_wait;
    let mut st = Shardtel::start_config(|c| {
        c.receiver(
            "kafka",
            Component::kafka_receiver(&[broker.as_str()], &[topic.as_str()], &group)
                .set("initial_offset", "earliest")
                .set("session_timeout", "6s")
                .set("heartbeat_interval", "1s"),
        )
        .processor("tail_sampling", sampling)
        .file_exporters()
        .traces(
            Pipeline::otlp_to(&["file_traces"])
                .receivers(&["kafka"])
                .processors(&["tail_sampling"]),
        )
    });
    let mut collector = Otelcol::start(
        &bin,
        "kafka-gateway",
        &[
            ("KAFKA_BROKER", broker.clone()),
            ("KAFKA_TRACES_TOPIC", topic.clone()),
            ("OTELCOL_BATCH_TIMEOUT", "100ms".to_string()),
        ],
    );

    let traces = 200;
    let (sent, kinds) = send_split_traces(format!("http://127.0.0.1:{}", collector.grpc), traces);
    assert_eq!(sent.len(), traces as usize * (CHILDREN + 1));

    // What the Collector wrote to the topic.
    let count = |ms: &[crate::kafka::Consumed]| -> usize {
        ms.iter()
            .map(|m| {
                ExportTraceServiceRequest::decode(m.payload.as_slice())
                    .map(|r| span_ids([&r]).len())
                    .unwrap_or(0)
            })
            .sum()
    };
    let messages = read_topic_on(&broker, &topic, partitions, 60, |ms| {
        count(ms) >= sent.len()
    });
    assert_eq!(
        count(&messages),
        sent.len(),
        "spans in the topic; Collector log:\n{}",
        collector.log()
    );
    let mut placement: BTreeMap<String, (BTreeSet<i32>, usize)> = BTreeMap::new();
    for m in &messages {
        let req = ExportTraceServiceRequest::decode(m.payload.as_slice())
            .expect("the Collector's otlp_proto values are ExportTraceServiceRequests");
        let ids = span_ids([&req]);
        let trace = hex(&ids[0].0);
        assert!(
            ids.iter().all(|(t, _)| hex(t) == trace),
            "a message holds the spans of one trace"
        );
        assert_eq!(
            m.key.as_deref(),
            Some(trace.as_bytes()),
            "partition_traces_by_id keys a message by the trace ID in hex"
        );
        let entry = placement.entry(trace).or_default();
        entry.0.insert(m.partition);
        entry.1 += 1;
    }
    assert_eq!(placement.len(), traces as usize);
    for (trace, (parts, n)) in &placement {
        assert_eq!(parts.len(), 1, "trace {trace} on partitions {parts:?}");
        assert!(
            *n >= 2,
            "trace {trace} came in {n} message(s): the test needs traces split over several"
        );
    }
    let used: BTreeSet<i32> = messages.iter().map(|m| m.partition).collect();
    assert!(used.len() > 1, "every trace on partition {used:?}");

    // What the policy keeps: the error, slow and VIP traces, and the plain traces whose
    // probabilistic hash (no salt) is below 10 %.
    let threshold = (10.0f64 / 100.0 * 18_446_744_073_709_551_616.0) as u128;
    let keep: BTreeSet<String> = kinds
        .iter()
        .filter(|(trace, kind)| {
            let id: [u8; 16] = u128::from_str_radix(trace, 16).unwrap().to_be_bytes();
            **kind != Kind::Plain
                || u128::from(shardtel_sampler::probabilistic_hash(&id, b"")) < threshold
        })
        .map(|(t, _)| t.clone())
        .collect();
    let by_chance = keep.len() - kinds.values().filter(|k| **k != Kind::Plain).count();
    assert!(
        (1..=60).contains(&by_chance),
        "{by_chance} of 140 plain trace ids in the 10 % baseline"
    );
    let expected: SentSpans = sent
        .iter()
        .filter(|(_, (trace, _, _))| keep.contains(trace))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    let decided = |decision: &str| {
        st.metric_sum(
            "shardtel_sampler_traces_total",
            &format!("decision=\"{decision}\""),
        )
    };
    let wait = decision_wait.as_secs() + 60;
    assert!(
        wait_until(wait, || exported(&st.out()).0.len() >= expected.len()
            && decided("sampled") + decided("not_sampled") >= traces),
        "{} of {} kept spans exported, {} traces sampled and {} not after {wait} s; \
         shardtel metrics:\n{}\nlog:\n{}",
        exported(&st.out()).0.len(),
        expected.len(),
        decided("sampled"),
        decided("not_sampled"),
        st.metrics(),
        st.log()
    );
    // Every span was consumed once (the Collector's idempotent producer wrote each once), and
    // each trace was decided once, whole.
    assert_eq!(
        st.metric_sum(
            "shardtel_receiver_accepted_spans_total",
            "transport=\"kafka\""
        ),
        sent.len() as u64,
        "{}",
        st.metrics()
    );
    assert_eq!(
        st.metric_sum("shardtel_receiver_kafka_malformed_messages_total", ""),
        0
    );
    assert_eq!(
        (decided("sampled"), decided("not_sampled")),
        (keep.len() as u64, traces - keep.len() as u64),
        "decisions"
    );
    collector.stop();
    assert_eq!(st.stop(), 0, "{}", st.log());

    let (spans, cores) = exported(&st.out());
    let twice: Vec<_> = spans.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(twice.is_empty(), "spans exported more than once: {twice:?}");
    let got: Vec<_> = spans
        .into_iter()
        .map(|(k, mut v)| (k, v.remove(0)))
        .collect();
    let expected: Vec<_> = expected.into_iter().collect();
    let missing: BTreeSet<&String> = expected
        .iter()
        .filter(|e| !got.contains(e))
        .map(|(_, (trace, _, _))| trace)
        .collect();
    let must: Vec<_> = missing
        .iter()
        .filter(|t| kinds[**t] != Kind::Plain)
        .map(|t| (t, kinds[*t]))
        .collect();
    assert!(
        must.is_empty(),
        "error, slow or VIP traces not kept or incomplete: {must:?}"
    );
    assert_same(
        &got,
        &expected,
        "exported spans (span id, trace id, name, seq) = every span of every kept trace",
    );
    for (trace, cores) in &cores {
        assert_eq!(cores.len(), 1, "trace {trace} exported by cores {cores:?}");
    }
    eprintln!(
        "collector → kafka → shardtel: {} spans of {traces} traces in {} messages; kept {} \
         traces ({by_chance} by the 10 % baseline)",
        sent.len(),
        messages.len(),
        keep.len()
    );
}
