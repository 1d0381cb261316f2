//! Safety invariants, checked as the run goes. Each check returns the first
//! violation as a human-readable string.

use std::collections::{BTreeMap, BTreeSet};

use paxlock_core::paxos::{
    Ballot, DurableState, MembershipChange, Message, NodeId, PersistOp, PersistRequest, Slot,
    Value, MEMBERSHIP_DELAY_SLOTS,
};

use super::rng::batch_digest;

/// Who decides which slot, as the checker reads the log: its own model of
/// the membership rules (written apart from the replicas' `MembershipLog`,
/// so that a bug there shows as a disagreement, not as the truth).
#[derive(Debug)]
struct TruthMembership {
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    retired: BTreeSet<NodeId>,
    /// (first slot decided, voters), ascending.
    epochs: Vec<(Slot, BTreeSet<NodeId>)>,
}

impl TruthMembership {
    fn new(voters: BTreeSet<NodeId>) -> TruthMembership {
        TruthMembership {
            epochs: vec![(Slot(0), voters.clone())],
            voters,
            learners: BTreeSet::new(),
            retired: BTreeSet::new(),
        }
    }

    /// The voters deciding `slot`.
    fn voters_at(&self, slot: Slot) -> &BTreeSet<NodeId> {
        let mut out = &self.epochs[0].1;
        for (from, voters) in &self.epochs {
            if *from <= slot {
                out = voters;
            }
        }
        out
    }

    /// A change chosen at `slot`: the spec of each kind, from the issue
    /// and `PROTOCOL`: an unknown, retired or present id is not added, only
    /// a learner is promoted, the last voter stays; 8 learners and 15
    /// voters at most. A refused change changes nothing.
    fn chosen(&mut self, slot: Slot, change: MembershipChange) {
        let n = change.node();
        let member = self.voters.contains(&n) || self.learners.contains(&n);
        let ok = match change {
            MembershipChange::AddLearner(..) => {
                (1..=1023).contains(&n.0)
                    && !member
                    && !self.retired.contains(&n)
                    && self.learners.len() < 8
            }
            MembershipChange::Promote(_) => self.learners.contains(&n) && self.voters.len() < 15,
            MembershipChange::Remove(_) => {
                member && !(self.voters.len() == 1 && self.voters.contains(&n))
            }
        };
        if !ok {
            return;
        }
        match change {
            MembershipChange::AddLearner(..) => {
                self.learners.insert(n);
            }
            MembershipChange::Promote(_) => {
                self.learners.remove(&n);
                self.voters.insert(n);
            }
            MembershipChange::Remove(_) => {
                self.voters.remove(&n);
                self.learners.remove(&n);
                self.retired.insert(n);
            }
        }
        let from = Slot(slot.0 + MEMBERSHIP_DELAY_SLOTS);
        self.epochs.push((from, self.voters.clone()));
    }

    fn is_quorum(&self, slot: Slot, nodes: &[NodeId]) -> bool {
        let voters = self.voters_at(slot);
        nodes.iter().filter(|n| voters.contains(n)).count() > voters.len() / 2
    }
}

/// Everything the checker remembers across the run (across crashes too).
///
/// Which acceptors decide a slot is the checker's own reading of the log:
/// the membership changes in the slots applied, taking effect
/// `MEMBERSHIP_DELAY_SLOTS` slots after their own, from the first
/// membership. A value is chosen once a majority of the voters deciding
/// its slot durably accepted it, whatever any replica believed.
#[derive(Debug)]
pub struct Checker {
    /// The memberships of the slots applied so far (the truth).
    members: TruthMembership,
    /// Every slot below this is applied somewhere and in `members`.
    members_known_below: Slot,
    /// Applied slots not yet in `members` (one below was not yet applied
    /// anywhere), with the change each carries.
    changes: BTreeMap<Slot, Option<MembershipChange>>,
    /// Accepts whose slot's membership is not known yet.
    undecided: BTreeSet<(Slot, Ballot)>,
    /// (slot, ballot) -> (value digest, acceptors that durably accepted it,
    /// one bit per node id).
    accepted: BTreeMap<(Slot, Ballot), (u64, u64)>,
    /// Slot -> digest of the value a quorum durably accepted.
    chosen: BTreeMap<Slot, u64>,
    /// Slot -> digest of the batch applied there (first replica to apply).
    applied: BTreeMap<Slot, u64>,
    /// Slot -> application digest after applying that slot.
    app_digest: BTreeMap<Slot, u64>,
    /// Node -> true-time end of the lease it currently believes in.
    lease_end_true_ns: BTreeMap<NodeId, u64>,
}

