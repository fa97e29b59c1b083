//! `[exporters.*]`: where telemetry goes — OTLP/gRPC, OTLP/HTTP, files, or nowhere (blackhole) —
//! with the batching, retry and queue settings every exporter shares.
//!
//! An exporter's type is its `type` key, or its table name when that names a type
//! (`[exporters.otlp]`), or the part of the name before a `/` (`[exporters."otlp/tempo"]`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use shardtel_protocol::Signal;
use toml::de::DeValue;

use crate::decode::{self, Decoder, Locations, Section};
use crate::error::{ComponentKind, ConfigErrorKind};
use crate::kafka::KafkaExporterConfig;
use crate::storage::{LokiExporterConfig, PrometheusRemoteWriteExporterConfig};

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
        match self {
            ExporterKind::Otlp(c) => Some(&c.batch),
            ExporterKind::OtlpHttp(c) => Some(&c.batch),
            ExporterKind::File(c) => Some(&c.batch),
            ExporterKind::Kafka(c) => Some(&c.batch),
            ExporterKind::PrometheusRemoteWrite(c) => Some(&c.batch),
            ExporterKind::Loki(c) => Some(&c.batch),
            ExporterKind::Blackhole => None,
        }
    }

    /// Retry settings, for the kinds that retry.
    pub fn retry(&self) -> Option<&RetryConfig> {
        match self {
            ExporterKind::Otlp(c) => Some(&c.retry),
            ExporterKind::OtlpHttp(c) => Some(&c.retry),
            ExporterKind::File(c) => Some(&c.retry),
            ExporterKind::Kafka(c) => Some(&c.retry),
            ExporterKind::PrometheusRemoteWrite(c) => Some(&c.retry),
            ExporterKind::Loki(c) => Some(&c.retry),
            ExporterKind::Blackhole => None,
        }
    }

    /// Queue settings, for the kinds that queue.
    pub fn queue(&self) -> Option<&QueueConfig> {
        match self {
            ExporterKind::Otlp(c) => Some(&c.queue),
            ExporterKind::OtlpHttp(c) => Some(&c.queue),
            ExporterKind::File(c) => Some(&c.queue),
            ExporterKind::Kafka(c) => Some(&c.queue),
            ExporterKind::PrometheusRemoteWrite(c) => Some(&c.queue),
            ExporterKind::Loki(c) => Some(&c.queue),
            ExporterKind::Blackhole => None,
        }
    }
}

/// `type = "otlp"`: OTLP over gRPC (HTTP/2, no TLS yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpExporterConfig {
    /// `http://host:port`, required. `https://` is rejected: no TLS yet.
    pub endpoint: Endpoint,
    /// Request body compression. Default gzip.
    pub compression: Compression,
    /// Deadline of one export request. Default 10s.
    pub timeout: Duration,
    /// Extra request headers (gRPC metadata), names lowercased.
    pub headers: BTreeMap<String, String>,
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
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            queue: QueueConfig::default(),
        }
    }
}

/// `type = "otlphttp"`: OTLP over HTTP with protobuf bodies (no TLS yet).
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
            endpoint.path = format!("{base}/v1/{}", signal.name());
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

/// `[exporters.NAME.batch]`: a batch is sent when it reaches `max_items` or `max_bytes`, or
/// `timeout` after its first item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Items (spans, metric data points, log records) per batch, at least 1. Default 8192.
    pub max_items: usize,
    /// Encoded bytes per batch, at least 1 KiB. Default 4 MiB.
    pub max_bytes: usize,
    /// Longest time an item waits in an unfilled batch. Default 200ms.
    pub timeout: Duration,
}

impl BatchConfig {
    /// The keys `batch` accepts.
    pub const KEYS: &'static [&'static str] = &["max_items", "max_bytes", "timeout"];
    /// Smallest accepted `max_bytes`.
    pub const MIN_BYTES: u64 = 1 << 10;
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_items: 8192,
            max_bytes: 4 << 20,
            timeout: Duration::from_millis(200),
        }
    }
}

