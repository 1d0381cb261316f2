//! What a node does with one client request before anything is logged:
//! refuse it, answer it from its own state, or propose one command for it
//! (and what to do for the request as that command is applied).
//!
//! The node's request handler and the simulator's nodes both call
//! [`admit`]; the handler then only carries the decision out (proposes,
//! waits, writes the wire answer), so every rule below is the rule that
//! ships and the rule the simulator checks:
//!
//! - a request names at most `max_unacked_replies_per_session` running
//!   waits, and names and values within the limits, or it is refused
//!   before it costs a log entry (the machine would refuse it too);
//! - a request the access rules do not allow its caller is refused here
//!   (`Denied`, naming the permission and the name), before anything is
//!   logged: the rules are the machine's, so a change applied before the
//!   request was admitted is in force for it (see [`crate::access`]);
//! - a request on a session another identity owns is refused here
//!   (`PermissionDenied`); the machine checks again as it applies (owners
//!   never change, so this check cannot refuse wrongly);
//! - until the log records protocol [`CURRENT_PROTOCOL`], a leader that
//!   may record it ([`LeaderRole::protocol_to_record`]) proposes that
//!   first, so commands carry their caller from the first request on;
//!   otherwise requests go in the previous release's form, without one,
//!   but only from a leader whose takeover is applied: before that its
//!   machine may not show that the log records the protocol already;
//! - a keepalive for a session that has no owner yet (opened before
//!   protocol 3) claims it with a logged `ClaimSession` first: a keepalive
//!   is not logged, so it could not claim it otherwise;
//! - keepalives and reads are answered from the node's own state only
//!   under the leader lease with the takeover applied (the leader role's
//!   rules); everything else is proposed by a node that leads;
//! - a blocking acquire and a campaign wait for their grant or win,
//!   registered as their command is applied (see [`crate::waiters`]); a
//!   cancel and a withdrawal drop the lock waiters they end.

use crate::access::{self, AccessRules, Admins, Denied, Permission};
use crate::leader_role::{KeepaliveRefused, LeaderRole};
use crate::locks::{
    AbandonedWait, ClientOp, CommandError, CommandKind, FencingToken, Identity, Limits, RequestId,
    SessionId, StateMachine, CURRENT_PROTOCOL,
};
use crate::paxos::Nanos;
use crate::waiters::{AfterApply, WaitFor, WaiterId, WaiterKey};

/// One client request in the core's terms (the shell decodes the wire
/// form into this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// The session the request acts for (0 for an open).
    pub session: SessionId,
    /// The request's id within its session (retries reuse it).
    pub request_id: RequestId,
    /// Every reply of the session below this id may be forgotten.
    pub ack_below: RequestId,
    /// The session's requests below `ack_below` still waiting (their
    /// replies must be kept).
    pub waiting: Vec<RequestId>,
    /// What it asks.
    pub op: RequestOp,
}

