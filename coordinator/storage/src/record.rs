//! Generic WAL record framing: `kind: u8` + opaque payload, with an LSN.
//!
//! On-disk frame (all integers little-endian), always a multiple of
//! [`FRAME_ALIGN_BYTES`] long:
//!
//! ```text
//! 0..4    payload length in bytes (u32)
//! 4       kind (u8)
//! 5..8    place in its group commit (u24): 0 for the group's first record
//! 8..16   LSN (u64)
//! 16..20  header crc32c  = crc32c(segment salt ++ bytes 0..16)
//! 20..24  record crc32c  = crc32c(bytes 0..20 ++ payload)
//! 24..    payload, then zero padding up to the next multiple of 8
//! ```
//!
//! Why two checksums: the length must be trusted before it is used to find the
//! payload. A torn or flipped length fails the header crc, so it can never make
//! us read a "record" of the wrong size that happens to pass. The record crc
//! covers the header crc (and so the length) plus the payload. The LSN inside
//! the header ties a frame to its place in the log, so a stale but intact frame
//! at the wrong position is rejected too. Alignment lets recovery scan for
//! later valid headers at 8-byte steps to tell a torn tail from damage in the
//! middle, and a header's place in its group tells recovery which group
//! commit (one write, one fdatasync) wrote it.
//!
//! Why a salt: payloads carry client bytes (a campaign's value, say). A
//! client could embed what looks like an intact frame of a later group, so
//! that a torn tail around it read as corruption and the node refused to
//! start. The salt is random per segment and stays on disk: a frame forged
//! without it fails the header checksum.

use std::fmt;

/// Log sequence number: the position of a record in the WAL. The first record
/// ever written has LSN 1; `Lsn(0)` means "nothing".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN before any record.
    pub const ZERO: Lsn = Lsn(0);

    /// The LSN right after this one (saturating: LSNs come from disk, and
    /// an absurd one must fail a continuity check, not overflow).
    pub fn next(self) -> Lsn {
        Lsn(self.0.saturating_add(1))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One record handed to the WAL for appending (borrowed form).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Application-defined record type; the WAL never interprets it.
    pub kind: u8,
    /// Opaque payload bytes.
    pub payload: &'a [u8],
}

/// A record read back from storage, with the LSN it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    /// Position in the log.
    pub lsn: Lsn,
    /// Application-defined record type.
    pub kind: u8,
    /// Payload exactly as appended.
    pub payload: Vec<u8>,
}

/// Size of the fixed frame header in bytes.
pub const FRAME_HEADER_BYTES: usize = 24;
/// Every frame starts and ends on a multiple of this many bytes.
pub const FRAME_ALIGN_BYTES: usize = 8;

/// Largest place in a group a header can hold. A record further into a
/// bigger group is stored with this value: its group then seems to start
/// later than it did, which can make recovery refuse a torn write as
/// corruption, but never pass corruption off as a torn write.
pub const MAX_PLACE_IN_GROUP: u64 = (1 << 24) - 1;

/// Total on-disk size of a frame carrying `payload_len_bytes` of payload,
/// padding included.
pub fn frame_len_bytes(payload_len_bytes: usize) -> usize {
    let unpadded = FRAME_HEADER_BYTES + payload_len_bytes;
    unpadded.div_ceil(FRAME_ALIGN_BYTES) * FRAME_ALIGN_BYTES
}

/// Appends the frame for `record` at `lsn` to `out`; `group_first` is the
/// LSN of the first record of the group commit this frame is written by.
///
/// # Panics
/// If the payload is longer than `u32::MAX` bytes. Stores reject such
/// payloads before they reach the encoder (`max_record_bytes` is capped).
// The length check is an internal invariant, not input validation: callers
// reject oversized payloads with a typed error first.
#[allow(clippy::expect_used)]
pub fn encode_frame(
    out: &mut Vec<u8>,
    salt: u64,
    lsn: Lsn,
    group_first: Lsn,
    record: RecordRef<'_>,
) {
    let start = out.len();
    // Every store rejects payloads over max_record_bytes (capped far below
    // u32::MAX) with a typed error before they reach the encoder.
    let payload_len = u32::try_from(record.payload.len()).expect("payload length is checked"); // ok: bounded by max_record_bytes, checked by every caller
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.push(record.kind);
    let place = lsn.0.saturating_sub(group_first.0).min(MAX_PLACE_IN_GROUP);
    out.extend_from_slice(&place.to_le_bytes()[..3]);
    out.extend_from_slice(&lsn.0.to_le_bytes());
    let header_crc = header_crc(salt, &out[start..start + 16]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    let record_crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..start + 20]), record.payload);
    out.extend_from_slice(&record_crc.to_le_bytes());
    out.extend_from_slice(record.payload);
    let end = start + frame_len_bytes(record.payload.len());
    out.resize(end, 0);
}

