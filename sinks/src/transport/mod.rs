//! The HTTP transport every network exporter shares (`otlp`, `otlphttp`,
//! `prometheusremotewrite`, `loki`): where requests go, how connections are opened, hyper client
//! connections over [`crate::net::GlommioIo`] on the current core, request and response bodies.
//!
//! - [`Target`]: host, port and authority, built once from a configured endpoint
//!   ([`Target::from_endpoint`], [`Route::from_endpoint`] with a request path), and
//!   [`Target::connect`]: the one place a connection to a backend is opened. An `https://`
//!   target holds the exporter's [`ClientTls`] and the name to verify (SNI, or `server_name`);
//!   `connect` runs the TLS handshake over the TCP stream before either HTTP handshake below
//!   sees it (within the attempt's timeout, like the TCP connect), and `scheme` names it in
//!   request URIs. New connections use the certificates the `ClientTls` holds now (it re-reads
//!   its files); open ones keep theirs.
//! - [`http1::ConnectionPool`]: HTTP/1.1 keep-alive connections, one per sender task, posting a
//!   body and reading the whole answer ([`http1::FullResponse`]).
//! - [`http2::SharedConnection`]: one HTTP/2 connection per core, shared by its senders.
//! - [`ChunkBody`] (request bodies sent without joining their chunks), [`read_body`] (bounded
//!   response bodies), [`with_timeout`], and the response headers every exporter reads
//!   ([`retry_after`], [`text_excerpt`]).
//!
//! Errors are [`ExportError`]s (resolve, connect, transport, timeout, malformed response); what
//! a backend's answer means is up to each exporter.

mod body;
pub(crate) mod http1;
pub(crate) mod http2;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, SystemTime};

use ::http::header::{HeaderMap, RETRY_AFTER};
use ::http::Uri;
use bytes::Bytes;
use glommio::net::TcpStream;
use http_body_util::BodyExt;
use shardtel_config::Endpoint;
use shardtel_tls::rustls::pki_types::ServerName;
use shardtel_tls::{ClientStream, ClientTls};

pub(crate) use self::body::ChunkBody;
use crate::error::{ExportError, SinkError};
use crate::net::{GlommioIo, Stream};
use crate::retry::parse_retry_after;

/// Largest response body read; the backends' answers are small.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// A connection to a target: plaintext, or TLS over the socket.
pub(crate) type Connection = GlommioIo<Stream<ClientStream<TcpStream>>>;

/// Where requests of one exporter (or one signal of it) go.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `host:port` as sent in `Host` / `:authority`.
    pub authority: String,
    /// For `https://`: the exporter's TLS settings and the name the server's certificate must
    /// carry (boxed: an exporter holds a target per signal, most of them plaintext).
    tls: Option<Box<(ClientTls, ServerName<'static>)>>,
}

impl Target {
    /// The target of `exporter`'s `endpoint`: `http` (h2c for gRPC), or `https` with `tls`
    /// (the exporter's [`ClientTls`], see [`crate::client_tls`]).
    pub(crate) fn from_endpoint(
        exporter: &str,
        endpoint: &Endpoint,
        tls: Option<&ClientTls>,
    ) -> Result<Self, SinkError> {
        let tls = match endpoint.scheme.to_ascii_lowercase().as_str() {
            "http" => None,
            "https" => {
                let Some(tls) = tls else {
                    return Err(SinkError::TlsNotPrepared {
                        exporter: exporter.to_string(),
                    });
                };
                let name = tls
                    .server_name(&endpoint.host)
                    .map_err(|source| SinkError::Tls {
                        exporter: exporter.to_string(),
                        source,
                    })?;
                Some(Box::new((tls.clone(), name)))
            }
            _ => {
                return Err(SinkError::UnsupportedScheme {
                    exporter: exporter.to_string(),
                    scheme: endpoint.scheme.to_string(),
                })
            }
        };
        let authority = endpoint.authority();
        if authority.parse::<::http::uri::Authority>().is_err() {
            return Err(invalid_endpoint(exporter, endpoint));
        }
        Ok(Target {
            host: endpoint.host.to_string(),
            port: endpoint.port,
            authority,
            tls,
        })
    }

    /// The URI scheme requests to this target carry.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The absolute URI of `path` on this target (HTTP/2 requests carry one).
    pub(crate) fn uri(&self, path: &str) -> Result<Uri, ::http::Error> {
        Uri::builder()
            .scheme(self.scheme())
            .authority(self.authority.as_str())
            .path_and_query(path)
            .build()
    }

