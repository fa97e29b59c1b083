//! `[receivers.*]`: where telemetry comes in: `otlp` (gRPC and HTTP), `kafka` (a consumer
//! group; its settings live in the `kafka` module), `prometheus` (scrapes; the `prometheus`
//! module), and `zipkin`, `jaeger` and `fluentforward` (the `format_receivers` module).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::decode::{self, Decoder, Section};
use crate::error::{ComponentKind, ConfigErrorKind};
use crate::format_receivers::{
    FluentForwardReceiverConfig, JaegerReceiverConfig, ZipkinReceiverConfig,
};
use crate::kafka::KafkaReceiverConfig;
use crate::prometheus::PrometheusReceiverConfig;
use crate::tls::{AuthConfig, ServerTlsConfig};

/// `[receivers]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receivers {
    /// `[receivers.otlp]`; `None` when the table is absent.
    pub otlp: Option<OtlpReceiverConfig>,
    /// `[receivers.kafka]`; `None` when the table is absent.
    pub kafka: Option<KafkaReceiverConfig>,
    /// `[receivers.prometheus]`; `None` when the table is absent.
    pub prometheus: Option<PrometheusReceiverConfig>,
    /// `[receivers.zipkin]`; `None` when the table is absent.
    pub zipkin: Option<ZipkinReceiverConfig>,
    /// `[receivers.jaeger]`; `None` when the table is absent.
    pub jaeger: Option<JaegerReceiverConfig>,
    /// `[receivers.fluentforward]`; `None` when the table is absent.
    pub fluentforward: Option<FluentForwardReceiverConfig>,
}

impl Receivers {
    /// Receiver names (table keys) this build supports.
    pub const SUPPORTED: &'static [&'static str] = &[
        "otlp",
        "kafka",
        "prometheus",
        "zipkin",
        "jaeger",
        "fluentforward",
    ];
    /// Receivers shardtel plans (DESIGN.md) that this build does not implement yet.
    pub const PLANNED: &'static [&'static str] = &[];

    /// Names of the receivers that are configured, for pipelines to refer to.
    pub fn names(&self) -> Vec<&'static str> {
        let otlp = self.otlp.iter().map(|_| "otlp");
        otlp.chain(self.kafka.iter().map(|_| "kafka"))
            .chain(self.prometheus.iter().map(|_| "prometheus"))
            .chain(self.zipkin.iter().map(|_| "zipkin"))
            .chain(self.jaeger.iter().map(|_| "jaeger"))
            .chain(self.fluentforward.iter().map(|_| "fluentforward"))
            .collect()
    }

    /// The one signal a receiver of this name carries, if it carries one only.
    pub fn only_signal(name: &str) -> Option<shardtel_protocol::Signal> {
        match name {
            "prometheus" => Some(shardtel_protocol::Signal::Metrics),
            "zipkin" | "jaeger" => Some(shardtel_protocol::Signal::Traces),
            "fluentforward" => Some(shardtel_protocol::Signal::Logs),
            _ => None,
        }
    }
}

/// `[receivers.otlp]`: OTLP over gRPC and over HTTP (protobuf or JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpReceiverConfig {
    /// OTLP/gRPC listener; `false` disables it. Default `127.0.0.1:4317` (loopback only, as the
    /// OpenTelemetry Collector's default; listen on `0.0.0.0:4317` to accept other hosts).
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP listener; `false` disables it. Default `127.0.0.1:4318`.
    pub http: Option<SocketAddr>,
    /// Largest accepted request body, after decompression, in bytes. Default 4 MiB.
    pub max_recv_msg_size: usize,
    /// HTTP/2 streams allowed per connection. Default 256.
    pub max_concurrent_streams: u32,
    /// Connections served at once, gRPC and HTTP together, for the whole process; each core
    /// serves up to its share (`max_connections / cores`, rounded up). Default 4096.
    pub max_connections: usize,
    /// How long an HTTP/1.1 client may take to send a request head, from its first byte;
    /// then the connection is closed. Default 10 s.
    pub read_header_timeout: Duration,
    /// How long a client may take to send a whole request body, from its head; then the
    /// request fails (HTTP 408, gRPC `DEADLINE_EXCEEDED`). Default 30 s.
    pub read_timeout: Duration,
    /// How long a connection may stay without a request in progress; then it is closed
    /// (HTTP/2 with `GOAWAY`). Default 60 s.
    pub idle_timeout: Duration,
    /// `[receivers.otlp.tls]`: TLS (and mTLS) on both listeners; plaintext when absent.
    pub tls: Option<ServerTlsConfig>,
    /// `[receivers.otlp.auth]`: bearer tokens every request must carry; none when absent.
    pub auth: Option<AuthConfig>,
}

