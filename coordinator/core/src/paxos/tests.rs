//! Rule-by-rule tests of the core, driven through `Replica::step` only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;

use proptest::prelude::*;

use super::config::{Config, ConfigError};
use super::durable::{DurableState, PersistOp, PersistRequest};
use super::effects::{ChosenEntry, Effects, LeadershipEvent, Outgoing, RejectReason};
use super::message::{Message, ReportedEntry, SnapshotChunk};
use super::proposer::{merge_promises, PromiseInfo};
use super::replica::{Input, Replica};
use super::types::{Ballot, Nanos, NodeId, PersistSeq, Slot, Snapshot, Value};

const MS: u64 = 1_000_000;

/// A command with these bytes.
fn val(bytes: &[u8]) -> Value {
    Value::copy_from_slice(bytes)
}

fn members(n: u64) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

fn cfg(id: u64, n: u64) -> Config {
    Config::new(NodeId(id), members(n))
}

fn ballot(round: u64, node: u64) -> Ballot {
    Ballot {
        round,
        node: NodeId(node),
    }
}

/// A replica with a disk that persists instantly, collecting everything sent.
struct Node {
    r: Replica,
    disk: DurableState,
    sent: Vec<Outgoing>,
    chosen: Vec<ChosenEntry>,
    leadership: Vec<LeadershipEvent>,
    installs: Vec<Snapshot>,
}

impl Node {
    fn new(id: u64, n: u64) -> Node {
        Node::from_disk(cfg(id, n), DurableState::default())
    }
    fn from_disk(c: Config, disk: DurableState) -> Node {
        Node {
            r: Replica::new(c, disk.clone(), 7).unwrap(),
            disk,
            sent: Vec::new(),
            chosen: Vec::new(),
            leadership: Vec::new(),
            installs: Vec::new(),
        }
    }
    /// One step without persisting (to inspect the raw effects).
    fn raw(&mut self, now_ms: u64, input: Input) -> Effects {
        self.r.step(Nanos(now_ms * MS), input)
    }
    /// One step, then persist and acknowledge, collecting all effects.
    fn step(&mut self, now_ms: u64, input: Input) {
        let fx = self.raw(now_ms, input);
        self.absorb(now_ms, fx);
    }
    fn absorb(&mut self, now_ms: u64, fx: Effects) {
        // Rule "every message fits", checked on everything any test builds.
        let limit = self.r.config().max_message_bytes;
        for out in &fx.send {
            assert!(
                out.msg.encoded_len_bound() <= limit,
                "a message of {} bytes exceeds max_message_bytes {limit}",
                out.msg.encoded_len_bound()
            );
        }
        self.installs.extend(fx.install_snapshot);
        self.sent.extend(fx.send);
        self.chosen.extend(fx.chosen);
        self.leadership.extend(fx.leadership);
        if let Some(req) = fx.persist {
            self.disk.apply(&req);
            let up_to = req.seq;
            let fx2 = self.raw(now_ms, Input::Persisted { up_to });
            self.absorb(now_ms, fx2);
        }
    }
    fn deliver(&mut self, now_ms: u64, from: u64, msg: Message) {
        self.step(
            now_ms,
            Input::Peer {
                from: NodeId(from),
                msg,
            },
        );
    }
}

/// Makes `n` (node 1) campaign at 2 s with node 2's pre-vote; returns the
/// ballot its Prepare asks promises for.
fn campaign_with_pre_vote_of_2(n: &mut Node) -> Ballot {
    n.step(0, Input::Tick);
    n.step(2_000, Input::Tick);
    let pv = n.sent.iter().find_map(|o| match o.msg {
        Message::PreVote { ballot } => Some(ballot),
        _ => None,
    });
    n.deliver(
        2_001,
        2,
        Message::PreVoteReply {
            ballot: pv.unwrap(),
            granted: true,
        },
    );
    n.r.status().ballot.expect("campaigning")
}

/// A tiny lossless cluster: every message is delivered at the same instant.
struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        Cluster {
            nodes: (1..=n).map(|i| Node::new(i, n)).collect(),
        }
    }
    fn pump(&mut self, now_ms: u64) {
        let mut queue: VecDeque<(u64, Outgoing)> = VecDeque::new();
        for _ in 0..10_000 {
            for (i, n) in self.nodes.iter_mut().enumerate() {
                for o in n.sent.drain(..) {
                    queue.push_back((i as u64 + 1, o));
                }
            }
            let Some((from, o)) = queue.pop_front() else {
                return;
            };
            self.nodes[(o.to.0 - 1) as usize].deliver(now_ms, from, o.msg);
        }
        panic!("cluster did not go quiet");
    }
    fn elect(&mut self, who: u64, now_ms: u64) {
        // Past everyone's election deadline (max 1.4 s after the first step).
        for n in self.nodes.iter_mut() {
            n.step(0, Input::Tick);
        }
        self.nodes[(who - 1) as usize].step(now_ms, Input::Tick);
        self.pump(now_ms);
    }
}

#[test]
fn an_acceptor_refuses_to_promise_while_its_lease_to_the_leader_runs() {
    let mut a = Node::new(2, 3);
    a.step(0, Input::Tick);
    // Past the post-boot window, a heartbeat from leader 1 starts a lease.
    a.deliver(
        2_000,
        1,
        Message::Heartbeat {
            ballot: ballot(1, 1),
            round: 1,
            commit: Slot(0),
        },
    );
    a.sent.clear();
    a.deliver(
        2_100,
        3,
        Message::Prepare {
            ballot: ballot(2, 3),
            from_slot: Slot(0),
        },
    );
    assert!(matches!(
        a.sent[..],
        [Outgoing {
            msg: Message::Nack { .. },
            ..
        }]
    ));
    assert_eq!(a.disk.promised, ballot(1, 1));
}

#[test]
fn an_acceptor_promises_a_rival_once_the_lease_has_run_out() {
    let mut a = Node::new(2, 3);
    a.step(0, Input::Tick);
    a.deliver(
        2_000,
        1,
        Message::Heartbeat {
            ballot: ballot(1, 1),
            round: 1,
            commit: Slot(0),
        },
    );
    a.sent.clear();
    a.deliver(
        2_000 + 501,
        3,
        Message::Prepare {
            ballot: ballot(2, 3),
            from_slot: Slot(0),
        },
    );
    assert!(matches!(
        a.sent[..],
        [Outgoing {
            msg: Message::Promise { .. },
            ..
        }]
    ));
    assert_eq!(a.disk.promised, ballot(2, 3));
}

