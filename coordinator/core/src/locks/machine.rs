//! The state machine proper: [`StateMachine::apply`].
//!
//! # Revision rule
//!
//! `revision` advances by one for **every** applied command, whatever its
//! outcome (granted, rejected by a limit, a duplicate retry, an unknown
//! session). Revision is therefore a pure function of how many commands
//! were applied, plus one further step per extra grant described next.
//!
//! A fencing token is the revision at the grant: of a lock, and from
//! protocol 3 on of a leadership too (a win, by campaign or by promotion;
//! a proclaim keeps the leadership's token). One command can grant
//! several (an expiry whose session held three contended locks and led
//! two elections), so the first grant of a command uses the command's
//! revision and every further grant in the same command first advances
//! the revision by one. Hence tokens are strictly increasing across all
//! locks and leaderships and never reused.
//!
//! # What a rejected command changes
//!
//! Nothing in sessions, locks or elections. It does: advance `revision`
//! (above), raise `last_applied_slot`, raise the logical clock to `at_ms`
//! (which may let pending lock-delays grant waiters, as any command does),
//! apply the client's `ack_below`, and record the error in the session's
//! exactly-once table so a retry gets the same answer. Recording errors is
//! what keeps a late duplicate of a rejected try-acquire from being granted
//! after the client was told "busy".
//!
//! # Expiry and leader epochs
//!
//! Keepalives are not logged. A new Paxos leader first gets
//! `Takeover { epoch }` applied (then restarts deadlines at takeover + TTL
//! and starts answering keepalives); `ExpireSession` applies only if it
//! carries the current epoch, so an expiry proposed by a deposed leader and
//! re-proposed during recovery cannot end a session the new leader has
//! kept alive.
//!
//! # Sessions belong to identities
//!
//! From protocol 3 on (see [`CommandKind::RaiseProtocol`]) a leader opens
//! sessions with `OpenSessionAs` and sends requests as `ClientAs`, both
//! naming the identity of the client's certificate. A `ClientAs` whose
//! caller is not the session's owner is refused with `PermissionDenied`
//! before anything else: its `ack_below` is not applied and nothing is
//! recorded for its request id, so another identity can neither act for
//! the session nor read, drop or shadow its recorded answers. A session
//! opened before protocol 3 has no owner until its first `ClientAs` or
//! `ClaimSession` sets it; a request without a caller (`Client`) is
//! refused on any owned session.
//!
//! # Term rule
//!
//! An election's term increases by exactly one on every change of leader
//! identity, including a change to "no leader" and from "no leader". A
//! proclaim keeps the term. Every change is an [`Event::Election`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::access::{AccessRules, QuotaKind};

use crate::locks::command::{
    AbandonedWait, ClientOp, Command, CommandKind, FencingToken, Identity, RequestId, SessionId,
    MAX_IDENTITY_BYTES, PROTOCOL_V2, PROTOCOL_V3,
};
use crate::locks::dedup::Lookup;
use crate::locks::election::{Election, HistoryGone, Leader};
use crate::locks::error::CommandError;
use crate::locks::event::{
    CloseReason, ElectionChange, ElectionEvent, Event, ReleaseReason, SharedGranted,
};
use crate::locks::limits::Config;
use crate::locks::lock::{Holder, Lock, Waiter};
use crate::locks::session::{Session, MAX_TAKEN_GRANTS};
use crate::locks::shared::{Mode, SharedKind, SharedLock};
use crate::locks::state_size;

/// The answer to the command's issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A session was opened.
    SessionOpened {
        /// Its id.
        session: SessionId,
    },
    /// The session was closed and everything it held released.
    SessionClosed,
    /// The session holds the lock with this token (newly, or already:
    /// re-acquiring returns the same grant).
    Granted {
        /// Fencing token of the grant.
        token: FencingToken,
    },
    /// The session is queued; a later [`Event::LockGranted`] names it.
    /// A retry of the same request returns this recorded answer even after
    /// the grant; a client that lost the grant event re-learns its state
    /// with a NEW `Acquire` (idempotent: returns the grant or position).
    Queued {
        /// 1-based position in the FIFO queue.
        position: u32,
    },
    /// Try-acquire of a lock that is held or in lock-delay.
    Busy {
        /// The current grant's token, if held.
        current: Option<FencingToken>,
        /// End of the lock-delay, if that is why.
        delayed_until_ms: Option<u64>,
    },
    /// The lock was released.
    Released,
    /// The token is this session's current grant.
    Valid,
    /// A pending acquire was cancelled. `released` is the grant that had
    /// already happened and was released now, if any.
    Cancelled {
        /// The released grant, if the acquire had already been granted.
        released: Option<FencingToken>,
    },
    /// The session leads the election in this term (newly or already).
    Elected {
        /// The term.
        term: u64,
        /// The leadership's fencing token, from the sequence lock grants
        /// draw from (`None`: won before the log recorded protocol 3).
        token: Option<FencingToken>,
    },
    /// The session is a queued candidate.
    Candidate {
        /// 1-based position in the candidate queue.
        position: u32,
    },
    /// The session no longer leads or campaigns in the election.
    Resigned,
    /// The leader's new value was published.
    Proclaimed {
        /// The (unchanged) term.
        term: u64,
    },
    /// Leader-proposed commands (`ExpireSession`, `Takeover`, `Tick`) carry
    /// no answer.
    Done,
    /// An administrator's `ForceRelease` ended this grant (protocol 3; never
    /// a session's recorded reply).
    Taken {
        /// The session that held it, which lives on.
        session: SessionId,
        /// The grant's token.
        token: FencingToken,
    },
    /// The session holds a semaphore's permit or a read/write lock (newly,
    /// or already: re-acquiring returns the same grant; see
    /// [`crate::locks::shared`]).
    GrantedShared {
        /// The grant's own token: what releases and renewals present.
        token: FencingToken,
        /// Its fencing value and slot.
        shared: SharedGranted,
    },
}

/// Everything one apply produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Revision after this command.
    pub revision: u64,
    /// The answer for the issuer.
    pub reply: Result<Reply, CommandError>,
    /// True if `reply` is a recorded answer to an earlier copy of this
    /// request (nothing was applied this time).
    pub duplicate: bool,
    /// State changes, in order, for watchers and waiting clients.
    pub events: Vec<Event>,
}

/// Monitoring sizes of the state machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Live sessions.
    pub sessions: u64,
    /// Locks with a holder.
    pub locks_held: u64,
    /// Acquires waiting in FIFO queues.
    pub waiters: u64,
    /// Elections that currently have a leader.
    pub elections_led: u64,
    /// The state's counted bytes (see [`crate::locks::state_size`]).
    pub state_bytes: u64,
    /// Their bound, `max_state_bytes`.
    pub max_state_bytes: u64,
}

/// A read of an election's current leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderView {
    /// Leading session.
    pub session: SessionId,
    /// Its published value.
    pub value: Vec<u8>,
    /// The current term.
    pub term: u64,
    /// The leadership's fencing token (`None`: won before the log
    /// recorded protocol 3).
    pub token: Option<FencingToken>,
    /// The identity the leading session belongs to (`None`: opened before
    /// protocol 3 and not claimed yet).
    pub owner: Option<Identity>,
}

/// The replicated state machine. Serializable as a whole (see
/// [`crate::locks::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachine {
    pub(crate) config: Config,
    pub(crate) revision: u64,
    pub(crate) now_ms: u64,
    pub(crate) last_applied_slot: u64,
    /// Epoch of the latest applied `Takeover`; only its expiries apply.
    pub(crate) leader_epoch: u64,
    pub(crate) sessions: BTreeMap<SessionId, Session>,
    pub(crate) locks: BTreeMap<String, Lock>,
    pub(crate) elections: BTreeMap<String, Election>,
    /// Locks in lock-delay, by the time the delay ends.
    pub(crate) delays: BTreeSet<(u64, String)>,
    /// The protocol every node speaks, as recorded by `RaiseProtocol`:
    /// which commands a leader may propose.
    pub(crate) protocol: u32,
    /// Who may do what (see [`crate::access`]): the rules in force, and
    /// the revision that set them (0: never set).
    pub(crate) access: AccessRules,
    pub(crate) access_version: u64,
    /// The highest term and event index of every election removed (to make
    /// room, once nobody led or campaigned in it): an election (re)created
    /// starts above them, so a name's terms and indices never go back.
    pub(crate) election_floor: ElectionFloor,
    /// Semaphores and read/write locks (see [`crate::locks::shared`]),
    /// beside `locks`: a name is in at most one of the two.
    pub(crate) shared: BTreeMap<String, SharedLock>,
    /// (owner, open key) → the live session opened with them: derived from
    /// `sessions` (rebuilt on restore), for exactly-once opens.
    #[serde(skip)]
    pub(crate) open_keys: BTreeMap<(Identity, u64), SessionId>,
    /// What each identity's sessions hold together, for its quotas:
    /// derived from `sessions` (rebuilt on restore).
    #[serde(skip)]
    pub(crate) usage: BTreeMap<Identity, Usage>,
    /// Session -> bytes of the values it leads or campaigns with: derived
    /// from `elections` (rebuilt on restore).
    #[serde(skip)]
    pub(crate) value_bytes: BTreeMap<SessionId, u64>,
    /// The state's counted bytes ([`crate::locks::state_size`]): derived,
    /// kept up to date by `apply`, recounted on restore.
    #[serde(skip)]
    pub(crate) state_bytes: u64,
}

