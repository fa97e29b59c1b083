//! The exporters' side: a rustls `ClientConfig` from `[exporters.NAME.tls]` (or the defaults,
//! for an `https://` endpoint without the table), reloaded from its files, and `connect`.

use std::io;
use std::sync::Arc;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use rustls::pki_types::ServerName;
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, RootCertStore};
use shardtel_config::ClientTlsConfig;

use crate::error::Error;
use crate::io::TlsIo;
use crate::pem::{self, KeyPair};
use crate::reload::Reloading;

/// A TLS connection opened by [`ClientTls::connect`]; read and write it like the TCP stream
/// (futures-io). `stream.get_ref().1.alpn_protocol()` is the negotiated ALPN protocol.
pub type ClientStream<S> = futures_rustls::client::TlsStream<TlsIo<S>>;

/// TLS for one exporter: its `ClientConfig`, rebuilt from its files every `reload_interval`
/// when they changed. Cheap to clone: every core gets a clone and connects with it.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Reloading<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// Reads the CA, certificate and key files (or the system trust store when there is no
    /// `ca_file`) and builds the configuration, offering the ALPN protocols `alpn` (`[alpn::H2]`
    /// for gRPC, `[alpn::HTTP1]` for the HTTP exporters). `what` names the table in log lines,
    /// e.g. `exporters.tempo.tls`. With `insecure_skip_verify`, logs a warning: the server is
    /// not authenticated at all. With `reload_interval`, starts the reload thread. Call it
    /// before the reactors start: it reads files.
    ///
    /// [`alpn::H2`]: crate::alpn::H2
    /// [`alpn::HTTP1`]: crate::alpn::HTTP1
    pub fn new(what: &str, config: &ClientTlsConfig, alpn: &[&[u8]]) -> Result<Self, Error> {
        let server_name = match &config.server_name {
            Some(name) => Some(server_name(name)?),
            None => None,
        };
        if config.insecure_skip_verify {
            log::warn!(
                "{what}: insecure_skip_verify is on: the server's certificate is not verified, \
                 so anyone on the path can read and change what this exporter sends"
            );
        }
        let paths = [&config.ca_file, &config.cert_file, &config.key_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let settings = config.clone();
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let built = Reloading::start(
            what.to_string(),
            paths,
            config.reload_interval,
            move |contents| build(&settings, &alpn, contents),
        )?;
        Ok(ClientTls {
            config: built,
            server_name,
        })
    }

    /// The name to send as SNI and to verify the certificate against: `server_name` when set,
    /// else `host` (the endpoint's host; an IP address is verified against the certificate's
    /// IP addresses and sent without SNI).
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, Error> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => server_name(host),
        }
    }

    /// The configuration new connections use now.
    pub fn current(&self) -> Arc<ClientConfig> {
        self.config.load_full()
    }

    /// Runs the client side of a handshake on `stream` (e.g. a connected glommio
    /// `TcpStream`). Bound it with the caller's connect timeout.
    pub async fn connect<S>(
        &self,
        stream: S,
        server_name: ServerName<'static>,
    ) -> io::Result<ClientStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let io = TlsIo::new(stream, [0; crate::io::SNIFF_BYTES], 0);
        match futures_rustls::TlsConnector::from(self.config.load_full())
            .connect(server_name, io)
            .into_fallible()
            .await
        {
            Ok(mut stream) => {
                stream.get_mut().0.end_handshake();
                Ok(stream)
            }
            Err((error, mut io)) => {
                // Send the alert rustls queued (e.g. bad_certificate), so the server learns why.
                let _ = io.close().await;
                Err(error)
            }
        }
    }
}

fn server_name(name: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(name.to_string()).map_err(|_| Error::InvalidServerName {
        name: name.to_string(),
    })
}

fn build(
    config: &ClientTlsConfig,
    alpn: &[Vec<u8>],
    contents: &[Vec<u8>],
) -> Result<ClientConfig, Error> {
    let provider = crate::provider();
    // `contents` holds the files that are set, in the order ca_file, cert_file, key_file.
    let mut files = contents.iter().map(Vec::as_slice);
    let ca = (config.ca_file.as_deref()).map(|p| (p, files.next().unwrap_or_default()));
    let cert = (config.cert_file.as_deref()).map(|p| (p, files.next().unwrap_or_default()));
    let key = (config.key_file.as_deref()).map(|p| (p, files.next().unwrap_or_default()));
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(crate::protocol_versions(config.min_version))?;
    let builder = if config.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(insecure::AcceptAnyServerCertificate(
                provider.clone(),
            )))
    } else {
        let roots = match ca {
            Some((path, pem)) => pem::roots(path, pem)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots)
    };
    let mut client = match (cert, key) {
        (Some((cert_path, cert_pem)), Some((key_path, key_pem))) => {
            let key = KeyPair {
                cert_path,
                cert_pem,
                key_path,
                key_pem,
            }
            .certified_key(&provider)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key)))
        }
        _ => builder.with_no_client_auth(),
    };
    client.alpn_protocols = alpn.to_vec();
    Ok(client)
}

/// The operating system's trust store (`SSL_CERT_FILE`, `SSL_CERT_DIR`, or the distribution's
/// bundle under `/etc/ssl`).
fn system_roots() -> Result<RootCertStore, Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _unparsable) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let details: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(Error::NoSystemRoots {
            details: details.join("; "),
        });
    }
    Ok(store)
}

mod insecure {
    //! `insecure_skip_verify = true`: a server certificate verifier that accepts anything.

    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// Accepts every certificate and name, but still checks the handshake signatures (so the
    /// peer holds the key of the certificate it sent).
    #[derive(Debug)]
    pub(super) struct AcceptAnyServerCertificate(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyServerCertificate {
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
