//! The lock service: what the node does with client requests and chosen
//! log entries. The replicated truth is `crate::locks::StateMachine`; this
//! module routes requests into the log and results back to clients.

pub mod access;
pub mod apply;
pub mod errors;
pub mod handler;
pub mod inspect;
pub mod lock_watch;
pub mod sessions;
pub mod state;
pub mod watch;

pub use apply::LockApplication;
pub use handler::Context;
pub use state::Shared;
