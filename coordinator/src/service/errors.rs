//! How state-machine refusals are reported to clients.

use paxlock::proto::{self, ErrorCode};

use crate::locks::CommandError;

/// The client-protocol error for a refused command.
pub fn command_error(err: &CommandError) -> proto::Error {
    use CommandError as E;
    let code = match err {
        E::SessionNotFound { .. } => ErrorCode::SessionUnknown,
        E::TooManySessions { .. } => ErrorCode::TooManySessions,
        E::TtlOutOfRange { .. } => ErrorCode::TtlOutOfRange,
        E::NameEmpty { .. } | E::NameTooLong { .. } => ErrorCode::InvalidName,
        E::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
        E::WaitQueueFull { .. } | E::TooManyCandidates { .. } => ErrorCode::TooManyWaiters,
        E::TooManyLocks { .. } | E::TooManyCampaigns { .. } | E::TooManyElections { .. } => {
            ErrorCode::TooManyLocks
        }
        E::StaleToken { .. } => ErrorCode::StaleToken,
        // Only leader-internal expiries can be stale; no client sees this.
        E::StaleExpiry { .. } | E::StaleAbandon { .. } => ErrorCode::Internal,
        E::NotLeader { .. } => ErrorCode::NotElectionLeader,
        E::RequestIdAcked { .. } | E::TooManyUnackedReplies { .. } => {
            ErrorCode::RequestIdAcknowledged
        }
        E::PermissionDenied { .. } => ErrorCode::PermissionDenied,
        // Identities come from certificates the transport checked first.
        E::InvalidIdentity { .. } | E::InvalidAccessRules { .. } => ErrorCode::InvalidRequest,
        E::AccessRulesChanged { .. } => ErrorCode::AccessRulesChanged,
        E::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
        E::StateFull { .. } => ErrorCode::StateFull,
        E::NotHeld { .. } => ErrorCode::NotHeld,
        E::TooManyTakenGrants { .. } => ErrorCode::TooManyLocks,
        E::WrongKind { .. } => ErrorCode::WrongKind,
        E::PermitsMismatch { .. } | E::PermitsOutOfRange { .. } => ErrorCode::PermitsMismatch,
        E::ModeHeld { .. } => ErrorCode::ModeHeld,
        E::GrantUnnamed { .. } => ErrorCode::InvalidRequest,
    };
    proto::Error {
        code: code.into(),
        message: err.to_string(),
        retryable: false,
        ..Default::default()
    }
}

/// An error with a code and message.
pub fn error(code: ErrorCode, message: impl Into<String>, retryable: bool) -> proto::Error {
    proto::Error {
        code: code.into(),
        message: message.into(),
        retryable,
        ..Default::default()
    }
}
