//! Snapshots: the whole state machine to bytes and back.
//!
//! Format: postcard encoding of `(version, machine)`. Version 3 is this
//! release's [`StateMachine`]. Version 2 is the same without access rules
//! (written by builds between the previous release and access control):
//! still read. Version 1 is the previous release's layout (no session
//! owners, no protocol version): it is still read, so a node upgraded in
//! place restores the snapshots it wrote before, and still written while
//! the log says some node may speak only protocol 2, so that node (or this
//! one, rolled back) can restore it. Restore checks every
//! invariant, so corrupt or hostile bytes give a typed [`DecodeError`],
//! never a panic or a machine that panics later.

use crate::locks::command::{decode_exact, PROTOCOL_V3};
use crate::locks::error::{DecodeError, EncodeError};
use crate::locks::limits::Config;
use crate::locks::machine::StateMachine;

/// Format version written by [`StateMachine::snapshot`] once the cluster
/// speaks protocol 3.
pub const SNAPSHOT_VERSION: u32 = 3;

/// Version 3 without the access rules: read, never written.
pub const SNAPSHOT_VERSION_V2: u32 = 2;

/// The previous release's format, written before that.
pub const SNAPSHOT_VERSION_V1: u32 = 1;

/// Hard cap on snapshot input size.
pub const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

impl StateMachine {
    /// Serializes the full state, configuration included. Identical states
    /// give identical bytes (ordered maps only), so replicas can compare
    /// snapshots byte for byte.
    pub fn snapshot(&self) -> Result<Vec<u8>, EncodeError> {
        let bytes = if self.protocol < PROTOCOL_V3 {
            // Nothing of version 2 exists yet: no session has an owner
            // before protocol 3, so the old layout loses nothing.
            postcard::to_allocvec(&(SNAPSHOT_VERSION_V1, v1::MachineV1::from(self)))
        } else {
            postcard::to_allocvec(&(SNAPSHOT_VERSION, self))
        };
        bytes.map_err(|reason| EncodeError { reason })
    }

    /// Rebuilds a replica's machine from [`StateMachine::snapshot`] bytes:
    /// [`StateMachine::restore`], then what snapshots do not carry (the
    /// state bound, `Limits::max_state_bytes`) taken from `own`, the
    /// replica's own configuration. Every replica restores this way, so
    /// that all apply with the bound their configuration gives (which
    /// peering makes the same everywhere) whether or not they restored a
    /// snapshot, not with the default a snapshot restores.
    pub fn restore_as_replica(bytes: &[u8], own: &Config) -> Result<StateMachine, DecodeError> {
        let mut machine = StateMachine::restore(bytes)?;
        machine.adopt_unsnapshotted(own);
        Ok(machine)
    }

    /// Rebuilds a machine from [`StateMachine::snapshot`] bytes (of this
    /// release or the previous one), with the default state bound (a
    /// replica restores with [`StateMachine::restore_as_replica`]). Applying the same further commands to
    /// the original and the restored machine gives identical outputs and
    /// states.
    pub fn restore(bytes: &[u8]) -> Result<StateMachine, DecodeError> {
        // Read the version first so a future format is reported as such
        // rather than as garbage.
        let (version, _) = postcard::take_from_bytes::<u32>(bytes)
            .map_err(|reason| DecodeError::Malformed { reason })?;
        let mut machine: StateMachine = match version {
            SNAPSHOT_VERSION => decode_exact::<(u32, StateMachine)>(bytes, MAX_SNAPSHOT_BYTES)?.1,
            SNAPSHOT_VERSION_V2 => decode_exact::<(u32, v2::MachineV2)>(bytes, MAX_SNAPSHOT_BYTES)?
                .1
                .into(),
            SNAPSHOT_VERSION_V1 => decode_exact::<(u32, v1::MachineV1)>(bytes, MAX_SNAPSHOT_BYTES)?
                .1
                .into(),
            found => {
                return Err(DecodeError::UnsupportedVersion {
                    found,
                    expected: SNAPSHOT_VERSION,
                })
            }
        };
        // Whatever the layout, the derived indexes are rebuilt, never read.
        machine.index_derived();
        machine
            .check_invariants()
            .map_err(|what| DecodeError::Inconsistent { what })?;
        Ok(machine)
    }
}

/// The version-2 layout: today's machine without access rules.
mod v2 {
    use std::collections::{BTreeMap, BTreeSet};

    use serde::Deserialize;

    use crate::locks::command::SessionId;
    use crate::locks::election::Election;
    use crate::locks::limits::Config;
    use crate::locks::lock::Lock;
    use crate::locks::machine::StateMachine;
    use crate::locks::session::Session;

    #[derive(Deserialize)]
    pub(super) struct MachineV2 {
        config: Config,
        revision: u64,
        now_ms: u64,
        last_applied_slot: u64,
        leader_epoch: u64,
        sessions: BTreeMap<SessionId, Session>,
        locks: BTreeMap<String, Lock>,
        elections: BTreeMap<String, Election>,
        delays: BTreeSet<(u64, String)>,
        protocol: u32,
    }

    impl From<MachineV2> for StateMachine {
        fn from(m: MachineV2) -> StateMachine {
            // No access rules, no election floor; the derived indexes are
            // rebuilt after any layout.
            StateMachine {
                revision: m.revision,
                now_ms: m.now_ms,
                last_applied_slot: m.last_applied_slot,
                leader_epoch: m.leader_epoch,
                sessions: m.sessions,
                locks: m.locks,
                elections: m.elections,
                delays: m.delays,
                protocol: m.protocol,
                ..StateMachine::new(m.config)
            }
        }
    }
}

