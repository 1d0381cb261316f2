//! Property tests: invariants under random command sequences and the
//! snapshot round-trip. (The machine's agreement with the linearizability
//! checker's model is tested with the checker, in the simulator.)

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::lock_watch::{LockChange, LockHistory};
use crate::locks::harness::Harness;
use crate::locks::shared::{Mode, SharedKind};
use crate::locks::{
    ClientOp, Command, CommandKind, Config, Event, FencingToken, Output, Reply, RequestId,
    SessionId, StateMachine,
};

/// A randomly chosen step, resolved against the current state by `command_for`.
#[derive(Debug, Clone)]
enum Step {
    Open,
    Close(u8),
    Expire(u8),
    Takeover,
    Tick(u16),
    Acquire(u8, u8, bool),
    Release(u8, u8, bool),
    Check(u8, u8, bool),
    Cancel(u8, u8),
    Campaign(u8, u8, u8),
    Resign(u8, u8),
    Proclaim(u8, u8, u8),
    /// Re-send the session's last client command (a retry).
    Retry(u8),
    /// A semaphore's permit or a read/write lock's mode (see `shared_op`).
    Shared(u8, u8, u8, bool),
    /// Release a semaphore's or read/write lock's grant (or a stale token).
    ReleaseShared(u8, u8, bool),
}

fn arb_step() -> impl Strategy<Value = Step> {
    let s = 0u8..6;
    let l = 0u8..3;
    prop_oneof![
        2 => Just(Step::Open),
        1 => s.clone().prop_map(Step::Close),
        1 => s.clone().prop_map(Step::Expire),
        1 => Just(Step::Takeover),
        1 => (0u16..400).prop_map(Step::Tick),
        6 => (s.clone(), l.clone(), any::<bool>()).prop_map(|(a, b, c)| Step::Acquire(a, b, c)),
        3 => (s.clone(), l.clone(), any::<bool>()).prop_map(|(a, b, c)| Step::Release(a, b, c)),
        1 => (s.clone(), l.clone(), any::<bool>()).prop_map(|(a, b, c)| Step::Check(a, b, c)),
        1 => (s.clone(), l.clone()).prop_map(|(a, b)| Step::Cancel(a, b)),
        2 => (s.clone(), l.clone(), any::<u8>()).prop_map(|(a, b, c)| Step::Campaign(a, b, c)),
        1 => (s.clone(), l.clone()).prop_map(|(a, b)| Step::Resign(a, b)),
        1 => (s.clone(), l.clone(), any::<u8>()).prop_map(|(a, b, c)| Step::Proclaim(a, b, c)),
        1 => s.clone().prop_map(Step::Retry),
        4 => (s.clone(), 0u8..3, any::<u8>(), any::<bool>())
            .prop_map(|(a, b, c, d)| Step::Shared(a, b, c, d)),
        3 => (s, l, any::<bool>()).prop_map(|(a, b, c)| Step::ReleaseShared(a, b, c)),
    ]
}

/// Turns steps into concrete commands, tracking opened sessions, request
/// ids and the last command per session (for retries).
#[derive(Default)]
struct Driver {
    sessions: Vec<SessionId>,
    next_rid: BTreeMap<SessionId, u64>,
    last: BTreeMap<SessionId, CommandKind>,
    at_ms: u64,
}

fn lock_name(i: u8) -> String {
    format!("lock{i}")
}

/// Names of semaphores and read/write locks (each used as either, to
/// meet the one-kind-per-name rule; a plain lock's name meeting them is a
/// unit test's).
fn shared_name(i: u8) -> String {
    format!("sh{}", i % 2)
}

/// Whether the plain-lock properties skip `name` (a shared lock's).
fn is_shared(name: &str) -> bool {
    name.starts_with("sh")
}

/// What `Step::Shared` asks for by `k`: a permit of 2 (mostly), of 3 (a
/// mismatch once the name has 2), read (mostly) or write.
fn shared_op(name: String, k: u8, wait: bool) -> ClientOp {
    let (mode, permits) = match k % 7 {
        0 | 1 => (Mode::Permit, 2),
        2 => (Mode::Permit, 3),
        3..=5 => (Mode::Read, 0),
        _ => (Mode::Write, 0),
    };
    ClientOp::AcquireShared {
        name,
        wait,
        mode,
        permits,
    }
}

