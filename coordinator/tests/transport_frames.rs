//! Bad frames over real QUIC close their own stream with a protocol error
//! code, are counted, and never reach the node.

mod common;

use common::*;
use paxlock::wire::{codes, CLIENT_ALPN_V1, MAX_FRAME_BYTES};
use paxlock_certs::{ClusterCa, Validity};
use paxlock_coordinator::node::Node;
use paxlock_coordinator::transport::TransportMetrics;

async fn connect(
    ca: &ClusterCa,
    node: &Node,
) -> Result<quinn::Connection, Box<dyn std::error::Error>> {
    let leaf = ca.client_cert("app", Validity::default())?;
    Ok(client_endpoint()?
        .connect_with(
            client_config(ca, Some(&leaf), CLIENT_ALPN_V1)?,
            node.local_addr()?,
            "node-1.paxlock",
        )?
        .await?)
}

/// Sends `bytes` raw on a new stream and returns the code the node reset it with.
async fn reset_code_for(
    conn: &quinn::Connection,
    bytes: &[u8],
) -> Result<Option<u64>, Box<dyn std::error::Error>> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let outcome = tokio::time::timeout(PATIENCE, recv.read_to_end(1 << 20)).await?;
    Ok(match outcome {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => Some(code.into_inner()),
        _ => None,
    })
}

async fn hello_still_works(conn: &quinn::Connection) -> TestResult {
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = paxlock::proto::Request {
        request_id: 9,
        op: Some(paxlock::proto::request::Op::Hello(Default::default())),
        ..Default::default()
    };
    paxlock::wire::write_frame(&mut send, &hello).await?;
    send.finish()?;
    let response: Option<paxlock::proto::Response> = paxlock::wire::read_frame(&mut recv).await?;
    assert_eq!(response.map(|r| r.request_id), Some(9));
    Ok(())
}

#[tokio::test]
async fn oversized_frame_resets_the_stream_with_frame_too_large() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let node = start_lone_node(&ca, 1)?;
    let conn = connect(&ca, &node).await?;
    let prefix = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
    let code = reset_code_for(&conn, &prefix).await?;
    assert_eq!(code, Some(u64::from(codes::FRAME_TOO_LARGE)));
    assert_eq!(TransportMetrics::get(&node.metrics().frame_errors), 1);
    assert_eq!(TransportMetrics::get(&node.metrics().client_requests), 0);
    hello_still_works(&conn).await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn truncated_frame_resets_the_stream_with_malformed_frame() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let node = start_lone_node(&ca, 1)?;
    let conn = connect(&ca, &node).await?;
    // Announces 100 bytes, sends 3, then finishes the stream.
    let mut bytes = 100u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[1, 2, 3]);
    let code = reset_code_for(&conn, &bytes).await?;
    assert_eq!(code, Some(u64::from(codes::MALFORMED_FRAME)));
    assert_eq!(TransportMetrics::get(&node.metrics().frame_errors), 1);
    assert_eq!(TransportMetrics::get(&node.metrics().client_requests), 0);
    hello_still_works(&conn).await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn undecodable_frame_resets_the_stream_with_malformed_frame() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let node = start_lone_node(&ca, 1)?;
    let conn = connect(&ca, &node).await?;
    let body = [0x0f_u8, 0xff, 0xff, 0xff];
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let code = reset_code_for(&conn, &bytes).await?;
    assert_eq!(code, Some(u64::from(codes::MALFORMED_FRAME)));
    assert_eq!(TransportMetrics::get(&node.metrics().frame_errors), 1);
    assert_eq!(TransportMetrics::get(&node.metrics().client_requests), 0);
    hello_still_works(&conn).await?;
    node.shutdown().await;
    Ok(())
}
