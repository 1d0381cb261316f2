//! Durable acceptor storage: a write-ahead log with group commit, snapshots,
//! crash recovery, and an in-memory twin for the deterministic simulator.
//!
//! Modules, one job each:
//! - [`record`] — generic frame codec (kind + payload + LSN, two checksums,
//!   salted per segment);
//! - [`segment`] — segment files, their header, scanning one segment;
//! - [`group_commit`] — the writer thread, tickets, counters;
//! - [`snapshot`] — snapshot files;
//! - [`recovery`] — torn tail versus corruption, repair;
//! - [`meta`] — the identity file (cluster id, node id);
//! - [`wal`] — [`FileStore`], which ties the above together;
//! - [`mem`] — [`MemStore`], same contract in memory, with crash modelling;
//! - [`store`] — the [`Storage`] trait both implement;
//! - [`error`] — [`StorageError`].
//!
//! Guarantees and known limits:
//! - A ticket's `wait()` returns `Ok` only after the group's `fdatasync`
//!   (and, for a new segment, the file and directory fsync) succeeded.
//! - A write or fsync error poisons the store: every later request fails with
//!   [`StorageError::WriterFailed`] until the node restarts and recovers, because
//!   retrying an fsync after a failure can report success for lost pages.
//! - Damage in the last segment followed by nothing intact but records of
//!   the same group commit is what a power cut during that group's
//!   fdatasync leaves (its pages reach the disk in any order): it is
//!   truncated with a warning, even if it was in fact acknowledged and
//!   damaged later. Everything else is refused.
//! - Recovery reads every record after the snapshot into memory; snapshot
//!   often enough to keep that bounded.
//! - The directory is `flock`ed while a [`FileStore`] is open.

pub mod error;
pub mod fsutil;
pub mod group_commit;
pub mod mem;
pub mod meta;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod snapshot;
pub mod store;
pub mod wal;

pub use error::{Result, StorageError};
pub use group_commit::{StorageStats, Ticket};
pub use mem::{MemDisk, MemStore, MemStoreOptions};
pub use meta::Identity;
pub use record::{Lsn, RecordRef, WalRecord};
pub use recovery::{Recovered, TornTail};
pub use snapshot::SnapshotData;
pub use store::Storage;
pub use wal::{FileStore, FileStoreOptions};
