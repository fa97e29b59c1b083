//! Draining a core within `engine.shutdown_timeout`: nothing new comes in, what is in flight
//! finishes, what the core holds goes out.

use std::time::Instant;

use super::serve::{Serving, Tasks};
use crate::telemetry::CoreState;

/// Drains the core: refuses new data, lets in-flight requests and mesh traffic finish, decides
/// what the sampler holds, drains the exporters, commits Kafka offsets, closes the ingest log.
pub(super) async fn drain(serving: Serving) {
    let Serving { core, tasks } = serving;
    let Tasks {
        consumers,
        recovery,
        publisher,
        allocator,
        ticker,
        spanmetrics,
    } = tasks;
    let deadline = Instant::now() + core.shutdown_timeout;
    core.set_state(CoreState::Draining);
    core.intake.start_draining();
    // The receivers' connections are told to close; the poll loop of the Kafka consumer stops.
    if let Some(otlp) = &core.receivers.otlp {
        otlp.stop_accepting().await;
    }
    // Scrape loops stop (a scrape in flight finishes as a request in flight).
    if let Some(prometheus) = &core.receivers.prometheus {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let _ = glommio::timer::timeout(remaining, async {
            prometheus.finish().await;
            Ok(())
        })
        .await;
    }
    if let Some(zipkin) = &core.receivers.zipkin {
        zipkin.stop_accepting().await;
    }
    if let Some(jaeger) = &core.receivers.jaeger {
        jaeger.stop_accepting().await;
    }
    if let Some(fluentforward) = &core.receivers.fluentforward {
        fluentforward.stop_accepting().await;
    }
    // In-flight requests finish.
    while core.intake.requests_in_flight() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The span metrics counted so far go to the metrics pipeline while the mesh still runs
    // (their series may be owned by another core).
    if let Some((task, stop)) = spanmetrics {
        stop.set(true);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let _ = glommio::timer::timeout(remaining, async { Ok(task.await) }).await;
        core.pipeline.flush_spanmetrics().await;
    }
    // Nothing more leaves this core: close the mesh; peers' consumers end once every sender
    // into them is closed and their channels are empty.
    core.pipeline.close_mesh();
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut finished = glommio::timer::timeout(remaining, async {
        for c in consumers {
            c.await;
        }
        Ok(())
    })
    .await
    .is_ok();
    // Every span this core owns has arrived: decide (or keep for the next start) what the
    // sampler still holds.
    if let Some((ticker, stop)) = ticker {
        stop.set(true);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let _ = glommio::timer::timeout(remaining, async { Ok(ticker.await) }).await;
    }
    finished &= core.pipeline.finish_sampling(deadline).await;
    let drained = core.pipeline.drain_exporters(deadline).await;
    if !(finished && drained) {
        // What this core still holds (mesh messages, kept spans, queued batches) may carry
        // other cores' requests; dropping it with the core releases their ingest-log frames as
        // if exported. From here no log of the process checkpoints: the next start replays
        // what was not delivered (at least once), instead of losing it.
        core.pipeline.keep_undelivered_for_replay();
    }
    // Kafka receiver: commit what was handed on, leave the group.
    if let Some(kafka) = &core.receivers.kafka {
        kafka.finish(drained).await;
    }
    if let Some(recovery) = recovery {
        recovery.cancel();
    }
    #[cfg(feature = "fault-injection")]
    close_delay(core.id).await;
    core.pipeline.close_ingest_log().await;
    publisher.cancel();
    if let Some(allocator) = allocator {
        allocator.cancel();
    }
    core.publish();
    core.set_state(CoreState::Stopped);
}

/// Test-only (feature `fault-injection`): `SHARDTEL_FAULT_CLOSE_DELAY=CORE:MS` holds core
/// `CORE` for `MS` milliseconds before it closes its ingest log, so that the other cores have
/// ended (and dropped what they held) by then: the order a drain that ran out of time can take.
#[cfg(feature = "fault-injection")]
async fn close_delay(core: usize) {
    let Ok(spec) = std::env::var("SHARDTEL_FAULT_CLOSE_DELAY") else {
        return;
    };
    let parsed = spec
        .split_once(':')
        .and_then(|(c, ms)| Some((c.parse::<usize>().ok()?, ms.parse::<u64>().ok()?)));
    if let Some((c, ms)) = parsed {
        if c == core {
            glommio::timer::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }
}