#[test]
fn a_restarted_acceptor_refuses_every_promise_for_one_lease() {
    let mut a = Node::new(2, 3);
    a.step(10_000, Input::Tick);
    a.deliver(
        10_100,
        3,
        Message::Prepare {
            ballot: ballot(2, 3),
            from_slot: Slot(0),
        },
    );
    assert!(matches!(
        a.sent.last().map(|o| &o.msg),
        Some(Message::Nack { .. })
    ));
    a.deliver(
        10_501,
        3,
        Message::Prepare {
            ballot: ballot(2, 3),
            from_slot: Slot(0),
        },
    );
    assert!(matches!(
        a.sent.last().map(|o| &o.msg),
        Some(Message::Promise { .. })
    ));
}

#[test]
fn a_promise_does_not_leave_before_the_promised_ballot_is_durable() {
    let mut a = Node::new(2, 3);
    a.step(0, Input::Tick);
    let fx = a.raw(
        1_000,
        Input::Peer {
            from: NodeId(3),
            msg: Message::Prepare {
                ballot: ballot(2, 3),
                from_slot: Slot(0),
            },
        },
    );
    let req = fx.persist.expect("the promise must be persisted");
    assert!(req.ops.contains(&PersistOp::Promise(ballot(2, 3))));
    let promise = fx
        .send
        .iter()
        .find(|o| matches!(o.msg, Message::Promise { .. }))
        .unwrap();
    assert!(
        promise.after >= req.seq,
        "promise may leave only after {:?}",
        req.seq
    );
}

#[test]
fn an_accepted_reply_does_not_leave_before_the_value_is_durable() {
    let mut a = Node::new(2, 3);
    a.step(0, Input::Tick);
    let accept = Message::Accept {
        ballot: ballot(1, 1),
        slot: Slot(0),
        batch: vec![val(b"x")],
        commit: Slot(0),
    };
    let fx = a.raw(
        1_000,
        Input::Peer {
            from: NodeId(1),
            msg: accept,
        },
    );
    let req = fx.persist.unwrap();
    let reply = fx
        .send
        .iter()
        .find(|o| matches!(o.msg, Message::Accepted { .. }))
        .unwrap();
    assert!(reply.after >= req.seq);
}

#[test]
fn an_acceptor_rejects_an_accept_below_its_promise() {
    let mut a = Node::new(2, 3);
    a.step(0, Input::Tick);
    a.deliver(
        1_000,
        3,
        Message::Prepare {
            ballot: ballot(5, 3),
            from_slot: Slot(0),
        },
    );
    a.sent.clear();
    a.deliver(
        1_001,
        1,
        Message::Accept {
            ballot: ballot(4, 1),
            slot: Slot(0),
            batch: vec![],
            commit: Slot(0),
        },
    );
    assert!(matches!(
        a.sent[..],
        [Outgoing {
            msg: Message::Nack { .. },
            ..
        }]
    ));
    assert!(a.disk.log.is_empty());
}

#[test]
fn a_new_leader_reproposes_the_highest_ballot_value() {
    let entry = |round, v: &[u8]| ReportedEntry {
        slot: Slot(3),
        ballot: ballot(round, 1),
        batch: vec![val(v)],
        chosen: false,
    };
    let mut promises = std::collections::BTreeMap::new();
    for (node, e) in [(1, entry(2, b"old")), (2, entry(4, b"new"))] {
        let mut info = PromiseInfo::default();
        info.add_part(Slot(3), vec![e], Slot(3), None);
        promises.insert(NodeId(node), info);
    }
    let r = merge_promises(&promises);
    assert_eq!(r.repropose.get(&Slot(3)), Some(&vec![val(b"new")]));
}

#[test]
fn a_three_node_cluster_elects_a_leader_and_chooses_a_batch() {
    let mut c = Cluster::new(3);
    c.elect(1, 2_000);
    assert!(c.nodes[0].r.is_leader());
    c.nodes[0].step(2_001, Input::Propose(vec![val(b"a"), val(b"b")]));
    c.pump(2_001);
    let leader_chosen: Vec<_> = c.nodes[0].chosen.iter().map(|e| e.batch.clone()).collect();
    assert_eq!(leader_chosen, vec![vec![val(b"a"), val(b"b")]]);
}

#[test]
fn followers_learn_chosen_entries_from_the_commit_index_on_heartbeats() {
    let mut c = Cluster::new(3);
    c.elect(1, 2_000);
    c.nodes[0].step(2_001, Input::Propose(vec![val(b"a")]));
    c.pump(2_001);
    assert!(
        c.nodes[1].chosen.is_empty(),
        "the accept carried the old commit index"
    );
    c.nodes[0].step(2_100, Input::Tick); // heartbeat with the new commit index
    c.pump(2_100);
    assert_eq!(c.nodes[1].chosen.len(), 1);
    assert_eq!(c.nodes[2].chosen.len(), 1);
}

#[test]
fn the_leader_holds_a_lease_after_a_quorum_acknowledged_a_heartbeat() {
    let mut c = Cluster::new(3);
    c.elect(1, 2_000);
    let until = c.nodes[0].r.lease_until(Nanos(2_000 * MS)).expect("lease");
    assert_eq!(until, Nanos(2_000 * MS + cfg(1, 3).leader_lease_ns()));
    assert!(c.nodes[0].r.lease_until(until).is_none());
}

#[test]
fn a_follower_does_not_learn_an_entry_accepted_at_another_ballot() {
    let mut a = Node::new(2, 3);
    a.step(0, Input::Tick);
    a.deliver(
        1_000,
        1,
        Message::Accept {
            ballot: ballot(1, 1),
            slot: Slot(0),
            batch: vec![val(b"old")],
            commit: Slot(0),
        },
    );
    // A new leader (ballot 2) says slot 0 is chosen; our entry is from ballot 1.
    a.deliver(
        2_000,
        3,
        Message::Heartbeat {
            ballot: ballot(2, 3),
            round: 1,
            commit: Slot(1),
        },
    );
    assert!(a.chosen.is_empty());
    a.sent.clear();
    a.step(2_100, Input::Tick);
    assert!(a
        .sent
        .iter()
        .any(|o| o.to == NodeId(3)
            && matches!(o.msg, Message::CatchUpRequest { from_slot: Slot(0) })));
}

