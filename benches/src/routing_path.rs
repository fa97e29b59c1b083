//! The owner core's path with the `routing`, `transform` and `spanmetrics` processors, shared
//! by the criterion bench (`benches/routing.rs`) and the instruction count
//! (`src/bin/routing-ir.rs`): scan a request, process, re-frame.

use bytes::Bytes;
use shardtel_config::Config;
use shardtel_processors::Processors;
use shardtel_protocol::reframe::{encode_trace_spans, encode_traces, Encoded};
use shardtel_protocol::scan::SpanBatch;

/// The processors of the cases.
const CONFIG: &str = r#"
[processors.route]
type = "routing"
default = ["a"]
[[processors.route.routes]]
condition = 'resource.attributes["deployment.environment"] == "dev"'
exporters = ["b"]
[[processors.route.routes]]
condition = 'attributes["debug"] == true'
exporters = ["a", "b"]

[processors.route_errors]
type = "routing"
default = ["a"]
[[processors.route_errors.routes]]
condition = 'trace.has_error'
exporters = ["a", "b"]

[processors.tidy]
type = "transform"
[[processors.tidy.trace_statements]]
context = "span"
statements = [
  'set(attributes["tier"], "gold") where name == "never-this-name"',
  'delete_key(attributes, "absent.key")',
]

[processors.route_walk]
type = "routing"
default = ["a"]
[[processors.route_walk.routes]]
condition = 'resource.attributes["deployment.environment"] == "dev"'
exporters = ["b"]
[[processors.route_walk.routes]]
condition = 'not (attributes["user.id"] != "u-0")'
exporters = ["a", "b"]

[processors.tidy_walk]
type = "transform"
[[processors.tidy_walk.trace_statements]]
context = "span"
statements = [
  'set(attributes["tier"], "gold") where name == "GET"',
  'delete_key(attributes, "absent.key")',
]

[processors.spanmetrics]
type = "spanmetrics"
dimensions = ["http.route"]

[receivers.otlp]
[exporters.a]
type = "blackhole"
[exporters.b]
type = "blackhole"
[pipelines.metrics]
receivers = ["otlp"]
exporters = ["a"]
"#;

/// The processors `list` (names in [`CONFIG`]), in order, in a traces pipeline.
pub fn processors(list: &[&str]) -> Processors {
    let names: Vec<String> = list.iter().map(|n| format!("{n:?}")).collect();
    let text = format!(
        "{CONFIG}[pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [{}]\nexporters = [\"a\", \"b\"]\n",
        names.join(", ")
    );
    let config = Config::from_str(&text, "bench.toml").expect("bench config");
    Processors::build(&config).expect("processors")
}

/// One request's trip through an owner core with `p`.
pub fn trip(buf: &Bytes, p: &Processors, groups: &mut shardtel_processors::SpanGroups) -> usize {
    let mut batch = SpanBatch::scan(buf.clone()).expect("payload scans");
    if let Some(chain) = &p.traces_before {
        chain.process_traces(&mut batch);
    }
    if let Some(m) = &p.spanmetrics_before {
        m.record_batch(&batch, None);
    }
    match &p.traces_router {
        None => {
            let mut out = Encoded::default();
            encode_traces(&batch, &mut out);
            out.len
        }
        Some(router) => {
            let spans: Vec<u32> = (0..batch.index.spans.len() as u32).collect();
            router.route_spans(&batch, &spans, None, groups);
            let mut len = 0;
            for (_, group) in groups.iter() {
                let mut out = Encoded::default();
                encode_trace_spans(&batch, group, &mut out);
                len += out.len;
            }
            len
        }
    }
}

/// The cases: name and the processors of its pipeline, in order.
pub const CASES: &[(&str, &[&str])] = &[
    ("baseline", &[]),
    ("idle_routing", &["route"]),
    ("noop_transform", &["tidy"]),
    ("routing_and_transform", &["tidy", "route"]),
    ("spanmetrics", &["spanmetrics"]),
    ("routing_errors", &["route_errors"]),
    ("routing_walk", &["route_walk"]),
    ("transform_walk", &["tidy_walk"]),
    ("routing_and_transform_walk", &["tidy_walk", "route_walk"]),
];

/// Every case, built.
pub fn cases() -> Vec<(&'static str, Processors)> {
    CASES
        .iter()
        .map(|(name, list)| (*name, processors(list)))
        .collect()
}

/// The processors of case `name`.
pub fn processors_of(name: &str) -> Option<Processors> {
    CASES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, list)| processors(list))
}
