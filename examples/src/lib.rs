//! Runnable examples for the `paxlock` client library.
//!
//! The programs themselves arrive with the client API (leader-elected
//! worker, lock-guarded job with a fenced file, leadership watcher); this
//! crate keeps them building against the library as it changes.

#![forbid(unsafe_code)]

/// The ALPN this example set speaks, re-exported so the crate is not empty
/// and breaks loudly if the client library renames its protocol constants.
pub const PROTOCOL: &[u8] = paxlock::wire::CLIENT_ALPN_V1;
