//! `RevokeSession`: an administrator ends a session now; its locks pass on
//! only after the longer of the lock-delay and the session's TTL, with a
//! higher token.

use crate::locks::command::{CommandKind, Identity, SessionId, CURRENT_PROTOCOL};
use crate::locks::error::CommandError;
use crate::locks::event::{CloseReason, Event};
use crate::locks::harness::{grants, Harness};
use crate::locks::machine::Reply;

fn revoke(h: &mut Harness, session: SessionId) -> crate::locks::Output {
    h.apply(CommandKind::RevokeSession {
        by: Identity("ops".into()),
        session,
    })
}

#[test]
fn a_revoked_sessions_locks_pass_on_after_its_ttl_with_a_higher_token() {
    let mut h = Harness::small();
    h.apply(CommandKind::RaiseProtocol {
        version: CURRENT_PROTOCOL,
    });
    let (holder, next) = (h.open(), h.open());
    let ttl_ms = h.sm.session_ttl_ms(holder).unwrap_or_default();
    let token = h.token(holder, "x");
    h.acquire(next, "x", true);
    let out = revoke(&mut h, holder);
    assert_eq!(out.reply, Ok(Reply::SessionClosed));
    assert!(out.events.contains(&Event::SessionEnded {
        session: holder,
        reason: CloseReason::Revoked
    }));
    assert!(grants(&out.events).is_empty(), "granted within the TTL");
    assert!(!h.sm.has_session(holder));
    // Still delayed just before the TTL is over, granted at it.
    h.at_ms += ttl_ms - 1;
    assert!(grants(&h.apply(CommandKind::Tick).events).is_empty());
    h.at_ms += 1;
    let granted = grants(&h.apply(CommandKind::Tick).events);
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0].1, next);
    assert!(granted[0].2 > token);
}

#[test]
fn a_longer_lock_delay_than_the_ttl_is_kept() {
    let mut h = Harness::small();
    h.sm.config.lock_delay_ms = 10_000;
    let holder = h.open();
    h.token(holder, "x");
    revoke(&mut h, holder);
    assert_eq!(
        h.sm.lock_delayed_until_ms("x"),
        Some(h.at_ms + 10_000),
        "the lock-delay is longer than the 1 s TTL"
    );
}

#[test]
fn revoking_an_unknown_session_changes_nothing() {
    let mut h = Harness::small();
    let live = h.open();
    let before = h.sm.clone();
    let out = revoke(&mut h, SessionId(999));
    assert_eq!(
        out.reply,
        Err(CommandError::SessionNotFound {
            session: SessionId(999)
        })
    );
    assert!(h.sm.has_session(live));
    assert_eq!(h.sm.sessions().count(), before.sessions().count());
}
