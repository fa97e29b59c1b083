//! What the receivers of other formats (`zipkin`, `jaeger`, `fluentforward`) share: binding a
//! listener on every core, accepting up to the core's share of `max_connections` (more are
//! closed at once and counted), request bodies read within a size limit and their request's
//! deadline and charged to the intake as they arrive, and the ingest of a translated request
//! with its counters. The HTTP listeners' connections run on the OTLP receiver's clocks
//! ([`super::timeouts`]: a deadline for each request head and body, an idle timeout that reads
//! do not reset); Fluent Forward bounds its reads itself.
//!
//! Connections are served by hyper (HTTP/1.1, HTTP/2) or read directly (Fluent Forward) over
//! the accepted stream, after its TLS handshake when the receiver has a `tls` table; requests
//! are checked for bearer tokens with an `auth` table ([`authenticate`]). Both are the OTLP
//! receiver's implementation ([`super::security`]), counted per receiver and listener.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use glommio::net::TcpListener;
use glommio::task::JoinHandle;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use shardtel_protocol::Signal;

use super::intake::{InflightGuard, Intake, Transport};
use super::security::{Connection, CoreSecurity};
use super::timeouts::RequestClock;
use crate::pipeline::{FailReason, IngestError};
use crate::telemetry::{Exposition, Families};

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("failed to bind the {receiver} receiver ({transport}) on {addr}: {source}")]
pub struct BindError {
    /// The receiver.
    pub receiver: &'static str,
    /// The listener's transport.
    pub transport: &'static str,
    /// The address.
    pub addr: SocketAddr,
    /// What glommio reported.
    #[source]
    pub source: glommio::GlommioError<()>,
}

/// hyper's HTTP/1.1 read buffer limit for these listeners (a request head must fit).
pub const HTTP1_MAX_BUF: usize = 64 << 10;

/// One listener of one core: its connection count and limit.
#[derive(Debug)]
pub struct Connections {
    transport: Transport,
    limit: usize,
    open: Cell<usize>,
    refused: Cell<u64>,
}

impl Connections {
    /// A listener of `transport` serving up to `limit` connections on this core.
    pub fn new(transport: Transport, limit: usize) -> Self {
        Connections {
            transport,
            limit,
            open: Cell::new(0),
            refused: Cell::new(0),
        }
    }

    /// The counters, for telemetry.
    pub fn snapshot(&self) -> ListenerSnapshot {
        ListenerSnapshot {
            transport: self.transport,
            limit: self.limit,
            open: self.open.get(),
            refused: self.refused.get(),
        }
    }
}

/// A core's share of `max_connections`, rounded up.
pub fn per_core(max_connections: usize, cores: usize) -> usize {
    max_connections.div_ceil(cores.max(1))
}

/// Binds `addr` on this core (SO_REUSEPORT: every core binds the same address).
pub fn bind(transport: Transport, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).map_err(|source| BindError {
        receiver: transport.receiver(),
        transport: transport.name(),
        addr,
        source,
    })
}

/// Accepts connections on `socket` until the core drains, serving each with `serve` as a task of
/// this core, once `security` secured it (its TLS handshake, when the listener speaks TLS;
/// a failed handshake closes the connection, counted); connections over the limit are closed
/// at once (and counted). `serve` is handed the connection and its peer's address.
pub fn accept<F, Fut>(
    intake: Rc<Intake>,
    socket: TcpListener,
    connections: Rc<Connections>,
    security: Rc<CoreSecurity>,
    serve: F,
) -> JoinHandle<()>
where
    F: Fn(Connection, Option<SocketAddr>) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let serve = Rc::new(serve);
    glommio::spawn_local(async move {
        let mut accept_errors = AcceptErrors::default();
        loop {
            let accepted = futures_lite::future::or(async { Some(socket.accept().await) }, async {
                intake.wait_draining().await;
                None
            })
            .await;
            match accepted {
                None => break,
                Some(Ok(stream)) => {
                    accept_errors.succeeded();
                    if connections.open.get() >= connections.limit {
                        connections.refused.set(connections.refused.get() + 1);
                        drop(stream);
                        continue;
                    }
                    connections.open.set(connections.open.get() + 1);
                    let connections = connections.clone();
                    let (security, serve) = (security.clone(), serve.clone());
                    let peer = stream.peer_addr().ok();
                    let transport = connections.transport;
                    let handshake = async move { security.secure(stream, transport).await };
                    let served = async move {
                        if let Some(connection) = handshake.await {
                            serve(connection, peer).await;
                        }
                    };
                    glommio::spawn_local(async move {
                        served.await;
                        connections.open.set(connections.open.get() - 1);
                    })
                    .detach();
                }
                Some(Err(e)) => {
                    let what = format!(
                        "{} receiver: accept failed",
                        connections.transport.receiver()
                    );
                    accept_errors.failed(intake.core(), &what, &e).await;
                }
            }
        }
    })
    .detach()
}

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than the limit.
    TooLarge,
    /// The core's request bytes in flight are at their bound.
    Overloaded(IngestError),
    /// Not whole within the read timeout (this long).
    Timeout(Duration),
    /// The connection failed mid-body.
    Transport(hyper::Error),
}

