//! TLS and bearer tokens on the OTLP listeners (`[receivers.otlp.tls]`, `[receivers.otlp.auth]`).
//!
//! - [`OtlpSecurity`]: the listeners' TLS settings and accepted tokens, built once before the
//!   reactors start (it reads the certificate, key, CA and token files, and starts their reload
//!   threads); every core gets a clone.
//! - [`CoreSecurity`]: one core's use of them. [`CoreSecurity::secure`] runs the TLS handshake
//!   of an accepted connection in the connection's own task, under
//!   [`TLS_HANDSHAKE_TIMEOUT`], and counts it (completed, or failed by reason);
//!   [`CoreSecurity::authenticate`] checks a request's `authorization: Bearer ...` before its
//!   body is read or charged, and counts refusals (missing or wrong token). Failures are
//!   logged at most once per [`LOG_INTERVAL`] per reason and listener on each core, with how
//!   many were not logged; no token ever appears in a log line or a metric.
//! - [`SecuritySnapshot`]: the counters a core publishes.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use http::HeaderMap;
use shardtel_config::OtlpReceiverConfig;
use shardtel_sinks::net::Stream;
use shardtel_tls::{
    alpn, AuthOutcome, BearerTokens, HandshakeFailureReason, ServerStream, ServerTls,
};

use super::connections::Protocol;
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

/// Why the listeners' security could not be set up (a file the configuration names is missing,
/// unreadable or does not parse; `shardtel validate` reports the same problems at their line).
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// `[receivers.otlp.tls]`.
    #[error("receivers.otlp.tls: {0}")]
    Tls(#[source] shardtel_tls::Error),
    /// `[receivers.otlp.auth]`.
    #[error("receivers.otlp.auth: {0}")]
    Auth(#[source] shardtel_tls::Error),
}

/// The OTLP listeners' TLS settings and accepted tokens (none of either: plaintext, no
/// authentication). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct OtlpSecurity {
    /// The gRPC listener's TLS (ALPN `h2`).
    grpc: Option<ServerTls>,
    /// The HTTP listener's TLS (ALPN `h2`, then `http/1.1`).
    http: Option<ServerTls>,
    tokens: Option<BearerTokens>,
}

impl OtlpSecurity {
    /// Reads and checks the files of `otlp`'s `tls` and `auth` tables. Call it before the
    /// reactors start. Warns when tokens are required without TLS (they travel in cleartext).
    pub fn new(otlp: &OtlpReceiverConfig) -> Result<Self, SecurityError> {
        let server = |listens: bool, protocols: &[&[u8]]| match (&otlp.tls, listens) {
            (Some(tls), true) => ServerTls::new(tls, protocols)
                .map(Some)
                .map_err(SecurityError::Tls),
            _ => Ok(None),
        };
        let grpc = server(otlp.grpc.is_some(), &[alpn::H2])?;
        let http = server(otlp.http.is_some(), &[alpn::H2, alpn::HTTP1])?;
        let tokens = match &otlp.auth {
            Some(auth) => Some(BearerTokens::new(auth).map_err(SecurityError::Auth)?),
            None => None,
        };
        if tokens.is_some() && otlp.tls.is_none() {
            log::warn!(
                "receivers.otlp.auth is set without receivers.otlp.tls: bearer tokens travel in \
                 cleartext, and anyone on the path can read and reuse them"
            );
        }
        Ok(OtlpSecurity { grpc, http, tokens })
    }

    /// Whether the listeners speak TLS.
    pub fn tls(&self) -> bool {
        self.grpc.is_some() || self.http.is_some()
    }

    /// Whether requests must carry a bearer token.
    pub fn auth(&self) -> bool {
        self.tokens.is_some()
    }

