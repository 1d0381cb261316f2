//! What a lock watcher is shown: every change to one lock, in log order,
//! and the bounded history of recent changes a node keeps so that a watch
//! resumes without a gap.
//!
//! A lock's changes are indexed by the machine's revision after the
//! command that made them. Every replica applies the same commands to the
//! same state, so an index names the same changes on every node, and a
//! watcher may resume on any node. Revisions are not contiguous per lock
//! (other commands move them too), so a gap cannot be seen from the
//! indices alone: a node answers a resume only from a history it knows is
//! complete after the resume point ([`LockHistory::since`]), and says
//! [`LockHistoryGone`] otherwise. Because a lock's index is the global
//! revision, a lock removed once free and made again needs no floor: its
//! next change is simply later in the log.
//!
//! The history is per node and not replicated: a node keeps the latest
//! changes to every lock, up to [`MAX_HISTORY_CHANGES`] changes and
//! [`MAX_HISTORY_BYTES`] bytes, from when it started (or last installed a
//! snapshot). Both the node's apply loop and the simulator drive it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use thiserror::Error;

use crate::locks::{Event, FencingToken, Identity, ReleaseReason, SessionId};

/// Most changes a node's history keeps (of all locks together).
pub const MAX_HISTORY_CHANGES: usize = 65_536;

/// Most bytes of changes (names, identities and values counted) a node's
/// history keeps.
pub const MAX_HISTORY_BYTES: usize = 16 * 1024 * 1024;

/// Bytes counted for one change beside its variable parts.
const CHANGE_OVERHEAD_BYTES: usize = 64;

/// Bytes counted for one update beside its name and changes (the entry,
/// its name's and its list's headers).
const UPDATE_OVERHEAD_BYTES: usize = 64;

/// One change to a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockChange {
    /// Granted to `session` (immediately, or as the head of the queue).
    Granted {
        /// The new holder.
        session: SessionId,
        /// The identity its session belongs to.
        owner: Option<Identity>,
        /// The grant's fencing token.
        token: FencingToken,
        /// The value its acquire carried.
        value: Vec<u8>,
    },
    /// The grant of `session` ended.
    Released {
        /// The former holder.
        session: SessionId,
        /// The grant that ended.
        token: FencingToken,
        /// Why it ended.
        reason: ReleaseReason,
        /// The lock-delay this started, in ms (`None`: none).
        lock_delay_ms: Option<u64>,
    },
    /// `session` joined the queue, at its back.
    Queued {
        /// The waiting session.
        session: SessionId,
        /// The identity it belongs to.
        owner: Option<Identity>,
    },
    /// `session` left the queue without a grant.
    LeftQueue {
        /// The session that waited.
        session: SessionId,
        /// `Cancelled`, or how its session ended.
        reason: ReleaseReason,
    },
    /// The lock-delay ended: the lock may be granted again.
    DelayEnded,
}

impl LockChange {
    fn bytes(&self) -> usize {
        let owner = |o: &Option<Identity>| o.as_ref().map_or(0, |o| o.0.len());
        CHANGE_OVERHEAD_BYTES
            + match self {
                LockChange::Granted {
                    owner: o, value, ..
                } => owner(o) + value.len(),
                LockChange::Queued { owner: o, .. } => owner(o),
                LockChange::Released { .. } | LockChange::LeftQueue { .. } => 0,
                LockChange::DelayEnded => 0,
            }
    }
}

/// What one command did to one lock: the unit a watcher is sent, whole,
/// so that resuming after `index` misses none of a command's changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockUpdate {
    /// The lock.
    pub name: String,
    /// The machine's revision after the command: the same on every
    /// replica, increasing along the log.
    pub index: u64,
    /// The changes, in the order the command made them.
    pub changes: Vec<LockChange>,
}

impl LockUpdate {
    fn bytes(&self) -> usize {
        UPDATE_OVERHEAD_BYTES
            + self.name.len()
            + self.changes.iter().map(LockChange::bytes).sum::<usize>()
    }
}

