//! The membership requests: `ListMembers` (anyone), `ChangeMembership`
//! (administrators) and a joining node's request (its node certificate),
//! answered by the node from its consensus loop's view.
//!
//! A change goes to the consensus loop of the leader, which hands it to the
//! core (every rule about when a change may be made is the core's); an
//! addition is first checked here by dialling the new node at the address
//! given, so that a member nobody can reach is never added.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use paxlock::proto::{self, change_membership::Kind, response, ErrorCode};
use tokio::sync::{oneshot, watch};

use super::driver::{ChangeRequest, DriverInput};
use crate::locks::Identity;
use crate::metrics::NodeMetrics;
use crate::paxos::{MembershipChange, MembershipError, NodeId, RejectReason};
use crate::service::errors::error;
use crate::service::{access, Context};
use crate::transport::join;
use crate::transport::peer_version::{PeerVersion, PeerVersions};
use crate::transport::NodeEndpoint;
use paxlock_core::access::Permission;
use paxlock_core::node_membership::{self, JoinAs, JoinStep, Route};
use paxlock_peer_codec::proto::{join_reply::Outcome, JoinReply};

/// How long a change asked to `wait` may take to be in effect before the
/// answer says it is still pending. A change normally is in effect within
/// a few commits (the leader fills the 16 slots at once).
pub const CHANGE_WAIT: Duration = Duration::from_secs(8);

/// How long the leader tries to reach a node it is asked to add.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the membership requests read and use.
pub struct MembersView<'a> {
    /// The lock service's context (inbox, status, access rules).
    pub context: &'a Context,
    /// The links up.
    pub connected: &'a watch::Receiver<PeerVersions>,
    /// Each peer's reported commit index.
    pub metrics: &'a Arc<NodeMetrics>,
    /// To check that a node to add is reachable.
    pub endpoint: &'a Arc<NodeEndpoint>,
}

