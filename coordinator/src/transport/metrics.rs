//! Counters the transport keeps about what it rejected.

use std::sync::atomic::{AtomicU64, Ordering};

/// Transport counters, shared between connection tasks. All monotonic.
#[derive(Debug, Default)]
pub struct TransportMetrics {
    /// Frames that were oversized, truncated or undecodable; each closed its stream.
    pub frame_errors: AtomicU64,
    /// Incoming connections whose TLS handshake failed (bad, missing or
    /// expired certificate; unknown ALPN).
    pub handshake_failures: AtomicU64,
    /// Peer connections closed because the certificate did not name the
    /// claimed node id, or the cluster id differed.
    pub peer_identity_rejections: AtomicU64,
    /// Client connections closed because the certificate names no usable
    /// identity.
    pub client_identity_rejections: AtomicU64,
    /// Client request streams that were answered.
    pub client_requests: AtomicU64,
    /// Client connections refused because the node, or the identity, held
    /// as many as allowed.
    pub client_connections_refused: AtomicU64,
    /// Connection attempts turned away before their handshake (a retry or
    /// a refusal) because handshakes were over their bounds.
    pub client_handshakes_refused: AtomicU64,
}

impl TransportMetrics {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
