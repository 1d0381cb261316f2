//! The peer hello: proving which node is on the other end.
//!
//! The dialer verifies the acceptor by TLS server name (`node-<id>.paxlock`
//! must be in the acceptor's certificate). The acceptor verifies the dialer
//! from the hello's claimed node id against the dialer's client
//! certificate. Both directions are therefore authenticated as a node id,
//! not merely as "someone with a certificate from our CA".

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashSet;

use paxlock::wire::{codes, read_frame, write_frame, MAX_FRAME_BYTES};
use prost::Message as _;
use tracing::warn;

use super::identity::{peer_certificates, verify_node_identity};
use super::metrics::TransportMetrics;
use super::peer_version::PeerVersion;
use super::{negotiated_alpn, TransportError, PEER_PROTOCOL_VERSION};
use crate::paxos;
use paxlock_peer_codec as peer_codec;
use paxlock_peer_codec::proto::{
    peer_message::Body, Fragment, PeerHello, PeerHelloOk, PeerMessage,
};
use paxlock_storage::Incarnations;

/// Bytes of encoded message one fragment carries (well within a frame).
const FRAGMENT_BYTES: usize = 1024 * 1024;

/// The largest message a peer may send in fragments. Only a log entry
/// accepted by a previous release can make a message larger than a frame,
/// and such an entry is at most 64 commands of at most 81 KiB each, in an
/// entry's framing: about 5.3 MB.
pub const MAX_FRAGMENTED_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// What became of a message handed to [`PeerLink::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Sent in one frame.
    Whole,
    /// Larger than a frame (a legacy log entry): sent in this many fragments.
    Fragmented(usize),
    /// Not sent: the peer's protocol version cannot carry it (see
    /// [`PeerVersion::carries`]) or it is too large for that version.
    Withheld(&'static str),
}

/// How long an accepting node waits for a dialer's hello before closing.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// An authenticated outbound link to one peer: messages sent here arrive,
/// in order per lane, at that peer.
#[derive(Debug)]
pub struct PeerLink {
    /// The peer's node id, proven by its certificate.
    pub node_id: u64,
    /// The protocol version the peer chose.
    pub version: PeerVersion,
    /// The connection (kept to notice when it closes).
    pub connection: quinn::Connection,
    /// The stream bulk messages (and, with a version-2 peer, every
    /// message) travel on: the one the hello opened.
    pub bulk: PeerSender,
    /// The control lane's own stream, at a higher priority (version 3).
    pub control: Option<PeerSender>,
}

/// One stream of a peer link, sending consensus messages in the form the
/// peer's version reads.
#[derive(Debug)]
pub struct PeerSender {
    version: PeerVersion,
    send: quinn::SendStream,
}

impl PeerSender {
    /// Sends one consensus message, or withholds it if the peer's version
    /// cannot carry it.
    pub async fn send(&mut self, msg: &paxos::Message) -> Result<Sent, TransportError> {
        if !self.version.carries(msg) {
            return Ok(Sent::Withheld("its protocol version cannot carry it"));
        }
        let encoded = peer_codec::encode(msg);
        if encoded.encoded_len() <= MAX_FRAME_BYTES {
            write_frame(&mut self.send, &encoded).await?;
            return Ok(Sent::Whole);
        }
        if !self.version.fragments() {
            return Ok(Sent::Withheld("it is larger than a frame"));
        }
        let bytes = bytes::Bytes::from(encoded.encode_to_vec());
        let pieces = bytes.len().div_ceil(FRAGMENT_BYTES);
        for i in 0..pieces {
            let start = i * FRAGMENT_BYTES;
            let end = (start + FRAGMENT_BYTES).min(bytes.len());
            let fragment = PeerMessage {
                body: Some(Body::Fragment(Fragment {
                    data: bytes.slice(start..end),
                    last: i + 1 == pieces,
                })),
            };
            write_frame(&mut self.send, &fragment).await?;
        }
        Ok(Sent::Fragmented(pieces))
    }
}

/// Priority of the control lane's stream over the bulk one (quinn sends
/// the higher first).
const CONTROL_PRIORITY: i32 = 1;

/// Who a node says it is in a peer hello, and what it checks of the other
/// end beyond its certificate.
#[derive(Debug, Clone)]
pub struct HelloAs {
    /// This node's id.
    pub node_id: u64,
    /// The cluster's name.
    pub cluster_id: String,
    /// The digest of the settings every node must share.
    pub config_digest: u64,
    /// This node's data-directory incarnation and the ones it knows its
    /// peers by (`None`: a node without a data directory, which presents
    /// and checks none).
    pub incarnations: Option<Arc<Incarnations>>,
    /// Ids of removed members, refused (`REMOVED_MEMBER`) so that one back
    /// after missing its removal learns it and stops.
    pub removed: Arc<DashSet<u64>>,
}

