//! The workloads: lock loops (uncontended, contended), election handoff
//! and leader failover.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::cluster::LocalCluster;
use super::driver::{Candidate, Conn, Endpoint, Take, Watcher};
use super::probe::{Probe, Reading};
use super::stats::{CpuTimes, Latency, Samples};
use super::BenchResult;

/// Timing of one run: samples count only from `warm_end` to `end`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Start of measurement.
    pub warm_end: Instant,
    /// End of the run.
    pub end: Instant,
}

impl Window {
    /// A window starting now.
    pub fn new(warmup: Duration, duration: Duration) -> Window {
        let now = Instant::now();
        Window {
            warm_end: now + warmup,
            end: now + warmup + duration,
        }
    }

    /// The measured time.
    pub fn duration(&self) -> Duration {
        self.end - self.warm_end
    }
}

/// Prints a progress line every second until `stop` is set.
fn spawn_progress(
    label: String,
    window: Window,
    cycles: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let c = cycles.load(Ordering::Relaxed);
            let phase = if Instant::now() < window.warm_end {
                "warm-up"
            } else {
                "measure"
            };
            eprintln!(
                "  [{label}] {:>5.1}s {phase} cycles={c} ({}/s) errors={}",
                start.elapsed().as_secs_f64(),
                c - last,
                errors.load(Ordering::Relaxed)
            );
            last = c;
        }
    })
}

/// Connects `n` clients.
pub async fn connect_all(endpoint: &Endpoint, n: usize) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(
            Conn::connect(endpoint, i)
                .await
                .with_context(|| format!("connecting client {i}"))?,
        );
    }
    Ok(conns)
}

async fn close_all(conns: Vec<Conn>) {
    let closes: Vec<_> = conns.into_iter().map(|c| tokio::spawn(c.close())).collect();
    for c in closes {
        let _ = c.await;
    }
}

/// What the lock loops acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A lock of its own per client.
    Uncontended,
    /// One lock.
    Contended,
    /// One semaphore of this many permits.
    Semaphore(u32),
    /// One read/write lock, this percent of acquires for reading.
    ReadWrite(u32),
}

impl Shape {
    fn workload(self) -> &'static str {
        match self {
            Shape::Uncontended => "uncontended",
            Shape::Contended => "contended",
            Shape::Semaphore(_) => "semaphore",
            Shape::ReadWrite(_) => "rwlock",
        }
    }

    /// The name client `i` acquires.
    fn name(self, run_id: u64, i: usize) -> String {
        match self {
            Shape::Uncontended => format!("bench-{run_id}-{i}"),
            _ => format!("bench-{run_id}-shared"),
        }
    }

    /// What cycle `n` of client `i` takes: readers and writers spread
    /// evenly over the cycles (a fixed pattern, the same for every
    /// target).
    fn take(self, i: usize, n: u64) -> Take {
        match self {
            Shape::Uncontended | Shape::Contended => Take::Lock,
            Shape::Semaphore(permits) => Take::Permit(permits),
            Shape::ReadWrite(read_percent) => {
                let slot = (n.wrapping_mul(37).wrapping_add(i as u64 * 11)) % 100;
                if slot < u64::from(read_percent) {
                    Take::Read
                } else {
                    Take::Write
                }
            }
        }
    }
}

