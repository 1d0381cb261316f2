//! `paxlock-lab bench`: a load generator for Paxlock (and, for comparison,
//! etcd and ZooKeeper) with a progress display, one machine-readable line
//! per result and a table of Paxlock's figures beside each peer's with
//! `--compare`, and with `--plot` an SVG chart of every run's latency
//! distribution.

mod cluster;
mod driver;
#[cfg(feature = "etcd")]
mod etcd;
mod fan_out;
mod plot;
mod probe;
mod replace;
mod scale;
mod soak;
mod stats;
mod workload;
#[cfg(feature = "zookeeper")]
mod zookeeper;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use driver::Endpoint;
pub use driver::Target;

use cluster::LocalCluster;
use stats::Latency;

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// N clients, each its own lock name, acquire → release.
    Uncontended,
    /// N clients, one shared lock name, acquire → release.
    Contended,
    /// N clients, one semaphore of `--permits` permits, acquire → release
    /// (etcd has no semaphore; ZooKeeper: Curator's InterProcessSemaphoreV2).
    Semaphore,
    /// N clients, one read/write lock, `--read-percent` of acquires for
    /// reading, acquire → release (etcd: its RWMutex recipe; ZooKeeper:
    /// Curator's InterProcessReadWriteLock).
    Rwlock,
    /// K candidates, the leader resigns in a loop, M watchers.
    Election,
    /// Many watchers (`--watcher-counts`, `--watchers-per-connection`) on
    /// one election whose leader leads `--hold` and resigns to a second
    /// candidate: resign → every watcher saw the new leader.
    Watchers,
    /// Sessions (`--session-counts`), each holding a lock, over
    /// `--session-connections` connections, each kept alive at TTL/3:
    /// keepalive latency, the leader's CPU and memory.
    Sessions,
    /// Locks (`--state-locks`) and `--state-elections` elections held:
    /// memory per lock, snapshot size and the time to restore and write it,
    /// a follower's restart, a new member's catch-up. Runs after the
    /// others but `membership` (it replaces a member).
    State,
    /// A mixed load (16 uncontended lock loops, 8 clients on one lock) for
    /// `--soak-duration`: acquire p99 and members' memory per
    /// `--soak-interval`, their drift and growth.
    Soak,
    /// Steady lock traffic, SIGKILL the leader, time until acquires work again.
    Failover,
    /// State stored and lock traffic running, replace a follower by a new
    /// member (add, promote, remove), each step timed; acquire p99 during
    /// the change against steady, and the longest window without an
    /// acquire. Runs after the other workloads (it changes the members).
    Membership,
}

