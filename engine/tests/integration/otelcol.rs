//! Interop with the OpenTelemetry Collector, both ways, through the real processes: the
//! Collector's OTLP exporters (gRPC and HTTP) deliver to shardtel, and shardtel's `otlp` and
//! `otlphttp` exporters deliver to the Collector's OTLP receiver, whose file exporter's output
//! is read back. Traces, metrics and logs; every item must arrive once and unchanged.
//!
//! The Collector is built from the contrib Go modules pinned in `tests/peers/otelcol/`
//! (`build.sh`, run by `./test.sh`, which exports the binary as `SHARDTEL_OTELCOL_BIN`). Its
//! configurations are the files in `tests/peers/otelcol/configs/`, one copy each; the
//! Collector fills in their `${env:...}` values (ports, paths) itself. Without the binary these
//! tests fail, unless `SHARDTEL_OTELCOL_OPTIONAL=1`, which makes them skip with a loud message.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry::logs::{AnyValue as LogValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::KeyValue as SdkKeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource as SdkResource;
use prost::Message;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::proto::common::v1::{any_value, AnyValue, InstrumentationScope};
use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use shardtel_protocol::proto::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::Signal;

use crate::gen::{flatten, kv, request, s, span};
use crate::harness::{free_port, read_lines, wait_until, Shardtel};
use crate::test_config::{Batch, Component, Pipeline};

/// The Collector's configurations (one copy each).
pub const CONFIGS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/peers/otelcol/configs"
);

/// The Collector binary from `SHARDTEL_OTELCOL_BIN`. `None` only when it is missing and
/// `SHARDTEL_OTELCOL_OPTIONAL=1` (after a loud message); panics otherwise.
pub fn otelcol_bin(test: &str) -> Option<PathBuf> {
    let bin = std::env::var_os("SHARDTEL_OTELCOL_BIN").map(PathBuf::from);
    if let Some(bin) = bin.filter(|b| b.is_file()) {
        return Some(bin);
    }
    if std::env::var("SHARDTEL_OTELCOL_OPTIONAL").as_deref() == Ok("1") {
        eprintln!(
            "\n!!!!!!!! SKIPPED {test}: no OpenTelemetry Collector binary in SHARDTEL_OTELCOL_BIN \
             (SHARDTEL_OTELCOL_OPTIONAL=1) !!!!!!!!\n"
        );
        return None;
    }
    panic!(
        "no OpenTelemetry Collector binary: SHARDTEL_OTELCOL_BIN is {:?}. Run ./test.sh (it builds \
         one), or export SHARDTEL_OTELCOL_BIN=\"$(tests/peers/otelcol/build.sh)\"; \
         SHARDTEL_OTELCOL_OPTIONAL=1 skips these tests",
        std::env::var_os("SHARDTEL_OTELCOL_BIN")
    );
}

/// A running OpenTelemetry Collector with its own directory (log, file exporter output).
pub struct Otelcol {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub grpc: u16,
    pub http: u16,
    metrics: u16,
}

impl Otelcol {
    /// Starts `bin` on `configs/<config>.yaml` with the receiver, metrics and output-directory
    /// variables set, plus `env`; waits until its OTLP receivers and metrics endpoint accept
    /// connections (the Collector starts its receivers last, after the exporters).
    pub fn start(bin: &Path, config: &str, env: &[(&str, String)]) -> Self {
        Self::launch(bin, config, env, true)
    }

    /// [`Otelcol::start`] for a configuration without an OTLP receiver (a Kafka consumer):
    /// waits for the metrics endpoint only.
    pub fn start_without_otlp(bin: &Path, config: &str, env: &[(&str, String)]) -> Self {
        Self::launch(bin, config, env, false)
    }

