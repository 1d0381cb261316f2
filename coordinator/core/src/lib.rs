//! Everything a Paxlock node decides, with no I/O: no tokio, sockets,
//! files, threads or clock reads. The node (`paxlock-coordinator`) pumps
//! inputs in and carries effects out; the deterministic simulator drives
//! the same code under faults.
//!
//! - [`paxos`]: Multi-Paxos, `Replica::step(now, Input) -> Effects`;
//! - [`locks`]: the replicated lock state machine;
//! - [`access`]: which identity may do what to which names;
//! - [`admission`]: what a node does with a client request before anything
//!   is logged (refuse, answer, or propose which command);
//! - [`consensus_loop`]: in which order a node carries out a step's effects,
//!   which messages wait for their persist barrier, when to compact;
//! - [`leader_role`]: what a leading node decides about sessions and time;
//! - [`new_cluster`]: a new cluster's first state from an old one's
//!   (backups, recovery after losing a majority);
//! - [`node_membership`]: a leader's handling of an administrator's
//!   membership change, when a removed node stops, whom a node sends to;
//! - [`proposal`]: the log entry envelope (who proposed a command, under
//!   which id);
//! - [`waiters`]: who waits on a node for a grant or a win, and what each
//!   applied command and restored snapshot does to them.

#![forbid(unsafe_code)]

pub mod access;
pub mod admission;
pub mod consensus_loop;
pub mod inspect;
pub mod leader_role;
pub mod lock_watch;
pub mod locks;
pub mod new_cluster;
pub mod node_membership;
pub mod paxos;
pub mod proposal;
pub mod waiters;
