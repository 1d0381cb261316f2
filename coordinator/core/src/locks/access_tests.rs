//! The access rules as replicated state: `SetAccessRules` and the
//! snapshot layouts that carry (or predate) them.

use crate::access::{AccessRule, AccessRules, Permission};
use crate::locks::command::{CommandKind, Identity, CURRENT_PROTOCOL};
use crate::locks::error::CommandError;
use crate::locks::harness::Harness;
use crate::locks::machine::{Reply, StateMachine};

fn rules(prefix: &str) -> AccessRules {
    AccessRules {
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
fn the_rules_survive_a_snapshot_and_the_layout_before_them_is_still_read() {
    let mut h = Harness::small();
    set(&mut h, rules("a/"), None).unwrap();
    let restored = StateMachine::restore(&h.snapshot()).unwrap();
    assert_eq!(restored, h.sm);
    assert_eq!(restored.access_rules(), &rules("a/"));

    // Version 2: the same machine without rules, field for field.
    let mut before = Harness::small();
    before.apply(CommandKind::RaiseProtocol {
        version: CURRENT_PROTOCOL,
    });
    let s = &before.sm;
    let v2 = postcard::to_allocvec(&(
        2u32,
        (
            &s.config,
            s.revision,
            s.now_ms,
            s.last_applied_slot,
            s.leader_epoch,
            &s.sessions,
            &s.locks,
            &s.elections,
            &s.delays,
            s.protocol,
        ),
    ))
    .unwrap();
    let read = StateMachine::restore(&v2).unwrap();
    assert_eq!(read, before.sm);
    assert!(read.access_rules().is_open());
}