    fn launch(bin: &Path, config: &str, env: &[(&str, String)], otlp: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        let (grpc, http, metrics) = (free_port(), free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("otelcol.log")).unwrap();
        let child = Command::new(bin)
            .arg("--config")
            .arg(format!("{CONFIGS}/{config}.yaml"))
            .env("OTELCOL_GRPC_ENDPOINT", format!("127.0.0.1:{grpc}"))
            .env("OTELCOL_HTTP_ENDPOINT", format!("127.0.0.1:{http}"))
            .env("OTELCOL_METRICS_PORT", metrics.to_string())
            .env("OTELCOL_OUT_DIR", dir.path().join("out"))
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("failed to start the OpenTelemetry Collector");
        let mut c = Otelcol {
            child: Some(child),
            dir,
            grpc,
            http,
            metrics,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the Collector exited at start ({status}); log:\n{}",
                    c.log()
                );
            }
            let ports: &[u16] = if otlp {
                &[grpc, http, metrics]
            } else {
                &[metrics]
            };
            if ports
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
            {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "the Collector did not listen within 30 s; log:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("otelcol.log")).unwrap_or_default()
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Sum of the Collector's self-metric `name` (with or without the `_total` suffix its
    /// Prometheus exporter may add) over the series whose labels contain `label_filter`.
    pub fn metric_sum(&self, name: &str, label_filter: &str) -> u64 {
        let text = crate::harness::http_get(self.metrics, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        text.lines()
            .filter(|l| {
                let rest = l.strip_prefix(name).unwrap_or("");
                (rest.starts_with('{') || rest.starts_with("_total{")) && l.contains(label_filter)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// SIGTERM (the Collector drains its pipelines and closes its files), then waits for
    /// exit 0.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "the Collector exited with {status}; log:\n{}",
                    self.log()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the Collector did not stop within 30 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Otelcol {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every request the Collector's file exporter wrote to `<dir>/<stem>.jsonl` so far. The
/// exporter flushes its buffer on a timer, so a last line without its newline is still being
/// written and is left for the next read.
pub fn read_collector_file<T: Message + Default>(dir: &Path, stem: &str, signal: Signal) -> Vec<T> {
    let bytes = std::fs::read(dir.join(format!("{stem}.jsonl"))).unwrap_or_default();
    crate::harness::complete_lines(&bytes)
        .into_iter()
        .map(|line| {
            let pb = shardtel_protocol::json::to_protobuf(signal, line.as_bytes())
                .unwrap_or_else(|e| panic!("the Collector wrote invalid OTLP JSON: {e}: {line}"));
            T::decode(pb.as_ref()).unwrap()
        })
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---- shardtel → the Collector ------------------------------------------------------------

/// Metric requests: per request a cumulative monotonic sum, a gauge and a histogram, with
/// data points told apart by `seq`.
pub fn metrics_request(r: u64) -> ExportMetricsServiceRequest {
    let t = 1_700_000_000_000_000_000 + r * 1_000_000;
    let attrs = |i: u64| vec![kv("seq", any_value::Value::IntValue((r * 10 + i) as i64))];
    let number = |i: u64, value: number_data_point::Value| NumberDataPoint {
        attributes: attrs(i),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        time_unix_nano: t + i,
        value: Some(value),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("metrics-svc"))],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "interop".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                metrics: vec![
                    Metric {
                        name: "requests".into(),
                        description: "requests served".into(),
                        unit: "1".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: (0..3)
                                .map(|i| {
                                    number(i, number_data_point::Value::AsInt((r * 3 + i) as i64))
                                })
                                .collect(),
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "queue.fill".into(),
                        unit: "1".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: (0..2)
                                .map(|i| {
                                    number(
                                        i,
                                        number_data_point::Value::AsDouble(
                                            r as f64 / 7.0 + i as f64,
                                        ),
                                    )
                                })
                                .collect(),
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "latency".into(),
                        unit: "ms".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                attributes: attrs(0),
                                start_time_unix_nano: 1_700_000_000_000_000_000,
                                time_unix_nano: t,
                                count: 6,
                                sum: Some(612.5 + r as f64),
                                bucket_counts: vec![1, 2, 3],
                                explicit_bounds: vec![10.0, 100.0],
                                min: Some(1.5),
                                max: Some(400.0),
                                ..Default::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Delta as i32,
                        })),
                        ..Default::default()
                    },
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// (resource, scope, metric holding one data point) per data point, in a fixed order.
pub fn flatten_metrics(
    reqs: &[ExportMetricsServiceRequest],
) -> Vec<(Option<Resource>, Option<InstrumentationScope>, Metric)> {
    let mut out = Vec::new();
    for rm in reqs.iter().flat_map(|r| &r.resource_metrics) {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let one = |data: metric::Data| Metric {
                    data: Some(data),
                    ..m.clone()
                };
                let points: Vec<Metric> = match m.data.clone() {
                    Some(metric::Data::Sum(d)) => d
                        .data_points
                        .iter()
                        .map(|p| {
                            one(metric::Data::Sum(Sum {
                                data_points: vec![p.clone()],
                                ..d.clone()
                            }))
                        })
                        .collect(),
                    Some(metric::Data::Gauge(d)) => d
                        .data_points
                        .iter()
                        .map(|p| {
                            one(metric::Data::Gauge(Gauge {
                                data_points: vec![p.clone()],
                            }))
                        })
                        .collect(),
                    Some(metric::Data::Histogram(d)) => d
                        .data_points
                        .iter()
                        .map(|p| {
                            one(metric::Data::Histogram(Histogram {
                                data_points: vec![p.clone()],
                                ..d.clone()
                            }))
                        })
                        .collect(),
                    other => panic!("unexpected metric data {other:?}"),
                };
                for p in points {
                    out.push((rm.resource.clone(), sm.scope.clone(), p));
                }
            }
        }
    }
    out.sort_by_key(|(r, sc, m)| {
        (
            m.encode_to_vec(),
            r.as_ref().map(|r| r.encode_to_vec()),
            sc.as_ref().map(|s| s.encode_to_vec()),
        )
    });
    out
}

/// Log requests: records with bodies, severities, attributes and trace context.
pub fn logs_request(r: u64) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("logs-svc")), kv("host.name", s("h1"))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "interop".into(),
                    ..Default::default()
                }),
                log_records: (0..20u64)
                    .map(|i| LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000 + r * 1000 + i,
                        observed_time_unix_nano: 1_700_000_000_000_000_500 + r * 1000 + i,
                        severity_number: if i % 5 == 0 {
                            SeverityNumber::Error as i32
                        } else {
                            SeverityNumber::Info as i32
                        },
                        severity_text: if i % 5 == 0 { "ERROR" } else { "INFO" }.into(),
                        body: Some(AnyValue {
                            value: Some(s(&format!("record {r}-{i}: ünïcode \"quoted\""))),
                        }),
                        attributes: vec![
                            kv("seq", any_value::Value::IntValue((r * 20 + i) as i64)),
                            kv("ok", any_value::Value::BoolValue(i % 2 == 0)),
                        ],
                        trace_id: crate::gen::trace_id(9, r),
                        span_id: (r * 20 + i + 1).to_be_bytes().to_vec(),
                        flags: 1,
                        ..Default::default()
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// (resource, scope, record) per log record, in a fixed order.
pub fn flatten_logs(
    reqs: &[ExportLogsServiceRequest],
) -> Vec<(Option<Resource>, Option<InstrumentationScope>, LogRecord)> {
    let mut out: Vec<_> = reqs
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|rl| {
            rl.scope_logs.iter().flat_map(move |sl| {
                sl.log_records
                    .iter()
                    .map(move |lr| (rl.resource.clone(), sl.scope.clone(), lr.clone()))
            })
        })
        .collect();
    out.sort_by_key(|(_, _, lr)| lr.encode_to_vec());
    out
}

/// POSTs an OTLP/HTTP protobuf body to shardtel; it must be accepted.
pub fn post(st: &Shardtel, path: &str, body: Vec<u8>) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}{path}", st.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
}

