//! Real clients for the zipkin, jaeger and fluentforward receivers' tests, installed pinned by
//! `tests/peers/clients/setup.sh` (run by `./test.sh`, which exports `SHARDTEL_CLIENTS_DIR`):
//! the OpenTelemetry Python SDK's Zipkin and Jaeger exporters and PyPI's and npm's
//! fluent-logger, driven by the scripts in `tests/peers/clients/`. Each script prints what it
//! sent (the SDK's spans, the records) as JSON; the tests derive from it, field by field, what
//! must arrive at shardtel's file exporter.
//!
//! Also: the canonical form both sides of a comparison are put in (attributes sorted by key,
//! spans by id), and the OpenTelemetry Collector with its zipkin, jaeger and fluentforward
//! receivers forwarding to a shardtel (`configs/receivers-forward.yaml`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value as Json;
use shardtel_protocol::proto::common::v1::{any_value, AnyValue, KeyValue, KeyValueList};
use shardtel_protocol::proto::trace::v1::{span, Span, Status};

use crate::gen::kv;
use crate::harness::{free_port, read_traces, wait_until, Shardtel};
use crate::otelcol::{otelcol_bin, Otelcol};

/// Where the scripts are.
pub const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/peers/clients");

/// The clients' directory from `SHARDTEL_CLIENTS_DIR`. `None` only when it is missing and
/// `SHARDTEL_CLIENTS_OPTIONAL=1` (after a loud message); panics otherwise.
pub fn clients_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("SHARDTEL_CLIENTS_DIR").map(PathBuf::from);
    if let Some(dir) = dir.filter(|d| d.join(".done").is_file()) {
        return Some(dir);
    }
    if std::env::var("SHARDTEL_CLIENTS_OPTIONAL").as_deref() == Ok("1") {
        eprintln!(
            "\n!!!!!!!! SKIPPED {test}: no client directory in SHARDTEL_CLIENTS_DIR \
             (SHARDTEL_CLIENTS_OPTIONAL=1) !!!!!!!!\n"
        );
        return None;
    }
    panic!(
        "no test clients: SHARDTEL_CLIENTS_DIR is {:?}. Run ./test.sh (it installs them), or \
         export SHARDTEL_CLIENTS_DIR=\"$(tests/peers/clients/setup.sh)\"; \
         SHARDTEL_CLIENTS_OPTIONAL=1 skips these tests",
        std::env::var_os("SHARDTEL_CLIENTS_DIR")
    );
}

/// Runs `program args` and returns what it printed as JSON; panics (with its stderr) unless it
/// succeeded.
pub fn run_json(program: &Path, args: &[&str], env: &[(&str, &Path)]) -> Json {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}):\n{}\n{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `traces.py EXPORTER ENDPOINT SEED` with the venv's python (`otel` or `jaeger`); the SDK's
/// spans.
pub fn send_spans(
    dir: &Path,
    venv: &str,
    exporter: &str,
    endpoint: &str,
    seed: u64,
) -> Vec<SdkSpan> {
    let python = dir.join(venv).join("bin/python");
    let json = run_json(
        &python,
        &[
            &format!("{SCRIPTS}/traces.py"),
            exporter,
            endpoint,
            &seed.to_string(),
        ],
        &[],
    );
    json.as_array()
        .expect("an array of spans")
        .iter()
        .map(SdkSpan::from_json)
        .collect()
}

/// Attributes as (key, value) pairs in their order.
pub type Attributes = Vec<(String, Json)>;

/// A span as the SDK had it (see `traces.py`'s `describe`).
#[derive(Clone, Debug)]
pub struct SdkSpan {
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub parent_span_id: Vec<u8>,
    pub name: String,
    pub kind: String,
    pub start: u64,
    pub end: u64,
    pub attributes: Attributes,
    /// (name, time, attributes).
    pub events: Vec<(String, u64, Attributes)>,
    /// (trace id, span id).
    pub links: Vec<(Vec<u8>, Vec<u8>)>,
    pub status: (String, String),
    pub scope: (String, String),
    pub resource: Vec<(String, Json)>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn pairs(v: &Json) -> Vec<(String, Json)> {
    v.as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

impl SdkSpan {
    fn from_json(v: &Json) -> Self {
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        SdkSpan {
            trace_id: unhex(&s("trace_id")),
            span_id: unhex(&s("span_id")),
            parent_span_id: unhex(&s("parent_span_id")),
            name: s("name"),
            kind: s("kind"),
            start: v["start"].as_u64().unwrap(),
            end: v["end"].as_u64().unwrap(),
            attributes: pairs(&v["attributes"]),
            events: v["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_string(),
                        e["time"].as_u64().unwrap(),
                        pairs(&e["attributes"]),
                    )
                })
                .collect(),
            links: v["links"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        unhex(l["trace_id"].as_str().unwrap()),
                        unhex(l["span_id"].as_str().unwrap()),
                    )
                })
                .collect(),
            status: (
                v["status"]["code"].as_str().unwrap().to_string(),
                v["status"]["description"].as_str().unwrap().to_string(),
            ),
            scope: (
                v["scope"]["name"].as_str().unwrap().to_string(),
                v["scope"]["version"].as_str().unwrap().to_string(),
            ),
            resource: pairs(&v["resource"]),
        }
    }

    /// The OTLP span kind of the SDK's kind name.
    pub fn otlp_kind(&self) -> i32 {
        (match self.kind.as_str() {
            "INTERNAL" => span::SpanKind::Internal,
            "SERVER" => span::SpanKind::Server,
            "CLIENT" => span::SpanKind::Client,
            "PRODUCER" => span::SpanKind::Producer,
            "CONSUMER" => span::SpanKind::Consumer,
            other => panic!("unknown kind {other}"),
        }) as i32
    }
}