/// `[exporters.NAME.retry]`: exponential backoff for failed exports that can be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Retry at all. Default true.
    pub enabled: bool,
    /// Wait before the first retry; doubles each time. Default 100ms.
    pub initial_interval: Duration,
    /// Longest wait between two attempts. Default 5s.
    pub max_interval: Duration,
    /// Give up on a batch after this long; zero retries forever. Default 300s.
    pub max_elapsed_time: Duration,
}

impl RetryConfig {
    /// The keys `retry` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "enabled",
        "initial_interval",
        "max_interval",
        "max_elapsed_time",
    ];
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(5),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

/// `[exporters.NAME.queue]`: batches waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Where batches wait. Default: `disk` with `engine.durability = "ack_after_sync"`,
    /// `memory` with `"none"`; `memory` for `kafka` exporters ([`Self::default_storage`]).
    pub storage: QueueStorage,
    /// Bytes queued per core (on disk, or in memory); when full, receivers refuse new data with
    /// a retryable error, or the oldest data is dropped with `overflow = "drop_oldest"`.
    /// Default 1 GiB on disk, 64 MiB in memory.
    pub max_bytes: usize,
    /// What a full queue does. Default [`QueueOverflow::Refuse`].
    pub overflow: QueueOverflow,
}

/// `queue.storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueStorage {
    /// `"disk"`: a write-ahead log per core under `engine.data_dir/queues/NAME/coreN`.
    Disk,
    /// `"memory"`: lost on a crash.
    Memory,
}

/// `queue.overflow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueOverflow {
    /// `"refuse"`: receivers refuse new data with a retryable error (gRPC `UNAVAILABLE`, HTTP
    /// 503 with `Retry-After`).
    Refuse,
    /// `"drop_oldest"`: the oldest queued data (a whole segment) is dropped and counted
    /// (disk queues only).
    DropOldest,
}

impl QueueConfig {
    /// The keys `queue` accepts.
    pub const KEYS: &'static [&'static str] = &["storage", "max_bytes", "overflow"];
    /// Default `max_bytes` of a disk queue.
    pub const DISK_MAX_BYTES: usize = 1 << 30;
    /// Default `max_bytes` of a memory queue.
    pub const MEMORY_MAX_BYTES: usize = 64 << 20;

    /// The default `storage` of an exporter's queue: `disk` with `engine.durability =
    /// "ack_after_sync"`, `memory` with `"none"` — except for `kafka` exporters, whose queue is
    /// in memory either way. Kafka is itself a replicated log: with durability on, a batch
    /// keeps its ingest-log frames until the broker acknowledged every message of it, so a
    /// crash replays it from the ingest log, and a disk queue would only write every batch a
    /// second time (it cost the gateway 16 % of its throughput; `BENCHMARKS.md`). What a
    /// disk queue adds is room to spill while the broker is down; `storage = "disk"` keeps it.
    pub fn default_storage(kafka: bool, durability: crate::Durability) -> QueueStorage {
        if kafka {
            QueueStorage::Memory
        } else {
            Self::for_durability(durability).storage
        }
    }

    /// The defaults with `engine.durability = durability`.
    pub fn for_durability(durability: crate::Durability) -> Self {
        match durability {
            crate::Durability::AckAfterSync => QueueConfig::default(),
            crate::Durability::None => QueueConfig {
                storage: QueueStorage::Memory,
                max_bytes: Self::MEMORY_MAX_BYTES,
                overflow: QueueOverflow::Refuse,
            },
        }
    }
}

