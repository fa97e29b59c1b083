//! The `transform` processor through the real process: one transform chain applied to spans
//! (OpenTelemetry SDK over OTLP/gRPC, after tail sampling), log records (SDK over OTLP/HTTP)
//! and metric data points (OTLP/HTTP protobuf), checked in the file exporters' output; and a
//! statement error at start-up naming file, line and statement.

use opentelemetry::logs::{AnyValue as LogValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use prost::Message;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::common::v1::any_value::Value;
use shardtel_protocol::proto::common::v1::KeyValue as PbKeyValue;
use shardtel_protocol::proto::metrics::v1::{
    metric, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use shardtel_protocol::Signal;

use crate::gen::{kv, s};
use crate::harness::{read_lines, spans_in, wait_until, Shardtel};
use crate::test_config::{millis, Component, Pipeline, TailSampling};

fn string(kvs: &[PbKeyValue], key: &str) -> Option<String> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(v) => Some(v.clone()),
            _ => None,
        })
}

const SPANS: usize = 20;
const RECORDS: usize = 10;

#[test]
fn one_transform_chain_on_spans_logs_and_points() {
    let st = Shardtel::start_config(|c| {
        c.file_exporters()
            .processor("tail_sampling", TailSampling::keep_all(millis(200)))
            .processor(
                "tidy",
                Component::transform(&[
                    (
                        "trace_statements",
                        "resource",
                        &[r#"set(attributes["tier"], "processing")"#],
                    ),
                    (
                        "trace_statements",
                        "span",
                        &[
                            r#"set(attributes["slow"], true) where attributes["ms"] >= 500"#,
                            r#"replace_pattern(name, "/users/\\d+", "/users/{id}")"#,
                            r#"delete_key(attributes, "user.email")"#,
                            r#"merge_maps(attributes, resource.attributes, "insert")"#,
                            r#"set(status.code, STATUS_CODE_ERROR) where attributes["http.status_code"] >= 500"#,
                        ],
                    ),
                    (
                        "log_statements",
                        "log",
                        &[
                            r#"replace_pattern(body, "token=\\w+", "token=***")"#,
                            r#"set(severity_text, "WARNING") where severity_number >= SEVERITY_NUMBER_WARN"#,
                        ],
                    ),
                    (
                        "metric_statements",
                        "datapoint",
                        &[r#"rename(attributes, "code", "http.response.status_code") where metric.name == "requests""#],
                    ),
                ]),
            )
            .traces(Pipeline::otlp_to(&["file_traces"]).processors(&["tail_sampling", "tidy"]))
            .logs(Pipeline::otlp_to(&["file_logs"]).processors(&["tidy"]))
            .metrics(Pipeline::otlp_to(&["file_metrics"]).processors(&["tidy"]))
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let resource = Resource::builder().with_service_name("users").build();
    rt.block_on(async {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(st.grpc_url())
            .build()
            .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer("transform-test");
        for i in 0..SPANS {
            let mut span = tracer.start(format!("GET /users/{i}"));
            span.set_attribute(KeyValue::new("ms", (i * 50) as i64));
            span.set_attribute(KeyValue::new(
                "http.status_code",
                if i % 4 == 0 { 503 } else { 200 },
            ));
            span.set_attribute(KeyValue::new("user.email", format!("u{i}@example.com")));
            span.set_attribute(KeyValue::new("i", i as i64));
            span.end();
        }
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    });
    {
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/logs", st.http_url()))
            .build()
            .unwrap();
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource)
            .with_simple_exporter(exporter)
            .build();
        let logger = provider.logger("transform-test");
        for i in 0..RECORDS {
            let mut r = logger.create_log_record();
            r.set_body(LogValue::String(
                format!("login {i} token=abc{i}x ok").into(),
            ));
            r.set_severity_number(if i % 2 == 0 {
                opentelemetry::logs::Severity::Warn
            } else {
                opentelemetry::logs::Severity::Info
            });
            r.set_severity_text("orig");
            logger.emit(r);
        }
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    }
    let gauge = |name: &str| Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: vec![kv("code", s("200"))],
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: None,
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![gauge("requests"), gauge("other")],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    };
    st.post_accepted(Signal::Metrics, metrics.encode_to_vec());

    let out = st.out();
    let records = || -> Vec<shardtel_protocol::proto::logs::v1::LogRecord> {
        read_lines(&out, "logs")
            .into_iter()
            .flat_map(|(_, line)| {
                let pb =
                    shardtel_protocol::json::to_protobuf(Signal::Logs, line.as_bytes()).unwrap();
                ExportLogsServiceRequest::decode(pb.as_ref())
                    .unwrap()
                    .resource_logs
            })
            .flat_map(|rl| rl.scope_logs)
            .flat_map(|sl| sl.log_records)
            .collect()
    };
    let points = || -> Vec<(String, Vec<PbKeyValue>)> {
        read_lines(&out, "metrics")
            .into_iter()
            .flat_map(|(_, line)| {
                let pb =
                    shardtel_protocol::json::to_protobuf(Signal::Metrics, line.as_bytes()).unwrap();
                ExportMetricsServiceRequest::decode(pb.as_ref())
                    .unwrap()
                    .resource_metrics
            })
            .flat_map(|rm| rm.scope_metrics)
            .flat_map(|sm| sm.metrics)
            .map(|m| match m.data {
                Some(metric::Data::Gauge(g)) => (m.name, g.data_points[0].attributes.clone()),
                _ => panic!("not a gauge"),
            })
            .collect()
    };
    assert!(
        wait_until(30, || spans_in(&out).len() >= SPANS
            && records().len() >= RECORDS
            && points().len() >= 2),
        "output missing; log:\n{}",
        st.log()
    );
    // Spans (and their resource).
    for rs in crate::harness::read_traces(&out)
        .into_iter()
        .flat_map(|(_, r)| r.resource_spans)
    {
        let res = rs.resource.unwrap_or_default();
        assert_eq!(
            string(&res.attributes, "tier").as_deref(),
            Some("processing")
        );
        assert_eq!(
            string(&res.attributes, "service.name").as_deref(),
            Some("users")
        );
        for sp in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
            let i = match sp.attributes.iter().find(|kv| kv.key == "i") {
                Some(kv) => match kv.value.as_ref().and_then(|v| v.value.clone()) {
                    Some(Value::IntValue(i)) => i as usize,
                    other => panic!("i is {other:?}"),
                },
                None => panic!("i missing in {sp:?}"),
            };
            assert_eq!(sp.name, "GET /users/{id}");
            assert!(sp.attributes.iter().all(|kv| kv.key != "user.email"));
            // merge_maps copied the resource's attributes in.
            assert_eq!(
                string(&sp.attributes, "service.name").as_deref(),
                Some("users")
            );
            let slow = sp.attributes.iter().any(|kv| kv.key == "slow");
            assert_eq!(slow, i * 50 >= 500, "span {i}");
            let code = sp.status.as_ref().map_or(0, |s| s.code);
            assert_eq!(code == 2, i % 4 == 0, "span {i}: status {:?}", sp.status);
        }
    }
    assert_eq!(spans_in(&out).len(), SPANS);
    // Log records.
    let recs = records();
    assert_eq!(recs.len(), RECORDS);
    for r in &recs {
        let Some(Value::StringValue(body)) = r.body.as_ref().and_then(|b| b.value.clone()) else {
            panic!("body {:?}", r.body)
        };
        assert!(
            body.contains("token=*** ok") && !body.contains("abc"),
            "{body}"
        );
        let warn = r.severity_number >= 13;
        assert_eq!(r.severity_text, if warn { "WARNING" } else { "orig" });
    }
    // Data points.
    let mut pts = points();
    pts.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(pts[0].0, "other");
    assert_eq!(pts[0].1, vec![kv("code", s("200"))]);
    assert_eq!(pts[1].0, "requests");
    assert_eq!(pts[1].1, vec![kv("http.response.status_code", s("200"))]);
}

#[test]
fn a_bad_statement_stops_start_up_naming_file_line_and_statement() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shardtel.toml");
    std::fs::write(
        &path,
        "[receivers.otlp]\ngrpc = \"127.0.0.1:0\"\n[exporters.blackhole]\n\
         [processors.tidy]\ntype = \"transform\"\n[[processors.tidy.trace_statements]]\ncontext = \"span\"\n\
         statements = [\n  'set(attributes[\"a\"], \"b\")',\n  'set(attributes[\"a\"], \"b\") where nme == \"x\"',\n]\n\
         [pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [\"tidy\"]\nexporters = [\"blackhole\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardtel"))
        .arg("validate")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}:10: processors.tidy.trace_statements[0].statements[1]: invalid statement `set(attributes[\"a\"], \"b\") where nme == \"x\"`: at column 33: unknown path `nme`",
        path.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
}
