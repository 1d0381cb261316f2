//! Messages replicas exchange. Every field is untrusted: [`Message::check`]
//! runs before any handler sees a message.

use super::config::Config;
use super::types::{Ballot, Batch, NodeId, Slot};

/// One log entry as an acceptor reports it in a [`Message::Promise`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedEntry {
    /// The slot.
    pub slot: Slot,
    /// Ballot at which the acceptor accepted `batch`.
    pub ballot: Ballot,
    /// The accepted batch.
    pub batch: Batch,
    /// The acceptor knows `batch` is chosen, so the new leader may adopt it as is.
    pub chosen: bool,
}

/// A part of an application snapshot, sent to a replica that is behind
/// the sender's compaction point. A snapshot may be larger than any one
/// message may be, so it travels in chunks the receiver asks for in turn
/// ([`Message::SnapshotRequest`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The snapshot covers every slot below this.
    pub up_to: Slot,
    /// The snapshot's whole length in bytes.
    pub total_bytes: u64,
    /// Where in the snapshot `data` starts.
    pub offset: u64,
    /// The bytes from `offset` on (at most the sender's chunk size).
    pub data: bytes::Bytes,
}

impl SnapshotChunk {
    /// Whether this chunk is the whole snapshot.
    pub fn is_whole(&self) -> bool {
        self.offset == 0 && self.data.len() as u64 == self.total_bytes
    }
}

/// A peer-to-peer protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// "Would you vote for me?" Sent before raising any ballot, so a node that
    /// cannot win (or that still hears a live leader) never disrupts one.
    PreVote {
        /// The ballot the sender would use.
        ballot: Ballot,
    },
    /// Answer to [`Message::PreVote`].
    PreVoteReply {
        /// Echo of the asked ballot.
        ballot: Ballot,
        /// True if the sender has not heard a live leader recently.
        granted: bool,
    },
    /// Phase 1a for every slot from `from_slot` on.
    Prepare {
        /// The candidate's ballot.
        ballot: Ballot,
        /// The candidate's first unchosen slot.
        from_slot: Slot,
    },
    /// Phase 1b: the acceptor promised `ballot`. One promise may take
    /// several messages (parts), each within the message size bound: a part
    /// reports the acceptor's entries in the slots `[part_start, part_end)`,
    /// and the candidate counts the promise once its parts cover every slot
    /// from `from_slot` on.
    Promise {
        /// The promised ballot.
        ballot: Ballot,
        /// Echo of the prepare's `from_slot`.
        from_slot: Slot,
        /// The acceptor's first unchosen slot: everything below is chosen.
        chosen_up_to: Slot,
        /// The entries the acceptor holds in this part's slots: every one
        /// at or after `max(from_slot, chosen_up_to)`, plus (as a bonus,
        /// bounded) chosen entries below.
        entries: Vec<ReportedEntry>,
        /// First slot this part reports on (`from_slot` for the first part).
        part_start: Slot,
        /// The slot after the last one this part reports on; `None` for the
        /// last part (it reports on every slot from `part_start` on).
        part_end: Option<Slot>,
    },
    /// The receiver refuses `ballot`; it has promised `promised`.
    Nack {
        /// The refused ballot.
        ballot: Ballot,
        /// What the acceptor has promised (may equal or be below `ballot` if
        /// the refusal was because of a running lease).
        promised: Ballot,
    },
    /// Phase 2a for one slot; carries the leader's commit index.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
        /// The proposed batch.
        batch: Batch,
        /// Every slot below this is chosen (leader's first unchosen slot).
        commit: Slot,
    },
    /// Phase 2b: the acceptor durably accepted `(slot, ballot)`.
    Accepted {
        /// The accepted ballot.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
    },
    /// Leader liveness and lease renewal; carries the commit index.
    Heartbeat {
        /// The leader's ballot.
        ballot: Ballot,
        /// Heartbeat round, echoed in the ack to measure the lease.
        round: u64,
        /// Every slot below this is chosen.
        commit: Slot,
    },
    /// The acceptor is still following `ballot` and will refuse rivals for a lease.
    HeartbeatAck {
        /// Echo of the heartbeat's ballot.
        ballot: Ballot,
        /// Echo of the heartbeat's round.
        round: u64,
        /// The acceptor's first unchosen slot, so a leader that is behind
        /// (e.g. its followers compacted slots it still re-proposes) learns
        /// to catch up.
        commit: Slot,
    },
    /// The sender, leading with `ballot`, stopped leading and released its
    /// lease; `successor` should campaign at once.
    Abdicate {
        /// The abdicating leader's ballot.
        ballot: Ballot,
        /// Who should take over.
        successor: NodeId,
    },
    /// "Send me chosen entries from `from_slot` on."
    CatchUpRequest {
        /// First slot the requester lacks.
        from_slot: Slot,
    },
    /// Chosen entries, or, to a requester behind the sender's compaction
    /// point, a chunk of the sender's snapshot instead.
    CatchUp {
        /// Present when the requested slots were already compacted away.
        snapshot: Option<SnapshotChunk>,
        /// Chosen entries in slot order, contiguous.
        entries: Vec<(Slot, Batch)>,
    },
    /// "Send me the chunk of your snapshot up to `up_to` that starts at
    /// `offset`." Answered with a [`Message::CatchUp`] carrying it (or the
    /// first chunk of a newer snapshot, if the sender compacted again).
    SnapshotRequest {
        /// Which snapshot.
        up_to: Slot,
        /// Where the next chunk starts.
        offset: u64,
    },
}

