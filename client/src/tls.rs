//! TLS material (CA, certificate, key) and the rustls client configuration.
//!
//! Policy, in one place: TLS 1.3 only; the ring provider only; every
//! connection, in both directions, authenticates both ends against the
//! cluster CA; no 0-RTT, so no state-changing request can be replayed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

/// Why TLS material could not be loaded or turned into a configuration.
/// Every variant names the file involved so an operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM `CERTIFICATE` block.
    #[error(
        "{path} contains no PEM certificate (expected a \"-----BEGIN CERTIFICATE-----\" block)"
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate block does not parse as an X.509 certificate.
    #[error("{path} holds a certificate that cannot be used: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file holds no usable PEM private key.
    #[error("{path} contains no PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("private key {key} does not match certificate {cert}: {reason}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' explanation.
        reason: String,
    },
    /// rustls refused to build a configuration from otherwise valid material.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// A node's or client's credentials plus the cluster CA it trusts.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    /// The cluster CA certificate(s).
    pub ca: Vec<CertificateDer<'static>>,
    /// This end's certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// This end's private key.
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl TlsMaterial {
    /// Builds material from DER bytes (as made by `paxlock_certs`), checking
    /// that the key matches the certificate.
    pub fn from_der(ca_der: &[u8], cert_der: &[u8], key_der: &[u8]) -> Result<Self, TlsError> {
        let key =
            PrivateKeyDer::try_from(key_der.to_vec()).map_err(|e| TlsError::NoPrivateKey {
                path: PathBuf::from("<memory>"),
                reason: e.to_string(),
            })?;
        let material = TlsMaterial {
            ca: vec![CertificateDer::from(ca_der.to_vec())],
            chain: vec![CertificateDer::from(cert_der.to_vec())],
            key: Arc::new(key),
        };
        material.check_key_matches(Path::new("<memory>"), Path::new("<memory>"))?;
        Ok(material)
    }

    /// Loads PEM files: the CA certificate, this end's certificate chain and
    /// its private key. Fails with an error naming the file at fault.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let ca_certs = load_certs(ca)?;
        // Parse the CA now so "this is not a CA certificate" is reported
        // against the file, not as an obscure handshake failure later.
        let mut roots = RootCertStore::empty();
        for c in &ca_certs {
            roots.add(c.clone()).map_err(|e| TlsError::BadCertificate {
                path: ca.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        let chain = load_certs(cert)?;
        let key_bytes = read(key)?;
        let private_key =
            PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::NoPrivateKey {
                path: key.to_path_buf(),
                reason: e.to_string(),
            })?;
        let material = TlsMaterial {
            ca: ca_certs,
            chain,
            key: Arc::new(private_key),
        };
        material.check_key_matches(cert, key)?;
        Ok(material)
    }

    fn check_key_matches(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let provider = provider();
        rustls::sign::CertifiedKey::from_der(self.chain.clone(), self.key.clone_key(), &provider)
            .map(|_| ())
            .map_err(|e| TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                reason: e.to_string(),
            })
    }

    /// The cluster CA as a root store (for verifying the other end).
    pub fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots
                .add(c.clone())
                .map_err(|e| TlsError::Config(format!("CA certificate rejected: {e}")))?;
        }
        Ok(Arc::new(roots))
    }

    /// The dialing side for connections that speak one of `alpns`, offered
    /// newest first (the peer protocol versions for nodes, the client
    /// protocol for clients).
    pub fn client_config(&self, alpns: &[&[u8]]) -> Result<quinn::ClientConfig, TlsError> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        quic_client_config(config, alpns)
    }
}

/// Wraps a rustls client configuration for QUIC offering `alpns` (newest
/// first), with no 0-RTT.
pub fn quic_client_config(
    mut config: rustls::ClientConfig,
    alpns: &[&[u8]],
) -> Result<quinn::ClientConfig, TlsError> {
    config.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    config.enable_early_data = false;
    let quic = QuicClientConfig::try_from(config)
        .map_err(|e| TlsError::Config(format!("not usable for QUIC: {e}")))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// The one crypto provider Paxlock uses: ring.
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}
