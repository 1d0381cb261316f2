//! The rules a Paxlock client follows, with no I/O: when its lease is
//! valid ([`lease`]) and what each request acknowledges ([`ack`]). The
//! client library (`paxlock`) runs them on its connection tasks; the
//! deterministic simulator runs the same code for its simulated clients.

#![forbid(unsafe_code)]

pub mod ack;
pub mod lease;

pub use ack::acknowledgement;
