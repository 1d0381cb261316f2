//! Elections nobody leads or campaigns in make room for new ones at
//! `max_elections` (from protocol 3); a name's terms and event indices
//! never go back.

use crate::locks::command::{ClientOp, CommandKind, CURRENT_PROTOCOL};
use crate::locks::error::CommandError;
use crate::locks::harness::Harness;
use crate::locks::machine::StateMachine;
use crate::locks::Event;

fn recorded() -> Harness {
    let mut h = Harness::small();
    h.apply(CommandKind::RaiseProtocol {
        version: CURRENT_PROTOCOL,
    });
    h
}

fn resign(h: &mut Harness, s: crate::locks::SessionId, name: &str) {
    h.op(s, ClientOp::Resign { name: name.into() });
}

/// The index of the election event an output carries.
fn event_index(events: &[Event]) -> Option<u64> {
    events.iter().find_map(|e| match e {
        Event::Election(e) => Some(e.index),
        _ => None,
    })
}

#[test]
fn an_empty_election_removed_to_make_room_is_made_again_above_where_it_was() {
    let mut h = recorded();
    let s = h.open();
    let max = h.sm.config().limits.max_elections;
    h.campaign(s, "a", b"v");
    resign(&mut h, s, "a");
    let (term, index) = (h.sm.term("a"), h.sm.election_last_index("a"));
    // Fill the rest, each left empty too.
    for i in 1..max {
        let name = format!("e{i}");
        h.campaign(s, &name, b"v");
        resign(&mut h, s, &name);
    }
    h.campaign(s, "new", b"v");
    assert!(!h.sm.elections.contains_key("a"), "nothing made room");
    // Its term and last index still read at least what they were.
    assert!(h.sm.term("a") >= term && h.sm.election_last_index("a") >= index);
    let again = h.campaign(s, "a", b"w");
    assert!(h.sm.term("a") > term, "a term went back");
    assert!(
        event_index(&again.events) > Some(index),
        "an index went back"
    );
    let restored = StateMachine::restore(&h.snapshot()).unwrap();
    assert_eq!(restored, h.sm, "the floor is part of the state");
}

#[test]
fn removed_elections_no_longer_count_against_max_elections() {
    let mut h = recorded();
    let s = h.open();
    let max = h.sm.config().limits.max_elections;
    for i in 0..max + 4 {
        let name = format!("e{i}");
        let out = h.campaign(s, &name, b"v");
        assert!(out.reply.is_ok(), "{name}: {:?}", out.reply);
        resign(&mut h, s, &name);
    }
    // Live ones still do.
    for i in 0..max {
        h.campaign(s, &format!("live{i}"), b"v");
    }
    let refused = h.campaign(s, "one-more", b"v").reply;
    assert!(
        matches!(
            refused,
            Err(CommandError::TooManyElections { .. } | CommandError::TooManyCampaigns { .. })
        ),
        "{refused:?}"
    );
}

#[test]
fn below_protocol_3_empty_elections_are_kept_as_the_previous_release_keeps_them() {
    let mut h = Harness::small();
    let s = h.open();
    let max = h.sm.config().limits.max_elections;
    for i in 0..max {
        let name = format!("e{i}");
        h.campaign(s, &name, b"v");
        resign(&mut h, s, &name);
    }
    let refused = h.campaign(s, "one-more", b"v").reply;
    assert!(
        matches!(refused, Err(CommandError::TooManyElections { .. })),
        "{refused:?}"
    );
}

#[test]
fn a_campaign_refused_for_its_session_removes_no_election_to_make_room() {
    let mut h = recorded();
    let s = h.open();
    let max = h.sm.config().limits.max_elections;
    for i in 0..max {
        let name = format!("e{i}");
        h.campaign(s, &name, b"v");
        resign(&mut h, s, &name);
    }
    // A session at its campaign limit asks for a new election: refused,
    // and the empty elections are all still there.
    let busy = h.open();
    let per_session = h.sm.config().limits.max_campaigns_per_session;
    for i in 0..per_session {
        h.campaign(busy, &format!("e{i}"), b"v");
    }
    let before = h.sm.elections.len();
    let refused = h.campaign(busy, "new", b"v").reply;
    assert!(
        matches!(refused, Err(CommandError::TooManyCampaigns { .. })),
        "{refused:?}"
    );
    assert_eq!(
        h.sm.elections.len(),
        before,
        "a refused command changed the elections"
    );
}
