//! Mutual TLS over real QUIC on 127.0.0.1: who gets in, who is turned away,
//! and with which error.

mod common;

use common::*;
use paxlock::wire::{codes, CLIENT_ALPN_V1};
use paxlock_certs::{ClusterCa, Validity};
use paxlock_coordinator::transport::join::JOIN_ALPN;
use paxlock_coordinator::transport::peer_version::PEER_ALPN_V3 as PEER_ALPN;
use paxlock_coordinator::transport::TransportMetrics;
use paxlock_peer_codec::proto::{join_reply::Outcome, JoinReply, JoinRequest};
use std::time::Duration;

// TLS alert numbers (RFC 8446 §6); QUIC carries them as 0x100 + alert.
const ALERT_CERTIFICATE_EXPIRED: u8 = 45;
const ALERT_UNKNOWN_CA: u8 = 48;
const ALERT_CERTIFICATE_REQUIRED: u8 = 116;
const ALERT_NO_APPLICATION_PROTOCOL: u8 = 120;

#[tokio::test]
async fn client_with_a_certificate_from_the_cluster_ca_is_served() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let node = start_lone_node(&ca, 1)?;
    let leaf = ca.client_cert("app", Validity::default())?;
    let endpoint = client_endpoint()?;
    let conn = endpoint
        .connect_with(
            client_config(&ca, Some(&leaf), CLIENT_ALPN_V1)?,
            node.local_addr()?,
            "node-1.paxlock",
        )?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = paxlock::proto::Request {
        request_id: 1,
        op: Some(paxlock::proto::request::Op::Hello(paxlock::proto::Hello {
            client_name: "t".into(),
        })),
        ..Default::default()
    };
    paxlock::wire::write_frame(&mut send, &hello).await?;
    send.finish()?;
    let response: Option<paxlock::proto::Response> = paxlock::wire::read_frame(&mut recv).await?;
    let Some(paxlock::proto::response::Result::Hello(ok)) = response.and_then(|r| r.result) else {
        panic!("expected a hello answer");
    };
    assert_eq!(ok.node_id, 1);
    assert_eq!(ok.cluster_id, "test");
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn client_without_a_certificate_is_rejected() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let node = start_lone_node(&ca, 1)?;
    let err = close_reason(
        &client_endpoint()?,
        client_config(&ca, None, CLIENT_ALPN_V1)?,
        node.local_addr()?,
        "node-1.paxlock",
    )
    .await?;
    assert_eq!(tls_alert(&err), Some(ALERT_CERTIFICATE_REQUIRED), "{err}");
    // The node counts the failure after sending the close; give it a moment.
    let counted = tokio::time::timeout(PATIENCE, async {
        while TransportMetrics::get(&node.metrics().handshake_failures) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(counted.is_ok(), "handshake failure was not counted");
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_rejected() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let other = ClusterCa::generate("other")?;
    let node = start_lone_node(&ca, 1)?;
    // Trusts the right CA for the server, but presents a foreign certificate.
    let foreign = other.client_cert("intruder", Validity::default())?;
    let err = close_reason(
        &client_endpoint()?,
        client_config(&ca, Some(&foreign), CLIENT_ALPN_V1)?,
        node.local_addr()?,
        "node-1.paxlock",
    )
    .await?;
    assert_eq!(tls_alert(&err), Some(ALERT_UNKNOWN_CA), "{err}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn expired_client_certificate_is_rejected() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let node = start_lone_node(&ca, 1)?;
    let expired = ca.client_cert(
        "old",
        Validity::Years {
            from: 2020,
            until: 2021,
        },
    )?;
    let err = close_reason(
        &client_endpoint()?,
        client_config(&ca, Some(&expired), CLIENT_ALPN_V1)?,
        node.local_addr()?,
        "node-1.paxlock",
    )
    .await?;
    assert_eq!(tls_alert(&err), Some(ALERT_CERTIFICATE_EXPIRED), "{err}");
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unknown_alpn_is_rejected() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let node = start_lone_node(&ca, 1)?;
    let leaf = ca.client_cert("app", Validity::default())?;
    let err = close_reason(
        &client_endpoint()?,
        client_config(&ca, Some(&leaf), b"paxlock/999")?,
        node.local_addr()?,
        "node-1.paxlock",
    )
    .await?;
    assert_eq!(
        tls_alert(&err),
        Some(ALERT_NO_APPLICATION_PROTOCOL),
        "{err}"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn node_claiming_another_nodes_id_is_closed_with_identity_mismatch() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let node = start_lone_node(&ca, 1)?;
    // Node 2's genuine certificate, but its hello claims to be node 3.
    let node2 = ca.node_cert(2, &[], Validity::default())?;
    let err = peer_hello_verdict(&ca, &node, &node2, 3, shared_digest()).await?;
    match &err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, codes::PEER_IDENTITY_MISMATCH.into());
            let reason = String::from_utf8_lossy(&close.reason);
            assert!(reason.contains("node 3"), "{reason}");
        }
        other => panic!("expected an application close, got {other}"),
    }
    assert_eq!(
        TransportMetrics::get(&node.metrics().peer_identity_rejections),
        1
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn client_certificate_cannot_pose_as_a_node() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let node = start_lone_node(&ca, 1)?;
    let leaf = ca.client_cert("app", Validity::default())?;
    let err = peer_hello_verdict(&ca, &node, &leaf, 2, shared_digest()).await?;
    assert!(
        matches!(&err, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == codes::PEER_IDENTITY_MISMATCH.into()),
        "{err}"
    );
    node.shutdown().await;
    Ok(())
}

/// A client connection with `leaf` is closed with CLIENT_IDENTITY_MISSING,
/// its reason containing `says`.
async fn refused_as_client(ca: &ClusterCa, leaf: &paxlock_certs::Issued, says: &str) -> TestResult {
    let node = start_lone_node(ca, 1)?;
    let err = close_reason(
        &client_endpoint()?,
        client_config(ca, Some(leaf), CLIENT_ALPN_V1)?,
        node.local_addr()?,
        "node-1.paxlock",
    )
    .await?;
    match &err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, codes::CLIENT_IDENTITY_MISSING.into());
            let reason = String::from_utf8_lossy(&close.reason);
            assert!(reason.contains(says), "{reason}");
        }
        other => panic!("expected an application close, got {other}"),
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_node_certificate_cannot_act_as_a_client() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let node2 = ca.node_cert(2, &[], Validity::default())?;
    refused_as_client(&ca, &node2, "node-2.paxlock").await
}

