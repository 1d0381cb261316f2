//! Development PKI for Paxlock clusters.
//!
//! A Paxlock cluster trusts exactly one certificate authority (the *cluster
//! CA*). Every node holds a certificate that names it (`node-<id>.paxlock`)
//! and may be used both to accept and to dial connections, because nodes do
//! both. Every client holds a certificate whose subject common name is the
//! client's identity.
//!
//! This crate makes those certificates with `rcgen`, in memory (for tests)
//! or as PEM files on disk (`paxlock certs init`). It is meant for
//! development and for small deployments that have no PKI of their own;
//! operators with a PKI issue the same shapes of certificate from it.

#![forbid(unsafe_code)]

mod files;
mod identity;

pub use files::{
    default_ca_dir, issue_client_files, issue_node_files, write_dev_pki, write_pki, DevPkiPaths,
};
pub use identity::{
    allows_server_auth, certificate_identity, certificate_serial, is_node_name, IdentityError,
    MAX_IDENTITY_BYTES,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};

/// The DNS name a node's certificate must carry for node `node_id`.
///
/// Peers check this name against the node id claimed in the peer hello, so a
/// node cannot impersonate another even though both hold certificates from
/// the same CA.
pub fn node_dns_name(node_id: u64) -> String {
    format!("node-{node_id}.paxlock")
}

/// Everything that can go wrong while making certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or failed to sign.
    #[error("could not generate certificate for {subject}: {source}")]
    Generate {
        /// Which certificate was being made.
        subject: String,
        /// The underlying rcgen error.
        source: rcgen::Error,
    },
    /// A client identity that cannot be used as a certificate subject.
    #[error(
        "client identity {0:?} is invalid: use 1-64 characters from [A-Za-z0-9._-], \
         not ending in .paxlock (reserved for nodes)"
    )]
    InvalidIdentity(String),
    /// The CA certificate or key given to issue from cannot be used.
    #[error("cannot use {path} as the cluster CA: {reason}")]
    LoadCa {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA key was to be written into the folder of the node and client
    /// keys.
    #[error(
        "{} would put the CA key beside the node keys: give the CA its own folder \
         (--ca-dir)", .0.display()
    )]
    CaKeyBesideLeaves(std::path::PathBuf),
    /// Writing the PEM files failed.
    #[error("could not write {path}: {source}")]
    Write {
        /// The file that could not be written.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A certificate and its private key, both as DER and PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate, DER-encoded.
    pub cert_der: Vec<u8>,
    /// The certificate, PEM-encoded.
    pub cert_pem: String,
    /// The PKCS#8 private key, DER-encoded.
    pub key_der: Vec<u8>,
    /// The PKCS#8 private key, PEM-encoded.
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    // Never print key material, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

/// How long a leaf certificate is valid; tests use this to make expired ones.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// Valid from one day ago for the given number of days.
    DaysFromNow(u32),
    /// Valid only between two calendar years (Jan 1 of each); used to make
    /// certificates that have already expired.
    Years {
        /// First year of validity.
        from: i32,
        /// Year at whose start the certificate expires.
        until: i32,
    },
}

impl Default for Validity {
    fn default() -> Self {
        // Ten years: a dev cluster should not break while someone is on holiday.
        Validity::DaysFromNow(3650)
    }
}

