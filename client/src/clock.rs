//! The client's clock for the lease rule.
//!
//! A lease is a promise about elapsed time, so the clock must keep
//! counting while the machine is suspended (a laptop lid closed with a lock
//! held must come back to a lost lock): `CLOCK_BOOTTIME` on Linux. Timers
//! (tokio's, on `CLOCK_MONOTONIC`) stop during a suspend, so whatever
//! waits for a lease to run out wakes often and reads this clock.

use std::sync::Arc;
use std::time::Duration;

/// Time since boot, including time spent suspended.
pub fn boottime() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Where a session reads the time: the boot clock, or in tests one that
/// jumps as a suspended machine's does.
#[derive(Clone)]
pub(crate) struct Clock(Arc<dyn Fn() -> Duration + Send + Sync>);

impl Clock {
    /// The boot clock ([`boottime`]).
    pub(crate) fn boot() -> Clock {
        Clock(Arc::new(boottime))
    }

    /// A clock that reads `now`.
    #[cfg(test)]
    pub(crate) fn from_fn(now: impl Fn() -> Duration + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(now))
    }

    /// The time now.
    pub(crate) fn now(&self) -> Duration {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}
