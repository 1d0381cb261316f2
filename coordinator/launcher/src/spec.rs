//! What a cluster to launch looks like: its nodes' addresses, the config
//! every node gets, how nodes run and where their output goes; and the
//! config files written from it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::LaunchError;

/// One node of a cluster to launch.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Its node id (its certificate names it).
    pub id: u64,
    /// Where it listens (UDP for QUIC, TCP for metrics). The launcher asks
    /// it for its status here, past any fault proxy.
    pub listen: SocketAddr,
    /// Where peers and clients reach it: `listen`, or a fault proxy in
    /// front of it.
    pub public: SocketAddr,
    /// Names its certificate carries besides `localhost` and `127.0.0.1`
    /// (a namespace's address, say).
    pub extra_sans: Vec<String>,
    /// A command the node runs under, program first (for example
    /// `ip netns exec NS`, which runs it in a network namespace); empty
    /// for none. The wrapper must exec the node, so that signals reach it.
    pub wrapper: Vec<OsString>,
    /// A spare: not one of the first voters. Its config says `join = true`
    /// (it takes part once an administrator adds it), the others' configs
    /// and the client config do not name it, and `Cluster::start` does not
    /// start it.
    pub joins: bool,
}

impl NodeSpec {
    /// Node `id` listening on `addr`, reached there directly.
    pub fn at(id: u64, addr: SocketAddr) -> NodeSpec {
        NodeSpec {
            id,
            listen: addr,
            public: addr,
            extra_sans: Vec::new(),
            wrapper: Vec::new(),
            joins: false,
        }
    }
}

/// A line one node wrote to its stdout or stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    /// The node that wrote it.
    pub node: u64,
    /// The line, without its newline.
    pub line: String,
}

/// Where the nodes' stdout and stderr go.
#[derive(Debug, Clone, Default)]
pub enum LogSink {
    /// Appended to `node-N.log` in the cluster folder (kept across
    /// restarts of the node).
    #[default]
    Files,
    /// Sent line by line; a full channel holds the node's output (and,
    /// once its pipe fills, the node) until the receiver catches up.
    Lines(mpsc::Sender<NodeLine>),
}

/// Everything the launcher needs to write and start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The cluster folder: `certs/`, `node-N.toml`, `data/node-N/`,
    /// `client.toml` and (with [`LogSink::Files`]) `node-N.log`.
    pub dir: PathBuf,
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
    /// The cluster name in every certificate and config.
    pub cluster_id: String,
    /// Client identities to issue certificates for; the first one is the
    /// one `client.toml` uses and the launcher asks nodes for their status
    /// with.
    pub clients: Vec<String>,
    /// Top-level TOML keys added to every node config (before its tables).
    pub top_level: String,
    /// TOML tables appended to every node config (a `[limits]` table, say).
    pub tables: String,
    /// Runtime worker threads per node (`serve --worker-threads`); `None`
    /// for the node's default (one per core). Several nodes sharing a
    /// machine run best with one each, so that is the default here.
    pub worker_threads: Option<u16>,
    /// Where node output goes.
    pub logs: LogSink,
    /// Environment variables set (`Some`) or removed (`None`) for every
    /// node, in order.
    pub env: Vec<(String, Option<String>)>,
    /// How long [`crate::Cluster::start`] waits for every node to be ready.
    pub startup_timeout: Duration,
}

/// The default client identity, as `paxlock dev` names it.
pub const DEV_CLIENT: &str = "dev-client";

impl ClusterSpec {
    /// `nodes` nodes on 127.0.0.1, node N on `base_port + N - 1`, in `dir`
    /// (ports past 65535 become 65535, which [`ClusterSpec::check`] then
    /// refuses as shared).
    pub fn loopback(dir: impl Into<PathBuf>, nodes: u64, base_port: u16) -> ClusterSpec {
        let nodes = (1..=nodes)
            .map(|id| {
                let port = u64::from(base_port) + id - 1;
                let port = u16::try_from(port).unwrap_or(u16::MAX);
                NodeSpec::at(id, SocketAddr::from(([127, 0, 0, 1], port)))
            })
            .collect();
        ClusterSpec::with_nodes(dir, nodes)
    }

