//! OTLP/gRPC receiver: unary `Export` of the trace, metrics and logs
//! services over HTTP/2 (h2c, or h2 over TLS), with `grpc-encoding` gzip or zstd.

use std::convert::Infallible;
use std::rc::Rc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use hyper::body::Incoming;
use shardtel_protocol::compression::Encoding;
use shardtel_protocol::grpc::{decode_message, encode_message, Code};
use shardtel_protocol::status::export_response;
use shardtel_protocol::Signal;
use shardtel_sinks::net::{GlommioIo, LocalExec};

use super::timeouts::{ConnectionClock, RequestClock, WatchedIo};
use super::{collect_body, connections, drive, fault_requested, CollectError, Fault, ResponseBody};
use crate::pipeline::{FailReason, IngestError};
use crate::receivers::decode::{Format, Job, Payload};
use crate::receivers::listener;
use crate::receivers::security::{Connection, CoreSecurity};
use crate::receivers::{Intake, Transport};

const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const METRICS: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
const LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// Serves one HTTP/2 connection until it closes, times out (see [`super::timeouts`]) or the
/// core drains. With bearer tokens, a request without an accepted one is answered
/// `UNAUTHENTICATED` before anything else.
pub async fn serve_connection(
    intake: Rc<Intake>,
    stream: Connection,
    security: Rc<CoreSecurity>,
    clock: Rc<ConnectionClock>,
) {
    let (svc_intake, svc_clock) = (intake.clone(), clock.clone());
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let intake = svc_intake.clone();
        let request = svc_clock.request();
        let unauthenticated = security.authenticate(req.headers(), Transport::Grpc).err();
        async move {
            let mut unread = None;
            let response = match unauthenticated {
                Some(e) => {
                    unread = Some(req.into_body());
                    error_response(&e)
                }
                None => handle(&intake, req, &request, &mut unread).await,
            };
            if let Some(body) = unread {
                let max = intake.limits().max_recv_msg_size + 5;
                listener::drain_refused(body, max, request);
            }
            Ok::<_, Infallible>(response)
        }
    });
    let builder =
        connections::http2_server(intake.limits().max_concurrent_streams, clock.timeouts());
    let conn = builder.serve_connection(WatchedIo::new(stream, clock.clone()), service);
    let conn = std::pin::pin!(conn);
    drive(&intake, &clock, conn, |c| c.graceful_shutdown()).await;
}

/// Answers the streams of a connection over the limit with `UNAVAILABLE` (trailers only,
/// bodies unread) and closes it with `GOAWAY` once the first stream was answered. The
/// connection keeps HTTP/2's default frame size and windows and at most
/// [`connections::REFUSAL_STREAMS`] streams.
pub async fn refuse_connection(intake: Rc<Intake>, stream: Connection) {
    refuse_h2(intake, stream, |_| {
        error_response(&IngestError::TooManyConnections)
    })
    .await
}

