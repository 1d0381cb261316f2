//! What client connections may hold of a node: how many connections (in
//! all and per identity), streams per connection, bytes in flight, and
//! how long a request frame may take to arrive. Without these, one
//! certificate holder pinned a node's memory with stalled streams that each
//! announced a large frame and sent all but its last byte.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Semaphore;

use super::log_limit::LogLimiter;
use super::revocation::{self, RevocationWatch};

use crate::config::ClientsConfig;
use crate::locks::{Identity, Limits};

/// Room in a request frame for everything but the name, the value and the
/// waiting list (ids, tags, lengths, small fields): about ten times what
/// they take, so a request a client can legally build always fits.
const REQUEST_FIXED_BYTES: usize = 4096;

/// The largest varint a `u64` of the waiting list takes.
const MAX_VARINT_BYTES: usize = 10;

/// Bounds on client connections. Node-local: nodes of one cluster may
/// differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Client connections to this node, all identities together.
    pub max_connections: usize,
    /// Client connections to this node of one identity.
    pub max_connections_per_identity: usize,
    /// Request (and watch) streams one connection may have open at once;
    /// the client waits for one to finish before opening more. What their
    /// bodies hold is bounded by the reading budget, not by this.
    pub max_streams_per_connection: u32,
    /// Bytes a connection may have sent that the node has not read yet
    /// (QUIC's connection flow-control window).
    pub receive_window_bytes: u32,
    /// The largest request frame accepted, from the state machine's limits
    /// (see [`largest_request_bytes`]).
    pub request_frame_bytes: usize,
    /// How long a request frame may take to arrive once its stream is
    /// open; a stream that stalls longer is reset with `FRAME_TIMEOUT`.
    pub frame_read_timeout: Duration,
    /// Bytes of request bodies being read, all connections together; a
    /// stream waits for room (within its read timeout) before reading.
    pub reading_budget_bytes: usize,
    /// Client handshakes in progress at once; more are turned away.
    pub max_handshakes_in_progress: usize,
    /// Client handshakes begun per second (a bucket of as many); more are
    /// turned away.
    pub handshakes_per_second: u32,
    /// Bytes of watch frames queued and not yet written, all watches
    /// together (each stream at most `watch_queue::STREAM_BYTES`); a watch
    /// with no room waits.
    pub watch_budget_bytes: usize,
}

impl ClientLimits {
    /// The bounds of a node configured with `clients` whose state machine
    /// has `limits`.
    pub fn new(clients: &ClientsConfig, limits: &Limits) -> ClientLimits {
        ClientLimits {
            max_connections: clients.max_connections,
            max_connections_per_identity: clients.max_connections_per_identity,
            max_streams_per_connection: clients.max_streams_per_connection,
            // Requests are small and answered one per stream: 1 MiB in
            // flight per connection keeps a client's pipeline full while
            // bounding what a stalled one makes the node buffer.
            receive_window_bytes: 1024 * 1024,
            request_frame_bytes: largest_request_bytes(limits),
            frame_read_timeout: clients.frame_read_timeout,
            reading_budget_bytes: 64 * 1024 * 1024,
            max_handshakes_in_progress: 64,
            handshakes_per_second: clients.handshakes_per_second,
            watch_budget_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What the node does with a new connection attempt before its handshake.
#[derive(Debug)]
pub enum HandshakeVerdict {
    /// Go ahead; the permit (none for a peer) is held until the handshake
    /// ends.
    Admit(Option<tokio::sync::OwnedSemaphorePermit>),
    /// Over the bounds, from an address not yet validated: answer with a
    /// stateless retry (no crypto spent), so only a sender that receives
    /// at its address comes back.
    Retry,
    /// Over the bounds: refuse at once (the client backs off and retries).
    Refuse,
}

/// A bucket of handshake tokens, refilled at a rate.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: std::time::Instant,
}

/// The largest encoded request `limits` admit: a name and a value at their
/// limits, the longest waiting list, and every other field. A node refuses
/// a request frame above it from its length prefix alone.
pub fn largest_request_bytes(limits: &Limits) -> usize {
    let operation = limits.max_name_bytes as usize
        + limits.max_value_bytes as usize
        + limits.max_unacked_replies_per_session as usize * MAX_VARINT_BYTES;
    // An administrator's SetAccessRules carries the rules instead.
    operation.max(paxlock_core::access::MAX_RULES_BYTES) + REQUEST_FIXED_BYTES
}

/// Why a client connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefusal {
    /// The node holds as many client connections as it allows.
    #[error(
        "this node already has {max} client connections, the most it allows; \
         retry later or connect to another node"
    )]
    NodeFull {
        /// The limit.
        max: usize,
    },
    /// The identity holds as many connections to this node as it may.
    #[error(
        "identity {identity:?} already has {max} connections to this node, the most one identity \
         may hold; share a connection between sessions (one Client serves many) or close some"
    )]
    IdentityFull {
        /// The identity.
        identity: String,
        /// The limit.
        max: usize,
    },
}

