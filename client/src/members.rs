//! Cluster membership (PROTOCOL.md, "Membership"): which nodes vote and
//! which learn, and the administrator's changes (add a learner, promote
//! it, remove a member), one at a time.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::client::{unexpected, Client};
use crate::proto::{self, change_membership::Kind, request::Op, response, ErrorCode};
use crate::Error;

/// One member, as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Its node id.
    pub node_id: u64,
    /// Where it listens; `None` if the answering node does not know.
    pub addr: Option<SocketAddr>,
    /// A voter's vote counts; a learner only receives the log.
    pub voter: bool,
    /// Whether the answering node has a link to it.
    pub connected: bool,
    /// Slots it trails the leader (known only when the leader answered).
    pub lag_slots: u64,
}

/// The membership in effect at the answering node's commit index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Members {
    /// Voters first, then learners, each in id order.
    pub members: Vec<Member>,
    /// While a chosen change is pending, the first slot it decides.
    pub change_at: Option<u64>,
    /// Who leads, as the answering node believes.
    pub leader: Option<u64>,
    /// The answering node's commit index.
    pub commit_index: u64,
    /// The node that answered.
    pub answered_by: u64,
}

impl Members {
    /// The voters' ids.
    pub fn voters(&self) -> Vec<u64> {
        self.ids(true)
    }

    /// The learners' ids.
    pub fn learners(&self) -> Vec<u64> {
        self.ids(false)
    }

    fn ids(&self, voter: bool) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.voter == voter)
            .map(|m| m.node_id)
            .collect()
    }
}

impl From<proto::MemberList> for Members {
    fn from(list: proto::MemberList) -> Self {
        let nonzero = |n: u64| (n != 0).then_some(n);
        Members {
            members: list
                .members
                .into_iter()
                .map(|m| Member {
                    node_id: m.node_id,
                    addr: m.addr.parse().ok(),
                    voter: m.voter,
                    connected: m.connected,
                    lag_slots: m.lag_slots,
                })
                .collect(),
            change_at: nonzero(list.change_at),
            leader: nonzero(list.leader_node_id),
            commit_index: list.commit_index,
            answered_by: list.node_id,
        }
    }
}

/// One membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// Node `id`, listening at `addr` (it must be running, with
    /// `join = true`), receives the log without a vote.
    AddLearner {
        /// Its id (never used before in this cluster).
        id: u64,
        /// Where it listens for its peers.
        addr: SocketAddr,
    },
    /// A learner within 16 slots of the leader becomes a voter.
    Promote(u64),
    /// A member leaves for good; its id is never used again.
    Remove(u64),
}

/// How long a change may take before the request gives up: the node waits
/// up to 8 s for it to be in effect.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// The first pause before asking again for a change refused for now; it
/// doubles up to [`MOST_CHANGE_PAUSE`].
const FIRST_CHANGE_PAUSE: Duration = Duration::from_millis(50);

/// The longest pause between two asks for one change.
const MOST_CHANGE_PAUSE: Duration = Duration::from_secs(1);

impl Client {
    /// The members, as the node this client talks to has applied them.
    pub async fn members(&self) -> Result<Members, Error> {
        match self
            .inner
            .call(0, Op::ListMembers(proto::ListMembers {}))
            .await?
        {
            response::Result::Members(list) => Ok(list.into()),
            other => Err(unexpected(&other)),
        }
    }

    /// Makes one membership change (an administrator's request), through
    /// the leader. With `wait`, answers once the change is in effect;
    /// otherwise once the leader has taken it. Refused changes fail with
    /// `MEMBERSHIP_REFUSED` and say why; nothing is changed then.
    pub async fn change_membership(
        &self,
        change: MemberChange,
        wait: bool,
    ) -> Result<Members, Error> {
        let (kind, node_id, addr) = match change {
            MemberChange::AddLearner { id, addr } => (Kind::AddLearner, id, addr.to_string()),
            MemberChange::Promote(id) => (Kind::Promote, id, String::new()),
            MemberChange::Remove(id) => (Kind::Remove, id, String::new()),
        };
        let op = Op::ChangeMembership(proto::ChangeMembership {
            kind: kind.into(),
            node_id,
            addr,
            wait,
        });
        match self.inner.call_with_timeout(0, op, CHANGE_TIMEOUT).await? {
            response::Result::Members(list) => Ok(list.into()),
            other => Err(unexpected(&other)),
        }
    }

    /// Makes `change` and waits until it is in effect, for up to
    /// `patience`: asks again while the cluster refuses for now (a learner
    /// catching up, another change in flight, no leader) and whenever an
    /// answer leaves it unknown whether the change was made (a leader lost,
    /// an answer lost, a change slow to take effect). The leader answers a
    /// change the members already show as made, so asking again never
    /// makes one twice. `waiting` hears each error waited out. Fails at
    /// once on a refusal that does not pass (a node unreachable, an id
    /// reused, no permission).
    pub async fn change_membership_until_made(
        &self,
        change: MemberChange,
        patience: Duration,
        mut waiting: impl FnMut(&Error),
    ) -> Result<Members, Error> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut pause = FIRST_CHANGE_PAUSE;
        loop {
            match self.change_membership(change, true).await {
                Ok(members) => return Ok(members),
                Err(e)
                    if tokio::time::Instant::now() + pause < deadline
                        && (e.is_retryable() || e.code() == Some(ErrorCode::Unavailable)) =>
                {
                    waiting(&e);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MOST_CHANGE_PAUSE);
                }
                Err(e) => return Err(e),
            }
        }
    }
}
