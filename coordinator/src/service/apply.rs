//! Applying chosen entries: the `Application` the consensus loop drives.

use std::sync::Arc;

use tracing::{error, warn};

use super::state::{AfterApply, Shared, WaiterKey, Waiters};
use crate::locks::{ElectionChange, Event, SessionId, StateMachine};
use crate::metrics::NodeMetrics;
use crate::node::clock::NodeClock;
use crate::node::driver::Application;
use crate::paxos::{ChosenEntry, LeadershipEvent, Nanos, Rejected, Snapshot, Value};
use paxlock_core::proposal::Proposal;

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

    fn dispatch(&self, origin: u64, id: u64, output: crate::locks::Output) {
        for event in &output.events {
            self.on_event(event);
        }
        if origin == self.shared.node_id {
            if let Some((_, pending)) = self.shared.pending.remove(&id) {
                self.metrics.commits.observe(pending.proposed_at.elapsed());
                // After this command's own events, before any later entry:
                // only what happens from now on may wake it.
                match pending.then {
                    // A refused command waits for nothing (and one refused
                    // for its caller must not wait on another's session).
                    Some(AfterApply::Register(waiter)) if output.reply.is_ok() => {
                        self.shared.register(waiter)
                    }
                    Some(AfterApply::DropLockWaiters(key))
                        if !output.duplicate && output.reply.is_ok() =>
                    {
                        self.shared.lock_waiters.drop_key(&key)
                    }
                    _ => {}
                }
                let _ = pending.reply.send(Ok(output));
            }
        }
    }

    /// Answers the waits of this node's requests that the restored state
    /// settled: grants, wins and session ends inside a snapshot were never
    /// applied here, so no event of theirs woke anyone. Only newer state
    /// than any waiter's own command is restored (a waiter registers as
    /// its command is applied), so a grant found here is not an older one.
    fn settle_waiters_after_restore(&self) {
        let shared = &self.shared;
        let (locks, wins) = {
            let machine = shared.machine();
            let locks = decide(&shared.lock_waiters, |session, name| {
                match machine.holder(name) {
                    Some(holder) if holder.session == session => {
                        Some(Settled::Wake(holder.token.0))
                    }
                    // Ended, or no longer queued (cancelled or abandoned).
                    _ if !machine.waiters(name).contains(&session) => Some(Settled::Drop),
                    _ => None,
                }
            });
            let wins = decide(&shared.campaign_waiters, |session, name| {
                match machine.leader(name) {
                    Some(leader) if leader.session == session => Some(Settled::Wake(leader.term)),
                    _ if !machine.has_session(session) => Some(Settled::Drop),
                    _ => None,
                }
            });
            (locks, wins)
        };
        // The machine's lock is released: waking never runs under it.
        settle(&shared.lock_waiters, locks);
        settle(&shared.campaign_waiters, wins);
    }

    fn on_event(&self, event: &Event) {
        match event {
            Event::LockGranted {
                name,
                session,
                token,
            } => {
                self.shared
                    .lock_waiters
                    .wake(&(session.0, name.clone()), token.0);
            }
            Event::LockReleased { .. } => {}
            Event::SessionEnded { session, .. } => {
                // Waiters of a dead session learn it when their sender drops.
                self.shared.lock_waiters.drop_session(session.0);
                self.shared.campaign_waiters.drop_session(session.0);
            }
            Event::Election(e) => {
                if let ElectionChange::NewLeader { session, .. } = &e.change {
                    self.shared
                        .campaign_waiters
                        .wake(&(session.0, e.name.clone()), e.term);
                }
                if let Some(tx) = self.shared.watchers.get(&e.name) {
                    let _ = tx.send(e.clone());
                }
            }
        }
    }
}

/// What a restored state says about one key's waiters.
enum Settled {
    /// Answer them with this token or term.
    Wake(u64),
    /// Drop them: their tasks learn it as a closed channel.
    Drop,
}

/// `settled(session, name)` for every key of `waiters`, where it decides.
fn decide(
    waiters: &Waiters,
    mut settled: impl FnMut(SessionId, &str) -> Option<Settled>,
) -> Vec<(WaiterKey, Settled)> {
    waiters
        .keys()
        .into_iter()
        .filter_map(|key| settled(SessionId(key.0), &key.1).map(|s| (key, s)))
        .collect()
}

fn settle(waiters: &Waiters, decided: Vec<(WaiterKey, Settled)>) {
    for (key, settled) in decided {
        match settled {
            Settled::Wake(value) => waiters.wake(&key, value),
            Settled::Drop => waiters.drop_key(&key),
        }
    }
}

impl Application for LockApplication {
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        // Keeping the old state instead would apply later entries on top of
        // it and silently diverge from every other replica.
        let restored = StateMachine::restore(&snapshot.data).map_err(|e| e.to_string())?;
        {
            let mut machine = self.shared.machine();
            *machine = restored;
            self.shared.role().restored(&machine, self.clock.now());
        }
        self.settle_waiters_after_restore();
        Ok(())
    }

    fn apply(&mut self, entry: &ChosenEntry) {
        for value in &entry.batch {
            let proposal = match Proposal::decode(value) {
                Ok(p) => p,
                Err(e) => {
                    // Every replica skips the same bytes the same way.
                    warn!(slot = entry.slot.0, "skipping undecodable log entry: {e}");
                    continue;
                }
            };
            let output = {
                let mut machine = self.shared.machine();
                let output = machine.apply(entry.slot.0, proposal.command);
                self.shared
                    .role()
                    .applied(&machine, &output, self.clock.now());
                output
            };
            self.dispatch(proposal.origin, proposal.id, output);
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