impl Default for QueueConfig {
    /// The defaults with the default durability (`ack_after_sync`): 1 GiB on disk, refuse.
    fn default() -> Self {
        QueueConfig {
            storage: QueueStorage::Disk,
            max_bytes: Self::DISK_MAX_BYTES,
            overflow: QueueOverflow::Refuse,
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

/// A parsed `http://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or IP address; IPv6 addresses without brackets.
    pub host: String,
    /// Port (always explicit in the config).
    pub port: u16,
    /// Path including its leading `/`, or empty.
    pub path: String,
}

impl Endpoint {
    /// `host:port`, with brackets around an IPv6 host: the HTTP `Host`/`:authority` value and
    /// what to resolve and connect to.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The path to request: `path`, or `/` when empty.
    pub fn path_or_root(&self) -> &str {
        if self.path.is_empty() {
            "/"
        } else {
            &self.path
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority(), self.path)
    }
}

impl FromStr for Endpoint {
    type Err = ConfigErrorKind;

    /// Parses `http://host:port[/path]` or `https://...`; the port is required. No user info,
    /// query or fragment.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ConfigErrorKind::InvalidUrl {
            value: text.to_string(),
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(invalid)?;
        if scheme != "http" && scheme != "https" {
            return Err(invalid());
        }
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if path.contains(['?', '#']) || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(invalid)?;
            host.parse::<Ipv6Addr>().map_err(|_| invalid())?;
            (host, after.strip_prefix(':').ok_or_else(invalid)?)
        } else {
            let (host, port) = authority.rsplit_once(':').ok_or_else(invalid)?;
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
            if !host_ok {
                return Err(invalid());
            }
            (host, port)
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let port: u16 = port.parse().map_err(|_| invalid())?;
        if port == 0 {
            return Err(invalid());
        }
        Ok(Endpoint {
            scheme: scheme.to_string(),
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// Checks a header name (an HTTP token) and value (visible ASCII, spaces and tabs).
pub fn check_header(name: &str, value: &str) -> Result<(), ConfigErrorKind> {
    let invalid = |reason| ConfigErrorKind::InvalidHeader {
        name: name.to_string(),
        reason,
    };
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(invalid(
            "names may only contain letters, digits and !#$%&'*+-.^_`|~",
        ));
    }
    if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        return Err(invalid("this header is set by shardtel"));
    }
    if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(invalid(
            "values may only contain visible ASCII, spaces and tabs",
        ));
    }
    Ok(())
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
            other => {
                let span = table.get("type").map_or_else(|| key.span(), |v| v.span());
                let kind = if ExporterKind::PLANNED.contains(&other) {
                    ConfigErrorKind::UnsupportedType {
                        kind: ComponentKind::Exporter,
                        ty: ty.clone(),
                    }
                } else {
                    ConfigErrorKind::UnknownType {
                        kind: ComponentKind::Exporter,
                        ty: ty.clone(),
                        allowed: ExporterKind::SUPPORTED,
                    }
                };
                let key = if table.get("type").is_some() {
                    table.key("type")
                } else {
                    table.path.clone()
                };
                d.report(key, span, kind);
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

/// Which URLs an endpoint key accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndpointUse {
    Grpc,
    Http,
}

pub(crate) fn parse_endpoint(
    value: &DeValue<'_>,
    usage: EndpointUse,
) -> Result<Endpoint, ConfigErrorKind> {
    let text = decode::string(value)?;
    let endpoint: Endpoint = text.parse()?;
    if endpoint.scheme == "https" {
        return Err(ConfigErrorKind::TlsNotSupported { value: text });
    }
    if usage == EndpointUse::Grpc && !endpoint.path.is_empty() && endpoint.path != "/" {
        return Err(ConfigErrorKind::UnexpectedUrlPath { value: text });
    }
    Ok(endpoint)
}

pub(crate) fn required_endpoint(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
    usage: EndpointUse,
) -> Option<Endpoint> {
    if s.get("endpoint").is_none() {
        let hint = match usage {
            EndpointUse::Grpc => "endpoint = \"http://host:4317\"",
            EndpointUse::Http => "endpoint = \"http://host:4318\"",
        };
        d.require(s, "endpoint", hint);
        return None;
    }
    d.field(s, "endpoint", |v| parse_endpoint(v, usage))
}

fn compression(value: &DeValue<'_>) -> Result<Compression, ConfigErrorKind> {
    Ok(match decode::one_of(value, Compression::NAMES)? {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        _ => Compression::None,
    })
}

pub(crate) fn timeout(value: &DeValue<'_>) -> Result<Duration, ConfigErrorKind> {
    decode::min_duration(decode::duration(value)?, Duration::from_millis(1))
}

pub(crate) fn decode_headers(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    let Some(value) = s.get("headers") else {
        return headers;
    };
    let table = d.table(s.key("headers"), value, None);
    for (name, value) in table.entries() {
        let name_text = name.get_ref().as_ref();
        let parsed = d.value(table.key(name_text), value, |v| {
            let text = decode::string(v)?;
            check_header(name_text, &text)?;
            Ok(text)
        });
        if let Some(text) = parsed {
            if headers
                .insert(name_text.to_ascii_lowercase(), text)
                .is_some()
            {
                d.report(
                    table.key(name_text),
                    name.span(),
                    ConfigErrorKind::InvalidHeader {
                        name: name_text.to_string(),
                        reason: "set twice (header names are case-insensitive)",
                    },
                );
            }
        }
    }
    headers
}

pub(crate) fn decode_batch(d: &mut Decoder<'_>, parent: &Section<'_, '_>) -> BatchConfig {
    let s = d.section(parent, "batch", BatchConfig::KEYS);
    let default = BatchConfig::default();
    BatchConfig {
        max_items: d.field_or(&s, "max_items", default.max_items, |v| {
            Ok(decode::in_range(decode::count(v, u64::MAX)?, 1, 1 << 24)? as usize)
        }),
        max_bytes: d.field_or(&s, "max_bytes", default.max_bytes, |v| {
            Ok(decode::min_size(decode::size(v)?, BatchConfig::MIN_BYTES)? as usize)
        }),
        timeout: d.field_or(&s, "timeout", default.timeout, decode::duration),
    }
}

pub(crate) fn decode_retry(d: &mut Decoder<'_>, parent: &Section<'_, '_>) -> RetryConfig {
    let s = d.section(parent, "retry", RetryConfig::KEYS);
    let default = RetryConfig::default();
    let interval =
        |v: &DeValue<'_>| decode::min_duration(decode::duration(v)?, Duration::from_millis(1));
    RetryConfig {
        enabled: d.field_or(&s, "enabled", default.enabled, decode::boolean),
        initial_interval: d.field_or(&s, "initial_interval", default.initial_interval, interval),
        max_interval: d.field_or(&s, "max_interval", default.max_interval, interval),
        max_elapsed_time: d.field_or(
            &s,
            "max_elapsed_time",
            default.max_elapsed_time,
            decode::duration,
        ),
    }
}

/// Decodes `queue`. `storage` and `max_bytes` left out get their defaults for
/// `engine.durability` later, in [`resolve_queue_defaults`].
pub(crate) fn decode_queue(d: &mut Decoder<'_>, parent: &Section<'_, '_>) -> QueueConfig {
    let s = d.section(parent, "queue", QueueConfig::KEYS);
    let default = QueueConfig::default();
    QueueConfig {
        storage: d.field_or(&s, "storage", default.storage, |v| {
            Ok(match decode::one_of(v, &["disk", "memory"])? {
                "disk" => QueueStorage::Disk,
                _ => QueueStorage::Memory,
            })
        }),
        max_bytes: d.field_or(&s, "max_bytes", default.max_bytes, |v| {
            Ok(decode::min_size(decode::size(v)?, BatchConfig::MIN_BYTES)? as usize)
        }),
        overflow: d.field_or(&s, "overflow", default.overflow, |v| {
            Ok(match decode::one_of(v, &["refuse", "drop_oldest"])? {
                "refuse" => QueueOverflow::Refuse,
                _ => QueueOverflow::DropOldest,
            })
        }),
    }
}

/// Gives each exporter queue whose `storage` or `max_bytes` the file left out its default: a
/// disk queue of 1 GiB with `engine.durability = "ack_after_sync"`, a memory queue of 64 MiB
/// with `"none"` — and a memory queue for `kafka` exporters either way (see
/// [`QueueConfig::default_storage`]).
pub(crate) fn resolve_queue_defaults(config: &mut crate::Config, locations: &Locations) {
    let durability = config.engine.durability;
    for (name, exporter) in config.exporters.iter_mut() {
        let key = crate::decode::join(&crate::decode::join("exporters", name), "queue");
        let kafka = matches!(exporter.kind, ExporterKind::Kafka(_));
        let queue = match &mut exporter.kind {
            ExporterKind::Otlp(c) => &mut c.queue,
            ExporterKind::OtlpHttp(c) => &mut c.queue,
            ExporterKind::File(c) => &mut c.queue,
            ExporterKind::Kafka(c) => &mut c.queue,
            ExporterKind::PrometheusRemoteWrite(c) => &mut c.queue,
            ExporterKind::Loki(c) => &mut c.queue,
            ExporterKind::Blackhole => continue,
        };
        if !locations.given(&crate::decode::join(&key, "storage")) {
            queue.storage = QueueConfig::default_storage(kafka, durability);
        }
        if !locations.given(&crate::decode::join(&key, "max_bytes")) {
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
    let batch = decode_batch(d, s);
    let retry = decode_retry(d, s);
    let queue = decode_queue(d, s);
    Some(OtlpExporterConfig {
        endpoint: endpoint?,
        compression,
        timeout,
        headers,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print_back() {
        for (text, host, port, path, authority) in [
            (
                "http://127.0.0.1:4317",
                "127.0.0.1",
                4317,
                "",
                "127.0.0.1:4317",
            ),
            ("http://tempo:4317/", "tempo", 4317, "/", "tempo:4317"),
            (
                "https://otlp.example.com:443/otlp",
                "otlp.example.com",
                443,
                "/otlp",
                "otlp.example.com:443",
            ),
            (
                "http://[::1]:4318/v1/traces",
                "::1",
                4318,
                "/v1/traces",
                "[::1]:4318",
            ),
        ] {
            let e: Endpoint = text.parse().unwrap();
            assert_eq!(
                (e.host.as_str(), e.port, e.path.as_str()),
                (host, port, path)
            );
            assert_eq!(e.authority(), authority);
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn bad_endpoints() {
        for bad in [
            "htp:/x",
            "tempo:4317",
            "ftp://tempo:21",
            "http://tempo",
            "http://tempo:",
            "http://tempo:0",
            "http://tempo:65536",
            "http://tempo:43a7",
            "http://:4317",
            "http://user@tempo:4317",
            "http://tempo:4317/x?y=1",
            "http://[::1:4317",
            "http://[zz]:4317",
            "http://te mpo:4317",
        ] {
            assert_eq!(
                bad.parse::<Endpoint>().unwrap_err().to_string(),
                format!("invalid url {bad:?} (expected http://host:port or https://host:port)"),
            );
        }
    }

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
    fn headers() {
        assert!(check_header("authorization", "Bearer abc").is_ok());
        assert!(check_header("X-Scope-OrgID", "tenant-1").is_ok());
        assert_eq!(
            check_header("bad name", "x").unwrap_err().to_string(),
            "invalid header \"bad name\": names may only contain letters, digits and !#$%&'*+-.^_`|~"
        );
        assert_eq!(
            check_header("x", "a\nb").unwrap_err().to_string(),
            "invalid header \"x\": values may only contain visible ASCII, spaces and tabs"
        );
        assert_eq!(
            check_header("Host", "x").unwrap_err().to_string(),
            "invalid header \"Host\": this header is set by shardtel"
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
