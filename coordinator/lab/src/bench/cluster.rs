//! Local 3-node clusters the bench starts itself: Paxlock (through the
//! launcher, as `paxlock dev` and the tests start theirs), etcd (`etcd`
//! members on loopback, supervised the same way) and ZooKeeper (a 3-server
//! ensemble on loopback, each server a `java` process of the Debian
//! package's jars), each with its own data directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use paxlock_launcher::process::{self, Supervised};
use paxlock_launcher::{Cluster, ClusterSpec, LogSink, NodeBinary};

use super::probe::{fetch_metrics, value, Probe};
use super::replace::ReplaceTimes;

/// How long a cluster may take to start, or a member to rejoin.
const STARTUP: Duration = Duration::from_secs(60);

const MIB: f64 = 1024.0 * 1024.0;

/// The newest snapshot in `dir`: its size, and how long reading and
/// restoring it, then encoding and writing it (fsync included, into
/// `scratch` on the same disk) take.
fn measure_snapshot(dir: &Path, scratch: &Path) -> anyhow::Result<Vec<(&'static str, f64)>> {
    use paxlock_storage::snapshot::{list_snapshots, read_newest_snapshot, write_snapshot_file};
    let (_, path) = list_snapshots(dir)?.pop().context("no snapshot")?;
    let size = std::fs::metadata(&path)?.len();
    use paxlock_core::paxos::membership::{frame_snapshot, unframe_snapshot};
    use paxlock_storage::durable_log::{decode_state, encode_state};
    let bad = |what: &str| anyhow::anyhow!("{}: {what}", path.display());
    // As a node restores: the acceptor's state, its snapshot's membership
    // frame, the state machine.
    let restoring = Instant::now();
    let data = read_newest_snapshot(dir)?.context("no snapshot")?;
    let mut durable = decode_state(&data.state).map_err(bad)?;
    let app = durable
        .snapshot
        .as_ref()
        .context("no state machine in it")?;
    let (members, machine_bytes) = unframe_snapshot(&app.data).map_err(|_| bad("membership"))?;
    let machine = paxlock_core::locks::StateMachine::restore(machine_bytes)
        .map_err(|e| bad(&format!("{e:?}")))?;
    let restore = restoring.elapsed();
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch)?;
    // As a leader writes one: the machine encoded and framed, the
    // acceptor's state around it, the file written and fsynced.
    let writing = Instant::now();
    let machine_bytes = machine.snapshot().map_err(|e| bad(&format!("{e:?}")))?;
    let framed = match &members {
        Some(members) => frame_snapshot(members, true, machine_bytes),
        None => machine_bytes,
    };
    if let Some(snapshot) = durable.snapshot.as_mut() {
        snapshot.data = framed;
    }
    let copy = paxlock_storage::snapshot::SnapshotData {
        state: encode_state(&durable),
        ..data
    };
    write_snapshot_file(scratch, &copy)?;
    let write = writing.elapsed();
    let _ = std::fs::remove_dir_all(scratch);
    Ok(vec![
        ("snapshot_mib", size as f64 / MIB),
        ("snapshot_restore_ms", restore.as_secs_f64() * 1000.0),
        ("snapshot_write_ms", write.as_secs_f64() * 1000.0),
    ])
}

/// Sessions, locks and elections the bench's Paxlock clusters allow (the
/// scale workloads hold up to 100,000 sessions and 1,000,000 locks; the
/// defaults are 10,000 sessions and a quarter of them per identity).
const SCALE_SESSIONS: u32 = 250_000;
const SCALE_LOCKS: u32 = 2_000_000;
const SCALE_ELECTIONS: u32 = 100_000;

/// The `[limits]` of the bench's Paxlock clusters: room for the scale
/// workloads (sessions, locks per holder, elections; state up to the
/// largest bound, half of the largest snapshot a node reads).
const SCALE_LIMITS: &str = "[limits]
max_sessions = 250000
max_locks_per_session = 40000
max_elections = 100000
max_state_bytes = 536870912
";