impl Driver {
    fn session(&self, i: u8) -> SessionId {
        // Possibly a dead session: the machine must reject it cleanly.
        self.sessions
            .get(usize::from(i) % self.sessions.len().max(1))
            .copied()
            .unwrap_or(SessionId(12345))
    }

    fn client(&mut self, s: SessionId, op: ClientOp) -> CommandKind {
        let rid = self.next_rid.entry(s).or_insert(0);
        *rid += 1;
        let kind = CommandKind::Client {
            session: s,
            request_id: RequestId(*rid),
            // Acknowledge all but the last few, so retries can still hit.
            ack_below: RequestId(rid.saturating_sub(3)),
            waiting: Vec::new(),
            op,
        };
        self.last.insert(s, kind.clone());
        kind
    }

    fn token(sm: &StateMachine, s: SessionId, lock: &str, current: bool) -> FencingToken {
        match sm.holder(lock) {
            Some(h) if current && h.session == s => h.token,
            _ => FencingToken(sm.revision() / 2),
        }
    }

    fn command_for(&mut self, sm: &StateMachine, step: &Step) -> Command {
        let kind = match step {
            Step::Open => CommandKind::OpenSession { ttl_ms: 1_000 },
            Step::Close(s) => {
                let s = self.session(*s);
                self.client(s, ClientOp::CloseSession)
            }
            Step::Expire(s) => CommandKind::ExpireSession {
                session: self.session(*s),
                epoch: sm.leader_epoch(),
            },
            Step::Takeover => CommandKind::Takeover {
                epoch: sm.leader_epoch() + 1,
            },
            Step::Tick(ms) => {
                self.at_ms += u64::from(*ms);
                CommandKind::Tick
            }
            Step::Acquire(s, l, wait) => {
                let s = self.session(*s);
                let op = ClientOp::Acquire {
                    name: lock_name(*l),
                    wait: *wait,
                    value: Vec::new(),
                };
                self.client(s, op)
            }
            Step::Release(s, l, cur) => {
                let s = self.session(*s);
                let name = lock_name(*l);
                let token = Self::token(sm, s, &name, *cur);
                self.client(s, ClientOp::Release { name, token })
            }
            Step::Check(s, l, cur) => {
                let s = self.session(*s);
                let name = lock_name(*l);
                let token = Self::token(sm, s, &name, *cur);
                self.client(s, ClientOp::Check { name, token })
            }
            Step::Cancel(s, l) => {
                let s = self.session(*s);
                self.client(
                    s,
                    ClientOp::CancelAcquire {
                        name: lock_name(*l),
                    },
                )
            }
            Step::Campaign(s, e, v) => {
                let s = self.session(*s);
                let op = ClientOp::Campaign {
                    name: format!("e{e}"),
                    value: vec![*v],
                };
                self.client(s, op)
            }
            Step::Resign(s, e) => {
                let s = self.session(*s);
                self.client(
                    s,
                    ClientOp::Resign {
                        name: format!("e{e}"),
                    },
                )
            }
            Step::Proclaim(s, e, v) => {
                let s = self.session(*s);
                let op = ClientOp::Proclaim {
                    name: format!("e{e}"),
                    value: vec![*v],
                };
                self.client(s, op)
            }
            Step::Retry(s) => {
                let s = self.session(*s);
                self.last.get(&s).cloned().unwrap_or(CommandKind::Tick)
            }
            Step::Shared(s, l, k, wait) => {
                let s = self.session(*s);
                self.client(s, shared_op(shared_name(*l), *k, *wait))
            }
            Step::ReleaseShared(s, l, cur) => {
                let s = self.session(*s);
                let name = shared_name(*l);
                let token = match sm.shared_lock(&name).and_then(|l| l.grant_of(s)) {
                    Some(g) if *cur => g.token,
                    _ => FencingToken(sm.revision() / 2),
                };
                self.client(s, ClientOp::Release { name, token })
            }
        };
        Command {
            at_ms: self.at_ms,
            kind,
        }
    }

    fn observe(&mut self, out: &Output) {
        if let Ok(Reply::SessionOpened { session }) = out.reply {
            self.sessions.push(session);
        }
    }
}