/// A resume point older than what a node's history is complete after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error(
    "lock history gone: asked for changes after index {requested}, this node has every change \
     only after index {complete_after}; read the lock's current state and resume from there"
)]
pub struct LockHistoryGone {
    /// The resume point asked for.
    pub requested: u64,
    /// The node has every change with a higher index than this.
    pub complete_after: u64,
}

/// The updates one applied command made, one per lock it changed, in the
/// order the command first changed each. `index` is the machine's
/// revision after the command.
pub fn updates(index: u64, events: &[Event]) -> Vec<LockUpdate> {
    let mut out: Vec<LockUpdate> = Vec::new();
    // Lock -> its update in `out`: one command may change thousands (an
    // expiry of a session holding many, a tick ending many lock-delays).
    let mut at: HashMap<&str, usize> = HashMap::new();
    for event in events {
        let Some((name, change)) = change_of(event) else {
            continue;
        };
        match at.get(name) {
            Some(&i) => out[i].changes.push(change),
            None => {
                at.insert(name, out.len());
                out.push(LockUpdate {
                    name: name.to_owned(),
                    index,
                    changes: vec![change],
                });
            }
        }
    }
    out
}

fn change_of(event: &Event) -> Option<(&str, LockChange)> {
    let change = match event {
        Event::LockGranted {
            name,
            session,
            token,
            owner,
            value,
            shared: _,
        } => (
            name,
            LockChange::Granted {
                session: *session,
                owner: owner.clone(),
                token: *token,
                value: value.clone(),
            },
        ),
        Event::LockReleased {
            name,
            session,
            token,
            reason,
            lock_delay_ms,
        } => (
            name,
            LockChange::Released {
                session: *session,
                token: *token,
                reason: *reason,
                lock_delay_ms: *lock_delay_ms,
            },
        ),
        Event::LockQueued {
            name,
            session,
            owner,
        } => (
            name,
            LockChange::Queued {
                session: *session,
                owner: owner.clone(),
            },
        ),
        Event::LockLeftQueue {
            name,
            session,
            reason,
        } => (
            name,
            LockChange::LeftQueue {
                session: *session,
                reason: *reason,
            },
        ),
        Event::LockDelayEnded { name } => (name, LockChange::DelayEnded),
        Event::SessionEnded { .. } | Event::Election(_) | Event::ElectionRemoved { .. } => {
            return None
        }
    };
    Some((change.0.as_str(), change.1))
}

/// A node's recent lock updates, oldest first, bounded in count and bytes.
/// Updates are shared (`Arc`) with the watches that send them, so a
/// watch catching up or a live channel copies no value.
#[derive(Debug, Clone)]
pub struct LockHistory {
    updates: VecDeque<Arc<LockUpdate>>,
    changes: usize,
    bytes: usize,
    /// Every update with a higher index is kept (or was never made).
    complete_after: u64,
    max_changes: usize,
    max_bytes: usize,
}

impl Default for LockHistory {
    fn default() -> Self {
        LockHistory::new(0)
    }
}

impl LockHistory {
    /// An empty history of a machine at `revision`: complete after it.
    pub fn new(revision: u64) -> LockHistory {
        LockHistory::bounded(revision, MAX_HISTORY_CHANGES, MAX_HISTORY_BYTES)
    }

    /// The same with other bounds (tests and the simulator use small ones
    /// to reach them).
    pub fn bounded(revision: u64, max_changes: usize, max_bytes: usize) -> LockHistory {
        LockHistory {
            updates: VecDeque::new(),
            changes: 0,
            bytes: 0,
            complete_after: revision,
            max_changes,
            max_bytes,
        }
    }

    /// Forgets everything: the machine was replaced by a snapshot at
    /// `revision`, whose changes this node never saw.
    pub fn restart_at(&mut self, revision: u64) {
        *self = LockHistory::bounded(revision, self.max_changes, self.max_bytes);
    }

