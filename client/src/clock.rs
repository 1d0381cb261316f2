//! The client's clock for the lease rule.
//!
//! A lease is a promise about elapsed time, so the clock must keep
//! counting while the machine is suspended (a laptop lid closed with a lock
//! held must come back to a lost lock): `CLOCK_BOOTTIME` on Linux.

use std::time::Duration;

/// Time since boot, including time spent suspended.
pub fn boottime() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}
