use super::*;
use crate::paxos::{Ballot, Message, NodeId};

fn heartbeat(round: u64, after: u64) -> Outgoing {
    Outgoing {
        to: NodeId(2),
        msg: Message::Heartbeat {
            ballot: Ballot {
                round: 1,
                node: NodeId(1),
            },
            round,
            commit: Slot(0),
        },
        after: PersistSeq(after),
    }
}

fn entry(slot: u64) -> ChosenEntry {
    ChosenEntry {
        slot: Slot(slot),
        batch: Default::default(),
    }
}

fn rounds(sent: &[Outgoing]) -> Vec<u64> {
    sent.iter()
        .map(|o| match o.msg {
            Message::Heartbeat { round, .. } => round,
            _ => unreachable!(),
        })
        .collect()
}

fn sent(actions: &[LoopAction]) -> Vec<Outgoing> {
    actions
        .iter()
        .filter_map(|a| match a {
            LoopAction::Send(o) => Some(o.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_message_waits_for_the_persist_it_follows_and_leaves_in_order() {
    let mut lp = ConsensusLoop::new(PersistSeq(3), Slot(0), 100);
    let fx = Effects {
        send: vec![
            heartbeat(1, 0),
            heartbeat(2, 5),
            heartbeat(3, 3),
            heartbeat(4, 4),
        ],
        ..Effects::default()
    };
    let actions = lp.effects(fx).unwrap();
    assert_eq!(
        rounds(&sent(&actions)),
        vec![1, 3],
        "durable barriers go at once"
    );
    assert_eq!(rounds(&lp.persisted(PersistSeq(4))), vec![4]);
    assert!(lp.persisted(PersistSeq(4)).is_empty(), "each leaves once");
    assert_eq!(rounds(&lp.persisted(PersistSeq(9))), vec![2]);
    assert_eq!(lp.durable(), PersistSeq(9));
    assert!(lp.persisted(PersistSeq(1)).is_empty());
    assert_eq!(lp.durable(), PersistSeq(9), "never goes back");
}

#[test]
fn a_loss_of_leadership_is_published_before_anything_is_sent() {
    let mut lp = ConsensusLoop::new(PersistSeq(0), Slot(0), 100);
    let fx = Effects {
        send: vec![heartbeat(1, 0)],
        leadership: vec![LeadershipEvent::LostLeadership],
        ..Effects::default()
    };
    let actions = lp.effects(fx).unwrap();
    assert!(matches!(actions[0], LoopAction::PublishLostLeadership));
    assert!(matches!(actions[1], LoopAction::Send(_)));
    assert!(matches!(
        actions.last(),
        Some(LoopAction::Leadership(LeadershipEvent::LostLeadership))
    ));
}

#[test]
fn entries_apply_in_slot_order_after_the_snapshot_and_a_gap_stops_the_loop() {
    let mut lp = ConsensusLoop::new(PersistSeq(0), Slot(5), 100);
    let fx = Effects {
        chosen: vec![entry(5), entry(6)],
        ..Effects::default()
    };
    assert_eq!(lp.effects(fx).unwrap().len(), 2);
    assert_eq!(lp.applied(), 7);
    let gap = Effects {
        chosen: vec![entry(8)],
        ..Effects::default()
    };
    assert_eq!(
        lp.effects(gap).unwrap_err(),
        LoopError::OutOfOrder {
            got: 8,
            expected: 7
        }
    );
    let installed = Effects {
        install_snapshot: Some(Snapshot {
            up_to: Slot(20),
            data: Vec::new(),
        }),
        chosen: vec![entry(20)],
        ..Effects::default()
    };
    let actions = lp.effects(installed).unwrap();
    assert!(matches!(actions[0], LoopAction::Install(_)));
    assert!(matches!(actions[1], LoopAction::Apply(ref e) if e.slot == Slot(20)));
    assert_eq!(lp.applied(), 21);
}

#[test]
fn the_log_is_compacted_every_so_many_applied_slots() {
    let mut lp = ConsensusLoop::new(PersistSeq(0), Slot(10), 3);
    assert_eq!(
        lp.snapshot_due(),
        None,
        "nothing applied since the recovered snapshot"
    );
    let fx = Effects {
        chosen: vec![entry(10), entry(11)],
        ..Effects::default()
    };
    lp.effects(fx).unwrap();
    assert_eq!(lp.snapshot_due(), None);
    let fx = Effects {
        chosen: vec![entry(12)],
        ..Effects::default()
    };
    lp.effects(fx).unwrap();
    assert_eq!(lp.snapshot_due(), Some(Slot(13)));
    assert_eq!(lp.snapshot_due(), None, "once per cadence");
}

#[cfg(feature = "canary")]
#[test]
fn the_barrier_canary_sends_before_the_persist() {
    let mut lp = ConsensusLoop::new(PersistSeq(0), Slot(0), 100);
    lp.set_canary(LoopCanary::NoPersistBarrier);
    let fx = Effects {
        send: vec![heartbeat(1, 2)],
        ..Effects::default()
    };
    assert_eq!(rounds(&sent(&lp.effects(fx).unwrap())), vec![1]);
}
