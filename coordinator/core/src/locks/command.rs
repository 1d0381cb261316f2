//! Commands: what the Paxos log carries, one command per applied entry of a
//! batch, plus the id newtypes they use.

use serde::{Deserialize, Serialize};

use crate::access::AccessRules;
use crate::locks::error::{DecodeError, EncodeError};
use crate::locks::shared::Mode;

/// A session id. Assigned by the state machine: the revision of the
/// `OpenSession` command that created it, so it is unique forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

/// A client-chosen request id, unique and increasing per session, used for
/// exactly-once retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// A fencing token: the state machine's revision at the grant. Strictly
/// increasing across all grants of all locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FencingToken(pub u64);

/// Who a request acts as: the name of the client certificate it came with
/// (see `transport::client_identity`). A session belongs to the identity
/// that opened it; requests of any other identity on it are refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Identity(pub String);

/// Longest identity in bytes: a DNS name's limit, which also holds every
/// certificate common name (at most 64 characters by X.509).
pub const MAX_IDENTITY_BYTES: usize = 253;

impl Identity {
    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The version of the replicated state's rules, recorded in the log (see
/// [`CommandKind::RaiseProtocol`]) so every replica and every later leader
/// agrees on it. Version 2 is the previous release: sessions have no owner.
pub const PROTOCOL_V2: u32 = 2;

/// Version 3: sessions belong to identities (the `...As` commands).
pub const PROTOCOL_V3: u32 = 3;

/// The newest protocol this release applies and proposes.
pub const CURRENT_PROTOCOL: u32 = PROTOCOL_V3;

/// Hard cap on the encoded size of one command: a 512-byte name plus a
/// 64 KiB value plus headers fits with room to spare.
pub const MAX_COMMAND_BYTES: usize = 80 * 1024;

/// One state-machine command as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Logical time in milliseconds, chosen by the leader when proposing
    /// (its clock). The machine never reads a clock; it keeps
    /// `max(at_ms seen so far)` so time never runs backwards across leaders.
    pub at_ms: u64,
    /// What to do.
    pub kind: CommandKind,
}