impl OtlpReceiverConfig {
    /// The keys `[receivers.otlp]` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "grpc",
        "http",
        "max_recv_msg_size",
        "max_concurrent_streams",
        "max_connections",
        "read_header_timeout",
        "read_timeout",
        "idle_timeout",
        "tls",
        "auth",
    ];
    /// Smallest accepted `max_recv_msg_size`.
    pub const MIN_RECV_MSG_SIZE: u64 = 1 << 10;
    /// Largest accepted `max_recv_msg_size`.
    pub const MAX_RECV_MSG_SIZE: u64 = 1 << 30;
    /// Largest accepted `max_connections`.
    pub const MAX_CONNECTIONS: u64 = 1 << 20;
    /// Shortest accepted connection timeout.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);
    /// Longest accepted connection timeout.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
}

impl Default for OtlpReceiverConfig {
    fn default() -> Self {
        OtlpReceiverConfig {
            grpc: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 4317))),
            http: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 4318))),
            max_recv_msg_size: 4 << 20,
            max_concurrent_streams: 256,
            max_connections: 4096,
            read_header_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            tls: None,
            auth: None,
        }
    }
}

pub(crate) fn decode(d: &mut Decoder<'_>, root: &Section<'_, '_>) -> Receivers {
    let s = d.map_section(root, "receivers");
    let mut receivers = Receivers::default();
    for (key, value) in s.entries() {
        let name = key.get_ref().as_ref();
        d.define(ComponentKind::Receiver, name);
        match name {
            "otlp" => receivers.otlp = Some(decode_otlp(d, &s, value)),
            "kafka" => {
                let t = d.table(s.key("kafka"), value, Some(KafkaReceiverConfig::KEYS));
                if t.exists() {
                    receivers.kafka = Some(crate::kafka::decode_receiver(d, &t));
                }
            }
            "prometheus" => {
                let t = d.table(
                    s.key("prometheus"),
                    value,
                    Some(PrometheusReceiverConfig::KEYS),
                );
                if t.exists() {
                    receivers.prometheus = crate::prometheus::decode(d, &t);
                }
            }
            "zipkin" => {
                let t = d.table(s.key("zipkin"), value, Some(ZipkinReceiverConfig::KEYS));
                if t.exists() {
                    receivers.zipkin = Some(crate::format_receivers::decode_zipkin(d, &t));
                }
            }
            "jaeger" => {
                let t = d.table(s.key("jaeger"), value, Some(JaegerReceiverConfig::KEYS));
                if t.exists() {
                    receivers.jaeger = Some(crate::format_receivers::decode_jaeger(d, &t));
                }
            }
            "fluentforward" => {
                let t = d.table(
                    s.key("fluentforward"),
                    value,
                    Some(FluentForwardReceiverConfig::KEYS),
                );
                if t.exists() {
                    receivers.fluentforward =
                        Some(crate::format_receivers::decode_fluentforward(d, &t));
                }
            }
            _ if Receivers::PLANNED.contains(&name) => d.report(
                s.key(name),
                key.span(),
                ConfigErrorKind::UnsupportedType {
                    kind: ComponentKind::Receiver,
                    ty: name.to_string(),
                },
            ),
            _ => d.report(
                s.key(name),
                key.span(),
                ConfigErrorKind::UnknownKey {
                    allowed: Receivers::SUPPORTED.to_vec(),
                },
            ),
        }
    }
    receivers
}

