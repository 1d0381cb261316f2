//! Answering one client request: validate, propose, wait for the applied
//! result (and, for a queued acquire or campaign, for the grant), reply.

use std::sync::Arc;
use std::time::Duration;

use paxlock::proto::{self, request::Op, response, ErrorCode, Request, Response};
use tokio::sync::{mpsc, oneshot, watch};

use super::access;
use super::errors::{command_error, error};
use super::inspect;
use super::state::{AfterApply, PendingCommand, Shared};
use crate::locks::{
    AbandonedWait, ClientOp, Command, CommandKind, FencingToken, Identity, Output, Reply,
    RequestId, SessionId,
};
use crate::node::clock::NodeClock;
use crate::node::driver::{DriverInput, DriverStatus};
use crate::transport::peer_version::{PeerVersion, PeerVersions};
use paxlock_core::access::Permission;
use paxlock_core::admission::{
    self, Admission, ClientRequest, Follow, NodeView, Refusal, RequestOp,
};
use paxlock_core::locks::event::SharedGranted;
use paxlock_core::locks::shared::Mode;
use paxlock_core::proposal::Proposal;
use paxlock_core::waiters::{WaitFor, WaiterId, Woken};

/// `wait`'s outcome, or `None` if `timeout_ms` (0: no limit, however long
/// it takes) passed first.
async fn wait_at_most<T>(timeout_ms: u64, wait: impl std::future::Future<Output = T>) -> Option<T> {
    match timeout_ms {
        0 => Some(wait.await),
        ms => tokio::time::timeout(Duration::from_millis(ms), wait)
            .await
            .ok(),
    }
}

/// How long a proposal may take to be chosen and applied before the client
/// is told to retry (with the same request id, so a retry is safe).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a request handler needs.
#[derive(Debug, Clone)]
pub struct Context {
    /// Shared service state.
    pub shared: Arc<Shared>,
    /// The consensus loop's inbox.
    pub inbox: mpsc::Sender<DriverInput>,
    /// The consensus loop's status.
    pub status: watch::Receiver<DriverStatus>,
    /// The consensus loop's clock.
    pub clock: NodeClock,
    /// Where each member is reached, for redirects and for counting the
    /// peers that must speak a protocol before the log records it.
    pub directory: Arc<crate::node::directory::Directory>,
    /// The peer protocol version of each connected peer: once every peer
    /// speaks version 3, the leader records it in the log and sessions get
    /// owners (see `sessions::run_leader_scans`).
    pub peers: watch::Receiver<PeerVersions>,
}

type Answer = Result<response::Result, proto::Error>;

impl Context {
    /// Answers one request (not `Watch`, which streams) from `caller`, the
    /// identity of the client's certificate: it acts only for sessions
    /// that identity opened.
    pub async fn answer(&self, request: Request, caller: &Identity) -> Response {
        let request_id = request.request_id;
        let result = self.dispatch(request, caller).await;
        match result {
            Ok(result) => Response {
                request_id,
                error: None,
                result: Some(result),
            },
            Err(error) => Response {
                request_id,
                error: Some(error),
                result: None,
            },
        }
    }

    /// Why a watch of election or lock `name` by `caller` is refused (a name outside
    /// the limits, no `read` permission on it under the rules this node
    /// has applied), or `Ok` to start it. Checked before the watch holds
    /// any state.
    pub fn check_watch(&self, name: &str, caller: &Identity) -> Result<(), proto::Error> {
        self.shared
            .limits
            .check_name(name)
            .map_err(|e| command_error(&e))?;
        self.shared
            .check_access(caller, Permission::Read, name)
            .map_err(|refused| access::denied(&self.shared, &refused))
    }

    async fn dispatch(&self, request: Request, caller: &Identity) -> Answer {
        let op =
            match request.op {
                // One operation on the wire only so that the previous release
                // refuses it (see the proto); one here.
                Some(Op::AcquireWithValue(acquire) | Op::AcquireShared(acquire)) => {
                    Op::Acquire(acquire)
                }
                Some(op) => op,
                None => return Err(error(
                    ErrorCode::InvalidRequest,
                    "the request names no operation this node knows: none was set, or it is one \
                     a later release added (upgrade this node)",
                    false,
                )),
            };
        let session = SessionId(request.session_id);
        let request_id = RequestId(request.request_id);
        let asked = ClientRequest {
            session,
            request_id,
            ack_below: RequestId(request.ack_below),
            waiting: request.waiting.iter().copied().map(RequestId).collect(),
            op: request_op(&op)?,
        };
        // Every decision is the core's (`admission::admit`); this only
        // carries it out and writes the answer in the wire's terms.
        let (kind, follow) =
            match self.admitted(asked, caller).await? {
                Admitted::KeptAlive { ttl_ms, taken } => {
                    return Ok(response::Result::KeepAlive(proto::KeepAliveOk {
                        ttl_ms,
                        taken_tokens: wire_tokens(&taken),
                    }))
                }
                Admitted::Read => {
                    return Ok(match &op {
                        Op::GetAccessRules(_) => response::Result::AccessRules(self.access_rules()),
                        Op::QueryLeader(query) => {
                            response::Result::Leader(self.leader_info(&query.election))
                        }
                        Op::DescribeLock(describe) => response::Result::Lock(
                            inspect::describe_lock(&self.shared, &describe.name),
                        ),
                        Op::CheckToken(check) => {
                            response::Result::TokenCheck(inspect::check_token(&self.shared, check))
                        }
                        Op::ListLocks(list) => {
                            response::Result::Locks(inspect::list_locks(&self.shared, caller, list))
                        }
                        Op::ListSessions(list) => response::Result::Sessions(
                            inspect::list_sessions(&self.shared, &self.clock, caller, list),
                        ),
                        _ => {
                            return Err(error(
                                ErrorCode::Internal,
                                "a read the core admitted that this node cannot answer",
                                false,
                            ))
                        }
                    });
                }
                Admitted::Propose { kind, follow } => (kind, follow),
            };
        match op {
            Op::OpenSession(open) => match self.commit(kind).await? {
                Reply::SessionOpened { session } => {
                    Ok(response::Result::SessionOpened(proto::SessionOpened {
                        session_id: session.0,
                        ttl_ms: open.ttl_ms,
                    }))
                }
                other => Err(unexpected(&other)),
            },
            Op::Acquire(acquire) => {
                self.acquire(session, request_id, kind, follow, acquire)
                    .await
            }
            Op::Campaign(campaign) => {
                self.campaign(session, request_id, kind, follow, campaign)
                    .await
            }
            Op::SetAccessRules(_) => {
                self.commit(kind).await?;
                Ok(response::Result::AccessRules(self.access_rules()))
            }
            Op::ForceRelease(_) => match self.commit(kind).await? {
                Reply::Taken { session, token } => Ok(response::Result::Taken(proto::LockGrant {
                    holder: Some(proto::SessionRef {
                        session_id: session.0,
                        identity: self.owner_name(session),
                    }),
                    token: token.0,
                    ..proto::LockGrant::default()
                })),
                other => Err(unexpected(&other)),
            },
            Op::Renew(_) => {
                self.commit(kind).await?;
                // A valid grant proves the session alive: extend it too.
                let keepalive = ClientRequest {
                    session,
                    request_id,
                    ack_below: RequestId(0),
                    waiting: Vec::new(),
                    op: RequestOp::KeepAlive,
                };
                match self.admitted(keepalive, caller).await? {
                    Admitted::KeptAlive { ttl_ms, taken } => {
                        Ok(response::Result::Renewed(proto::Renewed {
                            ttl_ms,
                            taken_tokens: wire_tokens(&taken),
                        }))
                    }
                    _ => Err(error(
                        ErrorCode::Internal,
                        "a keepalive after a renew was not answered as one",
                        false,
                    )),
                }
            }
            _ => {
                self.commit_then(kind, follow.after_apply(no_waiter))
                    .await?;
                Ok(done())
            }
        }
    }