impl MembersView<'_> {
    /// The members in effect at this node's commit index.
    pub fn list(&self) -> proto::MemberList {
        let status = self.context.status.borrow().clone();
        let me = self.context.directory.node_id;
        let up = self.connected.borrow();
        let members = status
            .members
            .voters
            .iter()
            .map(|n| (n, true))
            .chain(status.members.learners.iter().map(|n| (n, false)))
            .map(|(node, voter)| proto::Member {
                node_id: node.0,
                addr: (self.context.directory.address(node.0, &status.members))
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                voter,
                connected: node.0 == me || up.contains_key(&node.0),
                lag_slots: if node.0 == me {
                    0
                } else {
                    self.metrics.peer_lag(node.0, &status)
                },
            })
            .collect();
        proto::MemberList {
            members,
            change_at: status.membership_change_at.unwrap_or(0),
            leader_node_id: status.leader.map_or(0, |n| n.0),
            commit_index: status.commit_index,
            node_id: me,
        }
    }

    /// Makes `request`'s change as `caller`; answers with the members after
    /// it (in effect if the request asked to wait).
    pub async fn change(
        &self,
        request: &proto::ChangeMembership,
        caller: &Identity,
    ) -> Result<response::Result, proto::Error> {
        let shared = &self.context.shared;
        shared
            .check_access(caller, Permission::Admin, "")
            .map_err(|denied| access::denied(shared, &denied))?;
        let change = parse(request)?;
        self.make(change, request.wait).await?;
        Ok(response::Result::Members(self.list()))
    }

    /// Takes the next step of node `node` (reachable at `addr`), which
    /// asked to join as `wanted` (see `transport::join`): the leader adds
    /// it as a learner or promotes it, through the same checks as an
    /// administrator's change; any other node points at the leader.
    pub async fn join(&self, node: u64, addr: SocketAddr, wanted: JoinAs) -> JoinReply {
        let members = self.context.status.borrow().members.clone();
        let step = node_membership::join_step(NodeId(node), Some(addr), wanted, &members);
        let made = match step {
            Err(e) => return join::reply(Outcome::Refused, format!("node {node}: {e}")),
            Ok(JoinStep::Joined) => Ok(()),
            Ok(JoinStep::Make(change)) => self.make(change, true).await,
        };
        match made {
            Ok(()) => {
                let members = self.context.status.borrow().members.clone();
                if members.voters.contains(&NodeId(node)) {
                    join::reply(Outcome::Voter, "a voter")
                } else {
                    join::reply(Outcome::Learner, "a learner")
                }
            }
            Err(e) if e.code() == ErrorCode::NotLeader => JoinReply {
                leader_addr: e.leader_addr,
                ..join::reply(Outcome::AskLeader, e.message)
            },
            // Whatever this leader could not finish, the next request
            // finds in the members and carries on from.
            Err(e) if e.retryable || e.code() == ErrorCode::Unavailable => {
                join::reply(Outcome::Retry, e.message)
            }
            Err(e) => join::reply(Outcome::Refused, e.message),
        }
    }

    /// Makes `change` if this node leads and every check passes; with
    /// `wait`, returns once it is in effect.
    async fn make(&self, change: MembershipChange, wait: bool) -> Result<(), proto::Error> {
        let (leads, members) = {
            let status = self.context.status.borrow();
            (status.is_leader, status.members.clone())
        };
        if !leads {
            return Err(self.context.not_leader());
        }
        let me = NodeId(self.context.directory.node_id);
        let route = node_membership::route(change, me, &members)
            .map_err(|e| self.refused(RejectReason::Membership(e)))?;
        // A retry whose first answer was lost, a `replace` run again: the
        // answer is the members, as if made now.
        if route == Route::AlreadyMade {
            return Ok(());
        }
        self.check_every_member_upgraded(change)?;
        match route {
            Route::AlreadyMade | Route::Propose => {}
            Route::HandOver => {
                let _ = self.context.inbox.send(DriverInput::Abdicate).await;
                return Err(error(
                    ErrorCode::NotLeader,
                    format!(
                        "node {} leads and is the one to remove: it is handing leadership \
                         over; retry with the new leader",
                        me.0
                    ),
                    true,
                ));
            }
        }
        if let MembershipChange::AddLearner(node, Some(addr)) = change {
            self.check_reachable(node, addr).await?;
        }
        let (accepted, accepted_rx) = oneshot::channel();
        let (done, done_rx) = oneshot::channel();
        let asked = DriverInput::ChangeMembership(ChangeRequest {
            change,
            accepted,
            done,
        });
        let gone = || error(ErrorCode::Unavailable, "the consensus loop stopped", true);
        self.context.inbox.send(asked).await.map_err(|_| gone())?;
        match accepted_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(self.refused(reason)),
            Err(_) => return Err(gone()),
        }
        if wait {
            match tokio::time::timeout(CHANGE_WAIT, done_rx).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(RejectReason::NotLeader))) => {
                    return Err(error(
                        ErrorCode::Unavailable,
                        "this node lost the leadership before the change was decided: it may \
                         or may not be made; see `paxlock members list` before asking again",
                        false,
                    ))
                }
                Ok(Ok(Err(reason))) => return Err(self.refused(reason)),
                Ok(Err(_)) => return Err(gone()),
                Err(_) => {
                    return Err(error(
                        ErrorCode::Unavailable,
                        format!(
                            "the leader took the change but it is not in effect after {}; \
                             see `paxlock members list` before asking again",
                            humantime::format_duration(CHANGE_WAIT)
                        ),
                        false,
                    ))
                }
            }
        }
        Ok(())
    }

    /// Rule "membership changes wait for the upgrade": a node of the
    /// previous release knows nothing of membership in the log (it would
    /// go on counting votes by its configured peers), so no change is made
    /// until the log records protocol 3 (every node ran this release) and
    /// every peer linked now speaks this release's peer protocol.
    ///
    /// A removal is let through at protocol 2 when no linked peer is older:
    /// the node of the previous release that holds the upgrade back is
    /// then gone, and removing it is how the upgrade completes.
    fn check_every_member_upgraded(&self, change: MembershipChange) -> Result<(), proto::Error> {
        let protocol = self.context.shared.machine().protocol();
        let older: Vec<u64> = self
            .connected
            .borrow()
            .iter()
            .filter(|(_, version)| **version < PeerVersion::V3)
            .map(|(id, _)| *id)
            .collect();
        let removal = matches!(change, MembershipChange::Remove(_));
        if older.is_empty() && (protocol >= 3 || removal) {
            return Ok(());
        }
        Err(error(
            ErrorCode::MembershipRefused,
            format!(
                "membership changes wait until every member runs this release (the log \
                 records protocol {protocol}, 3 once every node ran it; nodes speaking an \
                 earlier peer protocol now: {older:?}): finish the rolling upgrade first; \
                 nothing was changed"
            ),
            // With every linked peer upgraded, the leader records protocol
            // 3 shortly (see `sessions::run_leader_scans`).
            older.is_empty(),
        ))
    }

    /// Dials `node` at `addr` as a peer (mutual TLS, its certificate must
    /// name it, same cluster and shared settings): an addition nobody can
    /// reach would only weaken the cluster.
    async fn check_reachable(&self, node: NodeId, addr: SocketAddr) -> Result<(), proto::Error> {
        let dialled = tokio::time::timeout(REACH_TIMEOUT, self.endpoint.probe_peer(node.0, addr))
            .await
            .map_err(|_| "no answer in time".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match dialled {
            Ok(link) => {
                link.connection.close(0u32.into(), b"reachability checked");
                Ok(())
            }
            Err(why) => Err(error(
                ErrorCode::MembershipRefused,
                format!(
                    "node {} cannot be reached at {addr} ({why}): start it first (with \
                     `join = true`, this cluster's id and shared settings, and a certificate \
                     naming it: paxlock certs issue-node), then add it; nothing was changed",
                    node.0
                ),
                // Retrying will not start the node.
                false,
            )),
        }
    }

    fn refused(&self, reason: RejectReason) -> proto::Error {
        match reason {
            RejectReason::NotLeader => self.context.not_leader(),
            RejectReason::Membership(e) => error(
                ErrorCode::MembershipRefused,
                format!("{e}; nothing was changed"),
                // Retrying may succeed: once the change in flight is in
                // effect, the learner has caught up, or the members cut
                // off (a partition, a restart) answer the leader again.
                matches!(
                    e,
                    MembershipError::ChangeInFlight
                        | MembershipError::LearnerBehind
                        | MembershipError::WouldLoseQuorum
                ),
            ),
            RejectReason::QueueFull => error(
                ErrorCode::Unavailable,
                "the leader's proposal queue is full; retry",
                true,
            ),
            other => error(
                ErrorCode::Internal,
                format!("the leader refused the change: {other:?}"),
                false,
            ),
        }
    }
}

/// The change a request asks for, or why it is malformed.
fn parse(request: &proto::ChangeMembership) -> Result<MembershipChange, proto::Error> {
    let invalid = |what: String| error(ErrorCode::InvalidRequest, what, false);
    let node = NodeId(request.node_id);
    if node.0 == 0 || node.0 > NodeId::MAX {
        return Err(invalid(format!(
            "node id {} is outside 1 to {}",
            node.0,
            NodeId::MAX
        )));
    }
    match request.kind() {
        Kind::AddLearner => {
            let addr: SocketAddr = request.addr.parse().map_err(|_| {
                invalid(format!(
                    "{:?} is not an address (ip:port) the new node listens on",
                    request.addr
                ))
            })?;
            Ok(MembershipChange::AddLearner(node, Some(addr)))
        }
        Kind::Promote => Ok(MembershipChange::Promote(node)),
        Kind::Remove => Ok(MembershipChange::Remove(node)),
        Kind::Unspecified => Err(invalid(
            "a membership change names no kind (add a learner, promote, remove)".into(),
        )),
    }
}