    /// The given nodes, in `dir`, with every other setting at its default.
    pub fn with_nodes(dir: impl Into<PathBuf>, nodes: Vec<NodeSpec>) -> ClusterSpec {
        ClusterSpec {
            dir: dir.into(),
            nodes,
            cluster_id: "dev".into(),
            clients: vec![DEV_CLIENT.into()],
            top_level: String::new(),
            tables: String::new(),
            worker_threads: Some(1),
            logs: LogSink::Files,
            env: Vec::new(),
            startup_timeout: Duration::from_secs(60),
        }
    }

    /// Adds `n` spare nodes (see [`NodeSpec::joins`]) on loopback, with the
    /// ids and ports after the last node's.
    pub fn spares(mut self, n: u64) -> ClusterSpec {
        for _ in 0..n {
            let last = self.nodes.last().map(|l| (l.id, l.listen));
            let (id, addr) = last.map_or(
                (1, SocketAddr::from(([127, 0, 0, 1], 7000))),
                |(id, addr)| {
                    (
                        id + 1,
                        SocketAddr::new(addr.ip(), addr.port().saturating_add(1)),
                    )
                },
            );
            self.nodes.push(NodeSpec {
                joins: true,
                ..NodeSpec::at(id, addr)
            });
        }
        self
    }

