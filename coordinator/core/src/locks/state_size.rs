//! What the machine's state weighs: the count of bytes that
//! [`Limits::max_state_bytes`](crate::locks::Limits::max_state_bytes)
//! bounds.
//!
//! The count is a model of the memory the state takes, and of the
//! snapshot it makes, not a measurement of the allocator: every entry
//! costs a fixed overhead (its map entry and struct) plus the bytes
//! clients chose for it (names, values, identities), counted where they
//! are stored. A lock's name is stored once in the lock table and once in
//! the `held` or `waiting` set of every session holding or queued for it,
//! so the lock counts it that many times; an election counts its name once
//! per member and once per retained event, and each value once where it is
//! held and once per event that carries it.
//!
//! The machine keeps the total up to date as it applies (by re-counting
//! the few entries a command touches, before and after) and the
//! invariants compare it with a count from scratch after every apply in
//! debug builds, so the two cannot drift apart unnoticed.

use crate::locks::dedup::RecordedReply;
use crate::locks::election::Election;
use crate::locks::error::CommandError;
use crate::locks::event::{ElectionChange, ElectionEvent};
use crate::locks::lock::Lock;
use crate::locks::session::Session;
use crate::locks::shared::SharedLock;

/// A session's own struct, its entries in the session table and the
/// derived indexes (owner usage, open key).
pub const SESSION_BYTES: u64 = 256;
/// One recorded reply in a session's exactly-once table, besides the text
/// an error carries.
pub const REPLY_BYTES: u64 = 64;
/// A lock's struct and its entry in the lock table.
pub const LOCK_BYTES: u64 = 96;
/// One entry of a name set (`held`, `waiting`, `campaigns`), besides the
/// name.
pub const NAME_ENTRY_BYTES: u64 = 48;
/// One queued session in a lock's FIFO.
pub const WAITER_BYTES: u64 = 8;
/// A grant an administrator took from a session (token and deadline).
pub const TAKEN_GRANT_BYTES: u64 = 16;
/// An election's struct and its entry in the election table.
pub const ELECTION_BYTES: u64 = 128;
/// A leader or candidate, besides its value.
pub const MEMBER_BYTES: u64 = 48;
/// One retained event, besides its name, value and owner.
pub const EVENT_BYTES: u64 = 96;

/// Counted bytes of a session (what it holds is counted by the locks and
/// elections).
pub fn session_bytes(session: &Session) -> u64 {
    let owner = session.owner.as_ref().map_or(0, |o| o.as_str().len());
    let replies: u64 = session.dedup.replies().map(reply_bytes).sum();
    let taken = session.taken.len() as u64 * TAKEN_GRANT_BYTES;
    SESSION_BYTES + owner as u64 + replies + taken
}

/// Counted bytes of one recorded reply.
pub fn reply_bytes(reply: &RecordedReply) -> u64 {
    let text = match reply {
        Ok(_) => 0,
        Err(e) => error_text_bytes(e),
    };
    REPLY_BYTES + text as u64
}

/// Bytes of the text a recorded error carries. Every variant is listed so
/// that one added with text cannot be left out of the count.
fn error_text_bytes(error: &CommandError) -> usize {
    use CommandError as E;
    match error {
        E::WaitQueueFull { name, .. }
        | E::TooManyCandidates { name, .. }
        | E::StaleToken { name, .. }
        | E::NotLeader { name }
        | E::NotHeld { name } => name.len(),
        E::InvalidAccessRules { reason } => reason.len(),
        E::WrongKind { name, kind, asked } => name.len() + kind.len() + asked.len(),
        E::ModeHeld { name, held } => name.len() + held.len(),
        E::PermitsMismatch { name, .. } | E::GrantUnnamed { name, .. } => name.len(),
        E::QuotaExceeded { identity, .. } => identity.len(),
        E::SessionNotFound { .. }
        | E::TooManySessions { .. }
        | E::TtlOutOfRange { .. }
        | E::NameEmpty { .. }
        | E::NameTooLong { .. }
        | E::ValueTooLarge { .. }
        | E::TooManyLocks { .. }
        | E::TooManyCampaigns { .. }
        | E::TooManyElections { .. }
        | E::StaleExpiry { .. }
        | E::StaleAbandon { .. }
        | E::RequestIdAcked { .. }
        | E::TooManyUnackedReplies { .. }
        | E::PermissionDenied { .. }
        | E::InvalidIdentity { .. }
        | E::AccessRulesChanged { .. }
        | E::StateFull { .. }
        | E::TooManyTakenGrants { .. }
        | E::PermitsOutOfRange { .. } => 0,
    }
}

/// Counted bytes of a lock named `name_len` bytes with `holders` (0 or 1)
/// and `waiters` queued sessions.
pub fn lock_bytes_of(name_len: usize, holders: usize, waiters: usize) -> u64 {
    let name = name_len as u64;
    let members = (holders + waiters) as u64;
    LOCK_BYTES + name + members * (name + NAME_ENTRY_BYTES) + waiters as u64 * WAITER_BYTES
}

/// Counted bytes of the lock `name`: its entries and the values of its
/// grant and waiters.
pub fn lock_bytes(name: &str, lock: &Lock) -> u64 {
    let values: usize =
        lock.value.len() + lock.waiters.iter().map(|w| w.value.len()).sum::<usize>();
    lock_bytes_of(
        name.len(),
        usize::from(lock.holder.is_some()),
        lock.waiters.len(),
    ) + values as u64
}

/// Counted bytes of the semaphore or read/write lock `name`: as a lock
/// with as many holders as it has grants (its lock-delays count as waiters).
pub fn shared_lock_bytes(name: &str, lock: &SharedLock) -> u64 {
    lock_bytes_of(name.len(), lock.grants.len(), lock.waiters.len())
        + lock.delays.len() as u64 * WAITER_BYTES
}

/// Counted bytes of a leader or candidate of an election named
/// `name_len` bytes, with a value of `value_len` bytes (the name counts for
/// its entry in the session's `campaigns`).
pub fn member_bytes(name_len: usize, value_len: usize) -> u64 {
    MEMBER_BYTES + value_len as u64 + NAME_ENTRY_BYTES + name_len as u64
}

/// Counted bytes of one retained event.
pub fn event_bytes(event: &ElectionEvent) -> u64 {
    let (value, owner) = match &event.change {
        ElectionChange::NewLeader { value, owner, .. }
        | ElectionChange::Proclaimed { value, owner, .. } => {
            (value.len(), owner.as_ref().map_or(0, |o| o.as_str().len()))
        }
        ElectionChange::NoLeader => (0, 0),
    };
    event_bytes_of(event.name.len(), value, owner)
}

/// Counted bytes of an event for an election named `name_len` bytes
/// carrying a value of `value_len` bytes and an owner of `owner_len`.
pub fn event_bytes_of(name_len: usize, value_len: usize, owner_len: usize) -> u64 {
    EVENT_BYTES + (name_len + value_len + owner_len) as u64
}

/// Counted bytes of the election `name`; its history's share is the
/// election's running count (see [`Election::history_bytes`]).
pub fn election_bytes(name: &str, election: &Election) -> u64 {
    let members: u64 = election
        .leader
        .iter()
        .chain(election.candidates.iter())
        .map(|m| member_bytes(name.len(), m.value.len()))
        .sum();
    ELECTION_BYTES + name.len() as u64 + members + election.history_bytes()
}
