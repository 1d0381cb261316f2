use super::*;
use crate::locks::{Command, Config, Output, Reply};
use crate::paxos::{Ballot, NodeId};

const SEC: u64 = 1_000_000_000;

/// One node's machine and role, leading from the start with its takeover
/// applied, as its apply loop leaves them.
struct Node {
    machine: StateMachine,
    role: LeaderRole,
    slot: u64,
}

impl Node {
    fn leading() -> Node {
        let mut node = Node {
            machine: StateMachine::new(Config::default()),
            role: LeaderRole::default(),
            slot: 0,
        };
        let ballot = Ballot {
            round: 1,
            node: NodeId(1),
        };
        let takeover = node.role.became_leader(ballot, Nanos(SEC));
        node.apply(takeover.kind);
        node
    }

    fn apply(&mut self, kind: CommandKind) -> Output {
        self.slot += 1;
        let output = self.machine.apply(self.slot, Command { at_ms: 0, kind });
        self.role.applied(&self.machine, &output, Nanos(SEC));
        output
    }

    fn record_protocol(&mut self) {
        self.apply(CommandKind::RaiseProtocol {
            version: CURRENT_PROTOCOL,
        });
    }

    /// A session opened by `owner` (`None`: before protocol 3, ownerless).
    fn open(&mut self, owner: Option<&str>) -> SessionId {
        let kind = match owner {
            Some(owner) => CommandKind::OpenSessionAs {
                ttl_ms: 10_000,
                owner: Identity(owner.into()),
                open_key: 0,
            },
            None => CommandKind::OpenSession { ttl_ms: 10_000 },
        };
        match self.apply(kind).reply {
            Ok(Reply::SessionOpened { session }) => session,
            other => panic!("open failed: {other:?}"),
        }
    }

    fn admit_with(
        &mut self,
        view: NodeView,
        caller: &str,
        session: SessionId,
        op: RequestOp,
    ) -> Admission {
        let request = ClientRequest {
            session,
            request_id: RequestId(1),
            ack_below: RequestId(1),
            waiting: Vec::new(),
            op,
        };
        admit(
            &mut self.role,
            &self.machine,
            view,
            &Identity(caller.into()),
            &Admins::new([Identity("ops".into())]),
            request,
        )
    }

    fn admit(&mut self, caller: &str, session: SessionId, op: RequestOp) -> Admission {
        self.admit_with(leader_view(), caller, session, op)
    }
}

/// A leader holding its lease, every peer connected and current.
fn leader_view() -> NodeView {
    NodeView {
        now: Nanos(2 * SEC),
        leads: true,
        lease_until: Some(Nanos(3 * SEC)),
        peers: 2,
        peers_speaking_current: 2,
    }
}

fn acquire(name: &str, wait: bool) -> RequestOp {
    RequestOp::Client(ClientOp::Acquire {
        name: name.into(),
        wait,
        value: Vec::new(),
    })
}

fn follow(admission: Admission) -> Follow {
    match admission {
        Admission::Propose { follow, .. } => follow,
        other => panic!("not proposed: {other:?}"),
    }
}

#[test]
fn a_node_that_does_not_lead_refuses_commands_and_keepalives() {
    let mut node = Node::leading();
    node.record_protocol();
    let s = node.open(Some("a"));
    let follower = NodeView {
        leads: false,
        lease_until: None,
        ..leader_view()
    };
    for op in [acquire("l", false), RequestOp::KeepAlive] {
        assert_eq!(
            node.admit_with(follower, "a", s, op),
            Admission::Refused(Refusal::NotLeader)
        );
    }
}

#[test]
fn keepalives_and_reads_need_the_lease_and_the_takeover_applied() {
    let mut node = Node::leading();
    node.record_protocol();
    let s = node.open(Some("a"));
    let no_lease = NodeView {
        lease_until: Some(Nanos(SEC)),
        ..leader_view()
    };
    assert_eq!(
        node.admit_with(no_lease, "a", s, RequestOp::KeepAlive),
        Admission::Refused(Refusal::NoLease)
    );
    let query = RequestOp::QueryLeader {
        election: "e".into(),
    };
    assert_eq!(
        node.admit_with(no_lease, "a", s, query.clone()),
        Admission::Refused(Refusal::NoLease)
    );
    assert_eq!(
        node.admit("a", s, RequestOp::KeepAlive),
        Admission::KeptAlive {
            ttl_ms: 10_000,
            taken: Vec::new()
        }
    );
    assert_eq!(node.admit("a", s, query.clone()), Admission::Read);
    // A new leadership whose takeover is not applied yet.
    let ballot = Ballot {
        round: 2,
        node: NodeId(1),
    };
    node.role.became_leader(ballot, Nanos(2 * SEC));
    assert_eq!(
        node.admit("a", s, query),
        Admission::Refused(Refusal::TakingOver)
    );
    assert_eq!(
        node.admit("a", s, RequestOp::KeepAlive),
        Admission::Refused(Refusal::TakingOver)
    );
    // Commands are proposed all the same: they follow the takeover in the log.
    assert!(matches!(
        node.admit("a", s, acquire("l", false)),
        Admission::Propose { .. }
    ));
}

