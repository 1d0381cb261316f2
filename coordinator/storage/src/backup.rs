//! Backup files: one cluster's state machine at one log slot, written by
//! `paxlock snapshot save` and read by `paxlock snapshot restore` to start
//! a new cluster from it.
//!
//! A backup carries the application's state only: no acceptor state, no
//! membership, no node identity. Those belong to the cluster it came from;
//! a restore gives the new cluster its own.
//!
//! Layout (little-endian): magic `PXBACKUP` | format u32 | cluster id
//! length u32 | up-to slot u64 | revision u64 | state length u64 | crc32c
//! u32 over bytes 0..40, the cluster id and the state | reserved u32 (zero)
//! | cluster id (UTF-8) | state bytes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil;
use crate::record::le_u64;

const MAGIC: &[u8; 8] = b"PXBACKUP";
/// The backup format this release writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
const HEADER_BYTES: usize = 48;
/// Longest cluster id a backup names (cluster ids are short names).
pub const MAX_CLUSTER_ID_BYTES: usize = 255;
/// Largest state a backup holds: the state machine's own snapshot bound.
pub const MAX_STATE_BYTES: u64 = 1 << 30;

/// One backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// The cluster it was taken from.
    pub cluster_id: String,
    /// The first log slot the state does not reflect.
    pub up_to: u64,
    /// The state machine's revision at that point.
    pub revision: u64,
    /// The state machine's snapshot bytes.
    pub state: Vec<u8>,
}

/// Why a backup file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// An operating-system call failed.
    #[error("I/O error while {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not an intact backup.
    #[error("{file} is not an intact paxlock backup (byte {offset_bytes}: {reason}); use another backup, or take a new one with `paxlock snapshot save`")]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// Where the check failed.
        offset_bytes: u64,
        /// What failed.
        reason: String,
    },
    /// Written by a release with another backup format.
    #[error("{file} is a backup of format {found}, but this paxlock reads format {expected}: restore it with the release that wrote it")]
    UnsupportedFormat {
        /// The file.
        file: PathBuf,
        /// Its format.
        found: u32,
        /// What this release reads.
        expected: u32,
    },
    /// What was to be written does not fit the format's bounds.
    #[error("cannot write a backup of {what}: the most a backup holds is {limit}")]
    TooLarge {
        /// What is too large.
        what: String,
        /// The bound.
        limit: String,
    },
}

impl BackupError {
    fn corrupt(file: &Path, offset_bytes: usize, reason: impl Into<String>) -> BackupError {
        BackupError::Corrupt {
            file: file.to_path_buf(),
            offset_bytes: offset_bytes as u64,
            reason: reason.into(),
        }
    }
}

