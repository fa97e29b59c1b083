//! `[receivers.zipkin]`, `[receivers.jaeger]`, `[receivers.fluentforward]`: receivers of
//! formats other than OTLP, each translated to OTLP on the receiving core. Every listener
//! defaults to 127.0.0.1 on its format's conventional port, and each table bounds what one
//! request may hold, how many connections the process serves, and how long a connection may
//! take to send a request or stay idle ([`ListenerLimits`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use toml::de::DeValue;

use crate::decode::{self, Decoder, Section};
use crate::error::ConfigErrorKind;

/// Bounds every listener of these receivers has (flattened into its table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Largest request (HTTP body, gRPC message, Fluent Forward event), compressed or not, and
    /// what it may decompress to, in bytes.
    pub max_recv_msg_size: usize,
    /// Connections served at once by the whole process; each core serves its share.
    pub max_connections: usize,
    /// How long one request may take to arrive whole once it started.
    pub read_timeout: Duration,
    /// How long a connection may stay without traffic before it is closed.
    pub idle_timeout: Duration,
}

impl ListenerLimits {
    /// The keys these limits add to a table.
    pub const KEYS: &'static [&'static str] = &[
        "max_recv_msg_size",
        "max_connections",
        "read_timeout",
        "idle_timeout",
    ];
    /// Smallest accepted `max_recv_msg_size`.
    pub const MIN_RECV_MSG_SIZE: u64 = 1 << 10;
    /// Largest accepted `max_recv_msg_size`.
    pub const MAX_RECV_MSG_SIZE: u64 = 1 << 30;
    /// Largest accepted `max_connections`.
    pub const MAX_CONNECTIONS: u64 = 1 << 20;

    /// The defaults with `max_recv_msg_size` bytes per request.
    pub const fn with_size(max_recv_msg_size: usize) -> Self {
        ListenerLimits {
            max_recv_msg_size,
            max_connections: 1024,
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }

    fn decode(d: &mut Decoder<'_>, s: &Section<'_, '_>, default: ListenerLimits) -> Self {
        let positive = |v: &DeValue<'_>| {
            let t = decode::duration(v)?;
            if t.is_zero() {
                return Err(ConfigErrorKind::TooSmall {
                    value: "0s".into(),
                    min: "1ms".into(),
                });
            }
            Ok(t)
        };
        ListenerLimits {
            max_recv_msg_size: d.field_or(s, "max_recv_msg_size", default.max_recv_msg_size, |v| {
                decode::size_between(v, Self::MIN_RECV_MSG_SIZE, Self::MAX_RECV_MSG_SIZE)
            }),
            max_connections: d.field_or(s, "max_connections", default.max_connections, |v| {
                let n = decode::count(v, u64::MAX)?;
                Ok(decode::in_range(n, 1, Self::MAX_CONNECTIONS)? as usize)
            }),
            read_timeout: d.field_or(s, "read_timeout", default.read_timeout, positive),
            idle_timeout: d.field_or(s, "idle_timeout", default.idle_timeout, positive),
        }
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// `[receivers.zipkin]`: `POST /api/v2/spans` (JSON or protobuf, gzip or deflate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipkinReceiverConfig {
    /// The HTTP listener. Default `127.0.0.1:9411`.
    pub endpoint: SocketAddr,
    /// Tags that look like integers, doubles or booleans become attributes of that type (the
    /// Collector's `parse_string_tags`). Default false.
    pub parse_string_tags: bool,
    /// Size, connection and time bounds (default 4 MiB per request).
    pub limits: ListenerLimits,
}

impl ZipkinReceiverConfig {
    /// The keys `[receivers.zipkin]` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "endpoint",
        "parse_string_tags",
        "max_recv_msg_size",
        "max_connections",
        "read_timeout",
        "idle_timeout",
    ];
}

impl Default for ZipkinReceiverConfig {
    fn default() -> Self {
        ZipkinReceiverConfig {
            endpoint: local(9411),
            parse_string_tags: false,
            limits: ListenerLimits::with_size(4 << 20),
        }
    }
}

