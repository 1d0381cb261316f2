//! One lock: its holder, FIFO waiter queue and lock-delay.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::locks::command::{FencingToken, SessionId};

/// The current grant of a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Holding session.
    pub session: SessionId,
    /// The grant's fencing token.
    pub token: FencingToken,
    /// When it was granted, on the machine's logical clock (`None`: before
    /// the log recorded protocol 3).
    pub since_ms: Option<u64>,
}

/// A session queued for a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// The waiting session.
    pub session: SessionId,
    /// When it joined the queue, on the machine's logical clock (`None`:
    /// before the log recorded protocol 3).
    pub since_ms: Option<u64>,
    /// The value its acquire carries, the lock's value once granted.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// State of one lock. A lock with no holder, no waiters and no delay is
/// removed from the machine, so the lock table is bounded by what sessions
/// hold and wait for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The current grant, if any.
    pub holder: Option<Holder>,
    /// The current grant's value, set by its acquire (bounded like an
    /// election's value; empty when free or set to nothing).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Sessions waiting, granted strictly front first.
    pub waiters: VecDeque<Waiter>,
    /// Set after a holder expired: no grant before this logical time.
    pub delayed_until_ms: Option<u64>,
}

impl Lock {
    /// Whether a new grant may happen right now.
    pub fn is_grantable(&self) -> bool {
        self.holder.is_none() && self.delayed_until_ms.is_none()
    }

    /// Whether the lock carries no state and may be dropped.
    pub fn is_empty(&self) -> bool {
        self.holder.is_none() && self.waiters.is_empty() && self.delayed_until_ms.is_none()
    }

    /// 1-based position of `session` in the queue, if queued.
    pub fn position(&self, session: SessionId) -> Option<u32> {
        self.waiters
            .iter()
            .position(|w| w.session == session)
            .map(|i| u32::try_from(i + 1).unwrap_or(u32::MAX))
    }

    /// Removes `session` from the queue; returns its entry if it was
    /// queued.
    pub fn remove_waiter(&mut self, session: SessionId) -> Option<Waiter> {
        let at = self.waiters.iter().position(|w| w.session == session)?;
        self.waiters.remove(at)
    }

    /// The current grant's token, if held.
    pub fn token(&self) -> Option<FencingToken> {
        self.holder.map(|h| h.token)
    }
}
