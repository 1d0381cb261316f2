//! Typed records for the Paxos acceptor, layered on the generic WAL.
//!
//! The WAL only knows `kind: u8 + payload`; this module fixes which kinds the
//! acceptor uses and a simple little-endian codec for each, so that the
//! Paxos layer can persist its effects without inventing a format.

use crate::storage::error::{Result, StorageError};
use crate::storage::record::{le_u64, WalRecord};

/// Record kind byte for [`AcceptorRecord::Promise`].
pub const KIND_PROMISE: u8 = 1;
/// Record kind byte for [`AcceptorRecord::Accept`].
pub const KIND_ACCEPT: u8 = 2;
/// Record kind byte for [`AcceptorRecord::Commit`].
pub const KIND_COMMIT: u8 = 3;

/// What the acceptor must have on disk before it answers a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptorRecord {
    /// The acceptor promised ballot `(round, node)`; it will reject lower ones.
    Promise {
        /// Ballot round.
        round: u64,
        /// Ballot proposer node id.
        node: u64,
    },
    /// The acceptor accepted `value` for `slot` at ballot `(round, node)`.
    Accept {
        /// Log slot.
        slot: u64,
        /// Ballot round.
        round: u64,
        /// Ballot proposer node id.
        node: u64,
        /// The accepted command batch, opaque here.
        value: Vec<u8>,
    },
    /// `slot` is known to be chosen.
    Commit {
        /// Log slot.
        slot: u64,
    },
}

impl AcceptorRecord {
    /// The WAL kind byte this record is stored under.
    pub fn kind(&self) -> u8 {
        match self {
            AcceptorRecord::Promise { .. } => KIND_PROMISE,
            AcceptorRecord::Accept { .. } => KIND_ACCEPT,
            AcceptorRecord::Commit { .. } => KIND_COMMIT,
        }
    }

    /// Encodes the payload (without the kind byte, which travels in the WAL
    /// frame). Layout: fixed little-endian u64 fields in declaration order,
    /// and for `Accept` the value takes the rest of the payload.
    pub fn encode_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            AcceptorRecord::Promise { round, node } => {
                out.extend_from_slice(&round.to_le_bytes());
                out.extend_from_slice(&node.to_le_bytes());
            }
            AcceptorRecord::Accept {
                slot,
                round,
                node,
                value,
            } => {
                out.extend_from_slice(&slot.to_le_bytes());
                out.extend_from_slice(&round.to_le_bytes());
                out.extend_from_slice(&node.to_le_bytes());
                out.extend_from_slice(value);
            }
            AcceptorRecord::Commit { slot } => out.extend_from_slice(&slot.to_le_bytes()),
        }
        out
    }

    /// Decodes a payload stored under `kind`. Fails (never panics) on an
    /// unknown kind or a payload of the wrong size.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Self> {
        let need = |fixed_bytes: usize, exact: bool| -> Result<()> {
            let ok = if exact {
                payload.len() == fixed_bytes
            } else {
                payload.len() >= fixed_bytes
            };
            if ok {
                Ok(())
            } else {
                Err(StorageError::Decode {
                    kind,
                    reason: format!(
                        "payload is {} bytes, expected {}{} bytes",
                        payload.len(),
                        if exact { "" } else { "at least " },
                        fixed_bytes
                    ),
                })
            }
        };
        match kind {
            KIND_PROMISE => {
                need(16, true)?;
                Ok(AcceptorRecord::Promise {
                    round: le_u64(payload, 0),
                    node: le_u64(payload, 8),
                })
            }
            KIND_ACCEPT => {
                need(24, false)?;
                Ok(AcceptorRecord::Accept {
                    slot: le_u64(payload, 0),
                    round: le_u64(payload, 8),
                    node: le_u64(payload, 16),
                    value: payload[24..].to_vec(),
                })
            }
            KIND_COMMIT => {
                need(8, true)?;
                Ok(AcceptorRecord::Commit {
                    slot: le_u64(payload, 0),
                })
            }
            other => Err(StorageError::Decode {
                kind: other,
                reason: "unknown acceptor record kind".to_string(),
            }),
        }
    }

    /// Decodes a record read back from the WAL.
    pub fn from_wal(record: &WalRecord) -> Result<Self> {
        Self::decode(record.kind, &record.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_record() -> impl Strategy<Value = AcceptorRecord> {
        prop_oneof![
            (any::<u64>(), any::<u64>())
                .prop_map(|(round, node)| AcceptorRecord::Promise { round, node }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(slot, round, node, value)| AcceptorRecord::Accept {
                    slot,
                    round,
                    node,
                    value
                }),
            any::<u64>().prop_map(|slot| AcceptorRecord::Commit { slot }),
        ]
    }

    proptest! {
        #[test]
        fn acceptor_records_round_trip(record in any_record()) {
            let decoded = AcceptorRecord::decode(record.kind(), &record.encode_payload());
            prop_assert_eq!(decoded.ok(), Some(record));
        }

        #[test]
        fn garbage_payload_never_panics(kind in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = AcceptorRecord::decode(kind, &payload);
        }
    }

    #[test]
    fn truncated_promise_is_a_decode_error() {
        let err = AcceptorRecord::decode(KIND_PROMISE, &[0u8; 15]);
        assert!(matches!(
            err,
            Err(StorageError::Decode {
                kind: KIND_PROMISE,
                ..
            })
        ));
    }
}
