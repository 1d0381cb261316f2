//! Errors: why a command was rejected, and why bytes did not decode.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::access::QuotaKind;
use crate::locks::command::{FencingToken, RequestId, SessionId};

/// Why the state machine rejected a command.
///
/// Every variant is deterministic: the same state and command give the same
/// error on every replica. A rejected command changes no lock, session or
/// election; it still advances the revision, and a rejection of a client
/// command from a live session is recorded in that session's exactly-once
/// table so a retry gets the same answer (see [`crate::locks::machine`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum CommandError {
    /// The session does not exist: never opened, closed, or expired.
    #[error("session {session:?} does not exist (closed, expired or never opened)")]
    SessionNotFound {
        /// The session named by the command.
        session: SessionId,
    },
    /// Opening one more session would exceed `Limits::max_sessions`.
    #[error("too many sessions: the limit is {max}")]
    TooManySessions {
        /// The configured limit.
        max: u32,
    },
    /// The requested TTL is outside the configured bounds (never clamped).
    #[error("session TTL {ttl_ms} ms is outside the allowed range {min_ms}..={max_ms} ms")]
    TtlOutOfRange {
        /// The TTL asked for.
        ttl_ms: u64,
        /// Smallest allowed TTL.
        min_ms: u64,
        /// Largest allowed TTL.
        max_ms: u64,
    },
    /// A lock or election name was empty.
    #[error("name is empty: names must be 1..={max} bytes of UTF-8")]
    NameEmpty {
        /// The configured maximum name length in bytes.
        max: u32,
    },
    /// A lock or election name was longer than the limit.
    #[error("name is {len} bytes, longer than the limit of {max} bytes")]
    NameTooLong {
        /// Length of the name in bytes.
        len: u64,
        /// The configured maximum in bytes.
        max: u32,
    },
    /// An election value was larger than the limit.
    #[error("value is {len} bytes, larger than the limit of {max} bytes")]
    ValueTooLarge {
        /// Length of the value in bytes.
        len: u64,
        /// The configured maximum in bytes.
        max: u32,
    },
    /// The lock's FIFO waiter queue is full.
    #[error("lock {name:?} already has {max} waiters, the limit")]
    WaitQueueFull {
        /// The lock.
        name: String,
        /// The configured limit.
        max: u32,
    },
    /// The session already holds or waits for the maximum number of locks.
    #[error("session holds or waits for {max} locks, the limit")]
    TooManyLocks {
        /// The configured limit.
        max: u32,
    },
    /// The session already campaigns in the maximum number of elections.
    #[error("session campaigns in {max} elections, the limit")]
    TooManyCampaigns {
        /// The configured limit.
        max: u32,
    },
    /// The election already has the maximum number of queued candidates.
    #[error("election {name:?} already has {max} candidates, the limit")]
    TooManyCandidates {
        /// The election.
        name: String,
        /// The configured limit.
        max: u32,
    },
    /// Creating one more election would exceed `Limits::max_elections`.
    #[error("too many elections: the limit is {max}")]
    TooManyElections {
        /// The configured limit.
        max: u32,
    },
    /// The token presented is not the current grant of this session on
    /// this lock: the lock was released, expired or re-granted since.
    #[error(
        "stale fencing token {presented:?} for lock {name:?}: this session does not hold \
         that grant (current grant: {current:?})"
    )]
    StaleToken {
        /// The lock.
        name: String,
        /// The token the command carried.
        presented: FencingToken,
        /// The lock's current grant, if any (possibly another session's).
        current: Option<FencingToken>,
    },
    /// An expiry proposed under an earlier (or other) leader epoch than the
    /// latest applied `Takeover`: ignored, the session lives on.
    #[error("expiry from leader epoch {epoch} ignored: the current leader epoch is {current}")]
    StaleExpiry {
        /// Epoch carried by the expiry.
        epoch: u64,
        /// The machine's current leader epoch.
        current: u64,
    },
    /// An `Abandon` chosen after the session already issued a request past
    /// the withdrawn one: a delayed or retried copy. Ignored, so that it
    /// cannot withdraw (release) a LATER wait or grant of the same name.
    #[error("abandon up to request {up_to:?} ignored: the session has moved past it")]
    StaleAbandon {
        /// The highest request id the abandon withdraws.
        up_to: RequestId,
    },
    /// Proclaim by a session that is not the election's leader.
    #[error("session is not the leader of election {name:?}")]
    NotLeader {
        /// The election.
        name: String,
    },
    /// The request id is below the floor the client already acknowledged;
    /// its reply was forgotten, so it cannot be answered or re-applied.
    #[error(
        "request id {request_id:?} is below the acknowledged floor {floor:?}: \
         its reply was released and it will not be applied again"
    )]
    RequestIdAcked {
        /// The request id of the command.
        request_id: RequestId,
        /// The session's acknowledged floor.
        floor: RequestId,
    },
    /// The session has too many unacknowledged replies. Nothing was applied
    /// and nothing was recorded: acknowledge replies (`ack_below`) and retry
    /// with the same request id.
    #[error(
        "session has {max} unacknowledged replies, the limit: the client does not acknowledge \
         answers (ack_below), or lists that many running waits; acknowledge answers and retry, \
         or raise limits.max_unacked_replies_per_session"
    )]
    TooManyUnackedReplies {
        /// The configured limit.
        max: u32,
    },
    // Variants below are protocol 3; new ones go at the end (replies are
    // stored in snapshots, where the encoding numbers variants by position).
    /// The session belongs to another identity (or, for a request without
    /// one, to any identity). Nothing was applied.
    #[error(
        "session {session:?} belongs to another identity; a request may act only for \
         sessions its own certificate opened: open a session of your own"
    )]
    PermissionDenied {
        /// The session named by the command.
        session: SessionId,
    },
    /// An identity that is empty or longer than
    /// [`crate::locks::command::MAX_IDENTITY_BYTES`].
    #[error("identity of {len} bytes: identities must be 1..={max} bytes")]
    InvalidIdentity {
        /// Its length in bytes.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// Access rules that break a bound (see [`crate::access::InvalidRules`]).
    /// Nothing was changed.
    #[error("access rules refused: {reason}")]
    InvalidAccessRules {
        /// What is wrong with them.
        reason: String,
    },
    /// The access rules changed since the version a change was made
    /// against. Nothing was changed.
    #[error(
        "the access rules are at version {current}, not {expected}: another administrator \
         changed them; read them again and redo the change"
    )]
    AccessRulesChanged {
        /// The version the change expected.
        expected: u64,
        /// The version in force.
        current: u64,
    },
    /// The identity's sessions together hold their quota of `what`.
    /// Nothing was changed.
    #[error(
        "identity {identity:?} holds its quota of {quota} {what}: release some, or ask an \
         administrator to raise it ([[quota]] in the access rules)"
    )]
    QuotaExceeded {
        /// The identity.
        identity: String,
        /// Which quota.
        what: QuotaKind,
        /// The quota.
        quota: u64,
    },
    /// The command would take the state past `max_state_bytes`, even with
    /// every election nobody leads or campaigns in removed. Nothing was
    /// changed; releasing, resigning and closing sessions still work.
    #[error(
        "the cluster's state is full: {bytes} counted bytes, and this would add {adding} more, \
         past the bound of {max} ([limits] max_state_bytes); release locks, resign elections or \
         close sessions, or raise the bound on every node"
    )]
    StateFull {
        /// The state's counted bytes.
        bytes: u64,
        /// What the command would add.
        adding: u64,
        /// The bound.
        max: u64,
    },
    /// A force-release of a lock nobody holds.
    #[error("lock {name:?} is not held: nothing to release (see `paxlock describe`)")]
    NotHeld {
        /// The lock.
        name: String,
    },
    /// A force-release of a grant of a session that already has the most
    /// taken grants still in their lock-delay.
    #[error(
        "session {session:?} already has {max} force-released grants in their lock-delay; \
         wait for one to end, or revoke the session"
    )]
    TooManyTakenGrants {
        /// The holding session.
        session: SessionId,
        /// The bound ([`crate::locks::session::MAX_TAKEN_GRANTS`]).
        max: u32,
    },
    /// The name is in use as another kind of lock: a name is a lock, a
    /// semaphore or a read/write lock while anyone holds, waits for or
    /// delays it.
    #[error(
        "{name:?} is {kind} now, not {asked}: use it as what it is, or another name \
         (a name takes its kind from its first acquire and keeps it while anyone holds, \
         waits for or delays it)"
    )]
    WrongKind {
        /// The name.
        name: String,
        /// What it is.
        kind: String,
        /// What the request used it as.
        asked: String,
    },
    /// A semaphore acquired with other permits than it was created with.
    #[error(
        "semaphore {name:?} has {permits} permits, not {asked}: every acquire of a semaphore \
         must name the permits it was created with"
    )]
    PermitsMismatch {
        /// The semaphore.
        name: String,
        /// Its permits.
        permits: u32,
        /// The permits the acquire named.
        asked: u32,
    },
    /// A semaphore of no permits, or of too many.
    #[error("a semaphore has 1 to {max} permits, not {asked}")]
    PermitsOutOfRange {
        /// The permits asked for.
        asked: u32,
        /// [`crate::locks::shared::MAX_PERMITS`].
        max: u32,
    },
    /// An acquire of a read/write lock in one mode by a session holding it
    /// in the other.
    #[error(
        "this session holds {name:?} in {held}: release it before acquiring the other mode \
         (an upgrade in place would deadlock two readers upgrading at once)"
    )]
    ModeHeld {
        /// The read/write lock.
        name: String,
        /// The mode it holds.
        held: String,
    },
    /// A force-release naming no grant of a semaphore or read/write lock
    /// that several sessions hold.
    #[error(
        "{holders} sessions hold {name:?}: name the grant to end by its token \
         (`paxlock describe {name}` lists them)"
    )]
    GrantUnnamed {
        /// The semaphore or read/write lock.
        name: String,
        /// How many grants it has.
        holders: u32,
    },
}

