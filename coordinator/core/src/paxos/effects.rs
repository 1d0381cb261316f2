//! What one `step` asks the shell to do.

use super::durable::PersistRequest;
use super::membership::MembershipError;
use super::message::Message;
use super::types::{Ballot, Batch, Nanos, NodeId, PersistSeq, Slot, Snapshot, Value};

/// A message to send once `after` is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Destination (never this replica itself).
    pub to: NodeId,
    /// The message.
    pub msg: Message,
    /// The message depends on every persist request up to this one: the
    /// shell must not send it before `Persisted { up_to >= after }`.
    /// `PersistSeq(0)` means "send now".
    pub after: PersistSeq,
}

/// A chosen log entry, handed to the application in slot order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenEntry {
    /// The slot.
    pub slot: Slot,
    /// The chosen batch (possibly empty: a no-op filling a gap).
    pub batch: Batch,
}

/// Changes of this replica's leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadershipEvent {
    /// Phase 1 succeeded: this replica leads with `ballot`.
    BecameLeader {
        /// The ballot it leads with.
        ballot: Ballot,
    },
    /// This replica no longer leads (higher ballot seen or quorum lost). Any
    /// lease it held ends now.
    LostLeadership,
    /// This replica, as leader, may assume no other leader exists until
    /// `until` on its own clock. Only ever moves forward while leading.
    LeaseUntil {
        /// Local-clock deadline.
        until: Nanos,
    },
}

/// Commands refused by this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The refused commands, untouched.
    pub values: Vec<Value>,
    /// Who this replica thinks leads, if anyone.
    pub leader_hint: Option<NodeId>,
    /// Why.
    pub reason: RejectReason,
}

/// Why proposals were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Only the leader proposes.
    NotLeader,
    /// The proposal queue is full.
    QueueFull,
    /// A command is larger than `max_value_bytes`.
    TooLarge,
    /// A membership change was refused (the value is the change's).
    Membership(MembershipError),
    /// A command carries the header reserved for membership changes; only
    /// `Input::ChangeMembership` proposes those.
    Reserved,
}

/// Everything one `step` produced. The shell handles it in this order:
/// persist (`persist`), then send `send` entries whose `after` is durable,
/// install `install_snapshot`, apply `chosen`, arm `wake_at`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// At most one request per step (group commit).
    pub persist: Option<PersistRequest>,
    /// Messages to send, each gated on a persist sequence number.
    pub send: Vec<Outgoing>,
    /// Call `step(_, Input::Tick)` at or after this local time.
    pub wake_at: Option<Nanos>,
    /// Replace the application state with this snapshot before applying `chosen`.
    pub install_snapshot: Option<Snapshot>,
    /// Newly chosen entries, contiguous and in slot order.
    pub chosen: Vec<ChosenEntry>,
    /// Leadership changes, in order.
    pub leadership: Vec<LeadershipEvent>,
    /// Refused proposals.
    pub rejected: Vec<Rejected>,
}
