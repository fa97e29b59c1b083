//! [`FileChecker`]: checks the files a configuration names for `shardtel validate` and start-up.

use std::path::Path;

use shardtel_config::{AuthConfig, CheckFiles, ClientTlsConfig, FileProblem, ServerTlsConfig};

use crate::error::{Error, FileIssue};
use crate::pem::{self, KeyPair};

/// Checks that certificates, keys, CA bundles and token files exist and parse, and that each
/// key belongs to its certificate; hand it to `Config::from_file_checked`. Reads files: use it
/// before the reactors start.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileChecker;

impl CheckFiles for FileChecker {
    fn server_tls(&self, tls: &ServerTlsConfig) -> Vec<FileProblem> {
        let mut problems = key_pair(("cert_file", &tls.cert_file), ("key_file", &tls.key_file));
        if let Some(ca) = &tls.client_ca_file {
            problems.extend(ca_bundle("client_ca_file", ca));
        }
        problems
    }

    fn client_tls(&self, tls: &ClientTlsConfig) -> Vec<FileProblem> {
        let mut problems = Vec::new();
        if let Some(ca) = &tls.ca_file {
            problems.extend(ca_bundle("ca_file", ca));
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            problems.extend(key_pair(("cert_file", cert), ("key_file", key)));
        }
        problems
    }

    fn auth(&self, auth: &AuthConfig) -> Vec<FileProblem> {
        crate::token::check_file(auth)
            .map(|e| problem("bearer_token_file", e))
            .into_iter()
            .collect()
    }
}

fn ca_bundle(key: &'static str, path: &Path) -> Option<FileProblem> {
    pem::read(path)
        .and_then(|text| pem::roots(path, &text))
        .err()
        .map(|e| problem(key, e))
}

/// The problems of a certificate file and its key file, each at the key it is about: a
/// certificate problem at the certificate's key, a key problem or a mismatch at the key's.
fn key_pair(cert: (&'static str, &Path), key: (&'static str, &Path)) -> Vec<FileProblem> {
    let (cert_text, key_text) = (pem::read(cert.1), pem::read(key.1));
    let (cert_text, key_text) = match (cert_text, key_text) {
        (Ok(c), Ok(k)) => (c, k),
        (c, k) => {
            let unreadable = [(cert.0, c.err()), (key.0, k.err())];
            return unreadable
                .into_iter()
                .filter_map(|(name, e)| Some(problem(name, e?)))
                .collect();
        }
    };
    let pair = KeyPair {
        cert_path: cert.1,
        cert_pem: &cert_text,
        key_path: key.1,
        key_pem: &key_text,
    };
    pair.problems(&crate::provider())
        .into_iter()
        .map(|e| {
            let about_cert = matches!(
                &e,
                Error::File {
                    issue: FileIssue::NoCertificate | FileIssue::BadCertificate { .. },
                    ..
                }
            ) || matches!(&e, Error::File { path, issue: FileIssue::Pem(_) } if path == cert.1);
            problem(if about_cert { cert.0 } else { key.0 }, e)
        })
        .collect()
}

fn problem(key: &'static str, error: Error) -> FileProblem {
    match error {
        Error::File { path, issue } => FileProblem {
            key,
            path,
            error: Box::new(issue),
        },
        other => FileProblem {
            key,
            path: Default::default(),
            error: Box::new(other),
        },
    }
}
