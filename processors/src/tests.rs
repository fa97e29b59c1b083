//! Unit tests: every action, key form, target and filter condition, through the compiled
//! chains, checked against prost decodes of the output.

use super::*;
use prost::Message;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::proto::common::v1::{any_value::Value as V, AnyValue, KeyValue};
use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use shardtel_protocol::proto::metrics::v1::{
    metric, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::proto::trace::v1::{span::Event, ResourceSpans, ScopeSpans, Span, Status};
use shardtel_protocol::reframe::encode_traces;

fn kv(k: &str, v: V) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> V {
    V::StringValue(v.into())
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a V> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// A chain of the processors `names` defined in `processors` (TOML), for `signal`.
fn chain(signal: Signal, processors: &str, names: &[&str]) -> Chain {
    let pipeline = match signal {
        Signal::Traces => "traces",
        Signal::Metrics => "metrics",
        Signal::Logs => "logs",
    };
    let list: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    let text = format!(
        "{processors}\n[receivers.otlp]\n[exporters.blackhole]\n[pipelines.{pipeline}]\nreceivers = [\"otlp\"]\nprocessors = [{}]\nexporters = [\"blackhole\"]\n",
        list.join(", ")
    );
    let env = |name: &str| (name == "SHARDTEL_TEST_REGION").then(|| "eu-west-9".to_string());
    let config = Config::from_str_with_env(&text, "t.toml", &env).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    Chain::build(&config, signal, &names)
        .unwrap()
        .expect("a chain")
}

fn span(name: &str, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        attributes,
        ..Default::default()
    }
}

fn traces(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: "https://schema".into(),
        }],
    }
}

/// Runs `chain` over `req`; returns the output and the batch (to look at what was copied).
fn run_traces(
    chain: &Chain,
    req: &ExportTraceServiceRequest,
) -> (ExportTraceServiceRequest, SpanBatch) {
    let mut batch = SpanBatch::scan(Bytes::from(req.encode_to_vec())).unwrap();
    chain.process_traces(&mut batch);
    let mut out = Encoded::default();
    encode_traces(&batch, &mut out);
    (
        ExportTraceServiceRequest::decode(out.to_bytes()).unwrap(),
        batch,
    )
}

fn logs(resource: Vec<KeyValue>, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

fn record(body: &str, attributes: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        body: Some(AnyValue {
            value: Some(s(body)),
        }),
        attributes,
        severity_number: 9,
        severity_text: "INFO".into(),
        ..Default::default()
    }
}

