//! Multi-Paxos, sans-IO. Drive a [`Replica`] with [`Replica::step`] and act
//! on the returned [`Effects`]; see each module for the rule it owns.

pub mod acceptor;
pub mod config;
pub mod durable;
pub mod effects;
pub mod election;
pub mod learner;
pub mod membership;
pub mod message;
pub mod proposer;
pub mod replica;
pub mod types;
pub mod wire_size;

#[cfg(feature = "canary")]
pub use config::Canary;
pub use config::{Config, ConfigError};
pub use durable::{DurableEntry, DurableState, PersistOp, PersistRequest};
pub use effects::{ChosenEntry, Effects, LeadershipEvent, Outgoing, RejectReason, Rejected};
pub use membership::{
    is_membership_value, Membership, MembershipChange, MembershipError, MembershipLog,
    MEMBERSHIP_DELAY_SLOTS,
};
pub use message::{Malformed, Message, ReportedEntry, SnapshotChunk};
pub use replica::{Input, Replica, Stats, Status};
pub use types::{Ballot, Batch, Nanos, NodeId, PersistSeq, Slot, Snapshot, Value};

#[cfg(test)]
mod tests;
