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
use shardtel_sinks::net::GlommioIo;

use crate::pipeline::IngestError;
use crate::receivers::listener::{self, Activity, ResponseBody, Watched};
use crate::receivers::security::{Connection, CoreSecurity};
use crate::receivers::{Intake, Transport};

const TRANSPORT: Transport = Transport::JaegerThrift;

/// Serves one HTTP/1.1 connection until it closes, idles out or the core drains.
pub(super) async fn serve_connection(
    intake: Rc<Intake>,
    config: Rc<JaegerReceiverConfig>,
    security: Rc<CoreSecurity>,
    stream: Connection,
) {
    let activity = Activity::new();
    let (i, c, a) = (intake.clone(), config.clone(), activity.clone());
    let service = hyper::service::service_fn(move |req| {
        let (i, c, a, t) = (i.clone(), c.clone(), a.clone(), security.clone());
        async move {
            a.touch();
            let timeout = c.limits.read_timeout;
            let resp = match listener::authenticate(&t, TRANSPORT, req, timeout).await {
                Ok(req) => handle(&i, &c, req).await,
                Err(refused) => refused,
            };
            a.touch();
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(listener::HTTP1_MAX_BUF)
        .serve_connection(
            Watched::new(GlommioIo::over(stream), activity.clone()),
            service,
        );
    let conn = std::pin::pin!(conn);
    listener::serve_until(&intake, conn, &activity, config.limits.idle_timeout, |c| {
        c.graceful_shutdown()
    })
    .await;
}

async fn handle(
    intake: &Intake,
    config: &JaegerReceiverConfig,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    if req.uri().path() != "/api/traces" {
        return listener::plain(
            StatusCode::NOT_FOUND,
            &format!("unknown path {} (use POST /api/traces)", req.uri().path()),
        );
    }
    if req.method() != Method::POST {
        let mut resp = listener::plain(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        resp.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        return resp;
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
        return listener::http_error(&e);
    }
    let limit = config.limits.max_recv_msg_size;
    let mut body = req.into_body();
    let guard = match intake.admit(Signal::Traces) {
        Ok(g) => g,
        Err(e) => {
            intake.counters().refused(Signal::Traces, TRANSPORT, 0, &e);
            listener::discard_body(&mut body, limit).await;
            return listener::http_error(&e);
        }
    };
    let raw = match listener::read_body(&mut body, limit, config.limits.read_timeout, &guard).await
    {
        Ok(b) => b,
        Err(e) => {
            let e = listener::body_error(intake, Signal::Traces, TRANSPORT, e, limit);
            return listener::http_error(&e);
        }
    };
    let translated = jaeger::thrift_to_otlp(&raw).map_err(|e| IngestError::Invalid(e.to_string()));
    drop(raw);
    listener::accept_translated(intake, TRANSPORT, &guard, translated).await
}
