//! TLS settings of the native host, built from PEM files with rustls (ring provider).
//!
//! Three uses, one loader:
//!
//! - the HTTP API ([`http_server_config`]): a certificate and key; clients are not asked for a
//!   certificate (they authenticate, if at all, in front of ringkv);
//! - peer links ([`PeerTls`]): mutual TLS inside a cluster CA. Each node presents its own
//!   certificate both when it accepts and when it dials, and verifies the other side's against
//!   the CA; a dialer also checks that the certificate names the host it dialed;
//! - the client ([`client_config`]): server certificates are verified against a CA file, or the
//!   Mozilla roots when none is given.
//!
//! Every file problem (unreadable, no PEM section of the expected kind, a key that does not
//! match the certificate) is a [`TlsError`] naming the file, so a misconfigured node stops at
//! start-up with a readable message instead of failing on its first connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio_rustls::{TlsAcceptor, TlsConnector};

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

/// TLS for the HTTP API: `cert` (with its chain) and `key`; ALPN offers HTTP/2 and HTTP/1.1,
/// the two protocols the server speaks on one port.
pub fn http_server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = load_certificates(cert)?;
    let private_key = load_private_key(key)?;
    let rejected = |source| TlsError::Rejected {
        what: format!("certificate {} with key {}", cert.display(), key.display()),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(rejected)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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

/// Mutual TLS for peer links: the acceptor requires a certificate from the cluster CA, and the
/// connector presents this node's certificate and checks the accepting node's.
#[derive(Clone)]
pub struct PeerTls {
    /// Wraps accepted connections.
    pub acceptor: TlsAcceptor,
    /// Wraps dialed connections.
    pub connector: TlsConnector,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls").finish_non_exhaustive()
    }
}

impl PeerTls {
    /// This node's certificate and key, and the CA that signs every node's certificate.
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<PeerTls, TlsError> {
        let chain = load_certificates(cert)?;
        let private_key = load_private_key(key)?;
        let roots = Arc::new(load_roots(ca)?);
        let provider = provider();
        let rejected = |source| TlsError::Rejected {
            what: format!(
                "peer certificate {} with key {}",
                cert.display(),
                key.display()
            ),
            source,
        };

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| TlsError::Verifier {
                    path: ca.to_path_buf(),
                    message: e.to_string(),
                })?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(rejected)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), private_key.clone_key())
            .map_err(rejected)?;

        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(rejected)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private_key)
            .map_err(rejected)?;

        Ok(PeerTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }
}

/// The name a dialed peer's certificate must carry: the host part of `address` (`host:port`,
/// `[v6]:port`), an IP address or a DNS name.
pub fn server_name(address: &str) -> Option<ServerName<'static>> {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).ok()
}

#[cfg(test)]
pub(crate) mod test_certs {
    //! Throwaway certificates for tests: one CA, leaves for 127.0.0.1 and localhost.

    use std::path::PathBuf;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    /// A CA and files of a leaf it signed, in a temporary folder.
    pub(crate) struct Files {
        pub(crate) dir: tempfile::TempDir,
        pub(crate) ca: PathBuf,
        pub(crate) cert: PathBuf,
        pub(crate) key: PathBuf,
    }

    /// A fresh CA and a leaf for `127.0.0.1` and `localhost`.
    pub(crate) fn generate() -> Files {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Files {
            ca: write("ca.pem", &ca.pem()),
            cert: write("node.pem", &leaf.pem()),
            key: write("node.key", &leaf_key.serialize_pem()),
            dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_files_load() {
        let files = test_certs::generate();
        http_server_config(&files.cert, &files.key).unwrap();
        PeerTls::from_files(&files.cert, &files.key, &files.ca).unwrap();
        client_config(Some(&files.ca)).unwrap();
        client_config(None).unwrap();
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let files = test_certs::generate();
        let garbage = files.dir.path().join("garbage.pem");
        std::fs::write(&garbage, "this is not PEM at all\n").unwrap();
        let broken = files.dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n%%%%\n").unwrap();
        let missing = files.dir.path().join("missing.pem");

        let message = |error: TlsError| error.to_string();
        let garbage_cert = message(http_server_config(&garbage, &files.key).unwrap_err());
        assert!(
            garbage_cert.contains("garbage.pem") && garbage_cert.contains("no PEM certificate"),
            "{garbage_cert}"
        );
        let broken_cert = message(http_server_config(&broken, &files.key).unwrap_err());
        assert!(broken_cert.contains("broken.pem"), "{broken_cert}");
        // A certificate file given as the key: no key in it.
        let cert_as_key = message(http_server_config(&files.cert, &files.cert).unwrap_err());
        assert!(cert_as_key.contains("no PEM private key"), "{cert_as_key}");
        let missing_key = message(http_server_config(&files.cert, &missing).unwrap_err());
        assert!(
            missing_key.contains("missing.pem") && missing_key.contains("private key"),
            "{missing_key}"
        );
        let garbage_ca =
            message(PeerTls::from_files(&files.cert, &files.key, &garbage).unwrap_err());
        assert!(garbage_ca.starts_with("CA "), "{garbage_ca}");
        assert!(client_config(Some(&missing)).is_err());

        // A key that is not the certificate's.
        let other = test_certs::generate();
        let mismatch = message(http_server_config(&files.cert, &other.key).unwrap_err());
        assert!(mismatch.contains("with key"), "{mismatch}");
    }

    #[test]
    fn server_names_come_from_the_dialed_host() {
        assert_eq!(
            server_name("127.0.0.1:7087"),
            Some(ServerName::try_from("127.0.0.1").unwrap())
        );
        assert_eq!(
            server_name("[::1]:7087"),
            Some(ServerName::try_from("::1").unwrap())
        );
        assert_eq!(
            server_name("node-1.example:7087"),
            Some(ServerName::try_from("node-1.example").unwrap())
        );
        assert_eq!(server_name("bad host:1"), None);
    }
}