impl Backup {
    /// The file's bytes; refuses what [`Backup::decode`] would refuse as
    /// too large.
    pub fn encode(&self) -> Result<Vec<u8>, BackupError> {
        if self.cluster_id.len() > MAX_CLUSTER_ID_BYTES {
            return Err(BackupError::TooLarge {
                what: format!("a cluster id of {} bytes", self.cluster_id.len()),
                limit: format!("{MAX_CLUSTER_ID_BYTES} bytes"),
            });
        }
        if self.state.len() as u64 > MAX_STATE_BYTES {
            return Err(BackupError::TooLarge {
                what: format!("{} bytes of state", self.state.len()),
                limit: format!("{MAX_STATE_BYTES} bytes"),
            });
        }
        let mut out = Vec::with_capacity(HEADER_BYTES + self.cluster_id.len() + self.state.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&BACKUP_FORMAT.to_le_bytes());
        out.extend_from_slice(&(self.cluster_id.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.up_to.to_le_bytes());
        out.extend_from_slice(&self.revision.to_le_bytes());
        out.extend_from_slice(&(self.state.len() as u64).to_le_bytes());
        let crc = crc32c::crc32c_append(
            crc32c::crc32c_append(crc32c::crc32c(&out), self.cluster_id.as_bytes()),
            &self.state,
        );
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(self.cluster_id.as_bytes());
        out.extend_from_slice(&self.state);
        Ok(out)
    }

    /// Parses and verifies a backup file's bytes; every failure names
    /// `path` and the offset of the check that failed.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Backup, BackupError> {
        if bytes.len() < HEADER_BYTES {
            return Err(BackupError::corrupt(
                path,
                bytes.len(),
                "shorter than a backup's header",
            ));
        }
        if &bytes[..8] != MAGIC {
            return Err(BackupError::corrupt(
                path,
                0,
                "not a paxlock backup (bad magic)",
            ));
        }
        let format = le_u32(bytes, 8);
        if format != BACKUP_FORMAT {
            return Err(BackupError::UnsupportedFormat {
                file: path.to_path_buf(),
                found: format,
                expected: BACKUP_FORMAT,
            });
        }
        let id_len = le_u32(bytes, 12) as usize;
        let state_len = le_u64(bytes, 32);
        if id_len > MAX_CLUSTER_ID_BYTES || state_len > MAX_STATE_BYTES {
            return Err(BackupError::corrupt(
                path,
                12,
                "the header claims a cluster id or state larger than a backup holds",
            ));
        }
        let expected_len = HEADER_BYTES as u64 + id_len as u64 + state_len;
        if bytes.len() as u64 != expected_len {
            return Err(BackupError::corrupt(
                path,
                32,
                format!(
                    "the header says {expected_len} bytes in all but the file holds {}",
                    bytes.len()
                ),
            ));
        }
        let (cluster_id, state) = bytes[HEADER_BYTES..].split_at(id_len);
        let crc = crc32c::crc32c_append(
            crc32c::crc32c_append(crc32c::crc32c(&bytes[..40]), cluster_id),
            state,
        );
        if crc != le_u32(bytes, 40) {
            return Err(BackupError::corrupt(path, 40, "checksum mismatch"));
        }
        let cluster_id = String::from_utf8(cluster_id.to_vec())
            .map_err(|_| BackupError::corrupt(path, HEADER_BYTES, "cluster id is not UTF-8"))?;
        Ok(Backup {
            cluster_id,
            up_to: le_u64(bytes, 16),
            revision: le_u64(bytes, 24),
            state: state.to_vec(),
        })
    }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Writes `backup` to `path` durably (temp file, fsync, rename, directory
/// fsync): after it returns the file survives a power cut; if it fails, an
/// earlier file at `path` is intact.
pub fn write_backup(path: &Path, backup: &Backup) -> Result<(), BackupError> {
    let bytes = backup.encode()?;
    let (dir, name) = split_path(path)?;
    fsutil::write_atomic(dir, name, &bytes).map_err(|e| BackupError::Io {
        op: "writing",
        path: path.to_path_buf(),
        source: io::Error::other(e.to_string()),
    })
}

/// Reads and verifies the backup at `path`, refusing a file larger than
/// any backup before reading it.
pub fn read_backup(path: &Path) -> Result<Backup, BackupError> {
    let io_error = |op, source| BackupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let len = fs::metadata(path)
        .map_err(|e| io_error("reading", e))?
        .len();
    let most = HEADER_BYTES as u64 + MAX_CLUSTER_ID_BYTES as u64 + MAX_STATE_BYTES;
    if len > most {
        return Err(BackupError::corrupt(
            path,
            0,
            format!("the file has {len} bytes, more than any backup ({most})"),
        ));
    }
    let bytes = fs::read(path).map_err(|e| io_error("reading", e))?;
    Backup::decode(&bytes, path)
}

/// The directory and file name of `path`.
fn split_path(path: &Path) -> Result<(&Path, &str), BackupError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| BackupError::Io {
            op: "naming",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a UTF-8 file name"),
        })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        Backup {
            cluster_id: "orders".into(),
            up_to: 4242,
            revision: 99,
            state: (0..=255u8).cycle().take(5000).collect(),
        }
    }

    #[test]
    fn a_backup_round_trips_through_a_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("cluster.backup");
        write_backup(&path, &sample())?;
        assert_eq!(read_backup(&path)?, sample());
        // Written again over the old file: replaced whole.
        let newer = Backup {
            up_to: 5000,
            ..sample()
        };
        write_backup(&path, &newer)?;
        assert_eq!(read_backup(&path)?, newer);
        Ok(())
    }

    #[test]
    fn every_damaged_or_cut_backup_is_refused() -> Result<(), BackupError> {
        let bytes = sample().encode()?;
        let path = Path::new("b");
        for cut in 0..bytes.len() {
            assert!(Backup::decode(&bytes[..cut], path).is_err(), "cut at {cut}");
        }
        // One flipped bit anywhere: refused, never another state.
        for at in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            match Backup::decode(&bad, path) {
                Err(BackupError::Corrupt { .. } | BackupError::UnsupportedFormat { .. }) => {}
                // The reserved word is not checked.
                Ok(_) if (44..48).contains(&at) => {}
                other => panic!("flip at {at}: {other:?}"),
            }
        }
        let mut future = bytes.clone();
        future[8] = 2;
        assert!(matches!(
            Backup::decode(&future, path),
            Err(BackupError::UnsupportedFormat { found: 2, .. })
        ));
        Ok(())
    }

    #[test]
    fn oversized_inputs_are_refused_before_anything_is_written() {
        let long = Backup {
            cluster_id: "x".repeat(MAX_CLUSTER_ID_BYTES + 1),
            ..sample()
        };
        assert!(matches!(long.encode(), Err(BackupError::TooLarge { .. })));
    }
}
