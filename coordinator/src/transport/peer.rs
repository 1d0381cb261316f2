//! The peer hello: proving which node is on the other end.
//!
//! The dialer verifies the acceptor by TLS server name (`node-<id>.paxlock`
//! must be in the acceptor's certificate). The acceptor verifies the dialer
//! from the hello's claimed node id against the dialer's client
//! certificate. Both directions are therefore authenticated as a node id,
//! not merely as "someone with a certificate from our CA".

use std::net::SocketAddr;
use std::time::Duration;

use paxlock::wire::{codes, read_frame, write_frame};
use tracing::warn;

use super::identity::{peer_certificates, verify_node_identity};
use super::metrics::TransportMetrics;
use super::peer_proto::{PeerHello, PeerHelloOk, PeerMessage};
use super::{TransportError, PEER_PROTOCOL_VERSION};

/// How long an accepting node waits for a dialer's hello before closing.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// An authenticated outbound link to one peer: frames written here arrive,
/// in order, at that peer.
#[derive(Debug)]
pub struct PeerLink {
    /// The peer's node id, proven by its certificate.
    pub node_id: u64,
    /// The connection (kept to notice when it closes).
    pub connection: quinn::Connection,
    send: quinn::SendStream,
}

impl PeerLink {
    /// Sends one message on the ordered peer stream.
    pub async fn send(&mut self, msg: &PeerMessage) -> Result<(), TransportError> {
        write_frame(&mut self.send, msg).await?;
        Ok(())
    }
}

/// Dials `peer_id` at `addr` as `my_id` and performs the hello.
pub async fn dial(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    my_id: u64,
    cluster_id: &str,
    config_digest: u64,
    peer_id: u64,
    addr: SocketAddr,
) -> Result<PeerLink, TransportError> {
    let server_name = paxlock_certs::node_dns_name(peer_id);
    let connection = endpoint.connect_with(config, addr, &server_name)?.await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    let hello = PeerHello {
        cluster_id: cluster_id.to_string(),
        node_id: my_id,
        protocol_version: PEER_PROTOCOL_VERSION,
        config_digest,
    };
    write_frame(&mut send, &hello).await?;
    let reply = tokio::time::timeout(HELLO_TIMEOUT, read_frame::<PeerHelloOk, _>(&mut recv))
        .await
        .map_err(|_| TransportError::Timeout("peer hello reply"))?;
    let ok = match reply {
        Ok(Some(ok)) => ok,
        // A refusal arrives as a connection close; report that, it says why.
        Ok(None) | Err(_) => {
            let reason = connection.closed().await;
            return Err(TransportError::Connection(reason));
        }
    };
    if ok.node_id != peer_id || ok.cluster_id != cluster_id {
        connection.close(
            codes::CLUSTER_MISMATCH.into(),
            b"unexpected peer hello reply",
        );
        return Err(TransportError::Protocol(format!(
            "dialed node {peer_id} of cluster {cluster_id:?}, but node {} of cluster {:?} answered",
            ok.node_id, ok.cluster_id
        )));
    }
    Ok(PeerLink {
        node_id: peer_id,
        connection,
        send,
    })
}

/// An authenticated inbound link: the stream the peer will send on.
#[derive(Debug)]
pub struct InboundPeer {
    /// The peer's node id, proven by its certificate.
    pub node_id: u64,
    /// The connection.
    pub connection: quinn::Connection,
    /// Frames from the peer.
    pub recv: quinn::RecvStream,
}

impl InboundPeer {
    /// Reads the next message; `Ok(None)` when the peer closed the stream.
    pub async fn next(&mut self) -> Result<Option<PeerMessage>, TransportError> {
        Ok(read_frame(&mut self.recv).await?)
    }
}

/// Runs the accepting side of the hello on a connection that negotiated the
/// peer ALPN. On any failure the connection is closed with a specific code
/// and a warning saying why is logged.
pub async fn accept(
    connection: quinn::Connection,
    my_id: u64,
    cluster_id: &str,
    config_digest: u64,
    metrics: &TransportMetrics,
) -> Result<InboundPeer, TransportError> {
    let remote = connection.remote_address();
    let reject = |code: u32, reason: String| {
        warn!(%remote, code, "rejected peer connection: {reason}");
        connection.close(code.into(), reason.as_bytes());
        TransportError::Protocol(reason)
    };
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        let (send, mut recv) = connection.accept_bi().await?;
        let hello = read_frame::<PeerHello, _>(&mut recv).await?;
        Ok::<_, TransportError>((send, recv, hello))
    })
    .await;
    let (mut send, recv, hello) = match hello {
        Ok(Ok((send, recv, Some(hello)))) => (send, recv, hello),
        Ok(Ok((_, _, None))) => {
            return Err(reject(
                codes::HELLO_REQUIRED,
                "stream closed before hello".into(),
            ))
        }
        Ok(Err(e)) => return Err(reject(codes::HELLO_REQUIRED, format!("bad hello: {e}"))),
        Err(_) => return Err(reject(codes::HELLO_REQUIRED, "no hello in time".into())),
    };
    if hello.cluster_id != cluster_id {
        TransportMetrics::bump(&metrics.peer_identity_rejections);
        return Err(reject(
            codes::CLUSTER_MISMATCH,
            format!(
                "peer claims cluster {:?}, this node is in cluster {cluster_id:?}",
                hello.cluster_id
            ),
        ));
    }
    if hello.config_digest != config_digest {
        TransportMetrics::bump(&metrics.peer_identity_rejections);
        return Err(reject(
            codes::CLUSTER_MISMATCH,
            format!(
                "node {} runs with different shared settings ([limits], max_clock_drift_ppm): \
                 digest {:x}, here {config_digest:x}; every node must use the same values",
                hello.node_id, hello.config_digest
            ),
        ));
    }
    if hello.node_id == my_id {
        TransportMetrics::bump(&metrics.peer_identity_rejections);
        return Err(reject(
            codes::PEER_IDENTITY_MISMATCH,
            format!("peer claims this node's own id {my_id}"),
        ));
    }
    let certs = peer_certificates(&connection);
    if let Err(e) = verify_node_identity(&certs, hello.node_id) {
        TransportMetrics::bump(&metrics.peer_identity_rejections);
        return Err(reject(
            codes::PEER_IDENTITY_MISMATCH,
            format!("peer claims node {}: {e}", hello.node_id),
        ));
    }
    let ok = PeerHelloOk {
        cluster_id: cluster_id.to_string(),
        node_id: my_id,
    };
    write_frame(&mut send, &ok).await?;
    let _ = send.finish();
    Ok(InboundPeer {
        node_id: hello.node_id,
        connection,
        recv,
    })
}