/// Counts client connections against [`ClientLimits`] and holds the
/// reading budget.
#[derive(Debug)]
pub struct ClientGate {
    limits: ClientLimits,
    total: AtomicUsize,
    per_identity: DashMap<String, usize>,
    reading: Semaphore,
    refusals_log: LogLimiter,
    revocations: RevocationWatch,
    handshakes: Arc<Semaphore>,
    watch_bytes: Arc<Semaphore>,
    bucket: std::sync::Mutex<Bucket>,
    peers: std::collections::HashSet<std::net::SocketAddr>,
}

impl ClientGate {
    /// A gate enforcing `limits`, with nothing revoked.
    pub fn new(limits: ClientLimits) -> Arc<ClientGate> {
        ClientGate::with_revocations(limits, revocation::none())
    }

    /// A gate enforcing `limits` that refuses what `revocations` revokes.
    pub fn with_revocations(limits: ClientLimits, revocations: RevocationWatch) -> Arc<ClientGate> {
        Arc::new(ClientGate::build(limits, revocations))
    }

    fn build(limits: ClientLimits, revocations: RevocationWatch) -> ClientGate {
        // Room for at least one largest request, or every read would wait.
        let budget = limits
            .reading_budget_bytes
            .max(limits.request_frame_bytes)
            .min(Semaphore::MAX_PERMITS);
        ClientGate {
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes_in_progress)),
            // Room for at least one stream's frames, or a large one would
            // wait forever.
            watch_bytes: Arc::new(Semaphore::new(
                limits
                    .watch_budget_bytes
                    .clamp(super::watch_queue::STREAM_BYTES, Semaphore::MAX_PERMITS),
            )),
            bucket: std::sync::Mutex::new(Bucket {
                tokens: f64::from(limits.handshakes_per_second),
                refilled: std::time::Instant::now(),
            }),
            limits,
            total: AtomicUsize::new(0),
            per_identity: DashMap::new(),
            reading: Semaphore::new(budget),
            revocations,
            peers: std::collections::HashSet::new(),
            refusals_log: LogLimiter::default(),
        }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &ClientLimits {
        &self.limits
    }

    /// Admits one more connection of `identity`, or says why not. The
    /// returned slot gives the place back when dropped.
    pub fn admit(
        self: &Arc<Self>,
        identity: &Identity,
    ) -> Result<ConnectionSlot, ConnectionRefusal> {
        let max = self.limits.max_connections;
        let admitted = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(ConnectionRefusal::NodeFull { max });
        }
        let max = self.limits.max_connections_per_identity;
        let mut count = self.per_identity.entry(identity.0.clone()).or_insert(0);
        if *count >= max {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(ConnectionRefusal::IdentityFull {
                identity: identity.0.clone(),
                max,
            });
        }
        *count += 1;
        Ok(ConnectionSlot {
            gate: self.clone(),
            identity: identity.0.clone(),
        })
    }

    /// The budget of bytes all watch streams' queued frames share.
    pub fn watch_budget(&self) -> Arc<Semaphore> {
        self.watch_bytes.clone()
    }

    /// Waits for room to read a body of `bytes`; the room is given back
    /// when the returned permit drops.
    pub async fn reserve_reading(
        &self,
        bytes: usize,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, tokio::sync::AcquireError> {
        // `bytes` is at most the request frame cap, far below u32::MAX.
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.reading.acquire_many(bytes).await
    }

    /// Logs `what` a client was refused at warn level, at most a few lines
    /// a second (the rest are counted, and the count is logged with the
    /// next line): a client sending refusals in a loop cannot flood the log.
    pub fn warn_refusal(&self, what: std::fmt::Arguments<'_>) {
        self.refusals_log.warn(what)
    }

    /// The same gate, letting `peers` (the other nodes' addresses, which
    /// they dial from) through the handshake bounds: a flood of client
    /// attempts must not keep the cluster's own links from coming back.
    pub fn with_peers(
        limits: ClientLimits,
        revocations: RevocationWatch,
        peers: impl IntoIterator<Item = std::net::SocketAddr>,
    ) -> Arc<ClientGate> {
        let mut gate = ClientGate::build(limits, revocations);
        gate.peers = peers.into_iter().collect();
        Arc::new(gate)
    }

    /// Whether a connection attempt from `remote` may start its handshake
    /// now (`validated`: QUIC has validated the address).
    pub fn handshake(&self, remote: std::net::SocketAddr, validated: bool) -> HandshakeVerdict {
        if self.peers.contains(&remote) {
            return HandshakeVerdict::Admit(None);
        }
        let over = |validated| {
            if validated {
                HandshakeVerdict::Refuse
            } else {
                HandshakeVerdict::Retry
            }
        };
        if !self.take_handshake_token() {
            return over(validated);
        }
        match self.handshakes.clone().try_acquire_owned() {
            Ok(permit) => HandshakeVerdict::Admit(Some(permit)),
            Err(_) => over(validated),
        }
    }

    fn take_handshake_token(&self) -> bool {
        let rate = f64::from(self.limits.handshakes_per_second);
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The revocations in force, following changes.
    pub fn revocations(&self) -> RevocationWatch {
        self.revocations.clone()
    }

    /// Client connections open now.
    pub fn connections(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// One admitted client connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot {
    gate: Arc<ClientGate>,
    identity: String,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gate
            .per_identity
            .remove_if_mut(&self.identity, |_, count| {
                *count -= 1;
                *count == 0
            });
        self.gate.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: usize, per_identity: usize) -> Arc<ClientGate> {
        let mut limits = ClientLimits::new(&ClientsConfig::default(), &Limits::default());
        limits.max_connections = max;
        limits.max_connections_per_identity = per_identity;
        ClientGate::new(limits)
    }

    #[test]
    fn one_identity_cannot_take_every_connection() {
        let gate = gate(10, 2);
        let alice = Identity("alice".into());
        let first = gate.admit(&alice).unwrap();
        let _second = gate.admit(&alice).unwrap();
        let refused = gate.admit(&alice).unwrap_err();
        assert!(matches!(
            refused,
            ConnectionRefusal::IdentityFull { max: 2, .. }
        ));
        assert!(refused.to_string().contains("alice"), "{refused}");
        // Another identity is admitted, and a freed place can be reused.
        let _bob = gate.admit(&Identity("bob".into())).unwrap();
        drop(first);
        let _again = gate.admit(&alice).unwrap();
        assert_eq!(gate.connections(), 3);
    }

    #[test]
    fn the_node_wide_cap_holds_across_identities_and_frees_on_drop() {
        let gate = gate(2, 5);
        let a = gate.admit(&Identity("a".into())).unwrap();
        let _b = gate.admit(&Identity("b".into())).unwrap();
        let refused = gate.admit(&Identity("c".into())).unwrap_err();
        assert_eq!(refused, ConnectionRefusal::NodeFull { max: 2 });
        drop(a);
        assert_eq!(gate.connections(), 1);
        assert!(
            gate.per_identity.get("a").is_none(),
            "an identity's count goes when it is 0"
        );
        let _c = gate.admit(&Identity("c".into())).unwrap();
    }

    #[test]
    fn the_largest_legal_request_fits_the_frame_cap() {
        use paxlock::proto::{request::Op, Campaign, Request};
        use prost::Message;
        let limits = Limits::default();
        let request = Request {
            request_id: u64::MAX,
            session_id: u64::MAX,
            ack_below: u64::MAX,
            waiting: vec![u64::MAX; limits.max_unacked_replies_per_session as usize],
            op: Some(Op::Campaign(Campaign {
                election: "n".repeat(limits.max_name_bytes as usize),
                value: vec![0xff; limits.max_value_bytes as usize],
                timeout_ms: u64::MAX,
            })),
        };
        let cap = largest_request_bytes(&limits);
        assert!(
            request.encoded_len() <= cap,
            "{} > {cap}",
            request.encoded_len()
        );
        // And the cap is not the old 4 MiB: a stalled frame costs little.
        assert!(cap < 128 * 1024, "{cap}");
    }
}
