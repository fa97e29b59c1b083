//! `otlphttp`: OTLP/HTTP protobuf POSTs over HTTP/1.1 keep-alive connections,
//! one per sender task of the core (a small, fixed pool, see [`ConnectionPool`]).

use std::time::Duration;

use ::http::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT};
use prost::Message;
use shardtel_protocol::compression::Encoding;

use super::{parse_export_response, payload};
use crate::batch::Batch;
use crate::error::{ExportError, ExportReply};
use crate::retry::RpcStatus;
use crate::transport::http1::{ConnectionPool, FullResponse};
use crate::transport::{retry_after, text_excerpt, Route};

/// One `otlphttp` exporter on one core.
pub(crate) struct OtlpHttpExporter {
    /// Traces, metrics, logs.
    routes: [Route; 3],
    encoding: Encoding,
    timeout: Duration,
    headers: HeaderMap,
    /// One idle-or-busy connection per sender task.
    pool: ConnectionPool,
}

impl OtlpHttpExporter {
    /// `headers` already holds the configured headers; `senders` sizes the pool.
    pub(crate) fn new(
        routes: [Route; 3],
        encoding: Encoding,
        timeout: Duration,
        mut headers: HeaderMap,
        senders: usize,
    ) -> Self {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(USER_AGENT, HeaderValue::from_static(crate::USER_AGENT));
        if encoding != Encoding::Identity {
            headers.insert(
                CONTENT_ENCODING,
                HeaderValue::from_static(encoding.as_str()),
            );
        }
        Self {
            routes,
            encoding,
            timeout,
            headers,
            pool: ConnectionPool::new(senders),
        }
    }

    /// POSTs `batch` on sender `worker`'s connection.
    pub(crate) async fn export(
        &self,
        worker: usize,
        batch: &Batch,
    ) -> Result<ExportReply, ExportError> {
        let route = batch.signal.index();
        let payload = payload(batch, self.encoding).await;
        let response = self
            .pool
            .post(
                worker,
                route,
                &self.routes[route],
                &self.headers,
                payload,
                self.timeout,
            )
            .await?;
        read_response(response)
    }
}

/// 2xx: the partial success from the body; otherwise the status, the
/// `google.rpc.Status` message (or the start of a text body) and `Retry-After`.
fn read_response(response: FullResponse) -> Result<ExportReply, ExportError> {
    let FullResponse {
        status,
        headers,
        body: data,
    } = response;
    let is_protobuf = headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf"));
    if status.is_success() {
        return Ok(if is_protobuf {
            parse_export_response(&data)
        } else {
            ExportReply::default()
        });
    }
    let message = match RpcStatus::decode(data.as_ref()) {
        Ok(status) if is_protobuf => status.message,
        _ => text_excerpt(&data),
    };
    Err(ExportError::Http {
        status,
        message,
        retry_after: retry_after(&headers),
    })
}
