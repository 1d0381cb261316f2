//! The cluster under test: `paxlock serve` processes that the runner can
//! kill, restart, stop and continue, on a network it can break — either
//! loopback behind fault proxies or one namespace per node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use paxlock::tls::TlsMaterial;
use paxlock::ConnectOptions;
use rustix::process::Signal;
use tokio::process::{Child, Command};

use super::netns::HostNet;
use super::proxy::{self, FaultTable, LinkFaults, Party, Proxy, ProxySpec};
use crate::cli::dev::node_config_at;
use crate::cli::signals;

/// The network the nodes talk over.
enum Network {
    /// 127.0.0.1, every node behind its own fault proxy.
    Loopback {
        table: Arc<FaultTable>,
        _proxies: Vec<Proxy>,
    },
    /// One namespace per node; faults are iptables rules.
    Hosts(HostNet),
}

/// One node process.
struct NodeProc {
    id: u64,
    /// Where clients and peers reach it (proxy or namespace address).
    public: SocketAddr,
    /// Where it really listens.
    real: SocketAddr,
    config: PathBuf,
    namespace: Option<String>,
    child: Option<Child>,
    paused: bool,
}

/// A running chaos cluster.
pub struct ChaosCluster {
    dir: PathBuf,
    exe: PathBuf,
    nodes: Vec<NodeProc>,
    net: Network,
    /// The client certificate every worker uses.
    pub tls: TlsMaterial,
}

/// Limits shared by every node: election history long enough that the
/// final replay covers the whole run, and a short minimum TTL for workers.
const LIMITS: &str = "\n[limits]\nsession_ttl_min = \"1s\"\nelection_history = 50000\n";

impl ChaosCluster {
    /// Starts `n` nodes on 127.0.0.1: node `i` listens on `base_port + i - 1`
    /// and is reached through its proxy on `base_port + 100 + i - 1`.
    pub async fn start_loopback(
        exe: &Path,
        dir: &Path,
        n: u64,
        base_port: u16,
        seed: u64,
    ) -> anyhow::Result<ChaosCluster> {
        let real = |id: u64| SocketAddr::from(([127, 0, 0, 1], base_port + id as u16 - 1));
        let public = |id: u64| SocketAddr::from(([127, 0, 0, 1], base_port + 100 + id as u16 - 1));
        let sans: Vec<(u64, Vec<String>)> = (1..=n).map(|id| (id, Vec::new())).collect();
        let tls = prepare(dir, &sans)?;
        let table = Arc::new(FaultTable::default());
        let node_ports: HashMap<u16, u64> = (1..=n).map(|id| (real(id).port(), id)).collect();
        let mut proxies = Vec::new();
        for id in 1..=n {
            let spec = ProxySpec {
                node: id,
                listen: public(id),
                upstream: real(id),
                node_ports: node_ports.clone(),
                seed: seed.wrapping_mul(31).wrapping_add(id),
            };
            proxies.push(
                proxy::start(spec, table.clone()).await.with_context(|| {
                    format!("starting the proxy for node {id} on {}", public(id))
                })?,
            );
        }
        let nodes = (1..=n)
            .map(|id| node_proc(dir, n, id, real, public, None))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut cluster = ChaosCluster {
            dir: dir.to_path_buf(),
            exe: exe.to_path_buf(),
            nodes,
            net: Network::Loopback {
                table,
                _proxies: proxies,
            },
            tls,
        };
        cluster.start_all()?;
        Ok(cluster)
    }

    /// Starts `n` nodes, each in its own namespace with its own address
    /// (port 7000), certificates naming that address.
    pub async fn start_hosts(
        exe: &Path,
        dir: &Path,
        n: u64,
        tag: u8,
    ) -> anyhow::Result<ChaosCluster> {
        let ids: Vec<u64> = (1..=n).collect();
        let net = HostNet::create(tag, &ids)?;
        let addr = |id: u64| SocketAddr::from((net.node_ip(id), 7000));
        let sans: Vec<(u64, Vec<String>)> = ids
            .iter()
            .map(|&id| (id, vec![net.node_ip(id).to_string()]))
            .collect();
        let tls = prepare(dir, &sans)?;
        let nodes = ids
            .iter()
            .map(|&id| node_proc(dir, n, id, addr, addr, Some(net.namespace(id))))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut cluster = ChaosCluster {
            dir: dir.to_path_buf(),
            exe: exe.to_path_buf(),
            nodes,
            net: Network::Hosts(net),
            tls,
        };
        cluster.start_all()?;
        Ok(cluster)
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Options for a worker's client: every node's public address.
    pub fn connect_options(&self, session_ttl: Duration) -> ConnectOptions {
        ConnectOptions {
            endpoints: self.nodes.iter().map(|n| n.public.to_string()).collect(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            dead_node_timeout: paxlock::DEFAULT_DEAD_NODE_TIMEOUT,
            session_ttl,
            max_clock_drift_ppm: paxlock::DEFAULT_DRIFT_PPM,
        }
    }

    fn start_all(&mut self) -> anyhow::Result<()> {
        for id in self.ids() {
            self.spawn(id)?;
        }
        Ok(())
    }

    fn node_mut(&mut self, id: u64) -> anyhow::Result<&mut NodeProc> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let exe = self.exe.clone();
        let dir = self.dir.clone();
        let node = self.node_mut(id)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("node-{id}.log")))
            .with_context(|| format!("opening the log of node {id}"))?;
        let mut command = match &node.namespace {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&node.config)
            .current_dir(&dir)
            .env(
                "PAXLOCK_LOG",
                std::env::var("PAXLOCK_CHAOS_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting node {id} ({})", exe.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Whether node `id` runs (not killed; it may be paused).
    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.iter().any(|n| n.id == id && n.child.is_some())
    }

    /// SIGKILLs node `id`.
    pub async fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        if let Some(mut child) = node.child.take() {
            child.start_kill()?;
            let _ = child.wait().await;
        }
        node.paused = false;
        Ok(())
    }