/// shardtel's `kind` exporter (`otlp` or `otlphttp`, with `compression`) → the Collector's OTLP
/// receiver → its file exporter. Traces, metrics and logs sent to shardtel come out of the
/// Collector's files exactly once and unchanged (ids, names, attributes, resources, scopes,
/// values), after both processes stopped cleanly; the Collector counted them on the
/// transport `kind` uses.
fn shardtel_to_collector(test: &str, kind: &str, compression: &str) {
    let Some(bin) = otelcol_bin(test) else {
        return;
    };
    let mut collector = Otelcol::start(&bin, "otlp-to-file", &[]);
    let endpoint = match kind {
        "otlp" => format!("http://127.0.0.1:{}", collector.grpc),
        _ => format!("http://127.0.0.1:{}", collector.http),
    };
    let mut st = Shardtel::start_config(|c| {
        c.exporter(
            "collector",
            Component::of_type(kind)
                .set("endpoint", endpoint.as_str())
                .set("compression", compression)
                .batch(Batch::timeout(Duration::from_millis(50))),
        )
        .traces(Pipeline::otlp_to(&["collector"]))
        .metrics(Pipeline::otlp_to(&["collector"]))
        .logs(Pipeline::otlp_to(&["collector"]))
    });

    let traces: Vec<ExportTraceServiceRequest> = (0..30u64)
        .map(|r| request((0..40).map(|i| span(17, r * 40 + i % 8, i / 8)).collect()))
        .collect();
    let metrics: Vec<ExportMetricsServiceRequest> = (0..10).map(metrics_request).collect();
    let logs: Vec<ExportLogsServiceRequest> = (0..10).map(logs_request).collect();
    for req in &traces {
        st.post_traces(req);
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
        (1200, 60, 200)
    );

    let out = collector.out();
    let got = |out: &Path| {
        (
            flatten(&read_collector_file(out, "traces", Signal::Traces)),
            flatten_metrics(&read_collector_file(out, "metrics", Signal::Metrics)),
            flatten_logs(&read_collector_file(out, "logs", Signal::Logs)),
        )
    };
    let all_arrived = wait_until(30, || {
        let (t, m, l) = got(&out);
        t.len() >= expected_spans.len()
            && m.len() >= expected_points.len()
            && l.len() >= expected_records.len()
    });
    let (t, m, l) = got(&out);
    assert!(
        all_arrived,
        "the Collector wrote {} of {} spans, {} of {} data points, {} of {} log records; \
         shardtel log:\n{}\nCollector log:\n{}",
        t.len(),
        expected_spans.len(),
        m.len(),
        expected_points.len(),
        l.len(),
        expected_records.len(),
        st.log(),
        collector.log()
    );
    // shardtel counts them sent once, and the Collector received them on `kind`'s transport.
    let transport = if kind == "otlp" { "grpc" } else { "http" };
    assert!(
        wait_until(5, || st.metric_sum(
            "shardtel_exporter_sent_spans_total",
            "exporter=\"collector\""
        ) == expected_spans.len() as u64),
        "{}",
        st.metrics()
    );
    for (signal, n) in [
        ("spans", expected_spans.len()),
        ("metric_points", expected_points.len()),
        ("log_records", expected_records.len()),
    ] {
        let name = format!("otelcol_receiver_accepted_{signal}");
        assert_eq!(
            collector.metric_sum(&name, &format!("transport=\"{transport}\"")),
            n as u64,
            "{name} on {transport}"
        );
    }
    // After both stopped (shardtel drained, the Collector closed its files): exactly once,
    // unchanged.
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

/// `got` equals `expected`, item by item (both in the same fixed order); on failure names the
/// counts and the first item that differs instead of printing both lists whole.
pub fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], expected: &[T], what: &str) {
    if got == expected {
        return;
    }
    let first = got.iter().zip(expected).position(|(g, e)| g != e);
    match first {
        Some(i) => panic!(
            "{what}: {} arrived, {} sent; the first difference, at {i}:\narrived {:?}\nsent    {:?}",
            got.len(),
            expected.len(),
            got[i],
            expected[i]
        ),
        None => panic!(
            "{what}: {} arrived, {} sent (lost or repeated), the rest equal",
            got.len(),
            expected.len()
        ),
    }
}