/// ZooKeeper's logging (log4j 1.2, as the Debian package runs it):
/// warnings and errors, to each server's own file.
const ZOOKEEPER_LOG4J: &str = "log4j.rootLogger=WARN, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=${zookeeper.log.file}
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n
";

/// A running local cluster.
pub struct LocalCluster {
    members: Members,
    /// Paxlock: the client config; etcd: unused.
    pub client_config: PathBuf,
    /// etcd, ZooKeeper: client `host:port` per member (index = id - 1).
    pub client_endpoints: Vec<String>,
}

enum Members {
    Paxlock(Box<Cluster>),
    Etcd(PeerMembers),
    ZooKeeper(PeerMembers),
}

/// A peer system's member processes and how to start each again.
struct PeerMembers {
    dir: PathBuf,
    program: PathBuf,
    /// Arguments per member (index = id - 1).
    args: Vec<Vec<String>>,
    running: Vec<Option<Supervised>>,
    /// Client ports from here, peer ports from here + 10.
    base_port: u16,
    /// The members now (ids), as `member add` and `remove` left them.
    members: Vec<u64>,
}

/// Member `id`'s client `host:port`.
fn etcd_client(base_port: u16, id: u64) -> String {
    format!("127.0.0.1:{}", u64::from(base_port) + id - 1)
}

/// Member `id`'s peer URL.
fn etcd_peer(base_port: u16, id: u64) -> String {
    format!("http://127.0.0.1:{}", u64::from(base_port) + 9 + id)
}

/// Member `id`'s entry in `--initial-cluster`.
fn etcd_initial(base_port: u16, id: u64) -> String {
    format!("m{id}={}", etcd_peer(base_port, id))
}

/// The arguments member `id` runs with: its own URLs and data directory,
/// the cluster it starts in (`initial`) and how (`new` or `existing`).
fn etcd_args(dir: &Path, base_port: u16, id: u64, initial: &[String], state: &str) -> Vec<String> {
    let (client, peer) = (etcd_client(base_port, id), etcd_peer(base_port, id));
    vec![
        "--name".into(),
        format!("m{id}"),
        "--data-dir".into(),
        dir.join(format!("m{id}")).display().to_string(),
        "--listen-client-urls".into(),
        format!("http://{client}"),
        "--advertise-client-urls".into(),
        format!("http://{client}"),
        "--listen-peer-urls".into(),
        peer.clone(),
        "--initial-advertise-peer-urls".into(),
        peer,
        "--initial-cluster".into(),
        initial.join(","),
        "--initial-cluster-state".into(),
        state.into(),
        "--initial-cluster-token".into(),
        format!("paxlock-bench-{base_port}"),
    ]
}

impl PeerMembers {
    /// Starts a member (ids from 1) per entry of `args`, each running
    /// `program` with its arguments, logging to a file in `dir`.
    fn start(
        dir: &Path,
        program: &Path,
        args: Vec<Vec<String>>,
        base_port: u16,
    ) -> anyhow::Result<PeerMembers> {
        let count = args.len() as u64;
        let mut members = PeerMembers {
            dir: dir.to_path_buf(),
            program: program.to_path_buf(),
            running: args.iter().map(|_| None).collect(),
            args,
            base_port,
            members: (1..=count).collect(),
        };
        for id in 1..=count {
            members.spawn(id)?;
        }
        Ok(members)
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let index = (id - 1) as usize;
        let args = self.args.get(index).context("no such member")?;
        let mut command = Command::new(&self.program);
        command.args(args).stdin(Stdio::null());
        let log = self.dir.join(format!("member-{id}.log"));
        let member = Supervised::spawn(command, &LogSink::Files, &log, id)
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.running[index] = Some(member);
        Ok(())
    }
}

