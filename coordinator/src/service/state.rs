//! State shared between the consensus loop (which applies entries) and the
//! connection tasks (which wait for results): who waits for what.
//!
//! Everything here is per node and in memory; the replicated truth is the
//! `StateMachine`, which every node applies identically.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use tokio::sync::{broadcast, oneshot};

use crate::leader_role::LeaderRole;
use crate::locks::{Config, ElectionEvent, Identity, Output, StateMachine};
use crate::transport::log_limit::LogLimiter;
use paxlock_core::access::{self, Admins, Denied, Permission};
use paxlock_core::lock_watch::{LockHistory, LockUpdate};
use paxlock_core::waiters::{self, Own, WaitFor, WaiterBook, WaiterId, WaiterKey, Woken};

/// Bound on buffered election events per watcher; a watcher that falls
/// further behind is told history is gone and resumes from the machine.
pub const WATCH_BUFFER: usize = 256;

/// Bound on buffered updates per watched lock: a watcher that falls
/// further behind catches up from the node's lock history. Small, because
/// one update may carry two 64 KiB values.
pub const LOCK_WATCH_BUFFER: usize = 16;

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
    /// Tasks waiting for a queued acquire's grant or a campaign's win;
    /// what wakes or drops them is decided by the core's [`WaiterBook`].
    /// Taken after the machine's lock where both are held, never before.
    waiters: Mutex<WaiterBook<oneshot::Sender<Woken>>>,
    /// How many waiters the book holds, as of its last change: most
    /// applied commands and finished requests concern no waiter, and skip
    /// the book's lock when it is empty. Only the apply loop adds waiters,
    /// so it never reads a count below what it registered.
    waiting: AtomicUsize,
    /// Election → live watchers.
    pub watchers: DashMap<String, broadcast::Sender<ElectionEvent>>,
    /// Lock → live watchers.
    pub lock_watchers: DashMap<String, broadcast::Sender<Arc<LockUpdate>>>,
    /// Lock watches open on this node: while none is, applied changes
    /// are only recorded, never copied for broadcast.
    lock_watches: AtomicUsize,
    /// The recent changes to every lock, for lock watches that resume.
    /// Written only while the machine's lock is held (so it always covers
    /// what the machine shows); taken after it, never before.
    lock_history: Mutex<LockHistory>,
    /// What this node decides as leader (session deadlines, keepalives,
    /// expiries, command time): the I/O-free [`LeaderRole`]. Taken after
    /// the machine's lock where both are held, never before it.
    role: Mutex<LeaderRole>,
    /// The budget of [`MAX_PROPOSING_BYTES`]: a handler holds its command's
    /// bytes of it from proposal until the command is applied or refused.
    pub proposing_bytes: std::sync::Arc<tokio::sync::Semaphore>,
    /// The node config's administrators (see `paxlock_core::access`).
    pub admins: Admins,
    /// Requests the access rules refused, logged a few a second.
    pub denials_log: LogLimiter,
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

/// What the apply loop does for a command of this node the moment it is
/// applied (see [`paxlock_core::waiters`]): register the request's waiter
/// (a channel its task awaits), or drop the waiters a cancel withdrew.
pub type AfterApply = waiters::AfterApply<oneshot::Sender<Woken>>;