fn config(lock_delay_ms: u64) -> Config {
    let mut c = Harness::small().sm.config().clone();
    c.lock_delay_ms = lock_delay_ms;
    c.election_history_len = 4;
    c
}

/// Applies `steps` to `sm`, returning every output.
fn run(sm: &mut StateMachine, driver: &mut Driver, steps: &[Step], slot0: u64) -> Vec<Output> {
    let mut outs = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let cmd = driver.command_for(sm, step);
        let out = sm.apply(slot0 + i as u64 / 2, cmd);
        driver.observe(&out);
        outs.push(out);
    }
    outs
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn at_most_one_holder_and_tokens_strictly_increase(
        steps in prop::collection::vec(arb_step(), 1..120),
        delay in prop_oneof![Just(0u64), Just(300u64)],
    ) {
        let mut sm = StateMachine::new(config(delay));
        let mut driver = Driver::default();
        let mut held: BTreeMap<String, FencingToken> = BTreeMap::new();
        let mut last_token = FencingToken(0);
        let mut terms: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut removed: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut prev_revision = 0;
        for step in &steps {
            let cmd = driver.command_for(&sm, step);
            let out = sm.apply(1, cmd);
            driver.observe(&out);
            prop_assert!(out.revision > prev_revision);
            prev_revision = out.revision;
            prop_assert_eq!(sm.check_invariants(), Ok(()));
            for e in &out.events {
                match e {
                    Event::LockGranted { name, .. } | Event::LockReleased { name, .. }
                        if is_shared(name) => {}
                    Event::LockGranted { name, token, .. } => {
                        prop_assert!(!held.contains_key(name), "grant while held: {}", name);
                        prop_assert!(*token > last_token);
                        prop_assert!(token.0 <= out.revision);
                        last_token = *token;
                        held.insert(name.clone(), *token);
                    }
                    Event::LockReleased { name, token, .. } => {
                        prop_assert_eq!(held.remove(name), Some(*token));
                    }
                    Event::Election(ev) => {
                        if let Some((idx, term)) = removed.remove(&ev.name) {
                            // Made again: above where it was, then gap-free.
                            prop_assert!(ev.index > idx && ev.term > term, "went back: {:?}", ev);
                        } else {
                            let (idx, term) = terms.get(&ev.name).copied().unwrap_or((0, 0));
                            prop_assert_eq!(ev.index, idx + 1, "gap in event stream");
                            let step = match ev.change {
                                crate::locks::ElectionChange::Proclaimed { .. } => 0,
                                _ => 1,
                            };
                            prop_assert_eq!(ev.term, term + step, "term must move by one per change");
                        }
                        terms.insert(ev.name.clone(), (ev.index, ev.term));
                    }
                    Event::SessionEnded { .. }
                    | Event::LockQueued { .. }
                    | Event::LockLeftQueue { .. }
                    | Event::LockDelayEnded { .. } => {}
                    Event::ElectionRemoved { name } => {
                        if let Some(last) = terms.remove(name) {
                            removed.insert(name.clone(), last);
                        }
                    }
                }
            }
            for (name, token) in &held {
                prop_assert_eq!(sm.holder(name).map(|h| h.token), Some(*token));
            }
        }
    }

    /// A lock watcher that saw every update from the start can rebuild
    /// each lock exactly as the machine holds it: holder, queue in order,
    /// and whether it is in lock-delay. Nothing changes a lock silently.
    #[test]
    fn lock_updates_rebuild_every_lock(
        steps in prop::collection::vec(arb_step(), 1..120),
        delay in prop_oneof![Just(0u64), Just(300u64)],
    ) {
        let mut sm = StateMachine::new(config(delay));
        let mut driver = Driver::default();
        let mut history = LockHistory::default();
        let mut seen: BTreeMap<String, Watched> = BTreeMap::new();
        for step in &steps {
            let cmd = driver.command_for(&sm, step);
            let out = sm.apply(1, cmd);
            driver.observe(&out);
            for update in history.record(out.revision, &out.events, true) {
                prop_assert_eq!(update.index, out.revision);
                if is_shared(&update.name) {
                    continue;
                }
                let lock = seen.entry(update.name.clone()).or_default();
                for change in &update.changes {
                    lock.change(change).map_err(|e| {
                        TestCaseError::fail(format!("{}: {e}: {change:?}", update.name))
                    })?;
                }
            }
            for (name, lock) in &seen {
                let actual = sm.lock(name).map(Watched::of).unwrap_or_default();
                prop_assert_eq!(lock, &actual, "lock {}", name);
            }
        }
    }

    /// Semaphores and read/write locks, from their events alone: never
    /// more holders than permits, each in its own slot; never a writer
    /// beside another holder; every grant's token is new (above every
    /// token before it), and so is its fencing value except a reader's,
    /// which is its name's read epoch (begun by the first reader since the
    /// last writer); waiters are granted front first and never passed by a
    /// later acquire.
    #[test]
    fn shared_locks_keep_their_bounds_order_and_tokens(
        steps in prop::collection::vec(arb_step(), 1..160),
        delay in prop_oneof![Just(0u64), Just(300u64)],
    ) {
        let mut sm = StateMachine::new(config(delay));
        let mut driver = Driver::default();
        // Name -> session -> (token, slot), and name -> queue, from events.
        // Name -> session -> (token, fencing value, slot).
        type Held = BTreeMap<SessionId, (FencingToken, FencingToken, Option<u32>)>;
        let mut holders: BTreeMap<String, Held> = BTreeMap::new();
        let mut queues: BTreeMap<String, std::collections::VecDeque<SessionId>> = BTreeMap::new();
        let mut last_token = FencingToken(0);
        // Name -> its read epoch, from the grants.
        let mut epochs: BTreeMap<String, FencingToken> = BTreeMap::new();
        for step in &steps {
            let cmd = driver.command_for(&sm, step);
            let out = sm.apply(1, cmd);
            driver.observe(&out);
            prop_assert_eq!(sm.check_invariants(), Ok(()));
            for e in &out.events {
                match e {
                    Event::LockGranted { name, session, token, shared, .. } => {
                        prop_assert!(*token > last_token, "{} reused token {:?}", name, token);
                        last_token = *token;
                        let Some(shared) = shared else {
                            continue;
                        };
                        // A reader takes the epoch its name's first reader
                        // since the last writer began; anyone else fences
                        // with its own token.
                        let mode = sm
                            .shared_lock(name)
                            .and_then(|l| l.grant_of(*session))
                            .map(|g| g.mode);
                        match (mode, epochs.get(name)) {
                            (Some(Mode::Read), Some(epoch)) => {
                                prop_assert_eq!(shared.fencing, *epoch, "{} reader", name);
                            }
                            (Some(Mode::Read), None) => {
                                prop_assert_eq!(shared.fencing, *token, "{} new epoch", name);
                                epochs.insert(name.clone(), *token);
                            }
                            (Some(Mode::Write), _) => {
                                prop_assert_eq!(shared.fencing, *token, "{} writer", name);
                                epochs.remove(name);
                            }
                            _ => prop_assert_eq!(shared.fencing, *token, "{} permit", name),
                        }
                        let queue = queues.entry(name.clone()).or_default();
                        if queue.front() == Some(session) {
                            queue.pop_front();
                        } else {
                            prop_assert!(queue.is_empty(), "{} granted past its queue", name);
                        }
                        holders
                            .entry(name.clone())
                            .or_default()
                            .insert(*session, (*token, shared.fencing, shared.slot));
                    }
                    Event::LockReleased { name, session, token, .. } if is_shared(name) => {
                        let held = holders.get_mut(name).and_then(|h| h.remove(session));
                        prop_assert_eq!(held.map(|h| h.0), Some(*token));
                    }
                    Event::LockQueued { name, session, .. } if is_shared(name) => {
                        queues.entry(name.clone()).or_default().push_back(*session);
                    }
                    Event::LockLeftQueue { name, session, .. } if is_shared(name) => {
                        let queue = queues.entry(name.clone()).or_default();
                        let at = queue.iter().position(|s| s == session);
                        prop_assert!(at.is_some(), "left a queue it was not in");
                        queue.retain(|s| s != session);
                    }
                    _ => {}
                }
            }
            // A name nobody uses any more forgets its epoch.
            epochs.retain(|name, _| sm.shared_lock(name).is_some());
            for (name, held) in &holders {
                let Some(lock) = sm.shared_lock(name) else {
                    prop_assert!(held.is_empty(), "{} dropped while held", name);
                    continue;
                };
                let grants: BTreeMap<_, _> = lock
                    .grants
                    .iter()
                    .map(|g| {
                        let slot = (g.mode == Mode::Permit).then_some(g.slot);
                        (g.session, (g.token, g.fencing, slot))
                    })
                    .collect();
                prop_assert_eq!(held, &grants, "{} holders", name);
                match lock.kind {
                    SharedKind::Semaphore { permits } => {
                        prop_assert!(held.len() <= permits as usize);
                        let slots: std::collections::BTreeSet<_> =
                            held.values().map(|(_, _, s)| *s).collect();
                        prop_assert_eq!(slots.len(), held.len(), "{} slot twice", name);
                    }
                    SharedKind::ReadWrite => {
                        let writer = lock.grants.iter().any(|g| g.mode == Mode::Write);
                        prop_assert!(!writer || held.len() == 1, "{} writer not alone", name);
                    }
                }
                let queue: Vec<_> = lock.waiters.iter().map(|w| w.session).collect();
                let seen: Vec<_> = queues.get(name).map(|q| q.iter().copied().collect()).unwrap_or_default();
                prop_assert_eq!(seen, queue, "{} queue", name);
            }
        }
    }

    #[test]
    fn snapshot_round_trip_continues_identically(
        prefix in prop::collection::vec(arb_step(), 0..80),
        suffix in prop::collection::vec(arb_step(), 0..80),
        delay in prop_oneof![Just(0u64), Just(300u64)],
    ) {
        let mut original = StateMachine::new(config(delay));
        let mut driver = Driver::default();
        run(&mut original, &mut driver, &prefix, 1);
        let bytes = original.snapshot().unwrap();
        let mut restored = StateMachine::restore(&bytes).unwrap();
        prop_assert_eq!(&restored, &original);
        // Same driver state for both continuations.
        let mut driver2 = Driver {
            sessions: driver.sessions.clone(),
            next_rid: driver.next_rid.clone(),
            last: driver.last.clone(),
            at_ms: driver.at_ms,
        };
        let slot = original.last_applied_slot();
        let a = run(&mut original, &mut driver, &suffix, slot);
        let b = run(&mut restored, &mut driver2, &suffix, slot);
        prop_assert_eq!(a, b);
        prop_assert_eq!(original.snapshot().unwrap(), restored.snapshot().unwrap());
    }
}

