//! WAL group-commit benchmark: 64-byte and 1 KiB records from 1, 8 and 64
//! producer threads, each appending and waiting for durability in a loop.
//!
//! Run: `cargo run --release --example wal_bench -- [seconds_per_case] [dir]`
//! (defaults: 3 s, a temp dir under $TMPDIR; use a dir on the disk you care about).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxlock_storage::{FileStore, FileStoreOptions, Identity, Storage};

/// Bound on latency samples kept per producer, so memory stays fixed.
const MAX_SAMPLES_PER_PRODUCER: usize = 2_000_000;

fn percentile_us(sorted: &[u64], pct: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * pct / 100.0).round() as usize;
    sorted[index]
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn run_case(
    base: &std::path::Path,
    record_bytes: usize,
    producers: usize,
    duration: Duration,
) -> BenchResult<()> {
    let dir = tempfile::tempdir_in(base)
        .map_err(|e| format!("cannot make a temp dir in {}: {e}", base.display()))?;
    let identity = Identity {
        cluster_id: 1,
        node_id: 1,
    };
    let (store, _) = FileStore::open(
        &PathBuf::from(dir.path()),
        identity,
        FileStoreOptions::default(),
    )?;
    let store = Arc::new(store);
    let started = Instant::now();
    let deadline = started + duration;
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> BenchResult<Vec<u64>> {
                let payload = vec![0xabu8; record_bytes];
                let mut latencies_us = Vec::new();
                while Instant::now() < deadline && latencies_us.len() < MAX_SAMPLES_PER_PRODUCER {
                    let t0 = Instant::now();
                    store.append(1, &payload)?.wait()?;
                    latencies_us.push(t0.elapsed().as_micros() as u64);
                }
                Ok(latencies_us)
            })
        })
        .collect();
    let mut latencies_us: Vec<u64> = Vec::new();
    for thread in threads {
        let samples = thread.join().map_err(|_| "a producer thread panicked")??;
        latencies_us.extend(samples);
    }
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
    Ok(())
}

fn main() -> BenchResult<()> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    if !(seconds.is_finite() && seconds > 0.0 && seconds < 3600.0) {
        return Err(format!("seconds per case must be between 0 and 3600, not {seconds}").into());
    }
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
            )?;
        }
    }
    Ok(())
}
