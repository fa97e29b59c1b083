//! `file`: OTLP JSON lines per core, rotation by size.

use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message;
use shardtel_config::ExporterKind;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::Signal;
use shardtel_sinks::{backup_path, DrainOutcome, ExportQueue};

use crate::support::*;

fn read_lines(path: &Path) -> Vec<ExportTraceServiceRequest> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "whole lines only");
    text.lines()
        .map(|line| {
            let json: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
            assert!(
                json.get("resourceSpans").is_some(),
                "an ExportTraceServiceRequest"
            );
            let pb = shardtel_protocol::json::to_protobuf(Signal::Traces, line.as_bytes())
                .expect("each line is one OTLP JSON request");
            ExportTraceServiceRequest::decode(pb).unwrap()
        })
        .collect()
}

#[test]
fn writes_json_lines_per_core_visible_after_each_batch() {
    let dir = temp_dir("file-lines");
    let configured = dir.join("nested/traces.jsonl");
    let file = dir.join("nested/traces.core3.jsonl");
    let cfg = exporter("file", ExporterKind::File(file_config(&configured, 100, 2)));
    let check = file.clone();
    run(move || async move {
        let queue = ExportQueue::start(&cfg, 3).unwrap();
        assert_eq!(queue.kind(), "file");
        let pieces: Vec<_> = (0..3)
            .map(|i| trace_request(&format!("f{i}"), 4, 10))
            .collect();
        for (i, piece) in pieces.iter().enumerate() {
            queue.try_push(Signal::Traces, encoded(piece), 4).unwrap();
            wait_until(Duration::from_secs(5), "batch written", || {
                queue.stats().signal(Signal::Traces).sent_requests == i as u64 + 1
            })
            .await;
            // Flushed per batch: a reader sees the line right away.
            let lines = read_lines(&check);
            assert_eq!(lines.len(), i + 1);
            assert_eq!(spans_of(&lines[i..]), spans_of([piece]));
        }
        assert_eq!(
            queue.drain(Instant::now() + Duration::from_secs(5)).await,
            DrainOutcome::Drained
        );
        assert_eq!(spans_of(&read_lines(&check)), spans_of(&pieces));
        assert_eq!(queue.stats().signal(Signal::Traces).sent_items, 12);
    });
    assert!(
        !dir.join("nested/traces.jsonl").exists(),
        "only per-core files"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn appends_to_an_existing_file() {
    let dir = temp_dir("file-append");
    let configured = dir.join("t.jsonl");
    for round in 0..2 {
        let cfg = exporter("file", ExporterKind::File(file_config(&configured, 100, 2)));
        run(move || async move {
            let queue = ExportQueue::start(&cfg, 0).unwrap();
            let piece = trace_request(&format!("round{round}"), 2, 2);
            queue.try_push(Signal::Traces, encoded(&piece), 2).unwrap();
            let done = queue.drain(Instant::now() + Duration::from_secs(5)).await;
            assert_eq!(done, DrainOutcome::Drained);
        });
    }
    let lines = read_lines(&dir.join("t.core0.jsonl"));
    assert_eq!(lines.len(), 2);
    assert_eq!(spans_of(&lines[1..])[0].name, "round1-0");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rotates_by_size_and_keeps_max_backups() {
    let dir = temp_dir("file-rotate");
    let configured = dir.join("traces.jsonl");
    let file = dir.join("traces.core0.jsonl");
    let cfg = exporter("file", ExporterKind::File(file_config(&configured, 1, 2)));
    const BATCHES: usize = 30;
    run(move || async move {
        let queue = ExportQueue::start(&cfg, 0).unwrap();
        // ~10 spans × 15 KB of attribute ≈ 150 KB of JSON per line: ~6 lines per MiB.
        for i in 0..BATCHES {
            let piece = trace_request(&format!("batch{i:02}"), 10, 15_000);
            queue.try_push(Signal::Traces, encoded(&piece), 10).unwrap();
        }
        assert_eq!(
            queue.drain(Instant::now() + Duration::from_secs(20)).await,
            DrainOutcome::Drained
        );
        assert_eq!(
            queue.stats().signal(Signal::Traces).sent_requests,
            BATCHES as u64
        );
    });
    let kept = [file.clone(), backup_path(&file, 1), backup_path(&file, 2)];
    assert!(
        !backup_path(&file, 3).exists(),
        "at most max_backups backups"
    );
    // Oldest first: .2, .1, then the live file; each within the limit.
    let mut batches = Vec::new();
    for path in kept.iter().rev() {
        let size = std::fs::metadata(path).unwrap().len();
        assert!(size <= 1 << 20, "{path:?} is {size} bytes");
        assert!(size > 600 << 10, "{path:?} was rotated early: {size} bytes");
        for line in read_lines(path) {
            let first = &spans_of([&line])[0].name;
            batches.push(first[5..7].parse::<usize>().unwrap());
        }
    }
    // The kept lines are the newest batches, in order, without gaps.
    let newest = BATCHES - batches.len();
    assert_eq!(batches, (newest..BATCHES).collect::<Vec<_>>());
    assert!(newest > 0, "older batches were rotated away");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn zero_backups_keeps_only_the_live_file() {
    let dir = temp_dir("file-nobackup");
    let configured = dir.join("logs.jsonl");
    let file = dir.join("logs.core0.jsonl");
    let cfg = exporter("file", ExporterKind::File(file_config(&configured, 1, 0)));
    run(move || async move {
        let queue = ExportQueue::start(&cfg, 0).unwrap();
        for i in 0..12 {
            let piece = trace_request(&format!("batch{i:02}"), 10, 15_000);
            queue.try_push(Signal::Traces, encoded(&piece), 10).unwrap();
        }
        let done = queue.drain(Instant::now() + Duration::from_secs(20)).await;
        assert_eq!(done, DrainOutcome::Drained);
    });
    assert!(file.exists());
    assert!(!backup_path(&file, 1).exists());
    let lines = read_lines(&file);
    assert!(!lines.is_empty());
    assert_eq!(spans_of(&lines).last().unwrap().name, "batch11-9");
    std::fs::remove_dir_all(&dir).unwrap();
}
