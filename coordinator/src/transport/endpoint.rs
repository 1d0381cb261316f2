//! The node's one QUIC endpoint: accepts peers and clients, dials peers.

use std::net::SocketAddr;
use std::sync::Arc;

use paxlock::wire::CLIENT_ALPN_V1;
use tracing::{info, warn};

use super::client_limits::ClientGate;
use super::client_limits::HandshakeVerdict;
use super::client_streams::{serve_connection, ClientService};
use super::identity::{client_identity, peer_certificates};
use super::join::{self, JoinService, JOIN_ALPN};
use super::lanes::PeerInbox;
use super::metrics::TransportMetrics;
use super::negotiated_alpn;
use super::peer::{self, FrameReader, InboundPeer, PeerLink};
use super::peer_version::{PeerVersion, PEER_ALPNS};
use super::tls::TlsMaterial;
use super::TransportError;
use crate::paxos::NodeId;
use dashmap::{DashMap, DashSet};
use paxlock_peer_codec as peer_codec;
use paxlock_storage::Incarnations;

/// Where the endpoint delivers what arrives.
#[derive(Clone)]
pub struct Handlers {
    /// Decoded consensus messages from authenticated peers, tagged with the
    /// sender's node id. The stream's reader decodes and delivers them
    /// itself, with no task in between, because every hop here is on the
    /// commit path.
    /// One queue per lane (see `lanes`), bounded in bytes as well (each
    /// message is charged its `encoded_len_bound`): a reader waits for
    /// room, which holds back its peer through QUIC flow control.
    pub peer_messages: PeerInbox,
    /// What answers well-formed client requests.
    pub clients: Arc<dyn ClientService>,
    /// What client connections may hold of the node.
    pub client_gate: Arc<ClientGate>,
    /// What answers join requests from nodes that are not members yet.
    pub joins: Arc<dyn JoinService>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers").finish_non_exhaustive()
    }
}

/// Unidirectional streams a connection may have open at once (a peer's
/// control lane needs one).
const PEER_UNI_STREAMS: u32 = 4;

/// A node's QUIC endpoint.
#[derive(Debug)]
pub struct NodeEndpoint {
    endpoint: quinn::Endpoint,
    node_id: u64,
    cluster_id: String,
    config_digest: u64,
    peer_dial_config: quinn::ClientConfig,
    join_dial_config: quinn::ClientConfig,
    metrics: Arc<TransportMetrics>,
    incarnations: Option<Arc<Incarnations>>,
    /// Where each authenticated peer's connections last came from.
    heard: Arc<DashMap<u64, SocketAddr>>,
    /// Removed members, refused in the hello.
    removed: Arc<DashSet<u64>>,
}

