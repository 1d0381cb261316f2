//! Nodes as separate hosts: one network namespace per node, each with its
//! own address on a veth pair attached to a bridge in the runner's
//! namespace (where the workers run, as clients on another host would).
//! Partitions and packet loss are `iptables` rules inside the receiving
//! node's namespace. Everything is created by [`HostNet::create`] and
//! removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context};

use super::proxy::{LinkFaults, Party};

/// The namespaces, veths and bridge of one run.
#[derive(Debug)]
pub struct HostNet {
    tag: u16,
    nodes: Vec<u64>,
}

impl HostNet {
    /// Creates a bridge with the runner's address `10.213.<tag>.1/24` and a
    /// namespace per node with address `10.213.<tag>.<10 + id>`. Leftovers
    /// of an earlier run with the same tag are removed first.
    pub fn create(tag: u8, nodes: &[u64]) -> anyhow::Result<HostNet> {
        for tool in ["ip", "iptables"] {
            if Command::new(tool).arg("-V").output().is_err() {
                bail!("`{tool}` not found: the namespace mode needs iproute2 and iptables (apt-get install iproute2 iptables) and root");
            }
        }
        let net = HostNet {
            tag: u16::from(tag),
            nodes: nodes.to_vec(),
        };
        net.remove();
        let bridge = net.bridge();
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.runner_ip()),
            "dev",
            &bridge,
        ])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        for &id in nodes {
            let ns = net.namespace(id);
            let (host_end, node_end) = (
                format!("plx{}h{id}", net.tag),
                format!("plx{}p{id}", net.tag),
            );
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "link", "add", &host_end, "type", "veth", "peer", "name", &node_end,
            ])?;
            run(&["ip", "link", "set", &node_end, "netns", &ns])?;
            run(&["ip", "link", "set", &host_end, "master", &bridge, "up"])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.node_ip(id)),
                "dev",
                &node_end,
            ])?;
            run(&["ip", "-n", &ns, "link", "set", &node_end, "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The namespace node `id` runs in.
    pub fn namespace(&self, id: u64) -> String {
        format!("plx{}n{id}", self.tag)
    }

    /// Node `id`'s address.
    pub fn node_ip(&self, id: u64) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.tag as u8, 10 + id as u8)
    }

    /// The address clients (the runner's workers) send from.
    pub fn runner_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.tag as u8, 1)
    }

    fn bridge(&self) -> String {
        format!("plx{}br", self.tag)
    }

    fn ip_of(&self, party: Party) -> Ipv4Addr {
        match party {
            Party::Node(id) => self.node_ip(id),
            Party::Clients => self.runner_ip(),
        }
    }

    /// Applies the faults of `from → to` as DROP rules in the receiver's
    /// namespace (random loss through the `statistic` match). Delay and
    /// duplication have no iptables equivalent and are ignored; the
    /// schedule does not draw them in this mode. Packets *to* clients are
    /// filtered on the way out of the sending node instead.
    pub fn apply(&self, from: Party, to: Party, faults: &LinkFaults) -> anyhow::Result<()> {
        let (ns, chain, flag, peer) = match (from, to) {
            (_, Party::Node(id)) => (self.namespace(id), "INPUT", "-s", self.ip_of(from)),
            (Party::Node(id), Party::Clients) => {
                (self.namespace(id), "OUTPUT", "-d", self.runner_ip())
            }
            (Party::Clients, Party::Clients) => return Ok(()),
        };
        let peer = peer.to_string();
        if faults.blocked {
            run(&[
                "ip", "netns", "exec", &ns, "iptables", "-A", chain, flag, &peer, "-j", "DROP",
            ])?;
        } else if faults.drop_ppm > 0 {
            let p = format!("{:.6}", faults.drop_ppm as f64 / 1e6);
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "iptables",
                "-A",
                chain,
                flag,
                &peer,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ])?;
        }
        Ok(())
    }

    /// Removes every rule in every namespace.
    pub fn heal(&self) -> anyhow::Result<()> {
        for &id in &self.nodes {
            let ns = self.namespace(id);
            for chain in ["INPUT", "OUTPUT"] {
                run(&["ip", "netns", "exec", &ns, "iptables", "-F", chain])?;
            }
        }
        Ok(())
    }

    /// Deletes the namespaces (and with them the veths) and the bridge;
    /// ignores what does not exist.
    fn remove(&self) {
        for &id in &self.nodes {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.namespace(id)])
                .output();
            let _ = Command::new("ip")
                .args(["link", "del", &format!("plx{}h{id}", self.tag)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}

impl Drop for HostNet {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Runs one setup command; fails with its stderr.
fn run(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
