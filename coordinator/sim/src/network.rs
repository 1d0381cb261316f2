//! The simulated network: per-link delay with a long tail, loss,
//! duplication (reordering follows from random delays), and cut links.

use std::collections::BTreeSet;

use paxlock_core::paxos::NodeId;

use super::rng::SimRng;

/// Network behaviour drawn per seed.
#[derive(Debug, Clone)]
pub struct NetProfile {
    /// Probability a message is lost, in ppm.
    pub drop_ppm: u64,
    /// Probability a message is delivered twice, in ppm.
    pub duplicate_ppm: u64,
    /// Usual one-way delay range.
    pub delay_min_ns: u64,
    /// Usual one-way delay range.
    pub delay_max_ns: u64,
    /// Probability a message takes the long tail, in ppm.
    pub tail_ppm: u64,
    /// Longest tail delay.
    pub tail_max_ns: u64,
}

impl NetProfile {
    /// A healthy LAN: what the network becomes when the run heals.
    pub fn healthy() -> NetProfile {
        NetProfile {
            drop_ppm: 0,
            duplicate_ppm: 0,
            delay_min_ns: 200_000,
            delay_max_ns: 2_000_000,
            tail_ppm: 0,
            tail_max_ns: 0,
        }
    }

    /// A faulty network drawn from `rng`.
    pub fn draw(rng: &mut SimRng) -> NetProfile {
        NetProfile {
            drop_ppm: rng.range(0, 100_000),
            duplicate_ppm: rng.range(0, 50_000),
            delay_min_ns: rng.range(100_000, 1_000_000),
            delay_max_ns: rng.range(1_000_000, 20_000_000),
            tail_ppm: rng.range(0, 50_000),
            tail_max_ns: rng.range(50_000_000, 1_500_000_000),
        }
    }
}

/// Current network state.
#[derive(Debug, Clone)]
pub struct Network {
    /// Delay, loss and duplication.
    pub profile: NetProfile,
    /// Directed links that deliver nothing: `(from, to)`.
    pub cut: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    /// Delivery delays for one message: empty if lost, two if duplicated.
    pub fn fate(&self, rng: &mut SimRng, from: NodeId, to: NodeId) -> Vec<u64> {
        if self.cut.contains(&(from, to)) || rng.chance_ppm(self.profile.drop_ppm) {
            return Vec::new();
        }
        let mut out = vec![self.delay(rng)];
        if rng.chance_ppm(self.profile.duplicate_ppm) {
            out.push(self.delay(rng));
        }
        out
    }

    fn delay(&self, rng: &mut SimRng) -> u64 {
        let p = &self.profile;
        if rng.chance_ppm(p.tail_ppm) {
            rng.range(p.delay_max_ns, p.tail_max_ns.max(p.delay_max_ns))
        } else {
            rng.range(p.delay_min_ns, p.delay_max_ns)
        }
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for x in a {
            for y in b {
                self.cut.insert((*x, *y));
                self.cut.insert((*y, *x));
            }
        }
    }
}
