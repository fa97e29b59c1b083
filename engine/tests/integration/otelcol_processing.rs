//! The same processing through shardtel and through the OpenTelemetry Collector, compared item
//! by item (issue 20): the transform statements of `tests/peers/otelcol/configs/
//! transform-to-file.yaml` on resources, spans, log records and data points, and the span
//! metrics of `spanmetrics-to-file.yaml` (shardtel's `spanmetrics` processor beside the
//! Collector's `span_metrics` connector).
//!
//! Each YAML file is the one copy of its settings: the test reads them back from the Collector
//! (`otelcol print-config --format json`, i.e. as the Collector parsed them) and gives shardtel
//! the same statements, dimensions and buckets. Identical OTLP/HTTP requests go to both; both
//! write OTLP/JSON files, which are read back and compared. Where the two differ, the test
//! requires the difference where docs/processors.md ("Compared with the Collector") says it is,
//! then compares everything else exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use prost::Message;
use serde_json::Value as Json;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::proto::common::v1::any_value::Value;
use shardtel_protocol::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use shardtel_protocol::proto::logs::v1::LogRecord;
use shardtel_protocol::proto::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Histogram, Metric, NumberDataPoint,
};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::proto::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use shardtel_protocol::Signal;

use crate::gen::{flatten, kv, request, s, span, trace_id, Flat};
use crate::harness::{read_lines, read_traces, wait_until, Shardtel};
use crate::otelcol::{
    flatten_logs, flatten_metrics, logs_request, metrics_request, otelcol_bin, read_collector_file,
    Otelcol, CONFIGS,
};
use crate::test_config::{Component, Pipeline};

// ---- shared ------------------------------------------------------------------------------

/// The Collector's resolved configuration `configs/<config>.yaml` (its `print-config`, JSON),
/// with the variables the harness sets filled in.
pub fn collector_config(bin: &Path, config: &str, env: &[(&str, String)]) -> Json {
    let out = Command::new(bin)
        .args(["print-config", "--mode", "unredacted", "--format", "json"])
        .arg("--config")
        .arg(format!("{CONFIGS}/{config}.yaml"))
        .env("OTELCOL_GRPC_ENDPOINT", "127.0.0.1:4317")
        .env("OTELCOL_HTTP_ENDPOINT", "127.0.0.1:4318")
        .env("OTELCOL_METRICS_PORT", "8888")
        .env("OTELCOL_OUT_DIR", std::env::temp_dir())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "otelcol print-config {config}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// POSTs an OTLP/HTTP protobuf body of `signal` to the Collector; it must be accepted.
pub fn post_collector(collector: &Otelcol, signal: Signal, body: Vec<u8>) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/{signal}", collector.http))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
}

/// Every request shardtel's file exporters wrote for `signal` under `dir`.
fn read_shardtel<T: Message + Default>(dir: &Path, signal: Signal) -> Vec<T> {
    read_lines(dir, &signal.to_string())
        .into_iter()
        .map(|(_, line)| {
            let pb = shardtel_protocol::json::to_protobuf(signal, line.as_bytes()).unwrap();
            T::decode(pb.as_ref()).unwrap()
        })
        .collect()
}

/// Attributes by key (OTLP attributes are a map; the Collector's `delete_key` moves the last
/// attribute into the deleted one's place, shardtel keeps the order). A stable sort: repeated
/// keys stay, side by side.
fn by_key(kvs: &mut [KeyValue]) {
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
}

fn sorted_resource(r: &Option<Resource>) -> Option<Resource> {
    r.clone().map(|mut r| {
        by_key(&mut r.attributes);
        r
    })
}

fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// Item-by-item differences between shardtel's and the Collector's outputs, both sorted by the
/// same identity: `(index, shardtel, collector)`; an item only one side has is `None` on the
/// other.
fn differences<'a, T: PartialEq>(
    shardtel: &'a [T],
    collector: &'a [T],
) -> Vec<(usize, Option<&'a T>, Option<&'a T>)> {
    (0..shardtel.len().max(collector.len()))
        .filter_map(|i| {
            let (a, b) = (shardtel.get(i), collector.get(i));
            (a != b).then_some((i, a, b))
        })
        .collect()
}

/// Panics naming every difference (at most 10 shown) when `shardtel != collector`.
fn assert_equal<T: PartialEq + std::fmt::Debug>(shardtel: &[T], collector: &[T], what: &str) {
    let diffs = differences(shardtel, collector);
    if diffs.is_empty() {
        return;
    }
    let shown: Vec<String> = diffs
        .iter()
        .take(10)
        .map(|(i, a, b)| format!("[{i}]\n  shardtel  {a:?}\n  collector {b:?}"))
        .collect();
    panic!(
        "{what}: {} items from shardtel, {} from the Collector, {} differ:\n{}",
        shardtel.len(),
        collector.len(),
        diffs.len(),
        shown.join("\n")
    );
}

// ---- transform ---------------------------------------------------------------------------

