//! The same routing through shardtel's `routing` processor and through the OpenTelemetry
//! Collector's routing connector, compared item by item (issue 20): traces by a resource
//! attribute, by errors and by a span attribute; log records by severity, a record attribute
//! and the resource, with every record also copied to an archive; data points by metric name and
//! by a point attribute. Each route writes its own file on both sides.
//!
//! The Collector's routes are `tests/peers/otelcol/configs/routing-to-file.yaml`, run on the
//! routing build of the Collector (`tests/peers/otelcol-routing`, `SHARDTEL_OTELCOL_ROUTING_BIN`:
//! the Go module proxy serves no routing connector at the main peer's contrib v0.165.0). The test
//! reads the Collector's routing tables back (`print-config`) and checks them against the pairs
//! below, so that neither side changes unnoticed. Identical OTLP/HTTP requests go to both; which
//! file each span, log record and data point lands in is compared, and the items themselves
//! must arrive unchanged. Where the two route differently (traces: the Collector decides per
//! span or per resource, shardtel per trace), the test computes each side's documented rule,
//! requires each side to follow its own, and requires the differences to be exactly the spans
//! docs/processors.md ("Compared with the Collector" under `routing`) says.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use prost::Message;
use serde_json::Value as Json;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::proto::common::v1::any_value::Value;
use shardtel_protocol::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use shardtel_protocol::proto::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::proto::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use shardtel_protocol::Signal;

use crate::gen::{flatten, kv, s, span, Flat};
use crate::harness::{read_lines, wait_until, Shardtel};
use crate::otelcol::{hex, read_collector_file, Otelcol};
use crate::otelcol_processing::{collector_config, post_collector};
use crate::test_config::{millis, Batch, Component, Pipeline};

/// The Collector with the routing connector, from `SHARDTEL_OTELCOL_ROUTING_BIN`. `None` only
/// when it is missing and `SHARDTEL_OTELCOL_OPTIONAL=1` (after a loud message).
fn routing_bin(test: &str) -> Option<PathBuf> {
    let bin = std::env::var_os("SHARDTEL_OTELCOL_ROUTING_BIN").map(PathBuf::from);
    if let Some(bin) = bin.filter(|b| b.is_file()) {
        return Some(bin);
    }
    if std::env::var("SHARDTEL_OTELCOL_OPTIONAL").as_deref() == Ok("1") {
        eprintln!(
            "\n!!!!!!!! SKIPPED {test}: no OpenTelemetry Collector routing build in \
             SHARDTEL_OTELCOL_ROUTING_BIN (SHARDTEL_OTELCOL_OPTIONAL=1) !!!!!!!!\n"
        );
        return None;
    }
    panic!(
        "no OpenTelemetry Collector routing build: SHARDTEL_OTELCOL_ROUTING_BIN is {:?}. Run \
         ./test.sh (it builds one), or export \
         SHARDTEL_OTELCOL_ROUTING_BIN=\"$(tests/peers/otelcol-routing/build.sh)\"; \
         SHARDTEL_OTELCOL_OPTIONAL=1 skips these tests",
        std::env::var_os("SHARDTEL_OTELCOL_ROUTING_BIN")
    );
}

/// One route of the comparison: the Collector's table entry (context, condition, action) and
/// its pipeline's destination, beside shardtel's condition for the same destination.
struct RoutePair {
    context: &'static str,
    collector: &'static str,
    action: &'static str,
    dest: &'static str,
    shardtel: &'static str,
}

const TRACE_ROUTES: [RoutePair; 3] = [
    RoutePair {
        context: "resource",
        collector: r#"attributes["deployment.environment"] == "dev""#,
        action: "move",
        dest: "dev",
        shardtel: r#"resource.attributes["deployment.environment"] == "dev""#,
    },
    RoutePair {
        context: "span",
        collector: "status.code == STATUS_CODE_ERROR",
        action: "move",
        dest: "errors",
        shardtel: "trace.has_error",
    },
    RoutePair {
        context: "span",
        collector: r#"attributes["http.route"] == "/checkout""#,
        action: "move",
        dest: "checkout",
        shardtel: r#"attributes["http.route"] == "/checkout""#,
    },
];

