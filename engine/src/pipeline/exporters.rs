//! The exporters of one core: one [`ExportQueue`] per exporter some pipeline lists, the queues
//! of each signal's pipeline, how a piece is pushed to them (refused when full, or waiting for
//! room), what a piece is charged, and the exporter metric families.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use shardtel_config::Config;
use shardtel_processors::ExporterSet;
use shardtel_protocol::reframe::Encoded;
use shardtel_protocol::scan::SpanBatch;
use shardtel_protocol::Signal;
use shardtel_sinks::prometheus::InvalidReason;
use shardtel_sinks::{
    DiskQueueSettings, DrainOutcome, ExportQueue, ExporterStats, PreparedSettings,
};
use shardtel_tls::ClientTls;
use shardtel_wal::WalStats;

use super::{BuildError, IngestError, Overload};
use crate::durability::wal_fsync_latency;
use crate::telemetry::{label_values, Column, Exposition, Families, LabelValues, MetricType};

/// What an export queue is charged for a piece of `piece` bytes whose chunks are slices of a
/// request buffer of `buffer` bytes: the buffer stays in memory while any slice of it does, so
/// the piece is charged its own bytes but at least a quarter of the buffer (as the tail sampler
/// charges what it holds). Every buffer a queue keeps alive is then charged at least a quarter
/// by some piece: a queue holds at most four times its `max_bytes` in request buffers. Pieces
/// of one buffer on several cores or in several batches are each charged (a conservative
/// count).
pub fn queue_charge(piece: usize, buffer: usize) -> usize {
    piece.max(buffer / 4)
}

/// The TLS settings of the exporters with `https://` endpoints, by name; built once before the
/// reactors start ([`exporter_tls`]), shared by every core.
pub type ExporterTls = BTreeMap<String, ClientTls>;

/// Reads the TLS files of every exporter some pipeline of `config` lists that has an
/// `https://` endpoint (see [`shardtel_sinks::client_tls`]). Call it before the reactors
/// start.
pub fn exporter_tls(config: &Config) -> Result<ExporterTls, Box<BuildError>> {
    let mut built = ExporterTls::new();
    // Kafka's TLS is librdkafka's: what it gives away is said here, once per start or reload.
    for (name, cfg) in &config.exporters {
        if let shardtel_config::ExporterKind::Kafka(k) = &cfg.kind {
            for warning in k.auth.warnings() {
                log::warn!("exporters.{name}: {warning}");
            }
        }
    }
    if let Some(k) = &config.receivers.kafka {
        for warning in k.auth.warnings() {
            log::warn!("receivers.kafka: {warning}");
        }
    }
    let pipelines = [
        &config.pipelines.traces,
        &config.pipelines.metrics,
        &config.pipelines.logs,
    ];
    for name in pipelines.into_iter().flatten().flat_map(|p| &p.exporters) {
        let Some(cfg) = config.exporters.get(name) else {
            continue;
        };
        if built.contains_key(name) {
            continue;
        }
        let tls = shardtel_sinks::client_tls(cfg).map_err(|source| {
            Box::new(BuildError::Exporter {
                name: name.clone(),
                source,
            })
        })?;
        if let Some(tls) = tls {
            built.insert(name.clone(), tls);
        }
    }
    Ok(built)
}

/// The export queues of one core.
pub(super) struct Exporters {
    /// Every exporter some pipeline lists, one instance each, by name.
    by_name: BTreeMap<String, Rc<ExportQueue>>,
    /// The exporters of each signal's pipeline (index: [`Signal::index`]).
    by_signal: [Vec<Rc<ExportQueue>>; 3],
}

