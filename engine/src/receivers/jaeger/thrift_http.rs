//! `POST /api/traces` with a binary-Thrift `jaeger.thrift` `Batch`, as Jaeger clients' HTTP
//! sender posts it (`application/x-thrift` or `application/vnd.apache.thrift.binary`; a
//! `?format=jaeger.thrift` query is ignored): `202 Accepted` once accepted.

use std::convert::Infallible;
use std::rc::Rc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use shardtel_config::JaegerReceiverConfig;
use shardtel_protocol::translate::jaeger;
use shardtel_protocol::Signal;

use crate::pipeline::IngestError;
use crate::receivers::listener::{self, ResponseBody};
use crate::receivers::security::{Connection, CoreSecurity};
use crate::receivers::timeouts::{self, ConnectionClock, RequestClock, Timeouts, WatchedIo, Wire};
use crate::receivers::{Intake, Transport};

const TRANSPORT: Transport = Transport::JaegerThrift;

/// Serves one HTTP/1.1 connection (keep-alive) until it closes, times out (a deadline for each
/// request head and body, and an idle timeout: see [`crate::receivers::timeouts`]) or the core
/// drains.
pub(super) async fn serve_connection(
    intake: Rc<Intake>,
    config: Rc<JaegerReceiverConfig>,
    security: Rc<CoreSecurity>,
    stream: Connection,
) {
    let clock = ConnectionClock::new(Timeouts::of_listener(&config.limits), Wire::Http1);
    let (i, c, k) = (intake.clone(), config.clone(), clock.clone());
    let service = hyper::service::service_fn(move |req| {
        let (i, c, t) = (i.clone(), c.clone(), security.clone());
        let request = k.request();
        async move {
            let resp = match listener::authenticate(&t, TRANSPORT, req, &request).await {
                Ok(req) => handle(&i, &c, req, &request).await,
                Err(refused) => refused,
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(listener::HTTP1_MAX_BUF)
        .serve_connection(WatchedIo::new(stream, clock.clone()), service);
    let conn = std::pin::pin!(conn);
    timeouts::drive(&intake, &clock, conn, |c| c.graceful_shutdown()).await;
}

async fn handle(
    intake: &Intake,
    config: &JaegerReceiverConfig,
    req: Request<Incoming>,
    request: &RequestClock,
) -> Response<ResponseBody> {
    let limit = config.limits.max_recv_msg_size;
    if let Err(answer) = check(intake, &req) {
        return listener::answer_after_discard(req, limit, request, answer).await;
    }
    let (guard, raw) = match listener::admit_and_read(intake, TRANSPORT, req, limit, request).await
    {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let translated = listener::translate_contained(|| jaeger::thrift_to_otlp(&raw));
    drop(raw);
    listener::accept_translated(intake, TRANSPORT, &guard, translated).await
}

/// Checks a request's path, method and content type: the answer to one that cannot be served
/// (counted), given before its body is read.
// The answer goes to hyper by value, once per request answered early: no need to box it.
#[allow(clippy::result_large_err)]
fn check(intake: &Intake, req: &Request<Incoming>) -> Result<(), Response<ResponseBody>> {
    if req.uri().path() != "/api/traces" {
        return Err(listener::plain(
            StatusCode::NOT_FOUND,
            &format!("unknown path {} (use POST /api/traces)", req.uri().path()),
        ));
    }
    if req.method() != Method::POST {
        let mut resp = listener::plain(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        resp.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        return Err(resp);
    }
    let ctype = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !matches!(
        ctype.as_str(),
        "application/x-thrift" | "application/vnd.apache.thrift.binary"
    ) {
        let e = IngestError::Unsupported(format!(
            "unsupported content type {ctype:?} (use application/x-thrift or application/vnd.apache.thrift.binary)"
        ));
        listener::count_failure(intake, Signal::Traces, TRANSPORT, &e);
        return Err(listener::http_error(&e));
    }
    Ok(())
}
