//! The `otlp` and `otlphttp` exporters deliver to a second shardtel process.

use crate::gen::{flatten, request, span};
use crate::harness::{flat_spans_in, wait_until, Shardtel};
use crate::test_config::{millis, Batch, Component, Pipeline};

fn forwarder(kind: &str, downstream: &Shardtel) -> Shardtel {
    let exporter = match kind {
        "otlp" => Component::otlp(&downstream.grpc_url()),
        _ => Component::otlphttp(&downstream.http_url()),
    };
    Shardtel::start_config(|c| {
        c.exporter(
            "downstream",
            exporter
                .set("compression", "gzip")
                .batch(Batch::timeout(millis(50))),
        )
        .traces(Pipeline::otlp_to(&["downstream"]))
    })
}

fn forward_through(kind: &str) {
    let downstream = Shardtel::start_config(|c| c.file_pipelines());
    let upstream = forwarder(kind, &downstream);
    let mut sent = Vec::new();
    for r in 0..30u64 {
        let req = request((0..40).map(|i| span(3, r * 40 + i % 8, i / 8)).collect());
        upstream.post_traces(&req);
        sent.push(req);
    }
    let expected = flatten(&sent);
    let got = || flat_spans_in(&downstream.out());
    assert!(
        wait_until(30, || got().len() >= expected.len()),
        "{} of {} spans arrived downstream; upstream log:\n{}\ndownstream log:\n{}",
        got().len(),
        expected.len(),
        upstream.log(),
        downstream.log()
    );
    assert_eq!(got(), expected);
    assert!(
        wait_until(5, || upstream.metric_sum(
            "shardtel_exporter_sent_spans_total",
            "exporter=\"downstream\""
        ) == expected.len() as u64),
        "{}",
        upstream.metrics()
    );
}

#[test]
fn otlp_grpc_exporter_to_second_shardtel() {
    forward_through("otlp");
}

#[test]
fn otlphttp_exporter_to_second_shardtel() {
    forward_through("otlphttp");
}