    /// Starts node `id` again on its data directory (no wait).
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        if self.is_running(id) {
            return Ok(());
        }
        self.spawn(id)
    }

    /// SIGSTOP (`stop == true`) or SIGCONT to node `id`.
    pub fn signal_pause(&mut self, id: u64, stop: bool) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        let Some(child) = node.child.as_ref() else {
            return Ok(());
        };
        signals::send(child, if stop { Signal::STOP } else { Signal::CONT })
            .with_context(|| format!("signalling node {id}"))?;
        node.paused = stop;
        Ok(())
    }

    /// Sets the faults of one direction of one link.
    pub fn set_link(&self, from: Party, to: Party, faults: LinkFaults) -> anyhow::Result<()> {
        match &self.net {
            Network::Loopback { table, .. } => {
                table.set(from, to, faults);
                Ok(())
            }
            Network::Hosts(net) => net.apply(from, to, &faults),
        }
    }

    /// Whether packets can be delayed and duplicated (loopback proxies
    /// only).
    pub fn supports_delay(&self) -> bool {
        matches!(self.net, Network::Loopback { .. })
    }

    /// The proxies' packet counts (loopback only).
    pub fn packet_counts(&self) -> Option<&proxy::PacketCounts> {
        match &self.net {
            Network::Loopback { table, .. } => Some(&table.counts),
            Network::Hosts(_) => None,
        }
    }

    /// Removes every network fault.
    pub fn heal_network(&self) -> anyhow::Result<()> {
        match &self.net {
            Network::Loopback { table, .. } => table.heal(),
            Network::Hosts(net) => net.heal()?,
        }
        Ok(())
    }

    /// Removes every network fault, continues paused nodes and restarts
    /// killed ones.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.heal_network()?;
        for id in self.ids() {
            if self.nodes.iter().any(|n| n.id == id && n.paused) {
                self.signal_pause(id, false)?;
            }
            self.restart(id)?;
        }
        Ok(())
    }

    /// SIGKILLs every node at once (after continuing paused ones, so the
    /// kill lands on a running process).
    pub async fn kill_all(&mut self) -> anyhow::Result<()> {
        for id in self.ids() {
            self.signal_pause(id, false)?;
        }
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        for id in self.ids() {
            self.kill(id).await?;
        }
        Ok(())
    }

    /// The node that says it leads (asked directly, not through faults).
    pub async fn leader(&self) -> Option<u64> {
        for node in self.nodes.iter().filter(|n| n.child.is_some() && !n.paused) {
            let status = paxlock::admin::node_status(
                &self.tls,
                &node.real.to_string(),
                Duration::from_millis(700),
            )
            .await;
            if let Ok(status) = status {
                if status.leader_node_id == status.node_id && status.node_id != 0 {
                    return Some(status.node_id);
                }
            }
        }
        None
    }

    /// Waits until some node leads.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(id) = self.leader().await {
                return Ok(id);
            }
            if Instant::now() > deadline {
                bail!(
                    "no leader within {timeout:?}; see {}/node-*.log",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM to every node, then SIGKILL after a grace period.
    pub async fn shutdown(mut self) {
        let _ = self.heal();
        let children = self.nodes.iter_mut().filter_map(|n| n.child.as_mut());
        signals::stop_all(children, Duration::from_secs(10)).await;
    }
}

/// Fresh folder with certificates; returns the client's TLS material.
fn prepare(dir: &Path, sans: &[(u64, Vec<String>)]) -> anyhow::Result<TlsMaterial> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let certs = dir.join("certs");
    let paths = paxlock_certs::write_pki(&certs, "dev", sans, &["chaos"])
        .with_context(|| format!("writing certificates to {}", certs.display()))?;
    let (_, cert, key) = paths
        .clients
        .first()
        .context("no client certificate written")?;
    Ok(TlsMaterial::load(&paths.ca_cert, cert, key)?)
}

/// Writes node `id`'s config and data folder.
fn node_proc(
    dir: &Path,
    n: u64,
    id: u64,
    real: impl Fn(u64) -> SocketAddr,
    public: impl Fn(u64) -> SocketAddr,
    namespace: Option<String>,
) -> anyhow::Result<NodeProc> {
    let peers: Vec<(u64, String)> = (1..=n)
        .filter(|&p| p != id)
        .map(|p| (p, public(p).to_string()))
        .collect();
    let listen = real(id).to_string();
    let text = node_config_at(id, &listen, &listen, &peers, LIMITS);
    let config = dir.join(format!("node-{id}.toml"));
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    std::fs::create_dir_all(dir.join("data").join(format!("node-{id}")))?;
    Ok(NodeProc {
        id,
        public: public(id),
        real: real(id),
        config,
        namespace,
        child: None,
        paused: false,
    })
}
