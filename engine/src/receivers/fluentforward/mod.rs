//! `[receivers.fluentforward]`: the Fluent Forward protocol (v1) over TCP on every core (the
//! same port, SO_REUSEPORT), as Fluentd, Fluent Bit and the fluent-logger libraries speak it:
//! Message, Forward, PackedForward and CompressedPackedForward (gzip) events, each a
//! MessagePack array, back to back on a connection.
//!
//! A connection is read into a buffer of at most `max_recv_msg_size` bytes of events not yet
//! handled (an event larger than that closes the connection). The buffer's capacity, and the
//! request translated from its events while it is built, are charged to the core's request bytes
//! in flight as they grow ([`Intake::hold`]): a connection whose growth would pass the core's
//! bound is closed (counted as refused, reason `inflight_bytes`; the client sends its events
//! again), so that many connections each holding most of a large event cannot hold more than
//! that bound between them. The events found whole in it are
//! translated to OTLP log records once, on this core (`shardtel_protocol::translate::fluent`),
//! and ingested as one request. Events that carry a `chunk` option are acknowledged
//! (`{"ack": chunk}`) only once that request was accepted — with durability, once it is in the
//! ingest log on disk — which is what the protocol's at-least-once mode asks. While shardtel
//! refuses (overloaded), the request is offered again with backoff and nothing more is read
//! from the connection (TCP pushes back on the client) for up to `read_timeout`; then the
//! connection is closed unacknowledged, and the client sends its chunks again. A malformed
//! event closes the connection (the stream's framing is lost) after the events before it were
//! handled. A connection idle for `idle_timeout`, or holding part of an event for
//! `read_timeout`, is closed.
//!
//! With `[receivers.fluentforward.tls]` the listener speaks TLS (and mTLS with
//! `client_ca_file`), as Fluent Bit's `tls on` and Fluentd's `transport tls` do; no ALPN.
//!
//! Where shardtel differs from the Collector: no UDP heartbeat listener (Fluent Bit's and
//! Fluentd's `heartbeat_type` default to none), and no shared-key handshake (the forward
//! protocol's `HELO`/`PING`/`PONG` with `shared_key` and user authentication; the Collector has
//! none either): a client configured with a shared key waits for a `HELO` that never comes.
//! Use TLS with client certificates to admit only known clients.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::task::JoinHandle;
use shardtel_config::FluentForwardReceiverConfig;
use shardtel_protocol::translate::fluent::{self, FluentError};
use shardtel_protocol::translate::msgpack::Framer;
use shardtel_protocol::translate::otlp::LogsWriter;
use shardtel_protocol::Signal;

use super::intake::InflightGuard;
use super::listener::{self, BindError, Connections, ListenerSnapshot};
use super::security::{
    Connection, CoreSecurity, ReceiverSecurity, SecurityError, SecuritySnapshot,
};
use super::{Intake, Transport};
use crate::pipeline::{FailReason, IngestError};

const TRANSPORT: Transport = Transport::FluentForward;
/// Bytes read from the socket at once.
const READ_CHUNK: usize = 64 << 10;

/// One core's running Fluent Forward receiver.
pub struct FluentForwardServer {
    connections: Rc<Connections>,
    security: Rc<CoreSecurity>,
    acceptor: std::cell::RefCell<Option<JoinHandle<()>>>,
}

struct Receiver {
    intake: Rc<Intake>,
    config: FluentForwardReceiverConfig,
}

/// The listener's TLS (no ALPN), from `[receivers.fluentforward.tls]`. Reads files: call it
/// before the reactors start.
pub fn security(config: &FluentForwardReceiverConfig) -> Result<ReceiverSecurity, SecurityError> {
    ReceiverSecurity::new(
        "fluentforward",
        config.tls.as_ref(),
        None,
        &[(TRANSPORT, &[])],
    )
}

