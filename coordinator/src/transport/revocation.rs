//! Revoked client certificates and identities: a file the operator edits
//! (`[access] revocations`), followed while the node runs. A change is in
//! force at once for new connections and closes open ones it revokes
//! (`CERTIFICATE_REVOKED`), without a restart.
//!
//! ```toml
//! # identities (certificate names) no certificate may act as any more
//! identities = ["old-batch-job"]
//! # single certificates, by serial number in hex (`openssl x509 -serial`)
//! serials = ["3A:5F:09"]
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::locks::Identity;

/// How often the file is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Most entries the file may list (it is read whole into memory).
pub const MAX_ENTRIES: usize = 100_000;

/// Largest file accepted.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A client connection's certificate, as revocation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The identity it acts as.
    pub identity: Identity,
    /// Its serial number, upper-case hex without separators.
    pub serial: String,
}

/// What is revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    identities: BTreeSet<String>,
    serials: BTreeSet<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationFile {
    #[serde(default)]
    identities: Vec<String>,
    #[serde(default)]
    serials: Vec<String>,
}

/// Why the revocation file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// It could not be read.
    #[error("cannot read the revocation file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a revocation file.
    #[error("the revocation file {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A serial number as this module compares them: hex digits only, upper
/// case, no leading zeros (`3a:5f:09` and `3A5F09` are one serial).
pub fn normalize_serial(text: &str) -> Option<String> {
    let digits: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0" } else { trimmed }.to_string())
}

impl Revocations {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Revocations, RevocationError> {
        let read = |source| RevocationError::Read {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |reason: String| RevocationError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_FILE_BYTES {
            return Err(invalid(format!("{len} bytes, more than {MAX_FILE_BYTES}")));
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let file: RevocationFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if file.identities.len() + file.serials.len() > MAX_ENTRIES {
            return Err(invalid(format!("more than {MAX_ENTRIES} entries")));
        }
        let serials = file
            .serials
            .iter()
            .map(|s| normalize_serial(s).ok_or_else(|| invalid(format!("serial {s:?} is not hex"))))
            .collect::<Result<_, _>>()?;
        Ok(Revocations {
            identities: file.identities.into_iter().collect(),
            serials,
        })
    }

    /// Why `cert` may not connect, if it is revoked.
    pub fn revokes(&self, cert: &ClientCertificate) -> Option<String> {
        if self.identities.contains(cert.identity.as_str()) {
            return Some(format!("identity {:?} is revoked", cert.identity.as_str()));
        }
        let serial = normalize_serial(&cert.serial)?;
        self.serials.contains(&serial).then(|| {
            format!(
                "certificate {serial} ({:?}) is revoked",
                cert.identity.as_str()
            )
        })
    }

    /// How many identities and serials it lists.
    pub fn len(&self) -> usize {
        self.identities.len() + self.serials.len()
    }

    /// Whether it lists nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The revocations in force, changing as the file does.
pub type RevocationWatch = watch::Receiver<Arc<Revocations>>;

/// Nothing revoked, ever (no file configured).
pub fn none() -> RevocationWatch {
    watch::channel(Arc::new(Revocations::default())).1
}

/// Loads `path` (an error stops the node from starting: revocations it
/// cannot read must not pass for none) and follows it: each change is read
/// and published; a change that cannot be read is logged and the last good
/// list stays in force.
pub fn follow(
    path: PathBuf,
) -> Result<(RevocationWatch, tokio::task::JoinHandle<()>), RevocationError> {
    let first = Revocations::load(&path)?;
    info!(path = %path.display(), entries = first.len(), "revocations loaded");
    let (tx, rx) = watch::channel(Arc::new(first));
    let task = tokio::spawn(async move {
        let mut seen = stamp(&path);
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        loop {
            ticks.tick().await;
            let now = stamp(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match Revocations::load(&path) {
                Ok(list) => {
                    info!(path = %path.display(), entries = list.len(), "revocations changed");
                    if tx.send(Arc::new(list)).is_err() {
                        return;
                    }
                }
                Err(RevocationError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    warn!(path = %path.display(), "the revocation file is gone; keeping the last list");
                }
                Err(e) => error!("{e}; keeping the last list"),
            }
        }
    });
    Ok((rx, task))
}

/// What tells a changed file: its modification time and length.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(identity: &str, serial: &str) -> ClientCertificate {
        ClientCertificate {
            identity: Identity(identity.into()),
            serial: serial.into(),
        }
    }

    #[test]
    fn identities_and_serials_in_any_spelling_are_revoked() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("revoked.toml");
        std::fs::write(
            &path,
            "identities = [\"mallory\"]\nserials = [\"00:3a:5F:09\"]\n",
        )?;
        let list = Revocations::load(&path)?;
        assert!(list.revokes(&cert("mallory", "01")).is_some());
        assert!(list.revokes(&cert("alice", "3A5F09")).is_some());
        assert!(list.revokes(&cert("alice", "3A5F0A")).is_none());
        Ok(())
    }

    #[test]
    fn a_bad_file_is_an_error_that_names_it() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("revoked.toml");
        std::fs::write(&path, "serials = [\"not hex\"]\n")?;
        let err = Revocations::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("revoked.toml") && err.contains("not hex"),
            "{err}"
        );
        std::fs::write(&path, "identity = [\"typo\"]\n")?;
        assert!(Revocations::load(&path).is_err());
        assert!(Revocations::load(&dir.path().join("missing.toml")).is_err());
        Ok(())
    }
}
