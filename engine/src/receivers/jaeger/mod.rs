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

mod grpc;
mod thrift_http;

use std::rc::Rc;

use glommio::task::JoinHandle;
use shardtel_config::JaegerReceiverConfig;

use super::listener::{self, BindError, Connections, ListenerSnapshot};
use super::{Intake, Transport};

/// One core's running Jaeger receiver: its listeners.
pub struct JaegerServer {
    connections: Vec<Rc<Connections>>,
    acceptors: std::cell::RefCell<Vec<JoinHandle<()>>>,
}

/// Binds the listeners of `config` on this core and serves them; each serves its share of
/// `max_connections` of `cores`.
pub fn start(
    intake: Rc<Intake>,
    config: &JaegerReceiverConfig,
    cores: usize,
) -> Result<JaegerServer, BindError> {
    let per_core = listener::per_core(config.limits.max_connections, cores);
    let config = Rc::new(config.clone());
    let mut listeners = Vec::new();
    if let Some(addr) = config.grpc {
        let socket = listener::bind(Transport::JaegerGrpc, addr)?;
        let connections = Rc::new(Connections::new(Transport::JaegerGrpc, per_core));
        let (i, c) = (intake.clone(), config.clone());
        let acceptor = listener::accept(intake.clone(), socket, connections.clone(), move |s| {
            grpc::serve_connection(i.clone(), c.clone(), s)
        });
        listeners.push((connections, acceptor));
    }
    if let Some(addr) = config.thrift_http {
        let socket = listener::bind(Transport::JaegerThrift, addr)?;
        let connections = Rc::new(Connections::new(Transport::JaegerThrift, per_core));
        let (i, c) = (intake.clone(), config.clone());
        let acceptor = listener::accept(intake.clone(), socket, connections.clone(), move |s| {
            thrift_http::serve_connection(i.clone(), c.clone(), s)
        });
        listeners.push((connections, acceptor));
    }
    let (connections, acceptors) = listeners.into_iter().unzip();
    Ok(JaegerServer {
        connections,
        acceptors: std::cell::RefCell::new(acceptors),
    })
}

impl JaegerServer {
    /// The listeners' counters, for telemetry.
    pub fn snapshots(&self) -> impl Iterator<Item = ListenerSnapshot> + '_ {
        self.connections.iter().map(|c| c.snapshot())
    }

    /// Waits for the accept loops to end (they do once the core drains).
    pub async fn stop_accepting(&self) {
        let acceptors = std::mem::take(&mut *self.acceptors.borrow_mut());
        for acceptor in acceptors {
            acceptor.await;
        }
    }
}
