//! Starting a core: everything that can fail, in the order that lets every core connect to
//! every other.

use std::rc::Rc;

use glommio::task::JoinHandle;
use shardtel_sinks::DiskQueueSettings;

use super::{Core, CoreSetup, Receivers, StartError};
use crate::durability;
use crate::memory_limiter::{default_inflight_bytes, CoreLimiter};
use crate::pipeline::Pipeline;
use crate::receivers::{fluentforward, jaeger, kafka, otlp, prometheus, zipkin, Intake, Limits};

/// A started core and the tasks that already run: the mesh consumers (one per peer) and,
/// with durability, the recovery of the ingest log.
pub(super) struct Started {
    pub(super) core: Rc<Core>,
    pub(super) consumers: Vec<JoinHandle<()>>,
    pub(super) recovery: Option<JoinHandle<()>>,
}

/// Builds the core's pipeline and intake, connects the mesh, starts replaying what the ingest
/// log holds, and binds the receivers.
pub(super) async fn start(setup: CoreSetup) -> Result<Started, StartError> {
    let CoreSetup {
        id,
        cores,
        config,
        mesh,
        board,
        memory,
        checkpoints,
        otlp_security,
        exporter_tls,
        ..
    } = setup;

    // Write-ahead logs live under the data directory (absolute: glommio's file calls need it).
    let data_dir = std::path::absolute(&config.engine.data_dir).map_err(StartError::DataDir)?;
    let disk_queues = DiskQueueSettings {
        root: data_dir.join("queues"),
        segment_size: config.engine.wal.segment_size,
        group_commit_interval: config.engine.wal.group_commit_interval,
        group_commit_bytes: config.engine.wal.group_commit_bytes as usize,
        memory_bytes: memory
            .as_ref()
            .map_or(DiskQueueSettings::MEMORY_BYTES, |m| {
                m.disk_queue_memory_bytes
            }),
        cache_bytes: memory
            .as_ref()
            .map_or(DiskQueueSettings::CACHE_BYTES, |m| m.disk_queue_cache_bytes),
    };
    let pipeline = Pipeline::build(
        id,
        cores,
        &config,
        &data_dir,
        &disk_queues,
        checkpoints,
        &exporter_tls,
    );
    let pipeline = Rc::new(pipeline.await?);

    let otlp_config = config.receivers.otlp.as_ref();
    let max_recv_msg_size = otlp_config.map_or(4 << 20, |o| o.max_recv_msg_size);
    let limits = Limits {
        max_recv_msg_size,
        max_inflight_bytes: memory
            .as_ref()
            .map_or(default_inflight_bytes(max_recv_msg_size), |m| {
                m.max_inflight_bytes
            }),
        max_concurrent_streams: otlp_config.map_or(256, |o| o.max_concurrent_streams),
    };
    let limiter = memory
        .as_ref()
        .map(|m| CoreLimiter::new(m.gauge.clone(), &config, m.buffered_limit));
    let intake = Rc::new(Intake::new(pipeline.clone(), limits, limiter));

    // Mesh: receiving ends first (as tasks), then sending ends, so every connect finds its
    // peer.
    let consumers = mesh
        .receivers
        .into_iter()
        .enumerate()
        .filter_map(|(from, rx)| {
            let rx = rx?;
            Some(glommio::spawn_local(pipeline.clone().consume_mesh(from, rx)).detach())
        })
        .collect();
    pipeline.connect_mesh(mesh.senders).await;

    // Logs left by cores that no longer exist, drained by this core (start-up: std::fs lists).
    let (orphan_ingest, orphan_queues) = if pipeline.durable() {
        durability::orphans_of(&config, &data_dir, id, cores)
    } else {
        (Vec::new(), Vec::new())
    };
    pipeline.adopt_orphaned_queues(orphan_queues);
    // Requests acknowledged before a restart but not yet safe downstream are routed again;
    // new requests are served meanwhile.
    let recovery = pipeline.durable().then(|| {
        let recover = pipeline
            .clone()
            .recover(orphan_ingest, config.engine.wal.clone());
        glommio::spawn_local(recover).detach()
    });

    // Receivers on every core: the same ports, SO_REUSEPORT.
    let otlp = match otlp_config {
        Some(o) => Some(otlp::start(
            intake.clone(),
            o,
            otlp_security,
            cores,
            memory.as_ref().map(|m| m.connection_bytes),
        )?),
        None => None,
    };
    // Kafka receiver: this core's consumer of the group (stops polling when draining starts).
    let kafka = kafka::start(intake.clone(), &config)?;
    // Prometheus scrapes: the targets this core owns.
    let prometheus = prometheus::start(intake.clone(), &config, cores)?;
    // Other formats, translated to OTLP on this core.
    let r = &config.receivers;
    let zipkin = match &r.zipkin {
        Some(z) => Some(zipkin::start(intake.clone(), z, cores)?),
        None => None,
    };
    let jaeger = match &r.jaeger {
        Some(j) => Some(jaeger::start(intake.clone(), j, cores)?),
        None => None,
    };
    let fluentforward = match &r.fluentforward {
        Some(f) => Some(fluentforward::start(intake.clone(), f, cores)?),
        None => None,
    };

    Ok(Started {
        core: Rc::new(Core {
            id,
            pipeline,
            intake,
            receivers: Receivers {
                otlp,
                kafka,
                prometheus,
                zipkin,
                jaeger,
                fluentforward,
            },
            board,
            shutdown_timeout: config.engine.shutdown_timeout,
        }),
        consumers,
        recovery,
    })
}
