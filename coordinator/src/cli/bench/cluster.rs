//! Local 3-node clusters the bench starts itself: Paxlock (`paxlock serve`
//! processes from configs written like `paxlock dev` does) and etcd
//! (`etcd` members on loopback), each with its own data directories.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// What `paxlock serve` prints once connected to every peer.
use crate::cli::dev::{client_config_text, node_config};
use crate::cli::serve::CONNECTED_MARKER;

use super::probe::{fetch_metrics, value, Probe};

/// A member process and how to start it again.
struct Member {
    id: u64,
    program: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

/// A running local cluster.
pub struct LocalCluster {
    kind: Kind,
    dir: PathBuf,
    members: Vec<Member>,
    ready: mpsc::UnboundedReceiver<u64>,
    ready_tx: mpsc::UnboundedSender<u64>,
    base_port: u16,
    /// Paxlock: the client config; etcd: unused.
    pub client_config: PathBuf,
    /// etcd: client `host:port` per member (index = id - 1).
    pub client_endpoints: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Paxlock,
    Etcd,
}

impl LocalCluster {
    /// Writes certificates and configs into `dir` and starts 3 Paxlock nodes.
    pub async fn start_paxlock(
        exe: &Path,
        dir: &Path,
        base_port: u16,
    ) -> anyhow::Result<LocalCluster> {
        let _ = std::fs::remove_dir_all(dir);
        let certs = dir.join("certs");
        paxlock_certs::write_dev_pki(&certs, "dev", 3, &[], &["dev-client"])
            .with_context(|| format!("writing dev certificates to {}", certs.display()))?;
        let mut members = Vec::new();
        for id in 1..=3u64 {
            let path = dir.join(format!("node-{id}.toml"));
            std::fs::create_dir_all(dir.join("data").join(format!("node-{id}")))?;
            std::fs::write(&path, node_config(id, 3, base_port))?;
            members.push(Member {
                id,
                program: exe.to_path_buf(),
                // Three nodes share this machine's cores: one runtime
                // thread each (measured: lower latency and higher
                // throughput than one thread per core in every process).
                args: vec![
                    "serve".into(),
                    "--worker-threads".into(),
                    "1".into(),
                    "--config".into(),
                    path.display().to_string(),
                ],
                child: None,
            });
        }
        let client_config = dir.join("client.toml");
        std::fs::write(&client_config, client_config_text(3, base_port))?;
        let (ready_tx, ready) = mpsc::unbounded_channel();
        let mut cluster = LocalCluster {
            kind: Kind::Paxlock,
            dir: dir.to_path_buf(),
            members,
            ready,
            ready_tx,
            base_port,
            client_config,
            client_endpoints: Vec::new(),
        };
        for id in 1..=3 {
            cluster.spawn(id)?;
        }
        cluster.wait_ready(3, Duration::from_secs(60)).await?;
        Ok(cluster)
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
        let client = |id: u64| format!("127.0.0.1:{}", u64::from(base_port) + id - 1);
        let peer = |id: u64| format!("http://127.0.0.1:{}", u64::from(base_port) + 9 + id);
        let initial: Vec<String> = (1..=3).map(|id| format!("m{id}={}", peer(id))).collect();
        let mut members = Vec::new();
        for id in 1..=3u64 {
            let args = vec![
                "--name".into(),
                format!("m{id}"),
                "--data-dir".into(),
                dir.join(format!("m{id}")).display().to_string(),
                "--listen-client-urls".into(),
                format!("http://{}", client(id)),
                "--advertise-client-urls".into(),
                format!("http://{}", client(id)),
                "--listen-peer-urls".into(),
                peer(id),
                "--initial-advertise-peer-urls".into(),
                peer(id),
                "--initial-cluster".into(),
                initial.join(","),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                format!("paxlock-bench-{base_port}"),
            ];
            members.push(Member {
                id,
                program: exe.to_path_buf(),
                args,
                child: None,
            });
        }
        let (ready_tx, ready) = mpsc::unbounded_channel();
        let mut cluster = LocalCluster {
            kind: Kind::Etcd,
            dir: dir.to_path_buf(),
            members,
            ready,
            ready_tx,
            base_port,
            client_config: PathBuf::new(),
            client_endpoints: (1..=3).map(client).collect(),
        };
        for id in 1..=3 {
            cluster.spawn(id)?;
        }
        cluster.wait_etcd_healthy(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let kind = self.kind;
        let log_path = self.dir.join(format!("member-{id}.log"));
        let member = self
            .members
            .iter_mut()
            .find(|m| m.id == id)
            .context("no such member")?;
        let mut child = Command::new(&member.program)
            .args(&member.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", member.program.display()))?;
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = self.ready_tx.clone();
            let log_path = log_path.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut log = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .await
                    .ok();
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if kind == Kind::Paxlock && line.contains(CONNECTED_MARKER) {
                        let _ = tx.send(id);
                    }
                    if let Some(log) = log.as_mut() {
                        let _ = log.write_all(line.as_bytes()).await;
                        let _ = log.write_all(b"\n").await;
                    }
                }
            });
        }
        member.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < count {
            match tokio::time::timeout_at(deadline.into(), self.ready.recv()).await {
                Ok(Some(id)) => {
                    seen.insert(id);
                }
                Ok(None) | Err(_) => bail!(
                    "cluster not connected within {timeout:?}; see {}/member-*.log",
                    self.dir.display()
                ),
            }
        }
        Ok(())
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
                    self.dir.display()
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
            let (member, l) = super::etcd::member_status(ep).await?;
            if l == "0" {
                bail!("no leader");
            }
            ids.push(member);
            leader = Some(l);
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