/// What a client request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOp {
    /// Open a session with this TTL; `open_key` makes a retried open find
    /// the session its first attempt opened.
    OpenSession {
        /// Session TTL in milliseconds.
        ttl_ms: u64,
        /// The client's key for this open (0: none).
        open_key: u64,
    },
    /// Extend the session by its TTL (not logged).
    KeepAlive,
    /// Check that `token` is still the grant of lock `name`, and extend
    /// the session if so.
    Renew {
        /// The lock.
        name: String,
        /// The grant's fencing token.
        token: FencingToken,
    },
    /// Who leads `election` (a read under the leader lease).
    QueryLeader {
        /// The election.
        election: String,
    },
    /// A logged operation of the session.
    Client(ClientOp),
    /// Replace the access rules (an administrator's request, no session).
    SetAccessRules {
        /// The new rules.
        rules: AccessRules,
        /// The version they were made against, if the change is
        /// conditional.
        expected_version: Option<u64>,
    },
    /// Read the access rules (an administrator's read under the leader
    /// lease).
    GetAccessRules,
    /// One lock's holder, queue and lock-delay (a read, see
    /// [`crate::inspect`]).
    DescribeLock {
        /// The lock.
        name: String,
    },
    /// Whether `token` is the current grant of lock `name` (a read).
    CheckToken {
        /// The lock.
        name: String,
        /// The token a resource was shown.
        token: FencingToken,
    },
    /// Locks by name prefix, a page at a time (a read; only the locks the
    /// caller may read are listed).
    ListLocks {
        /// Names start with this (`""`: every lock).
        prefix: String,
        /// The last name of the previous page (`""`: from the first).
        after: String,
        /// Most locks in the page (capped by [`crate::inspect::MAX_PAGE_ENTRIES`]).
        limit: u32,
    },
    /// End another identity's session now (an administrator's request,
    /// logged; see [`CommandKind::RevokeSession`]).
    RevokeSession {
        /// The session.
        session: SessionId,
    },
    /// End the current grant of lock `name` now (an administrator's
    /// request, logged; see [`CommandKind::ForceRelease`]).
    ForceRelease {
        /// The lock.
        name: String,
        /// Only the grant with this token (`None`: whichever is current):
        /// an operator who looked first takes what they saw, not a grant
        /// that passed on since.
        token: Option<FencingToken>,
    },
    /// Sessions with what they hold, a page at a time (a read; the
    /// caller's own sessions, an administrator's every session).
    ListSessions {
        /// The last session of the previous page (0: from the first).
        after: SessionId,
        /// Most sessions in the page.
        limit: u32,
    },
}

impl RequestOp {
    /// Whether the request is a read, answered from the leader's state
    /// under its lease (nothing logged, no session needed).
    pub fn is_read(&self) -> bool {
        match self {
            RequestOp::QueryLeader { .. }
            | RequestOp::GetAccessRules
            | RequestOp::DescribeLock { .. }
            | RequestOp::CheckToken { .. }
            | RequestOp::ListLocks { .. }
            | RequestOp::ListSessions { .. } => true,
            RequestOp::OpenSession { .. }
            | RequestOp::KeepAlive
            | RequestOp::Renew { .. }
            | RequestOp::Client(_)
            | RequestOp::SetAccessRules { .. }
            | RequestOp::RevokeSession { .. }
            | RequestOp::ForceRelease { .. } => false,
        }
    }

    /// The lock or election the request names, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            RequestOp::Renew { name, .. }
            | RequestOp::QueryLeader { election: name }
            | RequestOp::DescribeLock { name }
            | RequestOp::ForceRelease { name, .. }
            | RequestOp::CheckToken { name, .. } => Some(name),
            RequestOp::Client(op) => match op {
                ClientOp::Acquire { name, .. }
                | ClientOp::AcquireShared { name, .. }
                | ClientOp::Release { name, .. }
                | ClientOp::Check { name, .. }
                | ClientOp::CancelAcquire { name }
                | ClientOp::Resign { name }
                | ClientOp::Campaign { name, .. }
                | ClientOp::Proclaim { name, .. } => Some(name),
                ClientOp::CloseSession => None,
            },
            RequestOp::OpenSession { .. }
            | RequestOp::KeepAlive
            | RequestOp::SetAccessRules { .. }
            | RequestOp::GetAccessRules
            | RequestOp::ListLocks { .. }
            | RequestOp::ListSessions { .. }
            | RequestOp::RevokeSession { .. } => None,
        }
    }

    /// The permission the request needs, and on which name (`""`: the
    /// cluster); `None` for what a caller does to its own sessions, and
    /// for lists, which show only what the caller may see.
    pub fn permission(&self) -> Option<(Permission, &str)> {
        let permission = match self {
            RequestOp::OpenSession { .. }
            | RequestOp::KeepAlive
            | RequestOp::Client(ClientOp::CloseSession)
            | RequestOp::ListLocks { .. }
            | RequestOp::ListSessions { .. } => return None,
            RequestOp::Renew { .. }
            | RequestOp::Client(
                ClientOp::Acquire { .. }
                | ClientOp::AcquireShared { .. }
                | ClientOp::Release { .. }
                | ClientOp::Check { .. }
                | ClientOp::CancelAcquire { .. },
            ) => Permission::Lock,
            RequestOp::Client(
                ClientOp::Campaign { .. } | ClientOp::Proclaim { .. } | ClientOp::Resign { .. },
            ) => Permission::Campaign,
            RequestOp::QueryLeader { .. }
            | RequestOp::DescribeLock { .. }
            | RequestOp::CheckToken { .. } => Permission::Read,
            // On the name: an administrator of a prefix may free its locks.
            RequestOp::SetAccessRules { .. }
            | RequestOp::GetAccessRules
            | RequestOp::RevokeSession { .. }
            | RequestOp::ForceRelease { .. } => Permission::Admin,
        };
        Some((permission, self.name().unwrap_or("")))
    }
}