fn run_logs(chain: &Chain, req: &ExportLogsServiceRequest) -> (ExportLogsServiceRequest, bool) {
    let buf = Bytes::from(req.encode_to_vec());
    match chain.process_request(&buf).unwrap() {
        Some((out, _)) => (
            ExportLogsServiceRequest::decode(out.to_bytes()).unwrap(),
            true,
        ),
        None => (req.clone(), false),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const REDACT: &str = r#"
[processors.redact]
type = "attributes"
[[processors.redact.actions]]
key = "http.url"
action = "hash"
[[processors.redact.actions]]
key = "user.email"
action = "delete"
[[processors.redact.actions]]
key = "log.body"            # the log record's body
action = "mask"
pattern = '\d{4}-\d{4}-\d{4}-\d{4}'
replacement = "[REDACTED]"
"#;

#[test]
fn redact_spans_hash_and_delete_and_leave_others_as_slices() {
    let c = chain(Signal::Traces, REDACT, &["redact"]);
    let url = "https://shop/cart?token=s3cr3t";
    let req = traces(
        vec![kv("service.name", s("shop"))],
        vec![
            span(
                "a",
                vec![
                    kv("http.url", s(url)),
                    kv("user.email", s("a@b.c")),
                    kv("k", s("v")),
                ],
            ),
            span("b", vec![kv("http.route", s("/cart"))]),
        ],
    );
    let (out, batch) = run_traces(&c, &req);
    let spans = &out.resource_spans[0].scope_spans[0].spans;
    assert_eq!(
        attr(&spans[0].attributes, "http.url"),
        Some(&s(&sha256_hex(url.as_bytes())))
    );
    assert_eq!(attr(&spans[0].attributes, "user.email"), None);
    assert_eq!(attr(&spans[0].attributes, "k"), Some(&s("v")));
    assert_eq!(spans[1], req.resource_spans[0].scope_spans[0].spans[1]);
    // Only the changed span was rewritten; the resource was not.
    assert_eq!(batch.index.rewrites.spans.len(), 1);
    assert_eq!(batch.index.rewrites.spans[0].0, 0);
    assert!(batch.index.rewrites.resources.is_empty());
    assert_eq!(
        out.resource_spans[0].resource,
        req.resource_spans[0].resource
    );
    let snap = {
        let mut v = Vec::new();
        c.snapshot(&mut v);
        v
    };
    assert_eq!(
        (snap[0].received, snap[0].changed, snap[0].dropped),
        (2, 1, 0)
    );
}

#[test]
fn redact_log_bodies_and_attributes() {
    let c = chain(Signal::Logs, REDACT, &["redact"]);
    let req = logs(
        vec![],
        vec![
            record(
                "paid with 4111-1111-1111-1111 and 5500-0000-0000-0004",
                vec![kv("user.email", s("x@y"))],
            ),
            record("nothing to see", vec![kv("a", s("b"))]),
        ],
    );
    let (out, changed) = run_logs(&c, &req);
    assert!(changed);
    let recs = &out.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(
        recs[0].body.as_ref().unwrap().value,
        Some(s("paid with [REDACTED] and [REDACTED]"))
    );
    assert!(recs[0].attributes.is_empty());
    assert_eq!(recs[0].severity_text, "INFO");
    assert_eq!(recs[1], req.resource_logs[0].scope_logs[0].log_records[1]);
    // A request nothing matches comes back unchanged.
    let (_, changed) = run_logs(&c, &logs(vec![], vec![record("plain", vec![])]));
    assert!(!changed);
}

#[test]
fn insert_update_upsert_and_from_attribute() {
    let c = chain(
        Signal::Traces,
        r#"[processors.p]
type = "attributes"
actions = [
  { key = "env", action = "insert", value = "prod" },
  { key = "present", action = "insert", value = "ignored" },
  { key = "present", action = "update", value = 7 },
  { key = "missing", action = "update", value = 1 },
  { key = "ratio", action = "upsert", value = 0.5 },
  { key = "flag", action = "upsert", value = true },
  { key = "copy", action = "upsert", from_attribute = "present" },
  { key = "none", action = "insert", from_attribute = "nope" },
]"#,
        &["p"],
    );
    let req = traces(
        vec![],
        vec![span(
            "a",
            vec![kv("present", s("x")), kv("flag", V::BoolValue(false))],
        )],
    );
    let (out, _) = run_traces(&c, &req);
    let a = &out.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(attr(a, "present"), Some(&V::IntValue(7)));
    assert_eq!(attr(a, "env"), Some(&s("prod")));
    assert_eq!(attr(a, "missing"), None);
    assert_eq!(attr(a, "ratio"), Some(&V::DoubleValue(0.5)));
    assert_eq!(attr(a, "flag"), Some(&V::BoolValue(true)));
    assert_eq!(attr(a, "copy"), Some(&V::IntValue(7)));
    assert_eq!(attr(a, "none"), None);
    let keys: Vec<&str> = a.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["present", "flag", "env", "ratio", "copy"]);
}

#[test]
fn regex_keys_hash_mask_delete_and_update() {
    let c = chain(
        Signal::Traces,
        r#####"[processors.p]
type = "attributes"
actions = [
  { pattern = "^secret\\.", action = "delete" },
  { key_pattern = "token", action = "hash" },
  { key_pattern = "^card", action = "mask", pattern = "\\d{4}-", replacement = "####-" },
  { key_pattern = "^tier$", action = "update", value = "gold" },
]"#####,
        &["p"],
    );
    let req = traces(
        vec![],
        vec![span(
            "a",
            vec![
                kv("secret.a", s("1")),
                kv("secret.b", s("2")),
                kv("auth.token", V::IntValue(42)),
                kv("card.number", s("4111-1111")),
                kv("tier", s("free")),
                kv("keep", s("me")),
            ],
        )],
    );
    let (out, _) = run_traces(&c, &req);
    let a = &out.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(attr(a, "secret.a"), None);
    assert_eq!(attr(a, "secret.b"), None);
    assert_eq!(
        attr(a, "auth.token"),
        Some(&s(&sha256_hex(&42i64.to_le_bytes())))
    );
    assert_eq!(attr(a, "card.number"), Some(&s("####-1111")));
    assert_eq!(attr(a, "tier"), Some(&s("gold")));
    assert_eq!(attr(a, "keep"), Some(&s("me")));
}

#[test]
fn extract_named_groups() {
    let c = chain(
        Signal::Traces,
        r#"[processors.p]
type = "attributes"
[[processors.p.actions]]
key = "http.route"
action = "extract"
pattern = '^/api/(?P<version>v\d+)/(?P<resource>\w+)'
"#,
        &["p"],
    );
    let req = traces(
        vec![],
        vec![
            span(
                "a",
                vec![
                    kv("http.route", s("/api/v2/orders/7")),
                    kv("version", s("old")),
                ],
            ),
            span("b", vec![kv("http.route", s("/health"))]),
        ],
    );
    let (out, batch) = run_traces(&c, &req);
    let spans = &out.resource_spans[0].scope_spans[0].spans;
    assert_eq!(attr(&spans[0].attributes, "version"), Some(&s("v2")));
    assert_eq!(attr(&spans[0].attributes, "resource"), Some(&s("orders")));
    assert_eq!(spans[1], req.resource_spans[0].scope_spans[0].spans[1]);
    assert_eq!(batch.index.rewrites.spans.len(), 1);
}

#[test]
fn hash_of_every_value_type_follows_the_collector() {
    // The Collector's sha2Hasher (v0.165.0): SHA-256 of a string's bytes (an empty one too), a
    // boolean's one byte, an integer's or double's 8 little-endian bytes; "" for bytes, arrays,
    // maps and no value.
    let c = chain(
        Signal::Traces,
        r#"[processors.p]
type = "attributes"
actions = [{ key_pattern = "^h\\.", action = "hash" }]
"#,
        &["p"],
    );
    let array = V::ArrayValue(shardtel_protocol::proto::common::v1::ArrayValue {
        values: vec![AnyValue {
            value: Some(s("x")),
        }],
    });
    let map = V::KvlistValue(shardtel_protocol::proto::common::v1::KeyValueList {
        values: vec![kv("k", s("v"))],
    });
    let empty = KeyValue {
        key: "h.none".into(),
        value: Some(AnyValue { value: None }),
        ..Default::default()
    };
    let req = traces(
        vec![],
        vec![span(
            "a",
            vec![
                kv("h.str", s("abc")),
                kv("h.empty_str", s("")),
                kv("h.true", V::BoolValue(true)),
                kv("h.false", V::BoolValue(false)),
                kv("h.int", V::IntValue(-7)),
                kv("h.double", V::DoubleValue(1.5)),
                kv("h.bytes", V::BytesValue(vec![1, 2, 3])),
                kv("h.array", array),
                kv("h.map", map),
                empty,
            ],
        )],
    );
    let (out, _) = run_traces(&c, &req);
    let a = &out.resource_spans[0].scope_spans[0].spans[0].attributes;
    let got = |k: &str| attr(a, k).cloned();
    assert_eq!(
        got("h.str"),
        Some(s(
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        ))
    );
    assert_eq!(got("h.empty_str"), Some(s(&sha256_hex(b""))));
    assert_eq!(got("h.true"), Some(s(&sha256_hex(&[1]))));
    assert_eq!(got("h.false"), Some(s(&sha256_hex(&[0]))));
    assert_eq!(got("h.int"), Some(s(&sha256_hex(&(-7i64).to_le_bytes()))));
    assert_eq!(
        got("h.double"),
        Some(s(&sha256_hex(&1.5f64.to_bits().to_le_bytes())))
    );
    for k in ["h.bytes", "h.array", "h.map", "h.none"] {
        assert_eq!(got(k), Some(s("")), "{k}");
    }
    assert_eq!(a.len(), 10);
}

#[test]
fn extract_writes_an_empty_string_for_a_group_that_did_not_match() {
    // Go's FindStringSubmatch gives "" for a group outside the match; the Collector writes it.
    let c = chain(
        Signal::Traces,
        r#"[processors.p]
type = "attributes"
[[processors.p.actions]]
key = "http.route"
action = "extract"
pattern = '^/(?P<section>\w+)(/(?P<id>\d+))?'
"#,
        &["p"],
    );
    let req = traces(
        vec![],
        vec![
            span(
                "a",
                vec![kv("http.route", s("/orders")), kv("id", s("stale"))],
            ),
            span("b", vec![kv("http.route", s("/orders/42"))]),
        ],
    );
    let (out, _) = run_traces(&c, &req);
    let spans = &out.resource_spans[0].scope_spans[0].spans;
    assert_eq!(attr(&spans[0].attributes, "section"), Some(&s("orders")));
    assert_eq!(attr(&spans[0].attributes, "id"), Some(&s("")));
    assert_eq!(attr(&spans[1].attributes, "id"), Some(&s("42")));
}

/// An `attributes` processor that copies `http.url` into `url.full`, and one that hashes
/// `url.full`: the second must see the key the first added, though the item's original bytes
/// lack it.
const ENRICH_THEN_REDACT: &str = r#"
[processors.enrich]
type = "attributes"
actions = [{ key = "url.full", action = "insert", from_attribute = "http.url" }]
[processors.redact]
type = "attributes"
actions = [{ key = "url.full", action = "hash" }]
[processors.t]
type = "transform"
[[processors.t.trace_statements]]
context = "span"
statements = ['set(attributes["url.full"], attributes["http.url"])']
[[processors.t.log_statements]]
context = "log"
statements = ['set(attributes["url.full"], attributes["http.url"])']
[[processors.t.metric_statements]]
context = "datapoint"
statements = ['set(attributes["url.full"], attributes["http.url"])']
[processors.rename]
type = "transform"
[[processors.rename.trace_statements]]
context = "span"
statements = ['rename(attributes, "http.url", "url.full")']
"#;

#[test]
fn a_stage_sees_the_keys_earlier_stages_added() {
    let url = "https://shop/cart?token=s3cr3t";
    let hashed = s(&sha256_hex(url.as_bytes()));
    // Spans: after an attributes insert, a transform set, a transform rename.
    for names in [
        &["enrich", "redact"][..],
        &["t", "redact"],
        &["rename", "redact"],
    ] {
        let c = chain(Signal::Traces, ENRICH_THEN_REDACT, names);
        let req = traces(
            vec![],
            vec![
                span("a", vec![kv("http.url", s(url))]),
                span("b", vec![kv("k", s("v"))]),
            ],
        );
        let (out, _) = run_traces(&c, &req);
        let spans = &out.resource_spans[0].scope_spans[0].spans;
        assert_eq!(
            attr(&spans[0].attributes, "url.full"),
            Some(&hashed),
            "{names:?}"
        );
        assert_eq!(spans[1], req.resource_spans[0].scope_spans[0].spans[1]);
        let snap = c.snapshot_vec();
        assert_eq!((snap[1].received, snap[1].changed), (2, 1), "{names:?}");
    }
    // Log records.
    for names in [&["enrich", "redact"][..], &["t", "redact"]] {
        let c = chain(Signal::Logs, ENRICH_THEN_REDACT, names);
        let req = logs(vec![], vec![record("hi", vec![kv("http.url", s(url))])]);
        let (out, changed) = run_logs(&c, &req);
        assert!(changed);
        let rec = &out.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(
            attr(&rec.attributes, "url.full"),
            Some(&hashed),
            "{names:?}"
        );
    }
    // Data points.
    for names in [&["enrich", "redact"][..], &["t", "redact"]] {
        let c = chain(Signal::Metrics, ENRICH_THEN_REDACT, names);
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: None,
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "requests".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                attributes: vec![kv("http.url", s(url))],
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        };
        let buf = Bytes::from(req.encode_to_vec());
        let (out, _) = c.process_request(&buf).unwrap().unwrap();
        let got = ExportMetricsServiceRequest::decode(out.to_bytes()).unwrap();
        let Some(metric::Data::Gauge(g)) =
            &got.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!()
        };
        assert_eq!(
            attr(&g.data_points[0].attributes, "url.full"),
            Some(&hashed),
            "{names:?}"
        );
    }
}