/// Binds `config.endpoint` on this core and serves it, over TLS when `security` says so; this
/// core serves its share of `max_connections` of `cores`.
pub fn start(
    intake: Rc<Intake>,
    config: &FluentForwardReceiverConfig,
    security: ReceiverSecurity,
    cores: usize,
) -> Result<FluentForwardServer, BindError> {
    let socket = listener::bind(TRANSPORT, config.endpoint)?;
    let connections = Rc::new(Connections::new(
        TRANSPORT,
        listener::per_core(config.limits.max_connections, cores),
    ));
    let receiver = Rc::new(Receiver {
        intake: intake.clone(),
        config: config.clone(),
    });
    let security = Rc::new(CoreSecurity::new(security, intake.core()));
    let acceptor = listener::accept(intake, socket, connections.clone(), security.clone(), {
        move |stream, peer| {
            let receiver = receiver.clone();
            async move {
                if let Err(e) = serve_connection(&receiver, stream).await {
                    log::debug!(
                        "core {}: fluentforward connection from {peer:?} closed: {e}",
                        receiver.intake.core()
                    );
                }
            }
        }
    });
    Ok(FluentForwardServer {
        connections,
        security,
        acceptor: std::cell::RefCell::new(Some(acceptor)),
    })
}

impl FluentForwardServer {
    /// The listener's counters, for telemetry.
    pub fn snapshot(&self) -> ListenerSnapshot {
        self.connections.snapshot()
    }

    /// The TLS handshake counters, for telemetry (`None` without TLS).
    pub fn security(&self) -> Option<SecuritySnapshot> {
        self.security.snapshot()
    }

    /// Waits for the accept loop to end (it does once the core drains).
    pub async fn stop_accepting(&self) {
        let acceptor = self.acceptor.borrow_mut().take();
        if let Some(acceptor) = acceptor {
            acceptor.await;
        }
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("the client closed it")]
    Closed,
    #[error("draining")]
    Draining,
    #[error("idle for longer than idle_timeout")]
    Idle,
    #[error("an event did not arrive whole within read_timeout")]
    Slow,
    #[error("the acknowledgements were not read within read_timeout")]
    SlowReader,
    #[error("an event is larger than max_recv_msg_size ({0} bytes)")]
    TooLarge(usize),
    #[error("malformed event: {0}")]
    Malformed(FluentError),
    #[error("the events were not accepted: {0}")]
    Refused(IngestError),
    #[error("its buffers would pass the core's bound of request bytes in flight")]
    Inflight,
    #[error("socket: {0}")]
    Io(std::io::Error),
}

