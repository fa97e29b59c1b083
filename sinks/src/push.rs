//! What the storage exporters (`prometheusremotewrite`, `loki`) share: POSTing a prepared,
//! snappy-compressed body over the HTTP/1.1 transport and reading the answer the way their
//! clients do.

use std::time::Duration;

use ::http::header::{HeaderMap, HeaderValue, USER_AGENT};
use bytes::Bytes;

use crate::error::ExportError;
use crate::transport::http1::{ConnectionPool, FullResponse};
use crate::transport::{retry_after, text_excerpt, Route};

/// Where a storage exporter posts its prepared bodies.
pub(crate) struct StorageEndpoint {
    route: Route,
    /// Every request header but `host` and `content-length`.
    headers: HeaderMap,
    timeout: Duration,
    pool: ConnectionPool,
}

impl StorageEndpoint {
    /// `headers` holds the configured headers and the body format's; `user-agent` is added
    /// here. `senders` sizes the connection pool.
    pub(crate) fn new(
        route: Route,
        mut headers: HeaderMap,
        timeout: Duration,
        senders: usize,
    ) -> Self {
        headers.insert(USER_AGENT, HeaderValue::from_static(crate::USER_AGENT));
        Self {
            route,
            headers,
            timeout,
            pool: ConnectionPool::new(senders),
        }
    }

    /// POSTs a prepared body on sender `worker`'s connection; 2xx is success.
    pub(crate) async fn push(&self, worker: usize, body: Vec<Bytes>) -> Result<(), ExportError> {
        let response = self
            .pool
            .post(worker, 0, &self.route, &self.headers, body, self.timeout)
            .await?;
        storage_response(response)
    }
}

/// A storage backend's answer (Prometheus remote write, Loki push): 2xx is success, anything
/// else an [`ExportError::Push`] with the start of the body and `Retry-After`.
fn storage_response(response: FullResponse) -> Result<(), ExportError> {
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
