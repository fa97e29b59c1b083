//! What a connection may hold, and how many a core serves.
//!
//! - **Per-connection bounds.** hyper's HTTP/1.1 read buffer, the HTTP/2 frame size, flow-control
//!   windows, header list size and send buffer are fixed here, so [`worst_case_bytes`] knows what
//!   one connection can hold at most besides the request bodies it delivers (those are charged
//!   to the core's request bytes in flight as they arrive, see
//!   [`crate::receivers::InflightGuard`]); [`served_worst_cases`] adds a TLS session
//!   ([`TLS_SESSION_BYTES`]) when the listeners speak TLS.
//! - **Connection limit.** Each core serves up to its share of `receivers.otlp.max_connections`
//!   ([`ConnectionLimit`]). A connection over the share is **accepted and refused**: its first
//!   request is answered with a retryable error (HTTP 503 with `Retry-After`, gRPC
//!   `UNAVAILABLE`) and the connection is closed (HTTP/1.1 `Connection: close`, HTTP/2
//!   `GOAWAY`), all with minimal buffers and within [`REFUSAL_TIMEOUT`]. OTLP clients retry both
//!   with backoff; a connection left in the kernel's backlog instead would only time out. At
//!   most [`REFUSING_PER_CORE`] connections are being refused at once per core; beyond that a
//!   new connection is closed at once. Both outcomes are counted.

use std::cell::Cell;
use std::time::Duration;

use shardtel_config::OtlpReceiverConfig;

use super::timeouts::{self, GlommioTimer, Timeouts};
use crate::memory_limiter::ConnectionBounds;
use crate::telemetry::{Exposition, Families};

/// The protocol a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC over HTTP/2 (h2c, or h2 over TLS).
    Grpc,
    /// OTLP/HTTP over HTTP/1.1 (over TLS also HTTP/2, when the client chooses it by ALPN).
    Http,
}

/// hyper's HTTP/1.1 read buffer limit (`max_buf_size`). A request head must fit in it; a
/// body larger than what one read returns arrives in several frames and is joined into one
/// allocation of its declared size.
pub const HTTP1_MAX_BUF: usize = 64 << 10;
/// HTTP/2 `SETTINGS_MAX_FRAME_SIZE`: the codec buffers one frame at a time.
pub const H2_MAX_FRAME: u32 = 64 << 10;
/// HTTP/2 initial stream window: bytes a client may send on one stream before the body is read.
pub const H2_STREAM_WINDOW: u32 = 1 << 20;
/// HTTP/2 connection window: bytes received and not yet read, over all streams of a connection.
pub const H2_CONNECTION_WINDOW: u32 = 1 << 20;
/// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` (gRPC metadata of one request).
pub const H2_MAX_HEADER_LIST: u32 = 8 << 10;
/// HTTP/2 send buffer per stream (responses are a few hundred bytes).
pub const H2_MAX_SEND_BUF: usize = 16 << 10;
/// State of one HTTP/2 stream besides its headers (stream, request and response objects, the
/// handler task).
const H2_STREAM_STATE: usize = 2 << 10;
/// State of one connection besides its buffers (the connection task, socket, parser, HPACK
/// tables, write buffer).
const CONNECTION_STATE: usize = 32 << 10;

/// What one TLS session holds besides the connection's HTTP buffers: rustls's incoming buffer
/// (one 16 KiB record, or a handshake message of up to 64 KiB while handshaking), its received
/// plaintext (16 KiB) and queued outgoing records (its 64 KiB limit), the handshake writes
/// buffered until the first flush, and the session's state.
pub const TLS_SESSION_BYTES: usize = 160 << 10;

/// Connections a core refuses at once (each answered, then closed); more are closed at once.
pub const REFUSING_PER_CORE: usize = 16;
/// How long a refused connection may take to send its first request and read the refusal.
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 streams a refused connection may open (each is answered with the refusal).
pub const REFUSAL_STREAMS: u32 = 4;
/// Request body bytes a refused HTTP/1.1 connection reads (and drops) before answering, so
/// that the client sees the answer rather than a reset.
pub const REFUSAL_DISCARD: usize = 1 << 20;

