//! Converting consensus messages to and from their protobuf form.
//!
//! Decoding is where untrusted bytes become typed messages: a message with
//! a missing required field is refused here (`MissingField`), and the core
//! still runs its own bounds checks (`Message::check`) afterwards.

use crate::paxos::{self, Ballot, NodeId, ReportedEntry, Slot};

use super::peer_proto::{self as pb, peer_message::Body};

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

fn snapshot_pb(s: &Option<paxos::Snapshot>) -> Option<pb::Snapshot> {
    s.as_ref().map(|s| pb::Snapshot {
        up_to: s.up_to.0,
        data: s.data.clone(),
    })
}

fn snapshot(s: Option<pb::Snapshot>) -> Option<paxos::Snapshot> {
    s.map(|s| paxos::Snapshot {
        up_to: Slot(s.up_to),
        data: s.data,
    })
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
            snapshot,
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
            snapshot: snapshot_pb(snapshot),
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
        M::CatchUp { snapshot, entries } => Body::CatchUp(pb::CatchUp {
            snapshot: snapshot_pb(snapshot),
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
            snapshot: snapshot(m.snapshot),
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
        Body::CatchUp(m) => M::CatchUp {
            snapshot: snapshot(m.snapshot),
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

    fn b(round: u64, node: u64) -> Ballot {
        Ballot {
            round,
            node: NodeId(node),
        }
    }

    #[test]
    fn every_message_kind_round_trips() {
        let snap = Some(paxos::Snapshot {
            up_to: Slot(4),
            data: vec![1, 2],
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
                    batch: vec![vec![7], vec![]],
                    chosen: false,
                }],
                snapshot: snap.clone(),
            },
            M::Nack {
                ballot: b(1, 1),
                promised: b(2, 3),
            },
            M::Accept {
                ballot: b(3, 1),
                slot: Slot(10),
                batch: vec![vec![1, 2, 3]],
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
                entries: vec![(Slot(4), vec![vec![9]]), (Slot(5), vec![])],
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
}
