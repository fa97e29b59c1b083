//! The `otlp` and `otlphttp` exporters deliver to a second shardtel process.

use prost::Message;

use crate::gen::{flatten, request, span};
use crate::harness::{base_config, file_pipelines, read_traces, wait_until, Shardtel};

fn forwarder(kind: &str, downstream: &Shardtel) -> Shardtel {
    let endpoint = match kind {
        "otlp" => downstream.grpc_url(),
        _ => downstream.http_url(),
    };
    let kind = kind.to_string();
    Shardtel::start(move |dir, ports| {
        base_config(dir, ports, "")
            + &format!(
                r#"
[exporters.downstream]
type = "{kind}"
endpoint = "{endpoint}"
compression = "gzip"
[exporters.downstream.batch]
timeout = "50ms"

[pipelines.traces]
receivers = ["otlp"]
exporters = ["downstream"]
"#
            )
    })
}

fn forward_through(kind: &str) {
    let downstream =
        Shardtel::start(|dir, ports| base_config(dir, ports, "") + &file_pipelines(dir));
    let upstream = forwarder(kind, &downstream);
    let client = reqwest::blocking::Client::new();
    let mut sent = Vec::new();
    for r in 0..30u64 {
        let req = request((0..40).map(|i| span(3, r * 40 + i % 8, i / 8)).collect());
        let resp = client
            .post(format!("{}/v1/traces", upstream.http_url()))
            .header("content-type", "application/x-protobuf")
            .body(req.encode_to_vec())
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        sent.push(req);
    }
    let expected = flatten(&sent);
    let got = || {
        flatten(
            &read_traces(&downstream.out())
                .into_iter()
                .map(|(_, r)| r)
                .collect::<Vec<_>>(),
        )
    };
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
