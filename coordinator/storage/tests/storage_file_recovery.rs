//! Recovery rules of the file store, on real files: torn tails are cut off
//! and reported, every other kind of damage is refused without touching the
//! data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test failure should stop loudly

mod storage_common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use paxlock_storage::{FileStoreOptions, Lsn, RecordRef, Storage, StorageError};
use storage_common::*;

/// Field offsets inside a record frame, by name (see `record` docs).
const FRAME_REGIONS: [(&str, usize); 7] = [
    ("length", 0),
    ("kind", 4),
    ("place in group", 6),
    ("lsn", 8),
    ("header crc", 16),
    ("record crc", 20),
    ("payload", 26),
];

/// A data dir with `n` acknowledged records spread over several segments.
fn populated(n: usize) -> (tempfile::TempDir, Vec<Vec<u8>>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let payloads: Vec<Vec<u8>> = (0..n).map(payload).collect();
    let (store, _) = open(tmp.path(), small_segments()).expect("open");
    append_all(&store, &payloads);
    drop(store);
    (tmp, payloads)
}

fn assert_refused_unchanged(dir: &Path, expect_file: &Path, expect_offset: Option<u64>) {
    let before = dir_contents(dir);
    let err = open(dir, small_segments()).err().expect("open must refuse");
    assert!(err.is_corruption(), "expected corruption, got {err}");
    if let StorageError::Corrupt {
        file, offset_bytes, ..
    } = &err
    {
        assert_eq!(file, expect_file, "{err}");
        if let Some(offset) = expect_offset {
            assert_eq!(*offset_bytes, offset, "{err}");
        }
    }
    assert_eq!(
        dir_contents(dir),
        before,
        "a refused open must not modify the directory"
    );
}

/// Reopening `dir` finds no torn tail and `count` records, the last one
/// `last_payload`.
fn assert_reopens_cleanly_ending_with(dir: &Path, count: usize, last_payload: &[u8]) {
    let (_, again) = open(dir, small_segments()).expect("reopen");
    assert!(again.torn_tail.is_none(), "{:?}", again.torn_tail);
    assert_eq!(again.records.len(), count);
    assert_eq!(
        again.records.last().map(|r| r.payload.as_slice()),
        Some(last_payload)
    );
}

#[test]
fn torn_tail_is_truncated_and_reported() {
    let (tmp, payloads) = populated(12);
    let last = segments(tmp.path()).pop().expect("segment");
    let offsets = frame_offsets(&last);
    let last_frame = *offsets.last().expect("frame");
    let records_end = records_end(&last);
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open")
        .set_len(records_end - 5)
        .expect("truncate");

    let (store, recovered) = open(tmp.path(), small_segments()).expect("torn tail is not fatal");
    let torn = recovered.torn_tail.expect("torn tail reported");
    assert_eq!(
        (torn.segment.as_path(), torn.offset_bytes),
        (last.as_path(), last_frame as u64)
    );
    assert_eq!(recovered.records.len(), payloads.len() - 1);
    assert_eq!(fs::metadata(&last).expect("meta").len(), last_frame as u64);
    // The log continues where the valid part ended.
    assert_eq!(
        store.append(1, b"next").unwrap().wait().unwrap(),
        Lsn(payloads.len() as u64)
    );
    drop(store);
    assert_reopens_cleanly_ending_with(tmp.path(), payloads.len(), b"next");
}

#[test]
fn zeros_after_the_last_record_are_free_space_not_a_torn_tail() {
    let (tmp, payloads) = populated(12);
    let last = segments(tmp.path()).pop().expect("segment");
    let records_end = records_end(&last);
    let mut bytes = fs::read(&last).expect("read");
    bytes.resize(records_end as usize + 4096, 0);
    fs::write(&last, bytes).expect("write");

    let (store, recovered) = open(tmp.path(), small_segments()).expect("open");
    assert!(recovered.torn_tail.is_none(), "{:?}", recovered.torn_tail);
    assert_eq!(recovered.records.len(), payloads.len());
    assert_eq!(
        fs::metadata(&last).expect("meta").len(),
        records_end + 4096,
        "free space is kept, not truncated"
    );
    // The next record goes where the records ended, over the zeros.
    store.append(1, b"next").unwrap().wait().unwrap();
    drop(store);
    assert_reopens_cleanly_ending_with(tmp.path(), payloads.len() + 1, b"next");
}

