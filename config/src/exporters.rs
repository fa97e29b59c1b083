//! `[exporters.*]`: where telemetry goes — OTLP/gRPC, OTLP/HTTP, files, or nowhere (blackhole) —
//! and the dispatch to the other types' modules (`kafka`, `storage`). The settings every
//! exporter shares live below: batching, retry and queue in `delivery`, the endpoint URL,
//! headers and timeout of network exporters in `endpoint`.
//!
//! An exporter's type is its `type` key, or its table name when that names a type
//! (`[exporters.otlp]`), or the part of the name before a `/` (`[exporters."otlp/tempo"]`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use shardtel_protocol::Signal;
use toml::de::DeValue;

use crate::decode::{self, Decoder, Locations, Section};
use crate::delivery::{
    decode_batch, decode_queue, decode_retry, BatchConfig, QueueConfig, QueueStorage, RetryConfig,
};
use crate::endpoint::{
    decode_headers, parse_endpoint, required_endpoint, timeout, Endpoint, EndpointUse,
};
use crate::engine::Durability;
use crate::error::{ComponentKind, ConfigErrorKind};
use crate::kafka::KafkaExporterConfig;
use crate::storage::{LokiExporterConfig, PrometheusRemoteWriteExporterConfig};
use crate::tls::ClientTlsConfig;

/// One `[exporters.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExporterConfig {
    /// The table name, which pipelines use to refer to it.
    pub name: String,
    /// The type and its settings.
    pub kind: ExporterKind,
}

/// The exporter types this build implements.
// Built once at start-up, so the size difference between variants costs nothing; unboxed
// variants keep `match` and construction simple for the engine and sinks.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExporterKind {
    /// `type = "otlp"`: OTLP/gRPC.
    Otlp(OtlpExporterConfig),
    /// `type = "otlphttp"`: OTLP/HTTP with protobuf bodies.
    OtlpHttp(OtlpHttpExporterConfig),
    /// `type = "file"`: OTLP/JSON lines, rotated by size.
    File(FileExporterConfig),
    /// `type = "blackhole"`: counts and drops everything.
    Blackhole,
    /// `type = "kafka"`: Kafka topics, traces keyed by trace ID.
    Kafka(KafkaExporterConfig),
    /// `type = "prometheusremotewrite"`: metrics to a Prometheus remote-write endpoint.
    PrometheusRemoteWrite(PrometheusRemoteWriteExporterConfig),
    /// `type = "loki"`: logs to Loki's push API.
    Loki(LokiExporterConfig),
}

impl ExporterKind {
    /// Exporter types this build implements.
    pub const SUPPORTED: &'static [&'static str] = &[
        "otlp",
        "otlphttp",
        "file",
        "blackhole",
        "kafka",
        "prometheusremotewrite",
        "loki",
    ];
    /// Exporter types shardtel plans (DESIGN.md) that this build does not implement yet.
    pub const PLANNED: &'static [&'static str] = &[];

    /// The `type` value of this kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            ExporterKind::Otlp(_) => "otlp",
            ExporterKind::OtlpHttp(_) => "otlphttp",
            ExporterKind::File(_) => "file",
            ExporterKind::Blackhole => "blackhole",
            ExporterKind::Kafka(_) => "kafka",
            ExporterKind::PrometheusRemoteWrite(_) => "prometheusremotewrite",
            ExporterKind::Loki(_) => "loki",
        }
    }

    /// The only signal this kind exports, for the storage exporters.
    pub fn only_signal(&self) -> Option<Signal> {
        match self {
            ExporterKind::PrometheusRemoteWrite(_) => Some(Signal::Metrics),
            ExporterKind::Loki(_) => Some(Signal::Logs),
            _ => None,
        }
    }

    /// Batch settings, for the kinds that batch.
    pub fn batch(&self) -> Option<&BatchConfig> {
        self.delivery().map(|(batch, _, _)| batch)
    }

    /// Retry settings, for the kinds that retry.
    pub fn retry(&self) -> Option<&RetryConfig> {
        self.delivery().map(|(_, retry, _)| retry)
    }

    /// Queue settings, for the kinds that queue.
    pub fn queue(&self) -> Option<&QueueConfig> {
        self.delivery().map(|(_, _, queue)| queue)
    }

    /// The `batch`, `retry` and `queue` tables of every kind but the blackhole.
    fn delivery(&self) -> Option<(&BatchConfig, &RetryConfig, &QueueConfig)> {
        match self {
            ExporterKind::Otlp(c) => Some((&c.batch, &c.retry, &c.queue)),
            ExporterKind::OtlpHttp(c) => Some((&c.batch, &c.retry, &c.queue)),
            ExporterKind::File(c) => Some((&c.batch, &c.retry, &c.queue)),
            ExporterKind::Kafka(c) => Some((&c.batch, &c.retry, &c.queue)),
            ExporterKind::PrometheusRemoteWrite(c) => Some((&c.batch, &c.retry, &c.queue)),
            ExporterKind::Loki(c) => Some((&c.batch, &c.retry, &c.queue)),
            ExporterKind::Blackhole => None,
        }
    }
}