/// Where elections created from now on start (see
/// `StateMachine::election_floor`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionFloor {
    /// Highest term of a removed election.
    pub term: u64,
    /// Highest event index of a removed election.
    pub index: u64,
}

impl ElectionFloor {
    /// A new election above the floor (exactly the previous release's
    /// empty election while nothing was removed).
    fn new_election(self) -> Election {
        if self == ElectionFloor::default() {
            return Election::default();
        }
        Election {
            term: self.term,
            next_index: self.index + 1,
            ..Election::default()
        }
    }
}

/// What one identity's live sessions hold together: what its quotas
/// ([`crate::access::Quotas`]) bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Live sessions.
    pub sessions: u32,
    /// Locks held and waited for.
    pub locks: u32,
    /// Elections led or campaigned in.
    pub elections: u32,
    /// Bytes of the values it leads or campaigns with.
    pub value_bytes: u64,
}

impl Usage {
    fn of(session: &Session, value_bytes: u64) -> Usage {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Usage {
            sessions: 1,
            locks: count(session.lock_count()),
            elections: count(session.campaigns.len()),
            value_bytes,
        }
    }

    fn add(&mut self, other: Usage) {
        self.sessions = self.sessions.saturating_add(other.sessions);
        self.locks = self.locks.saturating_add(other.locks);
        self.elections = self.elections.saturating_add(other.elections);
        self.value_bytes = self.value_bytes.saturating_add(other.value_bytes);
    }

    fn sub(&mut self, other: Usage) {
        self.sessions = self.sessions.saturating_sub(other.sessions);
        self.locks = self.locks.saturating_sub(other.locks);
        self.elections = self.elections.saturating_sub(other.elections);
        self.value_bytes = self.value_bytes.saturating_sub(other.value_bytes);
    }
}

/// The names from the first at least `prefix` and above `after` (`""`:
/// from `prefix`), for pages of a list.
pub(crate) fn names_from<'a>(
    prefix: &'a str,
    after: &'a str,
) -> (std::ops::Bound<&'a str>, std::ops::Bound<&'a str>) {
    use std::ops::Bound;
    let start = if !after.is_empty() && after >= prefix {
        Bound::Excluded(after)
    } else {
        Bound::Included(prefix)
    };
    (start, Bound::Unbounded)
}

/// The session a command acts on, whose holdings it may change (a command
/// changes what other sessions hold only by moving a waiter to holder or a
/// candidate to leader, which changes no count).
fn acting_session(kind: &CommandKind) -> Option<SessionId> {
    match kind {
        CommandKind::Client { session, .. }
        | CommandKind::ClientAs { session, .. }
        | CommandKind::ExpireSession { session, .. }
        | CommandKind::Abandon { session, .. }
        | CommandKind::ClaimSession { session, .. }
        | CommandKind::RevokeSession { session, .. } => Some(*session),
        _ => None,
    }
}

/// The entries one command may change (see `StateMachine::touched_by`).
#[derive(Default)]
struct Touched {
    sessions: Vec<SessionId>,
    locks: Vec<String>,
    elections: Vec<String>,
}

/// Per-apply scratch: the events produced and whether this command already
/// granted once (see the revision rule).
#[derive(Default)]
pub(crate) struct Cx {
    pub(crate) events: Vec<Event>,
    granted: bool,
}

impl StateMachine {
    /// Whether a promotion keeps the deposed leader's token (canary
    /// builds only).
    fn canary_inherit_leader_token() -> bool {
        #[cfg(feature = "canary")]
        return canary::inherit_leader_token();
        #[cfg(not(feature = "canary"))]
        false
    }

    /// Whether the exactly-once rule is switched off (canary builds only).
    fn canary_reapply_duplicates() -> bool {
        #[cfg(feature = "canary")]
        return canary::reapply_duplicates();
        #[cfg(not(feature = "canary"))]
        false
    }

    /// An empty machine at revision 0.
    pub fn new(config: Config) -> Self {
        StateMachine {
            config,
            revision: 0,
            now_ms: 0,
            last_applied_slot: 0,
            leader_epoch: 0,
            sessions: BTreeMap::new(),
            locks: BTreeMap::new(),
            elections: BTreeMap::new(),
            delays: BTreeSet::new(),
            protocol: PROTOCOL_V2,
            access: AccessRules::default(),
            access_version: 0,
            election_floor: ElectionFloor::default(),
            shared: BTreeMap::new(),
            open_keys: BTreeMap::new(),
            usage: BTreeMap::new(),
            value_bytes: BTreeMap::new(),
            state_bytes: 0,
        }
    }

    /// Takes from `own` (this replica's configuration) what snapshots do
    /// not carry: [`Limits::max_state_bytes`](crate::locks::Limits::max_state_bytes)
    /// (see [`StateMachine::restore_as_replica`]).
    pub(crate) fn adopt_unsnapshotted(&mut self, own: &Config) {
        #[cfg(feature = "canary")]
        if canary::snapshot_bound() {
            return;
        }
        self.config.limits.max_state_bytes = own.limits.max_state_bytes;
    }