#[test]
fn filters_see_the_name_status_and_severity_a_transform_left() {
    let procs = r#"
[processors.t]
type = "transform"
[[processors.t.trace_statements]]
context = "span"
statements = [
  'set(status.code, STATUS_CODE_ERROR) where attributes["http.status_code"] >= 500',
  'replace_pattern(name, "/\\d+", "/{id}")',
]
[[processors.t.log_statements]]
context = "log"
statements = ['set(severity_text, "DEBUG") where IsMatch(body, "^ping")']
[processors.no_errors]
type = "filter"
[processors.no_errors.spans.exclude]
status_codes = ["ERROR"]
[processors.no_ids]
type = "filter"
[processors.no_ids.spans.exclude]
span_names = ["GET /orders/{id}"]
[processors.no_debug]
type = "filter"
[processors.no_debug.logs.exclude]
severity_texts = ["DEBUG"]
"#;
    let c = chain(Signal::Traces, procs, &["t", "no_errors", "no_ids"]);
    let req = traces(
        vec![],
        vec![
            span("POST /pay", vec![kv("http.status_code", V::IntValue(503))]),
            span("GET /orders/42", vec![]),
            span("GET /", vec![kv("http.status_code", V::IntValue(200))]),
        ],
    );
    let (out, _) = run_traces(&c, &req);
    let names: Vec<&str> = out.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|sp| sp.name.as_str())
        .collect();
    assert_eq!(names, ["GET /"]);
    let snap = c.snapshot_vec();
    assert_eq!((snap[1].dropped, snap[2].dropped), (1, 1));

    let c = chain(Signal::Logs, procs, &["t", "no_debug"]);
    let req = logs(vec![], vec![record("ping", vec![]), record("pay", vec![])]);
    let (out, _) = run_logs(&c, &req);
    let bodies: Vec<_> = out.resource_logs[0].scope_logs[0]
        .log_records
        .iter()
        .map(|r| r.body.clone().unwrap().value.unwrap())
        .collect();
    assert_eq!(bodies, [s("pay")]);
}

#[test]
fn regexp_attribute_values_match_the_text_of_any_scalar() {
    // As the Collector: an int in decimal, a double in Go's shortest 'f' form, a bool as
    // true / false; bytes, arrays and maps never match.
    let c = chain(
        Signal::Traces,
        r#"[processors.f]
type = "filter"
[processors.f.spans.exclude]
match_type = "regexp"
attributes = [{ key = "v", value = "^(5|true$|0\\.00000015$|1000000000000000000000$|-Inf$)" }]
"#,
        &["f"],
    );
    let req = traces(
        vec![],
        vec![
            span("int", vec![kv("v", V::IntValue(503))]),
            span("bool", vec![kv("v", V::BoolValue(true))]),
            span("small", vec![kv("v", V::DoubleValue(1.5e-7))]),
            span("large", vec![kv("v", V::DoubleValue(1e21))]),
            span("inf", vec![kv("v", V::DoubleValue(f64::NEG_INFINITY))]),
            span("ok", vec![kv("v", V::IntValue(200))]),
            span("false", vec![kv("v", V::BoolValue(false))]),
            span("double", vec![kv("v", V::DoubleValue(0.5))]),
            span("bytes", vec![kv("v", V::BytesValue(b"5".to_vec()))]),
        ],
    );
    let (out, _) = run_traces(&c, &req);
    let names: Vec<&str> = out.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|sp| sp.name.as_str())
        .collect();
    assert_eq!(names, ["ok", "false", "double", "bytes"]);
}

#[test]
fn include_resource_and_the_resource_processor() {
    let c = chain(
        Signal::Traces,
        r#"[processors.enrich]
type = "resource"
attributes = [
  { key = "cloud.region", action = "insert", value = "${SHARDTEL_TEST_REGION}" },
  { key = "host.name", action = "upsert", value = "${SHARDTEL_TEST_HOST:-node-1}" },
  { key = "telemetry.sdk.name", action = "delete" },
]
[processors.scrub]
type = "attributes"
include_resource = true
actions = [{ key = "owner.email", action = "hash" }]
"#,
        &["enrich", "scrub"],
    );
    let req = traces(
        vec![
            kv("service.name", s("shop")),
            kv("telemetry.sdk.name", s("opentelemetry")),
            kv("owner.email", s("ops@shop")),
        ],
        vec![
            span("a", vec![]),
            span("b", vec![kv("owner.email", s("x"))]),
        ],
    );
    let (out, batch) = run_traces(&c, &req);
    let r = &out.resource_spans[0].resource.as_ref().unwrap().attributes;
    assert_eq!(attr(r, "cloud.region"), Some(&s("eu-west-9")));
    assert_eq!(attr(r, "host.name"), Some(&s("node-1")));
    assert_eq!(attr(r, "telemetry.sdk.name"), None);
    assert_eq!(attr(r, "owner.email"), Some(&s(&sha256_hex(b"ops@shop"))));
    assert_eq!(out.resource_spans[0].schema_url, "https://schema");
    // The resource is substituted; of the spans only the one with the key is rewritten.
    assert_eq!(batch.index.rewrites.resources.len(), 1);
    assert_eq!(batch.index.rewrites.spans.len(), 1);
    let spans = &out.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans[0], req.resource_spans[0].scope_spans[0].spans[0]);
    assert_eq!(
        attr(&spans[1].attributes, "owner.email"),
        Some(&s(&sha256_hex(b"x")))
    );
}

#[test]
fn filter_spans_by_every_condition() {
    let health = r#"[processors.f]
type = "filter"
[processors.f.spans.exclude]
match_type = "regexp"
attributes = [{ key = "http.route", value = "^/(health|ready)" }]
"#;
    let c = chain(Signal::Traces, health, &["f"]);
    let req = traces(
        vec![],
        vec![
            span("GET /health", vec![kv("http.route", s("/health"))]),
            span("GET /cart", vec![kv("http.route", s("/cart"))]),
            span("GET /ready", vec![kv("http.route", s("/ready"))]),
        ],
    );
    let (out, batch) = run_traces(&c, &req);
    let names: Vec<&str> = out.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["GET /cart"]);
    assert!(
        batch.index.rewrites.spans.is_empty(),
        "filtering copies nothing"
    );

    let c = chain(
        Signal::Traces,
        r#"[processors.f]
type = "filter"
[processors.f.spans.include]
services = ["shop"]
span_kinds = ["SERVER"]
[processors.f.spans.exclude]
span_names = ["skip"]
status_codes = ["OK"]
resource_attributes = [{ key = "env", value = "prod" }]
"#,
        &["f"],
    );
    let mut server = span("keep", vec![]);
    server.kind = 2;
    let mut skipped = span("skip", vec![]);
    skipped.kind = 2;
    skipped.status = Some(Status {
        code: 1,
        ..Default::default()
    });
    let mut skip_but_error = span("skip", vec![]);
    skip_but_error.kind = 2;
    skip_but_error.status = Some(Status {
        code: 2,
        ..Default::default()
    });
    let client = span("client", vec![]);
    let req = traces(
        vec![kv("service.name", s("shop")), kv("env", s("prod"))],
        vec![server, skipped, skip_but_error, client],
    );
    let (out, _) = run_traces(&c, &req);
    let names: Vec<&str> = out.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["keep", "skip"]);
    // Another service: nothing passes the include, so the resource goes too.
    let other = traces(
        vec![kv("service.name", s("other"))],
        vec![span("keep", vec![])],
    );
    let (out, _) = run_traces(&c, &other);
    assert!(out.resource_spans.is_empty());
}

#[test]
fn filter_logs_by_severity_body_and_attributes() {
    let c = chain(
        Signal::Logs,
        r#"[processors.f]
type = "filter"
[processors.f.logs.exclude]
severity_number = { min = "WARN", match_undefined = true }
[processors.f.logs.include]
match_type = "regexp"
bodies = ["^GET"]
attributes = [{ key = "user.id" }]
"#,
        &["f"],
    );
    let mut warn = record("GET /a", vec![kv("user.id", s("1"))]);
    warn.severity_number = 13;
    let mut undefined = record("GET /b", vec![kv("user.id", s("1"))]);
    undefined.severity_number = 0;
    let req = logs(
        vec![],
        vec![
            record("GET /keep", vec![kv("user.id", s("1"))]),
            record("POST /x", vec![kv("user.id", s("1"))]),
            record("GET /no-user", vec![]),
            warn,
            undefined,
        ],
    );
    let (out, _) = run_logs(&c, &req);
    let bodies: Vec<_> = out.resource_logs[0].scope_logs[0]
        .log_records
        .iter()
        .map(|r| r.body.clone().unwrap().value.unwrap())
        .collect();
    assert_eq!(bodies, [s("GET /keep")]);
    let text = chain(
        Signal::Logs,
        "[processors.f]\ntype = \"filter\"\n[processors.f.logs.exclude]\nseverity_texts = [\"DEBUG\"]\n",
        &["f"],
    );
    let mut debug = record("x", vec![]);
    debug.severity_text = "DEBUG".into();
    let (out, _) = run_logs(&text, &logs(vec![], vec![debug, record("y", vec![])]));
    assert_eq!(out.resource_logs[0].scope_logs[0].log_records.len(), 1);
    // Everything dropped: the resource is gone.
    let (out, _) = run_logs(&c, &logs(vec![], vec![record("POST", vec![])]));
    assert!(out.resource_logs.is_empty());
}

