//! Applying chosen entries: the `Application` the consensus loop drives.

use std::sync::Arc;

use tracing::{error, warn};

use super::state::{PendingCommand, Shared};
use crate::locks::StateMachine;
use crate::metrics::NodeMetrics;
use crate::node::clock::NodeClock;
use crate::node::driver::Application;
use crate::paxos::{ChosenEntry, LeadershipEvent, Nanos, Rejected, Snapshot, Value};
use paxlock_core::proposal::{Proposal, ProposalError};

/// Applies log entries to the lock state machine and wakes whoever waits.
#[derive(Debug)]
pub struct LockApplication {
    shared: Arc<Shared>,
    clock: NodeClock,
    metrics: Arc<NodeMetrics>,
}

impl LockApplication {
    /// Drives `shared`'s machine; `clock` must be the consensus loop's.
    /// Records how long this node's own commands took to commit in
    /// `metrics`.
    pub fn new(shared: Arc<Shared>, clock: NodeClock, metrics: Arc<NodeMetrics>) -> Self {
        LockApplication {
            shared,
            clock,
            metrics,
        }
    }

    /// This node's request waiting for the command `(origin, id)`, if it
    /// is one: what to do for it as it is applied, and where its answer goes.
    fn take_own(&self, origin: u64, id: u64) -> Option<PendingCommand> {
        if origin != self.shared.node_id {
            return None;
        }
        let (_, pending) = self.shared.pending.remove(&id)?;
        self.metrics.commits.observe(pending.proposed_at.elapsed());
        Some(pending)
    }
}

impl Application for LockApplication {
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        // Keeping the old state instead would apply later entries on top of
        // it and silently diverge from every other replica.
        let settled = {
            let mut machine = self.shared.machine();
            *machine = StateMachine::restore_as_replica(&snapshot.data, machine.config())
                .map_err(|e| e.to_string())?;
            self.shared.lock_snapshot_installed(machine.revision());
            self.shared.role().restored(&machine, self.clock.now());
            self.shared.with_waiters(|book| book.restored(&machine))
        };
        // The locks are released: answering never runs under them.
        self.shared.settle(settled);
        Ok(())
    }

    fn apply(&mut self, entry: &ChosenEntry) {
        for value in &entry.batch {
            let proposal = match Proposal::decode(value) {
                Ok(p) => p,
                // Consensus' own entry: the replica keeps the membership.
                Err(ProposalError::Membership) => continue,
                Err(e) => {
                    // Every replica skips the same bytes the same way.
                    warn!(slot = entry.slot.0, "skipping undecodable log entry: {e}");
                    continue;
                }
            };
            let own = self.take_own(proposal.origin, proposal.id);
            let (output, own, reply, lock_updates) = {
                let mut machine = self.shared.machine();
                let output = machine.apply(entry.slot.0, proposal.command);
                // Recorded while the machine is held, so a watch that reads
                // the state finds every change before it in the history.
                let live = self.shared.lock_watches_open();
                let lock_updates =
                    self.shared
                        .lock_history()
                        .record(output.revision, &output.events, live);
                self.shared
                    .role()
                    .applied(&machine, &output, self.clock.now());
                // What the state after it says of its own waiter, read
                // while the machine is held.
                let (then, reply) = own.map_or((None, None), |p| (p.then, Some(p.reply)));
                let own = then.map(|then| then.read(&machine, &output));
                (output, own, reply, lock_updates)
            };
            self.shared.publish_lock_updates(lock_updates);
            // The command's events first, then its own waiter: only what
            // happens from now on may wake it (the core decides). The
            // apply loop is the only one applying, so nothing comes between.
            if let Some(settled) = self.shared.waiters_applied(&output, own) {
                self.shared.settle(settled);
            }
            if let Some(reply) = reply {
                let _ = reply.send(Ok(output));
            }
        }
    }

    fn on_leadership(&mut self, event: &LeadershipEvent, now: Nanos) -> Vec<Value> {
        match event {
            LeadershipEvent::LostLeadership => self.shared.role().lost_leadership(),
            LeadershipEvent::BecameLeader { ballot } => {
                // The takeover is the first command of the leadership:
                // keepalives wait for it, so it must not wait for anything.
                let takeover = self.shared.role().became_leader(*ballot, now);
                let id = self.shared.next_proposal_id();
                if let Ok(bytes) = Proposal::encode(self.shared.node_id, id, &takeover) {
                    return vec![Value::from(bytes)];
                }
            }
            LeadershipEvent::LeaseUntil { .. } => {}
        }
        Vec::new()
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        match self.shared.machine().snapshot() {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                error!("cannot snapshot the state machine: {e}");
                None
            }
        }
    }

    fn on_rejected(&mut self, rejected: Rejected) {
        for value in &rejected.values {
            if let Some((origin, id)) = Proposal::header(value) {
                if origin == self.shared.node_id {
                    if let Some((_, pending)) = self.shared.pending.remove(&id) {
                        let _ = pending.reply.send(Err(rejected.reason));
                    }
                }
            }
        }
    }
}
