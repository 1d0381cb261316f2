//! Who a client certificate names: the identity its requests act as.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Longest identity in bytes (a DNS name's limit; an X.509 common name is
/// at most 64 characters).
pub const MAX_IDENTITY_BYTES: usize = 253;

/// Why a certificate names no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not an X.509 certificate.
    #[error("the client certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// Neither a subject common name nor a DNS name.
    #[error(
        "the client certificate names no identity: give it a subject common name \
         (paxlock certs issue-client does)"
    )]
    NoName,
    /// A node's certificate (it names `node-N.paxlock`): nodes dial each
    /// other with it, and it must never act as a client.
    #[error(
        "the certificate names node {0:?}: a node certificate cannot be used by a client; \
         issue a client certificate (paxlock certs issue-client)"
    )]
    NodeCertificate(String),
    /// A name with a wildcard: an identity names one client.
    #[error(
        "the certificate names {0:?}, a wildcard: a client identity must name one client; \
         issue it a certificate of its own"
    )]
    Wildcard(String),
    /// A name that is not 1..=253 bytes of printable text.
    #[error(
        "the client certificate's name {0:?} cannot be an identity: use 1-253 printable characters"
    )]
    Unusable(String),
}

/// The identity of a client certificate (DER): its subject common name, or,
/// if it has none, its first DNS subject alternative name.
///
/// Sessions belong to this name, not to the certificate: a renewed
/// certificate with the same name keeps its sessions, and access rules
/// name it. `paxlock certs` issues client certificates whose common name is
/// the identity.
///
/// Refused: a node's certificate (any name `node-N.paxlock`) and any
/// certificate naming a wildcard, whichever of its names it is in.
pub fn certificate_identity(der: &[u8]) -> Result<String, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let mut names: Vec<&str> = dns_names(&cert);
    names.extend(
        cert.subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok()),
    );
    if let Some(node) = names.iter().find(|n| is_node_name(n)) {
        return Err(IdentityError::NodeCertificate(node.to_string()));
    }
    if let Some(wildcard) = names.iter().find(|n| n.contains('*')) {
        return Err(IdentityError::Wildcard(wildcard.to_string()));
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .map(|cn| cn.as_str().map(str::to_owned));
    let name = match common_name {
        Some(Ok(cn)) => cn,
        Some(Err(_)) => return Err(IdentityError::Unusable("<not text>".into())),
        None => dns_names(&cert)
            .first()
            .map(|dns| dns.to_string())
            .ok_or(IdentityError::NoName)?,
    };
    let printable = name.chars().all(|c| !c.is_control());
    if name.is_empty() || name.len() > MAX_IDENTITY_BYTES || !printable {
        return Err(IdentityError::Unusable(name));
    }
    Ok(name)
}

fn dns_names<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        })
        .collect()
}

/// The certificate's (DER) serial number in upper-case hex, as
/// `openssl x509 -serial` prints it; `None` if it cannot be parsed.
pub fn certificate_serial(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(
        cert.raw_serial()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect(),
    )
}

/// Whether `name` is a node's name, `node-<id>.paxlock` (see
/// [`crate::node_dns_name`]), in any case.
pub fn is_node_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower
        .strip_prefix("node-")
        .and_then(|rest| rest.strip_suffix(".paxlock"))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether the certificate (DER) may authenticate a server: its extended
/// key usage lists serverAuth, or it has none (any use). Nodes' do; a
/// client certificate of `paxlock certs` does not, so it can never pass as
/// a node, whatever names an outside CA put in it.
pub fn allows_server_auth(der: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    match cert.extended_key_usage() {
        Ok(Some(eku)) => eku.value.server_auth || eku.value.any,
        Ok(None) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterCa, Validity};

    #[test]
    fn a_client_certificate_names_its_common_name() -> Result<(), Box<dyn std::error::Error>> {
        let ca = ClusterCa::generate("t")?;
        let issued = ca.client_cert("orders-worker", Validity::default())?;
        assert_eq!(certificate_identity(&issued.cert_der)?, "orders-worker");
        Ok(())
    }

    #[test]
    fn a_node_certificate_is_no_client_identity() -> Result<(), Box<dyn std::error::Error>> {
        let ca = ClusterCa::generate("t")?;
        let node = ca.node_cert(2, &[], Validity::default())?;
        assert_eq!(
            certificate_identity(&node.cert_der),
            Err(IdentityError::NodeCertificate("node-2.paxlock".into()))
        );
        assert!(allows_server_auth(&node.cert_der));
        let client = ca.client_cert("app", Validity::default())?;
        assert!(!allows_server_auth(&client.cert_der));
        assert!(is_node_name("NODE-17.paxlock"));
        assert!(!is_node_name("node-.paxlock") && !is_node_name("node-1x.paxlock"));
        Ok(())
    }

    #[test]
    fn a_wildcard_certificate_is_no_client_identity() -> Result<(), Box<dyn std::error::Error>> {
        // An outside CA's certificate for a wildcard name.
        let ca = ClusterCa::generate("t")?;
        let wildcard = ca.leaf_for_tests("*.apps.example", vec!["*.apps.example".into()])?;
        assert!(matches!(
            certificate_identity(&wildcard.cert_der),
            Err(IdentityError::Wildcard(_))
        ));
        Ok(())
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            certificate_identity(b"not a certificate"),
            Err(IdentityError::Unparsable(_))
        ));
        assert!(certificate_identity(&[]).is_err());
    }
}
