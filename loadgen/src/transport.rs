//! Talking to the target: endpoints, TLS, HTTP/1.1 and HTTP/2 connections, and turning a
//! response into an [`Outcome`].
//!
//! OTLP/gRPC is a unary POST over HTTP/2 (h2c, or TLS with ALPN `h2`); the result is the
//! `grpc-status` in the trailers, or in the headers of a trailers-only response.
//! OTLP/HTTP is a POST to `/v1/traces` (etc.) over HTTP/1.1, or HTTP/2 with `--http2`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::outcome::{classify_grpc, classify_http_error, classify_hyper_error, Outcome, Reason};
use crate::wire::{self, Compression, Signal};

/// How OTLP travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (protobuf, HTTP/2).
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    HttpJson,
}

impl Protocol {
    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http-protobuf",
            Protocol::HttpJson => "http-json",
        }
    }

    /// The port OTLP uses for this protocol by convention.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Grpc => 4317,
            _ => 4318,
        }
    }
}

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// TLS (https / grpcs).
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Request path.
    pub path: String,
}

impl Endpoint {
    /// Parses `http[s]://host[:port][/path]` (also `grpc://`, `grpcs://`, or a bare
    /// `host:port`). gRPC always posts to the signal's service method; OTLP/HTTP uses
    /// `path_override`, else a non-root path in the URL, else `/v1/<signal>`.
    pub fn parse(
        url: &str,
        protocol: Protocol,
        signal: Signal,
        path_override: Option<&str>,
    ) -> Result<Self> {
        let with_scheme = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let uri: Uri = with_scheme
            .parse()
            .with_context(|| format!("invalid endpoint {url:?}"))?;
        let tls = match uri.scheme_str() {
            Some("http") | Some("grpc") => false,
            Some("https") | Some("grpcs") => true,
            other => bail!("unsupported endpoint scheme {other:?}: use http, https, grpc or grpcs"),
        };
        let Some(host) = uri.host() else {
            bail!("endpoint {url:?} has no host");
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(protocol.default_port());
        let url_path = uri.path();
        let path = match protocol {
            Protocol::Grpc => signal.grpc_path().to_string(),
            _ => match path_override {
                Some(p) => p.to_string(),
                None if !url_path.is_empty() && url_path != "/" => url_path.to_string(),
                None => signal.http_path().to_string(),
            },
        };
        if !path.starts_with('/') {
            bail!("request path {path:?} must start with '/'");
        }
        Ok(Self {
            tls,
            host,
            port,
            path,
        })
    }

    /// `host:port`, bracketing IPv6 addresses.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The full URL.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority(), self.path)
    }
}

/// TLS options.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Accept any server certificate (testing only).
    pub insecure_skip_verify: bool,
    /// Trust the certificates in this PEM file (instead of the built-in web roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// Name to verify the certificate against (default: the endpoint host).
    pub server_name: Option<String>,
    /// Client certificate chain (PEM) to present (mTLS); needs `client_key`.
    pub client_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of `client_cert`.
    pub client_key: Option<std::path::PathBuf>,
}

/// Everything a worker needs to open connections and send requests.
#[derive(Clone)]
pub struct Transport {
    /// The target.
    pub endpoint: Endpoint,
    /// OTLP flavour.
    pub protocol: Protocol,
    /// Which signal (for response decoding).
    pub signal: Signal,
    /// HTTP/2 (always for gRPC; `--http2` for OTLP/HTTP).
    pub http2: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    uri: Uri,
    headers: HeaderMap,
}

