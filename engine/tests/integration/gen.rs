//! Building OTLP requests with the opentelemetry-proto types, and comparing
//! what was sent with what arrived.

use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::proto::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};

pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// A trace id that encodes `n` (and a test tag) so tests can recognise it.
pub fn trace_id(tag: u8, n: u64) -> Vec<u8> {
    let mut id = vec![tag; 16];
    id[8..16].copy_from_slice(&n.to_be_bytes());
    // spread the ids over the hash space
    id[0] = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8;
    id[1] = tag;
    id
}

/// One span of trace `t` with index `i`.
pub fn span(tag: u8, t: u64, i: u64) -> Span {
    let mut span_id = vec![0u8; 8];
    span_id[..4].copy_from_slice(&(t as u32).to_be_bytes());
    span_id[4..].copy_from_slice(&(i as u32 + 1).to_be_bytes());
    Span {
        trace_id: trace_id(tag, t),
        span_id,
        parent_span_id: if i == 0 {
            vec![]
        } else {
            {
                let mut p = vec![0u8; 8];
                p[..4].copy_from_slice(&(t as u32).to_be_bytes());
                p[7] = 1;
                p
            }
        },
        name: format!("op-{t}-{i}"),
        kind: if i == 0 {
            span::SpanKind::Server as i32
        } else {
            span::SpanKind::Internal as i32
        },
        start_time_unix_nano: 1_700_000_000_000_000_000 + t * 1000 + i,
        end_time_unix_nano: 1_700_000_000_000_000_000 + t * 1000 + i + 500_000,
        attributes: vec![
            kv("http.method", s("GET")),
            kv("http.route", s(&format!("/api/{t}"))),
            kv(
                "http.status_code",
                any_value::Value::IntValue(200 + (i as i64 % 3)),
            ),
            kv("sampled.flag", any_value::Value::BoolValue(i % 2 == 0)),
            kv("ratio", any_value::Value::DoubleValue(i as f64 / 3.0)),
        ],
        status: Some(Status {
            code: if i % 7 == 3 {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Unset as i32
            },
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// A request with the given spans split over two resources, one scope each.
pub fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    let mut groups: [Vec<Span>; 2] = [Vec::new(), Vec::new()];
    for (i, sp) in spans.into_iter().enumerate() {
        groups[i % 2].push(sp);
    }
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .map(|(r, g)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s(&format!("svc-{r}"))),
                        kv("host.name", s("test-host")),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "test-scope".into(),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    spans: g,
                    schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// A span with its resource and scope.
pub type Flat = (Option<Resource>, Option<InstrumentationScope>, Span);

/// (resource, scope, span) triples, sorted by trace and span id, for exact comparison.
pub fn flatten(reqs: &[ExportTraceServiceRequest]) -> Vec<Flat> {
    let mut out = Vec::new();
    for r in reqs {
        for rs in &r.resource_spans {
            for ss in &rs.scope_spans {
                for sp in &ss.spans {
                    out.push((rs.resource.clone(), ss.scope.clone(), sp.clone()));
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.2.trace_id, &a.2.span_id).cmp(&(&b.2.trace_id, &b.2.span_id)));
    out
}