/// `type = "otlp"`: OTLP over gRPC (HTTP/2: h2c, or TLS with `https://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpExporterConfig {
    /// `http://host:port` or `https://host:port`, required.
    pub endpoint: Endpoint,
    /// Request body compression. Default gzip.
    pub compression: Compression,
    /// Deadline of one export request. Default 10s.
    pub timeout: Duration,
    /// Extra request headers (gRPC metadata), names lowercased.
    pub headers: BTreeMap<String, String>,
    /// `[exporters.NAME.tls]`, for an `https://` endpoint.
    pub tls: Option<ClientTlsConfig>,
    /// `[exporters.NAME.batch]`.
    pub batch: BatchConfig,
    /// `[exporters.NAME.retry]`.
    pub retry: RetryConfig,
    /// `[exporters.NAME.queue]`.
    pub queue: QueueConfig,
}

impl OtlpExporterConfig {
    /// The keys `type = "otlp"` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "type",
        "endpoint",
        "compression",
        "timeout",
        "headers",
        "tls",
        "batch",
        "retry",
        "queue",
    ];

    /// Default `compression`.
    pub const DEFAULT_COMPRESSION: Compression = Compression::Gzip;
    /// Default `timeout`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Defaults for everything but the endpoint.
    pub fn new(endpoint: Endpoint) -> Self {
        OtlpExporterConfig {
            endpoint,
            compression: Self::DEFAULT_COMPRESSION,
            timeout: Self::DEFAULT_TIMEOUT,
            headers: BTreeMap::new(),
            tls: None,
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            queue: QueueConfig::default(),
        }
    }
}

/// `type = "otlphttp"`: OTLP over HTTP with protobuf bodies (TLS with `https://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpHttpExporterConfig {
    /// Base URL, e.g. `http://127.0.0.1:4318`; `/v1/traces`, `/v1/metrics`, `/v1/logs` are
    /// appended per signal. Required.
    pub endpoint: Endpoint,
    /// Full URL for traces, replacing `endpoint` + `/v1/traces`.
    pub traces_endpoint: Option<Endpoint>,
    /// Full URL for metrics, replacing `endpoint` + `/v1/metrics`.
    pub metrics_endpoint: Option<Endpoint>,
    /// Full URL for logs, replacing `endpoint` + `/v1/logs`.
    pub logs_endpoint: Option<Endpoint>,
    /// Request body compression. Default gzip.
    pub compression: Compression,
    /// Deadline of one export request. Default 10s.
    pub timeout: Duration,
    /// Extra request headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// `[exporters.NAME.tls]`, for `https://` endpoints.
    pub tls: Option<ClientTlsConfig>,
    /// `[exporters.NAME.batch]`.
    pub batch: BatchConfig,
    /// `[exporters.NAME.retry]`.
    pub retry: RetryConfig,
    /// `[exporters.NAME.queue]`.
    pub queue: QueueConfig,
}

impl OtlpHttpExporterConfig {
    /// The keys `type = "otlphttp"` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "type",
        "endpoint",
        "traces_endpoint",
        "metrics_endpoint",
        "logs_endpoint",
        "compression",
        "timeout",
        "headers",
        "tls",
        "batch",
        "retry",
        "queue",
    ];

    /// Defaults for everything but the endpoint.
    pub fn new(endpoint: Endpoint) -> Self {
        let otlp = OtlpExporterConfig::new(endpoint);
        OtlpHttpExporterConfig {
            endpoint: otlp.endpoint,
            traces_endpoint: None,
            metrics_endpoint: None,
            logs_endpoint: None,
            compression: otlp.compression,
            timeout: otlp.timeout,
            headers: otlp.headers,
            tls: None,
            batch: otlp.batch,
            retry: otlp.retry,
            queue: otlp.queue,
        }
    }

    /// The URL that `signal` is posted to: its override, or `endpoint` + `/v1/<signal>`.
    pub fn signal_endpoint(&self, signal: Signal) -> Endpoint {
        let explicit = match signal {
            Signal::Traces => &self.traces_endpoint,
            Signal::Metrics => &self.metrics_endpoint,
            Signal::Logs => &self.logs_endpoint,
        };
        explicit.clone().unwrap_or_else(|| {
            let mut endpoint = self.endpoint.clone();
            let base = endpoint.path.trim_end_matches('/');
            endpoint.path = format!("{base}{}", signal.http_path());
            endpoint
        })
    }
}