/// A statement group as the Collector parsed it: (signal key, context, statements).
type Group = (&'static str, String, Vec<String>);

/// The transform processor's statement groups of `transform-to-file.yaml`, in order, and its
/// `error_mode`.
fn transform_groups(config: &Json) -> (Vec<Group>, String) {
    let t = &config["processors"]["transform"];
    let mut groups = Vec::new();
    for key in ["trace_statements", "metric_statements", "log_statements"] {
        for g in t[key].as_array().unwrap() {
            // shardtel's groups have neither `conditions` nor an `error_mode` of their own: a
            // group using them could not be given to shardtel as it is.
            assert!(
                g["conditions"].is_null() && g["error_mode"] == "",
                "{key}: a group with conditions or its own error_mode: {g}"
            );
            // Both configuration loaders expand `${...}` and read `$$` as a `$`: the statements
            // go into shardtel's file escaped, as they are written in the YAML file.
            let statements = g["statements"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().replace('$', "$$"))
                .collect();
            groups.push((key, g["context"].as_str().unwrap().to_string(), statements));
        }
    }
    (groups, t["error_mode"].as_str().unwrap().to_string())
}

/// Request `r` of the transform comparison: 20 spans of 5 traces (`gen::span`) over the two
/// resources of `gen::request`, with the attributes the statements act on.
fn transform_traces(r: u64) -> ExportTraceServiceRequest {
    let spans = (0..20u64)
        .map(|n| {
            let k = r * 20 + n;
            let mut sp = span(31, r * 5 + n / 4, n % 4);
            sp.attributes.extend([
                kv("i", Value::IntValue(k as i64)),
                kv("user.email", s(&format!("u{k}@example.com"))),
                kv("debug.a", s("x")),
                kv("debug.b", Value::IntValue(1)),
                // Cut at 8 bytes: on a character boundary, and inside a 3-byte `€`.
                kv(
                    "note",
                    s(if k % 2 == 0 {
                        "añb€cdefgh"
                    } else {
                        "abc€€€"
                    }),
                ),
            ]);
            if k % 3 == 0 {
                // `http.route` becomes `h.route` too: two keys meet.
                sp.attributes.push(kv("h.route", s("/pre-existing")));
            }
            if k % 5 == 4 {
                sp.attributes.push(kv("limit.me", Value::BoolValue(true)));
            }
            // Events for the spanevent group: none, one, or two (the second with dropped
            // attributes, so the condition on dropped_attributes_count fails for it).
            let time = sp.start_time_unix_nano + k;
            if k % 3 != 2 {
                sp.events.push(span::Event {
                    time_unix_nano: time,
                    name: if k % 2 == 0 { "exception" } else { "log" }.into(),
                    attributes: vec![
                        kv("msg", s(&format!("boom secret=abc{k}"))),
                        kv("drop.me", Value::IntValue(1)),
                        kv("n", Value::IntValue(k as i64)),
                    ],
                    dropped_attributes_count: 0,
                });
            }
            if k % 3 == 0 {
                sp.events.push(span::Event {
                    time_unix_nano: time + 1,
                    name: "exception".into(),
                    attributes: vec![kv("long", s("a value longer than twelve bytes"))],
                    dropped_attributes_count: 2,
                });
            }
            sp
        })
        .collect();
    request(spans)
}

const TRACE_REQUESTS: u64 = 3;
const LOG_REQUESTS: u64 = 3;
const METRIC_REQUESTS: u64 = 3;

/// Spans (resource, span and event attributes by key), sorted by trace and span id.
fn normal_spans(reqs: &[ExportTraceServiceRequest]) -> Vec<Flat> {
    flatten(reqs)
        .into_iter()
        .map(|(r, sc, mut sp)| {
            by_key(&mut sp.attributes);
            for e in &mut sp.events {
                by_key(&mut e.attributes);
            }
            (sorted_resource(&r), sc, sp)
        })
        .collect()
}

type FlatLog = (Option<Resource>, Option<InstrumentationScope>, LogRecord);

/// Log records (attributes by key), sorted by trace and span id.
fn normal_logs(reqs: &[ExportLogsServiceRequest]) -> Vec<FlatLog> {
    let mut out: Vec<FlatLog> = flatten_logs(reqs)
        .into_iter()
        .map(|(r, sc, mut lr)| {
            by_key(&mut lr.attributes);
            (sorted_resource(&r), sc, lr)
        })
        .collect();
    out.sort_by(|a, b| (&a.2.trace_id, &a.2.span_id).cmp(&(&b.2.trace_id, &b.2.span_id)));
    out
}

type FlatPoint = (Option<Resource>, Option<InstrumentationScope>, Metric);

/// The time of a one-point metric's point.
fn point_time(m: &Metric) -> u64 {
    match &m.data {
        Some(metric::Data::Sum(d)) => d.data_points[0].time_unix_nano,
        Some(metric::Data::Gauge(d)) => d.data_points[0].time_unix_nano,
        Some(metric::Data::Histogram(d)) => d.data_points[0].time_unix_nano,
        other => panic!("unexpected metric data {other:?}"),
    }
}

fn point_attributes_of(m: &Metric) -> &[KeyValue] {
    match &m.data {
        Some(metric::Data::Sum(d)) => &d.data_points[0].attributes,
        Some(metric::Data::Gauge(d)) => &d.data_points[0].attributes,
        Some(metric::Data::Histogram(d)) => &d.data_points[0].attributes,
        other => panic!("unexpected metric data {other:?}"),
    }
}

fn point_attributes(m: &mut Metric) -> &mut Vec<KeyValue> {
    match &mut m.data {
        Some(metric::Data::Sum(d)) => &mut d.data_points[0].attributes,
        Some(metric::Data::Gauge(d)) => &mut d.data_points[0].attributes,
        Some(metric::Data::Histogram(d)) => &mut d.data_points[0].attributes,
        other => panic!("unexpected metric data {other:?}"),
    }
}

/// Data points, one a metric (attributes by key), sorted by metric name and point time.
fn normal_points(reqs: &[ExportMetricsServiceRequest]) -> Vec<FlatPoint> {
    let mut out: Vec<FlatPoint> = flatten_metrics(reqs)
        .into_iter()
        .map(|(r, sc, mut m)| {
            by_key(point_attributes(&mut m));
            (sorted_resource(&r), sc, m)
        })
        .collect();
    out.sort_by(|a, b| (&a.2.name, point_time(&a.2)).cmp(&(&b.2.name, point_time(&b.2))));
    out
}

/// The statements of `transform-to-file.yaml` through shardtel's `transform` processor and
/// through the Collector's: the same spans, log records and data points come out of both with
/// the same resources, names, statuses, bodies, severities and attributes, but for the
/// differences docs/processors.md names, which must show where expected.
#[test]
fn transform_statements_give_the_same_items_as_the_collector() {
    let Some(bin) = otelcol_bin("transform_statements_give_the_same_items_as_the_collector") else {
        return;
    };
    let (groups, error_mode) = transform_groups(&collector_config(&bin, "transform-to-file", &[]));
    assert!(groups.len() >= 6, "{groups:?}");
    let statements: Vec<Vec<&str>> = groups
        .iter()
        .map(|(_, _, st)| st.iter().map(String::as_str).collect())
        .collect();
    let borrowed: Vec<(&str, &str, &[&str])> = groups
        .iter()
        .zip(&statements)
        .map(|((key, context, _), st)| (*key, context.as_str(), st.as_slice()))
        .collect();
    let mut st = Shardtel::start_config(|c| {
        c.file_exporters()
            .processor(
                "transform",
                Component::transform(&borrowed).set("error_mode", error_mode.as_str()),
            )
            .traces(Pipeline::otlp_to(&["file_traces"]).processors(&["transform"]))
            .metrics(Pipeline::otlp_to(&["file_metrics"]).processors(&["transform"]))
            .logs(Pipeline::otlp_to(&["file_logs"]).processors(&["transform"]))
    });
    let mut collector = Otelcol::start(&bin, "transform-to-file", &[]);

    let traces: Vec<_> = (0..TRACE_REQUESTS).map(transform_traces).collect();
    let logs: Vec<_> = (0..LOG_REQUESTS).map(logs_request).collect();
    let metrics: Vec<_> = (0..METRIC_REQUESTS).map(metrics_request).collect();
    for (signal, body) in traces
        .iter()
        .map(|r| (Signal::Traces, r.encode_to_vec()))
        .chain(logs.iter().map(|r| (Signal::Logs, r.encode_to_vec())))
        .chain(metrics.iter().map(|r| (Signal::Metrics, r.encode_to_vec())))
    {
        st.post_accepted(signal, body.clone());
        post_collector(&collector, signal, body);
    }
    let want = (
        flatten(&traces).len(),
        flatten_logs(&logs).len(),
        flatten_metrics(&metrics).len(),
    );
    assert_eq!(want, (60, 60, 18));
    let shardtel_out = |st: &Shardtel| {
        let traces: Vec<_> = read_traces(&st.out()).into_iter().map(|(_, r)| r).collect();
        (
            normal_spans(&traces),
            normal_logs(&read_shardtel(&st.out(), Signal::Logs)),
            normal_points(&read_shardtel(&st.out(), Signal::Metrics)),
        )
    };
    let collector_out = |c: &Otelcol| {
        let out = c.out();
        (
            normal_spans(&read_collector_file(&out, "traces", Signal::Traces)),
            normal_logs(&read_collector_file(&out, "logs", Signal::Logs)),
            normal_points(&read_collector_file(&out, "metrics", Signal::Metrics)),
        )
    };
    let counts = |o: &(Vec<Flat>, Vec<FlatLog>, Vec<FlatPoint>)| (o.0.len(), o.1.len(), o.2.len());
    assert!(
        wait_until(60, || counts(&shardtel_out(&st)) == want
            && counts(&collector_out(&collector)) == want),
        "items (spans, log records, points) sent {want:?}, shardtel wrote {:?}, the Collector {:?}; \
         shardtel log:\n{}\nCollector log:\n{}",
        counts(&shardtel_out(&st)),
        counts(&collector_out(&collector)),
        st.log(),
        collector.log()
    );
    // Stopped (files closed): nothing more arrived.
    assert_eq!(st.stop(), 0, "{}", st.log());
    collector.stop();
    let (spans, mut records, points) = shardtel_out(&st);
    let (mut c_spans, c_records, c_points) = collector_out(&collector);
    assert_eq!((spans.len(), records.len(), points.len()), want);
    assert_eq!((c_spans.len(), c_records.len(), c_points.len()), want);

    // The statements did act (so that equal outputs are not two unchanged inputs).
    let text = |kvs: &[KeyValue], key: &str| match attr(kvs, key) {
        Some(Value::StringValue(v)) => Some(v.clone()),
        _ => None,
    };
    let limited = spans
        .iter()
        .filter(|(_, _, sp)| sp.attributes.len() == 3)
        .count();
    assert_eq!(
        limited, 12,
        "limit(attributes, 3, ...) on the spans with limit.me"
    );
    for (r, _, sp) in &spans {
        assert!(sp.name.starts_with("span "), "{}", sp.name);
        assert!(sp.attributes.iter().all(|kv| !kv.key.starts_with("http.")
            && !kv.key.starts_with("debug.")
            && kv.key != "user.email"));
        assert!(text(&sp.attributes, "h.route").is_some(), "{sp:?}");
        let resource = &r.as_ref().unwrap().attributes;
        assert_eq!(text(resource, "tier").as_deref(), Some("processing"));
        if sp.attributes.len() > 3 {
            // Read from the resource the resource statements left, then cut to 8 bytes.
            assert_eq!(
                text(&sp.attributes, "tier.seen").as_deref(),
                Some("processi")
            );
            assert_eq!(text(&sp.attributes, "tier").as_deref(), Some("processing"));
        }
    }
    let codes: BTreeSet<i32> = spans
        .iter()
        .map(|(_, _, sp)| sp.status.clone().unwrap_or_default().code)
        .collect();
    assert_eq!(codes, BTreeSet::from([0, 1, 2]));
    // The spanevent group changed the events, and left spans without events alone.
    let events: Vec<&span::Event> = spans.iter().flat_map(|(_, _, sp)| &sp.events).collect();
    assert_eq!(events.len(), 60, "events of the 60 spans");
    let named = |n: &str| events.iter().filter(|e| e.name == n).count();
    assert!(named("error") > 0 && named("exception") > 0 && named("log") > 0);
    assert!(events
        .iter()
        .all(|e| attr(&e.attributes, "drop.me").is_none() && text(&e.attributes, "svc").is_some()));
    assert!(events
        .iter()
        .any(|e| text(&e.attributes, "route").is_some()));
    assert!(events
        .iter()
        .any(|e| text(&e.attributes, "msg").as_deref() == Some("boom secret=")));
    assert!(events.iter().any(|e| attr(&e.attributes, "late").is_some()));
    assert!(events.iter().any(|e| attr(&e.attributes, "late").is_none()));
    assert!(events
        .iter()
        .any(|e| attr(&e.attributes, "span.failed").is_some()));
    assert!(records
        .iter()
        .any(|(_, _, lr)| lr.severity_text == "SEVERE"));
    assert!(points
        .iter()
        .any(|(_, _, m)| m.name == "requests" && attr(point_attributes_of(m), "kind").is_some()));

    // Differences, each where docs/processors.md says it is.
    // 1. `set` from an absent attribute: the Collector (OTTL v0.165) sets an empty value,
    //    shardtel sets nothing.
    for (_, _, sp) in &mut c_spans {
        let i = sp
            .attributes
            .iter()
            .position(|kv| kv.key == "missing.seen")
            .unwrap_or_else(|| panic!("the Collector set no missing.seen: {sp:?}"));
        assert_eq!(
            sp.attributes.remove(i).value,
            Some(AnyValue { value: None })
        );
    }
    assert!(spans
        .iter()
        .all(|(_, _, sp)| attr(&sp.attributes, "missing.seen").is_none()));
    // 2. A resource group listed after the log group: the Collector runs it after the log
    //    statements (they see no `late`), shardtel runs a processor's resource statements
    //    first.
    assert!(c_records
        .iter()
        .all(|(_, _, lr)| attr(&lr.attributes, "late.seen").is_none()));
    for (_, _, lr) in &mut records {
        let i = lr
            .attributes
            .iter()
            .position(|kv| kv.key == "late.seen")
            .unwrap_or_else(|| panic!("shardtel set no late.seen: {lr:?}"));
        assert_eq!(
            lr.attributes.remove(i).value,
            Some(AnyValue {
                value: Some(s("yes"))
            })
        );
    }

    // Everything else: the same items.
    assert_equal(&spans, &c_spans, "spans");
    assert_equal(&records, &c_records, "log records");
    assert_equal(&points, &c_points, "data points");
}

// ---- spanmetrics -------------------------------------------------------------------------

/// The `span_metrics` connector's settings in `spanmetrics-to-file.yaml`, as shardtel's
/// processor takes them.
struct SpanMetricsSettings {
    dimensions: Vec<String>,
    buckets_ns: Vec<u64>,
    flush_interval_ns: u64,
    namespace: String,
    /// `aggregation_temporality`, as shardtel takes it.
    temporality: String,
}

/// The connector's settings; panics on one shardtel has no equivalent for (so that the
/// comparison never runs on different configurations unnoticed).
fn span_metrics_settings(config: &Json) -> SpanMetricsSettings {
    let c = &config["connectors"]["span_metrics"];
    let temporality = c["aggregation_temporality"].as_str().unwrap().to_string();
    assert!(
        temporality == "AGGREGATION_TEMPORALITY_DELTA"
            || temporality == "AGGREGATION_TEMPORALITY_CUMULATIVE",
        "{temporality}"
    );
    let h = &c["histogram"];
    assert_eq!(h["unit"], "ms", "shardtel's durations are in ms");
    assert!(h["exponential"].is_null() && h["dimensions"].is_null() && h["disable"] == false);
    for key in [
        "calls_dimensions",
        "exclude_dimensions",
        "resource_metrics_key_attributes",
        "include_instrumentation_scope",
    ] {
        assert!(c[key].is_null(), "{key} is set: {}", c[key]);
    }
    assert!(c["events"]["enabled"] == false && c["exemplars"]["enabled"] == false);
    assert!(c["add_resource_attributes"] == false && c["enable_metrics_sampling_method"] == false);
    let dimensions = c["dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert!(d["default"].is_null() && d["glob"] == "", "{d}");
            d["name"].as_str().unwrap().to_string()
        })
        .collect();
    SpanMetricsSettings {
        dimensions,
        buckets_ns: h["explicit"]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .collect(),
        flush_interval_ns: c["metrics_flush_interval"].as_u64().unwrap(),
        namespace: c["namespace"].as_str().unwrap().to_string(),
        temporality,
    }
}