/// Withdraws a request's waiter when dropped, so a waiter never outlives
/// its request, whichever way the request ends.
#[derive(Debug)]
pub struct WaiterGuard<'a> {
    shared: &'a Shared,
    wait: WaitFor,
    key: WaiterKey,
    id: WaiterId,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        // Registered before this request was answered, or not at all.
        if self.shared.waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        let withdrawn = self
            .shared
            .with_waiters(|book| book.withdraw(self.wait, &self.key, self.id));
        // Dropped outside the lock.
        drop(withdrawn);
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
            waiters: Mutex::new(WaiterBook::default()),
            waiting: AtomicUsize::new(0),
            watchers: DashMap::new(),
            lock_watchers: DashMap::new(),
            lock_watches: AtomicUsize::new(0),
            lock_history: Mutex::new(LockHistory::default()),
            role: Mutex::new(LeaderRole::default()),
            proposing_bytes: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_PROPOSING_BYTES)),
            admins: Admins::default(),
            denials_log: LogLimiter::default(),
        }
    }

    /// Whether `caller` may do `permission` to `name` under the rules this
    /// node has applied (see `paxlock_core::access`).
    pub fn check_access(
        &self,
        caller: &Identity,
        permission: Permission,
        name: &str,
    ) -> Result<(), Denied> {
        let machine = self.machine();
        access::check(
            machine.access_rules(),
            &self.admins,
            caller,
            permission,
            name,
        )
    }

    /// The same, administered by `admins`.
    pub fn with_admins(mut self, admins: Admins) -> Self {
        self.admins = admins;
        self
    }

    /// The machine, for a short read or for applying. A poisoned lock
    /// means an apply panicked; the state is still the last consistent one
    /// because apply validates before it mutates.
    pub fn machine(&self) -> MutexGuard<'_, StateMachine> {
        self.machine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the node's waiters, for one short decision. Take the
    /// machine first where both are needed.
    pub fn with_waiters<R>(
        &self,
        f: impl FnOnce(&mut WaiterBook<oneshot::Sender<Woken>>) -> R,
    ) -> R {
        let mut book = self
            .waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = f(&mut book);
        self.waiting.store(book.len(), Ordering::Release);
        result
    }

    /// What an applied command does to the waiters (the core decides; see
    /// [`WaiterBook::applied`]), or `None` if it concerns none of them.
    pub fn waiters_applied(
        &self,
        output: &Output,
        own: Option<Own<oneshot::Sender<Woken>>>,
    ) -> Option<waiters::Settled<oneshot::Sender<Woken>>> {
        let waiting = self.waiting.load(Ordering::Acquire);
        if !WaiterBook::concerns(output, own.as_ref(), waiting) {
            return None;
        }
        Some(self.with_waiters(|book| book.applied(output, own)))
    }

    /// A guard that withdraws the waiter `id` of `key` when dropped: the
    /// request that will register it holds it for as long as it waits.
    pub fn waiter_guard(&self, wait: WaitFor, key: WaiterKey, id: WaiterId) -> WaiterGuard<'_> {
        WaiterGuard {
            shared: self,
            wait,
            key,
            id,
        }
    }

    /// Carries out what the core decided for the waiters: answers, drops
    /// (a closed channel tells the task) and watcher events. Call without
    /// the machine's or the waiters' lock held.
    pub fn settle(&self, settled: waiters::Settled<oneshot::Sender<Woken>>) {
        for (tx, woken) in settled.woken {
            let _ = tx.send(woken);
        }
        drop(settled.dropped);
        for event in settled.published {
            if let Some(tx) = self.watchers.get(&event.name) {
                let _ = tx.send(event);
            }
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

    /// A receiver of `election`'s future events.
    pub fn subscribe(&self, election: &str) -> broadcast::Receiver<ElectionEvent> {
        subscribe(&self.watchers, election, WATCH_BUFFER)
    }

    /// A receiver of lock `name`'s future updates.
    pub fn subscribe_lock(&self, name: &str) -> broadcast::Receiver<Arc<LockUpdate>> {
        subscribe(&self.lock_watchers, name, LOCK_WATCH_BUFFER)
    }

    /// The node's lock history, for a short read or for recording. Take
    /// the machine first where both are needed.
    pub fn lock_history(&self) -> MutexGuard<'_, LockHistory> {
        self.lock_history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether any lock watch is open on this node.
    pub fn lock_watches_open(&self) -> bool {
        self.lock_watches.load(Ordering::Acquire) > 0
    }

    /// Counts a lock watch as open until the guard is dropped. Take it
    /// before subscribing and reading the history: every change applied
    /// from then on is copied for broadcast, and every one before is in
    /// the history.
    pub fn lock_watch_open(&self) -> LockWatchOpen<'_> {
        self.lock_watches.fetch_add(1, Ordering::AcqRel);
        // An apply that saw no watch open holds the machine until it has
        // recorded its changes; once past it, the next sees this one.
        drop(self.machine());
        LockWatchOpen { shared: self }
    }

    /// The machine was replaced by a snapshot at `revision`, whose changes
    /// this node never saw: its lock history starts again there, and every
    /// open lock watch's live channel closes, so the watch ends and its
    /// client resumes (and is told the changes it may have missed are
    /// gone). A watch that went on would skip them without knowing. Call
    /// with the machine's lock held.
    pub fn lock_snapshot_installed(&self, revision: u64) {
        self.lock_history().restart_at(revision);
        self.lock_watchers.clear();
    }

    /// Sends `updates` to the live watchers of their locks. Call without
    /// the machine's lock held.
    pub fn publish_lock_updates(&self, updates: Vec<Arc<LockUpdate>>) {
        for update in updates {
            if let Some(tx) = self.lock_watchers.get(&update.name) {
                let _ = tx.send(update);
            }
        }
    }
}

/// An open lock watch, counted by [`Shared::lock_watch_open`].
#[derive(Debug)]
pub struct LockWatchOpen<'a> {
    shared: &'a Shared,
}

impl Drop for LockWatchOpen<'_> {
    fn drop(&mut self) {
        self.shared.lock_watches.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A receiver of `name`'s future events in `watchers`, made on first use
/// with room for `buffer` events (the last watch of a name removes it).
fn subscribe<E: Clone>(
    watchers: &DashMap<String, broadcast::Sender<E>>,
    name: &str,
    buffer: usize,
) -> broadcast::Receiver<E> {
    watchers
        .entry(name.to_string())
        .or_insert_with(|| broadcast::channel(buffer).0)
        .subscribe()
}

#[cfg(test)]
mod tests {
    use super::*;

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
