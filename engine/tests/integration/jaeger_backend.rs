//! The `otlp` and `otlphttp` exporters against a real Jaeger (v2: `cmd/jaeger` v1.75.0 built
//! from the Go module proxy, in-memory storage, started by `tests/peers/backends.sh`): traces
//! go through a real shardtel on every core, then Jaeger's own query APIs are asked what it
//! stored. The api_v3 (`/api/v3/traces/{id}`, OTLP JSON) answer is compared with what was
//! sent, resource, scope and span field by field; the classic `/api/traces/{id}` answer
//! (Jaeger's model: processes, references, tags) is checked for span count, parent links,
//! service names and tags. Behind the reference tail-sampling policy
//! (`tests/fixtures/reference-sampling.toml`, `decision_wait` 1 s), every trace Jaeger holds is
//! complete and every trace the policy must keep is there.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use serde_json::Value;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::proto::common::v1::{any_value, AnyValue, ArrayValue, InstrumentationScope};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::proto::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use shardtel_protocol::Signal;

use crate::backends::{jaeger_otlp_grpc, jaeger_otlp_http, now_ns, JAEGER_QUERY};
use crate::gen::{kv, s};
use crate::harness::{wait_until, Shardtel};
use crate::test_config::{millis, secs, Batch, Component, Pipeline, Retry, TailSampling};

/// Spans per trace.
const SPANS: u64 = 5;

/// The trace id of trace `t` of a run: the run's 8 bytes, then `t`.
fn trace_id(run: u64, t: u64) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    id.extend_from_slice(&(run ^ t.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes());
    id.extend_from_slice(&t.to_be_bytes());
    id
}

fn span_id(t: u64, i: u64) -> Vec<u8> {
    let mut id = Vec::with_capacity(8);
    id.extend_from_slice(&(t as u32 + 1).to_be_bytes());
    id.extend_from_slice(&(i as u32 + 1).to_be_bytes());
    id
}

/// The parent of span `i`: spans form a binary tree under span 0.
fn parent(i: u64) -> Option<u64> {
    (i > 0).then(|| (i - 1) / 2)
}

/// The service of span `i`: the root and even spans are `frontend`, odd ones `backend`.
fn service_of(i: u64) -> usize {
    (i % 2) as usize
}

/// Span `i` of trace `t`, starting `base_ns` + a little: every OTLP span field Jaeger's
/// stores keep, with attributes of every value type.
fn test_span(run: u64, t: u64, i: u64, base_ns: u64) -> Span {
    let start = base_ns + t * 1_000_000 + i * 10_000;
    let end = start + if i == 0 { 5_000_000 } else { 1_000_000 };
    Span {
        trace_id: trace_id(run, t),
        span_id: span_id(t, i),
        trace_state: if i == 0 {
            "vendor=abc".into()
        } else {
            String::new()
        },
        parent_span_id: parent(i).map(|p| span_id(t, p)).unwrap_or_default(),
        name: format!("op-{i}"),
        kind: match i {
            0 => span::SpanKind::Server,
            i if i % 2 == 1 => span::SpanKind::Client,
            _ => span::SpanKind::Internal,
        } as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: vec![
            kv("http.route", s(&format!("/api/{t}"))),
            kv(
                "http.status_code",
                any_value::Value::IntValue(200 + i as i64),
            ),
            kv("retry", any_value::Value::BoolValue(i % 2 == 0)),
            kv("ratio", any_value::Value::DoubleValue(i as f64 / 4.0)),
            kv(
                "tags",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(s("a")),
                        },
                        AnyValue {
                            value: Some(s("b")),
                        },
                    ],
                }),
            ),
        ],
        events: if i == 1 {
            vec![span::Event {
                time_unix_nano: start + 500,
                name: "cache miss".into(),
                attributes: vec![kv("key", s("user:42"))],
                dropped_attributes_count: 0,
            }]
        } else {
            vec![]
        },
        links: if i == 2 && t > 0 {
            vec![span::Link {
                trace_id: trace_id(run, t - 1),
                span_id: span_id(t - 1, 0),
                attributes: vec![kv("link.kind", s("previous"))],
                ..Default::default()
            }]
        } else {
            vec![]
        },
        status: Some(if i == 3 {
            Status {
                code: status::StatusCode::Error as i32,
                message: "boom".into(),
            }
        } else {
            Status {
                code: status::StatusCode::Ok as i32,
                message: String::new(),
            }
        }),
        ..Default::default()
    }
}

fn resource(service: usize) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", s(["frontend", "backend"][service])),
            kv("host.name", s(&format!("node-{service}"))),
            kv("deployment.environment.name", s("test")),
        ],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "jaeger-test".into(),
        version: "1.2.3".into(),
        attributes: vec![kv("scope.attr", s("x"))],
        ..Default::default()
    }
}

