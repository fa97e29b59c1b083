//! The receivers' side: a rustls `ServerConfig` from `[receivers.otlp.tls]`, reloaded from its
//! files, and a handshake under a timeout whose failures are classified.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::{CertificateError, ServerConfig};
use shardtel_config::ServerTlsConfig;

use crate::error::Error;
use crate::io::{TlsIo, SNIFF_BYTES};
use crate::pem::{self, KeyPair};
use crate::reload::Reloading;

/// A TLS connection accepted by [`ServerTls::accept`]; read and write it like the TCP stream
/// (futures-io). `stream.get_ref().1.alpn_protocol()` is the negotiated ALPN protocol.
pub type ServerStream<S> = futures_rustls::server::TlsStream<TlsIo<S>>;

/// What a plaintext HTTP/1 request to a TLS port gets back before the connection is closed.
pub const PLAINTEXT_HTTP_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain\r\n\
content-length: 48\r\n\
connection: close\r\n\
\r\n\
this port speaks TLS: send requests to https://\n";

/// TLS for one listener: its `ServerConfig`, rebuilt from the files every `reload_interval`
/// when they changed. Cheap to clone: every core gets a clone and accepts with it.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Reloading<ServerConfig>,
    mtls: bool,
}

impl ServerTls {
    /// Reads the certificate, key and client CA files and builds the configuration, offering
    /// the ALPN protocols `alpn` in order of preference (`[alpn::H2]` for gRPC,
    /// `[alpn::H2, alpn::HTTP1]` for OTLP/HTTP; a client that offers none of them is refused, a
    /// client that offers no ALPN at all is accepted). With `reload_interval`, starts the reload
    /// thread. Call it before the reactors start: it reads files.
    ///
    /// [`alpn::H2`]: crate::alpn::H2
    /// [`alpn::HTTP1`]: crate::alpn::HTTP1
    pub fn new(config: &ServerTlsConfig, alpn: &[&[u8]]) -> Result<Self, Error> {
        ServerTls::for_table("receivers.otlp.tls", config, alpn)
    }

    /// Like [`ServerTls::new`], for the table `table` (e.g. `receivers.zipkin.tls`), which the
    /// reload thread's log lines name.
    pub fn for_table(table: &str, config: &ServerTlsConfig, alpn: &[&[u8]]) -> Result<Self, Error> {
        let mut paths = vec![config.cert_file.clone(), config.key_file.clone()];
        paths.extend(config.client_ca_file.clone());
        let settings = config.clone();
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let built = Reloading::start(
            table.to_string(),
            paths,
            config.reload_interval,
            move |contents| build(&settings, &alpn, contents),
        )?;
        Ok(ServerTls {
            config: built,
            mtls: config.client_ca_file.is_some(),
        })
    }

    /// Whether clients must present a certificate (`client_ca_file` is set).
    pub fn requires_client_cert(&self) -> bool {
        self.mtls
    }

    /// The configuration new handshakes use now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// Runs the server side of a handshake on `stream` (e.g. an accepted glommio `TcpStream`),
    /// giving up after `timeout`. Never blocks: reads and writes are the stream's, the timer is
    /// glommio's, so it must run on a glommio executor.
    ///
    /// The first bytes are looked at before rustls sees them (and then handed to it): an HTTP/1
    /// request gets [`PLAINTEXT_HTTP_RESPONSE`] and an HTTP/2 prior-knowledge preface is
    /// closed, both classified [`HandshakeFailureReason::Plaintext`].
    pub async fn accept<S>(
        &self,
        stream: S,
        timeout: Duration,
    ) -> Result<ServerStream<S>, HandshakeFailure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.config.load_full();
        futures_lite::future::or(handshake(config, stream), async move {
            glommio::timer::Timer::new(timeout).await;
            Err(HandshakeFailure::new(HandshakeFailureReason::Timeout, None))
        })
        .await
    }
}