#[tokio::test]
async fn a_wildcard_certificate_cannot_act_as_a_client() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let wildcard = ca.leaf_for_tests("*.apps.example", vec!["*.apps.example".into()])?;
    refused_as_client(&ca, &wildcard, "wildcard").await
}

#[tokio::test]
async fn a_client_certificate_naming_a_node_cannot_pose_as_it() -> TestResult {
    // As an outside CA might issue it: a node's name, client usage only.
    let ca = ClusterCa::generate("test")?;
    let node = start_lone_node(&ca, 1)?;
    let forged = ca.leaf_for_tests("node-2.paxlock", vec!["node-2.paxlock".into()])?;
    let err = peer_hello_verdict(&ca, &node, &forged, 2, shared_digest()).await?;
    match &err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, codes::PEER_IDENTITY_MISMATCH.into());
            let reason = String::from_utf8_lossy(&close.reason);
            assert!(reason.contains("not a node certificate"), "{reason}");
        }
        other => panic!("expected an application close, got {other}"),
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn peers_with_matching_certificates_connect() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let node1 = start_lone_node(&ca, 1)?;
    let node2_cert = ca.node_cert(2, &[], Validity::default())?;
    let options = paxlock_coordinator::node::NodeOptions {
        node_id: 2,
        join: false,
        ask_to_join: None,
        cluster_id: "test".into(),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        peers: [(1, node1.local_addr()?)].into_iter().collect(),
        heartbeat_interval: std::time::Duration::from_millis(20),
        seed: 2,
        metrics_listen: None,
        max_clock_drift_ppm: paxlock::DEFAULT_DRIFT_PPM,
        snapshot_every_slots: 1000,
        clients: Default::default(),
        admins: Default::default(),
        revocations: None,
    };
    let mut node2 = paxlock_coordinator::node::Node::start(
        options,
        &material(&ca, &node2_cert)?,
        memory_parts(),
    )?;
    let connected = tokio::time::timeout(PATIENCE, node2.wait_connected(1)).await?;
    assert_eq!(connected, vec![1]);
    node2.shutdown().await;
    node1.shutdown().await;
    Ok(())
}

/// The settings digest the test nodes run with.
fn shared_digest() -> u64 {
    paxlock_coordinator::node::shared_settings_digest(
        &paxlock_coordinator::locks::Config::default(),
        paxlock::DEFAULT_DRIFT_PPM,
    )
}

#[tokio::test]
async fn peer_with_different_shared_settings_is_refused() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let node = start_lone_node(&ca, 1)?;
    let node2 = ca.node_cert(2, &[], Validity::default())?;
    let err = peer_hello_verdict(&ca, &node, &node2, 2, shared_digest() ^ 1).await?;
    match &err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, codes::CLUSTER_MISMATCH.into());
            assert!(String::from_utf8_lossy(&close.reason).contains("same values"));
        }
        other => panic!("expected an application close, got {other}"),
    }
    node.shutdown().await;
    Ok(())
}

