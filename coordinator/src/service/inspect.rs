//! Inspection answers in the wire's terms: what the core's
//! [`paxlock_core::inspect`] builds from this node's state, written as the
//! client protocol's messages. Called for reads the core admitted (under
//! the leader lease).

use paxlock::proto;
use paxlock_core::inspect::{self, Grant, Member, Viewer};
use paxlock_core::locks::shared::{Mode, SharedKind};

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
    let (kind, permits) = kind(view.kind);
    proto::LockInfo {
        name: view.name,
        grant: view.grant.map(grant),
        waiters: view
            .waiters
            .into_iter()
            .map(|w| proto::LockWaiter {
                session: Some(session_ref(w.member)),
                since_ms: w.since_ms.unwrap_or(0),
                mode: wire_mode(w.mode).into(),
            })
            .collect(),
        delayed_until_ms: view.delayed_until_ms.unwrap_or(0),
        now_ms: view.now_ms,
        value: view.value,
        kind: kind.into(),
        permits,
        holders: view
            .holders
            .into_iter()
            .map(|h| proto::LockGrant {
                mode: wire_mode(Some(h.mode)).into(),
                slot: h.slot,
                fencing_token: h.fencing.0,
                ..grant(h.grant)
            })
            .collect(),
    }
}

/// A name's kind, and a semaphore's permits (0 otherwise), on the wire.
fn kind(kind: Option<SharedKind>) -> (proto::LockKind, u32) {
    match kind {
        None => (proto::LockKind::KindLock, 0),
        Some(SharedKind::Semaphore { permits }) => (proto::LockKind::KindSemaphore, permits),
        Some(SharedKind::ReadWrite) => (proto::LockKind::KindReadWrite, 0),
    }
}

/// A grant's or waiter's mode on the wire (`None`: a lock's).
fn wire_mode(mode: Option<Mode>) -> proto::acquire::Mode {
    match mode {
        None => proto::acquire::Mode::Lock,
        Some(Mode::Permit) => proto::acquire::Mode::Permit,
        Some(Mode::Read) => proto::acquire::Mode::Read,
        Some(Mode::Write) => proto::acquire::Mode::Write,
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
            .map(|l| {
                let (kind, permits) = kind(l.kind);
                proto::LockSummary {
                    name: l.name,
                    grant: l.grant.map(grant),
                    waiters: l.waiters,
                    delayed_until_ms: l.delayed_until_ms.unwrap_or(0),
                    kind: kind.into(),
                    permits,
                    holders: l.holders,
                }
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
        mode: proto::acquire::Mode::Lock.into(),
        slot: 0,
        fencing_token: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::{ClientOp, Command, CommandKind, RequestId};
    use paxlock_core::locks::shared::{Mode, MAX_HOLDERS};
    use prost::Message;

    /// The largest description a read/write lock can have: as many readers
    /// as it admits and as many waiters as a lock queues, every session of
    /// an identity of the longest length. It fits a client frame, however
    /// many sessions the cluster allows.
    #[test]
    fn the_largest_read_write_lock_description_fits_a_frame() {
        let mut config = paxlock_core::locks::Config::default();
        let waiters = config.limits.max_waiters_per_lock as usize;
        config.limits.max_sessions = (MAX_HOLDERS + waiters + 1) as u32;
        config.limits.max_state_bytes = u64::MAX;
        let mut machine = StateMachine::new(config);
        let mut slot = 0;
        let mut apply = |machine: &mut StateMachine, kind| {
            slot += 1;
            machine.apply(slot, Command { at_ms: 1, kind })
        };
        let longest = paxlock_core::locks::command::MAX_IDENTITY_BYTES;
        for i in 0..(MAX_HOLDERS + waiters) {
            // An identity each: one's sessions are bounded by its quota.
            let owner = Identity(format!("{i:x>longest$}"));
            let open = CommandKind::OpenSessionAs {
                ttl_ms: 10_000,
                owner: owner.clone(),
                open_key: 0,
            };
            let Ok(paxlock_core::locks::Reply::SessionOpened { session }) =
                apply(&mut machine, open).reply
            else {
                panic!("session {i} not opened");
            };
            // One writer first, so that every reader after it queues
            // behind the readers that fill the lock.
            let mode = if i == MAX_HOLDERS {
                Mode::Write
            } else {
                Mode::Read
            };
            let acquire = CommandKind::ClientAs {
                caller: owner.clone(),
                session,
                request_id: RequestId(1),
                ack_below: RequestId(0),
                waiting: Vec::new(),
                op: ClientOp::AcquireShared {
                    name: "n".repeat(512),
                    wait: true,
                    mode,
                    permits: 0,
                },
            };
            let out = apply(&mut machine, acquire);
            assert!(out.reply.is_ok(), "acquire {i}: {:?}", out.reply);
        }
        let info = lock_info(&machine, &"n".repeat(512));
        assert_eq!(info.holders.len(), MAX_HOLDERS);
        assert_eq!(info.waiters.len(), waiters);
        let bytes = info.encoded_len();
        assert!(
            bytes < paxlock::wire::frame::MAX_FRAME_BYTES / 2,
            "{bytes} bytes"
        );
    }
}
