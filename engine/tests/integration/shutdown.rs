//! Graceful shutdown (SIGTERM) with a tail sampler: what happens to the traces it still holds,
//! and that a destination that is down cannot hold the process past `shutdown_timeout`.

use std::collections::HashSet;
use std::time::Duration;

use prost::Message;

use crate::durability::span_ids_in;
use crate::gen::{request, span};
use crate::harness::{base_config, file_pipelines, free_port, wait_until, Shardtel};

fn post(client: &reqwest::blocking::Client, st: &Shardtel, body: Vec<u8>) -> reqwest::Result<u16> {
    client
        .post(format!("{}/v1/traces", st.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .map(|r| r.status().as_u16())
}

/// With `durability = "ack_after_sync"`, `on_shutdown = "drop"` drops no acknowledged span: the
/// traces the sampler held at SIGTERM stay in the ingest log and the next start replays them.
#[test]
fn on_shutdown_drop_with_durability_replays_pending_traces_at_the_next_start() {
    let sampler = r#"
[processors.tail_sampling]
decision_wait = "1h"
on_shutdown = "drop"
[[processors.tail_sampling.policies]]
name = "all"
type = "always_sample"
"#;
    let mut st = Shardtel::start(|dir, ports| {
        base_config(dir, ports, "")
            + sampler
            + &file_pipelines(dir).replace(
                "exporters = [\"file_traces\"]",
                "processors = [\"tail_sampling\"]\nexporters = [\"file_traces\"]",
            )
    });
    let client = reqwest::blocking::Client::new();
    let mut sent = HashSet::new();
    for r in 0..5u64 {
        let spans: Vec<_> = (0..20).map(|i| span(11, r * 4 + i % 4, i / 4)).collect();
        sent.extend(spans.iter().map(|s| s.span_id.clone()));
        let status = post(&client, &st, request(spans).encode_to_vec()).unwrap();
        assert_eq!(status, 200);
    }
    assert!(
        wait_until(30, || st.metric_sum("shardtel_sampler_buffered_spans", "")
            == sent.len() as u64),
        "the sampler does not hold every span: {}",
        st.metrics()
    );
    assert_eq!(st.stop(), 0, "log:\n{}", st.log());
    assert!(
        span_ids_in(&st.out()).is_empty(),
        "pending traces were exported at shutdown despite on_shutdown = \"drop\""
    );

    // The next start (deciding after 1 s now) replays them and exports them whole.
    let config = std::fs::read_to_string(&st.config_path).unwrap();
    std::fs::write(
        &st.config_path,
        config.replace("decision_wait = \"1h\"", "decision_wait = \"1s\""),
    )
    .unwrap();
    st.spawn();
    assert!(
        wait_until(60, || span_ids_in(&st.out()).is_superset(&sent)),
        "{} of {} acknowledged spans exported after the restart; log:\n{}",
        span_ids_in(&st.out()).intersection(&sent).count(),
        sent.len(),
        st.log()
    );
    assert!(st.log().contains("replaying"), "no replay:\n{}", st.log());
    assert_eq!(st.stop(), 0);
}

/// A destination that is down, an in-memory queue that is full, and a sampler that still holds
/// traces at SIGTERM: shardtel still exits once `shutdown_timeout` has passed.
fn shutdown_with_a_full_queue(durability: &str) {
    let dead = free_port();
    let mut st = Shardtel::start(|dir, ports| {
        base_config(dir, ports, "").replace(
            "shutdown_timeout = \"10s\"",
            &format!("shutdown_timeout = \"2s\"\ndurability = \"{durability}\""),
        ) + &format!(
            r#"
[processors.tail_sampling]
decision_wait = "1h"
max_traces_per_core = 1
[[processors.tail_sampling.policies]]
name = "all"
type = "always_sample"

[exporters.down]
type = "otlp"
endpoint = "http://127.0.0.1:{dead}"
batch = {{ max_bytes = "16KiB", timeout = "10ms" }}
queue = {{ storage = "memory", max_bytes = "64KiB" }}
retry = {{ initial_interval = "50ms", max_interval = "200ms", max_elapsed_time = "0s" }}

[pipelines.traces]
receivers = ["otlp"]
processors = ["tail_sampling"]
exporters = ["down"]
"#
        )
    });
    // Every new trace decides the one before it on its core (max_traces_per_core = 1), so kept
    // spans fill the queues until a request is refused (with an ingest log: 503 before it is
    // written) or waits for room that never comes.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut full = false;
    for r in 0..200u64 {
        // One trace per request, all of the same size: once a decided trace does not fit in
        // its core's queue, neither does the one the sampler still holds.
        let spans: Vec<_> = (0..40).map(|i| span(12, 1000 + r, i)).collect();
        match post(&client, &st, request(spans).encode_to_vec()) {
            Ok(200) => {}
            Ok(503) | Err(_) => {
                full = true;
                break;
            }
            Ok(status) => panic!("status {status}; log:\n{}", st.log()),
        }
    }
    assert!(full, "the queues never filled: {}", st.metrics());
    assert!(
        wait_until(30, || st.metric_sum("shardtel_sampler_buffered_traces", "")
            > 0),
        "the sampler holds no trace: {}",
        st.metrics()
    );
    // Harness::stop panics if the process is still running 30 s after SIGTERM.
    assert_eq!(st.stop(), 0, "log:\n{}", st.log());
}

#[test]
fn shutdown_with_a_full_queue_and_a_dead_destination_ends_within_the_timeout() {
    shutdown_with_a_full_queue("none");
}

#[test]
fn durable_shutdown_with_a_full_queue_and_a_dead_destination_ends_within_the_timeout() {
    shutdown_with_a_full_queue("ack_after_sync");
}
