//! [`MemStore`]: the [`Storage`] contract in memory, for the deterministic
//! simulator.
//!
//! The durable medium is a [`MemDisk`] that outlives store handles, like a
//! directory outlives a process. Appended records sit in an "unsynced" buffer
//! until [`MemStore::sync`] (or, in [`MemSyncMode::Immediate`], at once);
//! only then are tickets acknowledged. [`MemDisk::crash`] drops every unsynced
//! record and fails their tickets, which is exactly what the file store
//! guarantees after a power loss; [`MemDisk::crash_keeping_unsynced`] models
//! unacknowledged writes that happened to reach the disk anyway.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Result, StorageError};
use crate::group_commit::{Counters, StorageStats, Ticket};
use crate::meta::Identity;
use crate::record::{Lsn, RecordRef, WalRecord};
use crate::recovery::Recovered;
use crate::snapshot::SnapshotData;
use crate::store::Storage;

/// When a [`MemStore`] makes appends durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemSyncMode {
    /// Every append is durable before `append_batch` returns.
    #[default]
    Immediate,
    /// Appends stay unsynced until [`MemStore::sync`]; the simulator decides
    /// when the "fsync" completes.
    Manual,
}

/// Options for [`MemStore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStoreOptions {
    /// When appends become durable.
    pub sync_mode: MemSyncMode,
}

/// A simulated disk holding one node's storage. Clones share the same disk.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    inner: Arc<Mutex<DiskState>>,
}

#[derive(Debug, Default)]
struct DiskState {
    identity: Option<Identity>,
    snapshot: Option<SnapshotData>,
    /// Synced records after the snapshot, contiguous LSNs.
    durable: Vec<WalRecord>,
    /// Appended but not yet synced, contiguous after `durable`.
    unsynced: Vec<WalRecord>,
    /// Tickets waiting for a sync: (last LSN of the batch, completion).
    pending: Vec<(Lsn, SyncSender<Result<Lsn>>)>,
    /// Bumped by every crash and open, so handles from before are dead.
    generation: u64,
    counters: Arc<Counters>,
}

impl DiskState {
    fn durable_lsn(&self) -> Lsn {
        let covered = self.snapshot.as_ref().map_or(Lsn::ZERO, |s| s.covered_lsn);
        self.durable.last().map_or(covered, |r| r.lsn).max(covered)
    }

    fn next_lsn(&self) -> Lsn {
        self.unsynced
            .last()
            .map_or(self.durable_lsn(), |r| r.lsn)
            .next()
    }

    fn sync(&mut self) {
        if self.unsynced.is_empty() {
            return;
        }
        let count = self.unsynced.len() as u64;
        let bytes: usize = self.unsynced.iter().map(|r| r.payload.len()).sum();
        self.durable.append(&mut self.unsynced);
        for (last_lsn, done) in self.pending.drain(..) {
            let _ = done.send(Ok(last_lsn));
        }
        self.counters
            .records_written
            .fetch_add(count, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
    }

    fn crash(&mut self, keep_unsynced: usize) {
        let keep = keep_unsynced.min(self.unsynced.len());
        let kept: Vec<_> = self.unsynced.drain(..keep).collect();
        self.durable.extend(kept);
        self.unsynced.clear();
        // Dropping the senders makes every waiting ticket return Closed: the
        // process that waited is gone.
        self.pending.clear();
        self.generation += 1;
    }
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // A panic in another simulated node must not hide this disk's state.
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Power loss: every record not yet synced is lost, waiting tickets fail
    /// with [`StorageError::Closed`], and existing store handles stop working.
    pub fn crash(&self) {
        self.lock().crash(0);
    }

    /// Power loss where the first `count` unsynced records happened to reach
    /// the platter (they were never acknowledged but survive).
    pub fn crash_keeping_unsynced(&self, count: usize) {
        self.lock().crash(count);
    }

    /// The records currently durable (after the snapshot), for assertions.
    pub fn durable_records(&self) -> Vec<WalRecord> {
        self.lock().durable.clone()
    }

    /// Number of appended records not yet synced.
    pub fn unsynced_count(&self) -> usize {
        self.lock().unsynced.len()
    }
}

/// In-memory [`Storage`] over a [`MemDisk`].
#[derive(Debug)]
pub struct MemStore {
    disk: MemDisk,
    generation: u64,
    options: MemStoreOptions,
}

impl MemStore {
    /// Completes the simulated fsync: all unsynced records become durable and
    /// their tickets resolve. A no-op when nothing is pending.
    pub fn sync(&self) -> Result<()> {
        let mut disk = self.live_disk()?;
        disk.sync();
        Ok(())
    }