/// `type = "file"`: OTLP/JSON, one request per line, rotated by size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileExporterConfig {
    /// The file to write. Required.
    pub path: PathBuf,
    /// `[exporters.NAME.rotation]`.
    pub rotation: RotationConfig,
    /// `[exporters.NAME.batch]`.
    pub batch: BatchConfig,
    /// `[exporters.NAME.retry]`.
    pub retry: RetryConfig,
    /// `[exporters.NAME.queue]`.
    pub queue: QueueConfig,
}

impl FileExporterConfig {
    /// The keys `type = "file"` accepts.
    pub const KEYS: &'static [&'static str] =
        &["type", "path", "rotation", "batch", "retry", "queue"];

    /// Defaults for everything but the path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileExporterConfig {
            path: path.into(),
            rotation: RotationConfig::default(),
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            queue: QueueConfig::default(),
        }
    }
}

/// `[exporters.NAME.rotation]`: when the file exporter starts a new file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationConfig {
    /// Rotate when the file reaches this many MiB. Default 100.
    pub max_megabytes: u64,
    /// Rotated files to keep (`path.1` newest … `path.N`); 0 keeps none. Default 10.
    pub max_backups: u32,
}

impl RotationConfig {
    /// The keys `rotation` accepts.
    pub const KEYS: &'static [&'static str] = &["max_megabytes", "max_backups"];
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            max_megabytes: 100,
            max_backups: 10,
        }
    }
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `"none"`.
    None,
    /// `"gzip"` (the default).
    Gzip,
    /// `"zstd"`.
    Zstd,
}

impl Compression {
    /// The accepted values.
    pub const NAMES: &'static [&'static str] = &["gzip", "zstd", "none"];

    /// The config value, also the `grpc-encoding` / `Content-Encoding` token (except `None`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    /// The config value: `gzip`, `zstd` or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub(crate) fn decode(
    d: &mut Decoder<'_>,
    root: &Section<'_, '_>,
) -> BTreeMap<String, ExporterConfig> {
    let s = d.map_section(root, "exporters");
    let mut exporters = BTreeMap::new();
    for (key, value) in s.entries() {
        let name = key.get_ref().as_ref();
        d.define(ComponentKind::Exporter, name);
        let table = d.table(s.key(name), value, None);
        if !table.exists() {
            continue;
        }
        let Some(ty) = d.component_type(
            &table,
            name,
            ComponentKind::Exporter,
            ExporterKind::SUPPORTED,
            ExporterKind::PLANNED,
        ) else {
            continue;
        };
        let kind = match ty.as_str() {
            "otlp" => {
                d.check_keys(&table, OtlpExporterConfig::KEYS);
                decode_otlp(d, &table).map(ExporterKind::Otlp)
            }
            "otlphttp" => {
                d.check_keys(&table, OtlpHttpExporterConfig::KEYS);
                decode_otlp_http(d, &table).map(ExporterKind::OtlpHttp)
            }
            "file" => {
                d.check_keys(&table, FileExporterConfig::KEYS);
                decode_file(d, &table).map(ExporterKind::File)
            }
            "blackhole" => {
                d.check_keys(&table, &["type"]);
                Some(ExporterKind::Blackhole)
            }
            "kafka" => {
                d.check_keys(&table, KafkaExporterConfig::KEYS);
                crate::kafka::decode_exporter(d, &table).map(ExporterKind::Kafka)
            }
            "prometheusremotewrite" => {
                d.check_keys(&table, PrometheusRemoteWriteExporterConfig::KEYS);
                crate::storage::decode_prometheus(d, &table)
                    .map(ExporterKind::PrometheusRemoteWrite)
            }
            "loki" => {
                d.check_keys(&table, LokiExporterConfig::KEYS);
                crate::storage::decode_loki(d, &table).map(ExporterKind::Loki)
            }
            _ => {
                d.report_unknown_type(
                    &table,
                    key.span(),
                    ty.clone(),
                    ComponentKind::Exporter,
                    ExporterKind::SUPPORTED,
                    ExporterKind::PLANNED,
                );
                None
            }
        };
        if let Some(kind) = kind {
            exporters.insert(
                name.to_string(),
                ExporterConfig {
                    name: name.to_string(),
                    kind,
                },
            );
        }
    }
    exporters
}