/// Why a message was dropped unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A batch has too many commands or a command is too large.
    OversizedBatch,
    /// A list has more items than any honest peer sends.
    TooManyEntries,
    /// A ballot names a node outside the cluster.
    UnknownBallotOwner,
    /// Entries are not strictly ascending or are out of range.
    BadOrder,
    /// A snapshot chunk reaches past its snapshot's length, or announces a
    /// snapshot larger than any this cluster accepts.
    BadSnapshotChunk,
}

fn batch_ok(batch: &Batch, cfg: &Config) -> bool {
    batch.len() <= cfg.max_batch_values && batch.iter().all(|v| v.len() <= cfg.max_value_bytes)
}

impl Message {
    /// Rejects messages no honest peer under the same config would send, so
    /// handlers can rely on bounded sizes.
    pub fn check(&self, cfg: &Config) -> Result<(), Malformed> {
        // Which ids are members changes with the replicated membership; the
        // replica checks the sender, and counts only the votes of members.
        let id_ok = |n: &NodeId| n.0 != 0 && n.0 <= NodeId::MAX;
        let ballot_ok = |b: &Ballot| *b == Ballot::ZERO || id_ok(&b.node);
        let bad_ballot = match self {
            Message::PreVote { ballot }
            | Message::PreVoteReply { ballot, .. }
            | Message::Prepare { ballot, .. }
            | Message::Accept { ballot, .. }
            | Message::Accepted { ballot, .. }
            | Message::Heartbeat { ballot, .. }
            | Message::HeartbeatAck { ballot, .. } => !ballot_ok(ballot),
            Message::Abdicate { ballot, successor } => !ballot_ok(ballot) || !id_ok(successor),
            Message::Promise {
                ballot, entries, ..
            } => !ballot_ok(ballot) || entries.iter().any(|e| !ballot_ok(&e.ballot)),
            Message::Nack { ballot, promised } => !ballot_ok(ballot) || !ballot_ok(promised),
            Message::CatchUpRequest { .. }
            | Message::CatchUp { .. }
            | Message::SnapshotRequest { .. } => false,
        };
        if bad_ballot {
            return Err(Malformed::UnknownBallotOwner);
        }
        match self {
            Message::Accept { batch, .. } if !batch_ok(batch, cfg) => {
                Err(Malformed::OversizedBatch)
            }
            Message::Promise {
                entries,
                from_slot,
                chosen_up_to,
                part_start,
                part_end,
                ..
            } => {
                // A part starts at or after the prepare's first slot, ends
                // after it starts, and holds only entries of its own slots.
                if part_start < from_slot || part_end.is_some_and(|end| end <= *part_start) {
                    return Err(Malformed::BadOrder);
                }
                let in_part =
                    |slot: Slot| slot >= *part_start && part_end.is_none_or(|end| slot < end);
                if entries.iter().any(|e| !in_part(e.slot)) {
                    return Err(Malformed::BadOrder);
                }
                let limit = cfg
                    .max_log_ahead_slots
                    .saturating_add(cfg.max_catchup_entries as u64);
                if entries.len() as u64 > limit {
                    return Err(Malformed::TooManyEntries);
                }
                if entries.iter().any(|e| !batch_ok(&e.batch, cfg)) {
                    return Err(Malformed::OversizedBatch);
                }
                // An honest acceptor holds nothing past its commit index
                // plus the accept window.
                let horizon = chosen_up_to.0.saturating_add(cfg.max_log_ahead_slots);
                if entries.iter().any(|e| e.slot.0 >= horizon) {
                    return Err(Malformed::BadOrder);
                }
                let ascending = entries.windows(2).all(|w| w[0].slot < w[1].slot);
                if !ascending || entries.first().is_some_and(|e| e.slot < *from_slot) {
                    return Err(Malformed::BadOrder);
                }
                Ok(())
            }
            Message::CatchUp { entries, snapshot } => {
                if entries.len() > cfg.max_catchup_entries {
                    return Err(Malformed::TooManyEntries);
                }
                if let Some(chunk) = snapshot {
                    let end = chunk.offset.checked_add(chunk.data.len() as u64);
                    if end.is_none_or(|end| end > chunk.total_bytes)
                        || chunk.total_bytes > cfg.max_snapshot_bytes as u64
                    {
                        return Err(Malformed::BadSnapshotChunk);
                    }
                }
                if entries.iter().any(|(_, b)| !batch_ok(b, cfg)) {
                    return Err(Malformed::OversizedBatch);
                }
                if !entries.windows(2).all(|w| w[0].0.next() == w[1].0) {
                    return Err(Malformed::BadOrder);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
