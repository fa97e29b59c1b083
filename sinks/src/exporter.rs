//! The exporter kinds behind an [`crate::ExportQueue`], dispatched by `match`
//! (no trait objects), and how each is built from its configuration.

use ::http::header::{HeaderMap, HeaderName, HeaderValue};
use shardtel_config::{
    BatchConfig, Compression, ExporterConfig, ExporterKind, QueueConfig, QueueOverflow,
    QueueStorage, RetryConfig,
};
use shardtel_protocol::compression::Encoding;
use shardtel_protocol::Signal;
use shardtel_tls::{alpn, ClientTls};

use crate::batch::{Batch, BatchLimits};
use crate::error::{ExportError, ExportReply, SinkError};
use crate::file::{core_file_path, FileExporter};
use crate::kafka::KafkaExporter;
use crate::loki::LokiExporter;
use crate::otlp::grpc::OtlpGrpcExporter;
use crate::otlp::http::OtlpHttpExporter;
use crate::prometheus::PrometheusExporter;
use crate::retry::RetryPolicy;
use crate::transport::{invalid_endpoint, Route, Target};

/// Concurrent requests per network exporter per core.
pub const NETWORK_SENDERS: usize = 4;
/// Concurrent batches per `kafka` exporter per core: librdkafka pipelines them (it batches per
/// partition and keeps several produce requests in flight), and a batch completes only with
/// its slowest delivery report, so four would leave the producer idle between round trips.
/// The queue's `max_bytes` still bounds what they hold.
pub const KAFKA_SENDERS: usize = 16;

/// Batches an exporter of kind `kind` (its `type`) sends at once per core.
pub fn senders_of(kind: &str) -> usize {
    match kind {
        "otlp" | "otlphttp" | "loki" => NETWORK_SENDERS,
        "kafka" => KAFKA_SENDERS,
        _ => 1,
    }
}

/// The TLS settings of `cfg`'s `https://` endpoints: its `[exporters.NAME.tls]` table, or the
/// defaults without one (the system's trust store, no client certificate); `None` when no
/// endpoint is `https://`. ALPN offers `h2` for `otlp` (gRPC) and `http/1.1` for the others.
///
/// Reads the certificate, key and CA files (and starts their reload thread when
/// `reload_interval` is set): call it once per exporter before the reactors start, and hand the
/// result to every core's [`crate::ExportQueue::start_with_storage`].
pub fn client_tls(cfg: &ExporterConfig) -> Result<Option<ClientTls>, SinkError> {
    let https = cfg.kind.endpoints().iter().any(|e| e.scheme == "https");
    if !https {
        return Ok(None);
    }
    let protocols: &[&[u8]] = match cfg.kind {
        ExporterKind::Otlp(_) => &[alpn::H2],
        _ => &[alpn::HTTP1],
    };
    let settings = cfg.kind.tls().cloned().unwrap_or_default();
    let what = format!("exporters.{}.tls", cfg.name);
    ClientTls::new(&what, &settings, protocols)
        .map(Some)
        .map_err(|source| SinkError::Tls {
            exporter: cfg.name.clone(),
            source,
        })
}

/// Queue-side settings of one exporter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueSettings {
    pub batch: BatchLimits,
    pub retry: RetryPolicy,
    pub max_queue_bytes: usize,
    pub storage: QueueStorage,
    pub overflow: QueueOverflow,
}

impl QueueSettings {
    fn from_config(batch: &BatchConfig, retry: &RetryConfig, queue: &QueueConfig) -> Self {
        Self {
            batch: BatchLimits {
                max_items: batch.max_items,
                max_bytes: batch.max_bytes,
                timeout: batch.timeout,
            },
            retry: RetryPolicy {
                enabled: retry.enabled,
                initial_interval: retry.initial_interval,
                max_interval: retry.max_interval,
                max_elapsed_time: retry.max_elapsed_time,
            },
            max_queue_bytes: queue.max_bytes,
            storage: queue.storage,
            overflow: queue.overflow,
        }
    }

