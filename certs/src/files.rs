//! Writing a development PKI to disk as PEM files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{CertError, ClusterCa, Issued, Validity};

/// Where `write_dev_pki` put each file.
#[derive(Debug, Clone)]
pub struct DevPkiPaths {
    /// The cluster CA certificate (`ca.pem` beside the leaves): what every
    /// node and client trusts.
    pub ca_cert: PathBuf,
    /// The CA private key (`ca.key`, mode 0600), in a folder of its own
    /// (mode 0700, with a copy of `ca.pem`): never beside the node keys,
    /// so copying a node's files never copies the power to issue more.
    pub ca_key: PathBuf,
    /// `(node_id, cert, key)` for every node.
    pub nodes: Vec<(u64, PathBuf, PathBuf)>,
    /// `(identity, cert, key)` for every client.
    pub clients: Vec<(String, PathBuf, PathBuf)>,
}

/// Where `paxlock certs init` keeps the CA key when not told: a folder
/// beside `out`, named after it (`certs/dev` → `certs/dev-ca`).
pub fn default_ca_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "certs".to_string());
    out.with_file_name(format!("{name}-ca"))
}

/// Makes a fresh CA, certificates for nodes `1..=nodes` and the named
/// clients, and writes them as PEM files into `out`, the CA's key into
/// `ca_dir` (which must be another folder).
///
/// Certificates are written with mode 0644 and private keys with mode 0600.
/// Existing files are replaced, so re-running gives a consistent set.
pub fn write_dev_pki(
    out: &Path,
    ca_dir: &Path,
    cluster_name: &str,
    nodes: u64,
    extra_node_sans: &[String],
    clients: &[&str],
) -> Result<DevPkiPaths, CertError> {
    let nodes: Vec<(u64, Vec<String>)> = (1..=nodes)
        .map(|id| (id, extra_node_sans.to_vec()))
        .collect();
    write_pki(out, ca_dir, cluster_name, &nodes, clients)
}

/// Like [`write_dev_pki`], with each node's own extra SANs: for nodes on
/// separate hosts, whose certificates name only their own address.
pub fn write_pki(
    out: &Path,
    ca_dir: &Path,
    cluster_name: &str,
    nodes: &[(u64, Vec<String>)],
    clients: &[&str],
) -> Result<DevPkiPaths, CertError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertError::Write { path, source }
    };
    if same_folder(out, ca_dir) {
        return Err(CertError::CaKeyBesideLeaves(ca_dir.to_path_buf()));
    }
    fs::create_dir_all(out).map_err(io(out))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(ca_dir)
        .map_err(io(ca_dir))?;
    fs::set_permissions(ca_dir, fs::Permissions::from_mode(0o700)).map_err(io(ca_dir))?;
    let ca = ClusterCa::generate(cluster_name)?;
    let (_, ca_key) = write_pair(ca_dir, "ca", ca.certificate())?;
    let ca_cert = out.join("ca.pem");
    write_file(&ca_cert, ca.certificate().cert_pem.as_bytes(), 0o644)?;
    // A CA key an earlier version left beside the leaves goes.
    let stale = out.join("ca.key");
    if stale.exists() {
        fs::remove_file(&stale).map_err(io(&stale))?;
    }
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
    let issued = load_ca(ca_cert, ca_key)?.client_cert(identity, Validity::default())?;
    write_into(out, &format!("client-{identity}"), &issued)
}

/// Issues the certificate of a new node `node_id` (one joining a running
/// cluster, say) from the CA of an existing cluster, with `extra_sans`,
/// and writes it into `out` as `node-<id>.pem` and `.key` (mode 0600).
/// Returns their paths.
pub fn issue_node_files(
    ca_cert: &Path,
    ca_key: &Path,
    node_id: u64,
    extra_sans: &[String],
    out: &Path,
) -> Result<(PathBuf, PathBuf), CertError> {
    let issued = load_ca(ca_cert, ca_key)?.node_cert(node_id, extra_sans, Validity::default())?;
    write_into(out, &format!("node-{node_id}"), &issued)
}

/// The CA of an existing cluster, from its certificate and private key.
fn load_ca(ca_cert: &Path, ca_key: &Path) -> Result<ClusterCa, CertError> {
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|e| CertError::LoadCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    };
    let (cert_pem, key_pem) = (read(ca_cert)?, read(ca_key)?);
    ClusterCa::load(&cert_pem, &key_pem).map_err(|e| CertError::LoadCa {
        path: ca_cert.to_path_buf(),
        reason: format!("{e} (is {} its private key?)", ca_key.display()),
    })
}

/// Writes `issued` into folder `out` (made if missing) as `<stem>.pem` and
/// `<stem>.key`.
fn write_into(out: &Path, stem: &str, issued: &Issued) -> Result<(PathBuf, PathBuf), CertError> {
    fs::create_dir_all(out).map_err(|source| CertError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    write_pair(out, stem, issued)
}

/// Whether two paths name one folder (as far as can be told before either
/// exists: the same path once made absolute).
fn same_folder(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => std::path::absolute(a).ok() == std::path::absolute(b).ok(),
    }
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
        let paths = write_dev_pki(
            &dir.path().join("certs"),
            &dir.path().join("ca"),
            "t",
            1,
            &[],
            &[],
        )?;
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
        let paths = write_dev_pki(
            &dir.path().join("certs"),
            &dir.path().join("ca"),
            "t",
            1,
            &[],
            &[],
        )?;
        let missing = dir.path().join("nope.key");
        let err = issue_client_files(&paths.ca_cert, &missing, "x", dir.path())
            .err()
            .ok_or("issued without a key")?;
        assert!(err.to_string().contains("nope.key"), "{err}");
        let other = tempfile::tempdir()?;
        let other_paths = write_dev_pki(
            &other.path().join("certs"),
            &other.path().join("ca"),
            "other",
            1,
            &[],
            &[],
        )?;
        let wrong_key = issue_client_files(&paths.ca_cert, &other_paths.ca_key, "x", dir.path());
        assert!(matches!(wrong_key, Err(CertError::LoadCa { .. })));
        let bad_name = issue_client_files(&paths.ca_cert, &paths.ca_key, "bad name", dir.path());
        assert!(matches!(bad_name, Err(CertError::InvalidIdentity(_))));
        Ok(())
    }

    #[test]
    fn private_keys_are_written_with_mode_0600() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("certs");
        let paths = write_dev_pki(&out, &default_ca_dir(&out), "t", 3, &[], &["app"])?;
        assert!(
            !out.join("ca.key").exists(),
            "the CA key beside the node keys"
        );
        assert_eq!(paths.ca_key, dir.path().join("certs-ca").join("ca.key"));
        let ca_dir_mode = fs::metadata(dir.path().join("certs-ca"))?
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(ca_dir_mode, 0o700);
        let beside = write_dev_pki(&out, &out, "t", 1, &[], &[]);
        assert!(matches!(beside, Err(CertError::CaKeyBesideLeaves(_))));
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