/// Who a dialling node claims to be (in a peer hello or a join request).
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The cluster it says it is in.
    pub cluster_id: &'a str,
    /// The digest of its shared settings.
    pub config_digest: u64,
    /// The node id it claims.
    pub node_id: u64,
}

impl HelloAs {
    /// Checks a dialler's claim against this node and the certificate it
    /// presented: same cluster, same shared settings, not this node's own
    /// id, and a node certificate naming the id. The refusal is the close
    /// code to use and why.
    pub fn check_claim(
        &self,
        claim: &Claim<'_>,
        certs: &[rustls::pki_types::CertificateDer<'_>],
    ) -> Result<(), (u32, String)> {
        if claim.cluster_id != self.cluster_id {
            return Err((
                codes::CLUSTER_MISMATCH,
                format!(
                    "peer claims cluster {:?}, this node is in cluster {:?}",
                    claim.cluster_id, self.cluster_id
                ),
            ));
        }
        if claim.config_digest != self.config_digest {
            return Err((
                codes::CLUSTER_MISMATCH,
                format!(
                    "node {} runs with different shared settings ([limits], \
                     max_clock_drift_ppm): digest {:x}, here {:x}; every node must use the same \
                     values",
                    claim.node_id, claim.config_digest, self.config_digest
                ),
            ));
        }
        if claim.node_id == self.node_id {
            return Err((
                codes::PEER_IDENTITY_MISMATCH,
                format!("peer claims this node's own id {}", self.node_id),
            ));
        }
        verify_node_identity(certs, claim.node_id).map_err(|e| {
            (
                codes::PEER_IDENTITY_MISMATCH,
                format!("peer claims node {}: {e}", claim.node_id),
            )
        })
    }

    /// Refuses a removed member (`REMOVED_MEMBER`), saying what to do.
    pub fn check_not_removed(&self, node: u64) -> Result<(), (u32, String)> {
        if !self.removed.contains(&node) {
            return Ok(());
        }
        Err((
            codes::REMOVED_MEMBER,
            format!(
                "node {node} was removed from the cluster and its id is never used again: it \
                 takes no part. To bring the machine back, wipe its data directory and add it as \
                 a new member under a new id (paxlock members add, or serve --join)"
            ),
        ))
    }

    fn incarnation(&self) -> u64 {
        self.incarnations.as_ref().map_or(0, |i| i.own())
    }

    /// Checks the incarnation peer `node` presented.
    fn check_incarnation(&self, node: u64, incarnation: u64) -> Result<(), String> {
        match &self.incarnations {
            Some(known) => known.check(node, incarnation).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

/// Dials `peer_id` at `addr` as `me` and performs the hello.
pub async fn dial(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    me: &HelloAs,
    peer_id: u64,
    addr: SocketAddr,
) -> Result<PeerLink, TransportError> {
    let cluster_id = me.cluster_id.as_str();
    let server_name = paxlock_certs::node_dns_name(peer_id);
    let connection = endpoint.connect_with(config, addr, &server_name)?.await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    let hello = PeerHello {
        cluster_id: cluster_id.to_string(),
        node_id: me.node_id,
        protocol_version: PEER_PROTOCOL_VERSION,
        config_digest: me.config_digest,
        incarnation: me.incarnation(),
    };
    write_frame(&mut send, &hello).await?;
    let reply = tokio::time::timeout(HELLO_TIMEOUT, read_frame::<PeerHelloOk, _>(&mut recv))
        .await
        .map_err(|_| TransportError::Timeout("peer hello reply"))?;
    let version = negotiated_alpn(&connection)
        .as_deref()
        .and_then(PeerVersion::from_alpn)
        .ok_or_else(|| {
            TransportError::Protocol("the peer chose no peer protocol version".into())
        })?;
    let ok = match reply {
        Ok(Some(ok)) => ok,
        // A refusal arrives as a connection close; report that, it says why.
        Ok(None) | Err(_) => {
            let reason = connection.closed().await;
            return Err(TransportError::Connection(reason));
        }
    };
    if ok.node_id != peer_id || ok.cluster_id != cluster_id {
        connection.close(
            codes::CLUSTER_MISMATCH.into(),
            b"unexpected peer hello reply",
        );
        return Err(TransportError::Protocol(format!(
            "dialed node {peer_id} of cluster {cluster_id:?}, but node {} of cluster {:?} answered",
            ok.node_id, ok.cluster_id
        )));
    }
    if let Err(reason) = me.check_incarnation(peer_id, ok.incarnation) {
        warn!(peer = peer_id, %addr, "refused peer: {reason}");
        connection.close(codes::STALE_INCARNATION.into(), reason.as_bytes());
        return Err(TransportError::Protocol(reason));
    }
    let control = if version.fragments() {
        let control = connection.open_uni().await?;
        let _ = control.set_priority(CONTROL_PRIORITY);
        Some(PeerSender {
            version,
            send: control,
        })
    } else {
        None
    };
    Ok(PeerLink {
        node_id: peer_id,
        version,
        connection,
        bulk: PeerSender { version, send },
        control,
    })
}

/// An authenticated inbound link: the stream the peer will send on (more
/// may follow: a version-3 peer opens a unidirectional stream for its
/// control lane, see `endpoint`).
#[derive(Debug)]
pub struct InboundPeer {
    /// The peer's node id, proven by its certificate.
    pub node_id: u64,
    /// The connection.
    pub connection: quinn::Connection,
    /// Messages from the peer on the hello's stream.
    pub bulk: FrameReader,
}

/// Reads consensus messages from one stream of a peer, reassembled from
/// their fragments where they came in several.
#[derive(Debug)]
pub struct FrameReader {
    recv: quinn::RecvStream,
    /// The fragments of a message received so far.
    partial: Vec<u8>,
}

impl FrameReader {
    /// Reads from `recv`.
    pub fn new(recv: quinn::RecvStream) -> FrameReader {
        FrameReader {
            recv,
            partial: Vec::new(),
        }
    }

    /// Reads the next message; `Ok(None)` when the peer closed the stream.
    pub async fn next(&mut self) -> Result<Option<PeerMessage>, TransportError> {
        loop {
            let Some(frame) = read_frame::<PeerMessage, _>(&mut self.recv).await? else {
                if self.partial.is_empty() {
                    return Ok(None);
                }
                return Err(TransportError::Protocol(
                    "the peer stream ended inside a fragmented message".into(),
                ));
            };
            let fragment = match frame.body {
                Some(Body::Fragment(fragment)) => fragment,
                _ if self.partial.is_empty() => return Ok(Some(frame)),
                _ => {
                    return Err(TransportError::Protocol(
                        "a message arrived between the fragments of another".into(),
                    ))
                }
            };
            if self.partial.len().saturating_add(fragment.data.len()) > MAX_FRAGMENTED_MESSAGE_BYTES
            {
                return Err(TransportError::Protocol(format!(
                    "a fragmented message exceeds {MAX_FRAGMENTED_MESSAGE_BYTES} bytes"
                )));
            }
            self.partial.extend_from_slice(&fragment.data);
            if fragment.last {
                let whole = std::mem::take(&mut self.partial);
                let msg = PeerMessage::decode(whole.as_slice())
                    .map_err(paxlock::wire::FrameError::Decode)?;
                return Ok(Some(msg));
            }
        }
    }
}

/// Runs the accepting side of the hello on a connection that negotiated the
/// peer ALPN. On any failure the connection is closed with a specific code
/// and a warning saying why is logged.
pub async fn accept(
    connection: quinn::Connection,
    me: &HelloAs,
    metrics: &TransportMetrics,
) -> Result<InboundPeer, TransportError> {
    let (my_id, cluster_id) = (me.node_id, me.cluster_id.as_str());
    let remote = connection.remote_address();
    let reject = |code: u32, reason: String| {
        warn!(%remote, code, "rejected peer connection: {reason}");
        connection.close(code.into(), reason.as_bytes());
        TransportError::Protocol(reason)
    };
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        let (send, mut recv) = connection.accept_bi().await?;
        let hello = read_frame::<PeerHello, _>(&mut recv).await?;
        Ok::<_, TransportError>((send, recv, hello))
    })
    .await;
    let (mut send, recv, hello) = match hello {
        Ok(Ok((send, recv, Some(hello)))) => (send, recv, hello),
        Ok(Ok((_, _, None))) => {
            return Err(reject(
                codes::HELLO_REQUIRED,
                "stream closed before hello".into(),
            ))
        }
        Ok(Err(e)) => return Err(reject(codes::HELLO_REQUIRED, format!("bad hello: {e}"))),
        Err(_) => return Err(reject(codes::HELLO_REQUIRED, "no hello in time".into())),
    };
    let certs = peer_certificates(&connection);
    let claim = Claim {
        cluster_id: &hello.cluster_id,
        config_digest: hello.config_digest,
        node_id: hello.node_id,
    };
    if let Err((code, reason)) = me.check_claim(&claim, &certs) {
        TransportMetrics::bump(&metrics.peer_identity_rejections);
        return Err(reject(code, reason));
    }
    if let Err(reason) = me.check_incarnation(hello.node_id, hello.incarnation) {
        TransportMetrics::bump(&metrics.peer_identity_rejections);
        return Err(reject(codes::STALE_INCARNATION, reason));
    }
    if let Err((code, reason)) = me.check_not_removed(hello.node_id) {
        TransportMetrics::bump(&metrics.peer_identity_rejections);
        return Err(reject(code, reason));
    }
    let ok = PeerHelloOk {
        cluster_id: cluster_id.to_string(),
        node_id: my_id,
        incarnation: me.incarnation(),
    };
    write_frame(&mut send, &ok).await?;
    let _ = send.finish();
    Ok(InboundPeer {
        node_id: hello.node_id,
        connection,
        bulk: FrameReader::new(recv),
    })
}
