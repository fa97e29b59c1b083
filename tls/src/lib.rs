//! TLS and authentication at shardtel's network edges, built from the configuration's
//! `[receivers.otlp.tls]`, `[receivers.otlp.auth]` and `[exporters.NAME.tls]` tables.
//!
//! Main types:
//! - [`ServerTls`]: the receivers' side. A rustls `ServerConfig` (ALPN chosen by the caller,
//!   optional client-certificate verification for mTLS, lowest version), and
//!   [`ServerTls::accept`], a handshake under a timeout whose failures are classified
//!   ([`HandshakeFailureReason`]: timeout, plaintext, no/bad/expired client certificate, ...)
//!   for `shardtel_receiver_tls_handshake_failures_total{reason}`.
//! - [`ClientTls`]: the exporters' side. A rustls `ClientConfig` (system roots or `ca_file`,
//!   client certificate, `server_name`, `insecure_skip_verify`) and [`ClientTls::connect`].
//! - [`BearerTokens`]: checks an `authorization: Bearer ...` value against the configured tokens
//!   in constant time, re-reading the token file when it changes.
//! - [`FileChecker`]: the [`shardtel_config::CheckFiles`] that `shardtel validate` and start-up
//!   use, so a missing or unparsable certificate, key, CA bundle or token file is reported at
//!   its key and line.
//!
//! Certificates, keys and token files are read with `std::fs` at start-up and afterwards only
//! on one plain background thread per reloading table (`reload`), never on a reactor: a new
//! file set is parsed there and published through an `ArcSwap`, so new handshakes use it and
//! established connections keep theirs; a bad new file keeps the previous configuration and is
//! logged once. Handshakes run on the reactor that accepted or opened the connection, over any
//! futures-io stream (glommio's `TcpStream`).
//!
//! Modules, each using only those above it: `error`, `io` (the stream under TLS) → `pem`
//! (reading PEM files) → `reload` → `server`, `client`, `token` → `check`. Depends on `shardtel-config`; used by the engine
//! (receivers) and sinks (exporters).
//!
//! ```no_run
//! use std::time::Duration;
//! use shardtel_config::ServerTlsConfig;
//! use shardtel_tls::ServerTls;
//!
//! # async fn serve(stream: glommio::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
//! // Once, before the reactors start: reads and checks the files.
//! let tls = ServerTls::new(&ServerTlsConfig::new("server.pem", "server.key"), &[b"h2"])?;
//! // On a reactor, per accepted connection:
//! match tls.accept(stream, Duration::from_secs(10)).await {
//!     Ok(stream) => { /* serve HTTP/2 over `stream` */ }
//!     Err(failure) => eprintln!("{}: {failure}", failure.reason.label()),
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod check;
mod client;
mod error;
mod io;
mod pem;
mod reload;
mod server;
mod token;

/// The rustls this crate builds on (for `ServerName` and the connection types).
pub use rustls;

pub use check::FileChecker;
pub use client::{ClientStream, ClientTls};
pub use error::{Error, FileIssue};
pub use io::TlsIo;
pub use reload::{Missing, Reloading};
pub use server::{
    HandshakeFailure, HandshakeFailureReason, ServerStream, ServerTls, PLAINTEXT_HTTP_RESPONSE,
};
pub use token::{AuthOutcome, BearerTokens, TOKEN_FILE_POLL_INTERVAL};

/// ALPN protocol ids, for [`ServerTls::new`] and [`ClientTls::new`].
pub mod alpn {
    /// HTTP/2 (`h2`): gRPC, and OTLP/HTTP clients that offer it.
    pub const H2: &[u8] = b"h2";
    /// HTTP/1.1 (`http/1.1`).
    pub const HTTP1: &[u8] = b"http/1.1";
}

/// The crypto provider every config of this crate is built with: rustls's `ring` provider.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 only (`min_version = "1.3"`).
static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn protocol_versions(
    min: shardtel_config::TlsVersion,
) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min {
        shardtel_config::TlsVersion::Tls12 => rustls::ALL_VERSIONS,
        shardtel_config::TlsVersion::Tls13 => &TLS13_ONLY,
    }
}
