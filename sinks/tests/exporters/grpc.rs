//! `otlp` (OTLP/gRPC) against a real HTTP/2 gRPC server.

use std::time::{Duration, Instant};

use shardtel_config::{Compression, ExporterKind};
use shardtel_protocol::Signal;
use shardtel_sinks::{DrainOutcome, ExportQueue};

use crate::support::*;

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[test]
fn sends_gzip_unary_export_with_headers() {
    run(|| async {
        let server = TestServer::local(Protocol::Grpc, vec![]);
        let mut cfg = otlp_config(server.addr);
        cfg.headers.insert("x-scope-orgid".into(), "acme".into());
        let queue = ExportQueue::start(&exporter("tempo", ExporterKind::Otlp(cfg)), 1).unwrap();
        assert_eq!((queue.name(), queue.kind()), ("tempo", "otlp"));
        let a = trace_request("a", 10, 20);
        let b = trace_request("b", 5, 20);
        queue.try_push(Signal::Traces, encoded(&a), 10).unwrap();
        queue.try_push(Signal::Traces, encoded(&b), 5).unwrap();
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);

        let requests = server.requests.borrow();
        assert_eq!(requests.len(), 1, "both pieces in one batch");
        let req = &requests[0];
        assert_eq!(
            req.path,
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
        assert_eq!(req.headers["content-type"], "application/grpc");
        assert_eq!(req.headers["te"], "trailers");
        assert_eq!(req.headers["grpc-encoding"], "gzip");
        assert_eq!(req.headers["grpc-timeout"], "5000m");
        assert_eq!(req.headers["x-scope-orgid"], "acme");
        assert!(req.body[0] == 1, "compressed flag set");
        let got = req.grpc_trace_request();
        assert_eq!(spans_of([&got]), spans_of([&a, &b]));

        let stats = queue.stats();
        assert_eq!(stats.signal(Signal::Traces).sent_items, 15);
        assert_eq!(stats.signal(Signal::Traces).sent_requests, 1);
        assert_eq!(stats.signal(Signal::Traces).failed_items, 0);
        assert_eq!(
            (stats.queue_bytes, stats.queued_batches, stats.in_flight),
            (0, 0, 0)
        );
    });
}

#[test]
fn identity_compression_sends_plain_frames() {
    run(|| async {
        let server = TestServer::local(Protocol::Grpc, vec![]);
        let mut cfg = otlp_config(server.addr);
        cfg.compression = Compression::None;
        let queue = start_queue("plain", ExporterKind::Otlp(cfg));
        let a = trace_request("plain", 3, 5);
        queue.try_push(Signal::Traces, encoded(&a), 3).unwrap();
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        let requests = server.requests.borrow();
        assert_eq!(requests[0].body[0], 0);
        assert!(requests[0].headers.get("grpc-encoding").is_none());
        assert_eq!(
            spans_of([&requests[0].grpc_trace_request()]),
            spans_of([&a])
        );
    });
}

#[test]
fn unavailable_is_retried_and_delivered_once() {
    run(|| async {
        let unavailable = Reply::Grpc {
            code: 14,
            message: "overloaded",
            retry_after_secs: None,
        };
        let server = TestServer::local(
            Protocol::Grpc,
            vec![unavailable.clone(), unavailable.clone(), unavailable],
        );
        let queue = start_queue("retry", ExporterKind::Otlp(otlp_config(server.addr)));
        let a = trace_request("r", 7, 5);
        queue.try_push(Signal::Traces, encoded(&a), 7).unwrap();
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        // Three refused attempts, then the one accepted delivery.
        assert_eq!(server.count(), 4);
        assert!(server.script.borrow().is_empty());
        for req in server.requests.borrow().iter() {
            assert_eq!(spans_of([&req.grpc_trace_request()]), spans_of([&a]));
        }
        let stats = queue.stats().signal(Signal::Traces);
        assert_eq!(
            (stats.retries, stats.sent_requests, stats.sent_items),
            (3, 1, 7)
        );
        assert_eq!((stats.failed_requests, stats.failed_items), (0, 0));
    });
}