fn compression(value: &DeValue<'_>) -> Result<Compression, ConfigErrorKind> {
    Ok(match decode::one_of(value, Compression::NAMES)? {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        _ => Compression::None,
    })
}

/// Gives each exporter queue whose `storage` or `max_bytes` the file left out its default: a
/// disk queue of 1 GiB with `engine.durability = "ack_after_sync"`, a memory queue of 64 MiB
/// with `"none"` — and a memory queue for `kafka` exporters either way (see
/// [`QueueConfig::default_storage`]). And each `retry.max_elapsed_time` left out its default
/// for the durability ([`RetryConfig::default_max_elapsed_time`]): never give up with
/// `"ack_after_sync"`, 300 s with `"none"`.
pub(crate) fn resolve_delivery_defaults(
    exporters: &mut BTreeMap<String, ExporterConfig>,
    durability: Durability,
    locations: &Locations,
) {
    for (name, exporter) in exporters.iter_mut() {
        let exporter_key = decode::join("exporters", name);
        let key = decode::join(&exporter_key, "queue");
        let kafka = matches!(exporter.kind, ExporterKind::Kafka(_));
        let (retry, queue) = match &mut exporter.kind {
            ExporterKind::Otlp(c) => (&mut c.retry, &mut c.queue),
            ExporterKind::OtlpHttp(c) => (&mut c.retry, &mut c.queue),
            ExporterKind::File(c) => (&mut c.retry, &mut c.queue),
            ExporterKind::Kafka(c) => (&mut c.retry, &mut c.queue),
            ExporterKind::PrometheusRemoteWrite(c) => (&mut c.retry, &mut c.queue),
            ExporterKind::Loki(c) => (&mut c.retry, &mut c.queue),
            ExporterKind::Blackhole => continue,
        };
        let retry_key = decode::join(&exporter_key, "retry");
        if !locations.given(&decode::join(&retry_key, "max_elapsed_time")) {
            retry.max_elapsed_time = RetryConfig::default_max_elapsed_time(durability);
        }
        if !locations.given(&decode::join(&key, "storage")) {
            queue.storage = QueueConfig::default_storage(kafka, durability);
        }
        if !locations.given(&decode::join(&key, "max_bytes")) {
            queue.max_bytes = match queue.storage {
                QueueStorage::Disk => QueueConfig::DISK_MAX_BYTES,
                QueueStorage::Memory => QueueConfig::MEMORY_MAX_BYTES,
            };
        }
    }
}

