//! Sessions belong to identities: the rules of "Sessions belong to
//! identities" in `machine.rs`, one test per rule, and the snapshot
//! layouts on either side of protocol 3.

use crate::locks::harness::Harness;
use crate::locks::{
    ClientOp, Command, CommandError, CommandKind, ElectionChange, Event, Identity, Reply,
    RequestId, SessionId, StateMachine, CURRENT_PROTOCOL,
};

fn id(name: &str) -> Identity {
    Identity(name.into())
}

fn open_as(h: &mut Harness, owner: &str) -> SessionId {
    open_keyed(h, owner, 0)
}

fn open_keyed(h: &mut Harness, owner: &str, open_key: u64) -> SessionId {
    let kind = CommandKind::OpenSessionAs {
        ttl_ms: 1_000,
        owner: id(owner),
        open_key,
    };
    match h.apply(kind).reply {
        Ok(Reply::SessionOpened { session }) => session,
        other => panic!("open failed: {other:?}"),
    }
}

#[test]
fn a_retried_open_answers_the_session_the_first_copy_opened() {
    let mut h = Harness::small();
    // Alice opens more than the small machine's default quota of sessions.
    h.apply(CommandKind::SetAccessRules {
        by: id("ops"),
        rules: crate::access::AccessRules {
            rules: Vec::new(),
            quotas: vec![crate::access::QuotaRule {
                identities: vec!["*".into()],
                sessions: Some(8),
                locks: None,
                elections: None,
                value_bytes: None,
            }],
        },
        expected_version: None,
    });
    let first = open_keyed(&mut h, "alice", 42);
    assert_eq!(
        open_keyed(&mut h, "alice", 42),
        first,
        "a retry opened another"
    );
    assert_eq!(h.sm.gauges().sessions, 1);
    // The key is per identity; another key or no key opens anew.
    let bobs = open_keyed(&mut h, "bob", 42);
    let other = open_keyed(&mut h, "alice", 43);
    let unkeyed = (open_as(&mut h, "alice"), open_as(&mut h, "alice"));
    assert!(bobs != first && other != first && unkeyed.0 != unkeyed.1);
    // The index survives a snapshot and forgets a session that ended.
    let restored = StateMachine::restore(&h.snapshot()).unwrap();
    assert_eq!(restored, h.sm);
    let close = as_caller("alice", first, 1, 0, ClientOp::CloseSession);
    assert_eq!(h.apply(close).reply, Ok(Reply::SessionClosed));
    assert_ne!(
        open_keyed(&mut h, "alice", 42),
        first,
        "a closed session came back"
    );
    assert_eq!(h.sm.check_invariants(), Ok(()));
}

fn as_caller(
    caller: &str,
    session: SessionId,
    request: u64,
    ack: u64,
    op: ClientOp,
) -> CommandKind {
    CommandKind::ClientAs {
        caller: id(caller),
        session,
        request_id: RequestId(request),
        ack_below: RequestId(ack),
        waiting: Vec::new(),
        op,
    }
}

fn acquire(name: &str) -> ClientOp {
    ClientOp::Acquire {
        name: name.into(),
        wait: false,
        value: Vec::new(),
    }
}

#[test]
fn a_session_opened_by_an_identity_belongs_to_it() {
    let mut h = Harness::small();
    let s = open_as(&mut h, "alice");
    assert_eq!(
        h.sm.protocol(),
        CURRENT_PROTOCOL,
        "the command records protocol 3"
    );
    assert_eq!(h.sm.session_owner(s), Ok(Some(&id("alice"))));
    let out = h.apply(as_caller("alice", s, 1, 0, acquire("x")));
    assert!(matches!(out.reply, Ok(Reply::Granted { .. })), "{out:?}");
}