impl LocalCluster {
    /// Writes certificates and configs into `dir` and starts 3 Paxlock
    /// nodes (one runtime thread each, the launcher's default: measured,
    /// lower latency and higher throughput than one thread per core in
    /// every process).
    pub async fn start_paxlock(
        binary: NodeBinary,
        dir: &Path,
        base_port: u16,
    ) -> anyhow::Result<LocalCluster> {
        let _ = std::fs::remove_dir_all(dir);
        // One spare (`join = true`) for the `membership` workload, which
        // the launcher's client replaces a member by as an administrator.
        let spec = ClusterSpec::loopback(dir, 3, base_port)
            .spares(1)
            .admins(&[paxlock_launcher::DEV_CLIENT])
            .tables(SCALE_LIMITS)
            .startup_timeout(STARTUP);
        let cluster = Cluster::start(binary, spec).await?;
        let cluster = LocalCluster {
            client_config: cluster.client_config_path(),
            client_endpoints: Vec::new(),
            members: Members::Paxlock(Box::new(cluster)),
        };
        cluster.raise_quotas().await?;
        Ok(cluster)
    }

    /// Lets the bench's identity hold what the scale workloads need: a
    /// quota rule for everyone at the raised limits (no access rules: the
    /// cluster stays open to every identity its CA signed).
    async fn raise_quotas(&self) -> anyhow::Result<()> {
        let config = super::driver::paxlock_config(&self.client_config, Duration::from_secs(10))?;
        let admin = paxlock::Client::connect(config).await?;
        let rules = paxlock::AccessRules {
            version: 0,
            rules: Vec::new(),
            quotas: vec![paxlock::QuotaRule {
                identities: vec!["*".into()],
                sessions: Some(SCALE_SESSIONS),
                locks: Some(SCALE_LOCKS),
                elections: Some(SCALE_ELECTIONS),
                value_bytes: None,
            }],
        };
        let set = admin.set_access_rules(&rules, None).await;
        let _ = admin.close().await;
        set.context("raising the bench identity's quotas")?;
        Ok(())
    }