    /// Records the updates of one applied command (see [`updates`]) and,
    /// if `live` (someone watches a lock here), returns copies for the
    /// live watchers. The oldest updates go first when a bound is passed;
    /// the history is then complete only after them.
    pub fn record(&mut self, index: u64, events: &[Event], live: bool) -> Vec<Arc<LockUpdate>> {
        let mut copies = Vec::new();
        for update in updates(index, events) {
            self.changes += update.changes.len();
            self.bytes += update.bytes();
            let update = Arc::new(update);
            if live {
                copies.push(update.clone());
            }
            self.updates.push_back(update);
        }
        while self.changes > self.max_changes || self.bytes > self.max_bytes {
            let Some(oldest) = self.updates.pop_front() else {
                break;
            };
            self.changes -= oldest.changes.len();
            self.bytes -= oldest.bytes();
            if !canary::silent_trim() {
                self.complete_after = self.complete_after.max(oldest.index);
            }
        }
        copies
    }

    /// Every update of `name` with an index above `after`, oldest first;
    /// [`LockHistoryGone`] if this node may not have them all.
    pub fn since(&self, name: &str, after: u64) -> Result<Vec<Arc<LockUpdate>>, LockHistoryGone> {
        if after < self.complete_after {
            return Err(LockHistoryGone {
                requested: after,
                complete_after: self.complete_after,
            });
        }
        // Updates are in index order: skip to the first above `after`.
        let first = self.updates.partition_point(|u| u.index <= after);
        Ok(self
            .updates
            .range(first..)
            .filter(|u| u.name == name)
            .cloned()
            .collect())
    }

    /// The index this history has every update after.
    pub fn complete_after(&self) -> u64 {
        self.complete_after
    }

    /// Changes and bytes held now.
    pub fn size(&self) -> (usize, usize) {
        (self.changes, self.bytes)
    }
}