impl Checker {
    /// A checker for a cluster whose first voters are `voters` (ids below 64).
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Checker {
        Checker {
            members: TruthMembership::new(voters.into_iter().collect()),
            members_known_below: Slot(0),
            changes: BTreeMap::new(),
            undecided: BTreeSet::new(),
            accepted: BTreeMap::new(),
            chosen: BTreeMap::new(),
            applied: BTreeMap::new(),
            app_digest: BTreeMap::new(),
            lease_end_true_ns: BTreeMap::new(),
        }
    }

    /// Invariant "every replica knows who decides the slots it applies":
    /// `node`'s replica believes `voters` decide `slot`, which it applies;
    /// the log says who does.
    pub fn on_replica_voters(
        &self,
        node: NodeId,
        slot: Slot,
        voters: &BTreeSet<NodeId>,
    ) -> Result<(), String> {
        if !self.membership_known(slot) {
            return Ok(());
        }
        let truth = self.members.voters_at(slot);
        if voters != truth {
            return Err(format!(
                "node {} believes slot {} is decided by {voters:?}; the log says {truth:?}",
                node.0, slot.0
            ));
        }
        Ok(())
    }

    /// Whether the membership deciding `slot` is known (every slot up to
    /// `MEMBERSHIP_DELAY_SLOTS` before it is applied somewhere).
    fn membership_known(&self, slot: Slot) -> bool {
        slot.0 < self.members_known_below.0 + MEMBERSHIP_DELAY_SLOTS
    }

    /// Invariant "one value per slot": decides whether `(slot, ballot)` is
    /// chosen by the votes of the slot's own voters.
    fn decide(&mut self, slot: Slot, ballot: Ballot) -> Result<(), String> {
        let Some((d, votes)) = self.accepted.get(&(slot, ballot)).copied() else {
            return Ok(());
        };
        let voters: Vec<NodeId> = (1..64u64)
            .filter(|id| votes & (1u64 << id) != 0)
            .map(NodeId)
            .collect();
        if !self.members.is_quorum(slot, &voters) {
            return Ok(());
        }
        match self.chosen.get(&slot) {
            Some(prev) if *prev != d => Err(format!(
                "two values chosen for slot {} (the second at ballot {ballot:?}, by {voters:?} of {:?})",
                slot.0,
                self.members.voters_at(slot)
            )),
            _ => {
                self.chosen.insert(slot, d);
                Ok(())
            }
        }
    }

    /// Adds what slot `slot`'s batch changes about membership, and decides
    /// the accepts whose membership is known now.
    fn learn_membership(&mut self, slot: Slot, batch: &[Value]) -> Result<(), String> {
        if slot < self.members_known_below {
            return Ok(());
        }
        let change = match batch {
            [value] => MembershipChange::decode(value),
            _ => None,
        };
        self.changes.entry(slot).or_insert(change);
        let before = self.members_known_below;
        while let Some(change) = self.changes.remove(&self.members_known_below) {
            if let Some(change) = change {
                self.members.chosen(self.members_known_below, change);
            }
            self.members_known_below = self.members_known_below.next();
        }
        if self.members_known_below == before {
            return Ok(());
        }
        let known: Vec<(Slot, Ballot)> = self
            .undecided
            .iter()
            .copied()
            .filter(|(slot, _)| self.membership_known(*slot))
            .collect();
        for key in known {
            self.undecided.remove(&key);
            self.decide(key.0, key.1)?;
        }
        Ok(())
    }

    /// Slots known chosen (quorum durably accepted), for reports.
    pub fn chosen_slots(&self) -> usize {
        self.chosen.len()
    }

    /// Invariant "one value per slot", on the Paxos definition of chosen: a
    /// majority of the slot's voters *durably* accepted the same (slot,
    /// ballot). Also "one value per (slot, ballot)", which ballot
    /// uniqueness promises.
    pub fn on_durable(&mut self, node: NodeId, req: &PersistRequest) -> Result<(), String> {
        for op in &req.ops {
            let PersistOp::Accept {
                slot,
                ballot,
                batch,
            } = op
            else {
                continue;
            };
            let d = batch_digest(batch);
            let bit = 1u64 << (node.0 % 64);
            let e = self.accepted.entry((*slot, *ballot)).or_insert((d, 0));
            if e.0 != d {
                return Err(format!(
                    "two values accepted for slot {} at ballot {:?}",
                    slot.0, ballot
                ));
            }
            e.1 |= bit;
            if self.membership_known(*slot) {
                self.decide(*slot, *ballot)?;
            } else {
                self.undecided.insert((*slot, *ballot));
            }
        }
        Ok(())
    }