    /// Applies one command chosen at log `slot` (several commands may share
    /// a slot; slots must not decrease). Deterministic: same state and
    /// command give the same output and state on every replica.
    pub fn apply(&mut self, slot: u64, command: Command) -> Output {
        debug_assert!(slot >= self.last_applied_slot, "slots applied out of order");
        self.last_applied_slot = self.last_applied_slot.max(slot);
        self.revision += 1;
        self.now_ms = self.now_ms.max(command.at_ms);
        let mut touched = self.touched_by(&command.kind);
        let counted_before = self.counted_bytes(&touched);
        let mut cx = Cx::default();
        self.end_passed_delays(&mut cx);
        if command.kind.protocol() > self.protocol {
            // A leader proposes a command of protocol 3 only once every
            // node speaks it, so the command itself records that.
            self.protocol = command.kind.protocol();
        }
        let acting = match &command.kind {
            // The holder's session loses the grant.
            CommandKind::ForceRelease { name, token, .. } => {
                self.grant_to_take(name, Some(*token)).ok().map(|(s, _)| s)
            }
            kind => acting_session(kind),
        };
        let before = acting.and_then(|session| self.footprint(session));
        if let Some(s) = acting.and_then(|session| self.sessions.get_mut(&session)) {
            // Taken grants are kept only while their lock-delay lasts.
            s.forget_taken(self.now_ms);
        }
        let (reply, duplicate) = match command.kind {
            CommandKind::OpenSession { ttl_ms } => {
                (self.open_session(ttl_ms, None, &mut cx), false)
            }
            CommandKind::OpenSessionAs {
                ttl_ms,
                owner,
                open_key,
            } => match check_identity(&owner) {
                Err(e) => (Err(e), false),
                Ok(()) => match self.opened_with(&owner, open_key) {
                    Some(session) => (Ok(Reply::SessionOpened { session }), true),
                    None => {
                        let owner_key = owner.clone();
                        let opened = self.open_session(ttl_ms, Some(owner), &mut cx);
                        if let Ok(Reply::SessionOpened { session }) = &opened {
                            let footprint = self.footprint(*session);
                            self.account(None, footprint);
                            if let (true, Some(s)) = (open_key != 0, self.sessions.get_mut(session))
                            {
                                s.open_key = open_key;
                                self.open_keys.insert((owner_key, open_key), *session);
                            }
                        }
                        (opened, false)
                    }
                },
            },
            CommandKind::Client {
                session,
                request_id,
                ack_below,
                waiting,
                op,
            } => match self.authorize(session, None) {
                Ok(()) => self.apply_client(session, request_id, ack_below, &waiting, op, &mut cx),
                Err(e) => (Err(e), false),
            },
            CommandKind::ClientAs {
                caller,
                session,
                request_id,
                ack_below,
                waiting,
                op,
            } => match self.authorize(session, Some(caller)) {
                Ok(()) => self.apply_client(session, request_id, ack_below, &waiting, op, &mut cx),
                Err(e) => (Err(e), false),
            },
            CommandKind::ClaimSession { session, owner } => {
                let reply = if self.sessions.contains_key(&session) {
                    self.authorize(session, Some(owner)).map(|()| Reply::Done)
                } else {
                    Err(CommandError::SessionNotFound { session })
                };
                (reply, false)
            }
            // Raised above, like every command's protocol.
            CommandKind::RaiseProtocol { .. } => (Ok(Reply::Done), false),
            CommandKind::SetAccessRules {
                by: _,
                rules,
                expected_version,
            } => (self.set_access_rules(rules, expected_version), false),
            CommandKind::ExpireSession { session, epoch } => {
                let reply = if epoch != self.leader_epoch {
                    Err(CommandError::StaleExpiry {
                        epoch,
                        current: self.leader_epoch,
                    })
                } else if self.sessions.contains_key(&session) {
                    self.end_session(session, CloseReason::Expired, &mut cx);
                    Ok(Reply::Done)
                } else {
                    Err(CommandError::SessionNotFound { session })
                };
                (reply, false)
            }
            CommandKind::RevokeSession { by: _, session } => {
                let reply = if self.sessions.contains_key(&session) {
                    self.end_session(session, CloseReason::Revoked, &mut cx);
                    Ok(Reply::SessionClosed)
                } else {
                    Err(CommandError::SessionNotFound { session })
                };
                (reply, false)
            }
            CommandKind::ForceRelease { by: _, name, token } => {
                (self.force_release(&name, token, &mut cx), false)
            }
            CommandKind::Takeover { epoch } => {
                self.leader_epoch = self.leader_epoch.max(epoch);
                (Ok(Reply::Done), false)
            }
            CommandKind::Tick => (Ok(Reply::Done), false),
            CommandKind::Abandon {
                session,
                name,
                wait,
                up_to,
            } => {
                // A copy chosen after the session moved on must not touch
                // its later wait or grant of the same name.
                let stale = self
                    .sessions
                    .get(&session)
                    .is_some_and(|s| s.dedup.moved_past(up_to));
                // Fence later copies of the withdrawn request (see `up_to`).
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.dedup.withdraw(up_to);
                }
                let reply = if stale {
                    Err(CommandError::StaleAbandon { up_to })
                } else if self.sessions.contains_key(&session) {
                    let op = match wait {
                        AbandonedWait::Acquire => ClientOp::CancelAcquire { name },
                        AbandonedWait::Campaign => ClientOp::Resign { name },
                    };
                    self.apply_op(session, op, &mut cx)
                } else {
                    Err(CommandError::SessionNotFound { session })
                };
                (reply, false)
            }
        };
        if let Some(session) = acting {
            let after = self.footprint(session);
            self.account(before, after);
        }
        // A session this command opened did not exist before it: counted
        // after only. (Its id is the revision after the command's grants,
        // which lock-delays ending now may have advanced.)
        if let (Ok(Reply::SessionOpened { session }), false) = (&reply, duplicate) {
            touched.sessions.push(*session);
        }
        let counted_after = self.counted_bytes(&touched);
        self.state_bytes = self
            .state_bytes
            .saturating_sub(counted_before)
            .saturating_add(counted_after);
        debug_assert_eq!(self.check_invariants(), Ok(()));
        Output {
            revision: self.revision,
            reply,
            duplicate,
            events: cx.events,
        }
    }

    // ----- reads -------------------------------------------------------

    /// The configuration this machine applies with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Revision after the last applied command.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The logical clock: the largest `at_ms` applied so far.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// When the earliest lock-delay in force ends, on the logical clock
    /// (`None`: no lock is in lock-delay). A command stamped at or after it
    /// ends that delay.
    pub fn next_delay_end_ms(&self) -> Option<u64> {
        self.delays.first().map(|(until_ms, _)| *until_ms)
    }

    /// Epoch of the latest applied `Takeover` (0 before any). A leader
    /// proposes `ExpireSession` with this epoch once its takeover applied.
    pub fn leader_epoch(&self) -> u64 {
        self.leader_epoch
    }

    /// Makes this state the first of a new cluster (`new_cluster`): the
    /// revision jumps by `bump`, so every later fencing token is above
    /// every token granted before plus `bump`, and the leader epoch starts
    /// again at 0, so the new cluster's first takeover (whose ballot starts
    /// low) is the current one. `None`, and nothing changed, if the
    /// revision would overflow.
    pub fn begin_new_cluster(&mut self, bump: u64) -> Option<()> {
        self.revision = self.revision.checked_add(bump)?;
        self.leader_epoch = 0;
        Some(())
    }

    /// The highest slot applied so far.
    pub fn last_applied_slot(&self) -> u64 {
        self.last_applied_slot
    }

    /// The protocol every node of the cluster speaks, as the log records
    /// it: a leader proposes only commands of this version or older.
    pub fn protocol(&self) -> u32 {
        self.protocol
    }

    /// The access rules in force (see [`crate::access`]).
    pub fn access_rules(&self) -> &AccessRules {
        &self.access
    }

    /// The version of the access rules in force: the revision of the
    /// command that set them, 0 if none ever did. A change may name it
    /// (`expected_version`) so that two administrators cannot overwrite
    /// each other unknowingly.
    pub fn access_version(&self) -> u64 {
        self.access_version
    }

    /// The state's counted bytes (see [`crate::locks::state_size`]): what
    /// `max_state_bytes` bounds.
    pub fn state_bytes(&self) -> u64 {
        self.state_bytes
    }

    /// What `identity`'s live sessions hold together.
    pub fn usage(&self, identity: &Identity) -> Usage {
        self.usage.get(identity).copied().unwrap_or_default()
    }

    /// The identity a live session belongs to: `Ok(None)` for a session
    /// opened before protocol 3 and not claimed yet, `Err` if it is not live.
    pub fn session_owner(&self, session: SessionId) -> Result<Option<&Identity>, CommandError> {
        self.sessions
            .get(&session)
            .map(|s| s.owner.as_ref())
            .ok_or(CommandError::SessionNotFound { session })
    }

    /// Live sessions with their TTLs, in id order. A new leader restarts
    /// every deadline at `takeover + ttl_ms` from this list.
    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, u64)> + '_ {
        self.sessions.iter().map(|(id, s)| (*id, s.ttl_ms))
    }

    /// The TTL of a live session, in milliseconds; `None` if it is not live.
    pub fn session_ttl_ms(&self, session: SessionId) -> Option<u64> {
        self.sessions.get(&session).map(|s| s.ttl_ms)
    }

    /// The session's grants an administrator force-released whose
    /// lock-delay is not over: what its keepalive answers name, so its
    /// client stops using them (empty for an unknown session).
    pub fn taken_grants(&self, session: SessionId) -> Vec<FencingToken> {
        #[cfg(feature = "canary")]
        if canary::untold_taken() {
            return Vec::new();
        }
        self.sessions
            .get(&session)
            .map(|s| s.taken_at(self.now_ms).collect())
            .unwrap_or_default()
    }

    /// Whether the session is live.
    pub fn has_session(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// The lock's current grant.
    pub fn holder(&self, name: &str) -> Option<Holder> {
        self.locks.get(name).and_then(|l| l.holder)
    }

    /// The lock's queued sessions, front first.
    pub fn waiters(&self, name: &str) -> Vec<SessionId> {
        self.locks
            .get(name)
            .map(|l| l.waiters.iter().map(|w| w.session).collect())
            .unwrap_or_default()
    }

    /// The lock `name` whole (`None`: nobody holds, waits for or delays
    /// it; the machine keeps no such lock).
    pub fn lock(&self, name: &str) -> Option<&Lock> {
        self.locks.get(name)
    }

    /// When the lock's lock-delay ends, on the logical clock (`None`: not
    /// in lock-delay).
    pub fn lock_delayed_until_ms(&self, name: &str) -> Option<u64> {
        self.locks.get(name).and_then(|l| l.delayed_until_ms)
    }

    /// Locks in name order from the first whose name is at least `prefix`
    /// and above `after` (`""`: from `prefix`), for pages of a list.
    pub fn locks_from<'a>(
        &'a self,
        prefix: &'a str,
        after: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Lock)> + 'a {
        self.locks.range::<str, _>(names_from(prefix, after))
    }

    /// Live sessions with ids above `after`, in id order.
    pub fn sessions_after(&self, after: SessionId) -> impl Iterator<Item = (SessionId, &Session)> {
        use std::ops::Bound;
        self.sessions
            .range((Bound::Excluded(after), Bound::Unbounded))
            .map(|(id, s)| (*id, s))
    }

    /// The election's current leader, value and term (a read; linearizable
    /// only when served under the Paxos leader lease).
    pub fn leader(&self, name: &str) -> Option<LeaderView> {
        let e = self.elections.get(name)?;
        e.leader.as_ref().map(|l| LeaderView {
            session: l.session,
            value: l.value.clone(),
            term: e.term,
            token: e.token,
            owner: self.sessions.get(&l.session).and_then(|s| s.owner.clone()),
        })
    }

    /// Sizes for monitoring: live sessions, held locks, queued waiters,
    /// elections with a leader, the state's counted bytes and their bound.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            sessions: self.sessions.len() as u64,
            locks_held: self.locks.values().filter(|l| l.holder.is_some()).count() as u64
                + self
                    .shared
                    .values()
                    .filter(|l| !l.grants.is_empty())
                    .count() as u64,
            waiters: self
                .locks
                .values()
                .map(|l| l.waiters.len() as u64)
                .sum::<u64>()
                + self
                    .shared
                    .values()
                    .map(|l| l.waiters.len() as u64)
                    .sum::<u64>(),
            elections_led: self
                .elections
                .values()
                .filter(|e| e.leader.is_some())
                .count() as u64,
            state_bytes: self.state_bytes,
            max_state_bytes: self.config.limits.max_state_bytes,
        }
    }

    /// The election's term (0 if it never had a leader or does not exist).
    pub fn term(&self, name: &str) -> u64 {
        self.elections
            .get(name)
            .map_or(self.election_floor.term, |e| e.term)
    }

    /// Index of an election's latest event (0: none yet), whether or not
    /// older events are still retained.
    pub fn election_last_index(&self, name: &str) -> u64 {
        self.elections
            .get(name)
            .map_or(self.election_floor.index, |e| {
                e.next_index.saturating_sub(1)
            })
    }

    /// Events of an election with index >= `from_index`, for a watcher
    /// resuming after the last index it saw. Unknown election: empty.
    pub fn election_events_since(
        &self,
        name: &str,
        from_index: u64,
    ) -> Result<Vec<ElectionEvent>, HistoryGone> {
        match self.elections.get(name) {
            Some(e) => e.events_since(from_index),
            None => Ok(Vec::new()),
        }
    }

    // ----- sessions ------------------------------------------------------

    fn open_session(
        &mut self,
        ttl_ms: u64,
        owner: Option<Identity>,
        cx: &mut Cx,
    ) -> Result<Reply, CommandError> {
        let limits = &self.config.limits;
        limits.check_ttl(ttl_ms)?;
        if self.sessions.len() >= limits.max_sessions as usize {
            return Err(CommandError::TooManySessions {
                max: limits.max_sessions,
            });
        }
        if let Some(owner) = &owner {
            self.check_quota_of(owner, QuotaKind::Sessions)?;
        }
        let new = Session::new(ttl_ms, owner);
        self.make_room(state_size::session_bytes(&new), None, cx)?;
        // The revision is unique per command, so it is a fresh id.
        let session = SessionId(self.revision);
        self.sessions.insert(session, new);
        Ok(Reply::SessionOpened { session })
    }

    /// The live session `owner` opened with `open_key`, if any (0: none).
    fn opened_with(&self, owner: &Identity, open_key: u64) -> Option<SessionId> {
        if open_key == 0 {
            return None;
        }
        self.open_keys.get(&(owner.clone(), open_key)).copied()
    }

    /// Rebuilds what is derived from the sessions (after a restore: it is
    /// not stored): the index of open keys and each identity's usage.
    pub(crate) fn index_derived(&mut self) {
        self.open_keys = self
            .sessions
            .iter()
            .filter(|(_, s)| s.open_key != 0)
            .filter_map(|(id, s)| Some(((s.owner.clone()?, s.open_key), *id)))
            .collect();
        self.value_bytes = self.value_bytes_from_scratch();
        self.usage = self.usage_from_sessions();
        for e in self.elections.values_mut() {
            e.recount_history_bytes();
        }
        self.state_bytes = self.state_bytes_from_scratch();
    }

    /// The state's counted bytes, counted from scratch.
    pub(crate) fn state_bytes_from_scratch(&self) -> u64 {
        let sessions: u64 = self.sessions.values().map(state_size::session_bytes).sum();
        let locks: u64 = self
            .locks
            .iter()
            .map(|(name, l)| state_size::lock_bytes(name, l))
            .sum::<u64>()
            + self
                .shared
                .iter()
                .map(|(name, l)| state_size::shared_lock_bytes(name, l))
                .sum::<u64>();
        let elections: u64 = self
            .elections
            .iter()
            .map(|(name, e)| state_size::election_bytes(name, e))
            .sum();
        sessions + locks + elections
    }

    /// The entries `kind` may change when applied now (after the clock and
    /// revision moved for it): whose counted bytes `apply` takes before and
    /// after, to keep `state_bytes` up to date without counting it all.
    fn touched_by(&self, kind: &CommandKind) -> Touched {
        let mut t = Touched::default();
        // Lock-delays ending at this command's time grant their waiters.
        for (until_ms, name) in &self.delays {
            if *until_ms > self.now_ms {
                break;
            }
            t.locks.push(name.clone());
        }
        match kind {
            // The session an open makes is added once it is made (`apply`).
            CommandKind::OpenSession { .. } | CommandKind::OpenSessionAs { .. } => {}
            CommandKind::Client { session, op, .. } | CommandKind::ClientAs { session, op, .. } => {
                t.sessions.push(*session);
                match op {
                    ClientOp::CloseSession => self.touched_by_end(*session, &mut t),
                    ClientOp::Acquire { name, .. }
                    | ClientOp::AcquireShared { name, .. }
                    | ClientOp::Release { name, .. }
                    | ClientOp::Check { name, .. }
                    | ClientOp::CancelAcquire { name } => t.locks.push(name.clone()),
                    ClientOp::Campaign { name, .. }
                    | ClientOp::Resign { name }
                    | ClientOp::Proclaim { name, .. } => t.elections.push(name.clone()),
                }
            }
            CommandKind::ExpireSession { session, .. }
            | CommandKind::RevokeSession { session, .. } => {
                t.sessions.push(*session);
                self.touched_by_end(*session, &mut t);
            }
            CommandKind::Abandon {
                session,
                name,
                wait,
                ..
            } => {
                t.sessions.push(*session);
                match wait {
                    AbandonedWait::Acquire => t.locks.push(name.clone()),
                    AbandonedWait::Campaign => t.elections.push(name.clone()),
                }
            }
            CommandKind::ClaimSession { session, .. } => t.sessions.push(*session),
            CommandKind::ForceRelease { name, token, .. } => {
                let holder = self.grant_to_take(name, Some(*token)).ok();
                t.sessions.extend(holder.map(|(session, _)| session));
                t.locks.push(name.clone());
            }
            CommandKind::SetAccessRules { .. }
            | CommandKind::RaiseProtocol { .. }
            | CommandKind::Takeover { .. }
            | CommandKind::Tick => {}
        }
        // A name listed twice would count its change twice.
        t.locks.sort_unstable();
        t.locks.dedup();
        t.elections.sort_unstable();
        t.elections.dedup();
        t
    }

    /// Adds what ending `session` touches: every lock and election it is in.
    fn touched_by_end(&self, session: SessionId, t: &mut Touched) {
        if let Some(s) = self.sessions.get(&session) {
            t.locks
                .extend(s.held.iter().chain(s.waiting.iter()).cloned());
            t.elections.extend(s.campaigns.iter().cloned());
        }
    }

    /// Counted bytes of the entries in `t` as they are now (absent: 0).
    fn counted_bytes(&self, t: &Touched) -> u64 {
        let sessions: u64 = t
            .sessions
            .iter()
            .filter_map(|id| self.sessions.get(id))
            .map(state_size::session_bytes)
            .sum();
        let locks: u64 = t.locks.iter().map(|name| self.lock_bytes(name)).sum();
        let elections: u64 = t
            .elections
            .iter()
            .filter_map(|name| Some(state_size::election_bytes(name, self.elections.get(name)?)))
            .sum();
        sessions + locks + elections
    }

    /// Lets a command add `adding` counted bytes. Under the bound this
    /// changes nothing; past it, elections nobody leads or campaigns in
    /// (other than `keep`, the command's own) are removed in name order
    /// until the addition fits, and if even removing all of them would not
    /// make room, the command is refused without removing any. Only from
    /// protocol 3 on: the previous release has no bound, and replicas must
    /// refuse the same commands.
    ///
    /// Call it after every other check of the command has passed: a
    /// refused command changes nothing.
    pub(crate) fn make_room(
        &mut self,
        adding: u64,
        keep: Option<&str>,
        cx: &mut Cx,
    ) -> Result<(), CommandError> {
        if self.protocol < PROTOCOL_V3 {
            return Ok(());
        }
        let max = self.config.limits.max_state_bytes;
        let fits = |bytes: u64| bytes.saturating_add(adding) <= max;
        if fits(self.state_bytes) {
            return Ok(());
        }
        // One pass, in name order, copying names only while room is still
        // needed: a full state may refuse many commands in a row.
        let mut needed = self.state_bytes.saturating_add(adding).saturating_sub(max);
        let mut chosen = Vec::new();
        for (name, e) in &self.elections {
            if needed == 0 {
                break;
            }
            if e.is_empty() && Some(name.as_str()) != keep {
                needed = needed.saturating_sub(state_size::election_bytes(name, e));
                chosen.push(name.clone());
            }
        }
        if needed > 0 {
            return Err(CommandError::StateFull {
                bytes: self.state_bytes,
                adding,
                max,
            });
        }
        for name in chosen {
            self.remove_election(&name, cx);
        }
        Ok(())
    }

    /// Each session's value bytes, counted from the elections.
    pub(crate) fn value_bytes_from_scratch(&self) -> BTreeMap<SessionId, u64> {
        let mut bytes: BTreeMap<SessionId, u64> = BTreeMap::new();
        for e in self.elections.values() {
            for l in e.leader.iter().chain(e.candidates.iter()) {
                *bytes.entry(l.session).or_default() += l.value.len() as u64;
            }
        }
        for lock in self.locks.values() {
            if let Some(h) = &lock.holder {
                *bytes.entry(h.session).or_default() += lock.value.len() as u64;
            }
            for w in &lock.waiters {
                *bytes.entry(w.session).or_default() += w.value.len() as u64;
            }
        }
        bytes.retain(|_, b| *b > 0);
        bytes
    }

    /// Each identity's usage, counted from the sessions.
    pub(crate) fn usage_from_sessions(&self) -> BTreeMap<Identity, Usage> {
        let mut usage: BTreeMap<Identity, Usage> = BTreeMap::new();
        for (id, s) in &self.sessions {
            if let Some(owner) = &s.owner {
                let bytes = self.value_bytes.get(id).copied().unwrap_or(0);
                usage
                    .entry(owner.clone())
                    .or_default()
                    .add(Usage::of(s, bytes));
            }
        }
        usage
    }

    /// The owner of `session` and what it holds, if it is live and owned.
    fn footprint(&self, session: SessionId) -> Option<(Identity, Usage)> {
        let s = self.sessions.get(&session)?;
        let bytes = self.value_bytes.get(&session).copied().unwrap_or(0);
        Some((s.owner.clone()?, Usage::of(s, bytes)))
    }

    /// Moves `session`'s value bytes by `added` minus `removed`.
    fn move_value_bytes(&mut self, session: SessionId, added: usize, removed: usize) {
        let bytes = self.value_bytes.entry(session).or_default();
        *bytes = (*bytes + added as u64).saturating_sub(removed as u64);
        if *bytes == 0 {
            self.value_bytes.remove(&session);
        }
    }

    /// Refuses a value that would take the owner of `session` past its
    /// quota of value bytes, `replacing` bytes it gives up for it.
    fn check_value_quota(
        &self,
        session: SessionId,
        value: usize,
        replacing: usize,
    ) -> Result<(), CommandError> {
        let Some(owner) = self.sessions.get(&session).and_then(|s| s.owner.as_ref()) else {
            return Ok(());
        };
        let quota = self
            .access
            .quotas_for(owner, &self.config.limits)
            .value_bytes;
        let used = self
            .usage(owner)
            .value_bytes
            .saturating_sub(replacing as u64);
        if used + value as u64 > quota {
            return Err(CommandError::QuotaExceeded {
                identity: owner.as_str().to_string(),
                what: QuotaKind::ValueBytes,
                quota,
            });
        }
        Ok(())
    }

    /// Moves a session's holdings in its owner's usage from `before` to
    /// `after` (either absent: not live, or not owned).
    fn account(&mut self, before: Option<(Identity, Usage)>, after: Option<(Identity, Usage)>) {
        if before == after {
            return;
        }
        if let Some((owner, held)) = before {
            if let Some(usage) = self.usage.get_mut(&owner) {
                usage.sub(held);
                if *usage == Usage::default() {
                    self.usage.remove(&owner);
                }
            }
        }
        if let Some((owner, held)) = after {
            self.usage.entry(owner).or_default().add(held);
        }
    }

    /// Refuses one more of `kind` for the owner of `session` once its
    /// quota is reached (sessions without an owner have none).
    pub(crate) fn check_quota(
        &self,
        session: SessionId,
        kind: QuotaKind,
    ) -> Result<(), CommandError> {
        let owner = self.sessions.get(&session).and_then(|s| s.owner.as_ref());
        match owner {
            Some(owner) => self.check_quota_of(owner, kind),
            None => Ok(()),
        }
    }

    fn check_quota_of(&self, owner: &Identity, kind: QuotaKind) -> Result<(), CommandError> {
        let quotas = self.access.quotas_for(owner, &self.config.limits);
        let usage = self.usage(owner);
        let (used, quota) = match kind {
            QuotaKind::Sessions => (usage.sessions, quotas.sessions),
            QuotaKind::Locks => (usage.locks, quotas.locks),
            QuotaKind::Elections => (usage.elections, quotas.elections),
            // Bytes are checked with the value they add (`check_value_quota`).
            QuotaKind::ValueBytes => return Ok(()),
        };
        if used >= quota {
            return Err(CommandError::QuotaExceeded {
                identity: owner.as_str().to_string(),
                what: kind,
                quota: u64::from(quota),
            });
        }
        Ok(())
    }

    /// Whether `caller` may act for `session` (see "Sessions belong to
    /// identities"); claims an ownerless session for a caller. A session
    /// that is not live passes: the command then reports it unknown.
    fn authorize(
        &mut self,
        session: SessionId,
        caller: Option<Identity>,
    ) -> Result<(), CommandError> {
        if let Some(caller) = &caller {
            check_identity(caller)?;
        }
        let Some(s) = self.sessions.get_mut(&session) else {
            return Ok(());
        };
        #[cfg(feature = "canary")]
        if canary::any_caller() {
            return Ok(());
        }
        match (&s.owner, caller) {
            (None, None) => Ok(()),
            (None, Some(caller)) => {
                s.owner = Some(caller);
                Ok(())
            }
            (Some(owner), Some(caller)) if *owner == caller => Ok(()),
            (Some(_), _) => Err(CommandError::PermissionDenied { session }),
        }
    }

    fn set_access_rules(
        &mut self,
        rules: AccessRules,
        expected_version: Option<u64>,
    ) -> Result<Reply, CommandError> {
        rules
            .validate()
            .map_err(|e| CommandError::InvalidAccessRules {
                reason: e.to_string(),
            })?;
        if let Some(expected) = expected_version.filter(|v| *v != self.access_version) {
            // A retried change that took effect finds its own rules in
            // force: it did what was asked.
            if rules == self.access {
                return Ok(Reply::Done);
            }
            return Err(CommandError::AccessRulesChanged {
                expected,
                current: self.access_version,
            });
        }
        self.access = rules;
        self.access_version = self.revision;
        Ok(Reply::Done)
    }

    fn apply_client(
        &mut self,
        session: SessionId,
        request_id: RequestId,
        ack_below: RequestId,
        waiting: &[RequestId],
        op: ClientOp,
        cx: &mut Cx,
    ) -> (Result<Reply, CommandError>, bool) {
        let max_unacked = self.config.limits.max_unacked_replies_per_session;
        let Some(s) = self.sessions.get_mut(&session) else {
            return (Err(CommandError::SessionNotFound { session }), false);
        };
        match s.dedup.lookup(request_id) {
            Lookup::Acked { floor } => {
                return (
                    Err(CommandError::RequestIdAcked { request_id, floor }),
                    false,
                )
            }
            Lookup::Recorded(reply) if !Self::canary_reapply_duplicates() => {
                s.dedup.acknowledge(ack_below.min(request_id), waiting);
                return (reply, true);
            }
            Lookup::Recorded(_) | Lookup::New => {}
        }
        // A client cannot have seen the reply to this request yet.
        s.dedup.acknowledge(ack_below.min(request_id), waiting);
        if !s.dedup.has_room(max_unacked) {
            // Not recorded: the client retries this same id after acking.
            return (
                Err(CommandError::TooManyUnackedReplies { max: max_unacked }),
                false,
            );
        }
        let reply = self.apply_op(session, op, cx);
        // CloseSession removed the session (and its table): nothing to record.
        if let Some(s) = self.sessions.get_mut(&session) {
            s.dedup.record(request_id, reply.clone());
        }
        (reply, false)
    }

    fn apply_op(
        &mut self,
        session: SessionId,
        op: ClientOp,
        cx: &mut Cx,
    ) -> Result<Reply, CommandError> {
        let limits = &self.config.limits;
        match op {
            ClientOp::CloseSession => {
                self.end_session(session, CloseReason::Closed, cx);
                Ok(Reply::SessionClosed)
            }
            ClientOp::Acquire { name, wait, value } => {
                limits.check_name(&name)?;
                limits.check_value(&value)?;
                self.acquire(session, name, wait, value, cx)
            }
            ClientOp::AcquireShared {
                name,
                wait,
                mode,
                permits,
            } => {
                limits.check_name(&name)?;
                self.acquire_shared(session, name, wait, mode, permits, cx)
            }
            ClientOp::Release { name, token } => {
                limits.check_name(&name)?;
                self.release(session, &name, token, cx)
            }
            ClientOp::Check { name, token } => {
                limits.check_name(&name)?;
                self.check(session, &name, token)
            }
            ClientOp::CancelAcquire { name } => {
                limits.check_name(&name)?;
                Ok(self.cancel(session, &name, cx))
            }
            ClientOp::Campaign { name, value } => {
                limits.check_name(&name)?;
                limits.check_value(&value)?;
                self.campaign(session, name, value, cx)
            }
            ClientOp::Resign { name } => {
                limits.check_name(&name)?;
                Ok(self.resign(session, &name, cx))
            }
            ClientOp::Proclaim { name, value } => {
                limits.check_name(&name)?;
                limits.check_value(&value)?;
                self.proclaim(session, &name, value, cx)
            }
        }
    }

    /// Removes the session and, in this same apply, releases its locks
    /// (granting next waiters), drops its waits and its candidacies.
    fn end_session(&mut self, session: SessionId, reason: CloseReason, cx: &mut Cx) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        if let (Some(owner), true) = (s.owner.clone(), s.open_key != 0) {
            self.open_keys.remove(&(owner, s.open_key));
        }
        cx.events.push(Event::SessionEnded { session, reason });
        let (release_reason, delay_ms) = match reason {
            CloseReason::Closed => (ReleaseReason::SessionClosed, 0),
            CloseReason::Expired => (ReleaseReason::SessionExpired, self.config.lock_delay_ms),
            // Its client's lease may run a TTL past the revocation.
            CloseReason::Revoked => (
                ReleaseReason::SessionRevoked,
                self.revocation_delay_ms(s.ttl_ms),
            ),
        };
        for name in &s.waiting {
            if self.shared.contains_key(name) {
                self.leave_shared_queue(name, session, release_reason, cx);
                continue;
            }
            self.remove_waiter(name, session, release_reason, cx);
            self.drop_if_empty(name);
        }
        for name in &s.held {
            if self.shared.contains_key(name) {
                self.release_shared(name, session, release_reason, delay_ms, cx);
                continue;
            }
            self.release_holder(name, release_reason, delay_ms, cx);
        }
        for name in &s.campaigns {
            self.leave_election(session, name, cx);
        }
    }

    // ----- locks ---------------------------------------------------------

    /// The token for a grant in this command (see the revision rule).
    pub(crate) fn next_token(&mut self, cx: &mut Cx) -> FencingToken {
        if cx.granted {
            self.revision += 1;
        }
        cx.granted = true;
        FencingToken(self.revision)
    }

    /// The token of a leadership won in this command: the next of the
    /// sequence grants draw from, so a leader fences its writes exactly
    /// like a lock holder. None before protocol 3, whose replicas (the
    /// previous release among them) give wins no token and must keep the
    /// same revision.
    fn leadership_token(&mut self, cx: &mut Cx) -> Option<FencingToken> {
        (self.protocol >= PROTOCOL_V3).then(|| self.next_token(cx))
    }

    /// Grants `name` to `session` with `value` (whose bytes the session
    /// already counts: they came with its acquire).
    fn grant(
        &mut self,
        name: &str,
        session: SessionId,
        value: Vec<u8>,
        cx: &mut Cx,
    ) -> FencingToken {
        let token = self.next_token(cx);
        let since_ms = self.known_since();
        let lock = self.locks.entry(name.to_owned()).or_default();
        debug_assert!(lock.holder.is_none(), "grant while held");
        lock.holder = Some(Holder {
            session,
            token,
            since_ms,
        });
        lock.value = value;
        let value = lock.value.clone();
        let owner = match self.sessions.get_mut(&session) {
            Some(s) => {
                s.held.insert(name.to_owned());
                s.owner.clone()
            }
            None => None,
        };
        cx.events.push(Event::LockGranted {
            name: name.to_owned(),
            session,
            token,
            owner,
            value,
            shared: None,
        });
        token
    }

    /// Grants the lock to the first queued session, or drops the lock if
    /// nobody waits. Only call when the lock is grantable.
    fn grant_next(&mut self, name: &str, cx: &mut Cx) {
        let next = match self.locks.get_mut(name) {
            // Canary only: LIFO instead of FIFO, to show the simulator's
            // FIFO check catches an out-of-order grant.
            #[cfg(feature = "canary")]
            Some(lock) if lock.is_grantable() && canary::lifo_grants() => lock.waiters.pop_back(),
            Some(lock) if lock.is_grantable() => lock.waiters.pop_front(),
            _ => return,
        };
        match next {
            Some(waiter) => {
                if let Some(s) = self.sessions.get_mut(&waiter.session) {
                    s.waiting.remove(name);
                }
                self.grant(name, waiter.session, waiter.value, cx);
            }
            None => self.drop_if_empty(name),
        }
    }

    /// Now on the logical clock, for when a grant or a wait began: `None`
    /// before protocol 3, whose replicas (the previous release among them)
    /// keep no such times, so that every replica holds the same state.
    fn known_since(&self) -> Option<u64> {
        (self.protocol >= PROTOCOL_V3).then_some(self.now_ms)
    }

    /// Removes `session` from the queue of `name` for `reason`, giving
    /// back the bytes of the value its acquire carried.
    fn remove_waiter(
        &mut self,
        name: &str,
        session: SessionId,
        reason: ReleaseReason,
        cx: &mut Cx,
    ) {
        let removed = self
            .locks
            .get_mut(name)
            .and_then(|lock| lock.remove_waiter(session));
        if let Some(waiter) = removed {
            self.move_value_bytes(session, 0, waiter.value.len());
            cx.events.push(Event::LockLeftQueue {
                name: name.to_owned(),
                session,
                reason,
            });
        }
    }

    fn drop_if_empty(&mut self, name: &str) {
        if self.locks.get(name).is_some_and(Lock::is_empty) {
            self.locks.remove(name);
        }
    }

    /// An administrator's `ForceRelease` of `name`: the grant ends now,
    /// the lock stays in lock-delay for the longer of the lock-delay and
    /// the holder's TTL, and the holder's session keeps the taken token
    /// for as long, for its keepalive answers to name.
    fn force_release(
        &mut self,
        name: &str,
        token: FencingToken,
        cx: &mut Cx,
    ) -> Result<Reply, CommandError> {
        self.config.limits.check_name(name)?;
        let not_held = || CommandError::NotHeld {
            name: name.to_owned(),
        };
        // Another grant by then (a stale token) is not taken.
        let (holder, token) = self
            .grant_to_take(name, Some(token))
            .map_err(|_| not_held())?;
        let ttl_ms = self.session_ttl_ms(holder).ok_or_else(not_held)?;
        let delay_ms = self.revocation_delay_ms(ttl_ms);
        let until_ms = self.now_ms.saturating_add(delay_ms);
        let session = self.sessions.get_mut(&holder).ok_or_else(not_held)?;
        if session.taken.len() >= MAX_TAKEN_GRANTS as usize {
            return Err(CommandError::TooManyTakenGrants {
                session: holder,
                max: MAX_TAKEN_GRANTS,
            });
        }
        session.taken.insert(token, until_ms);
        if self.shared.contains_key(name) {
            self.release_shared(name, holder, ReleaseReason::ForceReleased, delay_ms, cx);
        } else {
            self.release_holder(name, ReleaseReason::ForceReleased, delay_ms, cx);
        }
        Ok(Reply::Taken {
            session: holder,
            token,
        })
    }

    /// How long a lock of a revoked session with `ttl_ms` stays in
    /// lock-delay: the longer of the lock-delay and the TTL (see
    /// [`CommandKind::RevokeSession`]).
    fn revocation_delay_ms(&self, ttl_ms: u64) -> u64 {
        #[cfg(feature = "canary")]
        if canary::revoke_without_delay() {
            return self.config.lock_delay_ms;
        }
        self.config.lock_delay_ms.max(ttl_ms)
    }

    /// Ends the current grant; with a lock-delay (`delay_ms` > 0: after an
    /// expiry or a revocation) the lock waits, otherwise the next waiter is
    /// granted now.
    fn release_holder(&mut self, name: &str, reason: ReleaseReason, delay_ms: u64, cx: &mut Cx) {
        let until_ms = self.now_ms.saturating_add(delay_ms);
        let Some(lock) = self.locks.get_mut(name) else {
            return;
        };
        let Some(holder) = lock.holder.take() else {
            return;
        };
        let value = std::mem::take(&mut lock.value);
        let delayed = delay_ms > 0;
        if delayed {
            lock.delayed_until_ms = Some(until_ms);
            self.delays.insert((until_ms, name.to_owned()));
        }
        if let Some(s) = self.sessions.get_mut(&holder.session) {
            s.held.remove(name);
        }
        self.move_value_bytes(holder.session, 0, value.len());
        cx.events.push(Event::LockReleased {
            name: name.to_owned(),
            session: holder.session,
            token: holder.token,
            reason,
            lock_delay_ms: delayed.then_some(delay_ms),
        });
        if !delayed {
            self.grant_next(name, cx);
        }
    }

    /// Ends every lock-delay whose time has come, granting waiters.
    fn end_passed_delays(&mut self, cx: &mut Cx) {
        while let Some((until_ms, name)) = self.delays.first().cloned() {
            if until_ms > self.now_ms {
                break;
            }
            self.delays.remove(&(until_ms, name.clone()));
            if self.shared.contains_key(&name) {
                self.end_shared_delays(&name, cx);
                continue;
            }
            if let Some(lock) = self.locks.get_mut(&name) {
                lock.delayed_until_ms = None;
                cx.events.push(Event::LockDelayEnded { name: name.clone() });
            }
            self.grant_next(&name, cx);
        }
    }

    /// An acquire of `name` by `session` carrying `value`. One by the
    /// holder or a queued session answers its grant or place, value
    /// unchanged.
    fn acquire(
        &mut self,
        session: SessionId,
        name: String,
        wait: bool,
        value: Vec<u8>,
        cx: &mut Cx,
    ) -> Result<Reply, CommandError> {
        if let Some(kind) = self.shared.get(&name).map(|l| l.kind) {
            // A plain acquire of a read/write lock takes it for writing
            // (PROTOCOL.md); a semaphore needs its permits named.
            if kind != SharedKind::ReadWrite || !value.is_empty() {
                return Err(CommandError::WrongKind {
                    name,
                    kind: kind.describe(),
                    asked: if value.is_empty() {
                        "a lock".into()
                    } else {
                        "a lock with a value".into()
                    },
                });
            }
            return self.acquire_shared(session, name, wait, Mode::Write, 0, cx);
        }
        let lock = self.locks.get(&name);
        if let Some(lock) = lock {
            if let Some(h) = lock.holder.filter(|h| h.session == session) {
                return Ok(Reply::Granted { token: h.token });
            }
            if let Some(position) = lock.position(session) {
                return Ok(Reply::Queued { position });
            }
        }
        let grantable = lock.is_none_or(Lock::is_grantable);
        if !grantable && !wait {
            return Ok(Reply::Busy {
                current: lock.and_then(Lock::token),
                delayed_until_ms: lock.and_then(|l| l.delayed_until_ms),
            });
        }
        let waiters = lock.map_or(0, |l| l.waiters.len());
        self.check_new_hold(session, &name, (!grantable).then_some(waiters))?;
        self.check_value_quota(session, value.len(), 0)?;
        // A grant adds the holder; a wait adds a waiter; either, the value.
        let holders = lock.map_or(0, |l| usize::from(l.holder.is_some()));
        let before = lock.map_or(0, |_| {
            state_size::lock_bytes_of(name.len(), holders, waiters)
        });
        let after = if grantable {
            state_size::lock_bytes_of(name.len(), 1, waiters)
        } else {
            state_size::lock_bytes_of(name.len(), holders, waiters + 1)
        };
        let adding = after.saturating_sub(before) + value.len() as u64;
        self.make_room(adding, None, cx)?;
        self.move_value_bytes(session, value.len(), 0);
        if grantable {
            let token = self.grant(&name, session, value, cx);
            return Ok(Reply::Granted { token });
        }
        let since_ms = self.known_since();
        let lock = self.locks.entry(name.clone()).or_default();
        lock.waiters.push_back(Waiter {
            session,
            since_ms,
            value,
        });
        let queue_len = lock.waiters.len();
        Ok(self.note_queued(name, session, queue_len, cx))
    }

    /// Records that `session` joined the queue of `name` (of either table),
    /// now `queue_len` long: its name in the session, the event, the reply.
    pub(crate) fn note_queued(
        &mut self,
        name: String,
        session: SessionId,
        queue_len: usize,
        cx: &mut Cx,
    ) -> Reply {
        let owner = self.sessions.get_mut(&session).and_then(|s| {
            s.waiting.insert(name.clone());
            s.owner.clone()
        });
        cx.events.push(Event::LockQueued {
            name,
            session,
            owner,
        });
        Reply::Queued {
            position: u32::try_from(queue_len).unwrap_or(u32::MAX),
        }
    }

    /// Refuses a new grant or wait of `session` for `name` past its
    /// session's and identity's lock bounds, or (`queue_len`: it would
    /// queue behind that many) past the lock's waiter bound.
    pub(crate) fn check_new_hold(
        &self,
        session: SessionId,
        name: &str,
        queue_len: Option<usize>,
    ) -> Result<(), CommandError> {
        let limits = &self.config.limits;
        let count = self.sessions.get(&session).map_or(0, Session::lock_count);
        if count >= limits.max_locks_per_session as usize {
            return Err(CommandError::TooManyLocks {
                max: limits.max_locks_per_session,
            });
        }
        self.check_quota(session, QuotaKind::Locks)?;
        let max = limits.max_waiters_per_lock;
        if queue_len.is_some_and(|waiters| waiters >= max as usize) {
            return Err(CommandError::WaitQueueFull {
                name: name.to_owned(),
                max,
            });
        }
        Ok(())
    }

    fn stale(&self, name: &str, presented: FencingToken) -> CommandError {
        CommandError::StaleToken {
            name: name.to_owned(),
            presented,
            current: self.locks.get(name).and_then(Lock::token),
        }
    }

    fn holds(&self, session: SessionId, name: &str, token: FencingToken) -> bool {
        #[cfg(feature = "canary")]
        if canary::accept_stale_tokens() {
            return self.holder(name).is_some_and(|h| h.session == session);
        }
        self.holder(name)
            .is_some_and(|h| h.session == session && h.token == token)
    }

    fn release(
        &mut self,
        session: SessionId,
        name: &str,
        token: FencingToken,
        cx: &mut Cx,
    ) -> Result<Reply, CommandError> {
        if self.shared.contains_key(name) {
            self.shared_grant_of(session, name, token)?;
            self.release_shared(name, session, ReleaseReason::Released, 0, cx);
            return Ok(Reply::Released);
        }
        if !self.holds(session, name, token) {
            return Err(self.stale(name, token));
        }
        self.release_holder(name, ReleaseReason::Released, 0, cx);
        Ok(Reply::Released)
    }

    fn check(
        &self,
        session: SessionId,
        name: &str,
        token: FencingToken,
    ) -> Result<Reply, CommandError> {
        if self.shared.contains_key(name) {
            return self
                .shared_grant_of(session, name, token)
                .map(|_| Reply::Valid);
        }
        if self.holds(session, name, token) {
            Ok(Reply::Valid)
        } else {
            Err(self.stale(name, token))
        }
    }

    fn cancel(&mut self, session: SessionId, name: &str, cx: &mut Cx) -> Reply {
        if self.shared.contains_key(name) {
            return self.cancel_shared(session, name, cx);
        }
        match self.holder(name) {
            Some(h) if h.session == session => {
                // The grant raced the cancel: release it, no orphan holder.
                self.release_holder(name, ReleaseReason::Cancelled, 0, cx);
                Reply::Cancelled {
                    released: Some(h.token),
                }
            }
            _ => {
                self.remove_waiter(name, session, ReleaseReason::Cancelled, cx);
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.waiting.remove(name);
                }
                self.drop_if_empty(name);
                Reply::Cancelled { released: None }
            }
        }
    }

    // ----- elections -----------------------------------------------------

    fn campaign(
        &mut self,
        session: SessionId,
        name: String,
        value: Vec<u8>,
        cx: &mut Cx,
    ) -> Result<Reply, CommandError> {
        // A copy: making room for a new election changes the machine.
        let limits = self.config.limits.clone();
        let history_cap = self.config.election_history_len;
        match self.elections.get(&name) {
            Some(e) => {
                if e.leader.as_ref().is_some_and(|l| l.session == session) {
                    return Ok(Reply::Elected {
                        term: e.term,
                        token: e.token,
                    });
                }
                if let Some(position) = e.position(session) {
                    return Ok(Reply::Candidate { position });
                }
                if e.leader.is_some()
                    && e.candidates.len() >= limits.max_candidates_per_election as usize
                {
                    return Err(CommandError::TooManyCandidates {
                        name,
                        max: limits.max_candidates_per_election,
                    });
                }
            }
            None => {
                let max = limits.max_elections;
                if self.elections.len() >= max as usize && self.empty_election().is_none() {
                    return Err(CommandError::TooManyElections { max });
                }
            }
        }
        let campaigns = self.sessions.get(&session).map_or(0, |s| s.campaigns.len());
        if campaigns >= limits.max_campaigns_per_session as usize {
            return Err(CommandError::TooManyCampaigns {
                max: limits.max_campaigns_per_session,
            });
        }
        self.check_quota(session, QuotaKind::Elections)?;
        self.check_value_quota(session, value.len(), 0)?;
        // Every check passed: only now may empty elections make room (a
        // refused command changes nothing).
        self.make_room(
            self.campaign_bytes(session, &name, value.len()),
            Some(&name),
            cx,
        )?;
        if !self.elections.contains_key(&name)
            && self.elections.len() >= limits.max_elections as usize
        {
            self.make_room_for_election(cx);
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.campaigns.insert(name.clone());
        }
        let owner = self.sessions.get(&session).and_then(|s| s.owner.clone());
        let floor = self.election_floor;
        let bytes = value.len();
        let leads = self
            .elections
            .get(&name)
            .is_some_and(|e| e.leader.is_some());
        // Drawn before the entry is borrowed; only a win draws one.
        let token = if leads {
            None
        } else {
            self.leadership_token(cx)
        };
        let e = self
            .elections
            .entry(name.clone())
            .or_insert_with(|| floor.new_election());
        if leads {
            e.candidates.push_back(Leader { session, value });
            let position = u32::try_from(e.candidates.len()).unwrap_or(u32::MAX);
            self.move_value_bytes(session, bytes, 0);
            return Ok(Reply::Candidate { position });
        }
        e.term += 1;
        e.leader = Some(Leader {
            session,
            value: value.clone(),
        });
        e.token = token;
        let event = e.record(
            &name,
            ElectionChange::NewLeader {
                session,
                value,
                owner,
                token,
            },
            history_cap,
        );
        let term = e.term;
        cx.events.push(Event::Election(event));
        self.move_value_bytes(session, bytes, 0);
        Ok(Reply::Elected { term, token })
    }

    /// What a campaign of `session` in `name` with a value of `value_len`
    /// bytes adds: the election if it is new, the member, and the event
    /// of its win if nobody leads.
    fn campaign_bytes(&self, session: SessionId, name: &str, value_len: usize) -> u64 {
        let election = self.elections.get(name);
        let new = if election.is_none() {
            state_size::ELECTION_BYTES + name.len() as u64
        } else {
            0
        };
        let wins = election.is_none_or(|e| e.leader.is_none());
        let event = if wins {
            state_size::event_bytes_of(name.len(), value_len, self.owner_len(session))
        } else {
            0
        };
        new + state_size::member_bytes(name.len(), value_len) + event
    }

    /// Bytes of the identity `session` belongs to (0: none).
    fn owner_len(&self, session: SessionId) -> usize {
        self.sessions
            .get(&session)
            .and_then(|s| s.owner.as_ref())
            .map_or(0, |o| o.as_str().len())
    }

    /// Removes the session from the election; if it led, the next candidate
    /// leads (or nobody), with the term advanced by one.
    fn leave_election(&mut self, session: SessionId, name: &str, cx: &mut Cx) {
        let history_cap = self.config.election_history_len;
        if let Some(s) = self.sessions.get_mut(&session) {
            s.campaigns.remove(name);
        }
        let promotes = self.elections.get(name).is_some_and(|e| {
            e.leader.as_ref().is_some_and(|l| l.session == session) && !e.candidates.is_empty()
        });
        let token = if !promotes {
            None
        } else if Self::canary_inherit_leader_token() {
            self.elections.get(name).and_then(|e| e.token)
        } else {
            self.leadership_token(cx)
        };
        let Some(e) = self.elections.get_mut(name) else {
            return;
        };
        let given_up = e
            .leader
            .iter()
            .chain(e.candidates.iter())
            .find(|l| l.session == session)
            .map_or(0, |l| l.value.len());
        if e.leader.as_ref().is_some_and(|l| l.session == session) {
            e.term += 1;
            let change = match e.candidates.pop_front() {
                Some(next) => {
                    let change = ElectionChange::NewLeader {
                        session: next.session,
                        value: next.value.clone(),
                        owner: self
                            .sessions
                            .get(&next.session)
                            .and_then(|s| s.owner.clone()),
                        token,
                    };
                    e.leader = Some(next);
                    e.token = token;
                    change
                }
                None => {
                    e.leader = None;
                    e.token = None;
                    ElectionChange::NoLeader
                }
            };
            let event = e.record(name, change, history_cap);
            cx.events.push(Event::Election(event));
        } else {
            e.candidates.retain(|c| c.session != session);
        }
        self.move_value_bytes(session, 0, given_up);
    }

    /// At `max_elections`, removes the first empty election (in name
    /// order) to make room for a new one, raising the floor that elections
    /// created later start above. Only once the log records protocol 3:
    /// the previous release keeps every election, and replicas must hold
    /// the same ones.
    fn make_room_for_election(&mut self, cx: &mut Cx) {
        if let Some(name) = self.empty_election() {
            self.remove_election(&name, cx);
        }
    }

    /// Removes an election nobody leads or campaigns in, raising the floor
    /// that elections created later start above, and its counted bytes.
    fn remove_election(&mut self, name: &str, cx: &mut Cx) {
        let Some(e) = self.elections.remove(name) else {
            return;
        };
        cx.events.push(Event::ElectionRemoved {
            name: name.to_owned(),
        });
        debug_assert!(e.is_empty(), "removed an election in use");
        self.state_bytes = self
            .state_bytes
            .saturating_sub(state_size::election_bytes(name, &e));
        let floor = &mut self.election_floor;
        floor.term = floor.term.max(e.term);
        floor.index = floor.index.max(e.next_index.saturating_sub(1));
    }

    /// The first election (in name order) nobody leads or campaigns in,
    /// which may make room for a new one: none below protocol 3.
    fn empty_election(&self) -> Option<String> {
        if self.protocol < PROTOCOL_V3 {
            return None;
        }
        self.elections
            .iter()
            .find(|(_, e)| e.is_empty())
            .map(|(name, _)| name.clone())
    }

    fn resign(&mut self, session: SessionId, name: &str, cx: &mut Cx) -> Reply {
        self.leave_election(session, name, cx);
        Reply::Resigned
    }

    fn proclaim(
        &mut self,
        session: SessionId,
        name: &str,
        value: Vec<u8>,
        cx: &mut Cx,
    ) -> Result<Reply, CommandError> {
        let history_cap = self.config.election_history_len;
        let old = self
            .elections
            .get(name)
            .and_then(|e| e.leader.as_ref())
            .filter(|l| l.session == session)
            .map(|l| l.value.len());
        let Some(old) = old else {
            return Err(CommandError::NotLeader {
                name: name.to_owned(),
            });
        };
        self.check_value_quota(session, value.len(), old)?;
        // The new value replaces the old one, and an event carries it.
        let event = state_size::event_bytes_of(name.len(), value.len(), self.owner_len(session));
        let adding = (event + value.len() as u64).saturating_sub(old as u64);
        self.make_room(adding, Some(name), cx)?;
        self.move_value_bytes(session, value.len(), old);
        let Some(e) = self.elections.get_mut(name) else {
            return Err(CommandError::NotLeader {
                name: name.to_owned(),
            });
        };
        let Some(leader) = e.leader.as_mut().filter(|l| l.session == session) else {
            return Err(CommandError::NotLeader {
                name: name.to_owned(),
            });
        };
        leader.value = value.clone();
        let owner = self.sessions.get(&session).and_then(|s| s.owner.clone());
        let event = e.record(
            name,
            ElectionChange::Proclaimed {
                session,
                value,
                owner,
                token: e.token,
            },
            history_cap,
        );
        let term = e.term;
        cx.events.push(Event::Election(event));
        Ok(Reply::Proclaimed { term })
    }
}

