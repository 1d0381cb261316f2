//! What the workers observed: every lock operation with invocation and
//! completion times (for the linearizability checker), every write the
//! fenced resources saw, every campaign won and every leadership event
//! each watcher received.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Instant;

use paxlock::{LeaderEvent, LockEvent};

use paxlock_sim::linearizability::{Call, ClientId, Operation, Outcome};
use paxlock_sim::resource::FencedResource;

/// One write offered to a fenced resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    /// Worker that wrote.
    pub worker: usize,
    /// Its session.
    pub session: u64,
    /// The fencing token it carried.
    pub token: u64,
    /// The worker was frozen between checking its lease and writing, so
    /// the resource may rightly refuse it.
    pub paused_since_check: bool,
    /// Whether the resource took it.
    pub accepted: bool,
    /// A reader's write (readers holding together share a token).
    pub shared: bool,
}

/// A resource that refuses tokens below the highest seen (the rule
/// resources must follow) and records every write offered.
#[derive(Debug, Default)]
pub struct FencedLog {
    resource: FencedResource,
    /// Every write, in the order the resource saw them.
    pub writes: Vec<Write>,
}

/// A leadership won.
#[derive(Debug, Clone)]
pub struct CampaignWon {
    /// The winning session.
    pub session: u64,
    /// The term the cluster gave it.
    pub term: u64,
    /// The value it campaigned with.
    pub value: Vec<u8>,
}

/// Everything recorded in one run.
#[derive(Debug, Default)]
pub struct History {
    /// Per lock name, its operations.
    pub lock_ops: BTreeMap<String, Vec<Operation>>,
    /// Per resource name (lock or election), its writes.
    pub resources: BTreeMap<String, FencedLog>,
    /// Every campaign that returned a leadership.
    pub campaigns: Vec<CampaignWon>,
    /// Per watcher, the events it received in order.
    pub watched: BTreeMap<usize, Vec<LeaderEvent>>,
    /// Per lock, the events the runner's lock watch received in order.
    pub lock_watched: BTreeMap<String, Vec<LockEvent>>,
    /// Operations by kind and outcome, for the summary.
    pub outcomes: BTreeMap<String, u64>,
}

/// Where an operation's record lives, to complete it later.
#[derive(Debug, Clone)]
pub struct OpRef {
    lock: String,
    index: usize,
}

/// The shared recorder: a clock and the history behind one mutex
/// (contention is negligible next to network round trips).
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    history: Mutex<History>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            history: Mutex::new(History::default()),
        }
    }

    /// Nanoseconds since the start of the run.
    pub fn now(&self) -> u64 {
        self.at(Instant::now())
    }

    /// `instant` as nanoseconds since the start of the run (0 before it).
    pub fn at(&self, instant: Instant) -> u64 {
        u64::try_from(instant.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    fn with<T>(&self, f: impl FnOnce(&mut History) -> T) -> T {
        f(&mut self.history.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Counts an outcome for the summary.
    pub fn count(&self, what: impl Into<String>) {
        self.with(|h| *h.outcomes.entry(what.into()).or_default() += 1);
    }

    /// Records a lock operation; returns where it is.
    pub fn op(
        &self,
        lock: &str,
        client: ClientId,
        call: Call,
        outcome: Outcome,
        invoked_at: u64,
        completed_at: Option<u64>,
    ) -> OpRef {
        self.with(|h| {
            let ops = h.lock_ops.entry(lock.to_string()).or_default();
            ops.push(Operation {
                client,
                call,
                outcome,
                invoked_at,
                completed_at,
            });
            OpRef {
                lock: lock.to_string(),
                index: ops.len() - 1,
            }
        })
    }

    /// Marks an operation of unknown outcome as over by `at`: its session
    /// was closed then, and a closed session's requests are refused.
    pub fn complete_unknown(&self, op: &OpRef, at: u64) {
        self.with(|h| {
            if let Some(o) = h
                .lock_ops
                .get_mut(&op.lock)
                .and_then(|ops| ops.get_mut(op.index))
            {
                if o.completed_at.is_none() {
                    o.completed_at = Some(at.max(o.invoked_at));
                }
            }
        });
    }

    /// Offers a write to the named resource; returns whether it was taken.
    pub fn write(&self, resource: &str, write: Write) -> bool {
        self.with(|h| {
            let log = h.resources.entry(resource.to_string()).or_default();
            let accepted = log.resource.write(write.token);
            log.writes.push(Write { accepted, ..write });
            accepted
        })
    }

    /// Records a won campaign.
    pub fn campaign(&self, won: CampaignWon) {
        self.with(|h| h.campaigns.push(won));
    }

    /// Records an event seen by a watcher.
    pub fn watched(&self, watcher: usize, event: LeaderEvent) {
        self.with(|h| h.watched.entry(watcher).or_default().push(event));
    }

    /// Records an event of `lock`'s watch.
    pub fn lock_watched(&self, lock: &str, event: LockEvent) {
        self.with(|h| {
            h.lock_watched
                .entry(lock.to_string())
                .or_default()
                .push(event)
        });
    }

    /// The highest index `lock`'s watch has shown so far (0: none).
    pub fn lock_watched_index(&self, lock: &str) -> u64 {
        self.with(|h| {
            h.lock_watched
                .get(lock)
                .into_iter()
                .flatten()
                .filter_map(paxlock::LockEvent::index)
                .max()
                .unwrap_or(0)
        })
    }

    /// The highest term a watcher has seen so far.
    pub fn watched_term(&self, watcher: usize) -> u64 {
        self.with(|h| {
            h.watched
                .get(&watcher)
                .and_then(|events| events.iter().rev().find_map(event_term))
                .unwrap_or(0)
        })
    }

    /// The highest fencing token a client was told it holds of `lock`.
    pub fn max_granted_token_of(&self, lock: &str) -> u64 {
        self.with(|h| highest_grant(h.lock_ops.get(lock).into_iter().flatten()))
    }

    /// The highest fencing token any client was told it holds.
    pub fn max_granted_token(&self) -> u64 {
        self.with(|h| highest_grant(h.lock_ops.values().flatten()))
    }

    /// Takes the history out for checking.
    pub fn take(&self) -> History {
        self.with(std::mem::take)
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// The highest token among `ops`' grants (0: none).
fn highest_grant<'a>(ops: impl Iterator<Item = &'a Operation>) -> u64 {
    ops.filter_map(|o| match o.outcome {
        Outcome::Granted { token } => Some(token),
        _ => None,
    })
    .max()
    .unwrap_or(0)
}

/// The term an event carries (none for `HistoryGone`).
pub fn event_term(event: &LeaderEvent) -> Option<u64> {
    match event {
        LeaderEvent::Elected { term, .. }
        | LeaderEvent::ValueChanged { term, .. }
        | LeaderEvent::NoLeader { term } => Some(*term),
        LeaderEvent::HistoryGone => None,
    }
}

/// A session's lock-history bookkeeping: which locks it touched and which
/// of its operations are still of unknown outcome.
#[derive(Debug, Default)]
pub struct SessionOps {
    /// Locks whose history must get this session's end.
    pub touched: BTreeSet<String>,
    /// Operations whose outcome is unknown and not yet bounded.
    pub pending: Vec<OpRef>,
    /// A lower bound of when the cluster may expire the session: the
    /// latest lease end the client saw (leases only grow).
    pub lease_floor: u64,
}
