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
//! - [`backup`] — backup files (`paxlock snapshot save` / `restore`);
//! - [`wal`] — [`FileStore`], which ties the above together;
//! - [`mem`] — [`MemStore`], same contract in memory, with crash modelling;
//! - [`store`] — the [`Storage`] trait both implement;
//! - [`error`] — [`StorageError`];
//! - [`durable_log`] — the Paxos acceptor's state as records in a
//!   [`Storage`], written and rebuilt the same way by the node (over the
//!   file store) and the simulator (over the memory store);
//! - [`entropy`] — randomness that must differ between runs (segment salts).
//!
//! No async runtime: the group-commit writer is a thread of its own, and
//! the node's consensus loop hands it work through [`Durability`].
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

pub mod backup;
pub mod canary;
pub mod durable_log;
pub mod entropy;
pub mod error;
pub mod fsutil;
pub mod group_commit;
pub mod incarnation;
pub mod mem;
pub mod meta;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod snapshot;
pub mod store;
pub mod wal;

pub use durable_log::{cluster_hash, DurableLogError, FileDurability, StoredAcceptor};
pub use error::{Result, StorageError};
pub use group_commit::{StorageStats, Ticket};
pub use incarnation::{IncarnationMismatch, Incarnations};
pub use mem::{MemDisk, MemStore, MemStoreOptions};
pub use meta::Identity;
pub use record::{Lsn, RecordRef, WalRecord};
pub use recovery::{Recovered, TornTail};
pub use snapshot::SnapshotData;
pub use store::Storage;
pub use wal::{FileStore, FileStoreOptions};

use paxlock_core::paxos::{DurableState, PersistRequest};

/// Makes persist requests durable. Implemented by the file store (fsync),
/// the simulator's memory store, and [`MemoryDurability`] for tests.
pub trait Durability: Send + 'static {
    /// Writes every request in `batch`, in order, and returns only once all
    /// of them are durable; a snapshot op may become durable later (it
    /// only lets the log be compacted, which waits for it: until then a
    /// restart rebuilds the same state from the previous snapshot and the
    /// records after it). An error is fatal: the node stops rather than
    /// answer on state it could not save.
    fn persist(&mut self, batch: &[PersistRequest]) -> std::result::Result<(), String>;

    /// The store's counters, if it keeps any.
    fn stats(&self) -> Option<DurabilityStats> {
        None
    }
}

/// What a durable store reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurabilityStats {
    /// Records made durable.
    pub records: u64,
    /// fsync/fdatasync calls.
    pub fsyncs: u64,
    /// Group commits.
    pub batches: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Keeps acceptor state in memory only. For tests and single-process
/// experiments: nothing survives a restart.
#[derive(Debug, Default)]
pub struct MemoryDurability {
    /// Everything persisted so far.
    pub state: DurableState,
}

impl Durability for MemoryDurability {
    fn persist(&mut self, batch: &[PersistRequest]) -> std::result::Result<(), String> {
        for request in batch {
            self.state.apply(request);
        }
        Ok(())
    }
}
