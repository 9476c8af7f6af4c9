//! TLS (rustls) on the node's one port, and in the client.
//!
//! A node with `tls_cert_file` and `tls_key_file` serves only TLS: clients and peers alike
//! (`wss://`). Client certificates are asked for when a CA is configured to check them:
//! `tls_client_ca_file` makes them required (mTLS, for clients and peers), and
//! `tls_peer_ca_file` makes peers verify each other: the dialler checks the accepting
//! node's certificate against it, and the accepting node takes the peer path only from a
//! connection whose certificate it signed. The peer hello's cluster secret is proved
//! inside the TLS session as before.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::env::{BoxStream, Clock};

/// The node's wall clock (`Env`) as rustls's clock, for certificate validity: one clock for
/// everything the node decides by time.
struct EnvTime(Arc<dyn Clock>);

impl std::fmt::Debug for EnvTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvTime")
    }
}

impl rustls::time_provider::TimeProvider for EnvTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(
            std::time::Duration::from_millis(self.0.wall_ms()),
        ))
    }
}

/// Largest certificate or key file read.
const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    use crate::small_file::{SmallFileError, read_small_file};
    read_small_file(path, MAX_PEM_FILE_BYTES).map_err(|e| match e {
        SmallFileError::Io(e) => file_error(path, e),
        SmallFileError::TooLarge => file_error(path, "over 1 MiB: not a PEM file"),
    })
}

/// The certificates in a PEM file (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no certificate"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| file_error(path, format!("holds no PEM private key: {e}")))
}

/// The certificates of `paths` as trust anchors.
fn roots(paths: &[&Path]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for path in paths {
        for cert in load_certs(path)? {
            store
                .add(cert)
                .map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
        }
    }
    Ok(store)
}

/// The operating system's trust store (honours `SSL_CERT_FILE` and `SSL_CERT_DIR`).
fn native_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::Config(
            "no trusted CA certificates found on this system: name the CA with --ca FILE (or \
             SSL_CERT_FILE)"
                .to_owned(),
        ));
    }
    Ok(store)
}

/// The name a certificate must carry for `host:port` (an IP address or a DNS name).
pub fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("`{host}`: {e}")))
}

/// What a node's settings say about TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeTlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub peer_ca: Option<PathBuf>,
}

impl NodeTlsFiles {
    /// The TLS files a node's settings name.
    pub fn from_settings(s: &crate::config::Settings) -> NodeTlsFiles {
        NodeTlsFiles {
            cert: s.tls_cert_file.clone(),
            key: s.tls_key_file.clone(),
            client_ca: s.tls_client_ca_file.clone(),
            peer_ca: s.tls_peer_ca_file.clone(),
        }
    }
}