impl Exporters {
    /// Starts one queue per exporter the pipelines of `config` list, on core `core` of `cores`;
    /// `tls`: what [`exporter_tls`] built.
    pub(super) async fn start(
        config: &Config,
        core: usize,
        cores: usize,
        disk_queues: &DiskQueueSettings,
        tls: &ExporterTls,
    ) -> Result<Exporters, BuildError> {
        let mut by_name: BTreeMap<String, Rc<ExportQueue>> = BTreeMap::new();
        let mut by_signal: [Vec<Rc<ExportQueue>>; 3] = Default::default();
        for (signal, pipeline) in [
            (Signal::Traces, &config.pipelines.traces),
            (Signal::Metrics, &config.pipelines.metrics),
            (Signal::Logs, &config.pipelines.logs),
        ] {
            let Some(pipeline) = pipeline else { continue };
            for name in &pipeline.exporters {
                let queue = match by_name.get(name) {
                    Some(q) => q.clone(),
                    None => {
                        let Some(cfg) = config.exporters.get(name) else {
                            return Err(BuildError::UndefinedExporter { name: name.clone() });
                        };
                        let queue = ExportQueue::start_with_storage(
                            cfg,
                            core,
                            cores,
                            Some(disk_queues),
                            tls.get(name),
                        )
                        .await
                        .map_err(|source| BuildError::Exporter {
                            name: name.clone(),
                            source,
                        })?;
                        by_name.insert(name.clone(), queue.clone());
                        queue
                    }
                };
                by_signal[signal.index()].push(queue);
            }
        }
        Ok(Exporters { by_name, by_signal })
    }

    /// New settings from `config` (a reload) for the exporters `names` (`tls`: what
    /// [`exporter_tls`] built for `config`), ready to swap into their queues
    /// ([`ExportQueue::apply_settings`]).
    pub(super) fn prepare_settings(
        &self,
        config: &Config,
        names: &[String],
        cores: usize,
        tls: &ExporterTls,
    ) -> Result<Vec<(Rc<ExportQueue>, PreparedSettings)>, Box<BuildError>> {
        let mut prepared = Vec::with_capacity(names.len());
        for name in names {
            let (Some(cfg), Some(queue)) = (config.exporters.get(name), self.by_name.get(name))
            else {
                return Err(Box::new(BuildError::UndefinedExporter {
                    name: name.clone(),
                }));
            };
            let settings = queue
                .prepare_settings(cfg, cores, tls.get(name))
                .map_err(|source| {
                    Box::new(BuildError::Exporter {
                        name: name.clone(),
                        source,
                    })
                })?;
            prepared.push((queue.clone(), settings));
        }
        Ok(prepared)
    }

    /// Every exporter, by name.
    pub(super) fn by_name(&self) -> &BTreeMap<String, Rc<ExportQueue>> {
        &self.by_name
    }

    /// The exporters of `signal`'s pipeline (empty without one).
    pub(super) fn of(&self, signal: Signal) -> &[Rc<ExportQueue>] {
        &self.by_signal[signal.index()]
    }

    /// Bytes the queues hold in memory now.
    pub(super) fn queued_bytes(&self) -> usize {
        self.by_name.values().map(|e| e.queued_bytes()).sum()
    }

    /// Whether an exporter of the traces pipeline cuts messages from the spans' index.
    pub(super) fn traces_want_index(&self) -> bool {
        self.of(Signal::Traces).iter().any(|e| e.wants_span_index())
    }

    /// Hands an encoded piece that is charged `charge` bytes (see [`queue_charge`]) to every
    /// exporter of the signal's pipeline, refusing if any queue is full. `index`: the spans the
    /// piece was encoded from, for exporters that cut messages from it.
    pub(super) fn push_now(
        &self,
        signal: Signal,
        piece: Encoded,
        index: Option<&Arc<SpanBatch>>,
        items: u64,
        charge: usize,
    ) -> Result<(), IngestError> {
        self.push_now_to(signal, ExporterSet::MAX, piece, index, items, charge)
    }