/// A lock as a watcher rebuilds it from its updates.
#[derive(Debug, Default, PartialEq, Eq)]
struct Watched {
    holder: Option<(SessionId, FencingToken)>,
    queue: std::collections::VecDeque<SessionId>,
    delayed: bool,
}

impl Watched {
    fn of(lock: &crate::locks::lock::Lock) -> Watched {
        Watched {
            holder: lock.holder.map(|h| (h.session, h.token)),
            queue: lock.waiters.iter().map(|w| w.session).collect(),
            delayed: lock.delayed_until_ms.is_some(),
        }
    }

    /// Applies one change, refusing one the state before does not allow.
    fn change(&mut self, change: &LockChange) -> Result<(), &'static str> {
        match change {
            LockChange::Granted { session, token, .. } => {
                if self.holder.is_some() || self.delayed {
                    return Err("granted while held or delayed");
                }
                // From the queue's front, or to an acquire nobody queued before.
                if self.queue.front() == Some(session) {
                    self.queue.pop_front();
                } else if !self.queue.is_empty() {
                    return Err("granted past the queue");
                }
                self.holder = Some((*session, *token));
            }
            LockChange::Released {
                session,
                token,
                lock_delay_ms,
                ..
            } => {
                if self.holder != Some((*session, *token)) {
                    return Err("released a grant that was not current");
                }
                self.holder = None;
                self.delayed = lock_delay_ms.is_some();
            }
            LockChange::Queued { session, .. } => self.queue.push_back(*session),
            LockChange::LeftQueue { session, .. } => {
                let at = self.queue.iter().position(|s| s == session);
                let at = at.ok_or("left a queue it was not in")?;
                self.queue.remove(at);
            }
            LockChange::DelayEnded => {
                if !self.delayed {
                    return Err("a delay ended that had not begun");
                }
                self.delayed = false;
            }
        }
        Ok(())
    }
}
