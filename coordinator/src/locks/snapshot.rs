//! Snapshots: the whole state machine to bytes and back.
//!
//! Format: postcard encoding of `(SNAPSHOT_VERSION, StateMachine)`. Restore
//! checks the version and every invariant, so corrupt or hostile bytes give
//! a typed [`DecodeError`], never a panic or a machine that panics later.

use crate::locks::command::decode_exact;
use crate::locks::error::{DecodeError, EncodeError};
use crate::locks::machine::StateMachine;

/// Format version written by [`StateMachine::snapshot`].
pub const SNAPSHOT_VERSION: u32 = 1;

/// Hard cap on snapshot input size.
pub const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

impl StateMachine {
    /// Serializes the full state, configuration included. Identical states
    /// give identical bytes (ordered maps only), so replicas can compare
    /// snapshots byte for byte.
    pub fn snapshot(&self) -> Result<Vec<u8>, EncodeError> {
        postcard::to_allocvec(&(SNAPSHOT_VERSION, self)).map_err(|reason| EncodeError { reason })
    }

    /// Rebuilds a machine from [`StateMachine::snapshot`] bytes. Applying the
    /// same further commands to the original and the restored machine gives
    /// identical outputs and states.
    pub fn restore(bytes: &[u8]) -> Result<StateMachine, DecodeError> {
        // Read the version first so a future format is reported as such
        // rather than as garbage.
        let (version, _) = postcard::take_from_bytes::<u32>(bytes)
            .map_err(|reason| DecodeError::Malformed { reason })?;
        if version != SNAPSHOT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                expected: SNAPSHOT_VERSION,
            });
        }
        let (_, machine): (u32, StateMachine) = decode_exact(bytes, MAX_SNAPSHOT_BYTES)?;
        machine
            .check_invariants()
            .map_err(|what| DecodeError::Inconsistent { what })?;
        Ok(machine)
    }
}
