//! `otlphttp`: OTLP/HTTP protobuf POSTs over HTTP/1.1 keep-alive connections,
//! one per sender task of the core (a small, fixed pool).

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use ::http::header::{
    HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER,
    USER_AGENT,
};
use ::http::{Method, Request, Response, Uri};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use prost::Message;
use shardtel_protocol::compression::{compress, Encoding};

use super::{parse_export_response, read_body, with_timeout, ExportReply, Target};
use crate::batch::Batch;
use crate::body::ChunkBody;
use crate::error::ExportError;
use crate::offload;
use crate::retry::{parse_retry_after, RpcStatus};
use crate::stats::signal_index;

/// Where one signal is posted.
#[derive(Clone, Debug)]
pub(crate) struct SignalRoute {
    /// Host and port.
    pub target: Target,
    /// Request path, e.g. `/v1/traces`.
    pub path: Uri,
}

struct PooledConnection {
    /// Index of the route (signal) the connection was opened for.
    route: usize,
    sender: http1::SendRequest<ChunkBody>,
}

/// One `otlphttp` exporter on one core.
pub(crate) struct OtlpHttpExporter {
    /// Traces, metrics, logs.
    routes: [SignalRoute; 3],
    encoding: Encoding,
    timeout: Duration,
    headers: HeaderMap,
    /// One idle-or-busy connection per sender task.
    pool: Vec<RefCell<Option<PooledConnection>>>,
}

impl OtlpHttpExporter {
    /// `headers` already holds the configured headers; `senders` sizes the pool.
    pub(crate) fn new(
        routes: [SignalRoute; 3],
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
            pool: (0..senders).map(|_| RefCell::new(None)).collect(),
        }
    }

    /// POSTs `batch` on sender `worker`'s connection.
    pub(crate) async fn export(
        &self,
        worker: usize,
        batch: &Batch,
    ) -> Result<ExportReply, ExportError> {
        let route = signal_index(batch.signal);
        let request = self.request(route, batch).await;
        let slot = &self.pool[worker % self.pool.len()];
        with_timeout(self.timeout, async {
            let pooled = slot.borrow_mut().take();
            let mut reused = None;
            if let Some(mut pooled) = pooled.filter(|p| p.route == route) {
                // A kept-alive connection the server closed meanwhile fails
                // `ready`: that is no failed attempt, just a reconnect.
                if pooled.sender.ready().await.is_ok() {
                    reused = Some(pooled.sender);
                }
            }
            let mut sender = match reused {
                Some(sender) => sender,
                None => {
                    let mut fresh = self.connect(route).await?;
                    fresh
                        .ready()
                        .await
                        .map_err(|source| ExportError::Transport { source })?;
                    fresh
                }
            };
            let response = sender
                .send_request(request)
                .await
                .map_err(|source| ExportError::Transport { source })?;
            let result = read_response(response).await;
            // The body was read in full, so the connection can take the next request.
            if !matches!(result, Err(ExportError::Transport { .. })) && !sender.is_closed() {
                *slot.borrow_mut() = Some(PooledConnection { route, sender });
            }
            result
        })
        .await
    }

    async fn request(&self, route: usize, batch: &Batch) -> Request<ChunkBody> {
        let payload = match self.encoding {
            Encoding::Identity => batch.chunks.clone(),
            encoding => {
                let chunks = batch.chunks.clone();
                vec![offload::run(batch.bytes, move || compress(encoding, &chunks)).await]
            }
        };
        let len: usize = payload.iter().map(Bytes::len).sum();
        let mut request = Request::new(ChunkBody::new(payload));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.routes[route].path.clone();
        let headers = request.headers_mut();
        *headers = self.headers.clone();
        headers.insert(
            HOST,
            HeaderValue::from_str(&self.routes[route].target.authority)
                .expect("authority was validated at start"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        request
    }

    async fn connect(&self, route: usize) -> Result<http1::SendRequest<ChunkBody>, ExportError> {
        let io = self.routes[route].target.connect().await?;
        let (sender, connection) = http1::handshake::<_, ChunkBody>(io)
            .await
            .map_err(|source| ExportError::Transport { source })?;
        glommio::spawn_local(async move {
            if let Err(err) = connection.await {
                log::debug!("otlp http connection closed: {err}");
            }
        })
        .detach();
        Ok(sender)
    }
}

/// 2xx: the partial success from the body; otherwise the status, the
/// `google.rpc.Status` message (or the start of a text body) and `Retry-After`.
async fn read_response(response: Response<Incoming>) -> Result<ExportReply, ExportError> {
    let (parts, body) = response.into_parts();
    let (data, _) = read_body(body).await?;
    let is_protobuf = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf"));
    if parts.status.is_success() {
        return Ok(if is_protobuf {
            parse_export_response(&data)
        } else {
            ExportReply::default()
        });
    }
    let retry_after = parts
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| parse_retry_after(v.as_bytes(), SystemTime::now()));
    let message = match RpcStatus::decode(data.as_ref()) {
        Ok(status) if is_protobuf => status.message,
        _ => text_excerpt(&data),
    };
    Err(ExportError::Http {
        status: parts.status,
        message,
        retry_after,
    })
}

/// The first line of a body, at most 200 characters.
fn text_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(800)]);
    let line = text.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_short_and_single_line() {
        assert_eq!(text_excerpt(b"bad request\nmore"), "bad request");
        assert_eq!(text_excerpt(&[b'x'; 1000]).len(), 200);
        assert_eq!(text_excerpt(b""), "");
    }
}