    /// The leader, without the catch-up check.
    pub async fn wait_healthy_leader_only(&self) -> anyhow::Result<u64> {
        if self.kind == Kind::Etcd {
            return self.etcd_leader().await;
        }
        let config = super::driver::paxlock_config(&self.client_config, Duration::from_secs(10))?;
        let client = paxlock::Client::connect(config).await?;
        let status = client.status().await;
        let _ = client.close().await;
        Ok(status?.leader_node_id)
    }

    async fn health(&self) -> anyhow::Result<u64> {
        if self.kind == Kind::Etcd {
            return self.etcd_leader().await;
        }
        let config = super::driver::paxlock_config(&self.client_config, Duration::from_secs(10))?;
        let client = paxlock::Client::connect(config).await?;
        let status = client.status().await;
        let _ = client.close().await;
        let status = status?;
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

    /// Each member's Prometheus endpoint (`host:port`): Paxlock nodes serve
    /// it on their own port number over TCP, etcd on its client URL.
    fn metrics_addrs(&self) -> Vec<String> {
        match self.kind {
            Kind::Paxlock => (0..self.members.len() as u64)
                .map(|i| format!("127.0.0.1:{}", u64::from(self.base_port) + i))
                .collect(),
            Kind::Etcd => self.client_endpoints.clone(),
        }
    }

    /// Reads the members' server-side latency figures.
    pub fn probe(&self) -> Probe {
        match self.kind {
            Kind::Paxlock => Probe::paxlock(self.metrics_addrs()),
            Kind::Etcd => Probe::etcd(self.metrics_addrs()),
        }
    }

    /// SIGKILLs member `id`.
    pub async fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let member = self
            .members
            .iter_mut()
            .find(|m| m.id == id)
            .context("no such member")?;
        if let Some(mut child) = member.child.take() {
            child.start_kill()?;
            let _ = child.wait().await;
        }
        Ok(())
    }

    /// Starts member `id` again on its data directory and waits until it
    /// has rejoined.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id)?;
        match self.kind {
            Kind::Paxlock => self.wait_ready(1, Duration::from_secs(60)).await,
            Kind::Etcd => self.wait_etcd_healthy(Duration::from_secs(60)).await,
        }
    }

    /// SIGTERM to every member, then SIGKILL after a grace period.
    pub async fn stop(mut self) {
        let children = self.members.iter_mut().filter_map(|m| m.child.as_mut());
        crate::cli::signals::stop_all(children, Duration::from_secs(5)).await;
    }
}
