//! State shared between the consensus loop (which applies entries) and the
//! connection tasks (which wait for results): who waits for what.
//!
//! Everything here is per node and in memory; the replicated truth is the
//! `StateMachine`, which every node applies identically.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use dashmap::DashMap;
use tokio::sync::{broadcast, oneshot};

use crate::leader_role::LeaderRole;
use crate::locks::{Config, ElectionEvent, Output, StateMachine};

/// Bound on buffered election events per watcher; a watcher that falls
/// further behind is told history is gone and resumes from the machine.
pub const WATCH_BUFFER: usize = 256;

/// Most bytes of commands this node's request handlers may have proposed
/// and not yet seen applied or refused: the consensus loop's inbox, the
/// core's proposal queue and the slots in flight hold at most this much of
/// this node's commands. Past it a request is refused (`UNAVAILABLE`,
/// retryable) rather than queued.
pub const MAX_PROPOSING_BYTES: usize = 16 * 1024 * 1024;

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
    /// Tasks waiting for a queued acquire's grant (see [`Waiter`] for
    /// when they are registered).
    pub lock_waiters: Waiters,
    /// Tasks waiting for a campaign to win (see [`Waiter`]).
    pub campaign_waiters: Waiters,
    /// Election → live watchers.
    pub watchers: DashMap<String, broadcast::Sender<ElectionEvent>>,
    /// What this node decides as leader (session deadlines, keepalives,
    /// expiries, command time): the I/O-free [`LeaderRole`]. Taken after
    /// the machine's lock where both are held, never before it.
    role: Mutex<LeaderRole>,
    /// The budget of [`MAX_PROPOSING_BYTES`]: a handler holds its command's
    /// bytes of it from proposal until the command is applied or refused.
    pub proposing_bytes: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A proposed command's waiting task.
#[derive(Debug)]
pub struct PendingCommand {
    /// Gets the command's result, or why the core refused to propose it.
    pub reply: oneshot::Sender<Result<Output, crate::paxos::RejectReason>>,
    /// What to do the moment the command is applied.
    pub then: Option<AfterApply>,
    /// When the command was handed to the consensus loop.
    pub proposed_at: std::time::Instant,
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
    Grant(WaiterKey, WaiterId, oneshot::Sender<u64>),
    /// (session, election) is campaigning: sent the term it wins.
    Win(WaiterKey, WaiterId, oneshot::Sender<u64>),
}

/// What the apply loop does for a command of this node the moment the
/// command is applied: before any later entry, so only what happens from
/// then on can touch it.
#[derive(Debug)]
pub enum AfterApply {
    /// Register a waiter (see [`Waiter`]).
    Register(Waiter),
    /// Drop the lock waiters of (session, lock) the command cancelled: only
    /// those registered before it, not a later acquire's (which a drop on
    /// the proposer's task, after the commit, could catch). Skipped for a
    /// duplicate or a refused command.
    DropLockWaiters(WaiterKey),
}

/// (session, lock or election name).
pub type WaiterKey = (u64, String);

/// Tells apart the tasks waiting under one key: one per request.
pub type WaiterId = u64;

/// Tasks waiting for (session, name) to be granted a lock or to win an
/// election. Each request waits under its own id, so two requests of one
/// session for the same name (two tasks sharing a client, or a retry that
/// reached the node while the first attempt still waits) are both
/// answered, and one that gives up withdraws only itself.
#[derive(Debug, Default)]
pub struct Waiters(DashMap<WaiterKey, Vec<(WaiterId, oneshot::Sender<u64>)>>);

impl Waiters {
    /// Adds a waiter for `key`.
    pub fn add(&self, key: WaiterKey, id: WaiterId, tx: oneshot::Sender<u64>) {
        self.0.entry(key).or_default().push((id, tx));
    }

    /// Sends `value` (a token, a term) to every task waiting for `key`.
    pub fn wake(&self, key: &WaiterKey, value: u64) {
        if let Some((_, waiting)) = self.0.remove(key) {
            for (_, tx) in waiting {
                let _ = tx.send(value);
            }
        }
    }

    /// Withdraws the waiter `id` of `key`, if it is still there.
    pub fn withdraw(&self, key: &WaiterKey, id: WaiterId) {
        let now_empty = match self.0.get_mut(key) {
            Some(mut waiting) => {
                waiting.retain(|(w, _)| *w != id);
                waiting.is_empty()
            }
            None => false,
        };
        // The entry guard is gone: removing now cannot deadlock the shard.
        if now_empty {
            self.0.remove_if(key, |_, waiting| waiting.is_empty());
        }
    }