/// A test-only fault a request asks for, with the header `x-shardtel-fault: reactor` (the
/// reactor panics: nothing contains it), `decode` (decoding panics: contained) or `refuse` (the
/// request is refused at admission as if its core's request bytes in flight were at their
/// bound: the overload path, on demand). Only a build with the `fault-injection` feature (the
/// integration tests') reads the header; any other build never asks for a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    Reactor,
    Decode,
    Refuse,
}

/// The fault `headers` ask for (always [`Fault::None`] without `fault-injection`).
pub(crate) fn fault_requested(headers: &::http::HeaderMap) -> Fault {
    #[cfg(feature = "fault-injection")]
    {
        match headers.get("x-shardtel-fault").map(|v| v.as_bytes()) {
            Some(b"reactor") => Fault::Reactor,
            Some(b"decode") => Fault::Decode,
            Some(b"refuse") => Fault::Refuse,
            _ => Fault::None,
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = headers;
        Fault::None
    }
}

/// Admits a request of `signal` on `intake` ([`Intake::admit`]), or refuses it as overloaded
/// when the request asks for [`Fault::Refuse`] (the admission of every HTTP receiver).
pub(crate) fn admit(
    intake: &Intake,
    signal: Signal,
    fault: Fault,
) -> Result<InflightGuard<'_>, IngestError> {
    if fault == Fault::Refuse {
        return Err(IngestError::Overloaded(
            crate::pipeline::Overload::InflightBytes,
        ));
    }
    intake.admit(signal)
}

/// Reads and drops, in a task of its own, the rest of an HTTP/2 request body answered before
/// it was read (refused as overloaded, or an error found in its headers: unknown method,
/// content type or `grpc-encoding`, or a body over the limit), after the answer was sent: at
/// most `max` bytes, by the request's `read_timeout` deadline, so that the stream ends cleanly.
///
/// A request answered before its body was read would otherwise be reset (h2 sends
/// `RST_STREAM(NO_ERROR)` after the complete response) while the client's DATA frames are still
/// in flight. h2 remembers a reset stream only briefly (50 streams, 1 s); DATA arriving on a
/// stream it forgot is answered with `RST_STREAM(STREAM_CLOSED)`, and each of those counts
/// toward hyper's `max_local_error_reset_streams` (1024 per connection, h2's guard against peers
/// that provoke resets): at that count the connection is closed with
/// `GOAWAY(ENHANCE_YOUR_CALM, "too_many_internal_resets")`, failing every stream on it. A busy
/// connection reaches it after a few thousand such answers. Draining keeps the answer what it
/// was and the connection up. It is bounded like a served body (`max`, `read_timeout`, and the
/// stream keeps its place among the connection's `max_concurrent_streams` until it ends) but
/// holds nothing: each frame is dropped as it arrives. A body larger or slower than that is
/// reset, as before. (A body that was answered for being late is not drained: its deadline has
/// passed.)
pub fn drain_refused(mut body: Incoming, max: usize, request: RequestClock) {
    glommio::spawn_local(async move {
        request.discard_body(&mut body, max).await;
    })
    .detach();
}

/// The start every translating HTTP receiver's request (Zipkin, Jaeger Thrift) shares, once
/// its headers passed: admitted as traces (else refused, counted, its body discarded within
/// its bounds) and its body read within `limit` and the request's deadline (else answered
/// with the body's error). The guard holds the body's charge until the request ends.
pub async fn admit_and_read<'i>(
    intake: &'i Intake,
    transport: Transport,
    req: http::Request<Incoming>,
    limit: usize,
    request: &RequestClock,
) -> Result<(InflightGuard<'i>, Bytes), http::Response<ResponseBody>> {
    let fault = fault_requested(req.headers());
    let mut body = req.into_body();
    let guard = match admit(intake, Signal::Traces, fault) {
        Ok(guard) => guard,
        Err(e) => {
            intake.counters().refused(Signal::Traces, transport, 0, &e);
            return Err(refuse_after_discard(&mut body, limit, request, &e).await);
        }
    };
    match read_body(&mut body, limit, request, &guard).await {
        Ok(raw) => Ok((guard, raw)),
        Err(e) => Err(body_error_response(
            intake,
            Signal::Traces,
            transport,
            e,
            limit,
        )),
    }
}