    /// Opens a connection on the current core (TCP, then the TLS handshake for `https`);
    /// host names are resolved off the reactor.
    pub(crate) async fn connect(&self) -> Result<Connection, ExportError> {
        let addr = self.resolve().await?;
        let connected = TcpStream::connect(addr).await.map_err(io::Error::from);
        let tcp = connected.map_err(|source| ExportError::Connect {
            addr: self.authority.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let Some((tls, name)) = self.tls.as_deref() else {
            return Ok(GlommioIo::over(Stream::Plain(tcp)));
        };
        let session = tls.connect(tcp, name.clone()).await;
        let session = session.map_err(|source| ExportError::Tls {
            addr: self.authority.clone(),
            source,
        })?;
        Ok(GlommioIo::over(Stream::Tls(Box::new(session))))
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

/// A target and the path requests are posted to (`http://host:port/path`).
#[derive(Clone, Debug)]
pub(crate) struct Route {
    /// Host and port.
    pub target: Target,
    /// Request path, e.g. `/v1/traces`; `/` when the endpoint has none.
    pub path: Uri,
}

impl Route {
    /// The route of `exporter`'s `endpoint` (`tls`: as for [`Target::from_endpoint`]).
    pub(crate) fn from_endpoint(
        exporter: &str,
        endpoint: &Endpoint,
        tls: Option<&ClientTls>,
    ) -> Result<Self, SinkError> {
        let path = endpoint
            .path_or_root()
            .parse::<Uri>()
            .map_err(|_| invalid_endpoint(exporter, endpoint))?;
        Ok(Route {
            target: Target::from_endpoint(exporter, endpoint, tls)?,
            path,
        })
    }
}

/// The error for an endpoint that does not form a valid URI.
pub(crate) fn invalid_endpoint(exporter: &str, endpoint: &Endpoint) -> SinkError {
    SinkError::InvalidEndpoint {
        exporter: exporter.to_string(),
        endpoint: endpoint.to_string(),
    }
}

/// Runs a client connection (hyper's I/O half, after the handshake) as a task of this core
/// until the peer or the last sender closes it.
fn drive(connection: impl Future<Output = Result<(), hyper::Error>> + 'static) {
    glommio::spawn_local(async move {
        if let Err(err) = connection.await {
            log::debug!("http connection closed: {err}");
        }
    })
    .detach();
}

/// Reads a whole response body (bounded) and its trailers, mapping errors.
pub(crate) async fn read_body(
    body: hyper::body::Incoming,
) -> Result<(Bytes, Option<HeaderMap>), ExportError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(text: &str) -> Endpoint {
        text.parse().unwrap()
    }

    #[test]
    fn https_targets_need_their_tls_settings_and_say_https() {
        let plain = Target::from_endpoint("e", &endpoint("http://127.0.0.1:4317"), None).unwrap();
        assert_eq!(plain.scheme(), "http");
        let https = endpoint("https://127.0.0.1:4317");
        let err = Target::from_endpoint("e", &https, None).unwrap_err();
        assert!(matches!(err, SinkError::TlsNotPrepared { .. }), "{err}");
        let settings = shardtel_config::ClientTlsConfig {
            insecure_skip_verify: true,
            ..Default::default()
        };
        let tls = ClientTls::new("exporters.e.tls", &settings, &[]).unwrap();
        let target = Target::from_endpoint("e", &https, Some(&tls)).unwrap();
        assert_eq!(target.scheme(), "https");
        assert_eq!(
            target.uri("/x").unwrap().to_string(),
            "https://127.0.0.1:4317/x"
        );
        let ftp = endpoint("http://127.0.0.1:1");
        let ftp = Endpoint {
            scheme: "ftp".into(),
            ..ftp
        };
        let err = Target::from_endpoint("e", &ftp, Some(&tls)).unwrap_err();
        assert!(matches!(err, SinkError::UnsupportedScheme { .. }), "{err}");
    }

    #[test]
    fn excerpt_is_short_and_single_line() {
        assert_eq!(text_excerpt(b"bad request\nmore"), "bad request");
        assert_eq!(text_excerpt(&[b'x'; 1000]).len(), 200);
        assert_eq!(text_excerpt(b""), "");
    }
}