/// The archive route is the Collector's `copy` of everything; shardtel has no `copy`, so the
/// archive is one more exporter of each of its routes and of its default (`shardtel` unused).
const LOG_ROUTES: [RoutePair; 4] = [
    RoutePair {
        context: "resource",
        collector: "true",
        action: "copy",
        dest: "archive",
        shardtel: "",
    },
    RoutePair {
        context: "log",
        collector: "severity_number >= SEVERITY_NUMBER_ERROR",
        action: "move",
        dest: "errors",
        shardtel: "severity_number >= SEVERITY_NUMBER_ERROR",
    },
    RoutePair {
        context: "log",
        collector: r#"attributes["tenant"] == "acme""#,
        action: "move",
        dest: "acme",
        shardtel: r#"attributes["tenant"] == "acme""#,
    },
    RoutePair {
        context: "resource",
        collector: r#"attributes["service.name"] == "audit""#,
        action: "move",
        dest: "audit",
        shardtel: r#"resource.attributes["service.name"] == "audit""#,
    },
];

const METRIC_ROUTES: [RoutePair; 2] = [
    RoutePair {
        context: "metric",
        collector: r#"IsMatch(name, "^debug\\.")"#,
        action: "move",
        dest: "debug",
        shardtel: r#"IsMatch(metric.name, "^debug\\.")"#,
    },
    RoutePair {
        context: "datapoint",
        collector: r#"attributes["tenant"] == "acme""#,
        action: "move",
        dest: "acme",
        shardtel: r#"attributes["tenant"] == "acme""#,
    },
];

/// The Collector's `routing/<signal>` table as it parsed it must be `routes`, with
/// `<signal>/default` as the default pipeline.
fn check_table(config: &Json, signal: &str, routes: &[RoutePair]) {
    let c = &config["connectors"][format!("routing/{signal}")];
    assert_eq!(
        c["default_pipelines"],
        serde_json::json!([format!("{signal}/default")])
    );
    assert_eq!(c["error_mode"], "propagate");
    let table = c["table"].as_array().unwrap();
    assert_eq!(table.len(), routes.len(), "routing/{signal}: {c}");
    for (t, r) in table.iter().zip(routes) {
        let action = t["action"]
            .as_str()
            .filter(|a| !a.is_empty())
            .unwrap_or("move");
        assert_eq!(
            (
                t["context"].as_str().unwrap(),
                t["condition"].as_str().unwrap(),
                action
            ),
            (r.context, r.collector, r.action),
            "routing/{signal}: {t}"
        );
        assert!(t["statement"].as_str().unwrap_or("").is_empty(), "{t}");
        assert_eq!(
            t["pipelines"],
            serde_json::json!([format!("{signal}/{}", r.dest)])
        );
    }
}

/// Destinations of `signal`, the default last.
fn dests(routes: &[RoutePair]) -> Vec<&'static str> {
    routes.iter().map(|r| r.dest).chain(["default"]).collect()
}

/// shardtel: a file exporter `<signal>_<dest>` per destination, writing under `out/<signal>_<dest>/`.
fn exporter_name(signal: &str, dest: &str) -> String {
    format!("{signal}_{dest}")
}

