//! `soak`: a mixed load for a long time (an hour by default), with the
//! acquire latency and every member's memory reported per interval, to
//! show drift, growth or stalls (at snapshots, say) that short runs hide.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cluster::LocalCluster;
use super::driver::{Conn, Endpoint, Take};
use super::stats::{ProcessUsage, Samples};
use super::{BenchResult, Timeline};

/// Clients in uncontended lock loops (a name each).
const UNCONTENDED: usize = 16;
/// Clients taking turns on one lock.
const CONTENDED: usize = 8;

/// One interval's figures.
#[derive(Debug, Clone, Copy)]
struct Interval {
    /// Minutes since the start, at the interval's end.
    at_min: f64,
    acquires_per_s: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Every member's resident memory together.
    members_rss_mib: f64,
    errors: u64,
}

/// Runs the mixed load (16 uncontended lock loops, 8 clients contending
/// for one lock) for `duration`, printing and recording each `interval`.
pub async fn soak(
    endpoint: &Endpoint,
    cluster: Option<&LocalCluster>,
    duration: Duration,
    interval: Duration,
    run_id: u64,
) -> anyhow::Result<BenchResult> {
    let target = endpoint.target().name();
    let bucket = Arc::new(Mutex::new(Samples::default()));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..UNCONTENDED + CONTENDED {
        let mut conn = Conn::connect(endpoint, i).await?;
        let name = if i < UNCONTENDED {
            format!("bench-{run_id}-soak-{i}")
        } else {
            format!("bench-{run_id}-soak-shared")
        };
        let (bucket, errors, stop) = (bucket.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match conn.take(&name, Take::Lock, Duration::from_secs(10)).await {
                    Ok(held) => {
                        let took = started.elapsed();
                        if let Ok(mut b) = bucket.lock() {
                            b.push(took);
                        }
                        if conn.release(held).await.is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            conn.close().await;
        }));
    }
    let start = Instant::now();
    let mut rows: Vec<Interval> = Vec::new();
    let mut errors_before = 0;
    let mut tick = tokio::time::interval_at((start + interval).into(), interval);
    while start.elapsed() < duration {
        tick.tick().await;
        let mut samples = bucket
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        samples.sort();
        let errors_now = errors.load(Ordering::Relaxed);
        let row = Interval {
            at_min: start.elapsed().as_secs_f64() / 60.0,
            acquires_per_s: samples.0.len() as f64 / interval.as_secs_f64(),
            p99_ms: samples.quantile_us(0.99) / 1000.0,
            max_ms: samples.max_us() / 1000.0,
            members_rss_mib: cluster.map_or(f64::NAN, members_rss_mib),
            errors: errors_now - errors_before,
        };
        errors_before = errors_now;
        eprintln!(
            "  [{target} soak] {:6.1} min: {:7.0} acquires/s, p99 {:7.2} ms, max {:7.1} ms, \
             members {:6.0} MiB, errors {}",
            row.at_min, row.acquires_per_s, row.p99_ms, row.max_ms, row.members_rss_mib, row.errors
        );
        rows.push(row);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Ok(BenchResult {
        target,
        workload: "soak".into(),
        clients: UNCONTENDED + CONTENDED,
        figures: figures(&rows, duration),
        latency: None,
        timeline: Some(Timeline {
            p99_ms: rows.iter().map(|r| (r.at_min, r.p99_ms)).collect(),
            rss_mib: rows.iter().map(|r| (r.at_min, r.members_rss_mib)).collect(),
        }),
    })
}

/// Every member's resident memory together, in MiB.
fn members_rss_mib(cluster: &LocalCluster) -> f64 {
    let bytes: u64 = (cluster.processes().into_iter())
        .filter_map(|(_, pid)| ProcessUsage::read(pid))
        .map(|u| u.rss_bytes)
        .sum();
    bytes as f64 / (1024.0 * 1024.0)
}

/// The run's summary: throughput, the spread of the intervals' p99, the
/// drift from the first tenth of the run to the last, the worst single
/// acquire, and memory growth.
fn figures(rows: &[Interval], duration: Duration) -> Vec<(&'static str, f64)> {
    let mut p99: Vec<f64> = rows
        .iter()
        .map(|r| r.p99_ms)
        .filter(|v| v.is_finite())
        .collect();
    p99.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        p99.get(((p99.len() as f64 - 1.0) * q).round().max(0.0) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let tenth = (rows.len() / 10).max(1);
    let mean = |rows: &[Interval], f: fn(&Interval) -> f64| {
        rows.iter().map(f).sum::<f64>() / rows.len().max(1) as f64
    };
    let (first, last) = (
        &rows[..tenth.min(rows.len())],
        &rows[rows.len().saturating_sub(tenth)..],
    );
    let total: f64 = rows.iter().map(|r| r.acquires_per_s).sum::<f64>() / rows.len().max(1) as f64;
    vec![
        ("minutes", duration.as_secs_f64() / 60.0),
        ("acquires_per_s", total),
        ("interval_p99_median_ms", pick(0.5)),
        ("interval_p99_max_ms", pick(1.0)),
        (
            "p99_drift",
            mean(last, |r| r.p99_ms) / mean(first, |r| r.p99_ms),
        ),
        (
            "acquire_max_ms",
            rows.iter().map(|r| r.max_ms).fold(0.0, f64::max),
        ),
        ("members_rss_first_mib", mean(first, |r| r.members_rss_mib)),
        ("members_rss_last_mib", mean(last, |r| r.members_rss_mib)),
        ("errors", rows.iter().map(|r| r.errors).sum::<u64>() as f64),
    ]
}