/// The version-1 layout: the previous release's types, field for field,
/// where they differ from today's.
mod v1 {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    use serde::{Deserialize, Serialize};

    use crate::locks::command::{SessionId, PROTOCOL_V2};
    use crate::locks::dedup::DedupTable;
    use crate::locks::election::{Election, Leader};
    use crate::locks::event::{ElectionChange, ElectionEvent};
    use crate::locks::limits::Config;
    use crate::locks::lock::Lock;
    use crate::locks::machine::StateMachine;
    use crate::locks::session::Session;

    #[derive(Serialize, Deserialize)]
    pub(super) struct MachineV1 {
        config: Config,
        revision: u64,
        now_ms: u64,
        last_applied_slot: u64,
        leader_epoch: u64,
        sessions: BTreeMap<SessionId, SessionV1>,
        locks: BTreeMap<String, Lock>,
        elections: BTreeMap<String, ElectionV1>,
        delays: BTreeSet<(u64, String)>,
    }

    #[derive(Serialize, Deserialize)]
    struct SessionV1 {
        ttl_ms: u64,
        held: BTreeSet<String>,
        waiting: BTreeSet<String>,
        campaigns: BTreeSet<String>,
        dedup: DedupTable,
    }

    #[derive(Serialize, Deserialize)]
    struct ElectionV1 {
        term: u64,
        leader: Option<Leader>,
        candidates: VecDeque<Leader>,
        history: VecDeque<EventV1>,
        next_index: u64,
    }

    #[derive(Serialize, Deserialize)]
    struct EventV1 {
        name: String,
        index: u64,
        term: u64,
        change: ChangeV1,
    }

    #[derive(Serialize, Deserialize)]
    enum ChangeV1 {
        NewLeader { session: SessionId, value: Vec<u8> },
        Proclaimed { session: SessionId, value: Vec<u8> },
        NoLeader,
    }

    impl From<MachineV1> for StateMachine {
        fn from(m: MachineV1) -> StateMachine {
            StateMachine {
                revision: m.revision,
                now_ms: m.now_ms,
                last_applied_slot: m.last_applied_slot,
                leader_epoch: m.leader_epoch,
                sessions: m
                    .sessions
                    .into_iter()
                    .map(|(id, s)| {
                        let session = Session {
                            ttl_ms: s.ttl_ms,
                            held: s.held,
                            waiting: s.waiting,
                            campaigns: s.campaigns,
                            dedup: s.dedup,
                            owner: None,
                            open_key: 0,
                        };
                        (id, session)
                    })
                    .collect(),
                locks: m.locks,
                elections: m
                    .elections
                    .into_iter()
                    .map(|(name, e)| {
                        let election = Election {
                            term: e.term,
                            leader: e.leader,
                            candidates: e.candidates,
                            history: e.history.into_iter().map(ElectionEvent::from).collect(),
                            next_index: e.next_index,
                            ..Election::default()
                        };
                        (name, election)
                    })
                    .collect(),
                delays: m.delays,
                protocol: PROTOCOL_V2,
                ..StateMachine::new(m.config)
            }
        }
    }

    impl From<EventV1> for ElectionEvent {
        fn from(e: EventV1) -> ElectionEvent {
            let change = match e.change {
                ChangeV1::NewLeader { session, value } => ElectionChange::NewLeader {
                    session,
                    value,
                    owner: None,
                },
                ChangeV1::Proclaimed { session, value } => ElectionChange::Proclaimed {
                    session,
                    value,
                    owner: None,
                },
                ChangeV1::NoLeader => ElectionChange::NoLeader,
            };
            ElectionEvent {
                name: e.name,
                index: e.index,
                term: e.term,
                change,
            }
        }
    }

    /// Drops what version 1 cannot hold: owners, which exist only from
    /// protocol 3 on, when this layout is no longer written.
    impl From<&StateMachine> for MachineV1 {
        fn from(m: &StateMachine) -> MachineV1 {
            MachineV1 {
                config: m.config.clone(),
                revision: m.revision,
                now_ms: m.now_ms,
                last_applied_slot: m.last_applied_slot,
                leader_epoch: m.leader_epoch,
                sessions: m
                    .sessions
                    .iter()
                    .map(|(id, s)| {
                        let session = SessionV1 {
                            ttl_ms: s.ttl_ms,
                            held: s.held.clone(),
                            waiting: s.waiting.clone(),
                            campaigns: s.campaigns.clone(),
                            dedup: s.dedup.clone(),
                        };
                        (*id, session)
                    })
                    .collect(),
                locks: m.locks.clone(),
                elections: m
                    .elections
                    .iter()
                    .map(|(name, e)| {
                        let election = ElectionV1 {
                            term: e.term,
                            leader: e.leader.clone(),
                            candidates: e.candidates.clone(),
                            history: e.history.iter().map(EventV1::from).collect(),
                            next_index: e.next_index,
                        };
                        (name.clone(), election)
                    })
                    .collect(),
                delays: m.delays.clone(),
            }
        }
    }

    impl From<&ElectionEvent> for EventV1 {
        fn from(e: &ElectionEvent) -> EventV1 {
            let change = match &e.change {
                ElectionChange::NewLeader { session, value, .. } => ChangeV1::NewLeader {
                    session: *session,
                    value: value.clone(),
                },
                ElectionChange::Proclaimed { session, value, .. } => ChangeV1::Proclaimed {
                    session: *session,
                    value: value.clone(),
                },
                ElectionChange::NoLeader => ChangeV1::NoLeader,
            };
            EventV1 {
                name: e.name.clone(),
                index: e.index,
                term: e.term,
                change,
            }
        }
    }
}
