//! `[receivers.zipkin]`: `POST /api/v2/spans` on every core (the same port, SO_REUSEPORT),
//! HTTP/1.1, as Zipkin's collector API and the Collector's `zipkinreceiver` take it:
//! `application/x-protobuf` bodies are `zipkin.proto3.ListOfSpans`, any other content type is
//! JSON; `Content-Encoding` gzip, deflate (zlib) or zstd. Translated to OTLP once, on this core
//! (`shardtel_protocol::translate::zipkin`), then ingested like OTLP; answered `202 Accepted`
//! once accepted (with durability: once on disk). Errors: 400 for a body that does not
//! translate (the message names the span and field), 413 over `max_recv_msg_size`, 415 for an
//! unknown encoding, 429/503 with `Retry-After` when shardtel is overloaded. Over TLS with a
//! `tls` table (ALPN `http/1.1`); with an `auth` table, a request without an accepted bearer
//! token is answered 401 with `WWW-Authenticate` before its body is read.

use std::convert::Infallible;
use std::rc::Rc;

use bytes::Bytes;
use glommio::task::JoinHandle;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use shardtel_config::ZipkinReceiverConfig;
use shardtel_protocol::compression::{decompress, inflate_zlib, DecompressError, Encoding};
use shardtel_protocol::translate::zipkin::{self, ZipkinOptions};
use shardtel_protocol::Signal;

use super::listener::{self, BindError, Connections, ListenerSnapshot, ResponseBody};
use super::security::{
    Connection, CoreSecurity, ReceiverSecurity, SecurityError, SecuritySnapshot,
};
use super::timeouts::{self, ConnectionClock, RequestClock, Timeouts, WatchedIo, Wire};
use super::{Intake, Transport};
use crate::pipeline::{FailReason, IngestError, Overload};

const TRANSPORT: Transport = Transport::Zipkin;

/// One core's running Zipkin receiver.
pub struct ZipkinServer {
    connections: Rc<Connections>,
    security: Rc<CoreSecurity>,
    acceptor: std::cell::RefCell<Option<JoinHandle<()>>>,
}

/// What a request handler needs.
struct Receiver {
    intake: Rc<Intake>,
    config: ZipkinReceiverConfig,
    security: Rc<CoreSecurity>,
}

/// The listener's TLS (ALPN `http/1.1`) and tokens, from `[receivers.zipkin.tls]` and `.auth`.
/// Reads files: call it before the reactors start.
pub fn security(config: &ZipkinReceiverConfig) -> Result<ReceiverSecurity, SecurityError> {
    ReceiverSecurity::new(
        "zipkin",
        config.tls.as_ref(),
        config.auth.as_ref(),
        &[(TRANSPORT, &[shardtel_tls::alpn::HTTP1])],
    )
}

/// Binds `config.endpoint` on this core and serves it, over TLS and checking tokens as
/// `security` says; this core serves its share of `max_connections` of `cores`.
pub fn start(
    intake: Rc<Intake>,
    config: &ZipkinReceiverConfig,
    security: ReceiverSecurity,
    cores: usize,
) -> Result<ZipkinServer, BindError> {
    let socket = listener::bind(TRANSPORT, config.endpoint)?;
    let connections = Rc::new(Connections::new(
        TRANSPORT,
        listener::per_core(config.limits.max_connections, cores),
    ));
    let security = Rc::new(CoreSecurity::new(security, intake.core()));
    let receiver = Rc::new(Receiver {
        intake: intake.clone(),
        config: config.clone(),
        security: security.clone(),
    });
    let acceptor = listener::accept(
        intake,
        socket,
        connections.clone(),
        security.clone(),
        move |stream, _| serve_connection(receiver.clone(), stream),
    );
    Ok(ZipkinServer {
        connections,
        security,
        acceptor: std::cell::RefCell::new(Some(acceptor)),
    })
}

impl ZipkinServer {
    /// The listener's counters, for telemetry.
    pub fn snapshot(&self) -> ListenerSnapshot {
        self.connections.snapshot()
    }

