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
pub fn certificate_identity(der: &[u8]) -> Result<String, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .map(|cn| cn.as_str().map(str::to_owned));
    let name = match common_name {
        Some(Ok(cn)) => cn,
        Some(Err(_)) => return Err(IdentityError::Unusable("<not text>".into())),
        None => first_dns_name(&cert).ok_or(IdentityError::NoName)?,
    };
    let printable = name.chars().all(|c| !c.is_control());
    if name.is_empty() || name.len() > MAX_IDENTITY_BYTES || !printable {
        return Err(IdentityError::Unusable(name));
    }
    Ok(name)
}

fn first_dns_name(cert: &X509Certificate<'_>) -> Option<String> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(dns) => Some((*dns).to_string()),
        _ => None,
    })
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
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            certificate_identity(b"not a certificate"),
            Err(IdentityError::Unparsable(_))
        ));
        assert!(certificate_identity(&[]).is_err());
    }
}
