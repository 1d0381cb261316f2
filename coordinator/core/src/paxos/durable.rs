//! What a replica asks to be made durable, and the state those requests
//! build up on disk. A restarted replica is created from [`DurableState`].

use std::collections::BTreeMap;

use super::types::{Ballot, Batch, PersistSeq, Slot, Snapshot};

/// One change to durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistOp {
    /// The acceptor promised never to accept below this ballot.
    Promise(Ballot),
    /// The acceptor accepted `batch` at `ballot` for `slot`.
    Accept {
        /// The slot.
        slot: Slot,
        /// The ballot.
        ballot: Ballot,
        /// The batch.
        batch: Batch,
    },
    /// `batch` is known chosen for `slot`.
    Chosen {
        /// The slot.
        slot: Slot,
        /// The chosen batch.
        batch: Batch,
    },
    /// Everything below `snapshot.up_to` is in the snapshot; drop those entries.
    Snapshot(Snapshot),
}

/// A numbered group of changes. The shell makes them durable in `seq` order
/// (one fsync may cover many) and then feeds back `Input::Persisted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistRequest {
    /// Sequence number; strictly increasing per replica, across restarts.
    pub seq: PersistSeq,
    /// The changes, applied in order.
    pub ops: Vec<PersistOp>,
}

/// One durable log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableEntry {
    /// Ballot at which the batch was accepted (`Ballot::ZERO` if it was only
    /// learned as chosen).
    pub ballot: Ballot,
    /// The batch.
    pub batch: Batch,
    /// Whether it is known chosen.
    pub chosen: bool,
}

/// Everything a replica must find again after a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurableState {
    /// Highest ballot promised.
    pub promised: Ballot,
    /// Accepted and chosen entries at or after the snapshot.
    pub log: BTreeMap<Slot, DurableEntry>,
    /// The latest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// Sequence number of the last request applied.
    pub persisted_seq: PersistSeq,
}

impl DurableState {
    /// Applies one request. Requests must be applied in `seq` order; a
    /// request at or below `persisted_seq` is ignored (idempotent replay).
    pub fn apply(&mut self, req: &PersistRequest) {
        if req.seq <= self.persisted_seq {
            return;
        }
        for op in &req.ops {
            self.apply_op(op);
        }
        self.persisted_seq = req.seq;
    }

    /// Applies one change; the replica uses this same function on its
    /// in-memory copy so memory and disk can never disagree on semantics.
    pub fn apply_op(&mut self, op: &PersistOp) {
        let floor = self.snapshot.as_ref().map_or(Slot(0), |s| s.up_to);
        match op {
            PersistOp::Promise(b) => self.promised = self.promised.max(*b),
            PersistOp::Accept {
                slot,
                ballot,
                batch,
            } => {
                if *slot < floor {
                    return;
                }
                let chosen = self.log.get(slot).is_some_and(|e| e.chosen);
                let batch = match self.log.get(slot) {
                    // A chosen batch never changes; keep it (the new accept
                    // carries the same value when the protocol is correct).
                    Some(e) if e.chosen => e.batch.clone(),
                    _ => batch.clone(),
                };
                self.log.insert(
                    *slot,
                    DurableEntry {
                        ballot: *ballot,
                        batch,
                        chosen,
                    },
                );
            }
            PersistOp::Chosen { slot, batch } => {
                // A chosen value never changes: the first one stays.
                if *slot < floor || self.log.get(slot).is_some_and(|e| e.chosen) {
                    return;
                }
                let ballot = self.log.get(slot).map_or(Ballot::ZERO, |e| e.ballot);
                self.log.insert(
                    *slot,
                    DurableEntry {
                        ballot,
                        batch: batch.clone(),
                        chosen: true,
                    },
                );
            }
            PersistOp::Snapshot(snap) => {
                if snap.up_to <= floor {
                    return;
                }
                self.log = self.log.split_off(&snap.up_to);
                self.snapshot = Some(snap.clone());
            }
        }
    }
}