    /// A guard that withdraws the waiter `id` of `key` when dropped, so a
    /// request's waiter never outlives the request, whichever way it ends.
    pub fn guard(&self, key: WaiterKey, id: WaiterId) -> WaiterGuard<'_> {
        WaiterGuard {
            waiters: self,
            key,
            id,
        }
    }

    /// The keys someone waits under.
    pub fn keys(&self) -> Vec<WaiterKey> {
        self.0.iter().map(|entry| entry.key().clone()).collect()
    }

    /// Drops every waiter of `key`: their tasks learn it as a closed channel.
    pub fn drop_key(&self, key: &WaiterKey) {
        self.0.remove(key);
    }

    /// Drops every waiter of `session` (it ended).
    pub fn drop_session(&self, session: u64) {
        self.0.retain(|(s, _), _| *s != session);
    }
}

/// See [`Waiters::guard`].
#[derive(Debug)]
pub struct WaiterGuard<'a> {
    waiters: &'a Waiters,
    key: WaiterKey,
    id: WaiterId,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.waiters.withdraw(&self.key, self.id);
    }
}

/// Where this process starts numbering its proposals: random, so that no
/// two runs of a node share ids. A restarted node must not answer a new
/// request with the result of an old run's proposal that a new leader
/// re-proposed and that is chosen only now: results are matched to
/// requests by (origin node, id). The top bit stays clear, so counting up
/// never wraps.
fn first_proposal_id() -> u64 {
    (paxlock_storage::entropy::random_u64() >> 1).max(1)
}

impl Shared {
    /// New shared state around a fresh machine.
    pub fn new(node_id: u64, config: Config) -> Self {
        Shared {
            node_id,
            limits: config.limits.clone(),
            machine: Mutex::new(StateMachine::new(config)),
            pending: DashMap::new(),
            next_proposal: AtomicU64::new(first_proposal_id()),
            lock_waiters: Waiters::default(),
            campaign_waiters: Waiters::default(),
            watchers: DashMap::new(),
            role: Mutex::new(LeaderRole::default()),
            proposing_bytes: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_PROPOSING_BYTES)),
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

    /// Registers `waiter`.
    pub fn register(&self, waiter: Waiter) {
        match waiter {
            Waiter::Grant(key, id, tx) => self.lock_waiters.add(key, id, tx),
            Waiter::Win(key, id, tx) => self.campaign_waiters.add(key, id, tx),
        }
    }

    /// A fresh proposal id.
    pub fn next_proposal_id(&self) -> u64 {
        self.next_proposal.fetch_add(1, Ordering::Relaxed)
    }

    /// The leader role, for a short decision. Take the machine first
    /// where both are needed.
    pub fn role(&self) -> MutexGuard<'_, LeaderRole> {
        self.role
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether this node leads and its takeover has been applied, so its
    /// session deadlines are authoritative.
    pub fn takeover_applied(&self) -> bool {
        let machine = self.machine();
        self.role().serving(&machine)
    }

    /// A receiver of `election`'s future events.
    pub fn subscribe(&self, election: &str) -> broadcast::Receiver<ElectionEvent> {
        self.watchers
            .entry(election.to_string())
            .or_insert_with(|| broadcast::channel(WATCH_BUFFER).0)
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot::error::TryRecvError;

    #[test]
    fn a_withdrawn_waiter_leaves_the_others_of_its_key_waiting() {
        let waiters = Waiters::default();
        let key = (7, "l".to_string());
        let (gave_up, mut gave_up_rx) = oneshot::channel();
        let (retry, mut retry_rx) = oneshot::channel();
        waiters.add(key.clone(), 1, gave_up);
        waiters.add(key.clone(), 2, retry);
        waiters.withdraw(&key, 1);
        assert!(
            matches!(gave_up_rx.try_recv(), Err(TryRecvError::Closed)),
            "withdrawn: its sender is gone"
        );
        waiters.wake(&key, 42);
        assert_eq!(retry_rx.try_recv().ok(), Some(42));
    }

    #[test]
    fn an_ended_session_drops_only_its_own_waiters() {
        let waiters = Waiters::default();
        let (mine, mut mine_rx) = oneshot::channel();
        let (other, mut other_rx) = oneshot::channel();
        waiters.add((7, "l".into()), 1, mine);
        waiters.add((8, "l".into()), 2, other);
        waiters.drop_session(7);
        assert!(matches!(mine_rx.try_recv(), Err(TryRecvError::Closed)));
        waiters.wake(&(8, "l".into()), 5);
        assert_eq!(other_rx.try_recv().ok(), Some(5));
    }

    /// Regression (found in review): ids restarted at 1 with every run, so
    /// a restarted node could hand a new request the result of an old run's
    /// proposal with the same id, re-proposed by a new leader.
    #[test]
    fn two_runs_of_a_node_number_their_proposals_apart() {
        let first_run = Shared::new(1, Config::default());
        let second_run = Shared::new(1, Config::default());
        let a = first_run.next_proposal_id();
        let b = second_run.next_proposal_id();
        // Random 63-bit starts: equal (or within a run's reach) only by a
        // 1-in-2^40 chance.
        assert!(a.abs_diff(b) > 1 << 23, "{a} {b}");
        assert!(a < u64::MAX / 2 + 1 && b < u64::MAX / 2 + 1);
    }
}
