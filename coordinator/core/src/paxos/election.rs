//! Leader election: randomized timeouts and the pre-vote rule.

use std::collections::BTreeSet;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::acceptor::Acceptor;
use super::config::Config;
use super::types::{Ballot, Nanos, NodeId};

/// A pre-vote in progress: the ballot we would use and who agreed.
#[derive(Debug, Clone)]
pub(crate) struct PreVoteRound {
    pub(crate) ballot: Ballot,
    pub(crate) grants: BTreeSet<NodeId>,
    pub(crate) started_at: Nanos,
}

/// Election timer and what this node knows about rounds and leaders.
#[derive(Debug, Clone)]
pub(crate) struct Election {
    rng: ChaCha8Rng,
    /// When a follower that heard no leader starts a pre-vote.
    pub(crate) deadline: Nanos,
    pub(crate) pre_vote: Option<PreVoteRound>,
    /// Highest ballot round seen anywhere, so a new ballot beats it.
    pub(crate) max_round_seen: u64,
    /// Who we believe leads.
    pub(crate) leader_hint: Option<NodeId>,
}

impl Election {
    pub(crate) fn new(seed: u64) -> Election {
        Election {
            rng: ChaCha8Rng::seed_from_u64(seed),
            deadline: Nanos(0),
            pre_vote: None,
            max_round_seen: 0,
            leader_hint: None,
        }
    }

    /// Why randomized: two followers that lose the leader at the same moment
    /// would otherwise keep preempting each other's ballots forever.
    pub(crate) fn reset_timer(&mut self, now: Nanos, cfg: &Config) {
        let span = cfg
            .election_timeout_max_ns
            .saturating_sub(cfg.election_timeout_min_ns)
            .saturating_add(1);
        let jitter = self.rng.next_u64() % span;
        self.deadline = now.plus(cfg.election_timeout_min_ns.saturating_add(jitter));
    }

    pub(crate) fn see_round(&mut self, b: Ballot) {
        self.max_round_seen = self.max_round_seen.max(b.round);
    }

    /// A ballot above everything seen and promised.
    pub(crate) fn next_ballot(&self, promised: Ballot, me: NodeId) -> Ballot {
        Ballot {
            round: self.max_round_seen.max(promised.round).saturating_add(1),
            node: me,
        }
    }
}

/// Rule "pre-vote": grant only if we are not leading and have not heard a
/// leader (other than the asker) within the minimum election timeout. A node
/// that was partitioned away therefore cannot raise its ballot and disrupt a
/// leader the rest of the cluster still hears.
pub(crate) fn grant_pre_vote(
    acceptor: &Acceptor,
    now: Nanos,
    asker: NodeId,
    i_am_leader: bool,
    cfg: &Config,
) -> bool {
    if i_am_leader {
        return false;
    }
    let heard = acceptor.heard_leader_within(now, cfg.election_timeout_min_ns, cfg);
    !heard || acceptor.current_lease_holder(now) == Some(asker)
}
