//! Safety invariants, checked as the run goes. Each check returns the first
//! violation as a human-readable string.

use std::collections::BTreeMap;

use paxlock_core::paxos::{Ballot, DurableState, Message, NodeId, PersistOp, PersistRequest, Slot};

use super::rng::batch_digest;

/// Everything the checker remembers across the run (across crashes too).
#[derive(Debug, Default)]
pub struct Checker {
    quorum: usize,
    /// (slot, ballot) -> (value digest, acceptors that durably accepted it).
    accepted: BTreeMap<(Slot, Ballot), (u64, u32)>,
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
    /// A checker for a cluster needing `quorum` acceptors.
    pub fn new(quorum: usize) -> Checker {
        Checker {
            quorum,
            ..Checker::default()
        }
    }

    /// Slots known chosen (quorum durably accepted), for reports.
    pub fn chosen_slots(&self) -> usize {
        self.chosen.len()
    }

    /// Invariant "one value per slot", on the Paxos definition of chosen: a
    /// quorum of acceptors *durably* accepted the same (slot, ballot). Also
    /// "one value per (slot, ballot)", which ballot uniqueness promises.
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
            let bit = 1u32 << (node.0 % 32);
            let e = self.accepted.entry((*slot, *ballot)).or_insert((d, 0));
            if e.0 != d {
                return Err(format!(
                    "two values accepted for slot {} at ballot {:?}",
                    slot.0, ballot
                ));
            }
            e.1 |= bit;
            if e.1.count_ones() as usize >= self.quorum {
                match self.chosen.get(slot) {
                    Some(prev) if *prev != d => {
                        return Err(format!("two values chosen for slot {}", slot.0));
                    }
                    _ => {
                        self.chosen.insert(*slot, d);
                    }
                }
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
        if let Some(c) = self.chosen.get(&slot) {
            if *c != d {
                return Err(format!(
                    "node {} applied a value not chosen at slot {}",
                    node.0, slot.0
                ));
            }
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
