//! The scale workloads: how many sessions one cluster keeps alive
//! (`sessions`) and how much state it holds (`state`), with the members'
//! CPU and memory read from `/proc` around the measured window.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::task::JoinSet;

use super::cluster::LocalCluster;
use super::driver::{paxlock_config, Endpoint};
use super::fan_out::{fan_out, IN_FLIGHT};
use super::stats::{Latency, ProcessUsage, Samples};
use super::workload::Window;
use super::BenchResult;

/// Blocking acquires one Paxlock client runs at once at most (its own
/// bound is 64).
const PER_CLIENT: usize = 48;

/// What keepalives (or any spread-out requests) measured.
#[derive(Debug, Default)]
struct Renewals {
    /// Latencies of those sent inside the measured window.
    latency: Samples,
    /// Sent inside the measured window.
    sent: u64,
    /// Failed, of those.
    failed: u64,
}

/// Calls `renew(j)` for each of `n` sessions once per `period`, spread
/// evenly over it (session `j` at `j/n` of each period), without waiting
/// for one answer before the next is due, until `window` ends.
async fn renew_spread<F, Fut>(n: usize, period: Duration, window: Window, renew: F) -> Renewals
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let mut out = Renewals::default();
    if n == 0 {
        return out;
    }
    let start = Instant::now();
    let mut set = JoinSet::new();
    let tally = |out: &mut Renewals, (sent_at, took, ok): (Instant, Duration, bool)| {
        if sent_at >= window.warm_end && sent_at < window.end {
            out.sent += 1;
            out.latency.push(took);
            if !ok {
                out.failed += 1;
            }
        }
    };
    let mut round = 0u32;
    'rounds: loop {
        for j in 0..n {
            let at = start + period * round + period.mul_f64(j as f64 / n as f64);
            if at >= window.end {
                break 'rounds;
            }
            tokio::time::sleep_until(at.into()).await;
            let call = renew(j);
            set.spawn(async move {
                let sent_at = Instant::now();
                let ok = call.await;
                (sent_at, sent_at.elapsed(), ok)
            });
            while let Some(Ok(done)) = set.try_join_next() {
                tally(&mut out, done);
            }
        }
        round += 1;
    }
    while let Some(Ok(done)) = set.join_next().await {
        tally(&mut out, done);
    }
    out
}

/// Sessions, each holding one lock (as a service instance holds its lock
/// or its candidacy), spread over a few connections.
enum SessionPool {
    /// Paxlock: each lock on a session of its own (`ttl` + manual
    /// renewal: `renew` is the session's keepalive), `connections` clients
    /// carrying them.
    Paxlock {
        clients: Vec<paxlock::Client>,
        groups: Vec<Vec<Arc<paxlock::LockGuard>>>,
    },
    /// etcd: a lease per session with a key attached (as etcd's
    /// concurrency package holds a lock), kept alive on one LeaseKeepAlive
    /// stream per connection, as etcd's client does.
    #[cfg(feature = "etcd")]
    Etcd {
        groups: Vec<super::etcd::LeaseGroup>,
    },
}