/// Why a frame at some offset is not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than the frame needs (header, or the whole frame
    /// whose header is valid).
    Short {
        /// Bytes the frame needs.
        needed_bytes: usize,
        /// Bytes that remain in the file.
        available_bytes: usize,
    },
    /// The header checksum does not match: length/kind/LSN cannot be trusted.
    BadHeaderChecksum,
    /// The header is valid but claims a payload longer than the configured cap.
    TooLong {
        /// Claimed payload length.
        payload_len_bytes: u64,
    },
    /// The header is valid but the payload checksum does not match.
    BadRecordChecksum,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Short {
                needed_bytes,
                available_bytes,
            } => write!(
                f,
                "short record: needs {needed_bytes} bytes, only {available_bytes} remain"
            ),
            FrameError::BadHeaderChecksum => write!(f, "record header checksum mismatch"),
            FrameError::TooLong { payload_len_bytes } => {
                write!(
                    f,
                    "record claims an oversized payload of {payload_len_bytes} bytes"
                )
            }
            FrameError::BadRecordChecksum => write!(f, "record payload checksum mismatch"),
        }
    }
}

/// Reads a little-endian u32 at `at`; the caller guarantees the bounds.
fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Reads a little-endian u64 at `at`; the caller guarantees the bounds.
pub(crate) fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// A frame header whose checksum holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The record's kind.
    pub kind: u8,
    /// The payload's length in bytes.
    pub payload_len: usize,
    /// LSN of the first record of the group commit that wrote this one.
    pub group_first: Lsn,
}

/// The header checksum: the segment's salt, then the header's first 16 bytes.
fn header_crc(salt: u64, header: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&salt.to_le_bytes()), header)
}

/// Checks only the frame header at `offset` of a segment salted `salt`,
/// and returns it when its checksum holds. Used both by [`decode_frame`]
/// and by the torn-tail scan that looks for intact records after a
/// damaged one.
pub(crate) fn decode_header(bytes: &[u8], offset: usize, salt: u64) -> Option<FrameHeader> {
    let header = bytes.get(offset..offset.checked_add(FRAME_HEADER_BYTES)?)?;
    if header_crc(salt, &header[0..16]) != le_u32(header, 16) {
        return None;
    }
    let lsn = Lsn(le_u64(header, 8));
    // Bytes 4..8 little-endian: the kind in the low byte, the place above.
    let place = u64::from(le_u32(header, 4) >> 8);
    Some(FrameHeader {
        lsn,
        kind: header[4],
        payload_len: usize::try_from(le_u32(header, 0)).ok()?,
        group_first: Lsn(lsn.0.saturating_sub(place)),
    })
}

