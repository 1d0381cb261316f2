//! Two lanes per peer link: a control lane for the small messages a
//! leader's liveness depends on (heartbeats and their acks, votes,
//! accepted replies, requests) and a bulk lane for the messages that carry
//! log entries or snapshot data.
//!
//! Why: a leader keeps its lease only if heartbeats make the round trip
//! within an election timeout. Behind megabytes of accepts on one ordered
//! stream, in one queue, they would not, and a leader busy replicating a
//! burst of large commands would lose its quorum for no fault at all. So
//! each lane has its own queues on both ends, its own QUIC stream (version
//! 3; the control stream at a higher priority), and the consensus loop
//! takes control messages first. Paxos needs no order between messages, so
//! the lanes may overtake each other.

use crate::bounded;
use crate::paxos::{Message, NodeId};

/// Which lane a message travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Small and urgent.
    Control,
    /// Log entries and snapshot data.
    Bulk,
}

impl Lane {
    /// The lane of `msg`.
    pub fn of(msg: &Message) -> Lane {
        match msg {
            Message::Accept { .. } | Message::Promise { .. } | Message::CatchUp { .. } => {
                Lane::Bulk
            }
            _ => Lane::Control,
        }
    }
}

/// Bounds of one lane's queue.
#[derive(Debug, Clone, Copy)]
pub struct LaneBounds {
    /// Most messages queued.
    pub messages: usize,
    /// Most bytes (of `encoded_len_bound`) queued.
    pub bytes: usize,
}

/// Control messages are about a hundred bytes each.
pub const CONTROL_BOUNDS: LaneBounds = LaneBounds {
    messages: 4096,
    bytes: 4 * 1024 * 1024,
};

/// Bulk messages are up to `max_message_bytes` each.
pub const BULK_BOUNDS: LaneBounds = LaneBounds {
    messages: 1024,
    bytes: 16 * 1024 * 1024,
};

/// One queue per lane, towards one receiver.
#[derive(Debug)]
pub struct Lanes<T> {
    /// The control lane.
    pub control: T,
    /// The bulk lane.
    pub bulk: T,
}

impl<T: Clone> Clone for Lanes<T> {
    fn clone(&self) -> Self {
        Lanes {
            control: self.control.clone(),
            bulk: self.bulk.clone(),
        }
    }
}

impl<T> Lanes<T> {
    /// The queue of `lane`.
    pub fn get(&self, lane: Lane) -> &T {
        match lane {
            Lane::Control => &self.control,
            Lane::Bulk => &self.bulk,
        }
    }
}

/// A pair of lane queues of `T`: the senders and the receivers.
pub type LaneChannels<T> = (Lanes<bounded::Sender<T>>, Lanes<bounded::Receiver<T>>);

/// Makes a pair of lane queues with the standard bounds.
pub fn channels<T>() -> LaneChannels<T> {
    let (control_tx, control_rx) = bounded::channel(CONTROL_BOUNDS.messages, CONTROL_BOUNDS.bytes);
    let (bulk_tx, bulk_rx) = bounded::channel(BULK_BOUNDS.messages, BULK_BOUNDS.bytes);
    (
        Lanes {
            control: control_tx,
            bulk: bulk_tx,
        },
        Lanes {
            control: control_rx,
            bulk: bulk_rx,
        },
    )
}

/// Where the node's readers deliver what peers send.
pub type PeerInbox = Lanes<bounded::Sender<(NodeId, Message)>>;

/// What the consensus loop reads peer messages from.
pub type PeerInboxReceiver = Lanes<bounded::Receiver<(NodeId, Message)>>;

/// The consensus loop's queues towards one peer's link.
pub type PeerOutbox = Lanes<bounded::Sender<Message>>;

/// What one peer's link task reads.
pub type PeerOutboxReceiver = Lanes<bounded::Receiver<Message>>;

impl PeerInbox {
    /// Queues a message from `from` in its lane, waiting for room
    /// (backpressure on the peer's stream). Fails only when the consensus
    /// loop is gone.
    pub async fn deliver(&self, from: NodeId, msg: Message) -> Result<(), bounded::TrySendError> {
        let bytes = msg.encoded_len_bound();
        self.get(Lane::of(&msg)).send((from, msg), bytes).await
    }
}

impl PeerOutbox {
    /// Queues `msg` for the peer if its lane has room; a full lane drops
    /// it, which consensus tolerates (it retries by timeout), rather than
    /// stall the loop on a slow peer.
    pub fn offer(&self, msg: Message) -> Result<(), bounded::TrySendError> {
        let bytes = msg.encoded_len_bound();
        self.get(Lane::of(&msg)).try_send(msg, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::{Ballot, Slot};

    #[test]
    fn heartbeats_and_replies_take_the_control_lane_entries_the_bulk_one() {
        let ballot = Ballot::ZERO;
        let control = [
            Message::Heartbeat {
                ballot,
                round: 1,
                commit: Slot(0),
            },
            Message::HeartbeatAck {
                ballot,
                round: 1,
                commit: Slot(0),
            },
            Message::Accepted {
                ballot,
                slot: Slot(0),
            },
            Message::CatchUpRequest { from_slot: Slot(0) },
        ];
        assert!(control.iter().all(|m| Lane::of(m) == Lane::Control));
        let accept = Message::Accept {
            ballot,
            slot: Slot(0),
            batch: vec![bytes::Bytes::from(vec![1; 10])],
            commit: Slot(0),
        };
        assert_eq!(Lane::of(&accept), Lane::Bulk);
    }
}
