//! Inspection answers in the wire's terms: what the core's
//! [`paxlock_core::inspect`] builds from this node's state, written as the
//! client protocol's messages. Called for reads the core admitted (under
//! the leader lease).

use paxlock::proto;
use paxlock_core::inspect::{self, Grant, Member, Viewer};

use super::state::Shared;
use crate::locks::{FencingToken, Identity, SessionId, StateMachine};
use crate::node::clock::NodeClock;

/// The answer to `DescribeLock`.
pub fn describe_lock(shared: &Shared, name: &str) -> proto::LockInfo {
    lock_info(&shared.machine(), name)
}

/// Lock `name` as `machine` holds it, in the wire's terms.
pub fn lock_info(machine: &StateMachine, name: &str) -> proto::LockInfo {
    let view = inspect::describe_lock(machine, name);
    proto::LockInfo {
        name: view.name,
        grant: view.grant.map(grant),
        waiters: view
            .waiters
            .into_iter()
            .map(|w| proto::LockWaiter {
                session: Some(session_ref(w.member)),
                since_ms: w.since_ms.unwrap_or(0),
            })
            .collect(),
        delayed_until_ms: view.delayed_until_ms.unwrap_or(0),
        now_ms: view.now_ms,
        value: view.value,
    }
}

/// The answer to `CheckToken`.
pub fn check_token(shared: &Shared, check: &proto::CheckToken) -> proto::TokenCheck {
    let answer = inspect::check_token(&shared.machine(), &check.name, FencingToken(check.token));
    proto::TokenCheck {
        current: answer.current,
        current_token: answer.current_token.map_or(0, |t| t.0),
    }
}

/// The answer to `ListLocks`.
pub fn list_locks(shared: &Shared, caller: &Identity, list: &proto::ListLocks) -> proto::LockList {
    let viewer = Viewer {
        caller,
        admins: &shared.admins,
    };
    let (page, now_ms) = {
        let machine = shared.machine();
        let page = inspect::list_locks(
            &machine,
            viewer,
            &list.prefix,
            &list.after,
            list.limit as usize,
        );
        (page, machine.now_ms())
    };
    proto::LockList {
        locks: page
            .items
            .into_iter()
            .map(|l| proto::LockSummary {
                name: l.name,
                grant: l.grant.map(grant),
                waiters: l.waiters,
                delayed_until_ms: l.delayed_until_ms.unwrap_or(0),
            })
            .collect(),
        next_after: page.next_after.unwrap_or_default(),
        now_ms,
    }
}

/// The answer to `ListSessions`, with each session's time left on this
/// node's clock (it leads: reads are admitted only under the lease).
pub fn list_sessions(
    shared: &Shared,
    clock: &NodeClock,
    caller: &Identity,
    list: &proto::ListSessions,
) -> proto::SessionList {
    let viewer = Viewer {
        caller,
        admins: &shared.admins,
    };
    let page = {
        let machine = shared.machine();
        let role = shared.role();
        inspect::list_sessions(
            &machine,
            &role,
            clock.now(),
            viewer,
            SessionId(list.after),
            list.limit as usize,
        )
    };
    proto::SessionList {
        sessions: page
            .items
            .into_iter()
            .map(|s| proto::SessionInfo {
                session: Some(session_ref(s.member)),
                ttl_ms: s.ttl_ms,
                expires_in_ms: s.expires_in_ms.unwrap_or(0),
                held: s.held,
                waiting: s.waiting,
                campaigns: s.campaigns,
            })
            .collect(),
        next_after: page.next_after.map_or(0, |s| s.0),
    }
}

/// A session and its identity, as inspection and watches show them.
pub fn session_ref(member: Member) -> proto::SessionRef {
    proto::SessionRef {
        session_id: member.session.0,
        identity: member.owner.map(|o| o.0).unwrap_or_default(),
    }
}

fn grant(grant: Grant) -> proto::LockGrant {
    proto::LockGrant {
        holder: Some(session_ref(grant.holder)),
        token: grant.token.0,
        since_ms: grant.since_ms.unwrap_or(0),
    }
}
