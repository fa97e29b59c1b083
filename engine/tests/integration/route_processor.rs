//! The `routing` processor through the real process: traces from the OpenTelemetry SDK routed
//! after tail sampling (errors to one file exporter, the rest to another, `dev` traces to
//! both), every span in exactly the expected place; routing without a sampler, across cores,
//! with raw requests; log records from the SDK routed by severity and data points from the SDK
//! routed by metric name and attribute; and metrics routed while they are also split by series
//! (a `prometheusremotewrite` exporter in the pipeline).

use std::collections::BTreeMap;
use std::path::Path;

use opentelemetry::logs::{AnyValue as LogValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use prost::Message;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::common::v1::any_value::Value;
use shardtel_protocol::proto::common::v1::KeyValue as PbKeyValue;
use shardtel_protocol::proto::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use shardtel_protocol::proto::resource::v1::Resource as PbResource;
use shardtel_protocol::proto::trace::v1::Span;
use shardtel_protocol::Signal;

use crate::gen::{kv, request, s, span};
use crate::harness::{read_lines, spans_in, wait_until, Shardtel};
use crate::test_config::{millis, Batch, Component, Pipeline, TailSampling};

fn attr<'a>(sp: &'a Span, key: &str) -> Option<&'a Value> {
    sp.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn string_attr(sp: &Span, key: &str) -> String {
    match attr(sp, key) {
        Some(Value::StringValue(v)) => v.clone(),
        other => panic!("{key} is {other:?} in {sp:?}"),
    }
}

/// `(case, trace number, span name)` of every span under `dir`, counted.
fn tally(dir: &Path) -> BTreeMap<(String, i64, String), usize> {
    let mut out = BTreeMap::new();
    for sp in spans_in(dir) {
        let n = match attr(&sp, "n") {
            Some(Value::IntValue(n)) => *n,
            other => panic!("n is {other:?}"),
        };
        *out.entry((string_attr(&sp, "case"), n, sp.name.clone()))
            .or_insert(0) += 1;
    }
    out
}

const TRACES: i64 = 30;
const DEV_TRACES: i64 = 10;

