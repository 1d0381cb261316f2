//! Snapshots: the whole state machine to bytes and back.
//!
//! Format: postcard encoding of `(version, machine)`. Version 7 is this
//! release's [`StateMachine`]. Version 1 is the previous release's layout
//! (no session owners, no protocol version, no leadership tokens, no
//! lock values or times): it is
//! still read, so a node upgraded in place restores the snapshots it wrote
//! before, and still written while the log says some node may speak only
//! protocol 2, so that node (or this one, rolled back) can restore it.
//! Versions 2 to 6 were written only by development builds between the
//! two releases and are refused with a typed error. Restore checks every
//! invariant, so corrupt or hostile bytes give a typed [`DecodeError`],
//! never a panic or a machine that panics later.

use crate::locks::command::{decode_exact, PROTOCOL_V3};
use crate::locks::error::{DecodeError, EncodeError};
use crate::locks::limits::Config;
use crate::locks::machine::StateMachine;

/// Format version written by [`StateMachine::snapshot`] once the cluster
/// speaks protocol 3.
pub const SNAPSHOT_VERSION: u32 = 7;

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

/// The version-1 layout: the previous release's types, field for field,
/// where they differ from today's.
mod v1 {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    use serde::{Deserialize, Serialize};

    use crate::locks::command::{FencingToken, SessionId, PROTOCOL_V2};
    use crate::locks::dedup::DedupTable;
    use crate::locks::election::{Election, Leader};
    use crate::locks::error::CommandError;
    use crate::locks::event::{ElectionChange, ElectionEvent};
    use crate::locks::limits::Config;
    use crate::locks::lock::{Holder, Lock, Waiter};
    use crate::locks::machine::{Reply, StateMachine};
    use crate::locks::session::Session;

    #[derive(Serialize, Deserialize)]
    pub(super) struct MachineV1 {
        config: Config,
        revision: u64,
        now_ms: u64,
        last_applied_slot: u64,
        leader_epoch: u64,
        sessions: BTreeMap<SessionId, SessionV1>,
        locks: BTreeMap<String, LockV1>,
        elections: BTreeMap<String, ElectionV1>,
        delays: BTreeSet<(u64, String)>,
    }

    #[derive(Serialize, Deserialize)]
    struct SessionV1 {
        ttl_ms: u64,
        held: BTreeSet<String>,
        waiting: BTreeSet<String>,
        campaigns: BTreeSet<String>,
        dedup: DedupV1,
    }

    /// A lock without times or values.
    #[derive(Serialize, Deserialize)]
    struct LockV1 {
        holder: Option<HolderV1>,
        waiters: VecDeque<SessionId>,
        delayed_until_ms: Option<u64>,
    }

    #[derive(Serialize, Deserialize)]
    struct HolderV1 {
        session: SessionId,
        token: FencingToken,
    }

    impl From<LockV1> for Lock {
        fn from(l: LockV1) -> Lock {
            Lock {
                holder: l.holder.map(|h| Holder {
                    session: h.session,
                    token: h.token,
                    since_ms: None,
                }),
                value: Vec::new(),
                waiters: l
                    .waiters
                    .into_iter()
                    .map(|session| Waiter {
                        session,
                        since_ms: None,
                        value: Vec::new(),
                    })
                    .collect(),
                delayed_until_ms: l.delayed_until_ms,
            }
        }
    }

    /// Drops times and values, which exist only from protocol 3 on, when
    /// this layout is no longer written.
    impl From<&Lock> for LockV1 {
        fn from(l: &Lock) -> LockV1 {
            LockV1 {
                holder: l.holder.map(|h| HolderV1 {
                    session: h.session,
                    token: h.token,
                }),
                waiters: l.waiters.iter().map(|w| w.session).collect(),
                delayed_until_ms: l.delayed_until_ms,
            }
        }
    }

    /// The exactly-once table, whose replies changed (a win's token).
    #[derive(Serialize, Deserialize)]
    struct DedupV1 {
        floor: u64,
        replies: BTreeMap<u64, Result<ReplyV1, CommandError>>,
    }

    /// The previous release's replies: a win had no token.
    #[derive(Serialize, Deserialize)]
    enum ReplyV1 {
        SessionOpened {
            session: SessionId,
        },
        SessionClosed,
        Granted {
            token: FencingToken,
        },
        Queued {
            position: u32,
        },
        Busy {
            current: Option<FencingToken>,
            delayed_until_ms: Option<u64>,
        },
        Released,
        Valid,
        Cancelled {
            released: Option<FencingToken>,
        },
        Elected {
            term: u64,
        },
        Candidate {
            position: u32,
        },
        Resigned,
        Proclaimed {
            term: u64,
        },
        Done,
    }

