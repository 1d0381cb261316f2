//! One storage conformance suite, run against the file store and the
//! in-memory store, so that both mean the same thing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test failure should stop loudly

mod storage_common;

use std::sync::Arc;

use paxlock_storage::{
    FileStore, FileStoreOptions, Identity, Lsn, MemDisk, MemStore, MemStoreOptions, RecordRef,
    Storage, StorageError,
};

/// What a rule needs: where the store lives, how to open it, how to crash it.
struct Harness<S: Storage> {
    location: S::Location,
    options: S::Options,
    /// Called after the store handle is dropped: models the power cut.
    crash: fn(&S::Location),
    _tmp: Option<tempfile::TempDir>,
}

impl<S: Storage> Harness<S>
where
    S::Options: Copy,
{
    fn open(&self) -> S {
        self.reopen().expect("open").0
    }

    fn reopen(&self) -> Result<(S, paxlock_storage::Recovered), StorageError> {
        S::open(&self.location, storage_common::ID, self.options)
    }

    fn restart(&self, store: S) -> paxlock_storage::Recovered {
        drop(store);
        (self.crash)(&self.location);
        self.reopen().expect("reopen").1
    }
}

fn file_harness() -> Harness<FileStore> {
    let tmp = tempfile::tempdir().expect("tempdir");
    Harness {
        location: tmp.path().join("data"),
        options: FileStoreOptions {
            segment_size_limit_bytes: 512,
            ..FileStoreOptions::default()
        },
        crash: |_| {},
        _tmp: Some(tmp),
    }
}

fn inline_file_harness() -> Harness<FileStore> {
    let mut harness = file_harness();
    harness.options.inline_writes = true;
    harness
}

fn mem_harness() -> Harness<MemStore> {
    Harness {
        location: MemDisk::new(),
        options: MemStoreOptions::default(),
        crash: MemDisk::crash,
        _tmp: None,
    }
}

fn lsns_start_at_one_and_are_contiguous<S: Storage>(h: &Harness<S>)
where
    S::Options: Copy,
{
    let store = h.open();
    assert_eq!(store.append(1, b"a").unwrap().wait().unwrap(), Lsn(1));
    assert_eq!(store.append(1, b"b").unwrap().wait().unwrap(), Lsn(2));
    let batch = [RecordRef {
        kind: 2,
        payload: b"c",
    }; 4];
    assert_eq!(store.append_batch(&batch).unwrap().wait().unwrap(), Lsn(6));
    assert_eq!(store.durable_lsn(), Lsn(6));
    let recovered = h.restart(store);
    let lsns: Vec<u64> = recovered.records.iter().map(|r| r.lsn.0).collect();
    assert_eq!(lsns, (1..=6).collect::<Vec<_>>());
}

fn acknowledged_records_survive_restart_byte_for_byte<S: Storage>(h: &Harness<S>)
where
    S::Options: Copy,
{
    let store = h.open();
    let payloads: Vec<Vec<u8>> = vec![vec![], vec![0xff; 1000], b"x".to_vec(), vec![0; 7]];
    for (i, p) in payloads.iter().enumerate() {
        store.append(i as u8, p).unwrap().wait().unwrap();
    }
    let recovered = h.restart(store);
    let got: Vec<(u8, Vec<u8>)> = recovered
        .records
        .into_iter()
        .map(|r| (r.kind, r.payload))
        .collect();
    let want: Vec<(u8, Vec<u8>)> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| (i as u8, p))
        .collect();
    assert_eq!(got, want);
}

fn lsns_continue_after_restart<S: Storage>(h: &Harness<S>)
where
    S::Options: Copy,
{
    let store = h.open();
    for _ in 0..3 {
        store.append(1, b"before").unwrap().wait().unwrap();
    }
    h.restart(store);
    let store = h.open();
    assert_eq!(store.durable_lsn(), Lsn(3));
    assert_eq!(store.append(1, b"after").unwrap().wait().unwrap(), Lsn(4));
}

fn snapshot_replaces_the_records_it_covers<S: Storage>(h: &Harness<S>)
where
    S::Options: Copy,
{
    let store = h.open();
    for i in 0..20u8 {
        store.append(1, &[i; 40]).unwrap().wait().unwrap();
    }
    store.write_snapshot(Lsn(15), 150, b"state@15").unwrap();
    store.append(1, b"tail").unwrap().wait().unwrap();
    let recovered = h.restart(store);
    let snapshot = recovered.snapshot.expect("snapshot recovered");
    assert_eq!(
        (snapshot.covered_lsn, snapshot.covered_slot),
        (Lsn(15), 150)
    );
    assert_eq!(snapshot.state, b"state@15");
    let lsns: Vec<u64> = recovered.records.iter().map(|r| r.lsn.0).collect();
    assert_eq!(lsns, (16..=21).collect::<Vec<_>>());
}

fn snapshot_beyond_the_durable_lsn_is_rejected<S: Storage>(h: &Harness<S>)
where
    S::Options: Copy,
{
    let store = h.open();
    store.append(1, b"a").unwrap().wait().unwrap();
    let err = store.write_snapshot(Lsn(2), 0, b"too far").unwrap_err();
    assert!(matches!(err, StorageError::InvalidArgument { .. }), "{err}");
}

