//! OTLP/HTTP receiver: `POST /v1/traces`, `/v1/metrics`, `/v1/logs` with
//! `application/x-protobuf` or `application/json` bodies, optionally gzip-
//! or zstd-compressed; errors as `google.rpc.Status` bodies. HTTP/1.1, and over TLS also
//! HTTP/2 when the client chooses it through ALPN.

use std::convert::Infallible;
use std::rc::Rc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use shardtel_protocol::compression::Encoding;
use shardtel_protocol::status::{
    export_response, export_response_json, rpc_status_json, rpc_status_protobuf,
};
use shardtel_protocol::Signal;
use shardtel_sinks::net::GlommioIo;

use super::timeouts::{ConnectionClock, RequestClock, WatchedIo};
use super::{
    collect_body, connections, discard_body, drive, fault_requested, grpc, run_until_drained,
    CollectError, Fault, ResponseBody,
};
use crate::pipeline::{FailReason, IngestError};
use crate::receivers::decode::{Format, Job, Payload};
use crate::receivers::security::{negotiated_h2, Connection, CoreSecurity};
use crate::receivers::{Intake, Transport};

/// Serves one HTTP/1.1 connection (keep-alive), or an HTTP/2 one when TLS negotiated `h2`,
/// until it closes, times out (see [`super::timeouts`]) or the core drains. With bearer tokens,
/// a request without an accepted one is answered 401 before anything else.
pub async fn serve_connection(
    intake: Rc<Intake>,
    stream: Connection,
    security: Rc<CoreSecurity>,
    clock: Rc<ConnectionClock>,
) {
    let h2 = negotiated_h2(&stream);
    let (svc_intake, svc_clock) = (intake.clone(), clock.clone());
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let intake = svc_intake.clone();
        let request = svc_clock.request();
        let unauthenticated = security.authenticate(req.headers(), Transport::Http).err();
        async move {
            Ok::<_, Infallible>(match unauthenticated {
                Some(e) => refuse_request(req, &e, Some(&request)).await,
                None => handle(&intake, req, &request).await,
            })
        }
    });
    if h2 {
        // The gRPC listener's HTTP/2 settings (connections::served_worst_cases counts an HTTP
        // connection over TLS as an HTTP/2 one).
        let builder =
            connections::http2_server(intake.limits().max_concurrent_streams, clock.timeouts());
        let conn = builder.serve_connection(WatchedIo::new(stream, clock.clone()), service);
        let conn = std::pin::pin!(conn);
        drive(&intake, &clock, conn, |c| c.graceful_shutdown()).await;
        return;
    }
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(connections::HTTP1_MAX_BUF)
        .serve_connection(WatchedIo::new(stream, clock.clone()), service);
    let conn = std::pin::pin!(conn);
    drive(&intake, &clock, conn, |c| c.graceful_shutdown()).await;
}

/// Answers a request with `e` without reading its body, except that over HTTP/1.1 up to
/// [`connections::REFUSAL_DISCARD`] body bytes are read and dropped (never held or charged),
/// so that the client reads the answer rather than a reset.
async fn refuse_request(
    req: Request<Incoming>,
    e: &IngestError,
    request: Option<&RequestClock>,
) -> Response<ResponseBody> {
    let format = format_of(&req);
    if req.version() != Version::HTTP_2 {
        let mut body = req.into_body();
        discard_body(&mut body, connections::REFUSAL_DISCARD, request).await;
    }
    error_response(format, e)
}

/// Answers the first request of a connection over the limit with 503 and `Retry-After`, then
/// closes the connection. The read buffer is hyper's minimum; up to
/// [`connections::REFUSAL_DISCARD`] body bytes are read and dropped first, so that the client
/// reads the answer instead of a reset.
pub async fn refuse_connection(intake: Rc<Intake>, stream: Connection) {
    if negotiated_h2(&stream) {
        let answer = |req: &Request<Incoming>| {
            error_response(format_of(req), &IngestError::TooManyConnections)
        };
        return grpc::refuse_h2(intake, stream, answer).await;
    }
    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
        Ok::<_, Infallible>(refuse_request(req, &IngestError::TooManyConnections, None).await)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(8192)
        .serve_connection(GlommioIo::over(stream), service);
    let conn = std::pin::pin!(conn);
    run_until_drained(&intake, conn, |c| c.graceful_shutdown()).await;
}

