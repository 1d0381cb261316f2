//! Upper bounds on the encoded size of consensus messages, so the core
//! never builds a message the transport cannot carry.
//!
//! The core does not know the wire encoding (the transport owns it), so it
//! counts conservatively: each constant below is at least what the peer
//! protocol's protobuf encoding spends on that part, and a property test in
//! the transport (`peer_codec`) checks `encoded length <= bound` for every
//! message kind. The replica keeps every message it builds within
//! `Config::max_message_bytes`, which the shell checks against the frame
//! cap at start-up.

use super::message::Message;
use super::types::Batch;

/// Bytes one value of a batch costs beyond its own length (field tag and
/// length prefix).
pub const VALUE_OVERHEAD_BYTES: usize = 8;

/// Bytes one log entry of a promise or catch-up reply costs beyond its
/// batch (slot, ballot, chosen flag, the batch's own framing).
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

/// Bytes any message costs beyond its entries, batch or snapshot data
/// (envelope, ballot, slots and other scalar fields).
pub const MESSAGE_OVERHEAD_BYTES: usize = 128;

/// The encoded size bound of `batch`'s values.
pub fn batch_bytes(batch: &Batch) -> usize {
    batch
        .iter()
        .map(|v| v.len().saturating_add(VALUE_OVERHEAD_BYTES))
        .fold(0, usize::saturating_add)
}

/// The encoded size bound of one log entry carrying `batch`.
pub fn entry_bytes(batch: &Batch) -> usize {
    ENTRY_OVERHEAD_BYTES.saturating_add(batch_bytes(batch))
}

impl Message {
    /// An upper bound on this message's encoded length on the wire.
    pub fn encoded_len_bound(&self) -> usize {
        let payload = match self {
            Message::Accept { batch, .. } => batch_bytes(batch),
            Message::Promise { entries, .. } => entries
                .iter()
                .map(|e| entry_bytes(&e.batch))
                .fold(0, usize::saturating_add),
            Message::CatchUp { snapshot, entries } => {
                entries.iter().map(|(_, batch)| entry_bytes(batch)).fold(
                    snapshot.as_ref().map_or(0, |c| c.data.len()),
                    usize::saturating_add,
                )
            }
            _ => 0,
        };
        MESSAGE_OVERHEAD_BYTES.saturating_add(payload)
    }
}
