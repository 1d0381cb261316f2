//! The join exchange: a node that is not a member asks one to add it.
//!
//! A node started with `--join` dials a member on its own ALPN
//! ([`JOIN_ALPN`]), sends one [`JoinRequest`] and reads one [`JoinReply`]
//! (`proto/peer.proto` says what each field means). The answering node
//! checks the asker as a peer hello does (its certificate names the node id
//! it claims, same cluster, same shared settings, not a removed id) and
//! hands the request to its [`JoinService`]: the leader makes one step,
//! any other node points at the leader. Nothing else travels on such a
//! connection, and a client certificate can never pass (it is no node's).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use paxlock::wire::{read_frame, write_frame};
use paxlock_core::node_membership::JoinAs;
use paxlock_peer_codec::proto::{join_reply::Outcome, JoinReply, JoinRequest};
use tracing::{info, warn};

use super::identity::peer_certificates;
use super::metrics::TransportMetrics;
use super::peer::{Claim, HelloAs, HELLO_TIMEOUT};
use super::TransportError;

/// The ALPN of the join exchange.
pub const JOIN_ALPN: &[u8] = b"paxlock-join/1";

/// What answers join requests that passed the identity checks.
pub trait JoinService: Send + Sync {
    /// Makes the next step of node `node` (listening at `addr`, configured
    /// with `first_voters` as the cluster's first voters) towards the part
    /// it asked for, and says where it stands.
    fn join<'a>(
        &'a self,
        node: u64,
        addr: SocketAddr,
        wanted: JoinAs,
        first_voters: Vec<u64>,
    ) -> Pin<Box<dyn Future<Output = JoinReply> + Send + 'a>>;
}

/// A reply of `outcome` saying `reason`.
pub fn reply(outcome: Outcome, reason: impl Into<String>) -> JoinReply {
    JoinReply {
        outcome: outcome.into(),
        reason: reason.into(),
        leader_addr: String::new(),
    }
}

/// The address a join request asks to be reached at, or why members could
/// not reach it there.
fn reachable_address(addr: &str) -> Result<SocketAddr, String> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an address (ip:port)"))?;
    if parsed.ip().is_unspecified() || parsed.port() == 0 {
        return Err(format!(
            "{parsed} is not an address members can reach: set `advertise` (or `listen`) \
             to the address (ip:port) the other members dial"
        ));
    }
    Ok(parsed)
}

/// How long a join handshake may take: a member that does not answer
/// within it is down or unreachable, and the next one is asked.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The TLS alert a server sends when it speaks none of the ALPNs offered.
const NO_APPLICATION_PROTOCOL: u8 = 120;

/// Asks the node at `addr` (verified under the TLS name `server_name`, as a
/// client verifies a node) to take `request`'s next step.
pub async fn ask(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    server_name: &str,
    addr: SocketAddr,
    request: &JoinRequest,
) -> Result<JoinReply, TransportError> {
    let connecting = endpoint.connect_with(config, addr, server_name)?;
    let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Err(_) => return Err(TransportError::Timeout("join handshake")),
        Ok(Err(quinn::ConnectionError::ConnectionClosed(close)))
            if close.error_code == quinn::TransportErrorCode::crypto(NO_APPLICATION_PROTOCOL) =>
        {
            return Err(TransportError::Unsupported(
                "it does not take join requests (a release before `serve --join`): upgrade \
                 it, or have an administrator add this node (paxlock members add)",
            ))
        }
        Ok(connected) => connected?,
    };
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await?;
        write_frame(&mut send, request).await?;
        let _ = send.finish();
        match read_frame::<JoinReply, _>(&mut recv).await {
            Ok(Some(reply)) => Ok(reply),
            // A refusal arrives as a connection close; report that, it says why.
            Ok(None) | Err(_) => Err(TransportError::Connection(connection.closed().await)),
        }
    };
    let answer = exchange.await;
    connection.close(0u32.into(), b"join answered");
    answer
}

/// Answers the one join request of `connection` (which negotiated
/// [`JOIN_ALPN`]) as `me`, with `service` deciding the step.
pub async fn answer(
    connection: quinn::Connection,
    me: &HelloAs,
    metrics: &TransportMetrics,
    service: &dyn JoinService,
) {
    let remote = connection.remote_address();
    let reject = |code: u32, reason: String| {
        TransportMetrics::bump(&metrics.peer_identity_rejections);
        warn!(%remote, code, "refused a join request: {reason}");
        connection.close(code.into(), reason.as_bytes());
    };
    let received = tokio::time::timeout(HELLO_TIMEOUT, async {
        let (send, mut recv) = connection.accept_bi().await?;
        let request = read_frame::<JoinRequest, _>(&mut recv).await?;
        Ok::<_, TransportError>((send, request))
    })
    .await;
    let (mut send, request) = match received {
        Ok(Ok((send, Some(request)))) => (send, request),
        Ok(Ok((_, None))) => {
            return reject(
                paxlock::wire::codes::HELLO_REQUIRED,
                "no join request".into(),
            )
        }
        Ok(Err(e)) => {
            return reject(
                paxlock::wire::codes::HELLO_REQUIRED,
                format!("bad join request: {e}"),
            )
        }
        Err(_) => {
            return reject(
                paxlock::wire::codes::HELLO_REQUIRED,
                "no join request in time".into(),
            )
        }
    };
    let claim = Claim {
        cluster_id: &request.cluster_id,
        config_digest: request.config_digest,
        node_id: request.node_id,
    };
    let checked = me
        .check_claim(&claim, &peer_certificates(&connection))
        .and_then(|()| me.check_not_removed(request.node_id));
    if let Err((code, reason)) = checked {
        return reject(code, reason);
    }
    let wanted = if request.voter {
        JoinAs::Voter
    } else {
        JoinAs::Learner
    };
    let answer = match reachable_address(&request.addr) {
        Ok(addr) => {
            info!(node = request.node_id, %addr, ?wanted, "join request");
            (service.join(request.node_id, addr, wanted, request.first_voters)).await
        }
        Err(why) => reply(Outcome::Refused, why),
    };
    if write_frame(&mut send, &answer).await.is_ok() {
        let _ = send.finish();
        // The asker closes once it has read the reply; dropping the
        // connection before could discard it.
        let _ = tokio::time::timeout(HELLO_TIMEOUT, connection.closed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_request_must_name_an_address_members_can_dial() {
        assert!(reachable_address("10.0.0.4:7000").is_ok());
        assert!(reachable_address("[::1]:7000").is_ok());
        for bad in ["0.0.0.0:7000", "[::]:7000", "10.0.0.4:0", "node-4:7000"] {
            let refused = reachable_address(bad).expect_err(bad);
            assert!(refused.contains(bad), "{refused}");
        }
        let refused = reachable_address("").expect_err("no address");
        assert!(refused.contains("is not an address"), "{refused}");
    }
}
