//! Node metrics in the Prometheus text format, and the small HTTP endpoint
//! that serves them with a health check.
//!
//! The endpoint answers `GET /metrics` and `GET /health` only, on an
//! address that should stay local (default: loopback). It is written
//! directly on tokio rather than with an HTTP framework because two fixed
//! GET routes do not justify one more dependency tree in the node.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::node::driver::DriverStatus;
use crate::service::Shared;
use crate::transport::TransportMetrics;

/// Upper bounds (seconds) of every latency histogram's buckets: fine below
/// a millisecond, where an fsync and a commit on a local disk fall, and
/// coarse up to the seconds a stalled disk or a failover takes.
const LATENCY_BUCKETS_S: [f64; 17] = [
    0.00005, 0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
    0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram with fixed buckets, updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket of `LATENCY_BUCKETS_S` (last = +Inf).
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let s = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS_S
            .iter()
            .position(|&le| s <= le)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        if let Some(counter) = self.buckets.get(bucket) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Appends the histogram to `out` in the Prometheus text format.
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, counter) in self.buckets.iter().enumerate() {
            cumulative += counter.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS_S
                .get(i)
                .map_or("+Inf".to_string(), |s| s.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum_s = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum_s}\n{name}_count {cumulative}");
    }
}

/// Counters the node updates as it works. All monotonic.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Client requests, from arrival to answer (an acquire that queues
    /// includes its wait).
    pub requests: Histogram,
    /// Making one batch of acceptor state durable: WAL write + fdatasync.
    pub persists: Histogram,
    /// A client command from its proposal to its application on the node
    /// that proposed it: one consensus round plus the queueing before it.
    pub commits: Histogram,
    /// Log slots applied.
    pub chosen_entries: AtomicU64,
    /// Commands in those slots (so the mean batch size is the ratio).
    pub chosen_values: AtomicU64,
    /// The durable store's counters, refreshed after every group commit.
    pub storage: Mutex<DurabilityStats>,
    /// Node id → the commit index that peer last reported to this node.
    /// Peers report it in heartbeat replies, which only a leader gets, so
    /// only a leader's view is current.
    pub peer_commits: dashmap::DashMap<u64, u64>,
}

pub use paxlock_storage::DurabilityStats;

impl NodeMetrics {
    /// How many slots `peer`'s commit index trails this node's, as of the
    /// peer's latest heartbeat reply; 0 unless this node leads (only a
    /// leader hears those replies). A peer never heard from trails by the
    /// whole log.
    pub fn peer_lag(&self, peer: u64, status: &DriverStatus) -> u64 {
        if !status.is_leader {
            return 0;
        }
        let reported = self.peer_commits.get(&peer).map_or(0, |c| *c);
        status.commit_index.saturating_sub(reported)
    }

    /// Stores the durable store's latest counters.
    pub fn set_storage(&self, stats: DurabilityStats) {
        *self.storage.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    }
}

/// Everything the endpoint reports on.
#[derive(Debug, Clone)]
pub struct MetricsSources {
    /// This node's id.
    pub node_id: u64,
    /// Node counters.
    pub node: Arc<NodeMetrics>,
    /// Transport counters.
    pub transport: Arc<TransportMetrics>,
    /// Consensus status.
    pub status: watch::Receiver<DriverStatus>,
    /// The lock service (for gauges).
    pub shared: Arc<Shared>,
}

