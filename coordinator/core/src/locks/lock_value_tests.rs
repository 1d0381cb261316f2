//! Values and times with locks (protocol 3): an acquire's value stays with
//! its grant (a waiter's comes with it into its grant), counts in the
//! identity's value quota and the state's bytes until the grant or wait
//! ends; grants and waits record when they began on the logical clock.

use crate::access::{AccessRules, QuotaKind, QuotaRule};
use crate::locks::command::{
    ClientOp, CommandKind, Identity, RequestId, SessionId, CURRENT_PROTOCOL,
};
use crate::locks::error::CommandError;
use crate::locks::harness::Harness;
use crate::locks::machine::{Reply, StateMachine};

fn raised() -> Harness {
    let mut h = Harness::small();
    h.apply(CommandKind::RaiseProtocol {
        version: CURRENT_PROTOCOL,
    });
    h
}

fn open_as(h: &mut Harness, who: &str) -> SessionId {
    match h
        .apply(CommandKind::OpenSessionAs {
            ttl_ms: 1_000,
            owner: Identity(who.into()),
            open_key: 0,
        })
        .reply
    {
        Ok(Reply::SessionOpened { session }) => session,
        other => panic!("{other:?}"),
    }
}

/// Request `id` of `session`, acting as its owner `who`.
fn op_as(
    h: &mut Harness,
    who: &str,
    session: SessionId,
    id: u64,
    op: ClientOp,
) -> crate::locks::Output {
    h.apply(CommandKind::ClientAs {
        caller: Identity(who.into()),
        session,
        request_id: RequestId(id),
        ack_below: RequestId(0),
        waiting: Vec::new(),
        op,
    })
}

fn acquire_op(name: &str, value: &[u8]) -> ClientOp {
    ClientOp::Acquire {
        name: name.into(),
        wait: true,
        value: value.to_vec(),
    }
}

fn acquire(h: &mut Harness, s: SessionId, name: &str, value: &[u8]) -> crate::locks::Output {
    h.op(
        s,
        ClientOp::Acquire {
            name: name.into(),
            wait: true,
            value: value.to_vec(),
        },
    )
}

#[test]
fn a_value_stays_with_its_grant_and_a_waiters_comes_into_its_own() {
    let mut h = raised();
    let (a, b) = (h.open(), h.open());
    h.at_ms = 100;
    assert!(matches!(
        acquire(&mut h, a, "x", b"host-a").reply,
        Ok(Reply::Granted { .. })
    ));
    h.at_ms = 250;
    assert!(matches!(
        acquire(&mut h, b, "x", b"host-b").reply,
        Ok(Reply::Queued { .. })
    ));
    let lock = h.sm.lock("x").expect("kept");
    assert_eq!(lock.value, b"host-a");
    assert_eq!(lock.holder.and_then(|g| g.since_ms), Some(100));
    assert_eq!(lock.waiters[0].since_ms, Some(250));
    // Asking again changes nothing: the grant keeps the value it came with.
    acquire(&mut h, a, "x", b"other");
    assert_eq!(
        h.sm.lock("x").map(|l| l.value.clone()),
        Some(b"host-a".to_vec())
    );
    h.at_ms = 400;
    let token = h.sm.holder("x").map(|g| g.token).expect("held");
    h.release(a, "x", token);
    let lock = h.sm.lock("x").expect("kept");
    assert_eq!(
        lock.holder.map(|g| (g.session, g.since_ms)),
        Some((b, Some(400)))
    );
    assert_eq!(lock.value, b"host-b");
    // The state survives a snapshot whole.
    let restored = StateMachine::restore(&h.snapshot()).expect("restores");
    assert_eq!(restored, h.sm);
}

#[test]
fn values_count_in_the_quota_until_their_grant_or_wait_ends() {
    let mut h = raised();
    let rules = AccessRules {
        quotas: vec![QuotaRule {
            identities: vec!["app".into()],
            sessions: None,
            locks: None,
            elections: None,
            value_bytes: Some(10),
        }],
        ..AccessRules::default()
    };
    h.apply(CommandKind::SetAccessRules {
        by: Identity("ops".into()),
        rules,
        expected_version: None,
    });
    let (a, other) = (open_as(&mut h, "app"), open_as(&mut h, "other"));
    op_as(&mut h, "other", other, 1, acquire_op("busy", b""));
    let granted = op_as(&mut h, "app", a, 1, acquire_op("x", b"123456"));
    assert!(
        matches!(granted.reply, Ok(Reply::Granted { .. })),
        "{granted:?}"
    );
    let queued = op_as(&mut h, "app", a, 2, acquire_op("busy", b"7890"));
    assert!(
        matches!(queued.reply, Ok(Reply::Queued { .. })),
        "{queued:?}"
    );
    let refused = op_as(&mut h, "app", a, 3, acquire_op("y", b"1"));
    assert_eq!(
        refused.reply,
        Err(CommandError::QuotaExceeded {
            identity: "app".into(),
            what: QuotaKind::ValueBytes,
            quota: 10
        })
    );
    // A cancelled wait and a released grant give their bytes back.
    let cancel = ClientOp::CancelAcquire {
        name: "busy".into(),
    };
    op_as(&mut h, "app", a, 4, cancel);
    let token = h.sm.holder("x").map(|g| g.token).expect("held");
    let release = ClientOp::Release {
        name: "x".into(),
        token,
    };
    op_as(&mut h, "app", a, 5, release);
    let again = op_as(&mut h, "app", a, 6, acquire_op("y", b"0123456789"));
    assert!(
        matches!(again.reply, Ok(Reply::Granted { .. })),
        "{again:?}"
    );
    // An expiry too: the invariants (checked after every apply) compare
    // the running counts with counts from scratch.
    h.expire(a);
    assert!(h.sm.lock("y").is_none_or(|l| l.value.is_empty()));
}

#[test]
fn before_protocol_3_grants_and_waits_keep_no_times() {
    let mut h = Harness::small();
    let (a, b) = (h.open(), h.open());
    h.at_ms = 100;
    h.token(a, "x");
    h.acquire(b, "x", true);
    let lock = h.sm.lock("x").expect("kept");
    assert_eq!(lock.holder.and_then(|g| g.since_ms), None);
    assert_eq!(lock.waiters[0].since_ms, None);
    // The previous release's layout holds all of it.
    let bytes = h.snapshot();
    assert_eq!(bytes.first(), Some(&1));
    assert_eq!(StateMachine::restore(&bytes).expect("restores"), h.sm);
    // An acquire with a value is a protocol-3 command: applying one
    // records protocol 3, on every replica alike.
    acquire(&mut h, b, "y", b"v");
    assert_eq!(h.sm.protocol(), CURRENT_PROTOCOL);
}