    /// The blackhole has no settings of its own: the defaults, no retries.
    fn blackhole() -> Self {
        let mut settings = Self::from_config(
            &BatchConfig::default(),
            &RetryConfig::default(),
            &QueueConfig::for_durability(shardtel_config::Durability::None),
        );
        settings.retry.enabled = false;
        settings
    }
}

/// One exporter of any kind, on one core.
pub(crate) enum Exporter {
    Otlp(OtlpGrpcExporter),
    OtlpHttp(OtlpHttpExporter),
    File(FileExporter),
    Kafka(KafkaExporter),
    Prometheus(PrometheusExporter),
    Loki(LokiExporter),
    Blackhole,
}

impl Exporter {
    /// Builds the exporter for `core` of `cores` from its configuration; `tls`: what
    /// [`client_tls`] made of it.
    pub(crate) fn build(
        cfg: &ExporterConfig,
        core: usize,
        cores: usize,
        tls: Option<&ClientTls>,
    ) -> Result<(Self, QueueSettings), SinkError> {
        let name = cfg.name.as_str();
        Ok(match &cfg.kind {
            ExporterKind::Otlp(c) => {
                let target = Target::from_endpoint(name, &c.endpoint, tls)?;
                let headers = headers(name, &c.headers)?;
                let exporter =
                    OtlpGrpcExporter::new(target, encoding(c.compression), c.timeout, headers)
                        .map_err(|_| invalid_endpoint(name, &c.endpoint))?;
                (
                    Self::Otlp(exporter),
                    QueueSettings::from_config(&c.batch, &c.retry, &c.queue),
                )
            }
            ExporterKind::OtlpHttp(c) => {
                let route = |signal| Route::from_endpoint(name, &c.signal_endpoint(signal), tls);
                let routes = [
                    route(Signal::Traces)?,
                    route(Signal::Metrics)?,
                    route(Signal::Logs)?,
                ];
                let headers = headers(name, &c.headers)?;
                (
                    Self::OtlpHttp(OtlpHttpExporter::new(
                        routes,
                        encoding(c.compression),
                        c.timeout,
                        headers,
                        NETWORK_SENDERS,
                    )),
                    QueueSettings::from_config(&c.batch, &c.retry, &c.queue),
                )
            }
            ExporterKind::File(c) => {
                // glommio's directory calls need absolute paths; resolving
                // against the working directory reads no file (start-up only).
                let invalid = || SinkError::InvalidPath {
                    exporter: name.to_string(),
                    path: c.path.clone(),
                };
                let absolute = std::path::absolute(&c.path).map_err(|_| invalid())?;
                let path = core_file_path(&absolute, core).ok_or_else(invalid)?;
                let max_bytes = c.rotation.max_megabytes.saturating_mul(1024 * 1024);
                (
                    Self::File(FileExporter::new(
                        path,
                        max_bytes,
                        c.rotation.max_backups,
                        c.queue.storage == shardtel_config::QueueStorage::Disk,
                    )),
                    QueueSettings::from_config(&c.batch, &c.retry, &c.queue),
                )
            }
            ExporterKind::Kafka(c) => (
                // librdkafka's own buffer stays in memory, whatever the queue's storage.
                Self::Kafka(KafkaExporter::new(
                    name,
                    c,
                    c.queue.max_bytes.min(QueueConfig::MEMORY_MAX_BYTES),
                )?),
                QueueSettings::from_config(&c.batch, &c.retry, &c.queue),
            ),
            ExporterKind::PrometheusRemoteWrite(c) => {
                let route = Route::from_endpoint(name, &c.endpoint, tls)?;
                let headers = headers(name, &c.headers)?;
                (
                    Self::Prometheus(PrometheusExporter::new(route, headers, c, core, cores)),
                    QueueSettings::from_config(&c.batch, &c.retry, &c.queue),
                )
            }
            ExporterKind::Loki(c) => {
                let route = Route::from_endpoint(name, &c.endpoint, tls)?;
                let headers = headers(name, &c.headers)?;
                (
                    Self::Loki(LokiExporter::new(route, headers, c, NETWORK_SENDERS)),
                    QueueSettings::from_config(&c.batch, &c.retry, &c.queue),
                )
            }
            ExporterKind::Blackhole => (Self::Blackhole, QueueSettings::blackhole()),
        })
    }