/// The most one served connection of `protocol` holds at once, in bytes, besides the request
/// bodies it has delivered to the core (read buffers allocate up to twice their limit).
pub fn worst_case_bytes(protocol: Protocol, max_concurrent_streams: u32) -> usize {
    match protocol {
        Protocol::Http => 2 * HTTP1_MAX_BUF + CONNECTION_STATE,
        Protocol::Grpc => {
            2 * (H2_MAX_FRAME as usize + 9)
                + H2_CONNECTION_WINDOW as usize
                + max_concurrent_streams as usize * (H2_MAX_HEADER_LIST as usize + H2_STREAM_STATE)
                + CONNECTION_STATE
        }
    }
}

/// The HTTP/2 server settings of a served connection (the bounds above, and keep-alive pings
/// on glommio's timers as `timeouts` ask): the gRPC listener's, and the OTLP/HTTP listener's
/// when a TLS client chose `h2`.
pub fn http2_server(
    max_concurrent_streams: u32,
    timeouts: &Timeouts,
) -> hyper::server::conn::http2::Builder<shardtel_sinks::net::LocalExec> {
    let (ping_interval, ping_timeout) = timeouts::h2_keep_alive(timeouts);
    let mut builder = hyper::server::conn::http2::Builder::new(shardtel_sinks::net::LocalExec);
    builder
        .timer(GlommioTimer)
        .keep_alive_interval(ping_interval)
        .keep_alive_timeout(ping_timeout)
        .max_concurrent_streams(max_concurrent_streams)
        .max_frame_size(H2_MAX_FRAME)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .max_send_buf_size(H2_MAX_SEND_BUF);
    builder
}

/// The most one served connection of each protocol (`[gRPC, HTTP]`) of `otlp`'s listeners
/// holds: [`worst_case_bytes`], and with `[receivers.otlp.tls]` a TLS session more, an HTTP
/// connection then counted as the larger of HTTP/1.1 and HTTP/2 (its client picks by ALPN).
pub fn served_worst_cases(otlp: &OtlpReceiverConfig) -> [usize; 2] {
    let streams = otlp.max_concurrent_streams;
    let grpc = worst_case_bytes(Protocol::Grpc, streams);
    let http = worst_case_bytes(Protocol::Http, streams);
    if otlp.tls.is_none() {
        return [grpc, http];
    }
    [grpc + TLS_SESSION_BYTES, grpc.max(http) + TLS_SESSION_BYTES]
}

/// The most one connection being refused holds (minimal buffers, [`REFUSAL_STREAMS`]).
pub fn refusal_bytes() -> usize {
    // HTTP/1.1: hyper's minimum read buffer; HTTP/2: default frame size and windows.
    let http = 2 * 8192 + CONNECTION_STATE;
    let grpc = 2 * (16 << 10)
        + (64 << 10)
        + REFUSAL_STREAMS as usize * (H2_MAX_HEADER_LIST as usize + H2_STREAM_STATE)
        + CONNECTION_STATE;
    http.max(grpc)
}

/// The most any served connection of `otlp`'s listeners holds (see [`served_worst_cases`]).
pub fn per_connection_bytes(otlp: &OtlpReceiverConfig) -> usize {
    let [grpc, http] = served_worst_cases(otlp);
    let mut worst = 0;
    if otlp.grpc.is_some() {
        worst = grpc;
    }
    if otlp.http.is_some() {
        worst = worst.max(http);
    }
    worst
}

/// Connections one core serves: its share of `max_connections`, rounded up.
pub fn per_core(max_connections: usize, cores: usize) -> usize {
    max_connections.div_ceil(cores.max(1))
}

/// What the connections of `otlp`'s listeners on one core of `cores` may hold, for the memory
/// limiter.
pub fn bounds(otlp: &OtlpReceiverConfig, cores: usize) -> ConnectionBounds {
    let [grpc_bytes, http_bytes] = served_worst_cases(otlp);
    let tls = if otlp.tls.is_some() {
        TLS_SESSION_BYTES
    } else {
        0
    };
    ConnectionBounds {
        max_connections: otlp.max_connections,
        per_core: per_core(otlp.max_connections, cores),
        per_connection_bytes: per_connection_bytes(otlp),
        grpc_bytes,
        http_bytes,
        refusing_bytes: REFUSING_PER_CORE * (refusal_bytes() + tls),
    }
}

/// What the accept loop does with a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Serve it.
    Serve,
    /// Answer its first request with a retryable refusal, then close it.
    Refuse,
    /// Close it at once (too many refusals in progress).
    Close,
}