impl Transport {
    /// Prepares TLS and the fixed request headers.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        endpoint: Endpoint,
        protocol: Protocol,
        signal: Signal,
        http2: bool,
        compression: Compression,
        timeout: Duration,
        tls: &TlsOptions,
        extra_headers: &[(String, String)],
    ) -> Result<Self> {
        let http2 = http2 || protocol == Protocol::Grpc;
        if !endpoint.tls && tls.client_cert.is_some() {
            bail!(
                "--client-cert needs a TLS endpoint (https:// or grpcs://), not {}",
                endpoint.url()
            );
        }
        let tls = if endpoint.tls {
            let config = client_tls_config(tls, http2)?;
            let name = tls
                .server_name
                .clone()
                .unwrap_or_else(|| endpoint.host.clone());
            let server_name = ServerName::try_from(name.clone())
                .with_context(|| format!("invalid tls server name {name:?}"))?;
            Some((
                tokio_rustls::TlsConnector::from(Arc::new(config)),
                server_name,
            ))
        } else {
            None
        };
        let uri: Uri = if http2 {
            endpoint.url().parse()?
        } else {
            endpoint.path.parse()?
        };
        let mut headers = HeaderMap::new();
        let content_type = match protocol {
            Protocol::Grpc => "application/grpc",
            Protocol::HttpProtobuf => "application/x-protobuf",
            Protocol::HttpJson => "application/json",
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("shardtel-loadgen/", env!("CARGO_PKG_VERSION"))),
        );
        if !http2 {
            headers.insert(
                http::header::HOST,
                HeaderValue::from_str(&endpoint.authority())?,
            );
        }
        if protocol == Protocol::Grpc {
            headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
            headers.insert(
                HeaderName::from_static("grpc-accept-encoding"),
                HeaderValue::from_static("identity,gzip,zstd"),
            );
            if let Some(enc) = compression.header_value() {
                headers.insert(
                    HeaderName::from_static("grpc-encoding"),
                    HeaderValue::from_static(enc),
                );
            }
        } else if let Some(enc) = compression.header_value() {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(enc));
        }
        for (k, v) in extra_headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .with_context(|| format!("invalid header name {k:?}"))?;
            let value = HeaderValue::from_str(v)
                .with_context(|| format!("invalid header value for {k}"))?;
            headers.append(name, value);
        }
        Ok(Self {
            endpoint,
            protocol,
            signal,
            http2,
            timeout,
            tls,
            uri,
            headers,
        })
    }

    /// Opens one connection. The connection's driver runs as a tokio task; `on_close`
    /// is called when it ends.
    pub async fn connect(&self, on_close: impl FnOnce() + Send + 'static) -> Result<Sender> {
        let tcp = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .with_context(|| format!("failed to connect to {}", self.endpoint.authority()))?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => self.handshake(tcp, on_close).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .with_context(|| {
                        format!("tls handshake with {} failed", self.endpoint.authority())
                    })?;
                self.handshake(tls, on_close).await
            }
        }
    }

    async fn handshake<T>(&self, io: T, on_close: impl FnOnce() + Send + 'static) -> Result<Sender>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if self.http2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(16 << 20)
                .max_frame_size(64 << 10)
                .handshake::<_, Full<Bytes>>(io)
                .await
                .context("http/2 handshake failed")?;
            tokio::spawn(async move {
                let _ = conn.await;
                on_close();
            });
            Ok(Sender::Http2(sender))
        } else {
            let (sender, conn) = http1::Builder::new()
                .handshake::<_, Full<Bytes>>(io)
                .await
                .context("http/1.1 handshake failed")?;
            tokio::spawn(async move {
                let _ = conn.await;
                on_close();
            });
            Ok(Sender::Http1(sender))
        }
    }

    /// Builds the request for one body.
    pub fn request(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// Sends one request on `sender` and classifies the response, within the timeout.
    pub async fn execute(&self, sender: &mut Sender, body: Bytes) -> Outcome {
        let req = self.request(body);
        match tokio::time::timeout(self.timeout, self.exchange(sender, req)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Failed(Reason::Timeout),
        }
    }

    async fn exchange(&self, sender: &mut Sender, req: Request<Full<Bytes>>) -> Outcome {
        let sent = match sender {
            Sender::Http2(s) => s.send_request(req).await,
            Sender::Http1(s) => match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            },
        };
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(Reason::Transport(classify_hyper_error(&e))),
        };
        let (parts, body) = resp.into_parts();
        let collected = match body.collect().await {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(Reason::Transport(classify_hyper_error(&e))),
        };
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        if self.protocol == Protocol::Grpc {
            grpc_outcome(
                self.signal,
                parts.status.as_u16(),
                &parts.headers,
                trailers.as_ref(),
                &body,
            )
        } else {
            http_outcome(
                self.signal,
                self.protocol,
                parts.status.as_u16(),
                &parts.headers,
                &body,
            )
        }
    }
}