/// Why bytes did not decode into a command or a snapshot.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The input is larger than the hard cap for its kind.
    #[error("input of {len} bytes exceeds the cap of {max} bytes")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The bytes are not a valid postcard encoding of the expected type.
    #[error("malformed encoding: {reason}")]
    Malformed {
        /// What postcard reported.
        reason: postcard::Error,
    },
    /// Bytes were left over after the value.
    #[error("{extra} trailing bytes after the encoded value")]
    TrailingBytes {
        /// How many bytes were left.
        extra: usize,
    },
    /// The snapshot format version is not one this code reads: a later
    /// release's, or one only development builds between releases wrote.
    #[error(
        "unsupported snapshot format version {found}: this release reads version {expected} \
         and the previous release's version 1; restore with the release that wrote it, or \
         rebuild this node from its peers (empty data directory under a new id)"
    )]
    UnsupportedVersion {
        /// Version in the bytes.
        found: u32,
        /// Version this code reads.
        expected: u32,
    },
    /// The snapshot decoded but its contents break a state-machine invariant.
    #[error("snapshot violates an invariant: {what}")]
    Inconsistent {
        /// Which invariant.
        what: String,
    },
}

/// Why a value could not be encoded (should not happen for our types; kept
/// typed rather than panicking).
#[derive(Debug, Error)]
#[error("encoding failed: {reason}")]
pub struct EncodeError {
    /// What postcard reported.
    pub reason: postcard::Error,
}