const SM_NAMES: [&str; 3] = ["GET /a", "POST /b", "db.query"];
const SM_KINDS: [span::SpanKind; 3] = [
    span::SpanKind::Server,
    span::SpanKind::Client,
    span::SpanKind::Internal,
];
const SM_STATUS: [status::StatusCode; 3] = [
    status::StatusCode::Unset,
    status::StatusCode::Ok,
    status::StatusCode::Error,
];
/// Span durations (ns): zero, on and around the bounds 2 ms, 10 ms, 100 ms and 1 s, above the
/// last bound, and an end 5 ms before the start (a zero duration for both).
const SM_DURATIONS_NS: [i64; 12] = [
    0,
    1_500_000,
    2_000_000,
    2_000_001,
    10_000_000,
    10_500_000,
    100_000_000,
    999_999_000,
    1_000_000_000,
    1_500_000_000,
    3_000_000_000,
    -5_000_000,
];
/// The span name of spans whose `tracestate` says they were sampled at 50 % (`ot=th:8`).
const SM_ADJUSTED: &str = "sampled-half";

/// The resources spans come from: `checkout` (with `deployment.environment`, a dimension), `cart`,
/// one without `service.name`, and `cart` again on another host.
fn sm_resource(r: usize) -> Resource {
    let attributes = match r {
        0 => vec![
            kv("service.name", s("checkout")),
            kv("deployment.environment", s("prod")),
            kv("host.name", s("h0")),
        ],
        1 => vec![kv("service.name", s("cart")), kv("host.name", s("h1"))],
        2 => vec![kv("host.name", s("h2"))],
        _ => vec![kv("service.name", s("cart")), kv("host.name", s("h1b"))],
    };
    Resource {
        attributes,
        ..Default::default()
    }
}

