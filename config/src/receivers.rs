//! `[receivers.*]`: where telemetry comes in: `otlp` (gRPC and HTTP), `kafka` (a consumer
//! group; its settings live in the `kafka` module), and `zipkin`, `jaeger` and `fluentforward`
//! (the `format_receivers` module).

use std::net::{Ipv4Addr, SocketAddr};

use crate::decode::{self, Decoder, Section};
use crate::error::{ComponentKind, ConfigErrorKind};
use crate::format_receivers::{
    FluentForwardReceiverConfig, JaegerReceiverConfig, ZipkinReceiverConfig,
};
use crate::kafka::KafkaReceiverConfig;
use crate::tls::{AuthConfig, ServerTlsConfig};

/// `[receivers]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receivers {
    /// `[receivers.otlp]`; `None` when the table is absent.
    pub otlp: Option<OtlpReceiverConfig>,
    /// `[receivers.kafka]`; `None` when the table is absent.
    pub kafka: Option<KafkaReceiverConfig>,
    /// `[receivers.zipkin]`; `None` when the table is absent.
    pub zipkin: Option<ZipkinReceiverConfig>,
    /// `[receivers.jaeger]`; `None` when the table is absent.
    pub jaeger: Option<JaegerReceiverConfig>,
    /// `[receivers.fluentforward]`; `None` when the table is absent.
    pub fluentforward: Option<FluentForwardReceiverConfig>,
}

impl Receivers {
    /// Receiver names (table keys) this build supports.
    pub const SUPPORTED: &'static [&'static str] =
        &["otlp", "kafka", "zipkin", "jaeger", "fluentforward"];
    /// Receivers shardtel plans (DESIGN.md) that this build does not implement yet.
    pub const PLANNED: &'static [&'static str] = &[];

    /// Names of the receivers that are configured, for pipelines to refer to.
    pub fn names(&self) -> Vec<&'static str> {
        let otlp = self.otlp.iter().map(|_| "otlp");
        otlp.chain(self.kafka.iter().map(|_| "kafka"))
            .chain(self.zipkin.iter().map(|_| "zipkin"))
            .chain(self.jaeger.iter().map(|_| "jaeger"))
            .chain(self.fluentforward.iter().map(|_| "fluentforward"))
            .collect()
    }

    /// The one signal a receiver of this name carries, if it carries one only.
    pub fn only_signal(name: &str) -> Option<shardtel_protocol::Signal> {
        match name {
            "zipkin" | "jaeger" => Some(shardtel_protocol::Signal::Traces),
            "fluentforward" => Some(shardtel_protocol::Signal::Logs),
            _ => None,
        }
    }
}

/// `[receivers.otlp]`: OTLP over gRPC and over HTTP (protobuf or JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpReceiverConfig {
    /// OTLP/gRPC listener; `false` disables it. Default `0.0.0.0:4317`.
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP listener; `false` disables it. Default `0.0.0.0:4318`.
    pub http: Option<SocketAddr>,
    /// Largest accepted request body, after decompression, in bytes. Default 4 MiB.
    pub max_recv_msg_size: usize,
    /// HTTP/2 streams allowed per connection. Default 256.
    pub max_concurrent_streams: u32,
    /// Connections served at once, gRPC and HTTP together, for the whole process; each core
    /// serves up to its share (`max_connections / cores`, rounded up). Default 4096.
    pub max_connections: usize,
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
        "tls",
        "auth",
    ];
    /// Smallest accepted `max_recv_msg_size`.
    pub const MIN_RECV_MSG_SIZE: u64 = 1 << 10;
    /// Largest accepted `max_recv_msg_size`.
    pub const MAX_RECV_MSG_SIZE: u64 = 1 << 30;
    /// Largest accepted `max_connections`.
    pub const MAX_CONNECTIONS: u64 = 1 << 20;
}

impl Default for OtlpReceiverConfig {
    fn default() -> Self {
        OtlpReceiverConfig {
            grpc: Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 4317))),
            http: Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 4318))),
            max_recv_msg_size: 4 << 20,
            max_concurrent_streams: 256,
            max_connections: 4096,
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
        tls: crate::tls::decode_server(d, &s),
        auth: crate::tls::decode_auth(d, &s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_all_interfaces() {
        let otlp = OtlpReceiverConfig::default();
        assert_eq!(otlp.grpc.unwrap().to_string(), "0.0.0.0:4317");
        assert_eq!(otlp.http.unwrap().to_string(), "0.0.0.0:4318");
        assert_eq!(otlp.max_recv_msg_size, 4 * 1024 * 1024);
        assert_eq!(otlp.max_concurrent_streams, 256);
        assert_eq!(otlp.max_connections, 4096);
        assert!(Receivers::default().names().is_empty());
    }
}