#[test]
fn a_partial_record_before_free_space_is_a_torn_tail() {
    let (tmp, payloads) = populated(12);
    let last = segments(tmp.path()).pop().expect("segment");
    let last_frame = *frame_offsets(&last).last().expect("frame");
    let records_end = records_end(&last) as usize;
    // The crash wrote the first half of the last record; the rest of the
    // preallocated space is still zeros.
    let mut bytes = fs::read(&last).expect("read");
    bytes.resize(records_end + 4096, 0);
    let half = last_frame + (records_end - last_frame) / 2;
    bytes[half..records_end].fill(0);
    fs::write(&last, bytes).expect("write");

    let (_, recovered) = open(tmp.path(), small_segments()).expect("open");
    assert_eq!(
        recovered.torn_tail.map(|t| t.offset_bytes),
        Some(last_frame as u64)
    );
    assert_eq!(recovered.records.len(), payloads.len() - 1);
}

#[test]
fn the_last_segment_is_preallocated_and_sealed_segments_are_trimmed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = FileStoreOptions {
        segment_size_limit_bytes: 4096,
        preallocate_bytes: 1024,
        ..FileStoreOptions::default()
    };
    let (store, _) = open(tmp.path(), options).expect("open");
    let payloads: Vec<Vec<u8>> = (0..150).map(payload).collect();
    append_all(&store, &payloads);
    let all = segments(tmp.path());
    assert!(all.len() >= 2, "the records span segments");
    let (last, sealed) = all.split_last().expect("segments");
    for path in sealed {
        assert_eq!(
            fs::metadata(path).expect("meta").len(),
            records_end(path),
            "{} ends with its last record",
            path.display()
        );
    }
    let allocated = fs::metadata(last).expect("meta").len();
    assert!(allocated > records_end(last), "zeros follow the records");
    assert_eq!(allocated % 1024, 0, "allocated in whole chunks");
    drop(store);
    let (_, recovered) = open(tmp.path(), options).expect("reopen");
    assert!(recovered.torn_tail.is_none());
    let got: Vec<Vec<u8>> = recovered.records.into_iter().map(|r| r.payload).collect();
    assert_eq!(got, payloads);
}

#[test]
fn bit_flip_in_the_last_record_of_the_last_segment_is_a_torn_tail() {
    for (region, field_offset) in FRAME_REGIONS {
        let (tmp, payloads) = populated(12);
        let last = segments(tmp.path()).pop().expect("segment");
        let frame = *frame_offsets(&last).last().expect("frame");
        flip_bit(&last, frame + field_offset, 3);
        let (_, recovered) =
            open(tmp.path(), small_segments()).unwrap_or_else(|e| panic!("{region}: {e}"));
        assert_eq!(
            recovered.torn_tail.map(|t| t.offset_bytes),
            Some(frame as u64),
            "{region}"
        );
        assert_eq!(recovered.records.len(), payloads.len() - 1, "{region}");
    }
}

#[test]
fn bit_flip_in_a_middle_record_of_the_last_segment_is_corruption() {
    for (region, field_offset) in FRAME_REGIONS {
        let (tmp, _) = populated(12);
        let last = segments(tmp.path()).pop().expect("segment");
        let offsets = frame_offsets(&last);
        assert!(
            offsets.len() >= 2,
            "test needs two records in the last segment"
        );
        flip_bit(&last, offsets[0] + field_offset, 5);
        eprintln!("region {region}");
        assert_refused_unchanged(tmp.path(), &last, Some(offsets[0] as u64));
    }
}

