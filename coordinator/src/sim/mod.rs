//! Deterministic, single-threaded, seeded simulation of a Paxos cluster
//! with a faulty network, disks that lose unsynced writes, crashes, pauses
//! and drifting clocks. Same seed, same run, bit for bit.

pub mod app;
pub mod checker;
pub mod clock;
pub mod disk;
pub mod network;
pub mod rng;
pub mod world;

pub use app::{App, HashChainApp};
pub use world::{run_seed, Sim, SimConfig, SimReport, Violation};
#[cfg(test)]
mod checker_props;
pub mod linearizability;
pub mod locks_world;
pub mod resource;
pub use locks_world::{run_lock_seed, LockSimConfig, LockSimReport};