    /// The exporters of `signal`'s pipeline in `set` (bits of their positions in its list).
    fn of_set(&self, signal: Signal, set: ExporterSet) -> impl Iterator<Item = &Rc<ExportQueue>> {
        self.of(signal)
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i >= 64 || set & (1 << i) != 0)
            .map(|(_, e)| e)
    }

    /// Whether every exporter of `set` has room for `bytes`.
    pub(super) fn has_room_in(&self, signal: Signal, set: ExporterSet, bytes: usize) -> bool {
        self.of_set(signal, set).all(|e| e.has_room(bytes))
    }

    /// [`Exporters::push_now`] to the exporters of `set` only (a routing processor's choice):
    /// each gets a reference to the same piece.
    pub(super) fn push_now_to(
        &self,
        signal: Signal,
        set: ExporterSet,
        piece: Encoded,
        index: Option<&Arc<SpanBatch>>,
        items: u64,
        charge: usize,
    ) -> Result<(), IngestError> {
        if piece.is_empty() {
            return Ok(());
        }
        if self
            .of_set(signal, set)
            .any(|e| !e.has_room(charge.max(piece.len)))
        {
            return Err(IngestError::Overloaded(Overload::ExportQueue));
        }
        for exporter in self.of_set(signal, set) {
            if exporter
                .try_push_indexed(signal, piece.clone(), index, items, charge)
                .is_err()
            {
                return Err(IngestError::Overloaded(Overload::ExportQueue));
            }
        }
        Ok(())
    }

    /// Pushes a piece charged `charge` bytes to every exporter of the signal, waiting
    /// for room in each (`index`: as for [`Exporters::push_now`]).
    pub(super) async fn push_waiting(
        &self,
        signal: Signal,
        piece: Encoded,
        index: Option<&Arc<SpanBatch>>,
        items: u64,
        charge: usize,
    ) {
        self.push_waiting_to(signal, ExporterSet::MAX, piece, index, items, charge)
            .await
    }

    /// [`Exporters::push_waiting`] to the exporters of `set` only.
    pub(super) async fn push_waiting_to(
        &self,
        signal: Signal,
        set: ExporterSet,
        piece: Encoded,
        index: Option<&Arc<SpanBatch>>,
        items: u64,
        charge: usize,
    ) {
        for exporter in self.of_set(signal, set) {
            loop {
                exporter.reserve(charge.max(piece.len)).await;
                if exporter
                    .try_push_indexed(signal, piece.clone(), index, items, charge)
                    .is_ok()
                {
                    break;
                }
            }
        }
    }

    /// Sends what every queue holds until `deadline`; true when all of them drained.
    pub(super) async fn drain(&self, deadline: Instant) -> bool {
        let mut drained = true;
        for exporter in self.by_name.values() {
            drained &= exporter.drain(deadline).await == DrainOutcome::Drained;
        }
        drained
    }

    /// Name, type and statistics of every exporter.
    pub(super) fn snapshot(&self) -> Vec<ExporterSnapshot> {
        self.by_name
            .values()
            .map(|e| ExporterSnapshot {
                name: e.name().to_string(),
                kind: e.kind(),
                stats: e.stats(),
            })
            .collect()
    }
}

/// What a core publishes about one exporter instance.
#[derive(Clone, Debug)]
pub struct ExporterSnapshot {
    /// The exporter's name.
    pub name: String,
    /// Its type (`otlp`, `kafka`, ...).
    pub kind: &'static str,
    /// Its statistics.
    pub stats: ExporterStats,
}

