//! One target's HTTP client: a kept-alive HTTP/1.1 connection (plain, or TLS through
//! `shardtel-tls`), a `GET` with the scrape's headers, a body read up to `body_size_limit`
//! (after gzip), all within `scrape_timeout`.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use http::header::{
    HeaderValue, ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HOST,
    USER_AGENT,
};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use shardtel_protocol::compression::{decompress, Encoding};
use shardtel_protocol::exposition::ScrapeFormat;
use shardtel_sinks::net::GlommioIo;
use shardtel_tls::{ClientStream, ClientTls};

/// Why a scrape got no body; the reason is logged and the scrape counts as failed (`up` 0).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        source: io::Error,
    },
    /// The TCP connection or the TLS handshake failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// HTTP failed (connection closed, malformed response).
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The target answered with a status other than 200.
    #[error("server returned HTTP status {0}")]
    Status(StatusCode),
    /// The body (uncompressed) is larger than `body_size_limit`.
    #[error("body larger than body_size_limit ({0} bytes)")]
    TooLarge(usize),
    /// The gzip body is corrupt.
    #[error("corrupt gzip body")]
    Corrupt,
    /// The core started draining during the scrape.
    #[error("shutting down")]
    Draining,
    /// The scrape took longer than `scrape_timeout`.
    #[error("scrape timed out after {0:?}")]
    Timeout(Duration),
}

/// What requests to one target carry.
pub(super) struct Endpoint {
    /// Host (without brackets) and port to connect to.
    pub(super) host: String,
    pub(super) port: u16,
    /// `Host` header (`host:port`).
    pub(super) authority: HeaderValue,
    /// Path and query.
    pub(super) path_and_query: String,
    pub(super) accept: HeaderValue,
    pub(super) authorization: Option<HeaderValue>,
    /// `Some` for `https`.
    pub(super) tls: Option<ClientTls>,
    pub(super) body_size_limit: usize,
    pub(super) timeout: Duration,
}

/// A target's connection, kept between scrapes.
#[derive(Default)]
pub(super) struct Connection {
    sender: Option<http1::SendRequest<Empty<Bytes>>>,
}

impl Connection {
    /// Scrapes `endpoint` once: the body (decompressed) and its format.
    pub(super) async fn fetch(
        &mut self,
        endpoint: &Endpoint,
    ) -> Result<(Bytes, ScrapeFormat), FetchError> {
        let timeout = endpoint.timeout;
        let attempt = self.fetch_unbounded(endpoint);
        let result = futures_lite::future::or(attempt, async {
            glommio::timer::sleep(timeout).await;
            Err(FetchError::Timeout(timeout))
        })
        .await;
        if result.is_err() {
            // A timed-out or failed exchange leaves the connection in an unknown state.
            self.sender = None;
        }
        result
    }

    async fn fetch_unbounded(
        &mut self,
        endpoint: &Endpoint,
    ) -> Result<(Bytes, ScrapeFormat), FetchError> {
        let mut reused = None;
        if let Some(mut s) = self.sender.take() {
            // A kept-alive connection the target closed meanwhile: connect again.
            if s.ready().await.is_ok() {
                reused = Some(s);
            }
        }
        let mut sender = match reused {
            Some(s) => s,
            None => connect(endpoint).await?,
        };
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = endpoint
            .path_and_query
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/metrics"));
        let h = request.headers_mut();
        h.insert(HOST, endpoint.authority.clone());
        h.insert(ACCEPT, endpoint.accept.clone());
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("shardtel/", env!("CARGO_PKG_VERSION"))),
        );
        let seconds = format!("{}", endpoint.timeout.as_secs_f64());
        if let Ok(v) = HeaderValue::from_str(&seconds) {
            h.insert("x-prometheus-scrape-timeout-seconds", v);
        }
        if let Some(auth) = &endpoint.authorization {
            h.insert(AUTHORIZATION, auth.clone());
        }
        let response = sender.send_request(request).await?;
        let (parts, mut body) = response.into_parts();
        let gzip = parts
            .headers
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        let format = ScrapeFormat::from_content_type(
            parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        );
        let limit = endpoint.body_size_limit;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(FetchError::TooLarge(limit));
                }
                buf.extend_from_slice(&data);
            }
        }
        if parts.status != StatusCode::OK {
            return Err(FetchError::Status(parts.status));
        }
        if !sender.is_closed() {
            self.sender = Some(sender);
        }
        let body = if gzip {
            decompress(Encoding::Gzip, &buf, limit).map_err(|e| match e {
                shardtel_protocol::compression::DecompressError::TooLarge { .. } => {
                    FetchError::TooLarge(limit)
                }
                _ => FetchError::Corrupt,
            })?
        } else {
            Bytes::from(buf)
        };
        Ok((body, format))
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, FetchError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    // getaddrinfo blocks: glommio's blocking thread pool runs it.
    let name = host.to_string();
    let found = glommio::executor()
        .spawn_blocking(move || {
            (name.as_str(), port)
                .to_socket_addrs()
                .map(|mut a| a.next())
        })
        .await;
    match found {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err(FetchError::Resolve {
            host: host.to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
        }),
        Err(source) => Err(FetchError::Resolve {
            host: host.to_string(),
            source,
        }),
    }
}

async fn connect(endpoint: &Endpoint) -> Result<http1::SendRequest<Empty<Bytes>>, FetchError> {
    let addr = resolve(&endpoint.host, endpoint.port).await?;
    let connect_error = |source: io::Error| FetchError::Connect {
        addr: addr.to_string(),
        source,
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| connect_error(e.into()))?;
    let _ = stream.set_nodelay(true);
    let sender = match &endpoint.tls {
        None => {
            let (sender, connection) = http1::handshake(GlommioIo::new(stream)).await?;
            drive(connection);
            sender
        }
        Some(tls) => {
            let name = tls
                .server_name(&endpoint.host)
                .map_err(|e| connect_error(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
            let stream = tls.connect(stream, name).await.map_err(connect_error)?;
            let (sender, connection) = http1::handshake(TlsIo::new(stream)).await?;
            drive(connection);
            sender
        }
    };
    Ok(sender)
}

fn drive(connection: impl std::future::Future<Output = Result<(), hyper::Error>> + 'static) {
    glommio::spawn_local(async move {
        if let Err(e) = connection.await {
            log::debug!("scrape connection closed: {e}");
        }
    })
    .detach();
}

/// A TLS stream (futures-io) seen through hyper's I/O traits. Reads go through a small buffer
/// (the engine has no `unsafe` to fill hyper's cursor in place); scrape bodies are small.
struct TlsIo {
    stream: ClientStream<TcpStream>,
    scratch: Box<[u8; 16 << 10]>,
}

impl TlsIo {
    fn new(stream: ClientStream<TcpStream>) -> Self {
        TlsIo {
            stream,
            scratch: Box::new([0; 16 << 10]),
        }
    }
}

impl hyper::rt::Read for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let n = buf.remaining().min(this.scratch.len());
        match Pin::new(&mut this.stream).poll_read(cx, &mut this.scratch[..n]) {
            Poll::Ready(Ok(read)) => {
                buf.put_slice(&this.scratch[..read]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}
