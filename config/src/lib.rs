//! shardtel's configuration: the TOML file's types, defaults and validation, and the CPU core
//! layout.
//!
//! The file follows the OpenTelemetry Collector's shape — `[receivers.*]` → `[processors.*]` →
//! `[exporters.*]`, wired by `[pipelines.*]` — plus `[engine]` (cores, data directory,
//! durability) and `[telemetry]` (health, self-metrics, logs). [`DEFAULT_CONFIG`] is a complete,
//! commented example that doubles as documentation.
//!
//! Main types:
//! - [`Config`]: the whole file; [`Config::from_file`] reads, substitutes `${ENV_VAR}`s, parses
//!   and validates.
//! - [`ConfigErrors`]: every problem found, each a [`ConfigError`] naming the file, the line,
//!   the dotted key and what is allowed:
//!   `shardtel.toml:7: engine.corez: unknown key (allowed: cores, data_dir, durability, channel_capacity, shutdown_timeout, wal)`.
//! - [`Cores`]: which CPUs run reactors; [`Cores::resolve`] checks them against this machine.
//!
//! Loading runs once at start-up, before any reactor: it may read the file and `/proc` with
//! `std::fs`. No glommio, no sockets; depended on by `sinks` and `engine`. It depends on
//! `shardtel-protocol` (another leaf) for [`Signal`] alone, re-exported here, so a pipeline's
//! signal and the wire's are one type. It reads TOML with the `toml` crate's spanned document
//! tree (not serde derive) so that it can report all problems at once, each with its line; see
//! the `decode` module.
//!
//! Modules, bottom up (each uses only those above it):
//! - `error` and `units`: problems as data ([`ConfigErrorKind`] variants carry the values and
//!   what is allowed), sizes and durations (units' parsers return `ConfigErrorKind`, error
//!   messages print values with units' formatters: the one pair that uses each other).
//! - `env` (`${ENV}` substitution), then `decode` (the spanned tree, keys, lines, values).
//! - Sections and shared settings: `wal`, `engine` (on `wal`), `telemetry`, `pipelines`,
//!   `attributes`, `memory_limiter`, `filter` (on `attributes`), `endpoint` (URL, headers,
//!   timeout of network exporters), `delivery` (batch, retry, queue of every exporter; on
//!   `engine`'s `Durability`).
//! - Components with types of their own: `processors` (on `attributes`, `filter`,
//!   `memory_limiter`; holds `tail_sampling`), `kafka` and `storage` (exporter types on
//!   `delivery` and `endpoint`), `prometheus` (the scrape receiver, on `tls`),
//!   `format_receivers` (`zipkin`, `jaeger`, `fluentforward`), `receivers` (on `kafka`,
//!   `prometheus` and `format_receivers`), then `exporters` (the `[exporters.*]`
//!   dispatch over every exporter type).
//! - `validate`: checks across sections, on the whole [`Config`], which this file defines.
//!
//! ```
//! use shardtel_config::{Config, ExporterKind, Signal};
//!
//! let config = Config::from_str(
//!     r#"
//!     [receivers.otlp]
//!     grpc = "127.0.0.1:4317"
//!     http = false
//!
//!     [exporters.tempo]
//!     type = "otlp"
//!     endpoint = "http://tempo:4317"
//!     compression = "zstd"
//!
//!     [pipelines.traces]
//!     receivers = ["otlp"]
//!     exporters = ["tempo"]
//!     "#,
//!     "example.toml",
//! )
//! .unwrap();
//! let ExporterKind::Otlp(tempo) = &config.exporters["tempo"].kind else { unreachable!() };
//! assert_eq!(tempo.endpoint.authority(), "tempo:4317");
//! assert_eq!(config.pipelines.get(Signal::Traces).unwrap().exporters, ["tempo"]);
//!
//! let errors = Config::from_str("[engine]\ncorez = 2\n", "shardtel.toml").unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "shardtel.toml:2: engine.corez: unknown key (allowed: cores, data_dir, durability, channel_capacity, shutdown_timeout, wal)\n\
//!      shardtel.toml: pipelines: no pipeline is defined (define at least one of [pipelines.traces], [pipelines.metrics], [pipelines.logs])"
//! );
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod attributes;
mod decode;
mod delivery;
mod endpoint;
mod engine;
mod env;
mod error;
mod exporters;
mod filter;
mod format_receivers;
mod kafka;
mod memory_limiter;
pub mod ottl;
mod pipelines;
mod processors;
mod prometheus;
mod receivers;
pub mod reload;
mod storage;
mod telemetry;
#[cfg(test)]
mod testing;
mod tls;
mod transform;
mod units;
mod validate;
mod wal;

use std::collections::BTreeMap;
use std::path::Path;

pub use attributes::{
    ActionKind, AttributeAction, AttributeValue, AttributesConfig, KeyMatch, ResourceConfig,
    ValueSource, LOG_BODY_KEY,
};
pub use delivery::{BatchConfig, QueueConfig, QueueOverflow, QueueStorage, RetryConfig};
pub use endpoint::{check_header, Endpoint};
pub use engine::{format_cpu_list, parse_cpu_list, usable_cpus, Cores, Durability, EngineConfig};
pub use error::{ComponentKind, ConfigError, ConfigErrorKind, ConfigErrors};
pub use exporters::{
    Compression, ExporterConfig, ExporterKind, FileExporterConfig, OtlpExporterConfig,
    OtlpHttpExporterConfig, RotationConfig,
};
pub use filter::{
    AttributeMatch, FilterConfig, FilterRules, MatchProperties, MatchType, SeverityMatch,
    StatusCode, SPAN_KINDS,
};
pub use format_receivers::{
    FluentForwardReceiverConfig, JaegerReceiverConfig, ListenerLimits, ZipkinReceiverConfig,
};
pub use kafka::{
    check_broker, default_topic, InitialOffset, KafkaAcks, KafkaAuth, KafkaCompression,
    KafkaEncoding, KafkaExporterConfig, KafkaReceiverConfig, KafkaTlsConfig, RebalanceStrategy,
    SaslConfig, SaslMechanism,
};
pub use memory_limiter::{MemoryAmount, MemoryLimiterConfig};
pub use pipelines::{Pipeline, Pipelines};
pub use processors::{
    BufferCompression, DecisionCacheConfig, OnShutdown, Percentage, PolicyConfig, PolicyKind,
    ProcessorConfig, RateAllocation, TailSamplingConfig,
};
pub use prometheus::{
    is_valid_label_name, is_valid_target, Authorization, BasicAuth, PrometheusReceiverConfig,
    ScrapeConfig, ScrapeScheme, StaticConfig,
};
pub use receivers::{OtlpReceiverConfig, Receivers};
/// The OTLP signal of a pipeline: `shardtel-protocol`'s, so every crate shares one type.
pub use shardtel_protocol::Signal;
pub use storage::{
    ExponentialHistograms, LokiEncoding, LokiExporterConfig, LokiLineFormat,
    PrometheusRemoteWriteExporterConfig,
};
pub use telemetry::{check_log_level, LogFormat, TelemetryConfig};
pub use tls::{
    is_valid_bearer_token, AuthConfig, CheckFiles, ClientTlsConfig, FileProblem, ServerTlsConfig,
    TlsVersion,
};
pub use transform::{
    item_context, Route, RoutingConfig, SpanHistogram, SpanMetricsConfig, SpanTemporality,
    StatementGroup, TransformConfig,
};
pub use units::{format_duration, format_size, parse_duration, parse_size};
pub use wal::WalConfig;

