//! The `routing` processor through the real process: traces from the OpenTelemetry SDK routed
//! after tail sampling (errors to one file exporter, the rest to another, `dev` traces to
//! both), every span in exactly the expected place; and routing without a sampler, across
//! cores, with raw requests.

use std::collections::BTreeMap;
use std::path::Path;

use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use shardtel_protocol::proto::common::v1::any_value::Value;
use shardtel_protocol::proto::trace::v1::Span;

use crate::gen::{kv, request, s, span};
use crate::harness::{spans_in, wait_until, Shardtel};
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
