//! TLS settings built from PEM files with rustls (ring provider): the loader every TLS use of
//! ringkv shares, and the configuration of a client of the HTTP API ([`client_config`]):
//! server certificates are verified against a CA file, or the Mozilla roots when none is given.
//!
//! The server's own settings (its HTTP certificate, mutual TLS between peers) are built by the
//! `ringkv` crate from the same loader; they live there so that a client does not compile them.
//!
//! Every file problem (unreadable, no PEM section of the expected kind, a key that does not
//! match the certificate) is a [`TlsError`] naming the file, so a misconfigured node or client
//! stops at start-up with a readable message instead of failing on its first connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

/// Why TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("{what} {path}: {source}")]
    Read {
        /// Which file (`certificate`, `private key`, `CA`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM section of the expected kind.
    #[error("{what} {path}: {message}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the material (a key that does not match its certificate, a CA that is
    /// not a certificate authority, ...).
    #[error("{what}: {source}")]
    Rejected {
        /// What was being set up.
        what: String,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// A certificate verifier could not be built from the CA file.
    #[error("CA {path}: {message}")]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The one crypto provider used everywhere: ring (aws-lc-rs needs cmake and clang to build).
/// Passed explicitly, so nothing depends on a process-wide default being installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(what: &'static str, path: &Path, error: rustls::pki_types::pem::Error) -> TlsError {
    match error {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        },
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Pem {
            what,
            path: path.to_path_buf(),
            message: format!("no PEM {what} found"),
        },
        other => TlsError::Pem {
            what,
            path: path.to_path_buf(),
            message: format!("not valid PEM: {other}"),
        },
    }
}

/// Reads every certificate of a PEM file (leaf first, then its chain); none is an error.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let what = "certificate";
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certificates.is_empty() {
        return Err(pem_error(
            what,
            path,
            rustls::pki_types::pem::Error::NoItemsFound,
        ));
    }
    Ok(certificates)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error("private key", path, e))
}

/// Reads a CA file into a root store; every certificate in it must be a usable trust anchor.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates(path).map_err(|e| match e {
        TlsError::Read { path, source, .. } => TlsError::Read {
            what: "CA",
            path,
            source,
        },
        TlsError::Pem { path, message, .. } => TlsError::Pem {
            what: "CA",
            path,
            message,
        },
        other => other,
    })? {
        roots
            .add(certificate)
            .map_err(|source| TlsError::Rejected {
                what: format!("CA {}", path.display()),
                source,
            })?;
    }
    Ok(roots)
}

/// TLS for a client of the HTTP API: server certificates are checked against `ca_file` when
/// given (a private CA, or a self-signed certificate), else against the Mozilla roots. ALPN is
/// left empty (the HTTP connector sets it).
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let roots = match ca_file {
        Some(path) => load_roots(path)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rejected {
            what: String::from("client TLS"),
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
