//! Everything a Paxlock node decides, with no I/O: no tokio, sockets,
//! files, threads or clock reads. The node (`paxlock-coordinator`) pumps
//! inputs in and carries effects out; the deterministic simulator drives
//! the same code under faults.
//!
//! - [`paxos`]: Multi-Paxos, `Replica::step(now, Input) -> Effects`;
//! - [`locks`]: the replicated lock state machine;
//! - [`leader_role`]: what a leading node decides about sessions and time;
//! - [`proposal`]: the log entry envelope (who proposed a command, under
//!   which id);
//! - [`waiters`]: who waits on a node for a grant or a win, and what each
//!   applied command and restored snapshot does to them.

#![forbid(unsafe_code)]

pub mod leader_role;
pub mod locks;
pub mod paxos;
pub mod proposal;
pub mod waiters;
