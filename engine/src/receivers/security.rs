//! TLS and bearer tokens on the server receivers' listeners: `[receivers.otlp.tls]` and
//! `.auth`, and the same tables of `zipkin`, `jaeger` (both listeners) and `fluentforward` (TLS
//! only). One implementation for every receiver; counters labelled by receiver and transport.
//!
//! - [`ReceiverSecurity`]: one receiver's TLS settings per listener and its accepted tokens,
//!   built once before the reactors start (it reads the certificate, key, CA and token files,
//!   and starts their reload threads); every core gets a clone. [`ServerSecurity`] holds every
//!   receiver's.
//! - [`CoreSecurity`]: one core's use of them. [`CoreSecurity::secure`] runs the TLS handshake
//!   of an accepted connection in the connection's own task, under
//!   [`TLS_HANDSHAKE_TIMEOUT`], and counts it (completed, or failed by reason);
//!   [`CoreSecurity::authenticate`] checks a request's `authorization: Bearer ...` before its
//!   body is read or charged, and counts refusals (missing or wrong token). Failures are
//!   logged at most once per [`LOG_INTERVAL`] per reason and listener on each core, with how
//!   many were not logged; no token ever appears in a log line or a metric.
//! - [`SecuritySnapshot`]: the counters a core publishes for one receiver.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use http::HeaderMap;
use shardtel_config::{AuthConfig, Receivers, ServerTlsConfig};
use shardtel_sinks::net::Stream;
use shardtel_tls::{
    alpn, AuthOutcome, BearerTokens, HandshakeFailureReason, ServerStream, ServerTls,
    TOKEN_FILE_POLL_INTERVAL,
};

use super::Transport;
use crate::pipeline::{IngestError, TokenProblem};
use crate::telemetry::{Exposition, Families};

/// How long a client has to complete the TLS handshake after its connection was accepted.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A core logs a failure (a handshake failure reason, or a refused token) of a listener at most
/// once per interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// An accepted connection, after its TLS handshake when the listener speaks TLS.
pub type Connection = Stream<ServerStream<TcpStream>>;

/// Whether `connection` negotiated HTTP/2 through ALPN (`h2`), which the OTLP/HTTP listener
/// serves besides HTTP/1.1 when it speaks TLS.
pub fn negotiated_h2(connection: &Connection) -> bool {
    match connection {
        Stream::Tls(session) => session.get_ref().1.alpn_protocol() == Some(alpn::H2),
        Stream::Plain(_) => false,
    }
}

/// Why a receiver's security could not be set up (a file the configuration names is missing,
/// unreadable or does not parse; `shardtel validate` reports the same problems at their line).
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// `[receivers.NAME.tls]`.
    #[error("receivers.{receiver}.tls: {source}")]
    Tls {
        /// The receiver (`otlp`, `zipkin`, ...).
        receiver: &'static str,
        /// What was wrong.
        #[source]
        source: shardtel_tls::Error,
    },
    /// `[receivers.NAME.auth]`.
    #[error("receivers.{receiver}.auth: {source}")]
    Auth {
        /// The receiver.
        receiver: &'static str,
        /// What was wrong.
        #[source]
        source: shardtel_tls::Error,
    },
}

/// One listener of a receiver: its transport and, when it speaks TLS, its settings.
#[derive(Clone, Debug)]
struct ListenerTls {
    transport: Transport,
    tls: Option<ServerTls>,
}

/// One receiver's TLS settings, per listener, and its accepted tokens (none of either:
/// plaintext, no authentication). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ReceiverSecurity {
    listeners: Vec<ListenerTls>,
    tokens: Option<BearerTokens>,
}

