//! Process canaries (canary builds only): `PAXLOCK_CANARY` names one rule
//! a node process runs without, so that the test of that rule (power loss,
//! access control) can show it catches each. Never in a release build.
//!
//! - `skip-wal-fsync`: the WAL acknowledges appends without fdatasync;
//! - `skip-dir-fsync`: new segments, snapshot renames and deletions are
//!   never made durable by a directory fsync;
//! - `reply-before-persist`: the consensus loop sends its promises and
//!   accepts before what they follow is durable;
//! - `access-open`: the access rules allow everything but administration
//!   (`paxlock_core::access::canary`), so the access-control test shows it
//!   catches requests they should refuse.

use std::sync::atomic::{AtomicBool, Ordering};

use paxlock_core::consensus_loop::LoopCanary;
use paxlock_storage::canary::StorageCanary;

/// The environment variable a node process reads its canary from.
pub const ENV: &str = "PAXLOCK_CANARY";

static NO_PERSIST_BARRIER: AtomicBool = AtomicBool::new(false);

/// `PAXLOCK_CANARY` names no canary.
#[derive(Debug, thiserror::Error)]
#[error("{ENV}={0:?} is not a canary: use skip-wal-fsync, skip-dir-fsync, reply-before-persist or access-open")]
pub struct UnknownCanary(pub String);

/// Switches on the canary `PAXLOCK_CANARY` names, if any; its name, for
/// the log. An unknown name is refused, so a typo cannot pass for a
/// canary that was never on.
pub fn install_from_env() -> Result<Option<String>, UnknownCanary> {
    let Ok(name) = std::env::var(ENV) else {
        return Ok(None);
    };
    match name.as_str() {
        "skip-wal-fsync" => paxlock_storage::canary::set(StorageCanary::SkipWalSync),
        "skip-dir-fsync" => paxlock_storage::canary::set(StorageCanary::SkipDirSync),
        "reply-before-persist" => NO_PERSIST_BARRIER.store(true, Ordering::Relaxed),
        "access-open" => paxlock_core::access::canary::set_open(true),
        _ => return Err(UnknownCanary(name)),
    }
    Ok(Some(name))
}

/// The consensus loop's canary for this process.
pub fn loop_canary() -> LoopCanary {
    if NO_PERSIST_BARRIER.load(Ordering::Relaxed) {
        LoopCanary::NoPersistBarrier
    } else {
        LoopCanary::None
    }
}