/// Span `n` of resource `r`: name, kind, status and duration cycle through the lists above;
/// `http.route` on 3 spans of 4, `http.status_code` (an integer) 500 or 200, and
/// `deployment.environment` on the span (over the resource's) on 1 span of 6.
fn sm_span(r: usize, n: u64, adjusted: bool) -> Span {
    let k = r as u64 * 1000 + n + if adjusted { 500 } else { 0 };
    let start = 1_700_000_000_000_000_000 + k * 10_000_000_000;
    let end = start.saturating_add_signed(SM_DURATIONS_NS[n as usize % 12]);
    let mut attributes = vec![kv(
        "http.status_code",
        Value::IntValue(if n % 5 == 0 { 500 } else { 200 }),
    )];
    if n % 4 != 3 {
        attributes.push(kv("http.route", s(&format!("/r{}", n % 2))));
    }
    if n % 6 == 5 {
        attributes.push(kv("deployment.environment", s("canary")));
    }
    Span {
        trace_id: trace_id(41, k),
        span_id: (k + 1).to_be_bytes().to_vec(),
        trace_state: if adjusted { "ot=th:8" } else { "" }.into(),
        name: if adjusted {
            SM_ADJUSTED.into()
        } else {
            SM_NAMES[n as usize % 3].into()
        },
        kind: SM_KINDS[(n as usize / 3) % 3] as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status: Some(Status {
            code: SM_STATUS[(n as usize / 2) % 3] as i32,
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// One request per resource: 36 spans each (12 for the second `cart`), and 4 spans sampled at
/// 50 % for `checkout` and the first `cart`.
fn sm_requests() -> Vec<ExportTraceServiceRequest> {
    (0..4)
        .map(|r| {
            let mut spans: Vec<Span> = (0..if r == 3 { 12 } else { 36 })
                .map(|n| sm_span(r, n, false))
                .collect();
            if r < 2 {
                spans.extend((0..4).map(|n| sm_span(r, n, true)));
            }
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(sm_resource(r)),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "spanmetrics-compare".into(),
                            ..Default::default()
                        }),
                        spans,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            }
        })
        .collect()
}

/// A series' totals over every delta point of it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Totals {
    calls: i64,
    count: u64,
    sum_ms: f64,
    buckets: Vec<u64>,
    bounds: Vec<f64>,
}