/// The format of an answer given before the request's content type was checked: JSON for a
/// JSON request, else protobuf.
fn format_of(req: &Request<Incoming>) -> Format {
    match req.headers().get(http::header::CONTENT_TYPE) {
        Some(v) if v.as_bytes().starts_with(b"application/json") => Format::Json,
        _ => Format::Protobuf,
    }
}

async fn handle(
    intake: &Intake,
    req: Request<Incoming>,
    request: &RequestClock,
) -> Response<ResponseBody> {
    let fault = fault_requested(req.headers());
    if fault == Fault::Reactor {
        panic!("injected fault: the reactor panics");
    }
    let limit = intake.limits().max_recv_msg_size;
    let version = req.version();
    let (signal, format, encoding) = match check(intake, &req) {
        Ok(checked) => checked,
        Err(answer) => {
            // Read and drop the body first, so that the answer is not lost to a TCP reset.
            let mut body = req.into_body();
            return after_discard(&mut body, limit, request, version, answer).await;
        }
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let mut incoming = req.into_body();
    if let Some(n) = declared.filter(|&n| n > limit) {
        intake
            .counters()
            .failed_request(signal, Transport::Http, FailReason::TooLarge);
        if n <= limit.saturating_mul(4) {
            discard_body(&mut incoming, n, Some(request)).await;
        }
        return error_response(format, &IngestError::TooLarge { limit });
    }
    let guard = match super::admit(intake, signal, fault) {
        Ok(g) => g,
        Err(e) => {
            intake.counters().refused(signal, Transport::Http, 0, &e);
            return refuse_after_discard(&mut incoming, limit, request, version, format, &e).await;
        }
    };
    let hint = declared.unwrap_or(0);
    let body = match collect_body(&mut incoming, limit, hint, |_| None, &guard, request).await {
        Ok(b) => b,
        Err(CollectError::Overloaded(e)) => {
            intake.counters().refused(signal, Transport::Http, 0, &e);
            return refuse_after_discard(&mut incoming, limit, request, version, format, &e).await;
        }
        Err(CollectError::TooLarge) => {
            intake
                .counters()
                .failed_request(signal, Transport::Http, FailReason::TooLarge);
            discard_body(&mut incoming, limit.saturating_mul(4), Some(request)).await;
            return error_response(format, &IngestError::TooLarge { limit });
        }
        Err(CollectError::TimedOut) => {
            intake
                .counters()
                .failed_request(signal, Transport::Http, FailReason::Timeout);
            let mut r = error_response(format, &IngestError::BodyTimeout(request.timeout()));
            // The rest of the body is not read: the connection cannot carry another request.
            r.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        Err(CollectError::Transport(e)) => {
            intake
                .counters()
                .failed_request(signal, Transport::Http, FailReason::ClientAborted);
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("request body failed: {e}"),
            );
        }
    };
    let job = Job {
        signal,
        format,
        encoding,
        payload: Payload::Body,
        input: body,
        limit,
        fault: fault == Fault::Decode,
    };
    let message = match intake.decoder().decode(&guard, job).await {
        Ok(m) => m,
        Err(e) => {
            intake.counters().failed(signal, Transport::Http, &e);
            return error_response(format, &e);
        }
    };
    match intake.ingest(signal, Transport::Http, message).await {
        Ok(_) => {
            let (ctype, body) = match format {
                Format::Protobuf => ("application/x-protobuf", export_response(signal, 0, "")),
                Format::Json => ("application/json", export_response_json(signal, 0, "")),
            };
            let mut r = Response::new(ResponseBody::data(body));
            r.headers_mut()
                .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            r
        }
        Err(e) => error_response(format, &e),
    }
}

/// The signal, format and encoding of a request, from its path, method and headers; or the
/// answer to a request that cannot be served (counted), given before its body is read.
// The answer goes to hyper by value, once per request answered early: no need to box it.
#[allow(clippy::result_large_err)]
fn check(
    intake: &Intake,
    req: &Request<Incoming>,
) -> Result<(Signal, Format, Encoding), Response<ResponseBody>> {
    let signal = match req.uri().path() {
        "/v1/traces" => Signal::Traces,
        "/v1/metrics" => Signal::Metrics,
        "/v1/logs" => Signal::Logs,
        other => {
            return Err(plain(
                StatusCode::NOT_FOUND,
                &format!("unknown path {other} (use /v1/traces, /v1/metrics or /v1/logs)"),
            ));
        }
    };
    if req.method() != Method::POST {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        return Err(r);
    }
    let ctype = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
        "application/json" => Format::Json,
        _ => {
            intake
                .counters()
                .failed_request(signal, Transport::Http, FailReason::Unsupported);
            return Err(error_response(
                Format::Protobuf,
                &IngestError::Unsupported(format!(
                    "unsupported content type {ctype:?} (use application/x-protobuf or application/json)"
                )),
            ));
        }
    };
    let encoding = match req.headers().get(http::header::CONTENT_ENCODING) {
        None => Encoding::Identity,
        Some(v) => match v.to_str().ok().and_then(Encoding::from_header) {
            Some(e) => e,
            None => {
                intake
                    .counters()
                    .failed_request(signal, Transport::Http, FailReason::Unsupported);
                return Err(error_response(
                    format,
                    &IngestError::Unsupported(format!(
                        "unsupported content encoding {v:?} (use gzip, zstd or none)"
                    )),
                ));
            }
        },
    };
    Ok((signal, format, encoding))
}

