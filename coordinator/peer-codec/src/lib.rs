//! The node-to-node wire format: the protobuf messages of
//! `proto/peer.proto` ([`proto`]) and the conversion of consensus messages
//! to and from them ([`encode`], [`decode`]). The node's transport and the
//! simulator's network both use it, so a message the simulator delivers is
//! one the real transport could carry.
//!
//! Decoding is where untrusted bytes become typed messages: a message with
//! a missing required field is refused here (`MissingField`), and the core
//! still runs its own bounds checks (`Message::check`) afterwards.

use paxlock_core::paxos::{self, Ballot, NodeId, ReportedEntry, Slot, SnapshotChunk};

use proto::{self as pb, peer_message::Body};

/// The protobuf messages of the node-to-node protocol (`proto/peer.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/paxlock.peer.v1.rs"));
}

/// A peer message that decoded as protobuf but lacks a required field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer message lacks required field `{0}`")]
pub struct MissingField(pub &'static str);

fn ballot_pb(b: &Ballot) -> Option<pb::Ballot> {
    Some(pb::Ballot {
        round: b.round,
        node: b.node.0,
    })
}

fn ballot(b: Option<pb::Ballot>, field: &'static str) -> Result<Ballot, MissingField> {
    let b = b.ok_or(MissingField(field))?;
    Ok(Ballot {
        round: b.round,
        node: NodeId(b.node),
    })
}

fn batch_pb(batch: &paxos::Batch) -> Option<pb::Batch> {
    Some(pb::Batch {
        values: batch.clone(),
    })
}

fn batch(b: Option<pb::Batch>) -> paxos::Batch {
    // An absent batch is the empty batch (a no-op slot): proto3 omits empties.
    b.map(|b| b.values).unwrap_or_default()
}

fn chunk_pb(chunk: &SnapshotChunk) -> pb::Snapshot {
    pb::Snapshot {
        up_to: chunk.up_to.0,
        data: chunk.data.clone(),
        total_bytes: chunk.total_bytes,
        offset: chunk.offset,
    }
}

fn chunk(s: pb::Snapshot) -> SnapshotChunk {
    // Version 2 sends the whole snapshot and no length: it is one chunk.
    let total_bytes = if s.total_bytes == 0 && s.offset == 0 {
        s.data.len() as u64
    } else {
        s.total_bytes
    };
    SnapshotChunk {
        up_to: Slot(s.up_to),
        total_bytes,
        offset: s.offset,
        data: s.data,
    }
}

/// Encodes a consensus message for the wire.
pub fn encode(msg: &paxos::Message) -> pb::PeerMessage {
    use paxos::Message as M;
    let body = match msg {
        M::PreVote { ballot } => Body::PreVote(pb::PreVote {
            ballot: ballot_pb(ballot),
        }),
        M::PreVoteReply { ballot, granted } => Body::PreVoteReply(pb::PreVoteReply {
            ballot: ballot_pb(ballot),
            granted: *granted,
        }),
        M::Prepare { ballot, from_slot } => Body::Prepare(pb::Prepare {
            ballot: ballot_pb(ballot),
            from_slot: from_slot.0,
        }),
        M::Promise {
            ballot,
            from_slot,
            chosen_up_to,
            entries,
            part_start,
            part_end,
        } => Body::Promise(pb::Promise {
            ballot: ballot_pb(ballot),
            from_slot: from_slot.0,
            chosen_up_to: chosen_up_to.0,
            entries: entries
                .iter()
                .map(|e| pb::ReportedEntry {
                    slot: e.slot.0,
                    ballot: ballot_pb(&e.ballot),
                    batch: batch_pb(&e.batch),
                    chosen: e.chosen,
                })
                .collect(),
            snapshot: None,
            part_start: part_start.0,
            part_end: part_end.map_or(0, |end| end.0),
        }),
        M::Nack { ballot, promised } => Body::Nack(pb::Nack {
            ballot: ballot_pb(ballot),
            promised: ballot_pb(promised),
        }),
        M::Accept {
            ballot,
            slot,
            batch,
            commit,
        } => Body::Accept(pb::Accept {
            ballot: ballot_pb(ballot),
            slot: slot.0,
            batch: batch_pb(batch),
            commit: commit.0,
        }),
        M::Accepted { ballot, slot } => Body::Accepted(pb::Accepted {
            ballot: ballot_pb(ballot),
            slot: slot.0,
        }),
        M::Heartbeat {
            ballot,
            round,
            commit,
        } => Body::Heartbeat(pb::Heartbeat {
            ballot: ballot_pb(ballot),
            round: *round,
            commit: commit.0,
        }),
        M::HeartbeatAck {
            ballot,
            round,
            commit,
        } => Body::HeartbeatAck(pb::HeartbeatAck {
            ballot: ballot_pb(ballot),
            round: *round,
            commit: commit.0,
        }),
        M::Abdicate { ballot, successor } => Body::Abdicate(pb::Abdicate {
            ballot: ballot_pb(ballot),
            successor: successor.0,
        }),
        M::CatchUpRequest { from_slot } => Body::CatchUpRequest(pb::CatchUpRequest {
            from_slot: from_slot.0,
        }),
        M::SnapshotRequest { up_to, offset } => Body::SnapshotRequest(pb::SnapshotRequest {
            up_to: up_to.0,
            offset: *offset,
        }),
        M::CatchUp { snapshot, entries } => Body::CatchUp(pb::CatchUp {
            snapshot: snapshot.as_ref().map(chunk_pb),
            entries: entries
                .iter()
                .map(|(slot, b)| pb::ChosenEntry {
                    slot: slot.0,
                    batch: batch_pb(b),
                })
                .collect(),
        }),
    };
    pb::PeerMessage { body: Some(body) }
}

/// Decodes a wire message into a consensus message.
pub fn decode(msg: pb::PeerMessage) -> Result<paxos::Message, MissingField> {
    use paxos::Message as M;
    Ok(match msg.body.ok_or(MissingField("body"))? {
        Body::PreVote(m) => M::PreVote {
            ballot: ballot(m.ballot, "pre_vote.ballot")?,
        },
        Body::PreVoteReply(m) => M::PreVoteReply {
            ballot: ballot(m.ballot, "pre_vote_reply.ballot")?,
            granted: m.granted,
        },
        Body::Prepare(m) => M::Prepare {
            ballot: ballot(m.ballot, "prepare.ballot")?,
            from_slot: Slot(m.from_slot),
        },
        Body::Promise(m) => M::Promise {
            ballot: ballot(m.ballot, "promise.ballot")?,
            from_slot: Slot(m.from_slot),
            chosen_up_to: Slot(m.chosen_up_to),
            entries: m
                .entries
                .into_iter()
                .map(|e| {
                    Ok(ReportedEntry {
                        slot: Slot(e.slot),
                        ballot: ballot(e.ballot, "promise.entries.ballot")?,
                        batch: batch(e.batch),
                        chosen: e.chosen,
                    })
                })
                .collect::<Result<_, MissingField>>()?,
            // Version 2 has no parts: its promise is one whole part, and
            // its inline snapshot is left aside (see peer.proto).
            part_start: Slot(m.part_start.max(m.from_slot)),
            part_end: (m.part_end != 0).then_some(Slot(m.part_end)),
        },
        Body::Nack(m) => M::Nack {
            ballot: ballot(m.ballot, "nack.ballot")?,
            promised: ballot(m.promised, "nack.promised")?,
        },
        Body::Accept(m) => M::Accept {
            ballot: ballot(m.ballot, "accept.ballot")?,
            slot: Slot(m.slot),
            batch: batch(m.batch),
            commit: Slot(m.commit),
        },
        Body::Accepted(m) => M::Accepted {
            ballot: ballot(m.ballot, "accepted.ballot")?,
            slot: Slot(m.slot),
        },
        Body::Heartbeat(m) => M::Heartbeat {
            ballot: ballot(m.ballot, "heartbeat.ballot")?,
            round: m.round,
            commit: Slot(m.commit),
        },
        Body::HeartbeatAck(m) => M::HeartbeatAck {
            ballot: ballot(m.ballot, "heartbeat_ack.ballot")?,
            round: m.round,
            commit: Slot(m.commit),
        },
        Body::Abdicate(m) => M::Abdicate {
            ballot: ballot(m.ballot, "abdicate.ballot")?,
            successor: NodeId(m.successor),
        },
        Body::CatchUpRequest(m) => M::CatchUpRequest {
            from_slot: Slot(m.from_slot),
        },
        Body::SnapshotRequest(m) => M::SnapshotRequest {
            up_to: Slot(m.up_to),
            offset: m.offset,
        },
        // Fragments are reassembled by the peer stream before decoding.
        Body::Fragment(_) => return Err(MissingField("body (a stray fragment)")),
        Body::CatchUp(m) => M::CatchUp {
            snapshot: m.snapshot.map(chunk),
            entries: m
                .entries
                .into_iter()
                .map(|e| (Slot(e.slot), batch(e.batch)))
                .collect(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxos::Message as M;

    fn v(bytes: &[u8]) -> paxos::Value {
        paxos::Value::copy_from_slice(bytes)
    }

    fn b(round: u64, node: u64) -> Ballot {
        Ballot {
            round,
            node: NodeId(node),
        }
    }

    #[test]
    fn every_message_kind_round_trips() {
        let snap = Some(SnapshotChunk {
            up_to: Slot(4),
            total_bytes: 10,
            offset: 2,
            data: bytes::Bytes::from_static(&[1, 2]),
        });
        let messages = vec![
            M::PreVote { ballot: b(1, 2) },
            M::PreVoteReply {
                ballot: b(1, 2),
                granted: true,
            },
            M::Prepare {
                ballot: b(3, 1),
                from_slot: Slot(9),
            },
            M::Promise {
                ballot: b(3, 1),
                from_slot: Slot(9),
                chosen_up_to: Slot(8),
                entries: vec![ReportedEntry {
                    slot: Slot(9),
                    ballot: b(2, 2),
                    batch: vec![v(&[7]), v(&[])],
                    chosen: false,
                }],
                part_start: Slot(9),
                part_end: Some(Slot(12)),
            },
            M::Promise {
                ballot: b(3, 1),
                from_slot: Slot(9),
                chosen_up_to: Slot(8),
                entries: vec![],
                part_start: Slot(12),
                part_end: None,
            },
            M::SnapshotRequest {
                up_to: Slot(40),
                offset: 1 << 20,
            },
            M::Nack {
                ballot: b(1, 1),
                promised: b(2, 3),
            },
            M::Accept {
                ballot: b(3, 1),
                slot: Slot(10),
                batch: vec![v(&[1, 2, 3])],
                commit: Slot(9),
            },
            M::Accept {
                ballot: b(3, 1),
                slot: Slot(11),
                batch: vec![],
                commit: Slot(9),
            },
            M::Accepted {
                ballot: b(3, 1),
                slot: Slot(10),
            },
            M::Heartbeat {
                ballot: b(3, 1),
                round: 5,
                commit: Slot(11),
            },
            M::HeartbeatAck {
                ballot: b(3, 1),
                round: 5,
                commit: Slot(7),
            },
            M::CatchUpRequest { from_slot: Slot(2) },
            M::Abdicate {
                ballot: b(3, 1),
                successor: NodeId(2),
            },
            M::CatchUp {
                snapshot: snap,
                entries: vec![(Slot(4), vec![v(&[9])]), (Slot(5), vec![])],
            },
        ];
        for msg in messages {
            assert_eq!(decode(encode(&msg)), Ok(msg.clone()), "{msg:?}");
        }
    }

    #[test]
    fn a_message_without_a_ballot_is_refused() {
        let msg = pb::PeerMessage {
            body: Some(Body::Accepted(pb::Accepted {
                ballot: None,
                slot: 1,
            })),
        };
        assert_eq!(decode(msg), Err(MissingField("accepted.ballot")));
    }

    #[test]
    fn an_empty_message_is_refused() {
        assert_eq!(
            decode(pb::PeerMessage { body: None }),
            Err(MissingField("body"))
        );
    }

    /// A version-2 node's promise has no parts and may carry its snapshot:
    /// it is one whole part, the snapshot left aside.
    #[test]
    fn a_version_2_promise_is_one_whole_part() {
        let msg = pb::PeerMessage {
            body: Some(Body::Promise(pb::Promise {
                ballot: ballot_pb(&b(3, 1)),
                from_slot: 9,
                chosen_up_to: 12,
                entries: vec![],
                snapshot: Some(pb::Snapshot {
                    up_to: 12,
                    data: vec![7; 3].into(),
                    total_bytes: 0,
                    offset: 0,
                }),
                part_start: 0,
                part_end: 0,
            })),
        };
        assert_eq!(
            decode(msg),
            Ok(M::Promise {
                ballot: b(3, 1),
                from_slot: Slot(9),
                chosen_up_to: Slot(12),
                entries: vec![],
                part_start: Slot(9),
                part_end: None,
            })
        );
    }

    /// A version-2 catch-up reply carries a whole snapshot: one chunk.
    #[test]
    fn a_version_2_snapshot_is_one_whole_chunk() {
        let msg = pb::PeerMessage {
            body: Some(Body::CatchUp(pb::CatchUp {
                snapshot: Some(pb::Snapshot {
                    up_to: 12,
                    data: vec![7; 3].into(),
                    total_bytes: 0,
                    offset: 0,
                }),
                entries: vec![],
            })),
        };
        let Ok(M::CatchUp {
            snapshot: Some(chunk),
            ..
        }) = decode(msg)
        else {
            panic!("not a catch-up with a snapshot");
        };
        assert!(chunk.is_whole());
        assert_eq!((chunk.up_to, chunk.total_bytes), (Slot(12), 3));
    }

    mod size_bound {
        use super::*;
        use proptest::prelude::*;
        use prost::Message as _;

        /// Field values at their widest encodings, or small.
        fn wide() -> impl Strategy<Value = u64> {
            prop_oneof![Just(u64::MAX), 0..1_000u64]
        }

        fn arb_ballot() -> impl Strategy<Value = Ballot> {
            (wide(), wide()).prop_map(|(round, node)| Ballot {
                round,
                node: NodeId(node),
            })
        }

        fn arb_batch() -> impl Strategy<Value = paxos::Batch> {
            prop::collection::vec(
                prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..200).prop_map(paxos::Value::from),
                    (0..70_000usize).prop_map(|n| paxos::Value::from(vec![0xA5; n])),
                ],
                0..6,
            )
        }

        fn arb_message() -> impl Strategy<Value = paxos::Message> {
            let entry = (wide(), arb_ballot(), arb_batch(), any::<bool>()).prop_map(
                |(slot, ballot, batch, chosen)| ReportedEntry {
                    slot: Slot(slot),
                    ballot,
                    batch,
                    chosen,
                },
            );
            let chunk = (
                wide(),
                wide(),
                wide(),
                prop::collection::vec(any::<u8>(), 0..3_000),
            )
                .prop_map(|(up_to, total_bytes, offset, data)| SnapshotChunk {
                    up_to: Slot(up_to),
                    total_bytes,
                    offset,
                    data: data.into(),
                });
            prop_oneof![
                (arb_ballot(), wide(), arb_batch(), wide()).prop_map(
                    |(ballot, slot, batch, commit)| M::Accept {
                        ballot,
                        slot: Slot(slot),
                        batch,
                        commit: Slot(commit),
                    }
                ),
                (
                    arb_ballot(),
                    wide(),
                    wide(),
                    prop::collection::vec(entry, 0..5),
                    wide(),
                    prop::option::of(wide())
                )
                    .prop_map(|(ballot, from, chosen, entries, start, end)| {
                        M::Promise {
                            ballot,
                            from_slot: Slot(from),
                            chosen_up_to: Slot(chosen),
                            entries,
                            part_start: Slot(start),
                            part_end: end.map(Slot),
                        }
                    }),
                (
                    prop::option::of(chunk),
                    prop::collection::vec((wide(), arb_batch()), 0..5)
                )
                    .prop_map(|(snapshot, entries)| M::CatchUp {
                        snapshot,
                        entries: entries.into_iter().map(|(s, b)| (Slot(s), b)).collect(),
                    }),
                (arb_ballot(), arb_ballot())
                    .prop_map(|(ballot, promised)| M::Nack { ballot, promised }),
                (arb_ballot(), wide(), wide()).prop_map(|(ballot, round, commit)| {
                    M::HeartbeatAck {
                        ballot,
                        round,
                        commit: Slot(commit),
                    }
                }),
                (wide(), wide()).prop_map(|(up_to, offset)| M::SnapshotRequest {
                    up_to: Slot(up_to),
                    offset
                }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Rule "every message fits", on the transport's side: the
            /// core's bound is never below what the encoding takes, so a
            /// message within `max_message_bytes` fits the frame.
            #[test]
            fn the_core_bound_covers_the_encoded_length(msg in arb_message()) {
                let encoded = encode(&msg).encoded_len();
                prop_assert!(
                    encoded <= msg.encoded_len_bound(),
                    "encoded {} > bound {}", encoded, msg.encoded_len_bound()
                );
            }
        }
    }
}
