//! `jaeger.api_v2.CollectorService/PostSpans` over HTTP/2: one unary call per request, its
//! `PostSpansRequest` translated to OTLP and ingested; an empty `PostSpansResponse` with
//! `grpc-status: 0` once accepted, a status with a message otherwise.

use std::convert::Infallible;
use std::rc::Rc;

use http::{HeaderMap, HeaderValue, Request, Response};
use hyper::body::Incoming;
use shardtel_config::JaegerReceiverConfig;
use shardtel_protocol::compression::{decompress, DecompressError, Encoding};
use shardtel_protocol::grpc::{decode_message, encode_message, Code};
use shardtel_protocol::translate::jaeger;
use shardtel_protocol::Signal;

use crate::pipeline::{FailReason, IngestError, Overload};
use crate::receivers::listener::{self, ResponseBody};
use crate::receivers::otlp::connections as h2;
use crate::receivers::security::{Connection, CoreSecurity};
use crate::receivers::timeouts::{self, ConnectionClock, RequestClock, Timeouts, WatchedIo, Wire};
use crate::receivers::{Intake, Transport};

const POST_SPANS: &str = "/jaeger.api_v2.CollectorService/PostSpans";
const TRANSPORT: Transport = Transport::JaegerGrpc;

/// Serves one HTTP/2 connection until it closes, times out (the preface within the head
/// deadline, each request body within `read_timeout`, `GOAWAY` after `idle_timeout` without a
/// stream: see [`crate::receivers::timeouts`]) or the core drains. The HTTP/2 settings and
/// keep-alive pings are the OTLP gRPC listener's.
pub(super) async fn serve_connection(
    intake: Rc<Intake>,
    config: Rc<JaegerReceiverConfig>,
    security: Rc<CoreSecurity>,
    stream: Connection,
) {
    let clock = ConnectionClock::new(Timeouts::of_listener(&config.limits), Wire::H2);
    let (i, c, k) = (intake.clone(), config.clone(), clock.clone());
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (i, c) = (i.clone(), c.clone());
        let request = k.request();
        // A refused request is answered UNAUTHENTICATED before its body is read (then drained).
        let unauthenticated = security.authenticate(req.headers(), TRANSPORT).err();
        async move {
            let mut unread = None;
            let resp = match unauthenticated {
                Some(e) => {
                    unread = Some(req.into_body());
                    error_response(&e)
                }
                None => handle(&i, &c, req, &request, &mut unread).await,
            };
            if let Some(body) = unread {
                listener::drain_refused(body, c.limits.max_recv_msg_size + 5, request);
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let builder = h2::http2_server(config.max_concurrent_streams, clock.timeouts());
    let conn = builder.serve_connection(WatchedIo::new(stream, clock.clone()), service);
    let conn = std::pin::pin!(conn);
    timeouts::drive(&intake, &clock, conn, |c| c.graceful_shutdown()).await;
}

/// Answers one request. A request answered before its body was read to its end (refused as
/// overloaded, an unknown method, content type or `grpc-encoding`, a body over the limit)
/// leaves the body in `unread`, for the caller to drain once the answer is on its way (see
/// [`listener::drain_refused`]).
async fn handle(
    intake: &Intake,
    config: &JaegerReceiverConfig,
    req: Request<Incoming>,
    request: &RequestClock,
    unread: &mut Option<Incoming>,
) -> Response<ResponseBody> {
    let encoding = match check(intake, &req) {
        Ok(encoding) => encoding,
        Err(answer) => {
            *unread = Some(req.into_body());
            return answer;
        }
    };
    let limit = config.limits.max_recv_msg_size;
    let fault = listener::fault_requested(req.headers());
    let guard = match listener::admit(intake, Signal::Traces, fault) {
        Ok(g) => g,
        Err(e) => {
            intake.counters().refused(Signal::Traces, TRANSPORT, 0, &e);
            // The refusal goes out at once; the body is drained after it.
            *unread = Some(req.into_body());
            return error_response(&e);
        }
    };
    let mut body = req.into_body();
    let framed = match listener::read_body(&mut body, limit + 5, request, &guard).await {
        Ok(b) => b,
        Err(e) => {
            let drain = matches!(
                e,
                listener::BodyError::Overloaded(_) | listener::BodyError::TooLarge
            );
            let e = listener::body_error(intake, Signal::Traces, TRANSPORT, e, limit);
            if drain {
                *unread = Some(body);
            }
            return error_response(&e);
        }
    };
    let translated = unframe(encoding, &framed, limit, guard.room())
        .and_then(|(message, fresh)| {
            if fresh {
                guard.try_add(message.len())?;
            }
            Ok(message)
        })
        .and_then(|message| listener::translate_contained(|| jaeger::proto_to_otlp(&message)));
    drop(framed);
    let translated = match translated {
        Ok(t) => t,
        Err(e) => {
            listener::count_failure(intake, Signal::Traces, TRANSPORT, &e);
            return error_response(&e);
        }
    };
    match listener::ingest(
        intake,
        Signal::Traces,
        TRANSPORT,
        &guard,
        bytes::Bytes::from(translated.request),
    )
    .await
    {
        Ok(_) => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            // An empty PostSpansResponse.
            let mut resp =
                Response::new(ResponseBody::with_trailers(encode_message(&[]), trailers));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            resp
        }
        Err(e) => error_response(&e),
    }
}

/// The `grpc-encoding` of a request, from its method and headers; or the answer to a request
/// that cannot be served (counted), given before its body is read.
// The answer goes to hyper by value, once per request answered early: no need to box it.
#[allow(clippy::result_large_err)]
fn check(intake: &Intake, req: &Request<Incoming>) -> Result<Encoding, Response<ResponseBody>> {
    if req.uri().path() != POST_SPANS {
        return Err(status_only(
            Code::Unimplemented,
            &format!("unknown method {} (this is {POST_SPANS})", req.uri().path()),
        ));
    }
    let ctype = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/grpc") {
        intake
            .counters()
            .failed_request(Signal::Traces, TRANSPORT, FailReason::Unsupported);
        let mut resp = Response::new(ResponseBody::default());
        *resp.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Err(resp);
    }
    let encoding = match req.headers().get("grpc-encoding") {
        None => Encoding::Identity,
        Some(v) => match v.to_str().ok().and_then(Encoding::from_header) {
            Some(e) => e,
            None => {
                intake.counters().failed_request(
                    Signal::Traces,
                    TRANSPORT,
                    FailReason::Unsupported,
                );
                let mut resp = status_only(
                    Code::Unimplemented,
                    "unsupported grpc-encoding (supported: identity, gzip, zstd)",
                );
                resp.headers_mut().insert(
                    "grpc-accept-encoding",
                    HeaderValue::from_static("identity,gzip,zstd"),
                );
                return Err(resp);
            }
        },
    };
    Ok(encoding)
}

