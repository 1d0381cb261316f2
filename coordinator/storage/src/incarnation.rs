//! Incarnations: telling a node that kept its data from one that lost it.
//!
//! A node that comes back under its id with an empty (or another) data
//! directory has forgotten what it promised and accepted; letting it vote
//! again could let two quorums choose different values for one slot. Each
//! data directory therefore gets a random incarnation when it is first
//! used, which the node presents in every peer hello, and each node keeps,
//! durably, the incarnation it first saw each peer with: a peer presenting
//! another one is refused (and, told so, stops). The guard holds while the
//! nodes that saw the peer before make a majority; a node that never met
//! it (one added after the loss) cannot tell.
//!
//! Files (little-endian, each with a trailing crc32c, written atomically):
//! `incarnation`: magic `PXINCAR1` | incarnation u64; `known-peers`: magic
//! `PXPEERS1` | count u32 | (node id u64, incarnation u64) * count.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Result, StorageError};
use crate::{entropy, fsutil};

/// This data directory's incarnation.
pub const INCARNATION_FILE: &str = "incarnation";
/// The incarnations this node first saw its peers with.
pub const KNOWN_PEERS_FILE: &str = "known-peers";
const OWN_MAGIC: &[u8; 8] = b"PXINCAR1";
const PEERS_MAGIC: &[u8; 8] = b"PXPEERS1";
/// Node ids run from 1 to 1023: at most this many peers are recorded.
const MAX_KNOWN_PEERS: usize = 1023;

/// A peer presented an incarnation other than the one this node first saw
/// it with: it lost its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "node {node} presents data-directory incarnation {presented:016x}, but node {checker} knew it \
     as {known:016x}: node {node} lost its data (an empty or another data directory) and must not \
     take part under its old id, since it has forgotten what it promised; if it is a member, \
     remove it (paxlock members remove {node}), and bring the machine back under a new id"
)]
pub struct IncarnationMismatch {
    /// The node that checked.
    pub checker: u64,
    /// The peer.
    pub node: u64,
    /// What the checker knew it as.
    pub known: u64,
    /// What it presented.
    pub presented: u64,
}

/// This node's incarnation and its peers'.
#[derive(Debug)]
pub struct Incarnations {
    dir: PathBuf,
    node_id: u64,
    own: u64,
    known: Mutex<BTreeMap<u64, u64>>,
}

impl Incarnations {
    /// Reads (or, on a data directory's first use, makes) node `node_id`'s
    /// incarnation and the peers it knows, in `dir`.
    pub fn open(dir: &Path, node_id: u64) -> Result<Incarnations> {
        let own_path = dir.join(INCARNATION_FILE);
        let own = match read_optional(&own_path)? {
            Some(bytes) => {
                let body = checked(&bytes, OWN_MAGIC, &own_path)?;
                let own: [u8; 8] = body
                    .try_into()
                    .map_err(|_| StorageError::corrupt(&own_path, 0, "wrong length"))?;
                u64::from_le_bytes(own)
            }
            None => {
                // Never 0, which stands for "an earlier release, unknown".
                let own = entropy::random_u64().max(1);
                fsutil::write_atomic(
                    dir,
                    INCARNATION_FILE,
                    &framed(OWN_MAGIC, &own.to_le_bytes()),
                )?;
                own
            }
        };
        let peers_path = dir.join(KNOWN_PEERS_FILE);
        let mut known = BTreeMap::new();
        if let Some(bytes) = read_optional(&peers_path)? {
            let body = checked(&bytes, PEERS_MAGIC, &peers_path)?;
            let corrupt = |why: &str| StorageError::corrupt(&peers_path, 0, why.to_string());
            let (count, mut rest) = body.split_at_checked(4).ok_or_else(|| corrupt("short"))?;
            let count = u32::from_le_bytes(count.try_into().map_err(|_| corrupt("short"))?);
            if count as usize > MAX_KNOWN_PEERS || rest.len() != count as usize * 16 {
                return Err(corrupt("wrong length"));
            }
            while let Some((pair, tail)) = rest.split_at_checked(16) {
                let (node, incarnation) = pair.split_at(8);
                known.insert(
                    u64::from_le_bytes(node.try_into().map_err(|_| corrupt("short"))?),
                    u64::from_le_bytes(incarnation.try_into().map_err(|_| corrupt("short"))?),
                );
                rest = tail;
            }
        }
        Ok(Incarnations {
            dir: dir.to_path_buf(),
            node_id,
            own,
            known: Mutex::new(known),
        })
    }