    impl From<ReplyV1> for Reply {
        fn from(r: ReplyV1) -> Reply {
            match r {
                ReplyV1::SessionOpened { session } => Reply::SessionOpened { session },
                ReplyV1::SessionClosed => Reply::SessionClosed,
                ReplyV1::Granted { token } => Reply::Granted { token },
                ReplyV1::Queued { position } => Reply::Queued { position },
                ReplyV1::Busy {
                    current,
                    delayed_until_ms,
                } => Reply::Busy {
                    current,
                    delayed_until_ms,
                },
                ReplyV1::Released => Reply::Released,
                ReplyV1::Valid => Reply::Valid,
                ReplyV1::Cancelled { released } => Reply::Cancelled { released },
                ReplyV1::Elected { term } => Reply::Elected { term, token: None },
                ReplyV1::Candidate { position } => Reply::Candidate { position },
                ReplyV1::Resigned => Reply::Resigned,
                ReplyV1::Proclaimed { term } => Reply::Proclaimed { term },
                ReplyV1::Done => Reply::Done,
            }
        }
    }

    /// Drops a win's token, which exists only from protocol 3 on, when
    /// this layout is no longer written.
    impl From<&Reply> for ReplyV1 {
        fn from(r: &Reply) -> ReplyV1 {
            match *r {
                Reply::SessionOpened { session } => ReplyV1::SessionOpened { session },
                Reply::SessionClosed => ReplyV1::SessionClosed,
                // A permit exists only from protocol 3 on.
                Reply::Granted { token } | Reply::GrantedShared { token, .. } => {
                    ReplyV1::Granted { token }
                }
                Reply::Queued { position } => ReplyV1::Queued { position },
                Reply::Busy {
                    current,
                    delayed_until_ms,
                } => ReplyV1::Busy {
                    current,
                    delayed_until_ms,
                },
                Reply::Released => ReplyV1::Released,
                Reply::Valid => ReplyV1::Valid,
                Reply::Cancelled { released } => ReplyV1::Cancelled { released },
                Reply::Elected { term, .. } => ReplyV1::Elected { term },
                Reply::Candidate { position } => ReplyV1::Candidate { position },
                Reply::Resigned => ReplyV1::Resigned,
                Reply::Proclaimed { term } => ReplyV1::Proclaimed { term },
                Reply::Done => ReplyV1::Done,
                // Only an administrator's command answers so, and its reply
                // is never recorded.
                Reply::Taken { .. } => ReplyV1::Done,
            }
        }
    }

    impl From<DedupV1> for DedupTable {
        fn from(d: DedupV1) -> DedupTable {
            let replies = d
                .replies
                .into_iter()
                .map(|(id, r)| (id, r.map(Reply::from)))
                .collect();
            DedupTable::from_parts(d.floor, replies)
        }
    }

    impl From<&DedupTable> for DedupV1 {
        fn from(d: &DedupTable) -> DedupV1 {
            let (floor, replies) =
                d.to_parts(|r| r.as_ref().map(ReplyV1::from).map_err(Clone::clone));
            DedupV1 { floor, replies }
        }
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
        NewLeader {
            session: SessionId,
            #[serde(with = "serde_bytes")]
            value: Vec<u8>,
        },
        Proclaimed {
            session: SessionId,
            #[serde(with = "serde_bytes")]
            value: Vec<u8>,
        },
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
                            dedup: s.dedup.into(),
                            owner: None,
                            open_key: 0,
                            taken: Default::default(),
                        };
                        (id, session)
                    })
                    .collect(),
                locks: m.locks.into_iter().map(|(n, l)| (n, l.into())).collect(),
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
                    token: None,
                },
                ChangeV1::Proclaimed { session, value } => ElectionChange::Proclaimed {
                    session,
                    value,
                    owner: None,
                    token: None,
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
                            dedup: DedupV1::from(&s.dedup),
                        };
                        (*id, session)
                    })
                    .collect(),
                locks: m.locks.iter().map(|(n, l)| (n.clone(), l.into())).collect(),
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

#[cfg(test)]
mod byte_layout_tests {
    use serde::Serialize;

    use crate::locks::command::SessionId;
    use crate::locks::election::Leader;

    /// `Leader` as it was declared before its value was written as bytes
    /// (`serde_bytes`) rather than as a sequence of `u8`.
    #[derive(Serialize)]
    struct LeaderAsSequence {
        session: SessionId,
        value: Vec<u8>,
    }

    /// Writing values as bytes is ~an order of magnitude faster (one copy,
    /// not one call per byte: a 16 MiB state stalled the consensus loop
    /// ~70 ms) and postcard lays both out alike (a varint length, then
    /// the bytes), so snapshots and commands of earlier releases read the
    /// same and nodes one release apart still agree byte for byte.
    #[test]
    fn values_written_as_bytes_keep_the_layout_of_a_sequence_of_u8() {
        let value: Vec<u8> = (0..=255).cycle().take(70_000).collect();
        let leader = Leader {
            session: SessionId(7),
            value: value.clone(),
        };
        let before = postcard::to_allocvec(&LeaderAsSequence {
            session: SessionId(7),
            value,
        })
        .expect("encodes");
        let now = postcard::to_allocvec(&leader).expect("encodes");
        assert_eq!(now, before);
        let read: Leader = postcard::from_bytes(&before).expect("decodes");
        assert_eq!(read, leader);
    }
}
