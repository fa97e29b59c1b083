//! The OTLP receiver: the gRPC (:4317) and HTTP (:4318) servers every core runs on the same
//! ports, their accept loops, and what they share (body collection with a size limit and a
//! deadline, the response body type, connection bounds and timeouts, TLS and bearer tokens).
//! Everything a request needs of its core goes through the core's [`Intake`].

pub mod connections;
mod grpc;
mod http;

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use glommio::net::{TcpListener, TcpStream};
use glommio::task::JoinHandle;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use shardtel_config::OtlpReceiverConfig;

use self::connections::{Admission, ConnectionLimit};
pub use self::connections::{ConnectionSnapshot, Protocol};
use super::intake::{InflightGuard, Intake, Transport};
use super::listener::ResponseBody;
pub(crate) use super::listener::{admit, fault_requested, Fault};
use super::security::{
    negotiated_h2, Connection, CoreSecurity, ReceiverSecurity, SecurityError, SecuritySnapshot,
};
use super::timeouts::{self, drive, ConnectionClock, RequestClock, Timeouts, Wire};
use crate::pipeline::IngestError;

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("failed to bind the OTLP {protocol:?} receiver on {addr}: {source}")]
pub struct BindError {
    /// The listener's protocol.
    pub protocol: Protocol,
    /// The address.
    pub addr: SocketAddr,
    /// What glommio reported.
    #[source]
    pub source: glommio::GlommioError<()>,
}

/// The OTLP listeners' TLS (gRPC: ALPN `h2`; HTTP: `h2`, then `http/1.1`) and tokens, from
/// `[receivers.otlp.tls]` and `.auth`. Reads files: call it before the reactors start.
pub fn security(otlp: &OtlpReceiverConfig) -> Result<ReceiverSecurity, SecurityError> {
    let mut listeners: Vec<(Transport, &[&[u8]])> = Vec::new();
    if otlp.grpc.is_some() {
        listeners.push((Transport::Grpc, &[shardtel_tls::alpn::H2]));
    }
    if otlp.http.is_some() {
        listeners.push((
            Transport::Http,
            &[shardtel_tls::alpn::H2, shardtel_tls::alpn::HTTP1],
        ));
    }
    ReceiverSecurity::new("otlp", otlp.tls.as_ref(), otlp.auth.as_ref(), &listeners)
}

/// One core's OTLP receiver: its intake, the connections it serves, their timeouts and their
/// security.
struct OtlpReceiver {
    intake: Rc<Intake>,
    connections: ConnectionLimit,
    timeouts: Timeouts,
    security: Rc<CoreSecurity>,
}

/// One core's running OTLP receiver: its accept loops (ended when the core starts draining).
pub struct OtlpServer {
    receiver: Rc<OtlpReceiver>,
    acceptors: RefCell<Vec<JoinHandle<()>>>,
}

/// Binds the listeners of `otlp` on this core (SO_REUSEPORT: every core binds the same
/// addresses) and accepts connections on them, each served as a task of this core, over TLS
/// and checking bearer tokens as `security` says. This core serves its share of
/// `max_connections` of `cores`; with `connection_bytes` (the memory limiter's share), also
/// only as many as fit it at their worst case.
pub fn start(
    intake: Rc<Intake>,
    otlp: &OtlpReceiverConfig,
    security: ReceiverSecurity,
    cores: usize,
    connection_bytes: Option<usize>,
) -> Result<OtlpServer, BindError> {
    let mut listeners = Vec::new();
    for (protocol, addr) in [(Protocol::Grpc, otlp.grpc), (Protocol::Http, otlp.http)] {
        let Some(addr) = addr else { continue };
        let socket = TcpListener::bind(addr).map_err(|source| BindError {
            protocol,
            addr,
            source,
        })?;
        listeners.push((protocol, socket));
    }
    let limit = ConnectionLimit::new(connections::per_core(otlp.max_connections, cores));
    let connections = match connection_bytes {
        Some(bytes) => limit.with_bytes_limit(bytes, connections::served_worst_cases(otlp)),
        None => limit,
    };
    let security = Rc::new(CoreSecurity::new(security, intake.core()));
    let receiver = Rc::new(OtlpReceiver {
        intake,
        connections,
        timeouts: Timeouts::of(otlp),
        security,
    });
    let acceptors = listeners
        .into_iter()
        .map(|(protocol, socket)| {
            glommio::spawn_local(accept_loop(receiver.clone(), protocol, socket)).detach()
        })
        .collect();
    Ok(OtlpServer {
        receiver,
        acceptors: RefCell::new(acceptors),
    })
}

impl OtlpServer {
    /// The connection counters, for telemetry (`None` when this core serves none).
    pub fn connections(&self) -> Option<ConnectionSnapshot> {
        Some(self.receiver.connections.snapshot()).filter(|c| c.limit > 0)
    }

    /// The TLS handshake and token counters, for telemetry (`None` without either).
    pub fn security(&self) -> Option<SecuritySnapshot> {
        self.receiver.security.snapshot()
    }