/// What this node knows of itself when a request arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView {
    /// The node clock now.
    pub now: Nanos,
    /// Whether this node leads the cluster.
    pub leads: bool,
    /// Until when it holds the leader lease (`None`: it does not).
    pub lease_until: Option<Nanos>,
    /// How many other members the cluster has.
    pub peers: usize,
    /// How many of them are connected and speak this release's protocol.
    pub peers_speaking_current: usize,
}

/// Why a request was refused before anything was logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// This node does not lead: send the request to the leader.
    #[error("this node does not lead the cluster")]
    NotLeader,
    /// This node leads but does not hold the leader lease (yet, or any
    /// more): retry shortly.
    #[error("this node leads but does not hold the leader lease yet; retry shortly")]
    NoLease,
    /// This node has just become leader and its takeover is not applied.
    #[error("this node has just become leader and is still taking over; retry shortly")]
    TakingOver,
    /// An administrator's take of the session, or of one of its grants, is
    /// being committed; or this leader has too many in flight for another.
    /// Retry shortly (a keepalive's lease runs on from its last answer).
    #[error("an administrator's revocation or force-release is being committed; retry shortly")]
    Taking,
    /// The session is closed, expired or never existed.
    #[error("session {} is closed or expired; open a new one", .0 .0)]
    SessionUnknown(SessionId),
    /// The session's time ran out and its expiry is proposed.
    #[error("session {}: {}; open a new one", .0 .0, KeepaliveRefused::Expiring)]
    SessionExpiring(SessionId),
    /// The cluster still runs nodes of the previous release, which cannot
    /// apply this request's command.
    #[error("{what} need every node on this release; finish the upgrade first")]
    Unsupported {
        /// What was asked.
        what: &'static str,
    },
    /// The request lists more running waits than a session may keep.
    #[error(
        "the request lists {listed} running waits, more than the {max} answers a session may keep"
    )]
    TooManyWaits {
        /// Waits listed.
        listed: usize,
        /// The limit.
        max: usize,
    },
    /// Refused as the machine would refuse it (limits, another identity's
    /// session).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The access rules do not allow it.
    #[error(transparent)]
    Denied(#[from] Denied),
}

impl Refusal {
    fn keepalive(session: SessionId, refused: KeepaliveRefused) -> Refusal {
        match refused {
            KeepaliveRefused::NotLeader => Refusal::NotLeader,
            KeepaliveRefused::NoLease => Refusal::NoLease,
            KeepaliveRefused::TakingOver => Refusal::TakingOver,
            KeepaliveRefused::Unknown => Refusal::SessionUnknown(session),
            KeepaliveRefused::Expiring => Refusal::SessionExpiring(session),
            // Retried shortly; the client's lease runs on from its last
            // answer meanwhile.
            KeepaliveRefused::Taking => Refusal::Taking,
        }
    }
}

