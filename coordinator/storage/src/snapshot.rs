//! Snapshot files: the state machine's serialized state plus the WAL position
//! (LSN) and Paxos slot it covers.
//!
//! Layout (little-endian): magic `PXSNAP01` | covered LSN u64 | covered slot
//! u64 | state length u64 | crc32c u32 over bytes 0..32 and the state |
//! reserved u32 (zero) | state bytes. File name: `snap-<covered LSN, 16
//! digits>.snap`, so names sort by position.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::fsutil;
use crate::record::{le_u64, Lsn};

const MAGIC: &[u8; 8] = b"PXSNAP01";
const SNAPSHOT_HEADER_BYTES: usize = 40;
/// How many snapshot files are kept: the newest and one older, so an
/// operator still has the previous state if the newest turns out wrong.
pub const SNAPSHOTS_KEPT: usize = 2;

/// A snapshot as read back from storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotData {
    /// Every WAL record with an LSN at or below this is reflected in `state`.
    pub covered_lsn: Lsn,
    /// The Paxos slot the state covers (applied through this slot).
    pub covered_slot: u64,
    /// The state machine's serialized state, opaque here.
    pub state: Vec<u8>,
}

/// File name of the snapshot covering `covered_lsn`.
pub fn snapshot_file_name(covered_lsn: Lsn) -> String {
    format!("snap-{:016}.snap", covered_lsn.0)
}

fn parse_snapshot_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// Serialises a snapshot file.
pub fn encode_snapshot(snapshot: &SnapshotData) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + snapshot.state.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&snapshot.covered_lsn.0.to_le_bytes());
    out.extend_from_slice(&snapshot.covered_slot.to_le_bytes());
    out.extend_from_slice(&(snapshot.state.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out), &snapshot.state);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&snapshot.state);
    out
}

/// Parses and verifies a snapshot file; every failure names `path` and the
/// byte offset of the field that failed.
pub fn decode_snapshot(bytes: &[u8], path: &Path) -> Result<SnapshotData> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err(StorageError::corrupt(
            path,
            bytes.len() as u64,
            "snapshot file is shorter than its header",
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err(StorageError::corrupt(
            path,
            0,
            "not a paxlock snapshot file (bad magic)",
        ));
    }
    let state_len = le_u64(bytes, 24);
    let expected_len = (SNAPSHOT_HEADER_BYTES as u64).checked_add(state_len);
    if expected_len != Some(bytes.len() as u64) {
        return Err(StorageError::corrupt(
            path,
            24,
            format!(
                "snapshot header claims {state_len} state bytes but the file holds {}",
                bytes.len() - SNAPSHOT_HEADER_BYTES
            ),
        ));
    }
    let state = &bytes[SNAPSHOT_HEADER_BYTES..];
    let mut stored_crc = [0u8; 4];
    stored_crc.copy_from_slice(&bytes[32..36]);
    if crc32c::crc32c_append(crc32c::crc32c(&bytes[..32]), state) != u32::from_le_bytes(stored_crc)
    {
        return Err(StorageError::corrupt(
            path,
            32,
            "snapshot checksum mismatch",
        ));
    }
    Ok(SnapshotData {
        covered_lsn: Lsn(le_u64(bytes, 8)),
        covered_slot: le_u64(bytes, 16),
        state: state.to_vec(),
    })
}

/// Lists snapshot files in `dir` as `(covered LSN, path)`, oldest first.
pub fn list_snapshots(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("listing", dir, e))?;
        if let Some(lsn) = entry
            .file_name()
            .to_str()
            .and_then(parse_snapshot_file_name)
        {
            found.push((lsn, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads the newest snapshot in `dir`. A newest snapshot that fails its
/// checks is corruption (we do not silently fall back to an older one: the
/// WAL it needs may already be deleted).
pub fn read_newest_snapshot(dir: &Path) -> Result<Option<SnapshotData>> {
    let Some((name_lsn, path)) = list_snapshots(dir)?.pop() else {
        return Ok(None);
    };
    let bytes = fs::read(&path).map_err(|e| StorageError::io("reading", &path, e))?;
    let snapshot = decode_snapshot(&bytes, &path)?;
    if snapshot.covered_lsn != name_lsn {
        return Err(StorageError::corrupt(
            &path,
            8,
            format!(
                "snapshot header covers LSN {} but its file name says {}",
                snapshot.covered_lsn, name_lsn
            ),
        ));
    }
    Ok(Some(snapshot))
}

/// The slot the newest snapshot in `dir` covers, from its header alone:
/// the state is neither read nor checked, so this is for watching progress
/// (as the bench waits for a snapshot to cover its state), never for
/// restoring. Snapshot files appear whole (written aside, then renamed).
pub fn newest_snapshot_slot(dir: &Path) -> Result<Option<u64>> {
    let Some((_, path)) = list_snapshots(dir)?.pop() else {
        return Ok(None);
    };
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    fs::File::open(&path)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header))
        .map_err(|e| StorageError::io("reading", &path, e))?;
    if &header[..8] != MAGIC {
        return Err(StorageError::corrupt(
            &path,
            0,
            "not a paxlock snapshot file (bad magic)",
        ));
    }
    Ok(Some(le_u64(&header, 16)))
}

/// Writes a snapshot durably (temp file, fsync, rename, directory fsync),
/// then deletes all but the newest [`SNAPSHOTS_KEPT`] snapshot files.
pub fn write_snapshot_file(dir: &Path, snapshot: &SnapshotData) -> Result<()> {
    fsutil::write_atomic(
        dir,
        &snapshot_file_name(snapshot.covered_lsn),
        &encode_snapshot(snapshot),
    )?;
    let all = list_snapshots(dir)?;
    let excess = all.len().saturating_sub(SNAPSHOTS_KEPT);
    for (_, path) in &all[..excess] {
        fs::remove_file(path).map_err(|e| StorageError::io("removing old snapshot", path, e))?;
    }
    if excess > 0 {
        fsutil::fsync_dir(dir)?;
    }
    Ok(())
}