    /// The TLS handshake and token counters, for telemetry (`None` without either).
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

/// Serves one HTTP/1.1 connection (keep-alive) until it closes, times out (a deadline for each
/// request head and body, and an idle timeout: see [`super::timeouts`]) or the core drains.
async fn serve_connection(receiver: Rc<Receiver>, stream: Connection) {
    let clock = ConnectionClock::new(Timeouts::of_listener(&receiver.config.limits), Wire::Http1);
    let (r, c) = (receiver.clone(), clock.clone());
    let service = hyper::service::service_fn(move |req| {
        let r = r.clone();
        let request = c.request();
        async move { Ok::<_, Infallible>(handle(&r, req, &request).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(listener::HTTP1_MAX_BUF)
        .serve_connection(WatchedIo::new(stream, clock.clone()), service);
    let conn = std::pin::pin!(conn);
    timeouts::drive(&receiver.intake, &clock, conn, |c| c.graceful_shutdown()).await;
}

/// The body's format: protobuf with `application/x-protobuf`, JSON otherwise (as the
/// Collector decides).
fn is_protobuf(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-protobuf"))
}

async fn handle(
    r: &Receiver,
    req: Request<Incoming>,
    request: &RequestClock,
) -> Response<ResponseBody> {
    let intake = &r.intake;
    let limit = r.config.limits.max_recv_msg_size;
    let req = match listener::authenticate(&r.security, TRANSPORT, req, request).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let (protobuf, encoding) = match check(intake, &req) {
        Ok(checked) => checked,
        Err(answer) => return listener::answer_after_discard(req, limit, request, answer).await,
    };
    let (guard, raw) = match listener::admit_and_read(intake, TRANSPORT, req, limit, request).await
    {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let plain = decode(encoding, &raw, limit, guard.room()).and_then(|plain| {
        if encoding.is_some() {
            guard.try_add(plain.len())?;
        }
        Ok(plain)
    });
    drop(raw);
    let translated = plain.and_then(|plain| {
        let options = ZipkinOptions {
            parse_string_tags: r.config.parse_string_tags,
        };
        listener::translate_contained(|| {
            if protobuf {
                zipkin::proto_to_otlp(&plain, options)
            } else {
                zipkin::json_v2_to_otlp(&plain, options)
            }
        })
    });
    listener::accept_translated(intake, TRANSPORT, &guard, translated).await
}

/// Whether a request's body is protobuf, and its `Content-Encoding`, from its path, method
/// and headers; or the answer to a request that cannot be served (counted), given before its
/// body is read.
// The answer goes to hyper by value, once per request answered early: no need to box it.
#[allow(clippy::result_large_err)]
fn check(
    intake: &Intake,
    req: &Request<Incoming>,
) -> Result<(bool, Option<BodyEncoding>), Response<ResponseBody>> {
    match req.uri().path() {
        "/api/v2/spans" => {}
        "/api/v1/spans" => {
            intake
                .counters()
                .failed_request(Signal::Traces, TRANSPORT, FailReason::Unsupported);
            return Err(listener::plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "zipkin v1 is not supported: send v2 spans to /api/v2/spans",
            ));
        }
        other => {
            return Err(listener::plain(
                StatusCode::NOT_FOUND,
                &format!("unknown path {other} (use POST /api/v2/spans)"),
            ))
        }
    }
    if req.method() != Method::POST {
        let mut resp = listener::plain(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        resp.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        return Err(resp);
    }
    let protobuf = is_protobuf(req);
    let encoding = match req.headers().get(http::header::CONTENT_ENCODING) {
        None => None,
        Some(v) => match v
            .to_str()
            .unwrap_or("?")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "identity" => None,
            "gzip" => Some(BodyEncoding::Gzip),
            "zstd" => Some(BodyEncoding::Zstd),
            "deflate" | "zlib" => Some(BodyEncoding::Zlib),
            other => {
                let e = IngestError::Unsupported(format!(
                    "unsupported content encoding {other:?} (use gzip, deflate, zstd or none)"
                ));
                listener::count_failure(intake, Signal::Traces, TRANSPORT, &e);
                return Err(listener::http_error(&e));
            }
        },
    };
    Ok((protobuf, encoding))
}

/// A body's `Content-Encoding`.
#[derive(Clone, Copy, Debug)]
enum BodyEncoding {
    Gzip,
    Zstd,
    /// `deflate` (a zlib stream, as HTTP defines it).
    Zlib,
}

/// Decompresses the body (at most `limit` bytes, and at most `room`, what the request may
/// still add on its core).
fn decode(
    encoding: Option<BodyEncoding>,
    raw: &Bytes,
    limit: usize,
    room: usize,
) -> Result<Bytes, IngestError> {
    let max = limit.min(room);
    let out = match encoding {
        None => return Ok(raw.clone()),
        Some(BodyEncoding::Zlib) => inflate_zlib(raw, max),
        Some(BodyEncoding::Gzip) => decompress(Encoding::Gzip, raw, max),
        Some(BodyEncoding::Zstd) => decompress(Encoding::Zstd, raw, max),
    };
    out.map_err(|e| match e {
        DecompressError::TooLarge { .. } if room < limit => {
            IngestError::Overloaded(Overload::InflightBytes)
        }
        DecompressError::TooLarge { .. } => IngestError::TooLarge { limit },
        other => IngestError::DecompressBody(other),
    })
}