    /// Waits for the accept loops to end (they do once the core starts draining; the
    /// connections they started are told to close).
    pub async fn stop_accepting(&self) {
        let acceptors = std::mem::take(&mut *self.acceptors.borrow_mut());
        for acceptor in acceptors {
            acceptor.await;
        }
    }
}

/// Accepts connections until the core drains; each connection is a task of
/// this core, which runs the TLS handshake first (see [`super::security`]). Connections over the
/// core's share of `max_connections` are refused (see [`connections`]).
async fn accept_loop(receiver: Rc<OtlpReceiver>, protocol: Protocol, socket: TcpListener) {
    let mut accept_errors = super::listener::AcceptErrors::default();
    loop {
        let accepted = futures_lite::future::or(async { Some(socket.accept().await) }, async {
            receiver.intake.wait_draining().await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                accept_errors.succeeded();
                let admission = receiver.connections.admit(protocol);
                match admission {
                    Admission::Serve => {
                        let receiver = receiver.clone();
                        if let Err(e) = timeouts::set_tcp_keepalive(&stream) {
                            log::debug!("core {}: TCP keep-alive: {e}", receiver.intake.core());
                        }
                        glommio::spawn_local(async move {
                            let _slot = Slot(&receiver, Some(protocol));
                            let Some(stream) =
                                receiver.security.secure(stream, protocol.transport()).await
                            else {
                                return;
                            };
                            // The clock of what the client speaks: an HTTP listener's client over
                            // TLS that chose `h2` has an HTTP/2 clock, as a gRPC client has.
                            let h2 = protocol == Protocol::Grpc || negotiated_h2(&stream);
                            let clock = ConnectionClock::new(receiver.timeouts, Wire::of(h2));
                            serve(&receiver, stream, protocol, clock).await;
                        })
                        .detach();
                    }
                    Admission::Refuse => {
                        let receiver = receiver.clone();
                        glommio::spawn_local(async move {
                            let _slot = Slot(&receiver, None);
                            refuse(&receiver, stream, protocol).await;
                        })
                        .detach();
                    }
                    Admission::Close => drop(stream),
                }
            }
            Some(Err(e)) => {
                let what = format!(
                    "OTLP {} receiver: accept failed",
                    protocol.transport().receiver()
                );
                accept_errors
                    .failed(receiver.intake.core(), &what, &e)
                    .await;
            }
        }
    }
}

async fn serve(
    receiver: &OtlpReceiver,
    stream: Connection,
    protocol: Protocol,
    clock: Rc<ConnectionClock>,
) {
    let (intake, security) = (receiver.intake.clone(), receiver.security.clone());
    match protocol {
        Protocol::Grpc => grpc::serve_connection(intake, stream, security, clock).await,
        Protocol::Http => http::serve_connection(intake, stream, security, clock).await,
    }
}

/// Answers a connection over the limit with a retryable refusal and closes it, its TLS
/// handshake included, within [`connections::REFUSAL_TIMEOUT`].
async fn refuse(receiver: &OtlpReceiver, stream: TcpStream, protocol: Protocol) {
    let intake = receiver.intake.clone();
    let answer = async {
        let Some(stream) = receiver.security.secure(stream, protocol.transport()).await else {
            return Ok(());
        };
        match protocol {
            Protocol::Grpc => grpc::refuse_connection(intake, stream).await,
            Protocol::Http => http::refuse_connection(intake, stream).await,
        }
        Ok(())
    };
    let _ = glommio::timer::timeout(connections::REFUSAL_TIMEOUT, answer).await;
}

/// A connection's place in its core's count, given back when the connection's task ends
/// (`Some`: served, `None`: refused).
struct Slot<'a>(&'a OtlpReceiver, Option<Protocol>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        match self.1 {
            Some(protocol) => self.0.connections.served(protocol),
            None => self.0.connections.refused(),
        }
    }
}

/// Runs a connection being refused until it ends; if the core starts draining first,
/// `graceful` asks it to finish and it is awaited (its caller bounds the whole).
async fn run_until_drained<C: Future>(
    intake: &Intake,
    mut conn: Pin<&mut C>,
    graceful: impl FnOnce(Pin<&mut C>),
) {
    let drained = futures_lite::future::or(
        async {
            let _ = conn.as_mut().await;
            false
        },
        async {
            intake.wait_draining().await;
            true
        },
    )
    .await;
    if drained {
        graceful(conn.as_mut());
        let _ = conn.await;
    }
}

/// Why a body could not be collected.
#[derive(Debug)]
enum CollectError {
    /// Larger than the limit.
    TooLarge,
    /// Not all there within `read_timeout`.
    TimedOut,
    /// The core's request bytes in flight are at their bound.
    Overloaded(IngestError),
    /// The connection failed mid-body.
    Transport(hyper::Error),
}