#[test]
fn metrics_points_filtered_and_rewritten() {
    let gauge = |name: &str, points: Vec<NumberDataPoint>| Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    };
    let point = |attrs: Vec<KeyValue>, v: f64| NumberDataPoint {
        attributes: attrs,
        value: Some(shardtel_protocol::proto::metrics::v1::number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: None,
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    gauge("go_gc", vec![point(vec![], 1.0)]),
                    gauge(
                        "http_requests",
                        vec![
                            point(vec![kv("user.email", s("a@b")), kv("code", s("200"))], 2.0),
                            point(vec![kv("code", s("500"))], 3.0),
                        ],
                    ),
                ],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    };
    let c = chain(
        Signal::Metrics,
        r#"[processors.f]
type = "filter"
[processors.f.metrics.exclude]
match_type = "regexp"
metric_names = ["^go_"]
[processors.redact]
type = "attributes"
actions = [{ key = "user.email", action = "delete" }]
"#,
        &["f", "redact"],
    );
    let buf = Bytes::from(req.encode_to_vec());
    let (out, outcome) = c.process_request(&buf).unwrap().unwrap();
    assert_eq!(outcome.dropped, 1);
    let got = ExportMetricsServiceRequest::decode(out.to_bytes()).unwrap();
    let metrics = &got.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0].name, "http_requests");
    let Some(metric::Data::Gauge(g)) = &metrics[0].data else {
        panic!()
    };
    assert_eq!(g.data_points[0].attributes, vec![kv("code", s("200"))]);
    assert_eq!(g.data_points[1], point(vec![kv("code", s("500"))], 3.0));
}

#[test]
fn spans_without_the_keys_are_not_parsed() {
    let c = chain(Signal::Traces, REDACT, &["redact"]);
    let Op::Attributes { actions, .. } = &c.stages[0].op else {
        panic!()
    };
    let plain = span("a", vec![kv("http.route", s("/x"))]).encode_to_vec();
    let with = span("a", vec![kv("user.email", s("x"))]).encode_to_vec();
    assert!(!actions.may_change(&plain, false));
    assert!(actions.may_change(&with, false));
    // Log records with a body always go through the body action.
    assert!(actions.may_change(&plain, true));
}

/// The one-pass key search covers only the batch's own spans (a core's share of a routed
/// request): a key in another core's span does not make this core parse its spans, and a key
/// in one of its own, adjacent or not, always does.
#[test]
fn the_key_search_covers_exactly_the_batch_spans() {
    let c = chain(Signal::Traces, REDACT, &["redact"]);
    let req = traces(
        vec![kv(
            "user.email",
            s("resource attributes are not this chain's"),
        )],
        vec![
            span("s0", vec![kv("http.route", s("/a"))]),
            span("s1", vec![kv("http.route", s("/b"))]),
            span("s2", vec![kv("user.email", s("x@y"))]),
            span("s3", vec![kv("http.route", s("/c"))]),
            span("s4", vec![kv("http.url", s("https://t?token=1"))]),
        ],
    );
    let buf = Bytes::from(req.encode_to_vec());
    for (keep, changed) in [
        (&[0u32, 1, 3][..], false),
        (&[0, 1], false),
        (&[3], false),
        (&[2], true),
        (&[0, 4], true),
        (&[1, 2, 3], true),
        (&[0, 1, 2, 3, 4], true),
    ] {
        let mut batch = SpanBatch::scan(buf.clone()).unwrap();
        let mut cursor = 0;
        batch.index.retain_spans(|i| {
            let k = keep.get(cursor) == Some(&i);
            cursor += usize::from(k);
            k
        });
        let outcome = c.process_traces(&mut batch);
        assert_eq!(outcome.changed, changed, "spans {keep:?}");
        assert_eq!(
            !batch.index.rewrites.spans.is_empty(),
            changed,
            "spans {keep:?}"
        );
    }
}