/// Refuses an identity outside 1..=[`MAX_IDENTITY_BYTES`] bytes. Checked
/// at apply (not only where certificates are read) so that every replica
/// refuses the same commands.
fn check_identity(identity: &Identity) -> Result<(), CommandError> {
    let len = identity.0.len();
    if len == 0 || len > MAX_IDENTITY_BYTES {
        return Err(CommandError::InvalidIdentity {
            len: len as u64,
            max: MAX_IDENTITY_BYTES as u32,
        });
    }
    Ok(())
}

/// Test-only runtime switch that breaks one rule of the machine, so the
/// simulator can show that its checks catch the breach. Thread-local so
/// that parallel test threads do not see each other's switch.
#[cfg(feature = "canary")]
pub mod canary {
    use std::cell::Cell;

    thread_local! {
        static LIFO_GRANTS: Cell<bool> = const { Cell::new(false) };
        static ANY_CALLER: Cell<bool> = const { Cell::new(false) };
        static REAPPLY_DUPLICATES: Cell<bool> = const { Cell::new(false) };
        static STALE_TOKENS: Cell<bool> = const { Cell::new(false) };
        static SNAPSHOT_BOUND: Cell<bool> = const { Cell::new(false) };
        static REVOKE_WITHOUT_DELAY: Cell<bool> = const { Cell::new(false) };
        static INHERIT_LEADER_TOKEN: Cell<bool> = const { Cell::new(false) };
        static UNTOLD_TAKEN: Cell<bool> = const { Cell::new(false) };
        static EXTRA_PERMIT: Cell<bool> = const { Cell::new(false) };
        static READ_BESIDE_WRITER: Cell<bool> = const { Cell::new(false) };
        static READERS_BARGE: Cell<bool> = const { Cell::new(false) };
    }