#[test]
fn a_replica_behind_a_compacted_peer_is_sent_the_snapshot() {
    let mut c = Cluster::new(3);
    c.elect(1, 2_000);
    for i in 0..3u64 {
        c.nodes[0].step(2_001 + i, Input::Propose(vec![val(&[i as u8])]));
        c.pump(2_001 + i);
    }
    c.nodes[0].step(
        2_010,
        Input::Compact {
            up_to: Slot(3),
            data: b"state@3".to_vec(),
        },
    );
    let mut fresh = Node::new(3, 3);
    fresh.step(2_010, Input::Tick);
    c.nodes[0].deliver(2_011, 3, Message::CatchUpRequest { from_slot: Slot(0) });
    let reply = c.nodes[0].sent.pop().unwrap();
    fresh.deliver(2_012, 1, reply.msg);
    assert_eq!(
        fresh.installs,
        vec![Snapshot {
            up_to: Slot(3),
            data: b"state@3".to_vec()
        }]
    );
    assert_eq!(fresh.r.commit_index(), Slot(3));
}

#[test]
fn proposals_to_a_follower_are_rejected_with_a_leader_hint() {
    let mut c = Cluster::new(3);
    c.elect(1, 2_000);
    let fx = c.nodes[1].raw(2_001, Input::Propose(vec![val(b"x")]));
    assert_eq!(fx.rejected.len(), 1);
    assert_eq!(fx.rejected[0].reason, RejectReason::NotLeader);
    assert_eq!(fx.rejected[0].leader_hint, Some(NodeId(1)));
}

#[test]
fn a_full_proposal_queue_rejects_the_overflow() {
    let mut c = Cluster::new(3);
    c.elect(1, 2_000);
    let too_many = vec![val(b"x"); cfg(1, 3).max_pending_values + 10];
    let fx = c.nodes[0].raw(2_001, Input::Propose(too_many));
    let overflow: usize = fx
        .rejected
        .iter()
        .filter(|r| r.reason == RejectReason::QueueFull)
        .map(|r| r.values.len())
        .sum();
    assert_eq!(overflow, 10);
}

fn has_chosen_marker(req: &PersistRequest, slot: Slot) -> bool {
    req.ops
        .iter()
        .any(|op| matches!(op, PersistOp::Chosen { slot: s, .. } if *s == slot))
}

#[test]
fn a_chosen_marker_waits_for_the_next_accept_instead_of_costing_its_own_fsync() {
    let mut c = Cluster::new(3);
    c.elect(1, 2_000);
    c.nodes[0].step(2_001, Input::Propose(vec![val(b"a")]));
    let (ballot, slot) = c.nodes[0]
        .sent
        .iter()
        .find_map(|o| match &o.msg {
            Message::Accept { ballot, slot, .. } => Some((*ballot, *slot)),
            _ => None,
        })
        .expect("an accept was sent");
    let accepted = Message::Accepted { ballot, slot };
    let fx = c.nodes[0].raw(
        2_001,
        Input::Peer {
            from: NodeId(2),
            msg: accepted,
        },
    );
    assert_eq!(
        fx.chosen.iter().map(|e| e.slot).collect::<Vec<_>>(),
        vec![slot],
        "chosen and applied at once"
    );
    assert!(
        fx.persist.is_none(),
        "no request for the marker alone: {:?}",
        fx.persist
    );

    let fx = c.nodes[0].raw(2_002, Input::Propose(vec![val(b"b")]));
    let req = fx.persist.expect("the next accept is persisted");
    assert!(has_chosen_marker(&req, slot), "{req:?}");
    assert!(
        req.ops
            .iter()
            .any(|op| matches!(op, PersistOp::Accept { slot: s, .. } if *s > slot)),
        "{req:?}"
    );
}

#[test]
fn a_chosen_marker_alone_is_persisted_at_the_next_tick() {
    let mut c = Cluster::new(3);
    c.elect(1, 2_000);
    c.nodes[0].step(2_001, Input::Propose(vec![val(b"a")]));
    c.pump(2_001);
    let slot = c.nodes[0].chosen.last().expect("chosen").slot;
    let fx = c.nodes[0].raw(2_002, Input::Tick);
    let req = fx.persist.expect("the tick issues the waiting marker");
    assert!(has_chosen_marker(&req, slot), "{req:?}");
}

#[test]
fn a_restarted_replica_replays_its_chosen_entries() {
    let mut c = Cluster::new(3);
    c.elect(1, 2_000);
    c.nodes[0].step(2_001, Input::Propose(vec![val(b"a")]));
    c.pump(2_001);
    // The chosen marker reaches the disk with the next tick.
    c.nodes[0].step(2_002, Input::Tick);
    let disk = c.nodes[0].disk.clone();
    let mut again = Node::from_disk(cfg(1, 3), disk);
    again.step(9_000, Input::Tick);
    assert_eq!(again.chosen.len(), 1);
    assert!(!again.r.is_leader());
}

/// Regression (found by the lease canary, seed 18 of a pause-only mix): a
/// candidate paused mid pre-vote resumed, started a new pre-vote with the
/// same label, and counted the stale grants. Grants must be per attempt.
#[test]
fn stale_pre_vote_grants_from_an_earlier_attempt_do_not_count() {
    let mut n = Node::new(1, 3);
    n.step(0, Input::Tick);
    n.step(2_000, Input::Tick); // first pre-vote
    let first = n.sent.iter().find_map(|o| match o.msg {
        Message::PreVote { ballot } => Some(ballot),
        _ => None,
    });
    let first = first.unwrap();
    n.sent.clear();
    n.step(10_000, Input::Tick); // much later: a new attempt
    n.deliver(
        10_001,
        2,
        Message::PreVoteReply {
            ballot: first,
            granted: true,
        },
    );
    assert!(!n
        .sent
        .iter()
        .any(|o| matches!(o.msg, Message::Prepare { .. })));
}

/// Regression (found by `arbitrary_messages_never_panic`): a catch-up
/// request for a slot past our commit index built an inverted range and
/// panicked. It must get an empty answer.
#[test]
fn a_catch_up_request_past_the_commit_gets_an_empty_reply() {
    let mut a = Node::new(2, 3);
    a.step(0, Input::Tick);
    a.deliver(
        1_000,
        1,
        Message::CatchUpRequest {
            from_slot: Slot(u64::MAX),
        },
    );
    assert!(
        matches!(&a.sent[..], [Outgoing { msg: Message::CatchUp { snapshot: None, entries }, .. }] if entries.is_empty())
    );
}