    /// What the core decides for `request` (see `admission::admit`), with
    /// the commands it asks for first (recording the protocol, claiming an
    /// ownerless session) committed on the way.
    async fn admitted(
        &self,
        request: ClientRequest,
        caller: &Identity,
    ) -> Result<Admitted, proto::Error> {
        // A protocol record and a claim at most, then the request itself.
        for _ in 0..3 {
            let view = self.view();
            let admission = {
                let machine = self.shared.machine();
                let mut role = self.shared.role();
                let admins = &self.shared.admins;
                admission::admit(&mut role, &machine, view, caller, admins, request.clone())
            };
            match admission {
                Admission::Refused(refusal) => return Err(self.refused(refusal)),
                Admission::KeptAlive { ttl_ms, taken } => {
                    return Ok(Admitted::KeptAlive { ttl_ms, taken })
                }
                Admission::Read => return Ok(Admitted::Read),
                Admission::Propose { kind, follow } => {
                    return Ok(Admitted::Propose { kind, follow })
                }
                Admission::First(kind) => {
                    self.commit(kind).await?;
                }
            }
        }
        Err(error(
            ErrorCode::Unavailable,
            "the cluster's state moved while the request was admitted; retry",
            true,
        ))
    }

    /// This node as the core needs to see it to admit a request.
    fn view(&self) -> NodeView {
        let (leads, lease_until) = {
            let status = self.status.borrow();
            (status.is_leader, status.lease_until)
        };
        let speaking = {
            let peers = self.peers.borrow();
            peers.values().filter(|v| **v >= PeerVersion::V3).count()
        };
        NodeView {
            now: self.clock.now(),
            leads,
            lease_until,
            peers: self.directory.count_others(&self.status.borrow().members),
            peers_speaking_current: speaking,
        }
    }

    /// A refusal in the wire's terms: a redirect to the leader, a retry
    /// here, or an error the client must act on.
    fn refused(&self, refusal: Refusal) -> proto::Error {
        match refusal {
            Refusal::NotLeader => self.not_leader(),
            Refusal::NoLease | Refusal::TakingOver | Refusal::Taking => {
                error(ErrorCode::Unavailable, refusal.to_string(), true)
            }
            Refusal::SessionUnknown(_) | Refusal::SessionExpiring(_) => {
                error(ErrorCode::SessionUnknown, refusal.to_string(), false)
            }
            Refusal::TooManyWaits { .. } => {
                error(ErrorCode::InvalidRequest, refusal.to_string(), false)
            }
            Refusal::Command(e) => command_error(&e),
            Refusal::Denied(refused) => access::denied(&self.shared, &refused),
            Refusal::Unsupported { .. } => {
                error(ErrorCode::Unsupported, refusal.to_string(), false)
            }
        }
    }