impl MetricsSources {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let status = self.status.borrow().clone();
        let gauges = self.shared.machine().gauges();
        let storage = *self.node.storage.lock().unwrap_or_else(|p| p.into_inner());
        let t = &self.transport;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "paxlock_node_id",
            "gauge",
            "This node's id.",
            self.node_id as f64,
        );
        metric(
            "paxlock_is_leader",
            "gauge",
            "1 if this node leads the cluster.",
            f64::from(u8::from(status.is_leader)),
        );
        metric(
            "paxlock_leader_id",
            "gauge",
            "The node this node believes leads (0: unknown).",
            status.leader.map_or(0, |l| l.0) as f64,
        );
        metric(
            "paxlock_ballot_round",
            "gauge",
            "Round of the ballot this node leads with (0 if not leading).",
            status.ballot_round as f64,
        );
        metric(
            "paxlock_commit_index",
            "gauge",
            "Every log slot below this is chosen.",
            status.commit_index as f64,
        );
        metric(
            "paxlock_applied_index",
            "gauge",
            "Log slots applied to the state machine.",
            status.applied_index as f64,
        );
        metric(
            "paxlock_wal_fsyncs_total",
            "counter",
            "fsync calls of the write-ahead log.",
            storage.fsyncs as f64,
        );
        metric(
            "paxlock_wal_records_total",
            "counter",
            "Records made durable.",
            storage.records as f64,
        );
        metric(
            "paxlock_wal_batches_total",
            "counter",
            "Group commits (one fsync of the log each).",
            storage.batches as f64,
        );
        metric(
            "paxlock_wal_bytes_total",
            "counter",
            "Bytes written to the log.",
            storage.bytes as f64,
        );
        metric(
            "paxlock_chosen_entries_total",
            "counter",
            "Log slots applied.",
            self.node.chosen_entries.load(Ordering::Relaxed) as f64,
        );
        metric(
            "paxlock_chosen_commands_total",
            "counter",
            "Commands applied (commands per slot = batch size).",
            self.node.chosen_values.load(Ordering::Relaxed) as f64,
        );
        metric(
            "paxlock_sessions",
            "gauge",
            "Live sessions.",
            gauges.sessions as f64,
        );
        metric(
            "paxlock_locks_held",
            "gauge",
            "Locks with a holder.",
            gauges.locks_held as f64,
        );
        metric(
            "paxlock_lock_waiters",
            "gauge",
            "Acquires waiting in FIFO queues.",
            gauges.waiters as f64,
        );
        metric(
            "paxlock_elections_led",
            "gauge",
            "Elections with a leader.",
            gauges.elections_led as f64,
        );
        metric(
            "paxlock_state_bytes",
            "gauge",
            "The replicated state's counted bytes; past limits.max_state_bytes what would add state is refused.",
            gauges.state_bytes as f64,
        );
        metric(
            "paxlock_state_bytes_max",
            "gauge",
            "limits.max_state_bytes: the bound on paxlock_state_bytes.",
            gauges.max_state_bytes as f64,
        );
        metric(
            "paxlock_frame_errors_total",
            "counter",
            "Malformed, oversized or stalled frames (each closed its stream).",
            TransportMetrics::get(&t.frame_errors) as f64,
        );
        metric(
            "paxlock_client_connections_refused_total",
            "counter",
            "Client connections refused: the node, or their identity, held as many as allowed.",
            TransportMetrics::get(&t.client_connections_refused) as f64,
        );
        metric(
            "paxlock_client_handshakes_refused_total",
            "counter",
            "Connection attempts answered with a retry or refused before their handshake: over the handshake bounds.",
            TransportMetrics::get(&t.client_handshakes_refused) as f64,
        );
        metric(
            "paxlock_handshake_failures_total",
            "counter",
            "Connections refused during the TLS handshake.",
            TransportMetrics::get(&t.handshake_failures) as f64,
        );
        metric(
            "paxlock_peer_identity_rejections_total",
            "counter",
            "Peers refused for a certificate that does not name them.",
            TransportMetrics::get(&t.peer_identity_rejections) as f64,
        );
        metric(
            "paxlock_client_identity_rejections_total",
            "counter",
            "Clients refused for a certificate that names no usable identity.",
            TransportMetrics::get(&t.client_identity_rejections) as f64,
        );
        metric(
            "paxlock_malformed_peer_messages_total",
            "counter",
            "Peer messages dropped by the consensus core's checks.",
            status.malformed_messages as f64,
        );
        let _ = writeln!(
            out,
            "# HELP paxlock_peer_lag_slots Slots a peer's commit index trails this leader's (as of its last heartbeat reply; only on the leader).\n# TYPE paxlock_peer_lag_slots gauge"
        );
        if status.is_leader {
            let mut peers: Vec<u64> = self.node.peer_commits.iter().map(|e| *e.key()).collect();
            peers.sort_unstable();
            for peer in peers {
                let lag = self.node.peer_lag(peer, &status);
                let _ = writeln!(out, "paxlock_peer_lag_slots{{peer=\"{peer}\"}} {lag}");
            }
        }
        self.node.requests.render(
            &mut out,
            "paxlock_request_duration_seconds",
            "Client requests, from arrival to answer (a queued acquire includes its wait).",
        );
        self.node.persists.render(
            &mut out,
            "paxlock_persist_duration_seconds",
            "Making one batch of acceptor state durable (WAL write + fdatasync).",
        );
        self.node.commits.render(
            &mut out,
            "paxlock_commit_duration_seconds",
            "Client commands from proposal to application on the node that proposed them (the leader).",
        );
        out
    }

    /// A one-line JSON health document.
    pub fn health(&self) -> String {
        let status = self.status.borrow().clone();
        format!(
            "{{\"node_id\":{},\"healthy\":{},\"is_leader\":{},\"leader_id\":{},\"commit_index\":{},\"applied_index\":{}}}\n",
            self.node_id,
            status.failed.is_none(),
            status.is_leader,
            status.leader.map_or(0, |l| l.0),
            status.commit_index,
            status.applied_index
        )
    }
}

