//! The client library against real nodes: failover past a dead node,
//! refusal of bad credentials without pointless retries, cluster status.

mod common;

use std::time::Duration;

use common::*;
use paxlock::Client;
use paxlock_certs::{ClusterCa, Validity};

fn client_material(
    ca: &ClusterCa,
    signer: &ClusterCa,
) -> Result<paxlock::tls::TlsMaterial, Box<dyn std::error::Error>> {
    let leaf = signer.client_cert("app", Validity::default())?;
    material(ca, &leaf)
}

/// A loopback address where nothing answers QUIC.
fn silent_addr() -> Result<(std::net::UdpSocket, String), Box<dyn std::error::Error>> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let addr = sock.local_addr()?.to_string();
    Ok((sock, addr))
}

#[tokio::test]
async fn client_fails_over_past_a_node_that_does_not_answer() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let node = start_lone_node(&ca, 1)?;
    let (_keep, dead) = silent_addr()?;
    let endpoints = vec![dead.clone(), dead, node.local_addr()?.to_string()];
    let mut options = client_options(endpoints, Duration::from_secs(10));
    options.connect_timeout = Duration::from_millis(300);
    let client = Client::connect_with(client_material(&ca, &ca)?, options).await?;
    let hello = client.hello().await?;
    assert_eq!(hello.node_id, 1);
    client.close().await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_a_fatal_error() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let other = ClusterCa::generate("other")?;
    let node = start_lone_node(&ca, 1)?;
    // Trusts the cluster CA, presents a foreign certificate: every node
    // would refuse it, so the client must say so instead of retrying.
    let foreign = other.client_cert("intruder", Validity::default())?;
    let tls = paxlock::tls::TlsMaterial::from_der(
        &ca.certificate().cert_der,
        &foreign.cert_der,
        &foreign.key_der,
    )?;
    let result = Client::connect_with(
        tls,
        client_options(vec![node.local_addr()?.to_string()], PATIENCE),
    )
    .await;
    match result {
        Err(err @ paxlock::Error::Rejected { .. }) => assert!(!err.is_retryable()),
        other => panic!("expected a rejection, got {other:?}"),
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn status_lists_every_peer_as_connected() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let mut nodes = start_cluster(&ca, 3).await?;
    let addr = nodes[0].local_addr()?.to_string();
    let client = Client::connect_with(
        client_material(&ca, &ca)?,
        client_options(vec![addr], Duration::from_secs(10)),
    )
    .await?;
    let status = client.status().await?;
    let others: Vec<(u64, bool)> = (1..=3)
        .filter(|&id| id != status.node_id)
        .map(|id| (id, true))
        .collect();
    let peers: Vec<(u64, bool)> = status
        .peers
        .iter()
        .map(|p| (p.node_id, p.connected))
        .collect();
    assert_eq!(peers, others);
    client.close().await?;
    for node in nodes.drain(..) {
        node.shutdown().await;
    }
    Ok(())
}