    async fn acquire(
        &self,
        session: SessionId,
        request_id: RequestId,
        kind: CommandKind,
        follow: Follow,
        acquire: proto::Acquire,
    ) -> Answer {
        let name = acquire.name;
        let key = (session.0, name.clone());
        // Registered as the command is applied, so a grant applied right
        // after the `Queued` reply cannot be missed, nor an older grant
        // (applied earlier on a node catching up) mistaken for this one.
        let (grant_tx, grant_rx) = oneshot::channel();
        let waiter = self.shared.next_proposal_id();
        let _withdraw = self.shared.waiter_guard(WaitFor::Grant, key, waiter);
        let reply = self
            .commit_then(kind, follow.after_apply(|| (waiter, grant_tx)))
            .await?;
        let granted = |token: FencingToken, shared: Option<SharedGranted>| {
            Ok(response::Result::Granted(proto::Granted {
                name: name.clone(),
                fencing_token: shared.map_or(token, |s| s.fencing).0,
                slot: shared.and_then(|s| s.slot),
                grant_token: shared.map_or(0, |_| token.0),
            }))
        };
        match reply {
            Reply::Granted { token } => granted(token, None),
            Reply::GrantedShared { token, shared } => granted(token, Some(shared)),
            Reply::Busy { .. } => Err(error(
                ErrorCode::Busy,
                format!("{name:?} is held by another session (no permit or mode free now)"),
                false,
            )),
            Reply::Queued { .. } => {
                // Registered, or answered already if a retry was told the
                // recorded `Queued` after its grant (the core's rule).
                let limit = Duration::from_millis(acquire.timeout_ms);
                match wait_at_most(acquire.timeout_ms, grant_rx).await {
                    Some(Ok(woken)) => match woken.reply() {
                        Reply::Granted { token } => granted(token, None),
                        Reply::GrantedShared { token, shared } => granted(token, Some(shared)),
                        other => Err(unexpected(&other)),
                    },
                    // Dropped unanswered: a cancel, or the session's end.
                    Some(Err(_)) if self.shared.machine().has_session(session) => {
                        Err(error(
                            ErrorCode::Cancelled,
                            format!("the wait for lock {name:?} was cancelled by a CancelAcquire of this session"),
                            false,
                        ))
                    }
                    Some(Err(_)) => Err(error(
                        ErrorCode::SessionUnknown,
                        "the session ended while waiting for the lock",
                        false,
                    )),
                    None => {
                        // Logged cancel: a grant that raced it is released.
                        let withdrawn = self
                            .withdraw(session, &name, AbandonedWait::Acquire, request_id)
                            .await;
                        let what = if withdrawn {
                            "the wait was cancelled"
                        } else {
                            "its withdrawal is not confirmed: send CancelAcquire (the paxlock client does), or the session may be granted the lock later"
                        };
                        Err(error(
                            ErrorCode::Timeout,
                            format!("lock {name:?} was not granted within {limit:?}; {what}"),
                            false,
                        ))
                    }
                }
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn campaign(
        &self,
        session: SessionId,
        request_id: RequestId,
        kind: CommandKind,
        follow: Follow,
        campaign: proto::Campaign,
    ) -> Answer {
        let name = campaign.election;
        let key = (session.0, name.clone());
        let (won_tx, won_rx) = oneshot::channel();
        let waiter = self.shared.next_proposal_id();
        let _withdraw = self.shared.waiter_guard(WaitFor::Win, key, waiter);
        // The answer describes the term *this* campaign won, never the
        // election's state when the answer is sent: by then the leadership
        // may already have passed on (applies can run ahead of this task),
        // and the caller would believe it leads someone else's term.
        let won = |term: u64, token: Option<FencingToken>, value: Vec<u8>| {
            Ok(response::Result::Leader(proto::LeaderInfo {
                election: name.clone(),
                term,
                has_leader: true,
                value,
                leader_session_id: session.0,
                leader_identity: self.owner_name(session),
                fencing_token: token.map_or(0, |t| t.0),
            }))
        };
        let reply = self
            .commit_then(kind, follow.after_apply(|| (waiter, won_tx)))
            .await?;
        match reply {
            Reply::Elected { term, token } => won(term, token, campaign.value),
            Reply::Candidate { .. } => {
                // Registered, or answered already if this session leads
                // (a retry after its win): the core's rule.
                let limit = Duration::from_millis(campaign.timeout_ms);
                match wait_at_most(campaign.timeout_ms, won_rx).await {
                    Some(Ok(woken)) => match woken.reply() {
                        Reply::Elected { term, token } => won(term, token, campaign.value),
                        other => Err(unexpected(&other)),
                    },
                    Some(Err(_)) => Err(error(
                        ErrorCode::SessionUnknown,
                        "the session ended while campaigning",
                        false,
                    )),
                    None => {
                        // Not a client Resign: that would reuse the campaign's
                        // request id and get its recorded answer back.
                        let withdrawn = self
                            .withdraw(session, &name, AbandonedWait::Campaign, request_id)
                            .await;
                        let what = if withdrawn {
                            "the candidacy was withdrawn"
                        } else {
                            "its withdrawal is not confirmed: send Resign, or the session may still be elected"
                        };
                        Err(error(
                            ErrorCode::Timeout,
                            format!("election {name:?} was not won within {limit:?}; {what}"),
                            false,
                        ))
                    }
                }
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Withdraws a wait that timed out (request `up_to` of `session`) with
    /// the core's logged withdrawal; whether that was committed.
    async fn withdraw(
        &self,
        session: SessionId,
        name: &str,
        wait: AbandonedWait,
        up_to: RequestId,
    ) -> bool {
        let (kind, follow) = admission::withdrawal(session, name, wait, up_to);
        self.commit_then(kind, follow.after_apply(no_waiter))
            .await
            .is_ok()
    }

    /// The access rules in force here, with their version.
    fn access_rules(&self) -> proto::AccessRulesOk {
        let machine = self.shared.machine();
        access::rules_to_wire(machine.access_rules(), machine.access_version())
    }

    fn leader_info(&self, election: &str) -> proto::LeaderInfo {
        let machine = self.shared.machine();
        let term = machine.term(election);
        match machine.leader(election) {
            Some(view) => proto::LeaderInfo {
                election: election.to_string(),
                term: view.term,
                has_leader: true,
                value: view.value,
                leader_session_id: view.session.0,
                leader_identity: view.owner.map(|o| o.0).unwrap_or_default(),
                fencing_token: view.token.map_or(0, |t| t.0),
            },
            None => proto::LeaderInfo {
                election: election.to_string(),
                term,
                ..Default::default()
            },
        }
    }

    /// The protocol version to record in the log now, if any: the leader
    /// role decides (`LeaderRole::protocol_to_record`) from how many peers
    /// are connected and speak this release's protocol.
    pub fn protocol_to_record(&self) -> Option<u32> {
        let view = self.view();
        let machine = self.shared.machine();
        self.shared
            .role()
            .protocol_to_record(&machine, view.peers, view.peers_speaking_current)
    }

    /// The identity `session` belongs to, empty if none (or not live).
    fn owner_name(&self, session: SessionId) -> String {
        let machine = self.shared.machine();
        match machine.session_owner(session) {
            Ok(Some(owner)) => owner.0.clone(),
            _ => String::new(),
        }
    }

    /// Proposes `kind` and waits until it is applied here.
    async fn commit(&self, kind: CommandKind) -> Result<Reply, proto::Error> {
        self.commit_then(kind, None).await
    }

    /// Like `commit`; `then` is registered as a waiter when the command is
    /// applied (see [`Waiter`]).
    async fn commit_then(
        &self,
        kind: CommandKind,
        then: Option<AfterApply>,
    ) -> Result<Reply, proto::Error> {
        let output = self.propose(kind, then).await?;
        output.reply.map_err(|e| command_error(&e))
    }

    /// Proposes a leader-internal command (expiry, tick) and waits for it.
    pub async fn propose_internal(&self, kind: CommandKind) -> Result<Output, proto::Error> {
        self.propose(kind, None).await
    }

    async fn propose(
        &self,
        kind: CommandKind,
        then: Option<AfterApply>,
    ) -> Result<Output, proto::Error> {
        let command = Command {
            at_ms: self.shared.role().stamp_ms(self.clock.now()),
            kind,
        };
        let id = self.shared.next_proposal_id();
        let bytes = Proposal::encode(self.shared.node_id, id, &command).map_err(|e| {
            error(
                ErrorCode::InvalidRequest,
                format!("cannot encode command: {e}"),
                false,
            )
        })?;
        // Held until this function returns: the command is then applied,
        // refused, or given up on.
        let charge = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let Ok(_proposing) = self
            .shared
            .proposing_bytes
            .clone()
            .try_acquire_many_owned(charge)
        else {
            return Err(error(
                ErrorCode::Unavailable,
                "this node has as many commands in flight as it holds; retry with backoff",
                true,
            ));
        };
        let (tx, rx) = oneshot::channel();
        self.shared.pending.insert(
            id,
            PendingCommand {
                reply: tx,
                then,
                proposed_at: std::time::Instant::now(),
            },
        );
        if self
            .inbox
            .send(DriverInput::Propose(vec![bytes.into()]))
            .await
            .is_err()
        {
            self.shared.pending.remove(&id);
            return Err(error(
                ErrorCode::ShuttingDown,
                "the node is shutting down",
                true,
            ));
        }
        match tokio::time::timeout(COMMIT_TIMEOUT, rx).await {
            Ok(Ok(Ok(output))) => Ok(output),
            // Refused by the core: leadership moved, or the node is overloaded.
            Ok(Ok(Err(reason))) => match reason {
                crate::paxos::RejectReason::QueueFull => Err(error(
                    ErrorCode::Unavailable,
                    "the leader's proposal queue is full; retry with backoff",
                    true,
                )),
                crate::paxos::RejectReason::TooLarge => Err(error(
                    ErrorCode::ValueTooLarge,
                    "the command is larger than a log entry may be",
                    false,
                )),
                crate::paxos::RejectReason::NotLeader => Err(self.not_leader()),
                // A client command is wrapped in an envelope naming this
                // node, so it never looks like a membership change.
                crate::paxos::RejectReason::Membership(_)
                | crate::paxos::RejectReason::Reserved => Err(error(
                    ErrorCode::Internal,
                    "the command was taken for a membership change; report this as a bug",
                    false,
                )),
            },
            // The node dropped the waiter (shutting down or stepping down).
            Ok(Err(_)) => Err(self.not_leader()),
            Err(_) => {
                self.shared.pending.remove(&id);
                Err(error(
                    ErrorCode::Unavailable,
                    "the command was not committed in time (no quorum?); retry with the same request id",
                    true,
                ))
            }
        }
    }

    /// `NOT_LEADER`, naming the leader and its address where known.
    pub fn not_leader(&self) -> proto::Error {
        let leader = self.status.borrow().leader.map(|id| id.0);
        let mut err = error(
            ErrorCode::NotLeader,
            "this node does not lead the cluster",
            true,
        );
        if let Some(id) = leader.filter(|&id| id != self.shared.node_id) {
            err.leader_node_id = id;
            let members = self.status.borrow().members.clone();
            err.leader_addr = (self.directory.address(id, &members))
                .map(|a| a.to_string())
                .unwrap_or_default();
            err.message = format!("node {id} leads the cluster; send requests there");
        }
        err
    }
}

/// What the core decided for a request, once the commands it asked for
/// first are committed.
enum Admitted {
    KeptAlive {
        ttl_ms: u64,
        taken: Vec<paxlock_core::locks::FencingToken>,
    },
    Read,
    Propose {
        kind: CommandKind,
        follow: Follow,
    },
}

/// Tokens as the wire carries them.
fn wire_tokens(tokens: &[paxlock_core::locks::FencingToken]) -> Vec<u64> {
    tokens.iter().map(|t| t.0).collect()
}

/// An acquire in the core's terms: of a lock, or (by its mode) of a
/// semaphore's permit or a read/write lock.
fn acquire_op(acquire: &proto::Acquire) -> Result<ClientOp, proto::Error> {
    use proto::acquire::Mode as Wire;
    let mode = match Wire::try_from(acquire.mode) {
        Ok(Wire::Lock) => {
            return Ok(ClientOp::Acquire {
                name: acquire.name.clone(),
                wait: acquire.wait,
                value: acquire.value.clone(),
            })
        }
        Ok(Wire::Permit) => Mode::Permit,
        Ok(Wire::Read) => Mode::Read,
        Ok(Wire::Write) => Mode::Write,
        Err(_) => {
            return Err(error(
                ErrorCode::InvalidRequest,
                format!(
                    "acquire mode {} is unknown to this node (a later release's?)",
                    acquire.mode
                ),
                false,
            ))
        }
    };
    if !acquire.value.is_empty() {
        return Err(error(
            ErrorCode::InvalidRequest,
            "values are kept with locks only, not with semaphores or read/write locks",
            false,
        ));
    }
    Ok(ClientOp::AcquireShared {
        name: acquire.name.clone(),
        wait: acquire.wait,
        mode,
        permits: acquire.permits,
    })
}

/// A wire request's operation in the core's terms.
fn request_op(op: &Op) -> Result<RequestOp, proto::Error> {
    let client = RequestOp::Client;
    Ok(match op {
        Op::Hello(_)
        | Op::Status(_)
        | Op::Watch(_)
        | Op::WatchLock(_)
        | Op::ListMembers(_)
        | Op::ChangeMembership(_)
        | Op::ExportSnapshot(_)
        | Op::ReadSnapshot(_) => {
            return Err(error(
                ErrorCode::InvalidRequest,
                "hello, status, watch, membership and backups are answered by the node itself",
                false,
            ))
        }
        Op::OpenSession(open) => RequestOp::OpenSession {
            ttl_ms: open.ttl_ms,
            open_key: open.open_key,
        },
        Op::KeepAlive(_) => RequestOp::KeepAlive,
        Op::CloseSession(_) => client(ClientOp::CloseSession),
        Op::Acquire(acquire) | Op::AcquireWithValue(acquire) | Op::AcquireShared(acquire) => {
            client(acquire_op(acquire)?)
        }
        Op::Release(release) => client(ClientOp::Release {
            name: release.name.clone(),
            token: FencingToken(release.fencing_token),
        }),
        Op::Renew(renew) => RequestOp::Renew {
            name: renew.name.clone(),
            token: FencingToken(renew.fencing_token),
        },
        Op::CancelAcquire(cancel) => client(ClientOp::CancelAcquire {
            name: cancel.name.clone(),
        }),
        Op::Campaign(campaign) => client(ClientOp::Campaign {
            name: campaign.election.clone(),
            value: campaign.value.clone(),
        }),
        Op::Resign(resign) => client(ClientOp::Resign {
            name: resign.election.clone(),
        }),
        Op::Proclaim(proclaim) => client(ClientOp::Proclaim {
            name: proclaim.election.clone(),
            value: proclaim.value.clone(),
        }),
        Op::QueryLeader(query) => RequestOp::QueryLeader {
            election: query.election.clone(),
        },
        Op::SetAccessRules(set) => RequestOp::SetAccessRules {
            rules: access::rules_from_wire(&set.rules, &set.quotas)?,
            expected_version: set.expected_version,
        },
        Op::GetAccessRules(_) => RequestOp::GetAccessRules,
        Op::DescribeLock(describe) => RequestOp::DescribeLock {
            name: describe.name.clone(),
        },
        Op::CheckToken(check) => RequestOp::CheckToken {
            name: check.name.clone(),
            token: FencingToken(check.token),
        },
        Op::ListLocks(list) => RequestOp::ListLocks {
            prefix: list.prefix.clone(),
            after: list.after.clone(),
            limit: list.limit,
        },
        Op::ForceRelease(force) => RequestOp::ForceRelease {
            name: force.name.clone(),
            token: (force.token != 0).then_some(FencingToken(force.token)),
        },
        Op::RevokeSession(revoke) => RequestOp::RevokeSession {
            session: SessionId(revoke.session_id),
        },
        Op::ListSessions(list) => RequestOp::ListSessions {
            after: SessionId(list.after),
            limit: list.limit,
        },
    })
}

/// The waiter of a request that cannot wait. Never called: only an
/// `Await` follow asks for a waiter, and only acquires and campaigns
/// (which bring their own) are told to await.
fn no_waiter() -> (WaiterId, tokio::sync::oneshot::Sender<Woken>) {
    (0, oneshot::channel().0)
}

fn done() -> response::Result {
    response::Result::Done(proto::Done {})
}

fn unexpected(reply: &Reply) -> proto::Error {
    error(
        ErrorCode::Internal,
        format!("unexpected state machine reply {reply:?}"),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::{Command, Config};
    use crate::node::driver::Application;
    use crate::paxos::{ChosenEntry, Slot};
    use crate::service::apply::LockApplication;

    /// Other nodes' commands, encoded as log values.
    fn from_elsewhere(kinds: Vec<CommandKind>) -> Vec<crate::paxos::Value> {
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Proposal::encode(99, i as u64, &Command { at_ms: 0, kind }).unwrap())
            .map(crate::paxos::Value::from)
            .collect()
    }

    /// A stand-in consensus loop: applies each proposal through the real
    /// application, after `before` (entries chosen earlier that this node
    /// applies only now, as a node catching up does) in a slot of their
    /// own, and together with `then` (other clients' commands chosen in
    /// the same slot), so every apply runs before the proposer's task wakes.
    fn fake_loop(
        shared: Arc<Shared>,
        clock: NodeClock,
        mut slot: u64,
        before: Vec<CommandKind>,
        mut then: Vec<CommandKind>,
    ) -> mpsc::Sender<DriverInput> {
        let (tx, mut rx) = mpsc::channel(8);
        let mut before = from_elsewhere(before);
        tokio::spawn(async move {
            let mut app = LockApplication::new(shared, clock, Default::default());
            while let Some(input) = rx.recv().await {
                let DriverInput::Propose(mut batch) = input else {
                    continue;
                };
                if !before.is_empty() {
                    app.apply(&ChosenEntry {
                        slot: Slot(slot),
                        batch: std::mem::take(&mut before),
                    });
                    slot += 1;
                }
                batch.extend(from_elsewhere(std::mem::take(&mut then)));
                app.apply(&ChosenEntry {
                    slot: Slot(slot),
                    batch,
                });
                slot += 1;
            }
        });
        tx
    }

    fn client(session: u64, request_id: u64, op: ClientOp) -> CommandKind {
        CommandKind::client_op(session, request_id, op)
    }

    fn open_session(m: &mut crate::locks::StateMachine, slot: u64) -> u64 {
        let kind = CommandKind::OpenSession { ttl_ms: 10_000 };
        match m.apply(slot, Command { at_ms: 0, kind }).reply {
            Ok(Reply::SessionOpened { session }) => session.0,
            other => panic!("{other:?}"),
        }
    }

    /// A context whose node leads and serves (its takeover applied, after
    /// what its machine holds so far), proposing into `inbox`.
    fn leader_context(
        shared: Arc<Shared>,
        clock: NodeClock,
        inbox: mpsc::Sender<DriverInput>,
    ) -> Context {
        {
            let mut m = shared.machine();
            let ballot = crate::paxos::Ballot {
                round: 1,
                node: crate::paxos::NodeId(1),
            };
            let takeover = shared.role().became_leader(ballot, clock.now());
            let slot = m.last_applied_slot();
            let output = m.apply(slot, takeover);
            shared.role().applied(&m, &output, clock.now());
        }
        // The sender is dropped: the status stays what it was made with.
        let (_, status) = watch::channel(DriverStatus {
            is_leader: true,
            ..DriverStatus::default()
        });
        Context {
            inbox,
            shared,
            status,
            clock,
            directory: unconnected_peer(),
            peers: watch::channel(PeerVersions::new()).1,
        }
    }

    /// Node addresses naming a peer that never connects: these contexts
    /// never raise the protocol, so requests go as protocol 2 commands.
    fn unconnected_peer() -> Arc<crate::node::directory::Directory> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        Arc::new(crate::node::directory::Directory {
            node_id: 1,
            listen: addr,
            seeds: [(2, addr)].into(),
        })
    }

    /// Sends one request of `session` and waits (bounded) for the answer.
    async fn ask(context: &Context, session: u64, request_id: u64, op: Op) -> Response {
        let request = Request {
            request_id,
            session_id: session,
            ack_below: 0,
            waiting: Vec::new(),
            op: Some(op),
        };
        let caller = Identity("tester".into());
        tokio::time::timeout(Duration::from_secs(5), context.answer(request, &caller))
            .await
            .unwrap()
    }

    fn campaign(name: &str, value: &[u8]) -> ClientOp {
        ClientOp::Campaign {
            name: name.into(),
            value: value.to_vec(),
        }
    }

    /// Regression (found by `paxlock chaos --seed 20261127 --workers 12
    /// --duration 30m`): a campaign's answer was built from the election's
    /// state when the answer was sent. When the applies that elected the
    /// candidate had already gone on to end its leadership and elect
    /// another, the candidate was told it led the other's term.
    #[tokio::test]
    async fn a_campaign_is_answered_with_the_term_it_won_not_the_current_one() {
        let shared = Arc::new(Shared::new(1, Config::default()));
        let clock = NodeClock::new();
        let (a, b, c) = {
            let mut m = shared.machine();
            let mut open = |slot| open_session(&mut m, slot);
            let sessions = (open(0), open(1), open(2));
            let cmd = |kind| Command { at_ms: 0, kind };
            let r = m.apply(3, cmd(client(sessions.0, 1, campaign("e", b"a"))));
            assert!(
                matches!(r.reply, Ok(Reply::Elected { term: 1, .. })),
                "{r:?}"
            );
            sessions
        };
        // In the slot that queues b's campaign: a resigns (b elected, term
        // 2), c campaigns, b's session closes (c elected, term 3).
        let later = vec![
            client(a, 2, ClientOp::Resign { name: "e".into() }),
            client(c, 1, campaign("e", b"c")),
            client(b, 2, ClientOp::CloseSession),
        ];
        let context = leader_context(
            shared.clone(),
            clock,
            fake_loop(shared.clone(), clock, 4, Vec::new(), later),
        );
        let response = ask(&context, b, 1, campaign_op(b"b", 0)).await;
        let Some(response::Result::Leader(info)) = response.result else {
            panic!("{response:?}");
        };
        assert_eq!(
            (info.term, info.leader_session_id, info.value.as_slice()),
            (2, b, &b"b"[..]),
            "b won term 2; term 3 is c's"
        );
        assert_eq!(shared.machine().leader("e").map(|l| l.session.0), Some(c));
    }

    /// A node with sessions `a` and `b` open (slots 0 and 1), its context
    /// driven by a stand-in loop that first applies `before`.
    fn catching_up_node(before: impl FnOnce(u64, u64) -> Vec<CommandKind>) -> (Context, u64, u64) {
        let shared = Arc::new(Shared::new(1, Config::default()));
        let clock = NodeClock::new();
        let (a, b) = {
            let mut m = shared.machine();
            let mut open = |slot| open_session(&mut m, slot);
            (open(0), open(1))
        };
        let inbox = fake_loop(shared.clone(), clock, 2, before(a, b), Vec::new());
        let context = leader_context(shared, clock, inbox);
        (context, a, b)
    }

    /// A campaign for election "e".
    fn campaign_op(value: &[u8], timeout_ms: u64) -> Op {
        Op::Campaign(proto::Campaign {
            election: "e".into(),
            value: value.to_vec(),
            timeout_ms,
        })
    }

    /// A blocking acquire of lock "l".
    fn waiting_acquire(timeout_ms: u64) -> Op {
        Op::Acquire(proto::Acquire {
            name: "l".into(),
            wait: true,
            timeout_ms,
            ..Default::default()
        })
    }

    /// No timeout means no timeout: a wait is not cut at a day (it was,
    /// at 24 hours, and standby candidates gave up).
    #[tokio::test(start_paused = true)]
    async fn a_wait_without_a_timeout_is_not_cut_after_a_day() {
        let (context, _a, b) = catching_up_node(|a, _| {
            vec![client(
                a,
                1,
                ClientOp::Acquire {
                    name: "l".into(),
                    wait: false,
                    value: Vec::new(),
                },
            )]
        });
        let request = Request {
            request_id: 1,
            session_id: b,
            ack_below: 0,
            waiting: Vec::new(),
            op: Some(waiting_acquire(0)),
        };
        let caller = Identity("tester".into());
        let two_days = Duration::from_secs(48 * 3600);
        let waited = tokio::time::timeout(two_days, context.answer(request, &caller)).await;
        assert!(waited.is_err(), "answered within two days: {waited:?}");
        assert_eq!(context.shared.machine().waiters("l"), vec![SessionId(b)]);
    }

    fn timed_out(response: &Response) -> bool {
        response
            .error
            .as_ref()
            .is_some_and(|e| e.code == i32::from(ErrorCode::Timeout))
    }

    /// Regression (found by `paxlock chaos --seed 20261129 --workers 12
    /// --duration 30m`: two candidates told terms they had won earlier): a
    /// campaign's waiter was registered before its command was applied,
    /// so a node still applying older entries woke it with the session's
    /// *earlier* win. Here b won term 1 and resigned and a leads before
    /// b's new campaign is applied: it must wait, not win term 1.
    #[tokio::test]
    async fn a_campaign_is_not_woken_by_an_older_win_of_its_session() {
        let (context, _a, b) = catching_up_node(|a, b| {
            vec![
                client(b, 1, campaign("e", b"old")),
                client(b, 2, ClientOp::Resign { name: "e".into() }),
                client(a, 1, campaign("e", b"a")),
            ]
        });
        let response = ask(&context, b, 3, campaign_op(b"new", 300)).await;
        assert!(
            timed_out(&response),
            "b must not win while a leads: {response:?}"
        );
    }

    /// Two acquires of one lock by one session waiting at once (two tasks
    /// sharing a client): both are answered with the grant. With waiters
    /// keyed by (session, lock) alone, the second replaced the first, which
    /// was told its session had ended.
    #[tokio::test]
    async fn two_waiting_acquires_of_one_session_both_get_the_grant() {
        let (context, a, b) = catching_up_node(|a, _| {
            vec![client(
                a,
                1,
                ClientOp::Acquire {
                    name: "l".into(),
                    wait: false,
                    value: Vec::new(),
                },
            )]
        });
        let wait = |request_id| ask(&context, b, request_id, waiting_acquire(3_000));
        let release = async {
            // Both acquires are queued by now (each is applied as proposed).
            tokio::time::sleep(Duration::from_millis(200)).await;
            let holder = context.shared.machine().holder("l").expect("a holds l");
            assert_eq!(holder.session.0, a);
            let released = ask(
                &context,
                a,
                2,
                Op::Release(proto::Release {
                    name: "l".into(),
                    fencing_token: holder.token.0,
                }),
            )
            .await;
            assert!(released.error.is_none(), "{released:?}");
        };
        let (first, second, ()) = tokio::join!(wait(1), wait(2), release);
        let token = |response: &Response| match &response.result {
            Some(response::Result::Granted(g)) => g.fencing_token,
            _ => panic!("not granted: {response:?}"),
        };
        assert_eq!(token(&first), token(&second));
        let holder = context.shared.machine().holder("l").map(|h| h.session.0);
        assert_eq!(holder, Some(b));
    }

    /// The rule itself is the leader role's (its unit tests); this shows
    /// the service asks it and tells the client its session is gone.
    #[tokio::test]
    async fn a_keepalive_for_a_session_being_expired_is_answered_session_unknown() {
        let shared = Arc::new(Shared::new(1, Config::default()));
        let clock = NodeClock::new();
        let session = {
            let mut m = shared.machine();
            let session = open_session(&mut m, 0);
            let takeover = shared.role().became_leader(
                crate::paxos::Ballot {
                    round: 1,
                    node: crate::paxos::NodeId(1),
                },
                clock.now(),
            );
            let output = m.apply(1, takeover);
            shared.role().applied(&m, &output, clock.now());
            session
        };
        let (inbox, _) = mpsc::channel(1);
        let (_, status) = watch::channel(DriverStatus {
            is_leader: true,
            lease_until: Some(clock.now().plus(3_600 * 1_000_000_000)),
            ..DriverStatus::default()
        });
        let context = Context {
            inbox,
            shared: shared.clone(),
            status,
            clock,
            directory: unconnected_peer(),
            peers: watch::channel(PeerVersions::new()).1,
        };
        let keepalive = || Op::KeepAlive(proto::KeepAlive {});
        let alive = ask(&context, session, 0, keepalive()).await;
        assert!(alive.error.is_none(), "{alive:?}");
        // Its time runs out (an hour from now, on the role's clock); the
        // scan proposes the expiry.
        let later = clock.now().plus(3_600 * 1_000_000_000);
        let due = {
            let m = shared.machine();
            shared.role().due(&m, later)
        };
        assert_eq!(due.len(), 1, "{due:?}");
        let late = ask(&context, session, 0, keepalive()).await;
        let code = late.error.as_ref().map(|e| e.code);
        assert_eq!(code, Some(i32::from(ErrorCode::SessionUnknown)), "{late:?}");
    }

    /// Regression (found in review): a CancelAcquire dropped the session's
    /// lock waiters on its own task after the commit, so a later acquire of
    /// the same lock by the same session, applied in between, lost its
    /// waiter and was answered `CANCELLED` while still queued. They are
    /// dropped as the cancel is applied.
    #[tokio::test]
    async fn a_cancel_drops_only_the_waiters_registered_before_it() {
        use tokio::sync::oneshot::error::TryRecvError;
        let shared = Arc::new(Shared::new(1, Config::default()));
        let acquire = |wait| ClientOp::Acquire {
            name: "l".into(),
            wait,
            value: Vec::new(),
        };
        let b = {
            let mut m = shared.machine();
            let (a, b) = (open_session(&mut m, 0), open_session(&mut m, 1));
            let cmd = |kind| Command { at_ms: 0, kind };
            let held = m.apply(2, cmd(client(a, 1, acquire(false))));
            assert!(matches!(held.reply, Ok(Reply::Granted { .. })), "{held:?}");
            let queued = m.apply(3, cmd(client(b, 1, acquire(true))));
            assert!(
                matches!(queued.reply, Ok(Reply::Queued { .. })),
                "{queued:?}"
            );
            b
        };
        let key = (b, "l".to_string());
        let (cancelled_tx, mut cancelled_rx) = oneshot::channel();
        shared.with_waiters(|book| book.add(WaitFor::Grant, key.clone(), 1, cancelled_tx));
        let (later_tx, mut later_rx) = oneshot::channel();
        // This node proposed both, chosen in this order in one slot: the
        // cancel, then a new wait for the same lock.
        let proposed = |id, kind, then| {
            let (reply, _) = oneshot::channel();
            let proposed_at = std::time::Instant::now();
            shared.pending.insert(
                id,
                PendingCommand {
                    reply,
                    then,
                    proposed_at,
                },
            );
            crate::paxos::Value::from(Proposal::encode(1, id, &Command { at_ms: 0, kind }).unwrap())
        };
        let cancel = ClientOp::CancelAcquire { name: "l".into() };
        let batch = vec![
            proposed(
                100,
                client(b, 2, cancel),
                Some(AfterApply::DropLockWaiters(key.clone())),
            ),
            proposed(
                101,
                client(b, 3, acquire(true)),
                Some(AfterApply::Register {
                    wait: WaitFor::Grant,
                    key,
                    id: 2,
                    waiter: later_tx,
                }),
            ),
        ];
        let mut app = LockApplication::new(shared.clone(), NodeClock::new(), Default::default());
        app.apply(&ChosenEntry {
            slot: Slot(4),
            batch,
        });
        assert!(matches!(cancelled_rx.try_recv(), Err(TryRecvError::Closed)));
        assert!(matches!(later_rx.try_recv(), Err(TryRecvError::Empty)));
        assert_eq!(shared.machine().waiters("l"), vec![SessionId(b)]);
    }

    /// Regression (found in review): a node that installed a snapshot
    /// holding grants never applied them one by one, so its waiting
    /// requests were not woken and waited until their timeout, the lock
    /// held all the while by a session that did not know it.
    #[tokio::test]
    async fn a_snapshot_answers_the_waits_it_settled() {
        use tokio::sync::oneshot::error::TryRecvError;
        let shared = Arc::new(Shared::new(1, Config::default()));
        let cmd = |kind| Command { at_ms: 0, kind };
        let acquire = |wait| ClientOp::Acquire {
            name: "l".into(),
            wait,
            value: Vec::new(),
        };
        let (holder, granted, cancelled, queued, token) = {
            let mut m = shared.machine();
            let sessions: Vec<u64> = (0..4).map(|slot| open_session(&mut m, slot)).collect();
            let held = m.apply(4, cmd(client(sessions[0], 1, acquire(false))));
            let Ok(Reply::Granted { token }) = held.reply else {
                panic!("{held:?}")
            };
            for (slot, session) in (5..).zip(&sessions[1..]) {
                let waiting = m.apply(slot, cmd(client(*session, 1, acquire(true))));
                assert!(
                    matches!(waiting.reply, Ok(Reply::Queued { .. })),
                    "{waiting:?}"
                );
            }
            (sessions[0], sessions[1], sessions[2], sessions[3], token)
        };
        let mut waiting = Vec::new();
        for (id, session) in [granted, cancelled, queued].into_iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            shared.with_waiters(|book| {
                book.add(WaitFor::Grant, (session, "l".into()), id as u64, tx)
            });
            waiting.push(rx);
        }
        // Elsewhere, later: the holder releases (the first waiter gets the
        // lock) and the second waiter cancels. This node gets a snapshot.
        let mut later =
            crate::locks::StateMachine::restore(&shared.machine().snapshot().unwrap()).unwrap();
        let release = ClientOp::Release {
            name: "l".into(),
            token,
        };
        later.apply(8, cmd(client(holder, 2, release)));
        let cancel = ClientOp::CancelAcquire { name: "l".into() };
        later.apply(9, cmd(client(cancelled, 2, cancel)));
        let new_token = later.holder("l").unwrap().token.0;
        let snapshot = crate::paxos::Snapshot {
            up_to: Slot(10),
            data: later.snapshot().unwrap(),
        };

        let mut app = LockApplication::new(shared.clone(), NodeClock::new(), Default::default());
        app.install_snapshot(&snapshot).unwrap();
        let granted = Woken::Granted(FencingToken(new_token));
        assert_eq!(waiting[0].try_recv(), Ok(granted), "the grant");
        assert!(matches!(waiting[1].try_recv(), Err(TryRecvError::Closed)));
        assert!(matches!(waiting[2].try_recv(), Err(TryRecvError::Empty)));
    }

    /// A CancelAcquire answers the session's waiting acquire `CANCELLED`
    /// (it used to say the session had ended, which it had not).
    #[tokio::test]
    async fn a_cancelled_wait_is_answered_cancelled_and_its_session_lives_on() {
        let (context, a, b) = catching_up_node(|a, _| {
            vec![client(
                a,
                1,
                ClientOp::Acquire {
                    name: "l".into(),
                    wait: false,
                    value: Vec::new(),
                },
            )]
        });
        let cancel = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while context.shared.machine().waiters("l") != vec![SessionId(b)] {
                assert!(tokio::time::Instant::now() < deadline, "b never queued");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let cancel = Op::CancelAcquire(proto::CancelAcquire { name: "l".into() });
            let done = ask(&context, b, 2, cancel).await;
            assert!(done.error.is_none(), "{done:?}");
        };
        let (waited, ()) = tokio::join!(ask(&context, b, 1, waiting_acquire(10_000)), cancel);
        let code = waited.error.as_ref().map(|e| e.code);
        assert_eq!(code, Some(i32::from(ErrorCode::Cancelled)), "{waited:?}");
        let machine = context.shared.machine();
        assert!(machine.has_session(SessionId(b)));
        assert!(machine.waiters("l").is_empty());
        assert_eq!(machine.holder("l").map(|h| h.session.0), Some(a));
    }

    /// The same for locks (a stale grant would be a second holder): b held
    /// the lock with an older token and released it, a holds it now, and
    /// b's new acquire is applied only after those: it must queue.
    #[tokio::test]
    async fn a_queued_acquire_is_not_woken_by_an_older_grant_to_its_session() {
        let (context, a, b) = catching_up_node(|a, b| {
            let acquire = |wait| ClientOp::Acquire {
                name: "l".into(),
                wait,
                value: Vec::new(),
            };
            vec![
                client(b, 1, acquire(false)),
                // A token is the revision of its grant: two sessions
                // opened, the takeover, then b's acquire.
                client(
                    b,
                    2,
                    ClientOp::Release {
                        name: "l".into(),
                        token: crate::locks::FencingToken(4),
                    },
                ),
                client(a, 1, acquire(false)),
            ]
        });
        let response = ask(&context, b, 3, waiting_acquire(300)).await;
        assert!(timed_out(&response), "a holds the lock: {response:?}");
        let holder = context.shared.machine().holder("l").map(|h| h.session.0);
        assert_eq!(holder, Some(a));
    }
}