impl Families for [ExporterSnapshot] {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        let exporters = || {
            cores
                .iter()
                .flat_map(|(core, list)| list.iter().map(move |e| (*core, e)))
        };
        let item = |s: Signal| match s {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
        };
        for (what, help) in [
            ("sent", "successfully sent to the destination"),
            ("send_failed", "that failed to send (after retries)"),
        ] {
            for signal in Signal::ALL {
                let family = out.counter(
                    format!("shardtel_exporter_{what}_{}_total", item(signal)),
                    format!("Number of {} {help}.", item(signal)),
                );
                for (core, e) in exporters() {
                    let v = if what == "sent" {
                        e.stats.sent_items[signal.index()]
                    } else {
                        e.stats.failed_items[signal.index()]
                    };
                    family.sample(
                        &[("exporter", &e.name), ("type", &e.kind), ("core", &core)],
                        v,
                    );
                }
            }
        }
        let queue: [Column<ExporterStats>; 4] = [
            (
                "shardtel_exporter_queue_size_bytes",
                MetricType::Gauge,
                "Bytes queued or in flight in the exporter queue.",
                |st| st.queue_bytes.into(),
            ),
            (
                "shardtel_exporter_queue_batches",
                MetricType::Gauge,
                "Batches queued in the exporter queue.",
                |st| st.queued_batches.into(),
            ),
            (
                "shardtel_exporter_retries_total",
                MetricType::Counter,
                "Send attempts that were retried.",
                |st| st.retries.into(),
            ),
            (
                "shardtel_exporter_conversion_panics_total",
                MetricType::Counter,
                "Batches whose conversion panicked (contained: the batch failed, the core lives).",
                |st| st.conversion_panics.into(),
            ),
        ];
        out.table(&queue, &rows(cores, None));
        let kafka = rows(cores, Some("kafka"));
        if !kafka.is_empty() {
            out.table(&KAFKA_PRODUCER, &kafka);
        }
        let prometheus = rows(cores, Some("prometheusremotewrite"));
        if !prometheus.is_empty() {
            out.table(&PROMETHEUS_CONVERSION, &prometheus);
            let family = out.counter(
                "shardtel_exporter_prometheus_dropped_invalid_points_total",
                "Points dropped as unconvertible, by reason.",
            );
            for (core, e) in exporters().filter(|(_, e)| e.kind == "prometheusremotewrite") {
                for reason in InvalidReason::ALL {
                    family.sample(
                        &[
                            ("exporter", &e.name),
                            ("core", &core),
                            ("reason", &reason.as_str()),
                        ],
                        e.stats.prometheus.dropped_invalid_by_reason[reason as usize],
                    );
                }
            }
        }
        let disk: Vec<(LabelValues, &WalStats)> = exporters()
            .filter_map(|(core, e)| {
                let labels = label_values(&[("exporter", &e.name), ("core", &core)]);
                e.stats.disk.as_ref().map(|d| (labels, d))
            })
            .collect();
        if !disk.is_empty() {
            out.table(&DISK_QUEUE, &disk);
            for (core, e) in exporters() {
                if let Some(d) = &e.stats.disk {
                    wal_fsync_latency(out, &format!("queue/{}", e.name), core, d);
                }
            }
        }
    }
}

