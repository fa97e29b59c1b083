//! Kafka settings: `[exporters.NAME] type = "kafka"` (publish OTLP to topics, traces keyed by
//! trace ID) and `[receivers.kafka]` (consume those topics in a consumer group), with the
//! connection and auth settings (SASL, TLS) both share.
//!
//! The settings are plain values; [`KafkaAuth::client_properties`] and the `librdkafka` tables
//! turn them into librdkafka properties in the sinks and engine crates, which own the clients.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use shardtel_protocol::Signal;
use toml::de::DeValue;

use crate::decode::{self, Decoder, Section};
use crate::delivery::{self, BatchConfig, QueueConfig, RetryConfig};
use crate::error::ConfigErrorKind;

/// How a message value encodes its `Export*ServiceRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaEncoding {
    /// `"otlp_proto"`: protobuf, as the OpenTelemetry Collector's kafka components write it.
    OtlpProto,
    /// `"otlp_json"`: OTLP/JSON.
    OtlpJson,
}

impl KafkaEncoding {
    /// The accepted values.
    pub const NAMES: &'static [&'static str] = &["otlp_proto", "otlp_json"];

    /// The config value.
    pub fn name(self) -> &'static str {
        match self {
            KafkaEncoding::OtlpProto => "otlp_proto",
            KafkaEncoding::OtlpJson => "otlp_json",
        }
    }
}

/// Producer compression (librdkafka `compression.codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaCompression {
    /// `"none"`.
    None,
    /// `"gzip"`.
    Gzip,
    /// `"lz4"` (the default: the cheapest in CPU of the codecs that compress OTLP well; a
    /// gateway is bound by CPU).
    Lz4,
    /// `"zstd"`: smaller messages (less network and broker disk) for about four times lz4's
    /// CPU.
    Zstd,
}

impl KafkaCompression {
    /// The accepted values.
    pub const NAMES: &'static [&'static str] = &["lz4", "zstd", "gzip", "none"];

    /// The config value, also librdkafka's codec name.
    pub fn name(self) -> &'static str {
        match self {
            KafkaCompression::None => "none",
            KafkaCompression::Gzip => "gzip",
            KafkaCompression::Lz4 => "lz4",
            KafkaCompression::Zstd => "zstd",
        }
    }
}

/// Which replicas must have a message before the broker acknowledges it (`acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaAcks {
    /// `"all"` (or `-1`): every in-sync replica. The default, and required by idempotence.
    All,
    /// `1`: the partition leader only.
    Leader,
    /// `0`: no acknowledgement at all.
    None,
}

impl KafkaAcks {
    /// librdkafka's `acks` value.
    pub fn librdkafka_value(self) -> &'static str {
        match self {
            KafkaAcks::All => "all",
            KafkaAcks::Leader => "1",
            KafkaAcks::None => "0",
        }
    }
}

/// SASL mechanisms (librdkafka `sasl.mechanisms`); all are built into librdkafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `"PLAIN"`.
    Plain,
    /// `"SCRAM-SHA-256"`.
    ScramSha256,
    /// `"SCRAM-SHA-512"`.
    ScramSha512,
}

impl SaslMechanism {
    /// The accepted values.
    pub const NAMES: &'static [&'static str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

    /// The config value, also librdkafka's.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `sasl = { mechanism, username, password }`. Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslConfig {
    /// The mechanism. Default `"PLAIN"`.
    pub mechanism: SaslMechanism,
    /// User name. Required.
    pub username: String,
    /// Password. Required (use `${ENV_VAR}` to keep it out of the file).
    pub password: String,
}

impl std::fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"[hidden]")
            .finish()
    }
}

impl SaslConfig {
    /// The keys `sasl` accepts.
    pub const KEYS: &'static [&'static str] = &["mechanism", "username", "password"];
}

/// `tls = { ... }`: connect to the brokers over TLS (system OpenSSL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaTlsConfig {
    /// CA certificates (PEM) to verify the brokers with; the system store when absent.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM); needs `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Skip verifying the brokers' certificates (testing only).
    pub insecure_skip_verify: bool,
}

impl KafkaTlsConfig {
    /// The keys `tls` accepts.
    pub const KEYS: &'static [&'static str] =
        &["ca_file", "cert_file", "key_file", "insecure_skip_verify"];
}

/// Authentication and transport security, shared by the exporter and the receiver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaAuth {
    /// `sasl`: SASL authentication; none when absent.
    pub sasl: Option<SaslConfig>,
    /// `tls`: TLS to the brokers; plaintext when absent.
    pub tls: Option<KafkaTlsConfig>,
}