/// What the node does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Refuse it.
    Refused(Refusal),
    /// The keepalive extended the session: answer with its TTL (ms) and
    /// the grants an administrator took from it, which its client must
    /// stop using now.
    KeptAlive {
        /// The session's TTL in milliseconds.
        ttl_ms: u64,
        /// Tokens of its force-released grants still in lock-delay.
        taken: Vec<FencingToken>,
    },
    /// Answer the read from the machine now (it is linearizable here).
    Read,
    /// Propose `kind` and wait for it to be applied, then admit the same
    /// request again: the protocol must be recorded, or the session
    /// claimed, before the request itself can be.
    First(CommandKind),
    /// Propose `kind` for the request; `follow` says what to do for it as
    /// the command is applied.
    Propose {
        /// The command.
        kind: CommandKind,
        /// What the request does as it is applied.
        follow: Follow,
    },
}

/// What a proposed request does as its command is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// Answer with the command's reply.
    Reply,
    /// If the reply leaves it waiting, wait for the grant or win of `key`
    /// (registered as the command is applied).
    Await {
        /// Grant or win.
        wait: WaitFor,
        /// (session, name).
        key: WaiterKey,
    },
    /// Drop the lock waiters of `key` the command ends, as it is applied.
    DropLockWaiters(WaiterKey),
    /// A renew: if the command succeeded, extend the session (admit a
    /// [`RequestOp::KeepAlive`] of it) and answer with that.
    KeepAlive,
}

impl Follow {
    /// What the node registers for the request as its command is applied;
    /// `waiter` gives the request's waiter id and handle, called only if
    /// the request may wait.
    pub fn after_apply<T>(&self, waiter: impl FnOnce() -> (WaiterId, T)) -> Option<AfterApply<T>> {
        match self {
            Follow::Await { wait, key } => {
                let (id, waiter) = waiter();
                Some(AfterApply::Register {
                    wait: *wait,
                    key: key.clone(),
                    id,
                    waiter,
                })
            }
            Follow::DropLockWaiters(key) => Some(AfterApply::DropLockWaiters(key.clone())),
            Follow::Reply | Follow::KeepAlive => None,
        }
    }
}

/// Decides what the node does with `request` from `caller` (the identity
/// of its certificate; `admins` are the node config's administrators):
/// see the module docs for the rules.
pub fn admit(
    role: &mut LeaderRole,
    machine: &StateMachine,
    node: NodeView,
    caller: &Identity,
    admins: &Admins,
    request: ClientRequest,
) -> Admission {
    match decide(role, machine, node, caller, admins, request) {
        Ok(admission) => admission,
        Err(refusal) => Admission::Refused(refusal),
    }
}