/// A switch that breaks the rule that a trimmed history says it is
/// incomplete; off (and constant false) outside canary builds.
pub mod canary {
    #[cfg(feature = "canary")]
    thread_local! {
        static SILENT_TRIM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Makes a history on this thread trim its oldest updates without
    /// moving the point it is complete after: a resume from before the
    /// trim gets the later updates only, silently (canary builds only).
    #[cfg(feature = "canary")]
    pub fn set_silent_trim(on: bool) {
        SILENT_TRIM.with(|c| c.set(on));
    }

    /// Whether the canary is on for this thread.
    pub fn silent_trim() -> bool {
        #[cfg(feature = "canary")]
        return SILENT_TRIM.with(std::cell::Cell::get);
        #[cfg(not(feature = "canary"))]
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::harness::Harness;
    use crate::locks::{ClientOp, CommandKind, Config, Output};

    /// A harness and a history that records every command it applies.
    struct Watched {
        h: Harness,
        history: LockHistory,
    }

    impl Watched {
        fn new(history: LockHistory) -> Watched {
            Watched {
                h: Harness::new(Config::default()),
                history,
            }
        }

        /// What `out` (just applied) did, recorded.
        fn record(&mut self, out: &Output) -> Vec<Arc<LockUpdate>> {
            self.history.record(self.h.sm.revision(), &out.events, true)
        }

        fn acquire(&mut self, s: SessionId, name: &str, value: Vec<u8>) -> Vec<Arc<LockUpdate>> {
            let op = ClientOp::Acquire {
                name: name.into(),
                wait: true,
                value,
            };
            let out = self.h.op(s, op);
            self.record(&out)
        }

        fn apply(&mut self, kind: CommandKind) -> Vec<Arc<LockUpdate>> {
            let out = self.h.apply(kind);
            self.record(&out)
        }
    }

    fn token_of(update: &LockUpdate) -> FencingToken {
        match update.changes.last() {
            Some(LockChange::Granted { token, .. }) => *token,
            other => panic!("not a grant: {other:?}"),
        }
    }

    #[test]
    fn a_handover_is_one_update_with_the_release_then_the_grant() {
        let mut w = Watched::new(LockHistory::default());
        let (a, b) = (w.h.open(), w.h.open());
        let granted = w.acquire(a, "x", b"a's".to_vec());
        assert!(matches!(
            &granted[0].changes[..],
            [LockChange::Granted { session, value, .. }] if *session == a && value == b"a's"
        ));
        let queued = w.acquire(b, "x", Vec::new());
        assert!(matches!(
            queued[0].changes[..],
            [LockChange::Queued { session, .. }] if session == b
        ));
        let out = w.h.release(a, "x", token_of(&granted[0]));
        let handover = w.record(&out);
        assert_eq!(handover.len(), 1);
        assert_eq!(handover[0].index, w.h.sm.revision());
        assert!(matches!(
            handover[0].changes[..],
            [
                LockChange::Released { session: ra, reason: ReleaseReason::Released, lock_delay_ms: None, .. },
                LockChange::Granted { session: gb, .. },
            ] if ra == a && gb == b
        ));
        // From the start: every update of "x", in order; none of another.
        let all = w.history.since("x", 0).unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.windows(2).all(|p| p[0].index < p[1].index));
        assert!(w.history.since("y", 0).unwrap().is_empty());
        // Resuming after the queueing gives the handover only.
        assert_eq!(w.history.since("x", queued[0].index).unwrap(), handover);
    }

    #[test]
    fn a_cancelled_or_ended_wait_says_why_it_left_the_queue() {
        let mut w = Watched::new(LockHistory::default());
        let (a, b) = (w.h.open(), w.h.open());
        w.acquire(a, "x", Vec::new());
        w.acquire(b, "x", Vec::new());
        let cancel = ClientOp::CancelAcquire { name: "x".into() };
        let out = w.h.op(b, cancel);
        let left = w.record(&out);
        assert!(matches!(
            left[0].changes[..],
            [LockChange::LeftQueue { session, reason: ReleaseReason::Cancelled }] if session == b
        ));
        w.acquire(b, "x", Vec::new());
        let out = w.h.expire(b);
        let expired = w.record(&out);
        assert!(matches!(
            expired[0].changes[..],
            [LockChange::LeftQueue { session, reason: ReleaseReason::SessionExpired }] if session == b
        ));
    }

    #[test]
    fn an_expired_holder_leaves_a_delay_whose_end_is_a_change() {
        let mut w = Watched::new(LockHistory::default());
        w.h.sm = crate::locks::StateMachine::new(Config {
            lock_delay_ms: 500,
            ..Config::default()
        });
        let a = w.h.open();
        w.acquire(a, "x", Vec::new());
        let out = w.h.expire(a);
        let expired = w.record(&out);
        let Some(LockChange::Released {
            reason: ReleaseReason::SessionExpired,
            lock_delay_ms: Some(500),
            ..
        }) = expired[0].changes.first().cloned()
        else {
            panic!("{expired:?}");
        };
        w.h.at_ms += 500;
        let ended = w.apply(CommandKind::Tick);
        assert_eq!(ended[0].changes, vec![LockChange::DelayEnded]);
    }

    #[test]
    fn a_trimmed_history_refuses_a_resume_from_before_the_trim() {
        // Room for two changes.
        let mut w = Watched::new(LockHistory::bounded(0, 2, usize::MAX));
        let a = w.h.open();
        let mut indices = Vec::new();
        for name in ["l1", "l2", "l3"] {
            indices.push(w.acquire(a, name, Vec::new())[0].index);
        }
        // The first grant was trimmed: after it is still complete, before
        // it is not.
        assert_eq!(w.history.complete_after(), indices[0]);
        assert_eq!(w.history.since("l2", indices[0]).unwrap().len(), 1);
        let gone = w.history.since("l1", indices[0] - 1).unwrap_err();
        assert_eq!(gone.complete_after, indices[0]);
        assert_eq!(w.history.size().0, 2);
        // A snapshot install forgets it all.
        let now = w.h.sm.revision();
        w.history.restart_at(now);
        assert!(w.history.since("l3", indices[1]).is_err());
        assert!(w.history.since("l3", now).unwrap().is_empty());
    }

    #[test]
    fn the_byte_bound_counts_values() {
        // Room for one 900-byte value with its overheads, not two.
        let mut w = Watched::new(LockHistory::bounded(0, usize::MAX, 1_500));
        let a = w.h.open();
        w.acquire(a, "x", vec![7; 900]);
        assert!(w.history.size().1 >= 900);
        w.acquire(a, "y", vec![7; 900]);
        assert!(w.history.size().1 <= 1_500, "{:?}", w.history.size());
        assert!(w.history.since("x", 0).is_err());
    }
}