/// One core's connection count and limits. `!Send`: it lives in its core.
#[derive(Debug)]
pub struct ConnectionLimit {
    limit: usize,
    /// The most the served connections may hold together, each counted at its worst case
    /// (the memory limiter's share for connections; unbounded without one).
    bytes_limit: usize,
    /// [`worst_case_bytes`] of a gRPC and of an HTTP connection.
    worst: [usize; 2],
    open: [Cell<usize>; 2],
    refusing: Cell<usize>,
    refused: [Cell<u64>; 2],
    closed: [Cell<u64>; 2],
}

impl ConnectionLimit {
    /// A core that serves up to `limit` connections.
    pub fn new(limit: usize) -> Self {
        ConnectionLimit {
            limit,
            bytes_limit: usize::MAX,
            worst: [0; 2],
            open: Default::default(),
            refusing: Cell::new(0),
            refused: Default::default(),
            closed: Default::default(),
        }
    }

    /// Also limits the served connections to `bytes_limit` bytes together, each counted at its
    /// worst case (`[gRPC, HTTP]`, see [`served_worst_cases`]; so a core serves more HTTP/1.1
    /// connections than gRPC ones in the same memory).
    pub fn with_bytes_limit(mut self, bytes_limit: usize, worst: [usize; 2]) -> Self {
        self.bytes_limit = bytes_limit;
        self.worst = worst;
        self
    }

    /// Decides what to do with a new connection of `protocol` and counts it; pair
    /// [`Admission::Serve`] with [`ConnectionLimit::served`] and [`Admission::Refuse`] with
    /// [`ConnectionLimit::refused`] when the connection ends.
    pub fn admit(&self, protocol: Protocol) -> Admission {
        let i = protocol as usize;
        if self.open.iter().map(Cell::get).sum::<usize>() < self.limit
            && self.bytes() + self.worst[i] <= self.bytes_limit
        {
            self.open[i].set(self.open[i].get() + 1);
            return Admission::Serve;
        }
        if self.refusing.get() < REFUSING_PER_CORE {
            self.refusing.set(self.refusing.get() + 1);
            self.refused[i].set(self.refused[i].get() + 1);
            return Admission::Refuse;
        }
        self.closed[i].set(self.closed[i].get() + 1);
        Admission::Close
    }

    /// A served connection of `protocol` ended.
    pub fn served(&self, protocol: Protocol) {
        let c = &self.open[protocol as usize];
        debug_assert!(c.get() > 0);
        c.set(c.get().saturating_sub(1));
    }

    /// What the served connections may hold together, each at its worst case.
    fn bytes(&self) -> usize {
        self.open[0].get() * self.worst[0] + self.open[1].get() * self.worst[1]
    }

    /// A refused connection ended.
    pub fn refused(&self) {
        debug_assert!(self.refusing.get() > 0);
        self.refusing.set(self.refusing.get().saturating_sub(1));
    }

    /// A snapshot for telemetry.
    pub fn snapshot(&self) -> ConnectionSnapshot {
        ConnectionSnapshot {
            limit: self.limit,
            open: [self.open[0].get(), self.open[1].get()],
            refused: [self.refused[0].get(), self.refused[1].get()],
            closed: [self.closed[0].get(), self.closed[1].get()],
        }
    }
}

/// What a core publishes about its connections, per protocol (gRPC, HTTP).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionSnapshot {
    /// Connections the core serves at most.
    pub limit: usize,
    /// Connections served now.
    pub open: [usize; 2],
    /// Connections refused with an answer (HTTP 503, gRPC `UNAVAILABLE`).
    pub refused: [u64; 2],
    /// Connections closed at once (too many refusals in progress).
    pub closed: [u64; 2],
}