/// A data dir (one segment) with 3 records acknowledged one by one, then
/// the group commits of `groups` (payload counts), each acknowledged.
fn populated_in_groups(groups: &[usize]) -> (tempfile::TempDir, Vec<usize>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path(), FileStoreOptions::default()).expect("open");
    append_all(&store, &(0..3).map(payload).collect::<Vec<_>>());
    for &count in groups {
        append_group(&store, &(0..count).map(payload).collect::<Vec<_>>());
    }
    drop(store);
    let last = segments(tmp.path()).pop().expect("segment");
    (tmp, frame_offsets(&last))
}

#[test]
fn damage_followed_only_by_its_own_group_is_a_torn_tail() {
    // A power cut during the last group's fdatasync may save its pages in
    // any order: damage with intact frames of the same group after it.
    for (region, field_offset) in FRAME_REGIONS {
        let (tmp, frames) = populated_in_groups(&[4]);
        let last = segments(tmp.path()).pop().expect("segment");
        // Frames 3..7 are the group; damage its second one.
        flip_bit(&last, frames[4] + field_offset, 2);
        let (_, recovered) = open(tmp.path(), FileStoreOptions::default())
            .unwrap_or_else(|e| panic!("{region}: {e}"));
        assert_eq!(
            recovered.torn_tail.map(|t| t.offset_bytes),
            Some(frames[4] as u64),
            "{region}"
        );
        assert_eq!(recovered.records.len(), 4, "{region}");
        assert_eq!(recovered.records.last().map(|r| r.lsn), Some(Lsn(4)));
    }
}

/// Regression (found in review): a client's value is stored verbatim in a
/// record's payload, so a client could embed an intact-looking frame of a
/// "later group". A torn write of that record then read as corruption and
/// the node refused to start. Frames are salted per segment: a frame forged
/// without the salt is not intact, and the torn tail is cut off as usual.
#[test]
fn a_frame_forged_inside_a_payload_does_not_turn_a_torn_tail_into_corruption() {
    use paxlock_storage::record::encode_frame;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path(), FileStoreOptions::default()).expect("open");
    append_all(&store, &(0..3).map(payload).collect::<Vec<_>>());
    // Forged under guessed salts, claiming a group far in the future.
    let mut forged = Vec::new();
    for salt in [0, 1, u64::MAX] {
        let record = RecordRef {
            kind: 1,
            payload: b"forged",
        };
        encode_frame(&mut forged, salt, Lsn(1 << 40), Lsn(1 << 40), record);
    }
    append_all(&store, &[forged]);
    drop(store);
    let last = segments(tmp.path()).pop().expect("segment");
    let frames = frame_offsets(&last);
    // The write of the record holding the forgery was torn.
    flip_bit(&last, frames[3], 1);
    let (_, recovered) = open(tmp.path(), FileStoreOptions::default())
        .unwrap_or_else(|e| panic!("a forged frame made a torn tail fatal: {e}"));
    assert_eq!(
        recovered.torn_tail.map(|t| t.offset_bytes),
        Some(frames[3] as u64)
    );
    assert_eq!(recovered.records.len(), 3);
}

#[test]
fn damage_followed_by_a_later_group_is_corruption() {
    for (region, field_offset) in FRAME_REGIONS {
        let (tmp, frames) = populated_in_groups(&[4, 2]);
        let last = segments(tmp.path()).pop().expect("segment");
        // The first group's second frame; the second group proves the first
        // was acknowledged.
        flip_bit(&last, frames[4] + field_offset, 6);
        eprintln!("region {region}");
        assert_refused_unchanged(tmp.path(), &last, Some(frames[4] as u64));
    }
}

#[test]
fn bit_flip_in_an_earlier_segment_is_corruption() {
    for (region, field_offset) in FRAME_REGIONS {
        for which in ["first", "last"] {
            let (tmp, _) = populated(12);
            let first = segments(tmp.path()).remove(0);
            let offsets = frame_offsets(&first);
            let frame = if which == "first" {
                offsets[0]
            } else {
                *offsets.last().expect("frame")
            };
            flip_bit(&first, frame + field_offset, 1);
            eprintln!("region {region}, {which} record");
            assert_refused_unchanged(tmp.path(), &first, Some(frame as u64));
        }
    }
}