#[test]
fn another_identitys_session_is_refused_but_opens_and_reads_are_not() {
    let mut node = Node::leading();
    node.record_protocol();
    let s = node.open(Some("a"));
    for op in [acquire("l", true), RequestOp::KeepAlive] {
        assert_eq!(
            node.admit("b", s, op),
            Admission::Refused(Refusal::Command(CommandError::PermissionDenied {
                session: s
            }))
        );
    }
    let open = RequestOp::OpenSession {
        ttl_ms: 10_000,
        open_key: 7,
    };
    assert!(matches!(
        node.admit("b", s, open),
        Admission::Propose { kind: CommandKind::OpenSessionAs { ref owner, .. }, .. } if owner.0 == "b"
    ));
    let query = RequestOp::QueryLeader {
        election: "e".into(),
    };
    assert_eq!(node.admit("b", s, query), Admission::Read);
}

#[test]
fn the_protocol_is_recorded_first_once_every_peer_speaks_it_else_requests_go_in_the_old_form() {
    let mut node = Node::leading();
    let s = node.open(None);
    assert_eq!(
        node.admit("a", s, acquire("l", false)),
        Admission::First(CommandKind::RaiseProtocol {
            version: CURRENT_PROTOCOL
        })
    );
    let old_peer = NodeView {
        peers_speaking_current: 1,
        ..leader_view()
    };
    match node.admit_with(old_peer, "a", s, acquire("l", false)) {
        Admission::Propose {
            kind: CommandKind::Client { session, .. },
            ..
        } => assert_eq!(session, s),
        other => panic!("expected the previous release's form: {other:?}"),
    }
    node.record_protocol();
    match node.admit("a", s, acquire("l", false)) {
        Admission::Propose {
            kind: CommandKind::ClientAs { caller, .. },
            ..
        } => assert_eq!(caller.0, "a"),
        other => panic!("expected the caller's form: {other:?}"),
    }
}

#[test]
fn a_keepalive_claims_an_ownerless_session_first() {
    let mut node = Node::leading();
    let s = node.open(None);
    node.record_protocol();
    let claim = CommandKind::ClaimSession {
        session: s,
        owner: Identity("a".into()),
    };
    assert_eq!(
        node.admit("a", s, RequestOp::KeepAlive),
        Admission::First(claim.clone())
    );
    node.apply(claim);
    assert_eq!(
        node.admit("a", s, RequestOp::KeepAlive),
        Admission::KeptAlive {
            ttl_ms: 10_000,
            taken: Vec::new()
        }
    );
    assert!(matches!(
        node.admit("b", s, RequestOp::KeepAlive),
        Admission::Refused(Refusal::Command(CommandError::PermissionDenied { .. }))
    ));
}

#[test]
fn only_blocking_acquires_and_campaigns_wait_and_a_cancel_drops_its_waiters() {
    let mut node = Node::leading();
    node.record_protocol();
    let s = node.open(Some("a"));
    let key = (s.0, "l".to_string());
    assert_eq!(
        follow(node.admit("a", s, acquire("l", true))),
        Follow::Await {
            wait: WaitFor::Grant,
            key: key.clone()
        }
    );
    assert_eq!(
        follow(node.admit("a", s, acquire("l", false))),
        Follow::Reply
    );
    let campaign = RequestOp::Client(ClientOp::Campaign {
        name: "l".into(),
        value: b"v".to_vec(),
    });
    assert_eq!(
        follow(node.admit("a", s, campaign)),
        Follow::Await {
            wait: WaitFor::Win,
            key: key.clone()
        }
    );
    let cancel = RequestOp::Client(ClientOp::CancelAcquire { name: "l".into() });
    assert_eq!(
        follow(node.admit("a", s, cancel)),
        Follow::DropLockWaiters(key.clone())
    );
    let renew = RequestOp::Renew {
        name: "l".into(),
        token: FencingToken(3),
    };
    match node.admit("a", s, renew) {
        Admission::Propose {
            kind:
                CommandKind::ClientAs {
                    op: ClientOp::Check { token, .. },
                    ..
                },
            follow: Follow::KeepAlive,
        } => assert_eq!(token, FencingToken(3)),
        other => panic!("a renew is a check, then a keepalive: {other:?}"),
    }
    let (_, withdrawn) = withdrawal(s, "l", AbandonedWait::Acquire, RequestId(1));
    assert_eq!(withdrawn, Follow::DropLockWaiters(key));
    let (_, resigned) = withdrawal(s, "l", AbandonedWait::Campaign, RequestId(1));
    assert_eq!(resigned, Follow::Reply);
}

