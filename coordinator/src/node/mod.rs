//! The I/O shell of a node: owns the endpoint, the peer links, the
//! consensus loop and the client request loop.
//!
//! The node authenticates and connects its peers, runs Multi-Paxos over
//! them (`driver`) and serves the lock service (`crate::service`) to
//! clients.

pub mod clock;
pub mod directory;
pub mod driver;
pub mod joining;
pub mod members;
pub mod snapshot_export;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use paxlock::proto::{self, request::Op, response, ErrorCode, Response};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::bounded;
use crate::config::{ClientsConfig, NodeConfig};
use crate::locks::Identity;
use crate::metrics::{MetricsSources, NodeMetrics};
use crate::paxos::{self, DurableState, Message, NodeId, PersistSeq, Replica};
use crate::service::sessions::run_leader_scans;
use crate::service::{lock_watch, watch as election_watch, Context, LockApplication, Shared};
use crate::transport::client_limits::{ClientGate, ClientLimits};
use crate::transport::client_streams::ClientService;
use crate::transport::join::{self, JoinService};
use crate::transport::lanes::{self, Lanes, PeerOutboxReceiver};
use crate::transport::peer::{PeerLink, PeerSender, Sent};
use crate::transport::peer_version::PeerVersions;
use crate::transport::revocation;
use crate::transport::watch_queue::WatchSender;
use crate::transport::{Handlers, NodeEndpoint, TlsMaterial, TransportError, TransportMetrics};
use clock::NodeClock;
use driver::{Application, DriverHandle, DriverInput, DriverStatus, Durability};
use paxlock_core::access::Admins;
use paxlock_core::node_membership::JoinAs;
use paxlock_peer_codec::proto::{join_reply::Outcome, JoinReply};
use paxlock_storage::Incarnations;

/// A peer link that had to withhold messages says so at most this often.
const WITHHELD_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// How long one attempt to dial a peer may take.
const PEER_DIAL_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The endpoint could not be set up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The consensus configuration is inconsistent.
    #[error("invalid consensus configuration: {0:?}")]
    Consensus(paxos::ConfigError),
    /// The recovered state cannot be used (e.g. a snapshot written by an
    /// incompatible version).
    #[error("{0}; run the release that wrote the data directory, or remove this node from the cluster (paxlock members remove) and bring the machine back as a new member under a new id")]
    Recovery(String),
    /// The revocation file cannot be used.
    #[error(transparent)]
    Revocations(#[from] revocation::RevocationError),
}

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// This node's id.
    pub node_id: u64,
    /// The cluster's name.
    pub cluster_id: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The cluster's first voters besides this node.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// This node is not one of the first voters: it joins once added.
    pub join: bool,
    /// Whom this node asks to add it, and as what (`join_via`); `None`:
    /// it waits for an administrator.
    pub ask_to_join: Option<joining::AskToJoin>,
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// Seed for the election timer's randomness.
    pub seed: u64,
    /// Where to serve `/metrics` and `/health` over HTTP (TCP), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The clock drift bound ρ in parts per million.
    pub max_clock_drift_ppm: u32,
    /// Snapshot the state machine and compact the log every this many slots.
    pub snapshot_every_slots: u64,
    /// Bounds on client connections.
    pub clients: ClientsConfig,
    /// The identities that administer the cluster (`[access] admins`).
    pub admins: Admins,
    /// The revocation file to follow (`[access] revocations`), if any.
    pub revocations: Option<std::path::PathBuf>,
}

impl From<&NodeConfig> for NodeOptions {
    fn from(config: &NodeConfig) -> Self {
        NodeOptions {
            node_id: config.node_id,
            cluster_id: config.cluster_id.clone(),
            listen: config.listen,
            peers: config.peers.iter().map(|p| (p.id, p.addr)).collect(),
            join: config.joins(),
            ask_to_join: (!config.join_via.is_empty()).then(|| joining::AskToJoin {
                via: config.join_via.clone(),
                part: config.join_as,
                reach_me_at: config.reached_at(),
            }),
            heartbeat_interval: config.heartbeat_interval,
            seed: config.node_id ^ 0x5eed,
            metrics_listen: config.metrics_listen,
            max_clock_drift_ppm: config.max_clock_drift_ppm,
            snapshot_every_slots: config.snapshot_every_slots,
            clients: config.clients.clone(),
            admins: Admins::new(config.access.admins.iter().cloned().map(Identity)),
            revocations: config.access.revocations.clone(),
        }
    }
}