async fn serve_connection(r: &Receiver, mut stream: Connection) -> Result<(), ConnectionEnd> {
    let limits = r.config.limits;
    let mut buf: Vec<u8> = Vec::new();
    // Charged for `buf`'s capacity (and, while one is built, a request's).
    let held = r.intake.hold();
    let mut framer = Framer::default();
    // When the first byte of the event being read arrived.
    let mut event_started: Option<Instant> = None;
    // When the last bytes arrived: an event left partial in the buffer after the whole ones
    // were handled started no later (handling them does not extend its read_timeout).
    let mut last_read = Instant::now();
    loop {
        // Every event that is whole in the buffer, up to max_recv_msg_size together.
        let mut events = Vec::new();
        let mut end = 0;
        loop {
            match framer.advance(&buf[end..]) {
                Ok(Some(len)) => {
                    if end > 0 && end + len > limits.max_recv_msg_size {
                        break; // the next request takes it
                    }
                    events.push(end..end + len);
                    end += len;
                    if end == buf.len() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The events before it are still handled.
                    if events.is_empty() {
                        r.intake.counters().failed_request(
                            Signal::Logs,
                            TRANSPORT,
                            FailReason::Malformed,
                        );
                        return Err(ConnectionEnd::Malformed(e.into()));
                    }
                    break;
                }
            }
        }
        if !events.is_empty() {
            let outcome = handle_events(r, &mut stream, &buf, &events, &held).await;
            buf.drain(..end);
            shrink(&mut buf, &held);
            framer = Framer::default();
            event_started = (!buf.is_empty()).then_some(last_read);
            outcome?;
            continue;
        }
        if buf.len() > limits.max_recv_msg_size {
            r.intake
                .counters()
                .failed_request(Signal::Logs, TRANSPORT, FailReason::TooLarge);
            return Err(ConnectionEnd::TooLarge(limits.max_recv_msg_size));
        }
        // More bytes: within idle_timeout between events, within read_timeout of an event's
        // first byte inside one.
        let wait = match event_started {
            None => limits.idle_timeout,
            Some(t) => limits.read_timeout.saturating_sub(t.elapsed()),
        };
        let old = buf.len();
        if let Err(e) = grow(&mut buf, &held, limits.max_recv_msg_size) {
            r.intake.counters().refused(Signal::Logs, TRANSPORT, 0, &e);
            return Err(ConnectionEnd::Inflight);
        }
        buf.resize(old + READ_CHUNK, 0);
        let read = futures_lite::future::or(
            async { Some(stream.read(&mut buf[old..]).await) },
            futures_lite::future::or(
                async {
                    glommio::timer::sleep(wait).await;
                    None
                },
                async {
                    r.intake.wait_draining().await;
                    Some(Err(std::io::Error::other("draining")))
                },
            ),
        )
        .await;
        match read {
            Some(Ok(0)) => {
                buf.truncate(old);
                return Err(ConnectionEnd::Closed);
            }
            Some(Ok(n)) => {
                buf.truncate(old + n);
                last_read = Instant::now();
                if event_started.is_none() {
                    event_started = Some(last_read);
                }
            }
            Some(Err(e)) => {
                buf.truncate(old);
                if r.intake.draining() {
                    return Err(ConnectionEnd::Draining);
                }
                return Err(ConnectionEnd::Io(e));
            }
            None => {
                buf.truncate(old);
                return Err(if event_started.is_none() {
                    ConnectionEnd::Idle
                } else {
                    ConnectionEnd::Slow
                });
            }
        }
    }
}

/// Makes room in `buf` for [`READ_CHUNK`] more bytes, its capacity's growth charged to `held`
/// first: doubled (as a `Vec` grows), but never past `limit` plus one read (`buf` holds at most
/// `limit` bytes before a read). Refused when the charge would pass the core's bound.
fn grow(buf: &mut Vec<u8>, held: &InflightGuard<'_>, limit: usize) -> Result<(), IngestError> {
    let needed = buf.len() + READ_CHUNK;
    let before = buf.capacity();
    if before >= needed {
        return Ok(());
    }
    let target = before
        .saturating_mul(2)
        .min(limit.saturating_add(READ_CHUNK))
        .max(needed);
    held.try_add(target - before)?;
    buf.reserve_exact(target - buf.len());
    // `reserve_exact` gives what was asked for; charge any more the allocator gave anyway.
    if buf.capacity() > target {
        held.try_add(buf.capacity() - target)?;
    }
    Ok(())
}

/// Gives back most of a buffer that grew for a large event once its events were handled: at
/// most what it holds plus one read stays allocated (and charged to `held`).
fn shrink(buf: &mut Vec<u8>, held: &InflightGuard<'_>) {
    let keep = buf.len() + READ_CHUNK;
    let before = buf.capacity();
    if before > 2 * keep {
        buf.shrink_to(keep);
        held.release(before - buf.capacity());
    }
}