    /// The disk this store writes to.
    pub fn disk(&self) -> &MemDisk {
        &self.disk
    }

    fn live_disk(&self) -> Result<MutexGuard<'_, DiskState>> {
        let disk = self.disk.lock();
        if disk.generation != self.generation {
            return Err(StorageError::Closed);
        }
        Ok(disk)
    }
}

impl Storage for MemStore {
    type Location = MemDisk;
    type Options = MemStoreOptions;

    fn open(
        disk: &MemDisk,
        identity: Identity,
        options: MemStoreOptions,
    ) -> Result<(Self, Recovered)> {
        let mut state = disk.lock();
        match state.identity {
            None => state.identity = Some(identity),
            Some(found) if found == identity => {}
            Some(found) => {
                return Err(StorageError::IdentityMismatch {
                    dir: PathBuf::from("<memory>"),
                    found_cluster_id: found.cluster_id,
                    found_node_id: found.node_id,
                    expected_cluster_id: identity.cluster_id,
                    expected_node_id: identity.node_id,
                })
            }
        }
        // A new incarnation: whatever the previous one had not synced is gone,
        // and its counters start from zero like a new process's.
        state.crash(0);
        state.counters = Arc::new(Counters::default());
        let recovered = Recovered {
            snapshot: state.snapshot.clone(),
            records: state.durable.clone(),
            torn_tail: None,
        };
        let store = MemStore {
            disk: disk.clone(),
            generation: state.generation,
            options,
        };
        drop(state);
        Ok((store, recovered))
    }

    fn append_batch(&self, records: &[RecordRef<'_>]) -> Result<Ticket> {
        if records.is_empty() {
            return Err(StorageError::InvalidArgument {
                reason: "append_batch needs at least one record".to_string(),
            });
        }
        let mut disk = self.live_disk()?;
        for record in records {
            let lsn = disk.next_lsn();
            disk.unsynced.push(WalRecord {
                lsn,
                kind: record.kind,
                payload: record.payload.to_vec(),
            });
        }
        let last_lsn = Lsn(disk.next_lsn().0 - 1);
        match self.options.sync_mode {
            MemSyncMode::Immediate => {
                disk.sync();
                Ok(Ticket::resolved(Ok(last_lsn)))
            }
            MemSyncMode::Manual => {
                let (ticket, done) = Ticket::pending();
                disk.pending.push((last_lsn, done));
                Ok(ticket)
            }
        }
    }

    fn write_snapshot(&self, covered_lsn: Lsn, covered_slot: u64, state: &[u8]) -> Result<()> {
        let mut disk = self.live_disk()?;
        let previous = disk.snapshot.as_ref().map_or(Lsn::ZERO, |s| s.covered_lsn);
        let durable = disk.durable_lsn();
        if covered_lsn > durable || covered_lsn < previous {
            return Err(StorageError::InvalidArgument {
                reason: format!(
                    "snapshot must cover an LSN between the previous snapshot ({previous}) and the durable LSN ({durable}); got {covered_lsn}"
                ),
            });
        }
        disk.snapshot = Some(SnapshotData {
            covered_lsn,
            covered_slot,
            state: state.to_vec(),
        });
        disk.durable.retain(|r| r.lsn > covered_lsn);
        Ok(())
    }

    fn durable_lsn(&self) -> Lsn {
        self.disk.lock().durable_lsn()
    }

    fn stats(&self) -> StorageStats {
        let disk = self.disk.lock();
        disk.counters.snapshot(disk.durable_lsn())
    }
}
