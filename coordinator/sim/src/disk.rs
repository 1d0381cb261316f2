//! The simulated disk: persist requests become durable in order after a
//! random delay; a crash loses every request not yet durable.
//!
//! What is durable is kept in the same store and encoding the real node
//! uses (`node::durable_log::StoredAcceptor` over `storage::MemStore`), and
//! a restarted node recovers its state *from that store*, so every crash in
//! the simulator also exercises the record codec and storage recovery. The
//! recovered state must equal what was durable, or the run fails.

use std::collections::VecDeque;

use paxlock_core::paxos::{DurableState, PersistRequest};
use paxlock_storage::StoredAcceptor;
use paxlock_storage::{Identity, MemDisk, MemStore, MemStoreOptions};

/// Every simulated disk belongs to its own node; one identity suffices.
const IDENTITY: Identity = Identity {
    cluster_id: 1,
    node_id: 1,
};

/// One node's disk.
#[derive(Debug, Default)]
pub struct Disk {
    /// What survives a crash (a mirror of the store, for the checker).
    pub durable: DurableState,
    /// Submitted, not yet durable, with the true time each completes.
    pub queue: VecDeque<(u64, PersistRequest)>,
    media: MemDisk,
    store: Option<StoredAcceptor<MemStore>>,
}

impl Disk {
    /// Queues `req`; returns its completion time (never before the
    /// previous request's, since fsync completes in order).
    pub fn submit(&mut self, req: PersistRequest, earliest_true_ns: u64) -> u64 {
        let at = self
            .queue
            .back()
            .map_or(earliest_true_ns, |(t, _)| (*t).max(earliest_true_ns));
        self.queue.push_back((at, req));
        at
    }

    /// Makes every request due by `now_true_ns` durable; returns them.
    pub fn complete(&mut self, now_true_ns: u64) -> Result<Vec<PersistRequest>, String> {
        let mut done = Vec::new();
        while self.queue.front().is_some_and(|(t, _)| *t <= now_true_ns) {
            if let Some((_, req)) = self.queue.pop_front() {
                self.store()?.persist_batch(std::slice::from_ref(&req))?;
                self.durable.apply(&req);
                done.push(req);
            }
        }
        Ok(done)
    }

    /// A crash: unsynced writes are gone, and so is the store handle.
    pub fn crash(&mut self) {
        self.queue.clear();
        self.store = None;
        self.media.crash();
    }

    /// What a restarted node reads back from the store. Fails the run if it
    /// differs from what was durable before the crash.
    pub fn recover(&mut self) -> Result<DurableState, String> {
        let (store, mut recovered) =
            StoredAcceptor::open_in(&self.media, IDENTITY, MemStoreOptions::default())
                .map_err(|e| format!("simulated disk does not recover: {e}"))?;
        self.store = Some(store);
        // Sequence numbers are per process; the simulator keeps counting.
        recovered.persisted_seq = self.durable.persisted_seq;
        if recovered != self.durable {
            return Err("state recovered from the store differs from what was durable".into());
        }
        Ok(recovered)
    }

    fn store(&mut self) -> Result<&mut StoredAcceptor<MemStore>, String> {
        if self.store.is_none() {
            self.recover()?;
        }
        self.store
            .as_mut()
            .ok_or_else(|| "simulated disk has no store".to_string())
    }
}
