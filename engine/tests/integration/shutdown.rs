//! Graceful shutdown (SIGTERM) with a tail sampler: what happens to the traces it still holds,
//! and that a destination that is down cannot hold the process past `shutdown_timeout`.

use std::collections::HashSet;
use std::time::Duration;

use prost::Message;
use shardtel_protocol::Signal;

use crate::gen::{request, span};
use crate::harness::{free_port, span_ids_in, wait_until, Shardtel};
use crate::test_config::{
    millis, secs, Batch, Component, Durability, OnShutdown, Pipeline, Queue, Retry, TailSampling,
};

/// How long past `shutdown_timeout` the process may take to exit: noticing the signal (the
/// reactors poll for it every 50 ms), closing the logs, joining the reactor threads and
/// exiting, on a machine that other tests load.
const EXIT_MARGIN: Duration = Duration::from_secs(3);

/// With `durability = "ack_after_sync"`, `on_shutdown = "drop"` drops no acknowledged span: the
/// traces the sampler held at SIGTERM stay in the ingest log and the next start replays them.
#[test]
fn on_shutdown_drop_with_durability_replays_pending_traces_at_the_next_start() {
    let sampler =
        |decision_wait| TailSampling::keep_all(decision_wait).on_shutdown(OnShutdown::Drop);
    let mut st = Shardtel::start_config(|c| {
        c.processor("tail_sampling", sampler(secs(3600)))
            .file_pipelines()
            .with_traces(|p| p.processors(&["tail_sampling"]))
    });
    let client = reqwest::blocking::Client::new();
    let mut sent = HashSet::new();
    for r in 0..5u64 {
        let spans: Vec<_> = (0..20).map(|i| span(11, r * 4 + i % 4, i / 4)).collect();
        sent.extend(spans.iter().map(|s| s.span_id.clone()));
        let response = st.post(&client, Signal::Traces, request(spans).encode_to_vec());
        assert_eq!(response.unwrap().status(), 200);
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
    st.reconfigure(|c| c.replace_processor("tail_sampling", sampler(secs(1))));
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
/// traces at SIGTERM: shardtel exits once `shutdown_timeout` has passed (not before: the
/// drain waits for the destination until then), within [`EXIT_MARGIN`].
/// Returns the running harness (stopped) and the ids of the spans it acknowledged.
fn shutdown_with_a_full_queue(durability: Durability) -> (Shardtel, HashSet<Vec<u8>>) {
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
    let dead = free_port();
    let mut st = Shardtel::start_config(|c| {
        c.with(|c| {
            c.engine.shutdown_timeout = SHUTDOWN_TIMEOUT;
            c.engine.durability = Some(durability);
        })
        .processor(
            "tail_sampling",
            TailSampling::keep_all(secs(3600)).max_traces_per_core(1),
        )
        .exporter(
            "down",
            Component::otlp(&format!("http://127.0.0.1:{dead}"))
                .batch(Batch {
                    max_bytes: Some(16 << 10),
                    timeout: Some(millis(10)),
                    ..Batch::default()
                })
                .queue(Queue::memory(64 << 10))
                .retry(Retry::forever(millis(50), millis(200))),
        )
        .traces(Pipeline::otlp_to(&["down"]).processors(&["tail_sampling"]))
    });
    // Every new trace decides the one before it on its core (max_traces_per_core = 1), so kept
    // spans fill the queues until a request is refused (with an ingest log: 503 before it is
    // written) or waits for room that never comes.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut full = false;
    let mut acked = HashSet::new();
    for r in 0..200u64 {
        // One trace per request, all of the same size: once a decided trace does not fit in
        // its core's queue, neither does the one the sampler still holds.
        let spans: Vec<_> = (0..40).map(|i| span(12, 1000 + r, i)).collect();
        let ids: Vec<_> = spans.iter().map(|s| s.span_id.clone()).collect();
        let body = request(spans).encode_to_vec();
        match st
            .post(&client, Signal::Traces, body)
            .map(|r| r.status().as_u16())
        {
            Ok(200) => acked.extend(ids),
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
    let (code, took) = st.stop_timed();
    eprintln!("shardtel exited {took:?} after SIGTERM (shutdown_timeout {SHUTDOWN_TIMEOUT:?})");
    assert_eq!(code, 0, "log:\n{}", st.log());
    // The dead destination holds the drain until the deadline: the timeout is what ends it.
    assert!(
        took >= SHUTDOWN_TIMEOUT,
        "exited {took:?} after SIGTERM, before shutdown_timeout, with data queued for a dead \
         destination; log:\n{}",
        st.log()
    );
    assert!(
        took <= SHUTDOWN_TIMEOUT + EXIT_MARGIN,
        "exited {took:?} after SIGTERM: over shutdown_timeout ({SHUTDOWN_TIMEOUT:?}) + \
         {EXIT_MARGIN:?}; log:\n{}",
        st.log()
    );
    (st, acked)
}

#[test]
fn shutdown_with_a_full_queue_and_a_dead_destination_ends_within_the_timeout() {
    shutdown_with_a_full_queue(Durability::None);
}

/// The same with `ack_after_sync`, then a restart whose destination is up: every acknowledged
/// span arrives. Each request's spans are owned by both cores, so at the deadline one core's
/// undelivered batches hold the other's requests: dropping them with the core must not let
/// the other core's ingest log checkpoint past those requests.
#[test]
fn durable_shutdown_with_a_full_queue_and_a_dead_destination_ends_within_the_timeout() {
    let (mut st, acked) = shutdown_with_a_full_queue(Durability::AckAfterSync);
    assert!(!acked.is_empty());
    st.reconfigure(|c| c.replace_processor("tail_sampling", TailSampling::keep_all(secs(1))));
    restart_with_the_destination_up(st, &acked);
}

/// A drain that runs out of time on one core must not let another core's ingest log
/// checkpoint past requests the first core held. Every trace here is owned by core 1, so the
/// requests that arrive on core 0 (every request on a connection of its own: both cores get
/// some) are logged by core 0 and held by core 1, whose destination is down. Core 0 is held
/// back before it closes its log (`SHARDTEL_FAULT_CLOSE_DELAY`) until core 1 has ended and
/// dropped what it held, which releases those frames as if they had been exported. After a
/// restart with the destination up, every acknowledged span must arrive.
#[test]
fn a_drain_out_of_time_loses_no_request_that_another_core_held() {
    let dead = free_port();
    let mut st = Shardtel::start_config_with(
        |c| {
            c.with(|c| {
                c.engine.shutdown_timeout = Duration::from_secs(1);
                c.engine.durability = Some(Durability::AckAfterSync);
            })
            .processor("tail_sampling", TailSampling::keep_all(secs(1)))
            .exporter(
                "down",
                Component::otlp(&format!("http://127.0.0.1:{dead}"))
                    .batch(Batch::timeout(millis(10)))
                    .queue(Queue::memory(16 << 20))
                    .retry(Retry::forever(millis(50), millis(200))),
            )
            .traces(Pipeline::otlp_to(&["down"]).processors(&["tail_sampling"]))
        },
        |command| {
            command.env("SHARDTEL_FAULT_CLOSE_DELAY", "0:1500");
        },
    );
    let owned_by_core_1 = (0u64..)
        .filter(|&t| {
            let id: shardtel_protocol::TraceId = crate::gen::trace_id(13, t).try_into().unwrap();
            shardtel_protocol::route::owner_core(&id, 2) == 1
        })
        .take(60);
    let mut acked = HashSet::new();
    for t in owned_by_core_1 {
        // A connection of its own: SO_REUSEPORT spreads them over both cores.
        let client = reqwest::blocking::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let spans: Vec<_> = (0..5).map(|i| span(13, t, i)).collect();
        let ids: Vec<_> = spans.iter().map(|s| s.span_id.clone()).collect();
        let response = st.post(&client, Signal::Traces, request(spans).encode_to_vec());
        assert_eq!(response.unwrap().status(), 200, "log:\n{}", st.log());
        acked.extend(ids);
    }
    // Decided and queued for the dead destination on core 1.
    assert!(
        wait_until(30, || st.metric_sum("shardtel_sampler_buffered_traces", "")
            == 0),
        "{}",
        st.metrics()
    );
    assert_eq!(st.stop(), 0, "log:\n{}", st.log());

    restart_with_the_destination_up(st, &acked);
}

/// Restarts `st` with its exporter `down` replaced by a file exporter: every span of `acked`
/// must arrive (the ingest log replays what was not delivered before the stop).
fn restart_with_the_destination_up(mut st: Shardtel, acked: &HashSet<Vec<u8>>) {
    st.reconfigure(|c| {
        let out = c.out_dir().join("traces.jsonl");
        c.exporters.insert("down".into(), Component::file(out));
    });
    st.spawn();
    assert!(
        wait_until(60, || span_ids_in(&st.out()).is_superset(acked)),
        "{} of {} acknowledged spans exported after the restart; log:\n{}",
        span_ids_in(&st.out()).intersection(acked).count(),
        acked.len(),
        st.log()
    );
    assert_eq!(st.stop(), 0);
}