/// The answer to a request refused as overloaded before its body was read: the body is read
/// and dropped first (at most `max` bytes, by the request's deadline), so that the refusal is
/// neither lost to a TCP reset (HTTP/1.1) nor followed by a stream reset (HTTP/2), and the
/// connection carries the next request. A body that did not end within that leaves the
/// connection unable to: over HTTP/1.1 the answer then says `Connection: close` (hyper closes
/// the connection after it); over HTTP/2 the stream is reset.
async fn refuse_after_discard(
    body: &mut Incoming,
    max: usize,
    request: &RequestClock,
    version: Version,
    format: Format,
    e: &IngestError,
) -> Response<ResponseBody> {
    after_discard(body, max, request, version, error_response(format, e)).await
}

/// `answer`, given to a request before its body was read (refused, or an unknown path or
/// method, an unsupported content type or encoding), once the body was read and dropped (at
/// most `max` bytes, by the request's deadline) as [`refuse_after_discard`] does: with
/// `Connection: close` over HTTP/1.1 when the body did not end by then.
async fn after_discard(
    body: &mut Incoming,
    max: usize,
    request: &RequestClock,
    version: Version,
    mut answer: Response<ResponseBody>,
) -> Response<ResponseBody> {
    let ended = discard_body(body, max, Some(request)).await;
    if !ended && version < Version::HTTP_2 {
        answer
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    answer
}

/// An OTLP/HTTP error: the status code plus a `google.rpc.Status` body in
/// the request's format.
fn error_response(format: Format, e: &IngestError) -> Response<ResponseBody> {
    let code = e.grpc_code();
    let (ctype, body) = match format {
        Format::Protobuf => (
            "application/x-protobuf",
            rpc_status_protobuf(code, &e.to_string()),
        ),
        Format::Json => ("application/json", rpc_status_json(code, &e.to_string())),
    };
    let mut r = Response::new(ResponseBody::data(body));
    *r.status_mut() = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Some(after) = e.retry_after() {
        h.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(after.as_secs().max(1)),
        );
    }
    if let Some(challenge) = e.www_authenticate() {
        h.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    r
}

fn plain(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::data(Bytes::from(format!("{message}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
