//! Kafka against a real broker: Apache Kafka on 127.0.0.1:9092, started by test.sh through
//! `tests/peers/kafka/kafka.sh start` (`SHARDTEL_KAFKA_PORT` moves it and these tests with
//! it). The gateway publishes one trace per message keyed by trace ID; processors in one
//! consumer group share the partitions, tail-sample, export every kept trace whole and once,
//! and lose no kept trace when one of them is killed. (Restarts of the broker and of a gateway
//! are `kafka_restart`, SASL and TLS `kafka_auth`.)
//!
//! Without a broker these tests fail, unless `SHARDTEL_KAFKA_OPTIONAL=1`, which makes them
//! skip with a loud message.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use shardtel_protocol::proto::resource::v1::Resource;

use crate::gen::{kv, request, s, span};
use crate::harness::{base_config, read_traces, wait_until, Shardtel};

/// The shared test broker's listeners (tests/peers/kafka/kafka.sh), in port order from
/// `SHARDTEL_KAFKA_PORT` (default 9092).
#[derive(Clone, Copy, Debug)]
pub enum Listener {
    Plaintext = 0,
    /// SASL_PLAINTEXT: PLAIN user `carol`, SCRAM-SHA-256 user `alice`, SCRAM-SHA-512 user
    /// `bob`; each password is the name and `-secret`.
    Sasl = 1,
    /// SSL with client certificates required (the test CA's `client.pem`).
    Ssl = 2,
    /// SASL_SSL: TLS with the broker's certificate only, and the SASL users above.
    SaslSsl = 3,
}

/// `127.0.0.1:PORT` of a listener of the shared test broker.
pub fn listener(l: Listener) -> String {
    let base: u16 = match std::env::var("SHARDTEL_KAFKA_PORT") {
        Ok(p) => p
            .parse()
            .unwrap_or_else(|_| panic!("SHARDTEL_KAFKA_PORT={p:?} is not a port")),
        Err(_) => 9092,
    };
    format!("127.0.0.1:{}", base + l as u16)
}

/// The shared test broker's PLAINTEXT listener.
pub fn broker() -> String {
    listener(Listener::Plaintext)
}

/// A file of the shared test broker's CA directory (`ca.pem`, `client.pem`, `client.key`):
/// `$SHARDTEL_KAFKA_DIR/tls`, by default `target/kafka/tls` of the workspace.
pub fn tls_file(name: &str) -> std::path::PathBuf {
    std::env::var_os("SHARDTEL_KAFKA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kafka"))
        .join("tls")
        .join(name)
}

/// (trace id, span id).
type SpanId = (Vec<u8>, Vec<u8>);
/// Trace id → (partitions it was found on, messages).
type TracePlacement = BTreeMap<Vec<u8>, (BTreeSet<i32>, usize)>;
/// Span → times exported, and trace id → cores that exported it.
type Exported = (BTreeMap<SpanId, usize>, BTreeMap<Vec<u8>, BTreeSet<usize>>);

/// True when `SHARDTEL_KAFKA_OPTIONAL=1`: Kafka tests without their broker skip loudly.
pub fn kafka_optional() -> bool {
    std::env::var("SHARDTEL_KAFKA_OPTIONAL").as_deref() == Ok("1")
}

/// True when the broker is reachable; false (after a loud message) when it is not and
/// `SHARDTEL_KAFKA_OPTIONAL=1`; panics otherwise.
pub fn broker_available(test: &str) -> bool {
    listening(test, &broker())
}

/// [`broker_available`] for another address of the shared broker.
pub fn listening(test: &str, address: &str) -> bool {
    let reachable =
        TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(2)).is_ok();
    if reachable {
        return true;
    }
    if kafka_optional() {
        eprintln!(
            "\n!!!!!!!! SKIPPED {test}: no Kafka broker on {address} (SHARDTEL_KAFKA_OPTIONAL=1) !!!!!!!!\n"
        );
        return false;
    }
    panic!(
        "no Kafka broker on {address}: run ./test.sh (it starts Apache Kafka with tests/peers/kafka/kafka.sh), or set SHARDTEL_KAFKA_OPTIONAL=1 to skip"
    );
}

