//! A client session: its TTL, what it holds, waits for and campaigns in,
//! and its exactly-once table.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::locks::command::Identity;
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
}

impl Session {
    /// A fresh session of `owner` with nothing held.
    pub fn new(ttl_ms: u64, owner: Option<Identity>) -> Self {
        Session {
            ttl_ms,
            owner,
            ..Session::default()
        }
    }

    /// Locks held plus locks waited for: what `max_locks_per_session` bounds.
    pub fn lock_count(&self) -> usize {
        self.held.len() + self.waiting.len()
    }
}