    /// Starts a 3-member etcd cluster on loopback: client ports
    /// `base_port`, +1, +2; peer ports +10, +11, +12. Default fsync settings.
    pub async fn start_etcd(
        exe: &Path,
        dir: &Path,
        base_port: u16,
    ) -> anyhow::Result<LocalCluster> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let initial: Vec<String> = (1..=3).map(|id| etcd_initial(base_port, id)).collect();
        let args = (1..=3u64)
            .map(|id| etcd_args(dir, base_port, id, &initial, "new"))
            .collect();
        let cluster = LocalCluster {
            members: Members::Etcd(PeerMembers::start(dir, exe, args, base_port)?),
            client_config: PathBuf::new(),
            client_endpoints: (1..=3).map(|id| etcd_client(base_port, id)).collect(),
        };
        cluster.wait_etcd_healthy(STARTUP).await?;
        Ok(cluster)
    }

    /// Starts a 3-server ZooKeeper ensemble on loopback: client ports
    /// `base_port`, +1, +2; quorum ports +10..+12, election ports +20..+22.
    /// The settings are ZooKeeper's sample configuration's (tick 2 s, the
    /// transaction log fsynced before every acknowledgement), each server
    /// running `java` with `classpath` (the Debian package's jars).
    pub async fn start_zookeeper(
        java: &Path,
        classpath: &str,
        dir: &Path,
        base_port: u16,
    ) -> anyhow::Result<LocalCluster> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let port = |id: u64, offset: u64| u64::from(base_port) + offset + id - 1;
        let log4j = dir.join("log4j.properties");
        std::fs::write(&log4j, ZOOKEEPER_LOG4J)?;
        let servers: String = (1..=3)
            .map(|id| format!("server.{id}=127.0.0.1:{}:{}\n", port(id, 10), port(id, 20)))
            .collect();
        let mut args = Vec::new();
        for id in 1..=3u64 {
            let member = dir.join(format!("m{id}"));
            let data = member.join("data");
            std::fs::create_dir_all(&data)?;
            std::fs::write(data.join("myid"), format!("{id}\n"))?;
            let config = member.join("zoo.cfg");
            std::fs::write(
                &config,
                format!(
                    "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\n\
                     clientPort={}\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n\
                     admin.enableServer=false\n4lw.commands.whitelist=srvr\n{servers}",
                    data.display(),
                    port(id, 0)
                ),
            )?;
            args.push(vec![
                "-Xms256m".into(),
                "-Xmx1g".into(),
                "-XX:-UsePerfData".into(),
                format!("-Dlog4j.configuration=file:{}", log4j.display()),
                format!(
                    "-Dzookeeper.log.file={}",
                    member.join("zookeeper.log").display()
                ),
                "-Dzookeeper.jmx.log4j.disable=true".into(),
                "-cp".into(),
                classpath.into(),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain".into(),
                config.display().to_string(),
            ]);
        }
        let cluster = LocalCluster {
            members: Members::ZooKeeper(PeerMembers::start(dir, java, args, base_port)?),
            client_config: PathBuf::new(),
            client_endpoints: (1..=3)
                .map(|id| format!("127.0.0.1:{}", port(id, 0)))
                .collect(),
        };
        cluster.wait_healthy(STARTUP).await?;
        Ok(cluster)
    }

    fn dir(&self) -> &Path {
        match &self.members {
            Members::Paxlock(cluster) => cluster.dir(),
            Members::Etcd(members) | Members::ZooKeeper(members) => &members.dir,
        }
    }

    async fn wait_etcd_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.etcd_leader().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd not healthy within {timeout:?}; see {}/member-*.log",
                    self.dir().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Member id (1-based) of the current etcd leader, when all members agree.
    #[cfg(feature = "etcd")]
    async fn etcd_leader(&self) -> anyhow::Result<u64> {
        let mut ids = Vec::new();
        let mut leader = None;
        for ep in &self.client_endpoints {
            let status = super::etcd::member_status(ep).await?;
            if status.leader == 0 {
                bail!("no leader");
            }
            ids.push(status.member);
            leader = Some(status.leader);
        }
        let leader = leader.context("no members")?;
        let pos = ids
            .iter()
            .position(|m| *m == leader)
            .context("leader unknown")?;
        Ok(pos as u64 + 1)
    }

    #[cfg(not(feature = "etcd"))]
    async fn etcd_leader(&self) -> anyhow::Result<u64> {
        bail!("built without the etcd feature")
    }

    /// Waits until there is a leader and (Paxlock) every peer is connected
    /// and caught up; returns the leader.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.health().await {
                Ok(leader) => return Ok(leader),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(last.context(format!("cluster not healthy within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Member id (1-based) of the ZooKeeper leader; with `all`, only
    /// when every server serves (a leader and followers).
    #[cfg(feature = "zookeeper")]
    async fn zookeeper_leader(&self, all: bool) -> anyhow::Result<u64> {
        let mut leader = None;
        for (index, server) in self.client_endpoints.iter().enumerate() {
            match super::zookeeper::server_mode(server).await {
                Ok(Some(mode)) if mode == "leader" => leader = Some(index as u64 + 1),
                Ok(Some(_)) => {}
                Ok(None) if all => bail!("{server} is not serving"),
                Err(e) if all => return Err(e),
                Ok(None) | Err(_) => {}
            }
        }
        leader.context("no leader")
    }

    #[cfg(not(feature = "zookeeper"))]
    async fn zookeeper_leader(&self, _all: bool) -> anyhow::Result<u64> {
        bail!("built without the zookeeper feature")
    }

    /// The leader, without the catch-up check.
    pub async fn wait_healthy_leader_only(&self) -> anyhow::Result<u64> {
        match self.members {
            Members::Etcd(_) => return self.etcd_leader().await,
            Members::ZooKeeper(_) => return self.zookeeper_leader(false).await,
            Members::Paxlock(_) => {}
        }
        Ok(self.paxlock_status().await?.leader_node_id)
    }

    async fn health(&self) -> anyhow::Result<u64> {
        match self.members {
            Members::Etcd(_) => return self.etcd_leader().await,
            Members::ZooKeeper(_) => return self.zookeeper_leader(true).await,
            Members::Paxlock(_) => {}
        }
        let status = self.paxlock_status().await?;
        if status.leader_node_id == 0 {
            bail!("no leader");
        }
        if let Some(p) = status
            .peers
            .iter()
            .find(|p| !p.connected || p.lag_slots > 0)
        {
            bail!(
                "node {} connected={} lag={}",
                p.node_id,
                p.connected,
                p.lag_slots
            );
        }
        // Only the leader knows `lag_slots`, and the status may have come
        // from a follower: compare the nodes' commit indexes from their
        // metrics endpoints too.
        let mut commits = Vec::new();
        for addr in self.metrics_addrs() {
            let text = fetch_metrics(&addr).await?;
            commits.push(
                value(&text, "paxlock_commit_index")
                    .with_context(|| format!("paxlock_commit_index not in {addr}/metrics"))?,
            );
        }
        let max = commits.iter().copied().fold(0.0, f64::max);
        let min = commits.iter().copied().fold(f64::MAX, f64::min);
        if max - min > 200.0 {
            bail!("a node lags: commit indexes {commits:?}");
        }
        Ok(status.leader_node_id)
    }

    /// The cluster's status, as a client sees it (through the leader).
    async fn paxlock_status(&self) -> anyhow::Result<paxlock::proto::StatusOk> {
        let config = super::driver::paxlock_config(&self.client_config, Duration::from_secs(10))?;
        let client = paxlock::Client::connect(config).await?;
        let status = client.status().await;
        let _ = client.close().await;
        Ok(status?)
    }

    /// Each member's Prometheus endpoint (`host:port`): Paxlock nodes serve
    /// it on their own port number over TCP, etcd on its client URL.
    fn metrics_addrs(&self) -> Vec<String> {
        match &self.members {
            Members::Paxlock(cluster) => cluster
                .spec()
                .nodes
                .iter()
                .filter(|n| cluster.is_running(n.id))
                .map(|n| n.listen.to_string())
                .collect(),
            Members::Etcd(_) => self.client_endpoints.clone(),
            Members::ZooKeeper(_) => Vec::new(),
        }
    }

    /// Reads the members' server-side latency figures (ZooKeeper: none; its
    /// Prometheus exporter is not in the Debian package).
    pub fn probe(&self) -> Option<Probe> {
        match self.members {
            Members::Paxlock(_) => Some(Probe::paxlock(self.metrics_addrs())),
            Members::Etcd(_) => Some(Probe::etcd(self.metrics_addrs())),
            Members::ZooKeeper(_) => None,
        }
    }

    /// Replaces a follower by a new member (Paxlock: the spare node; etcd:
    /// a fourth member), as each system's operators do (see `replace`);
    /// returns what each step took.
    pub async fn replace_follower(&mut self) -> anyhow::Result<ReplaceTimes> {
        let called = Instant::now();
        // Under load a follower always trails by a few slots: only a
        // leader is needed here, not `wait_healthy`'s caught-up cluster.
        let leader = self.wait_healthy_leader_only().await?;
        if leader == 0 {
            bail!("no leader to replace a follower through");
        }
        match &mut self.members {
            Members::Paxlock(cluster) => {
                let old = (1..=3).find(|&id| id != leader).context("no follower")?;
                let spare = cluster
                    .spec()
                    .nodes
                    .iter()
                    .find(|n| n.joins && !cluster.is_running(n.id));
                let (new, addr) = spare
                    .map(|n| (n.id, n.public))
                    .context("no spare node left")?;
                cluster.spawn(new)?;
                // The leader refuses to add a node it cannot reach.
                let deadline = Instant::now() + STARTUP;
                while cluster.status(new, Duration::from_secs(1)).await.is_err() {
                    if Instant::now() > deadline {
                        bail!("the spare node {new} never started serving");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let config =
                    super::driver::paxlock_config(&self.client_config, Duration::from_secs(10))?;
                let admin = paxlock::Client::connect(config).await?;
                let before_steps = called.elapsed();
                let times = super::replace::paxlock(&admin, old, new, addr).await;
                let _ = admin.close().await;
                let times = ReplaceTimes {
                    before_steps,
                    ..times?
                };
                cluster.kill(old);
                return Ok(times);
            }
            Members::Etcd(_) => {}
            Members::ZooKeeper(_) => bail!(
                "replacing a ZooKeeper server is not measured (dynamic reconfiguration \
                 is off by default in ZooKeeper 3.8)"
            ),
        }
        self.replace_etcd_follower(leader).await
    }

    #[cfg(not(feature = "etcd"))]
    async fn replace_etcd_follower(&mut self, _leader: u64) -> anyhow::Result<ReplaceTimes> {
        bail!("built without the etcd feature")
    }

    /// The etcd side of `replace_follower`.
    #[cfg(feature = "etcd")]
    async fn replace_etcd_follower(&mut self, leader: u64) -> anyhow::Result<ReplaceTimes> {
        let Members::Etcd(members) = &mut self.members else {
            bail!("not an etcd cluster");
        };
        let old = *members
            .members
            .iter()
            .find(|&&id| id != leader)
            .context("no follower")?;
        let new = members.members.iter().max().copied().unwrap_or(3) + 1;
        let endpoints: Vec<String> = members
            .members
            .iter()
            .map(|&id| etcd_client(members.base_port, id))
            .collect();
        let peer = etcd_peer(members.base_port, new);
        let mut replacement =
            super::replace::EtcdReplacement::add_learner(endpoints, &peer).await?;
        let initial: Vec<String> = members
            .members
            .iter()
            .chain([&new])
            .map(|&id| etcd_initial(members.base_port, id))
            .collect();
        members.args.push(etcd_args(
            &members.dir,
            members.base_port,
            new,
            &initial,
            "existing",
        ));
        members.running.push(None);
        members.spawn(new)?;
        let promote = replacement.promote().await?;
        let others = (members.members.iter())
            .chain([&new])
            .filter(|&&id| id != old)
            .map(|&id| etcd_client(members.base_port, id))
            .collect();
        let remove = replacement.remove(&format!("m{old}"), others).await?;
        if let Some(mut member) = members.running[(old - 1) as usize].take() {
            member.kill();
        }
        members.members.retain(|&id| id != old);
        members.members.push(new);
        let times = ReplaceTimes {
            old,
            new,
            before_steps: Duration::ZERO,
            add: replacement.add,
            promote,
            remove,
        };
        self.client_endpoints = members
            .members
            .iter()
            .map(|&id| etcd_client(members.base_port, id))
            .collect();
        Ok(times)
    }

    /// Every running member's `(id, pid)`.
    pub fn processes(&self) -> Vec<(u64, u32)> {
        match &self.members {
            Members::Paxlock(cluster) => cluster
                .ids()
                .into_iter()
                .filter_map(|id| Some((id, cluster.pid(id)?)))
                .collect(),
            Members::Etcd(members) | Members::ZooKeeper(members) => (members.running.iter())
                .enumerate()
                .filter_map(|(index, p)| Some((index as u64 + 1, p.as_ref()?.pid())))
                .collect(),
        }
    }

    /// SIGKILLs a follower (not `leader`), starts it again on its data and
    /// returns the time from its start until the cluster is healthy again
    /// (for Paxlock: every peer connected and caught up).
    pub async fn restart_follower(&mut self, leader: u64) -> anyhow::Result<Duration> {
        let follower = (self.processes().into_iter())
            .map(|(id, _)| id)
            .find(|&id| id != leader)
            .context("no follower running")?;
        self.kill(follower)?;
        let started = Instant::now();
        self.restart(follower).await?;
        self.wait_healthy(STARTUP).await?;
        Ok(started.elapsed())
    }

    /// Snapshot figures of member `leader`. Paxlock: the size of its
    /// newest snapshot once one covers everything committed now, and how
    /// long the node's own code takes, in this process, to restore it (read,
    /// check, decode into the state machine) and to write it (encode, write,
    /// fsync) on the same disk. etcd: its database's size.
    pub async fn snapshot_figures(&self, leader: u64) -> anyhow::Result<Vec<(&'static str, f64)>> {
        match &self.members {
            Members::Paxlock(cluster) => {
                let dir = cluster.data_dir(leader);
                let node = cluster.node(leader)?.listen.to_string();
                let text = fetch_metrics(&node).await?;
                let committed = value(&text, "paxlock_commit_index").context("commit index")?;
                self.snapshot_covering(&dir, committed as u64).await?;
                let scratch = self.dir().join("snapshot-write");
                tokio::task::spawn_blocking(move || measure_snapshot(&dir, &scratch)).await?
            }
            #[cfg(feature = "etcd")]
            Members::Etcd(_) => {
                let endpoint = self
                    .client_endpoints
                    .get((leader as usize).wrapping_sub(1))
                    .context("no such member")?;
                let status = super::etcd::member_status(endpoint).await?;
                Ok(vec![("snapshot_mib", status.db_size as f64 / MIB)])
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Drives cheap commands (a lock taken and released) until the newest
    /// snapshot in `dir` covers slot `slot` (a leader writes one every
    /// 1,000 slots).
    async fn snapshot_covering(&self, dir: &Path, slot: u64) -> anyhow::Result<()> {
        let config = super::driver::paxlock_config(&self.client_config, Duration::from_secs(10))?;
        let client = paxlock::Client::connect(config).await?;
        let deadline = Instant::now() + STARTUP;
        let covered = |dir: &Path| -> anyhow::Result<bool> {
            let newest = paxlock_storage::snapshot::newest_snapshot_slot(dir)?;
            Ok(newest.is_some_and(|covered| covered >= slot))
        };
        while !covered(dir)? {
            if Instant::now() > deadline {
                bail!("no snapshot covered slot {slot} within {STARTUP:?}");
            }
            for _ in 0..500 {
                client
                    .lock("bench-snapshot-driver")
                    .acquire()
                    .await?
                    .release()
                    .await?;
            }
        }
        let _ = client.close().await;
        Ok(())
    }

    /// SIGKILLs member `id`.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        match &mut self.members {
            Members::Paxlock(cluster) => {
                cluster.node(id)?;
                cluster.kill(id);
            }
            Members::Etcd(members) | Members::ZooKeeper(members) => {
                let member = members
                    .running
                    .get_mut((id as usize).wrapping_sub(1))
                    .context("no such member")?;
                if let Some(mut member) = member.take() {
                    member.kill();
                }
            }
        }
        Ok(())
    }

    /// Starts member `id` again on its data directory and waits until it
    /// has rejoined.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        match &mut self.members {
            Members::Paxlock(cluster) => {
                cluster.spawn(id)?;
                cluster.wait_ready(&[id], STARTUP).await?;
            }
            Members::Etcd(members) => {
                members.spawn(id)?;
                self.wait_etcd_healthy(STARTUP).await?;
            }
            Members::ZooKeeper(members) => {
                members.spawn(id)?;
                self.wait_healthy(STARTUP).await?;
            }
        }
        Ok(())
    }

    /// SIGTERM to every member, then SIGKILL after a grace period.
    pub async fn stop(mut self) {
        let grace = Duration::from_secs(5);
        match &mut self.members {
            Members::Paxlock(cluster) => cluster.stop(grace).await,
            Members::Etcd(members) | Members::ZooKeeper(members) => {
                process::stop_all(members.running.iter_mut().flatten(), grace).await;
            }
        }
    }
}
