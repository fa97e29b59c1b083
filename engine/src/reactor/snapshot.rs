//! What a core publishes once a second: a snapshot of every component's counters, and how the
//! snapshots of all cores become metric families (each component describes its own).

use shardtel_processors::{ProcessorSnapshot, RouterSnapshot, SpanMetricsSnapshot};
use shardtel_sampler::SamplerStats;

use super::Core;
use crate::durability::IngestLogSnapshot;
use crate::memory_limiter::MemorySnapshot;
use crate::pipeline::{ExporterSnapshot, MeshSnapshot};
use crate::receivers::kafka::KafkaConsumerSnapshot;
use crate::receivers::listener::ListenerSnapshot;
use crate::receivers::otlp::ConnectionSnapshot;
use crate::receivers::prometheus::PrometheusSnapshot;
use crate::receivers::security::SecuritySnapshot;
use crate::receivers::{ReceiverSnapshot, Transport, TRANSPORTS};
use crate::telemetry::{Exposition, Families};

/// What one core publishes.
#[derive(Clone, Debug, Default)]
pub struct CoreSnapshot {
    /// Items accepted and refused, requests failed, per signal and transport.
    pub receivers: ReceiverSnapshot,
    /// OTLP connections served and refused.
    pub connections: Option<ConnectionSnapshot>,
    /// TLS handshakes and bearer-token refusals, per server receiver that has either.
    pub security: Vec<SecuritySnapshot>,
    /// Connections of the zipkin, jaeger and fluentforward listeners.
    pub listeners: Vec<ListenerSnapshot>,
    /// This core's Kafka consumer, when `[receivers.kafka]` runs.
    pub kafka_receiver: Option<KafkaConsumerSnapshot>,
    /// This core's scrapes, when `[receivers.prometheus]` runs.
    pub prometheus_receiver: Option<PrometheusSnapshot>,
    /// Name, kind and statistics of each exporter instance on this core.
    pub exporters: Vec<ExporterSnapshot>,
    /// Messages sent to and received from each other core over the mesh.
    pub mesh: MeshSnapshot,
    /// Tail sampler statistics, when the traces pipeline samples.
    pub sampler: Option<SamplerStats>,
    /// Counters of the attributes, resource and filter processors on this core.
    pub processors: Vec<ProcessorSnapshot>,
    /// Counters of the routing processors on this core.
    pub routers: Vec<RouterSnapshot>,
    /// The spanmetrics processor's counters.
    pub spanmetrics: Option<SpanMetricsSnapshot>,
    /// The memory limiter, when a pipeline lists one.
    pub memory: Option<MemorySnapshot>,
    /// The ingest log, with `durability = "ack_after_sync"`.
    pub ingest_log: Option<IngestLogSnapshot>,
}

/// The snapshot of `core` now.
pub(super) fn take(core: &Core) -> CoreSnapshot {
    let r = &core.receivers;
    let kafka_receiver = r.kafka.as_ref().and_then(|k| k.snapshot());
    let prometheus_receiver = r.prometheus.as_ref().map(|p| p.snapshot());
    let mut listeners = Vec::new();
    listeners.extend(r.zipkin.as_ref().map(|z| z.snapshot()));
    if let Some(jaeger) = &r.jaeger {
        listeners.extend(jaeger.snapshots());
    }
    listeners.extend(r.fluentforward.as_ref().map(|f| f.snapshot()));
    let mut security = Vec::new();
    security.extend(r.otlp.as_ref().and_then(|o| o.security()));
    security.extend(r.zipkin.as_ref().and_then(|z| z.security()));
    security.extend(r.jaeger.as_ref().and_then(|j| j.security()));
    security.extend(r.fluentforward.as_ref().and_then(|f| f.security()));
    let mut active = [false; TRANSPORTS];
    active[Transport::Kafka as usize] = kafka_receiver.is_some();
    active[Transport::Scrape as usize] = prometheus_receiver.is_some();
    for l in &listeners {
        active[l.transport as usize] = true;
    }
    CoreSnapshot {
        receivers: core.intake.counters().snapshot(active),
        listeners,
        connections: core.receivers.otlp.as_ref().and_then(|o| o.connections()),
        security,
        kafka_receiver,
        prometheus_receiver,
        exporters: core.pipeline.exporter_snapshot(),
        mesh: core.pipeline.mesh_snapshot(),
        sampler: core.pipeline.sampler_snapshot(),
        processors: core.pipeline.processor_snapshot(),
        routers: core.pipeline.router_snapshot(),
        spanmetrics: core.pipeline.spanmetrics_snapshot(),
        memory: core.intake.memory().map(|m| m.snapshot()),
        ingest_log: core.pipeline.ingest_log_snapshot(),
    }
}

