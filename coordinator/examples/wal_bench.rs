//! WAL group-commit benchmark: 64-byte and 1 KiB records from 1, 8 and 64
//! producer threads, each appending and waiting for durability in a loop.
//!
//! Run: `cargo run --release --example wal_bench -- [seconds_per_case] [dir]`
//! (defaults: 3 s, a temp dir under $TMPDIR; use a dir on the disk you care about).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test and bench scaffolding: a failure should stop the run loudly

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxlock_coordinator::storage::{FileStore, FileStoreOptions, Identity, Storage};

/// Bound on latency samples kept per producer, so memory stays fixed.
const MAX_SAMPLES_PER_PRODUCER: usize = 2_000_000;

fn percentile_us(sorted: &[u64], pct: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * pct / 100.0).round() as usize;
    sorted[index]
}

fn run_case(base: &std::path::Path, record_bytes: usize, producers: usize, duration: Duration) {
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let identity = Identity {
        cluster_id: 1,
        node_id: 1,
    };
    let (store, _) = FileStore::open(
        &PathBuf::from(dir.path()),
        identity,
        FileStoreOptions::default(),
    )
    .expect("open store");
    let store = Arc::new(store);
    let started = Instant::now();
    let deadline = started + duration;
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let payload = vec![0xabu8; record_bytes];
                let mut latencies_us = Vec::new();
                while Instant::now() < deadline && latencies_us.len() < MAX_SAMPLES_PER_PRODUCER {
                    let t0 = Instant::now();
                    store
                        .append(1, &payload)
                        .expect("append")
                        .wait()
                        .expect("durable");
                    latencies_us.push(t0.elapsed().as_micros() as u64);
                }
                latencies_us
            })
        })
        .collect();
    let mut latencies_us: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("producer"))
        .collect();
    let elapsed_s = started.elapsed().as_secs_f64();
    let stats = store.stats();
    latencies_us.sort_unstable();
    println!(
        "{record_bytes:>5} B x {producers:>2} producers: {:>9.0} records/s {:>7.0} fsyncs/s {:>6.1} records/fsync  p50 {:>6} us  p99 {:>6} us  ({} MiB/s)",
        stats.records_written as f64 / elapsed_s,
        stats.fsyncs as f64 / elapsed_s,
        stats.records_written as f64 / stats.batches.max(1) as f64,
        percentile_us(&latencies_us, 50.0),
        percentile_us(&latencies_us, 99.0),
        (stats.bytes_written as f64 / elapsed_s / (1024.0 * 1024.0)).round(),
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let base = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    println!("dir {} , {seconds} s per case", base.display());
    for record_bytes in [64usize, 1024] {
        for producers in [1usize, 8, 64] {
            run_case(
                &base,
                record_bytes,
                producers,
                Duration::from_secs_f64(seconds),
            );
        }
    }
}
