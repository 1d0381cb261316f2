//! The one error type of the client library.

use crate::proto::ErrorCode;

/// Everything a client call can fail with. `is_retryable` says whether
/// trying the same thing again (later, or on another node) can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client configuration is unusable; the message names the key.
    #[error("invalid client config: {0}")]
    Config(String),
    /// Certificates or keys could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// No node could be reached (all refused, timed out or are down).
    #[error("no Paxlock node reachable ({attempts} attempts); last error: {last}")]
    Unreachable {
        /// Connection attempts made.
        attempts: u32,
        /// The last failure, for diagnosis.
        last: String,
    },
    /// The connection failed in a way retrying will not fix, e.g. the node
    /// rejected this client's certificate.
    #[error("connection to {addr} refused: {reason}")]
    Rejected {
        /// The node.
        addr: String,
        /// The TLS or QUIC reason.
        reason: String,
    },
    /// The call did not complete within its deadline.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The cluster answered with an error.
    #[error("{code:?}: {message}")]
    Server {
        /// What kind of error.
        code: ErrorCode,
        /// The node's explanation.
        message: String,
        /// Whether the same request may succeed if sent again.
        retryable: bool,
    },
    /// The node sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The session (and with it every lock and leadership) is gone or can
    /// no longer be trusted by the client lease rule.
    #[error("session lost: {0}")]
    SessionLost(String),
    /// The client was closed.
    #[error("client closed")]
    Closed,
    /// This client already holds (or is acquiring) the lock on its session:
    /// one guard per grant (see `LockBuilder::acquire`).
    #[error("this client already holds or is acquiring lock {name:?} on its session; use that guard, or acquire with an own session (LockBuilder::ttl) to queue behind it")]
    AlreadyHeld {
        /// The lock.
        name: String,
    },
    /// This client already runs as many blocking acquires and campaigns as
    /// a session may wait on at once (PROTOCOL.md, "acknowledging around
    /// long waits"); the new one was not sent.
    #[error("this client already runs {limit} blocking acquires and campaigns, as many as one session may wait on at once; let one finish, or give the waits more clients (sessions)")]
    TooManyWaits {
        /// The limit.
        limit: usize,
    },
}

impl Error {
    /// Whether retrying may help: transient network and leadership
    /// problems are retryable; refusals and bad input are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Timeout(_) => true,
            Error::Server { retryable, .. } => *retryable,
            Error::Config(_)
            | Error::Tls(_)
            | Error::Rejected { .. }
            | Error::Protocol(_)
            | Error::SessionLost(_)
            | Error::Closed
            | Error::AlreadyHeld { .. }
            | Error::TooManyWaits { .. } => false,
        }
    }

    /// The server's error code, if the cluster answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn from_proto(error: crate::proto::Error) -> Self {
        let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
        Error::Server {
            code,
            message: error.message,
            retryable: error.retryable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_is_retryable_stale_token_is_not() {
        let not_leader = Error::from_proto(crate::proto::Error {
            code: ErrorCode::NotLeader.into(),
            retryable: true,
            ..Default::default()
        });
        let stale = Error::from_proto(crate::proto::Error {
            code: ErrorCode::StaleToken.into(),
            ..Default::default()
        });
        assert!(not_leader.is_retryable());
        assert!(!stale.is_retryable());
        assert_eq!(stale.code(), Some(ErrorCode::StaleToken));
    }

    #[test]
    fn unknown_server_code_maps_to_unspecified() {
        let err = Error::from_proto(crate::proto::Error {
            code: 9999,
            ..Default::default()
        });
        assert_eq!(err.code(), Some(ErrorCode::Unspecified));
    }
}