#[test]
fn oversized_names_values_and_waiting_lists_are_refused_before_the_log() {
    let mut node = Node::leading();
    node.record_protocol();
    let s = node.open(Some("a"));
    let limits = Limits::default();
    let long = "x".repeat(limits.max_name_bytes as usize + 1);
    assert!(matches!(
        node.admit("a", s, acquire(&long, false)),
        Admission::Refused(Refusal::Command(CommandError::NameTooLong { .. }))
    ));
    let big = RequestOp::Client(ClientOp::Proclaim {
        name: "e".into(),
        value: vec![0; limits.max_value_bytes as usize + 1],
    });
    assert!(matches!(
        node.admit("a", s, big),
        Admission::Refused(Refusal::Command(CommandError::ValueTooLarge { .. }))
    ));
    let max = limits.max_unacked_replies_per_session as usize;
    let request = ClientRequest {
        session: s,
        request_id: RequestId(1_000),
        ack_below: RequestId(1_000),
        waiting: (0..=max as u64).map(RequestId).collect(),
        op: acquire("l", false),
    };
    let who = Identity("a".into());
    assert_eq!(
        admit(
            &mut node.role,
            &node.machine,
            leader_view(),
            &who,
            &Admins::default(),
            request
        ),
        Admission::Refused(Refusal::TooManyWaits {
            listed: max + 1,
            max
        })
    );
}

/// Regression (simulator seed 20049515): a new leader still catching up
/// has not applied the protocol record of an earlier leader; a request it
/// sent in the previous release's form was refused `PermissionDenied` for
/// the caller's own session, although an earlier copy had been applied.
#[test]
fn a_leader_not_yet_serving_sends_nothing_in_the_previous_form() {
    let mut node = Node::leading();
    let s = node.open(None);
    let ballot = Ballot {
        round: 2,
        node: NodeId(1),
    };
    node.role.became_leader(ballot, Nanos(2 * SEC));
    for op in [
        acquire("l", false),
        RequestOp::OpenSession {
            ttl_ms: 10_000,
            open_key: 1,
        },
    ] {
        assert_eq!(
            node.admit("a", s, op),
            Admission::Refused(Refusal::TakingOver)
        );
    }
    assert_eq!(
        node.admit("a", s, RequestOp::KeepAlive),
        Admission::Refused(Refusal::TakingOver),
        "no claim from a machine that may be behind"
    );
}

fn rules(identities: &[&str], permissions: &[Permission], prefixes: &[&str]) -> AccessRules {
    AccessRules {
        quotas: Vec::new(),
        rules: vec![access::AccessRule {
            identities: identities.iter().map(|s| s.to_string()).collect(),
            permissions: permissions.iter().copied().collect(),
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        }],
    }
}

#[test]
fn a_request_the_rules_do_not_allow_is_refused_naming_the_permission_and_the_name() {
    let mut node = Node::leading();
    node.record_protocol();
    let s = node.open(Some("app"));
    node.apply(CommandKind::SetAccessRules {
        by: Identity("ops".into()),
        rules: rules(&["app"], &[Permission::Lock], &["app/"]),
        expected_version: None,
    });
    assert!(matches!(
        node.admit("app", s, acquire("app/x", false)),
        Admission::Propose { .. }
    ));
    let denied = node.admit("app", s, acquire("other/x", false));
    let Admission::Refused(Refusal::Denied(denied)) = denied else {
        panic!("not denied: {denied:?}");
    };
    assert_eq!(denied.permission, Permission::Lock);
    assert_eq!(denied.name, "other/x");
    let campaign = RequestOp::Client(ClientOp::Campaign {
        name: "app/e".into(),
        value: Vec::new(),
    });
    assert!(matches!(
        node.admit("app", s, campaign),
        Admission::Refused(Refusal::Denied(Denied {
            permission: Permission::Campaign,
            ..
        }))
    ));
    let query = RequestOp::QueryLeader {
        election: "app/e".into(),
    };
    assert!(matches!(
        node.admit("app", s, query),
        Admission::Refused(Refusal::Denied(Denied {
            permission: Permission::Read,
            ..
        }))
    ));
    // Sessions stay the caller's own business.
    assert!(matches!(
        node.admit("app", s, RequestOp::KeepAlive),
        Admission::KeptAlive { .. }
    ));
}