    /// Makes semaphores on this thread hand out one permit more than they
    /// have.
    pub fn set_extra_permit(on: bool) {
        EXTRA_PERMIT.with(|c| c.set(on));
    }

    /// Whether the extra-permit canary is on for this thread.
    pub fn extra_permit() -> bool {
        EXTRA_PERMIT.with(Cell::get)
    }

    /// Makes read/write locks on this thread admit readers while a writer
    /// holds.
    pub fn set_read_beside_writer(on: bool) {
        READ_BESIDE_WRITER.with(|c| c.set(on));
    }

    /// Whether the reader-beside-writer canary is on for this thread.
    pub fn read_beside_writer() -> bool {
        READ_BESIDE_WRITER.with(Cell::get)
    }

    /// Makes read/write locks on this thread grant a new reader while
    /// others wait (barging past a queued writer, which readers arriving
    /// one after another then starve).
    pub fn set_readers_barge(on: bool) {
        READERS_BARGE.with(|c| c.set(on));
    }

    /// Whether the barging-readers canary is on for this thread.
    pub fn readers_barge() -> bool {
        READERS_BARGE.with(Cell::get)
    }

    /// Makes the machine on this thread name no taken grants for keepalive
    /// answers: a force-released holder keeps believing while its session
    /// lives.
    pub fn set_untold_taken(on: bool) {
        UNTOLD_TAKEN.with(|c| c.set(on));
    }