fn decide(
    role: &mut LeaderRole,
    machine: &StateMachine,
    node: NodeView,
    caller: &Identity,
    admins: &Admins,
    request: ClientRequest,
) -> Result<Admission, Refusal> {
    check_limits(&machine.config().limits, &request)?;
    if let Some((permission, name)) = request.op.permission() {
        access::check(machine.access_rules(), admins, caller, permission, name)?;
    }
    let ClientRequest {
        session,
        request_id,
        ack_below,
        waiting,
        op,
    } = request;
    let owner = machine.session_owner(session).ok().flatten();
    let foreign = owner.is_some_and(|owner| owner != caller);
    if foreign
        && !matches!(
            op,
            RequestOp::OpenSession { .. }
                | RequestOp::SetAccessRules { .. }
                | RequestOp::RevokeSession { .. }
                | RequestOp::ForceRelease { .. }
        )
        && !op.is_read()
    {
        return Err(CommandError::PermissionDenied { session }.into());
    }
    let recorded = machine.protocol() >= CURRENT_PROTOCOL;
    let lease_until = node.lease_until.filter(|_| node.leads);
    // What is left once keepalives and reads are answered: a write to log.
    let write = match op {
        RequestOp::KeepAlive => {
            require_leader(node)?;
            // Only a serving leader's machine shows every owner the log
            // gave; before that the role refuses the keepalive anyway.
            let ownerless = owner.is_none() && machine.has_session(session);
            if recorded && ownerless && role.serving(machine) {
                return Ok(Admission::First(CommandKind::ClaimSession {
                    session,
                    owner: caller.clone(),
                }));
            }
            let ttl_ms = role
                .keep_alive(machine, session, node.now, lease_until)
                .map_err(|refused| Refusal::keepalive(session, refused))?;
            return Ok(Admission::KeptAlive {
                ttl_ms,
                taken: machine.taken_grants(session),
            });
        }
        RequestOp::QueryLeader { .. }
        | RequestOp::GetAccessRules
        | RequestOp::DescribeLock { .. }
        | RequestOp::CheckToken { .. }
        | RequestOp::ListLocks { .. }
        | RequestOp::ListSessions { .. } => {
            // A read served under the leader lease: no other leader can
            // have applied anything newer, and with the takeover applied
            // nothing older is missing here.
            match lease_until {
                Some(until) if node.now < until => {}
                _ if node.leads => return Err(Refusal::NoLease),
                _ => return Err(Refusal::NotLeader),
            }
            if !role.serving(machine) {
                return Err(Refusal::TakingOver);
            }
            return Ok(Admission::Read);
        }
        RequestOp::OpenSession { ttl_ms, open_key } => Write::Open { ttl_ms, open_key },
        RequestOp::Renew { name, token } => Write::Renew { name, token },
        RequestOp::Client(op) => Write::Client(op),
        RequestOp::RevokeSession { session: target } => Write::Administer {
            kind: CommandKind::RevokeSession {
                by: caller.clone(),
                session: target,
            },
            what: "revoking sessions",
            take: Some((target, None)),
        },
        RequestOp::ForceRelease { name, token } => {
            let (holder, token) = machine.grant_to_take(&name, token)?;
            Write::Administer {
                kind: CommandKind::ForceRelease {
                    by: caller.clone(),
                    name: name.clone(),
                    token,
                },
                what: "force-releasing locks",
                take: Some((holder, Some((name, token)))),
            }
        }
        RequestOp::SetAccessRules {
            rules,
            expected_version,
        } => {
            rules
                .validate()
                .map_err(|e| CommandError::InvalidAccessRules {
                    reason: e.to_string(),
                })?;
            Write::Administer {
                kind: CommandKind::SetAccessRules {
                    by: caller.clone(),
                    rules,
                    expected_version,
                },
                what: "access rules",
                take: None,
            }
        }
    };
    require_leader(node)?;
    if !recorded {
        // Until its takeover is applied, this node's machine may be behind
        // the log, which may record the protocol already: a request in the
        // previous release's form would then be refused for its own
        // session (`PermissionDenied`), and an open would make a session
        // without an owner, which any identity could claim. Found by the
        // simulator (seed 20049515).
        if !role.serving(machine) {
            return Err(Refusal::TakingOver);
        }
        let speaking = node.peers_speaking_current;
        if let Some(version) = role.protocol_to_record(machine, node.peers, speaking) {
            return Ok(Admission::First(CommandKind::RaiseProtocol { version }));
        }
    }
    let key = |name: &str| (session.0, name.to_string());
    let (op, follow) = match write {
        Write::Open { ttl_ms, open_key } => {
            let kind = if recorded {
                CommandKind::OpenSessionAs {
                    ttl_ms,
                    owner: caller.clone(),
                    open_key,
                }
            } else {
                CommandKind::OpenSession { ttl_ms }
            };
            return Ok(Admission::Propose {
                kind,
                follow: Follow::Reply,
            });
        }
        Write::Administer { kind, what, take } => {
            if !recorded {
                // The previous release cannot apply these commands.
                return Err(Refusal::Unsupported { what });
            }
            if let Some((session, grant)) = take {
                // No keepalive of the session is answered until the take
                // is applied (see `LeaderRole::gate_take`).
                if !role.gate_take(machine, session, grant) {
                    return Err(Refusal::Taking);
                }
            }
            return Ok(Admission::Propose {
                kind,
                follow: Follow::Reply,
            });
        }
        Write::Renew { name, token } => (ClientOp::Check { name, token }, Follow::KeepAlive),
        Write::Client(op) => {
            match (recorded, &op) {
                (false, ClientOp::Acquire { value, .. }) if !value.is_empty() => {
                    // The previous release's acquire has no value.
                    return Err(Refusal::Unsupported {
                        what: "values with locks",
                    });
                }
                (false, ClientOp::AcquireShared { .. }) => {
                    // Nor semaphores and read/write locks.
                    return Err(Refusal::Unsupported {
                        what: "semaphores and read/write locks",
                    });
                }
                _ => {}
            }
            let follow = match &op {
                ClientOp::Acquire {
                    name, wait: true, ..
                }
                | ClientOp::AcquireShared {
                    name, wait: true, ..
                } => Follow::Await {
                    wait: WaitFor::Grant,
                    key: key(name),
                },
                ClientOp::Campaign { name, .. } => Follow::Await {
                    wait: WaitFor::Win,
                    key: key(name),
                },
                // Dropped as the cancel is applied (a cancel that failed
                // leaves the wait in the queue, and its requests must still
                // be there to take the grant), not after.
                ClientOp::CancelAcquire { name } => Follow::DropLockWaiters(key(name)),
                _ => Follow::Reply,
            };
            (op, follow)
        }
    };
    let kind = if recorded {
        CommandKind::ClientAs {
            caller: caller.clone(),
            session,
            request_id,
            ack_below,
            waiting,
            op,
        }
    } else {
        CommandKind::Client {
            session,
            request_id,
            ack_below,
            waiting,
            op,
        }
    };
    Ok(Admission::Propose { kind, follow })
}

