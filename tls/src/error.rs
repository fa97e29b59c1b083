//! Errors building a TLS configuration or a token set: which file, and what is wrong with it.

use std::path::PathBuf;

/// Building a [`crate::ServerTls`], [`crate::ClientTls`] or [`crate::BearerTokens`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the configuration names is missing or does not parse.
    #[error("{}: {issue}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        issue: FileIssue,
    },
    /// No `ca_file`, and the operating system's trust store has no certificate.
    #[error("no certificates in the system trust store (set SSL_CERT_FILE, install ca-certificates, or set ca_file){}", if .details.is_empty() { String::new() } else { format!(": {}", .details) })]
    NoSystemRoots {
        /// What went wrong reading the store, if anything.
        details: String,
    },
    /// A host or `server_name` that rustls cannot send as SNI or verify against.
    #[error("invalid tls server name {name:?}")]
    InvalidServerName {
        /// The name.
        name: String,
    },
    /// The reload thread could not be started.
    #[error("cannot start the tls reload thread: {0}")]
    ReloadThread(#[source] std::io::Error),
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What is wrong with one file. Never contains the file's content (keys and tokens are secret).
#[derive(Debug, thiserror::Error)]
pub enum FileIssue {
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// The PEM text is malformed.
    #[error("malformed PEM: {0}")]
    Pem(#[source] rustls::pki_types::pem::Error),
    /// No `CERTIFICATE` block.
    #[error("no certificate found (expected PEM \"CERTIFICATE\" blocks)")]
    NoCertificate,
    /// A `CERTIFICATE` block that is not an X.509 certificate.
    #[error("certificate {index} (counting from 1) does not parse: {source}")]
    BadCertificate {
        /// Its position in the file.
        index: usize,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// No unencrypted private key block.
    #[error("no private key found (expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block; encrypted keys are not supported)")]
    NoPrivateKey,
    /// A private key of a type or curve the `ring` provider does not sign with.
    #[error("unsupported private key (RSA, ECDSA P-256/P-384 and Ed25519 are supported): {0}")]
    UnsupportedKey(#[source] rustls::Error),
    /// The private key is not the one of the certificate.
    #[error("the private key does not match the certificate in {}", .cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
    },
    /// A token file line that is not an RFC 6750 token.
    #[error("line {line}: not a valid bearer token (letters, digits and -._~+/ followed by = padding); the value is not shown")]
    BadToken {
        /// 1-based line.
        line: usize,
    },
    /// Neither the token file nor `bearer_tokens` holds a token.
    #[error(
        "no tokens in this file and bearer_tokens is empty, so every request would be refused"
    )]
    NoTokens,
}

impl FileIssue {
    /// This issue with `path`.
    pub(crate) fn at(self, path: impl Into<PathBuf>) -> Error {
        Error::File {
            path: path.into(),
            issue: self,
        }
    }
}