    /// Whether it cuts trace batches with the owner cores' span indexes when it gets them
    /// (`Batch::traces`).
    pub(crate) fn uses_span_index(&self) -> bool {
        matches!(self, Self::Kafka(e) if e.uses_span_index())
    }

    /// The configuration's name for this kind.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Otlp(_) => "otlp",
            Self::OtlpHttp(_) => "otlphttp",
            Self::File(_) => "file",
            Self::Kafka(_) => "kafka",
            Self::Prometheus(_) => "prometheusremotewrite",
            Self::Loki(_) => "loki",
            Self::Blackhole => "blackhole",
        }
    }

    /// How many sender tasks run: one for the file (lines stay in order and
    /// there is one writer), one for Prometheus (each series' samples leave in time order,
    /// and its per-series state changes batch by batch), one for the blackhole,
    /// [`KAFKA_SENDERS`] for Kafka, [`NETWORK_SENDERS`] otherwise.
    pub(crate) fn senders(&self) -> usize {
        senders_of(self.kind())
    }

    /// Converts a batch once, before its first attempt, for the kinds whose wire format is
    /// not OTLP (`None`: send the batch as it is). The result's `items` leave out the items
    /// the conversion dropped.
    pub(crate) async fn prepare(&self, batch: &Batch) -> Result<Option<Batch>, ExportError> {
        match self {
            Self::Prometheus(e) => e.prepare(batch).await.map(Some),
            Self::Loki(e) => e.prepare(batch).await.map(Some),
            _ => Ok(None),
        }
    }

    /// One attempt to export `batch` from sender `worker`.
    pub(crate) async fn export(
        &self,
        worker: usize,
        batch: &Batch,
    ) -> Result<ExportReply, ExportError> {
        match self {
            Self::Otlp(e) => e.export(batch).await,
            Self::OtlpHttp(e) => e.export(worker, batch).await,
            Self::File(e) => e.export(batch).await.map(|()| ExportReply::default()),
            Self::Kafka(e) => e.export(batch).await,
            Self::Prometheus(e) => e
                .export(worker, batch)
                .await
                .map(|()| ExportReply::default()),
            Self::Loki(e) => e
                .export(worker, batch)
                .await
                .map(|()| ExportReply::default()),
            Self::Blackhole => Ok(ExportReply::default()),
        }
    }

    /// Counters specific to the kind, added to the queue's snapshot.
    pub(crate) fn add_stats(&self, stats: &mut crate::stats::ExporterStats) {
        match self {
            Self::Kafka(e) => stats.kafka = e.stats(),
            Self::Prometheus(e) => stats.prometheus = e.stats(),
            _ => {}
        }
    }

    /// Makes what was exported durable where that means something (files).
    pub(crate) async fn sync(&self) -> Result<(), ExportError> {
        match self {
            Self::File(e) => e.sync().await,
            _ => Ok(()),
        }
    }
}

fn encoding(compression: Compression) -> Encoding {
    match compression {
        Compression::None => Encoding::Identity,
        Compression::Gzip => Encoding::Gzip,
        Compression::Zstd => Encoding::Zstd,
    }
}

fn headers<'a>(
    exporter: &str,
    configured: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<HeaderMap, SinkError> {
    let mut map = HeaderMap::new();
    for (name, value) in configured {
        let invalid = || SinkError::InvalidHeader {
            exporter: exporter.to_string(),
            name: name.clone(),
        };
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        map.append(header, value);
    }
    Ok(map)
}