/// One request holding `spans`, grouped by service: one `ResourceSpans` each, one scope.
fn request(spans: Vec<(usize, Span)>) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<usize, Vec<Span>> = BTreeMap::new();
    for (service, sp) in spans {
        by_service.entry(service).or_default().push(sp);
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(resource(service)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

type Flat = Vec<(Resource, InstrumentationScope, Span)>;

/// (resource, scope, span) triples sorted by span id.
fn flatten(req: &ExportTraceServiceRequest) -> Flat {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        for ss in &rs.scope_spans {
            for sp in &ss.spans {
                out.push((
                    rs.resource.clone().unwrap_or_default(),
                    ss.scope.clone().unwrap_or_default(),
                    sp.clone(),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.2.span_id.cmp(&b.2.span_id));
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Trace `id` as api_v3 returns it (raw: no adjuster touched it), decoded from its OTLP
/// JSON; `None` while Jaeger does not know it.
fn api_v3_trace(id: &[u8]) -> Option<ExportTraceServiceRequest> {
    let json = JAEGER_QUERY.get_json(
        &format!("/api/v3/traces/{}", hex(id)),
        &[("raw_traces", "true")],
    );
    let result = json.get("result")?;
    let pb = shardtel_protocol::json::to_protobuf(Signal::Traces, result.to_string().as_bytes())
        .unwrap_or_else(|e| {
            panic!("api_v3 answered OTLP JSON shardtel cannot read: {e}: {result}")
        });
    Some(ExportTraceServiceRequest::decode(pb.as_ref()).unwrap())
}

fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

/// Waits until Jaeger holds `want` spans of trace `id` (and a moment longer, so that a
/// duplicate would show); the trace as api_v3 returns it.
fn wait_for_trace(id: &[u8], want: usize, shardtel: &Shardtel) -> ExportTraceServiceRequest {
    let mut last = None;
    let complete = wait_until(30, || {
        last = api_v3_trace(id);
        last.as_ref().is_some_and(|r| span_count(r) >= want)
    });
    assert!(
        complete,
        "trace {} has {:?} spans in Jaeger, want {want}; shardtel log:\n{}\n{}",
        hex(id),
        last.as_ref().map(span_count),
        shardtel.log(),
        shardtel.metrics()
    );
    last.unwrap()
}

/// A shardtel whose traces pipeline exports through `exporter` (as `jaeger`), behind the
/// reference tail-sampling policy (`decision_wait` 1 s) when `sampled`.
fn shardtel_to_jaeger(exporter: Component, sampled: bool) -> Shardtel {
    let exporter = exporter
        .batch(Batch::timeout(millis(50)))
        .retry(Retry::backoff(millis(50), millis(500)));
    Shardtel::start_config(|c| {
        let c = c.exporter("jaeger", exporter);
        if sampled {
            c.processor(
                "tail_sampling",
                TailSampling::reference().decision_wait(secs(1)),
            )
            .traces(Pipeline::otlp_to(&["jaeger"]).processors(&["tail_sampling"]))
        } else {
            c.traces(Pipeline::otlp_to(&["jaeger"]))
        }
    })
}

/// Sends `traces` traces of SPANS spans, split in two requests (even and odd spans), each on
/// a new connection; returns the run id and what was sent per trace.
fn send_traces(shardtel: &Shardtel, traces: u64) -> (u64, Vec<Flat>) {
    let run = now_ns();
    let base_ns = now_ns() - 60_000_000_000;
    let spans: Vec<Vec<(usize, Span)>> = (0..traces)
        .map(|t| {
            (0..SPANS)
                .map(|i| (service_of(i), test_span(run, t, i, base_ns)))
                .collect()
        })
        .collect();
    for half in 0..2 {
        let part = spans
            .iter()
            .flat_map(|trace| trace.iter().filter(|(_, sp)| sp.span_id[7] % 2 == half))
            .cloned()
            .collect();
        shardtel.post_traces(&request(part));
    }
    let sent = spans.into_iter().map(|t| flatten(&request(t))).collect();
    (run, sent)
}

fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"].as_array()?.iter().find(|t| t["key"] == key)
}

/// The classic query API's view of trace `t`: span count, operation names, parent links as
/// CHILD_OF references, processes' service names and tags, tags of each value type.
fn check_classic_api(run: u64, t: u64, sent: &Flat) {
    let id = trace_id(run, t);
    let json = JAEGER_QUERY.get_json(&format!("/api/traces/{}", hex(&id)), &[]);
    let data = json["data"].as_array().expect("data array");
    assert_eq!(data.len(), 1, "{json}");
    let trace = &data[0];
    assert_eq!(trace["traceID"], hex(&id));
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), SPANS as usize, "{trace}");
    for (resource, _, sent_span) in sent {
        let i = u64::from(sent_span.span_id[7]) - 1;
        let got = spans
            .iter()
            .find(|sp| sp["spanID"] == hex(&sent_span.span_id))
            .unwrap_or_else(|| panic!("span {i} missing: {trace}"));
        assert_eq!(got["operationName"], sent_span.name);
        assert_eq!(
            got["startTime"].as_u64(),
            Some(sent_span.start_time_unix_nano / 1000)
        );
        assert_eq!(
            got["duration"].as_u64(),
            Some((sent_span.end_time_unix_nano - sent_span.start_time_unix_nano) / 1000)
        );
        let child_of: Vec<&Value> = got["references"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["refType"] == "CHILD_OF")
            .collect();
        match parent(i) {
            None => assert!(child_of.is_empty(), "root has a parent: {got}"),
            Some(p) => {
                assert_eq!(child_of.len(), 1, "{got}");
                assert_eq!(child_of[0]["spanID"], hex(&span_id(t, p)));
                assert_eq!(child_of[0]["traceID"], hex(&id));
            }
        }
        if !sent_span.links.is_empty() {
            let follows: Vec<&Value> = got["references"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["refType"] == "FOLLOWS_FROM")
                .collect();
            assert_eq!(follows.len(), 1, "{got}");
            assert_eq!(follows[0]["traceID"], hex(&trace_id(run, t - 1)));
        }
        let process = &trace["processes"][got["processID"].as_str().unwrap()];
        let service = match &resource.attributes[0].value.as_ref().unwrap().value {
            Some(any_value::Value::StringValue(v)) => v.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(process["serviceName"], service.as_str(), "{trace}");
        let host = process["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == "host.name")
            .unwrap_or_else(|| panic!("no host.name process tag: {process}"));
        assert_eq!(host["value"], format!("node-{}", service_of(i)));
        assert_eq!(
            tag(got, "http.route").unwrap()["value"],
            format!("/api/{t}")
        );
        let code = tag(got, "http.status_code").unwrap();
        assert_eq!(
            (&code["type"], &code["value"]),
            (&"int64".into(), &(200 + i).into())
        );
        assert_eq!(tag(got, "retry").unwrap()["value"], i % 2 == 0);
        assert_eq!(tag(got, "ratio").unwrap()["value"], i as f64 / 4.0);
        assert_eq!(tag(got, "otel.scope.name").unwrap()["value"], "jaeger-test");
        let is_error = sent_span
            .status
            .as_ref()
            .is_some_and(|st| st.code == status::StatusCode::Error as i32);
        assert_eq!(
            tag(got, "error").map(|e| e["value"].clone()),
            is_error.then_some(Value::Bool(true)),
            "{got}"
        );
        if i == 1 {
            let logs = got["logs"].as_array().unwrap();
            assert_eq!(logs.len(), 1, "{got}");
            assert_eq!(
                logs[0]["timestamp"].as_u64(),
                Some((sent_span.start_time_unix_nano + 500) / 1000)
            );
        }
    }
}

/// Sends 12 traces through `exporter` and compares what Jaeger stored with what was sent.
fn export_and_compare(test: &str, exporter: Component) {
    if !JAEGER_QUERY.available(test) {
        return;
    }
    let shardtel = shardtel_to_jaeger(exporter, false);
    let traces = 12;
    let (run, sent) = send_traces(&shardtel, traces);
    for (t, sent) in sent.iter().enumerate() {
        let id = trace_id(run, t as u64);
        let got = wait_for_trace(&id, SPANS as usize, &shardtel);
        let got = flatten(&got);
        assert_eq!(got.len(), sent.len(), "trace {t}: {got:#?}");
        for (got, sent) in got.iter().zip(sent) {
            assert_eq!(got.0, sent.0, "trace {t}: resource");
            assert_eq!(got.1, sent.1, "trace {t}: scope");
            assert_eq!(got.2, sent.2, "trace {t}: span");
        }
        check_classic_api(run, t as u64, sent);
    }
    assert!(
        wait_until(10, || shardtel.metric_sum(
            "shardtel_exporter_sent_spans_total",
            "exporter=\"jaeger\""
        ) == traces * SPANS),
        "{}",
        shardtel.metrics()
    );
}

#[test]
fn otlp_exporter_traces_arrive_in_jaeger_field_by_field() {
    export_and_compare(
        "otlp_exporter_traces_arrive_in_jaeger_field_by_field",
        Component::otlp(&jaeger_otlp_grpc()),
    );
}

#[test]
fn otlphttp_exporter_traces_arrive_in_jaeger_field_by_field() {
    export_and_compare(
        "otlphttp_exporter_traces_arrive_in_jaeger_field_by_field",
        Component::otlphttp(&jaeger_otlp_http()).set("compression", "zstd"),
    );
}

/// Kind of trace `t`: 0 error, 1 slow, 2 vip, 3 ordinary.
fn kind(t: u64) -> u8 {
    match t % 10 {
        0 => 0,
        1 => 1,
        2 => 2,
        _ => 3,
    }
}

/// Span `i` of a sampled-test trace: ordinary (no error, short) unless its kind says.
fn sampled_span(run: u64, t: u64, i: u64, base_ns: u64) -> (usize, Span) {
    let mut sp = test_span(run, t, i, base_ns);
    sp.status = Some(Status::default());
    match kind(t) {
        0 if i == 3 => {
            sp.status = Some(Status {
                code: status::StatusCode::Error as i32,
                message: "boom".into(),
            })
        }
        1 if i == 0 => sp.end_time_unix_nano = sp.start_time_unix_nano + 2_000_000_000,
        2 if i == 4 => sp.attributes.push(kv("user.id", s("vip"))),
        _ => sp.attributes.push(kv("user.id", s("user-1"))),
    }
    (service_of(i), sp)
}

#[test]
fn tail_sampled_traces_are_complete_in_jaeger() {
    if !JAEGER_QUERY.available("tail_sampled_traces_are_complete_in_jaeger") {
        return;
    }
    let shardtel = shardtel_to_jaeger(Component::otlp(&jaeger_otlp_grpc()), true);
    const TRACES: u64 = 300;
    let run = now_ns();
    let base_ns = now_ns() - 60_000_000_000;
    // Every span in its own piece: span i of every trace in request i, each on a new
    // connection, so a trace's spans reach the owner core from several receiving cores.
    for i in 0..SPANS {
        let spans = (0..TRACES)
            .map(|t| sampled_span(run, t, i, base_ns))
            .collect();
        shardtel.post_traces(&request(spans));
    }
    let decided = || {
        shardtel.metric_sum("shardtel_sampler_traces_total", "decision=\"sampled\"")
            + shardtel.metric_sum("shardtel_sampler_traces_total", "decision=\"not_sampled\"")
    };
    assert!(
        wait_until(30, || decided() >= TRACES),
        "not every trace decided:\n{}",
        shardtel.metrics()
    );
    let sampled = shardtel.metric_sum("shardtel_sampler_traces_total", "decision=\"sampled\"");
    assert!(
        wait_until(30, || shardtel.metric_sum(
            "shardtel_exporter_sent_spans_total",
            "exporter=\"jaeger\""
        ) == sampled * SPANS),
        "kept spans not all exported:\n{}",
        shardtel.metrics()
    );
    // Jaeger's batch processor flushes within 100 ms; then every trace is asked for.
    let mut kept = BTreeSet::new();
    let all_there = wait_until(30, || {
        kept.clear();
        for t in 0..TRACES {
            if let Some(trace) = api_v3_trace(&trace_id(run, t)) {
                kept.insert((t, span_count(&trace)));
            }
        }
        kept.len() as u64 == sampled
    });
    assert!(
        all_there,
        "Jaeger holds {} traces of this run, the sampler kept {sampled}",
        kept.len()
    );
    for &(t, spans) in &kept {
        assert_eq!(
            spans, SPANS as usize,
            "kept trace {t} is incomplete in Jaeger"
        );
        let sent: Vec<(usize, Span)> = (0..SPANS)
            .map(|i| sampled_span(run, t, i, base_ns))
            .collect();
        let got = flatten(&api_v3_trace(&trace_id(run, t)).unwrap());
        assert_eq!(got, flatten(&request(sent.clone())), "kept trace {t}");
        check_classic_api(run, t, &flatten(&request(sent)));
    }
    let kept: BTreeSet<u64> = kept.into_iter().map(|(t, _)| t).collect();
    for t in (0..TRACES).filter(|&t| kind(t) != 3) {
        assert!(
            kept.contains(&t),
            "trace {t} of kind {} was not kept",
            kind(t)
        );
    }
    // Of the ordinary traces, the probabilistic policy keeps exactly those whose id hashes under
    // 10 % of the range (the hash is fixed, `probabilistic_hash`; the reference policy has no
    // salt). The ids change with every run, so a bound on the share would fail now and then
    // (it did at 3 sd: 34 of 210); the exact set cannot.
    let threshold = (1u128 << 64) / 10;
    let expected: BTreeSet<u64> = (0..TRACES)
        .filter(|&t| kind(t) == 3)
        .filter(|&t| {
            let id: [u8; 16] = trace_id(run, t).try_into().unwrap();
            u128::from(shardtel_sampler::probabilistic_hash(&id, b"")) < threshold
        })
        .collect();
    let kept_ordinary: BTreeSet<u64> = kept.iter().copied().filter(|&t| kind(t) == 3).collect();
    assert_eq!(
        kept_ordinary, expected,
        "ordinary traces kept, against those the 10 % policy samples"
    );
}
