//! A UDP fault proxy in front of one node: this kernel has no `tc netem`,
//! so link faults are made here. Every peer and client reaches the node
//! through its proxy (the configs name the proxy's address), so each
//! direction of each link can be blocked, thinned, duplicated, delayed and
//! reordered independently.
//!
//! Each source address gets its own upstream socket, so the node sees one
//! stable address per sender and its replies can be routed back. Senders are
//! told apart by port: a node sends from its listen port (one QUIC endpoint
//! per node), anything else is a client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use paxlock_sim::rng::SimRng;

/// A sender's upstream socket is closed after this long without a packet
/// from the node, so a long run with many short-lived clients does not
/// accumulate sockets (a returning sender simply gets a new one).
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);

/// Upstream socket per sender, shared with the reply loops that retire them.
type Upstreams = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

/// One end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    /// A coordinator node.
    Node(u64),
    /// Any client (workers, the runner's probes).
    Clients,
}

/// What happens to packets on one direction of one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Every packet is dropped (a partition).
    pub blocked: bool,
    /// Probability of dropping a packet, in parts per million.
    pub drop_ppm: u64,
    /// Probability of sending a packet twice, in parts per million.
    pub duplicate_ppm: u64,
    /// Added latency.
    pub delay: Duration,
    /// Extra latency drawn uniformly from `0..=jitter` per packet; packets
    /// overtake each other when it exceeds their spacing (reordering).
    pub jitter: Duration,
}

impl LinkFaults {
    fn is_clean(&self) -> bool {
        *self == LinkFaults::default()
    }
}

/// Packet counts over all proxies.
#[derive(Debug, Default)]
pub struct PacketCounts {
    /// Packets passed on (copies included).
    pub forwarded: AtomicU64,
    /// Dropped by a partition.
    pub blocked: AtomicU64,
    /// Dropped at random.
    pub dropped: AtomicU64,
    /// Extra copies sent.
    pub duplicated: AtomicU64,
    /// Sent late.
    pub delayed: AtomicU64,
}

/// The faults of every link, shared by all proxies and changed by the
/// schedule while they run.
#[derive(Debug, Default)]
pub struct FaultTable {
    links: Mutex<HashMap<(Party, Party), LinkFaults>>,
    /// What the proxies did.
    pub counts: PacketCounts,
}

impl FaultTable {
    /// Sets the faults of the `from → to` direction.
    pub fn set(&self, from: Party, to: Party, faults: LinkFaults) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if faults.is_clean() {
            links.remove(&(from, to));
        } else {
            links.insert((from, to), faults);
        }
    }

    /// Clears every fault.
    pub fn heal(&self) {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn get(&self, from: Party, to: Party) -> LinkFaults {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

/// Where a proxy forwards and how it names senders.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    /// The node behind the proxy.
    pub node: u64,
    /// The proxy's own (public) address.
    pub listen: SocketAddr,
    /// The node's real address.
    pub upstream: SocketAddr,
    /// Listen port of every node, to recognize peers by source port.
    pub node_ports: HashMap<u16, u64>,
    /// Seeds the proxy's drop/duplicate/delay draws.
    pub seed: u64,
}

/// Starts a proxy.
pub async fn start(spec: ProxySpec, table: Arc<FaultTable>) -> std::io::Result<Proxy> {
    let listen = Arc::new(UdpSocket::bind(spec.listen).await?);
    let tasks = Arc::new(Mutex::new(Vec::new()));
    let main = tokio::spawn(inbound_loop(spec, listen, table, tasks.clone()));
    tasks.lock().unwrap_or_else(|p| p.into_inner()).push(main);
    Ok(Proxy { tasks })
}

/// Receives from senders and forwards to the node; starts a reply loop per
/// new sender.
async fn inbound_loop(
    spec: ProxySpec,
    listen: Arc<UdpSocket>,
    table: Arc<FaultTable>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let upstreams: Upstreams = Arc::default();
    let mut rng = SimRng::new(spec.seed);
    let mut buf = vec![0u8; 65_536];
    let node = Party::Node(spec.node);
    loop {
        let Ok((len, src)) = listen.recv_from(&mut buf).await else {
            // Transient errors (ICMP unreachable reported on the socket):
            // keep serving.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let from = party(&spec.node_ports, src);
        let existing = upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&src)
            .cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                let Ok(u) = open_upstream(spec.upstream).await else {
                    continue;
                };
                let u = Arc::new(u);
                upstreams
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(src, u.clone());
                let reply = tokio::spawn(reply_loop(
                    u.clone(),
                    listen.clone(),
                    src,
                    (node, from),
                    table.clone(),
                    upstreams.clone(),
                    spec.seed ^ u64::from(src.port()).rotate_left(32),
                ));
                tasks.lock().unwrap_or_else(|p| p.into_inner()).push(reply);
                u
            }
        };
        let faults = table.get(from, node);
        let packet = buf[..len].to_vec();
        forward(&table, &faults, &mut rng, packet, move |p| {
            let upstream = upstream.clone();
            async move {
                let _ = upstream.send(&p).await;
            }
        })
        .await;
    }
}