/// A connection's request handle.
pub enum Sender {
    /// HTTP/1.1: one request at a time.
    Http1(http1::SendRequest<Full<Bytes>>),
    /// HTTP/2: many concurrent streams; cheap to clone.
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    /// A handle for one more concurrent request, if the protocol allows it.
    pub fn try_clone(&self) -> Option<Sender> {
        match self {
            Sender::Http2(s) => Some(Sender::Http2(s.clone())),
            Sender::Http1(_) => None,
        }
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::Http2(s) => s.is_closed(),
            Sender::Http1(s) => s.is_closed(),
        }
    }
}

/// Reads the outcome of a gRPC response.
pub fn grpc_outcome(
    signal: Signal,
    status: u16,
    headers: &HeaderMap,
    trailers: Option<&HeaderMap>,
    body: &[u8],
) -> Outcome {
    if status != 200 {
        return classify_http_error(status);
    }
    let code = headers
        .get("grpc-status")
        .or_else(|| trailers.and_then(|t| t.get("grpc-status")));
    let Some(code) = code else {
        return Outcome::Failed(Reason::MissingGrpcStatus);
    };
    let Some(code) = code
        .to_str()
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
    else {
        return Outcome::Failed(Reason::BadResponse);
    };
    let mut rejected = 0;
    if code == 0 {
        let encoding = headers.get("grpc-encoding").and_then(|v| v.to_str().ok());
        match wire::grpc_first_message(body, encoding) {
            Ok(Some(msg)) => match wire::rejected_items_protobuf(signal, &msg) {
                Ok(r) => rejected = r,
                Err(_) => return Outcome::Failed(Reason::BadResponse),
            },
            Ok(None) => {}
            Err(_) => return Outcome::Failed(Reason::BadResponse),
        }
    }
    classify_grpc(code, rejected)
}

/// Reads the outcome of an OTLP/HTTP response.
pub fn http_outcome(
    signal: Signal,
    protocol: Protocol,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Outcome {
    if !(200..300).contains(&status) {
        return classify_http_error(status);
    }
    if body.is_empty() {
        return Outcome::Accepted { rejected: 0 };
    }
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let Ok(plain) = wire::decompress(encoding, body) else {
        return Outcome::Failed(Reason::BadResponse);
    };
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or(protocol == Protocol::HttpJson, |ct| ct.contains("json"));
    let rejected = if json {
        wire::rejected_items_json(signal, &plain)
    } else {
        wire::rejected_items_protobuf(signal, &plain)
    };
    match rejected {
        Ok(rejected) => Outcome::Accepted { rejected },
        Err(_) => Outcome::Failed(Reason::BadResponse),
    }
}

/// Whether an outcome means the connection should be considered broken.
pub fn breaks_connection(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Failed(Reason::Transport(_)))
}