/// A JSON scalar (or array) as the attribute value of its type.
pub fn typed(v: &Json) -> any_value::Value {
    match v {
        Json::Bool(b) => any_value::Value::BoolValue(*b),
        Json::Number(n) if n.is_f64() => any_value::Value::DoubleValue(n.as_f64().unwrap()),
        Json::Number(n) => any_value::Value::IntValue(n.as_i64().unwrap()),
        Json::String(s) => any_value::Value::StringValue(s.clone()),
        Json::Array(items) => {
            any_value::Value::ArrayValue(shardtel_protocol::proto::common::v1::ArrayValue {
                values: items
                    .iter()
                    .map(|i| AnyValue {
                        value: Some(typed(i)),
                    })
                    .collect(),
            })
        }
        Json::Object(o) => any_value::Value::KvlistValue(KeyValueList {
            values: o.iter().map(|(k, v)| kv(k, typed(v))).collect(),
        }),
        Json::Null => panic!("null attribute"),
    }
}

/// Microseconds, rounded as the Python exporters round nanoseconds.
pub fn us_round(ns: u64) -> u64 {
    (ns + 500) / 1000
}

/// `attributes` sorted by key (nested maps too): the canonical form compared.
pub fn sorted(mut attributes: Vec<KeyValue>) -> Vec<KeyValue> {
    for a in &mut attributes {
        if let Some(AnyValue {
            value: Some(any_value::Value::KvlistValue(list)),
        }) = &mut a.value
        {
            list.values = sorted(std::mem::take(&mut list.values));
        }
    }
    attributes.sort_by(|a, b| a.key.cmp(&b.key));
    attributes
}

/// A span in canonical form: its attributes, its events' and its links' sorted; a missing
/// status as the empty one.
pub fn canonical(mut span: Span) -> Span {
    span.attributes = sorted(span.attributes);
    for e in &mut span.events {
        e.attributes = sorted(std::mem::take(&mut e.attributes));
    }
    for l in &mut span.links {
        l.attributes = sorted(std::mem::take(&mut l.attributes));
    }
    if span.status.is_none() {
        span.status = Some(Status::default());
    }
    span
}

/// The OpenTelemetry Collector's zipkin, jaeger and fluentforward receivers forwarding over
/// OTLP/gRPC to a shardtel that writes what arrives to files
/// (`tests/peers/otelcol/configs/receivers-forward.yaml`).
pub struct CollectorPath {
    pub otelcol: Otelcol,
    /// The shardtel behind it (OTLP in, file exporters out).
    pub shardtel: Shardtel,
    pub zipkin: u16,
    pub jaeger_grpc: u16,
    pub jaeger_thrift: u16,
    pub fluent: u16,
}

impl CollectorPath {
    /// Starts both; `None` without a Collector binary (see [`otelcol_bin`]).
    pub fn start(test: &str) -> Option<Self> {
        let bin = otelcol_bin(test)?;
        let shardtel = Shardtel::start_config(|c| c.file_pipelines());
        let (zipkin, jaeger_grpc, jaeger_thrift, fluent) =
            (free_port(), free_port(), free_port(), free_port());
        let at = |p: u16| format!("127.0.0.1:{p}");
        let otelcol = Otelcol::start(
            &bin,
            "receivers-forward",
            &[
                ("OTELCOL_ZIPKIN_ENDPOINT", at(zipkin)),
                ("OTELCOL_JAEGER_GRPC_ENDPOINT", at(jaeger_grpc)),
                ("OTELCOL_JAEGER_THRIFT_ENDPOINT", at(jaeger_thrift)),
                ("OTELCOL_FLUENT_ENDPOINT", at(fluent)),
                ("SHARDTEL_GRPC_ENDPOINT", at(shardtel.ports.grpc)),
            ],
        );
        for port in [zipkin, jaeger_grpc, jaeger_thrift, fluent] {
            assert!(
                wait_until(20, || std::net::TcpStream::connect(("127.0.0.1", port))
                    .is_ok()),
                "the Collector's receiver on {port} did not listen; log:\n{}",
                otelcol.log()
            );
        }
        Some(CollectorPath {
            otelcol,
            shardtel,
            zipkin,
            jaeger_grpc,
            jaeger_thrift,
            fluent,
        })
    }
}

/// One span with its resource's attributes and its scope, in canonical form.
pub type SpanInContext = (Vec<KeyValue>, (String, String), Span);

/// Every span in the file exporter's output under `dir`, with its resource and scope, in
/// canonical form, ordered by span id.
pub fn spans_in_context(dir: &Path) -> Vec<SpanInContext> {
    let mut out = Vec::new();
    for (_, req) in read_traces(dir) {
        for rs in req.resource_spans {
            let resource = sorted(rs.resource.unwrap_or_default().attributes);
            for ss in rs.scope_spans {
                let scope = ss.scope.unwrap_or_default();
                for span in ss.spans {
                    out.push((
                        resource.clone(),
                        (scope.name.clone(), scope.version.clone()),
                        canonical(span),
                    ));
                }
            }
        }
    }
    out.sort_by(|a, b| a.2.span_id.cmp(&b.2.span_id));
    out.dedup();
    out
}
