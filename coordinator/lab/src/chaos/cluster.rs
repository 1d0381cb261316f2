//! The cluster under test: `paxlock serve` processes (started by the
//! launcher) that the runner can kill, restart, stop and continue, on a
//! network it can break: either loopback behind fault proxies or one
//! namespace per node.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use paxlock::tls::TlsMaterial;
use paxlock::ConnectOptions;
use paxlock_launcher::{Cluster, ClusterSpec, NodeBinary, NodeSpec};

use super::netns::HostNet;
use super::proxy::{self, FaultTable, LinkFaults, Party, Proxy, ProxySpec};

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

/// A running chaos cluster. The nodes (first field) stop before the
/// network they talk over goes away.
pub struct ChaosCluster {
    nodes: Cluster,
    net: Network,
    /// The client certificate every worker uses.
    pub tls: TlsMaterial,
    /// The members now, in the order they became members.
    members: Vec<u64>,
    /// Spare nodes not used yet (configured to join; not started).
    spares: Vec<u64>,
}

/// Limits shared by every node: election history long enough that the
/// final replay covers the whole run, and a short minimum TTL for workers.
const LIMITS: &str = "[limits]\nsession_ttl_min = \"1s\"\nelection_history = 50000";

impl ChaosCluster {
    /// Starts `n` nodes on 127.0.0.1: node `i` listens on `base_port + i - 1`
    /// and is reached through its proxy on `base_port + 100 + i - 1`; and
    /// prepares `spares` more (ids after them, behind proxies too, with
    /// `join = true`) for the membership fault, not started.
    pub async fn start_loopback(
        binary: NodeBinary,
        dir: &Path,
        (n, spares): (u64, u64),
        base_port: u16,
        seed: u64,
    ) -> anyhow::Result<ChaosCluster> {
        let all = n + spares;
        let real = |id: u64| SocketAddr::from(([127, 0, 0, 1], base_port + id as u16 - 1));
        let public = |id: u64| SocketAddr::from(([127, 0, 0, 1], base_port + 100 + id as u16 - 1));
        let table = Arc::new(FaultTable::default());
        let node_ports: HashMap<u16, u64> = (1..=all).map(|id| (real(id).port(), id)).collect();
        let mut proxies = Vec::new();
        for id in 1..=all {
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
        let nodes = (1..=all)
            .map(|id| NodeSpec {
                public: public(id),
                joins: id > n,
                ..NodeSpec::at(id, real(id))
            })
            .collect();
        let net = Network::Loopback {
            table,
            _proxies: proxies,
        };
        ChaosCluster::start(binary, dir, nodes, net).await
    }

    /// Starts `n` nodes, each in its own namespace with its own address
    /// (port 7000), certificates naming that address.
    pub async fn start_hosts(
        binary: NodeBinary,
        dir: &Path,
        n: u64,
        tag: u8,
    ) -> anyhow::Result<ChaosCluster> {
        let ids: Vec<u64> = (1..=n).collect();
        let net = HostNet::create(tag, &ids)?;
        let nodes = ids
            .iter()
            .map(|&id| {
                let ip = net.node_ip(id);
                let wrapper = ["ip", "netns", "exec"]
                    .into_iter()
                    .map(OsString::from)
                    .chain([OsString::from(net.namespace(id))])
                    .collect();
                NodeSpec {
                    extra_sans: vec![ip.to_string()],
                    wrapper,
                    ..NodeSpec::at(id, SocketAddr::from((ip, 7000)))
                }
            })
            .collect();
        ChaosCluster::start(binary, dir, nodes, Network::Hosts(net)).await
    }

    async fn start(
        binary: NodeBinary,
        dir: &Path,
        nodes: Vec<NodeSpec>,
        net: Network,
    ) -> anyhow::Result<ChaosCluster> {
        let _ = std::fs::remove_dir_all(dir);
        let log_level =
            std::env::var("PAXLOCK_CHAOS_NODE_LOG").unwrap_or_else(|_| "info".to_string());
        let spec = ClusterSpec::with_nodes(dir, nodes)
            .clients(&["chaos"])
            // The runner administers: it force-releases and revokes.
            .admins(&["chaos"])
            .tables(LIMITS)
            .env("PAXLOCK_LOG", Some(&log_level))
            .startup_timeout(Duration::from_secs(60));
        let members = spec.first_voters().map(|n| n.id).collect();
        let spares = spec
            .nodes
            .iter()
            .filter(|n| n.joins)
            .map(|n| n.id)
            .collect();
        let nodes = Cluster::start(binary, spec).await?;
        Ok(ChaosCluster {
            tls: nodes.tls().clone(),
            nodes,
            net,
            members,
            spares,
        })
    }

    /// The members' ids (faults hit only them).
    pub fn ids(&self) -> Vec<u64> {
        self.members.clone()
    }

    /// Starts the next spare node, if one is left; returns its id and the
    /// address its peers and clients reach it at. With `ask_to_join`, it
    /// asks the members to add it (`serve --join`, naming every member's
    /// address); else it waits for an administrator.
    pub fn start_spare(&mut self, ask_to_join: bool) -> anyhow::Result<Option<(u64, SocketAddr)>> {
        if self.spares.is_empty() {
            return Ok(None);
        }
        let id = self.spares.remove(0);
        let public = self.nodes.node(id)?.public;
        if ask_to_join {
            let members = self.connect_options(Duration::ZERO).endpoints;
            self.nodes.spawn_asking_to_join(id, &members)?;
        } else {
            self.nodes.spawn(id)?;
        }
        Ok(Some((id, public)))
    }

    /// The member at the place node `drawn` had among the first members,
    /// counting places modulo the members there are now (the schedule
    /// draws network faults from the first members' ids; members leave
    /// and join, and the members after a leaver move up one place), so
    /// that network faults always hit members, distinct ids staying
    /// distinct while there are as many members.
    pub fn in_place_of(&self, drawn: u64) -> u64 {
        if self.members.is_empty() {
            return drawn;
        }
        let place = usize::try_from(drawn.saturating_sub(1)).unwrap_or(0);
        self.members[place % self.members.len()]
    }

    /// The spare node `start_spare` starts next.
    pub fn next_spare(&self) -> Option<u64> {
        self.spares.first().copied()
    }

    /// Spare nodes not started yet.
    pub fn spares_left(&self) -> usize {
        self.spares.len()
    }

    /// Node `new` became a member: faults target it from now on.
    pub fn joined(&mut self, new: u64) {
        if !self.members.contains(&new) {
            self.members.push(new);
        }
    }

    /// Node `old` left for good: faults never target or restart it (it
    /// stops by itself once removed; killed here to be sure).
    pub fn removed(&mut self, old: u64) {
        self.members.retain(|&m| m != old);
        self.nodes.kill(old);
    }

    /// Asks node `id` for its status directly (not through the faults).
    pub async fn status(&self, id: u64) -> anyhow::Result<paxlock::proto::StatusOk> {
        Ok(self.nodes.status(id, Duration::from_secs(1)).await?)
    }

    /// Options for a client: the members' public addresses.
    pub fn connect_options(&self, session_ttl: Duration) -> ConnectOptions {
        let endpoints = (self.members.iter())
            .filter_map(|&id| self.nodes.node(id).ok())
            .map(|node| node.public.to_string())
            .collect();
        ConnectOptions {
            endpoints,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            dead_node_timeout: paxlock::DEFAULT_DEAD_NODE_TIMEOUT,
            session_ttl,
            max_clock_drift_ppm: paxlock::DEFAULT_DRIFT_PPM,
            member_sync_interval: paxlock::DEFAULT_MEMBER_SYNC_INTERVAL,
        }
    }

    /// SIGKILLs node `id`.
    pub fn kill(&mut self, id: u64) {
        self.nodes.kill(id);
    }

    /// Starts node `id` again on its data directory (no wait).
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        if !self.nodes.is_running(id) {
            self.nodes.spawn(id)?;
        }
        Ok(())
    }

    /// SIGSTOP (`stop == true`) or SIGCONT to node `id`.
    pub fn signal_pause(&mut self, id: u64, stop: bool) -> anyhow::Result<()> {
        if stop {
            self.nodes.pause(id)?;
        } else {
            self.nodes.resume(id)?;
        }
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
            if self.nodes.is_paused(id) {
                self.nodes.resume(id)?;
            }
            self.restart(id)?;
        }
        Ok(())
    }

    /// SIGKILLs every node at once.
    pub fn kill_all(&mut self) {
        self.nodes.kill_all();
    }

    /// The node that says it leads (asked directly, not through faults).
    pub async fn leader(&self) -> Option<u64> {
        self.nodes.leader().await
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
                    self.nodes.dir().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM to every node, then SIGKILL after a grace period.
    pub async fn shutdown(mut self) {
        let _ = self.heal_network();
        self.nodes.stop(Duration::from_secs(10)).await;
    }
}
