//! Local Paxlock clusters of real `paxlock serve` processes, started one
//! way for everyone who needs one: `paxlock dev`, the lab's benchmark and
//! chaos runner, and the integration tests.
//!
//! A [`ClusterSpec`] says what to launch (node addresses, extra config,
//! worker threads, where output goes, environment, a wrapper command such
//! as `ip netns exec` and a public address per node for a fault proxy in
//! front of it). [`Cluster::prepare`] writes certificates, configs and data
//! folders; [`Cluster::start`] also starts every node and waits until each
//! is ready, which is decided one way: the node answers the status request,
//! knows a leader and is connected to every running peer.
//!
//! Nodes never outlive their launcher: dropping the [`Cluster`] kills them,
//! and a node of a binary that supports it is started with
//! `--exit-with-parent` and a stdin pipe only the launcher holds, so it
//! stops when the launcher dies, even by SIGKILL.

mod binary;
mod cluster;
pub mod ports;
pub mod process;
pub mod requires;
mod spec;

use std::path::PathBuf;
use std::time::Duration;

pub use binary::NodeBinary;
pub use cluster::Cluster;
pub use spec::{ClusterSpec, LogSink, NodeLine, NodeSpec, DEV_CLIENT};

/// Why launching or driving a cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The node executable cannot be used.
    #[error("cannot run {path} as a paxlock node: {reason}", path = path.display())]
    Binary {
        /// The executable.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A file or folder of the cluster could not be written.
    #[error("cannot write {path}: {source}", path = path.display())]
    Write {
        /// What was written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificates could not be made.
    #[error("cannot make certificates in {path}: {source}", path = path.display())]
    Certs {
        /// The certificates folder.
        path: PathBuf,
        /// The error.
        source: paxlock_certs::CertError,
    },
    /// The spec cannot be launched.
    #[error("this cluster spec cannot be launched: {0}")]
    Spec(String),
    /// The spec names no client identity, and the launcher needs one to
    /// ask nodes for their status.
    #[error("the cluster spec names no client identity; give it at least one")]
    NoClient,
    /// The launcher's own client certificate could not be loaded.
    #[error("cannot load the launcher's client certificate: {0}")]
    Certificate(#[from] paxlock::tls::TlsError),
    /// Asking a node for its status failed.
    #[error(transparent)]
    Status(#[from] paxlock::Error),
    /// A node could not be started.
    #[error("cannot start node {id} ({path}): {source}", path = path.display())]
    Spawn {
        /// The node.
        id: u64,
        /// Its executable.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A node could not be signalled or waited for.
    #[error("cannot signal or wait for node {id}: {source}")]
    Signal {
        /// The node.
        id: u64,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The spec has no node of that id.
    #[error("this cluster has no node {0}")]
    NoSuchNode(u64),
    /// The node runs already.
    #[error("node {0} runs already; kill or stop it first")]
    AlreadyRunning(u64),
    /// A wait for readiness named a node that was not started.
    #[error("node {0} was not started")]
    NotStarted(u64),
    /// A node exited while the launcher waited for it.
    #[error("node {id} exited ({status}) before it was ready; see {log}")]
    Exited {
        /// The node.
        id: u64,
        /// How it ended.
        status: std::process::ExitStatus,
        /// Where its output is.
        log: String,
    },
    /// A node was not ready in time.
    #[error("node {id} was not ready within {timeout:?} ({last}); see {log}")]
    NotReady {
        /// The node.
        id: u64,
        /// The wait.
        timeout: Duration,
        /// What its last status lacked.
        last: String,
        /// Where its output is.
        log: String,
    },
    /// A node did not exit within the wait.
    #[error("node {id} still runs after {patience:?}")]
    StillRunning {
        /// The node.
        id: u64,
        /// The wait.
        patience: Duration,
    },
}
