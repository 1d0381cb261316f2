//! How protocol messages travel: framing, size caps, ALPN names and the
//! QUIC error codes both sides use. Shared by clients and coordinators.

pub mod codes;
pub mod frame;

pub use frame::{
    decode_frame, encode_frame, read_frame, write_frame, FrameError, FRAME_HEADER_BYTES,
    MAX_FRAME_BYTES,
};

/// ALPN protocol id of client connections, version 1. Version negotiation
/// is ALPN: a client offers every version it speaks, newest first, and the
/// node picks one it also speaks (or the TLS handshake fails with
/// `no_application_protocol`).
pub const CLIENT_ALPN_V1: &[u8] = b"paxlock/1";

/// ALPN protocol id of node-to-node connections, version 1.
pub const PEER_ALPN_V1: &[u8] = b"paxlock-peer/1";