/// Decodes the frame starting at `offset` in `bytes`, a segment salted
/// `salt`. On success returns the record and the frame's total length
/// (padding included).
pub fn decode_frame(
    bytes: &[u8],
    offset: usize,
    salt: u64,
    max_payload_bytes: usize,
) -> Result<(WalRecord, usize), FrameError> {
    let available_bytes = bytes.len().saturating_sub(offset);
    if available_bytes < FRAME_HEADER_BYTES {
        return Err(FrameError::Short {
            needed_bytes: FRAME_HEADER_BYTES,
            available_bytes,
        });
    }
    let FrameHeader {
        lsn,
        kind,
        payload_len,
        ..
    } = decode_header(bytes, offset, salt).ok_or(FrameError::BadHeaderChecksum)?;
    if payload_len > max_payload_bytes {
        return Err(FrameError::TooLong {
            payload_len_bytes: payload_len as u64,
        });
    }
    let frame_len = frame_len_bytes(payload_len);
    // A frame whose padding is cut off is still short: the writer always
    // writes the padding, so a missing pad means the write was torn.
    if available_bytes < frame_len {
        return Err(FrameError::Short {
            needed_bytes: frame_len,
            available_bytes,
        });
    }
    let payload_start = offset + FRAME_HEADER_BYTES;
    let payload = &bytes[payload_start..payload_start + payload_len];
    let expected_crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[offset..offset + 20]), payload);
    if expected_crc != le_u32(bytes, offset + 20) {
        return Err(FrameError::BadRecordChecksum);
    }
    Ok((
        WalRecord {
            lsn,
            kind,
            payload: payload.to_vec(),
        },
        frame_len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SALT: u64 = 0x5eed_5a17;

    proptest! {
        #[test]
        fn a_frame_written_under_another_salt_is_not_intact(salt in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assume!(salt != SALT);
            let mut buf = Vec::new();
            encode_frame(&mut buf, salt, Lsn(5), Lsn(5), RecordRef { kind: 1, payload: &payload });
            prop_assert!(decode_header(&buf, 0, SALT).is_none());
            prop_assert_eq!(decode_frame(&buf, 0, SALT, 1 << 20).err(), Some(FrameError::BadHeaderChecksum));
        }

        #[test]
        fn frame_round_trips(kind in any::<u8>(), lsn in 1u64.., payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = Vec::new();
            encode_frame(&mut buf, SALT, Lsn(lsn), Lsn(lsn), RecordRef { kind, payload: &payload });
            prop_assert_eq!(buf.len(), frame_len_bytes(payload.len()));
            prop_assert_eq!(buf.len() % FRAME_ALIGN_BYTES, 0);
            let (rec, len) = decode_frame(&buf, 0, SALT, 1 << 20).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(len, buf.len());
            prop_assert_eq!(rec, WalRecord { lsn: Lsn(lsn), kind, payload });
        }

        #[test]
        fn any_truncated_frame_is_short_never_valid(payload in proptest::collection::vec(any::<u8>(), 0..100), cut in 0usize..200) {
            let mut buf = Vec::new();
            encode_frame(&mut buf, SALT, Lsn(7), Lsn(7), RecordRef { kind: 3, payload: &payload });
            let cut = cut % buf.len();
            let is_short = matches!(decode_frame(&buf[..cut], 0, SALT, 1 << 20), Err(FrameError::Short { .. }));
            prop_assert!(is_short);
        }

        #[test]
        fn any_single_bit_flip_outside_padding_is_detected(payload in proptest::collection::vec(any::<u8>(), 1..100), bit in 0usize..10_000) {
            let mut buf = Vec::new();
            encode_frame(&mut buf, SALT, Lsn(9), Lsn(9), RecordRef { kind: 1, payload: &payload });
            // Every byte but the trailing zero padding is covered by a checksum.
            let meaningful_bytes = FRAME_HEADER_BYTES + payload.len();
            let byte = (bit / 8) % meaningful_bytes;
            buf[byte] ^= 1 << (bit % 8);
            prop_assert!(decode_frame(&buf, 0, SALT, 1 << 20).is_err());
        }

        #[test]
        fn the_header_tells_where_its_group_began(lsn in 1u64..1 << 40, place in 0u64..1 << 30) {
            let group_first = Lsn(lsn.saturating_sub(place).max(1));
            let mut buf = Vec::new();
            encode_frame(&mut buf, SALT, Lsn(lsn), group_first, RecordRef { kind: 2, payload: b"p" });
            let header = decode_header(&buf, 0, SALT).expect("intact header");
            prop_assert_eq!(header.lsn, Lsn(lsn));
            prop_assert_eq!(header.kind, 2);
            if lsn - group_first.0 <= MAX_PLACE_IN_GROUP {
                prop_assert_eq!(header.group_first, group_first);
            } else {
                // Too far into its group to say: it seems to start later.
                prop_assert_eq!(header.group_first, Lsn(lsn - MAX_PLACE_IN_GROUP));
            }
        }
    }
}