/// Translates `events` (ranges of `buf`) into one request, ingests it (offered again with
/// backoff while refused as retryable, for up to `read_timeout`), then acknowledges their
/// chunks. A malformed event ends the connection after the ones before it were handled.
async fn handle_events(
    r: &Receiver,
    stream: &mut Connection,
    buf: &[u8],
    events: &[std::ops::Range<usize>],
    held: &InflightGuard<'_>,
) -> Result<(), ConnectionEnd> {
    let limits = r.config.limits;
    // The request being built is charged to the connection's hold until it is ingested (then
    // its admitted request is charged for it).
    let capacity = events.iter().map(|e| e.len()).sum::<usize>() * 2;
    if let Err(e) = held.try_add(capacity) {
        r.intake.counters().refused(Signal::Logs, TRANSPORT, 0, &e);
        return Err(ConnectionEnd::Inflight);
    }
    let mut request = Vec::with_capacity(capacity);
    let mut chunks = Vec::new();
    let mut malformed = None;
    let mut logs = LogsWriter::new(&mut request);
    for event in events {
        match fluent::translate_event(&buf[event.clone()], limits.max_recv_msg_size, &mut logs) {
            Ok(options) => chunks.extend(options.chunk),
            Err(e) => {
                malformed = Some(e);
                break;
            }
        }
    }
    let records = logs.records();
    logs.finish();
    held.release(capacity);
    if malformed.is_some() {
        r.intake
            .counters()
            .failed_request(Signal::Logs, TRANSPORT, FailReason::Malformed);
    }
    if records > 0 {
        ingest_with_backoff(r, Bytes::from(request), limits.read_timeout).await?;
    }
    if !chunks.is_empty() {
        // Within read_timeout: a client that reads no acks cannot hold the connection once its
        // socket buffers are full.
        let write = async {
            for chunk in &chunks {
                stream.write_all(&ack(chunk)).await?;
            }
            // A TLS session may hold the acks' records until flushed.
            stream.flush().await
        };
        let written = futures_lite::future::or(async { Some(write.await) }, async {
            glommio::timer::sleep(limits.read_timeout).await;
            None
        })
        .await;
        match written {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(ConnectionEnd::Io(e)),
            None => return Err(ConnectionEnd::SlowReader),
        }
    }
    match malformed {
        Some(e) => Err(ConnectionEnd::Malformed(e)),
        None => Ok(()),
    }
}

async fn ingest_with_backoff(
    r: &Receiver,
    request: Bytes,
    patience: Duration,
) -> Result<(), ConnectionEnd> {
    let deadline = Instant::now() + patience;
    let mut wait = Duration::from_millis(10);
    loop {
        let guard = match r.intake.admit(Signal::Logs) {
            Ok(g) => g,
            Err(e) => {
                r.intake.counters().refused(Signal::Logs, TRANSPORT, 0, &e);
                if r.intake.draining() || Instant::now() + wait > deadline {
                    return Err(ConnectionEnd::Refused(e));
                }
                glommio::timer::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        match listener::ingest(&r.intake, Signal::Logs, TRANSPORT, &guard, request.clone()).await {
            Ok(_) => return Ok(()),
            Err(e)
                if e.is_retryable() && !r.intake.draining() && Instant::now() + wait < deadline =>
            {
                drop(guard);
                glommio::timer::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(ConnectionEnd::Refused(e)),
        }
    }
}

/// `{"ack": chunk}` in MessagePack.
fn ack(chunk: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + 10);
    out.extend_from_slice(&[0x81, 0xa3, b'a', b'c', b'k']);
    let len = chunk.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len < 256 {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else if len < 65536 {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(chunk.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardtel_protocol::translate::msgpack::{Msg, Reader};

    #[test]
    fn acks_are_msgpack_maps() {
        for len in [0, 5, 31, 32, 255, 256, 70_000] {
            let chunk = "c".repeat(len);
            let encoded = ack(&chunk);
            let Msg::Map(pairs) = Reader::new(&encoded).read().unwrap() else {
                panic!()
            };
            assert_eq!(pairs, [(Msg::Str(b"ack"), Msg::Str(chunk.as_bytes()))]);
        }
    }
}