/// Reads a request body of at most `limit` bytes by its deadline (`request`'s), charging what
/// it holds to `guard` as it grows. A body that arrives in one frame is that frame (no copy).
pub async fn read_body(
    body: &mut Incoming,
    limit: usize,
    request: &RequestClock,
    guard: &InflightGuard<'_>,
) -> Result<Bytes, BodyError> {
    let read = async {
        let mut first: Option<Bytes> = None;
        let mut joined: Option<BytesMut> = None;
        let mut charged = 0usize;
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(BodyError::Transport)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total += data.len();
            if total > limit {
                return Err(BodyError::TooLarge);
            }
            match (&mut first, &mut joined) {
                (None, None) => {
                    guard.try_add(data.len()).map_err(BodyError::Overloaded)?;
                    charged = data.len();
                    first = Some(data);
                }
                (Some(_), None) => {
                    let mut b = BytesMut::with_capacity((2 * total).min(limit));
                    b.extend_from_slice(&first.take().unwrap_or_default());
                    b.extend_from_slice(&data);
                    joined = Some(b);
                }
                (_, Some(b)) => b.extend_from_slice(&data),
            }
            // Charged for what the body holds (a joined buffer's capacity), as it grows.
            if let Some(b) = &joined {
                if b.capacity() > charged {
                    guard
                        .try_add(b.capacity() - charged)
                        .map_err(BodyError::Overloaded)?;
                    charged = b.capacity();
                }
            }
        }
        Ok(match joined {
            Some(b) => b.freeze(),
            None => first.unwrap_or_default(),
        })
    };
    let read = futures_lite::future::or(read, async {
        request.body_expired().await;
        Err(BodyError::Timeout(request.timeout()))
    })
    .await;
    // A body that failed keeps its deadline: what is left of it may still be discarded, by then.
    if read.is_ok() {
        request.body_done();
    }
    read
}

/// Reads and drops up to `max` more bytes of a body, so that an error response is not lost to
/// a TCP reset when the connection closes with unread data. Returns true if the body ended
/// (false: more than `max` bytes, or the connection failed).
pub async fn discard_body(body: &mut Incoming, max: usize) -> bool {
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > max {
                return false;
            }
        }
    }
    true
}

/// Ingests a translated request (a new allocation, charged to `guard` first) and counts it
/// under `transport`; the items accepted.
pub async fn ingest(
    intake: &Intake,
    signal: Signal,
    transport: Transport,
    guard: &InflightGuard<'_>,
    request: Bytes,
) -> Result<u64, IngestError> {
    if let Err(e) = guard.try_add(request.len()) {
        intake.counters().refused(signal, transport, 0, &e);
        return Err(e);
    }
    intake.ingest(signal, transport, request).await
}

/// Runs a translation of a request body (Zipkin, Jaeger) so that a panic in it fails only that
/// request, as a panic while decoding OTLP does (see `decode`): the translators read hostile
/// bytes, and a core that panics takes the process down.
pub fn translate_contained<E: std::fmt::Display>(
    translate: impl FnOnce() -> Result<shardtel_protocol::translate::Translated, E>,
) -> Result<shardtel_protocol::translate::Translated, IngestError> {
    match shardtel_sinks::panics::contain(translate) {
        Ok(translated) => translated.map_err(|e| IngestError::Invalid(e.to_string())),
        Err(panicked) => Err(panicked.into()),
    }
}

/// The end of an HTTP translating receiver's request (Zipkin, Jaeger Thrift): a body that did
/// not translate is counted and answered with its error; a translated one is ingested as
/// traces and answered `202 Accepted`.
pub async fn accept_translated(
    intake: &Intake,
    transport: Transport,
    guard: &InflightGuard<'_>,
    translated: Result<shardtel_protocol::translate::Translated, IngestError>,
) -> http::Response<ResponseBody> {
    let translated = match translated {
        Ok(t) => t,
        Err(e) => {
            count_failure(intake, Signal::Traces, transport, &e);
            return http_error(&e);
        }
    };
    let request = Bytes::from(translated.request);
    match ingest(intake, Signal::Traces, transport, guard, request).await {
        Ok(_) => plain(http::StatusCode::ACCEPTED, ""),
        Err(e) => http_error(&e),
    }
}