#[test]
fn another_identity_is_refused_and_changes_nothing_not_even_acks() {
    let mut h = Harness::small();
    let s = open_as(&mut h, "alice");
    let granted = h.apply(as_caller("alice", s, 1, 0, acquire("x")));
    assert!(matches!(granted.reply, Ok(Reply::Granted { .. })));
    let before = h.snapshot();
    for op in [
        ClientOp::CancelAcquire { name: "x".into() },
        ClientOp::CloseSession,
        acquire("y"),
        ClientOp::Resign { name: "e".into() },
    ] {
        // A fresh id, and the id alice used, with an ack that would drop
        // alice's recorded answers were it applied.
        for request in [1, 7] {
            let kind = as_caller("mallory", s, request, 100, op.clone());
            let out = h.sm.apply(
                h.slot,
                Command {
                    at_ms: h.at_ms,
                    kind,
                },
            );
            assert_eq!(
                out.reply,
                Err(CommandError::PermissionDenied { session: s })
            );
            assert!(out.events.is_empty() && !out.duplicate);
        }
    }
    let mut after = h.sm.clone();
    after.revision = StateMachine::restore(&before).unwrap().revision;
    assert_eq!(after.snapshot().unwrap(), before, "only the revision moved");
    // Alice's recorded answer is still there for her retry.
    let retry = h.apply(as_caller("alice", s, 1, 0, acquire("x")));
    assert!(retry.duplicate && matches!(retry.reply, Ok(Reply::Granted { .. })));
}

#[test]
fn a_session_without_owner_is_claimed_by_its_first_caller_only() {
    let mut h = Harness::small();
    // Opened before protocol 3: no owner.
    let s = h.open();
    assert_eq!(h.sm.session_owner(s), Ok(None));
    let out = h.apply(as_caller("alice", s, 1, 0, acquire("x")));
    assert!(matches!(out.reply, Ok(Reply::Granted { .. })));
    assert_eq!(h.sm.session_owner(s), Ok(Some(&id("alice"))));
    let out = h.apply(as_caller("mallory", s, 2, 0, acquire("y")));
    assert_eq!(
        out.reply,
        Err(CommandError::PermissionDenied { session: s })
    );
    // A keepalive claims with ClaimSession: refused for another identity,
    // accepted (and idempotent) for the owner.
    let t = h.open();
    let claim = |owner: &str, session| CommandKind::ClaimSession {
        session,
        owner: id(owner),
    };
    assert_eq!(h.apply(claim("bob", t)).reply, Ok(Reply::Done));
    assert_eq!(h.apply(claim("bob", t)).reply, Ok(Reply::Done));
    assert_eq!(
        h.apply(claim("mallory", t)).reply,
        Err(CommandError::PermissionDenied { session: t })
    );
    assert_eq!(
        h.apply(claim("bob", SessionId(999))).reply,
        Err(CommandError::SessionNotFound {
            session: SessionId(999)
        })
    );
}

#[test]
fn a_request_without_a_caller_is_refused_on_an_owned_session() {
    let mut h = Harness::small();
    let s = open_as(&mut h, "alice");
    let out = h.op(s, acquire("x"));
    assert_eq!(
        out.reply,
        Err(CommandError::PermissionDenied { session: s })
    );
    assert!(h.sm.holder("x").is_none());
}

#[test]
fn identities_outside_the_bounds_are_refused_alike_everywhere() {
    let mut h = Harness::small();
    let long = "a".repeat(254);
    for bad in ["", long.as_str()] {
        let out = h.apply(CommandKind::OpenSessionAs {
            ttl_ms: 1_000,
            owner: id(bad),
            open_key: 0,
        });
        assert!(
            matches!(out.reply, Err(CommandError::InvalidIdentity { .. })),
            "{out:?}"
        );
    }
    let s = open_as(&mut h, "alice");
    let out = h.apply(as_caller("", s, 1, 0, acquire("x")));
    assert!(matches!(
        out.reply,
        Err(CommandError::InvalidIdentity { .. })
    ));
}

