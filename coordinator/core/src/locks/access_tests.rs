//! The access rules as replicated state: `SetAccessRules` and the
//! snapshot layouts that carry (or predate) them.

use crate::access::{AccessRule, AccessRules, Permission, QuotaKind, QuotaRule};
use crate::locks::command::{ClientOp, RequestId, SessionId};
use crate::locks::command::{CommandKind, Identity, CURRENT_PROTOCOL};
use crate::locks::error::{CommandError, DecodeError};
use crate::locks::harness::Harness;
use crate::locks::machine::{Reply, StateMachine};

fn rules(prefix: &str) -> AccessRules {
    AccessRules {
        quotas: Vec::new(),
        rules: vec![AccessRule {
            identities: vec!["app-*".into()],
            permissions: [Permission::Lock, Permission::Read].into_iter().collect(),
            prefixes: vec![prefix.into()],
        }],
    }
}

fn set(
    h: &mut Harness,
    rules: AccessRules,
    expected_version: Option<u64>,
) -> Result<Reply, CommandError> {
    h.apply(CommandKind::SetAccessRules {
        by: Identity("ops".into()),
        rules,
        expected_version,
    })
    .reply
}

#[test]
fn rules_are_set_with_the_revision_as_their_version() {
    let mut h = Harness::small();
    assert!(h.sm.access_rules().is_open());
    assert_eq!(h.sm.access_version(), 0);
    assert_eq!(set(&mut h, rules("a/"), None), Ok(Reply::Done));
    assert_eq!(h.sm.access_rules(), &rules("a/"));
    assert_eq!(h.sm.access_version(), h.sm.revision());
    assert_eq!(h.sm.protocol(), CURRENT_PROTOCOL, "a protocol-3 command");
}

#[test]
fn a_conditional_change_applies_only_at_the_version_it_names() {
    let mut h = Harness::small();
    set(&mut h, rules("a/"), None).unwrap();
    let version = h.sm.access_version();
    // Another administrator's change in between.
    set(&mut h, rules("b/"), Some(version)).unwrap();
    let refused = set(&mut h, rules("c/"), Some(version));
    assert_eq!(
        refused,
        Err(CommandError::AccessRulesChanged {
            expected: version,
            current: h.sm.access_version()
        })
    );
    assert_eq!(h.sm.access_rules(), &rules("b/"), "nothing changed");
    // A retry of the change that took effect finds its rules in force.
    assert_eq!(set(&mut h, rules("b/"), Some(version)), Ok(Reply::Done));
}

#[test]
fn rules_out_of_bounds_change_nothing() {
    let mut h = Harness::small();
    set(&mut h, rules("a/"), None).unwrap();
    let version = h.sm.access_version();
    let mut bad = rules("a/");
    bad.rules[0].identities = vec!["a*b".into()];
    assert!(matches!(
        set(&mut h, bad, None),
        Err(CommandError::InvalidAccessRules { .. })
    ));
    assert_eq!(h.sm.access_rules(), &rules("a/"));
    assert_eq!(h.sm.access_version(), version);
}

#[test]
fn the_rules_survive_a_snapshot_and_development_layouts_are_refused() {
    let mut h = Harness::small();
    set(&mut h, rules("a/"), None).unwrap();
    let restored = StateMachine::restore(&h.snapshot()).unwrap();
    assert_eq!(restored, h.sm);
    assert_eq!(restored.access_rules(), &rules("a/"));

    // Versions 2 to 5, which only development builds between the
    // releases wrote, are refused by name, not misread.
    for version in [2u32, 3, 4, 5] {
        let mut bytes = postcard::to_allocvec(&version).unwrap();
        bytes.extend_from_slice(&h.snapshot()[1..]);
        assert!(matches!(
            StateMachine::restore(&bytes),
            Err(DecodeError::UnsupportedVersion { found, .. }) if found == version
        ));
    }
}

fn quotas(sessions: Option<u32>, locks: Option<u32>, elections: Option<u32>) -> AccessRules {
    value_quota(sessions, locks, elections, None)
}

