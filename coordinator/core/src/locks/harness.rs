//! Test harness: a machine plus slot, clock and request-id bookkeeping.
//! For tests only (this crate's, and other crates' with the `testing`
//! feature); it panics where a test should fail.

use std::collections::BTreeMap;

use crate::locks::{
    ClientOp, Command, CommandError, CommandKind, Config, Event, FencingToken, Output, Reply,
    RequestId, SessionId, StateMachine,
};

/// A machine and what a test needs to drive it.
pub struct Harness {
    /// The machine.
    pub sm: StateMachine,
    /// The last slot applied.
    pub slot: u64,
    /// The time stamped on the next command.
    pub at_ms: u64,
    next_request: BTreeMap<SessionId, u64>,
}

impl Harness {
    /// A fresh machine with `config`.
    pub fn new(config: Config) -> Self {
        Harness {
            sm: StateMachine::new(config),
            slot: 0,
            at_ms: 0,
            next_request: BTreeMap::new(),
        }
    }

    /// A fresh machine with small limits, to reach them in few steps.
    pub fn small() -> Self {
        let mut config = Config::default();
        config.limits.min_ttl_ms = 10;
        config.limits.max_sessions = 8;
        config.limits.max_waiters_per_lock = 4;
        config.limits.max_locks_per_session = 4;
        config.limits.max_campaigns_per_session = 4;
        config.limits.max_candidates_per_election = 4;
        config.limits.max_elections = 8;
        config.limits.max_unacked_replies_per_session = 16;
        config.election_history_len = 8;
        Harness::new(config)
    }

    /// Applies `kind` at the next slot.
    pub fn apply(&mut self, kind: CommandKind) -> Output {
        self.slot += 1;
        self.sm.apply(
            self.slot,
            Command {
                at_ms: self.at_ms,
                kind,
            },
        )
    }

    /// Opens a session (1 s TTL); panics if refused.
    pub fn open(&mut self) -> SessionId {
        match self.apply(CommandKind::OpenSession { ttl_ms: 1_000 }).reply {
            Ok(Reply::SessionOpened { session }) => session,
            other => panic!("open failed: {other:?}"),
        }
    }

    /// Issues `op` with a fresh request id, acknowledging everything before.
    pub fn op(&mut self, session: SessionId, op: ClientOp) -> Output {
        let rid = self.next_request.entry(session).or_insert(0);
        *rid += 1;
        let request_id = RequestId(*rid);
        self.apply(CommandKind::Client {
            session,
            request_id,
            ack_below: request_id,
            waiting: Vec::new(),
            op,
        })
    }

    /// A fresh request id for `session`, without acknowledging anything.
    pub fn fresh(&mut self, session: SessionId, op: ClientOp) -> CommandKind {
        let rid = self.next_request.entry(session).or_insert(0);
        *rid += 1;
        CommandKind::Client {
            session,
            request_id: RequestId(*rid),
            ack_below: RequestId(0),
            waiting: Vec::new(),
            op,
        }
    }

    /// `s` acquires `name`, waiting or not.
    pub fn acquire(&mut self, s: SessionId, name: &str, wait: bool) -> Output {
        self.op(
            s,
            ClientOp::Acquire {
                name: name.into(),
                wait,
                value: Vec::new(),
            },
        )
    }

    /// `s` try-acquires `name`; panics unless granted.
    pub fn token(&mut self, s: SessionId, name: &str) -> FencingToken {
        match self.acquire(s, name, false).reply {
            Ok(Reply::Granted { token }) => token,
            other => panic!("expected grant, got {other:?}"),
        }
    }

    /// `s` releases `name` held with `token`.
    pub fn release(&mut self, s: SessionId, name: &str, token: FencingToken) -> Output {
        self.op(
            s,
            ClientOp::Release {
                name: name.into(),
                token,
            },
        )
    }

    /// `s` campaigns in `name` with `value`.
    pub fn campaign(&mut self, s: SessionId, name: &str, value: &[u8]) -> Output {
        self.op(
            s,
            ClientOp::Campaign {
                name: name.into(),
                value: value.to_vec(),
            },
        )
    }

    /// Expires `session` under the current epoch.
    pub fn expire(&mut self, session: SessionId) -> Output {
        let epoch = self.sm.leader_epoch();
        self.apply(CommandKind::ExpireSession { session, epoch })
    }

    /// The machine's snapshot; panics if it cannot be written.
    pub fn snapshot(&self) -> Vec<u8> {
        match self.sm.snapshot() {
            Ok(b) => b,
            Err(e) => panic!("snapshot failed: {e}"),
        }
    }
}

/// The grants in a list of events, as (lock, session, token).
pub fn grants(events: &[Event]) -> Vec<(String, SessionId, FencingToken)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::LockGranted {
                name,
                session,
                token,
                ..
            } => Some((name.clone(), *session, *token)),
            _ => None,
        })
        .collect()
}

/// The error of `out`, if refused.
pub fn err(out: &Output) -> Option<&CommandError> {
    out.reply.as_ref().err()
}