/// A cluster certificate authority that can sign node and client certificates.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert: Issued,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Makes a new self-signed CA whose subject names the cluster.
    pub fn generate(cluster_name: &str) -> Result<Self, CertError> {
        let subject = format!("Paxlock cluster CA {cluster_name}");
        let gen = |source| CertError::Generate {
            subject: subject.clone(),
            source,
        };
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, subject.clone());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Paxlock");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, Validity::default());
        let key = KeyPair::generate().map_err(gen)?;
        let cert = params.self_signed(&key).map_err(gen)?;
        let issued = Issued {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        };
        Ok(ClusterCa {
            issuer: Issuer::new(params, key),
            cert: issued,
        })
    }

    /// The CA of an existing cluster, from its certificate and private key
    /// as written by `paxlock certs init` (PEM), to issue more certificates
    /// that the cluster's nodes trust.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = pem_to_der(cert_pem)?;
        // rcgen would sign with any key; certificates signed by a key that
        // is not the CA's would be refused by every node, later and
        // obscurely. Refuse here instead.
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(rcgen::Error::CouldNotParseKeyPair);
        }
        let issued = Issued {
            cert_der,
            cert_pem: cert_pem.to_string(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        };
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(ClusterCa {
            issuer,
            cert: issued,
        })
    }

    /// The CA certificate (and key) that every node and client must trust.
    pub fn certificate(&self) -> &Issued {
        &self.cert
    }

    /// Issues the certificate for node `node_id`.
    ///
    /// SANs: `node-<id>.paxlock`, `localhost`, `127.0.0.1`, plus `extra_sans`
    /// (DNS names or IP addresses, for nodes on real hosts). Usable for both
    /// server and client authentication because nodes accept and dial.
    pub fn node_cert(
        &self,
        node_id: u64,
        extra_sans: &[String],
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let mut names = vec![
            node_dns_name(node_id),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ];
        names.extend(extra_sans.iter().cloned());
        self.leaf(
            &node_dns_name(node_id),
            names,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            validity,
        )
    }

    /// Issues a client certificate whose subject common name is `identity`.
    /// Names ending in `.paxlock` are reserved (nodes are `node-N.paxlock`).
    pub fn client_cert(&self, identity: &str, validity: Validity) -> Result<Issued, CertError> {
        let valid = !identity.is_empty()
            && identity.len() <= 64
            && identity
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && !identity.to_ascii_lowercase().ends_with(".paxlock");
        if !valid {
            return Err(CertError::InvalidIdentity(identity.to_string()));
        }
        // Client certificates carry no node name, so they can never pass the
        // peer identity check; a client SAN keeps them distinct in logs.
        self.leaf(
            identity,
            vec![format!("{identity}.client.paxlock")],
            &[ExtendedKeyUsagePurpose::ClientAuth],
            validity,
        )
    }

    /// A client-usage certificate with any names, as an outside CA might
    /// issue it: for tests of what nodes refuse.
    #[doc(hidden)]
    pub fn leaf_for_tests(
        &self,
        common_name: &str,
        names: Vec<String>,
    ) -> Result<Issued, CertError> {
        self.leaf(
            common_name,
            names,
            &[ExtendedKeyUsagePurpose::ClientAuth],
            Validity::default(),
        )
    }

    fn leaf(
        &self,
        common_name: &str,
        names: Vec<String>,
        usages: &[ExtendedKeyUsagePurpose],
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let gen = |source| CertError::Generate {
            subject: common_name.to_string(),
            source,
        };
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .into_iter()
            .map(|name| match name.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name.try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()
            .map_err(gen)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::NoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages.to_vec();
        set_validity(&mut params, validity);
        let key = KeyPair::generate().map_err(gen)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(gen)?;
        Ok(Issued {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The DER bytes of a PEM certificate.
fn pem_to_der(pem: &str) -> Result<Vec<u8>, rcgen::Error> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
    Ok(parsed.contents)
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    match validity {
        Validity::DaysFromNow(days) => {
            let now = std::time::SystemTime::now();
            let day = std::time::Duration::from_secs(86_400);
            params.not_before = (now - day).into();
            params.not_after = (now + day * days).into();
        }
        Validity::Years { from, until } => {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(until, 1, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_cert_and_key_are_pem_and_differ_from_the_ca() -> Result<(), CertError> {
        let ca = ClusterCa::generate("test")?;
        let node = ca.node_cert(2, &[], Validity::default())?;
        assert!(node.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(node.key_pem.contains("PRIVATE KEY"));
        assert_ne!(node.cert_der, ca.certificate().cert_der);
        Ok(())
    }

    #[test]
    fn client_identity_with_spaces_is_rejected() -> Result<(), CertError> {
        let ca = ClusterCa::generate("test")?;
        let err = ca.client_cert("bad name", Validity::default());
        assert!(matches!(err, Err(CertError::InvalidIdentity(_))));
        Ok(())
    }
}
