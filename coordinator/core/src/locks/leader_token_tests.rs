//! Leaderships carry fencing tokens from the sequence lock grants draw
//! from (protocol 3 on): a win, by campaign or by promotion, draws the
//! next one; a proclaim keeps it; before protocol 3 a win has none and
//! moves the revision exactly as the previous release does.

use crate::locks::command::{ClientOp, CommandKind, FencingToken, SessionId, CURRENT_PROTOCOL};
use crate::locks::event::{ElectionChange, Event};
use crate::locks::harness::{grants, Harness};
use crate::locks::machine::Reply;

fn raised() -> Harness {
    let mut h = Harness::small();
    h.apply(CommandKind::RaiseProtocol {
        version: CURRENT_PROTOCOL,
    });
    h
}

/// The tokens of the leaderships the events of one apply give, in order.
fn won(events: &[Event]) -> Vec<(SessionId, Option<FencingToken>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Election(e) => match &e.change {
                ElectionChange::NewLeader { session, token, .. } => Some((*session, *token)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn a_win_draws_the_next_token_after_every_grant_before_it() {
    let mut h = raised();
    let (a, b) = (h.open(), h.open());
    let lock = h.token(a, "l");
    let out = h.campaign(b, "e", b"b");
    let Ok(Reply::Elected {
        term: 1,
        token: Some(token),
    }) = out.reply
    else {
        panic!("not elected with a token: {:?}", out.reply);
    };
    assert!(token > lock, "win {token:?} not above grant {lock:?}");
    assert_eq!(
        token.0, out.revision,
        "the command's revision is its first token"
    );
    assert_eq!(won(&out.events), vec![(b, Some(token))]);
    assert_eq!(h.sm.leader("e").and_then(|l| l.token), Some(token));
    // A retry of the campaign, and a new campaign of the leader, answer
    // the same leadership.
    let again = h.campaign(b, "e", b"b");
    assert_eq!(
        again.reply,
        Ok(Reply::Elected {
            term: 1,
            token: Some(token)
        })
    );
    // A later grant is above the win.
    assert!(h.token(a, "m") > token);
}

#[test]
fn one_command_that_grants_and_promotes_gives_each_its_own_token() {
    let mut h = raised();
    let (a, b, c) = (h.open(), h.open(), h.open());
    h.sm.config.lock_delay_ms = 0;
    h.token(a, "l");
    h.acquire(c, "l", true);
    let first = match h.campaign(a, "e", b"a").reply {
        Ok(Reply::Elected { token, .. }) => token,
        other => panic!("{other:?}"),
    };
    h.campaign(b, "e", b"b");
    // Closing a's session releases l to c and promotes b in one command.
    let out = h.op(a, ClientOp::CloseSession);
    let granted = grants(&out.events);
    let promoted = won(&out.events);
    assert_eq!(granted.len(), 1, "{:?}", out.events);
    assert_eq!(promoted.len(), 1, "{:?}", out.events);
    let (grant, win) = (granted[0].2, promoted[0].1.expect("a token"));
    assert_ne!(grant, win, "one token given twice");
    assert!(grant > first.expect("a token") && win > first.expect("a token"));
    assert_eq!(
        grant.0.max(win.0),
        out.revision,
        "the revision is the last token"
    );
    assert_eq!(h.sm.leader("e").and_then(|l| l.token), Some(win));
}

#[test]
fn a_proclaim_keeps_the_leaderships_token() {
    let mut h = raised();
    let a = h.open();
    let out = h.campaign(a, "e", b"1");
    let Ok(Reply::Elected { token, .. }) = out.reply else {
        panic!("{:?}", out.reply);
    };
    let out = h.op(
        a,
        ClientOp::Proclaim {
            name: "e".into(),
            value: b"2".to_vec(),
        },
    );
    assert_eq!(out.reply, Ok(Reply::Proclaimed { term: 1 }));
    let proclaimed = out.events.iter().find_map(|e| match e {
        Event::Election(e) => match &e.change {
            ElectionChange::Proclaimed { token, .. } => Some(*token),
            _ => None,
        },
        _ => None,
    });
    assert_eq!(proclaimed, Some(token));
    assert_eq!(h.sm.leader("e").and_then(|l| l.token), token);
}

#[test]
fn before_protocol_3_a_win_has_no_token_and_moves_the_revision_as_before() {
    let mut h = Harness::small();
    let (a, b) = (h.open(), h.open());
    h.sm.config.lock_delay_ms = 0;
    h.token(a, "l");
    h.acquire(b, "l", true);
    h.campaign(a, "e", b"a");
    h.campaign(b, "e", b"b");
    let before = h.sm.revision();
    let out = h.op(a, ClientOp::CloseSession);
    // One command, one grant, one promotion: one revision, as the
    // previous release counts (a win drew nothing).
    assert_eq!(out.revision, before + 1);
    assert_eq!(won(&out.events), vec![(b, None)]);
    assert_eq!(h.sm.leader("e").and_then(|l| l.token), None);
}
