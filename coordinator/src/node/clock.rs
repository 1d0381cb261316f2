//! The node's clock for the consensus core: nanoseconds since the node
//! started, on a monotonic clock.
//!
//! Leases are promises about elapsed time, so the clock must never jump
//! back and should keep counting while the machine is suspended: on Linux
//! that is `CLOCK_BOOTTIME`, which `std::time::Instant` does not use, so the
//! clock is read through rustix.

use crate::paxos::Nanos;

/// A monotonic clock that starts at zero.
#[derive(Debug, Clone, Copy)]
pub struct NodeClock {
    origin_ns: u64,
}

impl Default for NodeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeClock {
    /// Starts a clock at zero now.
    pub fn new() -> Self {
        NodeClock {
            origin_ns: boottime_ns(),
        }
    }

    /// Time since the clock started.
    pub fn now(&self) -> Nanos {
        Nanos(boottime_ns().saturating_sub(self.origin_ns))
    }

    /// How long from now until `at` (zero if `at` has passed).
    pub fn until(&self, at: Nanos) -> std::time::Duration {
        std::time::Duration::from_nanos(at.0.saturating_sub(self.now().0))
    }
}

fn boottime_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_never_goes_back() {
        let clock = NodeClock::new();
        let mut last = clock.now();
        for _ in 0..1000 {
            let now = clock.now();
            assert!(now >= last);
            last = now;
        }
    }
}