#[test]
fn bit_flip_in_a_segment_header_is_corruption() {
    for offset in [0usize, 8, 16, 24, 28] {
        let (tmp, _) = populated(12);
        let last = segments(tmp.path()).pop().expect("segment");
        flip_bit(&last, offset, 0);
        assert_refused_unchanged(tmp.path(), &last, Some(0));
    }
}

#[test]
fn missing_middle_segment_is_corruption() {
    let (tmp, _) = populated(30);
    let all = segments(tmp.path());
    assert!(all.len() >= 3);
    fs::remove_file(&all[1]).expect("remove");
    let before = dir_contents(tmp.path());
    let err = open(tmp.path(), small_segments()).err().expect("refused");
    assert!(matches!(err, StorageError::MissingSegment { .. }), "{err}");
    assert!(
        err.to_string().contains("wal-0000000000000002.log"),
        "{err}"
    );
    assert_eq!(dir_contents(tmp.path()), before);
}

#[test]
fn missing_first_segment_without_snapshot_is_corruption() {
    let (tmp, _) = populated(30);
    let all = segments(tmp.path());
    fs::remove_file(&all[0]).expect("remove");
    assert_refused_unchanged(tmp.path(), &all[1], Some(16));
}

#[test]
fn segments_roll_at_the_size_limit_with_sequential_names() {
    let (tmp, payloads) = populated(30);
    let names: Vec<String> = segments(tmp.path())
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert!(names.len() > 3);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(name, &format!("wal-{:016}.log", i + 1));
    }
    for path in segments(tmp.path()) {
        let len = fs::metadata(&path).expect("meta").len();
        assert!(len <= 256, "{} is {len} bytes", path.display());
    }
    let (_, recovered) = open(tmp.path(), small_segments()).expect("open");
    assert_eq!(recovered.records.len(), payloads.len());
}

#[test]
fn batch_larger_than_a_segment_spans_segments_and_recovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path(), small_segments()).expect("open");
    let payload = [9u8; 100];
    let batch = [RecordRef {
        kind: 4,
        payload: &payload,
    }; 10];
    assert_eq!(store.append_batch(&batch).unwrap().wait().unwrap(), Lsn(10));
    drop(store);
    assert!(segments(tmp.path()).len() >= 5);
    let (_, recovered) = open(tmp.path(), small_segments()).expect("open");
    assert_eq!(recovered.records.len(), 10);
}

#[test]
fn segments_wholly_below_the_snapshot_are_deleted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path(), small_segments()).expect("open");
    append_all(&store, &(0..30).map(payload).collect::<Vec<_>>());
    let before = segments(tmp.path());
    store
        .write_snapshot(Lsn(25), 25, b"state")
        .expect("snapshot");
    let after = segments(tmp.path());
    assert!(after.len() < before.len());
    assert_eq!(
        after.last(),
        before.last(),
        "the active segment is never deleted"
    );
    drop(store);
    let (_, recovered) = open(tmp.path(), small_segments()).expect("open");
    assert_eq!(recovered.snapshot.expect("snapshot").covered_lsn, Lsn(25));
    let lsns: Vec<u64> = recovered.records.iter().map(|r| r.lsn.0).collect();
    assert_eq!(lsns, (26..=30).collect::<Vec<_>>());
}

#[test]
fn only_the_two_newest_snapshots_are_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path(), small_segments()).expect("open");
    append_all(&store, &(0..5).map(payload).collect::<Vec<_>>());
    for lsn in 1..=5 {
        store.write_snapshot(Lsn(lsn), lsn, b"s").expect("snapshot");
    }
    let mut snaps: Vec<String> = dir_contents(tmp.path())
        .into_keys()
        .filter(|n| n.ends_with(".snap"))
        .collect();
    snaps.sort();
    assert_eq!(
        snaps,
        vec!["snap-0000000000000004.snap", "snap-0000000000000005.snap"]
    );
}