impl NodeOptions {
    /// The cluster's first voters, in order: `peers`, and this node unless
    /// it joined later. Every node of a cluster must agree on them.
    pub fn first_voters(&self) -> Vec<NodeId> {
        let mut members: Vec<NodeId> = self.peers.keys().map(|&id| NodeId(id)).collect();
        if !self.join {
            members.push(NodeId(self.node_id));
        }
        members.sort();
        members
    }

    /// The consensus configuration these options imply.
    pub fn paxos_config(&self) -> paxos::Config {
        let mut config = paxos::Config::new(NodeId(self.node_id), self.first_voters());
        let heartbeat_ns = self.heartbeat_interval.as_nanos() as u64;
        // Keep the core's ratios: lease = 10 heartbeats, elections after 14-28.
        config.heartbeat_interval_ns = heartbeat_ns;
        config.lease_duration_ns = heartbeat_ns.saturating_mul(10);
        config.election_timeout_min_ns = heartbeat_ns.saturating_mul(14);
        config.election_timeout_max_ns = heartbeat_ns.saturating_mul(28);
        // A log value is one lock-service command in its envelope; the
        // largest legal command (64 KiB value, 512-byte name) must fit.
        config.max_value_bytes = crate::locks::command::MAX_COMMAND_BYTES + 1024;
        config.max_drift_ppm = u64::from(self.max_clock_drift_ppm);
        config
    }
}

/// What the replicated log drives.
pub enum App {
    /// The lock service (production).
    Locks(crate::locks::Config),
    /// Any other application (tests of the consensus layer); lock and
    /// election requests are then answered with `UNSUPPORTED`.
    Custom(Box<dyn Application>),
}

/// The pluggable parts: what chosen entries drive and where acceptor state
/// is made durable.
pub struct NodeParts {
    /// The replicated application.
    pub app: App,
    /// The acceptor's durable store.
    pub durability: Box<dyn Durability>,
    /// The state recovered from that store.
    pub recovered: DurableState,
    /// The data directory's incarnation and its peers' (see
    /// `paxlock_storage::incarnation`); `None` without a data directory.
    pub incarnations: Option<Arc<Incarnations>>,
}

impl std::fmt::Debug for NodeParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeParts").finish_non_exhaustive()
    }
}

/// A running node. Dropping it does not stop it; call `shutdown`.
#[derive(Debug)]
pub struct Node {
    endpoint: Arc<NodeEndpoint>,
    connected: watch::Receiver<PeerVersions>,
    /// Set when a peer refused this node: it lost its data, or was removed.
    refused: watch::Receiver<Option<StopReason>>,
    driver: DriverHandle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    metrics_sources: MetricsSources,
    node_id: u64,
    draining: Arc<std::sync::atomic::AtomicBool>,
}

