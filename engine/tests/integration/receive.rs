//! Spans sent by real clients arrive at the file exporter unchanged.

use std::collections::BTreeSet;

use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use prost::Message;
use shardtel_protocol::Signal;

use crate::gen::{flatten, request, span};
use crate::harness::{flat_spans_in, spans_in, wait_until, Shardtel};

fn file_collector() -> Shardtel {
    Shardtel::start_config(|c| c.file_pipelines())
}

#[test]
fn raw_protobuf_and_json_requests_arrive_identical() {
    let st = file_collector();
    let client = reqwest::blocking::Client::new();
    let mut sent = Vec::new();
    for r in 0..20u64 {
        let req = request((0..50).map(|i| span(1, r * 10 + i % 10, i / 10)).collect());
        let resp = st
            .post(&client, Signal::Traces, req.encode_to_vec())
            .unwrap();
        assert_eq!(resp.status(), 200, "{:?}", resp.text());
        sent.push(req);
    }
    for r in 20..25u64 {
        let req = request((0..20).map(|i| span(1, r * 10 + i % 10, i / 10)).collect());
        let json =
            shardtel_protocol::json::from_protobuf(Signal::Traces, &req.encode_to_vec()).unwrap();
        let resp = client
            .post(format!("{}/v1/traces", st.http_url()))
            .header("content-type", "application/json")
            .body(json)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{:?}", resp.text());
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        sent.push(req);
    }
    let expected = flatten(&sent);
    let out = st.out();
    assert!(
        wait_until(20, || spans_in(&out).len() >= expected.len()),
        "spans did not all arrive; log:\n{}",
        st.log()
    );
    let got = flat_spans_in(&out);
    assert_eq!(got.len(), expected.len());
    assert_eq!(
        got, expected,
        "spans, resources or scopes differ after passing through shardtel"
    );
    // counters are published once a second
    assert!(
        wait_until(5, || st.metric_sum(
            "shardtel_receiver_accepted_spans_total",
            "transport=\"http\""
        ) == expected.len() as u64),
        "{}",
        st.metrics()
    );
}

/// Records `traces` traces of `per_trace` spans through `provider`, flushes and shuts it down;
/// the (trace id, span id) of every span.
fn sdk_spans(
    provider: SdkTracerProvider,
    prefix: &str,
    traces: usize,
    per_trace: usize,
) -> BTreeSet<(String, String)> {
    let tracer = provider.tracer("shardtel-test");
    let mut ids = BTreeSet::new();
    for t in 0..traces {
        let root = tracer.start(format!("{prefix}-root-{t}"));
        let cx = opentelemetry::Context::current_with_span(root);
        for c in 1..per_trace {
            let mut child = tracer.start_with_context(format!("{prefix}-child-{t}-{c}"), &cx);
            child.set_attribute(KeyValue::new("user.id", format!("user-{c}")));
            child.set_attribute(KeyValue::new("http.status_code", 200i64));
            let sc = child.span_context().clone();
            ids.insert((sc.trace_id().to_string(), sc.span_id().to_string()));
            child.end();
        }
        let span = cx.span();
        let sc = span.span_context().clone();
        ids.insert((sc.trace_id().to_string(), sc.span_id().to_string()));
        span.end();
    }
    provider.force_flush().unwrap();
    provider.shutdown().unwrap();
    ids
}

/// A tracer provider exporting each span as it ends with `exporter`.
fn simple_provider(
    exporter: opentelemetry_otlp::SpanExporter,
    resource: &Resource,
) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_simple_exporter(exporter)
        .build()
}

fn arrived_ids(st: &Shardtel) -> BTreeSet<(String, String)> {
    spans_in(&st.out())
        .into_iter()
        .map(|sp| (hex(&sp.trace_id), hex(&sp.span_id)))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn otlp_sdk_grpc_and_http_exporters_with_gzip() {
    let st = file_collector();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let resource = Resource::builder().with_service_name("sdk-test").build();

    // gRPC (tonic) with gzip
    let grpc_ids = rt.block_on(async {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(st.grpc_url())
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
            .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(exporter)
            .build();
        sdk_spans(provider, "grpc", 40, 5)
    });
    // HTTP protobuf with gzip (blocking reqwest client, outside the runtime)
    let http_ids = {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", st.http_url()))
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
            .unwrap();
        sdk_spans(simple_provider(exporter, &resource), "http", 10, 4)
    };
    // HTTP JSON
    let json_ids = {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(format!("{}/v1/traces", st.http_url()))
            .build()
            .unwrap();
        sdk_spans(simple_provider(exporter, &resource), "json", 5, 3)
    };
    let mut expected = grpc_ids;
    expected.extend(http_ids);
    expected.extend(json_ids);
    assert_eq!(expected.len(), 200 + 40 + 15);
    assert!(
        wait_until(20, || arrived_ids(&st).len() >= expected.len()),
        "only {} of {} spans arrived; log:\n{}",
        arrived_ids(&st).len(),
        expected.len(),
        st.log()
    );
    assert_eq!(arrived_ids(&st), expected);
    // names and attributes survive
    let flat = flat_spans_in(&st.out());
    let child = flat
        .iter()
        .find(|(_, _, sp)| sp.name == "grpc-child-3-2")
        .expect("child span present");
    assert!(child.2.attributes.iter().any(|kv| kv.key == "user.id"));
    let svc = child
        .0
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .unwrap();
    assert_eq!(
        format!("{:?}", svc.value),
        format!(
            "{:?}",
            Some(crate::gen::s("sdk-test"))
                .map(|v| shardtel_protocol::proto::common::v1::AnyValue { value: Some(v) })
        )
    );
}
