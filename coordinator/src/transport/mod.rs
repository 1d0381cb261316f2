//! QUIC transport: one quinn endpoint per node, mutual TLS on every
//! connection, ALPN to tell peers, clients and joining nodes apart,
//! length-capped frames.

pub mod client_limits;
pub mod client_streams;
pub mod endpoint;
pub mod identity;
pub mod join;
pub mod lanes;
pub mod log_limit;
pub mod metrics;
pub mod peer;
pub mod peer_version;
pub mod revocation;
pub mod tls;
pub mod watch_queue;

pub use endpoint::{Handlers, NodeEndpoint};
pub use metrics::TransportMetrics;
pub use tls::{TlsError, TlsMaterial};

/// Version of the peer protocol carried in `PeerHello` (informational: the
/// version spoken is negotiated by ALPN, see [`peer_version`]).
pub const PEER_PROTOCOL_VERSION: u32 = 3;

/// The ALPN protocol a connection settled on, if any.
pub fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// Everything that can fail in the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS material or configuration problem.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A connection could not be started (bad address, endpoint closed).
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed by the other side.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A frame could not be read or written.
    #[error(transparent)]
    Frame(#[from] paxlock::wire::FrameError),
    /// A stream write failed.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The other side broke the protocol (wrong hello, unexpected end).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Waited too long for the other side.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The other side does not speak what this node asked for (a release
    /// without it); says what to do instead.
    #[error("{0}")]
    Unsupported(&'static str),
}