/// A topic name no other test (or earlier run) uses.
pub fn unique_topic(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn create_topic(name: &str, partitions: i32) {
    create_topic_on(&broker(), name, partitions)
}

/// Creates a topic on `broker`.
pub fn create_topic_on(broker: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = futures_lite::future::block_on(admin.create_topics(
        [&topic],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("failed to create topic {t}: {e}"));
    }
}

/// One consumed message.
#[derive(Clone, Debug)]
pub struct Consumed {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Reads every partition of `topic` from the beginning until `done` says so (or `secs` pass).
fn read_topic(
    topic: &str,
    partitions: i32,
    secs: u64,
    done: impl FnMut(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    read_topic_on(&broker(), topic, partitions, secs, done)
}

/// [`read_topic`] from `broker`.
pub fn read_topic_on(
    broker: &str,
    topic: &str,
    partitions: i32,
    secs: u64,
    done: impl FnMut(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    read_topic_with(broker, &[], topic, partitions, secs, done)
}

/// [`read_topic_on`] with more librdkafka consumer properties (authentication, TLS).
pub fn read_topic_with(
    broker: &str,
    properties: &[(&str, &str)],
    topic: &str,
    partitions: i32,
    secs: u64,
    mut done: impl FnMut(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker)
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000");
    for (key, value) in properties {
        config.set(*key, *value);
    }
    let consumer: BaseConsumer = config.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline && !done(&out) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(Consumed {
                partition: m.partition(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
            }),
            Some(Err(e)) => eprintln!("reader: {e}"),
            None => {}
        }
    }
    out
}

/// The Java client's murmur2 partitioner (what `murmur2_random` computes for a key).
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    assert_eq!(key.len() % 4, 0);
    let m: i32 = 0x5bd1_e995;
    let mut h: i32 = (0x9747_b28c_u32 as i32) ^ key.len() as i32;
    for c in key.chunks(4) {
        let mut k = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(m);
        k ^= ((k as u32) >> 24) as i32;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    h ^= ((h as u32) >> 13) as i32;
    h = h.wrapping_mul(m);
    h ^= ((h as u32) >> 15) as i32;
    (h & 0x7fff_ffff) % partitions
}

fn gateway(topic: &str, logs_topic: &str, max_message_bytes: &str) -> Shardtel {
    let (topic, logs_topic, max) = (
        topic.to_string(),
        logs_topic.to_string(),
        max_message_bytes.to_string(),
    );
    let broker = broker();
    Shardtel::start(move |dir, ports| {
        base_config(dir, ports, "")
            + &format!(
                r#"
[exporters.kafka]
brokers = ["{broker}"]
traces_topic = "{topic}"
logs_topic = "{logs_topic}"
max_message_bytes = "{max}"
batch = {{ timeout = "50ms" }}

[pipelines.traces]
receivers = ["otlp"]
exporters = ["kafka"]
[pipelines.logs]
receivers = ["otlp"]
exporters = ["kafka"]
"#
            )
    })
}

/// (trace id, span id) of every span in `reqs`.
pub fn span_ids<'a>(
    reqs: impl IntoIterator<Item = &'a ExportTraceServiceRequest>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    reqs.into_iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect()
}

/// Checks the messages of a traces topic: each decodes, holds one trace, is keyed by it and
/// sits on the Java-murmur2 partition of the key. Returns the spans, and the partitions of
/// each trace.
fn check_trace_messages(
    messages: &[Consumed],
    partitions: i32,
    max_bytes: usize,
) -> (Vec<SpanId>, TracePlacement) {
    let mut spans = Vec::new();
    let mut traces: BTreeMap<Vec<u8>, (BTreeSet<i32>, usize)> = BTreeMap::new();
    for m in messages {
        let req = ExportTraceServiceRequest::decode(m.payload.as_slice())
            .expect("every message value is an ExportTraceServiceRequest");
        let key = m.key.clone().expect("trace messages have a key");
        assert_eq!(key.len(), 16, "the key is the 16-byte trace id");
        let ids = span_ids([&req]);
        assert!(!ids.is_empty());
        for (trace, _) in &ids {
            assert_eq!(
                trace, &key,
                "a message holds the spans of one trace, its key"
            );
        }
        assert!(
            m.payload.len() <= max_bytes || ids.len() == 1,
            "message of {} bytes over the {max_bytes}-byte limit",
            m.payload.len()
        );
        assert_eq!(
            m.partition,
            java_partition(&key, partitions),
            "murmur2 partitioning"
        );
        let entry = traces.entry(key).or_default();
        entry.0.insert(m.partition);
        entry.1 += 1;
        spans.extend(ids);
    }
    (spans, traces)
}

#[test]
fn gateway_publishes_one_trace_per_message_keyed_by_trace_id() {
    if !broker_available("gateway_publishes_one_trace_per_message_keyed_by_trace_id") {
        return;
    }
    let partitions = 4;
    let topic = unique_topic("gw-spans");
    let logs_topic = unique_topic("gw-logs");
    create_topic(&topic, partitions);
    create_topic(&logs_topic, 1);
    let max_bytes = 16 * 1024;
    let gw = gateway(&topic, &logs_topic, "16KiB");

    // A real OTLP client (the SDK's gRPC exporter): 30 traces of 6 spans.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut sent: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
    rt.block_on(async {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(gw.grpc_url())
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
            .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer("kafka-test");
        for t in 0..30 {
            let root = tracer.start(format!("root-{t}"));
            let cx = opentelemetry::Context::current_with_span(root);
            for c in 0..5 {
                let mut child = tracer.start_with_context(format!("child-{t}-{c}"), &cx);
                let sc = child.span_context().clone();
                sent.insert((
                    sc.trace_id().to_bytes().to_vec(),
                    sc.span_id().to_bytes().to_vec(),
                ));
                child.end();
            }
            let sc = cx.span().span_context().clone();
            sent.insert((
                sc.trace_id().to_bytes().to_vec(),
                sc.span_id().to_bytes().to_vec(),
            ));
            cx.span().end();
        }
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    });
    // Raw OTLP/HTTP: 8 pieces of 40 traces, and one trace of 300 spans (~60 KB) that must be
    // split into several messages of at most 16 KiB with the same key.
    let client = reqwest::blocking::Client::new();
    let mut post = |req: ExportTraceServiceRequest| {
        sent.extend(span_ids([&req]));
        let resp = client
            .post(format!("{}/v1/traces", gw.http_url()))
            .header("content-type", "application/x-protobuf")
            .body(req.encode_to_vec())
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
    };
    for piece in 0..8 {
        post(request((0..40).map(|t| span(21, t, piece)).collect()));
    }
    post(request((0..300).map(|i| span(22, 7, i)).collect()));
    // Logs go to their own topic, one message per service instance, keyed by it.
    let resource_logs = |service: &str| ResourceLogs {
        resource: Some(Resource {
            attributes: vec![
                kv("service.name", s(service)),
                kv("service.instance.id", s("i-1")),
            ],
            ..Default::default()
        }),
        scope_logs: vec![ScopeLogs {
            log_records: (0..10)
                .map(|i| LogRecord {
                    severity_text: format!("INFO-{service}-{i}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![resource_logs("svc-a"), resource_logs("svc-b")],
    };
    let resp = client
        .post(format!("{}/v1/logs", gw.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(logs.encode_to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);

    let expected = sent.len();
    assert_eq!(expected, 30 * 6 + 8 * 40 + 300);
    let count = |ms: &[Consumed]| -> usize {
        ms.iter()
            .map(|m| {
                span_ids([&ExportTraceServiceRequest::decode(m.payload.as_slice()).unwrap()]).len()
            })
            .sum()
    };
    let messages = read_topic(&topic, partitions, 60, |ms| count(ms) >= expected);
    assert_eq!(
        count(&messages),
        expected,
        "spans in the topic; gateway log:\n{}",
        gw.log()
    );
    let (spans, traces) = check_trace_messages(&messages, partitions, max_bytes);
    let unique: BTreeSet<_> = spans.iter().cloned().collect();
    assert_eq!(unique.len(), spans.len(), "no span published twice");
    assert_eq!(unique, sent, "exactly the spans that were sent");
    assert_eq!(traces.len(), 30 + 40 + 1);
    for (trace, (parts, _)) in &traces {
        assert_eq!(
            parts.len(),
            1,
            "trace {trace:02x?} spread over partitions {parts:?}"
        );
    }
    let big = &traces[&crate::gen::trace_id(22, 7)];
    assert!(
        big.1 >= 4,
        "the 300-span trace was cut into {} messages",
        big.1
    );
    // Every partition got some traces (71 traces over 4 partitions).
    let used: BTreeSet<i32> = messages.iter().map(|m| m.partition).collect();
    assert_eq!(used.len(), partitions as usize);

    let log_messages = read_topic(&logs_topic, 1, 30, |ms| ms.len() >= 2);
    assert_eq!(log_messages.len(), 2);
    for (m, (service, resource)) in log_messages.iter().zip([
        ("svc-a", &logs.resource_logs[0]),
        ("svc-b", &logs.resource_logs[1]),
    ]) {
        let key = shardtel_protocol::series::resource_key(b"", service.as_bytes(), b"i-1");
        assert_eq!(m.key.as_deref(), Some(&key.to_be_bytes()[..]), "{service}");
        assert_eq!(
            ExportLogsServiceRequest::decode(m.payload.as_slice())
                .unwrap()
                .resource_logs,
            std::slice::from_ref(resource)
        );
    }

    assert!(
        wait_until(5, || gw
            .metric_sum("shardtel_exporter_kafka_produced_messages_total", "")
            == messages.len() as u64 + 2),
        "{}",
        gw.metrics()
    );
    assert_eq!(
        gw.metric_sum("shardtel_exporter_sent_spans_total", "exporter=\"kafka\""),
        expected as u64
    );
}

/// With one core every request is exported as it was received (the whole-request path), and
/// the exporter cuts messages from the receiving core's index: every span must be published.
#[test]
fn one_core_gateway_publishes_every_span_of_whole_requests() {
    if !broker_available("one_core_gateway_publishes_every_span_of_whole_requests") {
        return;
    }
    let topic = unique_topic("gw1-spans");
    create_topic(&topic, 2);
    let gw = {
        let (topic, broker) = (topic.clone(), broker());
        Shardtel::start(move |dir, ports| {
            base_config(dir, ports, "").replacen("cores = \"all\"", "cores = [0]", 1)
                + &format!(
                    r#"
[exporters.kafka]
brokers = ["{broker}"]
traces_topic = "{topic}"
batch = {{ timeout = "50ms" }}

[pipelines.traces]
receivers = ["otlp"]
exporters = ["kafka"]
"#
                )
        })
    };
    let mut sent = BTreeSet::new();
    for r in 0..5 {
        let req = request((0..20).map(|i| span(23, r * 4 + i % 4, i)).collect());
        sent.extend(span_ids([&req]));
        gw.post_traces(&req);
    }
    let ids = |ms: &[Consumed]| -> BTreeSet<(Vec<u8>, Vec<u8>)> {
        ms.iter()
            .flat_map(|m| {
                span_ids([&ExportTraceServiceRequest::decode(m.payload.as_slice()).unwrap()])
            })
            .collect()
    };
    let messages = read_topic(&topic, 2, 30, |ms| ids(ms).len() >= sent.len());
    assert_eq!(ids(&messages), sent, "gateway log:\n{}", gw.log());
    assert_eq!(messages.len(), 20, "one message per trace");
}

/// Produces `traces` traces of `pieces` spans each, every span its own message keyed by its
/// trace id, as a gateway would; returns the span ids. Message `i` is produced after
/// `pause(i)`.
fn fill_topic(
    topic: &str,
    tag: u8,
    traces: u64,
    pieces: u64,
    pause: impl FnMut(usize),
) -> BTreeSet<(Vec<u8>, Vec<u8>)> {
    fill_topic_as(topic, tag, traces, pieces, Encoding::Proto, pause)
}

/// How [`fill_topic_as`] encodes message values.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Proto,
    Json,
}

/// [`fill_topic`] with values in `encoding`.
fn fill_topic_as(
    topic: &str,
    tag: u8,
    traces: u64,
    pieces: u64,
    encoding: Encoding,
    mut pause: impl FnMut(usize),
) -> BTreeSet<(Vec<u8>, Vec<u8>)> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut ids = BTreeSet::new();
    // A sliding window: step k carries piece p of trace k - p, so traces start all through the
    // stream and each one's pieces arrive within a few dozen messages.
    let order = (0..traces + pieces - 1).flat_map(|k| {
        (0..pieces)
            .filter(move |&p| k >= p && k - p < traces)
            .map(move |p| (k - p, p))
    });
    for (i, (t, piece)) in order.enumerate() {
        let req = request(vec![span(tag, t, piece)]);
        ids.extend(span_ids([&req]));
        let key = crate::gen::trace_id(tag, t);
        let payload = match encoding {
            Encoding::Proto => req.encode_to_vec(),
            Encoding::Json => shardtel_protocol::json::from_protobuf(
                shardtel_protocol::Signal::Traces,
                &req.encode_to_vec(),
            )
            .unwrap(),
        };
        pause(i);
        loop {
            match producer.send(BaseRecord::to(topic).key(&key).payload(&payload)) {
                Ok(()) => break,
                Err((e, _)) => {
                    eprintln!("producer: {e}");
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    ids
}

/// Trace `t` of a tag is kept by the processors' sampler when `t` is even: every span carries
/// `http.route = "/api/{t}"` and the policy matches even numbers, so any core of any process
/// decides a trace the same way from any of its pieces.
fn kept(trace_id: &[u8]) -> bool {
    u64::from_be_bytes(trace_id[8..16].try_into().unwrap()) % 2 == 0
}

/// A shardtel processor: Kafka in, tail sampling (`decision_wait = 3s`, keep the traces
/// [`kept`] says), files out. Offsets are committed 4.05 s after processing (commit interval
/// 1 s + decision wait + batch timeout).
fn processor(topic: &str, group: &str) -> Shardtel {
    processor_with(topic, group, "ack_after_sync")
}

/// A processor with `engine.durability = durability`.
fn processor_with(topic: &str, group: &str, durability: &'static str) -> Shardtel {
    processor_configured(topic, group, durability, "3s", "")
}

/// A processor with `engine.durability = durability`, the sampler's `decision_wait` and more
/// `[receivers.kafka]` lines.
fn processor_configured(
    topic: &str,
    group: &str,
    durability: &'static str,
    decision_wait: &'static str,
    receiver_extra: &'static str,
) -> Shardtel {
    processor_starting_at(
        topic,
        group,
        durability,
        decision_wait,
        "earliest",
        receiver_extra,
    )
}

/// [`processor_configured`] with the receiver's `initial_offset`.
fn processor_starting_at(
    topic: &str,
    group: &str,
    durability: &'static str,
    decision_wait: &'static str,
    initial_offset: &'static str,
    receiver_extra: &'static str,
) -> Shardtel {
    let (topic, group, broker) = (topic.to_string(), group.to_string(), broker());
    Shardtel::start(move |dir, ports| {
        base_config(
            dir,
            ports,
            &format!(
                r#"
[receivers.kafka]
brokers = ["{broker}"]
traces_topics = ["{topic}"]
group_id = "{group}"
initial_offset = "{initial_offset}"
session_timeout = "6s"
heartbeat_interval = "1s"
commit_interval = "1s"
{receiver_extra}
"#
            ),
        )
        .replacen(
            "[engine]\n",
            &format!("[engine]\ndurability = \"{durability}\"\n"),
            1,
        ) + &format!(
            r#"
[processors.tail_sampling]
decision_wait = "{decision_wait}"
[[processors.tail_sampling.policies]]
name = "even"
type = "string_attribute"
key = "http.route"
values = ["^/api/[0-9]*[02468]$"]
enabled_regex_matching = true

[exporters.file_traces]
type = "file"
path = "{dir}/out/traces.jsonl"
batch = {{ timeout = "50ms" }}

[pipelines.traces]
receivers = ["kafka"]
processors = ["tail_sampling"]
exporters = ["file_traces"]
"#,
            dir = dir.display()
        )
    })
}

/// (trace, span) → how often it was exported, and trace → cores that exported it.
fn exported(out: &Path) -> Exported {
    let mut spans: BTreeMap<(Vec<u8>, Vec<u8>), usize> = BTreeMap::new();
    let mut cores: BTreeMap<Vec<u8>, BTreeSet<usize>> = BTreeMap::new();
    for (core, req) in read_traces(out) {
        for id in span_ids([&req]) {
            cores.entry(id.0.clone()).or_default().insert(core);
            *spans.entry(id).or_default() += 1;
        }
    }
    (spans, cores)
}

fn wait_assigned(p: &Shardtel, secs: u64) -> bool {
    wait_until(secs, || {
        p.metric_sum("shardtel_receiver_kafka_assigned_partitions", "") > 0
    })
}

#[test]
fn processors_in_one_group_split_partitions_and_export_every_trace_once() {
    if !broker_available("processors_in_one_group_split_partitions_and_export_every_trace_once") {
        return;
    }
    let partitions = 8;
    let topic = unique_topic("proc-spans");
    let group = unique_topic("proc-group");
    create_topic(&topic, partitions);
    let a = processor(&topic, &group);
    assert!(
        wait_assigned(&a, 60),
        "a got no partitions; log:\n{}",
        a.log()
    );
    let b = processor(&topic, &group);
    // Both hold partitions, and the group is stable (all partitions assigned once).
    assert!(
        wait_until(60, || {
            let (pa, pb) = (
                a.metric_sum("shardtel_receiver_kafka_assigned_partitions", ""),
                b.metric_sum("shardtel_receiver_kafka_assigned_partitions", ""),
            );
            pa > 0 && pb > 0 && pa + pb == partitions as u64
        }),
        "partitions not split: a {} b {}; a log:\n{}\nb log:\n{}",
        a.metric_sum("shardtel_receiver_kafka_assigned_partitions", ""),
        b.metric_sum("shardtel_receiver_kafka_assigned_partitions", ""),
        a.log(),
        b.log()
    );

    let sent = fill_topic(&topic, 31, 300, 4, |_| {});
    // Malformed messages are counted and skipped; they block nothing.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .create()
        .unwrap();
    for i in 0..3u8 {
        producer
            .send(
                BaseRecord::to(&topic)
                    .key(&[i; 16][..])
                    .payload(&b"\x0a\xff\xff garbage"[..]),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let keep: BTreeSet<SpanId> = sent.iter().filter(|(t, _)| kept(t)).cloned().collect();
    assert_eq!(keep.len(), sent.len() / 2);
    let total = |s: &Shardtel| exported(&s.out()).0.values().sum::<usize>();
    assert!(
        wait_until(60, || total(&a) + total(&b) >= keep.len()),
        "exported {} + {} of {} kept spans; a log:\n{}\nb log:\n{}",
        total(&a),
        total(&b),
        keep.len(),
        a.log(),
        b.log()
    );
    let (spans_a, cores_a) = exported(&a.out());
    let (spans_b, cores_b) = exported(&b.out());
    assert!(
        !spans_a.is_empty() && !spans_b.is_empty(),
        "both processors exported"
    );
    let mut all = spans_a.clone();
    for (id, n) in &spans_b {
        *all.entry(id.clone()).or_default() += n;
    }
    assert_eq!(
        all.keys().cloned().collect::<BTreeSet<_>>(),
        keep,
        "every span of every kept trace exported, nothing else"
    );
    assert!(
        all.values().all(|&n| n == 1),
        "every kept span exported exactly once"
    );
    // A trace is exported whole by one core of one process.
    for (trace, cores) in &cores_a {
        assert!(
            !cores_b.contains_key(trace),
            "trace {trace:02x?} exported by both processes"
        );
        assert_eq!(cores.len(), 1);
    }
    for cores in cores_b.values() {
        assert_eq!(cores.len(), 1);
    }
    assert!(
        wait_until(10, || a
            .metric_sum("shardtel_receiver_kafka_malformed_messages_total", "")
            + b.metric_sum(
                "shardtel_receiver_kafka_malformed_messages_total",
                ""
            )
            == 3),
        "malformed messages not counted:\n{}\n{}",
        a.metrics(),
        b.metrics()
    );
    assert!(
        a.log().contains("skipped malformed message")
            || b.log().contains("skipped malformed message")
    );
    assert!(
        wait_until(10, || a
            .metric_sum("shardtel_receiver_kafka_commits_total", "")
            > 0),
        "no commits; metrics:\n{}\nlog:\n{}",
        a.metrics(),
        a.log()
    );
    assert_eq!(
        a.metric_sum(
            "shardtel_receiver_accepted_spans_total",
            "transport=\"kafka\""
        ) + b.metric_sum(
            "shardtel_receiver_accepted_spans_total",
            "transport=\"kafka\""
        ),
        sent.len() as u64
    );
    // Each trace was decided once, whole, by one core of one process: 150 kept, 150 not.
    let decided = |decision: &str| {
        let filter = format!("decision=\"{decision}\"");
        a.metric_sum("shardtel_sampler_traces_total", &filter)
            + b.metric_sum("shardtel_sampler_traces_total", &filter)
    };
    assert!(
        wait_until(10, || decided("sampled") + decided("not_sampled") == 300),
        "decisions: {} sampled, {} not; a:\n{}\nb:\n{}",
        decided("sampled"),
        decided("not_sampled"),
        a.metrics(),
        b.metrics()
    );
    assert_eq!((decided("sampled"), decided("not_sampled")), (150, 150));
}

/// With durability on, offsets are committed once the ingest-log frames of their messages are
/// released (every span decided and in a durable export queue).
#[test]
fn killing_a_processor_moves_its_partitions_with_nothing_lost() {
    if !broker_available("killing_a_processor_moves_its_partitions_with_nothing_lost") {
        return;
    }
    kill_one_processor("ack_after_sync");
}

/// With `durability = "none"`, offsets are committed a delay after processing that covers
/// the sampler's `decision_wait` and the batch timeout.
#[test]
fn killing_a_processor_without_durability_moves_its_partitions_with_nothing_lost() {
    if !broker_available(
        "killing_a_processor_without_durability_moves_its_partitions_with_nothing_lost",
    ) {
        return;
    }
    kill_one_processor("none");
}

fn kill_one_processor(durability: &'static str) {
    let partitions = 8;
    let topic = unique_topic("kill-spans");
    let group = unique_topic("kill-group");
    create_topic(&topic, partitions);
    let mut a = processor_with(&topic, &group, durability);
    assert!(
        wait_assigned(&a, 60),
        "a got no partitions; log:\n{}",
        a.log()
    );
    let b = processor_with(&topic, &group, durability);
    assert!(
        wait_until(60, || a
            .metric_sum("shardtel_receiver_kafka_assigned_partitions", "")
            > 0
            && b.metric_sum("shardtel_receiver_kafka_assigned_partitions", "")
                > 0
            && a.metric_sum("shardtel_receiver_kafka_assigned_partitions", "")
                + b.metric_sum(
                    "shardtel_receiver_kafka_assigned_partitions",
                    ""
                )
                == partitions as u64),
        "partitions not split; a log:\n{}\nb log:\n{}",
        a.log(),
        b.log()
    );

    // A stream of 3000 messages over ~7 s; `a` is killed (SIGKILL) after 2000, once it has
    // committed offsets. Traces start all through the stream, so `a` holds undecided traces
    // (3 s decision wait) whose messages lie before the 1 s commit interval: committing those
    // offsets without waiting for the sampler would lose them.
    let traces = 600;
    let pieces = 5;
    let mut killed = false;
    let sent = fill_topic(&topic, 41, traces, pieces, |i| {
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        if i == 2000 {
            assert!(
                wait_until(20, || a
                    .metric_sum("shardtel_receiver_kafka_commits_total", "")
                    > 0),
                "a never committed; log:\n{}",
                a.log()
            );
            a.kill();
            killed = true;
        }
    });
    assert!(killed);
    // `b` takes over a's partitions once the session times out (6 s).
    assert!(
        wait_until(60, || b
            .metric_sum("shardtel_receiver_kafka_assigned_partitions", "")
            == partitions as u64),
        "b did not take over; b log:\n{}",
        b.log()
    );
    let keep: BTreeSet<SpanId> = sent.iter().filter(|(t, _)| kept(t)).cloned().collect();
    let all = || {
        let (mut spans, _) = exported(&a.out());
        for (id, n) in exported(&b.out()).0 {
            *spans.entry(id).or_default() += n;
        }
        spans
    };
    let arrived =
        |spans: &BTreeMap<SpanId, usize>| keep.iter().filter(|id| spans.contains_key(*id)).count();
    assert!(
        wait_until(90, || arrived(&all()) == keep.len()),
        "{} of {} kept spans exported; a log:\n{}\nb log:\n{}",
        arrived(&all()),
        keep.len(),
        a.log(),
        b.log()
    );
    let spans = all();
    // No kept trace lost or cut short, and nothing of a dropped trace exported.
    let missing = keep.len() - arrived(&spans);
    assert_eq!(missing, 0, "{missing} spans of kept traces lost");
    let unexpected = spans.keys().filter(|id| !keep.contains(*id)).count();
    if unexpected > 0 {
        // Which process exported them, of how many traces, and what the survivor's sampler
        // and receiver counted.
        let dropped_by = |p: &Shardtel| -> (usize, BTreeSet<Vec<u8>>) {
            let ids: Vec<SpanId> = exported(&p.out())
                .0
                .into_keys()
                .filter(|id| !keep.contains(id))
                .collect();
            (ids.len(), ids.into_iter().map(|(t, _)| t).collect())
        };
        let ((by_a, traces_a), (by_b, traces_b)) = (dropped_by(&a), dropped_by(&b));
        let metrics = b.metrics();
        let sampler: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && (l.contains("sampler")
                        || l.contains("receiver_kafka")
                        || l.contains("replay"))
            })
            .collect();
        panic!(
            "{unexpected} spans of traces the sampler drops were exported: {by_a} spans of {} traces by a (killed), {by_b} spans of {} traces by b; b's metrics:\n{}\na log:\n{}\nb log:\n{}",
            traces_a.len(),
            traces_b.len(),
            sampler.join("\n"),
            a.log(),
            b.log()
        );
    }
    let duplicates: usize = spans.values().map(|n| n - 1).sum();
    eprintln!(
        "kafka kill test ({durability}): {} spans sent, {} kept, {} exported by the killed processor, {duplicates} duplicates after the takeover",
        sent.len(),
        keep.len(),
        exported(&a.out()).0.len()
    );
    let by_a = exported(&a.out()).0.len();
    assert!(by_a > 0, "a exported before it was killed");
    // Duplicates are what `a` consumed after its last commit: not everything it exported.
    assert!(
        b.metric_sum("shardtel_receiver_kafka_assignments_total", "") >= 2,
        "b saw the rebalance that gave it a's partitions"
    );
    assert!(
        duplicates < by_a,
        "{duplicates} duplicates of {by_a} spans exported by a"
    );
}

/// A brand-new group with the default `initial_offset = "latest"`, and a processor that holds
/// all it consumed behind a 20 s `decision_wait`: no frame of it is released, so no offset it
/// consumed may be committed yet when it is killed (SIGKILL) for good. Its partitions had no
/// committed offset, so without the position it started from committed at once, the next
/// owner would start at the log's end (`latest`) and skip everything the first one consumed.
/// Every kept span must arrive through the processor that takes over.
#[test]
fn a_new_group_whose_first_processor_dies_before_its_first_commit_loses_nothing() {
    if !broker_available(
        "a_new_group_whose_first_processor_dies_before_its_first_commit_loses_nothing",
    ) {
        return;
    }
    let partitions = 4;
    let topic = unique_topic("fresh-kill-spans");
    let group = unique_topic("fresh-kill-group");
    create_topic(&topic, partitions);
    let assigned = |p: &Shardtel| p.metric_sum("shardtel_receiver_kafka_assigned_partitions", "");
    let mut a = processor_starting_at(&topic, &group, "ack_after_sync", "20s", "latest", "");
    assert!(
        wait_until(60, || assigned(&a) == partitions as u64),
        "a got no partitions; log:\n{}",
        a.log()
    );
    // `latest`: the group starts where the log ends when `a` looks it up (right after the
    // assignment); what was produced before that is not a's to consume.
    std::thread::sleep(Duration::from_secs(2));
    let sent = fill_topic(&topic, 61, 200, 3, |_| {});
    assert!(
        wait_until(30, || a
            .metric_sum("shardtel_receiver_kafka_messages_total", "")
            == sent.len() as u64),
        "a consumed {} of {} messages; log:\n{}",
        a.metric_sum("shardtel_receiver_kafka_messages_total", ""),
        sent.len(),
        a.log()
    );
    // Nothing decided yet (20 s wait), so no frame released and nothing exported.
    assert_eq!(a.metric_sum("shardtel_sampler_traces_total", ""), 0);
    a.kill();
    let b = processor_starting_at(&topic, &group, "ack_after_sync", "3s", "latest", "");
    // b gets every partition once a's session times out (6 s).
    assert!(
        wait_until(60, || assigned(&b) == partitions as u64),
        "b did not take over; b log:\n{}",
        b.log()
    );
    let keep: BTreeSet<SpanId> = sent.iter().filter(|(t, _)| kept(t)).cloned().collect();
    let arrived = || {
        let spans = exported(&b.out()).0;
        keep.iter().filter(|id| spans.contains_key(*id)).count()
    };
    assert!(
        wait_until(60, || arrived() == keep.len()),
        "{} of {} kept spans exported after the takeover (b consumed {} messages); a log:\n{}\nb log:\n{}",
        arrived(),
        keep.len(),
        b.metric_sum("shardtel_receiver_kafka_messages_total", ""),
        a.log(),
        b.log()
    );
    assert!(exported(&a.out()).0.is_empty(), "a exported nothing");
    let (spans, _) = exported(&b.out());
    assert!(
        spans.keys().all(|id| keep.contains(id)),
        "nothing of a dropped trace exported"
    );
}

/// A processor whose topic does not exist (consumers do not create topics) is not left idle in
/// silence: the consumer's errors are warned about, at most one line per 10 s per core, and
/// counted in `shardtel_receiver_kafka_poll_errors_total`.
#[test]
fn a_missing_topic_is_warned_about_and_counted() {
    if !broker_available("a_missing_topic_is_warned_about_and_counted") {
        return;
    }
    let topic = unique_topic("missing-topic");
    let group = unique_topic("missing-group");
    let p = processor(&topic, &group);
    let errors = || p.metric_sum("shardtel_receiver_kafka_poll_errors_total", "");
    assert!(
        wait_until(60, || errors() > 0),
        "no consumer error counted; metrics:\n{}\nlog:\n{}",
        p.metrics(),
        p.log()
    );
    let started = Instant::now();
    let warnings = |log: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("kafka receiver (core"))
            .filter(|l| l.contains("nknown topic"))
            .count()
    };
    assert!(
        wait_until(10, || warnings(&p.log()) > 0),
        "no warning about the missing topic; log:\n{}",
        p.log()
    );
    // Throttled: librdkafka reports the error at every metadata refresh, the log says it at
    // most once per 10 s per core (2 cores), with the number held back.
    std::thread::sleep(Duration::from_secs(12));
    let log = p.log();
    let lines = warnings(&log);
    let allowed = 2 * (2 + started.elapsed().as_secs() / 10) as usize;
    assert!(
        lines <= allowed,
        "{lines} warnings (at most {allowed}); log:\n{log}"
    );
    eprintln!(
        "missing topic: {} consumer errors counted, {lines} warnings logged",
        errors()
    );
}

/// A processor started on a backlog and stopped as soon as it consumed it exits on SIGTERM
/// (librdkafka's destroy waited forever for its broker threads here: the consumer now leaves
/// the group on a thread of its own, waited for at most 5 s).
#[test]
fn a_processor_stopped_right_after_a_backlog_exits() {
    if !broker_available("a_processor_stopped_right_after_a_backlog_exits") {
        return;
    }
    let topic = unique_topic("backlog-stop");
    let group = unique_topic("backlog-stop-group");
    create_topic(&topic, 2);
    let sent = fill_topic(&topic, 54, 1_000, 2, |_| {});
    let mut p = processor_with(&topic, &group, "ack_after_sync");
    assert!(wait_until(120, || {
        p.metric_sum("shardtel_receiver_kafka_messages_total", "") >= sent.len() as u64
    }));
    let started = Instant::now();
    assert_eq!(p.stop(), 0, "{}", p.log());
    eprintln!(
        "stopped in {:?}; consumer left the group in time: {}",
        started.elapsed(),
        !p.log().contains("did not leave the group")
    );
}

/// Sends three malformed messages (keys spread over partitions) to `topic`.
fn send_garbage(producer: &BaseProducer, topic: &str, n: u8) {
    for i in 0..3u8 {
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&[n.wrapping_mul(3).wrapping_add(i); 16][..])
                    .payload(&b"\x0a\xff\xff garbage"[..]),
            )
            .unwrap();
    }
}

/// The consumed messages, ingest-log frames and requests of a processor, once it consumed
/// `messages` (of which `malformed` are skipped); checks nothing was refused.
fn consumed_in_frames(p: &Shardtel, messages: u64, malformed: u64) -> (u64, u64) {
    let consumed = || {
        p.metric_sum("shardtel_receiver_kafka_messages_total", "")
            + p.metric_sum("shardtel_receiver_kafka_malformed_messages_total", "")
    };
    assert!(
        wait_until(180, || consumed() >= messages),
        "consumed {} of {messages} messages; metrics:\n{}\nlog:\n{}",
        consumed(),
        p.metrics(),
        p.log()
    );
    assert_eq!(
        p.metric_sum("shardtel_receiver_kafka_malformed_messages_total", ""),
        malformed,
        "{}",
        p.log()
    );
    assert!(p.log().contains("skipped malformed message"));
    let frames = p.metric_sum("shardtel_ingest_log_appended_frames_total", "");
    let requests = p.metric_sum("shardtel_receiver_kafka_requests_total", "");
    assert_eq!(frames, requests, "one ingest-log frame per request");
    for refusal in [
        "shardtel_ingest_log_refused_unreleased_total",
        "shardtel_ingest_log_refused_full_total",
        "shardtel_receiver_failed_requests_total",
        "shardtel_receiver_refused_spans_total",
    ] {
        assert_eq!(p.metric_sum(refusal, ""), 0, "{refusal}:\n{}", p.metrics());
    }
    (frames, requests)
}

/// The seed architecture's processing tier with durability on and the default-like 30 s
/// decision wait: one ingest-log frame per message would cap a core at 262,144 / 30 = 8,738
/// messages/s (the unreleased-frame bound). A backlog of 20,000 one-span messages (with
/// malformed ones in the middle of it) is ingested as far fewer frames, without a refusal, and
/// every kept span arrives (SIGTERM decides the held traces at once instead of 30 s later).
#[test]
fn a_backlog_is_ingested_in_few_frames_behind_a_30s_decision_wait() {
    if !broker_available("a_backlog_is_ingested_in_few_frames_behind_a_30s_decision_wait") {
        return;
    }
    let partitions = 4;
    let topic = unique_topic("group-spans");
    let group = unique_topic("group-group");
    create_topic(&topic, partitions);
    let garbage: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .create()
        .unwrap();
    let sent = fill_topic(&topic, 51, 10_000, 2, |i| {
        if i % 7_000 == 3_500 {
            send_garbage(&garbage, &topic, (i / 7_000) as u8);
        }
    });
    garbage.flush(Duration::from_secs(10)).unwrap();
    let messages = sent.len() as u64;
    assert_eq!(messages, 20_000);

    let mut p = processor_configured(&topic, &group, "ack_after_sync", "30s", "");
    let (frames, _) = consumed_in_frames(&p, messages + 9, 9);
    eprintln!(
        "kafka grouping: {messages} messages in {frames} ingest-log frames ({:.0} per frame); the unreleased-frame bound now allows about {:.0} messages/s per core at decision_wait = 30s",
        messages as f64 / frames as f64,
        262_144.0 * messages as f64 / frames as f64 / 30.0
    );
    assert!(
        frames > 0 && frames * 20 <= messages,
        "{messages} messages took {frames} frames"
    );
    assert_eq!(
        p.metric_sum(
            "shardtel_receiver_accepted_spans_total",
            "transport=\"kafka\""
        ),
        messages
    );
    assert_eq!(p.stop(), 0, "{}", p.log());
    let (spans, _) = exported(&p.out());
    let keep: BTreeSet<SpanId> = sent.iter().filter(|(t, _)| kept(t)).cloned().collect();
    assert_eq!(
        spans.keys().cloned().collect::<BTreeSet<_>>(),
        keep,
        "every kept span exported, nothing else"
    );
    assert!(spans.values().all(|&n| n == 1), "each exported once");
}

/// OTLP/JSON messages are converted to protobuf and joined into requests too; malformed JSON
/// is skipped without losing the messages around it.
#[test]
fn json_messages_are_ingested_in_few_frames() {
    if !broker_available("json_messages_are_ingested_in_few_frames") {
        return;
    }
    let topic = unique_topic("group-json");
    let group = unique_topic("group-json-group");
    create_topic(&topic, 2);
    let garbage: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .create()
        .unwrap();
    let sent = fill_topic_as(&topic, 52, 1_000, 2, Encoding::Json, |i| {
        if i == 1_000 {
            send_garbage(&garbage, &topic, 0);
        }
    });
    garbage.flush(Duration::from_secs(10)).unwrap();
    let messages = sent.len() as u64;
    let mut p = processor_configured(
        &topic,
        &group,
        "ack_after_sync",
        "1s",
        "encoding = \"otlp_json\"",
    );
    let (frames, _) = consumed_in_frames(&p, messages + 3, 3);
    assert!(
        frames > 0 && frames * 10 <= messages,
        "{messages} messages took {frames} frames"
    );
    let keep: BTreeSet<SpanId> = sent.iter().filter(|(t, _)| kept(t)).cloned().collect();
    assert!(
        wait_until(60, || exported(&p.out()).0.len() == keep.len()),
        "{} of {} kept spans exported",
        exported(&p.out()).0.len(),
        keep.len()
    );
    assert_eq!(p.stop(), 0);
    let (spans, _) = exported(&p.out());
    assert_eq!(spans.keys().cloned().collect::<BTreeSet<_>>(), keep);
}