async fn open_upstream(node: SocketAddr) -> std::io::Result<UdpSocket> {
    let bind = SocketAddr::new(node.ip(), 0);
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(node).await?;
    Ok(socket)
}

/// Node → sender direction of one sender's link (`link`: node, sender);
/// ends, retiring the upstream socket, after `UPSTREAM_IDLE` of silence.
async fn reply_loop(
    upstream: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    sender: SocketAddr,
    (node, to): (Party, Party),
    table: Arc<FaultTable>,
    upstreams: Upstreams,
    seed: u64,
) {
    let mut rng = SimRng::new(seed);
    let mut buf = vec![0u8; 65_536];
    loop {
        let len = match tokio::time::timeout(UPSTREAM_IDLE, upstream.recv(&mut buf)).await {
            Ok(Ok(len)) => len,
            Ok(Err(_)) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            Err(_) => {
                upstreams
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&sender);
                return;
            }
        };
        let faults = table.get(node, to);
        let listen = listen.clone();
        forward(&table, &faults, &mut rng, buf[..len].to_vec(), move |p| {
            let listen = listen.clone();
            async move {
                let _ = listen.send_to(&p, sender).await;
            }
        })
        .await;
    }
}

fn party(node_ports: &HashMap<u16, u64>, src: SocketAddr) -> Party {
    node_ports
        .get(&src.port())
        .map_or(Party::Clients, |&id| Party::Node(id))
}

/// Applies `faults` to one packet: drops it, or sends one or two copies,
/// each after its own delay. Undelayed copies go out before this returns,
/// so a clean link keeps packet order.
async fn forward<F, Fut>(
    table: &FaultTable,
    faults: &LinkFaults,
    rng: &mut SimRng,
    packet: Vec<u8>,
    send: F,
) where
    F: Fn(Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let counts = &table.counts;
    if faults.blocked {
        counts.blocked.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if rng.chance_ppm(faults.drop_ppm) {
        counts.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let copies = if rng.chance_ppm(faults.duplicate_ppm) {
        counts.duplicated.fetch_add(1, Ordering::Relaxed);
        2
    } else {
        1
    };
    for _ in 0..copies {
        counts.forwarded.fetch_add(1, Ordering::Relaxed);
        let jitter = u64::try_from(faults.jitter.as_micros()).unwrap_or(u64::MAX);
        let delay = faults.delay + Duration::from_micros(rng.range(0, jitter));
        let future = send(packet.clone());
        if delay.is_zero() {
            future.await;
        } else {
            counts.delayed.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                future.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, src)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], src).await;
            }
        });
        (addr, task)
    }

    async fn proxied_echo() -> (Proxy, Arc<FaultTable>, UdpSocket, JoinHandle<()>) {
        let (upstream, echo) = echo_server().await;
        let port = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let listen = port.local_addr().unwrap();
        drop(port);
        let table = Arc::new(FaultTable::default());
        let spec = ProxySpec {
            node: 1,
            listen,
            upstream,
            node_ports: HashMap::new(),
            seed: 7,
        };
        let proxy = start(spec, table.clone()).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(listen).await.unwrap();
        (proxy, table, client, echo)
    }

    async fn round_trip(client: &UdpSocket, payload: &[u8]) -> Option<Vec<u8>> {
        client.send(payload).await.unwrap();
        let mut buf = [0u8; 1500];
        match tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn proxy_forwards_both_ways_and_a_partition_blocks_one_direction() {
        let (_proxy, table, client, _echo) = proxied_echo().await;
        assert_eq!(
            round_trip(&client, b"ping").await.as_deref(),
            Some(&b"ping"[..])
        );

        // Block only the node → client direction: the request still arrives
        // (counted as forwarded) but no answer comes back.
        let blocked = LinkFaults {
            blocked: true,
            ..LinkFaults::default()
        };
        table.set(Party::Node(1), Party::Clients, blocked);
        let forwarded_before = table.counts.forwarded.load(Ordering::Relaxed);
        assert_eq!(round_trip(&client, b"lost").await, None);
        assert!(table.counts.forwarded.load(Ordering::Relaxed) > forwarded_before);
        assert_eq!(table.counts.blocked.load(Ordering::Relaxed), 1);

        table.heal();
        assert_eq!(
            round_trip(&client, b"back").await.as_deref(),
            Some(&b"back"[..])
        );
    }

    #[tokio::test]
    async fn proxy_duplicates_and_delays_packets() {
        let (_proxy, table, client, _echo) = proxied_echo().await;
        table.set(
            Party::Clients,
            Party::Node(1),
            LinkFaults {
                duplicate_ppm: 1_000_000,
                delay: Duration::from_millis(20),
                ..LinkFaults::default()
            },
        );
        let sent = tokio::time::Instant::now();
        assert_eq!(
            round_trip(&client, b"twice").await.as_deref(),
            Some(&b"twice"[..])
        );
        assert!(sent.elapsed() >= Duration::from_millis(20));
        // The duplicate's echo arrives too.
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"twice");
        assert_eq!(table.counts.duplicated.load(Ordering::Relaxed), 1);
    }
}