impl ReceiverSecurity {
    /// Reads and checks the files of `receiver`'s `tls` and `auth` tables for its `listeners`
    /// (each a transport and the ALPN protocols it offers, in order of preference; none for a
    /// protocol without ALPN ids). Call it before the reactors start. Warns when tokens are
    /// required without TLS (they travel in cleartext).
    pub fn new(
        receiver: &'static str,
        tls: Option<&ServerTlsConfig>,
        auth: Option<&AuthConfig>,
        listeners: &[(Transport, &[&[u8]])],
    ) -> Result<Self, SecurityError> {
        let table = format!("receivers.{receiver}.tls");
        let listeners = listeners
            .iter()
            .map(|(transport, protocols)| {
                let tls = tls
                    .map(|tls| ServerTls::for_table(&table, tls, protocols))
                    .transpose()
                    .map_err(|source| SecurityError::Tls { receiver, source })?;
                Ok(ListenerTls {
                    transport: *transport,
                    tls,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tokens = match auth {
            Some(auth) => Some(
                BearerTokens::for_table(
                    &format!("receivers.{receiver}.auth"),
                    auth,
                    TOKEN_FILE_POLL_INTERVAL,
                )
                .map_err(|source| SecurityError::Auth { receiver, source })?,
            ),
            None => None,
        };
        if tokens.is_some() && tls.is_none() {
            log::warn!(
                "receivers.{receiver}.auth is set without receivers.{receiver}.tls: bearer \
                 tokens travel in cleartext, and anyone on the path can read and reuse them"
            );
        }
        Ok(ReceiverSecurity { listeners, tokens })
    }

    /// Whether the listeners speak TLS.
    pub fn tls(&self) -> bool {
        self.listeners.iter().any(|l| l.tls.is_some())
    }

    /// Whether requests must carry a bearer token.
    pub fn auth(&self) -> bool {
        self.tokens.is_some()
    }

    fn slot(&self, transport: Transport) -> Option<usize> {
        self.listeners.iter().position(|l| l.transport == transport)
    }
}

/// Every server receiver's [`ReceiverSecurity`], built once before the reactors start.
#[derive(Clone, Debug, Default)]
pub struct ServerSecurity {
    /// `[receivers.otlp]`.
    pub otlp: ReceiverSecurity,
    /// `[receivers.zipkin]`.
    pub zipkin: ReceiverSecurity,
    /// `[receivers.jaeger]`.
    pub jaeger: ReceiverSecurity,
    /// `[receivers.fluentforward]`.
    pub fluentforward: ReceiverSecurity,
}

impl ServerSecurity {
    /// Reads the files of every receiver's `tls` and `auth` tables (see
    /// [`ReceiverSecurity::new`]).
    pub fn new(receivers: &Receivers) -> Result<Self, SecurityError> {
        let r = receivers;
        Ok(ServerSecurity {
            otlp: r
                .otlp
                .as_ref()
                .map(super::otlp::security)
                .transpose()?
                .unwrap_or_default(),
            zipkin: r
                .zipkin
                .as_ref()
                .map(super::zipkin::security)
                .transpose()?
                .unwrap_or_default(),
            jaeger: r
                .jaeger
                .as_ref()
                .map(super::jaeger::security)
                .transpose()?
                .unwrap_or_default(),
            fluentforward: r
                .fluentforward
                .as_ref()
                .map(super::fluentforward::security)
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// Logs one kind of failure at most once per [`LOG_INTERVAL`], counting what it left out.
#[derive(Default)]
struct LogThrottle {
    next: Cell<Option<Instant>>,
    suppressed: Cell<u64>,
}

impl LogThrottle {
    /// `Some(left out since the last line)` when a line may be logged now.
    fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        if self.next.get().is_some_and(|next| now < next) {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.next.set(Some(now + LOG_INTERVAL));
        Some(self.suppressed.replace(0))
    }
}

const REASONS: usize = HandshakeFailureReason::ALL.len();

/// One listener's counters and log throttles on one core.
#[derive(Default)]
struct ListenerCounters {
    handshakes: Cell<u64>,
    handshake_failures: [Cell<u64>; REASONS],
    auth_failures: [Cell<u64>; 2],
    handshake_logs: [LogThrottle; REASONS],
    auth_logs: [LogThrottle; 2],
}

/// One core's use of a [`ReceiverSecurity`]: handshakes and token checks, and their counters.
/// `!Send`: it lives in its core.
pub struct CoreSecurity {
    settings: ReceiverSecurity,
    core: usize,
    /// Per listener, in the order of `settings.listeners`.
    counters: Vec<ListenerCounters>,
}

impl CoreSecurity {
    /// Core `core`'s use of `settings`.
    pub fn new(settings: ReceiverSecurity, core: usize) -> Self {
        let counters = settings
            .listeners
            .iter()
            .map(|_| ListenerCounters::default())
            .collect();
        CoreSecurity {
            settings,
            core,
            counters,
        }
    }

    /// The stream to serve `tcp` over: `tcp` itself when `transport`'s listener is plaintext,
    /// else the TLS session once its handshake completed within [`TLS_HANDSHAKE_TIMEOUT`].
    /// `None` when the handshake failed (counted and logged; the connection is closed).
    /// Sets `TCP_NODELAY` (these protocols are request/response).
    pub async fn secure(&self, tcp: TcpStream, transport: Transport) -> Option<Connection> {
        let _ = tcp.set_nodelay(true);
        let slot = self.settings.slot(transport);
        let Some((tls, counters)) = slot.and_then(|i| {
            let tls = self.settings.listeners[i].tls.as_ref()?;
            Some((tls, &self.counters[i]))
        }) else {
            return Some(Stream::Plain(tcp));
        };
        let peer = tcp.peer_addr().ok();
        match tls.accept(tcp, TLS_HANDSHAKE_TIMEOUT).await {
            Ok(session) => {
                bump(&counters.handshakes);
                Some(Stream::Tls(Box::new(session)))
            }
            Err(failure) => {
                let reason = failure.reason;
                bump(&counters.handshake_failures[reason.index()]);
                if let Some(left_out) = counters.handshake_logs[reason.index()].admit() {
                    log::warn!(
                        "core {}: {} TLS handshake from {} failed ({}): {failure}{}",
                        self.core,
                        listener_name(transport),
                        peer_name(peer),
                        reason.label(),
                        left_out_note(left_out),
                    );
                }
                None
            }
        }
    }

    /// Checks a request's `authorization` header (gRPC metadata is the same header) when the
    /// receiver has an `auth` table: `Ok` for an accepted token, else
    /// [`IngestError::Unauthenticated`] (counted, and logged at most once per
    /// [`LOG_INTERVAL`]). Compares in constant time; never logs the token.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        transport: Transport,
    ) -> Result<(), IngestError> {
        let Some(tokens) = &self.settings.tokens else {
            return Ok(());
        };
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let problem = match tokens.check(presented) {
            AuthOutcome::Allowed => return Ok(()),
            AuthOutcome::Missing => TokenProblem::Missing,
            AuthOutcome::Wrong => TokenProblem::Wrong,
        };
        let error = IngestError::Unauthenticated(problem);
        if let Some(counters) = self.settings.slot(transport).map(|i| &self.counters[i]) {
            bump(&counters.auth_failures[problem.index()]);
            if let Some(left_out) = counters.auth_logs[problem.index()].admit() {
                log::warn!(
                    "core {}: {} request refused: {error}{}",
                    self.core,
                    listener_name(transport),
                    left_out_note(left_out),
                );
            }
        }
        Err(error)
    }

    /// The counters, for telemetry (`None` without TLS and without authentication).
    pub fn snapshot(&self) -> Option<SecuritySnapshot> {
        if !self.settings.tls() && !self.settings.auth() {
            return None;
        }
        let read = |row: &[Cell<u64>]| row.iter().map(Cell::get).collect::<Vec<_>>();
        let listeners = self
            .settings
            .listeners
            .iter()
            .zip(&self.counters)
            .map(|(l, c)| ListenerSecuritySnapshot {
                transport: l.transport,
                handshakes: c.handshakes.get(),
                handshake_failures: read(&c.handshake_failures),
                auth_failures: read(&c.auth_failures),
            })
            .collect();
        Some(SecuritySnapshot {
            tls: self.settings.tls(),
            auth: self.settings.auth(),
            listeners,
        })
    }
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// `OTLP/gRPC`, `zipkin/http`, `jaeger/thrift_http`, ...
fn listener_name(transport: Transport) -> String {
    match transport {
        Transport::Grpc => "OTLP/gRPC".into(),
        Transport::Http => "OTLP/HTTP".into(),
        t => format!("{}/{}", t.receiver(), t.name()),
    }
}

fn peer_name(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "an unknown peer".to_string(), |p| p.to_string())
}

fn left_out_note(left_out: u64) -> String {
    if left_out == 0 {
        String::new()
    } else {
        format!(" ({left_out} more like it since the last such line, not logged)")
    }
}

/// One listener's counters in a [`SecuritySnapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSecuritySnapshot {
    /// The listener.
    pub transport: Transport,
    /// TLS handshakes completed.
    pub handshakes: u64,
    /// Failed handshakes, by [`HandshakeFailureReason::index`].
    pub handshake_failures: Vec<u64>,
    /// Requests refused, by [`TokenProblem::index`].
    pub auth_failures: Vec<u64>,
}

/// What a core publishes about one receiver's TLS handshakes and token checks, per listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecuritySnapshot {
    /// Whether the listeners speak TLS (the handshake series are published only then).
    pub tls: bool,
    /// Whether tokens are checked (the auth series are published only then).
    pub auth: bool,
    /// Per listener.
    pub listeners: Vec<ListenerSecuritySnapshot>,
}

impl Families for [SecuritySnapshot] {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        let rows = |pick: fn(&SecuritySnapshot) -> bool| {
            cores.iter().flat_map(move |(core, receivers)| {
                receivers
                    .iter()
                    .filter(move |s| pick(s))
                    .flat_map(move |s| s.listeners.iter().map(move |l| (core, l)))
            })
        };
        let labels = |core: &usize, l: &ListenerSecuritySnapshot, reason: Option<&str>| {
            let (receiver, transport) = (l.transport.receiver(), l.transport.name());
            match reason {
                Some(reason) => crate::telemetry::label_values(&[
                    ("receiver", &receiver),
                    ("transport", &transport),
                    ("reason", &reason),
                    ("core", core),
                ]),
                None => crate::telemetry::label_values(&[
                    ("receiver", &receiver),
                    ("transport", &transport),
                    ("core", core),
                ]),
            }
        };
        if rows(|s| s.tls).next().is_some() {
            let done = out.counter(
                "shardtel_receiver_tls_handshakes_total",
                "TLS handshakes completed on the receivers' listeners (new TLS connections).",
            );
            for (core, l) in rows(|s| s.tls) {
                done.sample_owned("", labels(core, l, None), l.handshakes);
            }
            let failed = out.counter(
                "shardtel_receiver_tls_handshake_failures_total",
                "TLS handshakes on the receivers' listeners that failed, by reason (timeout, plaintext, protocol, no_client_cert, bad_client_cert, expired_client_cert, client_alert, closed); the connection was closed.",
            );
            for (core, l) in rows(|s| s.tls) {
                for reason in HandshakeFailureReason::ALL {
                    failed.sample_owned(
                        "",
                        labels(core, l, Some(reason.label())),
                        l.handshake_failures[reason.index()],
                    );
                }
            }
        }
        if rows(|s| s.auth).next().is_some() {
            let refused = out.counter(
                "shardtel_receiver_auth_failures_total",
                "Requests refused for their bearer token (missing or wrong): HTTP 401, gRPC UNAUTHENTICATED.",
            );
            for (core, l) in rows(|s| s.auth) {
                for problem in TokenProblem::ALL {
                    refused.sample_owned(
                        "",
                        labels(core, l, Some(problem.label())),
                        l.auth_failures[problem.index()],
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
    fn a_throttled_log_counts_what_it_left_out() {
        let throttle = LogThrottle::default();
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!(throttle.admit(), None);
        assert_eq!(throttle.admit(), None);
        // As if the interval had passed.
        throttle.next.set(Some(Instant::now()));
        assert_eq!(throttle.admit(), Some(2));
        assert_eq!(throttle.admit(), None);
    }

    #[test]
    fn tokens_are_checked_and_refusals_counted_without_the_token() {
        let auth = AuthConfig {
            bearer_tokens: vec!["s3cret-token".into()],
            bearer_token_file: None,
        };
        let listeners: &[(Transport, &[&[u8]])] =
            &[(Transport::Grpc, &[alpn::H2]), (Transport::Http, &[])];
        let otlp = ReceiverSecurity::new("otlp", None, Some(&auth), listeners).unwrap();
        let security = CoreSecurity::new(otlp, 0);
        let mut headers = HeaderMap::new();
        let missing = security.authenticate(&headers, Transport::Http);
        assert!(matches!(
            missing,
            Err(IngestError::Unauthenticated(TokenProblem::Missing))
        ));
        headers.insert("authorization", "Bearer nope".parse().unwrap());
        let wrong = security
            .authenticate(&headers, Transport::Grpc)
            .unwrap_err();
        assert!(!wrong.to_string().contains("nope"), "{wrong}");
        assert_eq!(wrong.http_status(), 401);
        headers.insert("authorization", "bearer s3cret-token".parse().unwrap());
        assert!(security.authenticate(&headers, Transport::Grpc).is_ok());
        let snapshot = security.snapshot().unwrap();
        let failures: Vec<_> = snapshot
            .listeners
            .iter()
            .map(|l| l.auth_failures.clone())
            .collect();
        assert_eq!(failures, [vec![0, 1], vec![1, 0]]);

        // Another receiver's refusals are counted under its own labels.
        let jaeger = ReceiverSecurity::new(
            "jaeger",
            None,
            Some(&auth),
            &[(Transport::JaegerGrpc, &[]), (Transport::JaegerThrift, &[])],
        )
        .unwrap();
        let jaeger = CoreSecurity::new(jaeger, 1);
        assert!(jaeger
            .authenticate(&HeaderMap::new(), Transport::JaegerThrift)
            .is_err());
        let snapshots = [snapshot];
        let others = [jaeger.snapshot().unwrap()];
        let mut out = Exposition::default();
        <[SecuritySnapshot]>::families(&[(0, &snapshots[..]), (1, &others[..])], &mut out);
        let text = out.render();
        for line in [
            "shardtel_receiver_auth_failures_total{receiver=\"otlp\",transport=\"grpc\",reason=\"wrong\",core=\"0\"} 1",
            "shardtel_receiver_auth_failures_total{receiver=\"jaeger\",transport=\"thrift_http\",reason=\"missing\",core=\"1\"} 1",
            "shardtel_receiver_auth_failures_total{receiver=\"jaeger\",transport=\"grpc\",reason=\"missing\",core=\"1\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("tls_handshake"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