/// Dials `node` with the peer ALPN presenting `cert`, sends a hello claiming
/// `claimed_id` with `digest`, and returns how the node closed the connection.
async fn peer_hello_verdict(
    ca: &ClusterCa,
    node: &paxlock_coordinator::node::Node,
    cert: &paxlock_certs::Issued,
    claimed_id: u64,
    digest: u64,
) -> Result<quinn::ConnectionError, Box<dyn std::error::Error>> {
    let conn = client_endpoint()?
        .connect_with(
            client_config(ca, Some(cert), PEER_ALPN)?,
            node.local_addr()?,
            "node-1.paxlock",
        )?
        .await?;
    let (mut send, _recv) = conn.open_bi().await?;
    let hello = paxlock_peer_codec::proto::PeerHello {
        cluster_id: "test".into(),
        node_id: claimed_id,
        protocol_version: 1,
        config_digest: digest,
        incarnation: 0,
    };
    paxlock::wire::write_frame(&mut send, &hello).await?;
    Ok(tokio::time::timeout(PATIENCE, conn.closed()).await?)
}

/// Dials `node` with the join ALPN presenting `cert`, asks to join as node
/// `claimed_id` reachable at `addr` (the first voters as node 1 alone has
/// them, unless `first_voters` says otherwise), and returns the reply, or
/// how the node closed the connection instead.
async fn join_verdict(
    ca: &ClusterCa,
    node: &paxlock_coordinator::node::Node,
    cert: &paxlock_certs::Issued,
    claimed_id: u64,
    addr: &str,
    first_voters: Option<Vec<u64>>,
) -> Result<Result<JoinReply, quinn::ConnectionError>, Box<dyn std::error::Error>> {
    let conn = client_endpoint()?
        .connect_with(
            client_config(ca, Some(cert), JOIN_ALPN)?,
            node.local_addr()?,
            "node-1.paxlock",
        )?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let request = JoinRequest {
        cluster_id: "test".into(),
        node_id: claimed_id,
        config_digest: shared_digest(),
        addr: addr.into(),
        voter: true,
        first_voters: first_voters.unwrap_or(vec![1]),
    };
    paxlock::wire::write_frame(&mut send, &request).await?;
    let reply = tokio::time::timeout(
        PATIENCE,
        paxlock::wire::read_frame::<JoinReply, _>(&mut recv),
    )
    .await?;
    Ok(match reply {
        Ok(Some(reply)) => Ok(reply),
        _ => Err(tokio::time::timeout(PATIENCE, conn.closed()).await?),
    })
}

#[tokio::test]
async fn only_a_node_certificate_naming_the_id_and_the_first_voters_may_ask_to_join() -> TestResult
{
    let ca = ClusterCa::generate("test")?;
    let node = start_lone_node(&ca, 1)?;
    // A client's session is opened by the leader: once it has one, node 1
    // leads.
    let client_cert = ca.client_cert("reader", Validity::default())?;
    let reader = paxlock::Client::connect_with(
        material(&ca, &client_cert)?,
        client_options(
            vec![node.local_addr()?.to_string()],
            Duration::from_secs(10),
        ),
    )
    .await?;
    let closed_with =
        |verdict: Result<JoinReply, quinn::ConnectionError>, code: u32, says: &str| match verdict {
            Err(quinn::ConnectionError::ApplicationClosed(close)) => {
                assert_eq!(close.error_code, code.into());
                let reason = String::from_utf8_lossy(&close.reason);
                assert!(reason.contains(says), "{reason}");
            }
            other => panic!("expected an application close, got {other:?}"),
        };
    // A client certificate is no node's, whatever it asks.
    let client = ca.client_cert("app", Validity::default())?;
    let verdict = join_verdict(&ca, &node, &client, 2, "127.0.0.1:7002", None).await?;
    closed_with(
        verdict,
        codes::PEER_IDENTITY_MISMATCH,
        "not a node certificate",
    );
    // Node 2's certificate cannot ask for node 3.
    let node2 = ca.node_cert(2, &[], Validity::default())?;
    let verdict = join_verdict(&ca, &node, &node2, 3, "127.0.0.1:7003", None).await?;
    closed_with(
        verdict,
        codes::PEER_IDENTITY_MISMATCH,
        "does not name node 3",
    );
    // An address nobody can dial, and one where nothing answers as node 2:
    // refused, saying why.
    let refused = |verdict: Result<JoinReply, quinn::ConnectionError>, says: &str| {
        let reply = verdict.expect("a reply");
        assert_eq!(reply.outcome(), Outcome::Refused, "{reply:?}");
        assert!(reply.reason.contains(says), "{reply:?}");
    };
    refused(
        join_verdict(&ca, &node, &node2, 2, "0.0.0.0:7002", None).await?,
        "not an address members can reach",
    );
    let silent = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    refused(
        join_verdict(&ca, &node, &node2, 2, &silent.to_string(), None).await?,
        "cannot be reached",
    );
    // A node configured with other first voters would replay the log's
    // first slots under other voters.
    refused(
        join_verdict(&ca, &node, &node2, 2, "127.0.0.1:7002", Some(vec![1, 2, 3])).await?,
        "list exactly those as its [[peers]]",
    );
    // Nothing changed: the lone node is still the only member.
    let members = reader.members().await?;
    assert_eq!(members.voters(), vec![1], "{members:?}");
    assert!(members.learners().is_empty(), "{members:?}");
    let _ = reader.close().await;
    node.shutdown().await;
    Ok(())
}
