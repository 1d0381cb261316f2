//! Proposer state: a candidate running phase 1, or a leader running phase 2,
//! and the rule for which value a new leader must re-propose.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::membership::{Membership, MembershipChange, MembershipLog};
use super::message::ReportedEntry;
use super::types::{Ballot, Batch, Nanos, NodeId, Slot};

/// Most heartbeat rounds a leader remembers while waiting for acks; older
/// rounds cannot extend the lease further than newer ones anyway.
pub(crate) const MAX_HEARTBEAT_ROUNDS: usize = 16;

/// What one acceptor told a candidate, gathered from the parts of its
/// promise (see `acceptor::promise_parts`).
#[derive(Debug, Clone, Default)]
pub(crate) struct PromiseInfo {
    /// The highest first-unchosen slot any part reported.
    pub(crate) chosen_up_to: Slot,
    /// The entries reported so far, by slot.
    pub(crate) entries: BTreeMap<Slot, ReportedEntry>,
    /// The slot ranges the parts received so far cover (`None`: no end).
    covered: Vec<(Slot, Option<Slot>)>,
}

/// Most parts one acceptor's promise is gathered from; past it the parts
/// are forgotten and the candidate asks again. An honest promise has at
/// most one part per reported entry.
const MAX_PROMISE_PARTS: usize = 4096;

impl PromiseInfo {
    /// Adds one part. Parts may come from different answers to the same
    /// prepare (a lost part is re-sent with all the others): each tells the
    /// truth about its own slots, and nothing below the promised ballot can
    /// be accepted once it is promised, so they combine.
    pub(crate) fn add_part(
        &mut self,
        chosen_up_to: Slot,
        entries: Vec<ReportedEntry>,
        part_start: Slot,
        part_end: Option<Slot>,
    ) {
        if self.covered.len() >= MAX_PROMISE_PARTS {
            *self = PromiseInfo::default();
        }
        self.chosen_up_to = self.chosen_up_to.max(chosen_up_to);
        for e in entries {
            self.entries.insert(e.slot, e);
        }
        self.covered.push((part_start, part_end));
    }

    /// Whether the parts received cover every slot from `from_slot` on:
    /// only then does the promise count.
    pub(crate) fn complete(&self, from_slot: Slot) -> bool {
        let mut ranges = self.covered.clone();
        ranges.sort();
        let mut reached = from_slot;
        for (start, end) in ranges {
            if start > reached {
                return false;
            }
            match end {
                None => return true,
                Some(end) => reached = reached.max(end),
            }
        }
        false
    }
}

/// A node running phase 1 with `ballot`.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) ballot: Ballot,
    pub(crate) from_slot: Slot,
    pub(crate) promises: BTreeMap<NodeId, PromiseInfo>,
    /// The memberships the promises so far show ahead: the replica's own,
    /// and the changes the promises report (see
    /// `Replica::follow_promised_memberships`).
    pub(crate) memberships: MembershipLog,
    pub(crate) started_at: Nanos,
    pub(crate) last_sent_at: Nanos,
}

impl Candidate {
    /// The acceptors whose promise is complete.
    pub(crate) fn promised(&self) -> impl Iterator<Item = (&NodeId, &PromiseInfo)> {
        self.promises
            .iter()
            .filter(|(_, p)| p.complete(self.from_slot))
    }
}

/// The outcome of a successful phase 1.
#[derive(Debug, Clone, Default)]
pub(crate) struct PhaseOneResult {
    /// Entries some promiser knows chosen.
    pub(crate) chosen: BTreeMap<Slot, Batch>,
    /// Highest-ballot value per slot at or above `max_commit`.
    pub(crate) repropose: BTreeMap<Slot, Batch>,
    /// Highest commit index among promisers: slots below are chosen even if
    /// unreported, so the leader must learn (not propose) them (from a
    /// snapshot, if the promiser compacted them away).
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
pub(crate) fn merge_promises<'a>(
    promises: impl IntoIterator<Item = (&'a NodeId, &'a PromiseInfo)>,
) -> PhaseOneResult {
    let mut out = PhaseOneResult::default();
    let mut best: BTreeMap<Slot, (Ballot, &Batch)> = BTreeMap::new();
    for (node, p) in promises {
        if p.chosen_up_to > out.max_commit {
            out.max_commit = p.chosen_up_to;
            out.max_commit_peer = Some(*node);
        }
        for e in p.entries.values() {
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
    /// How often it was sent again (the wait before the next resend
    /// doubles each time).
    pub(crate) resends: u32,
}

/// One heartbeat round: when it was sent and who acknowledged it.
#[derive(Debug, Clone)]
pub(crate) struct HeartbeatRound {
    pub(crate) round: u64,
    pub(crate) sent_at: Nanos,
    pub(crate) acks: BTreeSet<NodeId>,
}

/// A membership change a leader was asked for, from the moment it is
/// queued until the slot carrying it is known chosen (from then on the
/// replica's membership log holds it until it takes effect).
#[derive(Debug, Clone)]
pub(crate) struct PendingChange {
    pub(crate) change: MembershipChange,
    /// The membership once it takes effect.
    pub(crate) after: Membership,
    /// The slot it was proposed at; `None` while queued.
    pub(crate) slot: Option<Slot>,
    /// Rule "a lease covers every membership it may meet": the change is
    /// proposed only once every lease the leader took before the change
    /// was queued (acknowledged by quorums that need not include one of
    /// `after`) has run out.
    pub(crate) not_before: Nanos,
}

/// A node that completed phase 1 with `ballot`.
#[derive(Debug, Clone)]
pub(crate) struct Leader {
    pub(crate) ballot: Ballot,
    /// Next slot to assign to a new batch.
    pub(crate) next_slot: Slot,
    /// Every slot below this was re-proposed (or found chosen) in phase 1.
    pub(crate) recovered_to: Slot,
    /// Re-proposals from phase 1 that lie too far past the commit index to
    /// be proposed yet (rule "lead only within alpha"), in slot order.
    pub(crate) deferred: BTreeMap<Slot, Batch>,
    /// The membership change this leader was asked for, if any.
    pub(crate) change: Option<PendingChange>,
    /// Each follower's commit index, from its heartbeat acknowledgements.
    pub(crate) follower_commits: BTreeMap<NodeId, Slot>,
    /// How far each follower's commit index trailed the one the heartbeat
    /// it acknowledged carried: how far behind it is, not counting the
    /// slots this leader chose while the heartbeat travelled (which a busy
    /// leader chooses by the dozen, so that a follower keeping pace could
    /// look behind).
    pub(crate) follower_lag: BTreeMap<NodeId, u64>,
    /// The commit index each of the latest heartbeat rounds carried
    /// (at most [`MAX_HEARTBEAT_ROUNDS`]; kept after the round's quorum,
    /// unlike `rounds`, for the acks of the followers it did not need).
    pub(crate) round_commits: VecDeque<(u64, Slot)>,
    /// When each follower last acknowledged a heartbeat.
    pub(crate) follower_heard_at: BTreeMap<NodeId, Nanos>,
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
            recovered_to: next_slot,
            deferred: BTreeMap::new(),
            change: None,
            follower_commits: BTreeMap::new(),
            follower_lag: BTreeMap::new(),
            round_commits: VecDeque::new(),
            follower_heard_at: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_round: 1,
            rounds: VecDeque::new(),
            lease_until: Nanos(0),
            last_quorum_at: now,
            next_heartbeat_at: now,
        }
    }
}
