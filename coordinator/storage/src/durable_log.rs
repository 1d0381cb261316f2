//! The acceptor's durable state in a `crate::Storage`: the core's
//! persist requests written as WAL records, and rebuilt at start-up. The
//! node uses it over the file store; the simulator over the in-memory
//! store, so both run the same encoding and recovery code.
//!
//! Record kinds: 1 promise, 2 accept, 3 chosen. A snapshot op (the node's
//! own compaction, or installing a snapshot received from a peer) is
//! written as a storage snapshot holding the *whole* acceptor state, so
//! compacting the WAL never drops a promise.
//!
//! The node writes snapshots on a thread of their own
//! ([`StoredAcceptor::with_background_snapshots`]): a whole state of many
//! MiB written and fsynced on the persisting thread held every commit
//! behind it (the bench measured acquires stalled ~150 ms at each
//! snapshot of 16 MiB). That is safe because a snapshot only ever lets
//! the WAL be pruned, and the store prunes only once the snapshot file is
//! durable: a crash before leaves the previous snapshot and every record
//! after it, which rebuild a state holding everything the snapshot held
//! that this node acknowledged (its promises and accepts are records; a
//! snapshot installed from a peer is only caught up on again). The
//! simulator writes them inline, deterministically.

use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::Durability;
use crate::{FileStore, FileStoreOptions, Identity, Lsn, RecordRef, Storage, StorageError};
use paxlock_core::paxos::{
    Ballot, Batch, DurableEntry, DurableState, NodeId, PersistOp, PersistRequest, PersistSeq, Slot,
    Snapshot,
};

/// The acceptor over the file store: what `paxlock serve` uses.
pub type FileDurability = StoredAcceptor<FileStore>;

const PROMISE: u8 = 1;
const ACCEPT: u8 = 2;
const CHOSEN: u8 = 3;

