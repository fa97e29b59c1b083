//! The queue's bounds: refusal when full, reserve, drain deadline, give-up.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shardtel_config::{ExporterKind, QueueConfig};
use shardtel_protocol::Signal;
use shardtel_sinks::{DrainOutcome, ExportQueue};

use crate::support::*;

#[test]
fn refuses_when_full_while_backend_down_and_accepts_after_it_drains() {
    run(|| async {
        let addr = free_addr();
        let piece = trace_request("q", 10, 100);
        let size = encoded(&piece).len;
        let mut cfg = otlphttp_config(addr);
        cfg.queue = queue_of(3 * size + size / 2);
        cfg.batch = batch(10, Duration::from_millis(5));
        let queue = start_queue("down", ExporterKind::OtlpHttp(cfg));

        for _ in 0..3 {
            queue.try_push(Signal::Traces, encoded(&piece), 10).unwrap();
        }
        let full = queue
            .try_push(Signal::Traces, encoded(&piece), 10)
            .unwrap_err();
        assert_eq!(full.needed, size);
        assert_eq!(full.queued_bytes, 3 * size);
        assert_eq!(full.max_bytes, 3 * size + size / 2);
        // Senders keep retrying (connection refused); nothing is released.
        wait_until(Duration::from_secs(5), "retries", || {
            queue.stats().signal(Signal::Traces).retries >= 3
        })
        .await;
        assert!(queue.try_push(Signal::Traces, encoded(&piece), 10).is_err());
        let stats = queue.stats();
        assert_eq!(stats.queue_bytes, 3 * size);
        assert_eq!(stats.signal(Signal::Traces).refused_items, 20);

        // reserve() waits until a batch is delivered.
        let room = Rc::new(Cell::new(false));
        let waiter = {
            let (queue, room) = (queue.clone(), room.clone());
            glommio::spawn_local(async move {
                queue.reserve(size).await;
                room.set(true);
                queue
                    .try_push(Signal::Traces, encoded(&trace_request("late", 1, 1)), 1)
                    .unwrap();
            })
        };
        glommio::timer::sleep(Duration::from_millis(100)).await;
        assert!(!room.get());

        let server = TestServer::start(Protocol::Http1, addr, vec![]);
        waiter.await;
        assert!(room.get());
        let done = queue.drain(Instant::now() + Duration::from_secs(10)).await;
        assert_eq!(done, DrainOutcome::Drained);
        let stats = queue.stats();
        assert_eq!(stats.signal(Signal::Traces).sent_items, 31);
        assert_eq!(stats.queue_bytes, 0);
        assert_eq!(server.count(), 4, "each batch delivered exactly once");
        queue.try_push(Signal::Traces, encoded(&piece), 10).unwrap();
    });
}

#[test]
fn pieces_are_counted_as_the_buffers_they_keep_alive() {
    run(|| async {
        let addr = free_addr();
        let piece = trace_request("q", 10, 100);
        let size = encoded(&piece).len;
        let mut cfg = otlphttp_config(addr);
        cfg.queue = queue_of(10 * size);
        cfg.batch = batch(10, Duration::from_millis(5));
        let queue = start_queue("down", ExporterKind::OtlpHttp(cfg));
        // A piece that is a slice of a buffer four times its size is charged the buffer.
        queue
            .try_push_held(Signal::Traces, encoded(&piece), 10, 4 * size)
            .unwrap();
        queue
            .try_push_held(Signal::Traces, encoded(&piece), 10, 4 * size)
            .unwrap();
        let full = queue
            .try_push_held(Signal::Traces, encoded(&piece), 10, 4 * size)
            .unwrap_err();
        assert_eq!(full.needed, 4 * size);
        assert_eq!(full.queued_bytes, 8 * size);
        // A charge below the piece's own length counts the piece.
        queue
            .try_push_held(Signal::Traces, encoded(&piece), 10, 1)
            .unwrap();
        assert_eq!(queue.queued_bytes(), 9 * size);
        // Sending releases exactly what was charged.
        let server = TestServer::start(Protocol::Http1, addr, vec![]);
        let done = queue.drain(Instant::now() + Duration::from_secs(10)).await;
        assert_eq!(done, DrainOutcome::Drained);
        assert_eq!(queue.queued_bytes(), 0);
        assert_eq!(queue.stats().signal(Signal::Traces).sent_items, 30);
        drop(server);
    });
}

#[test]
fn drain_reports_what_is_left_at_the_deadline() {
    run(|| async {
        let queue = ExportQueue::start(
            &exporter("down", ExporterKind::Otlp(otlp_config(free_addr()))),
            0,
        )
        .unwrap();
        let piece = encoded(&trace_request("d", 3, 3));
        let size = piece.len;
        queue.try_push(Signal::Traces, piece, 3).unwrap();
        let started = Instant::now();
        let done = queue
            .drain(Instant::now() + Duration::from_millis(300))
            .await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            done,
            DrainOutcome::TimedOut {
                queue_bytes: size,
                batches: 1
            }
        );
    });
}