#[test]
fn chains_split_around_the_sampler() {
    let text = format!(
        "{REDACT}\n[processors.tail_sampling]\npolicies = [{{ name = \"all\", type = \"always_sample\" }}]\n\
         [processors.f]\ntype = \"filter\"\n[processors.f.spans.exclude]\nspan_names = [\"x\"]\n\
         [receivers.otlp]\n[exporters.blackhole]\n[pipelines.traces]\nreceivers = [\"otlp\"]\n\
         processors = [\"f\", \"tail_sampling\", \"redact\"]\nexporters = [\"blackhole\"]\n"
    );
    let config = Config::from_str_with_env(&text, "t.toml", &|_| None).unwrap();
    let p = Processors::build(&config).unwrap();
    let names = |c: &Option<Chain>| -> Vec<String> {
        c.as_ref()
            .map(|c| c.stages.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(names(&p.traces_before), ["f"]);
    assert_eq!(names(&p.traces_after), ["redact"]);
    assert!(p.metrics.is_none() && p.logs.is_none());
}

/// The kept spans of a shared batch through the processors after the sampler: running the
/// chain on the subset in place ([`Chain::process_trace_spans`]) gives the same request and
/// the same counts as running it on a copy of the batch cut down to the subset.
#[test]
fn chain_on_a_span_subset_equals_the_chain_on_a_cut_down_copy() {
    let processors = r#"[processors.pre]
type = "attributes"
actions = [{ key = "stage", action = "upsert", value = "before" }]
[processors.enrich]
type = "resource"
attributes = [{ key = "host.name", action = "upsert", value = "node-1" }]
[processors.scrub]
type = "attributes"
include_resource = true
actions = [{ key = "owner.email", action = "hash" }, { key = "stage", action = "update", value = "after" }]
[processors.f]
type = "filter"
[processors.f.spans.exclude]
span_names = ["drop"]
[processors.keyed]
type = "attributes"
include_resource = true
actions = [{ key = "owner.email", action = "hash" }, { key = "absent", action = "delete" }]
"#;
    let chains: [&[&str]; 2] = [&["enrich", "scrub", "f"], &["keyed"]];
    let mut req = traces(
        vec![kv("service.name", s("a")), kv("owner.email", s("ops@a"))],
        vec![
            span("s0", vec![kv("owner.email", s("x"))]),
            span("drop", vec![]),
            span("s2", vec![kv("k", s("v"))]),
        ],
    );
    req.resource_spans.push(
        traces(
            vec![kv("service.name", s("b"))],
            vec![
                span("s3", vec![]),
                span("s4", vec![kv("owner.email", s("y"))]),
            ],
        )
        .resource_spans
        .remove(0),
    );
    let plain = SpanBatch::scan(Bytes::from(req.encode_to_vec())).unwrap();
    let mut batch = SpanBatch::scan(Bytes::from(req.encode_to_vec())).unwrap();
    // A processor before the sampler already rewrote every span.
    chain(Signal::Traces, processors, &["pre"]).process_traces(&mut batch);
    let counts = |c: &Chain| -> Vec<(u64, u64, u64)> {
        c.stages
            .iter()
            .map(|s| {
                let st = &s.stats;
                (st.received.get(), st.changed.get(), st.dropped.get())
            })
            .collect()
    };
    let cases = [&batch, &plain].into_iter().flat_map(|b| {
        chains.iter().flat_map(move |after| {
            [
                vec![0u32, 1, 2, 3, 4],
                vec![0, 2],
                vec![1],
                vec![3, 4],
                vec![2, 4],
            ]
            .map(|subset| (b, *after, subset))
        })
    });
    for (batch, after, subset) in cases {
        // The way it was done: copy the index, keep the subset, run the chain on the copy.
        let copy_chain = chain(Signal::Traces, processors, after);
        let mut sub = SpanBatch {
            buf: batch.buf.clone(),
            index: batch.index.clone(),
            release_token: None,
        };
        let mut cursor = 0;
        sub.index.retain_spans(|i| {
            let keep = subset.get(cursor) == Some(&i);
            cursor += usize::from(keep);
            keep
        });
        copy_chain.process_traces(&mut sub);
        let mut expected = Encoded::default();
        encode_traces(&sub, &mut expected);
        // In place.
        let in_place = chain(Signal::Traces, processors, after);
        let changes = in_place.process_trace_spans(batch, &subset);
        let left: Vec<u32> = subset
            .iter()
            .copied()
            .filter(|i| !changes.dropped.contains(i))
            .collect();
        let mut got = Encoded::default();
        shardtel_protocol::reframe::encode_trace_spans_rewritten(
            batch,
            &left,
            Some(&changes.rewrites),
            &mut got,
        );
        assert_eq!(
            ExportTraceServiceRequest::decode(got.to_bytes()).unwrap(),
            ExportTraceServiceRequest::decode(expected.to_bytes()).unwrap(),
            "subset {subset:?}"
        );
        assert_eq!(got.to_bytes(), expected.to_bytes(), "subset {subset:?}");
        assert_eq!(counts(&in_place), counts(&copy_chain), "subset {subset:?}");
    }
    // The shared batch itself is untouched: still only the first processor's rewrites.
    assert_eq!(batch.index.spans.len(), 5);
    assert_eq!(batch.index.rewrites.spans.len(), 5);
    assert!(batch.index.rewrites.resources.is_empty());
}

mod transform {
    //! The `transform` processor: each function on spans, logs and data points, and a model
    //! test against a decode–modify–encode reference on random spans.
    use super::*;
    use proptest::prelude::*;

    fn transform_chain(signal: Signal, groups: &[(&str, &str, &[&str])]) -> Chain {
        let mut text = String::from("[processors.t]\ntype = \"transform\"\n");
        for (key, context, statements) in groups {
            let list: Vec<String> = statements.iter().map(|s| format!("'{s}'")).collect();
            text.push_str(&format!(
                "[[processors.t.{key}]]\ncontext = \"{context}\"\nstatements = [{}]\n",
                list.join(", ")
            ));
        }
        chain(signal, &text, &["t"])
    }

    #[test]
    fn a_transform_needing_strings_a_batch_lacks_skips_it() {
        let needing: &[&str] = &[
            r#"set(attributes["tier"], "gold") where name == "checkout""#,
            r#"delete_key(attributes, "secret.token")"#,
            r#"rename(attributes, "old.key", "new.key") where attributes["x"] == nil"#,
        ];
        let c = transform_chain(Signal::Traces, &[("trace_statements", "span", needing)]);
        assert!(c.needed_keys.is_some());
        // None of the strings: nothing parsed, nothing changed.
        let req = traces(vec![], vec![span("GET /", vec![kv("user.id", s("u1"))])]);
        let (out, batch) = run_traces(&c, &req);
        assert!(batch.index.rewrites.is_empty());
        assert_eq!(out, req);
        // One of them: the statements run.
        let req = traces(vec![], vec![span("checkout", vec![kv("user.id", s("u1"))])]);
        let (out, _) = run_traces(&c, &req);
        let attrs = &out.resource_spans[0].scope_spans[0].spans[0].attributes;
        assert_eq!(attr(attrs, "tier"), Some(&s("gold")));
        // A statement that may change any span, or a resource statement: no skipping.
        for (context, st) in [
            ("span", r#"set(attributes["tier"], "gold")"#),
            (
                "span",
                r#"set(attributes["t"], "g") where attributes["x"] != "y""#,
            ),
            ("resource", r#"delete_key(attributes, "secret.token")"#),
        ] {
            let c = transform_chain(Signal::Traces, &[("trace_statements", context, &[st])]);
            assert!(c.needed_keys.is_none(), "{st}");
        }
    }

    #[test]
    fn span_statements_change_only_the_spans_they_match() {
        let c = transform_chain(
            Signal::Traces,
            &[
                (
                    "trace_statements",
                    "resource",
                    &[r#"set(attributes["env"], "prod") where attributes["env"] == nil"#],
                ),
                (
                    "trace_statements",
                    "span",
                    &[
                        r#"set(attributes["team"], "shop") where resource.attributes["service.name"] == "checkout" and IsMatch(name, "^POST")"#,
                        r#"set(status.code, STATUS_CODE_ERROR) where attributes["http.status_code"] >= 500"#,
                        r#"set(status.message, "server error") where status.code == STATUS_CODE_ERROR"#,
                        r#"replace_pattern(name, "/\\d+", "/{id}")"#,
                        r#"delete_key(attributes, "user.email")"#,
                        r#"rename(attributes, "http.status_code", "http.response.status_code")"#,
                    ],
                ),
            ],
        );
        let req = traces(
            vec![kv("service.name", s("checkout"))],
            vec![
                span(
                    "POST /orders",
                    vec![kv("http.status_code", V::IntValue(503))],
                ),
                span("GET /health", vec![kv("k", s("v"))]),
                span(
                    "GET /orders/42",
                    vec![
                        kv("user.email", s("a@b")),
                        kv("http.status_code", V::IntValue(200)),
                    ],
                ),
            ],
        );
        let (out, batch) = run_traces(&c, &req);
        let rs = &out.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes,
            vec![kv("service.name", s("checkout")), kv("env", s("prod"))]
        );
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans[0].name, "POST /orders");
        assert_eq!(
            spans[0].attributes,
            vec![
                kv("team", s("shop")),
                kv("http.response.status_code", V::IntValue(503)),
            ]
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
        );
        let status = spans[0].status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "server error"));
        // Untouched: still a slice of the request.
        assert_eq!(spans[1], req.resource_spans[0].scope_spans[0].spans[1]);
        assert_eq!(spans[2].name, "GET /orders/{id}");
        assert_eq!(
            spans[2].attributes,
            vec![kv("http.response.status_code", V::IntValue(200))]
        );
        assert!(spans[2].status.is_none());
        let rewritten: Vec<u32> = batch.index.rewrites.spans.iter().map(|r| r.0).collect();
        assert_eq!(rewritten, [0, 2]);
        let snap = c.snapshot_vec();
        assert_eq!((snap[0].received, snap[0].changed), (3, 2));
    }

    #[test]
    fn attribute_map_functions() {
        let c = transform_chain(
            Signal::Traces,
            &[(
                "trace_statements",
                "span",
                &[
                    r#"delete_matching_keys(attributes, "^tmp\\.")"#,
                    r#"truncate_all(attributes, 3)"#,
                    r##"replace_all_patterns(attributes, "value", "[0-9]", "#")"##,
                    r#"replace_all_patterns(attributes, "key", "^old_", "new_")"#,
                    r#"limit(attributes, 3, ["keep"])"#,
                ],
            )],
        );
        let req = traces(
            vec![],
            vec![span(
                "s",
                vec![
                    kv("tmp.a", s("x")),
                    kv("old_x", s("ab1")),
                    kv("long", s("héllo")),
                    kv("n", V::IntValue(12345)),
                    kv("z", s("q")),
                    kv("keep", s("k9")),
                ],
            )],
        );
        let (out, _) = run_traces(&c, &req);
        let got = &out.resource_spans[0].scope_spans[0].spans[0].attributes;
        // "héllo" cut to 3 bytes is "h" + the 2-byte é.
        assert_eq!(
            got,
            &vec![
                kv("new_x", s("ab#")),
                kv("long", s("hé")),
                kv("keep", s("k#"))
            ]
        );
        let c = transform_chain(
            Signal::Traces,
            &[(
                "trace_statements",
                "span",
                &[r#"keep_keys(attributes, ["a", "c"])"#],
            )],
        );
        let req = traces(
            vec![],
            vec![span(
                "s",
                vec![kv("a", s("1")), kv("b", s("2")), kv("c", s("3"))],
            )],
        );
        let (out, _) = run_traces(&c, &req);
        assert_eq!(
            out.resource_spans[0].scope_spans[0].spans[0].attributes,
            vec![kv("a", s("1")), kv("c", s("3"))]
        );
    }

    /// A processor's item statements see the resource its resource statements left, as the
    /// Collector runs a resource group before the span or log group listed after it.
    #[test]
    fn item_statements_see_the_resource_the_resource_statements_left() {
        let c = transform_chain(
            Signal::Traces,
            &[
                (
                    "trace_statements",
                    "resource",
                    &[
                        r#"set(attributes["tier"], "processing")"#,
                        r#"delete_key(attributes, "host.name")"#,
                    ],
                ),
                (
                    "trace_statements",
                    "span",
                    &[
                        r#"set(attributes["tier.seen"], resource.attributes["tier"])"#,
                        r#"merge_maps(attributes, resource.attributes, "insert")"#,
                    ],
                ),
            ],
        );
        let req = traces(
            vec![kv("service.name", s("checkout")), kv("host.name", s("h"))],
            vec![span("s", vec![kv("a", s("1"))])],
        );
        let (out, _) = run_traces(&c, &req);
        let rs = &out.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes,
            vec![
                kv("service.name", s("checkout")),
                kv("tier", s("processing"))
            ]
        );
        assert_eq!(
            rs.scope_spans[0].spans[0].attributes,
            vec![
                kv("a", s("1")),
                kv("tier.seen", s("processing")),
                kv("service.name", s("checkout")),
                kv("tier", s("processing")),
            ]
        );
        let c = transform_chain(
            Signal::Logs,
            &[
                (
                    "log_statements",
                    "resource",
                    &[r#"set(attributes["pipeline"], "logs")"#],
                ),
                (
                    "log_statements",
                    "log",
                    &[r#"set(attributes["seen"], resource.attributes["pipeline"])"#],
                ),
            ],
        );
        let (out, _) = run_logs(&c, &logs(vec![], vec![record("r", vec![])]));
        assert_eq!(
            out.resource_logs[0].scope_logs[0].log_records[0].attributes,
            vec![kv("seen", s("logs"))]
        );
    }

    /// `replace_all_patterns(attributes, "key", ...)` never leaves two attributes with one key:
    /// as in the Collector, the key stays where it first was and takes the last value.
    #[test]
    fn keys_renamed_onto_each_other_become_one_attribute() {
        let c = transform_chain(
            Signal::Traces,
            &[(
                "trace_statements",
                "span",
                &[r#"replace_all_patterns(attributes, "key", "^http\\.", "h.")"#],
            )],
        );
        let req = traces(
            vec![],
            vec![
                span(
                    "renamed first",
                    vec![
                        kv("http.route", s("/a")),
                        kv("x", V::IntValue(1)),
                        kv("h.route", s("/pre")),
                    ],
                ),
                span(
                    "renamed last",
                    vec![kv("h.route", s("/pre")), kv("http.route", s("/a"))],
                ),
            ],
        );
        let (out, _) = run_traces(&c, &req);
        let spans = &out.resource_spans[0].scope_spans[0].spans;
        assert_eq!(
            spans[0].attributes,
            vec![kv("h.route", s("/pre")), kv("x", V::IntValue(1))]
        );
        assert_eq!(spans[1].attributes, vec![kv("h.route", s("/a"))]);
    }

    #[test]
    fn setting_what_is_already_there_copies_nothing() {
        let c = transform_chain(
            Signal::Traces,
            &[(
                "trace_statements",
                "span",
                &[
                    r#"set(attributes["a"], "1")"#,
                    r#"set(name, "s")"#,
                    r#"delete_key(attributes, "absent")"#,
                    r#"keep_keys(attributes, ["a"])"#,
                    r#"truncate_all(attributes, 10)"#,
                ],
            )],
        );
        let req = traces(vec![], vec![span("s", vec![kv("a", s("1"))])]);
        let (out, batch) = run_traces(&c, &req);
        assert!(batch.index.rewrites.is_empty());
        assert_eq!(out, req);
    }

    #[test]
    fn log_and_datapoint_statements() {
        let c = transform_chain(
            Signal::Logs,
            &[(
                "log_statements",
                "log",
                &[
                    r#"set(severity_text, "WARNING") where severity_number >= SEVERITY_NUMBER_WARN"#,
                    r#"replace_pattern(body, "\\d{4}-\\d{4}", "****")"#,
                    r#"set(attributes["from_body"], body) where IsMatch(body, "^card")"#,
                ],
            )],
        );
        let mut warn = record("card 1234-5678 declined", vec![]);
        warn.severity_number = 13;
        let info = record("all good", vec![]);
        let (out, changed) = run_logs(&c, &logs(vec![], vec![warn, info.clone()]));
        assert!(changed);
        let recs = &out.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(recs[0].severity_text, "WARNING");
        assert_eq!(
            recs[0].body,
            Some(AnyValue {
                value: Some(s("card **** declined"))
            })
        );
        assert_eq!(
            recs[0].attributes,
            vec![kv("from_body", s("card **** declined"))]
        );
        assert_eq!(recs[1], info);

        let c = transform_chain(
            Signal::Metrics,
            &[(
                "metric_statements",
                "datapoint",
                &[r#"set(attributes["unit"], "ms") where metric.name == "latency""#],
            )],
        );
        let gauge = |name: &str| Metric {
            name: name.into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint::default()],
            })),
            ..Default::default()
        };
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: None,
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![gauge("latency"), gauge("other")],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        };
        let buf = Bytes::from(req.encode_to_vec());
        let (out, _) = c.process_request(&buf).unwrap().unwrap();
        let got = ExportMetricsServiceRequest::decode(out.to_bytes()).unwrap();
        let points = |i: usize| match &got.resource_metrics[0].scope_metrics[0].metrics[i].data {
            Some(metric::Data::Gauge(g)) => g.data_points.clone(),
            _ => panic!(),
        };
        assert_eq!(points(0)[0].attributes, vec![kv("unit", s("ms"))]);
        assert!(points(1)[0].attributes.is_empty());
    }

    fn event(name: &str, time: u64, attributes: Vec<KeyValue>) -> Event {
        Event {
            time_unix_nano: time,
            name: name.into(),
            attributes,
            dropped_attributes_count: 0,
        }
    }

    /// Span-event statements run in their place among the span statements, on every event of
    /// each span, reading the event, its span (as the span statements before left it) and the
    /// resource; a span none of whose events change stays a slice of the request.
    #[test]
    fn span_event_statements_change_only_the_events_they_match() {
        let c = transform_chain(
            Signal::Traces,
            &[
                (
                    "trace_statements",
                    "span",
                    &[r#"set(attributes["x"], "1") where name == "A""#],
                ),
                (
                    "trace_statements",
                    "spanevent",
                    &[
                        r#"set(attributes["span.name"], span.name) where name == "exception""#,
                        r#"replace_all_patterns(attributes, "value", "secret=\\w+", "secret=***")"#,
                        r#"set(name, "error") where name == "exception" and span.kind == SPAN_KIND_SERVER"#,
                        r#"delete_key(attributes, "drop.me")"#,
                        r#"set(attributes["marked"], true) where span.attributes["x"] == "1" and time_unix_nano > 5 and dropped_attributes_count == 0"#,
                        r#"set(attributes["env"], resource.attributes["env"]) where span.status.code == STATUS_CODE_ERROR"#,
                    ],
                ),
                (
                    "trace_statements",
                    "span",
                    &[r#"set(attributes["after"], "y") where name == "A""#],
                ),
            ],
        );
        let mut a = span("A", vec![]);
        a.kind = 2;
        a.status = Some(Status {
            code: 2,
            message: String::new(),
        });
        a.events = vec![
            event(
                "exception",
                10,
                vec![kv("msg", s("boom secret=abc")), kv("drop.me", s("1"))],
            ),
            event("retry", 3, vec![kv("n", V::IntValue(1))]),
        ];
        a.dropped_events_count = 4;
        let mut b = span("B", vec![kv("k", s("v"))]);
        b.events = vec![event("log", 20, vec![kv("k", s("v"))])];
        let plain = span("C", vec![]);
        let req = traces(
            vec![kv("env", s("prod"))],
            vec![a.clone(), b.clone(), plain.clone()],
        );
        let (out, batch) = run_traces(&c, &req);
        let spans = &out.resource_spans[0].scope_spans[0].spans;
        let mut want = a.clone();
        want.attributes = vec![kv("x", s("1")), kv("after", s("y"))];
        want.events = vec![
            event(
                "error",
                10,
                vec![
                    kv("msg", s("boom secret=***")),
                    kv("span.name", s("A")),
                    kv("marked", V::BoolValue(true)),
                    kv("env", s("prod")),
                ],
            ),
            event(
                "retry",
                3,
                vec![kv("n", V::IntValue(1)), kv("env", s("prod"))],
            ),
        ];
        assert_eq!(spans[0], want);
        assert_eq!(spans[1], b);
        assert_eq!(spans[2], plain);
        let rewritten: Vec<u32> = batch.index.rewrites.spans.iter().map(|r| r.0).collect();
        assert_eq!(rewritten, [0]);
    }

    #[test]
    fn span_event_statements_that_change_nothing_copy_nothing() {
        let c = transform_chain(
            Signal::Traces,
            &[(
                "trace_statements",
                "spanevent",
                &[
                    r#"set(name, "log")"#,
                    r#"set(attributes["k"], "v")"#,
                    r#"delete_key(attributes, "absent")"#,
                    r#"set(attributes["never"], "x") where span.name == "other""#,
                ],
            )],
        );
        let mut sp = span("s", vec![]);
        sp.events = vec![
            event("log", 1, vec![kv("k", s("v"))]),
            event("log", 2, vec![kv("k", s("v"))]),
        ];
        let req = traces(vec![], vec![sp, span("no events", vec![])]);
        let (out, batch) = run_traces(&c, &req);
        assert!(batch.index.rewrites.is_empty());
        assert_eq!(out, req);
    }

    // ---- model ----

    /// The statement pool of the model test, each with its reference on a decoded span.
    type Reference = fn(&mut Span, &Resource);

    fn find(attrs: &[KeyValue], key: &str) -> Option<usize> {
        attrs.iter().position(|kv| kv.key == key)
    }

    fn upsert(attrs: &mut Vec<KeyValue>, key: &str, v: V) {
        match find(attrs, key) {
            Some(i) => attrs[i].value = Some(AnyValue { value: Some(v) }),
            None => attrs.push(kv(key, v)),
        }
    }

    fn string_value(kv: &KeyValue) -> Option<&str> {
        match kv.value.as_ref()?.value.as_ref()? {
            V::StringValue(s) => Some(s),
            _ => None,
        }
    }

    fn status_of(sp: &Span) -> (i32, String) {
        sp.status
            .as_ref()
            .map_or((0, String::new()), |s| (s.code, s.message.clone()))
    }

    const POOL: &[(&str, Reference)] = &[
        (
            r#"set(attributes["team"], "shop") where name == "GET /a""#,
            |sp, _| {
                if sp.name == "GET /a" {
                    upsert(&mut sp.attributes, "team", s("shop"));
                }
            },
        ),
        (r#"delete_key(attributes, "a")"#, |sp, _| {
            sp.attributes.retain(|kv| kv.key != "a")
        }),
        (r#"delete_matching_keys(attributes, "^[bc]$")"#, |sp, _| {
            sp.attributes.retain(|kv| kv.key != "b" && kv.key != "c")
        }),
        (r#"keep_keys(attributes, ["a", "team"])"#, |sp, _| {
            sp.attributes.retain(|kv| kv.key == "a" || kv.key == "team")
        }),
        (r#"truncate_all(attributes, 1)"#, |sp, _| {
            for kv in &mut sp.attributes {
                if let Some(v) = string_value(kv) {
                    if v.len() > 1 {
                        let cut = v[..1].to_string();
                        kv.value = Some(AnyValue {
                            value: Some(s(&cut)),
                        });
                    }
                }
            }
        }),
        (r#"limit(attributes, 2, ["c"])"#, |sp, _| {
            if sp.attributes.len() > 2 {
                let mut keep: Vec<bool> = sp.attributes.iter().map(|kv| kv.key == "c").collect();
                let mut n = keep.iter().filter(|k| **k).count().min(2);
                for k in keep.iter_mut() {
                    if n < 2 && !*k {
                        *k = true;
                        n += 1;
                    }
                }
                let mut i = 0;
                sp.attributes.retain(|_| {
                    i += 1;
                    keep[i - 1]
                });
            }
        }),
        (r#"replace_pattern(name, "GET", "POST")"#, |sp, _| {
            sp.name = sp.name.replace("GET", "POST")
        }),
        (
            r#"replace_all_patterns(attributes, "value", "x", "z")"#,
            |sp, _| {
                for kv in &mut sp.attributes {
                    if let Some(v) = string_value(kv) {
                        let new = v.replace('x', "z");
                        kv.value = Some(AnyValue {
                            value: Some(s(&new)),
                        });
                    }
                }
            },
        ),
        (
            r#"replace_all_patterns(attributes, "key", "^a$", "aa")"#,
            |sp, _| {
                // Into a new map, in order: a repeated key keeps its first place, the last value.
                if find(&sp.attributes, "a").is_none() {
                    return;
                }
                let mut out: Vec<KeyValue> = Vec::new();
                for mut kv in std::mem::take(&mut sp.attributes) {
                    if kv.key == "a" {
                        kv.key = "aa".into();
                    }
                    match find(&out, &kv.key) {
                        Some(i) => out[i].value = kv.value,
                        None => out.push(kv),
                    }
                }
                sp.attributes = out;
            },
        ),
        (r#"rename(attributes, "b", "a")"#, |sp, _| {
            if let Some(i) = find(&sp.attributes, "b") {
                sp.attributes[i].key = "a".into();
                let mut j = 0;
                sp.attributes.retain(|kv| {
                    j += 1;
                    j - 1 == i || kv.key != "a"
                });
            }
        }),
        (
            r#"set(status.code, STATUS_CODE_ERROR) where attributes["c"] == true"#,
            |sp, _| {
                let c = find(&sp.attributes, "c").and_then(|i| sp.attributes[i].value.clone());
                if c == Some(AnyValue {
                    value: Some(V::BoolValue(true)),
                }) {
                    let (_, message) = status_of(sp);
                    sp.status = Some(Status { code: 2, message });
                }
            },
        ),
        (r#"set(attributes["copy"], attributes["a"])"#, |sp, _| {
            let a = find(&sp.attributes, "a").and_then(|i| sp.attributes[i].value.clone());
            if let Some(AnyValue { value: Some(v) }) = a {
                upsert(&mut sp.attributes, "copy", v);
            }
        }),
        (
            r#"set(name, resource.attributes["a"]) where IsMatch(resource.attributes["a"], "x|y")"#,
            |sp, res| {
                if let Some(v) =
                    find(&res.attributes, "a").and_then(|i| string_value(&res.attributes[i]))
                {
                    if v.contains('x') || v.contains('y') {
                        sp.name = v.to_string();
                    }
                }
            },
        ),
        (
            r#"merge_maps(attributes, resource.attributes, "upsert")"#,
            |sp, res| {
                for kv in &res.attributes {
                    if let Some(AnyValue { value: Some(v) }) = &kv.value {
                        upsert(&mut sp.attributes, &kv.key, v.clone());
                    }
                }
            },
        ),
        (
            r#"merge_maps(attributes, resource.attributes, "insert")"#,
            |sp, res| {
                for kv in &res.attributes {
                    if find(&sp.attributes, &kv.key).is_none() {
                        sp.attributes.push(kv.clone());
                    }
                }
            },
        ),
        (
            r#"set(status.message, "boom") where status.code == STATUS_CODE_ERROR"#,
            |sp, _| {
                let (code, _) = status_of(sp);
                if code == 2 {
                    sp.status = Some(Status {
                        code,
                        message: "boom".into(),
                    });
                }
            },
        ),
        // Conditions whose witnesses let a batch without them skip the chain
        // (`Transform::presence`), and one without any.
        (
            r#"set(attributes["team"], "ops") where attributes["a"] > 0 or name == "x""#,
            |sp, _| {
                let a = find(&sp.attributes, "a").and_then(|i| sp.attributes[i].value.clone());
                let positive = match a.and_then(|v| v.value) {
                    Some(V::IntValue(i)) => i > 0,
                    Some(V::DoubleValue(d)) => d > 0.0,
                    _ => false,
                };
                if positive || sp.name == "x" {
                    upsert(&mut sp.attributes, "team", s("ops"));
                }
            },
        ),
        (
            r#"delete_key(attributes, "b") where not (attributes["a"] == "x")"#,
            |sp, _| {
                let a = find(&sp.attributes, "a").and_then(|i| string_value(&sp.attributes[i]));
                if a != Some("x") {
                    sp.attributes.retain(|kv| kv.key != "b");
                }
            },
        ),
        (
            r#"set(status.code, STATUS_CODE_OK) where IsMatch(attributes["b"], "^x") and attributes["c"] != nil"#,
            |sp, _| {
                let b = find(&sp.attributes, "b").and_then(|i| string_value(&sp.attributes[i]));
                if b.is_some_and(|b| b.starts_with('x')) && find(&sp.attributes, "c").is_some() {
                    let (_, message) = status_of(sp);
                    sp.status = Some(Status { code: 1, message });
                }
            },
        ),
        (
            r#"set(attributes["none"], "yes") where attributes["zz"] == nil"#,
            |sp, _| upsert(&mut sp.attributes, "none", s("yes")),
        ),
    ];

    fn value() -> impl Strategy<Value = V> {
        prop_oneof![
            prop::sample::select(vec!["x", "y", "xy", "GET /a"]).prop_map(s),
            (-2i64..3).prop_map(V::IntValue),
            any::<bool>().prop_map(V::BoolValue),
            Just(V::DoubleValue(0.5)),
        ]
    }

    fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
        prop::collection::btree_map(
            prop::sample::select(vec!["a", "aa", "b", "c", "team", "copy"]),
            value(),
            0..5,
        )
        .prop_map(|m| m.into_iter().map(|(k, v)| kv(k, v)).collect())
    }

    fn any_span() -> impl Strategy<Value = Span> {
        (
            attributes(),
            prop::sample::select(vec!["GET /a", "POST /b", "x"]),
            0i32..3,
            prop::sample::select(vec!["", "m"]),
            any::<bool>(),
        )
            .prop_map(|(attributes, name, code, message, has_status)| Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                name: name.into(),
                attributes,
                status: has_status.then(|| Status {
                    code,
                    message: message.into(),
                }),
                ..Default::default()
            })
    }

    fn normal(sp: &Span) -> (String, Vec<KeyValue>, (i32, String)) {
        (sp.name.clone(), sp.attributes.clone(), status_of(sp))
    }

    /// The span-event statement pool of the model test, each with its reference on a decoded
    /// event of a decoded span.
    type EventReference = fn(&mut Event, &Span, &Resource);

    const EVENT_POOL: &[(&str, EventReference)] = &[
        (
            r#"set(attributes["team"], "shop") where name == "exception""#,
            |ev, _, _| {
                if ev.name == "exception" {
                    upsert(&mut ev.attributes, "team", s("shop"));
                }
            },
        ),
        (r#"delete_key(attributes, "a")"#, |ev, _, _| {
            ev.attributes.retain(|kv| kv.key != "a")
        }),
        (r#"keep_keys(attributes, ["a", "team"])"#, |ev, _, _| {
            ev.attributes.retain(|kv| kv.key == "a" || kv.key == "team")
        }),
        (r#"truncate_all(attributes, 1)"#, |ev, _, _| {
            for kv in &mut ev.attributes {
                if let Some(v) = string_value(kv) {
                    if v.len() > 1 {
                        let cut = v[..1].to_string();
                        kv.value = Some(AnyValue {
                            value: Some(s(&cut)),
                        });
                    }
                }
            }
        }),
        (r#"replace_pattern(name, "x", "z")"#, |ev, _, _| {
            ev.name = ev.name.replace('x', "z")
        }),
        (r#"rename(attributes, "b", "a")"#, |ev, _, _| {
            if let Some(i) = find(&ev.attributes, "b") {
                ev.attributes[i].key = "a".into();
                let mut j = 0;
                ev.attributes.retain(|kv| {
                    j += 1;
                    j - 1 == i || kv.key != "a"
                });
            }
        }),
        (
            r#"set(name, span.name) where span.kind == SPAN_KIND_SERVER"#,
            |ev, sp, _| {
                if sp.kind == 2 {
                    ev.name = sp.name.clone();
                }
            },
        ),
        (
            r#"set(attributes["copy"], span.attributes["a"]) where time_unix_nano >= 2"#,
            |ev, sp, _| {
                let a = find(&sp.attributes, "a").and_then(|i| sp.attributes[i].value.clone());
                if let (true, Some(AnyValue { value: Some(v) })) = (ev.time_unix_nano >= 2, a) {
                    upsert(&mut ev.attributes, "copy", v);
                }
            },
        ),
        (
            r#"set(attributes["err"], true) where span.status.code == STATUS_CODE_ERROR"#,
            |ev, sp, _| {
                if status_of(sp).0 == 2 {
                    upsert(&mut ev.attributes, "err", V::BoolValue(true));
                }
            },
        ),
        (
            r#"merge_maps(attributes, resource.attributes, "insert")"#,
            |ev, _, res| {
                for kv in &res.attributes {
                    if find(&ev.attributes, &kv.key).is_none() {
                        ev.attributes.push(kv.clone());
                    }
                }
            },
        ),
        (
            r#"set(attributes["b"], "x") where dropped_attributes_count > 0"#,
            |ev, _, _| {
                if ev.dropped_attributes_count > 0 {
                    upsert(&mut ev.attributes, "b", s("x"));
                }
            },
        ),
    ];

    fn any_event() -> impl Strategy<Value = Event> {
        (
            attributes(),
            prop::sample::select(vec!["exception", "x", "GET /a"]),
            0u64..4,
            0u32..2,
        )
            .prop_map(|(attributes, name, time, dropped)| Event {
                time_unix_nano: time,
                name: name.into(),
                attributes,
                dropped_attributes_count: dropped,
            })
    }

    fn span_with_events() -> impl Strategy<Value = Span> {
        (
            any_span(),
            prop::collection::vec(any_event(), 0..4),
            0i32..4,
        )
            .prop_map(|(mut sp, events, kind)| {
                sp.events = events;
                sp.kind = kind;
                sp
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Random span-event statements (after a span statement whose change they may read)
        /// on random spans with events agree with a decode → modify → encode reference; one
        /// statement that changes no event of a span does not rewrite it.
        #[test]
        fn span_event_statements_agree_with_decode_modify_encode(
            spans in prop::collection::vec(span_with_events(), 1..5),
            resource in attributes(),
            picks in prop::collection::vec(0..EVENT_POOL.len(), 1..5),
        ) {
            let statements: Vec<&str> = picks.iter().map(|&i| EVENT_POOL[i].0).collect();
            let c = transform_chain(
                Signal::Traces,
                &[
                    ("trace_statements", "span", &[r#"set(attributes["a"], "x") where name == "x""#]),
                    ("trace_statements", "spanevent", &statements),
                ],
            );
            let req = traces(resource.clone(), spans.clone());
            let (out, batch) = run_traces(&c, &req);
            let res = Resource { attributes: resource, ..Default::default() };
            let got = &out.resource_spans[0].scope_spans[0].spans;
            prop_assert_eq!(got.len(), spans.len());
            for (i, (sp, got)) in spans.iter().zip(got).enumerate() {
                let mut want = sp.clone();
                if want.name == "x" {
                    upsert(&mut want.attributes, "a", s("x"));
                }
                let span_now = want.clone();
                for ev in &mut want.events {
                    for &p in &picks {
                        (EVENT_POOL[p].1)(ev, &span_now, &res);
                    }
                }
                prop_assert_eq!(got, &want, "statements {:?} on {:?}", statements, sp);
                // One statement that leaves every event as it was: the span is not rewritten.
                if picks.len() == 1 && &want == sp {
                    prop_assert!(
                        batch.index.rewrites.span(i as u32).is_none(),
                        "{:?} rewrote {:?} without changing it", statements, sp
                    );
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn transform_agrees_with_decode_modify_encode(
            spans in prop::collection::vec(any_span(), 1..6),
            resource in attributes(),
            picks in prop::collection::vec(0..POOL.len(), 1..5),
        ) {
            let statements: Vec<&str> = picks.iter().map(|&i| POOL[i].0).collect();
            let c = transform_chain(Signal::Traces, &[("trace_statements", "span", &statements)]);
            let req = traces(resource.clone(), spans.clone());
            let (out, batch) = run_traces(&c, &req);
            let res = Resource { attributes: resource, ..Default::default() };
            let got = &out.resource_spans[0].scope_spans[0].spans;
            prop_assert_eq!(got.len(), spans.len());
            for (i, (sp, got)) in spans.iter().zip(got).enumerate() {
                let mut want = sp.clone();
                for &p in &picks {
                    (POOL[p].1)(&mut want, &res);
                }
                prop_assert_eq!(normal(got), normal(&want), "statements {:?} on {:?}", statements, sp);
                // One statement that leaves the span as it was: the span is not rewritten.
                if picks.len() == 1 && normal(&want) == normal(sp) {
                    prop_assert!(
                        batch.index.rewrites.span(i as u32).is_none(),
                        "{:?} rewrote {:?} without changing it", statements, sp
                    );
                }
            }
        }
    }
}
