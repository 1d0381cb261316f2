//! Configuration: limits and the lock-delay. Part of the snapshot, because
//! every replica must apply with the same configuration.

use serde::{Deserialize, Serialize};

use crate::locks::error::CommandError;

/// Bounds on everything that grows with client input. Each breach has its
/// own [`CommandError`] variant and changes no state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Maximum lock/election name length in bytes (minimum is 1).
    pub max_name_bytes: u32,
    /// Maximum election value length in bytes.
    pub max_value_bytes: u32,
    /// Maximum number of live sessions.
    pub max_sessions: u32,
    /// Maximum queued waiters per lock (the holder not counted).
    pub max_waiters_per_lock: u32,
    /// Maximum locks a session holds plus waits for.
    pub max_locks_per_session: u32,
    /// Maximum elections a session is leader of or candidate in.
    pub max_campaigns_per_session: u32,
    /// Maximum queued candidates per election (the leader not counted).
    pub max_candidates_per_election: u32,
    /// Maximum number of elections at once. At the limit, an election
    /// nobody leads or campaigns in is removed to make room (from protocol
    /// 3), so only those in use count.
    pub max_elections: u32,
    /// Smallest session TTL accepted, in milliseconds.
    pub min_ttl_ms: u64,
    /// Largest session TTL accepted, in milliseconds.
    pub max_ttl_ms: u64,
    /// Maximum unacknowledged recorded replies per session.
    pub max_unacked_replies_per_session: u32,
    /// Bound on the whole state's counted bytes
    /// ([`crate::locks::state_size`]), from protocol 3 on: a command that
    /// would add state past it is refused with
    /// [`CommandError::StateFull`] (after removing elections nobody leads
    /// or campaigns in, if that makes room); what frees or moves state is
    /// never refused.
    ///
    /// Not part of snapshots (the layouts predate it): every node supplies
    /// its own, which peering makes the same on all (see
    /// [`StateMachine::restore_as_replica`](crate::locks::StateMachine::restore_as_replica)).
    #[serde(skip, default = "default_max_state_bytes")]
    pub max_state_bytes: u64,
}

/// Default of [`Limits::max_state_bytes`]: 256 MiB, a quarter of the
/// largest snapshot a node restores
/// ([`MAX_SNAPSHOT_BYTES`](crate::locks::snapshot::MAX_SNAPSHOT_BYTES)).
pub const DEFAULT_MAX_STATE_BYTES: u64 = 256 * 1024 * 1024;

fn default_max_state_bytes() -> u64 {
    DEFAULT_MAX_STATE_BYTES
}

impl Default for Limits {
    /// Production defaults: 512-byte names and 64 KiB values as the design
    /// fixes them; the capacity numbers are starting points.
    fn default() -> Self {
        Limits {
            max_name_bytes: 512,
            max_value_bytes: 64 * 1024,
            max_sessions: 10_000,
            max_waiters_per_lock: 1_000,
            max_locks_per_session: 1_000,
            max_campaigns_per_session: 100,
            max_candidates_per_election: 1_000,
            max_elections: 10_000,
            min_ttl_ms: 1_000,
            max_ttl_ms: 3_600_000,
            max_unacked_replies_per_session: 128,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
        }
    }
}

impl Limits {
    /// Checks a lock or election name: 1..=`max_name_bytes` bytes (UTF-8 is
    /// guaranteed by `String`, and by the decoder for log bytes).
    pub fn check_name(&self, name: &str) -> Result<(), CommandError> {
        if name.is_empty() {
            return Err(CommandError::NameEmpty {
                max: self.max_name_bytes,
            });
        }
        if name.len() > self.max_name_bytes as usize {
            return Err(CommandError::NameTooLong {
                len: name.len() as u64,
                max: self.max_name_bytes,
            });
        }
        Ok(())
    }

    /// Checks an election value's size.
    pub fn check_value(&self, value: &[u8]) -> Result<(), CommandError> {
        if value.len() > self.max_value_bytes as usize {
            return Err(CommandError::ValueTooLarge {
                len: value.len() as u64,
                max: self.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Checks a TTL against the bounds; out of range is an error, never a clamp.
    pub fn check_ttl(&self, ttl_ms: u64) -> Result<(), CommandError> {
        if ttl_ms < self.min_ttl_ms || ttl_ms > self.max_ttl_ms {
            return Err(CommandError::TtlOutOfRange {
                ttl_ms,
                min_ms: self.min_ttl_ms,
                max_ms: self.max_ttl_ms,
            });
        }
        Ok(())
    }
}

/// Whole state-machine configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Input bounds.
    pub limits: Limits,
    /// After a holder's session EXPIRES (not after a clean release or
    /// close) the lock stays ungranted until `at_ms + lock_delay_ms`.
    /// 0 disables the delay.
    pub lock_delay_ms: u64,
    /// How many past events each election keeps for watchers that resume.
    pub election_history_len: u32,
}

impl Default for Config {
    /// Default limits, no lock-delay, 64 events of election history.
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            lock_delay_ms: 0,
            election_history_len: 64,
        }
    }
}