#[test]
fn gives_up_after_max_elapsed_time() {
    run(|| async {
        let mut cfg = otlp_config(free_addr());
        cfg.retry = retry(20, 40, 250);
        let max_elapsed = cfg.retry.max_elapsed_time;
        // A delay is at most max_interval + 50 % jitter.
        let longest_delay = cfg.retry.max_interval.mul_f64(1.5);
        // The batch timeout before the first attempt, and scheduling on a loaded machine.
        let margin = cfg.batch.timeout + Duration::from_secs(1);
        let queue = start_queue("down", ExporterKind::Otlp(cfg));
        let started = Instant::now();
        queue
            .try_push(Signal::Traces, encoded(&trace_request("g", 5, 3)), 5)
            .unwrap();
        let done = queue.drain(Instant::now() + Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert_eq!(done, DrainOutcome::Drained);
        // It gives up once the next attempt would start after max_elapsed_time: not before
        // max_elapsed_time less one delay, and (connection refused fails at once) not later
        // than max_elapsed_time.
        assert!(
            took >= max_elapsed - longest_delay,
            "gave up after {took:?}"
        );
        assert!(took <= max_elapsed + margin, "gave up after {took:?}");
        let stats = queue.stats();
        assert_eq!(
            (
                stats.signal(Signal::Traces).failed_requests,
                stats.signal(Signal::Traces).failed_items
            ),
            (1, 5)
        );
        assert!(stats.signal(Signal::Traces).retries >= 3, "{stats:?}");
        assert_eq!(stats.queue_bytes, 0);
    });
}

#[test]
fn retry_disabled_fails_at_once() {
    run(|| async {
        let mut cfg = otlp_config(free_addr());
        cfg.retry.enabled = false;
        let queue = start_queue("down", ExporterKind::Otlp(cfg));
        queue
            .try_push(Signal::Metrics, encoded(&trace_request("m", 2, 3)), 2)
            .unwrap();
        let done = queue.drain(Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(done, DrainOutcome::Drained);
        let stats = queue.stats().signal(Signal::Metrics);
        assert_eq!(
            (stats.failed_requests, stats.failed_items, stats.retries),
            (1, 2, 0)
        );
    });
}

#[test]
fn blackhole_counts_and_drops() {
    run(|| async {
        let queue = start_queue("blackhole", ExporterKind::Blackhole);
        assert_eq!(queue.kind(), "blackhole");
        for _ in 0..100 {
            queue
                .try_push(Signal::Logs, encoded(&trace_request("b", 2, 2)), 7)
                .unwrap();
        }
        let done = queue.drain(Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(done, DrainOutcome::Drained);
        let stats = queue.stats();
        assert_eq!(stats.signal(Signal::Logs).sent_items, 700);
        assert!(stats.signal(Signal::Logs).sent_requests >= 1);
        assert_eq!(stats.queue_bytes, 0);
    });
}

#[test]
fn rejects_endpoints_neither_http_nor_https() {
    let mut cfg = otlp_config(free_addr());
    cfg.endpoint.scheme = "ftp".into();
    // Fails before touching the executor.
    let err = ExportQueue::start(&exporter("ftp", ExporterKind::Otlp(cfg)), 0)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("\"ftp\" is not supported, use \"http\" or \"https\""),
        "{err}"
    );
}

#[test]
fn oversized_piece_goes_alone_into_an_empty_queue() {
    run(|| async {
        let server = TestServer::local(Protocol::Http1, vec![]);
        let mut cfg = otlphttp_config(server.addr);
        cfg.queue = QueueConfig {
            max_bytes: 1024,
            ..QueueConfig::default()
        };
        let queue = start_queue("tiny", ExporterKind::OtlpHttp(cfg));
        let big = trace_request("big", 20, 200);
        let size = encoded(&big).len;
        assert!(size > 1024);
        assert!(
            queue.has_room(size),
            "an empty queue takes one oversized piece"
        );
        queue.try_push(Signal::Traces, encoded(&big), 20).unwrap();
        assert!(!queue.has_room(1));
        assert!(queue.try_push(Signal::Traces, encoded(&big), 20).is_err());
        // The engine's backpressure loop: reserve, then push; it must not spin.
        queue.reserve(size).await;
        queue.try_push(Signal::Traces, encoded(&big), 20).unwrap();
        let done = queue.drain(Instant::now() + Duration::from_secs(10)).await;
        assert_eq!(done, DrainOutcome::Drained);
        assert_eq!(server.count(), 2);
        assert_eq!(queue.stats().signal(Signal::Traces).sent_items, 40);
    });
}
