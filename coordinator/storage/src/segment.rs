//! WAL segment files: naming, the segment header, creation, and scanning one
//! segment's records.
//!
//! A segment is `wal-<seq, 16 digits>.log`: a 40-byte header (magic
//! `PXWALSEG` | sequence number u64 | first LSN u64 | format version u32 |
//! salt u64 | crc32c of bytes 0..36) followed by record frames (see
//! `record`, which says what the random salt is for).
//! Segments are created complete (header written, fsynced, then renamed into
//! place and the directory fsynced), so a segment with a valid name always has
//! a full header; a bad header is therefore corruption, never a torn write.
//! The last segment may end in zeros (preallocated space); a sealed one ends
//! with its last record.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::fsutil::{self, TMP_SUFFIX};
use crate::record::{
    decode_frame, decode_header, le_u64, Lsn, WalRecord, FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES,
};

/// Size of the segment header in bytes; the first record starts here.
pub const SEGMENT_HEADER_BYTES: usize = 40;
const MAGIC: &[u8; 8] = b"PXWALSEG";
/// 2: the header carries a salt that every frame's header checksum covers.
const FORMAT_VERSION: u32 = 2;

/// File name of segment number `seq`.
pub fn segment_file_name(seq: u64) -> String {
    format!("wal-{seq:016}.log")
}

fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Lists segment files in `dir` as `(sequence number, path)`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("listing", dir, e))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

fn encode_segment_header(seq: u64, first_lsn: Lsn, salt: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&first_lsn.0.to_le_bytes());
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&salt.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// An open segment and the salt its frames are written with.
#[derive(Debug)]
pub struct NewSegment {
    /// Opened for appending right after the header.
    pub file: File,
    /// The segment's random salt (see `record`).
    pub salt: u64,
}

/// Creates segment `seq` whose first record will have `first_lsn`, durably:
/// the header is fsynced under a temp name, renamed into place, and the
/// directory fsynced. The segment gets a fresh random salt.
pub fn create_segment(dir: &Path, seq: u64, first_lsn: Lsn) -> Result<NewSegment> {
    let salt = crate::entropy::random_u64();
    let name = segment_file_name(seq);
    let tmp_path = dir.join(format!("{name}{TMP_SUFFIX}"));
    let final_path = dir.join(&name);
    let mut file = crate::fsutil::create_options()
        .open(&tmp_path)
        .map_err(|e| StorageError::io("creating segment", &tmp_path, e))?;
    file.write_all(&encode_segment_header(seq, first_lsn, salt))
        .map_err(|e| StorageError::io("writing segment header", &tmp_path, e))?;
    file.sync_all()
        .map_err(|e| StorageError::io("fsyncing new segment", &tmp_path, e))?;
    // The open handle stays valid across the rename and keeps its position
    // right after the header.
    fs::rename(&tmp_path, &final_path)
        .map_err(|e| StorageError::io("renaming segment into place", &final_path, e))?;
    fsutil::fsync_dir(dir)?;
    Ok(NewSegment { file, salt })
}

/// What scanning one segment found.
#[derive(Debug)]
pub struct SegmentScan {
    /// LSN of the first record, from the segment header.
    pub first_lsn: Lsn,
    /// The salt of the segment's frames, from its header.
    pub salt: u64,
    /// The valid records, in order.
    pub records: Vec<WalRecord>,
    /// Bytes from the start of the file through the last valid record (in
    /// the last segment, zeros may follow: preallocated free space).
    pub valid_len_bytes: u64,
    /// Set when the segment ends in a torn write: `(offset, why)`. Only
    /// possible for the last segment.
    pub torn_tail: Option<(u64, String)>,
}