#[test]
fn resource_exhausted_retries_only_with_retry_info() {
    run(|| async {
        let server = TestServer::local(
            Protocol::Grpc,
            vec![
                Reply::Grpc {
                    code: 8,
                    message: "slow down",
                    retry_after_secs: Some(1),
                },
                Reply::Grpc {
                    code: 8,
                    message: "quota",
                    retry_after_secs: None,
                },
            ],
        );
        let queue = start_queue("quota", ExporterKind::Otlp(otlp_config(server.addr)));
        let started = Instant::now();
        queue
            .try_push(Signal::Traces, encoded(&trace_request("q", 2, 5)), 2)
            .unwrap();
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        // RetryInfo (1 s) was honoured although the backoff says 10 ms; the
        // second RESOURCE_EXHAUSTED without RetryInfo is permanent.
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(server.count(), 2);
        let stats = queue.stats().signal(Signal::Traces);
        assert_eq!(
            (stats.retries, stats.failed_requests, stats.failed_items),
            (1, 1, 2)
        );
        assert_eq!(stats.sent_items, 0);
    });
}

#[test]
fn invalid_argument_is_permanent() {
    run(|| async {
        let server = TestServer::local(
            Protocol::Grpc,
            vec![Reply::Grpc {
                code: 3,
                message: "bad span",
                retry_after_secs: None,
            }],
        );
        let queue = start_queue("strict", ExporterKind::Otlp(otlp_config(server.addr)));
        queue
            .try_push(Signal::Traces, encoded(&trace_request("bad", 4, 5)), 4)
            .unwrap();
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        glommio::timer::sleep(Duration::from_millis(200)).await;
        assert_eq!(server.count(), 1, "not retried");
        let stats = queue.stats().signal(Signal::Traces);
        assert_eq!(
            (stats.failed_requests, stats.failed_items, stats.retries),
            (1, 4, 0)
        );
    });
}

#[test]
fn partial_success_counts_rejected_items() {
    run(|| async {
        let server = TestServer::local(
            Protocol::Grpc,
            vec![Reply::Ok {
                rejected: 3,
                message: "too old",
            }],
        );
        let queue = start_queue("partial", ExporterKind::Otlp(otlp_config(server.addr)));
        queue
            .try_push(Signal::Traces, encoded(&trace_request("p", 10, 5)), 10)
            .unwrap();
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        let stats = queue.stats().signal(Signal::Traces);
        assert_eq!(
            (stats.sent_requests, stats.sent_items, stats.failed_items),
            (1, 7, 3)
        );
    });
}

#[test]
fn many_batches_share_one_connection() {
    run(|| async {
        let server = TestServer::local(Protocol::Grpc, vec![]);
        let mut cfg = otlp_config(server.addr);
        cfg.batch = batch(10, Duration::from_millis(20));
        let queue = start_queue("conc", ExporterKind::Otlp(cfg));
        let pieces: Vec<_> = (0..40)
            .map(|i| trace_request(&format!("c{i}"), 10, 5))
            .collect();
        for piece in &pieces {
            queue.try_push(Signal::Traces, encoded(piece), 10).unwrap();
        }
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        assert_eq!(server.count(), 40);
        assert_eq!(server.connections.get(), 1);
        let mut got: Vec<_> = server
            .requests
            .borrow()
            .iter()
            .flat_map(|r| spans_of([&r.grpc_trace_request()]))
            .map(|s| s.name)
            .collect();
        let mut want: Vec<_> = spans_of(&pieces).into_iter().map(|s| s.name).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(queue.stats().signal(Signal::Traces).sent_items, 400);
    });
}

#[test]
fn large_batches_are_compressed_and_arrive_intact() {
    run(|| async {
        let server = TestServer::local(Protocol::Grpc, vec![]);
        let queue = start_queue("big", ExporterKind::Otlp(otlp_config(server.addr)));
        // ~3 MB per batch: compressed off the reactor, sent in many HTTP/2 frames.
        let pieces: Vec<_> = (0..3)
            .map(|i| trace_request(&format!("big{i}"), 1000, 1000))
            .collect();
        for piece in &pieces {
            queue
                .try_push(Signal::Traces, encoded(piece), 1000)
                .unwrap();
        }
        assert_eq!(queue.drain(deadline()).await, DrainOutcome::Drained);
        let got: Vec<_> = server
            .requests
            .borrow()
            .iter()
            .flat_map(|r| spans_of([&r.grpc_trace_request()]))
            .collect();
        assert_eq!(got, spans_of(&pieces));
        assert_eq!(queue.stats().signal(Signal::Traces).sent_items, 3000);
    });
}
