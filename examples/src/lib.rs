//! Runnable examples for the `paxlock` client library; see `src/bin/`.
//!
//! Each connects with the client config that `paxlock dev` writes
//! (`.paxlock-dev/client.toml`, or the path given as first argument).

#![forbid(unsafe_code)]

pub mod fenced_file;

/// The client config path: the first argument, or `paxlock dev`'s.
pub fn client_config_path() -> String {
    std::env::args()
        .nth(1)
        .unwrap_or_else(|| ".paxlock-dev/client.toml".to_string())
}