/// Options of `paxlock-lab bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Workloads to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "uncontended,contended")]
    pub workloads: Vec<Workload>,
    /// Client counts for the lock workloads, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub clients: Vec<usize>,
    /// Measured time per run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before each run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Session (Paxlock) / lease (etcd) TTL.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// System to benchmark (ignored with --compare).
    #[arg(long, value_enum, default_value = "paxlock")]
    pub target: Target,
    /// etcd client endpoints (`host:port`), comma-separated; without them
    /// the bench starts its own 3-member etcd cluster.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Paxlock client config of an existing cluster; without it the bench
    /// starts its own 3-node cluster (always for `failover`).
    #[arg(long)]
    pub client_config: Option<PathBuf>,
    /// Start a 3-node Paxlock cluster and a 3-member cluster of each of
    /// `--peers`, run every workload on each and print Paxlock's figures
    /// beside theirs, with the ratios.
    #[arg(long)]
    pub compare: bool,
    /// The peers `--compare` runs beside Paxlock (a peer whose programs are
    /// not installed is skipped, with a message).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "etcd,zookeeper"
    )]
    pub peers: Vec<Target>,
    /// ZooKeeper servers (`host:port`), comma-separated; without them the
    /// bench starts its own 3-server ensemble.
    #[arg(long, value_delimiter = ',')]
    pub zookeeper_servers: Vec<String>,
    /// The `java` executable for a started ZooKeeper ensemble.
    #[arg(long, default_value = "java")]
    pub java_bin: PathBuf,
    /// The class path of a started ZooKeeper ensemble's servers (Debian:
    /// `apt-get install zookeeper`).
    #[arg(
        long,
        default_value = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar"
    )]
    pub zookeeper_classpath: String,
    /// Client port of server 1 of a started ZooKeeper ensemble (clients
    /// +0..+2, quorum +10..+12, election +20..+22).
    #[arg(long, default_value_t = 24181)]
    pub zookeeper_base_port: u16,
    /// The `paxlock` executable for started clusters (default: the one
    /// next to this executable, else on PATH).
    #[arg(long)]
    pub paxlock_bin: Option<PathBuf>,
    /// The `etcd` executable (Debian: `apt-get install etcd-server`).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Folder for started clusters' certificates, configs and data.
    #[arg(long, default_value = "/tmp/paxlock-bench")]
    pub dir: PathBuf,
    /// UDP port of node 1 of a started Paxlock cluster (nodes use +0..+2).
    #[arg(long, default_value_t = 27101)]
    pub base_port: u16,
    /// Client port of member 1 of a started etcd cluster (clients +0..+2,
    /// peers +10..+12).
    #[arg(long, default_value_t = 23790)]
    pub etcd_base_port: u16,
    /// Failover: how many times to kill the leader.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Failover and membership: clients running lock loops meanwhile.
    #[arg(long, default_value_t = 8)]
    pub failover_clients: usize,
    /// Membership: MiB of values stored before the change (held locks'
    /// values in Paxlock, keys in etcd).
    #[arg(long, default_value_t = 16)]
    pub state_mib: u64,
    /// Semaphore: its permits.
    #[arg(long, default_value_t = 8)]
    pub permits: u32,
    /// Rwlock: percent of acquires for reading.
    #[arg(long, default_value_t = 90)]
    pub read_percent: u32,
    /// Election: candidates.
    #[arg(long, default_value_t = 3)]
    pub candidates: usize,
    /// Election: watchers.
    #[arg(long, default_value_t = 8)]
    pub watchers: usize,
    /// Sessions: how many sessions, comma-separated (one run each).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub session_counts: Vec<usize>,
    /// Sessions: connections carrying them.
    #[arg(long, default_value_t = 16)]
    pub session_connections: usize,
    /// State: how many locks held, comma-separated (one run each).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub state_locks: Vec<usize>,
    /// State: elections led besides the locks.
    #[arg(long, default_value_t = 1000)]
    pub state_elections: usize,
    /// Soak: how long.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub soak_duration: Duration,
    /// Soak: the reporting interval.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub soak_interval: Duration,
    /// Watchers: how many watchers, comma-separated (one run each).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub watcher_counts: Vec<usize>,
    /// Watchers: watchers sharing one connection (Paxlock: a client and its
    /// session; etcd: an HTTP/2 connection; ZooKeeper: a session).
    #[arg(long, default_value_t = 50)]
    pub watchers_per_connection: usize,
    /// Watchers: how long each leader leads before it resigns.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// After all runs, write an SVG chart of every run's latency
    /// distribution (acquire; election: resign → all watchers) to FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// One result: a list of named figures.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// `paxlock`, `etcd` or `zookeeper`.
    pub target: &'static str,
    /// Workload name.
    pub workload: String,
    /// Clients (candidates for `election`).
    pub clients: usize,
    /// `(name, value)`; latencies in ms.
    pub figures: Vec<(&'static str, f64)>,
    /// The samples behind the main latency figures, for `--plot`.
    pub latency: Option<Latency>,
    /// Figures over time (`soak`), for `--plot`.
    pub timeline: Option<Timeline>,
}

/// A `soak` run's figures per interval, `(minutes since the start, value)`.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Acquire latency p99 of each interval, in ms.
    pub p99_ms: Vec<(f64, f64)>,
    /// Every member's resident memory together at each interval's end.
    pub rss_mib: Vec<(f64, f64)>,
}