/// Regression (found by `arbitrary_messages_never_panic`, which hung): a
/// promise reporting an entry at slot u64::MAX-1 made the new leader fill
/// every slot up to it with no-ops. Such promises are now refused.
#[test]
fn an_absurd_promise_is_dropped_not_looped_over() {
    let mut n = Node::new(1, 3);
    let b = campaign_with_pre_vote_of_2(&mut n);
    let absurd = ReportedEntry {
        slot: Slot(u64::MAX - 1),
        ballot: ballot(1, 2),
        batch: vec![],
        chosen: false,
    };
    n.deliver(
        2_002,
        2,
        Message::Promise {
            ballot: b,
            from_slot: Slot(0),
            chosen_up_to: Slot(0),
            entries: vec![absurd],
            part_start: Slot(0),
            part_end: None,
        },
    );
    assert_eq!(n.r.stats().malformed, 1);
}

/// Regression (found in review): a candidate far behind its promisers did
/// not adopt a slot a promiser reported chosen when the slot lay past the
/// candidate's own log window, and Phase 1 excludes chosen slots from the
/// re-proposals, so the new leader proposed a no-op there: a second value
/// for a chosen slot. Rule "lead only within the window": such a candidate
/// catches up instead of leading, and proposes nothing.
#[test]
fn a_candidate_too_far_behind_catches_up_instead_of_leading() {
    let mut c = cfg(1, 3);
    c.max_log_ahead_slots = 4;
    c.pipeline_window_slots = 4;
    let mut n = Node::from_disk(c, DurableState::default());
    let b = campaign_with_pre_vote_of_2(&mut n);
    n.sent.clear();
    // Node 2 missed slot 10's accept but learned slot 11 chosen; this node
    // (commit 0, window 4) lags far behind both.
    n.deliver(
        2_002,
        2,
        Message::Promise {
            ballot: b,
            from_slot: Slot(0),
            chosen_up_to: Slot(10),
            entries: vec![ReportedEntry {
                slot: Slot(11),
                ballot: ballot(1, 3),
                batch: vec![val(b"chosen at 11")],
                chosen: true,
            }],
            part_start: Slot(0),
            part_end: None,
        },
    );
    assert!(!n.r.is_leader());
    assert!(
        !n.sent
            .iter()
            .any(|o| matches!(o.msg, Message::Accept { .. })),
        "{:?}",
        n.sent
    );
    n.step(2_100, Input::Tick);
    assert!(
        n.sent
            .iter()
            .any(|o| o.to == NodeId(2) && matches!(o.msg, Message::CatchUpRequest { .. })),
        "{:?}",
        n.sent
    );
}

/// Second line of defence for the rule above: an acceptor that knows a
/// slot chosen does not vote for another value there.
#[test]
fn an_acceptor_does_not_accept_another_value_for_a_slot_it_knows_chosen() {
    let mut disk = DurableState::default();
    disk.apply_op(&PersistOp::Chosen {
        slot: Slot(0),
        batch: vec![val(b"v")],
    });
    let mut n = Node::from_disk(cfg(2, 3), disk);
    let accept = |batch: Vec<Value>| Message::Accept {
        ballot: ballot(5, 1),
        slot: Slot(0),
        batch,
        commit: Slot(0),
    };
    n.deliver(10_000, 1, accept(Vec::new()));
    assert!(
        !n.sent
            .iter()
            .any(|o| matches!(o.msg, Message::Accepted { .. })),
        "{:?}",
        n.sent
    );
    assert_eq!(n.r.stats().malformed, 1);
    n.deliver(10_001, 1, accept(vec![val(b"v")]));
    assert!(n
        .sent
        .iter()
        .any(|o| matches!(o.msg, Message::Accepted { slot: Slot(0), .. })));
}

#[test]
fn a_leader_that_hears_no_quorum_steps_down() {
    let mut c = Cluster::new(3);
    c.elect(1, 2_000);
    let leader = &mut c.nodes[0];
    leader.sent.clear();
    // Heartbeats go out but nothing comes back: it still leads after the
    // shortest election timeout (acks may be merely slow), and steps down
    // after the longest (0.7 s and 1.4 s by default).
    for t in (2_050..=3_350).step_by(50) {
        leader.step(t, Input::Tick);
    }
    assert!(
        leader.r.is_leader(),
        "stepped down before the longest election timeout"
    );
    for t in (3_400..=3_500).step_by(50) {
        leader.step(t, Input::Tick);
    }
    assert!(!leader.r.is_leader());
    assert_eq!(
        leader.leadership.last(),
        Some(&LeadershipEvent::LostLeadership)
    );
}

#[test]
fn a_node_that_hears_a_live_leader_denies_pre_votes() {
    let mut a = Node::new(2, 3);
    a.step(0, Input::Tick);
    a.deliver(
        2_000,
        1,
        Message::Heartbeat {
            ballot: ballot(1, 1),
            round: 1,
            commit: Slot(0),
        },
    );
    a.sent.clear();
    a.deliver(
        2_600,
        3,
        Message::PreVote {
            ballot: ballot(2, 3),
        },
    );
    assert!(matches!(
        a.sent[..],
        [Outgoing {
            msg: Message::PreVoteReply { granted: false, .. },
            ..
        }]
    ));
}

#[test]
fn config_rejects_an_election_timeout_not_above_the_lease() {
    let mut c = cfg(1, 3);
    c.election_timeout_min_ns = c.lease_duration_ns;
    assert!(c.validate().is_err());
}

/// Two ids equal modulo 1024 would give two leaderships of one round the
/// same epoch (`leader_role::epoch_of`): ids past `NodeId::MAX` are refused.
#[test]
fn config_rejects_node_ids_past_the_epochs_bits() {
    let mut c = cfg(1, 3);
    c.members.push(NodeId(NodeId::MAX + 2));
    assert_eq!(c.validate(), Err(ConfigError::BadMembership));
    let mut largest = cfg(1, 3);
    largest.members.push(NodeId(NodeId::MAX));
    largest.members.push(NodeId(NodeId::MAX - 1));
    assert_eq!(largest.validate(), Ok(()));
    let mut zero = cfg(1, 3);
    zero.members.push(NodeId(0));
    assert_eq!(zero.validate(), Err(ConfigError::BadMembership));
}