impl KafkaAuth {
    /// What these settings give away, for a warning at start-up (as the HTTP exporters warn
    /// about `insecure_skip_verify`): a SASL password sent without TLS, a broker certificate
    /// not verified.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        if self.sasl.is_some() && self.tls.is_none() {
            warnings.push(
                "SASL without TLS: the user name and password (PLAIN) or the authenticated \
                 session travel in cleartext; add a tls table",
            );
        }
        if self.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
            warnings.push(
                "insecure_skip_verify is on: the brokers' certificates are not verified, so \
                 anyone on the path can read and change what is sent",
            );
        }
        warnings
    }

    /// The librdkafka properties these settings stand for (`security.protocol`, `sasl.*`,
    /// `ssl.*`).
    pub fn client_properties(&self) -> Vec<(&'static str, String)> {
        let protocol = match (&self.sasl, &self.tls) {
            (None, None) => "plaintext",
            (None, Some(_)) => "ssl",
            (Some(_), None) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        };
        let mut props = vec![("security.protocol", protocol.to_string())];
        if let Some(sasl) = &self.sasl {
            props.push(("sasl.mechanisms", sasl.mechanism.name().to_string()));
            props.push(("sasl.username", sasl.username.clone()));
            props.push(("sasl.password", sasl.password.clone()));
        }
        if let Some(tls) = &self.tls {
            let path = |p: &PathBuf| p.display().to_string();
            if let Some(ca) = &tls.ca_file {
                props.push(("ssl.ca.location", path(ca)));
            }
            if let Some(cert) = &tls.cert_file {
                props.push(("ssl.certificate.location", path(cert)));
            }
            if let Some(key) = &tls.key_file {
                props.push(("ssl.key.location", path(key)));
            }
            if tls.insecure_skip_verify {
                props.push(("enable.ssl.certificate.verification", "false".to_string()));
                props.push(("ssl.endpoint.identification.algorithm", "none".to_string()));
            }
        }
        props
    }
}

/// `[exporters.NAME] type = "kafka"`: publishes OTLP to Kafka topics, one topic per signal.
///
/// Trace messages hold the spans of one trace each, keyed by the 16-byte trace ID and
/// partitioned with `murmur2_random` (Java-compatible), so a trace always lands on one
/// partition. Metrics and logs messages are whole requests without a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaExporterConfig {
    /// Bootstrap brokers, `"host:port"`. Required.
    pub brokers: Vec<String>,
    /// Topic for traces. Default `"otlp_spans"` (or `topic`).
    pub traces_topic: String,
    /// Topic for metrics. Default `"otlp_metrics"` (or `topic`).
    pub metrics_topic: String,
    /// Topic for logs. Default `"otlp_logs"` (or `topic`).
    pub logs_topic: String,
    /// Message value encoding. Default `otlp_proto`.
    pub encoding: KafkaEncoding,
    /// Producer compression. Default lz4.
    pub compression: KafkaCompression,
    /// The topic's `max.message.bytes`: a message (value, key and record framing) stays
    /// within it; bigger traces are split into several messages with the same key. Default
    /// 1000000.
    pub max_message_bytes: usize,
    /// Broker acknowledgement. Default all.
    pub acks: KafkaAcks,
    /// Idempotent producer (no duplicates from producer retries, order kept). Default true.
    pub enable_idempotence: bool,
    /// How long librdkafka waits to fill a produce request (`linger.ms`). Default 5ms.
    pub linger: Duration,
    /// Largest produce request per partition (`batch.size`). Default 1000000.
    pub producer_batch_bytes: usize,
    /// How long librdkafka may try to deliver a message (`message.timeout.ms`) before the
    /// export attempt fails and the retry settings take over. Default 30s.
    pub timeout: Duration,
    /// `client.id`. Default `"shardtel"`.
    pub client_id: String,
    /// SASL and TLS.
    pub auth: KafkaAuth,
    /// Further librdkafka producer properties, passed through as they are.
    pub librdkafka: BTreeMap<String, String>,
    /// `[exporters.NAME.batch]`.
    pub batch: BatchConfig,
    /// `[exporters.NAME.retry]`.
    pub retry: RetryConfig,
    /// `[exporters.NAME.queue]`; in memory by default, whatever `engine.durability` is
    /// ([`QueueConfig::default_storage`]).
    pub queue: QueueConfig,
}

impl KafkaExporterConfig {
    /// The keys `type = "kafka"` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "type",
        "brokers",
        "topic",
        "traces_topic",
        "metrics_topic",
        "logs_topic",
        "encoding",
        "compression",
        "max_message_bytes",
        "acks",
        "enable_idempotence",
        "linger",
        "producer_batch_bytes",
        "timeout",
        "client_id",
        "sasl",
        "tls",
        "librdkafka",
        "batch",
        "retry",
        "queue",
    ];
    /// Default `max_message_bytes` and `producer_batch_bytes`.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;
    /// Smallest accepted `max_message_bytes`.
    pub const MIN_MESSAGE_BYTES: u64 = 1 << 10;
    /// Largest accepted `max_message_bytes` (librdkafka's limit).
    pub const MAX_MESSAGE_BYTES: u64 = 1_000_000_000;

    /// Defaults for everything but the brokers.
    pub fn new(brokers: Vec<String>) -> Self {
        KafkaExporterConfig {
            brokers,
            traces_topic: default_topic(Signal::Traces).to_string(),
            metrics_topic: default_topic(Signal::Metrics).to_string(),
            logs_topic: default_topic(Signal::Logs).to_string(),
            encoding: KafkaEncoding::OtlpProto,
            compression: KafkaCompression::Lz4,
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            acks: KafkaAcks::All,
            enable_idempotence: true,
            linger: Duration::from_millis(5),
            producer_batch_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            timeout: Duration::from_secs(30),
            client_id: "shardtel".to_string(),
            auth: KafkaAuth::default(),
            librdkafka: BTreeMap::new(),
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            queue: QueueConfig::for_durability(crate::engine::Durability::None),
        }
    }

    /// The topic `signal` is published to.
    pub fn topic(&self, signal: Signal) -> &str {
        match signal {
            Signal::Traces => &self.traces_topic,
            Signal::Metrics => &self.metrics_topic,
            Signal::Logs => &self.logs_topic,
        }
    }
}