#[test]
fn shardtel_otlp_grpc_exporter_to_collector() {
    shardtel_to_collector("shardtel_otlp_grpc_exporter_to_collector", "otlp", "zstd");
}

#[test]
fn shardtel_otlphttp_exporter_to_collector() {
    shardtel_to_collector(
        "shardtel_otlphttp_exporter_to_collector",
        "otlphttp",
        "gzip",
    );
}

// ---- the Collector → shardtel --------------------------------------------------------------

/// What the SDK sent: span id → (trace id, name, `seq` attribute).
type SentSpans = BTreeMap<String, (String, String, i64)>;

/// Traces from the OpenTelemetry SDK: `traces` traces of `per_trace` spans (a root and its
/// children), each span with a `seq` attribute.
fn sdk_traces(
    provider: &SdkTracerProvider,
    prefix: &str,
    traces: usize,
    per_trace: usize,
) -> SentSpans {
    let tracer = provider.tracer("interop");
    let mut sent = SentSpans::new();
    let mut seq = 0i64;
    for t in 0..traces {
        let mut root = tracer.start(format!("{prefix}-root-{t}"));
        root.set_attribute(SdkKeyValue::new("seq", seq));
        let root_name = format!("{prefix}-root-{t}");
        let root_seq = seq;
        seq += 1;
        let cx = opentelemetry::Context::current_with_span(root);
        for c in 1..per_trace {
            let name = format!("{prefix}-child-{t}-{c}");
            let mut child = tracer.start_with_context(name.clone(), &cx);
            child.set_attribute(SdkKeyValue::new("seq", seq));
            child.set_attribute(SdkKeyValue::new("user.id", format!("user-{c}")));
            let sc = child.span_context().clone();
            sent.insert(
                sc.span_id().to_string(),
                (sc.trace_id().to_string(), name, seq),
            );
            seq += 1;
            child.end();
        }
        let span = cx.span();
        let sc = span.span_context().clone();
        sent.insert(
            sc.span_id().to_string(),
            (sc.trace_id().to_string(), root_name, root_seq),
        );
        span.end();
    }
    sent
}

