//! The jaeger receiver (`[receivers.jaeger]`) through real clients: the OpenTelemetry Python
//! SDK's Jaeger exporters (Thrift over HTTP to `/api/traces`, and gRPC `PostSpans`); what
//! arrives at shardtel's file exporter must be, field by field, what the mapping
//! (docs/receivers.md) makes of what the client sent. Errors and counters; and the same
//! payloads through the OpenTelemetry Collector's jaeger receiver, compared.

use shardtel_protocol::proto::trace::v1::span::{Event, Link};
use shardtel_protocol::proto::trace::v1::{Span, Status};

use crate::clients::{
    canonical, clients_dir, send_spans, sorted, spans_in_context, typed, us_round, CollectorPath,
    SdkSpan,
};
use crate::gen::{kv, s};
use crate::grpc_client::{frame, GrpcClient};
use crate::harness::{free_port, read_traces, spans_in, tokio_runtime, wait_until, Shardtel};
use crate::test_config::{Component, Pipeline};

fn start(grpc: u16, thrift: u16) -> Shardtel {
    Shardtel::start_config(|c| {
        c.receiver("jaeger", Component::jaeger_receiver(grpc, thrift))
            .file_exporters()
            .traces(Pipeline::otlp_to(&["file_traces"]).receivers(&["jaeger"]))
    })
}

/// The Python gRPC exporter's timestamps: nanoseconds through a float of seconds.
fn float_ns(ns: u64) -> u64 {
    let f = ns as f64 / 1e9;
    let seconds = f.trunc();
    seconds as u64 * 1_000_000_000 + ((f - seconds) * 1e9) as u64
}

/// The span shardtel must deliver for `sdk` sent through the Python Jaeger exporter (`grpc`:
/// the gRPC one, else Thrift over HTTP).
pub fn expected(sdk: &SdkSpan, grpc: bool) -> Span {
    let time = |ns: u64| {
        if grpc {
            float_ns(ns)
        } else {
            us_round(ns) * 1000
        }
    };
    let mut attributes: Vec<_> = sdk
        .attributes
        .iter()
        .chain(&sdk.resource)
        .map(|(k, v)| kv(k, typed(v)))
        .collect();
    attributes.push(kv("otel.library.name", s(&sdk.scope.0)));
    attributes.push(kv("otel.library.version", s(&sdk.scope.1)));
    if !grpc {
        // The Thrift path reads no scope tags: they stay attributes.
        attributes.push(kv("otel.scope.name", s(&sdk.scope.0)));
        attributes.push(kv("otel.scope.version", s(&sdk.scope.1)));
    }
    let status = match sdk.status.0.as_str() {
        "ERROR" => Status {
            code: 2,
            message: sdk.status.1.clone(),
        },
        "OK" => Status {
            code: 1,
            ..Default::default()
        },
        _ => Status::default(),
    };
    let (start, end) = if grpc {
        (float_ns(sdk.start), float_ns(sdk.end))
    } else {
        let start = us_round(sdk.start);
        (start * 1000, (start + us_round(sdk.end - sdk.start)) * 1000)
    };
    canonical(Span {
        trace_id: sdk.trace_id.clone(),
        span_id: sdk.span_id.clone(),
        parent_span_id: sdk.parent_span_id.clone(),
        flags: 1,
        name: sdk.name.clone(),
        kind: sdk.otlp_kind(),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        // Events are logs with a `message` field (no `event` field: no name).
        events: sdk
            .events
            .iter()
            .map(|(name, t, attrs)| Event {
                time_unix_nano: time(*t),
                attributes: attrs
                    .iter()
                    .map(|(k, v)| kv(k, typed(v)))
                    .chain([kv("message", s(name))])
                    .collect(),
                ..Default::default()
            })
            .collect(),
        // Links are FOLLOWS_FROM references (their attributes are not sent).
        links: sdk
            .links
            .iter()
            .map(|(trace_id, span_id)| Link {
                trace_id: trace_id.clone(),
                span_id: span_id.clone(),
                attributes: vec![kv("opentracing.ref_type", s("follows_from"))],
                ..Default::default()
            })
            .collect(),
        status: Some(status),
        ..Default::default()
    })
}

fn check_delivered(st: &Shardtel, sdk: &[SdkSpan], grpc: bool) {
    let ids: Vec<_> = sdk.iter().map(|s| s.span_id.clone()).collect();
    let arrived = |st: &Shardtel| {
        spans_in(&st.out())
            .into_iter()
            .filter(|s| ids.contains(&s.span_id))
            .count()
    };
    assert!(
        wait_until(20, || arrived(st) == sdk.len()),
        "{} of {} spans arrived; log:\n{}",
        arrived(st),
        sdk.len(),
        st.log()
    );
    for (_, req) in read_traces(&st.out()) {
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let Some(sent) = sdk.iter().find(|s| s.span_id == span.span_id) else {
                        continue;
                    };
                    assert_eq!(canonical(span), expected(sent, grpc));
                    let resource = rs.resource.clone().unwrap_or_default().attributes;
                    let scope = ss.scope.clone().unwrap_or_default();
                    if grpc {
                        // The exporter sends the resource as the process's tags.
                        let tags: Vec<_> =
                            sent.resource.iter().map(|(k, v)| kv(k, typed(v))).collect();
                        assert_eq!(sorted(resource), sorted(tags));
                        assert_eq!((scope.name, scope.version), sent.scope);
                    } else {
                        assert_eq!(resource, [kv("service.name", s("checkout"))]);
                        assert_eq!((scope.name, scope.version), Default::default());
                    }
                }
            }
        }
    }
}

