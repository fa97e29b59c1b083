//! Feeds arbitrary bytes to every entry point that sees untrusted input: the traces index
//! (then partition and re-frame what it accepts), the metrics and logs scanners, the logs and
//! metrics index of the routing processor (`scan_items`, then re-frame every other item), and
//! gRPC framing. Beyond "no panic", it checks the scanner is at least as strict as prost and
//! that `scan_items` accepts and counts what the counting scanners do.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::reframe::{encode_items, encode_traces, Encoded};
use shardtel_protocol::route::owner_core;
use shardtel_protocol::scan::{scan_logs, scan_metrics, SpanBatch, TracesIndex};
use shardtel_protocol::span::SpanView;
use shardtel_protocol::Signal;

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);

    let mut index = TracesIndex::default();
    if index.scan(data).is_ok() {
        let req =
            ExportTraceServiceRequest::decode(data).expect("scan accepted what prost rejects");
        let n: usize = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(n, index.spans.len());
        for s in &index.spans {
            let _ = SpanView::new(&data[s.range.start as usize..s.range.end as usize]).fields();
        }
        let mut parts = Vec::new();
        index.partition(3, |t| owner_core(t, 3), &mut parts);
        let mut out = Encoded::default();
        for p in parts {
            encode_traces(
                &SpanBatch {
                    buf: buf.clone(),
                    index: p,
                    release_token: None,
                },
                &mut out,
            );
        }
        let back =
            ExportTraceServiceRequest::decode(out.to_bytes()).expect("re-framed output decodes");
        let m: usize = back
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(m, n);
    }

    if let Ok(c) = scan_metrics(data) {
        let req = ExportMetricsServiceRequest::decode(data)
            .expect("scan_metrics accepted what prost rejects");
        assert_eq!(c.resources as usize, req.resource_metrics.len());
    }
    if let Ok(c) = scan_logs(data) {
        let req =
            ExportLogsServiceRequest::decode(data).expect("scan_logs accepted what prost rejects");
        let n: usize = req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        assert_eq!(c.items as usize, n);
    }

    // The routing processor's index of logs and metrics requests.
    for signal in [Signal::Logs, Signal::Metrics] {
        let counted = match signal {
            Signal::Logs => scan_logs(data).map(|c| c.items),
            _ => scan_metrics(data).map(|c| c.items),
        };
        let mut index = TracesIndex::default();
        let indexed = index.scan_items(data, signal);
        assert_eq!(
            indexed.as_ref().ok().copied(),
            counted.as_ref().ok().map(|&n| n as u64),
            "scan_items and the counting scan disagree ({signal:?})"
        );
        if indexed.is_err() {
            continue;
        }
        let every_other: Vec<u32> = (0..index.spans.len() as u32).step_by(2).collect();
        let mut out = Encoded::default();
        encode_items(&buf, &index, &every_other, None, &mut out);
        let bytes = out.to_bytes();
        let kept = match signal {
            Signal::Logs => ExportLogsServiceRequest::decode(bytes)
                .expect("re-framed logs decode")
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum::<usize>(),
            _ => ExportMetricsServiceRequest::decode(bytes)
                .expect("re-framed metrics decode")
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .map(|s| s.metrics.len())
                .sum::<usize>(),
        };
        assert_eq!(kept, every_other.len(), "re-framed items ({signal:?})");
    }

    let _ = shardtel_protocol::grpc::decode_message(&buf);
});
