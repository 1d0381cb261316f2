//! The simulated disk: persist requests become durable in order after a
//! random delay; a crash loses every request not yet durable.

use std::collections::VecDeque;

use crate::paxos::{DurableState, PersistRequest};

/// One node's disk.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    /// What survives a crash.
    pub durable: DurableState,
    /// Submitted, not yet durable, with the true time each completes.
    pub queue: VecDeque<(u64, PersistRequest)>,
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
    pub fn complete(&mut self, now_true_ns: u64) -> Vec<PersistRequest> {
        let mut done = Vec::new();
        while self.queue.front().is_some_and(|(t, _)| *t <= now_true_ns) {
            if let Some((_, req)) = self.queue.pop_front() {
                self.durable.apply(&req);
                done.push(req);
            }
        }
        done
    }

    /// A crash: unsynced writes are gone.
    pub fn crash(&mut self) {
        self.queue.clear();
    }
}
