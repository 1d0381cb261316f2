//! How protocol messages travel: framing, size caps, ALPN names, the
//! QUIC error codes both sides use, and what a request acknowledges.
//! Shared by clients and coordinators.

pub mod codes;
pub mod frame;

pub use frame::{
    decode_frame, encode_frame, read_frame, read_frame_body, read_frame_header, write_frame,
    FrameError, FRAME_HEADER_BYTES, MAX_FRAME_BYTES,
};
/// What a request acknowledges, and how often one fenced before it was
/// applied is sent again (see [`paxlock_client_rules::ack`]).
pub use paxlock_client_rules::ack::{acknowledgement, MAX_RENUMBERED_SENDS};

/// ALPN protocol id of client connections, version 1. Version negotiation
/// is ALPN: a client offers every version it speaks, newest first, and the
/// node picks one it also speaks (or the TLS handshake fails with
/// `no_application_protocol`).
pub const CLIENT_ALPN_V1: &[u8] = b"paxlock/1";
