//! `ForceRelease`: an administrator ends one grant now; the holder's
//! session lives on and its keepalive answers name the taken token until
//! the lock passes on, after the longer of the lock-delay and its TTL,
//! with a higher token.

use crate::locks::command::{CommandKind, FencingToken, Identity, CURRENT_PROTOCOL};
use crate::locks::error::CommandError;
use crate::locks::event::{Event, ReleaseReason};
use crate::locks::harness::{grants, Harness};
use crate::locks::machine::Reply;
use crate::locks::session::MAX_TAKEN_GRANTS;

fn raised() -> Harness {
    let mut h = Harness::small();
    h.apply(CommandKind::RaiseProtocol {
        version: CURRENT_PROTOCOL,
    });
    h
}

/// A force-release of `name`'s current grant (token 0 if free), as the
/// leader proposes it.
fn force(h: &mut Harness, name: &str) -> crate::locks::Output {
    let token = h.sm.holder(name).map_or(FencingToken(0), |g| g.token);
    force_grant(h, name, token)
}

fn force_grant(h: &mut Harness, name: &str, token: FencingToken) -> crate::locks::Output {
    h.apply(CommandKind::ForceRelease {
        by: Identity("ops".into()),
        name: name.into(),
        token,
    })
}

#[test]
fn a_forced_lock_passes_on_after_the_holders_ttl_and_the_holder_is_told() {
    let mut h = raised();
    let (holder, next) = (h.open(), h.open());
    let ttl_ms = h.sm.session_ttl_ms(holder).unwrap_or_default();
    let token = h.token(holder, "x");
    h.token(holder, "kept");
    h.acquire(next, "x", true);
    let out = force(&mut h, "x");
    assert_eq!(
        out.reply,
        Ok(Reply::Taken {
            session: holder,
            token
        })
    );
    assert!(out.events.contains(&Event::LockReleased {
        name: "x".into(),
        session: holder,
        token,
        reason: ReleaseReason::ForceReleased,
        lock_delay_ms: Some(ttl_ms.max(h.sm.config().lock_delay_ms)),
    }));
    assert!(grants(&out.events).is_empty(), "granted within the TTL");
    // The session lives on, keeps its other lock, and is told.
    assert!(h.sm.has_session(holder));
    assert_eq!(h.sm.holder("kept").map(|g| g.session), Some(holder));
    assert_eq!(h.sm.taken_grants(holder), vec![token]);
    h.at_ms += ttl_ms - 1;
    assert!(grants(&h.apply(CommandKind::Tick).events).is_empty());
    assert_eq!(
        h.sm.taken_grants(holder),
        vec![token],
        "told until it passes on"
    );
    h.at_ms += 1;
    let granted = grants(&h.apply(CommandKind::Tick).events);
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0].1, next);
    assert!(granted[0].2 > token);
    assert!(
        h.sm.taken_grants(holder).is_empty(),
        "no longer named once passed on"
    );
    // The holder's old token is refused.
    let stale = h.release(holder, "x", token);
    assert!(matches!(stale.reply, Err(CommandError::StaleToken { .. })));
    // The next command of the holder forgets the taken grant.
    h.token(holder, "again");
    assert!(h
        .sm
        .sessions
        .get(&holder)
        .is_some_and(|s| s.taken.is_empty()));
}

/// The command names the grant the leader saw; by the time it applies the
/// lock may have passed on, and the new holder (whose keepalives the
/// leader did not hold back) keeps it.
#[test]
fn a_grant_that_passed_on_before_the_command_is_not_taken() {
    let mut h = raised();
    let (a, b) = (h.open(), h.open());
    let old = h.token(a, "x");
    h.acquire(b, "x", true);
    h.release(a, "x", old);
    let current = h.sm.holder("x").map(|g| (g.session, g.token));
    assert_eq!(current.map(|c| c.0), Some(b));
    let out = force_grant(&mut h, "x", old);
    assert_eq!(out.reply, Err(CommandError::NotHeld { name: "x".into() }));
    assert_eq!(h.sm.holder("x").map(|g| (g.session, g.token)), current);
    assert!(h.sm.taken_grants(b).is_empty());
}

#[test]
fn a_lock_nobody_holds_is_refused_and_nothing_changes() {
    let mut h = raised();
    let a = h.open();
    let before = h.sm.clone();
    let out = force(&mut h, "free");
    assert_eq!(
        out.reply,
        Err(CommandError::NotHeld {
            name: "free".into()
        })
    );
    assert!(out.events.is_empty());
    assert!(h.sm.taken_grants(a).is_empty());
    assert_eq!(h.sm.holder("free"), before.holder("free"));
    assert_eq!(h.sm.gauges(), before.gauges());
}

#[test]
fn a_session_holds_a_bounded_number_of_taken_grants() {
    let mut h = raised();
    h.sm.config.limits.max_locks_per_session = 2;
    let a = h.open();
    for i in 0..MAX_TAKEN_GRANTS {
        let name = format!("l{i}");
        h.token(a, &name);
        assert!(matches!(
            force(&mut h, &name).reply,
            Ok(Reply::Taken { .. })
        ));
    }
    assert_eq!(h.sm.taken_grants(a).len(), MAX_TAKEN_GRANTS as usize);
    let token = h.token(a, "one-more");
    let out = force(&mut h, "one-more");
    assert_eq!(
        out.reply,
        Err(CommandError::TooManyTakenGrants {
            session: a,
            max: MAX_TAKEN_GRANTS
        })
    );
    assert_eq!(h.sm.holder("one-more").map(|g| g.token), Some(token));
    // Once the lock-delays are over, the session's next command forgets
    // them and a force-release works again.
    h.at_ms += 60_000;
    h.apply(CommandKind::Tick);
    h.token(a, "after");
    assert_eq!(
        force(&mut h, "one-more").reply,
        Ok(Reply::Taken { session: a, token })
    );
    assert_eq!(h.sm.taken_grants(a).len(), 1);
}
