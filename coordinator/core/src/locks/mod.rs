//! The replicated state machine: sessions, locks, elections.
//!
//! Pure and deterministic: no clock, no I/O, no randomness, only ordered
//! collections. Every replica that applies the same [`Command`]s in the same
//! order produces the same [`Output`]s and the same snapshot bytes. Time
//! enters only as `Command::at_ms`, a logical timestamp the Paxos leader
//! chooses when it proposes.
//!
//! Entry point: [`StateMachine::apply`].

pub mod command;
pub mod dedup;
pub mod election;
pub mod error;
pub mod event;
pub mod invariants;
pub mod limits;
pub mod lock;
pub mod machine;
pub mod session;
pub mod shared;
mod shared_ops;
pub mod snapshot;
pub mod state_size;

pub use command::{
    AbandonedWait, ClientOp, Command, CommandKind, FencingToken, Identity, RequestId, SessionId,
    CURRENT_PROTOCOL,
};
pub use error::{CommandError, DecodeError};
pub use event::{CloseReason, ElectionChange, ElectionEvent, Event, ReleaseReason};
pub use limits::{Config, Limits};
pub use machine::{Gauges, Output, Reply, StateMachine};

#[cfg(test)]
mod abandon_tests;
#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod force_release_tests;
#[cfg(any(test, feature = "testing"))]
pub mod harness;
#[cfg(test)]
mod leader_token_tests;
#[cfg(test)]
mod lock_value_tests;
#[cfg(test)]
mod owner_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod removal_tests;
#[cfg(test)]
mod revoke_tests;
#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod state_bound_tests;
#[cfg(test)]
mod tests;