/// The embedded default configuration, printed by `shardtel default-config`: every section with
/// its keys, defaults and explanations in comments.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The origin used in error messages about [`DEFAULT_CONFIG`].
pub const DEFAULT_CONFIG_ORIGIN: &str = "<embedded default>";

/// A whole, validated configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[engine]`.
    pub engine: EngineConfig,
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[receivers.*]`.
    pub receivers: Receivers,
    /// `[processors.NAME]` by name.
    pub processors: BTreeMap<String, ProcessorConfig>,
    /// `[exporters.NAME]` by name.
    pub exporters: BTreeMap<String, ExporterConfig>,
    /// `[pipelines.*]`.
    pub pipelines: Pipelines,
}

impl Config {
    /// The top-level keys.
    pub const KEYS: &'static [&'static str] = &[
        "engine",
        "telemetry",
        "receivers",
        "processors",
        "exporters",
        "pipelines",
    ];

    /// Reads `path`, substitutes `${ENV_VAR}`s from the process environment, parses and
    /// validates it. Errors name `path` as given.
    pub fn from_file(path: &Path) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| {
            ConfigError::new("", ConfigErrorKind::Io { source }).at(&origin, None)
        })?;
        Config::from_str(&text, &origin)
    }

    /// Like [`Config::from_file`], and also checks with `files` that the files the
    /// configuration names (certificates, keys, CA bundles, token files) exist and parse; their
    /// problems are reported at the key naming the file, with the others. `shardtel validate`
    /// and start-up use this, with `shardtel-tls`'s checker.
    pub fn from_file_checked(path: &Path, files: &dyn CheckFiles) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| {
            ConfigError::new("", ConfigErrorKind::Io { source }).at(&origin, None)
        })?;
        Config::from_str_checked(&text, &origin, files)
    }

    /// Substitutes `${ENV_VAR}`s from the process environment, parses and validates `text`;
    /// `origin` is the file name used in messages.
    pub fn from_str(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
        Config::from_str_with_env(text, origin, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::from_str`], and also checks the files it names with `files` (see
    /// [`Config::from_file_checked`]).
    pub fn from_str_checked(
        text: &str,
        origin: &str,
        files: &dyn CheckFiles,
    ) -> Result<Config, ConfigErrors> {
        let lookup = |name: &str| std::env::var(name).ok();
        Config::load_checked(text, origin, &lookup, &usable_cpus(), Some(files))
    }

    /// Like [`Config::from_str`], looking variables up with `lookup` instead of the process
    /// environment (for tests and embedding).
    pub fn from_str_with_env(
        text: &str,
        origin: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Config::load(text, origin, lookup, &usable_cpus())
    }

    /// The embedded [`DEFAULT_CONFIG`], parsed.
    ///
    /// # Panics
    ///
    /// Never in a released build: the default is checked by this crate's tests, and `cores =
    /// "all"` resolves on every machine.
    pub fn embedded_default() -> Config {
        match Config::load(
            DEFAULT_CONFIG,
            DEFAULT_CONFIG_ORIGIN,
            &|_| None,
            &usable_cpus(),
        ) {
            Ok(config) => config,
            Err(errors) => panic!("the embedded default config is invalid:\n{errors}"),
        }
    }

    /// The exporter named `name`.
    pub fn exporter(&self, name: &str) -> Option<&ExporterConfig> {
        self.exporters.get(name)
    }

    fn load(
        text: &str,
        origin: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
        usable_cpus: &[usize],
    ) -> Result<Config, ConfigErrors> {
        Config::load_checked(text, origin, lookup, usable_cpus, None)
    }

    fn load_checked(
        text: &str,
        origin: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
        usable_cpus: &[usize],
        files: Option<&dyn CheckFiles>,
    ) -> Result<Config, ConfigErrors> {
        let substituted = match env::substitute(text, lookup) {
            Ok(substituted) => substituted,
            Err(problems) => {
                let source = env::SourceMap::new(origin, text, None);
                return Err(finish(
                    problems
                        .into_iter()
                        .map(|p| {
                            let line = source.line_of_original(p.offset);
                            ConfigError::new("", p.kind).at(origin, Some(line))
                        })
                        .collect(),
                ));
            }
        };
        let source = env::SourceMap::new(origin, text, Some(&substituted));
        let (document, syntax_errors) = toml::de::DeTable::parse_recoverable(&substituted.text);
        if !syntax_errors.is_empty() {
            return Err(finish(
                syntax_errors
                    .into_iter()
                    .map(|e| {
                        let line = e.span().map(|span| source.line(span.start));
                        let mut message = e.message().to_string();
                        // toml does not say which key is duplicated; its span does.
                        let key = e.span().and_then(|span| substituted.text.get(span));
                        if let Some(key) = key.filter(|k| !k.is_empty() && !k.contains('\n')) {
                            if message == "duplicate key" {
                                message = format!("duplicate key {key}");
                            }
                        }
                        let kind = ConfigErrorKind::Syntax { message };
                        ConfigError::new("", kind).at(origin, line)
                    })
                    .collect(),
            ));
        }
        let mut d = decode::Decoder::new(&source);
        let root = d.root(document.get_ref(), Config::KEYS);
        let mut config = Config {
            engine: engine::decode(&mut d, &root),
            telemetry: telemetry::decode(&mut d, &root),
            receivers: receivers::decode(&mut d, &root),
            processors: processors::decode(&mut d, &root),
            exporters: exporters::decode(&mut d, &root),
            pipelines: pipelines::decode(&mut d, &root),
        };
        exporters::resolve_delivery_defaults(
            &mut config.exporters,
            config.engine.durability,
            &d.locations,
        );
        let mut errors = d.errors;
        errors.extend(validate::validate(
            &config,
            &d.locations,
            origin,
            usable_cpus,
        ));
        errors.extend(validate::check_tls_endpoints(&config, &d.locations, origin));
        if let Some(files) = files {
            errors.extend(validate::check_files(&config, &d.locations, origin, files));
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(finish(errors))
        }
    }
}