proptest! {
    /// The leader's lease, stretched by the fastest clock, never outlasts an
    /// acceptor's refusal window shrunk by the slowest clock.
    #[test]
    fn the_leader_lease_fits_inside_every_acceptor_lease(d_ms in 1u64..100_000, ppm in 0u64..400_000) {
        let mut c = cfg(1, 3);
        c.lease_duration_ns = d_ms * MS;
        c.max_drift_ppm = ppm;
        let l = c.leader_lease_ns() as u128;
        let d = c.lease_duration_ns as u128;
        // l / (1 - ρ) <= d / (1 + ρ)  <=>  l (1e6 + ppm) <= d (1e6 - ppm)
        prop_assert!(l * (1_000_000 + ppm as u128) <= d * (1_000_000 - ppm as u128));
    }

    /// Untrusted input never panics and never makes a follower send a claim
    /// about state that is not yet durable.
    #[test]
    fn arbitrary_messages_never_panic(msgs in proptest::collection::vec(arb_message(), 1..40)) {
        let mut n = Node::new(2, 3);
        n.step(0, Input::Tick);
        for (i, (from, m)) in msgs.into_iter().enumerate() {
            let fx = n.raw(1_000 + i as u64, Input::Peer { from: NodeId(from), msg: m });
            if let Some(req) = &fx.persist {
                for o in &fx.send {
                    if matches!(o.msg, Message::Promise { .. } | Message::Accepted { .. }) {
                        prop_assert!(o.after >= req.seq);
                    }
                }
            }
            n.absorb(1_000 + i as u64, fx);
        }
    }
}

fn arb_ballot() -> impl Strategy<Value = Ballot> {
    (0u64..5, 0u64..6).prop_map(|(r, n)| ballot(r, n))
}

fn arb_slot() -> impl Strategy<Value = Slot> {
    prop_oneof![0u64..8, Just(u64::MAX), Just(u64::MAX - 1)].prop_map(Slot)
}

fn arb_batch() -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::from),
        0..3,
    )
}

fn arb_message() -> impl Strategy<Value = (u64, Message)> {
    let m = prop_oneof![
        arb_ballot().prop_map(|ballot| Message::PreVote { ballot }),
        (arb_ballot(), any::<bool>())
            .prop_map(|(ballot, granted)| Message::PreVoteReply { ballot, granted }),
        (arb_ballot(), arb_slot())
            .prop_map(|(ballot, from_slot)| Message::Prepare { ballot, from_slot }),
        (
            arb_ballot(),
            arb_slot(),
            arb_slot(),
            proptest::collection::vec((arb_slot(), arb_ballot(), arb_batch(), any::<bool>()), 0..4),
            arb_slot(),
            proptest::option::of(arb_slot()),
        )
            .prop_map(
                |(ballot, from_slot, chosen_up_to, es, part_start, part_end)| Message::Promise {
                    ballot,
                    from_slot,
                    chosen_up_to,
                    entries: es
                        .into_iter()
                        .map(|(slot, ballot, batch, chosen)| ReportedEntry {
                            slot,
                            ballot,
                            batch,
                            chosen
                        })
                        .collect(),
                    part_start,
                    part_end,
                }
            ),
        (arb_ballot(), arb_ballot())
            .prop_map(|(ballot, promised)| Message::Nack { ballot, promised }),
        (arb_ballot(), arb_slot(), arb_batch(), arb_slot()).prop_map(
            |(ballot, slot, batch, commit)| Message::Accept {
                ballot,
                slot,
                batch,
                commit
            }
        ),
        (arb_ballot(), arb_slot()).prop_map(|(ballot, slot)| Message::Accepted { ballot, slot }),
        (arb_ballot(), any::<u64>(), arb_slot()).prop_map(|(ballot, round, commit)| {
            Message::Heartbeat {
                ballot,
                round,
                commit,
            }
        }),
        (arb_ballot(), any::<u64>(), arb_slot()).prop_map(|(ballot, round, commit)| {
            Message::HeartbeatAck {
                ballot,
                round,
                commit,
            }
        }),
        arb_slot().prop_map(|from_slot| Message::CatchUpRequest { from_slot }),
        (arb_slot(), any::<u64>())
            .prop_map(|(up_to, offset)| Message::SnapshotRequest { up_to, offset }),
        (
            arb_slot(),
            proptest::collection::vec(arb_batch(), 0..4),
            proptest::option::of((0u64..20, 0u64..20, 0usize..20)),
        )
            .prop_map(|(start, bs, snap)| Message::CatchUp {
                snapshot: snap.map(|(total_bytes, offset, len)| SnapshotChunk {
                    up_to: start,
                    total_bytes,
                    offset,
                    data: vec![1; len].into(),
                }),
                entries: bs
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| (Slot(start.0.saturating_add(i as u64)), b))
                    .collect(),
            }),
    ];
    (0u64..5, m)
}

#[test]
fn persist_sequence_numbers_continue_after_a_restart() {
    let mut a = Node::new(2, 3);
    a.step(0, Input::Tick);
    a.deliver(
        1_000,
        3,
        Message::Prepare {
            ballot: ballot(2, 3),
            from_slot: Slot(0),
        },
    );
    let before = a.disk.persisted_seq;
    let mut b = Node::from_disk(cfg(2, 3), a.disk.clone());
    b.step(5_000, Input::Tick);
    // After the post-restart lease window.
    let fx = b.raw(
        5_600,
        Input::Peer {
            from: NodeId(1),
            msg: Message::Prepare {
                ballot: ballot(3, 1),
                from_slot: Slot(0),
            },
        },
    );
    assert!(fx.persist.unwrap().seq > before);
    assert!(before > PersistSeq(0));
}

/// A configuration whose byte bounds are small enough for a test to reach:
/// values up to 44 bytes (a membership change), batches up to 100, messages up
/// to 300.
fn small_messages(id: u64, n: u64) -> Config {
    let mut c = cfg(id, n);
    c.max_value_bytes = 44;
    c.max_batch_bytes = 100;
    c.max_message_bytes = 300;
    c.snapshot_chunk_bytes = 3;
    c.max_pending_bytes = 400;
    c
}

