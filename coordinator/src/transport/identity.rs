//! Who is on the other end of a connection, according to its certificate.

use paxlock_certs::node_dns_name;

use crate::locks::Identity;
use rustls::pki_types::{CertificateDer, DnsName, ServerName};

/// Why a peer's claimed node id was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The connection carries no certificate (cannot happen with mutual TLS
    /// enforced, but is checked rather than assumed).
    #[error("the connection presented no certificate")]
    NoCertificate,
    /// The certificate could not be parsed.
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// The certificate does not name the node id claimed in the hello.
    #[error("the certificate does not name node {claimed} (expected SAN {expected})")]
    Mismatch {
        /// The node id the peer claimed.
        claimed: u64,
        /// The SAN that would have proved it.
        expected: String,
    },
}

/// The identity a client connection acts as: the name of the certificate it
/// presented (see [`paxlock_certs::certificate_identity`]). The chain was
/// verified against the cluster CA during the handshake.
pub fn client_identity(
    certs: &[CertificateDer<'_>],
) -> Result<Identity, paxlock_certs::IdentityError> {
    let leaf = certs
        .first()
        .ok_or_else(|| paxlock_certs::IdentityError::Unparsable("no certificate".into()))?;
    paxlock_certs::certificate_identity(leaf).map(Identity)
}

/// The certificate chain the remote end presented, leaf first.
pub fn peer_certificates(conn: &quinn::Connection) -> Vec<CertificateDer<'static>> {
    conn.peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|certs| *certs)
        .unwrap_or_default()
}

/// Checks that `leaf` names node `claimed` (DNS SAN `node-<id>.paxlock`).
///
/// Every node certificate is signed by the same CA, so the CA check alone
/// would let node 2 claim to be node 3; this check closes that gap. The
/// chain itself was already verified against the CA during the handshake.
pub fn verify_node_identity(
    certs: &[CertificateDer<'_>],
    claimed: u64,
) -> Result<(), IdentityError> {
    let leaf = certs.first().ok_or(IdentityError::NoCertificate)?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let expected = node_dns_name(claimed);
    let mismatch = || IdentityError::Mismatch {
        claimed,
        expected: expected.clone(),
    };
    let dns = DnsName::try_from(expected.clone()).map_err(|_| mismatch())?;
    cert.verify_is_valid_for_subject_name(&ServerName::DnsName(dns))
        .map_err(|_| mismatch())
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxlock_certs::{ClusterCa, Validity};

    #[test]
    fn node_certificate_names_its_own_id_only() -> Result<(), Box<dyn std::error::Error>> {
        let ca = ClusterCa::generate("t")?;
        let node2 = ca.node_cert(2, &[], Validity::default())?;
        let chain = [CertificateDer::from(node2.cert_der)];
        assert_eq!(verify_node_identity(&chain, 2), Ok(()));
        assert!(matches!(
            verify_node_identity(&chain, 3),
            Err(IdentityError::Mismatch { claimed: 3, .. })
        ));
        Ok(())
    }

    #[test]
    fn client_certificate_names_no_node() -> Result<(), Box<dyn std::error::Error>> {
        let ca = ClusterCa::generate("t")?;
        let client = ca.client_cert("app", Validity::default())?;
        let chain = [CertificateDer::from(client.cert_der)];
        assert!(verify_node_identity(&chain, 1).is_err());
        Ok(())
    }
}