/// Collects a request body of at most `limit` bytes within the request's deadline
/// (`request`), charging what it holds to the request's `guard` as it grows (refusing with
/// [`CollectError::Overloaded`] when the core's bound is reached). A body that arrives in one
/// frame is returned as that frame (no copy). One that arrives in several is joined into one
/// allocation that grows with what arrived (doubling), up to the size the client declared
/// (`hint`, the content length, or when that is 0 what `size_of` reads in the first frame: a
/// gRPC length prefix), so a client that declares 4 MiB and sends little is charged little,
/// and a body that arrived whole leaves no unused room (the tail sampler holds it for
/// `decision_wait`).
async fn collect_body(
    body: &mut Incoming,
    limit: usize,
    hint: usize,
    size_of: fn(&[u8]) -> Option<usize>,
    guard: &InflightGuard<'_>,
    request: &RequestClock,
) -> Result<Bytes, CollectError> {
    let collected = futures_lite::future::or(
        async { Some(collect_frames(body, limit, hint, size_of, guard).await) },
        async {
            request.body_expired().await;
            None
        },
    )
    .await;
    // A body that failed keeps its deadline: what is left of it may still be discarded, by then.
    if matches!(collected, Some(Ok(_))) {
        request.body_done();
    }
    collected.unwrap_or(Err(CollectError::TimedOut))
}

/// The frames of a body, joined (see [`collect_body`]).
async fn collect_frames(
    body: &mut Incoming,
    limit: usize,
    hint: usize,
    size_of: fn(&[u8]) -> Option<usize>,
    guard: &InflightGuard<'_>,
) -> Result<Bytes, CollectError> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    // What the client declared, once known (0: nothing).
    let mut declared = hint;
    let mut total = 0usize;
    // Charged to `guard`: the first frame, then the joined allocation (and its growth).
    let charge = |more: usize| guard.try_add(more).map_err(CollectError::Overloaded);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(CollectError::Transport)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total > limit {
            return Err(CollectError::TooLarge);
        }
        match (&mut first, &mut joined) {
            (None, None) => {
                charge(data.len())?;
                first = Some(data);
            }
            (Some(head), None) => {
                if declared == 0 {
                    declared = size_of(head).unwrap_or(0);
                }
                let capacity = grown_capacity(0, total, declared, limit);
                charge(capacity)?;
                let mut b = BytesMut::with_capacity(capacity);
                b.extend_from_slice(&first.take().unwrap_or_default());
                b.extend_from_slice(&data);
                joined = Some(b);
            }
            (_, Some(b)) => {
                if b.capacity() - b.len() < data.len() {
                    let capacity = grown_capacity(b.capacity(), total, declared, limit);
                    charge(capacity - b.capacity())?;
                    let mut grown = BytesMut::with_capacity(capacity);
                    grown.extend_from_slice(b);
                    *b = grown;
                }
                b.extend_from_slice(&data);
            }
        }
    }
    Ok(match joined {
        Some(b) => b.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// The capacity a joined body grows to from `current` when `needed` bytes arrived: doubled (at
/// least 64 KiB), but not past what the client declared while it holds to that, and never past
/// `limit` (`needed <= limit`).
fn grown_capacity(current: usize, needed: usize, declared: usize, limit: usize) -> usize {
    let doubled = current.saturating_mul(2).max(64 << 10);
    let capped = if declared >= needed {
        doubled.min(declared)
    } else {
        doubled
    };
    capped.min(limit).max(needed)
}

/// Reads and drops up to `max` more bytes of a body (within the request's deadline, when it
/// has one: see [`RequestClock::discard_body`]), so that an error response to an oversized
/// HTTP/1.1 request is not lost to a TCP reset when the connection closes with unread data.
/// Returns true if the body ended.
async fn discard_body(body: &mut Incoming, max: usize, request: Option<&RequestClock>) -> bool {
    match request {
        Some(request) => request.discard_body(body, max).await,
        None => super::listener::discard_body(body, max).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joined_body_grows_with_what_arrived_up_to_what_was_declared() {
        const MIB: usize = 1 << 20;
        // 4 MiB declared, 128 KiB arrived: 128 KiB held, not 4 MiB.
        assert_eq!(grown_capacity(0, 128 << 10, 4 * MIB, 16 * MIB), 128 << 10);
        assert_eq!(
            grown_capacity(128 << 10, 200 << 10, 4 * MIB, 16 * MIB),
            256 << 10
        );
        // Doubling stops at the declared size, so a whole body leaves no unused room.
        assert_eq!(
            grown_capacity(3 * MIB, 3 * MIB + 1, 4 * MIB, 16 * MIB),
            4 * MIB
        );
        // A body longer than declared keeps doubling, never past the limit.
        assert_eq!(
            grown_capacity(4 * MIB, 4 * MIB + 1, 4 * MIB, 16 * MIB),
            8 * MIB
        );
        assert_eq!(grown_capacity(8 * MIB, 9 * MIB, 0, 10 * MIB), 10 * MIB);
        // Small bodies start at 64 KiB.
        assert_eq!(grown_capacity(0, 100, 0, 16 * MIB), 64 << 10);
        assert_eq!(grown_capacity(0, 100, 300, 16 * MIB), 300);
    }
}
