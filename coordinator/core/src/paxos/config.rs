//! Static configuration of one replica: membership, timing and bounds.

use super::types::NodeId;
use super::wire_size::{ENTRY_OVERHEAD_BYTES, MESSAGE_OVERHEAD_BYTES, VALUE_OVERHEAD_BYTES};

/// Test-only switches that disable exactly one safety rule, so the simulator
/// can show that its checks catch the resulting violations.
#[cfg(feature = "canary")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Canary {
    /// All rules on.
    #[default]
    None,
    /// Acceptor replies (promise, accepted) leave before their state is durable.
    NoPersistBeforeReply,
    /// The acceptor accepts any ballot, ignoring what it promised.
    NoBallotCheckInAccept,
    /// The acceptor promises a new ballot while its lease to the leader runs.
    NoLeaseWaitBeforePromise,
    /// A batch closes on its command count only, not on its bytes, so an
    /// Accept can outgrow the transport's frame.
    NoBatchByteBound,
    /// A leader counts its learners' accepts as votes.
    LearnersVote,
    /// A leader counts the votes of a slot proposed after its membership
    /// change by the membership that change brings, before it is chosen
    /// and in effect.
    MembershipBeforeChosen,
    /// A candidate needs a quorum of the membership deciding its commit
    /// index only, not of every membership its promises show ahead.
    NoMembershipChainInPhaseOne,
}

