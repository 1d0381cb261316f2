//! Where each member of the cluster is reached.
//!
//! The replicated membership is authoritative: a member added while the
//! cluster runs carries its address in the change that added it. The first
//! voters carry none; they are reached at the addresses the node's
//! configuration gives (`[[peers]]`), which after the first start only
//! seed the bootstrap or a join.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::paxos::{Membership, NodeId};

/// The addresses this node knows besides the replicated ones: its own and
/// its configured peers'.
#[derive(Debug, Clone)]
pub struct Directory {
    /// This node.
    pub node_id: u64,
    /// Where this node listens.
    pub listen: SocketAddr,
    /// The configured peers (`[[peers]]`).
    pub seeds: BTreeMap<u64, SocketAddr>,
}

impl Directory {
    /// Where node `id` is reached, by `members` first, else by the
    /// configuration.
    pub fn address(&self, id: u64, members: &Membership) -> Option<SocketAddr> {
        if id == self.node_id {
            return Some(self.listen);
        }
        members
            .addresses
            .get(&NodeId(id))
            .or_else(|| self.seeds.get(&id))
            .copied()
    }

    /// The other members (voters and learners) with their addresses where
    /// known. Before the membership is known (it is empty until the
    /// consensus loop first reports), the configured peers.
    pub fn others(&self, members: &Membership) -> Vec<(u64, Option<SocketAddr>)> {
        if members.voters.is_empty() {
            return self.seeds.iter().map(|(&id, &a)| (id, Some(a))).collect();
        }
        members
            .nodes()
            .filter(|n| n.0 != self.node_id)
            .map(|n| (n.0, self.address(n.0, members)))
            .collect()
    }

    /// How many entries [`Directory::others`] has, without building them
    /// (read on every client request).
    pub fn count_others(&self, members: &Membership) -> usize {
        if members.voters.is_empty() {
            return self.seeds.len();
        }
        members.nodes().filter(|n| n.0 != self.node_id).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::MembershipChange;

    #[test]
    fn replicated_addresses_win_and_removed_members_are_gone() {
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let directory = Directory {
            node_id: 1,
            listen: addr(7001),
            seeds: BTreeMap::from([(2, addr(7002)), (3, addr(7003))]),
        };
        let first = Membership::bootstrap([1, 2, 3].map(NodeId));
        assert_eq!(
            directory.others(&first),
            vec![(2, Some(addr(7002))), (3, Some(addr(7003)))]
        );
        let grown = first
            .apply(MembershipChange::AddLearner(NodeId(4), Some(addr(7104))))
            .and_then(|m| m.apply(MembershipChange::Remove(NodeId(2))))
            .expect("valid changes");
        assert_eq!(directory.address(4, &grown), Some(addr(7104)));
        assert_eq!(directory.address(1, &grown), Some(addr(7001)));
        assert_eq!(
            directory.others(&grown),
            vec![(3, Some(addr(7003))), (4, Some(addr(7104)))]
        );
        assert_eq!(directory.others(&Membership::default()).len(), 2);
        for m in [&first, &grown, &Membership::default()] {
            assert_eq!(directory.count_others(m), directory.others(m).len());
        }
    }
}
