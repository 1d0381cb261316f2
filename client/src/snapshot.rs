//! Backups (PROTOCOL.md, "Backups"): an administrator downloads the
//! cluster's state machine, as the serving leader holds it, to start a new
//! cluster from it after a disaster (`paxlock snapshot save` and
//! `restore`).

use std::time::Duration;

use crate::client::{unexpected, Client};
use crate::proto::{self, request::Op, response, ErrorCode};
use crate::Error;

/// A cluster's state at one point of its log.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// The cluster it comes from.
    pub cluster_id: String,
    /// The first log slot it does not reflect.
    pub up_to: u64,
    /// Its revision: the last fencing token or id it gave out.
    pub revision: u64,
    /// The state machine's serialized state, checked against the node's
    /// checksum.
    pub state: Vec<u8>,
}

impl std::fmt::Debug for ClusterSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSnapshot")
            .field("cluster_id", &self.cluster_id)
            .field("up_to", &self.up_to)
            .field("revision", &self.revision)
            .field("state_bytes", &self.state.len())
            .finish()
    }
}

/// The largest state a backup holds (the state machine's snapshot bound).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// How many times a download starts over when the node lost its export
/// (leadership moved, another backup started).
const ATTEMPTS: u32 = 3;

/// Time for the leader to serialize its state.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(60);

impl Client {
    /// Downloads the cluster's state (an administrator's request): the
    /// serving leader's state machine, holding every write acknowledged
    /// before the call. Starts over, up to three times, if the node loses
    /// the export midway.
    pub async fn save_snapshot(&self) -> Result<ClusterSnapshot, Error> {
        let mut attempt = 1;
        loop {
            match self.download_snapshot().await {
                Err(e) if e.code() == Some(ErrorCode::SnapshotGone) && attempt < ATTEMPTS => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn download_snapshot(&self) -> Result<ClusterSnapshot, Error> {
        let op = Op::ExportSnapshot(proto::ExportSnapshot {});
        let exported = match self.inner.call_with_timeout(0, op, EXPORT_TIMEOUT).await? {
            response::Result::SnapshotExported(exported) => exported,
            other => return Err(unexpected(&other)),
        };
        if exported.total_bytes > MAX_SNAPSHOT_BYTES {
            return Err(Error::Protocol(format!(
                "the node offers a backup of {} bytes, more than any state ({MAX_SNAPSHOT_BYTES})",
                exported.total_bytes
            )));
        }
        let total = exported.total_bytes as usize;
        let mut state = Vec::with_capacity(total);
        while state.len() < total {
            let op = Op::ReadSnapshot(proto::ReadSnapshot {
                export_id: exported.export_id,
                offset: state.len() as u64,
            });
            let piece = match self.inner.call(0, op).await? {
                response::Result::SnapshotPiece(piece) => piece,
                other => return Err(unexpected(&other)),
            };
            let fits = piece.data.len() <= total - state.len();
            if piece.offset != state.len() as u64 || piece.data.is_empty() || !fits {
                return Err(Error::Protocol(format!(
                    "asked for the backup from byte {}, got {} bytes from byte {}",
                    state.len(),
                    piece.data.len(),
                    piece.offset
                )));
            }
            state.extend_from_slice(&piece.data);
        }
        if crc32c::crc32c(&state) != exported.crc32c {
            return Err(Error::Protocol(
                "the backup's bytes do not match the node's checksum".into(),
            ));
        }
        Ok(ClusterSnapshot {
            cluster_id: exported.cluster_id,
            up_to: exported.up_to,
            revision: exported.revision,
            state,
        })
    }
}
