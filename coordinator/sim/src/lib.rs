//! Deterministic, single-threaded, seeded simulation of a Paxlock cluster
//! with a faulty network, disks that lose unsynced writes, crashes, pauses
//! and drifting clocks. Same seed, same run, bit for bit.
//!
//! It runs the code that ships: the Paxos replica, the lock state machine
//! and the leader role of `paxlock-core`, the acceptor's records of
//! `paxlock-storage` over its in-memory store, the peer codec of
//! `paxlock-peer-codec`, and the client's lease and acknowledgement rules
//! of `paxlock-client-rules`. It holds no copy of shipped logic; what it
//! adds is the world (event queue, network, disks, clocks, faults) and the
//! checks.
//!
//! - `engine`: the one simulation engine (event queue, nodes running the
//!   shipped replica, network through the real codec and frame bound,
//!   disks, clocks, crashes, pauses, fault injection, abdication), checked
//!   by [`checker`] (one value per slot, nothing acknowledged lost,
//!   messages only after their persist, leader leases);
//! - [`paxos_workload`]: opaque commands over a hash-chain application;
//! - [`lock_workload`]: the lock service (state machine, leader role,
//!   clients), its histories checked by [`linearizability`] and
//!   [`resource`] (fencing at the guarded resource);
//! - [`network`], [`disk`], [`clock`], [`rng`]: the faulty parts.
//!
//! No async runtime and no real I/O: the compiler keeps it that way, as
//! none of its dependencies has either.

pub mod app;
pub mod checker;
#[cfg(test)]
mod checker_props;
pub mod clock;
pub mod disk;
mod engine;
pub mod linearizability;
pub mod lock_workload;
pub mod network;
mod operator;
pub mod paxos_workload;
pub mod resource;
pub mod rng;

pub use app::{App, HashChainApp};
pub use engine::{small_message_bounds, SimConfig, Violation};
#[cfg(feature = "canary")]
pub use lock_workload::LockCanary;
pub use lock_workload::{run_lock_seed, LockSimConfig, LockSimReport};
pub use paxos_workload::{run_seed, Sim, SimReport};