    /// The first voters' specs (every node but the spares).
    pub fn first_voters(&self) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.iter().filter(|n| !n.joins)
    }

    /// Adds top-level TOML keys to every node config.
    pub fn top_level(mut self, toml: &str) -> ClusterSpec {
        self.top_level.push_str(toml);
        self.top_level.push('\n');
        self
    }

    /// Appends TOML tables to every node config.
    pub fn tables(mut self, toml: &str) -> ClusterSpec {
        self.tables.push_str(toml);
        self.tables.push('\n');
        self
    }

    /// Names `identities` the cluster's administrators (an `[access]`
    /// table in every node config; nodes of releases before access control
    /// refuse it).
    pub fn admins(self, identities: &[&str]) -> ClusterSpec {
        let quoted: Vec<String> = identities.iter().map(|i| format!("{i:?}")).collect();
        self.tables(&format!("\n[access]\nadmins = [{}]\n", quoted.join(", ")))
    }

    /// Sets the client identities (the first is the launcher's own).
    pub fn clients(mut self, identities: &[&str]) -> ClusterSpec {
        self.clients = identities.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets the runtime threads per node (`None`: the node's default).
    pub fn worker_threads(mut self, threads: Option<u16>) -> ClusterSpec {
        self.worker_threads = threads;
        self
    }

    /// Sets where node output goes.
    pub fn logs(mut self, sink: LogSink) -> ClusterSpec {
        self.logs = sink;
        self
    }

    /// Sets (`Some`) or removes (`None`) an environment variable for every
    /// node.
    pub fn env(mut self, key: &str, value: Option<&str>) -> ClusterSpec {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.map(str::to_string)));
        self
    }

    /// Sets how long `start` waits for readiness.
    pub fn startup_timeout(mut self, timeout: Duration) -> ClusterSpec {
        self.startup_timeout = timeout;
        self
    }

    /// Refuses a spec whose nodes could not all run: no nodes, a node id
    /// of 0 or given twice, or two nodes on one listen address.
    pub fn check(&self) -> Result<(), LaunchError> {
        if self.nodes.is_empty() {
            return Err(LaunchError::Spec("it has no nodes".into()));
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for node in &self.nodes {
            if node.id == 0 || !ids.insert(node.id) {
                return Err(LaunchError::Spec(format!(
                    "node id {} is 0 or given twice; ids are 1 and up, one per node",
                    node.id
                )));
            }
            if !addrs.insert(node.listen) {
                return Err(LaunchError::Spec(format!(
                    "two nodes listen on {}; give each its own port",
                    node.listen
                )));
            }
        }
        Ok(())
    }

    /// Node `id`'s spec.
    pub fn node(&self, id: u64) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The TOML config of node `id`; paths are relative to the cluster
    /// folder, which is the node's working directory.
    pub fn node_config(&self, node: &NodeSpec) -> String {
        let id = node.id;
        let mut text = format!(
            "node_id = {id}\ncluster_id = \"{}\"\nlisten = \"{}\"\ndata_dir = \"data/node-{id}\"\nmetrics_listen = \"{}\"\n",
            self.cluster_id, node.listen, node.listen
        );
        if node.joins {
            text.push_str("join = true\n");
            // Asking to join, it gives the members the address they
            // reach it at: the proxy's, where there is one.
            if node.public != node.listen {
                text.push_str(&format!("advertise = \"{}\"\n", node.public));
            }
        }
        text.push_str(&self.top_level);
        text.push_str(&format!(
            "\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/node-{id}.pem\"\nkey = \"certs/node-{id}.key\"\n"
        ));
        for peer in self.first_voters().filter(|p| p.id != id) {
            text.push_str(&format!(
                "\n[[peers]]\nid = {}\naddr = \"{}\"\n",
                peer.id, peer.public
            ));
        }
        text.push_str(&self.tables);
        text
    }

    /// The client config: every node's public address, the first client
    /// identity's certificate; paths relative to the cluster folder.
    pub fn client_config(&self) -> String {
        let endpoints: Vec<String> = self
            .first_voters()
            .map(|n| format!("\"{}\"", n.public))
            .collect();
        let identity = self.clients.first().map_or(DEV_CLIENT, String::as_str);
        format!(
            "endpoints = [{}]\nrequest_timeout = \"10s\"\n\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/client-{identity}.pem\"\nkey = \"certs/client-{identity}.key\"\n",
            endpoints.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_config_names_its_peers_by_their_public_address_and_keeps_keys_before_tables() {
        let mut spec = ClusterSpec::loopback("/tmp/x", 3, 7101)
            .top_level("snapshot_every_slots = 16")
            .tables("[limits]\nmax_sessions = 5");
        spec.nodes[1].public = SocketAddr::from(([127, 0, 0, 1], 7202));
        let text = spec.node_config(&spec.nodes[0]);
        let config: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(config["listen"].as_str(), Some("127.0.0.1:7101"));
        assert_eq!(config["snapshot_every_slots"].as_integer(), Some(16));
        assert_eq!(config["limits"]["max_sessions"].as_integer(), Some(5));
        let peers = config["peers"].as_array().unwrap();
        let addrs: Vec<&str> = peers.iter().map(|p| p["addr"].as_str().unwrap()).collect();
        assert_eq!(addrs, ["127.0.0.1:7202", "127.0.0.1:7103"]);
    }

    #[test]
    fn a_spec_with_shared_ports_or_ids_is_refused_before_anything_is_written() {
        let near_the_end = ClusterSpec::loopback("/tmp/x", 3, 65534);
        let err = near_the_end.check().unwrap_err().to_string();
        assert!(err.contains("127.0.0.1:65535"), "{err}");
        let mut twice = ClusterSpec::loopback("/tmp/x", 2, 9000);
        twice.nodes[1].id = 1;
        assert!(twice.check().unwrap_err().to_string().contains("node id 1"));
        let none = ClusterSpec::with_nodes("/tmp/x", Vec::new());
        assert!(none.check().is_err());
        assert!(ClusterSpec::loopback("/tmp/x", 3, 9000).check().is_ok());
    }

    #[test]
    fn the_client_config_lists_public_addresses_and_the_first_identity() {
        let spec = ClusterSpec::loopback("/tmp/x", 2, 9000).clients(&["alice", "bob"]);
        let config: toml::Table = toml::from_str(&spec.client_config()).unwrap();
        let endpoints: Vec<&str> = config["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert_eq!(endpoints, ["127.0.0.1:9000", "127.0.0.1:9001"]);
        assert_eq!(
            config["tls"]["cert"].as_str(),
            Some("certs/client-alice.pem")
        );
    }
}
