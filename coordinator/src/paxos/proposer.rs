//! Proposer state: a candidate running phase 1, or a leader running phase 2,
//! and the rule for which value a new leader must re-propose.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::message::ReportedEntry;
use super::types::{Ballot, Batch, Nanos, NodeId, Slot, Snapshot};

/// Most heartbeat rounds a leader remembers while waiting for acks; older
/// rounds cannot extend the lease further than newer ones anyway.
pub(crate) const MAX_HEARTBEAT_ROUNDS: usize = 16;

/// What one acceptor told a candidate.
#[derive(Debug, Clone)]
pub(crate) struct PromiseInfo {
    pub(crate) chosen_up_to: Slot,
    pub(crate) entries: Vec<ReportedEntry>,
    pub(crate) snapshot: Option<Snapshot>,
}

/// A node running phase 1 with `ballot`.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) ballot: Ballot,
    pub(crate) from_slot: Slot,
    pub(crate) promises: BTreeMap<NodeId, PromiseInfo>,
    pub(crate) started_at: Nanos,
    pub(crate) last_sent_at: Nanos,
}

/// The outcome of a successful phase 1.
#[derive(Debug, Clone, Default)]
pub(crate) struct PhaseOneResult {
    /// Highest snapshot any promiser reported beyond `from_slot`.
    pub(crate) snapshot: Option<Snapshot>,
    /// Entries some promiser knows chosen.
    pub(crate) chosen: BTreeMap<Slot, Batch>,
    /// Highest-ballot value per slot at or above `max_commit`.
    pub(crate) repropose: BTreeMap<Slot, Batch>,
    /// Highest commit index among promisers: slots below are chosen even if
    /// unreported, so the leader must learn (not propose) them.
    pub(crate) max_commit: Slot,
    /// The promiser that reported `max_commit`.
    pub(crate) max_commit_peer: Option<NodeId>,
    /// One past the highest reported slot.
    pub(crate) end_slot: Slot,
}

/// Rule "re-propose the highest-ballot value": of the values a quorum has
/// accepted for a slot, only the one with the highest ballot can have been
/// chosen, so a new leader proposes exactly that value (or a no-op if none).
/// Slots a promiser knows chosen are adopted as chosen.
pub(crate) fn merge_promises(promises: &BTreeMap<NodeId, PromiseInfo>) -> PhaseOneResult {
    let mut out = PhaseOneResult::default();
    let mut best: BTreeMap<Slot, (Ballot, &Batch)> = BTreeMap::new();
    for (node, p) in promises {
        if p.chosen_up_to > out.max_commit {
            out.max_commit = p.chosen_up_to;
            out.max_commit_peer = Some(*node);
        }
        if let Some(s) = &p.snapshot {
            if out.snapshot.as_ref().is_none_or(|cur| cur.up_to < s.up_to) {
                out.snapshot = Some(s.clone());
            }
        }
        for e in &p.entries {
            out.end_slot = out.end_slot.max(e.slot.next());
            if e.chosen {
                out.chosen.insert(e.slot, e.batch.clone());
            } else if best.get(&e.slot).is_none_or(|(b, _)| *b < e.ballot) {
                best.insert(e.slot, (e.ballot, &e.batch));
            }
        }
    }
    for (slot, (_, batch)) in best {
        if slot >= out.max_commit && !out.chosen.contains_key(&slot) {
            out.repropose.insert(slot, batch.clone());
        }
    }
    out
}

/// One slot a leader has proposed and not yet seen chosen.
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    pub(crate) batch: Batch,
    pub(crate) acks: BTreeSet<NodeId>,
    pub(crate) last_sent_at: Nanos,
}

/// One heartbeat round: when it was sent and who acknowledged it.
#[derive(Debug, Clone)]
pub(crate) struct HeartbeatRound {
    pub(crate) round: u64,
    pub(crate) sent_at: Nanos,
    pub(crate) acks: BTreeSet<NodeId>,
}

/// A node that completed phase 1 with `ballot`.
#[derive(Debug, Clone)]
pub(crate) struct Leader {
    pub(crate) ballot: Ballot,
    /// Next slot to assign to a new batch.
    pub(crate) next_slot: Slot,
    /// Proposed, not yet known chosen. Bounded by the pipeline window plus
    /// the re-proposals of phase 1 (bounded by `max_log_ahead_slots`).
    pub(crate) in_flight: BTreeMap<Slot, InFlight>,
    pub(crate) next_round: u64,
    pub(crate) rounds: VecDeque<HeartbeatRound>,
    /// Local time until which no other leader can exist.
    pub(crate) lease_until: Nanos,
    /// Last time a quorum acknowledged a heartbeat round.
    pub(crate) last_quorum_at: Nanos,
    pub(crate) next_heartbeat_at: Nanos,
}

impl Leader {
    pub(crate) fn new(ballot: Ballot, now: Nanos, next_slot: Slot) -> Leader {
        Leader {
            ballot,
            next_slot,
            in_flight: BTreeMap::new(),
            next_round: 1,
            rounds: VecDeque::new(),
            lease_until: Nanos(0),
            last_quorum_at: now,
            next_heartbeat_at: now,
        }
    }
}