/// The OpenTelemetry Collector's default topic of `signal`.
pub fn default_topic(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "otlp_spans",
        Signal::Metrics => "otlp_metrics",
        Signal::Logs => "otlp_logs",
    }
}

/// Where a consumer group without a committed offset starts (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialOffset {
    /// `"earliest"`: the oldest message still in the partition.
    Earliest,
    /// `"latest"` (the default): only messages produced from now on.
    Latest,
}

impl InitialOffset {
    /// The config value, also librdkafka's.
    pub fn name(self) -> &'static str {
        match self {
            InitialOffset::Earliest => "earliest",
            InitialOffset::Latest => "latest",
        }
    }
}

/// Partition assignment strategy (`partition.assignment.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceStrategy {
    /// `"cooperative-sticky"` (the default): incremental rebalancing; only moved partitions
    /// stop.
    CooperativeSticky,
    /// `"range"` (eager).
    Range,
    /// `"roundrobin"` (eager).
    RoundRobin,
}

impl RebalanceStrategy {
    /// The accepted values.
    pub const NAMES: &'static [&'static str] = &["cooperative-sticky", "range", "roundrobin"];

    /// The config value, also librdkafka's.
    pub fn name(self) -> &'static str {
        match self {
            RebalanceStrategy::CooperativeSticky => "cooperative-sticky",
            RebalanceStrategy::Range => "range",
            RebalanceStrategy::RoundRobin => "roundrobin",
        }
    }
}

/// `[receivers.kafka]`: consumes OTLP from Kafka topics in a consumer group, one consumer per
/// core; each message is scanned and routed like an OTLP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaReceiverConfig {
    /// Bootstrap brokers, `"host:port"`. Required.
    pub brokers: Vec<String>,
    /// Topics holding `ExportTraceServiceRequest`s. Default `["otlp_spans"]`.
    pub traces_topics: Vec<String>,
    /// Topics holding `ExportMetricsServiceRequest`s. Default `["otlp_metrics"]`.
    pub metrics_topics: Vec<String>,
    /// Topics holding `ExportLogsServiceRequest`s. Default `["otlp_logs"]`.
    pub logs_topics: Vec<String>,
    /// Message value encoding. Default `otlp_proto`.
    pub encoding: KafkaEncoding,
    /// Consumer group. Default `"shardtel"`.
    pub group_id: String,
    /// `client.id`. Default `"shardtel"`.
    pub client_id: String,
    /// Where to start without a committed offset. Default latest.
    pub initial_offset: InitialOffset,
    /// Consumer group session timeout. Default 10s.
    pub session_timeout: Duration,
    /// Consumer group heartbeat interval, below `session_timeout`. Default 3s.
    pub heartbeat_interval: Duration,
    /// Partition assignment strategy. Default cooperative-sticky.
    pub rebalance_strategy: RebalanceStrategy,
    /// How often accepted offsets are committed. Each commit covers the messages accepted
    /// before the previous one, so data has at least this long to be exported. Default 1s.
    pub commit_interval: Duration,
    /// Largest request made of consecutive messages of one signal (protobuf bytes): what a
    /// poll returns is ingested as few requests (ingest-log frames) as these limits allow. A
    /// larger message is a request of its own. Default 4MiB.
    pub max_request_bytes: usize,
    /// Most messages in one such request. Default 10000.
    pub max_request_messages: usize,
    /// Largest message value accepted (as it is in Kafka: OTLP/JSON before conversion); a
    /// larger message is skipped as malformed (counted, its offset committed). Its protobuf is
    /// bounded by the same size. Default 4MiB.
    pub max_message_bytes: usize,
    /// SASL and TLS.
    pub auth: KafkaAuth,
    /// Further librdkafka consumer properties, passed through as they are.
    pub librdkafka: BTreeMap<String, String>,
}