/// The spans shardtel's file exporter wrote whose name starts with `prefix`:
/// span id → every (trace id, name, `seq`) written for it (more than one = a duplicate).
fn arrived(st: &Shardtel, prefix: &str) -> BTreeMap<String, Vec<(String, String, i64)>> {
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for (_, req) in crate::harness::read_traces(&st.out()) {
        for sp in req
            .resource_spans
            .into_iter()
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .filter(|sp| sp.name.starts_with(prefix))
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
            out.entry(hex(&sp.span_id)).or_default().push((
                hex(&sp.trace_id),
                sp.name.clone(),
                seq,
            ));
        }
    }
    out
}

/// The OpenTelemetry SDK → the Collector (OTLP/gRPC and OTLP/HTTP receivers) → its `exporter`
/// (`otlp_grpc` or `otlp_http`) → shardtel's file exporter: every span once, with its trace
/// id, name and attributes; SDK metrics and logs arrive with their values. Checked again after
/// both processes stopped cleanly.
fn collector_to_shardtel(test: &str, exporter: &str) {
    let Some(bin) = otelcol_bin(test) else {
        return;
    };
    let mut st = Shardtel::start_config(|c| c.file_pipelines());
    let mut collector = Otelcol::start(
        &bin,
        "otlp-forward",
        &[
            ("OTELCOL_EXPORTER", exporter.to_string()),
            (
                "SHARDTEL_GRPC_ENDPOINT",
                format!("127.0.0.1:{}", st.ports.grpc),
            ),
            ("SHARDTEL_HTTP_URL", st.http_url()),
        ],
    );
    let resource = SdkResource::builder()
        .with_service_name("interop-sdk")
        .build();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Traces over OTLP/gRPC (tonic) into the Collector.
    let mut sent = rt.block_on(async {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://127.0.0.1:{}", collector.grpc))
            .build()
            .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(exporter)
            .build();
        let sent = sdk_traces(&provider, "grpc", 60, 5);
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
        sent
    });
    // Traces over OTLP/HTTP protobuf.
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("http://127.0.0.1:{}/v1/traces", collector.http))
            .build()
            .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(exporter)
            .build();
        sent.extend(sdk_traces(&provider, "http", 20, 4));
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    }
    assert_eq!(sent.len(), 60 * 5 + 20 * 4);
    // Logs and metrics over OTLP/HTTP.
    {
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("http://127.0.0.1:{}/v1/logs", collector.http))
            .build()
            .unwrap();
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(exporter)
            .build();
        let logger = provider.logger("interop");
        for i in 0..50i64 {
            let mut r = logger.create_log_record();
            r.set_body(LogValue::String(format!("log line {i}").into()));
            r.add_attribute("seq", i);
            logger.emit(r);
        }
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    }
    {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("http://127.0.0.1:{}/v1/metrics", collector.http))
            .build()
            .unwrap();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_periodic_exporter(exporter)
            .build();
        let meter = provider.meter("interop");
        let requests = meter.u64_counter("interop.requests").build();
        let latency = meter
            .f64_histogram("interop.latency")
            .with_boundaries(vec![10.0, 100.0])
            .build();
        let route = [SdkKeyValue::new("route", "/a")];
        requests.add(7, &route);
        requests.add(5, &route);
        for ms in [5.0, 50.0, 500.0] {
            latency.record(ms, &route);
        }
        // Shutdown exports once (cumulative temporality: a flush before it would send the
        // same totals twice).
        provider.shutdown().unwrap();
    }

    let check_spans = |st: &Shardtel| {
        let got = arrived(st, "");
        let twice: Vec<_> = got.iter().filter(|(_, v)| v.len() > 1).collect();
        assert!(twice.is_empty(), "spans written more than once: {twice:?}");
        let got: SentSpans = got.into_iter().map(|(k, mut v)| (k, v.remove(0))).collect();
        let got: Vec<_> = got.into_iter().collect();
        let sent: Vec<_> = sent.clone().into_iter().collect();
        assert_same(
            &got,
            &sent,
            "spans (span id, trace id, name, seq attribute)",
        );
    };
    let log_lines = |st: &Shardtel| -> Vec<String> {
        read_lines(&st.out(), "logs")
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
            .filter_map(|lr| match lr.body?.value? {
                any_value::Value::StringValue(s) => Some(s),
                _ => None,
            })
            .collect()
    };
    // (name, sum of the sum's points or the histogram's count) for each SDK metric.
    let metric_values = |st: &Shardtel| -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for m in read_lines(&st.out(), "metrics")
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
        {
            let v: f64 = match &m.data {
                Some(metric::Data::Sum(d)) => d
                    .data_points
                    .iter()
                    .map(|p| match p.value {
                        Some(number_data_point::Value::AsInt(v)) => v as f64,
                        Some(number_data_point::Value::AsDouble(v)) => v,
                        None => 0.0,
                    })
                    .sum(),
                Some(metric::Data::Histogram(d)) => {
                    d.data_points.iter().map(|p| p.count as f64).sum()
                }
                _ => continue,
            };
            *out.entry(m.name.clone()).or_insert(0.0) += v;
        }
        out
    };
    let expected_logs: Vec<String> = (0..50).map(|i| format!("log line {i}")).collect();
    let expected_metrics: BTreeMap<String, f64> = [
        ("interop.latency".to_string(), 3.0),
        ("interop.requests".to_string(), 12.0),
    ]
    .into();
    let all_arrived = wait_until(30, || {
        arrived(&st, "").len() >= sent.len()
            && log_lines(&st).len() >= expected_logs.len()
            && metric_values(&st).len() >= expected_metrics.len()
    });
    assert!(
        all_arrived,
        "{} of {} spans, {} of {} log records, metrics {:?} arrived at shardtel; \
         Collector log:\n{}\nshardtel log:\n{}",
        arrived(&st, "").len(),
        sent.len(),
        log_lines(&st).len(),
        expected_logs.len(),
        metric_values(&st),
        collector.log(),
        st.log()
    );
    check_spans(&st);
    // The Collector's exporter used the transport asked for.
    let transport = if exporter == "otlp_grpc" {
        "grpc"
    } else {
        "http"
    };
    assert!(
        wait_until(5, || st.metric_sum(
            "shardtel_receiver_accepted_spans_total",
            &format!("transport=\"{transport}\"")
        ) == sent.len() as u64),
        "shardtel accepted spans on other transports than {transport}:\n{}",
        st.metrics()
    );
    // After both stopped: nothing more arrived (no duplicate from a retry or a drain).
    collector.stop();
    assert_eq!(st.stop(), 0, "{}", st.log());
    check_spans(&st);
    let mut logs = log_lines(&st);
    logs.sort_by_key(|l| l.rsplit(' ').next().unwrap().parse::<u32>().unwrap());
    assert_eq!(logs, expected_logs, "log records lost, changed or repeated");
    assert_eq!(
        metric_values(&st),
        expected_metrics,
        "metric values changed or repeated"
    );
}

