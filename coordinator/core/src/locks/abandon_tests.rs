//! Rules of `Abandon` found by the lock simulator: a withdrawn wait stays
//! withdrawn, and a late copy of an abandon touches nothing newer.

use crate::locks::harness::{err, Harness};
use crate::locks::{AbandonedWait, ClientOp, CommandError, CommandKind, Reply, RequestId};

fn abandon(h: &mut Harness, session: crate::locks::SessionId, up_to: u64) -> crate::locks::Output {
    h.apply(CommandKind::Abandon {
        session,
        name: "x".into(),
        wait: AbandonedWait::Acquire,
        up_to: RequestId(up_to),
    })
}

/// Seed 213: a retry of the withdrawn acquire, chosen after the abandon,
/// used to queue the session again (an orphan waiter, later an orphan
/// holder). The abandon now raises the exactly-once floor past `up_to`.
#[test]
fn a_copy_of_a_withdrawn_acquire_chosen_after_the_abandon_is_rejected() {
    let mut h = Harness::small();
    let (a, b) = (h.open(), h.open());
    h.token(a, "x");
    assert!(matches!(
        h.acquire(b, "x", true).reply,
        Ok(Reply::Queued { .. })
    ));
    // The client's poll (request 2) is still in flight when it gives up.
    let out = abandon(&mut h, b, 2);
    assert_eq!(out.reply, Ok(Reply::Cancelled { released: None }));
    let late = h.apply(CommandKind::Client {
        session: b,
        request_id: RequestId(2),
        ack_below: RequestId(2),
        waiting: Vec::new(),
        op: ClientOp::Acquire {
            name: "x".into(),
            wait: true,
            value: Vec::new(),
        },
    });
    assert!(matches!(
        err(&late),
        Some(CommandError::RequestIdAcked { .. })
    ));
    assert!(h.sm.waiters("x").is_empty());
}

/// Seed 1889: a delayed copy of an abandon, chosen after the session
/// acquired the same lock again, used to release that NEWER grant while
/// the client believed it held it.
#[test]
fn a_stale_abandon_copy_does_not_release_a_later_grant() {
    let mut h = Harness::small();
    let (a, b) = (h.open(), h.open());
    let ta = h.token(a, "x");
    assert!(matches!(
        h.acquire(b, "x", true).reply,
        Ok(Reply::Queued { .. })
    ));
    assert_eq!(
        abandon(&mut h, b, 1).reply,
        Ok(Reply::Cancelled { released: None })
    );
    h.release(a, "x", ta);
    let tb = h.token(b, "x");
    let out = abandon(&mut h, b, 1);
    assert_eq!(
        out.reply,
        Err(CommandError::StaleAbandon {
            up_to: RequestId(1)
        })
    );
    assert!(out.events.is_empty());
    assert_eq!(
        h.sm.holder("x").map(|g| (g.session, g.token)),
        Some((b, tb))
    );
}

/// The abandon still withdraws a grant that raced it (no orphan holder).
#[test]
fn an_abandon_after_the_grant_releases_it() {
    let mut h = Harness::small();
    let (a, b) = (h.open(), h.open());
    let ta = h.token(a, "x");
    assert!(matches!(
        h.acquire(b, "x", true).reply,
        Ok(Reply::Queued { .. })
    ));
    h.release(a, "x", ta);
    let out = abandon(&mut h, b, 1);
    assert!(matches!(
        out.reply,
        Ok(Reply::Cancelled { released: Some(_) })
    ));
    assert_eq!(h.sm.holder("x"), None);
}

/// `b` queued behind `a` on "x" with request 1, then granted when `a`
/// released; returns `b` and its token.
fn granted_after_waiting(h: &mut Harness) -> (crate::locks::SessionId, crate::locks::FencingToken) {
    let (a, b) = (h.open(), h.open());
    let ta = h.token(a, "x");
    let wait = h.fresh(
        b,
        ClientOp::Acquire {
            name: "x".into(),
            wait: true,
            value: Vec::new(),
        },
    );
    assert!(matches!(h.apply(wait).reply, Ok(Reply::Queued { .. })));
    h.release(a, "x", ta);
    let tb = h.sm.holder("x").map(|g| g.token).expect("b was granted");
    (b, tb)
}

/// Found by the 30-minute chaos soak (seed 20261128): a retried acquire was
/// answered "granted" from the lock's state while the first handler of the
/// same request, timing out, was withdrawing it; the withdrawal then
/// released the grant the client had been told about. The client now
/// confirms a grant that came after a retry with a logged check (a newer
/// request id). These are the two orders the log can put them in.
#[test]
fn a_logged_check_after_a_grant_fences_a_racing_abandon_of_the_same_request() {
    // Check first: the abandon of request 1 is stale and releases nothing.
    let mut h = Harness::small();
    let (b, tb) = granted_after_waiting(&mut h);
    let check = h.fresh(
        b,
        ClientOp::Check {
            name: "x".into(),
            token: tb,
        },
    );
    assert!(h.apply(check).reply.is_ok());
    let out = abandon(&mut h, b, 1);
    assert_eq!(
        out.reply,
        Err(CommandError::StaleAbandon {
            up_to: RequestId(1)
        })
    );
    assert_eq!(
        h.sm.holder("x").map(|g| (g.session, g.token)),
        Some((b, tb))
    );

    // Abandon first: the grant is released, and the check says so.
    let mut h = Harness::small();
    let (b, tb) = granted_after_waiting(&mut h);
    assert!(abandon(&mut h, b, 1).reply.is_ok());
    assert!(h.sm.holder("x").is_none());
    let check = h.fresh(
        b,
        ClientOp::Check {
            name: "x".into(),
            token: tb,
        },
    );
    assert!(
        err(&h.apply(check)).is_some(),
        "the check must find the grant gone"
    );
}
