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
