//! `[receivers.jaeger]`: Jaeger's collector endpoints on every core (the same ports,
//! SO_REUSEPORT), as the Collector's `jaegerreceiver` serves them:
//!
//! - `grpc` (:14250): `jaeger.api_v2.CollectorService/PostSpans` over HTTP/2 (h2c), with
//!   `grpc-encoding` gzip or zstd ([`grpc`]);
//! - `thrift_http` (:14268): `POST /api/traces` with a binary-Thrift `Batch`
//!   (`application/x-thrift` or `application/vnd.apache.thrift.binary`), answered
//!   `202 Accepted` ([`thrift_http`]).
//!
//! Each request is translated to OTLP once, on this core (`shardtel_protocol::translate::jaeger`),
//! and ingested like OTLP; it is answered once accepted (with durability: once on disk).
//!
//! `[receivers.jaeger.tls]` puts both listeners on TLS (gRPC: ALPN `h2`; Thrift over HTTP:
//! `http/1.1`); with `[receivers.jaeger.auth]`, a request without an accepted bearer token is
//! refused before its body is read: `UNAUTHENTICATED` on gRPC, 401 with `WWW-Authenticate`
//! over HTTP.

mod grpc;
mod thrift_http;

use std::rc::Rc;

use glommio::task::JoinHandle;
use shardtel_config::JaegerReceiverConfig;

use super::listener::{self, BindError, Connections, ListenerSnapshot};
use super::security::{CoreSecurity, ReceiverSecurity, SecurityError, SecuritySnapshot};
use super::{Intake, Transport};

/// One core's running Jaeger receiver: its listeners.
pub struct JaegerServer {
    connections: Vec<Rc<Connections>>,
    security: Rc<CoreSecurity>,
    acceptors: std::cell::RefCell<Vec<JoinHandle<()>>>,
}

/// The listeners' TLS (gRPC: ALPN `h2`; Thrift over HTTP: `http/1.1`) and tokens, from
/// `[receivers.jaeger.tls]` and `.auth`. Reads files: call it before the reactors start.
pub fn security(config: &JaegerReceiverConfig) -> Result<ReceiverSecurity, SecurityError> {
    let mut listeners: Vec<(Transport, &[&[u8]])> = Vec::new();
    if config.grpc.is_some() {
        listeners.push((Transport::JaegerGrpc, &[shardtel_tls::alpn::H2]));
    }
    if config.thrift_http.is_some() {
        listeners.push((Transport::JaegerThrift, &[shardtel_tls::alpn::HTTP1]));
    }
    ReceiverSecurity::new(
        "jaeger",
        config.tls.as_ref(),
        config.auth.as_ref(),
        &listeners,
    )
}

/// Binds the listeners of `config` on this core and serves them, over TLS and checking tokens
/// as `security` says; each serves its share of `max_connections` of `cores`.
pub fn start(
    intake: Rc<Intake>,
    config: &JaegerReceiverConfig,
    security: ReceiverSecurity,
    cores: usize,
) -> Result<JaegerServer, BindError> {
    let per_core = listener::per_core(config.limits.max_connections, cores);
    let config = Rc::new(config.clone());
    let security = Rc::new(CoreSecurity::new(security, intake.core()));
    let mut listeners = Vec::new();
    if let Some(addr) = config.grpc {
        let socket = listener::bind(Transport::JaegerGrpc, addr)?;
        let connections = Rc::new(Connections::new(Transport::JaegerGrpc, per_core));
        let (i, c, t) = (intake.clone(), config.clone(), security.clone());
        let acceptor = listener::accept(
            intake.clone(),
            socket,
            connections.clone(),
            security.clone(),
            move |s, _| grpc::serve_connection(i.clone(), c.clone(), t.clone(), s),
        );
        listeners.push((connections, acceptor));
    }
    if let Some(addr) = config.thrift_http {
        let socket = listener::bind(Transport::JaegerThrift, addr)?;
        let connections = Rc::new(Connections::new(Transport::JaegerThrift, per_core));
        let (i, c, t) = (intake.clone(), config.clone(), security.clone());
        let acceptor = listener::accept(
            intake.clone(),
            socket,
            connections.clone(),
            security.clone(),
            move |s, _| thrift_http::serve_connection(i.clone(), c.clone(), t.clone(), s),
        );
        listeners.push((connections, acceptor));
    }
    let (connections, acceptors) = listeners.into_iter().unzip();
    Ok(JaegerServer {
        connections,
        security,
        acceptors: std::cell::RefCell::new(acceptors),
    })
}

impl JaegerServer {
    /// The listeners' counters, for telemetry.
    pub fn snapshots(&self) -> impl Iterator<Item = ListenerSnapshot> + '_ {
        self.connections.iter().map(|c| c.snapshot())
    }

    /// The TLS handshake and token counters, for telemetry (`None` without either).
    pub fn security(&self) -> Option<SecuritySnapshot> {
        self.security.snapshot()
    }

    /// Waits for the accept loops to end (they do once the core drains).
    pub async fn stop_accepting(&self) {
        let acceptors = std::mem::take(&mut *self.acceptors.borrow_mut());
        for acceptor in acceptors {
            acceptor.await;
        }
    }
}