fn small_cluster(n: u64) -> Cluster {
    Cluster {
        nodes: (1..=n)
            .map(|i| Node::from_disk(small_messages(i, n), DurableState::default()))
            .collect(),
    }
}

#[test]
fn a_batch_closes_at_its_byte_bound() {
    let mut c = small_cluster(3);
    c.elect(1, 2_000);
    // Five 30-byte commands (38 bytes each with overhead): two per batch.
    let values: Vec<Value> = (0..5u8).map(|i| val(&[i; 30])).collect();
    c.nodes[0].step(2_001, Input::Propose(values.clone()));
    c.pump(2_001);
    let batches: Vec<_> = c.nodes[0]
        .chosen
        .iter()
        .filter(|e| !e.batch.is_empty())
        .map(|e| e.batch.clone())
        .collect();
    assert_eq!(batches.len(), 3, "{batches:?}");
    assert!(batches
        .iter()
        .all(|b| super::wire_size::batch_bytes(b) <= 100));
    assert_eq!(batches.concat(), values, "order kept, nothing lost");
}

#[test]
fn the_proposal_queue_is_bounded_in_bytes() {
    let mut c = small_cluster(3);
    c.elect(1, 2_000);
    // 400 bytes hold ten 32-byte commands (40 with overhead), not more.
    let fx = c.nodes[0].raw(2_001, Input::Propose(vec![val(&[7; 32]); 25]));
    let refused: usize = fx
        .rejected
        .iter()
        .filter(|r| r.reason == RejectReason::QueueFull)
        .map(|r| r.values.len())
        .sum();
    // The pipeline takes some at once; what stays queued fits the bound.
    assert!(refused > 0, "nothing refused: {fx:?}");
    assert!(c.nodes[0].r.status().pending_values <= 10);
}

/// Accepted (not chosen) entries on node 2, more than one message holds,
/// each ~70 bytes: node 1's promise from node 2 comes in parts.
fn acceptor_with_many_accepted_entries() -> (Node, Ballot) {
    let mut disk = DurableState::default();
    for slot in 0..6u64 {
        disk.apply_op(&PersistOp::Accept {
            slot: Slot(slot),
            ballot: ballot(1, 3),
            batch: vec![val(&[slot as u8; 30])],
        });
    }
    disk.apply_op(&PersistOp::Promise(ballot(1, 3)));
    let mut a = Node::from_disk(small_messages(2, 3), disk);
    a.step(0, Input::Tick);
    (a, ballot(2, 1))
}

#[test]
fn a_promise_larger_than_a_message_travels_in_parts_that_cover_every_slot() {
    let (mut a, b) = acceptor_with_many_accepted_entries();
    a.sent.clear();
    a.deliver(
        2_000,
        1,
        Message::Prepare {
            ballot: b,
            from_slot: Slot(0),
        },
    );
    let parts: Vec<_> = a
        .sent
        .iter()
        .filter_map(|o| match &o.msg {
            Message::Promise {
                entries,
                part_start,
                part_end,
                ..
            } => Some((entries.len(), *part_start, *part_end)),
            _ => None,
        })
        .collect();
    assert!(parts.len() > 1, "{parts:?}");
    assert_eq!(parts[0].1, Slot(0));
    assert!(
        parts.windows(2).all(|w| w[0].2 == Some(w[1].1)),
        "{parts:?}"
    );
    assert_eq!(parts.last().map(|p| p.2), Some(None));
    assert_eq!(parts.iter().map(|p| p.0).sum::<usize>(), 6);
}

#[test]
fn a_candidate_counts_a_promise_only_once_every_part_arrived() {
    let (mut a, _) = acceptor_with_many_accepted_entries();
    let mut n = Node::from_disk(small_messages(1, 3), DurableState::default());
    let b = campaign_with_pre_vote_of_2(&mut n);
    a.sent.clear();
    a.deliver(
        2_002,
        1,
        Message::Prepare {
            ballot: b,
            from_slot: Slot(0),
        },
    );
    let mut parts: Vec<Message> = a.sent.drain(..).map(|o| o.msg).collect();
    let held_back = parts.remove(1);
    for part in parts {
        n.deliver(2_003, 2, part);
    }
    assert!(!n.r.is_leader(), "led on an incomplete promise");
    n.deliver(2_004, 2, held_back);
    assert!(n.r.is_leader());
    // Every accepted value is proposed again, none replaced by a no-op.
    let reproposed: Vec<_> = n
        .sent
        .iter()
        .filter_map(|o| match &o.msg {
            Message::Accept { slot, batch, .. } if o.to == NodeId(2) => {
                Some((*slot, batch.clone()))
            }
            _ => None,
        })
        .collect();
    for slot in 0..6u64 {
        assert!(
            reproposed.contains(&(Slot(slot), vec![val(&[slot as u8; 30])])),
            "slot {slot} not re-proposed: {reproposed:?}"
        );
    }
}

#[test]
fn a_snapshot_larger_than_a_chunk_arrives_in_chunks_and_is_installed_whole() {
    let mut c = small_cluster(3);
    c.elect(1, 2_000);
    for i in 0..3u64 {
        c.nodes[0].step(2_001 + i, Input::Propose(vec![val(&[i as u8])]));
        c.pump(2_001 + i);
    }
    let state = b"state@3, longer than a chunk".to_vec();
    c.nodes[0].step(
        2_010,
        Input::Compact {
            up_to: Slot(3),
            data: state.clone(),
        },
    );
    let mut fresh = Node::from_disk(small_messages(3, 3), DurableState::default());
    fresh.step(2_010, Input::Tick);
    c.nodes[0].sent.clear();
    c.nodes[0].deliver(2_011, 3, Message::CatchUpRequest { from_slot: Slot(0) });
    // Ping-pong: each chunk asks for the next.
    let mut chunks = 0;
    while let Some(reply) = c.nodes[0].sent.pop() {
        assert!(matches!(
            reply.msg,
            Message::CatchUp {
                snapshot: Some(_),
                ..
            }
        ));
        chunks += 1;
        fresh.deliver(2_012, 1, reply.msg);
        for ask in fresh.sent.drain(..) {
            assert!(
                matches!(ask.msg, Message::SnapshotRequest { .. }),
                "{ask:?}"
            );
            c.nodes[0].deliver(2_012, 3, ask.msg);
        }
    }
    assert_eq!(chunks, state.len().div_ceil(3));
    assert_eq!(
        fresh.installs,
        vec![Snapshot {
            up_to: Slot(3),
            data: state
        }]
    );
    assert_eq!(fresh.r.commit_index(), Slot(3));
}

