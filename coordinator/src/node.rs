//! The I/O shell of a node: owns the endpoint, the peer links and the
//! request loop.
//!
//! At this stage the node authenticates and connects its peers, exchanges
//! heartbeats with them and answers `Hello` and `Status`; lock and election
//! requests are answered with `UNSUPPORTED` until the replicated state
//! machine is wired in.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use paxlock::proto::{self, request::Op, response, ErrorCode, Response};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use crate::config::NodeConfig;
use crate::transport::client_streams::ClientRequest;
use crate::transport::peer_proto::{peer_message, Heartbeat, PeerMessage};
use crate::transport::{Handlers, NodeEndpoint, TlsMaterial, TransportError, TransportMetrics};

/// Bound on queued inbound requests and peer messages: past it, senders wait
/// (backpressure) instead of the node buffering without limit.
const INBOUND_QUEUE: usize = 4096;

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// This node's id.
    pub node_id: u64,
    /// The cluster's name.
    pub cluster_id: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The other nodes.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
}

impl From<&NodeConfig> for NodeOptions {
    fn from(config: &NodeConfig) -> Self {
        NodeOptions {
            node_id: config.node_id,
            cluster_id: config.cluster_id.clone(),
            listen: config.listen,
            peers: config.peers.iter().map(|p| (p.id, p.addr)).collect(),
            heartbeat_interval: config.heartbeat_interval,
        }
    }
}

/// A running node. Dropping it does not stop it; call `shutdown`.
#[derive(Debug)]
pub struct Node {
    endpoint: Arc<NodeEndpoint>,
    connected: watch::Receiver<Vec<u64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Which peers this node has heard from, and when (for `Status`).
type LastHeard = Arc<DashMap<u64, Instant>>;

impl Node {
    /// Binds the endpoint and starts connecting to peers and serving clients.
    pub fn start(options: NodeOptions, tls: &TlsMaterial) -> Result<Self, TransportError> {
        let metrics = Arc::new(TransportMetrics::default());
        let endpoint = Arc::new(NodeEndpoint::bind(
            options.listen,
            options.node_id,
            &options.cluster_id,
            tls,
            metrics,
        )?);
        let (peer_tx, peer_rx) = mpsc::channel(INBOUND_QUEUE);
        let (client_tx, client_rx) = mpsc::channel(INBOUND_QUEUE);
        let handlers = Handlers {
            peer_messages: peer_tx,
            client_requests: client_tx,
        };
        let mut tasks = Vec::new();
        let serving = endpoint.clone();
        tasks.push(tokio::spawn(async move { serving.serve(handlers).await }));

        let (connected_tx, connected) = watch::channel(Vec::new());
        let connected_tx = Arc::new(connected_tx);
        for (&peer_id, &addr) in &options.peers {
            tasks.push(tokio::spawn(keep_peer_link(
                endpoint.clone(),
                peer_id,
                addr,
                options.heartbeat_interval,
                connected_tx.clone(),
            )));
        }
        let last_heard: LastHeard = Arc::new(DashMap::new());
        tasks.push(tokio::spawn(drain_peer_messages(
            peer_rx,
            last_heard.clone(),
        )));
        tasks.push(tokio::spawn(answer_clients(
            client_rx,
            options.clone(),
            connected.clone(),
        )));
        Ok(Node {
            endpoint,
            connected,
            tasks,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.endpoint.local_addr()
    }

    /// The transport counters.
    pub fn metrics(&self) -> &Arc<TransportMetrics> {
        self.endpoint.metrics()
    }

    /// Resolves once outbound links to all `peers` are up; returns their ids.
    pub async fn wait_connected(&mut self, peers: usize) -> Vec<u64> {
        loop {
            let now = self.connected.borrow().clone();
            if now.len() >= peers {
                return now;
            }
            if self.connected.changed().await.is_err() {
                return now;
            }
        }
    }

    /// Closes all connections and stops every task.
    pub async fn shutdown(self) {
        self.endpoint
            .close(paxlock::wire::codes::SHUTTING_DOWN, b"node shutting down");
        for task in &self.tasks {
            task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// Keeps one authenticated outbound link to `peer_id`, redialling with
/// capped exponential backoff, and sends heartbeats on it.
async fn keep_peer_link(
    endpoint: Arc<NodeEndpoint>,
    peer_id: u64,
    addr: SocketAddr,
    heartbeat_interval: Duration,
    connected: Arc<watch::Sender<Vec<u64>>>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match endpoint.dial_peer(peer_id, addr).await {
            Ok(mut link) => {
                backoff = Duration::from_millis(50);
                info!(peer = peer_id, %addr, "connected to peer over mutual TLS");
                connected.send_modify(|ids| {
                    if !ids.contains(&peer_id) {
                        ids.push(peer_id);
                        ids.sort_unstable();
                    }
                });
                let mut tick = tokio::time::interval(heartbeat_interval);
                loop {
                    tick.tick().await;
                    let beat = PeerMessage {
                        body: Some(peer_message::Body::Heartbeat(Heartbeat::default())),
                    };
                    if let Err(e) = link.send(&beat).await {
                        info!(peer = peer_id, "lost peer link: {e}");
                        break;
                    }
                }
                connected.send_modify(|ids| ids.retain(|&id| id != peer_id));
            }
            Err(e) => debug!(peer = peer_id, %addr, "cannot reach peer yet: {e}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn drain_peer_messages(mut rx: mpsc::Receiver<(u64, PeerMessage)>, last_heard: LastHeard) {
    while let Some((from, _msg)) = rx.recv().await {
        last_heard.insert(from, Instant::now());
    }
}

async fn answer_clients(
    mut rx: mpsc::Receiver<ClientRequest>,
    options: NodeOptions,
    connected: watch::Receiver<Vec<u64>>,
) {
    while let Some(ClientRequest { request, reply }) = rx.recv().await {
        let result = match request.op {
            Some(Op::Hello(_)) => Ok(response::Result::Hello(proto::HelloOk {
                node_id: options.node_id,
                cluster_id: options.cluster_id.clone(),
                leader_node_id: 0,
                leader_addr: String::new(),
            })),
            Some(Op::Status(_)) => {
                let up = connected.borrow().clone();
                Ok(response::Result::Status(proto::StatusOk {
                    node_id: options.node_id,
                    leader_node_id: 0,
                    commit_index: 0,
                    applied_index: 0,
                    peers: options
                        .peers
                        .iter()
                        .map(|(&id, addr)| proto::PeerStatus {
                            node_id: id,
                            addr: addr.to_string(),
                            connected: up.contains(&id),
                            lag_slots: 0,
                        })
                        .collect(),
                }))
            }
            None => Err(proto::Error {
                code: ErrorCode::InvalidRequest.into(),
                message: "request has no operation set".into(),
                ..Default::default()
            }),
            Some(_) => Err(proto::Error {
                code: ErrorCode::Unsupported.into(),
                message: "this node does not serve locks or elections yet".into(),
                ..Default::default()
            }),
        };
        let response = match result {
            Ok(result) => Response {
                request_id: request.request_id,
                error: None,
                result: Some(result),
            },
            Err(error) => Response {
                request_id: request.request_id,
                error: Some(error),
                result: None,
            },
        };
        let _ = reply.send(response);
    }
}
