//! State shared between the consensus loop (which applies entries) and the
//! connection tasks (which wait for results): who waits for what.
//!
//! Everything here is per node and in memory; the replicated truth is the
//! `StateMachine`, which every node applies identically.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use dashmap::DashMap;
use tokio::sync::{broadcast, oneshot};

use crate::locks::{Config, ElectionEvent, Output, StateMachine};
use crate::paxos::Nanos;

/// Bound on buffered election events per watcher; a watcher that falls
/// further behind is told history is gone and resumes from the machine.
pub const WATCH_BUFFER: usize = 256;

/// Shared node-side service state.
#[derive(Debug)]
pub struct Shared {
    /// This node's id (the `origin` of its proposals).
    pub node_id: u64,
    /// The machine's limits, fixed for the node's life (peers must share
    /// them), kept outside the lock so request validation never takes it.
    pub limits: crate::locks::Limits,
    /// The replicated state machine, as applied on this node.
    machine: Mutex<StateMachine>,
    /// Proposal id → the task waiting for that command's result, or for
    /// the reason the consensus core refused to propose it.
    pub pending: DashMap<u64, PendingCommand>,
    next_proposal: AtomicU64,
    /// (session, lock) → the task waiting for a queued acquire's grant
    /// (see [`Waiter`] for when it is registered).
    pub lock_waiters: DashMap<(u64, String), oneshot::Sender<u64>>,
    /// (session, election) → the task waiting for a campaign to win
    /// (see [`Waiter`]).
    pub campaign_waiters: DashMap<(u64, String), oneshot::Sender<u64>>,
    /// Election → live watchers.
    pub watchers: DashMap<String, broadcast::Sender<ElectionEvent>>,
    /// Session → expiry deadline on this node's clock. Only meaningful
    /// while this node leads; restarted at takeover.
    pub deadlines: DashMap<u64, Nanos>,
    /// The takeover epoch of this node's current leadership (0: not
    /// leading). Expiries carry it; keepalives are answered only once the
    /// machine has applied this node's `Takeover` with it.
    pub my_epoch: AtomicU64,
}

/// A proposed command's waiting task.
#[derive(Debug)]
pub struct PendingCommand {
    /// Gets the command's result, or why the core refused to propose it.
    pub reply: oneshot::Sender<Result<Output, crate::paxos::RejectReason>>,
    /// A waiter to register the moment the command is applied.
    pub then: Option<Waiter>,
}

/// A task waiting for a state change that a command of its own may lead
/// to: a queued acquire's grant, a candidacy's win.
///
/// Registered by the apply loop right after that command is applied here,
/// never earlier: a node that is catching up applies *older* grants and
/// wins of the same session and name first, and one of those must not
/// wake a request that came after it (it would be told an old token or
/// term, which another holder or leader has since been given).
#[derive(Debug)]
pub enum Waiter {
    /// (session, lock) is waiting for a grant: sent its token.
    Grant((u64, String), oneshot::Sender<u64>),
    /// (session, election) is campaigning: sent the term it wins.
    Win((u64, String), oneshot::Sender<u64>),
}

impl Shared {
    /// New shared state around a fresh machine.
    pub fn new(node_id: u64, config: Config) -> Self {
        Shared {
            node_id,
            limits: config.limits.clone(),
            machine: Mutex::new(StateMachine::new(config)),
            pending: DashMap::new(),
            next_proposal: AtomicU64::new(1),
            lock_waiters: DashMap::new(),
            campaign_waiters: DashMap::new(),
            watchers: DashMap::new(),
            deadlines: DashMap::new(),
            my_epoch: AtomicU64::new(0),
        }
    }

    /// The machine, for a short read or for applying. A poisoned lock
    /// means an apply panicked; the state is still the last consistent one
    /// because apply validates before it mutates.
    pub fn machine(&self) -> MutexGuard<'_, StateMachine> {
        self.machine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `waiter` (replacing an earlier one for the same key).
    pub fn register(&self, waiter: Waiter) {
        match waiter {
            Waiter::Grant(key, tx) => {
                self.lock_waiters.insert(key, tx);
            }
            Waiter::Win(key, tx) => {
                self.campaign_waiters.insert(key, tx);
            }
        }
    }

    /// A fresh proposal id.
    pub fn next_proposal_id(&self) -> u64 {
        self.next_proposal.fetch_add(1, Ordering::Relaxed)
    }

    /// This node's takeover epoch, 0 if it does not lead.
    pub fn my_epoch(&self) -> u64 {
        self.my_epoch.load(Ordering::Acquire)
    }

    /// Whether this node leads and its takeover has been applied, so its
    /// session deadlines are authoritative.
    pub fn takeover_applied(&self) -> bool {
        let epoch = self.my_epoch();
        epoch != 0 && self.machine().leader_epoch() == epoch
    }

    /// A receiver of `election`'s future events.
    pub fn subscribe(&self, election: &str) -> broadcast::Receiver<ElectionEvent> {
        self.watchers
            .entry(election.to_string())
            .or_insert_with(|| broadcast::channel(WATCH_BUFFER).0)
            .subscribe()
    }
}