/// Why the acceptor state on disk could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DurableLogError {
    /// The store refused to open (corruption, wrong identity, locked...).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A record passed its checksum but does not decode: written by an
    /// incompatible version, or a bug. The data is left untouched.
    #[error("record at LSN {lsn} (kind {kind}) does not decode: {reason}; refusing to start")]
    BadRecord {
        /// Where.
        lsn: u64,
        /// Record kind.
        kind: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// The snapshot passed its checksum but does not decode.
    #[error("snapshot covering LSN {lsn} does not decode: {reason}; refusing to start")]
    BadSnapshot {
        /// Its covered LSN.
        lsn: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A stable 64-bit id for a cluster name (FNV-1a), for the store's identity file.
pub fn cluster_hash(cluster_id: &str) -> u64 {
    cluster_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Acceptor state kept in a `Storage`; the consensus loop's `Durability`.
pub struct StoredAcceptor<S: Storage> {
    store: Arc<S>,
    /// Mirror of what is stored, for writing whole-state snapshots.
    mirror: DurableState,
    /// Where snapshots are written: `None` inline, before `persist`
    /// returns.
    background: Option<BackgroundSnapshots>,
}

/// One whole state to write as the snapshot covering `lsn`.
struct SnapshotJob {
    lsn: Lsn,
    up_to: u64,
    state: Vec<u8>,
}

/// The thread that writes snapshots, one at a time, in order.
struct BackgroundSnapshots {
    /// One job waits while another is written; a third is dropped (the
    /// next snapshot covers it; meanwhile the WAL keeps its records).
    jobs: Option<SyncSender<SnapshotJob>>,
    /// Why a write failed, once one has: `persist` reports it from then on.
    failed: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundSnapshots {
    fn spawn<S: Storage + 'static>(store: Arc<S>) -> std::io::Result<BackgroundSnapshots> {
        let (jobs, queue) = sync_channel::<SnapshotJob>(1);
        let failed = Arc::new(Mutex::new(None));
        let report = failed.clone();
        let thread = std::thread::Builder::new()
            .name("paxlock-snapshot".into())
            .spawn(move || {
                for job in queue {
                    if let Err(e) = store.write_snapshot(job.lsn, job.up_to, &job.state) {
                        let reason = format!("writing the snapshot up to slot {}: {e}", job.up_to);
                        *report.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                        return;
                    }
                }
            })?;
        Ok(BackgroundSnapshots {
            jobs: Some(jobs),
            failed,
            thread: Some(thread),
        })
    }

    /// The failure of an earlier write, if any.
    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn submit(&self, job: SnapshotJob) -> Result<(), String> {
        let Some(jobs) = &self.jobs else {
            return Err("the snapshot writer stopped".into());
        };
        match jobs.try_send(job) {
            Ok(()) | Err(TrySendError::Full(_)) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(self
                .failure()
                .unwrap_or_else(|| "the snapshot writer stopped".into())),
        }
    }
}

impl Drop for BackgroundSnapshots {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<S: Storage> std::fmt::Debug for StoredAcceptor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredAcceptor")
            .field("durable_lsn", &self.store.durable_lsn())
            .finish_non_exhaustive()
    }
}

impl StoredAcceptor<FileStore> {
    /// Opens (or creates) the store in `dir` and rebuilds the acceptor state.
    pub fn open(
        dir: &Path,
        cluster_id: &str,
        node_id: u64,
    ) -> Result<(Self, DurableState), DurableLogError> {
        let segment_bytes = FileStoreOptions::default().segment_size_limit_bytes;
        Self::open_with_segments(dir, cluster_id, node_id, segment_bytes)
    }

    /// Like [`open`](Self::open), with WAL segments of at most
    /// `segment_size_limit_bytes` (see [`FileStoreOptions`]).
    pub fn open_with_segments(
        dir: &Path,
        cluster_id: &str,
        node_id: u64,
        segment_size_limit_bytes: u64,
    ) -> Result<(Self, DurableState), DurableLogError> {
        let identity = Identity {
            cluster_id: cluster_hash(cluster_id),
            node_id,
        };
        // The consensus loop's persister thread is the only writer and
        // already batches everything queued into one call: writing on that
        // thread saves a hand-off to the writer thread and back per fsync.
        let options = FileStoreOptions {
            inline_writes: true,
            segment_size_limit_bytes,
            ..FileStoreOptions::default()
        };
        let (acceptor, state) = Self::open_in(&dir.to_path_buf(), identity, options)?;
        let acceptor = acceptor
            .with_background_snapshots()
            .map_err(|e| StorageError::io("starting the snapshot writer thread", dir, e))?;
        Ok((acceptor, state))
    }
}

impl<S: Storage + 'static> StoredAcceptor<S> {
    /// Writes snapshots on a thread of their own from now on (see the
    /// module's doc): `persist` returns once the records are durable, not
    /// waiting for a snapshot in the same batch.
    pub fn with_background_snapshots(mut self) -> std::io::Result<Self> {
        self.background = Some(BackgroundSnapshots::spawn(self.store.clone())?);
        Ok(self)
    }
}

impl<S: Storage> StoredAcceptor<S> {
    /// Opens the store at `location` and rebuilds the acceptor state from
    /// its snapshot and records.
    pub fn open_in(
        location: &S::Location,
        identity: Identity,
        options: S::Options,
    ) -> Result<(Self, DurableState), DurableLogError> {
        let (store, recovered) = S::open(location, identity, options)?;
        if let Some(torn) = &recovered.torn_tail {
            tracing::warn!("recovered after a torn write: {torn:?}");
        }
        let mut state = match &recovered.snapshot {
            Some(snap) => {
                decode_state(&snap.state).map_err(|reason| DurableLogError::BadSnapshot {
                    lsn: snap.covered_lsn.0,
                    reason,
                })?
            }
            None => DurableState::default(),
        };
        for record in &recovered.records {
            let op = decode_op(record.kind, &record.payload).map_err(|reason| {
                DurableLogError::BadRecord {
                    lsn: record.lsn.0,
                    kind: record.kind,
                    reason,
                }
            })?;
            state.apply_op(&op);
        }
        // Sequence numbers are per process: the core starts counting afresh.
        state.persisted_seq = PersistSeq(0);
        Ok((
            StoredAcceptor {
                store: Arc::new(store),
                mirror: state.clone(),
                background: None,
            },
            state,
        ))
    }

    /// Stores every request in `batch`, in order, and returns once all are
    /// durable (one group commit for the records of the batch); a snapshot
    /// among them, once durable too, unless snapshots are written in the
    /// background (`with_background_snapshots`).
    pub fn persist_batch(&mut self, batch: &[PersistRequest]) -> Result<(), String> {
        if let Some(reason) = self.background.as_ref().and_then(|b| b.failure()) {
            return Err(reason);
        }
        let mut payloads: Vec<(u8, Vec<u8>)> = Vec::new();
        for request in batch {
            for op in &request.ops {
                if let PersistOp::Snapshot(_) = op {
                    // Flush what came before, then store the whole state.
                    self.append(&payloads)?;
                    payloads.clear();
                    self.mirror.apply_op(op);
                    let job = SnapshotJob {
                        lsn: self.store.durable_lsn(),
                        up_to: self.mirror.snapshot.as_ref().map_or(0, |s| s.up_to.0),
                        state: encode_state(&self.mirror),
                    };
                    match &self.background {
                        Some(background) => background.submit(job)?,
                        None => self
                            .store
                            .write_snapshot(job.lsn, job.up_to, &job.state)
                            .map_err(|e| e.to_string())?,
                    }
                    continue;
                }
                payloads.push(encode_op(op));
                self.mirror.apply_op(op);
            }
        }
        self.append(&payloads)
    }
}

impl<S: Storage + 'static> Durability for StoredAcceptor<S> {
    fn persist(&mut self, batch: &[PersistRequest]) -> Result<(), String> {
        self.persist_batch(batch)
    }

    fn stats(&self) -> Option<crate::DurabilityStats> {
        let stats = self.store.stats();
        Some(crate::DurabilityStats {
            records: stats.records_written,
            fsyncs: stats.fsyncs,
            batches: stats.batches,
            bytes: stats.bytes_written,
        })
    }
}