    fn tls_of(&self, protocol: Protocol) -> Option<&ServerTls> {
        match protocol {
            Protocol::Grpc => self.grpc.as_ref(),
            Protocol::Http => self.http.as_ref(),
        }
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

/// One core's use of the [`OtlpSecurity`]: handshakes and token checks, and their counters.
/// `!Send`: it lives in its core.
pub struct CoreSecurity {
    settings: OtlpSecurity,
    core: usize,
    /// Handshakes completed, per listener (`[Protocol]`).
    handshakes: [Cell<u64>; 2],
    handshake_failures: [[Cell<u64>; REASONS]; 2],
    auth_failures: [[Cell<u64>; 2]; 2],
    handshake_logs: [[LogThrottle; REASONS]; 2],
    auth_logs: [[LogThrottle; 2]; 2],
}

impl CoreSecurity {
    /// Core `core`'s use of `settings`.
    pub fn new(settings: OtlpSecurity, core: usize) -> Self {
        CoreSecurity {
            settings,
            core,
            handshakes: Default::default(),
            handshake_failures: Default::default(),
            auth_failures: Default::default(),
            handshake_logs: Default::default(),
            auth_logs: Default::default(),
        }
    }

    /// The stream to serve `tcp` over: `tcp` itself when `protocol`'s listener is plaintext,
    /// else the TLS session once its handshake completed within [`TLS_HANDSHAKE_TIMEOUT`].
    /// `None` when the handshake failed (counted and logged; the connection is closed).
    /// Sets `TCP_NODELAY` (OTLP is request/response).
    pub async fn secure(&self, tcp: TcpStream, protocol: Protocol) -> Option<Connection> {
        let _ = tcp.set_nodelay(true);
        let Some(tls) = self.settings.tls_of(protocol) else {
            return Some(Stream::Plain(tcp));
        };
        let peer = tcp.peer_addr().ok();
        let p = protocol as usize;
        match tls.accept(tcp, TLS_HANDSHAKE_TIMEOUT).await {
            Ok(session) => {
                bump(&self.handshakes[p]);
                Some(Stream::Tls(Box::new(session)))
            }
            Err(failure) => {
                let reason = failure.reason;
                bump(&self.handshake_failures[p][reason.index()]);
                if let Some(left_out) = self.handshake_logs[p][reason.index()].admit() {
                    log::warn!(
                        "core {}: OTLP/{} TLS handshake from {} failed ({}): {failure}{}",
                        self.core,
                        listener_name(protocol),
                        peer_name(peer),
                        reason.label(),
                        left_out_note(left_out),
                    );
                }
                None
            }
        }
    }

    /// Checks a request's `authorization` header (gRPC metadata is the same header) when
    /// `[receivers.otlp.auth]` is set: `Ok` for an accepted token, else
    /// [`IngestError::Unauthenticated`] (counted, and logged at most once per
    /// [`LOG_INTERVAL`]). Compares in constant time; never logs the token.
    pub fn authenticate(&self, headers: &HeaderMap, protocol: Protocol) -> Result<(), IngestError> {
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
        let p = protocol as usize;
        bump(&self.auth_failures[p][problem.index()]);
        let error = IngestError::Unauthenticated(problem);
        if let Some(left_out) = self.auth_logs[p][problem.index()].admit() {
            log::warn!(
                "core {}: OTLP/{} request refused: {error}{}",
                self.core,
                listener_name(protocol),
                left_out_note(left_out),
            );
        }
        Err(error)
    }

    /// The counters, for telemetry (`None` without TLS and without authentication).
    pub fn snapshot(&self) -> Option<SecuritySnapshot> {
        if !self.settings.tls() && !self.settings.auth() {
            return None;
        }
        let read = |row: &[Cell<u64>]| row.iter().map(Cell::get).collect::<Vec<_>>();
        Some(SecuritySnapshot {
            tls: self.settings.tls(),
            auth: self.settings.auth(),
            handshakes: [self.handshakes[0].get(), self.handshakes[1].get()],
            handshake_failures: [
                read(&self.handshake_failures[0]),
                read(&self.handshake_failures[1]),
            ],
            auth_failures: [read(&self.auth_failures[0]), read(&self.auth_failures[1])],
        })
    }
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

fn listener_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Grpc => "gRPC",
        Protocol::Http => "HTTP",
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

/// What a core publishes about TLS handshakes and token checks, per listener (gRPC, HTTP).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecuritySnapshot {
    /// Whether the listeners speak TLS (the handshake series are published only then).
    pub tls: bool,
    /// Whether tokens are checked (the auth series are published only then).
    pub auth: bool,
    /// TLS handshakes completed.
    pub handshakes: [u64; 2],
    /// Failed handshakes, by [`HandshakeFailureReason::index`].
    pub handshake_failures: [Vec<u64>; 2],
    /// Requests refused, by [`TokenProblem::index`].
    pub auth_failures: [Vec<u64>; 2],
}

impl Families for SecuritySnapshot {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        let transports = ["grpc", "http"];
        if cores.iter().any(|(_, s)| s.tls) {
            let done = out.counter(
                "shardtel_receiver_tls_handshakes_total",
                "TLS handshakes completed on the OTLP listeners (new TLS connections).",
            );
            for (core, s) in cores.iter().filter(|(_, s)| s.tls) {
                for (t, transport) in transports.iter().enumerate() {
                    done.sample(&[("transport", transport), ("core", core)], s.handshakes[t]);
                }
            }
            let failed = out.counter(
                "shardtel_receiver_tls_handshake_failures_total",
                "TLS handshakes on the OTLP listeners that failed, by reason (timeout, plaintext, protocol, no_client_cert, bad_client_cert, expired_client_cert, client_alert, closed); the connection was closed.",
            );
            for (core, s) in cores.iter().filter(|(_, s)| s.tls) {
                for (t, transport) in transports.iter().enumerate() {
                    for reason in HandshakeFailureReason::ALL {
                        failed.sample(
                            &[
                                ("transport", transport),
                                ("reason", &reason.label()),
                                ("core", core),
                            ],
                            s.handshake_failures[t][reason.index()],
                        );
                    }
                }
            }
        }
        if cores.iter().any(|(_, s)| s.auth) {
            let refused = out.counter(
                "shardtel_receiver_auth_failures_total",
                "OTLP requests refused for their bearer token (missing or wrong): HTTP 401, gRPC UNAUTHENTICATED.",
            );
            for (core, s) in cores.iter().filter(|(_, s)| s.auth) {
                for (t, transport) in transports.iter().enumerate() {
                    for problem in TokenProblem::ALL {
                        refused.sample(
                            &[
                                ("transport", transport),
                                ("reason", &problem.label()),
                                ("core", core),
                            ],
                            s.auth_failures[t][problem.index()],
                        );
                    }
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
        let config = OtlpReceiverConfig {
            auth: Some(shardtel_config::AuthConfig {
                bearer_tokens: vec!["s3cret-token".into()],
                bearer_token_file: None,
            }),
            ..Default::default()
        };
        let security = CoreSecurity::new(OtlpSecurity::new(&config).unwrap(), 0);
        let mut headers = HeaderMap::new();
        let missing = security.authenticate(&headers, Protocol::Http);
        assert!(matches!(
            missing,
            Err(IngestError::Unauthenticated(TokenProblem::Missing))
        ));
        headers.insert("authorization", "Bearer nope".parse().unwrap());
        let wrong = security.authenticate(&headers, Protocol::Grpc).unwrap_err();
        assert!(!wrong.to_string().contains("nope"), "{wrong}");
        assert_eq!(wrong.http_status(), 401);
        headers.insert("authorization", "bearer s3cret-token".parse().unwrap());
        assert!(security.authenticate(&headers, Protocol::Grpc).is_ok());
        let snapshot = security.snapshot().unwrap();
        assert_eq!(snapshot.auth_failures, [vec![0, 1], vec![1, 0]]);
        let mut out = Exposition::default();
        SecuritySnapshot::families(&[(0, &snapshot)], &mut out);
        let text = out.render();
        assert!(text.contains(
            "shardtel_receiver_auth_failures_total{transport=\"grpc\",reason=\"wrong\",core=\"0\"} 1"
        ));
        assert!(!text.contains("tls_handshake"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