/// Validates segment `expected_seq` held in `bytes` (read from `path`).
///
/// The rule that separates a torn write from corruption: only the last
/// segment can be torn, because the writer fsyncs a segment completely
/// before creating the next. Within the last segment, the first bad frame at
/// offset X, where LSN E was due, is a torn tail only if no intact frame of
/// a later group commit exists at any aligned offset after X. A group is
/// one write and one fdatasync, acknowledged only once that returns, and the
/// next group is written only then. A power cut during the fdatasync may
/// have saved any subset of the group's pages, so damage followed by intact
/// frames of the same group (one whose group began at or before E) is a
/// torn write of unacknowledged data; an intact frame of a later group
/// proves the damaged one was acknowledged: that is corruption. If
/// everything from X on is zero, X is just where the records end: the
/// writer zero-fills the last segment ahead of its records.
pub fn scan_segment(
    bytes: &[u8],
    path: &Path,
    expected_seq: u64,
    is_last: bool,
    max_payload_bytes: usize,
) -> Result<SegmentScan> {
    let (first_lsn, salt) = check_segment_header(bytes, path, expected_seq)?;
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected_lsn = first_lsn;
    let mut torn_tail = None;
    while offset < bytes.len() {
        let problem = match decode_frame(bytes, offset, salt, max_payload_bytes) {
            Ok((record, frame_len)) if record.lsn == expected_lsn => {
                records.push(record);
                offset += frame_len;
                expected_lsn = expected_lsn.next();
                continue;
            }
            Ok((record, _)) => format!(
                "record has LSN {} where LSN {} was expected",
                record.lsn, expected_lsn
            ),
            Err(frame_error) => frame_error.to_string(),
        };
        // Only zeros from here on: space the writer preallocated and had not
        // reached yet. No frame is all zeros (LSNs start at 1), so this
        // cannot hide a record.
        if is_last && bytes[offset..].iter().all(|&b| b == 0) {
            break;
        }
        if !is_last || later_group_after(bytes, offset, salt, expected_lsn, max_payload_bytes) {
            let place = if is_last {
                "followed by intact records of a later group commit, so it is not a torn write"
            } else {
                "in a segment that is not the last one"
            };
            return Err(StorageError::corrupt(
                path,
                offset as u64,
                format!("{problem}, {place}"),
            ));
        }
        torn_tail = Some((offset as u64, problem));
        break;
    }
    Ok(SegmentScan {
        first_lsn,
        salt,
        records,
        valid_len_bytes: offset as u64,
        torn_tail,
    })
}

/// The segment's first LSN and salt, once its header checks out.
fn check_segment_header(bytes: &[u8], path: &Path, expected_seq: u64) -> Result<(Lsn, u64)> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(StorageError::corrupt(
            path,
            bytes.len() as u64,
            "segment is shorter than its header",
        ));
    }
    let mut stored_crc = [0u8; 4];
    stored_crc.copy_from_slice(&bytes[36..40]);
    if crc32c::crc32c(&bytes[..36]) != u32::from_le_bytes(stored_crc) {
        return Err(StorageError::corrupt(
            path,
            0,
            "segment header checksum mismatch",
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err(StorageError::corrupt(
            path,
            0,
            "not a paxlock WAL segment (bad magic)",
        ));
    }
    let seq = le_u64(bytes, 8);
    if seq != expected_seq {
        return Err(StorageError::corrupt(
            path,
            8,
            format!("segment header says sequence {seq}, file name says {expected_seq}"),
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
    Ok((Lsn(le_u64(bytes, 16)), le_u64(bytes, 28)))
}

/// True if an intact frame of a group commit that began after `due` (the
/// LSN due at `bad_offset`) starts at some aligned offset after
/// `bad_offset`. Only runs on the (rare) damaged path.
fn later_group_after(
    bytes: &[u8],
    bad_offset: usize,
    salt: u64,
    due: Lsn,
    max_payload_bytes: usize,
) -> bool {
    let mut offset = bad_offset + FRAME_ALIGN_BYTES;
    while offset + FRAME_HEADER_BYTES <= bytes.len() {
        if let Some(header) = decode_header(bytes, offset, salt) {
            if header.group_first > due
                && decode_frame(bytes, offset, salt, max_payload_bytes).is_ok()
            {
                return true;
            }
        }
        offset += FRAME_ALIGN_BYTES;
    }
    false
}
