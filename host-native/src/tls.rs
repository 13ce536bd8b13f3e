//! TLS settings of the native host, built from PEM files with rustls (ring provider).
//!
//! Three uses, one loader (`ringkv_client::tls`, re-exported here):
//!
//! - the HTTP API ([`http_server_config`]): a certificate and key; clients are not asked for a
//!   certificate (they authenticate, if at all, in front of ringkv);
//! - peer links ([`PeerTls`]): mutual TLS inside a cluster CA. Each node presents its own
//!   certificate both when it accepts and when it dials, and verifies the other side's against
//!   the CA; a dialer also checks that the certificate names the host it dialed;
//! - the client ([`client_config`], defined with the client): server certificates are verified
//!   against a CA file, or the Mozilla roots when none is given.
//!
//! Every file problem (unreadable, no PEM section of the expected kind, a key that does not
//! match the certificate) is a [`TlsError`] naming the file, so a misconfigured node stops at
//! start-up with a readable message instead of failing on its first connection.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub use ringkv_client::tls::{
    client_config, load_certificates, load_private_key, load_roots, provider, TlsError,
};

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