impl<S: Storage> StoredAcceptor<S> {
    fn append(&self, payloads: &[(u8, Vec<u8>)]) -> Result<(), String> {
        if payloads.is_empty() {
            return Ok(());
        }
        let records: Vec<RecordRef<'_>> = payloads
            .iter()
            .map(|(kind, payload)| RecordRef {
                kind: *kind,
                payload,
            })
            .collect();
        let ticket = self
            .store
            .append_batch(&records)
            .map_err(|e| e.to_string())?;
        ticket.wait().map(|_| ()).map_err(|e| e.to_string())
    }
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_batch(out: &mut Vec<u8>, batch: &Batch) {
    put_u64(out, batch.len() as u64);
    for value in batch {
        put_bytes(out, value);
    }
}

fn put_ballot(out: &mut Vec<u8>, b: &Ballot) {
    put_u64(out, b.round);
    put_u64(out, b.node.0);
}

/// The WAL record (kind, payload) of one acceptor operation; what
/// [`decode_op`] reads back. Public for the decoders' fuzzer.
pub fn encode_op(op: &PersistOp) -> (u8, Vec<u8>) {
    let mut out = Vec::new();
    let kind = match op {
        PersistOp::Promise(b) => {
            put_ballot(&mut out, b);
            PROMISE
        }
        PersistOp::Accept {
            slot,
            ballot,
            batch,
        } => {
            put_u64(&mut out, slot.0);
            put_ballot(&mut out, ballot);
            put_batch(&mut out, batch);
            ACCEPT
        }
        PersistOp::Chosen { slot, batch } => {
            put_u64(&mut out, slot.0);
            put_batch(&mut out, batch);
            CHOSEN
        }
        // Handled by `persist` as a storage snapshot.
        PersistOp::Snapshot(_) => 0,
    };
    (kind, out)
}

/// The bytes of the acceptor's whole state (kept in snapshots); what
/// [`decode_state`] reads back. Public for the decoders' fuzzer.
pub fn encode_state(state: &DurableState) -> Vec<u8> {
    let mut out = Vec::new();
    put_ballot(&mut out, &state.promised);
    match &state.snapshot {
        Some(s) => {
            out.push(1);
            put_u64(&mut out, s.up_to.0);
            put_bytes(&mut out, &s.data);
        }
        None => out.push(0),
    }
    put_u64(&mut out, state.log.len() as u64);
    for (slot, entry) in &state.log {
        put_u64(&mut out, slot.0);
        put_ballot(&mut out, &entry.ballot);
        out.push(u8::from(entry.chosen));
        put_batch(&mut out, &entry.batch);
    }
    out
}

/// A bounds-checked little-endian reader: every read of untrusted bytes
/// goes through it, so a bad length is an error, never a panic.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u64(&mut self) -> Result<u64, &'static str> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<8>()
            .ok_or("truncated integer")?;
        self.bytes = rest;
        Ok(u64::from_le_bytes(*head))
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        let (head, rest) = self.bytes.split_first().ok_or("truncated byte")?;
        self.bytes = rest;
        Ok(*head)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, &'static str> {
        let len = usize::try_from(self.u64()?).map_err(|_| "length overflows")?;
        if len > self.bytes.len() {
            return Err("length beyond the record");
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head.to_vec())
    }
    fn batch(&mut self) -> Result<Batch, &'static str> {
        let count = self.u64()?;
        // Each value takes at least 8 bytes, which bounds the allocation.
        if count > (self.bytes.len() / 8) as u64 {
            return Err("batch count beyond the record");
        }
        (0..count)
            .map(|_| self.bytes().map(paxlock_core::paxos::Value::from))
            .collect()
    }
    fn ballot(&mut self) -> Result<Ballot, &'static str> {
        Ok(Ballot {
            round: self.u64()?,
            node: NodeId(self.u64()?),
        })
    }
    fn end(&self) -> Result<(), &'static str> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes")
        }
    }
}

