//! A client session: its TTL, what it holds, waits for and campaigns in,
//! and its exactly-once table.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::locks::command::{FencingToken, Identity};
use crate::locks::dedup::DedupTable;

/// State of one live session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Time-to-live the leader enforces from the last keepalive (and, on a
    /// new leader, from takeover).
    pub ttl_ms: u64,
    /// Locks this session holds.
    pub held: BTreeSet<String>,
    /// Locks this session is queued for.
    pub waiting: BTreeSet<String>,
    /// Elections this session leads or is a candidate in.
    pub campaigns: BTreeSet<String>,
    /// Recorded replies for exactly-once retries.
    pub dedup: DedupTable,
    /// The identity it belongs to; `None` for a session opened before
    /// protocol 3, until its first request since claims it.
    pub owner: Option<Identity>,
    /// The key its open came with (0: none), so a retried open finds it.
    pub open_key: u64,
    /// Grants an administrator took from it (`ForceRelease`), with when
    /// each one's lock-delay ends on the machine's clock: its keepalive
    /// answers name them until then, so its client stops using them. At
    /// most [`MAX_TAKEN_GRANTS`]; forgotten once their time has passed.
    pub taken: BTreeMap<FencingToken, u64>,
}

/// Most grants of one session in [`Session::taken`] at a time: a further
/// force-release of its locks is refused until one's lock-delay is over
/// (revoking the session still works).
pub const MAX_TAKEN_GRANTS: u32 = 64;

impl Session {
    /// A fresh session of `owner` with nothing held.
    pub fn new(ttl_ms: u64, owner: Option<Identity>) -> Self {
        Session {
            ttl_ms,
            owner,
            ..Session::default()
        }
    }

    /// The taken grants whose lock-delay is not over at `now_ms`: what
    /// its keepalive answers name.
    pub fn taken_at(&self, now_ms: u64) -> impl Iterator<Item = FencingToken> + '_ {
        self.taken
            .iter()
            .filter(move |(_, until)| **until > now_ms)
            .map(|(token, _)| *token)
    }

    /// Forgets the taken grants whose lock-delay is over at `now_ms`.
    pub(crate) fn forget_taken(&mut self, now_ms: u64) {
        if !self.taken.is_empty() {
            self.taken.retain(|_, until| *until > now_ms);
        }
    }

    /// Locks held plus locks waited for: what `max_locks_per_session` bounds.
    pub fn lock_count(&self) -> usize {
        self.held.len() + self.waiting.len()
    }
}