    /// Invariant "no message depends on state that is not durable": a
    /// promise or accepted reply (and a heartbeat ack) claims durable state.
    pub fn on_send(
        &self,
        from: NodeId,
        msg: &Message,
        durable: &DurableState,
    ) -> Result<(), String> {
        let ok = match msg {
            Message::Promise { ballot, .. } | Message::HeartbeatAck { ballot, .. } => {
                durable.promised >= *ballot
            }
            Message::Accepted { ballot, slot } => {
                let floor = durable.snapshot.as_ref().map_or(Slot(0), |s| s.up_to);
                *slot < floor || durable.log.get(slot).is_some_and(|e| e.ballot >= *ballot)
            }
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "node {} sent {msg:?} which its durable state does not back (not yet persisted, or since overwritten)",
                from.0
            ))
        }
    }

    /// Invariant "applied sequences are prefixes of one sequence".
    pub fn on_apply(
        &mut self,
        node: NodeId,
        slot: Slot,
        batch: &[paxlock_core::paxos::Value],
        app_digest: u64,
    ) -> Result<(), String> {
        let d = batch_digest(batch);
        self.learn_membership(slot, batch)?;
        // Invariant "only chosen values are applied", on the checker's own
        // reading of who decides the slot: a replica that counted votes
        // of the wrong membership applies a value no majority of the
        // slot's voters accepted.
        match self.chosen.get(&slot) {
            Some(c) if *c != d => {
                return Err(format!(
                    "node {} applied a value not chosen at slot {}",
                    node.0, slot.0
                ));
            }
            None if self.membership_known(slot) => {
                return Err(format!(
                    "node {} applied slot {} which no majority of its voters {:?} accepted",
                    node.0,
                    slot.0,
                    self.members.voters_at(slot)
                ));
            }
            _ => {}
        }
        match self.applied.get(&slot) {
            Some(prev) if *prev != d => {
                return Err(format!(
                    "node {} applied a different batch at slot {}",
                    node.0, slot.0
                ));
            }
            Some(_) => {}
            None => {
                self.applied.insert(slot, d);
            }
        }
        self.check_app_digest(node, slot, app_digest)
    }

    /// After installing a snapshot covering slots below `up_to`, the app
    /// must equal every other replica's app after slot `up_to - 1`.
    pub fn on_snapshot(
        &mut self,
        node: NodeId,
        up_to: Slot,
        app_digest: u64,
    ) -> Result<(), String> {
        if up_to.0 == 0 {
            return Ok(());
        }
        self.check_app_digest(node, Slot(up_to.0 - 1), app_digest)
    }

    fn check_app_digest(
        &mut self,
        node: NodeId,
        slot: Slot,
        app_digest: u64,
    ) -> Result<(), String> {
        match self.app_digest.get(&slot) {
            Some(prev) if *prev != app_digest => Err(format!(
                "node {} application state diverged after slot {}",
                node.0, slot.0
            )),
            Some(_) => Ok(()),
            None => {
                self.app_digest.insert(slot, app_digest);
                Ok(())
            }
        }
    }

    /// Invariant "at most one lease holder at any true time": `node` now
    /// believes it holds the lease until `end_true_ns`.
    pub fn on_lease(
        &mut self,
        node: NodeId,
        now_true_ns: u64,
        end_true_ns: u64,
    ) -> Result<(), String> {
        if end_true_ns <= now_true_ns {
            return Ok(());
        }
        for (other, end) in &self.lease_end_true_ns {
            if *other != node && *end > now_true_ns {
                return Err(format!(
                    "nodes {} and {} both hold the leader lease at true time {} ns (other's ends at {})",
                    node.0, other.0, now_true_ns, end
                ));
            }
        }
        let e = self.lease_end_true_ns.entry(node).or_insert(0);
        *e = (*e).max(end_true_ns);
        Ok(())
    }

    /// `node` stopped believing in its lease (deposed or crashed).
    pub fn on_lease_lost(&mut self, node: NodeId, now_true_ns: u64) {
        if let Some(e) = self.lease_end_true_ns.get_mut(&node) {
            *e = (*e).min(now_true_ns);
        }
    }
}