impl Node {
    /// Binds the endpoint, starts the consensus loop and starts connecting
    /// to peers and serving clients.
    pub fn start(
        options: NodeOptions,
        tls: &TlsMaterial,
        parts: NodeParts,
    ) -> Result<Self, StartError> {
        let metrics = Arc::new(TransportMetrics::default());
        let machine_config = match &parts.app {
            App::Locks(config) => config.clone(),
            App::Custom(_) => crate::locks::Config::default(),
        };
        let mut tasks = Vec::new();
        let client_limits = ClientLimits::new(&options.clients, &machine_config.limits);
        let revocations = match &options.revocations {
            Some(path) => {
                let (revocations, follower) = revocation::follow(path.clone())?;
                tasks.push(follower);
                revocations
            }
            None => revocation::none(),
        };
        let client_gate =
            ClientGate::with_peers(client_limits, revocations, options.peers.values().copied());
        let endpoint = Arc::new(
            NodeEndpoint::bind(
                options.listen,
                options.node_id,
                &options.cluster_id,
                shared_settings_digest(&machine_config, options.max_clock_drift_ppm),
                tls,
                metrics.clone(),
            )?
            .with_incarnations(parts.incarnations.clone()),
        );
        let persisted: PersistSeq = parts.recovered.persisted_seq;
        let consensus = options.paxos_config();
        // Rule "every message fits": what the core bounds its messages by
        // must fit the frame both peer protocol versions read.
        if consensus.max_message_bytes > paxlock::wire::MAX_FRAME_BYTES {
            return Err(StartError::Consensus(paxos::ConfigError::BadSize(
                "max_message_bytes must fit one frame",
            )));
        }
        let replica = Replica::new(consensus, parts.recovered, options.seed)
            .map_err(StartError::Consensus)?;

        let (peer_tx, peer_rx) = lanes::channels();

        let (connected_tx, connected) = watch::channel(PeerVersions::new());
        let connected_tx = Arc::new(connected_tx);
        let (refused_tx, refused) = watch::channel(None);
        let refused_tx = Arc::new(refused_tx);
        // Links to the configured peers now, to members added later when
        // the consensus loop first has a message for them. Each link ends
        // when the loop drops its queues (the peer was removed, or the
        // loop stopped).
        let open_link = {
            let endpoint = endpoint.clone();
            let connected_tx = connected_tx.clone();
            let runtime = tokio::runtime::Handle::current();
            move |peer: NodeId, addr: Option<SocketAddr>| {
                let addr = addr.or_else(|| endpoint.heard_from(peer.0))?;
                let (tx, rx) = lanes::channels();
                runtime.spawn(keep_peer_link(
                    endpoint.clone(),
                    peer.0,
                    addr,
                    rx,
                    connected_tx.clone(),
                    refused_tx.clone(),
                ));
                Some(tx)
            }
        };
        let mut open_link: driver::LinkOpener = Box::new(open_link);
        let outbound = options
            .peers
            .iter()
            .filter_map(|(&peer, &addr)| Some((NodeId(peer), open_link(NodeId(peer), Some(addr))?)))
            .collect();
        let clock = NodeClock::new();
        let shared = Arc::new(
            Shared::new(options.node_id, machine_config).with_admins(options.admins.clone()),
        );
        let serves_locks = matches!(parts.app, App::Locks(_));
        let node_metrics = Arc::new(NodeMetrics::default());
        let app: Box<dyn Application> = match parts.app {
            App::Locks(_) => Box::new(LockApplication::new(
                shared.clone(),
                clock,
                node_metrics.clone(),
            )),
            App::Custom(app) => app,
        };
        let driver = driver::spawn(
            replica,
            app,
            parts.durability,
            peer_rx,
            outbound,
            driver::LoopSettings {
                clock,
                persisted,
                metrics: node_metrics.clone(),
                snapshot_every_slots: options.snapshot_every_slots,
                open_link: Some(open_link),
            },
        )
        .map_err(StartError::Recovery)?;
        let directory = Arc::new(directory::Directory {
            node_id: options.node_id,
            listen: options.listen,
            seeds: options.peers.clone(),
        });
        let context = Context {
            shared,
            inbox: driver.inbox.clone(),
            status: driver.status.clone(),
            clock,
            directory,
            peers: connected.clone(),
        };
        if serves_locks {
            tasks.push(tokio::spawn(run_leader_scans(context.clone())));
        }
        tasks.push(tokio::spawn(refuse_removed_members(
            endpoint.clone(),
            driver.status.clone(),
        )));
        let metrics_sources = MetricsSources {
            node_id: options.node_id,
            node: node_metrics.clone(),
            transport: metrics,
            status: driver.status.clone(),
            shared: context.shared.clone(),
        };
        if let Some(mut ask) = options.ask_to_join.clone() {
            // Bound to port 0 (tests): the port actually bound.
            if ask.reach_me_at.port() == 0 {
                ask.reach_me_at.set_port(endpoint.local_addr()?.port());
            }
            let first_voters = options.first_voters().iter().map(|n| n.0).collect();
            tasks.push(tokio::spawn(joining::ask_until_joined(
                endpoint.clone(),
                ask,
                first_voters,
                driver.status.clone(),
            )));
        }
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let service = Arc::new(NodeService {
            options: options.clone(),
            endpoint: endpoint.clone(),
            connected: connected.clone(),
            context,
            serves_locks,
            metrics: node_metrics,
            draining: draining.clone(),
            exports: Arc::default(),
        });
        let handlers = Handlers {
            peer_messages: peer_tx,
            clients: service.clone(),
            client_gate,
            joins: service,
        };
        let serving = endpoint.clone();
        tasks.push(tokio::spawn(async move { serving.serve(handlers).await }));
        Ok(Node {
            endpoint,
            connected,
            refused,
            driver,
            tasks,
            metrics_sources,
            node_id: options.node_id,
            draining,
        })
    }