#[test]
fn python_sdk_jaeger_exporters_deliver_every_field() {
    let Some(dir) = clients_dir("jaeger::python_sdk_jaeger_exporters_deliver_every_field") else {
        return;
    };
    let (grpc, thrift) = (free_port(), free_port());
    let st = start(grpc, thrift);
    let url = format!("http://127.0.0.1:{thrift}/api/traces?format=jaeger.thrift");
    let over_thrift = send_spans(&dir, "jaeger", "jaeger-thrift", &url, 3);
    check_delivered(&st, &over_thrift, false);
    let over_grpc = send_spans(
        &dir,
        "jaeger",
        "jaeger-grpc",
        &format!("127.0.0.1:{grpc}"),
        4,
    );
    check_delivered(&st, &over_grpc, true);
    for (transport, n) in [
        ("thrift_http", over_thrift.len()),
        ("grpc", over_grpc.len()),
    ] {
        let filter = format!("receiver=\"jaeger\",transport=\"{transport}\"");
        let accepted = || st.metric_sum("shardtel_receiver_accepted_spans_total", &filter);
        assert!(
            wait_until(5, || accepted() == n as u64),
            "{transport}: {} != {n}",
            accepted()
        );
    }
}

#[test]
fn bad_batches_get_clear_errors_and_nothing_else_is_lost() {
    let (grpc, thrift) = (free_port(), free_port());
    let st = start(grpc, thrift);
    let client = reqwest::blocking::Client::new();
    let post = |ctype: &str, body: &[u8]| {
        let resp = client
            .post(format!("http://127.0.0.1:{thrift}/api/traces"))
            .header("content-type", ctype)
            .body(body.to_vec())
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.text().unwrap_or_default())
    };
    // A Batch without spans (process { serviceName = "x" }).
    let (status, text) = post(
        "application/x-thrift",
        &[12, 0, 1, 11, 0, 1, 0, 0, 0, 1, b'x', 0, 0],
    );
    assert_eq!(status, 400);
    assert!(
        text.contains("required field spans of Batch is not set"),
        "{text}"
    );
    let (status, text) = post("application/json", b"{}");
    assert_eq!(status, 415, "{text}");
    // gRPC: a span id of 3 bytes.
    let rt = tokio_runtime();
    let reply = rt.block_on(async {
        let mut c = GrpcClient::connect(grpc).await;
        // PostSpansRequest { batch { spans { span_id: [1, 2, 3] } } }
        let request = [0x0a, 0x07, 0x0a, 0x05, 0x12, 0x03, 1, 2, 3];
        c.call(
            "/jaeger.api_v2.CollectorService/PostSpans",
            frame(&request),
            &[],
        )
        .await
    });
    assert_eq!(reply.grpc_status, Some(3), "{reply:?}");
    assert!(
        reply.grpc_message.contains("span_id has 3 bytes"),
        "{reply:?}"
    );
    let reply = rt.block_on(async {
        let mut c = GrpcClient::connect(grpc).await;
        c.call(
            "/jaeger.api_v2.SamplingManager/GetSamplingStrategy",
            frame(&[]),
            &[],
        )
        .await
    });
    assert_eq!(reply.grpc_status, Some(12), "{reply:?}");
    assert!(spans_in(&st.out()).is_empty());
    let failed = |t: &str| {
        st.metric_sum(
            "shardtel_receiver_failed_requests_total",
            &format!("receiver=\"jaeger\",transport=\"{t}\",signal=\"traces\""),
        )
    };
    assert!(wait_until(5, || failed("thrift_http") == 2 && failed("grpc") == 1));
}

#[test]
fn the_collectors_jaeger_receiver_and_shardtels_agree() {
    let test = "jaeger::the_collectors_jaeger_receiver_and_shardtels_agree";
    let Some(dir) = clients_dir(test) else { return };
    let Some(collector) = CollectorPath::start(test) else {
        return;
    };
    let (grpc, thrift) = (free_port(), free_port());
    let direct = start(grpc, thrift);
    let mut sent = 0;
    for (grpc, thrift) in [
        (grpc, thrift),
        (collector.jaeger_grpc, collector.jaeger_thrift),
    ] {
        let url = format!("http://127.0.0.1:{thrift}/api/traces");
        sent = send_spans(&dir, "jaeger", "jaeger-thrift", &url, 7).len();
        sent += send_spans(
            &dir,
            "jaeger",
            "jaeger-grpc",
            &format!("127.0.0.1:{grpc}"),
            8,
        )
        .len();
    }
    let via = &collector.shardtel;
    assert!(
        wait_until(20, || spans_in_context(&direct.out()).len() == sent
            && spans_in_context(&via.out()).len() == sent),
        "direct {}, through the Collector {} of {sent}; Collector log:\n{}",
        spans_in_context(&direct.out()).len(),
        spans_in_context(&via.out()).len(),
        collector.otelcol.log()
    );
    assert_eq!(
        spans_in_context(&direct.out()),
        spans_in_context(&via.out())
    );
}