#[test]
fn the_newest_snapshots_slot_is_read_from_its_header() {
    let tmp = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        paxlock_storage::snapshot::newest_snapshot_slot(tmp.path()).expect("empty dir"),
        None
    );
    let (store, _) = open(tmp.path(), small_segments()).expect("open");
    append_all(&store, &(0..5).map(payload).collect::<Vec<_>>());
    store
        .write_snapshot(Lsn(3), 31, b"older")
        .expect("snapshot");
    store
        .write_snapshot(Lsn(5), 57, b"newest")
        .expect("snapshot");
    assert_eq!(
        paxlock_storage::snapshot::newest_snapshot_slot(tmp.path()).expect("read"),
        Some(57)
    );
    // A file that is not a snapshot under a snapshot's name is refused.
    drop(store);
    fs::write(tmp.path().join("snap-0000000000000009.snap"), [7u8; 64]).expect("write");
    assert!(paxlock_storage::snapshot::newest_snapshot_slot(tmp.path()).is_err());
}

#[test]
fn bit_flip_in_the_snapshot_is_corruption() {
    // magic, covered lsn, covered slot, state length, crc, state
    for offset in [0usize, 8, 16, 24, 32, 45] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (store, _) = open(tmp.path(), small_segments()).expect("open");
        append_all(&store, &(0..10).map(payload).collect::<Vec<_>>());
        store
            .write_snapshot(Lsn(8), 80, b"the serialized lock table")
            .expect("snapshot");
        drop(store);
        let snap = tmp.path().join("snap-0000000000000008.snap");
        flip_bit(&snap, offset, 2);
        assert_refused_unchanged(tmp.path(), &snap, None);
    }
}

#[test]
fn bit_flip_in_the_identity_file_is_refused() {
    for offset in [0usize, 8, 16, 24, 28] {
        let (tmp, _) = populated(3);
        let identity = tmp.path().join("identity");
        flip_bit(&identity, offset, 4);
        assert_refused_unchanged(tmp.path(), &identity, None);
    }
}

#[test]
fn data_without_identity_file_is_refused() {
    let (tmp, _) = populated(3);
    fs::remove_file(tmp.path().join("identity")).expect("remove");
    let err = open(tmp.path(), small_segments()).err().expect("refused");
    assert!(matches!(err, StorageError::IdentityMissing { .. }), "{err}");
}

#[test]
fn corruption_message_names_file_and_offset() {
    let (tmp, _) = populated(12);
    let first = segments(tmp.path()).remove(0);
    let frame = frame_offsets(&first)[1];
    flip_bit(&first, frame + 30, 0);
    let message = open(tmp.path(), small_segments())
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("wal-0000000000000001.log"), "{message}");
    assert!(
        message.contains(&format!("byte offset {frame}")),
        "{message}"
    );
}

#[test]
fn leftover_temp_files_are_removed_on_open() {
    let (tmp, _) = populated(3);
    fs::write(tmp.path().join("snap-0000000000000009.snap.tmp"), b"half").expect("write");
    open(tmp.path(), small_segments()).expect("open");
    assert!(!tmp.path().join("snap-0000000000000009.snap.tmp").exists());
}

#[test]
fn oversized_record_is_rejected_before_queueing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = FileStoreOptions {
        max_record_bytes: 100,
        ..small_segments()
    };
    let (store, _) = open(tmp.path(), options).expect("open");
    let err = store.append(1, &[0; 101]).err().expect("rejected");
    assert!(matches!(err, StorageError::InvalidArgument { .. }), "{err}");
}