    /// Starts the HTTP metrics endpoint on `addr`; returns the bound address.
    pub async fn serve_metrics(&mut self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = crate::metrics::bind(addr).await?;
        let bound = listener.local_addr()?;
        let sources = self.metrics_sources.clone();
        self.tasks
            .push(tokio::spawn(crate::metrics::serve(listener, sources)));
        Ok(bound)
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.endpoint.local_addr()
    }

    /// The transport counters.
    pub fn metrics(&self) -> &Arc<TransportMetrics> {
        self.endpoint.metrics()
    }

    /// The consensus loop's latest status.
    pub fn status(&self) -> DriverStatus {
        self.driver.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn status_updates(&self) -> watch::Receiver<DriverStatus> {
        self.driver.status.clone()
    }

    /// Hands commands to the consensus loop for replication. Only the
    /// leader accepts them; elsewhere they come back through
    /// `Application::on_rejected`.
    pub async fn propose(&self, values: Vec<Vec<u8>>) -> bool {
        self.driver
            .inbox
            .send(DriverInput::Propose(
                values.into_iter().map(paxos::Value::from).collect(),
            ))
            .await
            .is_ok()
    }

    /// Graceful shutdown, first half: stop taking client requests (they get
    /// `SHUTTING_DOWN`, which clients retry elsewhere) and, if this node
    /// leads, hand leadership over; waits (bounded by `patience`) until
    /// another node leads. Returns whether a handover was observed.
    pub async fn drain(&self, patience: Duration) -> bool {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
        let mut status = self.driver.status.clone();
        let me = NodeId(self.node_id);
        if !status.borrow().is_leader {
            return false;
        }
        let _ = self.driver.inbox.send(DriverInput::Abdicate).await;
        let handed_over = tokio::time::timeout(patience, async {
            loop {
                {
                    let s = status.borrow_and_update();
                    if !s.is_leader && s.leader.is_some_and(|l| l != me) {
                        return;
                    }
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        handed_over.is_ok()
    }

    /// Resolves once the node must stop for good, with why: its consensus
    /// loop stopped (its storage failed, say, or it was removed from the
    /// cluster), or a peer refused it as a node that lost its data. A node
    /// in that state can still answer `Hello` and `Status` from its last
    /// view, but nothing it says about the log is true any more: its
    /// process should exit.
    pub fn stopped(&self) -> impl Future<Output = StopReason> + Send + 'static {
        let mut status = self.driver.status.clone();
        let mut refused = self.refused.clone();
        async move {
            let failed = async {
                loop {
                    let (failed, removed) = {
                        let s = status.borrow_and_update();
                        (s.failed.clone(), s.removed)
                    };
                    if let Some(reason) = failed {
                        return (reason, removed);
                    }
                    if status.changed().await.is_err() {
                        // The loop is gone; it publishes why before it returns.
                        let s = status.borrow();
                        let reason = s.failed.clone();
                        return (
                            reason.unwrap_or_else(|| "the consensus loop ended".to_string()),
                            s.removed,
                        );
                    }
                }
            };
            let refusal = async {
                loop {
                    if let Some(reason) = refused.borrow_and_update().clone() {
                        return reason;
                    }
                    if refused.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                (reason, removed) = failed => if removed {
                    StopReason::Removed(reason)
                } else {
                    StopReason::Failed(reason)
                },
                reason = refusal => reason,
            }
        }
    }

    /// Resolves once outbound links to `peers` peers are up; returns their ids.
    pub async fn wait_connected(&mut self, peers: usize) -> Vec<u64> {
        loop {
            let now: Vec<u64> = self.connected.borrow().keys().copied().collect();
            if now.len() >= peers {
                return now;
            }
            if self.connected.changed().await.is_err() {
                return now;
            }
        }
    }

    /// Closes all connections and stops every task.
    pub async fn shutdown(mut self) {
        self.endpoint
            .close(paxlock::wire::codes::SHUTTING_DOWN, b"node shutting down");
        self.driver.stop();
        for task in &self.tasks {
            task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// A digest of the settings every node must share: the state machine's
/// configuration (it shapes what commands are accepted, so replicas with
/// different values would diverge) and the clock drift bound.
///
/// `max_state_bytes` is not in the machine configuration's encoding (see
/// `Limits::max_state_bytes`): it is added only when set away from its
/// default, so that a node of the previous release, which has no such
/// setting, and a node of this one with the default still peer during a
/// rolling upgrade (the bound applies only once the log records protocol
/// 3, when every node has it).
pub fn shared_settings_digest(machine: &crate::locks::Config, drift_ppm: u32) -> u64 {
    let mut bytes = postcard::to_allocvec(machine).unwrap_or_default();
    let state_bound = machine.limits.max_state_bytes;
    if state_bound != crate::locks::limits::DEFAULT_MAX_STATE_BYTES {
        bytes.extend_from_slice(&state_bound.to_le_bytes());
    }
    bytes
        .iter()
        .chain(drift_ppm.to_le_bytes().iter())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Why a node must stop (see [`Node::stopped`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The consensus loop could not go on (storage failed).
    Failed(String),
    /// This node was removed from the cluster.
    Removed(String),
    /// A peer refused this node as one that lost its data.
    LostData(String),
}

impl StopReason {
    /// The refusal a peer closed this node's link with, if it is one that
    /// stops the node (`None` for anything else).
    fn from_peer_close(close: &quinn::ApplicationClose) -> Option<StopReason> {
        let reason = String::from_utf8_lossy(&close.reason).into_owned();
        let code = close.error_code;
        if code == paxlock::wire::codes::STALE_INCARNATION.into() {
            Some(StopReason::LostData(reason))
        } else if code == paxlock::wire::codes::REMOVED_MEMBER.into() {
            Some(StopReason::Removed(reason))
        } else {
            None
        }
    }
}

/// Has the endpoint refuse the hellos of members removed in the membership
/// in effect, from the moment this node sees them removed: a removed node
/// that missed its removal (down, or cut off) learns it at its next dial
/// and stops.
async fn refuse_removed_members(
    endpoint: Arc<NodeEndpoint>,
    mut status: watch::Receiver<DriverStatus>,
) {
    let mut seen: Option<Arc<paxos::Membership>> = None;
    loop {
        let members = status.borrow_and_update().members.clone();
        if !seen.as_ref().is_some_and(|m| Arc::ptr_eq(m, &members)) {
            endpoint.note_removed(members.retired.iter().map(|n| n.0));
            seen = Some(members);
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps one authenticated outbound link to `peer_id`, redialling with
/// capped exponential backoff, and sends the consensus loop's messages on it.
/// A peer that refuses this node (it knew its data directory by another
/// incarnation, or it was removed) is reported in `refused`.
async fn keep_peer_link(
    endpoint: Arc<NodeEndpoint>,
    peer_id: u64,
    addr: SocketAddr,
    mut messages: PeerOutboxReceiver,
    connected: Arc<watch::Sender<PeerVersions>>,
    refused: Arc<watch::Sender<Option<StopReason>>>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if messages.control.is_closed() {
            debug!(peer = peer_id, "the consensus loop dropped the link");
            return;
        }
        // A peer that is not up yet never answers the handshake: give up on
        // the attempt quickly and retry, instead of waiting for QUIC's idle
        // timeout, so links come up soon after the peer starts.
        let dial = tokio::time::timeout(PEER_DIAL_TIMEOUT, endpoint.dial_peer(peer_id, addr)).await;
        let dial = dial.unwrap_or_else(|_| Err(TransportError::Timeout("peer handshake")));
        match dial {
            Ok(link) => {
                backoff = Duration::from_millis(50);
                let version = link.version;
                info!(peer = peer_id, %addr, ?version, "connected to peer over mutual TLS");
                connected.send_modify(|peers| {
                    peers.insert(peer_id, version);
                });
                // Messages queued while the link was down are stale; the
                // core re-sends what still matters.
                while messages.control.try_recv().is_ok() {}
                while messages.bulk.try_recv().is_ok() {}
                let connection = link.connection.clone();
                tokio::select! {
                    ended = serve_link(link, &mut messages) => match ended {
                        LinkEnd::Shutdown => return,
                        LinkEnd::Failed(e) => warn!(peer = peer_id, "lost peer link: {e}"),
                    },
                    reason = connection.closed() => {
                        warn!(peer = peer_id, "peer link closed: {reason}");
                    }
                }
                connected.send_modify(|peers| {
                    peers.remove(&peer_id);
                });
            }
            Err(TransportError::Connection(quinn::ConnectionError::ApplicationClosed(close)))
                if StopReason::from_peer_close(&close).is_some() =>
            {
                let reason = String::from_utf8_lossy(&close.reason);
                error!(peer = peer_id, "refused by the peer: {reason}");
                refused.send_replace(StopReason::from_peer_close(&close));
            }
            Err(e) => debug!(peer = peer_id, %addr, "cannot reach peer yet: {e}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// Why a link stopped sending.
enum LinkEnd {
    /// The consensus loop is gone: the node is stopping.
    Shutdown,
    /// Writing failed; the link must be dialled again.
    Failed(TransportError),
}

/// Sends the queued messages on `link`: each lane on its own stream where
/// the peer has them (version 3), so bulk data never holds a heartbeat
/// back; on the one stream otherwise, control messages first.
async fn serve_link(link: PeerLink, messages: &mut PeerOutboxReceiver) -> LinkEnd {
    let peer = link.node_id;
    let PeerLink { bulk, control, .. } = link;
    let Lanes {
        control: control_queue,
        bulk: bulk_queue,
    } = messages;
    match control {
        Some(control) => {
            tokio::select! {
                end = send_lane(peer, control, control_queue) => end,
                end = send_lane(peer, bulk, bulk_queue) => end,
            }
        }
        None => {
            let mut stream = bulk;
            let mut withheld = WithheldWarning::default();
            loop {
                let msg = tokio::select! {
                    biased;
                    msg = control_queue.recv() => msg,
                    msg = bulk_queue.recv() => msg,
                };
                let Some(msg) = msg else {
                    return LinkEnd::Shutdown;
                };
                if let Err(e) = send_one(peer, &mut stream, &msg.item, &mut withheld).await {
                    return LinkEnd::Failed(e);
                }
            }
        }
    }
}

/// Sends one lane's queue on its stream until writing fails or the queue
/// closes.
async fn send_lane(
    peer: u64,
    mut stream: PeerSender,
    queue: &mut bounded::Receiver<Message>,
) -> LinkEnd {
    let mut withheld = WithheldWarning::default();
    while let Some(msg) = queue.recv().await {
        if let Err(e) = send_one(peer, &mut stream, &msg.item, &mut withheld).await {
            return LinkEnd::Failed(e);
        }
    }
    LinkEnd::Shutdown
}

async fn send_one(
    peer: u64,
    stream: &mut PeerSender,
    msg: &Message,
    withheld: &mut WithheldWarning,
) -> Result<(), TransportError> {
    match stream.send(msg).await? {
        Sent::Whole => {}
        Sent::Fragmented(pieces) => {
            // Only an entry accepted by a release that did not bound
            // batches in bytes gets here.
            info!(
                peer,
                pieces, "sent a message larger than a frame in fragments"
            );
        }
        Sent::Withheld(why) => withheld.warn(peer, why),
    }
    Ok(())
}

/// Says that a link withholds messages (an older peer), at most every
/// [`WITHHELD_WARNING_INTERVAL`].
#[derive(Default)]
struct WithheldWarning {
    last: Option<std::time::Instant>,
}

impl WithheldWarning {
    fn warn(&mut self, peer: u64, why: &str) {
        if self
            .last
            .is_none_or(|at| at.elapsed() >= WITHHELD_WARNING_INTERVAL)
        {
            self.last = Some(std::time::Instant::now());
            warn!(
                peer,
                "withholding a consensus message from the peer: {why} (upgrade the peer)"
            );
        }
    }
}

/// The node's answers to clients: lock and election requests go to the
/// service handlers, `Hello` and `Status` are answered from this node's
/// own view, and a draining node turns everything away.
struct NodeService {
    options: NodeOptions,
    endpoint: Arc<NodeEndpoint>,
    connected: watch::Receiver<PeerVersions>,
    context: Context,
    serves_locks: bool,
    metrics: Arc<NodeMetrics>,
    draining: Arc<std::sync::atomic::AtomicBool>,
    exports: Arc<snapshot_export::Exports>,
}

impl NodeService {
    fn members(&self) -> members::MembersView<'_> {
        members::MembersView {
            context: &self.context,
            connected: &self.connected,
            metrics: &self.metrics,
            endpoint: &self.endpoint,
        }
    }

    fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The response carrying `answer` to `request`.
fn answered(request: &proto::Request, answer: Result<response::Result, proto::Error>) -> Response {
    let (result, error) = match answer {
        Ok(result) => (Some(result), None),
        Err(error) => (None, Some(error)),
    };
    Response {
        request_id: request.request_id,
        error,
        result,
    }
}

impl JoinService for NodeService {
    fn join<'a>(
        &'a self,
        node: u64,
        addr: SocketAddr,
        wanted: JoinAs,
        first_voters: Vec<u64>,
    ) -> Pin<Box<dyn Future<Output = JoinReply> + Send + 'a>> {
        Box::pin(async move {
            if self.draining() {
                return join::reply(
                    Outcome::Retry,
                    "this node is shutting down; ask another member",
                );
            }
            let ours: Vec<u64> = self.options.first_voters().iter().map(|n| n.0).collect();
            if first_voters != ours {
                return join::reply(
                    Outcome::Refused,
                    format!(
                        "node {node} is configured with first voters {first_voters:?}, the \
                         cluster's are {ours:?}: list exactly those as its [[peers]] (they \
                         decide the log's first slots), then start it again"
                    ),
                );
            }
            self.members().join(node, addr, wanted).await
        })
    }
}

impl ClientService for NodeService {
    fn answer<'a>(
        &'a self,
        request: proto::Request,
        caller: &'a Identity,
    ) -> Pin<Box<dyn Future<Output = Response> + Send + 'a>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            if self.draining() {
                return refusal(
                    &request,
                    ErrorCode::ShuttingDown,
                    "this node is shutting down; retry on another node",
                    true,
                );
            }
            match &request.op {
                Some(Op::Hello(_)) | Some(Op::Status(_)) => local_answer(&request, caller, self),
                Some(Op::ListMembers(_)) => Response {
                    request_id: request.request_id,
                    error: None,
                    result: Some(response::Result::Members(self.members().list())),
                },
                Some(Op::ChangeMembership(change)) => {
                    answered(&request, self.members().change(change, caller).await)
                }
                Some(Op::ExportSnapshot(_)) if self.serves_locks => answered(
                    &request,
                    (self.exports).export(&self.context, caller, &self.options.cluster_id),
                ),
                Some(Op::ReadSnapshot(read)) if self.serves_locks => {
                    answered(&request, self.exports.read(&self.context, caller, read))
                }
                _ if self.serves_locks => {
                    let response = self.context.answer(request, caller).await;
                    self.metrics.requests.observe(started.elapsed());
                    response
                }
                _ => refusal(
                    &request,
                    ErrorCode::Unsupported,
                    "this node does not serve locks or elections",
                    false,
                ),
            }
        })
    }

    fn watch(
        &self,
        request: proto::Request,
        caller: &Identity,
        events: WatchSender<proto::WatchEvent>,
    ) {
        // Dropping `events` (draining, or no lock service) ends the stream.
        if self.draining() || !self.serves_locks {
            return;
        }
        if let Some(Op::Watch(w)) = request.op {
            if let Err(error) = self.context.check_watch(&w.election, caller) {
                // The queue is fresh, so the refusal always fits.
                let _ = events.refuse(proto::WatchEvent {
                    election: w.election,
                    error: Some(error),
                    ..Default::default()
                });
                return;
            }
            let shared = self.context.shared.clone();
            let start = election_watch::Start::from_request(w.after_index, w.from_start);
            let caller = caller.clone();
            tokio::spawn(async move {
                election_watch::stream(&shared, &caller, w.election, start, events).await
            });
        }
    }

    fn watch_lock(
        &self,
        request: proto::Request,
        caller: &Identity,
        events: WatchSender<proto::LockWatchEvent>,
    ) {
        if self.draining() || !self.serves_locks {
            return;
        }
        if let Some(Op::WatchLock(w)) = request.op {
            if let Err(error) = self.context.check_watch(&w.name, caller) {
                let _ = events.refuse(proto::LockWatchEvent {
                    name: w.name,
                    error: Some(error),
                    ..Default::default()
                });
                return;
            }
            let shared = self.context.shared.clone();
            let caller = caller.clone();
            tokio::spawn(async move {
                lock_watch::stream(&shared, &caller, w.name, w.after_index, events).await
            });
        }
    }
}

/// An error answer to `request`.
fn refusal(request: &proto::Request, code: ErrorCode, message: &str, retryable: bool) -> Response {
    Response {
        request_id: request.request_id,
        error: Some(proto::Error {
            code: code.into(),
            message: message.into(),
            retryable,
            ..Default::default()
        }),
        result: None,
    }
}

/// Answers `Hello` and `Status` from this node's own view.
fn local_answer(request: &proto::Request, caller: &Identity, node: &NodeService) -> Response {
    let NodeService {
        options,
        context,
        connected,
        ..
    } = node;
    let consensus = context.status.borrow().clone();
    let leader_id = consensus.leader.map_or(0, |id| id.0);
    let leader_addr = context
        .directory
        .address(leader_id, &consensus.members)
        .map(|a| a.to_string())
        .unwrap_or_default();
    let result = match request.op {
        Some(Op::Status(_)) => {
            // One guard, dropped before the answer is built.
            let (cluster_protocol, state_bytes) = {
                let machine = context.shared.machine();
                (machine.protocol(), machine.state_bytes())
            };
            let up = connected.borrow();
            response::Result::Status(proto::StatusOk {
                node_id: options.node_id,
                leader_node_id: leader_id,
                commit_index: consensus.commit_index,
                applied_index: consensus.applied_index,
                cluster_protocol,
                state_bytes,
                max_state_bytes: context.shared.limits.max_state_bytes,
                voters: consensus.members.voters.iter().map(|n| n.0).collect(),
                learners: consensus.members.learners.iter().map(|n| n.0).collect(),
                membership_change_at: consensus.membership_change_at.unwrap_or(0),
                peers: context
                    .directory
                    .others(&consensus.members)
                    .into_iter()
                    .map(|(id, addr)| proto::PeerStatus {
                        node_id: id,
                        addr: addr.map(|a| a.to_string()).unwrap_or_default(),
                        connected: up.contains_key(&id),
                        lag_slots: node.metrics.peer_lag(id, &consensus),
                    })
                    .collect(),
            })
        }
        _ => response::Result::Hello(proto::HelloOk {
            node_id: options.node_id,
            cluster_id: options.cluster_id.clone(),
            leader_node_id: leader_id,
            leader_addr,
            identity: caller.0.clone(),
            max_clock_drift_ppm: options.max_clock_drift_ppm,
        }),
    };
    Response {
        request_id: request.request_id,
        error: None,
        result: Some(result),
    }
}
