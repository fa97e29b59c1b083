//! `otlphttp` (OTLP/HTTP protobuf) against a real HTTP/1.1 server.

use std::time::{Duration, Instant};

use shardtel_config::ExporterKind;
use shardtel_protocol::Signal;
use shardtel_sinks::{DrainOutcome, ExportQueue, NETWORK_SENDERS};

use crate::support::*;

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[test]
fn posts_gzip_protobuf_to_v1_traces() {
    run(|| async {
        let server = TestServer::local(Protocol::Http1, vec![]);
        let mut cfg = otlphttp_config(server.addr);
        cfg.headers
            .insert("authorization".into(), "Bearer t".into());
        let queue = ExportQueue::start(&exporter("loki", ExporterKind::OtlpHttp(cfg)), 2).unwrap();
        assert_eq!(queue.kind(), "otlphttp");
        let a = trace_request("h", 12, 30);
        queue.try_push(Signal::Traces, encoded(&a), 12).unwrap();
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);

        let requests = server.requests.borrow();
        assert_eq!(requests.len(), 1);
        let req = &requests[0];
        assert_eq!(req.path, "/v1/traces");
        assert_eq!(req.headers["content-type"], "application/x-protobuf");
        assert_eq!(req.headers["content-encoding"], "gzip");
        assert_eq!(req.headers["authorization"], "Bearer t");
        assert_eq!(req.headers["host"], server.addr.to_string().as_str());
        assert_eq!(spans_of([&req.http_trace_request()]), spans_of([&a]));
        let stats = queue.stats().signal(Signal::Traces);
        assert_eq!((stats.sent_requests, stats.sent_items), (1, 12));
    });
}

#[test]
fn endpoint_path_prefix_and_signal_override() {
    run(|| async {
        let server = TestServer::local(Protocol::Http1, vec![]);
        let mut cfg = otlphttp_config(server.addr);
        cfg.endpoint.path = "/otlp/".into();
        let mut logs = endpoint(server.addr);
        logs.path = "/custom/logs".into();
        cfg.logs_endpoint = Some(logs);
        let queue = start_queue("paths", ExporterKind::OtlpHttp(cfg));
        // The bytes are only forwarded, so any payload shows the routing.
        let piece = encoded(&trace_request("x", 1, 1));
        queue.try_push(Signal::Traces, piece.clone(), 1).unwrap();
        queue.try_push(Signal::Logs, piece, 1).unwrap();
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        let mut paths: Vec<_> = server
            .requests
            .borrow()
            .iter()
            .map(|r| r.path.clone())
            .collect();
        paths.sort();
        assert_eq!(paths, ["/custom/logs", "/otlp/v1/traces"]);
        assert_eq!(queue.stats().signal(Signal::Logs).sent_items, 1);
    });
}

#[test]
fn unavailable_with_retry_after_is_retried_and_delivered_once() {
    run(|| async {
        let busy = Reply::Http {
            status: 503,
            retry_after: Some("1"),
            body: "busy",
        };
        let server = TestServer::local(
            Protocol::Http1,
            vec![
                busy.clone(),
                busy,
                Reply::Http {
                    status: 429,
                    retry_after: None,
                    body: "",
                },
            ],
        );
        let queue = start_queue(
            "retry",
            ExporterKind::OtlpHttp(otlphttp_config(server.addr)),
        );
        let a = trace_request("r", 6, 5);
        let started = Instant::now();
        queue.try_push(Signal::Traces, encoded(&a), 6).unwrap();
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        let elapsed = started.elapsed();
        // Two `Retry-After: 1` were honoured (the backoff alone is 10-50 ms).
        assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
        assert_eq!(server.count(), 4);
        let stats = queue.stats().signal(Signal::Traces);
        assert_eq!(
            (stats.retries, stats.sent_requests, stats.sent_items),
            (3, 1, 6)
        );
        assert_eq!(stats.failed_requests, 0);
        let last = &server.requests.borrow()[3];
        assert_eq!(spans_of([&last.http_trace_request()]), spans_of([&a]));
    });
}

#[test]
fn bad_request_is_permanent_and_not_retried() {
    run(|| async {
        let server = TestServer::local(
            Protocol::Http1,
            vec![Reply::Http {
                status: 400,
                retry_after: None,
                body: "malformed span",
            }],
        );
        let queue = start_queue(
            "strict",
            ExporterKind::OtlpHttp(otlphttp_config(server.addr)),
        );
        queue
            .try_push(Signal::Traces, encoded(&trace_request("b", 3, 5)), 3)
            .unwrap();
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        glommio::timer::sleep(Duration::from_millis(200)).await;
        assert_eq!(server.count(), 1);
        let stats = queue.stats().signal(Signal::Traces);
        assert_eq!(
            (stats.failed_requests, stats.failed_items, stats.retries),
            (1, 3, 0)
        );
        assert_eq!(stats.sent_items, 0);
        // The exporter keeps working after a permanent failure.
        queue
            .try_push(Signal::Traces, encoded(&trace_request("ok", 2, 5)), 2)
            .unwrap();
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        assert_eq!(queue.stats().signal(Signal::Traces).sent_items, 2);
    });
}

#[test]
fn keep_alive_pool_is_bounded() {
    run(|| async {
        let server = TestServer::local(Protocol::Http1, vec![]);
        let mut cfg = otlphttp_config(server.addr);
        cfg.batch = batch(5, Duration::from_millis(20));
        let queue = start_queue("pool", ExporterKind::OtlpHttp(cfg));
        for round in 0..3 {
            for i in 0..20 {
                let piece = trace_request(&format!("k{round}-{i}"), 5, 5);
                queue.try_push(Signal::Traces, encoded(&piece), 5).unwrap();
            }
            assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        }
        assert_eq!(server.count(), 60);
        let connections = server.connections.get();
        assert!(
            (1..=NETWORK_SENDERS).contains(&connections),
            "{connections} connections for 60 requests"
        );
        assert_eq!(queue.stats().signal(Signal::Traces).sent_items, 300);
    });
}

#[test]
fn zstd_compression() {
    run(|| async {
        let server = TestServer::local(Protocol::Http1, vec![]);
        let mut cfg = otlphttp_config(server.addr);
        cfg.compression = shardtel_config::Compression::Zstd;
        let queue = start_queue("z", ExporterKind::OtlpHttp(cfg));
        let a = trace_request("z", 4, 10);
        queue.try_push(Signal::Traces, encoded(&a), 4).unwrap();
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        let requests = server.requests.borrow();
        assert_eq!(requests[0].headers["content-encoding"], "zstd");
        assert_eq!(
            spans_of([&requests[0].http_trace_request()]),
            spans_of([&a])
        );
    });
}

#[test]
fn server_closing_connections_costs_no_retries() {
    run(|| async {
        let server = TestServer::start_with(
            Protocol::Http1,
            "127.0.0.1:0".parse().unwrap(),
            vec![],
            false,
        );
        let mut cfg = otlphttp_config(server.addr);
        cfg.batch = batch(1, Duration::from_millis(5));
        let queue = start_queue("close", ExporterKind::OtlpHttp(cfg));
        for i in 0..10 {
            let piece = trace_request(&format!("c{i}"), 1, 5);
            queue.try_push(Signal::Traces, encoded(&piece), 1).unwrap();
            assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        }
        assert_eq!(server.count(), 10);
        let stats = queue.stats().signal(Signal::Traces);
        assert_eq!(
            (stats.sent_items, stats.retries, stats.failed_requests),
            (10, 0, 0)
        );
    });
}
