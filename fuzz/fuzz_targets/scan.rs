//! Feeds arbitrary bytes to every entry point that sees untrusted input: the traces index
//! (then partition and re-frame what it accepts), the metrics and logs scanners, and gRPC
//! framing. Beyond "no panic", it checks the scanner is at least as strict as prost.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::reframe::{encode_traces, Encoded};
use shardtel_protocol::route::owner_core;
use shardtel_protocol::scan::{scan_logs, scan_metrics, SpanBatch, TracesIndex};
use shardtel_protocol::span::SpanView;

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

    let _ = shardtel_protocol::grpc::decode_message(&buf);
});