/// What one side wrote for `signal` to each destination: `(dest, request)`.
fn shardtel_requests<T: Message + Default>(
    st: &Shardtel,
    signal: Signal,
    dests: &[&'static str],
) -> Vec<(&'static str, T)> {
    let mut out = Vec::new();
    for dest in dests {
        let dir = st.out().join(exporter_name(&signal.to_string(), dest));
        for (_, line) in read_lines(&dir, &signal.to_string()) {
            let pb = shardtel_protocol::json::to_protobuf(signal, line.as_bytes()).unwrap();
            out.push((*dest, T::decode(pb.as_ref()).unwrap()));
        }
    }
    out
}

fn collector_requests<T: Message + Default>(
    out: &Path,
    signal: Signal,
    dests: &[&'static str],
) -> Vec<(&'static str, T)> {
    dests
        .iter()
        .flat_map(|dest| {
            read_collector_file::<T>(out, &exporter_name(&signal.to_string(), dest), signal)
                .into_iter()
                .map(move |r| (*dest, r))
        })
        .collect()
}

// ---- traces ------------------------------------------------------------------------------

const TRACE_REQUESTS: u64 = 4;
const TRACES_PER_REQUEST: u64 = 16;
const SPANS_PER_TRACE: u64 = 3;

/// The case of trace `t` (`t % 8`), each built to show one rule:
/// 0 nothing matches; 1 a dev resource; 2 the second child fails; 3 only the root is on
/// `/checkout`; 4 every span is on `/checkout`; 5 the first child comes from a dev resource,
/// the other spans from prod; 6 every span on `/checkout` and the first child fails; 7 a dev
/// resource and a failing child.
fn case(t: u64) -> u64 {
    t % 8
}

/// Whether span `i` of trace `t` comes from the `dev` resource.
fn from_dev(t: u64, i: u64) -> bool {
    matches!(case(t), 1 | 7) || (case(t) == 5 && i == 1)
}

fn trace_span(t: u64, i: u64) -> Span {
    let mut sp = span(43, t, i);
    let route = match (case(t), i) {
        (3, 0) | (4 | 6, _) => "/checkout".to_string(),
        _ => format!("/api/{t}"),
    };
    for a in &mut sp.attributes {
        if a.key == "http.route" {
            a.value = Some(AnyValue {
                value: Some(s(&route)),
            });
        }
    }
    let error = matches!((case(t), i), (2, 2) | (6 | 7, 1));
    sp.status = Some(Status {
        code: if error {
            status::StatusCode::Error as i32
        } else {
            status::StatusCode::Unset as i32
        },
        message: if error {
            "declined".into()
        } else {
            String::new()
        },
    });
    sp
}

/// Request `r`: `TRACES_PER_REQUEST` whole traces, their spans in a `prod` and a `dev`
/// resource (service `shop` in both).
fn trace_request(r: u64) -> ExportTraceServiceRequest {
    let mut groups: [Vec<Span>; 2] = [Vec::new(), Vec::new()];
    for t in r * TRACES_PER_REQUEST..(r + 1) * TRACES_PER_REQUEST {
        for i in 0..SPANS_PER_TRACE {
            groups[from_dev(t, i) as usize].push(trace_span(t, i));
        }
    }
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .zip(["prod", "dev"])
            .map(|(spans, env)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s("shop")),
                        kv("deployment.environment", s(env)),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "routing-test".into(),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn is_error(sp: &Span) -> bool {
    sp.status.as_ref().map(|s| s.code) == Some(status::StatusCode::Error as i32)
}

fn on_checkout(sp: &Span) -> bool {
    sp.attributes.iter().any(|a| {
        a.key == "http.route"
            && a.value.as_ref().and_then(|v| v.value.as_ref()) == Some(&s("/checkout"))
    })
}

/// The Collector's rule: each span on its own, the first route it matches (the resource route
/// by its resource, the span routes by the span), else the default.
fn collector_dest(t: u64, i: u64) -> &'static str {
    let sp = trace_span(t, i);
    if from_dev(t, i) {
        "dev"
    } else if is_error(&sp) {
        "errors"
    } else if on_checkout(&sp) {
        "checkout"
    } else {
        "default"
    }
}

/// shardtel's rule: the whole trace, the first route whose condition holds for any of its
/// spans, else the default.
fn shardtel_dest(t: u64) -> &'static str {
    let spans: Vec<(u64, Span)> = (0..SPANS_PER_TRACE)
        .map(|i| (i, trace_span(t, i)))
        .collect();
    if spans.iter().any(|(i, _)| from_dev(t, *i)) {
        "dev"
    } else if spans.iter().any(|(_, sp)| is_error(sp)) {
        "errors"
    } else if spans.iter().any(|(_, sp)| on_checkout(sp)) {
        "checkout"
    } else {
        "default"
    }
}

/// Span id → (destination, the span with its resource and scope); panics on a span written
/// twice.
fn placed_spans(
    written: &[(&'static str, ExportTraceServiceRequest)],
    side: &str,
) -> BTreeMap<Vec<u8>, (&'static str, Flat)> {
    let mut out = BTreeMap::new();
    for (dest, req) in written {
        for flat in flatten(std::slice::from_ref(req)) {
            let id = flat.2.span_id.clone();
            if let Some((other, _)) = out.insert(id.clone(), (*dest, flat)) {
                panic!(
                    "{side} wrote span {} twice: to {other} and {dest}",
                    hex(&id)
                );
            }
        }
    }
    out
}

/// Traces through both: every span once, unchanged, on each side in the place its rule says;
/// the same place on both but for the spans of the traces whose spans the Collector's
/// per-span (and per-resource) rule sends different ways, exactly the cases
/// docs/processors.md names.
#[test]
fn traces_route_like_the_collector_but_whole_traces() {
    let Some(bin) = routing_bin("traces_route_like_the_collector_but_whole_traces") else {
        return;
    };
    check_table(
        &collector_config(&bin, "routing-to-file", &[]),
        "traces",
        &TRACE_ROUTES,
    );
    let dests = dests(&TRACE_ROUTES);
    let routes: Vec<(&str, Vec<&str>)> = TRACE_ROUTES
        .iter()
        .map(|r| (r.shardtel, vec![r.dest]))
        .collect();
    let (mut st, mut collector) = start_both(&bin, "traces", &dests, &routes, &["default"]);

    let reqs: Vec<_> = (0..TRACE_REQUESTS).map(trace_request).collect();
    for req in &reqs {
        st.post_accepted(Signal::Traces, req.encode_to_vec());
        post_collector(&collector, Signal::Traces, req.encode_to_vec());
    }
    let sent = flatten(&reqs);
    assert_eq!(
        sent.len() as u64,
        TRACE_REQUESTS * TRACES_PER_REQUEST * SPANS_PER_TRACE
    );
    let count = |w: &[(&str, ExportTraceServiceRequest)]| {
        flatten(&w.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>()).len()
    };
    assert!(
        wait_until(60, || count(&shardtel_requests(
            &st,
            Signal::Traces,
            &dests
        )) >= sent.len()
            && count(&collector_requests(
                &collector.out(),
                Signal::Traces,
                &dests
            )) >= sent.len()),
        "spans sent {}, shardtel wrote {}, the Collector {}; shardtel log:\n{}\nCollector log:\n{}",
        sent.len(),
        count(&shardtel_requests(&st, Signal::Traces, &dests)),
        count(&collector_requests(
            &collector.out(),
            Signal::Traces,
            &dests
        )),
        st.log(),
        collector.log()
    );
    assert_eq!(st.stop(), 0, "{}", st.log());
    collector.stop();
    let ours = placed_spans(&shardtel_requests(&st, Signal::Traces, &dests), "shardtel");
    let theirs = placed_spans(
        &collector_requests(&collector.out(), Signal::Traces, &dests),
        "the Collector",
    );

    // Every span once on each side, with its resource, scope and fields unchanged.
    let sent: BTreeMap<Vec<u8>, Flat> =
        sent.into_iter().map(|f| (f.2.span_id.clone(), f)).collect();
    for (side, placed) in [("shardtel", &ours), ("the Collector", &theirs)] {
        assert_eq!(placed.len(), sent.len(), "{side}: spans written");
        for (id, (dest, flat)) in placed {
            assert_eq!(
                Some(flat),
                sent.get(id),
                "{side} changed span {} (in {dest})",
                hex(id)
            );
        }
    }

    // Each side follows its own rule; where they differ is exactly where the rules do.
    let mut differences: BTreeMap<u64, usize> = BTreeMap::new();
    let mut traces_split_by_the_collector = BTreeSet::new();
    for t in 0..TRACE_REQUESTS * TRACES_PER_REQUEST {
        for i in 0..SPANS_PER_TRACE {
            let id = trace_span(t, i).span_id;
            let (ours, theirs) = (ours[&id].0, theirs[&id].0);
            assert_eq!(
                (ours, theirs),
                (shardtel_dest(t), collector_dest(t, i)),
                "span {i} of trace {t} (case {}): (shardtel, Collector) destinations",
                case(t)
            );
            if ours != theirs {
                *differences.entry(case(t)).or_default() += 1;
            }
            if collector_dest(t, i) != collector_dest(t, 0) {
                traces_split_by_the_collector.insert(t);
            }
        }
    }
    // Cases 0, 1, 4 and 7 land in the same place on both sides. The others differ, span by
    // span, as docs/processors.md says: 2, an error child (the Collector: only that span to
    // `errors`, its root and sibling to the default); 3, `/checkout` on the root only (only the
    // root to `checkout`); 5, one span from a dev resource (only that span to `dev`); 6, a
    // failing child of a `/checkout` trace (that span to `errors`, the others to `checkout`).
    let traces_per_case = TRACE_REQUESTS * TRACES_PER_REQUEST / 8;
    let per_case = |spans: u64| (spans * traces_per_case) as usize;
    assert_eq!(
        differences,
        BTreeMap::from([
            (2, per_case(2)),
            (3, per_case(2)),
            (5, per_case(2)),
            (6, per_case(2))
        ]),
        "spans placed differently, by case"
    );
    // shardtel never splits a trace; the Collector splits exactly the traces of those cases.
    assert!(traces_split_by_the_collector
        .iter()
        .all(|t| matches!(case(*t), 2 | 3 | 5 | 6)));
    assert_eq!(
        traces_split_by_the_collector.len() as u64,
        4 * traces_per_case
    );
}

// ---- logs --------------------------------------------------------------------------------

const LOG_REQUESTS: u64 = 3;
const RECORDS_PER_RESOURCE: u64 = 12;

/// The record `i` of resource `svc` in request `r`: severity ERROR for every fourth, tenant
/// `acme` for every third, `other` or none for the rest.
fn log_record(svc: &str, r: u64, i: u64) -> LogRecord {
    let error = i % 4 == 0;
    let mut attributes = vec![kv("seq", Value::IntValue((r * 100 + i) as i64))];
    match i % 3 {
        0 => attributes.push(kv("tenant", s("acme"))),
        1 => attributes.push(kv("tenant", s("other"))),
        _ => {}
    }
    LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000 + r * 1000 + i,
        severity_number: if error {
            SeverityNumber::Error as i32
        } else {
            SeverityNumber::Info as i32
        },
        severity_text: if error { "ERROR" } else { "INFO" }.into(),
        body: Some(AnyValue {
            value: Some(s(&format!("{svc} {r}-{i}"))),
        }),
        attributes,
        ..Default::default()
    }
}

/// Request `r`: records from a `web` and an `audit` resource.
fn log_request(r: u64) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: ["web", "audit"]
            .into_iter()
            .map(|svc| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s(svc))],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "routing-test".into(),
                        ..Default::default()
                    }),
                    log_records: (0..RECORDS_PER_RESOURCE)
                        .map(|i| log_record(svc, r, i))
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// Both rules for a record (the same): the first route it matches, else the default.
fn log_dest(svc: &str, i: u64) -> &'static str {
    if i % 4 == 0 {
        "errors"
    } else if i % 3 == 0 {
        "acme"
    } else if svc == "audit" {
        "audit"
    } else {
        "default"
    }
}