fn decode_otlp(
    d: &mut Decoder<'_>,
    receivers: &Section<'_, '_>,
    value: &decode::Value<'_>,
) -> OtlpReceiverConfig {
    let s = d.table(receivers.key("otlp"), value, Some(OtlpReceiverConfig::KEYS));
    let default = OtlpReceiverConfig::default();
    OtlpReceiverConfig {
        grpc: d.field_or(&s, "grpc", default.grpc, decode::listen_address),
        http: d.field_or(&s, "http", default.http, decode::listen_address),
        max_recv_msg_size: d.field_or(&s, "max_recv_msg_size", default.max_recv_msg_size, |v| {
            decode::size_between(
                v,
                OtlpReceiverConfig::MIN_RECV_MSG_SIZE,
                OtlpReceiverConfig::MAX_RECV_MSG_SIZE,
            )
        }),
        max_concurrent_streams: d.field_or(
            &s,
            "max_concurrent_streams",
            default.max_concurrent_streams,
            |v| Ok(decode::in_range(decode::count(v, u64::MAX)?, 1, u64::from(u32::MAX))? as u32),
        ),
        max_connections: d.field_or(&s, "max_connections", default.max_connections, |v| {
            let n = decode::count(v, u64::MAX)?;
            Ok(decode::in_range(n, 1, OtlpReceiverConfig::MAX_CONNECTIONS)? as usize)
        }),
        read_header_timeout: d.field_or(
            &s,
            "read_header_timeout",
            default.read_header_timeout,
            timeout,
        ),
        read_timeout: d.field_or(&s, "read_timeout", default.read_timeout, timeout),
        idle_timeout: d.field_or(&s, "idle_timeout", default.idle_timeout, timeout),
        tls: crate::tls::decode_server(d, &s),
        auth: crate::tls::decode_auth(d, &s),
    }
}

/// A connection timeout: a duration between [`OtlpReceiverConfig::MIN_TIMEOUT`] and
/// [`OtlpReceiverConfig::MAX_TIMEOUT`].
fn timeout(value: &toml::de::DeValue<'_>) -> Result<Duration, ConfigErrorKind> {
    let d = decode::min_duration(decode::duration(value)?, OtlpReceiverConfig::MIN_TIMEOUT)?;
    if d > OtlpReceiverConfig::MAX_TIMEOUT {
        return Err(ConfigErrorKind::TooLarge {
            value: crate::format_duration(d),
            max: crate::format_duration(OtlpReceiverConfig::MAX_TIMEOUT),
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback_only() {
        let otlp = OtlpReceiverConfig::default();
        assert_eq!(otlp.grpc.unwrap().to_string(), "127.0.0.1:4317");
        assert_eq!(otlp.http.unwrap().to_string(), "127.0.0.1:4318");
        // The same as the embedded default configuration, which writes them out.
        let embedded = crate::Config::embedded_default().receivers.otlp.unwrap();
        assert_eq!((embedded.grpc, embedded.http), (otlp.grpc, otlp.http));
        assert_eq!(otlp.max_recv_msg_size, 4 * 1024 * 1024);
        assert_eq!(otlp.max_concurrent_streams, 256);
        assert_eq!(otlp.max_connections, 4096);
        assert_eq!(otlp.read_header_timeout, Duration::from_secs(10));
        assert_eq!(otlp.read_timeout, Duration::from_secs(30));
        assert_eq!(otlp.idle_timeout, Duration::from_secs(60));
        assert!(Receivers::default().names().is_empty());
    }

    const PIPELINE: &str = "[exporters.blackhole]\n[pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"blackhole\"]\n";

    #[test]
    fn connection_timeouts_are_read_and_bounded() {
        let config = crate::Config::from_str(
            &format!("[receivers.otlp]\nread_header_timeout = \"1s\"\nread_timeout = \"2s\"\nidle_timeout = \"3m\"\n{PIPELINE}"),
            "test.toml",
        )
        .unwrap();
        let otlp = config.receivers.otlp.unwrap();
        assert_eq!(otlp.read_header_timeout, Duration::from_secs(1));
        assert_eq!(otlp.read_timeout, Duration::from_secs(2));
        assert_eq!(otlp.idle_timeout, Duration::from_secs(180));
        for (value, wanted) in [
            ("\"10ms\"", "minimum 100ms"),
            ("\"2h\"", "maximum 1h"),
            ("0", "minimum 100ms"),
        ] {
            let e = crate::Config::from_str(
                &format!("[receivers.otlp]\nidle_timeout = {value}\n{PIPELINE}"),
                "test.toml",
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("receivers.otlp.idle_timeout"), "{e}");
            assert!(e.contains(wanted), "{value}: {e}");
        }
    }
}