/// Why a [`Config`] was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `members` must hold 1..=15 distinct ids in 1..=[`NodeId::MAX`], and
    /// `node_id` must be one too.
    BadMembership,
    /// The recovered snapshot's membership header does not decode.
    BadSnapshotMembership,
    /// A timing relation that safety or liveness depends on does not hold.
    BadTiming(&'static str),
    /// A bound is zero.
    ZeroBound(&'static str),
    /// Byte bounds that do not fit inside one another.
    BadSize(&'static str),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::BadMembership => {
                write!(
                    f,
                    "members must be 1..=15 distinct ids from 1 to {}, and so must node_id",
                    NodeId::MAX
                )
            }
            ConfigError::BadSnapshotMembership => write!(
                f,
                "the snapshot in the data directory has a damaged membership header"
            ),
            ConfigError::BadTiming(why) => write!(f, "bad timing: {why}"),
            ConfigError::ZeroBound(name) => write!(f, "{name} must be > 0"),
            ConfigError::BadSize(why) => write!(f, "bad size bounds: {why}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Everything a replica needs to know that does not change at run time.
/// All durations are in nanoseconds of the node's *local* clock.
#[derive(Debug, Clone)]
pub struct Config {
    /// This replica's id.
    pub node_id: NodeId,
    /// The voters of the cluster's first membership, no duplicates. Only a
    /// replica that has no snapshot carrying a membership uses it: from the
    /// first membership change on, the replicated membership decides (see
    /// `membership`). A node joining a running cluster leaves itself out:
    /// it learns the membership, itself included, from the cluster.
    pub members: Vec<NodeId>,
    /// How often a leader sends heartbeats (which also renew its lease).
    pub heartbeat_interval_ns: u64,
    /// Lower bound of the randomized election timeout. Must exceed
    /// `lease_duration_ns` so a timed-out follower's own lease promise is over.
    pub election_timeout_min_ns: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ns: u64,
    /// How long an acceptor refuses to promise a rival after hearing the
    /// leader. The leader's own lease is this, shortened for clock drift.
    pub lease_duration_ns: u64,
    /// Maximum rate error of any node's clock, in parts per million.
    pub max_drift_ppm: u64,
    /// How many slots a leader may have in flight past the commit index.
    pub pipeline_window_slots: u64,
    /// Most commands a single slot carries.
    pub max_batch_values: usize,
    /// Largest single command accepted, in bytes.
    pub max_value_bytes: usize,
    /// Most bytes one slot's batch may take (`wire_size::batch_bytes`). A
    /// batch closes at this bound or at `max_batch_values`, whichever
    /// comes first; one command always fits (`max_value_bytes` is below).
    pub max_batch_bytes: usize,
    /// Most bytes any message this replica builds may take on the wire
    /// (`Message::encoded_len_bound`): an Accept, a promise part, a
    /// catch-up reply, a snapshot chunk. Only an entry accepted before
    /// batches were bounded in bytes may exceed it, alone in its message,
    /// because an accepted entry may be chosen and must travel whole.
    pub max_message_bytes: usize,
    /// Most snapshot bytes one chunk carries.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot a replica accepts from a peer.
    pub max_snapshot_bytes: usize,
    /// Most commands a leader queues for proposal; more are rejected.
    pub max_pending_values: usize,
    /// Most bytes of commands a leader queues for proposal; more are rejected.
    pub max_pending_bytes: usize,
    /// A leader opens no new slot while its slots in flight hold this many
    /// bytes of batches (besides `pipeline_window_slots`): everything in
    /// flight travels to each follower on one ordered stream, ahead of the
    /// leader's next heartbeat.
    pub max_in_flight_bytes: usize,
    /// Most chosen entries in one catch-up reply.
    pub max_catchup_entries: usize,
    /// Most entries an acceptor will report or hold past its commit index.
    pub max_log_ahead_slots: u64,
    /// Test-only: which safety rule (if any) is switched off.
    #[cfg(feature = "canary")]
    pub canary: Canary,
}

impl Config {
    /// A configuration with sensible defaults for a cluster on a LAN.
    pub fn new(node_id: NodeId, members: Vec<NodeId>) -> Config {
        Config {
            node_id,
            members,
            heartbeat_interval_ns: 50_000_000,
            election_timeout_min_ns: 700_000_000,
            election_timeout_max_ns: 1_400_000_000,
            lease_duration_ns: 500_000_000,
            max_drift_ppm: 20_000,
            pipeline_window_slots: 16,
            max_batch_values: 64,
            max_value_bytes: 64 * 1024,
            max_batch_bytes: 1024 * 1024,
            max_message_bytes: 2 * 1024 * 1024,
            snapshot_chunk_bytes: 2 * 1024 * 1024 - MESSAGE_OVERHEAD_BYTES,
            max_snapshot_bytes: 1 << 30,
            max_pending_values: 4096,
            max_pending_bytes: 32 * 1024 * 1024,
            max_in_flight_bytes: 4 * 1024 * 1024,
            max_catchup_entries: 64,
            max_log_ahead_slots: 1024,
            #[cfg(feature = "canary")]
            canary: Canary::None,
        }
    }

    /// Checks the relations the protocol relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut sorted = self.members.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.members.len()
            || self.members.is_empty()
            || self.members.len() > 15
            || self.node_id.0 == 0
            || self.node_id.0 > NodeId::MAX
            || self
                .members
                .iter()
                .any(|id| id.0 == 0 || id.0 > NodeId::MAX)
        {
            return Err(ConfigError::BadMembership);
        }
        if self.max_drift_ppm >= 500_000 {
            return Err(ConfigError::BadTiming("max_drift_ppm must be < 500000"));
        }
        if self.heartbeat_interval_ns == 0 || self.heartbeat_interval_ns >= self.lease_duration_ns {
            return Err(ConfigError::BadTiming(
                "heartbeat_interval_ns must be in (0, lease_duration_ns)",
            ));
        }
        if self.election_timeout_min_ns <= self.lease_duration_ns
            || self.election_timeout_max_ns < self.election_timeout_min_ns
        {
            return Err(ConfigError::BadTiming(
                "need lease_duration_ns < election_timeout_min_ns <= election_timeout_max_ns",
            ));
        }
        if self.leader_lease_ns() == 0 {
            return Err(ConfigError::BadTiming("leader lease rounds to zero"));
        }
        for (name, v) in [
            ("pipeline_window_slots", self.pipeline_window_slots),
            ("max_batch_values", self.max_batch_values as u64),
            ("max_value_bytes", self.max_value_bytes as u64),
            ("max_pending_values", self.max_pending_values as u64),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes as u64),
            ("max_snapshot_bytes", self.max_snapshot_bytes as u64),
            ("max_in_flight_bytes", self.max_in_flight_bytes as u64),
            ("max_catchup_entries", self.max_catchup_entries as u64),
            ("max_log_ahead_slots", self.max_log_ahead_slots),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroBound(name));
            }
        }
        // Rule "every message fits": one command fits a batch, one batch
        // fits an Accept (and a promise part or catch-up reply of one
        // entry), a chunk fits a catch-up reply, and the queue holds a batch.
        if self.max_value_bytes < super::membership::CHANGE_VALUE_BYTES {
            return Err(ConfigError::BadSize(
                "max_value_bytes must hold a membership change (44 bytes)",
            ));
        }
        let value = self.max_value_bytes.saturating_add(VALUE_OVERHEAD_BYTES);
        if value > self.max_batch_bytes {
            return Err(ConfigError::BadSize(
                "max_value_bytes plus its overhead must fit max_batch_bytes",
            ));
        }
        let entry = MESSAGE_OVERHEAD_BYTES
            .saturating_add(ENTRY_OVERHEAD_BYTES)
            .saturating_add(self.max_batch_bytes);
        if entry > self.max_message_bytes {
            return Err(ConfigError::BadSize(
                "a full batch plus its overheads must fit max_message_bytes",
            ));
        }
        if self
            .snapshot_chunk_bytes
            .saturating_add(MESSAGE_OVERHEAD_BYTES)
            > self.max_message_bytes
        {
            return Err(ConfigError::BadSize(
                "snapshot_chunk_bytes plus a message's overhead must fit max_message_bytes",
            ));
        }
        if self.max_pending_bytes < self.max_batch_bytes {
            return Err(ConfigError::BadSize(
                "max_pending_bytes must hold at least one full batch",
            ));
        }
        if self.max_log_ahead_slots < self.pipeline_window_slots {
            return Err(ConfigError::BadTiming(
                "max_log_ahead_slots must be >= pipeline_window_slots",
            ));
        }
        Ok(())
    }

    /// The lease a leader may assume, measured on its own clock from the
    /// moment it *sent* the heartbeat a quorum acknowledged.
    ///
    /// Why this length: an acceptor refuses rivals for `lease_duration_ns` of
    /// *its* clock from when it *received* that heartbeat, which is at least
    /// `D/(1+ρ)` true time after the send. The leader's belief lasts at most
    /// `L/(1-ρ)` true time. `L = D(1-ρ)/(1+ρ)` makes the first no shorter
    /// than the second; we round down and keep 1 µs for rounding of clocks.
    pub fn leader_lease_ns(&self) -> u64 {
        let d = self.lease_duration_ns as u128;
        let ppm = self.max_drift_ppm as u128;
        let l = d * (1_000_000 - ppm) / (1_000_000 + ppm);
        (l as u64).saturating_sub(1_000)
    }

    /// Whether `canary` is switched on (always false without the feature).
    #[allow(unused_variables)]
    pub(crate) fn canary_on(&self, which: CanaryRef) -> bool {
        #[cfg(feature = "canary")]
        {
            matches!(
                (which, self.canary),
                (CanaryRef::PersistBeforeReply, Canary::NoPersistBeforeReply)
                    | (
                        CanaryRef::BallotCheckInAccept,
                        Canary::NoBallotCheckInAccept
                    )
                    | (
                        CanaryRef::LeaseWaitBeforePromise,
                        Canary::NoLeaseWaitBeforePromise
                    )
                    | (CanaryRef::BatchByteBound, Canary::NoBatchByteBound)
                    | (CanaryRef::VotersOnly, Canary::LearnersVote)
                    | (
                        CanaryRef::MembershipOnceInEffect,
                        Canary::MembershipBeforeChosen
                    )
                    | (
                        CanaryRef::MembershipChain,
                        Canary::NoMembershipChainInPhaseOne
                    )
            )
        }
        #[cfg(not(feature = "canary"))]
        {
            false
        }
    }
}

/// Names the safety rules a canary can switch off; exists in every build so
/// the call sites compile without the feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CanaryRef {
    PersistBeforeReply,
    BallotCheckInAccept,
    LeaseWaitBeforePromise,
    BatchByteBound,
    VotersOnly,
    MembershipOnceInEffect,
    MembershipChain,
}
