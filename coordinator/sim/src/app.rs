//! The application side of the simulator: what chosen entries are applied
//! to by the Paxos workload (the lock workload runs the real lock state
//! machine instead).

use paxlock_core::paxos::{Slot, Snapshot, Value};

use super::rng::Fnv;

/// A deterministic state machine fed by chosen log entries. Every replica
/// has its own instance; the simulator compares their digests per slot.
pub trait App {
    /// Applies the batch chosen for `slot`; called once per slot, in order.
    fn apply(&mut self, slot: Slot, batch: &[Value]);
    /// Serializes the state (everything applied so far).
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the state with a snapshot taken by [`App::snapshot`].
    /// Returns false if the bytes are not a valid snapshot.
    fn restore(&mut self, snapshot: &Snapshot) -> bool;
    /// A digest of the state, equal on two replicas iff they applied the same.
    fn digest(&self) -> u64;
}

/// Default app: a hash chain over every applied command.
#[derive(Debug, Clone, Default)]
pub struct HashChainApp {
    chain: u64,
    applied_values: u64,
}

impl App for HashChainApp {
    fn apply(&mut self, slot: Slot, batch: &[Value]) {
        let mut h = Fnv(self.chain);
        h.u64(slot.0);
        for v in batch {
            h.bytes(v);
            self.applied_values += 1;
        }
        self.chain = h.0;
    }
    fn snapshot(&self) -> Vec<u8> {
        let mut out = self.chain.to_le_bytes().to_vec();
        out.extend_from_slice(&self.applied_values.to_le_bytes());
        out
    }
    fn restore(&mut self, snapshot: &Snapshot) -> bool {
        let d = &snapshot.data;
        if d.len() != 16 {
            return false;
        }
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&d[..8]);
        b.copy_from_slice(&d[8..]);
        self.chain = u64::from_le_bytes(a);
        self.applied_values = u64::from_le_bytes(b);
        true
    }
    fn digest(&self) -> u64 {
        self.chain
    }
}