fn snapshot_older_than_the_previous_is_rejected<S: Storage>(h: &Harness<S>)
where
    S::Options: Copy,
{
    let store = h.open();
    for _ in 0..4 {
        store.append(1, b"a").unwrap().wait().unwrap();
    }
    store.write_snapshot(Lsn(3), 3, b"s3").unwrap();
    let err = store.write_snapshot(Lsn(2), 2, b"s2").unwrap_err();
    assert!(matches!(err, StorageError::InvalidArgument { .. }), "{err}");
}

fn location_of_another_node_is_refused<S: Storage>(h: &Harness<S>)
where
    S::Options: Copy,
{
    let store = h.open();
    store.append(1, b"a").unwrap().wait().unwrap();
    drop(store);
    let other = Identity {
        cluster_id: storage_common::ID.cluster_id,
        node_id: storage_common::ID.node_id + 1,
    };
    let err = S::open(&h.location, other, h.options)
        .err()
        .expect("refused");
    assert!(
        matches!(err, StorageError::IdentityMismatch { .. }),
        "{err}"
    );
}

fn empty_batch_is_rejected<S: Storage>(h: &Harness<S>)
where
    S::Options: Copy,
{
    let store = h.open();
    let err = store.append_batch(&[]).err().expect("rejected");
    assert!(matches!(err, StorageError::InvalidArgument { .. }), "{err}");
}

fn concurrent_producers_each_get_their_own_lsn<S: Storage + 'static>(h: &Harness<S>)
where
    S::Options: Copy,
{
    let store = Arc::new(h.open());
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..25u8)
                    .map(|i| {
                        (
                            store.append(t, &[t, i]).unwrap().wait().unwrap(),
                            vec![t, i],
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked: Vec<(Lsn, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    acked.sort();
    let stats = store.stats();
    assert_eq!(stats.records_written, 100);
    assert!(stats.fsyncs >= 1);
    let store = Arc::try_unwrap(store).ok().expect("sole owner");
    let recovered = h.restart(store);
    let got: Vec<(Lsn, Vec<u8>)> = recovered
        .records
        .into_iter()
        .map(|r| (r.lsn, r.payload))
        .collect();
    assert_eq!(got, acked);
}

macro_rules! conformance {
    ($($rule:ident),* $(,)?) => {
        mod file_store {
            $( #[test] fn $rule() { super::$rule(&super::file_harness()); } )*
        }
        mod file_store_inline {
            $( #[test] fn $rule() { super::$rule(&super::inline_file_harness()); } )*
        }
        mod mem_store {
            $( #[test] fn $rule() { super::$rule(&super::mem_harness()); } )*
        }
    };
}

conformance!(
    lsns_start_at_one_and_are_contiguous,
    acknowledged_records_survive_restart_byte_for_byte,
    lsns_continue_after_restart,
    snapshot_replaces_the_records_it_covers,
    snapshot_beyond_the_durable_lsn_is_rejected,
    snapshot_older_than_the_previous_is_rejected,
    location_of_another_node_is_refused,
    empty_batch_is_rejected,
    concurrent_producers_each_get_their_own_lsn,
);

#[test]
fn mem_store_crash_loses_unacknowledged_records_only() {
    let disk = MemDisk::new();
    let options = MemStoreOptions {
        sync_mode: paxlock_storage::mem::MemSyncMode::Manual,
    };
    let (store, _) = MemStore::open(&disk, storage_common::ID, options).unwrap();
    let acked = store.append(1, b"acked").unwrap();
    store.sync().unwrap();
    assert_eq!(acked.wait().unwrap(), Lsn(1));
    let lost = store.append(1, b"lost").unwrap();
    disk.crash();
    assert!(matches!(lost.wait(), Err(StorageError::Closed)));
    assert!(matches!(
        store.append(1, b"dead handle"),
        Err(StorageError::Closed)
    ));
    let (_, recovered) = MemStore::open(&disk, storage_common::ID, options).unwrap();
    let payloads: Vec<&[u8]> = recovered
        .records
        .iter()
        .map(|r| r.payload.as_slice())
        .collect();
    assert_eq!(payloads, vec![b"acked".as_slice()]);
}

#[test]
fn mem_store_crash_may_keep_unacknowledged_prefix() {
    let disk = MemDisk::new();
    let options = MemStoreOptions {
        sync_mode: paxlock_storage::mem::MemSyncMode::Manual,
    };
    let (store, _) = MemStore::open(&disk, storage_common::ID, options).unwrap();
    for p in [b"a", b"b", b"c"] {
        let _unacked = store.append(1, p).unwrap();
    }
    disk.crash_keeping_unsynced(2);
    let (_, recovered) = MemStore::open(&disk, storage_common::ID, options).unwrap();
    let lsns: Vec<u64> = recovered.records.iter().map(|r| r.lsn.0).collect();
    assert_eq!(lsns, vec![1, 2]);
}