impl SessionPool {
    /// Opens `count` sessions of `ttl` over `connections` connections.
    async fn open(
        endpoint: &Endpoint,
        count: usize,
        connections: usize,
        ttl: Duration,
        run_id: u64,
    ) -> anyhow::Result<SessionPool> {
        let connections = connections.clamp(1, count.max(1));
        match endpoint {
            Endpoint::Paxlock { config, .. } => {
                let config = paxlock_config(config, Duration::from_secs(60))?;
                let mut clients = Vec::new();
                for _ in 0..connections {
                    clients.push(paxlock::Client::connect(config.clone()).await?);
                }
                let shared = clients.clone();
                let limit = IN_FLIGHT.min(PER_CLIENT * connections);
                let guards = fan_out(limit, 0..count, move |i| {
                    let client = shared[i % shared.len()].clone();
                    async move {
                        let guard = client
                            .lock(format!("bench-{run_id}-session-{i}"))
                            .ttl(ttl)
                            .manual_renewal()
                            .acquire()
                            .await
                            .with_context(|| format!("opening session {i}"))?;
                        Ok(Arc::new(guard))
                    }
                })
                .await?;
                let mut groups = vec![Vec::new(); connections];
                for (i, guard) in guards.into_iter().enumerate() {
                    groups[i % connections].push(guard);
                }
                Ok(SessionPool::Paxlock { clients, groups })
            }
            #[cfg(feature = "etcd")]
            Endpoint::Etcd { endpoints, .. } => {
                let mut groups = Vec::new();
                for g in 0..connections {
                    let size = count / connections + usize::from(g < count % connections);
                    let name = format!("bench-{run_id}-session-{g}");
                    groups.push(
                        super::etcd::LeaseGroup::open(endpoints, g, size, 1, ttl, &name).await?,
                    );
                }
                Ok(SessionPool::Etcd { groups })
            }
            #[cfg(feature = "zookeeper")]
            Endpoint::ZooKeeper { .. } => {
                bail!("sessions: ZooKeeper gives a session per connection; not measured")
            }
        }
    }

    /// Keeps every session alive, one keepalive per `period` each, until
    /// `window` ends.
    async fn keep_alive(&self, period: Duration, window: Window) -> Renewals {
        let mut tasks = JoinSet::new();
        match self {
            SessionPool::Paxlock { groups, .. } => {
                for group in groups.clone() {
                    tasks.spawn(async move {
                        let n = group.len();
                        renew_spread(n, period, window, move |j| {
                            let guard = group[j].clone();
                            async move { guard.renew().await.is_ok() }
                        })
                        .await
                    });
                }
            }
            #[cfg(feature = "etcd")]
            SessionPool::Etcd { groups } => {
                for group in groups {
                    let group = group.keeper();
                    tasks.spawn(async move {
                        let n = group.lease_count();
                        renew_spread(n, period, window, move |j| group.keep_alive(j)).await
                    });
                }
            }
        }
        let mut all = Renewals::default();
        while let Some(Ok(part)) = tasks.join_next().await {
            all.latency.extend(part.latency);
            all.sent += part.sent;
            all.failed += part.failed;
        }
        all
    }

    /// Ends every session.
    async fn close(self) {
        match self {
            SessionPool::Paxlock { clients, groups } => {
                // The keepalive tasks that shared the guards are over.
                let guards = groups.into_iter().flatten().filter_map(Arc::into_inner);
                let _ = fan_out(IN_FLIGHT, guards, |guard| async move {
                    let _ = guard.release().await;
                    anyhow::Ok(())
                })
                .await;
                for client in clients {
                    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
                }
            }
            #[cfg(feature = "etcd")]
            SessionPool::Etcd { groups } => {
                for group in groups {
                    group.close().await;
                }
            }
        }
    }
}

/// The members' processes and their usage at one moment.
struct UsageReading {
    at: Instant,
    members: Vec<(u64, ProcessUsage)>,
}

impl UsageReading {
    fn now(cluster: &LocalCluster) -> UsageReading {
        UsageReading {
            at: Instant::now(),
            members: cluster
                .processes()
                .into_iter()
                .filter_map(|(id, pid)| Some((id, ProcessUsage::read(pid)?)))
                .collect(),
        }
    }

    fn of(&self, id: u64) -> Option<ProcessUsage> {
        self.members.iter().find(|(m, _)| *m == id).map(|(_, u)| *u)
    }

