//! The one error type of the storage layer.
//!
//! Every message says what happened, where (file and byte offset when there is
//! one) and what the operator should do next, because these errors end up in
//! the node's exit message.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while opening, writing or recovering storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system call failed; nothing was acknowledged for it.
    #[error("I/O error while {op} {path}: {source}. Check free disk space, permissions and the kernel log, then restart the node")]
    Io {
        /// What the store was doing, e.g. "writing segment".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// Data that was once durable no longer checks out. The store refused to
    /// start and did not modify any file.
    #[error("data corruption in {file} at byte offset {offset_bytes}: {reason}. The data directory was left untouched; do not delete files by hand. Keep the directory aside (for diagnosis), remove this node from the cluster (paxlock members remove) and bring the machine back as a new member under a new id: a node must not rejoin under its id without its data")]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Where in that file the damage starts.
        offset_bytes: u64,
        /// What check failed.
        reason: String,
    },

    /// A WAL segment is missing from the numbered sequence.
    #[error("WAL segment {expected_file} is missing from {dir} (found {found_file} instead). Records in between are lost; the directory was left untouched. Keep it aside, remove this node from the cluster (paxlock members remove) and bring the machine back as a new member under a new id")]
    MissingSegment {
        /// The data directory.
        dir: PathBuf,
        /// The file name that should have been there.
        expected_file: String,
        /// The file name that was there instead.
        found_file: String,
    },

    /// The data directory was written by a paxlock version with another
    /// data format. Nothing was modified.
    #[error("{file} says data format {found}, but this paxlock reads format {expected}: the directory was written by another paxlock version. Run that version, or remove this node from the cluster (paxlock members remove) and bring the machine back as a new member under a new id")]
    UnsupportedFormat {
        /// The file that carries the format version.
        file: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },

    /// The data directory belongs to another cluster or another node.
    #[error("data directory {dir} was created for cluster {found_cluster_id} node {found_node_id}, but this node runs as cluster {expected_cluster_id} node {expected_node_id}. Point the node at its own data directory; never reuse another node's")]
    IdentityMismatch {
        /// The data directory.
        dir: PathBuf,
        /// Cluster id recorded in the directory.
        found_cluster_id: u64,
        /// Node id recorded in the directory.
        found_node_id: u64,
        /// Cluster id this process was started with.
        expected_cluster_id: u64,
        /// Node id this process was started with.
        expected_node_id: u64,
    },

    /// Another open store (in this or another process) holds the directory.
    #[error("data directory {dir} is in use by another running store (it is locked). Two processes must never share one node's data directory; stop the other one first")]
    DirectoryLocked {
        /// The data directory.
        dir: PathBuf,
    },

    /// WAL or snapshot files exist but the identity file does not.
    #[error("data directory {dir} holds WAL or snapshot files but no identity file; refusing to guess which node it belongs to. Restore the identity file or move the directory aside")]
    IdentityMissing {
        /// The data directory.
        dir: PathBuf,
    },

    /// A write or fsync failed earlier; the store no longer accepts writes
    /// because after a failed fsync the page cache cannot be trusted.
    #[error("the WAL writer failed ({reason}); the store refuses further writes. Restart the node so that it recovers from what is on disk")]
    WriterFailed {
        /// The first failure, as text (it is handed to many waiters).
        reason: String,
    },

    /// The store was closed (or, for the in-memory store, crashed) before the
    /// request became durable. The request may or may not be on disk.
    #[error("the store was closed before this request became durable; its outcome is unknown until the next recovery")]
    Closed,

    /// The caller asked for something the store cannot do; nothing was written.
    #[error("invalid storage request: {reason}")]
    InvalidArgument {
        /// What was wrong with the request.
        reason: String,
    },

    /// A record's payload did not decode as the typed record it claims to be.
    #[error("WAL record kind {kind} does not decode: {reason}. The record passed its checksum, so this is a software version mismatch; run the binary that wrote this data")]
    Decode {
        /// The record kind byte.
        kind: u8,
        /// What was wrong.
        reason: String,
    },
}

/// Result alias used throughout the storage layer.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// Wraps an `io::Error` with the operation and path it belongs to.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds a corruption error for `file` at `offset_bytes`.
    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset_bytes: u64,
        reason: impl Into<String>,
    ) -> Self {
        StorageError::Corrupt {
            file: file.into(),
            offset_bytes,
            reason: reason.into(),
        }
    }

    /// True when the error means "data on disk is damaged or foreign", i.e. the
    /// node must not start.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StorageError::Corrupt { .. }
                | StorageError::MissingSegment { .. }
                | StorageError::UnsupportedFormat { .. }
        )
    }
}