impl Totals {
    /// Equal, the sums up to rounding (the two add the same durations in other orders).
    fn same(&self, other: &Totals) -> bool {
        let tolerance = 1e-9 * self.sum_ms.abs().max(1.0);
        Totals {
            sum_ms: 0.0,
            ..self.clone()
        } == Totals {
            sum_ms: 0.0,
            ..other.clone()
        } && (self.sum_ms - other.sum_ms).abs() <= tolerance
    }

    fn scaled(&self, factor: u64) -> Totals {
        Totals {
            calls: self.calls * factor as i64,
            count: self.count * factor,
            sum_ms: self.sum_ms * factor as f64,
            buckets: self.buckets.iter().map(|b| b * factor).collect(),
            bounds: self.bounds.clone(),
        }
    }
}

/// A series: its point attributes, rendered as text, by key.
type SeriesKey = Vec<(String, String)>;

/// What one side's span metrics say, over every flush.
#[derive(Debug, Default)]
struct SpanMetricsOut {
    series: BTreeMap<SeriesKey, Totals>,
    /// The value types each point attribute had.
    types: BTreeMap<String, BTreeSet<&'static str>>,
    /// Per `service.name` of the points, the resources (attributes as text) they came under.
    resources: BTreeMap<String, BTreeSet<SeriesKey>>,
    scopes: BTreeSet<String>,
    /// (metric name, kind and temporality, unit).
    metrics: BTreeSet<(String, String, String)>,
    /// Points with a `collector.instance.id` attribute, and all points.
    instance_ids: usize,
    points: usize,
}