/// Answers the streams of an HTTP/2 connection over the limit with `answer` (bodies unread) and
/// closes it as [`refuse_connection`] does; the OTLP/HTTP listener's HTTP/2 connections (over
/// TLS) are refused with it too.
pub async fn refuse_h2(
    intake: Rc<Intake>,
    stream: Connection,
    answer: fn(&Request<Incoming>) -> Response<ResponseBody>,
) {
    let answered = Rc::new(glommio::sync::Semaphore::new(0));
    let signal = answered.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        signal.signal(1);
        let response = answer(&req);
        async { Ok::<_, Infallible>(response) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(LocalExec);
    builder
        .max_concurrent_streams(connections::REFUSAL_STREAMS)
        .max_header_list_size(connections::H2_MAX_HEADER_LIST)
        .max_send_buf_size(connections::H2_MAX_SEND_BUF);
    let conn = builder.serve_connection(GlommioIo::over(stream), service);
    let mut conn = std::pin::pin!(conn);
    let first = futures_lite::future::or(
        async {
            let _ = conn.as_mut().await;
            false
        },
        async {
            let _ = answered.acquire(1).await;
            true
        },
    );
    let answer_sent = futures_lite::future::or(first, async {
        intake.wait_draining().await;
        true
    })
    .await;
    if answer_sent {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

fn signal_for(path: &str) -> Option<Signal> {
    match path {
        TRACES => Some(Signal::Traces),
        METRICS => Some(Signal::Metrics),
        LOGS => Some(Signal::Logs),
        _ => None,
    }
}

/// Answers one request. A request answered before its body was read to its end (refused as
/// overloaded, an unknown method, content type or `grpc-encoding`, a body over the limit)
/// leaves the body in `unread`, for the caller to drain once the answer is on its way (see
/// [`listener::drain_refused`]).
async fn handle(
    intake: &Intake,
    req: Request<Incoming>,
    request: &RequestClock,
    unread: &mut Option<Incoming>,
) -> Response<ResponseBody> {
    let fault = fault_requested(req.headers());
    if fault == Fault::Reactor {
        panic!("injected fault: the reactor panics");
    }
    let (signal, encoding) = match check(intake, &req) {
        Ok(checked) => checked,
        Err(answer) => {
            *unread = Some(req.into_body());
            return answer;
        }
    };
    let guard = match super::admit(intake, signal, fault) {
        Ok(g) => g,
        Err(e) => {
            intake.counters().refused(signal, Transport::Grpc, 0, &e);
            *unread = Some(req.into_body());
            return error_response(&e);
        }
    };
    let limit = intake.limits().max_recv_msg_size;
    let hint = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let mut incoming = req.into_body();
    let collected = collect_body(&mut incoming, limit + 5, hint, framed_size, &guard, request);
    let body = match collected.await {
        Ok(b) => b,
        Err(CollectError::Overloaded(e)) => {
            intake.counters().refused(signal, Transport::Grpc, 0, &e);
            *unread = Some(incoming);
            return error_response(&e);
        }
        Err(CollectError::TooLarge) => {
            intake
                .counters()
                .failed_request(signal, Transport::Grpc, FailReason::TooLarge);
            *unread = Some(incoming);
            return error_response(&IngestError::TooLarge { limit });
        }
        Err(CollectError::TimedOut) => {
            intake
                .counters()
                .failed_request(signal, Transport::Grpc, FailReason::Timeout);
            return error_response(&IngestError::BodyTimeout(request.timeout()));
        }
        Err(CollectError::Transport(e)) => {
            intake
                .counters()
                .failed_request(signal, Transport::Grpc, FailReason::ClientAborted);
            return status_only(Code::Cancelled, &format!("request body failed: {e}"));
        }
    };
    let message = match unframe(encoding, &body, limit) {
        Ok((encoding, input)) => {
            drop(body);
            let job = Job {
                signal,
                format: Format::Protobuf,
                encoding,
                payload: Payload::Message,
                input,
                limit,
                fault: fault == Fault::Decode,
            };
            intake.decoder().decode(&guard, job).await
        }
        Err(e) => Err(e),
    };
    let message = match message {
        Ok(m) => m,
        Err(e) => {
            intake.counters().failed(signal, Transport::Grpc, &e);
            return error_response(&e);
        }
    };
    match intake.ingest(signal, Transport::Grpc, message).await {
        Ok(_) => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let mut resp = Response::new(ResponseBody::with_trailers(
                encode_message(&export_response(signal, 0, "")),
                trailers,
            ));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            resp
        }
        Err(e) => error_response(&e),
    }
}

/// The signal and `grpc-encoding` of a request, from its method and headers; or the answer to
/// a request that cannot be served (counted), given before its body is read.
// The answer goes to hyper by value, once per request answered early: no need to box it.
#[allow(clippy::result_large_err)]
fn check(
    intake: &Intake,
    req: &Request<Incoming>,
) -> Result<(Signal, Encoding), Response<ResponseBody>> {
    let Some(signal) = signal_for(req.uri().path()) else {
        return Err(status_only(
            Code::Unimplemented,
            &format!("unknown method {}", req.uri().path()),
        ));
    };
    let ctype = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(ctype == "application/grpc"
        || ctype.starts_with("application/grpc+proto")
        || ctype.starts_with("application/grpc;"))
    {
        intake
            .counters()
            .failed_request(signal, Transport::Grpc, FailReason::Unsupported);
        // gRPC over HTTP/2: a non-gRPC content type is answered with HTTP 415.
        let mut resp = Response::new(ResponseBody::default());
        *resp.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Err(resp);
    }
    let encoding = match req
        .headers()
        .get("grpc-encoding")
        .map(|v| v.to_str().unwrap_or("?"))
    {
        None => Encoding::Identity,
        Some(name) => match Encoding::from_header(name) {
            Some(e) => e,
            None => {
                intake
                    .counters()
                    .failed_request(signal, Transport::Grpc, FailReason::Unsupported);
                let mut resp = status_only(
                    Code::Unimplemented,
                    &format!(
                        "unsupported grpc-encoding {name:?} (supported: identity, gzip, zstd)"
                    ),
                );
                resp.headers_mut().insert(
                    "grpc-accept-encoding",
                    HeaderValue::from_static("identity,gzip,zstd"),
                );
                return Err(resp);
            }
        },
    };
    Ok((signal, encoding))
}

/// Unwraps the gRPC message: its encoding (identity when not flagged compressed) and its bytes
/// (a slice of `body`), at most `limit` when not compressed.
fn unframe(
    encoding: Encoding,
    body: &Bytes,
    limit: usize,
) -> Result<(Encoding, Bytes), IngestError> {
    let (compressed, message) = decode_message(body).map_err(IngestError::GrpcFraming)?;
    if !compressed {
        if message.len() > limit {
            return Err(IngestError::TooLarge { limit });
        }
        return Ok((Encoding::Identity, message));
    }
    if encoding == Encoding::Identity {
        return Err(IngestError::CompressedWithoutEncoding);
    }
    Ok((encoding, message))
}

fn error_response(e: &IngestError) -> Response<ResponseBody> {
    status_only(e.grpc_code(), &e.to_string())
}

/// A trailers-only response: grpc-status and grpc-message in the headers.
fn status_only(code: Code, message: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::default());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code as i32));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// Percent-encodes a grpc-message value as the gRPC HTTP/2 spec requires.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The size of a gRPC-framed message (prefix included) from its 5-byte prefix.
fn framed_size(first: &[u8]) -> Option<usize> {
    let len: [u8; 4] = first.get(1..5)?.try_into().ok()?;
    Some(5 + u32::from_be_bytes(len) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_printable_ascii() {
        assert_eq!(percent_encode("bad span: 100%"), "bad span: 100%25");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn paths_map_to_signals() {
        assert_eq!(signal_for(TRACES), Some(Signal::Traces));
        assert_eq!(signal_for(METRICS), Some(Signal::Metrics));
        assert_eq!(signal_for(LOGS), Some(Signal::Logs));
        assert_eq!(signal_for("/x"), None);
    }
}