type FlatLog = (Option<Resource>, Option<InstrumentationScope>, LogRecord);

fn body(lr: &LogRecord) -> String {
    match lr.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::StringValue(v)) => v.clone(),
        other => panic!("body {other:?}"),
    }
}

/// Body → (destinations, sorted, the record with its resource and scope, which must be the same
/// in every destination).
fn placed_logs(
    written: &[(&'static str, ExportLogsServiceRequest)],
) -> BTreeMap<String, (Vec<&'static str>, FlatLog)> {
    let mut out: BTreeMap<String, (Vec<&'static str>, FlatLog)> = BTreeMap::new();
    for (dest, req) in written {
        for rl in &req.resource_logs {
            for sl in &rl.scope_logs {
                for lr in &sl.log_records {
                    let flat = (rl.resource.clone(), sl.scope.clone(), lr.clone());
                    let e = out
                        .entry(body(lr))
                        .or_insert_with(|| (Vec::new(), flat.clone()));
                    assert_eq!(e.1, flat, "{} differs between destinations", body(lr));
                    e.0.push(*dest);
                }
            }
        }
    }
    for (dests, _) in out.values_mut() {
        dests.sort();
    }
    out
}

/// Log records through both: every record in the same destination on both sides (its first
/// matching route or the default) and in the archive, unchanged. The Collector's `copy` route is
/// shardtel's archive exporter listed in every route and in the default.
#[test]
fn logs_route_like_the_collector() {
    let Some(bin) = routing_bin("logs_route_like_the_collector") else {
        return;
    };
    check_table(
        &collector_config(&bin, "routing-to-file", &[]),
        "logs",
        &LOG_ROUTES,
    );
    let dests = dests(&LOG_ROUTES);
    let routes: Vec<(&str, Vec<&str>)> = LOG_ROUTES[1..]
        .iter()
        .map(|r| (r.shardtel, vec![r.dest, "archive"]))
        .collect();
    let (mut st, mut collector) =
        start_both(&bin, "logs", &dests, &routes, &["default", "archive"]);

    let reqs: Vec<_> = (0..LOG_REQUESTS).map(log_request).collect();
    for req in &reqs {
        st.post_accepted(Signal::Logs, req.encode_to_vec());
        post_collector(&collector, Signal::Logs, req.encode_to_vec());
    }
    let sent = (LOG_REQUESTS * 2 * RECORDS_PER_RESOURCE) as usize;
    // Each record twice: its route and the archive.
    let count = |w: Vec<(&str, ExportLogsServiceRequest)>| -> usize {
        w.iter()
            .flat_map(|(_, r)| &r.resource_logs)
            .flat_map(|rl| &rl.scope_logs)
            .map(|sl| sl.log_records.len())
            .sum()
    };
    assert!(
        wait_until(60, || count(shardtel_requests(&st, Signal::Logs, &dests))
            >= 2 * sent
            && count(collector_requests(
                &collector.out(),
                Signal::Logs,
                &dests
            )) >= 2 * sent),
        "records sent {sent} (each to be written twice), shardtel wrote {}, the Collector {}; \
         shardtel log:\n{}\nCollector log:\n{}",
        count(shardtel_requests(&st, Signal::Logs, &dests)),
        count(collector_requests(&collector.out(), Signal::Logs, &dests)),
        st.log(),
        collector.log()
    );
    assert_eq!(st.stop(), 0, "{}", st.log());
    collector.stop();
    let ours = placed_logs(&shardtel_requests(&st, Signal::Logs, &dests));
    let theirs = placed_logs(&collector_requests(&collector.out(), Signal::Logs, &dests));

    let mut expected = BTreeMap::new();
    for req in &reqs {
        for rl in &req.resource_logs {
            for sl in &rl.scope_logs {
                for lr in &sl.log_records {
                    let svc = body(lr).split(' ').next().unwrap().to_string();
                    let i = body(lr).rsplit('-').next().unwrap().parse::<u64>().unwrap();
                    let mut d = vec!["archive", log_dest(&svc, i)];
                    d.sort();
                    expected.insert(
                        body(lr),
                        (d, (rl.resource.clone(), sl.scope.clone(), lr.clone())),
                    );
                }
            }
        }
    }
    assert_eq!(expected.len(), sent);
    let used: BTreeSet<&str> = expected.values().flat_map(|(d, _)| d.clone()).collect();
    assert_eq!(
        used,
        dests.iter().copied().collect(),
        "every route is taken"
    );
    for (side, placed) in [("shardtel", &ours), ("the Collector", &theirs)] {
        assert_eq!(placed.len(), expected.len(), "{side}: records written");
        for (b, want) in &expected {
            assert_eq!(placed.get(b), Some(want), "{side}: record {b:?}");
        }
    }
    // So, item by item, the same as the Collector.
    assert_eq!(ours, theirs);
}

// ---- metrics -----------------------------------------------------------------------------

const METRIC_REQUESTS: u64 = 3;

/// The attributes of point `i` of request `r`: `seq`, and `tenant` `acme` for every other
/// point, `other` for the rest.
fn point_attrs(r: u64, i: u64) -> Vec<KeyValue> {
    vec![
        kv("seq", Value::IntValue((r * 100 + i) as i64)),
        kv("tenant", s(if i % 2 == 0 { "acme" } else { "other" })),
    ]
}

fn number_point(r: u64, i: u64, value: number_data_point::Value) -> NumberDataPoint {
    NumberDataPoint {
        attributes: point_attrs(r, i),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        time_unix_nano: 1_700_000_000_000_000_000 + r * 1000 + i,
        value: Some(value),
        ..Default::default()
    }
}

/// Request `r`: a sum (`requests`) and a histogram (`latency`) whose points go different ways,
/// a gauge named `debug.queue` (all its points to `debug`, `acme` ones too: the first route
/// wins), and a gauge `idle.gauge.<r>` with no point.
fn metric_request(r: u64) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("app"))],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "routing-test".into(),
                    ..Default::default()
                }),
                metrics: vec![
                    Metric {
                        name: "requests".into(),
                        unit: "1".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: (0..4)
                                .map(|i| {
                                    number_point(r, i, number_data_point::Value::AsInt(i as i64))
                                })
                                .collect(),
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "debug.queue".into(),
                        unit: "1".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: (10..13)
                                .map(|i| {
                                    number_point(
                                        r,
                                        i,
                                        number_data_point::Value::AsDouble(i as f64 / 4.0),
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
                            data_points: (20..23)
                                .map(|i| HistogramDataPoint {
                                    attributes: point_attrs(r, i),
                                    start_time_unix_nano: 1_700_000_000_000_000_000,
                                    time_unix_nano: 1_700_000_000_000_000_000 + r * 1000 + i,
                                    count: 3,
                                    sum: Some(42.5 + i as f64),
                                    bucket_counts: vec![1, 1, 1],
                                    explicit_bounds: vec![10.0, 100.0],
                                    ..Default::default()
                                })
                                .collect(),
                            aggregation_temporality: AggregationTemporality::Delta as i32,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: format!("idle.gauge.{r}"),
                        unit: "1".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![],
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

/// A point's identity: its metric's name and its `seq` (-1 for a metric without points).
type PointId = (String, i64);
type FlatPoint = (Option<Resource>, Option<InstrumentationScope>, Metric);

/// Each data point as a metric holding only it (a metric without points as itself), by
/// identity, with the destinations it was written to.
fn placed_points(
    written: &[(&'static str, ExportMetricsServiceRequest)],
) -> BTreeMap<PointId, (Vec<&'static str>, FlatPoint)> {
    let mut out: BTreeMap<PointId, (Vec<&'static str>, FlatPoint)> = BTreeMap::new();
    let seq = |attrs: &[KeyValue]| match attrs
        .iter()
        .find(|a| a.key == "seq")
        .and_then(|a| a.value.as_ref()?.value.as_ref())
    {
        Some(Value::IntValue(n)) => *n,
        other => panic!("seq {other:?}"),
    };
    for (dest, req) in written {
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    let one = |data: metric::Data| Metric {
                        data: Some(data),
                        ..m.clone()
                    };
                    let points: Vec<(i64, Metric)> = match m.data.clone() {
                        Some(metric::Data::Sum(d)) => d
                            .data_points
                            .iter()
                            .map(|p| {
                                (
                                    seq(&p.attributes),
                                    one(metric::Data::Sum(Sum {
                                        data_points: vec![p.clone()],
                                        ..d.clone()
                                    })),
                                )
                            })
                            .collect(),
                        Some(metric::Data::Gauge(d)) if d.data_points.is_empty() => {
                            vec![(-1, m.clone())]
                        }
                        Some(metric::Data::Gauge(d)) => d
                            .data_points
                            .iter()
                            .map(|p| {
                                (
                                    seq(&p.attributes),
                                    one(metric::Data::Gauge(Gauge {
                                        data_points: vec![p.clone()],
                                    })),
                                )
                            })
                            .collect(),
                        Some(metric::Data::Histogram(d)) => d
                            .data_points
                            .iter()
                            .map(|p| {
                                (
                                    seq(&p.attributes),
                                    one(metric::Data::Histogram(Histogram {
                                        data_points: vec![p.clone()],
                                        ..d.clone()
                                    })),
                                )
                            })
                            .collect(),
                        other => panic!("unexpected metric data {other:?}"),
                    };
                    for (n, pm) in points {
                        let flat = (rm.resource.clone(), sm.scope.clone(), pm);
                        let e = out
                            .entry((m.name.clone(), n))
                            .or_insert_with(|| (Vec::new(), flat.clone()));
                        assert_eq!(e.1, flat, "{}/{n} differs between destinations", m.name);
                        e.0.push(*dest);
                    }
                }
            }
        }
    }
    out
}

/// Data points through both: every point in the same destination on both sides — a whole
/// `debug.*` metric by its name, the other metrics split point by point on `tenant`, a metric
/// without points by its name — and unchanged (a split metric keeps its other fields).
#[test]
fn metrics_route_like_the_collector() {
    let Some(bin) = routing_bin("metrics_route_like_the_collector") else {
        return;
    };
    check_table(
        &collector_config(&bin, "routing-to-file", &[]),
        "metrics",
        &METRIC_ROUTES,
    );
    let dests = dests(&METRIC_ROUTES);
    let routes: Vec<(&str, Vec<&str>)> = METRIC_ROUTES
        .iter()
        .map(|r| (r.shardtel, vec![r.dest]))
        .collect();
    let (mut st, mut collector) = start_both(&bin, "metrics", &dests, &routes, &["default"]);

    let reqs: Vec<_> = (0..METRIC_REQUESTS).map(metric_request).collect();
    for req in &reqs {
        st.post_accepted(Signal::Metrics, req.encode_to_vec());
        post_collector(&collector, Signal::Metrics, req.encode_to_vec());
    }
    let expected = placed_points(&reqs.iter().map(|r| ("sent", r.clone())).collect::<Vec<_>>());
    // 4 + 3 + 3 points and one empty metric per request.
    assert_eq!(expected.len() as u64, METRIC_REQUESTS * 11);
    let want = |id: &PointId| -> &'static str {
        let acme = id.1 >= 0 && id.1 % 2 == 0;
        if id.0.starts_with("debug.") {
            "debug"
        } else if acme {
            "acme"
        } else {
            "default"
        }
    };
    let missing = |placed: BTreeMap<PointId, (Vec<&'static str>, FlatPoint)>| -> Vec<PointId> {
        expected
            .keys()
            .filter(|id| !placed.contains_key(*id))
            .cloned()
            .collect()
    };
    // A metric without points: shardtel sends it where its name and resource send it (the
    // default here); the Collector's `datapoint` route drops it (it removes every metric it
    // leaves without points, and this one has none to begin with), a documented difference.
    let empty = |id: &PointId| id.1 < 0;
    let wanted = |placed: &BTreeMap<PointId, (Vec<&'static str>, FlatPoint)>, with_empty: bool| {
        expected
            .keys()
            .filter(|id| with_empty || !empty(id))
            .all(|id| placed.contains_key(id))
    };
    assert!(
        wait_until(60, || {
            wanted(
                &placed_points(&shardtel_requests(&st, Signal::Metrics, &dests)),
                true,
            ) && wanted(
                &placed_points(&collector_requests(
                    &collector.out(),
                    Signal::Metrics,
                    &dests,
                )),
                false,
            )
        }),
        "points not written: by shardtel {:?}, by the Collector {:?}; shardtel log:\n{}\n\
         Collector log:\n{}",
        missing(placed_points(&shardtel_requests(
            &st,
            Signal::Metrics,
            &dests
        ))),
        missing(placed_points(&collector_requests(
            &collector.out(),
            Signal::Metrics,
            &dests
        ))),
        st.log(),
        collector.log()
    );
    assert_eq!(st.stop(), 0, "{}", st.log());
    collector.stop();
    let mut ours = placed_points(&shardtel_requests(&st, Signal::Metrics, &dests));
    let theirs = placed_points(&collector_requests(
        &collector.out(),
        Signal::Metrics,
        &dests,
    ));
    let taken: BTreeSet<&str> = expected.keys().map(want).collect();
    assert_eq!(
        taken,
        dests.iter().copied().collect(),
        "every route is taken"
    );
    for (side, placed) in [("shardtel", &ours), ("the Collector", &theirs)] {
        for (id, (_, flat)) in &expected {
            if empty(id) && side == "the Collector" {
                assert_eq!(placed.get(id), None, "{side}: {id:?}");
                continue;
            }
            assert_eq!(
                placed.get(id),
                Some(&(vec![want(id)], flat.clone())),
                "{side}: point {id:?}"
            );
        }
    }
    assert_eq!(theirs.len() as u64, expected.len() as u64 - METRIC_REQUESTS);
    assert_eq!(ours.len(), expected.len());
    // So, item by item, the same as the Collector, but for the metrics without points.
    ours.retain(|id, _| !empty(id));
    assert_eq!(ours, theirs);
}

// ---- both --------------------------------------------------------------------------------

/// shardtel with one `routing` processor for `signal` (its routes and default over the file
/// exporters `<signal>_<dest>`) and the Collector on `routing-to-file.yaml`.
fn start_both(
    bin: &Path,
    signal: &str,
    dests: &[&str],
    routes: &[(&str, Vec<&str>)],
    default: &[&str],
) -> (Shardtel, Otelcol) {
    let name = |d: &str| exporter_name(signal, d);
    let routes: Vec<(&str, Vec<String>)> = routes
        .iter()
        .map(|(c, to)| (*c, to.iter().map(|d| name(d)).collect()))
        .collect();
    let route_refs: Vec<(&str, Vec<&str>)> = routes
        .iter()
        .map(|(c, to)| (*c, to.iter().map(String::as_str).collect()))
        .collect();
    let route_slices: Vec<(&str, &[&str])> = route_refs
        .iter()
        .map(|(c, to)| (*c, to.as_slice()))
        .collect();
    let default: Vec<String> = default.iter().map(|d| name(d)).collect();
    let default: Vec<&str> = default.iter().map(String::as_str).collect();
    let exporters: Vec<String> = dests.iter().map(|d| name(d)).collect();
    let exporters: Vec<&str> = exporters.iter().map(String::as_str).collect();
    let st = Shardtel::start_config(|mut c| {
        let out = c.out_dir();
        for e in &exporters {
            c = c.exporter(
                e,
                Component::file(out.join(e).join(format!("{signal}.jsonl")))
                    .batch(Batch::timeout(millis(50))),
            );
        }
        let c = c.processor("route", Component::routing(&default, &route_slices));
        let pipeline = Pipeline::otlp_to(&exporters).processors(&["route"]);
        match signal {
            "traces" => c.traces(pipeline),
            "logs" => c.logs(pipeline),
            _ => c.metrics(pipeline),
        }
    });
    let collector = Otelcol::start(bin, "routing-to-file", &[]);
    (st, collector)
}