#[test]
fn only_an_administrator_sets_or_reads_the_rules_and_only_on_the_current_protocol() {
    let mut node = Node::leading();
    let set = || RequestOp::SetAccessRules {
        rules: rules(&["*"], &[Permission::Read], &[""]),
        expected_version: None,
    };
    let none = SessionId(0);
    assert!(matches!(
        node.admit("app", none, set()),
        Admission::Refused(Refusal::Denied(Denied {
            permission: Permission::Admin,
            ..
        }))
    ));
    assert!(matches!(
        node.admit("app", none, RequestOp::GetAccessRules),
        Admission::Refused(Refusal::Denied(_))
    ));
    assert_eq!(
        node.admit("ops", none, RequestOp::GetAccessRules),
        Admission::Read
    );
    // Before the protocol is recorded, the leader records it first.
    assert!(matches!(
        node.admit("ops", none, set()),
        Admission::First(CommandKind::RaiseProtocol { .. })
    ));
    node.record_protocol();
    assert!(matches!(
        node.admit("ops", none, set()),
        Admission::Propose {
            kind: CommandKind::SetAccessRules { .. },
            follow: Follow::Reply
        }
    ));
    // Rules out of bounds never reach the log.
    let empty_rule = RequestOp::SetAccessRules {
        rules: rules(&[], &[Permission::Read], &[""]),
        expected_version: None,
    };
    assert!(matches!(
        node.admit("ops", none, empty_rule),
        Admission::Refused(Refusal::Command(CommandError::InvalidAccessRules { .. }))
    ));
}

/// From admitting a take (force-release or revocation) until it is
/// applied, the leader answers no keepalive of the taken session; once
/// applied, a force-released holder's keepalive names the taken grant.
/// Other sessions are answered throughout.
#[test]
fn keepalives_of_a_session_wait_while_a_take_of_it_is_in_flight() {
    let mut node = Node::leading();
    node.record_protocol();
    let (a, b) = (node.open(Some("a")), node.open(Some("b")));
    let grant = node.apply(CommandKind::ClientAs {
        caller: Identity("a".into()),
        session: a,
        request_id: RequestId(1),
        ack_below: RequestId(1),
        waiting: Vec::new(),
        op: ClientOp::Acquire {
            name: "l".into(),
            wait: false,
            value: Vec::new(),
        },
    });
    let Ok(Reply::Granted { token }) = grant.reply else {
        panic!("{grant:?}");
    };
    // Naming an earlier grant takes nothing.
    let earlier = RequestOp::ForceRelease {
        name: "l".into(),
        token: Some(FencingToken(token.0 - 1)),
    };
    assert!(matches!(
        node.admit("ops", SessionId(0), earlier),
        Admission::Refused(Refusal::Command(CommandError::StaleToken { current, .. }))
            if current == Some(token)
    ));
    let force = RequestOp::ForceRelease {
        name: "l".into(),
        token: Some(token),
    };
    let kind = match node.admit("ops", SessionId(0), force) {
        Admission::Propose { kind, .. } => kind,
        other => panic!("not proposed: {other:?}"),
    };
    assert_eq!(
        kind,
        CommandKind::ForceRelease {
            by: Identity("ops".into()),
            name: "l".into(),
            token
        }
    );
    assert_eq!(
        node.admit("a", a, RequestOp::KeepAlive),
        Admission::Refused(Refusal::Taking)
    );
    assert!(matches!(
        node.admit("b", b, RequestOp::KeepAlive),
        Admission::KeptAlive { .. }
    ));
    node.apply(kind);
    assert_eq!(
        node.admit("a", a, RequestOp::KeepAlive),
        Admission::KeptAlive {
            ttl_ms: 10_000,
            taken: vec![token]
        }
    );
    // A lock nobody holds is refused before anything is logged.
    let free = RequestOp::ForceRelease {
        name: "l".into(),
        token: None,
    };
    assert!(matches!(
        node.admit("ops", SessionId(0), free),
        Admission::Refused(Refusal::Command(CommandError::NotHeld { .. }))
    ));
    // A revocation holds back the session's keepalives until it ends it.
    let revoke = RequestOp::RevokeSession { session: b };
    let kind = match node.admit("ops", SessionId(0), revoke) {
        Admission::Propose { kind, .. } => kind,
        other => panic!("not proposed: {other:?}"),
    };
    assert_eq!(
        node.admit("b", b, RequestOp::KeepAlive),
        Admission::Refused(Refusal::Taking)
    );
    node.apply(kind);
    assert_eq!(
        node.admit("b", b, RequestOp::KeepAlive),
        Admission::Refused(Refusal::SessionUnknown(b))
    );
}
