//! Who is on the other end of a connection, according to its certificate.

use paxlock_certs::node_dns_name;

use super::revocation::ClientCertificate;
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
    /// A certificate that may not authenticate a server (a client's): it
    /// cannot be a node's, whatever it names.
    #[error("the certificate is not a node certificate (its key usage does not allow serverAuth)")]
    NotANode,
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
/// presented (see [`paxlock_certs::certificate_identity`]), with the
/// certificate's serial (for revocation). The chain was verified against
/// the cluster CA during the handshake.
pub fn client_identity(
    certs: &[CertificateDer<'_>],
) -> Result<ClientCertificate, paxlock_certs::IdentityError> {
    let leaf = certs
        .first()
        .ok_or_else(|| paxlock_certs::IdentityError::Unparsable("no certificate".into()))?;
    let identity = paxlock_certs::certificate_identity(leaf).map(Identity)?;
    let serial = paxlock_certs::certificate_serial(leaf).unwrap_or_default();
    Ok(ClientCertificate { identity, serial })
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
    if !paxlock_certs::allows_server_auth(leaf) {
        return Err(IdentityError::NotANode);
    }
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

    #[test]
    fn a_client_certificate_naming_a_node_is_still_no_node(
    ) -> Result<(), Box<dyn std::error::Error>> {
        // An outside CA put a node's name in a client certificate.
        let ca = ClusterCa::generate("t")?;
        let forged = ca.leaf_for_tests("x", vec!["node-1.paxlock".into()])?;
        let chain = [CertificateDer::from(forged.cert_der)];
        assert_eq!(
            verify_node_identity(&chain, 1),
            Err(IdentityError::NotANode)
        );
        Ok(())
    }
}