impl Families for CoreSnapshot {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        component(cores, |s| Some(&s.receivers), out);
        component(cores, |s| Some(&s.exporters[..]), out);
        component(cores, |s| s.kafka_receiver.as_ref(), out);
        component(cores, |s| s.prometheus_receiver.as_ref(), out);
        component(cores, |s| s.connections.as_ref(), out);
        component(cores, |s| Some(&s.security[..]), out);
        component(cores, |s| Some(&s.listeners[..]), out);
        component(cores, |s| Some(&s.mesh), out);
        component(cores, |s| s.sampler.as_ref(), out);
        component(cores, |s| Some(&s.processors[..]), out);
        component(cores, |s| Some(&s.routers[..]), out);
        component(cores, |s| s.spanmetrics.as_ref(), out);
        component(cores, |s| s.memory.as_ref(), out);
        component(cores, |s| s.ingest_log.as_ref(), out);
    }
}

/// Hands the part `get` of every core's snapshot that has one to its component's families.
fn component<T: Families + ?Sized>(
    cores: &[(usize, &CoreSnapshot)],
    get: impl Fn(&CoreSnapshot) -> Option<&T>,
    out: &mut Exposition,
) {
    let rows: Vec<(usize, &T)> = cores
        .iter()
        .filter_map(|(core, s)| get(s).map(|part| (*core, part)))
        .collect();
    T::families(&rows, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::exposition::parse;
    use shardtel_sinks::ExporterStats;

    #[test]
    fn a_quoted_component_name_is_escaped_and_the_metrics_parse() {
        let name = "a\"b\\c\nd";
        let stats = ExporterStats {
            sent_items: [3, 0, 0],
            ..Default::default()
        };
        let exporter = |kind| ExporterSnapshot {
            name: name.to_string(),
            kind,
            stats,
        };
        let snapshot = CoreSnapshot {
            exporters: vec![
                exporter("otlp"),
                exporter("kafka"),
                exporter("prometheusremotewrite"),
            ],
            mesh: MeshSnapshot {
                sent: vec![0, 4],
                received: vec![0, 1],
                send_timeouts: 0,
            },
            ..Default::default()
        };
        let other = CoreSnapshot {
            mesh: MeshSnapshot {
                sent: vec![1, 0],
                received: vec![2, 0],
                send_timeouts: 1,
            },
            ..Default::default()
        };
        let mut out = Exposition::default();
        CoreSnapshot::families(&[(0, &snapshot), (1, &other)], &mut out);
        let text = out.render();
        assert!(
            text.contains(
                "shardtel_exporter_sent_spans_total{exporter=\"a\\\"b\\\\c\\nd\",type=\"otlp\",core=\"0\"} 3\n"
            ),
            "{text}"
        );
        let samples = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let exporters: Vec<_> = samples
            .iter()
            .filter(|s| s.series == "shardtel_exporter_kafka_produced_messages_total")
            .collect();
        assert_eq!(exporters.len(), 1);
        assert_eq!(
            exporters[0].labels[0],
            ("exporter".to_string(), name.to_string())
        );
        // Mesh depth: core 0 sent 4 to core 1, which received 2 of them.
        assert!(samples
            .iter()
            .any(|s| s.series == "shardtel_mesh_channel_depth"
                && s.labels
                    == [
                        ("from".to_string(), "0".to_string()),
                        ("to".to_string(), "1".to_string())
                    ]
                && s.value == 2.0));
        // Every family once.
        assert_eq!(
            text.matches("# TYPE shardtel_exporter_sent_spans_total ")
                .count(),
            1
        );
    }
}