/// Sorts problems by line (those without one last), keeping the order of problems on one line.
fn finish(mut errors: Vec<ConfigError>) -> ConfigErrors {
    errors.sort_by_key(|e| (e.line.is_none(), e.line));
    ConfigErrors(errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    /// A minimal valid tail appended to snippets, so each test shows only its own problem.
    const BASE: &str = "\
[receivers.otlp]
[exporters.blackhole]
[pipelines.traces]
receivers = [\"otlp\"]
exporters = [\"blackhole\"]
";

    fn env(name: &str) -> Option<String> {
        match name {
            "TEMPO_HOST" => Some("tempo".to_string()),
            "TWO_LINES" => Some("[0,\n1]".to_string()),
            "INJECT" => Some("x\"\n[exporters.evil]\ntype = \"blackhole".to_string()),
            "CORES_INJECT" => Some("[0]\n[exporters.evil]".to_string()),
            _ => None,
        }
    }

    /// Loads with a fixed environment and a machine with cpus 0-3.
    fn load(text: &str) -> Result<Config, ConfigErrors> {
        Config::load(text, "shardtel.toml", &env, &[0, 1, 2, 3])
    }

    fn ok(text: &str) -> Config {
        load(text).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
    }

    fn err(text: &str) -> String {
        crate::testing::problems(load(text))
    }

    /// The problems of `snippet` followed by [`BASE`].
    fn err_with_base(snippet: &str) -> String {
        err(&format!("{snippet}{BASE}"))
    }

    #[test]
    fn embedded_default_parses_and_matches_the_documented_defaults() {
        let config = Config::embedded_default();
        assert_eq!(config.engine, EngineConfig::default());
        assert_eq!(config.telemetry, TelemetryConfig::default());
        let otlp = config.receivers.otlp.as_ref().unwrap();
        assert_eq!(otlp.grpc, Some("127.0.0.1:4317".parse().unwrap()));
        assert_eq!(otlp.http, Some("127.0.0.1:4318".parse().unwrap()));
        assert_eq!(
            otlp.max_recv_msg_size,
            OtlpReceiverConfig::default().max_recv_msg_size
        );
        assert_eq!(
            otlp.max_concurrent_streams,
            OtlpReceiverConfig::default().max_concurrent_streams
        );
        assert_eq!(
            otlp.max_connections,
            OtlpReceiverConfig::default().max_connections
        );
        assert!(config.processors.is_empty());
        for (name, signal) in [
            ("file_traces", "traces"),
            ("file_metrics", "metrics"),
            ("file_logs", "logs"),
        ] {
            let ExporterKind::File(file) = &config.exporters[name].kind else {
                panic!("{name} is not a file exporter");
            };
            // Every value spelled out in the default equals the built-in default (for the
            // default durability, which gives up on no batch).
            let mut expected = FileExporterConfig::new(format!("./shardtel-data/{signal}.jsonl"));
            expected.retry.max_elapsed_time =
                RetryConfig::default_max_elapsed_time(Durability::AckAfterSync);
            assert_eq!(*file, expected);
        }
        for (signal, pipeline) in config.pipelines.iter() {
            assert_eq!(pipeline.receivers, ["otlp"]);
            assert_eq!(pipeline.exporters, [format!("file_{signal}")]);
        }
        assert_eq!(config.pipelines.iter().count(), 3);
    }

    #[test]
    fn empty_tables_get_their_defaults() {
        let config = ok(&format!("[engine]\n[telemetry]\n{BASE}"));
        assert_eq!(config.engine, EngineConfig::default());
        assert_eq!(config.engine.cores, Cores::All);
        assert_eq!(
            config.engine.data_dir,
            std::path::PathBuf::from("./shardtel-data")
        );
        assert_eq!(config.engine.durability, Durability::AckAfterSync);
        assert_eq!(config.engine.channel_capacity, 1024);
        assert_eq!(config.engine.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(config.telemetry, TelemetryConfig::default());
        assert_eq!(config.receivers.otlp, Some(OtlpReceiverConfig::default()));
        assert_eq!(config.exporters["blackhole"].kind, ExporterKind::Blackhole);
        assert_eq!(config.exporters["blackhole"].name, "blackhole");
        // Absent sections are defaults too.
        assert_eq!(ok(BASE).engine, EngineConfig::default());
    }

    #[test]
    fn every_key_is_read() {
        let config = ok(r#"
[engine]
cores = [3, 1]
data_dir = "/var/lib/shardtel"
durability = "none"
channel_capacity = 4096
shutdown_timeout = "1m30s"

[telemetry]
health = false
metrics = "[::1]:9999"
log_level = "warn,shardtel_engine=debug"
log_format = "json"

[receivers.otlp]
grpc = "0.0.0.0:0"
http = false
max_recv_msg_size = "16MiB"
max_concurrent_streams = 1000

[exporters."otlp/tempo"]
endpoint = "http://[::1]:4317"
compression = "zstd"
timeout = "2s"
headers = { "X-Scope-OrgID" = "tenant-1", authorization = "Bearer x" }
batch = { max_items = 100, max_bytes = 65536, timeout = "1s" }
retry = { enabled = false, initial_interval = "1s", max_interval = "1m", max_elapsed_time = 0 }
queue = { max_bytes = "1GiB" }

[exporters.vendor]
type = "otlphttp"
endpoint = "http://collector:4318/otlp"
metrics_endpoint = "http://mimir:9009/otlp/v1/metrics"
compression = "none"

[exporters.archive]
type = "file"
path = "/data/spans.jsonl"
rotation = { max_megabytes = 1, max_backups = 0 }

[pipelines.traces]
receivers = ["otlp"]
exporters = ["otlp/tempo", "archive"]

[pipelines.metrics]
receivers = ["otlp"]
processors = []
exporters = ["vendor"]
"#);
        let engine = &config.engine;
        assert_eq!(engine.cores, Cores::List(vec![3, 1]));
        assert_eq!(
            engine.data_dir,
            std::path::PathBuf::from("/var/lib/shardtel")
        );
        assert_eq!(engine.channel_capacity, 4096);
        assert_eq!(engine.shutdown_timeout, Duration::from_secs(90));
        assert_eq!(
            engine.cores.resolve_against(&[0, 1, 2, 3]).unwrap(),
            vec![3, 1]
        );

        assert_eq!(config.telemetry.health, None);
        assert_eq!(
            config.telemetry.metrics,
            Some("[::1]:9999".parse::<SocketAddr>().unwrap())
        );
        assert_eq!(config.telemetry.log_level, "warn,shardtel_engine=debug");
        assert_eq!(config.telemetry.log_format, LogFormat::Json);

        let otlp = config.receivers.otlp.as_ref().unwrap();
        assert_eq!(otlp.grpc, Some("0.0.0.0:0".parse().unwrap()));
        assert_eq!(otlp.http, None);
        assert_eq!(otlp.max_recv_msg_size, 16 << 20);
        assert_eq!(otlp.max_concurrent_streams, 1000);

        let tempo = config.exporter("otlp/tempo").unwrap();
        assert_eq!(tempo.name, "otlp/tempo");
        let ExporterKind::Otlp(tempo) = &tempo.kind else {
            panic!("{tempo:?}")
        };
        assert_eq!(tempo.endpoint.to_string(), "http://[::1]:4317");
        assert_eq!(tempo.compression, Compression::Zstd);
        assert_eq!(tempo.timeout, Duration::from_secs(2));
        assert_eq!(
            tempo
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            [("authorization", "Bearer x"), ("x-scope-orgid", "tenant-1")]
        );
        assert_eq!(
            tempo.batch,
            BatchConfig {
                max_items: 100,
                max_bytes: 65536,
                timeout: Duration::from_secs(1)
            }
        );
        assert_eq!(
            tempo.retry,
            RetryConfig {
                enabled: false,
                initial_interval: Duration::from_secs(1),
                max_interval: Duration::from_secs(60),
                max_elapsed_time: Duration::ZERO,
            }
        );
        assert_eq!(tempo.queue.max_bytes, 1 << 30);

        let ExporterKind::OtlpHttp(vendor) = &config.exporters["vendor"].kind else {
            panic!()
        };
        assert_eq!(vendor.compression, Compression::None);
        assert_eq!(
            vendor.signal_endpoint(Signal::Traces).to_string(),
            "http://collector:4318/otlp/v1/traces"
        );
        assert_eq!(
            vendor.signal_endpoint(Signal::Metrics).to_string(),
            "http://mimir:9009/otlp/v1/metrics"
        );

        let ExporterKind::File(archive) = &config.exporters["archive"].kind else {
            panic!()
        };
        assert_eq!(archive.path, std::path::PathBuf::from("/data/spans.jsonl"));
        assert_eq!(
            archive.rotation,
            RotationConfig {
                max_megabytes: 1,
                max_backups: 0
            }
        );

        assert_eq!(
            config.pipelines.traces.as_ref().unwrap().exporters,
            ["otlp/tempo", "archive"]
        );
        assert!(config.pipelines.logs.is_none());
    }

    /// DESIGN.md's configuration sketch, without what this build does not support yet (the
    /// attributes processor, ack_after_sync); the prometheusremotewrite exporter is in
    /// `storage_exporters_decode`;
    /// its tail_sampling part is tested in the `processors` module.
    const DESIGN_SKETCH: &str = r#"
[engine]
cores = [0, 1]            # CPU ids, one reactor each; "all" = every online CPU
data_dir = "/var/lib/shardtel"
durability = "none"   # or "ack_after_sync"

[telemetry]
health = "127.0.0.1:13133"
metrics = "127.0.0.1:8888"

[receivers.otlp]
grpc = "0.0.0.0:4317"
http = "0.0.0.0:4318"

[exporters.otlp]
endpoint = "http://127.0.0.1:4317"

[exporters.tempo]           # a second OTLP exporter: type names the kind
type = "otlp"
endpoint = "http://tempo:4317"

[exporters.file]
path = "./shardtel-data/traces.jsonl"   # OTLP JSON lines, rotated

[exporters.blackhole]       # counts and drops

[pipelines.traces]
receivers = ["otlp"]
exporters = ["otlp", "tempo", "file", "blackhole"]
"#;

    #[test]
    fn design_sketch_parses() {
        let config = ok(DESIGN_SKETCH);
        assert_eq!(config.engine.cores, Cores::List(vec![0, 1]));
        assert_eq!(config.exporters.len(), 4);
        assert!(matches!(
            config.exporters["otlp"].kind,
            ExporterKind::Otlp(_)
        ));
        assert!(matches!(
            config.exporters["tempo"].kind,
            ExporterKind::Otlp(_)
        ));
        assert!(matches!(
            config.exporters["file"].kind,
            ExporterKind::File(_)
        ));
        assert_eq!(config.exporters["blackhole"].kind, ExporterKind::Blackhole);
    }

    #[test]
    fn design_sketch_unsupported_parts_are_reported_once_each() {
        let full = DESIGN_SKETCH
            .replace("durability = \"none\"   # or \"ack_after_sync\"", "durability = \"ack_after_sync\"")
            .replace(
                "[exporters.otlp]",
                "[processors.tail_sampling]\ndecision_wait = \"10s\"\n[[processors.tail_sampling.policies]]\nname = \"errors\"\n\
                 type = \"status_code\"\nstatus_codes = [\"ERROR\"]\n\
                 [processors.redact]\ntype = \"attributes\"\n[[processors.redact.actions]]\nkey = \"user.email\"\naction = \"delete\"\n\
                 [exporters.kafka]\nbrokers = [\"127.0.0.1:9092\"]\n[exporters.prometheusremotewrite]\nendpoint = \"x\"\n\
                 [exporters.otlp]",
            )
            .replace("receivers = [\"otlp\"]\n", "receivers = [\"otlp\"]\nprocessors = [\"tail_sampling\", \"redact\"]\n")
            .replace("exporters = [\"otlp\", ", "exporters = [\"kafka\", \"otlp\", ");
        assert_eq!(
            err(&full),
            "shardtel.toml:29: exporters.prometheusremotewrite.endpoint: invalid url \"x\" (expected http://host:port or https://host:port)"
        );
    }

    #[test]
    fn examples_parse_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut checked = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Err(errors) =
                    Config::load(&text, &path.display().to_string(), &|_| None, &[0, 1])
                {
                    panic!("{errors}");
                }
                checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        for example in [
            "all-in-one.toml",
            "gateway-kafka.toml",
            "gateway-otlphttp.toml",
            "processor-kafka.toml",
        ] {
            assert!(checked.contains(&example.to_string()), "{checked:?}");
        }
    }

    #[test]
    fn all_in_one_example_has_the_documented_exporters() {
        let text = include_str!("../examples/all-in-one.toml");
        let config = Config::load(text, "all-in-one.toml", &|_| None, &[0, 1]).unwrap();
        let ExporterKind::Otlp(tempo) = &config.exporters["tempo"].kind else {
            panic!()
        };
        assert_eq!(tempo.endpoint.to_string(), "http://127.0.0.1:4317");
        assert!(config
            .exporters
            .values()
            .any(|e| matches!(e.kind, ExporterKind::File(_))));
        assert!(config
            .exporters
            .values()
            .any(|e| e.kind == ExporterKind::Blackhole));
        let ExporterKind::PrometheusRemoteWrite(prometheus) = &config.exporters["prometheus"].kind
        else {
            panic!()
        };
        assert_eq!(
            prometheus.endpoint.to_string(),
            "http://127.0.0.1:9090/api/v1/write"
        );
        assert!(matches!(
            config.exporters["loki"].kind,
            ExporterKind::Loki(_)
        ));
    }

    #[test]
    fn processing_tier_example_samples_and_fans_out_to_storage() {
        let text = include_str!("../examples/processor-kafka.toml");
        let env = |name: &str| match name {
            "MIMIR" => Some("http://mimir:9009".to_string()),
            "TENANT" => Some("team-a".to_string()),
            _ => None,
        };
        let config = Config::load(text, "processor-kafka.toml", &env, &[0, 1]).unwrap();
        let traces = config.pipelines.traces.as_ref().unwrap();
        assert_eq!(traces.processors, ["tail_sampling"]);
        assert_eq!(traces.exporters, ["tempo"]);
        let ExporterKind::PrometheusRemoteWrite(mimir) = &config.exporters["mimir"].kind else {
            panic!()
        };
        assert_eq!(mimir.endpoint.to_string(), "http://mimir:9009/api/v1/push");
        assert_eq!(mimir.headers["x-scope-orgid"], "team-a");
        let ExporterKind::Loki(loki) = &config.exporters["loki"].kind else {
            panic!()
        };
        assert_eq!(loki.tenant_id.as_deref(), Some("team-a"));
    }

    #[test]
    fn from_file_reads_and_names_the_file() {
        let dir = std::env::temp_dir().join(format!("shardtel-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, BASE).unwrap();
        assert!(Config::from_file(&good).is_ok());
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, format!("{BASE}[engine]\nchannel_capacity = 0\n")).unwrap();
        assert_eq!(
            Config::from_file(&bad).unwrap_err().to_string(),
            format!(
                "{}:7: engine.channel_capacity: 0 is too small (minimum 1)",
                bad.display()
            )
        );
        let missing = dir.join("missing.toml");
        assert_eq!(
            Config::from_file(&missing).unwrap_err().to_string(),
            format!(
                "{}: cannot read config file: No such file or directory (os error 2)",
                missing.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_substitution() {
        let config = ok(&format!(
            "[engine]\ndata_dir = \"/data/${{TEMPO_HOST}}/$$x\"\ncores = ${{TWO_LINES}}\n\
             [exporters.tempo]\ntype = \"otlp\"\nendpoint = \"http://${{TEMPO_HOST}}:${{TEMPO_PORT:-4317}}\"\n{BASE}"
        ));
        assert_eq!(
            config.engine.data_dir,
            std::path::PathBuf::from("/data/tempo/$x")
        );
        assert_eq!(config.engine.cores, Cores::List(vec![0, 1]));
        let ExporterKind::Otlp(tempo) = &config.exporters["tempo"].kind else {
            panic!()
        };
        assert_eq!(tempo.endpoint.to_string(), "http://tempo:4317");
        // The process environment is used by from_str.
        let path = std::env::var("PATH").unwrap();
        let config =
            Config::from_str(&format!("[engine]\ndata_dir = \"${{PATH}}\"\n{BASE}"), "x").unwrap();
        assert_eq!(config.engine.data_dir, std::path::PathBuf::from(path));
    }

    #[test]
    fn env_errors_name_the_variable_and_line() {
        assert_eq!(
            err_with_base("# ${NOT_IN_A_COMMENT}\n[engine]\ndata_dir = \"${DATA_DIR}\"\ncores = ${CORES}\n"),
            "shardtel.toml:3: environment variable DATA_DIR is not set (set it, or give a default: ${DATA_DIR:-default})\n\
             shardtel.toml:4: environment variable CORES is not set (set it, or give a default: ${CORES:-default})"
        );
        assert_eq!(
            err_with_base("[engine]\ndata_dir = \"${DATA-DIR}\"\n"),
            "shardtel.toml:2: invalid environment reference \"${DATA-DIR}\": invalid variable name (write ${NAME} or ${NAME:-default}; $$ is a literal $)"
        );
    }

    #[test]
    fn env_values_cannot_inject_toml() {
        // Inside a string the value is text: quotes and line breaks stay in the value.
        let config = ok(&format!("[engine]\ndata_dir = \"${{INJECT}}\"\n{BASE}"));
        assert_eq!(
            config.engine.data_dir,
            std::path::PathBuf::from("x\"\n[exporters.evil]\ntype = \"blackhole")
        );
        assert!(config.exporter("evil").is_none());
        // Outside quotes a value that would add a table is refused, naming variable and line.
        assert_eq!(
            err_with_base("[engine]\ncores = ${CORES_INJECT}\n"),
            "shardtel.toml:2: the value of environment variable CORES_INJECT has a line break outside brackets and strings: \
             outside quotes a value must be whole TOML values like 4317, \"all\" or [0, 1]; inside a \"string\" any text is taken as it is"
        );
        // The documented whole-value form keeps working.
        let config = ok(&format!("[engine]\ncores = ${{NOPE:-\"all\"}}\n{BASE}"));
        assert_eq!(config.engine.cores, Cores::All);
    }

    #[test]
    fn lines_stay_right_after_multi_line_substitution() {
        // TWO_LINES inserts a newline; later lines keep their numbers in the original file.
        assert_eq!(
            err_with_base("[engine]\ncores = ${TWO_LINES}\ncorez = 1\n"),
            "shardtel.toml:3: engine.corez: unknown key (allowed: cores, data_dir, durability, channel_capacity, shutdown_timeout, wal)"
        );
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            err("[engine]\ncores = [0, 1\n"),
            "shardtel.toml:2: invalid toml: unclosed array, expected `]`"
        );
        assert_eq!(
            err("[engine]\ndata_dir = \"a\"\ndata_dir = \"b\"\n"),
            "shardtel.toml:3: invalid toml: duplicate key data_dir"
        );
        assert_eq!(
            err("[engine]\ncores = \"all\"\n[engine]\n"),
            "shardtel.toml:3: invalid toml: duplicate key engine"
        );
        assert_eq!(
            err("[engine]\r\ndata_dir = x\r\n"),
            "shardtel.toml:2: invalid toml: string values must be quoted, expected literal string"
        );
    }

    #[test]
    fn unknown_keys_name_the_key_file_line_and_allowed_keys() {
        assert_eq!(
            err_with_base("# comment\n\n\n\n\n[engine]\ncorez = 2\n"),
            "shardtel.toml:7: engine.corez: unknown key (allowed: cores, data_dir, durability, channel_capacity, shutdown_timeout, wal)"
        );
        assert_eq!(
            err_with_base("[server]\n[telemetry]\nport = 1\n"),
            "shardtel.toml:1: server: unknown key (allowed: engine, telemetry, receivers, processors, exporters, pipelines)\n\
             shardtel.toml:3: telemetry.port: unknown key (allowed: health, metrics, log_level, log_format)"
        );
        assert_eq!(
            err(&BASE.replace(
                "[exporters.blackhole]",
                "[exporters.blackhole]\nendpoint = \"x\""
            )),
            "shardtel.toml:3: exporters.blackhole.endpoint: unknown key (allowed: type)"
        );
        assert_eq!(
            err_with_base("[exporters.f]\ntype = \"file\"\npath = \"x\"\ncompression = \"gzip\"\n[exporters.f.batch]\nmax_item = 1\n"),
            "shardtel.toml:4: exporters.f.compression: unknown key (allowed: type, path, rotation, batch, retry, queue)\n\
             shardtel.toml:6: exporters.f.batch.max_item: unknown key (allowed: max_items, max_bytes, timeout)"
        );
        assert_eq!(
            err(&BASE.replace("[receivers.otlp]", "[receivers.otlp]\nprotocols = {}\n[receivers.statsd]")),
            "shardtel.toml:2: receivers.otlp.protocols: unknown key (allowed: grpc, http, max_recv_msg_size, max_concurrent_streams, max_connections, read_header_timeout, read_timeout, idle_timeout, tls, auth)\n\
             shardtel.toml:3: receivers.statsd: unknown key (allowed: otlp, kafka, prometheus, zipkin, jaeger, fluentforward)"
        );
        assert_eq!(
            err(&format!("{BASE}name = \"x\"\n[pipelines.spans]\nreceivers = []\n")),
            "shardtel.toml:6: pipelines.traces.name: unknown key (allowed: receivers, processors, exporters)\n\
             shardtel.toml:7: pipelines.spans: unknown key (allowed: traces, metrics, logs)"
        );
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            err_with_base("[engine]\nchannel_capacity = \"abc\"\ncores = 1.5\nshutdown_timeout = true\n"),
            "shardtel.toml:2: engine.channel_capacity: expected a non-negative integer, found string \"abc\"\n\
             shardtel.toml:3: engine.cores: expected \"all\", a cpu list like \"0-3\", or an array of cpu ids like [0, 1], found float 1.5\n\
             shardtel.toml:4: engine.shutdown_timeout: expected a duration like \"10s\", found boolean true"
        );
        assert_eq!(
            err_with_base("[engine]\ncores = [0, \"1\", -2]\n"),
            "shardtel.toml:2: engine.cores[1]: expected a cpu id (a non-negative integer), found string \"1\"\n\
             shardtel.toml:2: engine.cores[2]: expected a cpu id (a non-negative integer), found integer -2"
        );
        assert_eq!(
            err("engine = 5\n[receivers]\notlp = true\n[exporters]\nx = \"blackhole\"\n[pipelines.traces]\nreceivers = \"otlp\"\nexporters = [1]\n"),
            "shardtel.toml:1: engine: expected a table, found integer 5\n\
             shardtel.toml:3: receivers.otlp: expected a table, found boolean true\n\
             shardtel.toml:5: exporters.x: expected a table, found string \"blackhole\"\n\
             shardtel.toml:7: pipelines.traces.receivers: expected an array of names like [\"otlp\"], found string \"otlp\"\n\
             shardtel.toml:8: pipelines.traces.exporters[0]: expected a string, found integer 1\n\
             shardtel.toml:8: pipelines.traces.exporters: a pipeline needs at least one exporter"
        );
        assert_eq!(
            err_with_base("[telemetry]\nhealth = true\nmetrics = 8888\nlog_level = 3\n"),
            "shardtel.toml:2: telemetry.health: expected an address like \"0.0.0.0:4317\", or false to disable, found boolean true\n\
             shardtel.toml:3: telemetry.metrics: expected an address like \"0.0.0.0:4317\", or false to disable, found integer 8888\n\
             shardtel.toml:4: telemetry.log_level: expected a string, found integer 3"
        );
    }

    #[test]
    fn invalid_values() {
        assert_eq!(
            err_with_base("[engine]\ndurability = \"fast\"\ndata_dir = \"\"\n"),
            "shardtel.toml:2: engine.durability: invalid value \"fast\" (allowed: \"ack_after_sync\", \"none\")\n\
             shardtel.toml:3: engine.data_dir: must not be empty"
        );
        assert_eq!(
            err(&BASE.replace(
                "[receivers.otlp]",
                "[receivers.otlp]\ngrpc = \"localhost:4317\"\nmax_recv_msg_size = \"4 parsecs\""
            )),
            "shardtel.toml:2: receivers.otlp.grpc: invalid address \"localhost:4317\" (expected ip:port like \"0.0.0.0:4317\" or \"[::]:4317\", or false to disable)\n\
             shardtel.toml:3: receivers.otlp.max_recv_msg_size: invalid size \"4 parsecs\" (expected a number of bytes or a string like \"512KiB\", \"4MiB\", \"1GB\")"
        );
        assert_eq!(
            err_with_base("[exporters.x]\ntype = \"otlp\"\nendpoint = \"http://a:1\"\ntimeout = \"10 sec\"\ncompression = \"brotli\"\n[exporters.x.batch]\ntimeout = 200\n"),
            "shardtel.toml:4: exporters.x.timeout: invalid duration \"10 sec\" (expected a string like \"200ms\", \"10s\", \"1m\", \"1h30m\")\n\
             shardtel.toml:5: exporters.x.compression: invalid value \"brotli\" (allowed: \"gzip\", \"zstd\", \"none\")\n\
             shardtel.toml:7: exporters.x.batch.timeout: duration 200 has no unit (write e.g. \"200s\" or \"200ms\")"
        );
        assert_eq!(
            err_with_base("[telemetry]\nlog_level = \"loud\"\n"),
            "shardtel.toml:2: telemetry.log_level: invalid log level \"loud\" (expected off, error, warn, info, debug or trace, optionally per module: \"info,shardtel_engine=debug\")"
        );
        assert_eq!(
            err_with_base("[telemetry]\nlog_format = \"logfmt\"\n"),
            "shardtel.toml:2: telemetry.log_format: invalid value \"logfmt\" (allowed: \"text\", \"json\")"
        );
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            err_with_base("# line 1\n#\n#\n#\n#\n#\n#\n#\n#\n[exporters.tempo]\ntype = \"otlp\"\nendpoint = \"htp:/x\"\n"),
            "shardtel.toml:12: exporters.tempo.endpoint: invalid url \"htp:/x\" (expected http://host:port or https://host:port)"
        );
        assert_eq!(
            err_with_base("[exporters.a]\ntype = \"otlp\"\nendpoint = \"https://tempo:4317\"\n[exporters.b]\ntype = \"otlp\"\nendpoint = \"http://tempo:4317/v1\"\n[exporters.c]\ntype = \"otlphttp\"\nendpoint = \"http://c:4318\"\nlogs_endpoint = \"loki:3100\"\n"),
            "shardtel.toml:6: exporters.b.endpoint: \"http://tempo:4317/v1\": an OTLP/gRPC endpoint takes no path (expected http://host:port)\n\
             shardtel.toml:10: exporters.c.logs_endpoint: invalid url \"loki:3100\" (expected http://host:port or https://host:port)"
        );
    }

    #[test]
    fn missing_keys() {
        assert_eq!(
            err_with_base("[exporters.a]\ntype = \"otlp\"\n[exporters.f]\ntype = \"file\"\n[exporters.h]\ntype = \"otlphttp\"\n"),
            "shardtel.toml:1: exporters.a.endpoint: missing required key (endpoint = \"http://host:4317\")\n\
             shardtel.toml:3: exporters.f.path: missing required key (path = \"./shardtel-data/traces.jsonl\")\n\
             shardtel.toml:5: exporters.h.endpoint: missing required key (endpoint = \"http://host:4318\")"
        );
    }

    #[test]
    fn exporter_and_processor_types() {
        assert_eq!(
            err_with_base("[exporters.tempo]\nendpoint = \"http://tempo:4317\"\n"),
            "shardtel.toml:1: exporters.tempo: missing key \"type\" (\"tempo\" is not an exporter type; allowed types: otlp, otlphttp, file, blackhole, kafka, prometheusremotewrite, loki)"
        );
        assert_eq!(
            err_with_base("[exporters.x]\ntype = \"jaeger\"\n[exporters.loki]\n[exporters.y]\ntype = \"kafka\"\n"),
            "shardtel.toml:2: exporters.x.type: unknown exporter type \"jaeger\" (allowed types: otlp, otlphttp, file, blackhole, kafka, prometheusremotewrite, loki)\n\
             shardtel.toml:3: exporters.loki.endpoint: missing required key (endpoint = \"http://loki:3100/loki/api/v1/push\")\n\
             shardtel.toml:4: exporters.y.brokers: missing required key (brokers = [\"127.0.0.1:9092\"])"
        );
        assert_eq!(
            err_with_base("[processors.tail_sampling]\ndecision_wait = \"10s\"\n[processors.redact]\ntype = \"attributes\"\n[processors.mine]\n[processors.other]\ntype = \"magic\"\n"),
            "shardtel.toml:1: processors.tail_sampling.policies: at least one policy is required (each policy is a table with a name and a type)\n\
             shardtel.toml:3: processors.redact.actions: missing required key ([[...actions]] tables like { key = \"user.email\", action = \"delete\" })\n\
             shardtel.toml:5: processors.mine: missing key \"type\" (\"mine\" is not a processor type; allowed types: tail_sampling, attributes, resource, filter, memory_limiter, routing, transform, spanmetrics)\n\
             shardtel.toml:7: processors.other.type: unknown processor type \"magic\" (allowed types: tail_sampling, attributes, resource, filter, memory_limiter, routing, transform, spanmetrics)"
        );
        assert_eq!(
            err_with_base("[receivers.kafka]\n"),
            "shardtel.toml:1: receivers.kafka.brokers: missing required key (brokers = [\"127.0.0.1:9092\"])"
        );
        // "TYPE/NAME" names take their type from the prefix.
        let config = ok(&format!("[exporters.\"file/a\"]\npath = \"a\"\n{BASE}"));
        assert!(matches!(
            config.exporters["file/a"].kind,
            ExporterKind::File(_)
        ));
    }

    #[test]
    fn durability_sets_the_retry_give_up_default() {
        // With ack_after_sync a batch given up would be released from the ingest log: lost
        // though acknowledged. So exporters retry until accepted unless the file says otherwise.
        let exporters = "[exporters.f]\ntype = \"file\"\npath = \"/tmp/x\"\n\
             [exporters.o]\ntype = \"otlp\"\nendpoint = \"http://a:1\"\nretry = { max_interval = \"1s\" }\n\
             [exporters.k]\ntype = \"kafka\"\nbrokers = [\"b:9092\"]\n\
             [exporters.e]\ntype = \"otlphttp\"\nendpoint = \"http://a:1\"\nretry = { max_elapsed_time = \"10m\" }\n\
             [exporters.z]\ntype = \"loki\"\nendpoint = \"http://a:1/loki/api/v1/push\"\n[exporters.z.retry]\nmax_elapsed_time = \"300s\"\n\
             [receivers.otlp]\n[pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"f\", \"o\", \"k\", \"e\"]\n\
             [pipelines.logs]\nreceivers = [\"otlp\"]\nexporters = [\"z\"]\n";
        let give_up =
            |c: &Config, name: &str| c.exporters[name].kind.retry().unwrap().max_elapsed_time;
        let s = Duration::from_secs;
        for durable in [
            ok(exporters),
            ok(&format!(
                "[engine]\ndurability = \"ack_after_sync\"\n{exporters}"
            )),
        ] {
            assert_eq!(give_up(&durable, "f"), Duration::ZERO, "never give up");
            assert_eq!(
                give_up(&durable, "o"),
                Duration::ZERO,
                "other retry keys given"
            );
            assert_eq!(give_up(&durable, "k"), Duration::ZERO);
            // Explicit values are honoured, inline or as a sub-table.
            assert_eq!(give_up(&durable, "e"), s(600));
            assert_eq!(give_up(&durable, "z"), s(300));
            let o = durable.exporters["o"].kind.retry().unwrap();
            assert_eq!(o.max_interval, s(1));
        }
        let fast = ok(&format!("[engine]\ndurability = \"none\"\n{exporters}"));
        assert_eq!(give_up(&fast, "f"), s(300), "the Collector's default");
        assert_eq!(give_up(&fast, "o"), s(300));
        assert_eq!(give_up(&fast, "k"), s(300));
        assert_eq!(give_up(&fast, "e"), s(600));
        // The embedded default config (ack_after_sync) never gives up.
        let default = Config::embedded_default();
        for (name, exporter) in &default.exporters {
            if let Some(retry) = exporter.kind.retry() {
                assert_eq!(retry.max_elapsed_time, Duration::ZERO, "{name}");
            }
        }
    }

    #[test]
    fn durability_sets_the_queue_defaults() {
        let durable = ok("[engine]\ndurability = \"ack_after_sync\"\n\
             [exporters.f]\ntype = \"file\"\npath = \"/tmp/x\"\n\
             [exporters.g]\ntype = \"file\"\npath = \"/tmp/y\"\nqueue = { storage = \"memory\" }\n\
             [exporters.h]\ntype = \"file\"\npath = \"/tmp/z\"\nqueue = { max_bytes = \"8MiB\", overflow = \"drop_oldest\" }\n\
             [receivers.otlp]\n[pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"f\", \"g\", \"h\"]\n");
        let queue = |c: &Config, name: &str| c.exporters[name].kind.queue().unwrap().clone();
        assert_eq!(queue(&durable, "f"), QueueConfig::default());
        assert_eq!(
            (queue(&durable, "g").storage, queue(&durable, "g").max_bytes),
            (QueueStorage::Memory, 64 << 20)
        );
        let h = queue(&durable, "h");
        assert_eq!(
            (h.storage, h.max_bytes, h.overflow),
            (QueueStorage::Disk, 8 << 20, QueueOverflow::DropOldest)
        );
        // Kafka exporters queue in memory either way (their batches hold ingest-log frames
        // until the broker acknowledged them); a disk queue is kept when asked for.
        let kafka = ok("[engine]\ndurability = \"ack_after_sync\"\n\
             [exporters.k]\ntype = \"kafka\"\nbrokers = [\"b:9092\"]\n\
             [exporters.d]\ntype = \"kafka\"\nbrokers = [\"b:9092\"]\nqueue = { storage = \"disk\" }\n\
             [receivers.otlp]\n[pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"k\", \"d\"]\n");
        assert_eq!(
            queue(&kafka, "k"),
            QueueConfig::for_durability(Durability::None)
        );
        assert_eq!(
            (queue(&kafka, "d").storage, queue(&kafka, "d").max_bytes),
            (QueueStorage::Disk, 1 << 30)
        );
        let fast = ok(
            "[engine]\ndurability = \"none\"\n[exporters.f]\ntype = \"file\"\npath = \"/tmp/x\"\n\
             [receivers.otlp]\n[pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"f\"]\n",
        );
        assert_eq!(
            queue(&fast, "f"),
            QueueConfig::for_durability(Durability::None)
        );
        assert_eq!(
            err_with_base("[exporters.m]\ntype = \"otlp\"\nendpoint = \"http://a:1\"\nqueue = { storage = \"memory\", overflow = \"drop_oldest\" }\n"),
            "shardtel.toml:4: exporters.m.queue.overflow: overflow = \"drop_oldest\" needs storage = \"disk\" (an in-memory queue refuses when full)"
        );
        assert_eq!(
            err_with_base("[engine.wal]\ngroup_commit_interval = \"2s\"\nsegment_size = 100\n"),
            "shardtel.toml:2: engine.wal.group_commit_interval: 2s is too large (maximum 1s)\n\
             shardtel.toml:3: engine.wal.segment_size: 100 bytes is too small (minimum 64KiB)"
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(
            err(&BASE.replace(
                "[receivers.otlp]",
                "[engine]\nchannel_capacity = 2000000\n[receivers.otlp]\nmax_recv_msg_size = 512\nmax_concurrent_streams = 0\nmax_connections = 0"
            )),
            "shardtel.toml:2: engine.channel_capacity: 2000000 is too large (maximum 1048576)\n\
             shardtel.toml:4: receivers.otlp.max_recv_msg_size: 512 bytes is too small (minimum 1KiB)\n\
             shardtel.toml:5: receivers.otlp.max_concurrent_streams: 0 is too small (minimum 1)\n\
             shardtel.toml:6: receivers.otlp.max_connections: 0 is too small (minimum 1)"
        );
        assert_eq!(
            err_with_base("[exporters.f]\ntype = \"file\"\npath = \"x\"\nbatch = { max_items = 0, max_bytes = 512 }\nretry = { initial_interval = \"0s\" }\nrotation = { max_megabytes = 0 }\n"),
            "shardtel.toml:4: exporters.f.batch.max_items: 0 is too small (minimum 1)\n\
             shardtel.toml:4: exporters.f.batch.max_bytes: 512 bytes is too small (minimum 1KiB)\n\
             shardtel.toml:5: exporters.f.retry.initial_interval: 0s is too small (minimum 1ms)\n\
             shardtel.toml:6: exporters.f.rotation.max_megabytes: 0 is too small (minimum 1)"
        );
        assert_eq!(
            err(&BASE.replace(
                "[receivers.otlp]",
                "[receivers.otlp]\nmax_recv_msg_size = \"2GiB\""
            )),
            "shardtel.toml:2: receivers.otlp.max_recv_msg_size: 2GiB is too large (maximum 1GiB)"
        );
    }

    #[test]
    fn cross_key_exporter_checks() {
        assert_eq!(
            err_with_base("[exporters.f]\ntype = \"file\"\npath = \"./a.jsonl\"\n[exporters.f.retry]\ninitial_interval = \"10s\"\nmax_interval = \"5s\"\n[exporters.f.queue]\nmax_bytes = \"1MiB\"\n[exporters.f.batch]\nmax_bytes = \"4MiB\"\n[exporters.g]\ntype = \"file\"\npath = \"./a.jsonl\"\n"),
            "shardtel.toml:5: exporters.f.retry.initial_interval: initial_interval (10s) is greater than max_interval (5s)\n\
             shardtel.toml:8: exporters.f.queue.max_bytes: 1MiB is smaller than batch.max_bytes (4MiB); the queue must hold at least one batch\n\
             shardtel.toml:13: exporters.g.path: path \"./a.jsonl\" is already used by exporters.f.path"
        );
        // A default on one side is compared too; a key that failed to parse is not compared again.
        assert_eq!(
            err_with_base("[exporters.f]\ntype = \"file\"\npath = \"x\"\nretry = { initial_interval = \"6s\", max_interval = \"soon\" }\n"),
            "shardtel.toml:4: exporters.f.retry.max_interval: invalid duration \"soon\" (expected a string like \"200ms\", \"10s\", \"1m\", \"1h30m\")"
        );
        assert_eq!(
            err_with_base("[exporters.f]\ntype = \"file\"\npath = \"x\"\nretry = { initial_interval = \"6s\" }\n"),
            "shardtel.toml:4: exporters.f.retry.initial_interval: initial_interval (6s) is greater than max_interval (5s)"
        );
    }

    #[test]
    fn headers() {
        assert_eq!(
            err_with_base("[exporters.x]\ntype = \"otlp\"\nendpoint = \"http://a:1\"\n[exporters.x.headers]\n\"bad name\" = \"1\"\nAuth = \"a\"\nauth = \"b\"\nnum = 5\n"),
            "shardtel.toml:5: exporters.x.headers.\"bad name\": invalid header \"bad name\": names may only contain letters, digits and !#$%&'*+-.^_`|~\n\
             shardtel.toml:7: exporters.x.headers.auth: invalid header \"auth\": set twice (header names are case-insensitive)\n\
             shardtel.toml:8: exporters.x.headers.num: expected a string, found integer 5"
        );
    }

    #[test]
    fn ports() {
        // The default grpc port (line of its table) and the explicit http port both clash with
        // telemetry.metrics; each listener is reported against the first one written before it.
        assert_eq!(
            err(&BASE.replace(
                "[receivers.otlp]",
                "[telemetry]\nmetrics = \"127.0.0.1:4317\"\n[receivers.otlp]\nhttp = \"0.0.0.0:4317\""
            )),
            "shardtel.toml:3: receivers.otlp.grpc: port 4317 is already used by telemetry.metrics\n\
             shardtel.toml:4: receivers.otlp.http: port 4317 is already used by telemetry.metrics"
        );
        // Port 0 (any free port) never conflicts; disabled listeners do not either.
        ok(&BASE.replace(
            "[receivers.otlp]",
            "[telemetry]\nhealth = \"127.0.0.1:0\"\nmetrics = false\n\
             [receivers.otlp]\ngrpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:8888\"",
        ));
    }

    #[test]
    fn otlp_receiver_needs_a_protocol() {
        assert_eq!(
            err(&BASE.replace("[receivers.otlp]", "[receivers.otlp]\ngrpc = false\nhttp = false")),
            "shardtel.toml:1: receivers.otlp: grpc and http are both disabled (enable at least one)"
        );
    }

    #[test]
    fn pipelines() {
        assert_eq!(
            err("[receivers.otlp]\n[exporters.blackhole]\n"),
            "shardtel.toml: pipelines: no pipeline is defined (define at least one of [pipelines.traces], [pipelines.metrics], [pipelines.logs])"
        );
        assert_eq!(
            err("[receivers.otlp]\n[exporters.blackhole]\n[exporters.otlp]\nendpoint = \"http://a:1\"\n[pipelines.traces]\nreceivers = [\"otlp\", \"kafka\"]\nprocessors = [\"batch\"]\nexporters = [\"otlp\",\n  \"tempo\",\n  \"otlp\"]\n[pipelines.logs]\n"),
            "shardtel.toml:6: pipelines.traces.receivers: receiver \"kafka\" is not defined (defined receivers: otlp)\n\
             shardtel.toml:7: pipelines.traces.processors: processor \"batch\" is not defined (no processors are defined)\n\
             shardtel.toml:9: pipelines.traces.exporters: exporter \"tempo\" is not defined (defined exporters: blackhole, otlp)\n\
             shardtel.toml:10: pipelines.traces.exporters: exporter \"otlp\" is listed twice\n\
             shardtel.toml:11: pipelines.logs.receivers: a pipeline needs at least one receiver\n\
             shardtel.toml:11: pipelines.logs.exporters: a pipeline needs at least one exporter"
        );
        // A pipeline of the wrong type is reported once, not again as "no pipeline".
        assert_eq!(
            err("[receivers.otlp]\n[pipelines]\ntraces = [\"otlp\"]\n"),
            "shardtel.toml:3: pipelines.traces: expected a table, found an array"
        );
        // Components that are defined but invalid are reported once, not again as undefined.
        assert_eq!(
            err("[receivers.otlp]\n[exporters.otlp]\nendpoint = \"bad\"\n[pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"otlp\"]\n"),
            "shardtel.toml:3: exporters.otlp.endpoint: invalid url \"bad\" (expected http://host:port or https://host:port)"
        );
    }

    #[test]
    fn cores() {
        assert_eq!(
            err_with_base("[engine]\ncores = [0, 7, 1, 0]\n"),
            "shardtel.toml:2: engine.cores: cpu 7 is not online or not available to this process (usable cpus: 0-3)\n\
             shardtel.toml:2: engine.cores: cpu 0 is listed twice"
        );
        assert_eq!(
            err_with_base("[engine]\ncores = []\n"),
            "shardtel.toml:2: engine.cores: empty cpu list (use \"all\" or cpu ids like [0, 1])"
        );
        assert_eq!(
            err_with_base("[engine]\ncores = \"0-x\"\n"),
            "shardtel.toml:2: engine.cores: invalid cpu list \"0-x\" (expected \"all\", a list like \"0-3,6\", or an array like [0, 1])"
        );
        assert_eq!(
            ok(&format!("[engine]\ncores = \"1-3\"\n{BASE}"))
                .engine
                .cores,
            Cores::List(vec![1, 2, 3])
        );
        // On the real machine, a cpu id far beyond any machine is rejected.
        let errors =
            Config::from_str(&format!("[engine]\ncores = [60000]\n{BASE}"), "x.toml").unwrap_err();
        assert!(
            errors
                .to_string()
                .starts_with("x.toml:2: engine.cores: cpu 60000 is not online"),
            "{errors}"
        );
    }

    #[test]
    fn all_problems_are_reported_together_in_line_order() {
        let errors = load(
            "[pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"nope\"]\n\
             [engine]\ncorez = 1\ndurability = \"ack_after_sync\"\n\
             [receivers.otlp]\ngrpc = \"0.0.0.0:4318\"\n",
        )
        .unwrap_err();
        let lines: Vec<Option<usize>> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [Some(3), Some(5), Some(8)], "{errors}");
        assert_eq!(errors.0[0].key, "pipelines.traces.exporters");
        assert_eq!(errors.0[1].key, "engine.corez");
        assert!(matches!(
            errors.0[2].kind,
            ConfigErrorKind::PortInUse { port: 4318, .. }
        ));
        assert_eq!(errors.0[2].origin, "shardtel.toml");
    }
}