/// The lock loops: `uncontended` (own lock per client), `contended` (one
/// lock), `semaphore` (one semaphore) or `rwlock` (one read/write lock).
/// With a `probe`, the result also has the servers' mean sync and commit
/// durations over the measured window.
pub async fn lock_loop(
    endpoint: &Endpoint,
    clients: usize,
    shape: Shape,
    warmup: Duration,
    duration: Duration,
    probe: Option<Probe>,
    run_id: u64,
) -> anyhow::Result<BenchResult> {
    let workload = shape.workload();
    let target = endpoint.target().name();
    let conns = connect_all(endpoint, clients).await?;
    let window = Window::new(warmup, duration);
    let cycles = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = spawn_progress(
        format!("{target} {workload} clients={clients}"),
        window,
        cycles.clone(),
        errors.clone(),
        stop.clone(),
    );
    let server_window = spawn_server_window(window, probe);
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let name = shape.name(run_id, i);
        let cycles = cycles.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut acq = Samples::default();
            let mut rel = Samples::default();
            let mut writes = Samples::default();
            let mut logged = 0;
            for n in 0.. {
                let t0 = Instant::now();
                if t0 >= window.end {
                    break;
                }
                let limit = (window.end - t0).max(Duration::from_millis(100));
                let measured = t0 >= window.warm_end;
                let take = shape.take(i, n);
                match conn.take(&name, take, limit).await {
                    Ok(held) => {
                        let t1 = Instant::now();
                        let released = conn.release(held).await;
                        let t2 = Instant::now();
                        if measured && t1 <= window.end {
                            acq.push(t1 - t0);
                            if take == Take::Write {
                                writes.push(t1 - t0);
                            }
                            match released {
                                Ok(()) => rel.push(t2 - t1),
                                Err(_) => {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        cycles.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if measured && Instant::now() < window.end {
                            errors.fetch_add(1, Ordering::Relaxed);
                            if logged < 3 {
                                logged += 1;
                                eprintln!("  client {i}: acquire failed: {e:#}");
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (conn, acq, rel, writes)
        }));
    }
    let mut acq = Samples::default();
    let mut rel = Samples::default();
    let mut writes = Samples::default();
    let mut conns = Vec::new();
    for t in tasks {
        let (conn, a, r, w) = t.await?;
        acq.extend(a);
        rel.extend(r);
        writes.extend(w);
        conns.push(conn);
    }
    stop.store(true, Ordering::Relaxed);
    let (cpu, server) = server_window.await.unwrap_or((f64::NAN, Vec::new()));
    progress.abort();
    close_all(conns).await;
    acq.sort();
    rel.sort();
    let n = acq.0.len() as f64;
    let mut figures = vec![
        ("cycles_per_s", n / duration.as_secs_f64()),
        ("acquire_p50_ms", acq.quantile_us(0.5) / 1000.0),
        ("acquire_p99_ms", acq.quantile_us(0.99) / 1000.0),
        ("acquire_max_ms", acq.max_us() / 1000.0),
        ("release_p50_ms", rel.quantile_us(0.5) / 1000.0),
        ("release_p99_ms", rel.quantile_us(0.99) / 1000.0),
        ("errors", errors.load(Ordering::Relaxed) as f64),
        ("cpu_busy_pct", cpu),
    ];
    if let Shape::ReadWrite(_) = shape {
        writes.sort();
        figures.push((
            "writes_per_s",
            writes.0.len() as f64 / duration.as_secs_f64(),
        ));
        figures.push(("write_acquire_p99_ms", writes.quantile_us(0.99) / 1000.0));
    }
    figures.extend(server);
    Ok(BenchResult {
        timeline: None,
        target,
        workload: workload.into(),
        clients,
        figures,
        latency: Some(Latency {
            what: "acquire",
            samples: acq,
        }),
    })
}

/// Measures the host's CPU busy % over the measured `window` and, with a
/// `probe`, the servers' figures over it.
fn spawn_server_window(
    window: Window,
    probe: Option<Probe>,
) -> tokio::task::JoinHandle<(f64, Vec<(&'static str, f64)>)> {
    tokio::spawn(async move {
        tokio::time::sleep_until(window.warm_end.into()).await;
        let cpu = CpuTimes::now();
        let before = read_probe(probe.as_ref()).await;
        tokio::time::sleep_until(window.end.into()).await;
        let busy = cpu.busy_pct_until(&CpuTimes::now());
        let after = read_probe(probe.as_ref()).await;
        let server = match (probe, before, after) {
            (Some(probe), Some(before), Some(after)) => probe.figures(&before, &after),
            _ => Vec::new(),
        };
        (busy, server)
    })
}

/// A probe reading, or `None` (said on stderr) if a member did not answer.
async fn read_probe(probe: Option<&Probe>) -> Option<Reading> {
    match probe?.read().await {
        Ok(reading) => Some(reading),
        Err(e) => {
            eprintln!("  server figures left out: {e:#}");
            None
        }
    }
}

/// How an `election` run is shaped.
#[derive(Debug, Clone, Copy)]
pub struct ElectionShape {
    /// Candidates campaigning.
    pub candidates: usize,
    /// Watchers watching.
    pub watchers: usize,
    /// Watchers sharing one connection (and session).
    pub watchers_per_connection: usize,
    /// How long each leader leads before it resigns.
    pub hold: Duration,
}

/// `election` (and `watchers`, with many watchers and a `hold`):
/// `candidates` campaign on one election, each leader leads for `hold`,
/// resigns and campaigns again; `watchers` watch it. Measures resign →
/// every watcher has seen a later term (Paxlock: `Elected` events; etcd:
/// Observe, where a leader key's create revision plays the term;
/// ZooKeeper: a children watch on the latch folder, where the first node's
/// sequence number does).
pub async fn election(
    endpoint: &Endpoint,
    workload: &'static str,
    shape: ElectionShape,
    window: (Duration, Duration),
    probe: Option<Probe>,
    run_id: u64,
) -> anyhow::Result<BenchResult> {
    let ElectionShape {
        candidates,
        watchers,
        watchers_per_connection,
        hold,
    } = shape;
    let target = endpoint.target().name();
    let name = format!("bench-election-{run_id}");
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64, Instant)>();
    let per_connection = watchers_per_connection.max(1);
    let mut started = Vec::new();
    for group in 0..watchers.div_ceil(per_connection) {
        let count = per_connection.min(watchers - group * per_connection);
        let watchers = Watcher::connect_group(endpoint, group, count, &name)
            .await
            .with_context(|| format!("starting watcher group {group}"))?;
        started.extend(watchers);
    }
    // The window starts once every watcher is there: 10,000 take a while.
    let window = Window::new(window.0, window.1);
    let mut watcher_tasks = Vec::new();
    for (w, mut watcher) in started.into_iter().enumerate() {
        let tx = seen_tx.clone();
        watcher_tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    term = watcher.next_leader() => match term {
                        Ok(term) => {
                            let _ = tx.send((w, term, Instant::now()));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    _ = tokio::time::sleep_until(window.end.into()) => break,
                }
            }
            watcher
        }));
    }
    drop(seen_tx);
    let cycles = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = spawn_progress(
        format!("{target} {workload} candidates={candidates} watchers={watchers}"),
        window,
        cycles.clone(),
        errors.clone(),
        stop.clone(),
    );
    let server_window = spawn_server_window(window, probe);
    let mut tasks = Vec::new();
    for c in 0..candidates {
        let mut candidate = Candidate::connect(endpoint, c, &name)
            .await
            .with_context(|| format!("connecting candidate {c}"))?;
        let name = name.clone();
        let cycles = cycles.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut resigns = Vec::new();
            let mut resign_lat = Samples::default();
            let value = format!("candidate-{c}");
            while Instant::now() < window.end {
                match candidate.cycle(&name, &value, hold, window.end).await {
                    Ok(None) => break,
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(Some(cycle)) => {
                        let t1 = cycle.elected_at;
                        if t1 >= window.warm_end && t1 < window.end {
                            match cycle.resigned {
                                Ok(t2) => {
                                    resign_lat.push(t2 - t1);
                                    resigns.push((cycle.term, t1));
                                }
                                Err(_) => {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        cycles.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            candidate.close().await;
            (resigns, resign_lat)
        }));
    }
    let mut resigns = Vec::new();
    let mut resign_lat = Samples::default();
    for t in tasks {
        let (r, l) = t.await?;
        resigns.extend(r);
        resign_lat.extend(l);
    }
    stop.store(true, Ordering::Relaxed);
    progress.abort();
    let (cpu, server) = server_window.await.unwrap_or((f64::NAN, Vec::new()));
    for t in watcher_tasks {
        if let Ok(w) = t.await {
            w.close().await;
        }
    }
    let mut seen: Vec<Vec<(u64, Instant)>> = vec![Vec::new(); watchers];
    while let Some((w, term, at)) = seen_rx.recv().await {
        seen[w].push((term, at));
    }
    let (mut handoff, incomplete) = handoffs(&resigns, &seen);
    handoff.sort();
    resign_lat.sort();
    let mut figures = vec![
        (
            "handoffs_per_s",
            handoff.0.len() as f64 / window.duration().as_secs_f64(),
        ),
        ("handoff_p50_ms", handoff.quantile_us(0.5) / 1000.0),
        ("handoff_p99_ms", handoff.quantile_us(0.99) / 1000.0),
        ("handoff_max_ms", handoff.max_us() / 1000.0),
        ("resign_p50_ms", resign_lat.quantile_us(0.5) / 1000.0),
        ("resign_p99_ms", resign_lat.quantile_us(0.99) / 1000.0),
        ("watchers", watchers as f64),
        ("incomplete", incomplete as f64),
        ("errors", errors.load(Ordering::Relaxed) as f64),
        ("cpu_busy_pct", cpu),
    ];
    figures.extend(server);
    let clients = if workload == "election" {
        candidates
    } else {
        watchers
    };
    Ok(BenchResult {
        timeline: None,
        target,
        workload: workload.into(),
        clients,
        figures,
        latency: Some(Latency {
            what: "handoff",
            samples: handoff,
        }),
    })
}

/// For each resign `(term, at)`: the time until the last watcher saw a
/// later term, unsorted; and how many resigns some watcher never saw
/// followed by a new leader.
fn handoffs(resigns: &[(u64, Instant)], seen: &[Vec<(u64, Instant)>]) -> (Samples, u64) {
    let mut handoff = Samples::default();
    let mut incomplete = 0u64;
    for (term, at) in resigns {
        let mut worst = Duration::ZERO;
        let mut complete = true;
        for events in seen {
            match events.iter().find(|(t, when)| t > term && when >= at) {
                Some((_, when)) => worst = worst.max(*when - *at),
                None => complete = false,
            }
        }
        if complete {
            handoff.push(worst);
        } else {
            incomplete += 1;
        }
    }
    (handoff, incomplete)
}

/// `failover`: `clients` run uncontended lock loops; `rounds` times the
/// leader is SIGKILLed and the time until an acquire issued after the kill
/// succeeds (first client, and all clients) is measured. The killed member
/// is restarted between rounds.
pub async fn failover(
    endpoint: &Endpoint,
    cluster: &mut LocalCluster,
    clients: usize,
    rounds: usize,
    warmup: Duration,
    run_id: u64,
) -> anyhow::Result<BenchResult> {
    let target = endpoint.target().name();
    let conns = connect_all(endpoint, clients).await?;
    let loops = LockLoops::start(conns, &format!("bench-{run_id}-failover"));
    let (base, latest) = (loops.base, loops.latest.clone());
    let cpu0 = CpuTimes::now();
    let mut kills = Vec::new();
    for round in 0..rounds {
        tokio::time::sleep(warmup.max(Duration::from_secs(1))).await;
        let leader = match cluster.wait_healthy(Duration::from_secs(30)).await {
            Ok(leader) => leader,
            Err(e) => {
                eprintln!(
                    "  [{target} failover] round {}: {e:#}; killing the leader anyway",
                    round + 1
                );
                cluster.wait_healthy_leader_only().await?
            }
        };
        let kill_at = base.elapsed().as_nanos() as u64;
        cluster.kill(leader)?;
        eprintln!(
            "  [{target} failover] round {}: SIGKILLed leader member {leader}",
            round + 1
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let recovered = || {
            latest
                .iter()
                .filter(|l| l.load(Ordering::Relaxed) > kill_at)
                .count()
        };
        while recovered() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let first_ms = (base.elapsed().as_nanos() as u64 - kill_at) / 1_000_000;
        // Let every client recover before the member comes back.
        while recovered() < clients && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "  [{target} failover] round {}: first acquire after ~{first_ms} ms, {}/{clients} clients after ~{} ms",
            round + 1,
            recovered(),
            (base.elapsed().as_nanos() as u64 - kill_at) / 1_000_000
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster
            .restart(leader)
            .await
            .context("restarting the killed member")?;
        kills.push(kill_at);
    }
    let cpu = cpu0.busy_pct_until(&CpuTimes::now());
    let (per_client, errors) = loops.stop().await?;
    let mut first = Samples::default();
    let mut all = Samples::default();
    let mut per_round = Vec::new();
    for &k in &kills {
        let recovered: Vec<Option<u64>> = per_client
            .iter()
            .map(|ok| ok.iter().filter(|(s, _)| *s > k).map(|(_, e)| e - k).min())
            .collect();
        let f = recovered.iter().flatten().min().copied();
        per_round.push(f.map_or(f64::NAN, |f| f as f64 / 1e6));
        if let Some(f) = f {
            first.push(Duration::from_nanos(f));
        }
        if recovered.iter().all(Option::is_some) {
            if let Some(a) = recovered.iter().flatten().max() {
                all.push(Duration::from_nanos(*a));
            }
        }
    }
    let mut figures = Vec::new();
    for (name, v) in ROUND_NAMES.iter().zip(&per_round) {
        figures.push((*name, *v));
    }
    figures.push(("rounds_recovered", first.0.len() as f64));
    let all_mean = all.0.iter().sum::<u64>() as f64 / all.0.len().max(1) as f64 / 1e6;
    let first_mean = first.0.iter().sum::<u64>() as f64 / first.0.len().max(1) as f64 / 1e6;
    first.sort();
    figures.push(("failover_mean_ms", first_mean));
    figures.push(("failover_max_ms", first.max_us() / 1000.0));
    figures.push(("all_clients_mean_ms", all_mean));
    figures.push(("errors", errors as f64));
    figures.push(("cpu_busy_pct", cpu));
    // A handful of recoveries per run is no distribution to plot.
    Ok(BenchResult {
        timeline: None,
        target,
        workload: "failover".into(),
        clients,
        figures,
        latency: None,
    })
}

const ROUND_NAMES: [&str; 5] = [
    "failover_r1_ms",
    "failover_r2_ms",
    "failover_r3_ms",
    "failover_r4_ms",
    "failover_r5_ms",
];

/// Lock loops of a whole run: every client acquires and releases its own
/// lock over and over, recording when each successful acquire started and
/// ended (ns since `base`).
struct LockLoops {
    base: Instant,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    /// Per client, the start of its latest successful acquire.
    latest: Arc<Vec<AtomicU64>>,
    tasks: Vec<tokio::task::JoinHandle<(Conn, Acquires)>>,
}

/// One client's successful acquires: (start, end) in ns since the base.
type Acquires = Vec<(u64, u64)>;

impl LockLoops {
    /// Starts one loop per connection, client `i` on lock `{prefix}-{i}`.
    fn start(conns: Vec<Conn>, prefix: &str) -> LockLoops {
        let base = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let latest: Arc<Vec<AtomicU64>> =
            Arc::new((0..conns.len()).map(|_| AtomicU64::new(0)).collect());
        let mut tasks = Vec::new();
        for (i, mut conn) in conns.into_iter().enumerate() {
            let name = format!("{prefix}-{i}");
            let stop = stop.clone();
            let errors = errors.clone();
            let latest = latest.clone();
            tasks.push(tokio::spawn(async move {
                // (acquire start, acquire end) since `base`, successes only.
                let mut ok: Vec<(u64, u64)> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t0 = base.elapsed().as_nanos() as u64;
                    match conn.acquire(&name, Duration::from_secs(10)).await {
                        Ok(held) => {
                            let t1 = base.elapsed().as_nanos() as u64;
                            ok.push((t0, t1));
                            latest[i].fetch_max(t0, Ordering::Relaxed);
                            if conn.release(held).await.is_err() {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            let n = errors.fetch_add(1, Ordering::Relaxed);
                            if n.is_multiple_of(2000) {
                                eprintln!("  client {i}: acquire failed: {e:#}");
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                (conn, ok)
            }));
        }
        LockLoops {
            base,
            stop,
            errors,
            latest,
            tasks,
        }
    }

    /// Nanoseconds since `base`.
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Stops the loops and closes the clients; returns each client's
    /// successful acquires and the failures counted.
    async fn stop(self) -> anyhow::Result<(Vec<Acquires>, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut per_client = Vec::new();
        let mut conns = Vec::new();
        for t in self.tasks {
            let (conn, ok) = t.await?;
            per_client.push(ok);
            conns.push(conn);
        }
        close_all(conns).await;
        Ok((per_client, self.errors.load(Ordering::Relaxed)))
    }
}

/// Bytes of each value the `membership` workload stores (under the 64 KiB
/// bound of both systems).
const STATE_VALUE_BYTES: usize = 60_000;

/// `membership`: with `state_mib` MiB of values stored and `clients` lock
/// loops running, replace a follower by a new member (see
/// `replace`), timing each step; compares acquire p99 during the change
/// with the steady p99 before it, and reports the longest time no acquire
/// completed while it ran (a leaderless window shows there).
pub async fn membership(
    endpoint: &Endpoint,
    cluster: &mut LocalCluster,
    clients: usize,
    state_mib: u64,
    warmup: Duration,
    run_id: u64,
) -> anyhow::Result<BenchResult> {
    let target = endpoint.target().name();
    let values = (state_mib * 1024 * 1024).div_ceil(STATE_VALUE_BYTES as u64);
    let filled = Instant::now();
    let state = StateHolder::fill(endpoint, values, run_id).await?;
    eprintln!(
        "  [{target} membership] stored {values} values of {STATE_VALUE_BYTES} bytes in {:.1?}",
        filled.elapsed()
    );
    let conns = connect_all(endpoint, clients).await?;
    let loops = LockLoops::start(conns, &format!("bench-{run_id}-membership"));
    // One unmeasured second, then the steady window (`warmup`, at least
    // 3 s) the change's latencies are compared with.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let steady_from = loops.now();
    tokio::time::sleep(warmup.max(Duration::from_secs(3))).await;
    let change_from = loops.now();
    let replaced = cluster.replace_follower().await;
    let change_to = loops.now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (per_client, errors) = loops.stop().await?;
    state.release().await;
    let times = replaced.context("replacing a follower")?;
    eprintln!(
        "  [{target} membership] replaced member {} by {}: add {:.1?}, promote {:.1?}, remove {:.1?}",
        times.old, times.new, times.add, times.promote, times.remove
    );
    let window = |from: u64, to: u64| {
        let mut samples = Samples::default();
        for &(t0, t1) in per_client.iter().flatten() {
            if t0 >= from && t0 < to {
                samples.push(Duration::from_nanos(t1 - t0));
            }
        }
        samples.sort();
        samples
    };
    let steady = window(steady_from, change_from);
    let change = window(change_from, change_to);
    let (gap_at, max_gap) = longest_gap(&per_client, change_from, change_to);
    let (_, steady_gap) = longest_gap(&per_client, steady_from, change_from);
    let into = Duration::from_nanos(gap_at - change_from);
    let phases = [
        ("starting the new member", times.before_steps),
        ("the addition", times.add),
        ("the promotion", times.promote),
        ("the removal", times.remove),
    ];
    let mut ended = Duration::ZERO;
    let step = phases
        .iter()
        .find(|(_, took)| {
            ended += *took;
            into < ended
        })
        .map_or("the removed member's stop", |(phase, _)| *phase);
    eprintln!(
        "  [{target} membership] longest time without an acquire: {:.1?}, from {into:.1?} into the change (during {step}); before the change: {:.1?}",
        Duration::from_nanos(max_gap),
        Duration::from_nanos(steady_gap)
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let steady_p99 = steady.quantile_us(0.99) / 1000.0;
    let change_p99 = change.quantile_us(0.99) / 1000.0;
    let figures = vec![
        ("state_mib", state_mib as f64),
        ("add_ms", ms(times.add)),
        ("promote_ms", ms(times.promote)),
        ("remove_ms", ms(times.remove)),
        ("replace_ms", ms(times.add + times.promote + times.remove)),
        ("steady_p99_ms", steady_p99),
        ("change_p99_ms", change_p99),
        ("change_p99_ratio", change_p99 / steady_p99),
        ("max_gap_ms", max_gap as f64 / 1e6),
        ("steady_max_gap_ms", steady_gap as f64 / 1e6),
        ("acquires_during", change.0.len() as f64),
        ("errors", errors as f64),
    ];
    Ok(BenchResult {
        timeline: None,
        target,
        workload: "membership".into(),
        clients,
        figures,
        latency: None,
    })
}

/// The longest time between `from` and `to` (the loops' clock) in which no
/// acquire of `per_client` completed, and where it began.
fn longest_gap(per_client: &[Vec<(u64, u64)>], from: u64, to: u64) -> (u64, u64) {
    let mut ends: Vec<u64> = per_client
        .iter()
        .flatten()
        .map(|&(_, t1)| t1)
        .filter(|t1| (from..to).contains(t1))
        .chain([from, to])
        .collect();
    ends.sort_unstable();
    ends.windows(2)
        .map(|w| (w[0], w[1] - w[0]))
        .max_by_key(|(_, gap)| *gap)
        .unwrap_or((from, 0))
}

/// The stored state of a `membership` run, held until the run ends.
enum StateHolder {
    /// Paxlock: locks held with values, by one session.
    Paxlock(paxlock::Client, Vec<paxlock::LockGuard>),
    /// etcd: plain keys, nothing to hold.
    #[cfg(feature = "etcd")]
    Etcd,
}

impl StateHolder {
    /// Stores `values` values of [`STATE_VALUE_BYTES`]: Paxlock locks held
    /// with a value each, etcd keys.
    async fn fill(endpoint: &Endpoint, values: u64, run_id: u64) -> anyhow::Result<StateHolder> {
        let value = vec![b'x'; STATE_VALUE_BYTES];
        match endpoint {
            Endpoint::Paxlock { config, .. } => {
                let config = super::driver::paxlock_config(config, Duration::from_secs(60))?;
                let client = paxlock::Client::connect(config).await?;
                let mut guards = Vec::new();
                for i in 0..values {
                    let name = format!("bench-{run_id}-state-{i}");
                    let guard = client.lock(name).value(value.clone()).acquire().await?;
                    guards.push(guard);
                }
                Ok(StateHolder::Paxlock(client, guards))
            }
            #[cfg(feature = "etcd")]
            Endpoint::Etcd { endpoints, .. } => {
                let mut grpc = super::etcd::Grpc::new(endpoints.clone(), 0);
                for i in 0..values {
                    let key = format!("bench-{run_id}-state-{i}").into_bytes();
                    super::etcd::put(&mut grpc, key, value.clone()).await?;
                }
                Ok(StateHolder::Etcd)
            }
            #[cfg(feature = "zookeeper")]
            Endpoint::ZooKeeper { .. } => {
                anyhow::bail!("the membership workload does not run on ZooKeeper")
            }
        }
    }

    async fn release(self) {
        match self {
            StateHolder::Paxlock(client, _guards) => {
                // Closing the session releases every lock it holds.
                let _ = client.close().await;
            }
            #[cfg(feature = "etcd")]
            StateHolder::Etcd => {}
        }
    }
}