/// `exporter` and `core` labels and stats of every exporter (of type `kind`), on every core.
fn rows<'a>(
    cores: &[(usize, &'a [ExporterSnapshot])],
    kind: Option<&str>,
) -> Vec<(LabelValues, &'a ExporterStats)> {
    cores
        .iter()
        .flat_map(|(core, list)| {
            list.iter()
                .filter(move |e| kind.is_none_or(|k| e.kind == k))
                .map(move |e| {
                    (
                        label_values(&[("exporter", &e.name), ("core", core)]),
                        &e.stats,
                    )
                })
        })
        .collect()
}

/// The Kafka producer series (only when a `kafka` exporter runs).
const KAFKA_PRODUCER: [Column<ExporterStats>; 6] = [
    (
        "shardtel_exporter_kafka_produced_messages_total",
        MetricType::Counter,
        "Messages the Kafka brokers acknowledged.",
        |st| st.kafka.produced_messages.into(),
    ),
    (
        "shardtel_exporter_kafka_produced_bytes_total",
        MetricType::Counter,
        "Value bytes (before compression) of acknowledged messages.",
        |st| st.kafka.produced_bytes.into(),
    ),
    (
        "shardtel_exporter_kafka_failed_messages_total",
        MetricType::Counter,
        "Messages whose delivery failed (their batch is retried or failed).",
        |st| st.kafka.failed_messages.into(),
    ),
    (
        "shardtel_exporter_kafka_failed_bytes_total",
        MetricType::Counter,
        "Value bytes of messages whose delivery failed.",
        |st| st.kafka.failed_bytes.into(),
    ),
    (
        "shardtel_exporter_kafka_queue_full_total",
        MetricType::Counter,
        "Times the producer's local queue was full when a message was offered.",
        |st| st.kafka.queue_full.into(),
    ),
    (
        "shardtel_exporter_kafka_producer_restarts_total",
        MetricType::Counter,
        "Times the producer was created again after a fatal librdkafka error.",
        |st| st.kafka.producer_restarts.into(),
    ),
];

/// The `prometheusremotewrite` conversion series (only when such an exporter runs).
const PROMETHEUS_CONVERSION: [Column<ExporterStats>; 7] = [
    (
        "shardtel_exporter_prometheus_samples_total",
        MetricType::Counter,
        "Float samples written to remote-write requests.",
        |st| st.prometheus.samples.into(),
    ),
    (
        "shardtel_exporter_prometheus_histograms_total",
        MetricType::Counter,
        "Native histogram samples written to remote-write requests.",
        |st| st.prometheus.histograms.into(),
    ),
    (
        "shardtel_exporter_prometheus_dropped_out_of_order_points_total",
        MetricType::Counter,
        "Cumulative and gauge points dropped because their series already had a sample at or after their time (late deltas are added instead).",
        |st| st.prometheus.dropped_out_of_order.into(),
    ),
    (
        "shardtel_exporter_prometheus_delta_resets_total",
        MetricType::Counter,
        "Delta histograms whose bucket layout changed, restarting their accumulation.",
        |st| st.prometheus.delta_resets.into(),
    ),
    (
        "shardtel_exporter_prometheus_series_expired_total",
        MetricType::Counter,
        "Series forgotten after series_ttl without a point.",
        |st| st.prometheus.series_expired.into(),
    ),
    (
        "shardtel_exporter_prometheus_series_evicted_total",
        MetricType::Counter,
        "Series forgotten because max_series_per_core was reached.",
        |st| st.prometheus.series_evicted.into(),
    ),
    (
        "shardtel_exporter_prometheus_series",
        MetricType::Gauge,
        "Series whose state this core holds.",
        |st| st.prometheus.series_active.into(),
    ),
];

/// The disk queue series (only for exporters with `queue.storage = "disk"`).
const DISK_QUEUE: [Column<WalStats>; 8] = [
    (
        "shardtel_exporter_queue_disk_bytes",
        MetricType::Gauge,
        "Bytes of the exporter's disk queue (retained segments).",
        |s| s.retained_bytes.into(),
    ),
    (
        "shardtel_exporter_queue_disk_frames",
        MetricType::Gauge,
        "Batches in the disk queue not yet accepted by the destination.",
        |s| s.unconsumed_frames.into(),
    ),
    (
        "shardtel_exporter_queue_oldest_age_seconds",
        MetricType::Gauge,
        "Age of the oldest segment holding unsent batches.",
        |s| (s.oldest_unconsumed_age_ms / 1000).into(),
    ),
    (
        "shardtel_exporter_queue_full_refusals_total",
        MetricType::Counter,
        "Appends refused because the disk queue was full.",
        |s| s.full_refusals.into(),
    ),
    (
        "shardtel_exporter_queue_dropped_frames_total",
        MetricType::Counter,
        "Batches dropped with overflow = \"drop_oldest\".",
        |s| s.dropped_frames.into(),
    ),
    (
        "shardtel_exporter_queue_dropped_bytes_total",
        MetricType::Counter,
        "Bytes dropped with overflow = \"drop_oldest\".",
        |s| s.dropped_bytes.into(),
    ),
    (
        "shardtel_exporter_queue_recovered_frames_total",
        MetricType::Counter,
        "Batches found in the disk queue at start-up.",
        |s| s.recovery.recovered_frames.into(),
    ),
    (
        "shardtel_exporter_queue_truncated_frames_total",
        MetricType::Counter,
        "Torn or corrupt batches cut off at start-up.",
        |s| s.recovery.truncated_frames.into(),
    ),
];