/// The kinds of command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandKind {
    /// Open a session with the given TTL. Not deduplicated: a retried open
    /// creates a second session, which expires after its TTL unused.
    OpenSession {
        /// Session time-to-live in milliseconds; must be within the limits.
        ttl_ms: u64,
    },
    /// A command issued by a client within a session.
    Client {
        /// Issuing session.
        session: SessionId,
        /// The request id (exactly-once key).
        request_id: RequestId,
        /// The client has received the replies of all its requests below
        /// this id, except `waiting`; the machine may forget them. Capped
        /// at `request_id`.
        ack_below: RequestId,
        /// The client's waits (blocking acquires, campaigns) still running
        /// below `ack_below`: their replies are kept for their retries.
        waiting: Vec<RequestId>,
        /// The operation.
        op: ClientOp,
    },
    /// Proposed by the leader when a session's deadline passed without a
    /// keepalive. Releases everything the session holds, in this apply.
    /// Ignored (error `StaleExpiry`) unless `epoch` is the current leader
    /// epoch: an expiry proposed by an old leader and recovered by a new
    /// one in Paxos phase 1 must not end a session whose keepalives the new
    /// leader has answered since its takeover.
    ExpireSession {
        /// The session to expire.
        session: SessionId,
        /// Epoch of the leader that proposed it (see `Takeover`).
        epoch: u64,
    },
    /// The first command a new Paxos leader proposes after phase 1, with a
    /// strictly larger epoch (e.g. derived from its ballot). It restarts
    /// session deadlines at takeover + TTL in memory and answers keepalives
    /// only after this command is applied; from then on expiries of earlier
    /// epochs are ignored. A non-increasing epoch is ignored.
    Takeover {
        /// The new leader's epoch.
        epoch: u64,
    },
    /// Proposed by the leader to advance logical time, so lock-delays that
    /// have passed grant their waiters even if no other command arrives.
    Tick,
    /// Proposed by a node when a client's blocking acquire or campaign ran
    /// out of time: withdraws the wait (releasing a grant that raced it, so
    /// no orphan holder is left). It has no request id of its own; instead
    /// `up_to` names the withdrawn request: a copy applied after the
    /// session issued a later request is ignored (`StaleAbandon`), because
    /// it would otherwise release a NEWER grant of the same lock that the
    /// client believes it holds (found by the lock simulator, seed 1889).
    Abandon {
        /// The waiting session.
        session: SessionId,
        /// The lock or election name.
        name: String,
        /// What was being waited for.
        wait: AbandonedWait,
        /// The highest request id of the session's withdrawn wait (its
        /// acquire or campaign, and any retries or polls of it). The
        /// session's exactly-once floor is raised past it, so a delayed
        /// copy of the withdrawn request that is chosen AFTER this abandon
        /// is rejected (`RequestIdAcked`) instead of queueing the session
        /// again as an orphan waiter (found by the lock simulator, seed 213).
        up_to: RequestId,
    },
    // Variants below are protocol 3: a node of the previous release cannot
    // decode them, so a leader proposes them only once the log says every
    // node speaks protocol 3 (`RaiseProtocol`). New variants go at the end:
    // the encoding numbers them by position.
    /// Records that every node of the cluster speaks `version`, so leaders
    /// may propose its commands from now on. Never lowers the version.
    RaiseProtocol {
        /// The version every node speaks.
        version: u32,
    },
    /// [`CommandKind::OpenSession`] by `owner`: the session belongs to it.
    /// Exactly-once by `open_key`: while a session `owner` opened with the
    /// same non-zero key lives, a copy answers that session instead of
    /// opening another.
    OpenSessionAs {
        /// Session time-to-live in milliseconds.
        ttl_ms: u64,
        /// The identity that opens (and owns) the session.
        owner: Identity,
        /// The client's key for this open (the same on its retries); 0:
        /// none, every copy opens a session.
        open_key: u64,
    },
    /// [`CommandKind::Client`] sent by `caller`: refused (and nothing
    /// applied, acknowledged or recorded) unless the session belongs to
    /// `caller`. A session without an owner (opened before protocol 3) is
    /// claimed by its first caller.
    ClientAs {
        /// The identity the request came from.
        caller: Identity,
        /// Issuing session.
        session: SessionId,
        /// The request id (exactly-once key).
        request_id: RequestId,
        /// As in [`CommandKind::Client`].
        ack_below: RequestId,
        /// As in [`CommandKind::Client`].
        waiting: Vec<RequestId>,
        /// The operation.
        op: ClientOp,
    },
    /// Claims a session opened before protocol 3 for `owner` (proposed when
    /// its first keepalive since arrives); refused if another identity
    /// owns it already.
    ClaimSession {
        /// The session.
        session: SessionId,
        /// The identity claiming it.
        owner: Identity,
    },
    /// Replaces the cluster's access rules (see [`crate::access`]);
    /// proposed for an administrator, whom the node checked. Refused
    /// (nothing changed) if the rules break a bound, or if
    /// `expected_version` is given and is not the version of the rules in
    /// force (another administrator changed them since they were read).
    SetAccessRules {
        /// The administrator who set them (kept in the log for audit).
        by: Identity,
        /// The new rules; empty restores the open default.
        rules: AccessRules,
        /// The version ([`crate::locks::StateMachine::access_version`])
        /// the administrator's change was made against, if any.
        expected_version: Option<u64>,
    },
    /// Ends a session now, for an administrator, whom the node checked: as
    /// an expiry does, except that each lock it held stays in lock-delay
    /// for the longer of the lock-delay and the session's TTL. The
    /// session's client may have had a keepalive answered just before, so
    /// its lease runs up to a TTL past the revocation: no other session
    /// may be granted its locks before that lease is over.
    RevokeSession {
        /// The administrator who revoked it (kept in the log for audit).
        by: Identity,
        /// The session.
        session: SessionId,
    },
    /// Ends the current grant of a lock now, for an administrator whom
    /// the node checked; the holder's session lives on. As for a revoked
    /// session, the lock stays in lock-delay for the longer of the
    /// lock-delay and the holder's TTL (its client may have had a
    /// keepalive answered just before), and the holder's keepalive answers
    /// name the taken grant until then, so its client stops using it
    /// within one keepalive interval.
    ForceRelease {
        /// The administrator who released it (kept in the log for audit).
        by: Identity,
        /// The lock.
        name: String,
        /// The grant to end: the one current when the leader admitted the
        /// request, whose session's keepalives it holds back until this is
        /// applied. Another grant by then is not taken (`NotHeld`).
        token: FencingToken,
    },
}