impl KafkaReceiverConfig {
    /// The keys `[receivers.kafka]` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "brokers",
        "traces_topics",
        "metrics_topics",
        "logs_topics",
        "encoding",
        "group_id",
        "client_id",
        "initial_offset",
        "session_timeout",
        "heartbeat_interval",
        "rebalance_strategy",
        "commit_interval",
        "max_request_bytes",
        "max_request_messages",
        "max_message_bytes",
        "sasl",
        "tls",
        "librdkafka",
    ];
    /// Smallest accepted `max_request_bytes`.
    pub const MIN_REQUEST_BYTES: u64 = 1 << 10;
    /// Largest accepted `max_request_bytes` (as `receivers.otlp.max_recv_msg_size`).
    pub const MAX_REQUEST_BYTES: u64 = 1 << 30;
    /// Largest accepted `max_request_messages`.
    pub const MAX_REQUEST_MESSAGES: u64 = 1_000_000;

    /// Defaults for everything but the brokers.
    pub fn new(brokers: Vec<String>) -> Self {
        KafkaReceiverConfig {
            brokers,
            traces_topics: vec![default_topic(Signal::Traces).to_string()],
            metrics_topics: vec![default_topic(Signal::Metrics).to_string()],
            logs_topics: vec![default_topic(Signal::Logs).to_string()],
            encoding: KafkaEncoding::OtlpProto,
            group_id: "shardtel".to_string(),
            client_id: "shardtel".to_string(),
            initial_offset: InitialOffset::Latest,
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(3),
            rebalance_strategy: RebalanceStrategy::CooperativeSticky,
            commit_interval: Duration::from_secs(1),
            max_request_bytes: 4 << 20,
            max_request_messages: 10_000,
            max_message_bytes: 4 << 20,
            auth: KafkaAuth::default(),
            librdkafka: BTreeMap::new(),
        }
    }

    /// The topics of `signal`.
    pub fn topics(&self, signal: Signal) -> &[String] {
        match signal {
            Signal::Traces => &self.traces_topics,
            Signal::Metrics => &self.metrics_topics,
            Signal::Logs => &self.logs_topics,
        }
    }
}

/// Checks a broker address: `host:port` or `[ipv6]:port`, port 1-65535.
pub fn check_broker(text: &str) -> Result<(), ConfigErrorKind> {
    let invalid = || ConfigErrorKind::InvalidBroker {
        value: text.to_string(),
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        }
    };
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(invalid())
    }
}

fn brokers(value: &DeValue<'_>) -> Result<Vec<String>, ConfigErrorKind> {
    let list = decode::strings(value)?;
    if list.is_empty() {
        return Err(ConfigErrorKind::Empty);
    }
    for broker in &list {
        check_broker(broker)?;
    }
    Ok(list)
}

fn topic(value: &DeValue<'_>) -> Result<String, ConfigErrorKind> {
    let text = decode::non_empty_string(value)?;
    check_topic(&text)?;
    Ok(text)
}

fn topics(value: &DeValue<'_>) -> Result<Vec<String>, ConfigErrorKind> {
    let list = decode::strings(value)?;
    for t in &list {
        if t.is_empty() {
            return Err(ConfigErrorKind::Empty);
        }
        check_topic(t)?;
    }
    Ok(list)
}

/// Kafka topic names: 1-249 characters of `[a-zA-Z0-9._-]`.
fn check_topic(text: &str) -> Result<(), ConfigErrorKind> {
    let ok = text.len() <= 249
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConfigErrorKind::InvalidTopic {
            value: text.to_string(),
        })
    }
}

fn encoding(value: &DeValue<'_>) -> Result<KafkaEncoding, ConfigErrorKind> {
    Ok(match decode::one_of(value, KafkaEncoding::NAMES)? {
        "otlp_json" => KafkaEncoding::OtlpJson,
        _ => KafkaEncoding::OtlpProto,
    })
}

fn compression(value: &DeValue<'_>) -> Result<KafkaCompression, ConfigErrorKind> {
    Ok(match decode::one_of(value, KafkaCompression::NAMES)? {
        "none" => KafkaCompression::None,
        "gzip" => KafkaCompression::Gzip,
        "zstd" => KafkaCompression::Zstd,
        _ => KafkaCompression::Lz4,
    })
}

fn acks(value: &DeValue<'_>) -> Result<KafkaAcks, ConfigErrorKind> {
    const ALLOWED: &[&str] = &["all", "-1", "1", "0"];
    let text = match value {
        DeValue::Integer(_) => decode::signed(value)?.to_string(),
        DeValue::String(s) => s.to_string(),
        other => {
            return Err(ConfigErrorKind::WrongType {
                expected: "\"all\", 1 or 0",
                found: decode::describe(other),
            })
        }
    };
    match text.as_str() {
        "all" | "-1" => Ok(KafkaAcks::All),
        "1" => Ok(KafkaAcks::Leader),
        "0" => Ok(KafkaAcks::None),
        _ => Err(ConfigErrorKind::NotOneOf {
            value: text,
            allowed: ALLOWED,
        }),
    }
}

fn message_bytes(value: &DeValue<'_>) -> Result<usize, ConfigErrorKind> {
    decode::size_between(
        value,
        KafkaExporterConfig::MIN_MESSAGE_BYTES,
        KafkaExporterConfig::MAX_MESSAGE_BYTES,
    )
}

fn millis(value: &DeValue<'_>, min: Duration) -> Result<Duration, ConfigErrorKind> {
    let d = decode::min_duration(decode::duration(value)?, min)?;
    let max = Duration::from_millis(i32::MAX as u64);
    if d > max {
        return Err(ConfigErrorKind::TooLarge {
            value: crate::units::format_duration(d),
            max: crate::units::format_duration(max),
        });
    }
    Ok(d)
}