#[test]
fn election_events_and_reads_name_the_leaders_identity() {
    let mut h = Harness::small();
    let s = open_as(&mut h, "alice");
    let campaign = ClientOp::Campaign {
        name: "e".into(),
        value: b"v".to_vec(),
    };
    let out = h.apply(as_caller("alice", s, 1, 0, campaign));
    let owners: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Election(ev) => match &ev.change {
                ElectionChange::NewLeader { owner, .. } => Some(owner.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(owners, vec![Some(id("alice"))]);
    assert_eq!(h.sm.leader("e").and_then(|l| l.owner), Some(id("alice")));
}

#[test]
fn below_protocol_3_the_previous_snapshot_layout_is_written_and_read() {
    let mut h = Harness::small();
    let a = h.open();
    h.token(a, "x");
    let campaign = ClientOp::Campaign {
        name: "e".into(),
        value: b"v".to_vec(),
    };
    h.op(a, campaign);
    let bytes = h.snapshot();
    assert_eq!(bytes.first(), Some(&1), "version-1 layout below protocol 3");
    let restored = StateMachine::restore(&bytes).unwrap();
    assert_eq!(restored, h.sm);

    // Raised: the new layout, owners and all, round trips.
    h.apply(CommandKind::RaiseProtocol {
        version: CURRENT_PROTOCOL,
    });
    let b = open_as(&mut h, "bob");
    let bytes = h.snapshot();
    assert_eq!(
        bytes.first().map(|v| u32::from(*v)),
        Some(crate::locks::snapshot::SNAPSHOT_VERSION)
    );
    let restored = StateMachine::restore(&bytes).unwrap();
    assert_eq!(restored, h.sm);
    assert_eq!(restored.session_owner(b), Ok(Some(&id("bob"))));
    assert_eq!(restored.protocol(), CURRENT_PROTOCOL);
}

#[test]
fn the_protocol_is_never_lowered_nor_raised_past_this_release() {
    let mut h = Harness::small();
    h.apply(CommandKind::RaiseProtocol { version: 99 });
    assert_eq!(h.sm.protocol(), CURRENT_PROTOCOL);
    h.apply(CommandKind::RaiseProtocol { version: 1 });
    assert_eq!(h.sm.protocol(), CURRENT_PROTOCOL);
    assert_eq!(h.sm.check_invariants(), Ok(()));
}

/// Random requests of three identities on sessions two of them opened:
/// whatever the op, session or request id, a request of an identity that
/// does not own the session is refused and changes nothing but the
/// revision. The owner is tracked here, independently of the machine.
fn foreign_requests_change_nothing(steps: &[(u8, u8, u8, u8)]) -> Result<(), String> {
    let callers = ["alice", "bob", "mallory"];
    let mut h = Harness::small();
    let sessions = [open_as(&mut h, "alice"), open_as(&mut h, "bob")];
    for (i, &(caller, session, op, rid)) in steps.iter().enumerate() {
        let caller = callers[usize::from(caller) % callers.len()];
        let owner_index = usize::from(session) % sessions.len();
        let session = sessions[owner_index];
        let name = if op % 2 == 0 { "x" } else { "y" };
        let op = match op % 6 {
            0 => acquire(name),
            1 => ClientOp::CancelAcquire { name: name.into() },
            2 => ClientOp::Campaign {
                name: name.into(),
                value: vec![op],
            },
            3 => ClientOp::Resign { name: name.into() },
            4 => ClientOp::Proclaim {
                name: name.into(),
                value: vec![op],
            },
            _ => ClientOp::Check {
                name: name.into(),
                token: crate::locks::FencingToken(u64::from(rid)),
            },
        };
        let kind = as_caller(caller, session, u64::from(rid) + 1, u64::from(rid), op);
        let foreign = caller != callers[owner_index];
        let before = h.snapshot();
        h.slot += 1;
        let out = h.sm.apply(
            h.slot,
            Command {
                at_ms: h.at_ms,
                kind,
            },
        );
        if foreign {
            if out.reply != Err(CommandError::PermissionDenied { session }) {
                return Err(format!(
                    "step {i}: {caller} on {session:?} got {:?}",
                    out.reply
                ));
            }
            let mut after = h.sm.clone();
            after.revision -= 1;
            after.last_applied_slot -= 1;
            if after.snapshot().map_err(|e| e.to_string())? != before {
                return Err(format!(
                    "step {i}: {caller}'s refused request changed the state"
                ));
            }
        }
    }
    Ok(())
}

proptest::proptest! {
    #[test]
    fn requests_of_other_identities_are_refused_and_change_nothing(
        steps in proptest::collection::vec(proptest::prelude::any::<(u8, u8, u8, u8)>(), 1..60)
    ) {
        proptest::prop_assert_eq!(foreign_requests_change_nothing(&steps), Ok(()));
    }
}

/// The canary: with the ownership check switched off in the machine, the
/// property above catches it.
#[cfg(feature = "canary")]
#[test]
fn the_ownership_canary_is_caught() {
    crate::locks::machine::canary::set_any_caller(true);
    let steps = [(2, 0, 0, 0), (2, 1, 1, 1), (0, 1, 2, 2)];
    let caught = foreign_requests_change_nothing(&steps);
    crate::locks::machine::canary::set_any_caller(false);
    assert!(caught.is_err(), "a foreign request went through unnoticed");
    assert_eq!(foreign_requests_change_nothing(&steps), Ok(()));
}