impl SpanMetricsOut {
    fn calls(&self) -> i64 {
        self.series.values().map(|t| t.calls).sum()
    }

    /// The series of a point with `attributes` under a resource with attributes `resource`:
    /// counts the point, its `collector.instance.id` (left out of the key) and its attributes'
    /// types, and notes the resource.
    fn series_key(&mut self, attributes: &[KeyValue], resource: &SeriesKey) -> (SeriesKey, String) {
        self.points += 1;
        let mut key = SeriesKey::new();
        let mut instance = String::new();
        for kv in attributes {
            let (text, kind) = rendered(kv.value.as_ref().and_then(|v| v.value.as_ref()));
            if kv.key == "collector.instance.id" {
                self.instance_ids += 1;
                instance = text;
                continue;
            }
            self.types.entry(kv.key.clone()).or_default().insert(kind);
            key.push((kv.key.clone(), text));
        }
        key.sort();
        let service = key
            .iter()
            .find(|(k, _)| k == "service.name")
            .map_or_else(|| "(none)".to_string(), |(_, v)| v.clone());
        self.resources
            .entry(service)
            .or_default()
            .insert(resource.clone());
        (key, instance)
    }
}

fn rendered(v: Option<&Value>) -> (String, &'static str) {
    match v {
        Some(Value::StringValue(s)) => (s.clone(), "string"),
        Some(Value::IntValue(i)) => (i.to_string(), "int"),
        Some(Value::BoolValue(b)) => (b.to_string(), "bool"),
        Some(Value::DoubleValue(d)) => (d.to_string(), "double"),
        other => (format!("{other:?}"), "other"),
    }
}

/// One point's share of its series' totals, and its stream: (series, resource, instance id,
/// metric), with its time.
type StreamPoint = ((SeriesKey, SeriesKey, String, bool), u64, Totals);

/// The span metrics in `reqs`; `collector.instance.id` is counted and left out of the series.
/// Delta points add up; of cumulative points, each stream's (series, resource, instance id)
/// latest counts, and the streams of a series add up.
fn span_metrics_out(reqs: &[ExportMetricsServiceRequest], namespace: &str) -> SpanMetricsOut {
    let mut out = SpanMetricsOut::default();
    let mut points: Vec<StreamPoint> = Vec::new();
    let mut cumulative = BTreeSet::new();
    for rm in reqs.iter().flat_map(|r| &r.resource_metrics) {
        let resource: SeriesKey = {
            let mut attrs = rm.resource.clone().unwrap_or_default().attributes;
            by_key(&mut attrs);
            attrs
                .iter()
                .map(|kv| {
                    let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                    (kv.key.clone(), rendered(value).0)
                })
                .collect()
        };
        for sm in &rm.scope_metrics {
            out.scopes
                .insert(sm.scope.clone().unwrap_or_default().name.clone());
            for m in &sm.metrics {
                match &m.data {
                    Some(metric::Data::Sum(sum)) if m.name == format!("{namespace}.calls") => {
                        out.metrics.insert((
                            m.name.clone(),
                            format!(
                                "sum {:?} monotonic={}",
                                AggregationTemporality::try_from(sum.aggregation_temporality),
                                sum.is_monotonic
                            ),
                            m.unit.clone(),
                        ));
                        cumulative.insert(
                            sum.aggregation_temporality
                                == AggregationTemporality::Cumulative as i32,
                        );
                        for p in &sum.data_points {
                            let NumberDataPoint { value, .. } = p;
                            let Some(number_data_point::Value::AsInt(calls)) = *value else {
                                panic!("calls as {value:?}");
                            };
                            let (key, instance) = out.series_key(&p.attributes, &resource);
                            let totals = Totals {
                                calls,
                                ..Totals::default()
                            };
                            points.push((
                                (key, resource.clone(), instance, false),
                                p.time_unix_nano,
                                totals,
                            ));
                        }
                    }
                    Some(metric::Data::Histogram(Histogram {
                        data_points,
                        aggregation_temporality,
                    })) if m.name == format!("{namespace}.duration") => {
                        out.metrics.insert((
                            m.name.clone(),
                            format!(
                                "histogram {:?}",
                                AggregationTemporality::try_from(*aggregation_temporality)
                            ),
                            m.unit.clone(),
                        ));
                        cumulative.insert(
                            *aggregation_temporality == AggregationTemporality::Cumulative as i32,
                        );
                        for p in data_points {
                            let (key, instance) = out.series_key(&p.attributes, &resource);
                            let totals = Totals {
                                count: p.count,
                                sum_ms: p.sum.unwrap_or_default(),
                                buckets: p.bucket_counts.clone(),
                                bounds: p.explicit_bounds.clone(),
                                ..Totals::default()
                            };
                            points.push((
                                (key, resource.clone(), instance, true),
                                p.time_unix_nano,
                                totals,
                            ));
                        }
                    }
                    _ => panic!("unexpected metric {m:?}"),
                }
            }
        }
    }
    assert!(cumulative.len() <= 1, "delta and cumulative points");
    if cumulative.contains(&true) {
        // The latest point of each stream (a later point of a cumulative stream holds the
        // earlier ones' counts; one with the same time must be the same).
        let mut latest: BTreeMap<_, (u64, Totals)> = BTreeMap::new();
        for (stream, time, totals) in points.drain(..) {
            match latest.get(&stream) {
                Some((t, was)) if *t > time => assert!(was.calls >= totals.calls),
                Some((t, was)) if *t == time => assert!(was.same(&totals), "{stream:?}"),
                _ => {
                    latest.insert(stream, (time, totals));
                }
            }
        }
        points = latest
            .into_iter()
            .map(|(stream, (time, totals))| (stream, time, totals))
            .collect();
    }
    for ((key, _, _, _), _, p) in points {
        let t = out.series.entry(key).or_default();
        t.calls += p.calls;
        t.count += p.count;
        t.sum_ms += p.sum_ms;
        if !p.bounds.is_empty() {
            if t.buckets.is_empty() {
                t.buckets = vec![0; p.buckets.len()];
                t.bounds = p.bounds.clone();
            }
            assert_eq!(t.bounds, p.bounds);
            for (total, c) in t.buckets.iter_mut().zip(&p.buckets) {
                *total += c;
            }
        }
    }
    out
}

