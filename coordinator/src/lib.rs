//! Paxlock coordinator: the node that serves locks and elections.
//!
//! The I/O shell around the crates that decide (see ARCHITECTURE.md):
//! `node` runs the consensus loop over `paxlock-core`'s replica and
//! `paxlock-storage`; `service` carries client requests in and the core's
//! decisions (leader role, waiters) out; `transport` carries bytes between
//! nodes and clients over QUIC with mutual TLS; `config` reads node
//! configuration; `cli` is the `paxlock` command line.

#![forbid(unsafe_code)]

pub mod bounded;
#[cfg(feature = "canary")]
pub mod canary;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod node;
pub mod service;
pub mod transport;

// The I/O-free core, under the paths the node has always used.
pub use paxlock_core::{leader_role, locks, paxos};
