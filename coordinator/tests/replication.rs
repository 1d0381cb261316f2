//! Multi-Paxos over real QUIC between three in-process nodes: a leader is
//! elected, proposals are chosen and applied in the same order everywhere,
//! and a new leader takes over when the old one goes away.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use paxlock_certs::{ClusterCa, Validity};
use paxlock_coordinator::node::driver::{Application, MemoryDurability};
use paxlock_coordinator::node::{App, Node, NodeOptions, NodeParts};
use paxlock_coordinator::paxos::{ChosenEntry, Snapshot};

/// Records every applied command, in order.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

impl Application for Recorder {
    fn install_snapshot(&mut self, _snapshot: &Snapshot) -> Result<(), String> {
        Ok(())
    }
    fn apply(&mut self, entry: &ChosenEntry) {
        if let Ok(mut log) = self.0.lock() {
            log.extend(entry.batch.iter().map(|v| v.to_vec()));
        }
    }
}

impl Recorder {
    fn applied(&self) -> Vec<Vec<u8>> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

async fn start_recorded_cluster(
    ca: &ClusterCa,
) -> Result<(Vec<Option<Node>>, Vec<Recorder>), Box<dyn std::error::Error>> {
    let sockets: Vec<std::net::UdpSocket> = (0..3)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<std::net::SocketAddr> = sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    drop(sockets);
    let mut nodes = Vec::new();
    let mut recorders = Vec::new();
    for id in 1..=3u64 {
        let cert = ca.node_cert(id, &[], Validity::default())?;
        let recorder = Recorder::default();
        let options = NodeOptions {
            node_id: id,
            join: false,
            ask_to_join: None,
            cluster_id: "test".into(),
            listen: addrs[(id - 1) as usize],
            peers: (1..=3u64)
                .filter(|&p| p != id)
                .map(|p| (p, addrs[(p - 1) as usize]))
                .collect(),
            heartbeat_interval: Duration::from_millis(20),
            seed: id,
            metrics_listen: None,
            max_clock_drift_ppm: paxlock::DEFAULT_DRIFT_PPM,
            snapshot_every_slots: 1000,
            clients: Default::default(),
            admins: Default::default(),
            revocations: None,
        };
        let parts = NodeParts {
            app: App::Custom(Box::new(recorder.clone())),
            durability: Box::new(MemoryDurability::default()),
            recovered: Default::default(),
            incarnations: None,
        };
        nodes.push(Some(Node::start(options, &material(ca, &cert)?, parts)?));
        recorders.push(recorder);
    }
    Ok((nodes, recorders))
}

/// Waits until exactly one live node leads; returns its index.
async fn wait_for_leader(nodes: &[Option<Node>]) -> Result<usize, Box<dyn std::error::Error>> {
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let leaders: Vec<usize> = nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.as_ref().is_some_and(|n| n.status().is_leader))
                .map(|(i, _)| i)
                .collect();
            if let [one] = leaders[..] {
                return one;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    Ok(found)
}

/// Proposes `values` through whichever node leads until `recorders` at
/// `live` all applied at least `expect` commands.
async fn replicate(
    nodes: &[Option<Node>],
    recorders: &[Recorder],
    live: &[usize],
    values: Vec<Vec<u8>>,
    expect: usize,
) -> TestResult {
    let mut proposed = false;
    tokio::time::timeout(PATIENCE * 2, async {
        loop {
            if !proposed {
                if let Ok(leader) = wait_for_leader(nodes).await {
                    if let Some(node) = &nodes[leader] {
                        proposed = node.propose(values.clone()).await;
                    }
                }
            }
            if live.iter().all(|&i| recorders[i].applied().len() >= expect) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_are_applied_in_the_same_order_on_every_node() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let (mut nodes, recorders) = start_recorded_cluster(&ca).await?;
    let values: Vec<Vec<u8>> = (0u8..20).map(|i| vec![i]).collect();
    replicate(&nodes, &recorders, &[0, 1, 2], values.clone(), 20).await?;
    for recorder in &recorders {
        assert_eq!(recorder.applied(), values);
    }
    for node in nodes.iter_mut().filter_map(Option::take) {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_when_the_leader_stops() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let (mut nodes, recorders) = start_recorded_cluster(&ca).await?;
    replicate(&nodes, &recorders, &[0, 1, 2], vec![b"before".to_vec()], 1).await?;
    let old = wait_for_leader(&nodes).await?;
    if let Some(node) = nodes[old].take() {
        node.shutdown().await;
    }
    let live: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    replicate(&nodes, &recorders, &live, vec![b"after".to_vec()], 2).await?;
    let new = wait_for_leader(&nodes).await?;
    assert_ne!(new, old);
    for &i in &live {
        assert_eq!(
            recorders[i].applied(),
            vec![b"before".to_vec(), b"after".to_vec()]
        );
    }
    for node in nodes.iter_mut().filter_map(Option::take) {
        node.shutdown().await;
    }
    Ok(())
}
