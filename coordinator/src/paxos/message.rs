//! Messages replicas exchange. Every field is untrusted: [`Message::check`]
//! runs before any handler sees a message.

use super::config::Config;
use super::types::{Ballot, Batch, NodeId, Slot, Snapshot};

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
    /// Phase 1b: the acceptor promised `ballot`.
    Promise {
        /// The promised ballot.
        ballot: Ballot,
        /// Echo of the prepare's `from_slot`.
        from_slot: Slot,
        /// The acceptor's first unchosen slot: everything below is chosen.
        chosen_up_to: Slot,
        /// Every entry the acceptor holds at or after `max(from_slot,
        /// chosen_up_to)`, plus (as a bonus, bounded) chosen entries below.
        entries: Vec<ReportedEntry>,
        /// The acceptor's snapshot, if it covers slots at or after `from_slot`.
        snapshot: Option<Snapshot>,
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
    /// Chosen entries (and a snapshot if the requester is too far behind).
    CatchUp {
        /// Present when `from_slot` was already compacted away.
        snapshot: Option<Snapshot>,
        /// Chosen entries in slot order, contiguous.
        entries: Vec<(Slot, Batch)>,
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
}

fn batch_ok(batch: &Batch, cfg: &Config) -> bool {
    batch.len() <= cfg.max_batch_values && batch.iter().all(|v| v.len() <= cfg.max_value_bytes)
}

impl Message {
    /// Rejects messages no honest peer under the same config would send, so
    /// handlers can rely on bounded sizes.
    pub fn check(&self, cfg: &Config) -> Result<(), Malformed> {
        let ballot_ok = |b: &Ballot| *b == Ballot::ZERO || cfg.members.contains(&b.node);
        let bad_ballot = match self {
            Message::PreVote { ballot }
            | Message::PreVoteReply { ballot, .. }
            | Message::Prepare { ballot, .. }
            | Message::Accept { ballot, .. }
            | Message::Accepted { ballot, .. }
            | Message::Heartbeat { ballot, .. }
            | Message::HeartbeatAck { ballot, .. } => !ballot_ok(ballot),
            Message::Abdicate { ballot, successor } => {
                !ballot_ok(ballot) || !cfg.members.contains(successor)
            }
            Message::Promise {
                ballot, entries, ..
            } => !ballot_ok(ballot) || entries.iter().any(|e| !ballot_ok(&e.ballot)),
            Message::Nack { ballot, promised } => !ballot_ok(ballot) || !ballot_ok(promised),
            Message::CatchUpRequest { .. } | Message::CatchUp { .. } => false,
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
                ..
            } => {
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
            Message::CatchUp { entries, .. } => {
                if entries.len() > cfg.max_catchup_entries {
                    return Err(Malformed::TooManyEntries);
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