/// The gRPC message, decompressed when flagged so (bounded by `limit` and `room`); true when
/// it is a new allocation.
fn unframe(
    encoding: Encoding,
    body: &bytes::Bytes,
    limit: usize,
    room: usize,
) -> Result<(bytes::Bytes, bool), IngestError> {
    let (compressed, message) = decode_message(body).map_err(IngestError::GrpcFraming)?;
    if !compressed {
        if message.len() > limit {
            return Err(IngestError::TooLarge { limit });
        }
        return Ok((message, false));
    }
    if encoding == Encoding::Identity {
        return Err(IngestError::CompressedWithoutEncoding);
    }
    decompress(encoding, &message, limit.min(room))
        .map(|m| (m, true))
        .map_err(|e| match e {
            DecompressError::TooLarge { .. } if room < limit => {
                IngestError::Overloaded(Overload::InflightBytes)
            }
            DecompressError::TooLarge { .. } => IngestError::TooLarge { limit },
            other => IngestError::DecompressMessage(other),
        })
}

fn error_response(e: &IngestError) -> Response<ResponseBody> {
    status_only(e.grpc_code(), &e.to_string())
}

/// A trailers-only response: `grpc-status` and `grpc-message` in the headers.
fn status_only(code: Code, message: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::default());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code as i32));
    let mut encoded = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        h.insert("grpc-message", v);
    }
    resp
}