/// Counts a request refused before [`ingest`]: retryable refusals as refused, the rest as failed.
pub fn count_failure(intake: &Intake, signal: Signal, transport: Transport, e: &IngestError) {
    intake.counters().failed(signal, transport, e);
}

/// A response body: at most one data frame, then optional trailers.
#[derive(Debug, Default)]
pub struct ResponseBody {
    data: Option<Bytes>,
    trailers: Option<::http::HeaderMap>,
}

impl ResponseBody {
    /// A body with `data` and no trailers.
    pub fn data(data: Bytes) -> Self {
        Self {
            data: (!data.is_empty()).then_some(data),
            trailers: None,
        }
    }

    /// A body with `data` followed by `trailers`.
    pub fn with_trailers(data: Bytes, trailers: ::http::HeaderMap) -> Self {
        Self {
            data: (!data.is_empty()).then_some(data),
            trailers: Some(trailers),
        }
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // With trailers to follow (gRPC), send no content-length: some
        // clients stop reading at the length and never see grpc-status.
        if self.trailers.is_some() {
            return SizeHint::default();
        }
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// A plain-text HTTP response.
pub fn plain(status: http::StatusCode, message: &str) -> http::Response<ResponseBody> {
    let body = if message.is_empty() {
        Bytes::new()
    } else {
        Bytes::from(format!("{message}\n"))
    };
    let mut r = http::Response::new(ResponseBody::data(body));
    *r.status_mut() = status;
    if !message.is_empty() {
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    r
}

/// The HTTP answer to `e`: its status, its message, `Retry-After` when retryable, and
/// `WWW-Authenticate` when refused for its bearer token.
pub fn http_error(e: &IngestError) -> http::Response<ResponseBody> {
    let status =
        http::StatusCode::from_u16(e.http_status()).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut r = plain(status, &e.to_string());
    if let Some(after) = e.retry_after() {
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(after.as_secs().max(1)),
        );
    }
    if let Some(challenge) = e.www_authenticate() {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(challenge),
        );
    }
    r
}

/// Request body bytes an HTTP/1.1 request refused for its token has read (and dropped) before
/// it is answered, so that the client sees the answer rather than a reset.
pub const REFUSAL_DISCARD: usize = 1 << 20;

/// Checks an HTTP request's bearer token with `security` (when the receiver has an `auth`
/// table). A refused request (counted by `security`) is answered 401 with `WWW-Authenticate`,
/// its body never held or charged: up to [`REFUSAL_DISCARD`] bytes of it are read and dropped,
/// by the body's deadline (`request`'s).
pub async fn authenticate(
    security: &CoreSecurity,
    transport: Transport,
    req: http::Request<Incoming>,
    request: &RequestClock,
) -> Result<http::Request<Incoming>, http::Response<ResponseBody>> {
    let Err(e) = security.authenticate(req.headers(), transport) else {
        return Ok(req);
    };
    let ended = request
        .discard_body(&mut req.into_body(), REFUSAL_DISCARD)
        .await;
    Err(closing_unless(ended, http_error(&e)))
}

/// The answer to an HTTP/1.1 request refused as overloaded before its body was read: the body
/// is read and dropped first (at most `max` bytes, by the request's deadline), so that the
/// refusal is not lost to a TCP reset and the connection carries the next request. A body that
/// did not end by then leaves the connection unable to: the answer says `Connection: close`.
pub async fn refuse_after_discard(
    body: &mut Incoming,
    max: usize,
    request: &RequestClock,
    e: &IngestError,
) -> http::Response<ResponseBody> {
    let ended = request.discard_body(body, max).await;
    closing_unless(ended, http_error(e))
}

/// `answer`, given to an HTTP/1.1 request before its body was read (an unknown path or method,
/// an unsupported content type or encoding): the body is read and dropped first, as
/// [`refuse_after_discard`] does, so that the answer is not lost to a TCP reset and the
/// connection carries the next request (`Connection: close` when the body did not end in time).
pub async fn answer_after_discard(
    req: http::Request<Incoming>,
    max: usize,
    request: &RequestClock,
    answer: http::Response<ResponseBody>,
) -> http::Response<ResponseBody> {
    let ended = request.discard_body(&mut req.into_body(), max).await;
    closing_unless(ended, answer)
}

/// `response`, with `Connection: close` unless the request's body was read to its end (an
/// HTTP/1.1 connection with a request body left unread cannot carry another request).
pub fn closing_unless(
    body_ended: bool,
    mut response: http::Response<ResponseBody>,
) -> http::Response<ResponseBody> {
    if !body_ended {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The answer to a body that could not be read, counted as the OTLP receiver counts it: a body
/// late past `read_timeout` is [`IngestError::BodyTimeout`] (408, `DEADLINE_EXCEEDED`, reason
/// `timeout`), one whose connection failed mid-body is answered 400 and counted as
/// `client_aborted`.
pub fn body_error(
    intake: &Intake,
    signal: Signal,
    transport: Transport,
    e: BodyError,
    limit: usize,
) -> IngestError {
    let e = match e {
        BodyError::TooLarge => IngestError::TooLarge { limit },
        BodyError::Overloaded(e) => e,
        BodyError::Timeout(after) => IngestError::BodyTimeout(after),
        BodyError::Transport(e) => {
            intake
                .counters()
                .failed_request(signal, transport, FailReason::ClientAborted);
            return IngestError::Invalid(format!("request body failed: {e}"));
        }
    };
    count_failure(intake, signal, transport, &e);
    e
}

/// The HTTP/1.1 answer to a body that could not be read, counted ([`body_error`]): a late body
/// is answered 408 with `Connection: close` (the rest of it is not read, so the connection
/// cannot carry another request).
pub fn body_error_response(
    intake: &Intake,
    signal: Signal,
    transport: Transport,
    e: BodyError,
    limit: usize,
) -> http::Response<ResponseBody> {
    let late = matches!(e, BodyError::Timeout(_));
    let e = body_error(intake, signal, transport, e, limit);
    closing_unless(!late, http_error(&e))
}

/// What a core publishes about one listener of these receivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSnapshot {
    /// The listener's transport.
    pub transport: Transport,
    /// Connections this core serves at most.
    pub limit: usize,
    /// Connections served now.
    pub open: usize,
    /// Connections over the limit, closed at once.
    pub refused: u64,
}

impl Families for [ListenerSnapshot] {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        let rows = || {
            cores
                .iter()
                .flat_map(|(core, listeners)| listeners.iter().map(move |s| (core, s)))
        };
        if rows().next().is_none() {
            return;
        }
        let labels = |core: &usize, s: &ListenerSnapshot| {
            crate::telemetry::label_values(&[
                ("receiver", &s.transport.receiver()),
                ("transport", &s.transport.name()),
                ("core", core),
            ])
        };
        let open = out.gauge(
            "shardtel_receiver_listener_connections",
            "Connections served now by the zipkin, jaeger and fluentforward listeners.",
        );
        for (core, s) in rows() {
            open.sample_owned("", labels(core, s), s.open);
        }
        let limit = out.gauge(
            "shardtel_receiver_listener_connections_limit",
            "Connections a core serves at most on a listener (its share of max_connections).",
        );
        for (core, s) in rows() {
            limit.sample_owned("", labels(core, s), s.limit);
        }
        let refused = out.counter(
            "shardtel_receiver_listener_refused_connections_total",
            "Connections over a listener's limit, closed at once.",
        );
        for (core, s) in rows() {
            refused.sample_owned("", labels(core, s), s.refused);
        }
    }
}

/// Failed `accept`s of a listener (no file descriptor left, out of memory): retried after a
/// wait that grows from 10 ms to 1 s while they keep failing, and logged at most once per
/// 10 s with how many were held back, so that a process out of descriptors does not also
/// flood its log.
#[derive(Debug)]
pub struct AcceptErrors {
    log: shardtel_sinks::Throttle,
    wait: Duration,
}

impl Default for AcceptErrors {
    fn default() -> Self {
        AcceptErrors {
            log: shardtel_sinks::Throttle::new(Self::LOG_EVERY),
            wait: Self::FIRST_WAIT,
        }
    }
}

impl AcceptErrors {
    const FIRST_WAIT: Duration = Duration::from_millis(10);
    const MAX_WAIT: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    /// Counts (and maybe logs) a failed accept, then waits before the next.
    pub async fn failed(&mut self, core: usize, what: &str, e: &dyn std::fmt::Display) {
        if let Some(more) = self.log.due(Instant::now()) {
            log::warn!("core {core}: {what}: {e}{more}");
        }
        glommio::timer::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Self::MAX_WAIT);
    }

    /// An accept succeeded: the next failure waits the shortest time again.
    pub fn succeeded(&mut self) {
        self.wait = Self::FIRST_WAIT;
    }
}