#[test]
fn errors_go_to_one_exporter_and_the_rest_to_another_after_tail_sampling() {
    let mut errors_dir = None;
    let mut main_dir = None;
    let st = Shardtel::start_config(|c| {
        let out = c.out_dir();
        errors_dir = Some(out.join("errors"));
        main_dir = Some(out.join("main"));
        let file = |dir: &str| {
            Component::file(out.join(dir).join("traces.jsonl")).batch(Batch::timeout(millis(50)))
        };
        c.exporter("errors_store", file("errors"))
            .exporter("main_store", file("main"))
            .processor("tail_sampling", TailSampling::keep_all(millis(2000)))
            .processor(
                "route",
                Component::routing(
                    &["main_store"],
                    &[
                        ("trace.has_error", &["errors_store"]),
                        (
                            r#"resource.attributes["deployment.environment"] == "dev""#,
                            &["errors_store", "main_store"],
                        ),
                    ],
                ),
            )
            .traces(
                Pipeline::otlp_to(&["errors_store", "main_store"])
                    .processors(&["tail_sampling", "route"]),
            )
    });
    let (errors_dir, main_dir) = (errors_dir.unwrap(), main_dir.unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Each trace: a root and two children, in separate export requests often enough (the SDK's
    // batch exporter cuts by time and size); in the "error" case only the second child fails,
    // so only the whole trace can tell.
    rt.block_on(async {
        for (env, traces) in [("prod", TRACES), ("dev", DEV_TRACES)] {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(st.grpc_url())
                .build()
                .unwrap();
            let resource = Resource::builder()
                .with_service_name("shop")
                .with_attribute(KeyValue::new("deployment.environment", env))
                .build();
            let provider = SdkTracerProvider::builder()
                .with_resource(resource)
                .with_batch_exporter(exporter)
                .build();
            let tracer = provider.tracer("routing-test");
            for n in 0..traces {
                let case = match (env, n % 3) {
                    ("dev", _) => "dev",
                    (_, 0) => "error",
                    _ => "plain",
                };
                let mut root = tracer.start("root");
                root.set_attribute(KeyValue::new("case", case));
                root.set_attribute(KeyValue::new("n", n));
                let cx = Context::current_with_span(root);
                for child in ["a", "b"] {
                    let mut sp = tracer.start_with_context(child.to_string(), &cx);
                    sp.set_attribute(KeyValue::new("case", case));
                    sp.set_attribute(KeyValue::new("n", n));
                    if case == "error" && child == "b" {
                        sp.set_status(Status::error("payment declined"));
                    }
                    sp.end();
                    if n % 2 == 0 {
                        // Split some traces over export requests.
                        provider.force_flush().unwrap();
                    }
                }
                cx.span().end();
            }
            provider.force_flush().unwrap();
            provider.shutdown().unwrap();
        }
    });
    let expected = |cases: &[&str]| -> BTreeMap<(String, i64, String), usize> {
        let mut m = BTreeMap::new();
        let mut add = |case: &str, n: i64| {
            if cases.contains(&case) {
                for name in ["root", "a", "b"] {
                    m.insert((case.to_string(), n, name.to_string()), 1);
                }
            }
        };
        for n in 0..DEV_TRACES {
            add("dev", n);
        }
        for n in 0..TRACES {
            add(if n % 3 == 0 { "error" } else { "plain" }, n);
        }
        m
    };
    let want_errors = expected(&["error", "dev"]);
    let want_main = expected(&["plain", "dev"]);
    let total = |m: &BTreeMap<_, usize>| m.values().sum::<usize>();
    assert!(
        wait_until(30, || total(&tally(&errors_dir)) >= total(&want_errors)
            && total(&tally(&main_dir)) >= total(&want_main)),
        "spans missing: errors {} of {}, main {} of {}; log:\n{}",
        total(&tally(&errors_dir)),
        total(&want_errors),
        total(&tally(&main_dir)),
        total(&want_main),
        st.log()
    );
    // Nothing more arrives late.
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(tally(&errors_dir), want_errors);
    assert_eq!(tally(&main_dir), want_main);
    // The route counters add up to the spans routed (dev spans counted once, by their route).
    // (Published once a second.)
    let routed = || st.metric_sum("shardtel_routing_items_total", "processor=\"route\"");
    assert!(
        wait_until(10, || routed() == (3 * (TRACES + DEV_TRACES)) as u64),
        "routed {}",
        routed()
    );
    let default = st.metric_sum("shardtel_routing_items_total", "route=\"default\"");
    assert_eq!(
        default,
        3 * (0..TRACES).filter(|n| n % 3 != 0).count() as u64
    );
}

#[test]
fn without_a_sampler_each_trace_of_a_request_goes_to_its_route_on_its_owner_core() {
    let mut dirs = None;
    let st = Shardtel::start_config(|c| {
        let out = c.out_dir();
        dirs = Some((out.join("slow"), out.join("rest")));
        let file = |dir: &str| {
            Component::file(out.join(dir).join("traces.jsonl")).batch(Batch::timeout(millis(50)))
        };
        c.exporter("slow_store", file("slow"))
            .exporter("rest_store", file("rest"))
            .processor(
                "route",
                Component::routing(
                    &["rest_store"],
                    &[(r#"attributes["slow"] == true"#, &["slow_store"])],
                ),
            )
            .traces(Pipeline::otlp_to(&["slow_store", "rest_store"]).processors(&["route"]))
    });
    let (slow_dir, rest_dir) = dirs.unwrap();
    // 40 traces of 4 spans, in one request, spread over the cores by trace ID; in every 4th
    // trace only span 2 is slow, and the whole trace follows it.
    let traces = 40u64;
    let mut spans = Vec::new();
    for t in 0..traces {
        for i in 0..4 {
            let mut sp = span(9, t, i);
            sp.attributes.push(kv("t", s(&t.to_string())));
            if t % 4 == 0 && i == 2 {
                sp.attributes.push(kv("slow", Value::BoolValue(true)));
            }
            spans.push(sp);
        }
    }
    st.post_traces(&request(spans));
    let trace_of = |sp: &Span| string_attr(sp, "t").parse::<u64>().unwrap();
    let want = |slow: bool| -> Vec<u64> {
        let mut v: Vec<u64> = (0..traces)
            .filter(|t| (t % 4 == 0) == slow)
            .flat_map(|t| [t; 4])
            .collect();
        v.sort();
        v
    };
    let got = |dir: &Path| -> Vec<u64> {
        let mut v: Vec<u64> = spans_in(dir).iter().map(trace_of).collect();
        v.sort();
        v
    };
    assert!(
        wait_until(20, || got(&slow_dir).len() + got(&rest_dir).len()
            >= (traces * 4) as usize),
        "spans missing; log:\n{}",
        st.log()
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(got(&slow_dir), want(true));
    assert_eq!(got(&rest_dir), want(false));
}

fn value_of<'a>(attrs: &'a [PbKeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// The `n` attribute of every log record the file exporters wrote under `dir`, counted.
fn log_records_in(dir: &Path) -> BTreeMap<i64, usize> {
    let mut out = BTreeMap::new();
    for (_, line) in read_lines(dir, "logs") {
        let pb = shardtel_protocol::json::to_protobuf(Signal::Logs, line.as_bytes()).unwrap();
        let req = ExportLogsServiceRequest::decode(pb.as_ref()).unwrap();
        for record in req
            .resource_logs
            .into_iter()
            .flat_map(|r| r.scope_logs)
            .flat_map(|s| s.log_records)
        {
            let Some(Value::IntValue(n)) = value_of(&record.attributes, "n") else {
                panic!("n missing in {record:?}")
            };
            *out.entry(*n).or_insert(0) += 1;
        }
    }
    out
}

/// `(service, metric, tenant)` of every data point the file exporters wrote under `dir`,
/// counted, with the points' values (the same for every copy of a point).
fn points_in(dir: &Path) -> BTreeMap<(String, String, String), (usize, i64)> {
    let mut out: BTreeMap<_, (usize, i64)> = BTreeMap::new();
    for (_, line) in read_lines(dir, "metrics") {
        let pb = shardtel_protocol::json::to_protobuf(Signal::Metrics, line.as_bytes()).unwrap();
        let req = ExportMetricsServiceRequest::decode(pb.as_ref()).unwrap();
        for rm in req.resource_metrics {
            let resource = rm.resource.unwrap_or_default();
            let service = match value_of(&resource.attributes, "service.name") {
                Some(Value::StringValue(v)) => v.clone(),
                _ => String::new(),
            };
            for m in rm.scope_metrics.into_iter().flat_map(|s| s.metrics) {
                let points: Vec<(Vec<PbKeyValue>, i64)> = match m.data {
                    Some(metric::Data::Sum(sum)) => sum
                        .data_points
                        .into_iter()
                        .map(|p| (p.attributes, number(p.value)))
                        .collect(),
                    Some(metric::Data::Gauge(g)) => g
                        .data_points
                        .into_iter()
                        .map(|p| (p.attributes, number(p.value)))
                        .collect(),
                    Some(metric::Data::Histogram(h)) => h
                        .data_points
                        .into_iter()
                        .map(|p| (p.attributes, p.count as i64))
                        .collect(),
                    other => panic!("unexpected data {other:?}"),
                };
                for (attrs, v) in points {
                    let tenant = match value_of(&attrs, "tenant") {
                        Some(Value::StringValue(t)) => t.clone(),
                        other => panic!("tenant is {other:?}"),
                    };
                    let e = out
                        .entry((service.clone(), m.name.clone(), tenant))
                        .or_insert((0, v));
                    e.0 += 1;
                    assert_eq!(e.1, v, "two copies of a point with different values");
                }
            }
        }
    }
    out
}

fn number(v: Option<number_data_point::Value>) -> i64 {
    match v {
        Some(number_data_point::Value::AsInt(i)) => i,
        Some(number_data_point::Value::AsDouble(d)) => d as i64,
        None => panic!("a point without a value"),
    }
}

const LOG_RECORDS: i64 = 60;

/// Severity of log record `n`: a cycle through INFO, WARN, ERROR, FATAL, DEBUG, ERROR2.
fn severity_of(n: i64) -> opentelemetry::logs::Severity {
    use opentelemetry::logs::Severity::*;
    [Info, Warn, Error, Fatal, Debug, Error2][(n % 6) as usize]
}

#[test]
fn logs_by_severity_and_metric_points_by_name_and_attribute_land_in_their_file() {
    let mut dirs = None;
    let st = Shardtel::start_config(|c| {
        let out = c.out_dir();
        dirs = Some([
            out.join("errors"),
            out.join("main"),
            out.join("orders"),
            out.join("rest"),
        ]);
        let file = |dir: &str, stem: &str| {
            Component::file(out.join(dir).join(format!("{stem}.jsonl")))
                .batch(Batch::timeout(millis(50)))
        };
        c.exporter("errors_logs", file("errors", "logs"))
            .exporter("main_logs", file("main", "logs"))
            .exporter("orders_metrics", file("orders", "metrics"))
            .exporter("rest_metrics", file("rest", "metrics"))
            .processor(
                "by_severity",
                Component::routing(
                    &["main_logs"],
                    &[
                        ("severity_number >= SEVERITY_NUMBER_ERROR", &["errors_logs"]),
                        (
                            r#"attributes["audit"] == true"#,
                            &["errors_logs", "main_logs"],
                        ),
                    ],
                ),
            )
            .processor(
                "by_name",
                Component::routing(
                    &["rest_metrics"],
                    &[
                        (r#"metric.name == "orders""#, &["orders_metrics"]),
                        (
                            r#"attributes["tenant"] == "vip""#,
                            &["orders_metrics", "rest_metrics"],
                        ),
                    ],
                ),
            )
            .logs(Pipeline::otlp_to(&["errors_logs", "main_logs"]).processors(&["by_severity"]))
            .metrics(
                Pipeline::otlp_to(&["orders_metrics", "rest_metrics"]).processors(&["by_name"]),
            )
    });
    let [errors_dir, main_dir, orders_dir, rest_dir] = dirs.unwrap();
    let resource = Resource::builder().with_service_name("shop").build();
    // Log records from the SDK over OTLP/HTTP, several to a request (batch exporter).
    {
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/logs", st.http_url()))
            .build()
            .unwrap();
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(exporter)
            .build();
        let logger = provider.logger("routing-test");
        for n in 0..LOG_RECORDS {
            let mut r = logger.create_log_record();
            r.set_body(LogValue::String(format!("record {n}").into()));
            r.set_severity_number(severity_of(n));
            r.add_attribute("n", n);
            if n % 5 == 0 {
                r.add_attribute("audit", true);
            }
            logger.emit(r);
            if n % 20 == 19 {
                provider.force_flush().unwrap();
            }
        }
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    }
    // Data points from the SDK over OTLP/HTTP: `requests` has points of both routes.
    {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/metrics", st.http_url()))
            .build()
            .unwrap();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_periodic_exporter(exporter)
            .build();
        let meter = provider.meter("routing-test");
        let orders = meter.u64_counter("orders").build();
        let requests = meter.u64_counter("requests").build();
        let latency = meter
            .f64_histogram("latency")
            .with_boundaries(vec![10.0, 100.0])
            .build();
        let tenant = |t: &'static str| [KeyValue::new("tenant", t)];
        orders.add(3, &tenant("a"));
        orders.add(4, &tenant("vip"));
        requests.add(10, &tenant("vip"));
        requests.add(11, &tenant("x"));
        requests.add(12, &tenant("y"));
        for ms in [5.0, 50.0] {
            latency.record(ms, &tenant("x"));
        }
        // Shutdown exports once (cumulative totals: a flush before it would send them twice).
        provider.shutdown().unwrap();
    }
    let is_error = |n: i64| severity_of(n) as i32 >= 17;
    let want_errors: BTreeMap<i64, usize> = (0..LOG_RECORDS)
        .filter(|n| is_error(*n) || n % 5 == 0)
        .map(|n| (n, 1))
        .collect();
    let want_main: BTreeMap<i64, usize> = (0..LOG_RECORDS)
        .filter(|n| !is_error(*n))
        .map(|n| (n, 1))
        .collect();
    let point = |name: &str, tenant: &str, v: i64| {
        (
            ("shop".to_string(), name.to_string(), tenant.to_string()),
            (1usize, v),
        )
    };
    let want_orders: BTreeMap<_, _> = [
        point("orders", "a", 3),
        point("orders", "vip", 4),
        point("requests", "vip", 10),
    ]
    .into();
    let want_rest: BTreeMap<_, _> = [
        point("requests", "vip", 10),
        point("requests", "x", 11),
        point("requests", "y", 12),
        point("latency", "x", 2),
    ]
    .into();
    let count = |m: &BTreeMap<i64, usize>| m.values().sum::<usize>();
    let points = |m: &BTreeMap<(String, String, String), (usize, i64)>| {
        m.values().map(|(n, _)| n).sum::<usize>()
    };
    assert!(
        wait_until(30, || count(&log_records_in(&errors_dir))
            >= count(&want_errors)
            && count(&log_records_in(&main_dir)) >= count(&want_main)
            && points(&points_in(&orders_dir)) >= want_orders.len()
            && points(&points_in(&rest_dir)) >= want_rest.len()),
        "items missing: logs {} and {}, points {} and {}; log:\n{}",
        count(&log_records_in(&errors_dir)),
        count(&log_records_in(&main_dir)),
        points(&points_in(&orders_dir)),
        points(&points_in(&rest_dir)),
        st.log()
    );
    // Nothing more arrives late: every item once, in exactly the expected files.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(log_records_in(&errors_dir), want_errors);
    assert_eq!(log_records_in(&main_dir), want_main);
    assert_eq!(points_in(&orders_dir), want_orders);
    assert_eq!(points_in(&rest_dir), want_rest);
    // The route counters count log records and data points (published once a second).
    let routed = |filter: &str| st.metric_sum("shardtel_routing_items_total", filter);
    assert!(
        wait_until(10, || routed("processor=\"by_name\"") == 6
            && routed("processor=\"by_severity\"") == LOG_RECORDS as u64),
        "routed {} points, {} records",
        routed("processor=\"by_name\""),
        routed("processor=\"by_severity\"")
    );
    let errors = (0..LOG_RECORDS).filter(|n| is_error(*n)).count() as u64;
    let audit_only = (0..LOG_RECORDS)
        .filter(|n| !is_error(*n) && n % 5 == 0)
        .count() as u64;
    for (filter, want) in [
        (
            "processor=\"by_severity\",signal=\"logs\",route=\"0\"",
            errors,
        ),
        (
            "processor=\"by_severity\",signal=\"logs\",route=\"1\"",
            audit_only,
        ),
        (
            "processor=\"by_severity\",signal=\"logs\",route=\"default\"",
            LOG_RECORDS as u64 - errors - audit_only,
        ),
        ("processor=\"by_name\",signal=\"metrics\",route=\"0\"", 2),
        ("processor=\"by_name\",signal=\"metrics\",route=\"1\"", 1),
        (
            "processor=\"by_name\",signal=\"metrics\",route=\"default\"",
            3,
        ),
    ] {
        assert_eq!(routed(filter), want, "{filter}");
    }
}

/// With a `prometheusremotewrite` exporter in the metrics pipeline, metrics are split by series
/// owner core too: each destination's piece is split and sent to the owner cores, and every
/// point still lands once in its route's file. (The remote-write exporter, which turns the
/// series split on, gets no route here: its endpoint does not exist.)
#[test]
fn metrics_routed_and_split_by_series_land_once_in_their_file() {
    let mut dirs = None;
    let st = Shardtel::start_config(|c| {
        let out = c.out_dir();
        dirs = Some((out.join("vip"), out.join("rest")));
        let file = |dir: &str| {
            Component::file(out.join(dir).join("metrics.jsonl")).batch(Batch::timeout(millis(50)))
        };
        c.exporter("vip_metrics", file("vip"))
            .exporter("rest_metrics", file("rest"))
            .exporter(
                "prometheus",
                Component::prometheus_remote_write("http://127.0.0.1:9/api/v1/write"),
            )
            .processor(
                "by_tenant",
                Component::routing(
                    &["rest_metrics"],
                    &[(r#"attributes["tenant"] == "vip""#, &["vip_metrics"])],
                ),
            )
            .metrics(
                Pipeline::otlp_to(&["vip_metrics", "rest_metrics", "prometheus"])
                    .processors(&["by_tenant"]),
            )
    });
    let (vip_dir, rest_dir) = dirs.unwrap();
    // Requests of 8 services (owners spread over the cores), each with metrics whose points
    // are all vip, none vip, or mixed; one request where every point is vip (passed on whole).
    let gauge = |name: &str, tenants: &[&str], base: i64| Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: tenants
                .iter()
                .enumerate()
                .map(|(i, t)| NumberDataPoint {
                    attributes: vec![kv("tenant", s(t))],
                    value: Some(number_data_point::Value::AsInt(base + i as i64)),
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    };
    let resource = |service: &str, metrics: Vec<Metric>| ResourceMetrics {
        resource: Some(PbResource {
            attributes: vec![kv("service.name", s(service))],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            metrics,
            ..Default::default()
        }],
        schema_url: String::new(),
    };
    let mut want_vip = BTreeMap::new();
    let mut want_rest = BTreeMap::new();
    for r in 0..4 {
        let mut resources = Vec::new();
        for k in 0..2 {
            let service = format!("svc{r}{k}");
            let metrics = vec![
                gauge("all_vip", &["vip"], 100),
                gauge("none_vip", &["x", "y"], 200),
                gauge("mixed", &["x", "vip", "y"], 300),
            ];
            for m in &metrics {
                let Some(metric::Data::Gauge(g)) = &m.data else {
                    unreachable!()
                };
                for p in &g.data_points {
                    let Some(Value::StringValue(t)) = value_of(&p.attributes, "tenant") else {
                        unreachable!()
                    };
                    let key = (service.clone(), m.name.clone(), t.clone());
                    let want = if t == "vip" {
                        &mut want_vip
                    } else {
                        &mut want_rest
                    };
                    want.insert(key, (1usize, number(p.value)));
                }
            }
            resources.push(resource(&service, metrics));
        }
        let req = ExportMetricsServiceRequest {
            resource_metrics: resources,
        };
        st.post_accepted(Signal::Metrics, req.encode_to_vec());
    }
    let whole = ExportMetricsServiceRequest {
        resource_metrics: vec![resource(
            "whole",
            vec![
                gauge("only_vip", &["vip"], 7),
                gauge("also_vip", &["vip"], 8),
            ],
        )],
    };
    for (name, v) in [("only_vip", 7), ("also_vip", 8)] {
        want_vip.insert(("whole".into(), name.into(), "vip".into()), (1usize, v));
    }
    st.post_accepted(Signal::Metrics, whole.encode_to_vec());
    let total = |m: &BTreeMap<(String, String, String), (usize, i64)>| {
        m.values().map(|(n, _)| n).sum::<usize>()
    };
    assert!(
        wait_until(30, || total(&points_in(&vip_dir)) >= total(&want_vip)
            && total(&points_in(&rest_dir)) >= total(&want_rest)),
        "points missing: vip {} of {}, rest {} of {}; log:\n{}",
        total(&points_in(&vip_dir)),
        total(&want_vip),
        total(&points_in(&rest_dir)),
        total(&want_rest),
        st.log()
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(points_in(&vip_dir), want_vip);
    assert_eq!(points_in(&rest_dir), want_rest);
}