    /// This data directory's incarnation (never 0).
    pub fn own(&self) -> u64 {
        self.own
    }

    /// Checks the incarnation peer `node` presents. 0 (a node of an earlier
    /// release, which presents none) passes unchecked; the first one seen
    /// is recorded durably before this returns. A record that cannot be
    /// written is logged and the peer let through: the guard is weaker for
    /// it, the cluster no less available.
    pub fn check(
        &self,
        node: u64,
        incarnation: u64,
    ) -> std::result::Result<(), IncarnationMismatch> {
        if incarnation == 0 {
            return Ok(());
        }
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        match known.get(&node) {
            Some(&seen) if seen == incarnation => Ok(()),
            Some(&seen) => Err(IncarnationMismatch {
                checker: self.node_id,
                node,
                known: seen,
                presented: incarnation,
            }),
            None if known.len() >= MAX_KNOWN_PEERS => Ok(()),
            None => {
                known.insert(node, incarnation);
                let mut body = (known.len() as u32).to_le_bytes().to_vec();
                for (n, i) in known.iter() {
                    body.extend_from_slice(&n.to_le_bytes());
                    body.extend_from_slice(&i.to_le_bytes());
                }
                let written =
                    fsutil::write_atomic(&self.dir, KNOWN_PEERS_FILE, &framed(PEERS_MAGIC, &body));
                if let Err(e) = written {
                    tracing::warn!(peer = node, "cannot record the peer's incarnation: {e}");
                }
                Ok(())
            }
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("reading", path, e)),
    }
}

fn framed(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The body of a file `framed` wrote, or why it is corrupt.
fn checked<'a>(bytes: &'a [u8], magic: &[u8; 8], path: &Path) -> Result<&'a [u8]> {
    let corrupt = |why: &str| StorageError::corrupt(path, 0, why.to_string());
    let (content, crc) = bytes
        .split_at_checked(bytes.len().saturating_sub(4))
        .ok_or_else(|| corrupt("short"))?;
    let crc: [u8; 4] = crc.try_into().map_err(|_| corrupt("short"))?;
    if content.len() < 8 || crc32c::crc32c(content) != u32::from_le_bytes(crc) {
        return Err(corrupt("checksum mismatch"));
    }
    content
        .strip_prefix(magic.as_slice())
        .ok_or_else(|| corrupt("not this kind of file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_known_by_its_first_incarnation_across_restarts() -> Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| StorageError::io("tempdir", Path::new("."), e))?;
        let first = Incarnations::open(dir.path(), 1)?;
        let own = first.own();
        assert_ne!(own, 0);
        assert_eq!(first.check(2, 77), Ok(()));
        assert_eq!(first.check(2, 77), Ok(()));
        // An earlier release presents none: never refused.
        assert_eq!(first.check(3, 0), Ok(()));
        drop(first);
        let reopened = Incarnations::open(dir.path(), 1)?;
        assert_eq!(reopened.own(), own, "the incarnation is the directory's");
        let refused = reopened.check(2, 78);
        assert_eq!(
            refused,
            Err(IncarnationMismatch {
                checker: 1,
                node: 2,
                known: 77,
                presented: 78
            })
        );
        assert!(refused.unwrap_err().to_string().contains("lost its data"));
        // Another directory is another incarnation.
        let other =
            tempfile::tempdir().map_err(|e| StorageError::io("tempdir", Path::new("."), e))?;
        assert_ne!(Incarnations::open(other.path(), 1)?.own(), own);
        Ok(())
    }

    #[test]
    fn a_damaged_record_refuses_to_open() -> Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| StorageError::io("tempdir", Path::new("."), e))?;
        Incarnations::open(dir.path(), 1)?.check(2, 5).ok();
        let path = dir.path().join(KNOWN_PEERS_FILE);
        let mut bytes = fs::read(&path).map_err(|e| StorageError::io("reading", &path, e))?;
        bytes[12] ^= 1;
        fs::write(&path, bytes).map_err(|e| StorageError::io("writing", &path, e))?;
        assert!(Incarnations::open(dir.path(), 1).is_err());
        Ok(())
    }
}