#[test]
fn a_chunk_out_of_order_or_of_another_snapshot_is_ignored() {
    let mut n = Node::from_disk(small_messages(3, 3), DurableState::default());
    n.step(0, Input::Tick);
    let chunk = |up_to, offset, data: &[u8]| Message::CatchUp {
        snapshot: Some(SnapshotChunk {
            up_to: Slot(up_to),
            total_bytes: 6,
            offset,
            data: bytes::Bytes::copy_from_slice(data),
        }),
        entries: Vec::new(),
    };
    // Not a start: nothing to continue.
    n.deliver(10, 1, chunk(5, 3, b"def"));
    assert!(n.sent.is_empty() && n.installs.is_empty());
    n.deliver(11, 1, chunk(5, 0, b"abc"));
    assert!(matches!(
        n.sent[..],
        [Outgoing {
            msg: Message::SnapshotRequest {
                up_to: Slot(5),
                offset: 3
            },
            ..
        }]
    ));
    // An older snapshot's first chunk does not replace the download.
    n.deliver(12, 2, chunk(4, 0, b"xyz"));
    n.deliver(13, 1, chunk(5, 3, b"def"));
    assert_eq!(
        n.installs,
        vec![Snapshot {
            up_to: Slot(5),
            data: b"abcdef".to_vec()
        }]
    );
}

#[test]
fn a_stalled_snapshot_download_asks_again_then_gives_up() {
    let mut n = Node::from_disk(small_messages(3, 3), DurableState::default());
    n.step(0, Input::Tick);
    n.deliver(
        10,
        1,
        Message::CatchUp {
            snapshot: Some(SnapshotChunk {
                up_to: Slot(5),
                total_bytes: 6,
                offset: 0,
                data: bytes::Bytes::from_static(b"abc"),
            }),
            entries: Vec::new(),
        },
    );
    n.sent.clear();
    let asks = |n: &Node| {
        n.sent
            .iter()
            .filter(|o| matches!(o.msg, Message::SnapshotRequest { .. }))
            .count()
    };
    let hb_ms = cfg(1, 3).heartbeat_interval_ns / MS;
    let mut t = 10;
    for _ in 0..30 {
        t += 2 * hb_ms;
        n.step(t, Input::Tick);
    }
    // Asked again a bounded number of times, then dropped the download.
    assert_eq!(asks(&n), 10, "{:?}", n.sent);
}

// ----- membership ---------------------------------------------------------

use super::membership::{MembershipChange, MembershipError, MEMBERSHIP_DELAY_SLOTS};

impl Cluster {
    /// Voters 1..=n, and spare nodes n+1..=n+spares configured as joining
    /// nodes are (the first voters, without themselves).
    fn with_spares(n: u64, spares: u64) -> Cluster {
        let mut c = Cluster::new(n);
        for id in n + 1..=n + spares {
            c.nodes.push(Node::from_disk(
                Config::new(NodeId(id), members(n)),
                DurableState::default(),
            ));
        }
        c
    }
    /// Asks node `who` for `change` at `now_ms`; returns why it was refused.
    fn change(&mut self, who: u64, now_ms: u64, change: MembershipChange) -> Option<RejectReason> {
        let n = &mut self.nodes[(who - 1) as usize];
        let fx = n.raw(now_ms, Input::ChangeMembership(change));
        let reason = fx.rejected.first().map(|r| r.reason);
        n.absorb(now_ms, fx);
        self.pump(now_ms);
        reason
    }
    /// Ticks every node at `now_ms` (heartbeats, proposals due) and delivers.
    fn tick(&mut self, now_ms: u64) {
        for n in self.nodes.iter_mut() {
            n.step(now_ms, Input::Tick);
        }
        self.pump(now_ms);
    }
    fn voters(&self, who: u64) -> Vec<u64> {
        let status = self.nodes[(who - 1) as usize].r.status();
        status.members.voters.iter().map(|n| n.0).collect()
    }
}

#[test]
fn a_learner_is_added_promoted_and_a_voter_removed_each_in_effect_alpha_slots_later() {
    let mut c = Cluster::with_spares(3, 1);
    c.elect(1, 2_000);
    assert_eq!(
        c.change(1, 2_001, MembershipChange::AddLearner(NodeId(4), None)),
        None
    );
    // Proposed only once the lease taken before the request has run out,
    // then chosen; the leader fills empty slots until it is in effect.
    let commit_before = c.nodes[0].r.commit_index();
    c.tick(2_100);
    assert!(
        c.nodes[0].r.status().members.learners.is_empty(),
        "not before the lease ran out"
    );
    c.tick(2_600);
    c.tick(2_650);
    let status = c.nodes[0].r.status();
    assert_eq!(
        status
            .members
            .learners
            .iter()
            .map(|n| n.0)
            .collect::<Vec<_>>(),
        vec![4]
    );
    assert!(status.commit.0 >= commit_before.0 + MEMBERSHIP_DELAY_SLOTS);
    // The learner receives the log, and is promoted once caught up.
    c.tick(2_700);
    assert_eq!(c.nodes[3].r.commit_index(), c.nodes[0].r.commit_index());
    assert_eq!(
        c.change(1, 2_701, MembershipChange::Promote(NodeId(4))),
        None
    );
    for t in [3_300, 3_350, 3_400] {
        c.tick(t);
    }
    assert_eq!(c.voters(1), vec![1, 2, 3, 4]);
    assert_eq!(c.voters(4), vec![1, 2, 3, 4]);
    assert_eq!(
        c.change(1, 3_401, MembershipChange::Remove(NodeId(2))),
        None
    );
    for t in [4_000, 4_050, 4_100] {
        c.tick(t);
    }
    assert_eq!(c.voters(1), vec![1, 3, 4]);
    assert_eq!(c.voters(3), vec![1, 3, 4]);
    // Commands keep being chosen by the new voters.
    c.nodes[0].step(4_101, Input::Propose(vec![val(b"after")]));
    c.pump(4_101);
    assert!(c.nodes[0]
        .chosen
        .iter()
        .any(|e| e.batch == vec![val(b"after")]));
}

