//! The launcher on real `paxlock serve` processes: what "ready" means, and
//! a node that cannot start is reported at once, with where its output is.

mod common;

use std::time::Duration;

use common::cluster::PAXLOCK;
use paxlock_launcher::{Cluster, ClusterSpec, LaunchError, NodeBinary};

fn spec(dir: &std::path::Path) -> ClusterSpec {
    let base = common::cluster::free_port_base(3);
    ClusterSpec::loopback(dir, 3, base).startup_timeout(Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_cluster_has_every_node_connected_to_its_peers_under_one_leader() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(NodeBinary::probe(PAXLOCK).unwrap(), spec(dir.path()))
        .await
        .unwrap();
    let mut leaders = Vec::new();
    for id in cluster.ids() {
        let status = cluster.status(id, common::PATIENCE).await.unwrap();
        assert_eq!(status.node_id, id);
        assert_eq!(status.peers.len(), 2, "{status:?}");
        assert!(status.peers.iter().all(|p| p.connected), "{status:?}");
        leaders.push(status.leader_node_id);
    }
    // Leadership may move between the questions, but every node knew one.
    assert!(leaders.iter().all(|&l| (1..=3).contains(&l)), "{leaders:?}");
    assert!(cluster.leader().await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_start_fails_the_start_at_once_naming_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let binary = NodeBinary::probe(PAXLOCK).unwrap();
    let mut cluster = Cluster::prepare(binary, spec(dir.path())).unwrap();
    // A careless edit: node 2's config names a key no release knows.
    let config = cluster.config_path(2);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("no_such_key = 1\n{text}")).unwrap();
    for id in cluster.ids() {
        cluster.spawn(id).unwrap();
    }
    let err = cluster
        .wait_ready(&cluster.ids(), Duration::from_secs(60))
        .await
        .unwrap_err();
    match &err {
        LaunchError::Exited { id, log, .. } => {
            assert_eq!(*id, 2);
            assert!(log.ends_with("node-2.log"), "{err}");
        }
        // Not `NotReady`: an exit is reported when it happens, not when
        // the wait runs out.
        other => panic!("expected node 2 to be reported as exited, got {other}"),
    }
    let log = std::fs::read_to_string(cluster.log_path(2)).unwrap();
    assert!(log.contains("no_such_key"), "{log}");
}