fn decode_otlp(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<OtlpExporterConfig> {
    let endpoint = required_endpoint(d, s, EndpointUse::Grpc);
    let compression = d.field_or(
        s,
        "compression",
        OtlpExporterConfig::DEFAULT_COMPRESSION,
        compression,
    );
    let timeout = d.field_or(s, "timeout", OtlpExporterConfig::DEFAULT_TIMEOUT, timeout);
    let headers = decode_headers(d, s);
    let tls = crate::tls::decode_client(d, s);
    let batch = decode_batch(d, s);
    let retry = decode_retry(d, s);
    let queue = decode_queue(d, s);
    Some(OtlpExporterConfig {
        endpoint: endpoint?,
        compression,
        timeout,
        headers,
        tls,
        batch,
        retry,
        queue,
    })
}

fn decode_otlp_http(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<OtlpHttpExporterConfig> {
    let endpoint = required_endpoint(d, s, EndpointUse::Http);
    let mut signal_endpoint = |key: &str| d.field(s, key, |v| parse_endpoint(v, EndpointUse::Http));
    let traces_endpoint = signal_endpoint("traces_endpoint");
    let metrics_endpoint = signal_endpoint("metrics_endpoint");
    let logs_endpoint = signal_endpoint("logs_endpoint");
    let compression = d.field_or(
        s,
        "compression",
        OtlpExporterConfig::DEFAULT_COMPRESSION,
        compression,
    );
    let timeout = d.field_or(s, "timeout", OtlpExporterConfig::DEFAULT_TIMEOUT, timeout);
    let headers = decode_headers(d, s);
    let tls = crate::tls::decode_client(d, s);
    let batch = decode_batch(d, s);
    let retry = decode_retry(d, s);
    let queue = decode_queue(d, s);
    Some(OtlpHttpExporterConfig {
        endpoint: endpoint?,
        traces_endpoint,
        metrics_endpoint,
        logs_endpoint,
        compression,
        timeout,
        headers,
        tls,
        batch,
        retry,
        queue,
    })
}

fn decode_file(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<FileExporterConfig> {
    let path = if s.get("path").is_some() {
        d.field(s, "path", decode::path)
    } else {
        d.require(s, "path", "path = \"./shardtel-data/traces.jsonl\"");
        None
    };
    let r = d.section(s, "rotation", RotationConfig::KEYS);
    let default = RotationConfig::default();
    let rotation = RotationConfig {
        max_megabytes: d.field_or(&r, "max_megabytes", default.max_megabytes, |v| {
            decode::in_range(decode::count(v, u64::MAX)?, 1, 1 << 20)
        }),
        max_backups: d.field_or(&r, "max_backups", default.max_backups, |v| {
            Ok(decode::count(v, 10_000)? as u32)
        }),
    };
    let batch = decode_batch(d, s);
    let retry = decode_retry(d, s);
    let queue = decode_queue(d, s);
    Some(FileExporterConfig {
        path: path?,
        rotation,
        batch,
        retry,
        queue,
    })
}

impl ExporterKind {
    /// `[exporters.NAME.tls]`, for the kinds that speak HTTP or gRPC.
    pub fn tls(&self) -> Option<&ClientTlsConfig> {
        match self {
            ExporterKind::Otlp(c) => c.tls.as_ref(),
            ExporterKind::OtlpHttp(c) => c.tls.as_ref(),
            ExporterKind::PrometheusRemoteWrite(c) => c.tls.as_ref(),
            ExporterKind::Loki(c) => c.tls.as_ref(),
            ExporterKind::File(_) | ExporterKind::Blackhole | ExporterKind::Kafka(_) => None,
        }
    }

    /// Every endpoint the exporter sends to (the HTTP and gRPC kinds).
    pub fn endpoints(&self) -> Vec<&Endpoint> {
        match self {
            ExporterKind::Otlp(c) => vec![&c.endpoint],
            ExporterKind::OtlpHttp(c) => std::iter::once(&c.endpoint)
                .chain(c.traces_endpoint.iter())
                .chain(c.metrics_endpoint.iter())
                .chain(c.logs_endpoint.iter())
                .collect(),
            ExporterKind::PrometheusRemoteWrite(c) => vec![&c.endpoint],
            ExporterKind::Loki(c) => vec![&c.endpoint],
            ExporterKind::File(_) | ExporterKind::Blackhole | ExporterKind::Kafka(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlphttp_signal_urls() {
        let mut c = OtlpHttpExporterConfig::new("http://collector:4318/otlp/".parse().unwrap());
        assert_eq!(
            c.signal_endpoint(Signal::Traces).to_string(),
            "http://collector:4318/otlp/v1/traces"
        );
        c.endpoint = "http://collector:4318".parse().unwrap();
        assert_eq!(
            c.signal_endpoint(Signal::Logs).to_string(),
            "http://collector:4318/v1/logs"
        );
        c.metrics_endpoint = Some("http://mimir:9009/otlp/v1/metrics".parse().unwrap());
        assert_eq!(
            c.signal_endpoint(Signal::Metrics).to_string(),
            "http://mimir:9009/otlp/v1/metrics"
        );
    }

    #[test]
    fn defaults() {
        let c = FileExporterConfig::new("x.jsonl");
        assert_eq!(
            c.rotation,
            RotationConfig {
                max_megabytes: 100,
                max_backups: 10
            }
        );
        assert_eq!(c.batch.max_items, 8192);
        assert_eq!(c.batch.max_bytes, 4 << 20);
        assert_eq!(c.batch.timeout, Duration::from_millis(200));
        assert!(c.retry.enabled);
        assert_eq!(c.retry.initial_interval, Duration::from_millis(100));
        assert_eq!(c.retry.max_interval, Duration::from_secs(5));
        assert_eq!(c.retry.max_elapsed_time, Duration::from_secs(300));
        assert_eq!(c.queue.max_bytes, 1 << 30);
        let o = OtlpExporterConfig::new("http://a:1".parse().unwrap());
        assert_eq!(o.compression, Compression::Gzip);
        assert_eq!(o.timeout, Duration::from_secs(10));
    }
}