impl BenchResult {
    /// The machine-readable line: `RESULT key=value ...`.
    pub fn line(&self) -> String {
        let mut s = format!(
            "RESULT target={} workload={} clients={}",
            self.target, self.workload, self.clients
        );
        for (k, v) in &self.figures {
            s.push_str(&format!(" {k}={v:.3}"));
        }
        s
    }
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients needs positive counts");
    }
    if let Some(path) = &args.plot {
        // Fail before minutes of runs, not after them.
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !folder.is_dir() {
            bail!("--plot {}: no folder {}", path.display(), folder.display());
        }
    }
    let mut results = Vec::new();
    if args.compare {
        results.extend(run_target(&args, Target::Paxlock, true).await?);
        let mut peers = args.peers.clone();
        peers.retain(|&p| p != Target::Paxlock);
        peers.dedup();
        for &peer in &peers {
            match missing_programs(&args, peer) {
                Some(why) => println!("{}: skipped: {why}", peer.name()),
                None => results.extend(run_target(&args, peer, true).await?),
            }
        }
        print_table(&results, &peers);
    } else {
        results.extend(run_target(&args, args.target, false).await?);
    }
    for line in scale::session_capacity(&results) {
        println!("{line}");
    }
    if let Some(path) = &args.plot {
        if results.iter().any(|r| r.latency.is_some()) {
            plot::write_svg(path, &results)
                .with_context(|| format!("writing the chart {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        for written in plot::write_scale_svgs(path, &results)? {
            eprintln!("wrote {}", written.display());
        }
    }
    Ok(())
}

async fn run_target(
    args: &BenchArgs,
    target: Target,
    force_start: bool,
) -> anyhow::Result<Vec<BenchResult>> {
    let needs_cluster = args.workloads.iter().any(|w| {
        matches!(
            w,
            Workload::Failover | Workload::Membership | Workload::State
        )
    });
    let external = match target {
        Target::Paxlock => args.client_config.is_some(),
        Target::Etcd => !args.endpoints.is_empty(),
        Target::ZooKeeper => !args.zookeeper_servers.is_empty(),
    };
    let mut cluster = None;
    let endpoint = if external && !force_start && !needs_cluster {
        match target {
            Target::Paxlock => Endpoint::Paxlock {
                config: args.client_config.clone().context("--client-config")?,
                ttl: args.ttl,
            },
            Target::Etcd => etcd_endpoint(args, &args.endpoints)?,
            Target::ZooKeeper => zookeeper_endpoint(args, &args.zookeeper_servers)?,
        }
    } else {
        eprintln!(
            "starting a 3-member {} cluster under {}",
            target.name(),
            args.dir.display()
        );
        match target {
            Target::Paxlock => {
                let c = LocalCluster::start_paxlock(
                    crate::node_binary::node_binary(args.paxlock_bin.as_deref())?,
                    &args.dir.join("paxlock"),
                    args.base_port,
                )
                .await?;
                let e = Endpoint::Paxlock {
                    config: c.client_config.clone(),
                    ttl: args.ttl,
                };
                cluster = Some(c);
                e
            }
            Target::Etcd => {
                let c = LocalCluster::start_etcd(
                    &args.etcd_bin,
                    &args.dir.join("etcd"),
                    args.etcd_base_port,
                )
                .await?;
                let e = etcd_endpoint(args, &c.client_endpoints)?;
                cluster = Some(c);
                e
            }
            Target::ZooKeeper => {
                let c = LocalCluster::start_zookeeper(
                    &args.java_bin,
                    &args.zookeeper_classpath,
                    &args.dir.join("zookeeper"),
                    args.zookeeper_base_port,
                )
                .await?;
                let e = zookeeper_endpoint(args, &c.client_endpoints)?;
                cluster = Some(c);
                e
            }
        }
    };
    let result = run_workloads(args, &endpoint, cluster.as_mut()).await;
    if let Some(c) = cluster {
        c.stop().await;
    }
    result
}

#[cfg(feature = "etcd")]
fn etcd_endpoint(args: &BenchArgs, endpoints: &[String]) -> anyhow::Result<Endpoint> {
    let endpoints = endpoints
        .iter()
        .map(|e| {
            e.trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    Ok(Endpoint::Etcd {
        endpoints,
        ttl: args.ttl,
    })
}

#[cfg(not(feature = "etcd"))]
fn etcd_endpoint(_args: &BenchArgs, _endpoints: &[String]) -> anyhow::Result<Endpoint> {
    bail!("this build has no etcd support (cargo feature `etcd`)")
}

#[cfg(feature = "zookeeper")]
fn zookeeper_endpoint(args: &BenchArgs, servers: &[String]) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::ZooKeeper {
        servers: servers.join(","),
        ttl: args.ttl,
    })
}

#[cfg(not(feature = "zookeeper"))]
fn zookeeper_endpoint(_args: &BenchArgs, _servers: &[String]) -> anyhow::Result<Endpoint> {
    bail!("this build has no ZooKeeper support (cargo feature `zookeeper`)")
}

/// Why `peer`'s cluster cannot be started here, if it cannot: its
/// programs are not installed.
fn missing_programs(args: &BenchArgs, peer: Target) -> Option<String> {
    let installed = |program: &std::path::Path| {
        if program.components().count() > 1 {
            return program.is_file();
        }
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
    };
    match peer {
        Target::Paxlock => None,
        Target::Etcd if !installed(&args.etcd_bin) => Some(format!(
            "no {} (Debian: apt-get install etcd-server)",
            args.etcd_bin.display()
        )),
        Target::Etcd => None,
        Target::ZooKeeper => {
            let jar = args
                .zookeeper_classpath
                .split(':')
                .next()
                .unwrap_or_default();
            if !installed(&args.java_bin) || !std::path::Path::new(jar).is_file() {
                Some(format!(
                    "no {} or {jar} (Debian: apt-get install zookeeper)",
                    args.java_bin.display()
                ))
            } else {
                None
            }
        }
    }
}

async fn run_workloads(
    args: &BenchArgs,
    endpoint: &Endpoint,
    mut cluster: Option<&mut LocalCluster>,
) -> anyhow::Result<Vec<BenchResult>> {
    let mut results = Vec::new();
    let run_id = std::process::id() as u64 * 1000;
    let mut n = 0;
    // The membership workload changes the members: it runs last, after
    // `state`, which replaces a member too.
    let mut workloads = args.workloads.clone();
    workloads.sort_by_key(|w| match w {
        Workload::Membership => 2,
        Workload::State => 1,
        _ => 0,
    });
    for workload in &workloads {
        let counts: Vec<usize> = match workload {
            Workload::Uncontended
            | Workload::Contended
            | Workload::Semaphore
            | Workload::Rwlock => args.clients.clone(),
            Workload::Watchers => args.watcher_counts.clone(),
            Workload::Sessions => args.session_counts.clone(),
            Workload::State => args.state_locks.clone(),
            Workload::Election | Workload::Failover | Workload::Membership | Workload::Soak => {
                vec![0]
            }
        };
        for &clients in &counts {
            n += 1;
            let id = run_id + n;
            let result = match workload {
                Workload::Semaphore if !endpoint.target().has_semaphores() => {
                    println!(
                        "{} semaphore: skipped: it has no semaphore (etcd's v3lock and \
                         concurrency package give a mutex only)",
                        endpoint.target().name()
                    );
                    continue;
                }
                Workload::Membership if endpoint.target() == Target::ZooKeeper => {
                    println!(
                        "zookeeper membership: skipped: replacing a server needs dynamic \
                         reconfiguration, off by default in ZooKeeper 3.8"
                    );
                    continue;
                }
                Workload::Uncontended
                | Workload::Contended
                | Workload::Semaphore
                | Workload::Rwlock => {
                    let shape = match workload {
                        Workload::Contended => workload::Shape::Contended,
                        Workload::Semaphore => workload::Shape::Semaphore(args.permits),
                        Workload::Rwlock => workload::Shape::ReadWrite(args.read_percent),
                        _ => workload::Shape::Uncontended,
                    };
                    workload::lock_loop(
                        endpoint,
                        clients,
                        shape,
                        args.warmup,
                        args.duration,
                        cluster.as_deref().and_then(LocalCluster::probe),
                        id,
                    )
                    .await
                }
                Workload::Election | Workload::Watchers => {
                    let (name, shape) = if *workload == Workload::Election {
                        let shape = workload::ElectionShape {
                            candidates: args.candidates,
                            watchers: args.watchers,
                            watchers_per_connection: 1,
                            hold: Duration::ZERO,
                        };
                        ("election", shape)
                    } else {
                        let shape = workload::ElectionShape {
                            candidates: 2,
                            watchers: clients,
                            watchers_per_connection: args.watchers_per_connection,
                            hold: args.hold,
                        };
                        ("watchers", shape)
                    };
                    workload::election(
                        endpoint,
                        name,
                        shape,
                        (args.warmup, args.duration),
                        cluster.as_deref().and_then(LocalCluster::probe),
                        id,
                    )
                    .await
                }
                Workload::Sessions => {
                    scale::sessions(
                        endpoint,
                        cluster.as_deref(),
                        clients,
                        args.session_connections,
                        (args.warmup, args.duration),
                        id,
                    )
                    .await
                }
                Workload::State => match cluster.as_deref_mut() {
                    Some(c) => scale::state(endpoint, c, clients, args.state_elections, id).await,
                    None => Err(anyhow::anyhow!(
                        "state needs a cluster started by the bench"
                    )),
                },
                Workload::Soak => {
                    soak::soak(
                        endpoint,
                        cluster.as_deref(),
                        args.soak_duration,
                        args.soak_interval,
                        id,
                    )
                    .await
                }
                Workload::Failover => match cluster.as_deref_mut() {
                    Some(c) => {
                        workload::failover(
                            endpoint,
                            c,
                            args.failover_clients,
                            args.repeat,
                            args.warmup,
                            id,
                        )
                        .await
                    }
                    None => Err(anyhow::anyhow!(
                        "failover needs a cluster started by the bench"
                    )),
                },
                Workload::Membership => match cluster.as_deref_mut() {
                    Some(c) => {
                        workload::membership(
                            endpoint,
                            c,
                            args.failover_clients,
                            args.state_mib,
                            args.warmup,
                            id,
                        )
                        .await
                    }
                    None => Err(anyhow::anyhow!(
                        "membership needs a cluster started by the bench"
                    )),
                },
            };
            match result {
                Ok(r) => {
                    println!("{}", r.line());
                    results.push(r);
                }
                Err(e) => eprintln!("{} {workload:?}: failed: {e:#}", endpoint.target().name()),
            }
        }
    }
    Ok(results)
}

/// Prints every Paxlock figure beside each peer's, with Paxlock/peer
/// ratios.
fn print_table(results: &[BenchResult], peers: &[Target]) {
    println!();
    let mut head = format!("{:<22} {:<20} {:>12}", "run", "figure", "paxlock");
    for peer in peers {
        head.push_str(&format!(" {:>12}", peer.name()));
    }
    for peer in peers {
        head.push_str(&format!(" {:>10}", format!("pax/{}", short(*peer))));
    }
    println!("{head}");
    for p in results.iter().filter(|r| r.target == "paxlock") {
        let run = format!("{} c={}", p.workload, p.clients);
        for (name, pv) in &p.figures {
            let values: Vec<Option<f64>> = peers
                .iter()
                .map(|peer| {
                    results
                        .iter()
                        .find(|r| {
                            r.target == peer.name()
                                && r.workload == p.workload
                                && r.clients == p.clients
                        })
                        .and_then(|r| r.figures.iter().find(|(n, _)| n == name))
                        .map(|(_, v)| *v)
                })
                .collect();
            let mut line = format!("{run:<22} {name:<20} {pv:>12.3}");
            for v in &values {
                let text = v.map_or("-".to_string(), |v| format!("{v:.3}"));
                line.push_str(&format!(" {text:>12}"));
            }
            for v in &values {
                let ratio = match v {
                    Some(v) if *v != 0.0 => format!("{:.2}", pv / v),
                    _ => "-".into(),
                };
                line.push_str(&format!(" {ratio:>10}"));
            }
            println!("{line}");
        }
    }
}

/// A peer's name in a ratio column's head.
fn short(peer: Target) -> &'static str {
    match peer {
        Target::ZooKeeper => "zk",
        other => other.name(),
    }
}
