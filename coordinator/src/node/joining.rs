//! A node started with `--join` (or `join_via`) asks the members to add it.
//!
//! It asks one member after another (and the leader, once one names it)
//! over the join exchange (`transport::join`), one step per request: the
//! leader adds it as a learner, then, if it asked to vote, promotes it once
//! it has caught up. What step comes next is the leader's decision, from
//! the members in effect (`node_membership::join_step`), so a lost answer
//! or a restart half-way never makes a step twice. It stops asking once it
//! has the part it asked for, and never asks while its own log already
//! shows it has.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use paxlock_core::node_membership::{join_step, JoinAs, JoinStep};
use paxlock_peer_codec::proto::{join_reply::Outcome, JoinReply, JoinRequest};
use tokio::sync::watch;
use tracing::{info, warn};

use super::driver::DriverStatus;
use crate::paxos::NodeId;
use crate::transport::NodeEndpoint;

/// Whom a joining node asks to add it, and as what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskToJoin {
    /// Members' addresses (`host:port`, as clients reach them).
    pub via: Vec<String>,
    /// The part it asks for.
    pub part: JoinAs,
    /// Where the members reach it (`advertise`, else `listen`).
    pub reach_me_at: SocketAddr,
}

/// How long one request may take: the leader reaches the node, then waits
/// for the change to be in effect (`members::REACH_TIMEOUT` and
/// `members::CHANGE_WAIT`), with room for the round trips.
const ASK_TIMEOUT: Duration = Duration::from_secs(15);

/// The pause before asking again after "not now" (a change in flight, the
/// node still catching up before its promotion).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The pause before asking again after a refusal or after every member
/// failed to answer: long enough not to flood the logs, short enough that
/// an operator's fix (a member upgraded, the listen address corrected)
/// takes effect soon.
const REFUSED_PAUSE: Duration = Duration::from_secs(5);

/// Asks until this node has the part `ask` names, as the members in
/// `status` or the leader's answer show; `first_voters` are the cluster's
/// first voters as this node is configured with them (the members check
/// them against theirs).
pub async fn ask_until_joined(
    endpoint: Arc<NodeEndpoint>,
    ask: AskToJoin,
    first_voters: Vec<u64>,
    mut status: watch::Receiver<DriverStatus>,
) {
    let me = NodeId(endpoint.node_id());
    let voter = ask.part == JoinAs::Voter;
    let request = JoinRequest {
        addr: ask.reach_me_at.to_string(),
        voter,
        first_voters,
        ..JoinRequest::default()
    };
    let mut leader_hint: Option<String> = None;
    let mut next = 0usize;
    let mut failures_this_round = 0usize;
    // While it catches up, the same answer comes back twice a second:
    // said once, until it changes.
    let mut last_said = String::new();
    let mut say = |line: String| {
        if line != last_said {
            info!("{line}");
            last_said = line;
        }
    };
    loop {
        let members = status.borrow_and_update().members.clone();
        if let Ok(JoinStep::Joined) = join_step(me, None, ask.part, &members) {
            info!(part = ?ask.part, "this node is a member as it asked (its log shows it)");
            return;
        }
        let target = match leader_hint.take() {
            Some(leader) => leader,
            None => {
                let target = ask.via[next % ask.via.len()].clone();
                next += 1;
                target
            }
        };
        let answer = tokio::time::timeout(ASK_TIMEOUT, ask_one(&endpoint, &target, &request))
            .await
            .unwrap_or_else(|_| Err("no answer in time".into()));
        let pause = match answer {
            Ok(reply) => {
                failures_this_round = 0;
                match reply.outcome() {
                    Outcome::Voter => {
                        info!(via = %target, "joined the cluster as a voter");
                        return;
                    }
                    Outcome::Learner if !voter => {
                        info!(via = %target, "joined the cluster as a learner");
                        return;
                    }
                    Outcome::Learner => {
                        say(format!(
                            "a learner (via {target}); asking to be promoted once caught up"
                        ));
                        leader_hint = Some(target);
                        RETRY_PAUSE
                    }
                    Outcome::AskLeader if !reply.leader_addr.is_empty() => {
                        leader_hint = Some(reply.leader_addr);
                        Duration::ZERO
                    }
                    Outcome::AskLeader | Outcome::Retry => {
                        say(format!("not added yet: {}", reply.reason));
                        RETRY_PAUSE
                    }
                    Outcome::Refused | Outcome::Unspecified => {
                        warn!(via = %target, "the cluster refused to add this node: {}", reply.reason);
                        REFUSED_PAUSE
                    }
                }
            }
            Err(why) => {
                warn!(via = %target, "cannot ask to join: {why}");
                failures_this_round += 1;
                if failures_this_round >= ask.via.len() {
                    failures_this_round = 0;
                    REFUSED_PAUSE
                } else {
                    Duration::ZERO
                }
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// Sends `request` to the member at `target` (`host:port`).
async fn ask_one(
    endpoint: &NodeEndpoint,
    target: &str,
    request: &JoinRequest,
) -> Result<JoinReply, String> {
    let (host, port) =
        paxlock::split_host_port(target).ok_or_else(|| format!("{target:?} is not host:port"))?;
    let addr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target} resolves to nothing"))?;
    endpoint
        .ask_to_join(host, addr, request.clone())
        .await
        .map_err(|e| e.to_string())
}
