//! Which version of the peer protocol a link speaks, and what each version
//! can carry.
//!
//! Versions are told apart by ALPN: a node dials offering every version it
//! speaks, newest first, and the accepting node picks the newest it also
//! speaks. During a rolling upgrade a node of this release therefore talks
//! version 3 to its upgraded peers and version 2 to the others, and must
//! never send a version-2 node a message that node would misread.

use crate::paxos::Message;

/// ALPN of peer protocol version 3: promises in parts, snapshots in chunks,
/// fragments for legacy messages larger than a frame.
pub const PEER_ALPN_V3: &[u8] = b"paxlock-peer/3";

/// ALPN of peer protocol version 2 (the previous release).
pub const PEER_ALPN_V2: &[u8] = b"paxlock-peer/2";

/// Every peer ALPN this node speaks, newest first (the order of the offer).
pub const PEER_ALPNS: [&[u8]; 2] = [PEER_ALPN_V3, PEER_ALPN_V2];

/// The version each connected peer speaks, by node id: what a leader reads
/// to know whether every node of the cluster speaks a version.
pub type PeerVersions = std::collections::BTreeMap<u64, PeerVersion>;

/// A peer protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerVersion {
    /// The previous release: whole promises, whole snapshots, one frame per
    /// message.
    V2,
    /// This release.
    V3,
}

impl PeerVersion {
    /// The version an ALPN names, if this node speaks it.
    pub fn from_alpn(alpn: &[u8]) -> Option<PeerVersion> {
        match alpn {
            a if a == PEER_ALPN_V3 => Some(PeerVersion::V3),
            a if a == PEER_ALPN_V2 => Some(PeerVersion::V2),
            _ => None,
        }
    }

    /// Whether a peer of this version reads `msg` as this node means it.
    ///
    /// A version-2 node takes any promise for a whole one and any snapshot
    /// for a whole snapshot, and knows no snapshot requests: it must not
    /// get a promise part, a snapshot chunk short of the whole, or a
    /// request for one. Withholding them is safe (a promise not received
    /// is a vote not cast; a snapshot not received is a catch-up that waits
    /// or asks elsewhere), and such messages only arise where the state or
    /// the log is larger than a version-2 node could receive anyway.
    pub fn carries(self, msg: &Message) -> bool {
        match self {
            PeerVersion::V3 => true,
            PeerVersion::V2 => match msg {
                Message::Promise {
                    from_slot,
                    part_start,
                    part_end,
                    ..
                } => part_end.is_none() && part_start == from_slot,
                Message::CatchUp {
                    snapshot: Some(chunk),
                    ..
                } => chunk.is_whole(),
                Message::SnapshotRequest { .. } => false,
                _ => true,
            },
        }
    }

    /// Whether a message larger than one frame may travel as fragments.
    pub fn fragments(self) -> bool {
        self == PeerVersion::V3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::{Ballot, Slot, SnapshotChunk};

    fn promise(part_start: u64, part_end: Option<u64>) -> Message {
        Message::Promise {
            ballot: Ballot::ZERO,
            from_slot: Slot(4),
            chosen_up_to: Slot(4),
            entries: Vec::new(),
            part_start: Slot(part_start),
            part_end: part_end.map(Slot),
        }
    }

    fn chunk(offset: u64, len: usize, total_bytes: u64) -> Message {
        Message::CatchUp {
            snapshot: Some(SnapshotChunk {
                up_to: Slot(9),
                total_bytes,
                offset,
                data: vec![0; len].into(),
            }),
            entries: Vec::new(),
        }
    }

    #[test]
    fn a_version_2_peer_gets_only_whole_promises_and_whole_snapshots() {
        let v2 = PeerVersion::V2;
        assert!(v2.carries(&promise(4, None)));
        assert!(!v2.carries(&promise(4, Some(7))));
        assert!(!v2.carries(&promise(7, None)));
        assert!(v2.carries(&chunk(0, 10, 10)));
        assert!(!v2.carries(&chunk(0, 5, 10)));
        assert!(!v2.carries(&chunk(5, 5, 10)));
        let request = Message::SnapshotRequest {
            up_to: Slot(9),
            offset: 5,
        };
        assert!(!v2.carries(&request));
        for msg in [promise(7, Some(9)), chunk(5, 5, 10), request] {
            assert!(PeerVersion::V3.carries(&msg));
        }
    }

    #[test]
    fn versions_are_named_by_alpn() {
        for version in [PeerVersion::V2, PeerVersion::V3] {
            let alpn = PEER_ALPNS
                .iter()
                .find(|a| PeerVersion::from_alpn(a) == Some(version));
            assert!(alpn.is_some(), "{version:?} has no ALPN");
        }
        assert_eq!(PeerVersion::from_alpn(b"paxlock/1"), None);
    }
}
