//! HTTP/1.1 POSTs over keep-alive connections, one per sender task of the core: the transport
//! of `otlphttp`, `prometheusremotewrite` and `loki`.

use std::cell::RefCell;
use std::time::Duration;

use ::http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, HOST};
use ::http::{Method, Request, Response, StatusCode};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::{drive, read_body, with_timeout, ChunkBody, Route, Target};
use crate::error::ExportError;

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

    /// POSTs `body` along `route` (number `route_index` of the exporter's routes) over sender
    /// `worker`'s connection (reused when it is still open, else a new one), and reads the
    /// whole response, all within `timeout`.
    pub(crate) async fn post(
        &self,
        worker: usize,
        route_index: usize,
        route: &Route,
        headers: &HeaderMap,
        body: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<FullResponse, ExportError> {
        let target = &route.target;
        let len: usize = body.iter().map(Bytes::len).sum();
        let mut request = Request::new(ChunkBody::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = route.path.clone();
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
            if let Some(mut pooled) = pooled.filter(|p| p.route == route_index) {
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
                *slot.borrow_mut() = Some(PooledConnection {
                    route: route_index,
                    sender,
                });
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
    drive(connection);
    Ok(sender)
}