fn value_quota(
    sessions: Option<u32>,
    locks: Option<u32>,
    elections: Option<u32>,
    value_bytes: Option<u64>,
) -> AccessRules {
    AccessRules {
        rules: Vec::new(),
        quotas: vec![QuotaRule {
            identities: vec!["app".into()],
            sessions,
            locks,
            elections,
            value_bytes,
        }],
    }
}

fn open_as(h: &mut Harness, owner: &str) -> Result<SessionId, CommandError> {
    let reply = h
        .apply(CommandKind::OpenSessionAs {
            ttl_ms: 10_000,
            owner: Identity(owner.into()),
            open_key: 0,
        })
        .reply?;
    match reply {
        Reply::SessionOpened { session } => Ok(session),
        other => panic!("{other:?}"),
    }
}

/// Request `id` of `session`, acting as `caller`.
fn op_as(
    h: &mut Harness,
    caller: &str,
    session: SessionId,
    id: u64,
    op: ClientOp,
) -> Result<Reply, CommandError> {
    h.apply(CommandKind::ClientAs {
        caller: Identity(caller.into()),
        session,
        request_id: RequestId(id),
        ack_below: RequestId(0),
        waiting: Vec::new(),
        op,
    })
    .reply
}

fn quota_hit(result: &Result<impl std::fmt::Debug, CommandError>, kind: QuotaKind) -> bool {
    matches!(result, Err(CommandError::QuotaExceeded { what, .. }) if *what == kind)
}

#[test]
fn an_identity_opens_sessions_up_to_its_quota_and_others_are_unaffected() {
    let mut h = Harness::small();
    set(&mut h, quotas(Some(2), None, None), None).unwrap();
    let first = open_as(&mut h, "app").unwrap();
    open_as(&mut h, "app").unwrap();
    let third = open_as(&mut h, "app");
    assert!(quota_hit(&third, QuotaKind::Sessions), "{third:?}");
    open_as(&mut h, "other").unwrap();
    assert_eq!(h.sm.usage(&Identity("app".into())).sessions, 2);
    // Closing one gives its place back.
    op_as(&mut h, "app", first, 1, ClientOp::CloseSession).unwrap();
    open_as(&mut h, "app").unwrap();
}

#[test]
fn locks_held_and_waited_for_count_across_all_of_an_identitys_sessions() {
    let mut h = Harness::small();
    set(&mut h, quotas(None, Some(3), None), None).unwrap();
    let (a, b) = (
        open_as(&mut h, "app").unwrap(),
        open_as(&mut h, "app").unwrap(),
    );
    let holder = open_as(&mut h, "other").unwrap();
    let acquire = |name: &str, wait| ClientOp::Acquire {
        name: name.into(),
        wait,
        value: Vec::new(),
    };
    op_as(&mut h, "other", holder, 1, acquire("busy", false)).unwrap();
    op_as(&mut h, "app", a, 1, acquire("l1", false)).unwrap();
    op_as(&mut h, "app", b, 1, acquire("l2", false)).unwrap();
    // A wait counts too.
    assert!(matches!(
        op_as(&mut h, "app", b, 2, acquire("busy", true)),
        Ok(Reply::Queued { .. })
    ));
    let fourth = op_as(&mut h, "app", a, 2, acquire("l3", false));
    assert!(quota_hit(&fourth, QuotaKind::Locks), "{fourth:?}");
    assert!(!h.sm.locks.contains_key("l3"), "nothing changed");
    // The holder's release grants the wait: still three.
    let token = match op_as(&mut h, "other", holder, 2, ClientOp::CloseSession) {
        Ok(_) => h.sm.holder("busy").map(|holder| holder.token),
        Err(e) => panic!("{e}"),
    };
    assert!(token.is_some());
    assert_eq!(h.sm.usage(&Identity("app".into())).locks, 3);
    // Expiry gives everything back.
    let epoch = h.sm.leader_epoch();
    h.apply(CommandKind::ExpireSession { session: b, epoch });
    assert_eq!(h.sm.usage(&Identity("app".into())).locks, 1);
    op_as(&mut h, "app", a, 3, acquire("l3", false)).unwrap();
}

