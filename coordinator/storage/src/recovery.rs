//! Recovery: read the newest snapshot and the WAL after it, decide torn tail
//! versus corruption, and only then repair (truncate the torn tail).
//!
//! Validation is read-only and complete before any repair, so a directory
//! that is refused as corrupt is never modified.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::fsutil;
use crate::record::{Lsn, WalRecord};
use crate::segment::{list_segments, scan_segment, segment_file_name};
use crate::snapshot::{read_newest_snapshot, SnapshotData};

/// A torn write found (and cut off) at the end of the last segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment that was truncated.
    pub segment: PathBuf,
    /// Byte offset where the first incomplete record started; the file now
    /// ends here.
    pub offset_bytes: u64,
    /// How many bytes were cut off.
    pub discarded_bytes: u64,
    /// Why the tail was judged incomplete.
    pub reason: String,
}

/// Everything durable that a store held when it was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The newest snapshot, if any.
    pub snapshot: Option<SnapshotData>,
    /// WAL records after the snapshot (LSN > snapshot's covered LSN), in LSN
    /// order with no gaps.
    pub records: Vec<WalRecord>,
    /// Set if a torn write was cut off the end of the log.
    pub torn_tail: Option<TornTail>,
}

impl Recovered {
    /// The highest LSN reflected in this state (snapshot or records).
    pub fn last_lsn(&self) -> Lsn {
        let covered = self.snapshot.as_ref().map_or(Lsn::ZERO, |s| s.covered_lsn);
        self.records.last().map_or(covered, |r| r.lsn).max(covered)
    }
}

/// One segment as known after recovery.
#[derive(Clone, Debug)]
pub(crate) struct SegmentInfo {
    pub seq: u64,
    pub first_lsn: Lsn,
    pub path: PathBuf,
}

/// Where the writer continues after recovery.
pub(crate) struct LogLayout {
    pub segments: Vec<SegmentInfo>,
    /// Where the last segment's records end, after repair.
    pub last_len_bytes: u64,
    /// The last segment's size on disk after repair: free (zero) space may
    /// follow its records.
    pub last_allocated_bytes: u64,
    /// The last segment's salt, for the frames appended to it.
    pub last_salt: u64,
    /// LSN the next record gets (the WAL's, before snapshot adjustment).
    pub wal_next_lsn: Lsn,
}

/// Reads and validates `dir`, then truncates a torn tail if there is one.
pub(crate) fn recover_dir(dir: &Path, max_payload_bytes: usize) -> Result<(Recovered, LogLayout)> {
    let snapshot = read_newest_snapshot(dir)?;
    let covered = snapshot.as_ref().map_or(Lsn::ZERO, |s| s.covered_lsn);
    let listed = list_segments(dir)?;

    for pair in listed.windows(2) {
        let (prev_seq, _) = &pair[0];
        let (seq, _) = &pair[1];
        if prev_seq.checked_add(1) != Some(*seq) {
            return Err(StorageError::MissingSegment {
                dir: dir.to_path_buf(),
                expected_file: segment_file_name(prev_seq.saturating_add(1)),
                found_file: segment_file_name(*seq),
            });
        }
    }

    let mut segments = Vec::with_capacity(listed.len());
    let mut records = Vec::new();
    let mut next_lsn = Lsn(1);
    let mut last_len_bytes = 0u64;
    let mut last_allocated_bytes = 0u64;
    let mut last_salt = 0u64;
    let mut torn = None;
    for (index, (seq, path)) in listed.iter().enumerate() {
        let is_last = index + 1 == listed.len();
        let bytes = fs::read(path).map_err(|e| StorageError::io("reading segment", path, e))?;
        let scan = scan_segment(&bytes, path, *seq, is_last, max_payload_bytes)?;
        // Consecutive segments must continue each other's LSNs, except that a
        // gap entirely covered by the snapshot is harmless (those records are
        // no longer needed; see FileStore::open).
        let continues = scan.first_lsn == next_lsn;
        let gap_covered =
            scan.first_lsn > next_lsn && scan.first_lsn.0 <= covered.0.saturating_add(1);
        if !(continues || gap_covered) {
            return Err(StorageError::corrupt(
                path,
                16,
                format!(
                    "segment starts at LSN {} but the log before it ends at LSN {} and the snapshot covers only through LSN {}: records are missing",
                    scan.first_lsn,
                    next_lsn.0.saturating_sub(1),
                    covered
                ),
            ));
        }
        next_lsn = Lsn(scan.first_lsn.0.saturating_add(scan.records.len() as u64));
        records.extend(scan.records.into_iter().filter(|r| r.lsn > covered));
        if is_last {
            last_len_bytes = scan.valid_len_bytes;
            last_salt = scan.salt;
            // A torn tail is cut off below, free space with it.
            last_allocated_bytes = match scan.torn_tail {
                Some(_) => scan.valid_len_bytes,
                None => bytes.len() as u64,
            };
            if let Some((offset_bytes, reason)) = scan.torn_tail {
                torn = Some(TornTail {
                    segment: path.clone(),
                    offset_bytes,
                    discarded_bytes: bytes.len() as u64 - offset_bytes,
                    reason,
                });
            }
        }
        segments.push(SegmentInfo {
            seq: *seq,
            first_lsn: scan.first_lsn,
            path: path.clone(),
        });
    }

    // Everything checked out; from here on we may modify the directory.
    if let Some(tail) = &torn {
        tracing::warn!(
            segment = %tail.segment.display(),
            offset_bytes = tail.offset_bytes,
            discarded_bytes = tail.discarded_bytes,
            reason = %tail.reason,
            "torn write at the end of the WAL: truncating the incomplete tail and continuing"
        );
        truncate_file(&tail.segment, tail.offset_bytes)?;
    }
    fsutil::remove_tmp_files(dir)?;

    Ok((
        Recovered {
            snapshot,
            records,
            torn_tail: torn,
        },
        LogLayout {
            segments,
            last_len_bytes,
            last_allocated_bytes,
            last_salt,
            wal_next_lsn: next_lsn,
        },
    ))
}

fn truncate_file(path: &Path, len_bytes: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io("opening for truncation", path, e))?;
    file.set_len(len_bytes)
        .map_err(|e| StorageError::io("truncating torn tail of", path, e))?;
    file.sync_all()
        .map_err(|e| StorageError::io("fsyncing truncated", path, e))
}