#[test]
fn a_second_change_is_refused_while_one_is_in_flight() {
    let mut c = Cluster::with_spares(3, 2);
    c.elect(1, 2_000);
    assert_eq!(
        c.change(1, 2_001, MembershipChange::AddLearner(NodeId(4), None)),
        None
    );
    assert_eq!(
        c.change(1, 2_002, MembershipChange::AddLearner(NodeId(5), None)),
        Some(RejectReason::Membership(MembershipError::ChangeInFlight))
    );
    // Proposed once the lease taken before it ran out, and not yet chosen
    // (its Accepts are lost): still in flight.
    c.nodes[0].step(2_600, Input::Tick);
    c.nodes[0].sent.clear();
    assert!(
        c.nodes[0].r.status().in_flight_slots > 0,
        "the change is proposed"
    );
    assert_eq!(
        c.change(1, 2_601, MembershipChange::AddLearner(NodeId(5), None)),
        Some(RejectReason::Membership(MembershipError::ChangeInFlight))
    );
    // Resent, chosen, and in effect after the leader's empty slots.
    for t in [2_800, 2_850, 2_900] {
        c.tick(t);
    }
    let status = c.nodes[0].r.status();
    assert_eq!(status.membership_change_at, None);
    assert!(status.members.learners.contains(&NodeId(4)));
    assert_eq!(
        c.change(1, 2_901, MembershipChange::AddLearner(NodeId(5), None)),
        None
    );
}

#[test]
fn membership_changes_are_checked_before_anything_is_proposed() {
    let mut c = Cluster::with_spares(3, 1);
    c.elect(1, 2_000);
    let refused = |e| Some(RejectReason::Membership(e));
    assert_eq!(
        c.change(1, 2_001, MembershipChange::Remove(NodeId(1))),
        refused(MembershipError::RemovesLeader)
    );
    assert_eq!(
        c.change(1, 2_001, MembershipChange::Promote(NodeId(4))),
        refused(MembershipError::NotALearner)
    );
    assert_eq!(
        c.change(1, 2_001, MembershipChange::Remove(NodeId(9))),
        refused(MembershipError::NotAMember)
    );
    assert_eq!(
        c.change(2, 2_001, MembershipChange::AddLearner(NodeId(4), None)),
        Some(RejectReason::NotLeader)
    );
    // A command dressed as a change is refused: only ChangeMembership makes one.
    let fx = c.nodes[0].raw(
        2_002,
        Input::Propose(vec![MembershipChange::AddLearner(NodeId(4), None).encode()]),
    );
    assert_eq!(fx.rejected[0].reason, RejectReason::Reserved);
    // Nothing changed: the same three voters, no learner.
    c.tick(2_600);
    assert_eq!(c.voters(1), vec![1, 2, 3]);
    assert!(c.nodes[0].r.status().members.learners.is_empty());
}

#[test]
fn a_learner_that_has_not_caught_up_is_not_promoted() {
    let mut c = Cluster::with_spares(3, 1);
    c.elect(1, 2_000);
    // Node 4 is added but hears nothing (its messages are dropped).
    c.nodes[0].step(
        2_001,
        Input::ChangeMembership(MembershipChange::AddLearner(NodeId(4), None)),
    );
    for t in [2_600, 2_650] {
        for n in c.nodes.iter_mut().take(3) {
            n.step(t, Input::Tick);
        }
        for n in c.nodes.iter_mut() {
            n.sent.retain(|o| o.to != NodeId(4));
        }
        c.pump(t);
    }
    assert_eq!(c.nodes[0].r.status().members.learners.len(), 1);
    assert_eq!(
        c.change(1, 2_651, MembershipChange::Promote(NodeId(4))),
        Some(RejectReason::Membership(MembershipError::LearnerBehind))
    );
}

#[test]
fn a_learner_never_campaigns() {
    let mut c = Cluster::with_spares(3, 1);
    let spare = &mut c.nodes[3];
    for t in [0, 2_000, 4_000, 8_000] {
        spare.step(t, Input::Tick);
    }
    assert!(
        spare
            .sent
            .iter()
            .all(|o| !matches!(o.msg, Message::PreVote { .. } | Message::Prepare { .. })),
        "a node that is no voter campaigned: {:?}",
        spare.sent
    );
}

#[test]
fn a_restarted_replica_finds_its_membership_in_its_snapshot_and_log() {
    let mut c = Cluster::with_spares(3, 1);
    c.elect(1, 2_000);
    c.change(1, 2_001, MembershipChange::AddLearner(NodeId(4), None));
    c.tick(2_600);
    c.tick(2_650);
    let applied = c.nodes[1].r.status().applied;
    let before = c.nodes[1].r.membership().clone();
    assert_eq!(before.latest().learners.len(), 1);
    // Compact node 2 halfway, then restart it from its disk.
    let half = Slot(applied.0 / 2);
    c.nodes[1].step(
        2_651,
        Input::Compact {
            up_to: half,
            data: b"app".to_vec(),
        },
    );
    let disk = c.nodes[1].disk.clone();
    let restarted = Replica::new(cfg(2, 3), disk, 9).unwrap();
    assert_eq!(restarted.membership().latest(), before.latest());
    assert_eq!(restarted.status().members, c.nodes[1].r.status().members);
    // The application sees its own bytes, not the membership header.
    assert_eq!(restarted.snapshot().unwrap().data, b"app".to_vec());
}

#[test]
fn removing_a_voter_when_too_few_of_the_rest_answer_is_refused() {
    let mut c = Cluster::new(3);
    c.elect(1, 2_000);
    c.tick(2_050);
    // Node 3 stops answering; the leader hears only node 2.
    for t in [2_500, 3_000, 3_050] {
        for n in c.nodes.iter_mut() {
            n.step(t, Input::Tick);
        }
        for n in c.nodes.iter_mut() {
            n.sent.retain(|o| o.to != NodeId(3));
        }
        c.nodes[2].sent.clear();
        c.pump(t);
    }
    // Removing node 2 would leave {1, 3}, of which only 1 answers.
    assert_eq!(
        c.change(1, 3_051, MembershipChange::Remove(NodeId(2))),
        Some(RejectReason::Membership(MembershipError::WouldLoseQuorum))
    );
    // Removing the silent node 3 leaves {1, 2}, both answering.
    assert_eq!(
        c.change(1, 3_052, MembershipChange::Remove(NodeId(3))),
        None
    );
}
