//! Events: state changes that watchers and waiting clients must hear about,
//! in apply order.

use serde::{Deserialize, Serialize};

use crate::locks::command::{FencingToken, Identity, SessionId};

/// Why a lock stopped being held, or a session stopped waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseReason {
    /// The holder released it with its token.
    Released,
    /// The holder cancelled an acquire whose grant had already happened.
    Cancelled,
    /// The holder's session was closed.
    SessionClosed,
    /// The holder's session expired (lock-delay may apply).
    SessionExpired,
    /// An administrator revoked the holder's session (the lock stays in
    /// lock-delay for at least the session's TTL).
    SessionRevoked,
    /// An administrator force-released the grant; the holder's session
    /// lives on (the lock stays in lock-delay for at least its TTL).
    ForceReleased,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    /// The client closed it.
    Closed,
    /// The leader expired it.
    Expired,
    /// An administrator revoked it.
    Revoked,
}

/// What changed in an election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionChange {
    /// A new leader (the term is new).
    NewLeader {
        /// The leader's session.
        session: SessionId,
        /// The value it campaigned with.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// The identity the session belongs to (`None`: opened before
        /// protocol 3 and not claimed yet).
        owner: Option<Identity>,
        /// The leadership's fencing token (`None`: won before the log
        /// recorded protocol 3).
        token: Option<FencingToken>,
    },
    /// The same leader published a new value (the term is unchanged).
    Proclaimed {
        /// The leader's session.
        session: SessionId,
        /// The new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// The identity the session belongs to, as in `NewLeader`.
        owner: Option<Identity>,
        /// The leadership's fencing token, unchanged since its win.
        token: Option<FencingToken>,
    },
    /// Nobody leads any more (the term is new).
    NoLeader,
}

/// One entry of an election's event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionEvent {
    /// Election name.
    pub name: String,
    /// Position in this election's stream: 1, 2, 3, ... with no gaps, so an
    /// observer can tell if it missed one.
    pub index: u64,
    /// The election's term after the change. Increases by exactly one per
    /// change of leader identity (including to and from "no leader").
    pub term: u64,
    /// What changed.
    pub change: ElectionChange,
}

/// Something that happened during one apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A lock was granted (immediately, or to the head of its FIFO queue).
    LockGranted {
        /// Lock name.
        name: String,
        /// New holder.
        session: SessionId,
        /// Its fencing token.
        token: FencingToken,
        /// The identity the holder's session belongs to (`None`: opened
        /// before protocol 3 and not claimed yet).
        owner: Option<Identity>,
        /// The value its acquire carried, the grant's value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// A semaphore's or read/write lock's grant: its fencing value and
        /// slot (`None`: a lock's grant, whose token fences).
        shared: Option<SharedGranted>,
    },
    /// A session joined a lock's queue.
    LockQueued {
        /// Lock name.
        name: String,
        /// The waiting session.
        session: SessionId,
        /// The identity it belongs to, as in `LockGranted`.
        owner: Option<Identity>,
    },
    /// A queued session left the queue without being granted (a grant
    /// is a `LockGranted` alone).
    LockLeftQueue {
        /// Lock name.
        name: String,
        /// The session that waited.
        session: SessionId,
        /// Why: `Cancelled`, or how its session ended.
        reason: ReleaseReason,
    },
    /// A lock's lock-delay ended: it may be granted again (to its first
    /// waiter, in this same apply, if it has one).
    LockDelayEnded {
        /// Lock name.
        name: String,
    },
    /// A lock stopped being held.
    LockReleased {
        /// Lock name.
        name: String,
        /// Former holder.
        session: SessionId,
        /// The released grant.
        token: FencingToken,
        /// Why.
        reason: ReleaseReason,
        /// The lock-delay this starts, in ms (`None`: none; the next
        /// waiter, if any, is granted in this apply).
        lock_delay_ms: Option<u64>,
    },
    /// A session ended; everything it held was released in the same apply.
    SessionEnded {
        /// The session.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
    /// An election changed.
    Election(ElectionEvent),
    /// An election nobody led or campaigned in was removed to make room
    /// (for another election, or for state under `max_state_bytes`). Made
    /// again, its terms and event indices continue above those of every
    /// removed election, so a watcher sees its indices jump, which the
    /// node announces as `HISTORY_GONE`.
    ElectionRemoved {
        /// The election.
        name: String,
    },
}

/// What a grant of a semaphore or read/write lock adds to its token (see
/// [`crate::locks::shared`], "Fencing").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedGranted {
    /// What the holder presents to the resource: the readers' shared value
    /// for a reader, its token otherwise.
    pub fencing: FencingToken,
    /// A permit's slot (`None`: not a permit).
    pub slot: Option<u32>,
}

impl SharedGranted {
    /// What `grant` adds to its token.
    pub fn of(grant: &crate::locks::shared::SharedGrant) -> SharedGranted {
        SharedGranted {
            fencing: grant.fencing,
            slot: (grant.mode == crate::locks::shared::Mode::Permit).then_some(grant.slot),
        }
    }
}