impl NodeEndpoint {
    /// Binds `addr` (UDP) with mutual TLS from `tls`.
    pub fn bind(
        addr: SocketAddr,
        node_id: u64,
        cluster_id: &str,
        config_digest: u64,
        tls: &TlsMaterial,
        metrics: Arc<TransportMetrics>,
    ) -> Result<Self, TransportError> {
        let mut server_config = super::tls::server_config(tls)?;
        // Peers must notice a dead node well within an election timeout.
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(std::time::Duration::from_millis(250)));
        if let Ok(idle) = quinn::IdleTimeout::try_from(std::time::Duration::from_millis(1500)) {
            transport.max_idle_timeout(Some(idle));
        }
        // A peer opens one unidirectional stream (its control lane), a
        // client none. The handshake grants this credit before the ALPN
        // tells the two apart, and QUIC cannot take credit back, so it is
        // kept small; a client connection then gets no more, and the node
        // never reads the few it could open.
        transport.max_concurrent_uni_streams(PEER_UNI_STREAMS.into());
        let transport = Arc::new(transport);
        server_config.transport_config(transport.clone());
        let mut peer_dial_config = tls.client_config(&PEER_ALPNS)?;
        peer_dial_config.transport_config(transport);
        let join_dial_config = tls.client_config(&[JOIN_ALPN])?;
        let endpoint = quinn::Endpoint::server(server_config, addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        Ok(NodeEndpoint {
            endpoint,
            node_id,
            cluster_id: cluster_id.to_string(),
            config_digest,
            peer_dial_config,
            join_dial_config,
            metrics,
            incarnations: None,
            removed: Arc::default(),
            heard: Arc::default(),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Where node `node` last dialled this node from. A node dials from the
    /// socket it listens on, so this reaches it (barring address
    /// translation): a node that does not know a member's address yet (a
    /// learner catching up on the log that holds it) answers it there.
    pub fn heard_from(&self, node: u64) -> Option<SocketAddr> {
        self.heard.get(&node).map(|a| *a)
    }

    /// Presents this node's data-directory incarnation in every peer hello
    /// and refuses a peer presenting another than the one first seen (see
    /// `paxlock_storage::incarnation`). Without: neither (a node without a
    /// data directory).
    pub fn with_incarnations(mut self, incarnations: Option<Arc<Incarnations>>) -> Self {
        self.incarnations = incarnations;
        self
    }

    /// Dials `peer_id` at `addr` to see that it answers as that node (for
    /// an addition), without presenting or recording incarnations: a node
    /// that never becomes a member leaves no trace that would refuse it
    /// later.
    pub async fn probe_peer(
        &self,
        peer_id: u64,
        addr: SocketAddr,
    ) -> Result<PeerLink, TransportError> {
        let hello = peer::HelloAs {
            incarnations: None,
            ..self.hello_as()
        };
        peer::dial(
            &self.endpoint,
            self.peer_dial_config.clone(),
            &hello,
            peer_id,
            addr,
        )
        .await
    }

    /// What this node says and checks in a peer hello.
    fn hello_as(&self) -> peer::HelloAs {
        peer::HelloAs {
            node_id: self.node_id,
            cluster_id: self.cluster_id.clone(),
            config_digest: self.config_digest,
            incarnations: self.incarnations.clone(),
            removed: self.removed.clone(),
        }
    }

    /// Refuses these nodes' hellos from now on: they were removed.
    pub fn note_removed(&self, removed: impl IntoIterator<Item = u64>) {
        for id in removed {
            self.removed.insert(id);
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })
    }

    /// The transport counters.
    pub fn metrics(&self) -> &Arc<TransportMetrics> {
        &self.metrics
    }

    /// Dials peer `peer_id` at `addr` and proves both identities.
    pub async fn dial_peer(
        &self,
        peer_id: u64,
        addr: SocketAddr,
    ) -> Result<PeerLink, TransportError> {
        peer::dial(
            &self.endpoint,
            self.peer_dial_config.clone(),
            &self.hello_as(),
            peer_id,
            addr,
        )
        .await
    }

    /// Asks the node at `addr` (verified as a client verifies a node: its
    /// certificate names `server_name`) to take `request`'s next step (see
    /// `join`); the request is sent as this node, of this cluster.
    pub async fn ask_to_join(
        &self,
        server_name: &str,
        addr: SocketAddr,
        request: paxlock_peer_codec::proto::JoinRequest,
    ) -> Result<paxlock_peer_codec::proto::JoinReply, TransportError> {
        let request = paxlock_peer_codec::proto::JoinRequest {
            cluster_id: self.cluster_id.clone(),
            node_id: self.node_id,
            config_digest: self.config_digest,
            ..request
        };
        join::ask(
            &self.endpoint,
            self.join_dial_config.clone(),
            server_name,
            addr,
            &request,
        )
        .await
    }

    /// Accepts connections until the endpoint is closed, dispatching by ALPN.
    pub async fn serve(&self, handlers: Handlers) {
        while let Some(incoming) = self.endpoint.accept().await {
            // Handshakes cost the node crypto: a flood of them is turned
            // away here, before any is spent, so the consensus loop keeps
            // its heartbeats.
            let remote = incoming.remote_address();
            let verdict = handlers
                .client_gate
                .handshake(remote, incoming.remote_address_validated());
            let permit = match verdict {
                HandshakeVerdict::Admit(permit) => permit,
                HandshakeVerdict::Retry => {
                    TransportMetrics::bump(&self.metrics.client_handshakes_refused);
                    if let Err(e) = incoming.retry() {
                        e.into_incoming().refuse();
                    }
                    continue;
                }
                HandshakeVerdict::Refuse => {
                    TransportMetrics::bump(&self.metrics.client_handshakes_refused);
                    handlers.client_gate.warn_refusal(format_args!(
                        "refused a connection attempt from {remote}: too many handshakes"
                    ));
                    incoming.refuse();
                    continue;
                }
            };
            let metrics = self.metrics.clone();
            let handlers = handlers.clone();
            let hello_as = self.hello_as();
            let heard = self.heard.clone();
            tokio::spawn(async move {
                let handshake = incoming.await;
                drop(permit);
                let connection = match handshake {
                    Ok(connection) => connection,
                    Err(e) => {
                        TransportMetrics::bump(&metrics.handshake_failures);
                        handlers.client_gate.warn_refusal(format_args!(
                            "rejected connection from {remote} during TLS handshake: {e}"
                        ));
                        return;
                    }
                };
                match negotiated_alpn(&connection).as_deref() {
                    Some(alpn) if PeerVersion::from_alpn(alpn).is_some() => {
                        match peer::accept(connection, &hello_as, &metrics).await {
                            Ok(inbound) => {
                                info!(peer = inbound.node_id, %remote, "peer connected (mutual TLS)");
                                heard.insert(inbound.node_id, remote);
                                forward_peer(inbound, handlers.peer_messages, metrics).await;
                            }
                            Err(e) => warn!(%remote, "peer hello failed: {e}"),
                        }
                    }
                    Some(alpn) if alpn == JOIN_ALPN => {
                        join::answer(connection, &hello_as, &metrics, handlers.joins.as_ref())
                            .await;
                    }
                    Some(alpn) if alpn == CLIENT_ALPN_V1 => {
                        match client_identity(&peer_certificates(&connection)) {
                            Ok(certificate) => {
                                serve_connection(
                                    connection,
                                    certificate,
                                    handlers.clients,
                                    handlers.client_gate,
                                    metrics,
                                )
                                .await;
                            }
                            Err(e) => {
                                TransportMetrics::bump(&metrics.client_identity_rejections);
                                handlers.client_gate.warn_refusal(format_args!(
                                    "refused client connection from {remote}: {e}"
                                ));
                                connection.close(
                                    paxlock::wire::codes::CLIENT_IDENTITY_MISSING.into(),
                                    e.to_string().as_bytes(),
                                );
                            }
                        }
                    }
                    // rustls only completes a handshake on an ALPN we offered,
                    // so this is unreachable unless the offer list changes.
                    other => {
                        warn!(%remote, ?other, "closing connection with unknown ALPN");
                        connection.close(
                            paxlock::wire::codes::UNEXPECTED_FRAME.into(),
                            b"unknown ALPN",
                        );
                    }
                }
            });
        }
    }

    /// Closes every connection with `code` and stops accepting.
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.endpoint.close(code.into(), reason);
    }

    /// Waits until every connection has been closed cleanly.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

async fn forward_peer(inbound: InboundPeer, to: PeerInbox, metrics: Arc<TransportMetrics>) {
    let from = NodeId(inbound.node_id);
    let InboundPeer {
        connection, bulk, ..
    } = inbound;
    // A version-3 peer sends its control lane on a unidirectional stream
    // of its own; read it alongside the hello's stream, one at a time.
    let control = async {
        while let Ok(recv) = connection.accept_uni().await {
            forward_stream(FrameReader::new(recv), from, &to, &metrics).await;
        }
    };
    tokio::select! {
        () = forward_stream(bulk, from, &to, &metrics) => {}
        () = control => {}
    }
}

/// Delivers every message of one peer stream into its lane of the inbox,
/// until the stream ends.
async fn forward_stream(
    mut reader: FrameReader,
    from: NodeId,
    to: &PeerInbox,
    metrics: &TransportMetrics,
) {
    loop {
        match reader.next().await {
            Ok(Some(msg)) => match peer_codec::decode(msg) {
                Ok(msg) => {
                    if to.deliver(from, msg).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    TransportMetrics::bump(&metrics.frame_errors);
                    warn!(peer = from.0, "dropping peer message: {e}");
                }
            },
            Ok(None) => return,
            Err(e) => {
                warn!(peer = from.0, "peer stream ended: {e}");
                return;
            }
        }
    }
}
