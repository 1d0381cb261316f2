//! Newtypes shared by every part of the core, so ids, slots and clock readings
//! cannot be mixed up.

/// Identifies one replica in the cluster. Stable across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The largest id a replica may have. A leadership's epoch packs its
    /// ballot's node id into ten bits (`leader_role::epoch_of`), so two
    /// ids equal modulo 1024 would give two leaderships of one round the
    /// same epoch, and a deposed leader's expiry could pass as the new
    /// leader's. Ids are checked against it wherever a configuration is.
    pub const MAX: u64 = 1023;
}

/// A position in the replicated log. Each slot holds one chosen batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Slot(pub u64);

impl Slot {
    /// The slot right after this one (saturating: the log never wraps).
    pub fn next(self) -> Slot {
        Slot(self.0.saturating_add(1))
    }
}

/// A Paxos ballot. Ordered by `round` first and `node` second, so two nodes
/// never use the same ballot and any node can always pick a higher one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ballot {
    /// Monotonic round number; a candidate picks one above every round it has seen.
    pub round: u64,
    /// The node that owns this ballot; breaks ties between equal rounds.
    pub node: NodeId,
}

impl Ballot {
    /// The ballot below every real ballot: what a fresh acceptor has promised.
    pub const ZERO: Ballot = Ballot {
        round: 0,
        node: NodeId(0),
    };
}

/// A reading of the node's own monotonic clock, in nanoseconds. Only
/// differences between readings of the same node mean anything; readings of
/// different nodes are never compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nanos(pub u64);

impl Nanos {
    /// `self + d`, saturating (a far-future deadline stays far in the future).
    pub fn plus(self, d_ns: u64) -> Nanos {
        Nanos(self.0.saturating_add(d_ns))
    }
    /// `self - earlier`, or 0 if `earlier` is later.
    pub fn since(self, earlier: Nanos) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Sequence number of a persist request. Requests become durable in order, so
/// "persisted up to N" means every request numbered `<= N` is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PersistSeq(pub u64);

/// One opaque client command. The core never looks inside. Shared, not
/// copied, as it goes to the store, the followers and the application.
pub type Value = bytes::Bytes;

/// What one slot carries: many commands, so one Paxos round commits many.
pub type Batch = Vec<Value>;

/// An opaque application snapshot covering every slot below `up_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// First slot *not* covered by the snapshot.
    pub up_to: Slot,
    /// The application's serialized state; the core never looks inside.
    pub data: Vec<u8>,
}