fn build(
    config: &ServerTlsConfig,
    alpn: &[Vec<u8>],
    contents: &[Vec<u8>],
) -> Result<ServerConfig, Error> {
    let provider = crate::provider();
    let key = KeyPair {
        cert_path: &config.cert_file,
        cert_pem: &contents[0],
        key_path: &config.key_file,
        key_pem: &contents[1],
    }
    .certified_key(&provider)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(crate::protocol_versions(config.min_version))?;
    let builder = match &config.client_ca_file {
        Some(path) => {
            let roots = pem::roots(path, &contents[2])?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| Error::Rustls(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    server.alpn_protocols = alpn.to_vec();
    Ok(server)
}

/// The HTTP/2 connection preface's start (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

async fn handshake<S>(
    config: Arc<ServerConfig>,
    mut stream: S,
) -> Result<ServerStream<S>, HandshakeFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut first = [0u8; SNIFF_BYTES];
    let mut len = 0;
    loop {
        let read = stream
            .read(&mut first[len..])
            .await
            .map_err(|e| HandshakeFailure::new(HandshakeFailureReason::Closed, Some(e)))?;
        if read == 0 {
            return Err(HandshakeFailure::new(HandshakeFailureReason::Closed, None));
        }
        len += read;
        match sniff(&first[..len]) {
            Sniffed::Tls => break,
            Sniffed::NeedMore => continue,
            Sniffed::Http1 => {
                // Best effort: the client learns why; the failure is the same either way.
                let _ = stream.write_all(PLAINTEXT_HTTP_RESPONSE).await;
                let _ = stream.close().await;
                return Err(HandshakeFailure::new(
                    HandshakeFailureReason::Plaintext,
                    None,
                ));
            }
            Sniffed::H2c => {
                let _ = stream.close().await;
                return Err(HandshakeFailure::new(
                    HandshakeFailureReason::Plaintext,
                    None,
                ));
            }
            Sniffed::Other(byte) => {
                let message = format!("first byte 0x{byte:02x} does not start a TLS handshake");
                let error = io::Error::new(io::ErrorKind::InvalidData, message);
                return Err(HandshakeFailure::new(
                    HandshakeFailureReason::Protocol,
                    Some(error),
                ));
            }
        }
    }
    let io = TlsIo::new(stream, first, len);
    match futures_rustls::TlsAcceptor::from(config)
        .accept(io)
        .into_fallible()
        .await
    {
        Ok(mut stream) => {
            stream.get_mut().0.end_handshake();
            Ok(stream)
        }
        Err((error, mut io)) => {
            // Send the alert rustls queued (e.g. certificate_required), so the client learns
            // why; best effort, within the handshake's timeout.
            let _ = io.close().await;
            Err(HandshakeFailure::classify(error))
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Sniffed {
    Tls,
    NeedMore,
    Http1,
    H2c,
    Other(u8),
}

/// What the first bytes of a connection are: a TLS handshake record (content type 22), an
/// HTTP/2 preface, an HTTP/1 request line (an upper-case method), or something else.
fn sniff(bytes: &[u8]) -> Sniffed {
    match bytes[0] {
        0x16 => Sniffed::Tls,
        b'A'..=b'Z' => {
            let n = bytes.len().min(H2_PREFACE.len());
            if bytes[..n] != H2_PREFACE[..n] {
                Sniffed::Http1
            } else if n < 4 {
                Sniffed::NeedMore
            } else {
                Sniffed::H2c
            }
        }
        other => Sniffed::Other(other),
    }
}

/// Why a handshake failed: the `reason` label of
/// `shardtel_receiver_tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeFailureReason {
    /// The handshake did not finish within the timeout (a slow or idle client).
    Timeout,
    /// Plaintext HTTP/1 or HTTP/2 (h2c) sent to the TLS port.
    Plaintext,
    /// Not TLS at all, or TLS the server does not speak: no common version, cipher suite or
    /// ALPN protocol, a malformed message.
    Protocol,
    /// mTLS: the client presented no certificate.
    NoClientCert,
    /// mTLS: the client's certificate does not verify (unknown issuer, bad signature, wrong
    /// usage, not yet valid, ...).
    BadClientCert,
    /// mTLS: the client's certificate has expired.
    ExpiredClientCert,
    /// The client aborted the handshake with an alert, e.g. because it does not trust the
    /// server's certificate.
    ClientAlert,
    /// The connection ended or failed before the handshake finished.
    Closed,
}

impl HandshakeFailureReason {
    /// Every reason, in [`HandshakeFailureReason::index`] order: one counter each.
    pub const ALL: [HandshakeFailureReason; 8] = [
        HandshakeFailureReason::Timeout,
        HandshakeFailureReason::Plaintext,
        HandshakeFailureReason::Protocol,
        HandshakeFailureReason::NoClientCert,
        HandshakeFailureReason::BadClientCert,
        HandshakeFailureReason::ExpiredClientCert,
        HandshakeFailureReason::ClientAlert,
        HandshakeFailureReason::Closed,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailureReason::Timeout => "timeout",
            HandshakeFailureReason::Plaintext => "plaintext",
            HandshakeFailureReason::Protocol => "protocol",
            HandshakeFailureReason::NoClientCert => "no_client_cert",
            HandshakeFailureReason::BadClientCert => "bad_client_cert",
            HandshakeFailureReason::ExpiredClientCert => "expired_client_cert",
            HandshakeFailureReason::ClientAlert => "client_alert",
            HandshakeFailureReason::Closed => "closed",
        }
    }

    /// The position in [`HandshakeFailureReason::ALL`], for an array of counters.
    pub fn index(self) -> usize {
        self as usize
    }

    fn describe(self) -> &'static str {
        match self {
            HandshakeFailureReason::Timeout => "tls handshake timed out",
            HandshakeFailureReason::Plaintext => "plaintext request to a TLS port",
            HandshakeFailureReason::Protocol => "tls handshake failed",
            HandshakeFailureReason::NoClientCert => "client presented no certificate",
            HandshakeFailureReason::BadClientCert => "client certificate refused",
            HandshakeFailureReason::ExpiredClientCert => "client certificate expired",
            HandshakeFailureReason::ClientAlert => "client aborted the tls handshake",
            HandshakeFailureReason::Closed => "connection closed during the tls handshake",
        }
    }
}

impl fmt::Display for HandshakeFailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A failed server handshake: the classified reason, and the underlying error when there is
/// one (for the log line).
#[derive(Debug)]
pub struct HandshakeFailure {
    /// Why, for the metric.
    pub reason: HandshakeFailureReason,
    /// The I/O or rustls error (a rustls error is inside the `io::Error`).
    pub error: Option<io::Error>,
}

impl HandshakeFailure {
    fn new(reason: HandshakeFailureReason, error: Option<io::Error>) -> Self {
        HandshakeFailure { reason, error }
    }

    /// Classifies an error from futures-rustls's handshake.
    fn classify(error: io::Error) -> Self {
        use HandshakeFailureReason as R;
        let rustls_error = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let reason = match rustls_error {
            Some(rustls::Error::NoCertificatesPresented) => R::NoClientCert,
            Some(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => R::ExpiredClientCert,
            Some(rustls::Error::InvalidCertificate(_)) => R::BadClientCert,
            Some(rustls::Error::AlertReceived(_)) => R::ClientAlert,
            Some(_) => R::Protocol,
            None => R::Closed,
        };
        HandshakeFailure::new(reason, Some(error))
    }
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason.describe())?;
        if let Some(error) = &self.error {
            write!(f, ": {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for HandshakeFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_tls_from_plaintext() {
        assert_eq!(sniff(&[0x16, 0x03, 0x01]), Sniffed::Tls);
        assert_eq!(sniff(b"POST /v1/traces HTTP/1.1"), Sniffed::Http1);
        assert_eq!(sniff(b"GET"), Sniffed::Http1);
        assert_eq!(sniff(b"P"), Sniffed::NeedMore);
        assert_eq!(sniff(b"PRI"), Sniffed::NeedMore);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), Sniffed::H2c);
        assert_eq!(sniff(b"PUT"), Sniffed::Http1);
        assert_eq!(sniff(&[0x80, 0x2e]), Sniffed::Other(0x80));
        assert_eq!(sniff(b"\x00"), Sniffed::Other(0));
    }

    #[test]
    fn plaintext_response_is_well_formed() {
        let text = std::str::from_utf8(PLAINTEXT_HTTP_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
    }

    #[test]
    fn reasons_have_distinct_labels_and_indexes() {
        for (i, reason) in HandshakeFailureReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
            let others = HandshakeFailureReason::ALL
                .iter()
                .filter(|r| r.label() == reason.label())
                .count();
            assert_eq!(others, 1, "{reason}");
        }
    }
}
