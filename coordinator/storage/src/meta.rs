//! The identity file: which cluster and node a data directory belongs to.
//!
//! Written once when the directory is initialised and checked on every open,
//! so that a node started with the wrong `--data-dir` refuses to run instead of
//! answering Paxos messages with another node's promises.
//!
//! Layout (little-endian, 32 bytes): magic `PXIDENT1` | cluster id u64 |
//! node id u64 | format version u32 | crc32c of bytes 0..28.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use crate::error::{Result, StorageError};
use crate::fsutil;
use crate::record::le_u64;

/// File name of the identity file inside the data directory.
pub const IDENTITY_FILE: &str = "identity";
const MAGIC: &[u8; 8] = b"PXIDENT1";
/// The data directory's format. 2: lock commands in the log carry the
/// client's running waits (`CommandKind::Client::waiting`), which a
/// version-1 log would not decode, and WAL segments are salted (segment
/// format 2).
const FORMAT_VERSION: u32 = 2;
const IDENTITY_LEN_BYTES: usize = 32;

/// Who owns a data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The cluster this node belongs to.
    pub cluster_id: u64,
    /// This node's id within the cluster.
    pub node_id: u64,
}

impl Identity {
    /// Serialises the identity with its checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(IDENTITY_LEN_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.cluster_id.to_le_bytes());
        out.extend_from_slice(&self.node_id.to_le_bytes());
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses and verifies an identity file's bytes; `path` is used in errors.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Identity> {
        if bytes.len() != IDENTITY_LEN_BYTES {
            return Err(StorageError::corrupt(
                path,
                0,
                format!(
                    "identity file is {} bytes, expected {IDENTITY_LEN_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let mut stored_crc = [0u8; 4];
        stored_crc.copy_from_slice(&bytes[28..32]);
        if crc32c::crc32c(&bytes[..28]) != u32::from_le_bytes(stored_crc) {
            return Err(StorageError::corrupt(
                path,
                0,
                "identity file checksum mismatch",
            ));
        }
        if &bytes[..8] != MAGIC {
            return Err(StorageError::corrupt(
                path,
                0,
                "not a paxlock identity file",
            ));
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[24..28]);
        let version = u32::from_le_bytes(version);
        if version != FORMAT_VERSION {
            return Err(StorageError::UnsupportedFormat {
                file: path.to_path_buf(),
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        Ok(Identity {
            cluster_id: le_u64(bytes, 8),
            node_id: le_u64(bytes, 16),
        })
    }
}

/// Reads the identity file in `dir`, if there is one.
pub fn read_identity(dir: &Path) -> Result<Option<Identity>> {
    let path = dir.join(IDENTITY_FILE);
    match fs::read(&path) {
        Ok(bytes) => Identity::decode(&bytes, &path).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("reading", path, e)),
    }
}

/// Checks that `dir` belongs to `expected`. Returns `Ok(false)` if the
/// directory has no identity yet (the caller decides whether it may be
/// initialised), `Ok(true)` if it matches, and an error otherwise.
pub fn check_identity(dir: &Path, expected: Identity) -> Result<bool> {
    match read_identity(dir)? {
        None => Ok(false),
        Some(found) if found == expected => Ok(true),
        Some(found) => Err(StorageError::IdentityMismatch {
            dir: dir.to_path_buf(),
            found_cluster_id: found.cluster_id,
            found_node_id: found.node_id,
            expected_cluster_id: expected.cluster_id,
            expected_node_id: expected.node_id,
        }),
    }
}

/// Writes the identity file durably (atomic replace + directory fsync).
pub fn write_identity(dir: &Path, identity: Identity) -> Result<()> {
    fsutil::write_atomic(dir, IDENTITY_FILE, &identity.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_of_another_data_format_is_refused_as_such() {
        let identity = Identity {
            cluster_id: 7,
            node_id: 2,
        };
        let path = Path::new("data/identity");
        assert_eq!(
            Identity::decode(&identity.encode(), path).ok(),
            Some(identity)
        );

        // Format 1 (before lock commands listed running waits), checksum valid.
        let mut old = identity.encode();
        old[24..28].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&old[..28]);
        old[28..32].copy_from_slice(&crc.to_le_bytes());
        match Identity::decode(&old, path) {
            Err(StorageError::UnsupportedFormat {
                found: 1,
                expected: FORMAT_VERSION,
                ..
            }) => {}
            other => panic!("format 1 accepted or misreported: {other:?}"),
        }
    }
}