impl CommandKind {
    /// The protocol version that introduced this kind of command: a leader
    /// proposes it only once the log records that every node speaks it.
    pub fn protocol(&self) -> u32 {
        match self {
            // An acquire with a value is the previous release's command
            // only in form: its layout is new (see `ClientOpLayout`).
            CommandKind::Client {
                op: ClientOp::Acquire { value, .. },
                ..
            } if !value.is_empty() => PROTOCOL_V3,
            CommandKind::Client {
                op: ClientOp::AcquireShared { .. },
                ..
            } => PROTOCOL_V3,
            CommandKind::OpenSession { .. }
            | CommandKind::Client { .. }
            | CommandKind::ExpireSession { .. }
            | CommandKind::Takeover { .. }
            | CommandKind::Tick
            | CommandKind::Abandon { .. } => PROTOCOL_V2,
            CommandKind::RaiseProtocol { version } => (*version).min(CURRENT_PROTOCOL),
            CommandKind::OpenSessionAs { .. }
            | CommandKind::ClientAs { .. }
            | CommandKind::ClaimSession { .. }
            | CommandKind::SetAccessRules { .. }
            | CommandKind::RevokeSession { .. }
            | CommandKind::ForceRelease { .. } => PROTOCOL_V3,
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl CommandKind {
    /// Test shorthand: request `request_id` of `session`, acknowledging
    /// nothing.
    pub fn client_op(session: u64, request_id: u64, op: ClientOp) -> CommandKind {
        CommandKind::Client {
            session: SessionId(session),
            request_id: RequestId(request_id),
            ack_below: RequestId(0),
            waiting: Vec::new(),
            op,
        }
    }
}

/// What an `Abandon` withdraws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbandonedWait {
    /// A queued acquire (applied as `CancelAcquire`).
    Acquire,
    /// A queued candidacy (applied as `Resign`).
    Campaign,
}

/// Operations a client performs inside its session.
///
/// Encoded through [`ClientOpLayout`]: an acquire without a value has the
/// previous release's encoding, so the log entries of a cluster still at
/// protocol 2 are the same whichever release proposed them; one with a
/// value (protocol 3 only: admission refuses it before) has its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ClientOpLayout", into = "ClientOpLayout")]
pub enum ClientOp {
    /// Close the session, releasing all it holds in this apply.
    CloseSession,
    /// Acquire a lock. `wait = true` joins the FIFO queue if the lock is
    /// busy; `wait = false` fails with `Busy` instead.
    Acquire {
        /// Lock name.
        name: String,
        /// Block (queue) rather than fail when busy.
        wait: bool,
        /// The grant's value, shown by inspection while it holds (bounded
        /// like an election's value; empty: none).
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Release a lock held with `token`.
    Release {
        /// Lock name.
        name: String,
        /// The grant being released.
        token: FencingToken,
    },
    /// Validate that `token` is still this session's grant of the lock.
    Check {
        /// Lock name.
        name: String,
        /// The grant to validate.
        token: FencingToken,
    },
    /// Give up a pending acquire. If the grant already happened it is
    /// released, so no orphan holder is left.
    CancelAcquire {
        /// Lock name.
        name: String,
    },
    /// Join an election as a candidate with a value.
    Campaign {
        /// Election name.
        name: String,
        /// The candidate's value, published while it leads.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Leave an election (as leader or queued candidate).
    Resign {
        /// Election name.
        name: String,
    },
    /// Update the leader's published value. Only the leader may.
    Proclaim {
        /// Election name.
        name: String,
        /// The new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Acquire a permit of a semaphore, or a read/write lock in read or
    /// write mode (protocol 3; see [`crate::locks::shared`]). Released,
    /// checked and cancelled like a lock, by name.
    AcquireShared {
        /// The semaphore's or read/write lock's name.
        name: String,
        /// Block (queue) rather than fail when it does not fit.
        wait: bool,
        /// A permit, or read or write mode.
        mode: Mode,
        /// A semaphore's permits (the first acquire fixes them, later ones
        /// must name the same); 0 otherwise.
        permits: u32,
    },
}

/// [`ClientOp`] as the log stores it: the previous release's variants in
/// their order, then the ones added since.
#[derive(Clone, Serialize, Deserialize)]
enum ClientOpLayout {
    CloseSession,
    Acquire {
        name: String,
        wait: bool,
    },
    Release {
        name: String,
        token: FencingToken,
    },
    Check {
        name: String,
        token: FencingToken,
    },
    CancelAcquire {
        name: String,
    },
    Campaign {
        name: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Resign {
        name: String,
    },
    Proclaim {
        name: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Protocol 3: an acquire with a value.
    AcquireWithValue {
        name: String,
        wait: bool,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Protocol 3: a semaphore's or read/write lock's acquire.
    AcquireShared {
        name: String,
        wait: bool,
        mode: Mode,
        permits: u32,
    },
}

impl From<ClientOp> for ClientOpLayout {
    fn from(op: ClientOp) -> ClientOpLayout {
        match op {
            ClientOp::CloseSession => ClientOpLayout::CloseSession,
            ClientOp::Acquire { name, wait, value } if value.is_empty() => {
                ClientOpLayout::Acquire { name, wait }
            }
            ClientOp::Acquire { name, wait, value } => {
                ClientOpLayout::AcquireWithValue { name, wait, value }
            }
            ClientOp::Release { name, token } => ClientOpLayout::Release { name, token },
            ClientOp::Check { name, token } => ClientOpLayout::Check { name, token },
            ClientOp::CancelAcquire { name } => ClientOpLayout::CancelAcquire { name },
            ClientOp::Campaign { name, value } => ClientOpLayout::Campaign { name, value },
            ClientOp::Resign { name } => ClientOpLayout::Resign { name },
            ClientOp::Proclaim { name, value } => ClientOpLayout::Proclaim { name, value },
            ClientOp::AcquireShared {
                name,
                wait,
                mode,
                permits,
            } => ClientOpLayout::AcquireShared {
                name,
                wait,
                mode,
                permits,
            },
        }
    }
}

impl From<ClientOpLayout> for ClientOp {
    fn from(op: ClientOpLayout) -> ClientOp {
        match op {
            ClientOpLayout::CloseSession => ClientOp::CloseSession,
            ClientOpLayout::Acquire { name, wait } => ClientOp::Acquire {
                name,
                wait,
                value: Vec::new(),
            },
            ClientOpLayout::AcquireWithValue { name, wait, value } => {
                ClientOp::Acquire { name, wait, value }
            }
            ClientOpLayout::Release { name, token } => ClientOp::Release { name, token },
            ClientOpLayout::Check { name, token } => ClientOp::Check { name, token },
            ClientOpLayout::CancelAcquire { name } => ClientOp::CancelAcquire { name },
            ClientOpLayout::Campaign { name, value } => ClientOp::Campaign { name, value },
            ClientOpLayout::Resign { name } => ClientOp::Resign { name },
            ClientOpLayout::Proclaim { name, value } => ClientOp::Proclaim { name, value },
            ClientOpLayout::AcquireShared {
                name,
                wait,
                mode,
                permits,
            } => ClientOp::AcquireShared {
                name,
                wait,
                mode,
                permits,
            },
        }
    }
}

impl Command {
    /// Encodes the command for the log.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        postcard::to_allocvec(self).map_err(|reason| EncodeError { reason })
    }

    /// Decodes a command from log bytes. Never panics on bad input: inputs
    /// over [`MAX_COMMAND_BYTES`], malformed, or with trailing bytes are
    /// typed errors. (Limits on names and values are checked at apply, so
    /// that every replica rejects the same commands the same way.)
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        decode_exact(bytes, MAX_COMMAND_BYTES)
    }
}

/// Decodes exactly one `T` from `bytes`, rejecting oversize input and
/// trailing garbage.
pub(crate) fn decode_exact<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    max: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (value, rest) = postcard::take_from_bytes::<T>(bytes)
        .map_err(|reason| DecodeError::Malformed { reason })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { extra: rest.len() });
    }
    Ok(value)
}
