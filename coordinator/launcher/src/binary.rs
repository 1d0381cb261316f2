//! The `paxlock` executable a node runs, and which of the launcher's
//! `serve` flags it knows: a benchmark or an upgrade test may run an older
//! release, which must be started the way it understands.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::LaunchError;

/// A `paxlock` executable and the `serve` flags it supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBinary {
    path: PathBuf,
    exit_with_parent: bool,
    worker_threads: bool,
}

impl NodeBinary {
    /// Asks `path serve --help` which flags it knows.
    pub fn probe(path: impl Into<PathBuf>) -> Result<NodeBinary, LaunchError> {
        let path = path.into();
        let output = Command::new(&path)
            .args(["serve", "--help"])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LaunchError::Binary {
                path: path.clone(),
                reason: source.to_string(),
            })?;
        if !output.status.success() {
            return Err(LaunchError::Binary {
                path,
                reason: format!(
                    "`serve --help` failed ({}): is it a paxlock executable?",
                    output.status
                ),
            });
        }
        let help = String::from_utf8_lossy(&output.stdout);
        Ok(NodeBinary {
            exit_with_parent: help.contains("--exit-with-parent"),
            worker_threads: help.contains("--worker-threads"),
            path,
        })
    }

    /// Where the executable is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether its nodes stop when their launcher's pipe closes
    /// (`serve --exit-with-parent`); older releases lack the flag, and
    /// only the launcher's own stop or drop ends their nodes.
    pub fn exits_with_parent(&self) -> bool {
        self.exit_with_parent
    }

    /// Whether it takes `serve --worker-threads`.
    pub fn takes_worker_threads(&self) -> bool {
        self.worker_threads
    }
}
