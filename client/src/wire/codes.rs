//! QUIC application error codes used by Paxlock to close streams and
//! connections. The numbers are part of the protocol (see `PROTOCOL.md`).

/// Graceful close: nothing went wrong.
pub const NO_ERROR: u32 = 0x0;
/// A frame could not be parsed: truncated, or its bytes do not decode as
/// the expected message. Closes the stream only.
pub const MALFORMED_FRAME: u32 = 0x10;
/// A frame's length prefix exceeds `MAX_FRAME_BYTES`. Closes the stream only.
pub const FRAME_TOO_LARGE: u32 = 0x11;
/// The stream carried something out of order (e.g. a second request).
pub const UNEXPECTED_FRAME: u32 = 0x12;
/// A request frame did not arrive within the node's read timeout (a
/// stalled sender). Closes the stream only; send the request again.
pub const FRAME_TIMEOUT: u32 = 0x13;
/// Connection close: the peer's certificate does not name the node id that
/// it claimed in its hello.
pub const PEER_IDENTITY_MISMATCH: u32 = 0x20;
/// Connection close: the peer belongs to a different cluster.
pub const CLUSTER_MISMATCH: u32 = 0x21;
/// Connection close: the peer did not send a valid hello in time.
pub const HELLO_REQUIRED: u32 = 0x22;
/// Connection close: the client certificate names no usable identity (no
/// common name or DNS name, or one that cannot be an identity).
pub const CLIENT_IDENTITY_MISSING: u32 = 0x23;
/// Connection close: the node holds as many client connections as it
/// allows, in all or for this identity; the reason says which.
pub const TOO_MANY_CONNECTIONS: u32 = 0x24;
/// Connection close: the client's certificate, or its identity, is revoked
/// (the node's revocation file lists it); the reason says which. Issue the
/// client a new certificate, or ask the operator.
pub const CERTIFICATE_REVOKED: u32 = 0x25;
/// Connection close (peers): the dialling node presented a data-directory
/// incarnation other than the one the refusing node first saw it with: it
/// lost its data and must not take part under its old id; the reason says
/// so. A node refused with it stops.
pub const STALE_INCARNATION: u32 = 0x26;
/// Connection close (peers): the dialling node was removed from the
/// cluster (its id is never used again), which it did not learn, being
/// down or cut off when the removal was chosen. A node refused with it
/// stops, saying so.
pub const REMOVED_MEMBER: u32 = 0x27;
/// Connection close: the node is shutting down.
pub const SHUTTING_DOWN: u32 = 0x30;
