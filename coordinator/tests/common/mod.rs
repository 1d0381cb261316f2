//! Shared helpers for integration tests: in-memory PKI, nodes on loopback,
//! raw QUIC clients.

#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use paxlock_certs::{ClusterCa, Issued, Validity};
use paxlock_coordinator::node::driver::MemoryDurability;
use paxlock_coordinator::node::{App, Node, NodeOptions, NodeParts};
use paxlock_coordinator::transport::tls::quic_client_config;
use paxlock_coordinator::transport::TlsMaterial;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Generous: these tests must not flake on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Checks `done` every 100 ms until it holds; after `PATIENCE`, fails with
/// `what_went_wrong`'s account.
pub fn wait_until(
    mut done: impl FnMut() -> Result<bool, Box<dyn std::error::Error>>,
    what_went_wrong: impl Fn() -> String,
) -> TestResult {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !done()? {
        if std::time::Instant::now() > deadline {
            return Err(format!("after {PATIENCE:?}: {}", what_went_wrong()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

pub fn material(ca: &ClusterCa, leaf: &Issued) -> Result<TlsMaterial, Box<dyn std::error::Error>> {
    Ok(TlsMaterial::from_der(
        &ca.certificate().cert_der,
        &leaf.cert_der,
        &leaf.key_der,
    )?)
}

/// Starts node `id` alone (no peers) on an ephemeral loopback port.
pub fn start_lone_node(ca: &ClusterCa, id: u64) -> Result<Node, Box<dyn std::error::Error>> {
    let cert = ca.node_cert(id, &[], Validity::default())?;
    let options = NodeOptions {
        node_id: id,
        join: false,
        ask_to_join: None,
        cluster_id: "test".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        peers: BTreeMap::new(),
        heartbeat_interval: Duration::from_millis(50),
        seed: id,
        metrics_listen: None,
        max_clock_drift_ppm: paxlock::DEFAULT_DRIFT_PPM,
        snapshot_every_slots: 1000,
        clients: Default::default(),
        admins: Default::default(),
        revocations: None,
    };
    Ok(Node::start(options, &material(ca, &cert)?, memory_parts())?)
}

pub fn client_endpoint() -> Result<quinn::Endpoint, Box<dyn std::error::Error>> {
    Ok(quinn::Endpoint::client(SocketAddr::from((
        [127, 0, 0, 1],
        0,
    )))?)
}

/// A rustls client config trusting `ca`, presenting `leaf` (or nothing).
pub fn client_config(
    ca: &ClusterCa,
    leaf: Option<&Issued>,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, Box<dyn std::error::Error>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(
        ca.certificate().cert_der.clone(),
    ))?;
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        paxlock_coordinator::transport::tls::provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots);
    let config = match leaf {
        Some(leaf) => builder.with_client_auth_cert(
            vec![rustls::pki_types::CertificateDer::from(
                leaf.cert_der.clone(),
            )],
            rustls::pki_types::PrivateKeyDer::try_from(leaf.key_der.clone())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    Ok(quic_client_config(config, &[alpn])?)
}

/// Connects and returns how the connection ended: from our side a TLS 1.3
/// client may finish its handshake before the server has judged its
/// certificate, so the verdict can arrive as a close right after.
pub async fn close_reason(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    server_name: &str,
) -> Result<quinn::ConnectionError, Box<dyn std::error::Error>> {
    let attempt = async {
        match endpoint.connect_with(config, addr, server_name)?.await {
            Err(e) => Ok::<_, Box<dyn std::error::Error>>(e),
            Ok(conn) => {
                if let Ok((mut send, mut recv)) = conn.open_bi().await {
                    let _ = send.write_all(&[0, 0, 0, 0]).await;
                    let _ = send.finish();
                    let _ = recv.read_to_end(1 << 16).await;
                }
                Ok(conn.closed().await)
            }
        }
    };
    tokio::time::timeout(PATIENCE, attempt).await?
}

/// The TLS alert a connection was closed with, if it was closed by one.
pub fn tls_alert(err: &quinn::ConnectionError) -> Option<u8> {
    match err {
        quinn::ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            (0x100..0x200).contains(&code).then(|| (code - 0x100) as u8)
        }
        quinn::ConnectionError::TransportError(e) => {
            let code = u64::from(e.code);
            (0x100..0x200).contains(&code).then(|| (code - 0x100) as u8)
        }
        _ => None,
    }
}

/// Starts `n` peered nodes on loopback and waits until every outbound
/// link is up.
pub async fn start_cluster(
    ca: &ClusterCa,
    n: u64,
) -> Result<Vec<Node>, Box<dyn std::error::Error>> {
    // Bind first so every node knows every address before dialing.
    let sockets: Vec<std::net::UdpSocket> = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    drop(sockets);
    let mut nodes = Vec::new();
    for id in 1..=n {
        let cert = ca.node_cert(id, &[], Validity::default())?;
        let peers = (1..=n)
            .filter(|&p| p != id)
            .map(|p| (p, addrs[(p - 1) as usize]))
            .collect();
        let options = NodeOptions {
            node_id: id,
            join: false,
            ask_to_join: None,
            cluster_id: "test".into(),
            listen: addrs[(id - 1) as usize],
            peers,
            heartbeat_interval: Duration::from_millis(20),
            seed: id,
            metrics_listen: None,
            max_clock_drift_ppm: paxlock::DEFAULT_DRIFT_PPM,
            snapshot_every_slots: 1000,
            clients: Default::default(),
            admins: Default::default(),
            revocations: None,
        };
        nodes.push(Node::start(options, &material(ca, &cert)?, memory_parts())?);
    }
    for node in &mut nodes {
        tokio::time::timeout(PATIENCE, node.wait_connected((n - 1) as usize)).await?;
    }
    Ok(nodes)
}

/// Parts that serve the lock service with acceptor state in memory.
pub fn memory_parts() -> NodeParts {
    NodeParts {
        app: App::Locks(paxlock_coordinator::locks::Config::default()),
        durability: Box::new(MemoryDurability::default()),
        recovered: Default::default(),
        incarnations: None,
    }
}

/// Client options for tests: generous timeouts, the given session TTL.
pub fn client_options(endpoints: Vec<String>, session_ttl: Duration) -> paxlock::ConnectOptions {
    paxlock::ConnectOptions {
        endpoints,
        request_timeout: PATIENCE,
        connect_timeout: Duration::from_secs(2),
        dead_node_timeout: paxlock::DEFAULT_DEAD_NODE_TIMEOUT,
        session_ttl,
        max_clock_drift_ppm: paxlock::DEFAULT_DRIFT_PPM,
        member_sync_interval: paxlock::DEFAULT_MEMBER_SYNC_INTERVAL,
    }
}

/// Connects a client named `identity` to `nodes`.
pub async fn connect_client(
    ca: &ClusterCa,
    identity: &str,
    nodes: &[&Node],
    session_ttl: Duration,
) -> Result<paxlock::Client, Box<dyn std::error::Error>> {
    let leaf = ca.client_cert(identity, Validity::default())?;
    let endpoints = nodes
        .iter()
        .map(|n| n.local_addr().map(|a| a.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(
        paxlock::Client::connect_with(material(ca, &leaf)?, client_options(endpoints, session_ttl))
            .await?,
    )
}
pub mod cluster;

/// `Status` as one particular node answers it (no redirect).
pub async fn node_status(
    cluster: &cluster::ProcessCluster,
    id: u64,
) -> Result<paxlock::proto::StatusOk, Box<dyn std::error::Error>> {
    Ok(cluster.launched.status(id, PATIENCE).await?)
}

/// A client that speaks the wire protocol by hand to one node: no session
/// management, no retries, no acknowledgement bookkeeping. For tests that
/// must send exactly the requests a (hostile or careless) client would.
#[derive(Clone)]
pub struct RawClient {
    pub connection: quinn::Connection,
}

impl RawClient {
    /// Connects to `addr` presenting the certificate and key at
    /// `cert`/`key`, trusting `ca`.
    pub async fn connect(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
        addr: &str,
    ) -> Result<RawClient, Box<dyn std::error::Error>> {
        let tls = paxlock::tls::TlsMaterial::load(ca, cert, key)?;
        let config = tls.client_config(&[paxlock::wire::CLIENT_ALPN_V1])?;
        let endpoint = client_endpoint()?;
        let connection = endpoint
            .connect_with(config, addr.parse()?, "localhost")?
            .await?;
        Ok(RawClient { connection })
    }

    /// Sends one request on its own stream and reads the one answer.
    pub async fn ask(
        &self,
        request: paxlock::proto::Request,
    ) -> Result<paxlock::proto::Response, String> {
        self.first_frame(request).await
    }

    /// Sends one request on its own stream and reads the first frame of
    /// the answer as an `M` (a watch's first event, say).
    pub async fn first_frame<M: prost::Message + Default>(
        &self,
        request: paxlock::proto::Request,
    ) -> Result<M, String> {
        let exchange = async {
            let (mut send, mut recv) =
                self.connection.open_bi().await.map_err(|e| e.to_string())?;
            paxlock::wire::write_frame(&mut send, &request)
                .await
                .map_err(|e| e.to_string())?;
            let _ = send.finish();
            let response = paxlock::wire::read_frame(&mut recv)
                .await
                .map_err(|e| e.to_string())?;
            response.ok_or_else(|| "the stream ended without an answer".to_string())
        };
        exchange.await
    }

    /// `ask` for `op` as request `request_id` of `session`, acknowledging
    /// nothing.
    pub async fn ask_op(
        &self,
        session: u64,
        request_id: u64,
        op: paxlock::proto::request::Op,
    ) -> Result<paxlock::proto::Response, String> {
        self.ask(paxlock::proto::Request {
            request_id,
            session_id: session,
            ack_below: 0,
            waiting: Vec::new(),
            op: Some(op),
        })
        .await
    }
}
