//! What a node's consensus loop decides about one step's [`Effects`]: in
//! which order they are carried out, which messages wait for their persist
//! barrier, and when the log is compacted. The node's loop
//! (`node/driver.rs`) and the simulator's engine both carry out the
//! [`LoopAction`]s this returns, so the rules below are the rules that
//! ship and the rules the simulator checks:
//!
//! - **publish a loss of leadership first**: before anything of the step
//!   is sent (an abdication, say, which lets a successor take over), the
//!   node stops serving lease reads and keepalives
//!   ([`LoopAction::PublishLostLeadership`]);
//! - **fsync before acknowledging**: a message leaves only once the persist
//!   request it follows is durable ([`ConsensusLoop::persisted`] releases
//!   the ones held back), so no peer learns of a promise or an accept this
//!   node could forget in a crash;
//! - **apply in slot order, exactly once**: a snapshot replaces the state,
//!   then chosen entries follow from the slot after it, each once; a gap
//!   or a repeat stops the node ([`LoopError`]);
//! - **compact on a cadence**: every `snapshot_every_slots` applied slots
//!   the application's state becomes the new snapshot, so the log and the
//!   catch-up of a lagging node stay bounded.
//!
//! What stays with the shell: which inputs arrive together in one turn (it
//! proposes a turn's commands in one step, so they share slots), which
//! thread writes a persist request, and the sockets.

use crate::paxos::{
    ChosenEntry, Effects, LeadershipEvent, Nanos, Outgoing, PersistRequest, PersistSeq, Rejected,
    Slot, Snapshot,
};

/// One thing the shell does, in the order given.
#[derive(Debug, Clone)]
pub enum LoopAction {
    /// Tell every reader of the node's status (lease reads, keepalives)
    /// that it no longer leads, before anything after this is sent.
    PublishLostLeadership,
    /// Make this request durable; report it with
    /// [`ConsensusLoop::persisted`], then step `Input::Persisted`.
    Persist(PersistRequest),
    /// Send this message now: its persist barrier is durable.
    Send(Outgoing),
    /// Replace the application's state with this snapshot.
    Install(Snapshot),
    /// Apply this chosen entry to the application.
    Apply(ChosenEntry),
    /// The replica's leadership changed: tell the application (a new
    /// leader proposes its takeover first).
    Leadership(LeadershipEvent),
    /// The replica refused these proposals: tell whoever proposed them.
    Rejected(Rejected),
    /// Step `Input::Tick` at or after this node-clock time.
    WakeAt(Nanos),
}

/// Why the loop must stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoopError {
    /// The replica handed over an entry out of slot order.
    #[error("the replica chose slot {got} but the application expects slot {expected} next")]
    OutOfOrder {
        /// The entry's slot.
        got: u64,
        /// The slot the application applies next.
        expected: u64,
    },
}

/// Test-only switches that each break one rule of the loop, so the
/// simulator's canary tests can show that its checks catch it.
#[cfg(feature = "canary")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoopCanary {
    /// Every rule on.
    #[default]
    None,
    /// Messages leave at once, before the persist request they follow is
    /// durable.
    NoPersistBarrier,
}

/// The consensus loop's decisions for one node (see the module docs).
#[derive(Debug)]
pub struct ConsensusLoop {
    /// Every persist request up to this one is durable.
    persisted: PersistSeq,
    /// Messages waiting for their persist barrier.
    held: Vec<Outgoing>,
    /// The slot the application applies next.
    next_slot: Slot,
    snapshot_every_slots: u64,
    /// The applied slot count when the log was last compacted.
    last_snapshot_at: u64,
    #[cfg(feature = "canary")]
    canary: LoopCanary,
}

impl ConsensusLoop {
    /// A loop whose store is durable up to `persisted` and whose
    /// application starts before slot `next_slot` (after the recovered
    /// snapshot), compacting every `snapshot_every_slots` applied slots.
    pub fn new(persisted: PersistSeq, next_slot: Slot, snapshot_every_slots: u64) -> Self {
        ConsensusLoop {
            persisted,
            held: Vec::new(),
            next_slot,
            snapshot_every_slots: snapshot_every_slots.max(1),
            last_snapshot_at: next_slot.0,
            #[cfg(feature = "canary")]
            canary: LoopCanary::None,
        }
    }

    /// Switches one rule off (canary builds only).
    #[cfg(feature = "canary")]
    pub fn set_canary(&mut self, canary: LoopCanary) {
        self.canary = canary;
    }

    fn barrier_off(&self) -> bool {
        #[cfg(feature = "canary")]
        {
            self.canary == LoopCanary::NoPersistBarrier
        }
        #[cfg(not(feature = "canary"))]
        {
            false
        }
    }

    /// One step's effects as the actions the shell carries out, in order:
    /// publish a loss of leadership, persist, send what the barrier lets
    /// go (holding the rest), install, apply, tell the application of
    /// leadership and refusals, re-arm the timer.
    pub fn effects(&mut self, fx: Effects) -> Result<Vec<LoopAction>, LoopError> {
        let mut actions = Vec::with_capacity(fx.send.len() + fx.chosen.len() + 4);
        if fx
            .leadership
            .iter()
            .any(|e| matches!(e, LeadershipEvent::LostLeadership))
        {
            actions.push(LoopAction::PublishLostLeadership);
        }
        if let Some(request) = fx.persist {
            actions.push(LoopAction::Persist(request));
        }
        for out in fx.send {
            if out.after <= self.persisted || self.barrier_off() {
                actions.push(LoopAction::Send(out));
            } else {
                self.held.push(out);
            }
        }
        if let Some(snapshot) = fx.install_snapshot {
            self.next_slot = snapshot.up_to;
            actions.push(LoopAction::Install(snapshot));
        }
        for entry in fx.chosen {
            if entry.slot != self.next_slot {
                return Err(LoopError::OutOfOrder {
                    got: entry.slot.0,
                    expected: self.next_slot.0,
                });
            }
            self.next_slot = entry.slot.next();
            actions.push(LoopAction::Apply(entry));
        }
        actions.extend(fx.leadership.into_iter().map(LoopAction::Leadership));
        actions.extend(fx.rejected.into_iter().map(LoopAction::Rejected));
        actions.extend(fx.wake_at.map(LoopAction::WakeAt));
        Ok(actions)
    }

    /// Everything up to `seq` is durable: the held messages that may leave
    /// now, in the order they were held. Step `Input::Persisted` after.
    pub fn persisted(&mut self, seq: PersistSeq) -> Vec<Outgoing> {
        self.persisted = self.persisted.max(seq);
        let persisted = self.persisted;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|o| o.after <= persisted);
        self.held = waiting;
        ready
    }

    /// Every persist request up to this one is durable.
    pub fn durable(&self) -> PersistSeq {
        self.persisted
    }

    /// Slots applied (the slot the application applies next).
    pub fn applied(&self) -> u64 {
        self.next_slot.0
    }

    /// Whether the log should be compacted now, and up to which slot: once
    /// `snapshot_every_slots` slots were applied since the last time. The
    /// shell takes the application's snapshot and steps
    /// `Input::Compact { up_to, .. }`.
    pub fn snapshot_due(&mut self) -> Option<Slot> {
        let due = self.next_slot.0
            >= self
                .last_snapshot_at
                .saturating_add(self.snapshot_every_slots);
        due.then(|| {
            self.last_snapshot_at = self.next_slot.0;
            self.next_slot
        })
    }
}

#[cfg(test)]
mod tests;