/// `[receivers.jaeger]`: gRPC `jaeger.api_v2.CollectorService/PostSpans` and Thrift over HTTP
/// (`POST /api/traces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaegerReceiverConfig {
    /// The gRPC listener; `false` disables it. Default `127.0.0.1:14250`.
    pub grpc: Option<SocketAddr>,
    /// The Thrift-over-HTTP listener; `false` disables it. Default `127.0.0.1:14268`.
    pub thrift_http: Option<SocketAddr>,
    /// HTTP/2 streams per gRPC connection. Default 256.
    pub max_concurrent_streams: u32,
    /// Size, connection and time bounds (default 4 MiB per request).
    pub limits: ListenerLimits,
}

impl JaegerReceiverConfig {
    /// The keys `[receivers.jaeger]` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "grpc",
        "thrift_http",
        "max_concurrent_streams",
        "max_recv_msg_size",
        "max_connections",
        "read_timeout",
        "idle_timeout",
    ];
}

impl Default for JaegerReceiverConfig {
    fn default() -> Self {
        JaegerReceiverConfig {
            grpc: Some(local(14250)),
            thrift_http: Some(local(14268)),
            max_concurrent_streams: 256,
            limits: ListenerLimits::with_size(4 << 20),
        }
    }
}

/// `[receivers.fluentforward]`: the Fluent Forward protocol over TCP (Message, Forward,
/// PackedForward and CompressedPackedForward modes; `chunk` acknowledged once durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FluentForwardReceiverConfig {
    /// The TCP listener. Default `127.0.0.1:24224`.
    pub endpoint: SocketAddr,
    /// Size, connection and time bounds (default 8 MiB per event).
    pub limits: ListenerLimits,
}

impl FluentForwardReceiverConfig {
    /// The keys `[receivers.fluentforward]` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "endpoint",
        "max_recv_msg_size",
        "max_connections",
        "read_timeout",
        "idle_timeout",
    ];
}

impl Default for FluentForwardReceiverConfig {
    fn default() -> Self {
        FluentForwardReceiverConfig {
            endpoint: local(24224),
            limits: ListenerLimits::with_size(8 << 20),
        }
    }
}

/// An address that cannot be disabled.
fn address(v: &DeValue<'_>) -> Result<SocketAddr, ConfigErrorKind> {
    decode::listen_address(v)?.ok_or(ConfigErrorKind::WrongType {
        expected: "an address like \"127.0.0.1:9411\"",
        found: "false".into(),
    })
}