/// A node's TLS: how it accepts connections and dials its peers.
#[derive(Clone)]
pub struct NodeTls {
    acceptor: TlsAcceptor,
    dialer: TlsConnector,
    /// Checks that a connection asking for the peer path presented a certificate of the
    /// peer CA (`None`: any TLS connection may, and proves the cluster secret as always).
    peer_verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// The node's clock, for the peer check's certificate validity.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("verifies_peers", &self.peer_verifier.is_some())
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// The node's TLS from its files; `None` when it has no certificate (plain `ws://`).
    /// Certificates are valid or not by `clock` (the node's `Env`).
    pub fn from_files(
        files: &NodeTlsFiles,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<NodeTls>, TlsError> {
        let time: Arc<dyn rustls::time_provider::TimeProvider> = Arc::new(EnvTime(clock.clone()));
        let (cert, key) = match (&files.cert, &files.key) {
            (Some(c), Some(k)) => (c, k),
            (None, None) => return Ok(None),
            _ => {
                return Err(TlsError::Config(
                    "tls_cert_file and tls_key_file go together".to_owned(),
                ));
            }
        };
        let chain = load_certs(cert)?;
        let key = load_key(key)?;
        let peer_ca = files.peer_ca.as_deref();
        let verifier_error =
            |e: rustls::server::VerifierBuilderError| TlsError::Config(e.to_string());
        let client_verifier = match (files.client_ca.as_deref(), peer_ca) {
            (Some(client_ca), peer) => {
                let mut anchors = vec![client_ca];
                anchors.extend(peer);
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&anchors)?), provider())
                    .build()
                    .map_err(verifier_error)?
            }
            (None, Some(peer)) => {
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&[peer])?), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(verifier_error)?
            }
            (None, None) => WebPkiClientVerifier::no_client_auth(),
        };
        let peer_verifier = match peer_ca {
            Some(peer) => Some(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&[peer])?), provider())
                    .build()
                    .map_err(verifier_error)?,
            ),
            None => None,
        };
        let config_error = |e: rustls::Error| TlsError::Config(e.to_string());
        let server = rustls::ServerConfig::builder_with_details(provider(), time.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| file_error(cert, format!("does not match the key: {e}")))?;
        // Peers check this node against the peer CA, or the system's store without one;
        // this node shows its own certificate to them (a node that requires client
        // certificates asks for it).
        let peer_roots = match peer_ca {
            Some(peer) => roots(&[peer])?,
            // A machine without a system store dials no TLS peer until given a peer CA;
            // a single node needs none.
            None => native_roots().unwrap_or_else(|_| RootCertStore::empty()),
        };
        let dialer = rustls::ClientConfig::builder_with_details(provider(), time)
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(peer_roots)
            .with_client_auth_cert(chain, key)
            .map_err(config_error)?;
        Ok(Some(NodeTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            dialer: TlsConnector::from(Arc::new(dialer)),
            peer_verifier,
            clock,
        }))
    }

    /// Runs the server side of the TLS handshake on an accepted stream. The result says
    /// whether the client showed a certificate of the peer CA.
    pub async fn accept(&self, stream: BoxStream) -> io::Result<(BoxStream, bool)> {
        let tls = self.acceptor.accept(stream).await?;
        let peer_certified = match (&self.peer_verifier, tls.get_ref().1.peer_certificates()) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(verifier), Some(chain)) => match chain.split_first() {
                Some((leaf, intermediates)) => {
                    let now = UnixTime::since_unix_epoch(std::time::Duration::from_millis(
                        self.clock.wall_ms(),
                    ));
                    verifier
                        .verify_client_cert(leaf, intermediates, now)
                        .is_ok()
                }
                None => false,
            },
        };
        Ok((Box::new(tls), peer_certified))
    }

    /// Dials TLS over `stream` to the peer at `addr` (`host:port`).
    pub async fn dial(&self, stream: BoxStream, addr: &str) -> io::Result<BoxStream> {
        let name = server_name(addr)?;
        Ok(Box::new(self.dialer.connect(name, stream).await?))
    }
}

/// How a client reaches a `wss://` node: which CAs it trusts and the certificate it shows
/// (for nodes that require one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// CA certificates to trust; `None`: the system's store (and `SSL_CERT_FILE`).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (mTLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The TLS side of a client connection.
#[derive(Clone)]
pub struct ClientTls(TlsConnector);

impl ClientTls {
    pub fn from_files(files: &ClientTlsFiles) -> Result<ClientTls, TlsError> {
        let anchors = match &files.ca {
            Some(ca) => roots(&[ca.as_path()])?,
            None => native_roots()?,
        };
        let config_error = |e: rustls::Error| TlsError::Config(e.to_string());
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(anchors);
        let config = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(config_error)?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Config(
                    "a client certificate needs its key, and a key its certificate".to_owned(),
                ));
            }
        };
        Ok(ClientTls(TlsConnector::from(Arc::new(config))))
    }

    /// Runs the TLS handshake over `stream` to `addr` (`host:port`).
    pub async fn connect(&self, stream: BoxStream, addr: &str) -> io::Result<BoxStream> {
        let name = server_name(addr)?;
        Ok(Box::new(self.0.connect(name, stream).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        let n = |a: &str| server_name(a).map(|n| n.to_str().into_owned()).ok();
        assert_eq!(n("127.0.0.1:9000").as_deref(), Some("127.0.0.1"));
        assert_eq!(n("node-1.example:443").as_deref(), Some("node-1.example"));
        assert_eq!(n("[::1]:9000").as_deref(), Some("::1"));
        assert_eq!(n("localhost").as_deref(), Some("localhost"));
        assert_eq!(n("bad host:1"), None);
    }

    fn clock() -> Arc<dyn Clock> {
        Arc::new(crate::env::SystemClock)
    }

    #[test]
    fn a_certificate_without_its_key_is_a_configuration_error() {
        let files = NodeTlsFiles {
            cert: Some("node.pem".into()),
            ..NodeTlsFiles::default()
        };
        let e = NodeTls::from_files(&files, clock()).unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        assert!(
            NodeTls::from_files(&NodeTlsFiles::default(), clock())
                .unwrap()
                .is_none()
        );
        let e = NodeTls::from_files(
            &NodeTlsFiles {
                cert: Some("/nonexistent/node.pem".into()),
                key: Some("/nonexistent/node.key".into()),
                ..NodeTlsFiles::default()
            },
            clock(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/node.pem"), "{e}");
    }
}