    /// Whether the untold-taken canary is on for this thread.
    pub fn untold_taken() -> bool {
        UNTOLD_TAKEN.with(Cell::get)
    }

    /// Makes the machine on this thread give a promoted candidate the
    /// token of the leader it replaces instead of a new one: the deposed
    /// leader's writes are no longer fenced off.
    pub fn set_inherit_leader_token(on: bool) {
        INHERIT_LEADER_TOKEN.with(|c| c.set(on));
    }

    /// Whether the inherited-token canary is on for this thread.
    pub fn inherit_leader_token() -> bool {
        INHERIT_LEADER_TOKEN.with(Cell::get)
    }

    /// Makes the machine on this thread hand a revoked session's locks on
    /// after the lock-delay only, not after the session's TTL: the revoked
    /// client may still hold its lease when the next holder is granted.
    pub fn set_revoke_without_delay(on: bool) {
        REVOKE_WITHOUT_DELAY.with(|c| c.set(on));
    }

    /// Whether the revocation canary is on for this thread.
    pub fn revoke_without_delay() -> bool {
        REVOKE_WITHOUT_DELAY.with(Cell::get)
    }

    /// Makes replicas on this thread restore snapshots with the state
    /// bound a snapshot gives (the default) instead of their own: replicas
    /// that restored one refuse other commands than those that did not.
    pub fn set_snapshot_bound(on: bool) {
        SNAPSHOT_BOUND.with(|c| c.set(on));
    }