impl Families for ConnectionSnapshot {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        let transports = ["grpc", "http"];
        let open = out.gauge(
            "shardtel_receiver_connections",
            "OTLP connections served now.",
        );
        for (core, s) in cores {
            for (t, transport) in transports.iter().enumerate() {
                open.sample(&[("transport", transport), ("core", core)], s.open[t]);
            }
        }
        let limit = out.gauge(
            "shardtel_receiver_connections_limit",
            "OTLP connections a core serves at most (its share of max_connections).",
        );
        for (core, s) in cores {
            limit.sample(&[("core", core)], s.limit);
        }
        let refused = out.counter(
            "shardtel_receiver_refused_connections_total",
            "OTLP connections over the limit: answered with a retryable refusal (HTTP 503, gRPC UNAVAILABLE) and closed, or closed at once while too many refusals were in progress.",
        );
        for (core, s) in cores {
            for (t, transport) in transports.iter().enumerate() {
                for (answered, v) in [("true", s.refused[t]), ("false", s.closed[t])] {
                    refused.sample(
                        &[
                            ("transport", transport),
                            ("answered", &answered),
                            ("core", core),
                        ],
                        v,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_limit_connections_are_refused_then_closed() {
        let l = ConnectionLimit::new(2);
        assert_eq!(l.admit(Protocol::Grpc), Admission::Serve);
        assert_eq!(l.admit(Protocol::Http), Admission::Serve);
        for _ in 0..REFUSING_PER_CORE {
            assert_eq!(l.admit(Protocol::Http), Admission::Refuse);
        }
        assert_eq!(l.admit(Protocol::Grpc), Admission::Close);
        l.refused();
        assert_eq!(l.admit(Protocol::Grpc), Admission::Refuse);
        l.served(Protocol::Grpc);
        assert_eq!(l.admit(Protocol::Grpc), Admission::Serve);
        let s = l.snapshot();
        assert_eq!(s.open, [1, 1]);
        assert_eq!(s.refused, [1, REFUSING_PER_CORE as u64]);
        assert_eq!(s.closed, [1, 0]);
        let mut out = Exposition::default();
        ConnectionSnapshot::families(&[(0, &s)], &mut out);
        let text = out.render();
        assert!(text.contains(
            "shardtel_receiver_refused_connections_total{transport=\"http\",answered=\"true\",core=\"0\"} 16"
        ));
        assert!(text.contains("shardtel_receiver_connections{transport=\"grpc\",core=\"0\"} 1"));
    }

    #[test]
    fn a_byte_limit_counts_each_connection_at_its_worst_case() {
        let grpc = worst_case_bytes(Protocol::Grpc, 16);
        let http = worst_case_bytes(Protocol::Http, 16);
        let l = ConnectionLimit::new(100).with_bytes_limit(grpc + 2 * http, [grpc, http]);
        assert_eq!(l.admit(Protocol::Grpc), Admission::Serve);
        assert_eq!(l.admit(Protocol::Grpc), Admission::Refuse);
        assert_eq!(l.admit(Protocol::Http), Admission::Serve);
        assert_eq!(l.admit(Protocol::Http), Admission::Serve);
        assert_eq!(l.admit(Protocol::Http), Admission::Refuse);
        l.served(Protocol::Grpc);
        assert_eq!(l.admit(Protocol::Http), Admission::Serve);
    }

    fn grpc_default() -> usize {
        worst_case_bytes(
            Protocol::Grpc,
            OtlpReceiverConfig::default().max_concurrent_streams,
        )
    }

    #[test]
    fn worst_cases_follow_the_settings() {
        assert_eq!(worst_case_bytes(Protocol::Http, 256), (128 + 32) << 10);
        let grpc = worst_case_bytes(Protocol::Grpc, 16);
        assert_eq!(
            grpc,
            2 * ((64 << 10) + 9) + (1 << 20) + 16 * (10 << 10) + (32 << 10)
        );
        assert!(worst_case_bytes(Protocol::Grpc, 256) > grpc);
        let otlp = OtlpReceiverConfig {
            grpc: None,
            ..Default::default()
        };
        assert_eq!(per_connection_bytes(&otlp), (128 + 32) << 10);
        assert_eq!(
            served_worst_cases(&otlp),
            [grpc_default(), (128 + 32) << 10]
        );
        // Over TLS an HTTP connection may be HTTP/2, and each holds a TLS session.
        let tls = OtlpReceiverConfig {
            tls: Some(shardtel_config::ServerTlsConfig::new("c.pem", "k.pem")),
            ..otlp.clone()
        };
        let session = TLS_SESSION_BYTES;
        assert_eq!(
            served_worst_cases(&tls),
            [grpc_default() + session, grpc_default() + session]
        );
        // Only the HTTP listener, counted as HTTP/2.
        assert_eq!(per_connection_bytes(&tls), grpc_default() + session);
        assert_eq!(per_core(4096, 3), 1366);
        assert_eq!(per_core(1, 4), 1);
        assert!(refusal_bytes() < 256 << 10);
    }
}