/// The same spans through shardtel's `spanmetrics` processor and the Collector's
/// `span_metrics` connector with the settings of `spanmetrics-to-file.yaml`: per (service,
/// span name, kind, status code, dimensions) the same calls, histogram count, bucket counts
/// and sum, with the same metric names, kinds and units, but for the differences
/// docs/processors.md names, which must show where expected.
#[test]
fn span_metrics_equal_the_collectors_span_metrics_connector() {
    let Some(bin) = otelcol_bin("span_metrics_equal_the_collectors_span_metrics_connector") else {
        return;
    };
    span_metrics_compared(&bin, &[]);
}

/// The same in cumulative temporality: the latest point of each stream (shardtel: one per core;
/// the Collector: one per resource) added up per series.
#[test]
fn cumulative_span_metrics_equal_the_collectors_span_metrics_connector() {
    let Some(bin) =
        otelcol_bin("cumulative_span_metrics_equal_the_collectors_span_metrics_connector")
    else {
        return;
    };
    span_metrics_compared(
        &bin,
        &[(
            "OTELCOL_SM_TEMPORALITY",
            "AGGREGATION_TEMPORALITY_CUMULATIVE".to_string(),
        )],
    );
}

fn span_metrics_compared(bin: &Path, env: &[(&str, String)]) {
    let settings = span_metrics_settings(&collector_config(bin, "spanmetrics-to-file", env));
    let cumulative = settings.temporality == "AGGREGATION_TEMPORALITY_CUMULATIVE";
    assert_eq!(cumulative, !env.is_empty());
    let ns = |v: u64| format!("{v}ns");
    let mut st = Shardtel::start_config(|c| {
        c.file_exporters()
            .processor(
                "spanmetrics",
                Component::of_type("spanmetrics")
                    .set("dimensions", settings.dimensions.clone())
                    .set(
                        "buckets",
                        settings
                            .buckets_ns
                            .iter()
                            .map(|b| ns(*b))
                            .collect::<Vec<_>>(),
                    )
                    .set("flush_interval", ns(settings.flush_interval_ns))
                    .set("namespace", settings.namespace.as_str())
                    .set("aggregation_temporality", settings.temporality.as_str()),
            )
            .traces(Pipeline::otlp_to(&["file_traces"]).processors(&["spanmetrics"]))
            .metrics(Pipeline::otlp_to(&["file_metrics"]))
    });
    let mut collector = Otelcol::start(bin, "spanmetrics-to-file", env);
    let requests = sm_requests();
    for req in &requests {
        st.post_accepted(Signal::Traces, req.encode_to_vec());
        post_collector(&collector, Signal::Traces, req.encode_to_vec());
    }
    let spans = flatten(&requests);
    let adjusted = spans
        .iter()
        .filter(|(_, _, sp)| !sp.trace_state.is_empty())
        .count();
    let unnamed = spans
        .iter()
        .filter(|(r, _, _)| attr(&r.as_ref().unwrap().attributes, "service.name").is_none())
        .count();
    assert_eq!((spans.len(), adjusted, unnamed), (128, 8, 36));
    // shardtel counts every span once; the Collector skips spans without a service.name and
    // counts a span sampled at 50 % twice.
    let want = (
        spans.len() as i64,
        (spans.len() - unnamed + adjusted) as i64,
    );
    let ours = |st: &Shardtel| {
        span_metrics_out(
            &read_shardtel(&st.out(), Signal::Metrics),
            &settings.namespace,
        )
    };
    let theirs = |c: &Otelcol| {
        span_metrics_out(
            &read_collector_file(&c.out(), "metrics", Signal::Metrics),
            &settings.namespace,
        )
    };
    assert!(
        wait_until(60, || (ours(&st).calls(), theirs(&collector).calls()) == want),
        "calls counted (shardtel, the Collector) {:?}, want {want:?}; shardtel log:\n{}\nCollector log:\n{}",
        (ours(&st).calls(), theirs(&collector).calls()),
        st.log(),
        collector.log()
    );
    assert_eq!(st.stop(), 0, "{}", st.log());
    collector.stop();
    let mut ours = ours(&st);
    let mut theirs = theirs(&collector);
    assert_eq!((ours.calls(), theirs.calls()), want, "after both stopped");

    // Metric names, kinds, temporality and units: the same.
    assert_eq!(ours.metrics, theirs.metrics);
    assert_eq!(ours.metrics.len(), 2, "{:?}", ours.metrics);
    for t in ours.series.values() {
        assert_eq!(t.count as i64, t.calls, "{t:?}");
    }

    // Differences, each where docs/processors.md says it is.
    // 1. The Collector adds collector.instance.id to every point; shardtel has none in delta
    //    temporality, and one per core in cumulative.
    assert_eq!(
        (theirs.instance_ids, ours.instance_ids),
        (theirs.points, if cumulative { ours.points } else { 0 }),
        "collector.instance.id"
    );
    // 2. A dimension keeps its value type in the Collector; shardtel writes it as a string.
    assert_eq!(ours.types["http.status_code"], BTreeSet::from(["string"]));
    assert_eq!(theirs.types["http.status_code"], BTreeSet::from(["int"]));
    ours.types.remove("http.status_code");
    theirs.types.remove("http.status_code");
    assert_eq!(ours.types, theirs.types);
    // 3. Resources: the Collector keeps the spans' whole resource (one stream per distinct
    //    resource); shardtel one resource per service with service.name only.
    let text = |r: &Resource| -> SeriesKey {
        let mut a = r.attributes.clone();
        by_key(&mut a);
        a.iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    rendered(kv.value.as_ref().and_then(|v| v.value.as_ref())).0,
                )
            })
            .collect()
    };
    assert_eq!(
        theirs.resources,
        BTreeMap::from([
            (
                "checkout".to_string(),
                BTreeSet::from([text(&sm_resource(0))])
            ),
            (
                "cart".to_string(),
                BTreeSet::from([text(&sm_resource(1)), text(&sm_resource(3))])
            ),
        ])
    );
    assert_eq!(
        ours.resources,
        BTreeMap::from([
            (
                "checkout".to_string(),
                BTreeSet::from([vec![("service.name".to_string(), "checkout".to_string())]])
            ),
            (
                "cart".to_string(),
                BTreeSet::from([vec![("service.name".to_string(), "cart".to_string())]])
            ),
            (String::new(), BTreeSet::from([vec![]])),
        ])
    );
    // 4. The scope's name.
    assert_eq!(
        ours.scopes,
        BTreeSet::from(["shardtel.spanmetrics".to_string()])
    );
    assert_eq!(
        theirs.scopes,
        BTreeSet::from(["spanmetricsconnector".to_string()])
    );
    // 5. Spans without service.name: shardtel counts them under service.name = "", the
    //    Collector not at all.
    let service = |k: &SeriesKey| {
        k.iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.clone())
    };
    let unnamed_calls: i64 = ours
        .series
        .iter()
        .filter(|(k, _)| service(k).as_deref() == Some(""))
        .map(|(_, t)| t.calls)
        .sum();
    assert_eq!(unnamed_calls, unnamed as i64);
    ours.series.retain(|k, _| service(k).as_deref() != Some(""));
    assert!(theirs
        .series
        .keys()
        .all(|k| service(k).is_some_and(|s| !s.is_empty())));
    // 6. Spans whose tracestate carries a sampling threshold (ot=th:8, 50 %): the Collector
    //    counts each as 2 (its adjusted count), shardtel as 1.
    let is_adjusted = |k: &SeriesKey| k.iter().any(|(k, v)| k == "span.name" && v == SM_ADJUSTED);
    let adjusted_ours: BTreeMap<_, _> = ours
        .series
        .iter()
        .filter(|(k, _)| is_adjusted(k))
        .map(|(k, t)| (k.clone(), t.scaled(2)))
        .collect();
    let adjusted_theirs: BTreeMap<_, _> = theirs
        .series
        .iter()
        .filter(|(k, _)| is_adjusted(k))
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect();
    assert!(!adjusted_ours.is_empty());
    assert_same_series(
        &adjusted_ours,
        &adjusted_theirs,
        "spans sampled at 50 % (shardtel's counts doubled)",
    );
    ours.series.retain(|k, _| !is_adjusted(k));
    theirs.series.retain(|k, _| !is_adjusted(k));

    // Everything else: the same series with the same totals.
    assert!(ours.series.len() > 50, "{}", ours.series.len());
    assert_same_series(&ours.series, &theirs.series, "span metrics");
}

/// The same series with the same totals; panics naming the differences otherwise.
fn assert_same_series(
    ours: &BTreeMap<SeriesKey, Totals>,
    theirs: &BTreeMap<SeriesKey, Totals>,
    what: &str,
) {
    let keys: BTreeSet<&SeriesKey> = ours.keys().chain(theirs.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| match (ours.get(*k), theirs.get(*k)) {
            (Some(a), Some(b)) => !a.same(b),
            _ => true,
        })
        .map(|k| {
            format!(
                "{k:?}\n  shardtel  {:?}\n  collector {:?}",
                ours.get(k),
                theirs.get(k)
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: {} series from shardtel, {} from the Collector, {} differ:\n{}",
        ours.len(),
        theirs.len(),
        diffs.len(),
        diffs
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