#[test]
fn concurrent_appends_share_fsyncs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path(), FileStoreOptions::default()).expect("open");
    let store = Arc::new(store);
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    store.append(1, &[7; 64]).unwrap().wait().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("producer");
    }
    let stats = store.stats();
    assert_eq!(stats.records_written, 800);
    assert!(stats.batches < stats.records_written, "{stats:?}");
}

#[test]
fn snapshot_covering_a_lost_tail_restarts_the_log_after_the_snapshot() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path(), small_segments()).expect("open");
    append_all(&store, &(0..5).map(payload).collect::<Vec<_>>());
    store
        .write_snapshot(Lsn(5), 5, b"state@5")
        .expect("snapshot");
    drop(store);
    // Damage the last record (LSN 5): recovery cuts it as a torn tail, but the
    // snapshot already covers it, so the log must go on at LSN 6.
    let last = segments(tmp.path()).pop().expect("segment");
    let frame = *frame_offsets(&last).last().expect("frame");
    flip_bit(&last, frame + 26, 0);
    let (store, recovered) = open(tmp.path(), small_segments()).expect("open");
    assert!(recovered.torn_tail.is_some());
    assert_eq!(store.durable_lsn(), Lsn(5));
    assert_eq!(store.append(1, b"six").unwrap().wait().unwrap(), Lsn(6));
    drop(store);
    let (_, again) = open(tmp.path(), small_segments()).expect("reopen");
    let lsns: Vec<u64> = again.records.iter().map(|r| r.lsn.0).collect();
    assert_eq!(lsns, vec![6]);
}

#[test]
fn a_directory_in_use_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_first, _) = open(tmp.path(), small_segments()).expect("open");
    let err = open(tmp.path(), small_segments())
        .err()
        .expect("second open refused");
    assert!(matches!(err, StorageError::DirectoryLocked { .. }), "{err}");
}

#[test]
fn a_full_queue_blocks_producers_instead_of_failing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = FileStoreOptions {
        queue_capacity_requests: 1,
        max_group_commit_requests: 2,
        ..FileStoreOptions::default()
    };
    let (store, _) = open(tmp.path(), options).expect("open");
    let store = Arc::new(store);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for _ in 0..20 {
                    store.append(1, b"pressure").unwrap().wait().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("producer");
    }
    assert_eq!(store.stats().records_written, 160);
}

#[test]
fn a_failed_write_poisons_the_store_until_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(tmp.path(), small_segments()).expect("open");
    // Make the next segment roll fail: its temp name is taken by a directory.
    let blocker = tmp.path().join("wal-0000000000000002.log.tmp");
    fs::create_dir(&blocker).expect("mkdir");
    let mut acked = 0u64;
    let failure = loop {
        match store.append(1, &[1; 60]).unwrap().wait() {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 100, "the roll never happened");
    };
    assert!(
        matches!(failure, StorageError::WriterFailed { .. }),
        "{failure}"
    );
    let later = store.append(1, b"after failure").err().expect("refused");
    assert!(
        matches!(later, StorageError::WriterFailed { .. }),
        "{later}"
    );
    drop(store);

    fs::remove_dir(&blocker).expect("rmdir");
    let (_, recovered) = open(tmp.path(), small_segments()).expect("restart recovers");
    assert!(recovered.records.len() as u64 >= acked);
}

/// The data directory and every file in it are the node user's alone: a
/// fresh directory is made 0700 with files 0600, and a directory an older
/// release (or an operator) left readable by others is made private when
/// the store opens it.
#[test]
fn the_data_directory_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let tmp = tempfile::tempdir().expect("tempdir");
    let fresh = tmp.path().join("fresh");
    let (store, _) = open(&fresh, small_segments()).expect("open");
    append_all(&store, &[payload(1), payload(2)]);
    drop(store);
    assert_eq!(mode(&fresh), 0o700);
    let files: Vec<_> = fs::read_dir(&fresh)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty());
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }

    let (old, _) = populated(3);
    fs::set_permissions(old.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (store, _) = open(old.path(), small_segments()).expect("open");
    drop(store);
    assert_eq!(mode(old.path()), 0o700);
}
