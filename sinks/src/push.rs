//! HTTP/1.1 POSTs over keep-alive connections, one per sender task of the core: the transport
//! of `otlphttp`, `prometheusremotewrite` and `loki`.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use ::http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, HOST, RETRY_AFTER};
use ::http::{Method, Request, Response, StatusCode, Uri};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::client::conn::http1;

use crate::body::ChunkBody;
use crate::error::ExportError;
use crate::otlp::{read_body, with_timeout, Target};
use crate::retry::parse_retry_after;

struct PooledConnection {
    /// Index of the route the connection was opened for.
    route: usize,
    sender: http1::SendRequest<ChunkBody>,
}

/// One connection slot per sender task; a connection serves one route (host) at a time.
pub(crate) struct ConnectionPool {
    slots: Vec<RefCell<Option<PooledConnection>>>,
}

/// A response read in full.
pub(crate) struct FullResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ConnectionPool {
    /// A pool of `senders` slots.
    pub(crate) fn new(senders: usize) -> Self {
        Self {
            slots: (0..senders.max(1)).map(|_| RefCell::new(None)).collect(),
        }
    }

    /// POSTs `body` to `path` on `target` over sender `worker`'s connection (reused when it is
    /// still open, else a new one), and reads the whole response, all within `timeout`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn post(
        &self,
        worker: usize,
        route: usize,
        target: &Target,
        path: &Uri,
        headers: &HeaderMap,
        body: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<FullResponse, ExportError> {
        let len: usize = body.iter().map(Bytes::len).sum();
        let mut request = Request::new(ChunkBody::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = path.clone();
        let h = request.headers_mut();
        *h = headers.clone();
        h.insert(
            HOST,
            HeaderValue::from_str(&target.authority).expect("authority was validated at start"),
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        let slot = &self.slots[worker % self.slots.len()];
        with_timeout(timeout, async {
            let pooled = slot.borrow_mut().take();
            let mut reused = None;
            if let Some(mut pooled) = pooled.filter(|p| p.route == route) {
                // A kept-alive connection the server closed meanwhile fails `ready`: that is
                // no failed attempt, just a reconnect.
                if pooled.sender.ready().await.is_ok() {
                    reused = Some(pooled.sender);
                }
            }
            let mut sender = match reused {
                Some(sender) => sender,
                None => {
                    let mut fresh = connect(target).await?;
                    fresh
                        .ready()
                        .await
                        .map_err(|source| ExportError::Transport { source })?;
                    fresh
                }
            };
            let response: Response<Incoming> = sender
                .send_request(request)
                .await
                .map_err(|source| ExportError::Transport { source })?;
            let (parts, body) = response.into_parts();
            let (body, _) = read_body(body).await?;
            // The body was read in full, so the connection can take the next request.
            if !sender.is_closed() {
                *slot.borrow_mut() = Some(PooledConnection { route, sender });
            }
            Ok(FullResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        })
        .await
    }
}

async fn connect(target: &Target) -> Result<http1::SendRequest<ChunkBody>, ExportError> {
    let io = target.connect().await?;
    let (sender, connection) = http1::handshake::<_, ChunkBody>(io)
        .await
        .map_err(|source| ExportError::Transport { source })?;
    glommio::spawn_local(async move {
        if let Err(err) = connection.await {
            log::debug!("http connection closed: {err}");
        }
    })
    .detach();
    Ok(sender)
}

/// The `Retry-After` of a response, if any.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| parse_retry_after(v.as_bytes(), SystemTime::now()))
}

/// The first line of a body, at most 200 characters.
pub(crate) fn text_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(800)]);
    let line = text.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

/// Where a storage exporter (`prometheusremotewrite`, `loki`) posts its prepared bodies.
pub(crate) struct StorageEndpoint {
    pub target: Target,
    pub path: Uri,
    /// Every request header but `host` and `content-length`.
    pub headers: HeaderMap,
    pub timeout: Duration,
    pub pool: ConnectionPool,
}

impl StorageEndpoint {
    /// POSTs a prepared body on sender `worker`'s connection; 2xx is success.
    pub(crate) async fn push(&self, worker: usize, body: Vec<Bytes>) -> Result<(), ExportError> {
        let response = self
            .pool
            .post(
                worker,
                0,
                &self.target,
                &self.path,
                &self.headers,
                body,
                self.timeout,
            )
            .await?;
        storage_response(response)
    }
}

/// A storage backend's answer (Prometheus remote write, Loki push): 2xx is success, anything
/// else an [`ExportError::Push`] with the start of the body and `Retry-After`.
pub(crate) fn storage_response(response: FullResponse) -> Result<(), ExportError> {
    if response.status.is_success() {
        return Ok(());
    }
    Err(ExportError::Push {
        status: response.status,
        message: text_excerpt(&response.body),
        retry_after: retry_after(&response.headers),
    })
}

/// `raw` compressed with snappy's raw (block) format, as remote write and Loki's push API
/// want it.
pub(crate) fn snappy(raw: &[u8]) -> Bytes {
    Bytes::from(
        snap::raw::Encoder::new()
            .compress_vec(raw)
            .expect("snappy accepts any input below 4 GiB"),
    )
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
