//! Malformed, oversized and wrongly typed requests get the documented
//! errors, while concurrent good requests all succeed and arrive.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::gen::{request, span};
use crate::grpc_client::{frame, GrpcClient, TRACES};
use crate::harness::{spans_in, tokio_runtime, wait_until, Shardtel};

/// google.rpc.Status, decoded by hand (code = 1, message = 2).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn bad_requests_get_documented_errors_and_good_ones_flow() {
    let st = Shardtel::start_config(|c| {
        c.with(|c| c.otlp.max_recv_msg_size = Some(256 << 10))
            .file_pipelines()
    });
    let url = format!("{}/v1/traces", st.http_url());
    let stop = Arc::new(AtomicBool::new(false));
    // Background: good requests on one keep-alive connection, all must succeed.
    let good = {
        let url = url.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) || sent < 50 {
                let req = request((0..10).map(|i| span(9, sent * 10 + i, 0)).collect());
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(req.encode_to_vec())
                    .send()
                    .unwrap();
                assert_eq!(
                    r.status(),
                    200,
                    "a good request failed during the error barrage"
                );
                sent += 1;
            }
            sent * 10
        })
    };
    let client = reqwest::blocking::Client::new();
    let post = |ctype: &str, body: Vec<u8>, enc: Option<&str>| {
        let mut r = client.post(&url).header("content-type", ctype).body(body);
        if let Some(e) = enc {
            r = r.header("content-encoding", e);
        }
        let resp = r.send().unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ct, resp.bytes().unwrap())
    };
    for round in 0..20 {
        // malformed protobuf: 400 with a google.rpc.Status naming the problem
        let (code, ct, body) = post(
            "application/x-protobuf",
            vec![0x0a, 0xff, 0xff, 0x01, 0x02],
            None,
        );
        assert_eq!(code, 400);
        assert_eq!(ct, "application/x-protobuf");
        let status = RpcStatus::decode(body.as_ref()).expect("400 body is a google.rpc.Status");
        assert_eq!(status.code, 3, "INVALID_ARGUMENT");
        assert!(
            status
                .message
                .contains("malformed ExportTraceServiceRequest"),
            "{}",
            status.message
        );
        // a span with a bad trace id length
        let mut bad = request(vec![span(9, 1, 0)]);
        bad.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1, 2, 3];
        let (code, _, body) = post("application/x-protobuf", bad.encode_to_vec(), None);
        assert_eq!(code, 400);
        let status = RpcStatus::decode(body.as_ref()).unwrap();
        assert!(
            status.message.to_lowercase().contains("trace"),
            "{}",
            status.message
        );
        // malformed JSON: 400 with a JSON Status
        let (code, ct, body) = post("application/json", b"{\"resourceSpans\": [".to_vec(), None);
        assert_eq!(code, 400);
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["message"].as_str().unwrap().contains("JSON"), "{v}");
        // wrong content type: 415
        let (code, _, _) = post("text/plain", b"hello".to_vec(), None);
        assert_eq!(code, 415);
        // unknown content encoding: 415
        let (code, _, _) = post("application/x-protobuf", b"x".to_vec(), Some("br"));
        assert_eq!(code, 415);
        // corrupt gzip: 400
        let (code, _, _) = post(
            "application/x-protobuf",
            b"not gzip at all".to_vec(),
            Some("gzip"),
        );
        assert_eq!(code, 400);
        if round % 5 == 0 {
            // oversized: 413 (declared length), and a gzip bomb: 413 once inflated
            let (code, _, _) = post("application/x-protobuf", vec![0u8; 300 << 10], None);
            assert_eq!(code, 413);
            let (code, _, _) = post(
                "application/x-protobuf",
                gzip(&vec![0u8; 8 << 20]),
                Some("gzip"),
            );
            assert_eq!(code, 413);
        }
    }
    // After errors on the same keep-alive connection, a good request still works.
    let ok = request(vec![span(9, 999_999, 0)]);
    let (code, _, _) = post("application/x-protobuf", ok.encode_to_vec(), None);
    assert_eq!(code, 200);

    // gRPC error cases on one HTTP/2 connection, interleaved with good calls.
    let grpc_good = tokio_runtime().block_on(async {
        let mut c = GrpcClient::connect(st.ports.grpc).await;
        let mut good = 0u64;
        for i in 0..10u64 {
            let r = c.call(TRACES, frame(&[0x0a, 0x05, 0xff]), &[]).await;
            assert_eq!(
                r.grpc_status,
                Some(3),
                "malformed -> INVALID_ARGUMENT: {r:?}"
            );
            assert!(r.grpc_message.contains("malformed"), "{r:?}");
            let r = c.call(TRACES, frame(&vec![0u8; 300 << 10]), &[]).await;
            assert_eq!(
                r.grpc_status,
                Some(8),
                "oversized -> RESOURCE_EXHAUSTED: {r:?}"
            );
            let r = c.call(TRACES, Bytes::from_static(&[0, 0, 0]), &[]).await;
            assert_eq!(
                r.grpc_status,
                Some(3),
                "bad framing -> INVALID_ARGUMENT: {r:?}"
            );
            let r = c
                .call(TRACES, frame(b"x"), &[("grpc-encoding", "snappy")])
                .await;
            assert_eq!(
                r.grpc_status,
                Some(12),
                "unknown encoding -> UNIMPLEMENTED: {r:?}"
            );
            let r = c
                .call(
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Nope",
                    frame(b""),
                    &[],
                )
                .await;
            assert_eq!(
                r.grpc_status,
                Some(12),
                "unknown method -> UNIMPLEMENTED: {r:?}"
            );
            let req = request((0..5).map(|k| span(9, 2_000_000 + i * 5 + k, 0)).collect());
            let mut gz = vec![1u8];
            let z = gzip(&req.encode_to_vec());
            gz.extend_from_slice(&(z.len() as u32).to_be_bytes());
            gz.extend_from_slice(&z);
            let r = c
                .call(TRACES, Bytes::from(gz), &[("grpc-encoding", "gzip")])
                .await;
            assert_eq!(r.grpc_status, Some(0), "good gzip call: {r:?}");
            assert_eq!(r.http_status, 200);
            assert_eq!(
                r.body.len(),
                5,
                "one empty ExportTraceServiceResponse message"
            );
            good += 5;
        }
        good
    });
    stop.store(true, Ordering::Relaxed);
    let good_http = good.join().expect("good-request thread failed");
    let expected = (good_http + 1 + grpc_good) as usize;
    let count = || spans_in(&st.out()).len();
    assert!(
        wait_until(20, || count() >= expected),
        "expected {expected} spans, got {}; log:\n{}",
        count(),
        st.log()
    );
    assert_eq!(count(), expected);
    assert!(
        wait_until(5, || st
            .metric_sum("shardtel_receiver_failed_requests_total", "")
            >= 100),
        "{}",
        st.metrics()
    );
    // Each failure is counted under its reason: per round 4 malformed bodies and 2 unsupported
    // content types or encodings; every fifth round 2 oversized bodies.
    let metrics = st.metrics();
    let http_failures = |reason: &str| -> u64 {
        let reason = format!("reason=\"{reason}\"");
        metrics
            .lines()
            .filter(|l| l.starts_with("shardtel_receiver_failed_requests_by_reason_total{"))
            .filter(|l| l.contains("transport=\"http\",signal=\"traces\"") && l.contains(&reason))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(http_failures("malformed"), 80, "{metrics}");
    assert_eq!(http_failures("unsupported"), 40, "{metrics}");
    assert_eq!(http_failures("too_large"), 8, "{metrics}");
    assert_eq!(
        http_failures("malformed") + http_failures("unsupported") + http_failures("too_large"),
        st.metric_sum(
            "shardtel_receiver_failed_requests_total",
            "transport=\"http\",signal=\"traces\""
        ),
        "every failed request has one reason: {metrics}"
    );
}