    /// Every member's resident memory together, in MiB.
    fn total_rss_mib(&self) -> f64 {
        self.members
            .iter()
            .map(|(_, u)| u.rss_bytes as f64)
            .sum::<f64>()
            / MIB
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// The leader's CPU (percent of one core) between two readings and its
/// memory at the second, and every member's memory together.
fn usage_figures(
    leader: Option<u64>,
    before: &UsageReading,
    after: &UsageReading,
) -> Vec<(&'static str, f64)> {
    let mut figures = Vec::new();
    if let Some((b, a)) = leader.and_then(|id| Some((before.of(id)?, after.of(id)?))) {
        let secs = (after.at - before.at).as_secs_f64().max(1e-9);
        figures.push(("leader_cpu_pct", 100.0 * (a.cpu_secs - b.cpu_secs) / secs));
        figures.push(("leader_rss_mib", a.rss_bytes as f64 / MIB));
    }
    figures.push(("members_rss_mib", after.total_rss_mib()));
    figures
}

/// How long a `sessions` run's sessions live without a keepalive: long
/// enough to outlast the opening of 100,000 of them before the first is
/// kept alive. What a keepalive costs does not depend on it: they are
/// sent every `--ttl`/3 all the same.
const POOL_SESSION_TTL: Duration = Duration::from_secs(300);

/// `sessions`: open `count` sessions (each holding a lock) over
/// `connections` connections and keep each alive every `--ttl`/3;
/// measures the keepalives' latency and the leader's CPU and memory
/// meanwhile.
pub async fn sessions(
    endpoint: &Endpoint,
    cluster: Option<&LocalCluster>,
    count: usize,
    connections: usize,
    window: (Duration, Duration),
    run_id: u64,
) -> anyhow::Result<BenchResult> {
    let target = endpoint.target().name();
    let opening = Instant::now();
    let ttl = POOL_SESSION_TTL.max(endpoint.ttl());
    let pool = SessionPool::open(endpoint, count, connections, ttl, run_id).await?;
    let opened = opening.elapsed();
    eprintln!(
        "  [{target} sessions] {count} sessions opened in {:.1}s",
        opened.as_secs_f64()
    );
    let leader = match cluster {
        Some(c) => c.wait_healthy_leader_only().await.ok(),
        None => None,
    };
    let window = Window::new(window.0, window.1);
    let period = endpoint.ttl() / 3;
    // The members' usage is read when the measured window starts and when
    // it ends.
    let before = async {
        let cluster = cluster?;
        tokio::time::sleep_until(window.warm_end.into()).await;
        Some(UsageReading::now(cluster))
    };
    let (renewals, before) = tokio::join!(pool.keep_alive(period, window), before);
    let usage = match (cluster, before) {
        (Some(cluster), Some(before)) => {
            usage_figures(leader, &before, &UsageReading::now(cluster))
        }
        _ => Vec::new(),
    };
    pool.close().await;
    let mut latency = renewals.latency;
    latency.sort();
    let mut figures = vec![
        ("sessions", count as f64),
        ("open_s", opened.as_secs_f64()),
        (
            "keepalives_per_s",
            renewals.sent as f64 / window.duration().as_secs_f64(),
        ),
        ("keepalive_p50_ms", latency.quantile_us(0.5) / 1000.0),
        ("keepalive_p99_ms", latency.quantile_us(0.99) / 1000.0),
        ("keepalive_max_ms", latency.max_us() / 1000.0),
        ("errors", renewals.failed as f64),
    ];
    figures.extend(usage);
    Ok(BenchResult {
        timeline: None,
        target,
        workload: "sessions".into(),
        clients: count,
        figures,
        latency: Some(Latency {
            what: "keepalive",
            samples: latency,
        }),
    })
}

/// The keepalive p99 a cluster must keep to count as holding its
/// sessions (the bar for "holds S sessions").
pub const SESSIONS_P99_BAR_MS: f64 = 10.0;

/// Per target that ran `sessions`: the largest count run whose every
/// keepalive was answered with p99 under [`SESSIONS_P99_BAR_MS`] (a
/// `SESSIONS` line each, naming the counts run).
pub fn session_capacity(results: &[BenchResult]) -> Vec<String> {
    let mut targets: Vec<&str> = Vec::new();
    for r in results.iter().filter(|r| r.workload == "sessions") {
        if !targets.contains(&r.target) {
            targets.push(r.target);
        }
    }
    targets
        .into_iter()
        .map(|target| {
            let runs: Vec<&BenchResult> = results
                .iter()
                .filter(|r| r.target == target && r.workload == "sessions")
                .collect();
            let figure = |r: &BenchResult, name: &str| {
                r.figures.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
            };
            let held = runs
                .iter()
                .filter(|r| {
                    figure(r, "errors") == Some(0.0)
                        && figure(r, "keepalive_p99_ms").is_some_and(|p| p < SESSIONS_P99_BAR_MS)
                })
                .map(|r| r.clients)
                .max();
            let counts: Vec<String> = runs.iter().map(|r| r.clients.to_string()).collect();
            format!(
                "SESSIONS target={target} largest_with_p99_under_{SESSIONS_P99_BAR_MS}ms={} of={}",
                held.map_or("none".to_string(), |n| n.to_string()),
                counts.join(",")
            )
        })
        .collect()
}

/// `state`: hold `locks` locks and lead `elections` elections (values
/// of `value_bytes`), from `holders` sessions; measures how fast it fills,
/// the members' memory per lock, the snapshot (size, write and restore
/// time, Paxlock), a follower's restart and the catch-up of a new member
/// that replaces a follower (the membership change, which copies the
/// state). etcd: keys attached to leases, its database size.
pub async fn state(
    endpoint: &Endpoint,
    cluster: &mut LocalCluster,
    locks: usize,
    elections: usize,
    run_id: u64,
) -> anyhow::Result<BenchResult> {
    let target = endpoint.target().name();
    let before = UsageReading::now(cluster);
    let filling = Instant::now();
    let holder = StateHeld::fill(endpoint, locks, elections, run_id).await?;
    let fill = filling.elapsed();
    eprintln!(
        "  [{target} state] {locks} locks and {elections} elections held in {:.1}s",
        fill.as_secs_f64()
    );
    let leader = cluster.wait_healthy_leader_only().await?;
    // Memory settles after the fill's queues drain.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = UsageReading::now(cluster);
    let mut figures = vec![
        ("locks", locks as f64),
        ("elections", elections as f64),
        ("fill_s", fill.as_secs_f64()),
        (
            "held_per_s",
            (locks + elections) as f64 / fill.as_secs_f64(),
        ),
    ];
    let leader_rss = |r: &UsageReading| r.of(leader).map(|u| u.rss_bytes as f64);
    if let (Some(b), Some(a)) = (leader_rss(&before), leader_rss(&after)) {
        figures.push(("leader_rss_mib", a / MIB));
        figures.push((
            "leader_bytes_per_lock",
            (a - b) / (locks + elections).max(1) as f64,
        ));
    }
    figures.push(("members_rss_mib", after.total_rss_mib()));
    figures.extend(cluster.snapshot_figures(leader).await?);
    let restart = cluster.restart_follower(leader).await?;
    figures.push(("follower_restart_s", restart.as_secs_f64()));
    match cluster.replace_follower().await {
        Ok(times) => {
            figures.push(("new_member_catch_up_s", times.promote.as_secs_f64()));
            figures.push(("replace_s", times.total().as_secs_f64()));
        }
        Err(e) => eprintln!("  [{target} state] replacing a follower failed: {e:#}"),
    }
    holder.release().await;
    Ok(BenchResult {
        timeline: None,
        target,
        workload: "state".into(),
        clients: locks,
        figures,
        latency: None,
    })
}

/// What a `state` run holds until it ends.
enum StateHeld {
    /// Paxlock: the holders' clients (closing them releases everything).
    Paxlock(Vec<paxlock::Client>),
    /// etcd: the leases (revoking them deletes the keys).
    #[cfg(feature = "etcd")]
    Etcd(Vec<super::etcd::LeaseGroup>),
}

/// Sessions that hold a `state` run's locks and elections.
const STATE_HOLDERS: usize = 64;

/// Acquires in flight at once while a `state` run fills: one per holder.
/// (Four per holder filled faster in a release build, but starved a
/// debug build's leader of its lease: see the note in README's limits.)
const STATE_IN_FLIGHT: usize = STATE_HOLDERS;

/// Bytes of each election's value.
const ELECTION_VALUE_BYTES: usize = 64;

impl StateHeld {
    async fn fill(
        endpoint: &Endpoint,
        locks: usize,
        elections: usize,
        run_id: u64,
    ) -> anyhow::Result<StateHeld> {
        match endpoint {
            Endpoint::Paxlock { config, .. } => {
                let config = paxlock_config(config, Duration::from_secs(60))?;
                let mut clients = Vec::new();
                for _ in 0..STATE_HOLDERS {
                    clients.push(paxlock::Client::connect(config.clone()).await?);
                }
                let shared = clients.clone();
                fan_out(STATE_IN_FLIGHT, 0..locks, move |i| {
                    let client = shared[i % shared.len()].clone();
                    async move {
                        let guard = client
                            .lock(format!("bench-{run_id}-state-{i}"))
                            .acquire()
                            .await
                            .with_context(|| format!("lock {i}"))?;
                        // Held until the session closes.
                        std::mem::forget(guard);
                        anyhow::Ok(())
                    }
                })
                .await?;
                let shared = clients.clone();
                fan_out(STATE_IN_FLIGHT, 0..elections, move |i| {
                    let client = shared[i % shared.len()].clone();
                    async move {
                        let leadership = client
                            .election(format!("bench-{run_id}-election-{i}"))
                            .campaign(vec![b'v'; ELECTION_VALUE_BYTES])
                            .await
                            .with_context(|| format!("election {i}"))?;
                        std::mem::forget(leadership);
                        anyhow::Ok(())
                    }
                })
                .await?;
                Ok(StateHeld::Paxlock(clients))
            }
            #[cfg(feature = "etcd")]
            Endpoint::Etcd { endpoints, .. } => {
                // A lease per holder with its share of the keys, long
                // enough to outlive the run without keepalives.
                let mut groups = Vec::new();
                let total = locks + elections;
                for g in 0..STATE_HOLDERS {
                    let keys = total / STATE_HOLDERS + usize::from(g < total % STATE_HOLDERS);
                    let name = format!("bench-{run_id}-state-{g}");
                    let ttl = Duration::from_secs(3600);
                    groups.push(
                        super::etcd::LeaseGroup::open(endpoints, g, 1, keys, ttl, &name).await?,
                    );
                }
                Ok(StateHeld::Etcd(groups))
            }
            #[cfg(feature = "zookeeper")]
            Endpoint::ZooKeeper { .. } => bail!("state: not measured on ZooKeeper"),
        }
    }

    async fn release(self) {
        match self {
            StateHeld::Paxlock(clients) => {
                for client in clients {
                    let _ = tokio::time::timeout(Duration::from_secs(30), client.close()).await;
                }
            }
            #[cfg(feature = "etcd")]
            StateHeld::Etcd(groups) => {
                for group in groups {
                    group.close().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions_run(target: &'static str, count: usize, p99: f64, errors: f64) -> BenchResult {
        BenchResult {
            timeline: None,
            target,
            workload: "sessions".into(),
            clients: count,
            figures: vec![("keepalive_p99_ms", p99), ("errors", errors)],
            latency: None,
        }
    }

    #[test]
    fn the_capacity_is_the_largest_count_under_the_bar_with_nothing_lost() {
        let results = [
            sessions_run("paxlock", 2_000, 4.0, 0.0),
            sessions_run("paxlock", 5_000, 9.5, 0.0),
            // Under the bar but a keepalive failed: not held.
            sessions_run("paxlock", 8_000, 9.9, 1.0),
            sessions_run("paxlock", 10_000, 15.0, 0.0),
            sessions_run("etcd", 2_000, 12.0, 0.0),
        ];
        assert_eq!(
            session_capacity(&results),
            vec![
                "SESSIONS target=paxlock largest_with_p99_under_10ms=5000 of=2000,5000,8000,10000",
                "SESSIONS target=etcd largest_with_p99_under_10ms=none of=2000",
            ]
        );
    }
}