fn required_brokers(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<Vec<String>> {
    if s.get("brokers").is_none() {
        d.require(s, "brokers", "brokers = [\"127.0.0.1:9092\"]");
        return None;
    }
    d.field(s, "brokers", brokers)
}

fn decode_auth(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> KafkaAuth {
    let sasl = if s.get("sasl").is_some() {
        let t = d.section(s, "sasl", SaslConfig::KEYS);
        let mechanism = d.field_or(&t, "mechanism", SaslMechanism::Plain, |v| {
            Ok(match decode::one_of(v, SaslMechanism::NAMES)? {
                "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
                "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
                _ => SaslMechanism::Plain,
            })
        });
        let mut text = |key: &str, hint: &'static str| {
            if t.get(key).is_none() {
                if t.exists() {
                    d.require(&t, key, hint);
                }
                return None;
            }
            d.field(&t, key, decode::non_empty_string)
        };
        let username = text("username", "username = \"shardtel\"");
        let password = text("password", "password = \"${KAFKA_PASSWORD}\"");
        match (username, password) {
            (Some(username), Some(password)) => Some(SaslConfig {
                mechanism,
                username,
                password,
            }),
            _ => None,
        }
    } else {
        None
    };
    let tls = if s.get("tls").is_some() {
        let t = d.section(s, "tls", KafkaTlsConfig::KEYS);
        let tls = KafkaTlsConfig {
            ca_file: d.field(&t, "ca_file", decode::path),
            cert_file: d.field(&t, "cert_file", decode::path),
            key_file: d.field(&t, "key_file", decode::path),
            insecure_skip_verify: d.field_or(&t, "insecure_skip_verify", false, decode::boolean),
        };
        let failed = |key: &str| d.locations.failed(&t.key(key));
        if tls.cert_file.is_some() != tls.key_file.is_some()
            && !failed("cert_file")
            && !failed("key_file")
        {
            let (missing, present) = if tls.cert_file.is_some() {
                ("key_file", "cert_file")
            } else {
                ("cert_file", "key_file")
            };
            d.report_at_key(
                t.key(present),
                ConfigErrorKind::KafkaSetting {
                    reason: if missing == "key_file" {
                        "cert_file needs key_file (a client certificate needs its private key)"
                    } else {
                        "key_file needs cert_file (a private key needs its client certificate)"
                    },
                },
            );
        }
        t.exists().then_some(tls)
    } else {
        None
    };
    KafkaAuth { sasl, tls }
}

fn decode_properties(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> BTreeMap<String, String> {
    let mut props = BTreeMap::new();
    let Some(value) = s.get("librdkafka") else {
        return props;
    };
    let table = d.table(s.key("librdkafka"), value, None);
    for (name, value) in table.entries() {
        let key = name.get_ref().as_ref();
        let parsed = d.value(table.key(key), value, |v| match v {
            DeValue::String(s) => Ok(s.to_string()),
            DeValue::Integer(_) => Ok(decode::signed(v)?.to_string()),
            DeValue::Boolean(b) => Ok(b.to_string()),
            other => Err(ConfigErrorKind::WrongType {
                expected: "a string, integer or boolean (librdkafka property value)",
                found: decode::describe(other),
            }),
        });
        if let Some(text) = parsed {
            props.insert(key.to_string(), text);
        }
    }
    props
}

/// Decodes an exporter table whose type is `kafka` (keys already checked).
pub(crate) fn decode_exporter(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
) -> Option<KafkaExporterConfig> {
    let brokers = required_brokers(d, s);
    let mut c = KafkaExporterConfig::new(Vec::new());
    if let Some(t) = d.field(s, "topic", topic) {
        c.traces_topic = t.clone();
        c.metrics_topic = t.clone();
        c.logs_topic = t;
    }
    if let Some(t) = d.field(s, "traces_topic", topic) {
        c.traces_topic = t;
    }
    if let Some(t) = d.field(s, "metrics_topic", topic) {
        c.metrics_topic = t;
    }
    if let Some(t) = d.field(s, "logs_topic", topic) {
        c.logs_topic = t;
    }
    c.encoding = d.field_or(s, "encoding", c.encoding, encoding);
    c.compression = d.field_or(s, "compression", c.compression, compression);
    c.max_message_bytes = d.field_or(s, "max_message_bytes", c.max_message_bytes, message_bytes);
    c.acks = d.field_or(s, "acks", c.acks, acks);
    c.enable_idempotence = d.field_or(
        s,
        "enable_idempotence",
        c.enable_idempotence,
        decode::boolean,
    );
    c.linger = d.field_or(s, "linger", c.linger, |v| millis(v, Duration::ZERO));
    c.producer_batch_bytes = d.field_or(
        s,
        "producer_batch_bytes",
        c.producer_batch_bytes,
        message_bytes,
    );
    c.timeout = d.field_or(s, "timeout", c.timeout, |v| {
        millis(v, Duration::from_millis(1))
    });
    c.client_id = d.field_or(s, "client_id", c.client_id, decode::non_empty_string);
    c.auth = decode_auth(d, s);
    c.librdkafka = decode_properties(d, s);
    c.batch = delivery::decode_batch(d, s);
    c.retry = delivery::decode_retry(d, s);
    c.queue = delivery::decode_queue(d, s);
    if c.enable_idempotence
        && c.acks != KafkaAcks::All
        && !d.locations.failed(&s.key("acks"))
        && s.get("acks").is_some()
    {
        d.report_at_key(
            s.key("acks"),
            ConfigErrorKind::KafkaSetting {
                reason: "enable_idempotence = true needs acks = \"all\" (or set enable_idempotence = false)",
            },
        );
    }
    c.brokers = brokers?;
    Some(c)
}

/// Decodes `[receivers.kafka]` (keys already checked).
pub(crate) fn decode_receiver(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> KafkaReceiverConfig {
    let brokers = required_brokers(d, s);
    let mut c = KafkaReceiverConfig::new(brokers.unwrap_or_default());
    c.traces_topics = d.field_or(s, "traces_topics", c.traces_topics, topics);
    c.metrics_topics = d.field_or(s, "metrics_topics", c.metrics_topics, topics);
    c.logs_topics = d.field_or(s, "logs_topics", c.logs_topics, topics);
    c.encoding = d.field_or(s, "encoding", c.encoding, encoding);
    c.group_id = d.field_or(s, "group_id", c.group_id, decode::non_empty_string);
    c.client_id = d.field_or(s, "client_id", c.client_id, decode::non_empty_string);
    c.initial_offset = d.field_or(s, "initial_offset", c.initial_offset, |v| {
        Ok(match decode::one_of(v, &["earliest", "latest"])? {
            "earliest" => InitialOffset::Earliest,
            _ => InitialOffset::Latest,
        })
    });
    c.session_timeout = d.field_or(s, "session_timeout", c.session_timeout, |v| {
        millis(v, Duration::from_millis(1))
    });
    c.heartbeat_interval = d.field_or(s, "heartbeat_interval", c.heartbeat_interval, |v| {
        millis(v, Duration::from_millis(1))
    });
    c.rebalance_strategy = d.field_or(s, "rebalance_strategy", c.rebalance_strategy, |v| {
        Ok(match decode::one_of(v, RebalanceStrategy::NAMES)? {
            "range" => RebalanceStrategy::Range,
            "roundrobin" => RebalanceStrategy::RoundRobin,
            _ => RebalanceStrategy::CooperativeSticky,
        })
    });
    c.commit_interval = d.field_or(s, "commit_interval", c.commit_interval, |v| {
        millis(v, Duration::from_millis(1))
    });
    c.max_request_bytes = d.field_or(s, "max_request_bytes", c.max_request_bytes, |v| {
        decode::size_between(
            v,
            KafkaReceiverConfig::MIN_REQUEST_BYTES,
            KafkaReceiverConfig::MAX_REQUEST_BYTES,
        )
    });
    c.max_request_messages = d.field_or(s, "max_request_messages", c.max_request_messages, |v| {
        let n = decode::count(v, u64::MAX)?;
        Ok(decode::in_range(n, 1, KafkaReceiverConfig::MAX_REQUEST_MESSAGES)? as usize)
    });
    c.max_message_bytes = d.field_or(s, "max_message_bytes", c.max_message_bytes, |v| {
        decode::size_between(
            v,
            KafkaReceiverConfig::MIN_REQUEST_BYTES,
            KafkaReceiverConfig::MAX_REQUEST_BYTES,
        )
    });
    c.auth = decode_auth(d, s);
    c.librdkafka = decode_properties(d, s);
    let failed = |key: &str| d.locations.failed(&s.key(key));
    if c.heartbeat_interval >= c.session_timeout
        && !failed("heartbeat_interval")
        && !failed("session_timeout")
    {
        let key = if s.get("heartbeat_interval").is_some() {
            "heartbeat_interval"
        } else {
            "session_timeout"
        };
        d.report_at_key(
            s.key(key),
            ConfigErrorKind::BoundsOrder {
                lower: format!(
                    "heartbeat_interval ({})",
                    crate::units::format_duration(c.heartbeat_interval)
                ),
                upper: format!(
                    "session_timeout ({})",
                    crate::units::format_duration(c.session_timeout)
                ),
            },
        );
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut twice = Vec::new();
    for signal in Signal::ALL {
        let key = s.key(&format!("{}_topics", signal.name()));
        for t in c.topics(signal) {
            if seen.contains(&t.as_str()) && !d.locations.failed(&key) {
                twice.push(key.clone());
            }
            seen.push(t);
        }
    }
    for key in twice {
        d.report_at_key(
            key,
            ConfigErrorKind::KafkaSetting {
                reason: "a topic is listed twice (each topic holds one signal)",
            },
        );
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_without_tls_and_unverified_brokers_are_warned_about() {
        let sasl = SaslConfig {
            mechanism: SaslMechanism::Plain,
            username: "u".into(),
            password: "p".into(),
        };
        let auth = |sasl: Option<SaslConfig>, tls: Option<bool>| KafkaAuth {
            sasl,
            tls: tls.map(|insecure_skip_verify| KafkaTlsConfig {
                ca_file: None,
                cert_file: None,
                key_file: None,
                insecure_skip_verify,
            }),
        };
        assert!(auth(None, None).warnings().is_empty());
        assert!(auth(Some(sasl.clone()), Some(false)).warnings().is_empty());
        assert_eq!(auth(Some(sasl), None).warnings().len(), 1);
        assert_eq!(auth(None, Some(true)).warnings().len(), 1);
    }

    #[test]
    fn a_sasl_password_is_not_in_debug_output() {
        let sasl = SaslConfig {
            mechanism: SaslMechanism::ScramSha512,
            username: "gateway".into(),
            password: "s3cr3t-pass".into(),
        };
        let shown = format!("{sasl:?}");
        assert!(
            shown.contains("gateway") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }

    #[test]
    fn brokers_are_host_and_port() {
        for good in [
            "127.0.0.1:9092",
            "kafka-0.kafka:9093",
            "[::1]:9092",
            "b_1:1",
        ] {
            assert!(check_broker(good).is_ok(), "{good}");
        }
        for bad in [
            "127.0.0.1",
            "kafka:",
            ":9092",
            "kafka:0",
            "kafka:70000",
            "tcp://kafka:9092",
            "[::1:9092",
            "ka fka:9092",
        ] {
            assert_eq!(
                check_broker(bad).unwrap_err().to_string(),
                format!(
                    "invalid broker address {bad:?} (expected host:port like \"127.0.0.1:9092\")"
                ),
            );
        }
    }

    #[test]
    fn auth_properties() {
        assert_eq!(
            KafkaAuth::default().client_properties(),
            [("security.protocol", "plaintext".to_string())]
        );
        let auth = KafkaAuth {
            sasl: Some(SaslConfig {
                mechanism: SaslMechanism::ScramSha512,
                username: "u".into(),
                password: "p".into(),
            }),
            tls: Some(KafkaTlsConfig {
                ca_file: Some("/ca.pem".into()),
                insecure_skip_verify: true,
                ..Default::default()
            }),
        };
        let props = auth.client_properties();
        let get = |k: &str| {
            props
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.username"), Some("u"));
        assert_eq!(get("ssl.ca.location"), Some("/ca.pem"));
        assert_eq!(get("enable.ssl.certificate.verification"), Some("false"));
        assert_eq!(get("ssl.key.location"), None);
    }

    fn load(text: &str) -> Result<crate::Config, String> {
        crate::Config::load(text, "k.toml", &|_| None, &[0, 1]).map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_is_read() {
        let config = load(
            r#"
[receivers.kafka]
brokers = ["k1:9092", "[::1]:9093"]
traces_topics = ["spans-a", "spans-b"]
metrics_topics = []
encoding = "otlp_json"
group_id = "processors"
client_id = "p1"
initial_offset = "earliest"
session_timeout = "6s"
heartbeat_interval = "1s"
rebalance_strategy = "range"
commit_interval = "250ms"
max_request_bytes = "1MiB"
max_request_messages = 500
max_message_bytes = "1KiB"
sasl = { mechanism = "SCRAM-SHA-256", username = "u", password = "p" }
tls = { ca_file = "/ca.pem", cert_file = "/c.pem", key_file = "/k.pem" }
librdkafka = { "fetch.wait.max.ms" = 50, "check.crcs" = true }

[exporters.kafka]
brokers = ["k1:9092"]
topic = "all-signals"
logs_topic = "logs"
compression = "lz4"
max_message_bytes = "512KiB"
acks = 1
enable_idempotence = false
linger = "20ms"
producer_batch_bytes = "2MB"
timeout = "5s"
librdkafka = { "socket.keepalive.enable" = "true" }
batch = { max_items = 10 }

[pipelines.traces]
receivers = ["kafka"]
exporters = ["kafka"]
"#,
        )
        .unwrap();
        let r = config.receivers.kafka.as_ref().unwrap();
        assert_eq!(config.receivers.names(), ["kafka"]);
        assert_eq!(r.brokers, ["k1:9092", "[::1]:9093"]);
        assert_eq!(r.topics(Signal::Traces), ["spans-a", "spans-b"]);
        assert!(r.topics(Signal::Metrics).is_empty());
        assert_eq!(r.topics(Signal::Logs), ["otlp_logs"]);
        assert_eq!(r.encoding, KafkaEncoding::OtlpJson);
        assert_eq!(
            (r.group_id.as_str(), r.client_id.as_str()),
            ("processors", "p1")
        );
        assert_eq!(r.initial_offset, InitialOffset::Earliest);
        assert_eq!(r.session_timeout, Duration::from_secs(6));
        assert_eq!(r.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(r.rebalance_strategy, RebalanceStrategy::Range);
        assert_eq!(r.commit_interval, Duration::from_millis(250));
        assert_eq!(r.max_request_bytes, 1 << 20);
        assert_eq!(r.max_message_bytes, 1 << 10);
        assert_eq!(r.max_request_messages, 500);
        assert_eq!(
            r.auth.sasl.as_ref().unwrap().mechanism,
            SaslMechanism::ScramSha256
        );
        assert_eq!(r.auth.tls.as_ref().unwrap().key_file, Some("/k.pem".into()));
        assert_eq!(r.librdkafka["fetch.wait.max.ms"], "50");
        assert_eq!(r.librdkafka["check.crcs"], "true");
        let crate::ExporterKind::Kafka(e) = &config.exporters["kafka"].kind else {
            panic!()
        };
        assert_eq!(e.topic(Signal::Traces), "all-signals");
        assert_eq!(e.topic(Signal::Metrics), "all-signals");
        assert_eq!(e.topic(Signal::Logs), "logs");
        assert_eq!(e.compression, KafkaCompression::Lz4);
        assert_eq!(e.max_message_bytes, 512 << 10);
        assert_eq!(e.acks, KafkaAcks::Leader);
        assert!(!e.enable_idempotence);
        assert_eq!(e.linger, Duration::from_millis(20));
        assert_eq!(e.producer_batch_bytes, 2_000_000);
        assert_eq!(e.timeout, Duration::from_secs(5));
        assert_eq!(e.librdkafka["socket.keepalive.enable"], "true");
        assert_eq!(e.batch.max_items, 10);
        assert!(e.auth.sasl.is_none() && e.auth.tls.is_none());
    }

    #[test]
    fn problems_name_key_and_line() {
        let errors = load(
            r#"[receivers.kafka]
brokers = ["nohost"]
traces_topics = ["a b"]
heartbeat_interval = "20s"
sasl = { mechanism = "GSSAPI", username = "u" }
tls = { cert_file = "/c.pem" }
[exporters.kafka]
brokers = []
acks = 1
compression = "snappy"
max_message_bytes = 10
[exporters.k2]
type = "kafka"
brokers = ["k:1"]
topic = "x"
traces_topic = "x"
[receivers.kafka.librdkafka]
"a.b" = [1]
[pipelines.traces]
receivers = ["kafka"]
exporters = ["kafka"]
"#,
        )
        .unwrap_err();
        assert_eq!(
            errors,
            "k.toml:2: receivers.kafka.brokers: invalid broker address \"nohost\" (expected host:port like \"127.0.0.1:9092\")\n\
             k.toml:3: receivers.kafka.traces_topics: invalid topic \"a b\" (up to 249 letters, digits, '.', '_' and '-')\n\
             k.toml:4: receivers.kafka.heartbeat_interval: heartbeat_interval (20s) is greater than session_timeout (10s)\n\
             k.toml:5: receivers.kafka.sasl.mechanism: invalid value \"GSSAPI\" (allowed: \"PLAIN\", \"SCRAM-SHA-256\", \"SCRAM-SHA-512\")\n\
             k.toml:5: receivers.kafka.sasl.password: missing required key (password = \"${KAFKA_PASSWORD}\")\n\
             k.toml:6: receivers.kafka.tls.cert_file: cert_file needs key_file (a client certificate needs its private key)\n\
             k.toml:8: exporters.kafka.brokers: must not be empty\n\
             k.toml:9: exporters.kafka.acks: enable_idempotence = true needs acks = \"all\" (or set enable_idempotence = false)\n\
             k.toml:10: exporters.kafka.compression: invalid value \"snappy\" (allowed: \"lz4\", \"zstd\", \"gzip\", \"none\")\n\
             k.toml:11: exporters.kafka.max_message_bytes: 10 bytes is too small (minimum 1KiB)\n\
             k.toml:18: receivers.kafka.librdkafka.\"a.b\": expected a string, integer or boolean (librdkafka property value), found an array"
        );
    }

    #[test]
    fn request_limits_are_bounded() {
        let errors = load(
            r#"[receivers.kafka]
brokers = ["k:9092"]
max_request_bytes = 100
max_request_messages = 0
[receivers.otlp]
[pipelines.traces]
receivers = ["kafka"]
exporters = []
"#,
        )
        .unwrap_err();
        assert!(
            errors.starts_with(
                "k.toml:3: receivers.kafka.max_request_bytes: 100 bytes is too small (minimum 1KiB)\n\
                 k.toml:4: receivers.kafka.max_request_messages: 0 is too small (minimum 1)"
            ),
            "{errors}"
        );
        let errors = load(
            "[receivers.kafka]\nbrokers = [\"k:9092\"]\nmax_request_bytes = \"2GiB\"\nmax_request_messages = 2000000\n",
        )
        .unwrap_err();
        assert!(
            errors.starts_with(
                "k.toml:3: receivers.kafka.max_request_bytes: 2GiB is too large (maximum 1GiB)\n\
                 k.toml:4: receivers.kafka.max_request_messages: 2000000 is too large (maximum 1000000)"
            ),
            "{errors}"
        );
    }

    #[test]
    fn defaults() {
        let e = KafkaExporterConfig::new(vec!["k:9092".into()]);
        assert_eq!(e.topic(Signal::Traces), "otlp_spans");
        assert_eq!(e.topic(Signal::Metrics), "otlp_metrics");
        assert_eq!(e.topic(Signal::Logs), "otlp_logs");
        assert_eq!(e.compression, KafkaCompression::Lz4);
        assert_eq!(e.acks, KafkaAcks::All);
        assert!(e.enable_idempotence);
        assert_eq!(e.max_message_bytes, 1_000_000);
        let r = KafkaReceiverConfig::new(vec!["k:9092".into()]);
        assert_eq!(r.topics(Signal::Traces), ["otlp_spans"]);
        assert_eq!(r.initial_offset, InitialOffset::Latest);
        assert_eq!(r.rebalance_strategy, RebalanceStrategy::CooperativeSticky);
        assert_eq!(r.group_id, "shardtel");
        assert_eq!(r.max_request_bytes, 4 << 20);
        assert_eq!(r.max_request_messages, 10_000);
    }
}
