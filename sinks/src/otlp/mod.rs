//! OTLP exporters over the network: gRPC (`otlp`) and HTTP/protobuf (`otlphttp`).
//!
//! Both send the batch's protobuf bytes as they are (optionally compressed),
//! connect lazily on the current core, and reconnect after a failure.

pub(crate) mod grpc;
pub(crate) mod http;

use std::future::Future;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use prost::Message;

use crate::error::ExportError;
use crate::net::GlommioIo;

/// Largest response body read; OTLP answers are tiny.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Where requests of one exporter (or one signal of it) go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `host:port` as sent in `Host` / `:authority`.
    pub authority: String,
}

impl Target {
    /// Opens a TCP connection; host names are resolved off the reactor.
    pub(crate) async fn connect(&self) -> Result<GlommioIo, ExportError> {
        let addr = self.resolve().await?;
        GlommioIo::connect_addr(addr)
            .await
            .map_err(|source| ExportError::Connect {
                addr: self.authority.clone(),
                source,
            })
    }

    async fn resolve(&self) -> Result<SocketAddr, ExportError> {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        // getaddrinfo blocks: run it on glommio's blocking thread pool.
        let (host, port) = (self.host.clone(), self.port);
        let found = glommio::executor()
            .spawn_blocking(move || {
                (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|mut addrs| addrs.next())
            })
            .await;
        match found {
            Ok(Some(addr)) => Ok(addr),
            Ok(None) => Err(ExportError::Resolve {
                host: self.host.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            }),
            Err(source) => Err(ExportError::Resolve {
                host: self.host.clone(),
                source,
            }),
        }
    }
}

/// What the backend said about an accepted request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ExportReply {
    /// Items the backend rejected (`partial_success`).
    pub rejected: u64,
    /// The backend's explanation for the rejection.
    pub message: String,
}

/// `Export{Trace,Metrics,Logs}ServiceResponse`: the three share this shape.
#[derive(Clone, PartialEq, Message)]
struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

/// `Export*PartialSuccess`: `rejected_{spans,data_points,log_records}` and `error_message`.
#[derive(Clone, PartialEq, Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// Reads the partial success out of an encoded `Export*ServiceResponse`;
/// an undecodable response counts as full success (the data was accepted).
pub(crate) fn parse_export_response(body: &[u8]) -> ExportReply {
    match ExportResponse::decode(body) {
        Ok(ExportResponse {
            partial_success: Some(p),
        }) => ExportReply {
            rejected: u64::try_from(p.rejected).unwrap_or(0),
            message: p.error_message,
        },
        _ => ExportReply::default(),
    }
}

/// Reads a whole response body (bounded), mapping errors.
pub(crate) async fn read_body(
    body: hyper::body::Incoming,
) -> Result<(Bytes, Option<::http::HeaderMap>), ExportError> {
    let collected = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|err| match err.downcast::<hyper::Error>() {
            Ok(source) => ExportError::Transport { source: *source },
            Err(_) => ExportError::MalformedResponse {
                reason: "response body larger than 1 MiB",
            },
        })?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}

/// Runs `attempt`, failing with [`ExportError::Timeout`] after `after` (zero: no limit).
pub(crate) async fn with_timeout<T>(
    after: Duration,
    attempt: impl Future<Output = Result<T, ExportError>>,
) -> Result<T, ExportError> {
    if after.is_zero() {
        return attempt.await;
    }
    futures_lite::future::or(attempt, async {
        glommio::timer::sleep(after).await;
        Err(ExportError::Timeout { after })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_success_is_read_for_any_signal() {
        let response = ExportResponse {
            partial_success: Some(PartialSuccess {
                rejected: 7,
                error_message: "span too old".into(),
            }),
        };
        let reply = parse_export_response(&response.encode_to_vec());
        assert_eq!(reply.rejected, 7);
        assert_eq!(reply.message, "span too old");
        assert_eq!(parse_export_response(&[]), ExportReply::default());
        assert_eq!(parse_export_response(&[0xff, 0xff]), ExportReply::default());
    }
}