    /// Whether the snapshot-bound canary is on for this thread.
    pub fn snapshot_bound() -> bool {
        SNAPSHOT_BOUND.with(Cell::get)
    }

    /// Makes the machine on this thread take a release or check of a lock
    /// the session holds whatever token it presents (breaks stale-token
    /// refusal: a release from an earlier grant ends the current one).
    pub fn set_accept_stale_tokens(on: bool) {
        STALE_TOKENS.with(|c| c.set(on));
    }

    /// Whether the stale-token canary is on for this thread.
    pub fn accept_stale_tokens() -> bool {
        STALE_TOKENS.with(Cell::get)
    }

    /// Makes the machine on this thread apply a request again when a copy
    /// arrives (breaks exactly-once).
    pub fn set_reapply_duplicates(on: bool) {
        REAPPLY_DUPLICATES.with(|c| c.set(on));
    }

    /// Whether the exactly-once-breaking canary is on for this thread.
    pub fn reapply_duplicates() -> bool {
        REAPPLY_DUPLICATES.with(Cell::get)
    }

    /// Makes sessions on this thread accept requests of any identity.
    pub fn set_any_caller(on: bool) {
        ANY_CALLER.with(|c| c.set(on));
    }

    /// Whether the ownership-breaking canary is on for this thread.
    pub fn any_caller() -> bool {
        ANY_CALLER.with(Cell::get)
    }

    /// Makes `grant_next` on this thread pick the LAST waiter (breaks FIFO).
    pub fn set_lifo_grants(on: bool) {
        LIFO_GRANTS.with(|c| c.set(on));
    }

    /// Whether the FIFO-breaking canary is on for this thread.
    pub fn lifo_grants() -> bool {
        LIFO_GRANTS.with(Cell::get)
    }
}