/// The command that withdraws a wait the node gave up on (request `up_to`
/// of `session`, for `name`): a logged `Abandon`, so a grant or win that
/// raced the timeout is handed back; the session's lock waiters for `name`
/// end with it.
pub fn withdrawal(
    session: SessionId,
    name: &str,
    wait: AbandonedWait,
    up_to: RequestId,
) -> (CommandKind, Follow) {
    let kind = CommandKind::Abandon {
        session,
        name: name.to_string(),
        wait,
        up_to,
    };
    let follow = match wait {
        AbandonedWait::Acquire => Follow::DropLockWaiters((session.0, name.to_string())),
        AbandonedWait::Campaign => Follow::Reply,
    };
    (kind, follow)
}

/// A request that writes to the log: what [`admit`] has left once
/// keepalives and reads are answered.
enum Write {
    Open {
        ttl_ms: u64,
        open_key: u64,
    },
    Renew {
        name: String,
        token: FencingToken,
    },
    /// An administrator's logged command (protocol 3 only), and the take
    /// it makes of a session or one of its grants, if any.
    Administer {
        kind: CommandKind,
        what: &'static str,
        take: Option<(SessionId, Option<(String, FencingToken)>)>,
    },
    Client(ClientOp),
}

fn require_leader(node: NodeView) -> Result<(), Refusal> {
    if node.leads {
        Ok(())
    } else {
        Err(Refusal::NotLeader)
    }
}

/// Refuses names and values over the limits, and waiting lists longer
/// than a session's kept answers, before they reach the log: the machine
/// would refuse them too, but an oversized one must not cost a log entry.
fn check_limits(limits: &Limits, request: &ClientRequest) -> Result<(), Refusal> {
    let max = limits.max_unacked_replies_per_session as usize;
    if request.waiting.len() > max {
        return Err(Refusal::TooManyWaits {
            listed: request.waiting.len(),
            max,
        });
    }
    let value = match &request.op {
        RequestOp::Client(
            ClientOp::Campaign { value, .. }
            | ClientOp::Proclaim { value, .. }
            | ClientOp::Acquire { value, .. },
        ) => Some(value),
        _ => None,
    };
    let name = request.op.name();
    if let Some(name) = name {
        limits.check_name(name)?;
    }
    // A prefix may be empty (every name), never longer than a name.
    if let RequestOp::ListLocks { prefix, after, .. } = &request.op {
        for text in [prefix, after] {
            if !text.is_empty() {
                limits.check_name(text)?;
            }
        }
    }
    if let Some(value) = value {
        limits.check_value(value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
