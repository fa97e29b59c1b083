//! Reading certificate chains, private keys and CA bundles from PEM files. Uses `std::fs`: call
//! it at start-up or on a reload thread, never on a reactor.

use std::path::{Path, PathBuf};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};

use crate::error::{Error, FileIssue};

/// A file's bytes.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| FileIssue::Read(e).at(path))
}

/// The `CERTIFICATE` blocks of a PEM file, each checked to parse as X.509.
pub(crate) fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FileIssue::Pem(e).at(path))?;
    if certs.is_empty() {
        return Err(FileIssue::NoCertificate.at(path));
    }
    // Parsing each as a trust anchor checks its X.509 structure without judging its validity.
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|source| {
            FileIssue::BadCertificate {
                index: i + 1,
                source,
            }
            .at(path)
        })?;
    }
    Ok(certs)
}

/// The first unencrypted private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub(crate) fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => FileIssue::NoPrivateKey.at(path),
        e => FileIssue::Pem(e).at(path),
    })
}

/// A CA bundle: every certificate of the file, as trust anchors.
pub(crate) fn roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path, pem)? {
        // `certificates` already parsed each one as an anchor.
        store.add(cert).map_err(Error::Rustls)?;
    }
    Ok(store)
}

/// A certificate chain with its private key, checked to belong together.
pub(crate) struct KeyPair<'a> {
    pub(crate) cert_path: &'a Path,
    pub(crate) cert_pem: &'a [u8],
    pub(crate) key_path: &'a Path,
    pub(crate) key_pem: &'a [u8],
}

impl KeyPair<'_> {
    /// The chain and key as rustls signs with them. Problems with the certificate name the
    /// certificate file; problems with the key, and a mismatch, name the key file.
    pub(crate) fn certified_key(&self, provider: &CryptoProvider) -> Result<CertifiedKey, Error> {
        let chain = certificates(self.cert_path, self.cert_pem);
        let key = private_key(self.key_path, self.key_pem);
        let (chain, key) = (chain?, key?);
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| FileIssue::UnsupportedKey(e).at(self.key_path))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            // Some key types cannot say (no public key to compare): rustls accepts those too.
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                Err(FileIssue::KeyMismatch {
                    cert: PathBuf::from(self.cert_path),
                }
                .at(self.key_path))
            }
            Err(source) => Err(FileIssue::BadCertificate { index: 1, source }.at(self.cert_path)),
        }
    }

    /// Like [`KeyPair::certified_key`], every problem found: both files are checked even when
    /// the first one is bad.
    pub(crate) fn problems(&self, provider: &CryptoProvider) -> Vec<Error> {
        let chain = certificates(self.cert_path, self.cert_pem);
        let key = private_key(self.key_path, self.key_pem);
        match (chain, key) {
            (Ok(_), Ok(_)) => self.certified_key(provider).err().into_iter().collect(),
            (chain, key) => chain.err().into_iter().chain(key.err()).collect(),
        }
    }
}
