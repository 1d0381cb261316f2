//! The node's TLS server configuration.
//!
//! Policy, in one place: TLS 1.3 only; the ring provider only; every
//! connection authenticates both ends against the cluster CA; no 0-RTT, so
//! no state-changing request can be replayed. Loading material and the
//! dialing side live in the client crate (`paxlock::tls`), which nodes use
//! too when they dial peers.

use std::sync::Arc;

pub use paxlock::tls::{provider, quic_client_config, TlsError, TlsMaterial};
use paxlock::wire::CLIENT_ALPN_V1;
use quinn::crypto::rustls::QuicServerConfig;
use rustls::server::WebPkiClientVerifier;

/// The server side of a node's endpoint: requires a client certificate from
/// the cluster CA and offers the client, the peer and the join ALPNs.
pub fn server_config(material: &TlsMaterial) -> Result<quinn::ServerConfig, TlsError> {
    let provider = Arc::new(provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(material.roots()?, provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(material.chain.clone(), material.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // The server picks the first of these the other side offers; a dialing
    // node offers every peer version it speaks, newest first.
    config.alpn_protocols = std::iter::once(CLIENT_ALPN_V1)
        .chain(super::peer_version::PEER_ALPNS)
        .chain([super::join::JOIN_ALPN])
        .map(<[u8]>::to_vec)
        .collect();
    // No 0-RTT: early data can be replayed, and every request may change state.
    config.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(config)
        .map_err(|e| TlsError::Config(format!("not usable for QUIC: {e}")))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}