#[test]
fn collector_otlp_grpc_exporter_to_shardtel() {
    collector_to_shardtel("collector_otlp_grpc_exporter_to_shardtel", "otlp_grpc");
}

#[test]
fn collector_otlp_http_exporter_to_shardtel() {
    collector_to_shardtel("collector_otlp_http_exporter_to_shardtel", "otlp_http");
}

// ---- the build and the configurations ------------------------------------------------------

/// The Collector built from `tests/peers/otelcol/` has every component the tests and
/// benchmarks use (the Kafka receiver and exporter included, for the Kafka interop tests; the
/// transform processor and the spanmetrics connector, for `otelcol_processing.rs`), and every
/// configuration in `configs/` is valid for it.
#[test]
fn collector_has_its_components_and_every_config_validates() {
    let Some(bin) = otelcol_bin("collector_has_its_components_and_every_config_validates") else {
        return;
    };
    let out = Command::new(&bin).arg("components").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // `components` prints YAML: a section per kind, `- name: X` per component.
    let mut kinds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut kind = String::new();
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            kind = line.trim_end_matches(':').to_string();
        } else if let Some(name) = line.trim().strip_prefix("- name: ") {
            kinds
                .entry(kind.clone())
                .or_default()
                .push(name.to_string());
        }
    }
    for (kind, names) in [
        ("receivers", &["otlp", "kafka"][..]),
        (
            "processors",
            &[
                "batch",
                "memory_limiter",
                "attributes",
                "tail_sampling",
                "transform",
            ][..],
        ),
        (
            "exporters",
            &["otlp_grpc", "otlp_http", "file", "nop", "debug", "kafka"][..],
        ),
        // The spanmetrics connector's type is `span_metrics` (`spanmetrics` is its old name).
        ("connectors", &["span_metrics"][..]),
        ("extensions", &["file_storage"][..]),
    ] {
        for name in names {
            assert!(
                kinds.get(kind).is_some_and(|n| n.iter().any(|n| n == name)),
                "the Collector has no {kind} {name}; it has:\n{text}"
            );
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let mut configs: Vec<_> = std::fs::read_dir(CONFIGS)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    configs.sort();
    assert!(configs.len() >= 6, "{configs:?}");
    // The routing connector is only in the Collector's second build
    // (tests/peers/otelcol-routing, SHARDTEL_OTELCOL_ROUTING_BIN): its configs validate there.
    let routing_bin = std::env::var_os("SHARDTEL_OTELCOL_ROUTING_BIN").map(PathBuf::from);
    for config in configs {
        let routing = config
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("routing-"));
        let bin = match (routing, &routing_bin) {
            (false, _) => bin.clone(),
            (true, Some(b)) => b.clone(),
            (true, None) => {
                eprintln!(
                    "!!!!!!!! {} not validated: it needs the Collector's routing build \
                     (SHARDTEL_OTELCOL_ROUTING_BIN is not set) !!!!!!!!",
                    config.display()
                );
                continue;
            }
        };
        let out = Command::new(&bin)
            .arg("validate")
            .arg("--config")
            .arg(&config)
            .env(
                "OTELCOL_GRPC_ENDPOINT",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "OTELCOL_HTTP_ENDPOINT",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("OTELCOL_METRICS_PORT", free_port().to_string())
            .env(
                "OTELCOL_ZIPKIN_ENDPOINT",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "OTELCOL_JAEGER_GRPC_ENDPOINT",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "OTELCOL_JAEGER_THRIFT_ENDPOINT",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "OTELCOL_FLUENT_ENDPOINT",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("OTELCOL_OUT_DIR", dir.path())
            .env("OTELCOL_EXPORTER", "otlp_grpc")
            .env("SHARDTEL_GRPC_ENDPOINT", "127.0.0.1:4317")
            .env("SHARDTEL_HTTP_URL", "http://127.0.0.1:4318")
            .env("KAFKA_BROKER", "127.0.0.1:9092")
            .env("KAFKA_GROUP", "validate")
            .env("KAFKA_TRACES_TOPIC", "otlp_spans")
            .env("KAFKA_METRICS_TOPIC", "otlp_metrics")
            .env("KAFKA_LOGS_TOPIC", "otlp_logs")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
