//! Helpers shared by the integration tests.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and bench scaffolding: a failure should stop the run loudly

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use paxlock_storage::{
    FileStore, FileStoreOptions, Identity, RecordRef, Recovered, Storage, StorageError,
};

pub const ID: Identity = Identity {
    cluster_id: 7,
    node_id: 1,
};

/// Small segments so a handful of records spans several files.
pub fn small_segments() -> FileStoreOptions {
    FileStoreOptions {
        segment_size_limit_bytes: 256,
        ..FileStoreOptions::default()
    }
}

pub fn open(dir: &Path, options: FileStoreOptions) -> Result<(FileStore, Recovered), StorageError> {
    FileStore::open(&dir.to_path_buf(), ID, options)
}

/// Appends each payload (kind 1) and waits until it is durable.
pub fn append_all(store: &FileStore, payloads: &[Vec<u8>]) {
    for p in payloads {
        store.append(1, p).expect("queue").wait().expect("durable");
    }
}

/// Appends `payloads` (kind 1) as one group commit and waits until it is
/// durable.
pub fn append_group(store: &FileStore, payloads: &[Vec<u8>]) {
    let records: Vec<RecordRef<'_>> = payloads
        .iter()
        .map(|p| RecordRef {
            kind: 1,
            payload: p,
        })
        .collect();
    store
        .append_batch(&records)
        .expect("queue")
        .wait()
        .expect("durable");
}

pub fn payload(i: usize) -> Vec<u8> {
    format!("record-{i:04}-{}", "x".repeat(i % 37)).into_bytes()
}

/// Segment paths, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Every file's bytes, to prove a refused open changed nothing.
pub fn dir_contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .expect("list")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).expect("read"),
            )
        })
        .collect()
}

pub fn flip_bit(path: &Path, offset_bytes: usize, bit: u8) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset_bytes] ^= 1 << bit;
    fs::write(path, bytes).expect("write");
}

/// Byte offsets of each record frame in a segment file (after its header),
/// up to the free (zero) space the writer preallocates.
pub fn frame_offsets(path: &Path) -> Vec<usize> {
    frames(path).0
}

/// Where the records of a segment file end (free space may follow).
pub fn records_end(path: &Path) -> u64 {
    frames(path).1 as u64
}

fn frames(path: &Path) -> (Vec<usize>, usize) {
    let bytes = fs::read(path).expect("read");
    let mut offsets = Vec::new();
    let mut at = paxlock_storage::segment::SEGMENT_HEADER_BYTES;
    // A frame header holds a nonzero LSN at bytes 8..16; zeros there are free space.
    while at + 24 <= bytes.len() && bytes[at + 8..at + 16] != [0u8; 8] {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        offsets.push(at);
        at += paxlock_storage::record::frame_len_bytes(len);
    }
    (offsets, at)
}