#[test]
fn elections_count_against_the_identitys_quota_and_usage_survives_a_snapshot() {
    let mut h = Harness::small();
    set(&mut h, quotas(None, None, Some(1)), None).unwrap();
    let a = open_as(&mut h, "app").unwrap();
    let campaign = |name: &str| ClientOp::Campaign {
        name: name.into(),
        value: b"v".to_vec(),
    };
    op_as(&mut h, "app", a, 1, campaign("e1")).unwrap();
    let second = op_as(&mut h, "app", a, 2, campaign("e2"));
    assert!(quota_hit(&second, QuotaKind::Elections), "{second:?}");
    let restored = StateMachine::restore(&h.snapshot()).unwrap();
    assert_eq!(
        restored.usage(&Identity("app".into())),
        h.sm.usage(&Identity("app".into()))
    );
    assert_eq!(restored, h.sm);
    op_as(&mut h, "app", a, 3, ClientOp::Resign { name: "e1".into() }).unwrap();
    op_as(&mut h, "app", a, 4, campaign("e2")).unwrap();
}

#[test]
fn by_default_one_identity_may_take_a_quarter_of_the_sessions() {
    let mut h = Harness::small();
    let max = h.sm.config().limits.max_sessions;
    let quota = (max / 4).max(1);
    for _ in 0..quota {
        open_as(&mut h, "greedy").unwrap();
    }
    assert!(quota_hit(&open_as(&mut h, "greedy"), QuotaKind::Sessions));
    open_as(&mut h, "modest").unwrap();
}

#[test]
fn the_values_an_identity_leads_or_campaigns_with_count_against_its_byte_quota() {
    let mut h = Harness::small();
    set(&mut h, value_quota(None, None, Some(8), Some(10)), None).unwrap();
    let (a, b) = (
        open_as(&mut h, "app").unwrap(),
        open_as(&mut h, "app").unwrap(),
    );
    let other = open_as(&mut h, "other").unwrap();
    let campaign = |name: &str, value: &[u8]| ClientOp::Campaign {
        name: name.into(),
        value: value.to_vec(),
    };
    let app = Identity("app".into());
    // Six bytes leading e1, then a candidate behind another's leader.
    op_as(&mut h, "app", a, 1, campaign("e1", b"123456")).unwrap();
    op_as(&mut h, "other", other, 1, campaign("e2", b"x")).unwrap();
    op_as(&mut h, "app", b, 1, campaign("e2", b"1234")).unwrap();
    assert_eq!(h.sm.usage(&app).value_bytes, 10);
    let over = op_as(&mut h, "app", b, 2, campaign("e3", b"1"));
    assert!(quota_hit(&over, QuotaKind::ValueBytes), "{over:?}");
    // A proclaim counts the bytes it replaces.
    let proclaim = |value: &[u8]| ClientOp::Proclaim {
        name: "e1".into(),
        value: value.to_vec(),
    };
    let grown = op_as(&mut h, "app", a, 2, proclaim(b"1234567"));
    assert!(quota_hit(&grown, QuotaKind::ValueBytes), "{grown:?}");
    op_as(&mut h, "app", a, 3, proclaim(b"12")).unwrap();
    assert_eq!(h.sm.usage(&app).value_bytes, 6);
    // The candidate becomes leader when the other resigns: its bytes stay
    // its own; expiry gives everything back.
    op_as(
        &mut h,
        "other",
        other,
        2,
        ClientOp::Resign { name: "e2".into() },
    )
    .unwrap();
    assert_eq!(h.sm.usage(&app).value_bytes, 6);
    let epoch = h.sm.leader_epoch();
    h.apply(CommandKind::ExpireSession { session: b, epoch });
    assert_eq!(h.sm.usage(&app).value_bytes, 2);
    let restored = StateMachine::restore(&h.snapshot()).unwrap();
    assert_eq!(restored, h.sm);
}