/// Largest request head read; anything longer is refused.
const MAX_REQUEST_BYTES: usize = 8192;

/// Connections the metrics endpoint serves at once; more are closed as
/// soon as they are accepted, so the endpoint cannot use up the node's file
/// descriptors (which it needs for its WAL).
const MAX_METRICS_CONNECTIONS: usize = 32;

/// How long one metrics connection may take, request and response.
const METRICS_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/metrics` and `/health` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, sources: MetricsSources) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                warn!("metrics endpoint accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "metrics endpoint busy: closing the connection");
            drop(stream);
            continue;
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let answered = tokio::time::timeout(
                METRICS_CONNECTION_TIMEOUT,
                answer_metrics_request(stream, peer, &sources),
            );
            if answered.await.is_err() {
                debug!(%peer, "metrics connection timed out");
            }
        });
    }
}

/// Reads one request head (at most `MAX_REQUEST_BYTES`) and writes the
/// answer.
async fn answer_metrics_request(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    sources: &MetricsSources,
) {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    // The caller bounds the time; the buffer bounds the size.
    while len < buf.len() {
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let method_ok = head.starts_with("GET ");
    let (code, kind, body) = match (method_ok, path) {
        (true, "/metrics") => ("200 OK", "text/plain; version=0.0.4", sources.render()),
        (true, "/health") => {
            let failed = sources.status.borrow().failed.is_some();
            let code = if failed {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            (code, "application/json", sources.health())
        }
        (true, _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /health\n".into(),
        ),
        (false, _) => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = stream.write_all(response.as_bytes()).await {
        debug!(%peer, "metrics client went away: {e}");
    }
    let _ = stream.shutdown().await;
}

/// Binds the metrics endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_observation_in_its_bucket_cumulatively() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40)); // ≤ 50 µs
        h.observe(Duration::from_micros(90)); // ≤ 100 µs
        h.observe(Duration::from_micros(100)); // ≤ 100 µs: bounds are inclusive
        h.observe(Duration::from_secs(9)); // +Inf
        let mut out = String::new();
        h.render(&mut out, "t_seconds", "test");
        let sample = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.parse::<f64>().ok())
        };
        assert_eq!(
            sample("t_seconds_bucket{le=\"0.00005\"}"),
            Some(1.0),
            "{out}"
        );
        assert_eq!(
            sample("t_seconds_bucket{le=\"0.0001\"}"),
            Some(3.0),
            "{out}"
        );
        assert_eq!(sample("t_seconds_bucket{le=\"5\"}"), Some(3.0), "{out}");
        assert_eq!(sample("t_seconds_bucket{le=\"+Inf\"}"), Some(4.0), "{out}");
        assert_eq!(sample("t_seconds_count"), Some(4.0), "{out}");
        let sum = sample("t_seconds_sum").unwrap_or_default();
        assert!((sum - 9.00023).abs() < 1e-9, "{out}");
        assert!(out.starts_with("# HELP t_seconds test\n# TYPE t_seconds histogram\n"));
    }
}
