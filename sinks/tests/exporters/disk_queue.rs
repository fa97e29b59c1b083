//! Disk queues (`queue.storage = "disk"`): batches survive a dead backend and a restart, memory
//! stays bounded while the queue grows on disk, `max_bytes` refuses or drops the oldest.

use std::time::{Duration, Instant};

use shardtel_config::{ExporterKind, QueueConfig, QueueOverflow, QueueStorage};
use shardtel_protocol::Signal;
use shardtel_sinks::{DiskQueueSettings, DrainOutcome, ExportQueue};

use crate::support::*;

fn settings(root: &std::path::Path) -> DiskQueueSettings {
    DiskQueueSettings {
        root: root.to_path_buf(),
        segment_size: 64 << 10,
        group_commit_interval: Duration::from_millis(1),
        group_commit_bytes: 1 << 20,
        memory_bytes: DiskQueueSettings::MEMORY_BYTES,
        cache_bytes: DiskQueueSettings::CACHE_BYTES,
    }
}

fn disk_queue(max_bytes: usize, overflow: QueueOverflow) -> QueueConfig {
    QueueConfig {
        storage: QueueStorage::Disk,
        max_bytes,
        overflow,
    }
}

#[test]
fn batches_wait_on_disk_for_a_dead_backend_and_survive_a_restart() {
    let root = temp_dir("disk-restart");
    run(move || async move {
        let addr = free_addr();
        let piece = trace_request("d", 10, 200);
        let mut cfg = otlphttp_config(addr);
        cfg.queue = disk_queue(8 << 20, QueueOverflow::Refuse);
        cfg.batch = batch(10, Duration::from_millis(1));
        let cfg = exporter("up/stream", ExporterKind::OtlpHttp(cfg));
        let queue = ExportQueue::start_with_storage(&cfg, 1, 2, Some(&settings(&root)), None)
            .await
            .unwrap();
        for _ in 0..50 {
            queue.try_push(Signal::Traces, encoded(&piece), 10).unwrap();
        }
        // Saved to disk: nothing is held in memory, 50 batches wait in the log.
        wait_until(Duration::from_secs(10), "saved", || {
            let s = queue.stats();
            s.queue_bytes == 0 && s.disk.is_some_and(|d| d.unconsumed_frames == 50)
        })
        .await;
        assert!(root.join("up%2Fstream/core1").is_dir());
        let outcome = queue
            .drain(Instant::now() + Duration::from_millis(300))
            .await;
        assert!(
            matches!(outcome, DrainOutcome::TimedOut { .. }),
            "{outcome:?}"
        );
        drop(queue);

        // Restart with the backend up: every batch is delivered, then the log is empty.
        let server = TestServer::start(Protocol::Http1, addr, vec![]);
        let queue = ExportQueue::start_with_storage(&cfg, 1, 2, Some(&settings(&root)), None)
            .await
            .unwrap();
        assert_eq!(queue.stats().disk.unwrap().recovery.recovered_frames, 50);
        assert_eq!(
            queue.drain(Instant::now() + Duration::from_secs(20)).await,
            DrainOutcome::Drained
        );
        let requests = server.requests.borrow();
        let got: Vec<_> = requests.iter().map(|r| r.http_trace_request()).collect();
        assert_eq!(spans_of(got.iter()).len(), 500);
        for r in &got {
            let (a, b) = (spans_of([r]), spans_of([&piece]));
            assert!(
                a == b,
                "request of {} spans differs from the batch of {}",
                a.len(),
                b.len()
            );
        }
        let disk = queue.stats().disk.unwrap();
        assert_eq!(disk.unconsumed_frames, 0, "{disk:?}");
        assert_eq!(queue.stats().signal(Signal::Traces).sent_items, 500);
    });
    let _ = std::fs::remove_dir_all(temp_dir("disk-restart"));
}

#[test]
fn a_full_disk_queue_refuses_or_drops_the_oldest() {
    let root = temp_dir("disk-full");
    run(move || async move {
        let addr = free_addr();
        let piece = trace_request("f", 10, 200);
        for (name, overflow) in [
            ("refuse", QueueOverflow::Refuse),
            ("drop", QueueOverflow::DropOldest),
        ] {
            let mut cfg = otlphttp_config(addr);
            cfg.queue = disk_queue(1 << 20, overflow);
            cfg.batch = batch(10, Duration::from_millis(1));
            let cfg = exporter(name, ExporterKind::OtlpHttp(cfg));
            let queue = ExportQueue::start_with_storage(&cfg, 0, 1, Some(&settings(&root)), None)
                .await
                .unwrap();
            let size = encoded(&piece).len;
            let mut accepted = 0usize;
            let mut refused = 0usize;
            for _ in 0..(3 << 20) / size {
                match queue.try_push(Signal::Traces, encoded(&piece), 10) {
                    Ok(()) => accepted += 1,
                    Err(_) => refused += 1,
                }
                // Let saves complete, as a steady stream of requests would.
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            let disk = queue.stats().disk.unwrap();
            assert!(
                disk.retained_bytes + disk.pending_bytes <= 1 << 20,
                "{disk:?}"
            );
            match overflow {
                QueueOverflow::Refuse => {
                    assert!(
                        refused > 0 && accepted * size < 1 << 20,
                        "{accepted} {refused}"
                    );
                    assert_eq!(
                        queue.stats().signal(Signal::Traces).refused_items,
                        10 * refused as u64
                    );
                }
                QueueOverflow::DropOldest => {
                    // Refusals here only come from the memory bound (appends not yet durable
                    // on a slow disk), never from the disk bound.
                    assert!(accepted * size > 2 << 20, "{accepted} {refused}");
                    assert!(disk.dropped_frames > 0, "{disk:?}");
                }
            }
            let _ = queue
                .drain(Instant::now() + Duration::from_millis(100))
                .await;
        }
    });
    let _ = std::fs::remove_dir_all(temp_dir("disk-full"));
}