fn client_tls_config(opts: &TlsOptions, http2: bool) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?;
    let config = if opts.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(insecure::AcceptAnyCertificate(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &opts.ca_file {
            Some(path) => {
                let mut n = 0;
                for cert in CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("failed to read ca file {}", path.display()))?
                {
                    let cert =
                        cert.with_context(|| format!("bad certificate in {}", path.display()))?;
                    roots.add(cert)?;
                    n += 1;
                }
                if n == 0 {
                    bail!("no certificates in ca file {}", path.display());
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&opts.client_cert, &opts.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("failed to read client certificate {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("bad certificate in {}", cert.display()))?;
            if chain.is_empty() {
                bail!(
                    "no certificates in client certificate file {}",
                    cert.display()
                );
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("no private key in {}", key.display()))?;
            config
                .with_client_auth_cert(chain, key)
                .context("client certificate and key do not fit together")?
        }
        _ => config.with_no_client_auth(),
    };
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

mod insecure {
    //! `--insecure-skip-verify`: a certificate verifier that accepts anything.

    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// Accepts every certificate but still checks handshake signatures.
    #[derive(Debug)]
    pub struct AcceptAnyCertificate(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse(
            "http://127.0.0.1:4318",
            Protocol::HttpProtobuf,
            Signal::Traces,
            None,
        )
        .unwrap();
        assert_eq!(e.path, "/v1/traces");
        assert!(!e.tls);
        let e = Endpoint::parse(
            "grpcs://collector.example:9000",
            Protocol::Grpc,
            Signal::Logs,
            None,
        )
        .unwrap();
        assert!(e.tls);
        assert_eq!(e.port, 9000);
        assert_eq!(
            e.path,
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
        );
        let e = Endpoint::parse("localhost", Protocol::Grpc, Signal::Traces, None).unwrap();
        assert_eq!(e.port, 4317);
        let e = Endpoint::parse(
            "http://h:1/custom/path",
            Protocol::HttpJson,
            Signal::Metrics,
            None,
        )
        .unwrap();
        assert_eq!(e.path, "/custom/path");
        let e = Endpoint::parse(
            "http://[::1]:4318",
            Protocol::HttpJson,
            Signal::Metrics,
            Some("/x"),
        )
        .unwrap();
        assert_eq!(e.authority(), "[::1]:4318");
        assert_eq!(e.path, "/x");
        assert!(Endpoint::parse("ftp://h", Protocol::Grpc, Signal::Traces, None).is_err());
    }

    #[test]
    fn grpc_status_from_headers_or_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let ok_body = wire::grpc_framed(&[], false);
        assert_eq!(
            grpc_outcome(
                Signal::Traces,
                200,
                &HeaderMap::new(),
                Some(&trailers),
                &ok_body
            ),
            Outcome::Accepted { rejected: 0 }
        );
        let mut only = HeaderMap::new();
        only.insert("grpc-status", HeaderValue::from_static("14"));
        assert_eq!(
            grpc_outcome(Signal::Traces, 200, &only, None, &[]),
            Outcome::Refused(Reason::Grpc(14))
        );
        assert_eq!(
            grpc_outcome(Signal::Traces, 200, &HeaderMap::new(), None, &[]),
            Outcome::Failed(Reason::MissingGrpcStatus)
        );
        assert_eq!(
            grpc_outcome(Signal::Traces, 503, &HeaderMap::new(), None, &[]),
            Outcome::Refused(Reason::Http(503))
        );
        use opentelemetry_proto::tonic::collector::trace::v1::*;
        let partial = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 5,
                error_message: String::new(),
            }),
        }
        .encode_to_vec();
        let body = wire::grpc_framed(&partial, false);
        assert_eq!(
            grpc_outcome(
                Signal::Traces,
                200,
                &HeaderMap::new(),
                Some(&trailers),
                &body
            ),
            Outcome::Accepted { rejected: 5 }
        );
    }

    #[test]
    fn http_outcomes() {
        let h = HeaderMap::new();
        assert_eq!(
            http_outcome(Signal::Traces, Protocol::HttpProtobuf, 200, &h, &[]),
            Outcome::Accepted { rejected: 0 }
        );
        assert_eq!(
            http_outcome(Signal::Traces, Protocol::HttpProtobuf, 429, &h, &[]),
            Outcome::Refused(Reason::Http(429))
        );
        assert_eq!(
            http_outcome(
                Signal::Traces,
                Protocol::HttpJson,
                200,
                &h,
                br#"{"partialSuccess":{"rejectedSpans":2}}"#
            ),
            Outcome::Accepted { rejected: 2 }
        );
    }

    #[test]
    fn tls_configs_build() {
        let opts = TlsOptions {
            insecure_skip_verify: true,
            ..Default::default()
        };
        let c = client_tls_config(&opts, true).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec()]);
        let c = client_tls_config(&TlsOptions::default(), false).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
