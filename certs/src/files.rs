//! Writing a development PKI to disk as PEM files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{CertError, ClusterCa, Issued, Validity};

/// Where `write_dev_pki` put each file.
#[derive(Debug, Clone)]
pub struct DevPkiPaths {
    /// The cluster CA certificate (`ca.pem`): what every node and client trusts.
    pub ca_cert: PathBuf,
    /// The CA private key (`ca.key`, mode 0600).
    pub ca_key: PathBuf,
    /// `(node_id, cert, key)` for every node.
    pub nodes: Vec<(u64, PathBuf, PathBuf)>,
    /// `(identity, cert, key)` for every client.
    pub clients: Vec<(String, PathBuf, PathBuf)>,
}

/// Makes a fresh CA, certificates for nodes `1..=nodes` and the named
/// clients, and writes them as PEM files into `out`.
///
/// Certificates are written with mode 0644 and private keys with mode 0600.
/// Existing files are replaced, so re-running gives a consistent set.
pub fn write_dev_pki(
    out: &Path,
    cluster_name: &str,
    nodes: u64,
    extra_node_sans: &[String],
    clients: &[&str],
) -> Result<DevPkiPaths, CertError> {
    let nodes: Vec<(u64, Vec<String>)> = (1..=nodes)
        .map(|id| (id, extra_node_sans.to_vec()))
        .collect();
    write_pki(out, cluster_name, &nodes, clients)
}

/// Like [`write_dev_pki`], with each node's own extra SANs: for nodes on
/// separate hosts, whose certificates name only their own address.
pub fn write_pki(
    out: &Path,
    cluster_name: &str,
    nodes: &[(u64, Vec<String>)],
    clients: &[&str],
) -> Result<DevPkiPaths, CertError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertError::Write { path, source }
    };
    fs::create_dir_all(out).map_err(io(out))?;
    let ca = ClusterCa::generate(cluster_name)?;
    let (ca_cert, ca_key) = write_pair(out, "ca", ca.certificate())?;
    let mut paths = DevPkiPaths {
        ca_cert,
        ca_key,
        nodes: Vec::new(),
        clients: Vec::new(),
    };
    for (id, sans) in nodes {
        let issued = ca.node_cert(*id, sans, Validity::default())?;
        let (cert, key) = write_pair(out, &format!("node-{id}"), &issued)?;
        paths.nodes.push((*id, cert, key));
    }
    for &identity in clients {
        let issued = ca.client_cert(identity, Validity::default())?;
        let (cert, key) = write_pair(out, &format!("client-{identity}"), &issued)?;
        paths.clients.push((identity.to_string(), cert, key));
    }
    Ok(paths)
}

/// Issues one more client certificate for `identity` from the CA of an
/// existing cluster (its `ca.pem` and `ca.key`), and writes it into `out`
/// as `client-<identity>.pem` and `.key` (mode 0600). Returns their paths.
pub fn issue_client_files(
    ca_cert: &Path,
    ca_key: &Path,
    identity: &str,
    out: &Path,
) -> Result<(PathBuf, PathBuf), CertError> {
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|e| CertError::LoadCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    };
    let (cert_pem, key_pem) = (read(ca_cert)?, read(ca_key)?);
    let ca = ClusterCa::load(&cert_pem, &key_pem).map_err(|e| CertError::LoadCa {
        path: ca_cert.to_path_buf(),
        reason: format!("{e} (is {} its private key?)", ca_key.display()),
    })?;
    let issued = ca.client_cert(identity, Validity::default())?;
    fs::create_dir_all(out).map_err(|source| CertError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    write_pair(out, &format!("client-{identity}"), &issued)
}

fn write_pair(out: &Path, stem: &str, issued: &Issued) -> Result<(PathBuf, PathBuf), CertError> {
    let cert = out.join(format!("{stem}.pem"));
    let key = out.join(format!("{stem}.key"));
    write_file(&cert, issued.cert_pem.as_bytes(), 0o644)?;
    write_file(&key, issued.key_pem.as_bytes(), 0o600)?;
    Ok((cert, key))
}

/// Writes `contents` to `path` through a temporary file so that a key is
/// never world-readable, not even for a moment, and never half-written.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_client_issued_from_the_written_ca_is_signed_by_it(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let paths = write_dev_pki(dir.path(), "t", 1, &[], &[])?;
        let (cert, key) = issue_client_files(&paths.ca_cert, &paths.ca_key, "second", dir.path())?;
        let der = x509_parser::pem::parse_x509_pem(fs::read(&cert)?.as_slice())?
            .1
            .contents;
        assert_eq!(crate::certificate_identity(&der)?, "second");
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)?;
        let ca_der = x509_parser::pem::parse_x509_pem(fs::read(&paths.ca_cert)?.as_slice())?
            .1
            .contents;
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)?;
        parsed.verify_signature(Some(ca.public_key()))?;
        assert_eq!(fs::metadata(&key)?.permissions().mode() & 0o777, 0o600);
        Ok(())
    }

    #[test]
    fn issuing_from_a_key_that_is_not_the_cas_is_a_clear_error(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let paths = write_dev_pki(dir.path(), "t", 1, &[], &[])?;
        let missing = dir.path().join("nope.key");
        let err = issue_client_files(&paths.ca_cert, &missing, "x", dir.path())
            .err()
            .ok_or("issued without a key")?;
        assert!(err.to_string().contains("nope.key"), "{err}");
        let other = tempfile::tempdir()?;
        let other_paths = write_dev_pki(other.path(), "other", 1, &[], &[])?;
        let wrong_key = issue_client_files(&paths.ca_cert, &other_paths.ca_key, "x", dir.path());
        assert!(matches!(wrong_key, Err(CertError::LoadCa { .. })));
        let bad_name = issue_client_files(&paths.ca_cert, &paths.ca_key, "bad name", dir.path());
        assert!(matches!(bad_name, Err(CertError::InvalidIdentity(_))));
        Ok(())
    }

    #[test]
    fn private_keys_are_written_with_mode_0600() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let paths = write_dev_pki(dir.path(), "t", 3, &[], &["app"])?;
        let mut keys = vec![paths.ca_key.clone()];
        keys.extend(paths.nodes.iter().map(|(_, _, k)| k.clone()));
        keys.extend(paths.clients.iter().map(|(_, _, k)| k.clone()));
        assert_eq!(keys.len(), 5);
        for key in keys {
            let mode = fs::metadata(&key)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let cert_mode = fs::metadata(&paths.ca_cert)?.permissions().mode() & 0o777;
        assert_eq!(cert_mode, 0o644);
        Ok(())
    }
}