pub(crate) fn decode_zipkin(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> ZipkinReceiverConfig {
    let default = ZipkinReceiverConfig::default();
    ZipkinReceiverConfig {
        endpoint: d.field_or(s, "endpoint", default.endpoint, address),
        parse_string_tags: d.field_or(s, "parse_string_tags", false, decode::boolean),
        limits: ListenerLimits::decode(d, s, default.limits),
    }
}

pub(crate) fn decode_jaeger(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> JaegerReceiverConfig {
    let default = JaegerReceiverConfig::default();
    JaegerReceiverConfig {
        grpc: d.field_or(s, "grpc", default.grpc, decode::listen_address),
        thrift_http: d.field_or(
            s,
            "thrift_http",
            default.thrift_http,
            decode::listen_address,
        ),
        max_concurrent_streams: d.field_or(
            s,
            "max_concurrent_streams",
            default.max_concurrent_streams,
            |v| Ok(decode::in_range(decode::count(v, u64::MAX)?, 1, u64::from(u32::MAX))? as u32),
        ),
        limits: ListenerLimits::decode(d, s, default.limits),
    }
}

pub(crate) fn decode_fluentforward(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
) -> FluentForwardReceiverConfig {
    let default = FluentForwardReceiverConfig::default();
    FluentForwardReceiverConfig {
        endpoint: d.field_or(s, "endpoint", default.endpoint, address),
        limits: ListenerLimits::decode(d, s, default.limits),
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    use super::*;

    const PIPELINES: &str = "[exporters.blackhole]\n\
        [pipelines.traces]\nreceivers = [\"zipkin\", \"jaeger\"]\nexporters = [\"blackhole\"]\n\
        [pipelines.logs]\nreceivers = [\"fluentforward\"]\nexporters = [\"blackhole\"]\n";

    #[test]
    fn defaults_listen_on_localhost_at_the_conventional_ports() {
        let config = Config::from_str(
            &format!(
                "[receivers.zipkin]\n[receivers.jaeger]\n[receivers.fluentforward]\n{PIPELINES}"
            ),
            "t.toml",
        )
        .unwrap();
        let r = &config.receivers;
        assert_eq!(
            r.zipkin.as_ref().unwrap().endpoint.to_string(),
            "127.0.0.1:9411"
        );
        let jaeger = r.jaeger.as_ref().unwrap();
        assert_eq!(jaeger.grpc.unwrap().to_string(), "127.0.0.1:14250");
        assert_eq!(jaeger.thrift_http.unwrap().to_string(), "127.0.0.1:14268");
        let fluent = r.fluentforward.as_ref().unwrap();
        assert_eq!(fluent.endpoint.to_string(), "127.0.0.1:24224");
        assert_eq!(fluent.limits.max_recv_msg_size, 8 << 20);
        assert_eq!(jaeger.limits, ListenerLimits::with_size(4 << 20));
        assert_eq!(r.names(), ["zipkin", "jaeger", "fluentforward"]);
    }

    #[test]
    fn settings_are_read_and_checked() {
        let config = Config::from_str(
            &format!(
                "[receivers.zipkin]\nendpoint = \"0.0.0.0:19411\"\nparse_string_tags = true\n\
                 max_recv_msg_size = \"1MiB\"\nmax_connections = 10\nread_timeout = \"5s\"\n\
                 idle_timeout = \"1m\"\n[receivers.jaeger]\nthrift_http = false\n\
                 [receivers.fluentforward]\n{PIPELINES}"
            ),
            "t.toml",
        )
        .unwrap();
        let zipkin = config.receivers.zipkin.unwrap();
        assert!(zipkin.parse_string_tags);
        assert_eq!(zipkin.limits.max_recv_msg_size, 1 << 20);
        assert_eq!(zipkin.limits.max_connections, 10);
        assert_eq!(zipkin.limits.read_timeout, Duration::from_secs(5));
        assert_eq!(zipkin.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.receivers.jaeger.unwrap().thrift_http, None);

        let errors = Config::from_str(
            "[receivers.zipkin]\nendpoint = \"127.0.0.1:19411\"\nread_timeout = \"0s\"\n\
             [receivers.jaeger]\ngrpc = false\nthrift_http = false\n\
             [receivers.fluentforward]\nendpoint = \"127.0.0.1:19411\"\nbuffer = 1\n\
             [exporters.blackhole]\n\
             [pipelines.traces]\nreceivers = [\"fluentforward\"]\nexporters = [\"blackhole\"]\n\
             [pipelines.logs]\nreceivers = [\"zipkin\", \"jaeger\"]\nexporters = [\"blackhole\"]\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "t.toml:3: receivers.zipkin.read_timeout: ",
            "t.toml:9: receivers.fluentforward.buffer: unknown key",
            "t.toml:4: receivers.jaeger: every listener (grpc, thrift_http) is disabled (enable at least one)",
            "t.toml:8: receivers.fluentforward.endpoint: port 19411 is already used by receivers.zipkin.endpoint",
            "t.toml:12: pipelines.traces.receivers: receiver \"fluentforward\" receives logs only; remove it from the traces pipeline",
            "t.toml:15: pipelines.logs.receivers: receiver \"zipkin\" receives traces only; remove it from the logs pipeline",
            "t.toml:15: pipelines.logs.receivers: receiver \"jaeger\" receives traces only; remove it from the logs pipeline",
        ] {
            assert!(errors.contains(expected), "missing {expected:?} in\n{errors}");
        }
    }
}