/// Reads one acceptor record from the WAL; bad bytes are an error, never a
/// panic.
pub fn decode_op(kind: u8, payload: &[u8]) -> Result<PersistOp, &'static str> {
    let mut r = Reader { bytes: payload };
    let op = match kind {
        PROMISE => PersistOp::Promise(r.ballot()?),
        ACCEPT => PersistOp::Accept {
            slot: Slot(r.u64()?),
            ballot: r.ballot()?,
            batch: r.batch()?,
        },
        CHOSEN => PersistOp::Chosen {
            slot: Slot(r.u64()?),
            batch: r.batch()?,
        },
        _ => return Err("unknown record kind"),
    };
    r.end()?;
    Ok(op)
}

/// Reads the acceptor's state; bad bytes are an error, never a panic.
pub fn decode_state(bytes: &[u8]) -> Result<DurableState, &'static str> {
    let mut r = Reader { bytes };
    let mut state = DurableState {
        promised: r.ballot()?,
        ..DurableState::default()
    };
    if r.u8()? == 1 {
        state.snapshot = Some(Snapshot {
            up_to: Slot(r.u64()?),
            data: r.bytes()?,
        });
    }
    let entries = r.u64()?;
    for _ in 0..entries {
        let slot = Slot(r.u64()?);
        let ballot = r.ballot()?;
        let chosen = r.u8()? == 1;
        let batch = r.batch()?;
        state.log.insert(
            slot,
            DurableEntry {
                ballot,
                batch,
                chosen,
            },
        );
    }
    r.end()?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ballot(round: u64, node: u64) -> Ballot {
        Ballot {
            round,
            node: NodeId(node),
        }
    }

    fn request(seq: u64, ops: Vec<PersistOp>) -> PersistRequest {
        PersistRequest {
            seq: PersistSeq(seq),
            ops,
        }
    }

    #[test]
    fn everything_persisted_comes_back_after_reopen() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (mut store, fresh) = FileDurability::open(dir.path(), "c", 1)?;
        assert_eq!(fresh, DurableState::default());
        let reqs = vec![
            request(1, vec![PersistOp::Promise(ballot(3, 2))]),
            request(
                2,
                vec![
                    PersistOp::Accept {
                        slot: Slot(0),
                        ballot: ballot(3, 2),
                        batch: vec![
                            paxlock_core::paxos::Value::from_static(b"a"),
                            paxlock_core::paxos::Value::new(),
                        ],
                    },
                    PersistOp::Chosen {
                        slot: Slot(0),
                        batch: vec![
                            paxlock_core::paxos::Value::from_static(b"a"),
                            paxlock_core::paxos::Value::new(),
                        ],
                    },
                ],
            ),
        ];
        store.persist(&reqs)?;
        let mut expected = DurableState::default();
        for r in &reqs {
            expected.apply(r);
        }
        expected.persisted_seq = PersistSeq(0);
        drop(store);
        let (_store, recovered) = FileDurability::open(dir.path(), "c", 1)?;
        assert_eq!(recovered, expected);
        Ok(())
    }

    #[test]
    fn installed_snapshot_keeps_the_promise() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (mut store, _) = FileDurability::open(dir.path(), "c", 1)?;
        store.persist(&[
            request(1, vec![PersistOp::Promise(ballot(7, 3))]),
            request(
                2,
                vec![PersistOp::Snapshot(Snapshot {
                    up_to: Slot(10),
                    data: b"state".to_vec(),
                })],
            ),
        ])?;
        drop(store);
        let (_store, recovered) = FileDurability::open(dir.path(), "c", 1)?;
        assert_eq!(recovered.promised, ballot(7, 3));
        assert_eq!(recovered.snapshot.map(|s| s.up_to), Some(Slot(10)));
        Ok(())
    }

    #[test]
    fn records_after_a_background_snapshot_are_kept_and_the_snapshot_is_used(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (mut store, _) = FileDurability::open(dir.path(), "c", 1)?;
        assert!(
            store.background.is_some(),
            "the node's store writes snapshots aside"
        );
        let value = || vec![paxlock_core::paxos::Value::from_static(b"v")];
        let accept = |slot| PersistOp::Accept {
            slot: Slot(slot),
            ballot: ballot(4, 1),
            batch: value(),
        };
        store.persist(&[
            request(1, vec![PersistOp::Promise(ballot(4, 1)), accept(9)]),
            request(
                2,
                vec![PersistOp::Snapshot(Snapshot {
                    up_to: Slot(10),
                    data: b"state".to_vec(),
                })],
            ),
            request(3, vec![accept(11)]),
        ])?;
        // Written while the snapshot may still be on its way.
        store.persist(&[request(4, vec![accept(12)])])?;
        drop(store);
        let (_store, recovered) = FileDurability::open(dir.path(), "c", 1)?;
        assert_eq!(recovered.snapshot.map(|s| s.up_to), Some(Slot(10)));
        assert_eq!(recovered.promised, ballot(4, 1));
        for slot in [11, 12] {
            assert!(recovered.log.contains_key(&Slot(slot)), "slot {slot} lost");
        }
        Ok(())
    }

    #[test]
    fn a_data_directory_of_another_node_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        drop(FileDurability::open(dir.path(), "c", 1)?);
        let other = FileDurability::open(dir.path(), "c", 2);
        assert!(
            matches!(other, Err(DurableLogError::Storage(_))),
            "{other:?}"
        );
        let other_cluster = FileDurability::open(dir.path(), "d", 1);
        assert!(matches!(other_cluster, Err(DurableLogError::Storage(_))));
        Ok(())
    }

    #[test]
    fn garbage_payloads_are_errors_not_panics() {
        for kind in [PROMISE, ACCEPT, CHOSEN, 9] {
            for len in 0..40 {
                let bytes = vec![0xff; len];
                let _ = decode_op(kind, &bytes);
            }
        }
        assert!(decode_state(&[1, 2, 3]).is_err());
    }
}
