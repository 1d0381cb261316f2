//! Who waits on one node for a lock grant or an election win, and what each
//! applied command and each restored snapshot does to them.
//!
//! A blocking acquire or a campaign that is not answered at once waits on
//! the node that took the request. The node keeps its waiters here and
//! carries out what [`WaiterBook::applied`] and [`WaiterBook::restored`]
//! decide: whom to answer with which token or term, whom to drop (their
//! request learns the wait is over, unanswered), and which election events
//! go to watchers. The node's waiter is a channel to the request's task;
//! the simulator's is a client's request. Both run these rules:
//!
//! - a waiter is registered as its own command is applied, never earlier,
//!   and only if that command left it waiting (queued, or a candidate);
//!   a retried command's recorded answer may say so although the grant or
//!   win has happened since, so the state decides, and such a waiter is
//!   answered at once:
//!   a node catching up applies *older* grants and wins of the same
//!   session and name first, and one of those must not answer a request
//!   that came after it (it would be told a token or term that another
//!   holder or leader has since been given);
//! - a refused command registers nothing (and one refused for its caller
//!   must not wait on another's session);
//! - a cancel drops the waiters registered before it, not a later
//!   acquire's, and only if it took effect (not a duplicate, not refused);
//! - a woken request is told the grant or win that woke it
//!   ([`Woken::reply`]), never the state when its task gets to answer;
//! - a session's end drops all of its waiters;
//! - a restored snapshot settles every waiter whose grant or win it holds
//!   (the events inside it were never applied here, so nothing else would
//!   answer them), and drops those it shows can never be answered.

use std::collections::BTreeMap;

use crate::locks::event::SharedGranted;
use crate::locks::{
    ElectionChange, ElectionEvent, Event, FencingToken, Output, Reply, SessionId, StateMachine,
};

/// (session, lock or election name).
pub type WaiterKey = (u64, String);

/// Tells apart the waiters under one key: one per request, so two requests
/// of one session for the same name (two tasks sharing a client, or a retry
/// that reached the node while the first attempt still waits) are both
/// answered, and one that gives up withdraws only itself.
pub type WaiterId = u64;

/// What a waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// A queued acquire's grant: answered with the fencing token.
    Grant,
    /// A campaign's win: answered with the term won.
    Win,
}

/// What woke a waiter: the grant or the win that ended its wait, taken
/// from the event (or restored state) that ended it, and carried to the
/// waiting request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A queued acquire was granted, with this fencing token.
    Granted(FencingToken),
    /// A queued acquire of a semaphore or read/write lock was granted.
    GrantedShared {
        /// The grant's token.
        token: FencingToken,
        /// Its fencing value and slot.
        shared: SharedGranted,
    },
    /// A campaign won this term, with the leadership's fencing token
    /// (`None`: won before the log recorded protocol 3).
    Won {
        /// The term won.
        term: u64,
        /// The leadership's token.
        token: Option<FencingToken>,
    },
}

impl Woken {
    /// What the woken request is told: the grant or win that woke it.
    ///
    /// The request's task runs after the node's apply loop has moved on,
    /// and by then later entries may have released the lock or ended the
    /// leadership and handed it on. So the answer is built from what woke
    /// the request, never from the state when its task runs: a candidate
    /// told the election's later term would believe it leads a term that
    /// another session won (the chaos soak's seed 20261127 found the
    /// node's handler doing that; the simulator's late wake-ups find it,
    /// see `LockSimConfig::late_wakeups`).
    pub fn reply(self) -> Reply {
        match self {
            Woken::Granted(token) => Reply::Granted { token },
            Woken::GrantedShared { token, shared } => Reply::GrantedShared { token, shared },
            Woken::Won { term, token } => Reply::Elected { term, token },
        }
    }
}

/// What the node does for a command of its own the moment it is applied:
/// before any later entry, so only what happens from then on can touch it.
#[derive(Debug, Clone)]
pub enum AfterApply<T> {
    /// Register `waiter` under `key`, if the command left it waiting (see
    /// [`AfterApply::read`]).
    Register {
        /// Grant or win.
        wait: WaitFor,
        /// (session, name).
        key: WaiterKey,
        /// This request's id among the key's waiters.
        id: WaiterId,
        /// The node's handle on the waiting request.
        waiter: T,
    },
    /// Drop the lock waiters of `key` that the command (a cancel)
    /// withdrew: those registered before it, not a later acquire's.
    /// Skipped for a duplicate or a refused command.
    DropLockWaiters(WaiterKey),
}

/// A command's own waiter as the state after the command decides it (see
/// [`AfterApply::read`]), for [`WaiterBook::applied`].
#[derive(Debug)]
pub enum Own<T> {
    /// Left waiting (queued, or a candidate): register it.
    Waits {
        /// Grant or win.
        wait: WaitFor,
        /// (session, name).
        key: WaiterKey,
        /// This request's id among the key's waiters.
        id: WaiterId,
        /// The node's handle on the waiting request.
        waiter: T,
    },
    /// A retry told the recorded `Queued` or `Candidate` after its grant
    /// or win: answer it at once with that grant or win.
    Answered(T, Woken),
    /// The command's own reply answers the request (or refuses it):
    /// nothing to wait for.
    NotWaiting(WaitFor, T),
    /// Drop the lock waiters of this key registered before the command.
    DropLockWaiters(WaiterKey),
    /// A cancel that did not take effect (a duplicate, or refused).
    Nothing,
}

impl<T> AfterApply<T> {
    /// Reads what the state after the command (`machine`, `output`) says
    /// of this waiter. Cheap: call it while the machine is held, then hand
    /// the result to [`WaiterBook::applied`] without the machine.
    pub fn read(self, machine: &StateMachine, output: &Output) -> Own<T> {
        match self {
            AfterApply::Register {
                wait,
                key,
                id,
                waiter,
            } => {
                let session = SessionId(key.0);
                let already = match (wait, &output.reply) {
                    (WaitFor::Grant, Ok(Reply::Queued { .. })) => {
                        Some(granted_to(machine, session, &key.1))
                    }
                    (WaitFor::Win, Ok(Reply::Candidate { .. })) => {
                        Some(won_by(machine, session, &key.1))
                    }
                    // Answered by the reply itself, or refused.
                    _ => None,
                };
                match already {
                    Some(Some(woken)) => Own::Answered(waiter, woken),
                    Some(None) => Own::Waits {
                        wait,
                        key,
                        id,
                        waiter,
                    },
                    None => Own::NotWaiting(wait, waiter),
                }
            }
            AfterApply::DropLockWaiters(key)
                if (!output.duplicate && output.reply.is_ok())
                    || canary::drop_on_refused_cancel() =>
            {
                Own::DropLockWaiters(key)
            }
            AfterApply::DropLockWaiters(_) => Own::Nothing,
        }
    }
}

/// What an applied command or a restored snapshot means for the waiters,
/// for the node to carry out (outside any lock).
#[derive(Debug)]
pub struct Settled<T> {
    /// Answer these with the token or term ([`Woken::reply`]).
    pub woken: Vec<(T, Woken)>,
    /// Their wait is over unanswered: the session ended, or a cancel
    /// withdrew it, or a restored state shows it can no longer be granted;
    /// or it never began (the command's own reply answers the request).
    pub dropped: Vec<(WaitFor, T)>,
    /// Election events, in order, for the election's watchers.
    pub published: Vec<ElectionEvent>,
}

impl<T> Default for Settled<T> {
    fn default() -> Self {
        Settled {
            woken: Vec::new(),
            dropped: Vec::new(),
            published: Vec::new(),
        }
    }
}

impl<T> Settled<T> {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.woken.is_empty() && self.dropped.is_empty() && self.published.is_empty()
    }
}

/// A switch that breaks the rule that only a cancel that took effect drops
/// waiters; off (and constant false) outside canary builds.
pub mod canary {
    #[cfg(feature = "canary")]
    thread_local! {
        static DROP_ON_REFUSED_CANCEL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Makes a cancel that did not take effect (a duplicate, or refused:
    /// a stale withdrawal of an earlier wait) drop the lock waiters of its
    /// key on this thread, a later acquire's included (canary builds
    /// only).
    #[cfg(feature = "canary")]
    pub fn set_drop_on_refused_cancel(on: bool) {
        DROP_ON_REFUSED_CANCEL.with(|c| c.set(on));
    }

    /// Whether the canary is on for this thread.
    pub fn drop_on_refused_cancel() -> bool {
        #[cfg(feature = "canary")]
        return DROP_ON_REFUSED_CANCEL.with(std::cell::Cell::get);
        #[cfg(not(feature = "canary"))]
        false
    }
}

/// Test-only switches that each break one waiter rule, so the simulator's
/// canary tests can show that its checks catch it.
#[cfg(feature = "canary")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaiterCanary {
    /// All rules on.
    #[default]
    None,
    /// A restored snapshot settles no waiter (they sleep until their
    /// timeout, the lock held all the while by a session that does not
    /// know it).
    NoSettleAfterRestore,
}

/// The waiters of one node, by what they wait for and under which key.
#[derive(Debug)]
pub struct WaiterBook<T> {
    grants: BTreeMap<WaiterKey, Vec<(WaiterId, T)>>,
    wins: BTreeMap<WaiterKey, Vec<(WaiterId, T)>>,
    /// How many waiters there are, kept so that asking is O(1).
    count: usize,
    #[cfg(feature = "canary")]
    canary: WaiterCanary,
}

impl<T> Default for WaiterBook<T> {
    fn default() -> Self {
        WaiterBook {
            grants: BTreeMap::new(),
            wins: BTreeMap::new(),
            count: 0,
            #[cfg(feature = "canary")]
            canary: WaiterCanary::None,
        }
    }
}

impl<T> WaiterBook<T> {
    /// An empty book with one rule switched off (canary builds only).
    #[cfg(feature = "canary")]
    pub fn with_canary(canary: WaiterCanary) -> WaiterBook<T> {
        WaiterBook {
            canary,
            ..WaiterBook::default()
        }
    }

    fn map(&mut self, wait: WaitFor) -> &mut BTreeMap<WaiterKey, Vec<(WaiterId, T)>> {
        match wait {
            WaitFor::Grant => &mut self.grants,
            WaitFor::Win => &mut self.wins,
        }
    }

    /// Adds `waiter` for `key`.
    pub fn add(&mut self, wait: WaitFor, key: WaiterKey, id: WaiterId, waiter: T) {
        self.map(wait).entry(key).or_default().push((id, waiter));
        self.count += 1;
    }

    /// Takes the waiter `id` of `key` out, if it is still there (its
    /// request ended some other way).
    pub fn withdraw(&mut self, wait: WaitFor, key: &WaiterKey, id: WaiterId) -> Option<T> {
        let map = self.map(wait);
        let waiting = map.get_mut(key)?;
        let at = waiting.iter().position(|(w, _)| *w == id)?;
        let (_, waiter) = waiting.remove(at);
        if waiting.is_empty() {
            map.remove(key);
        }
        self.count -= 1;
        Some(waiter)
    }

    /// How many waiters there are.
    pub fn len(&self) -> usize {
        self.grants
            .values()
            .chain(self.wins.values())
            .map(Vec::len)
            .sum()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty() && self.wins.is_empty()
    }

    /// Every key someone waits under, with what for.
    pub fn keys(&self) -> impl Iterator<Item = (WaitFor, &WaiterKey)> {
        let grants = self.grants.keys().map(|k| (WaitFor::Grant, k));
        grants.chain(self.wins.keys().map(|k| (WaitFor::Win, k)))
    }

    /// Whether [`applied`](Self::applied) could do anything for a book of
    /// `waiting` waiters: most commands (an immediate grant, a release
    /// nobody waits on) cannot, and the node then skips taking the book.
    pub fn concerns(output: &Output, own: Option<&Own<T>>, waiting: usize) -> bool {
        let own_matters = match own {
            Some(Own::Waits { .. } | Own::Answered(..)) => true,
            Some(Own::DropLockWaiters(_)) => waiting > 0,
            Some(Own::NotWaiting(..) | Own::Nothing) | None => false,
        };
        own_matters
            || output.events.iter().any(|event| match event {
                Event::Election(_) => true,
                Event::LockGranted { .. } | Event::SessionEnded { .. } => waiting > 0,
                Event::LockReleased { .. }
                | Event::LockQueued { .. }
                | Event::LockLeftQueue { .. }
                | Event::LockDelayEnded { .. }
                | Event::ElectionRemoved { .. } => false,
            })
    }

    /// What applying a command with `output` does: its events wake or drop
    /// waiters and go to watchers; then, if the command is this node's
    /// own, `own` (read from the state after it) registers its request's
    /// waiter, answers it, or drops the waiters it cancelled.
    pub fn applied(&mut self, output: &Output, own: Option<Own<T>>) -> Settled<T> {
        let mut settled = Settled::default();
        for event in &output.events {
            match event {
                Event::LockGranted {
                    name,
                    session,
                    token,
                    shared,
                    ..
                } => {
                    let woken = match shared {
                        Some(shared) => Woken::GrantedShared {
                            token: *token,
                            shared: *shared,
                        },
                        None => Woken::Granted(*token),
                    };
                    self.wake(
                        WaitFor::Grant,
                        &(session.0, name.clone()),
                        woken,
                        &mut settled,
                    )
                }
                // Nobody waits in an election that can be removed.
                Event::LockReleased { .. }
                | Event::LockQueued { .. }
                | Event::LockLeftQueue { .. }
                | Event::LockDelayEnded { .. }
                | Event::ElectionRemoved { .. } => {}
                Event::SessionEnded { session, .. } => self.drop_session(*session, &mut settled),
                Event::Election(e) => {
                    if let ElectionChange::NewLeader { session, token, .. } = &e.change {
                        let won = Woken::Won {
                            term: e.term,
                            token: *token,
                        };
                        self.wake(
                            WaitFor::Win,
                            &(session.0, e.name.clone()),
                            won,
                            &mut settled,
                        );
                    }
                    settled.published.push(e.clone());
                }
            }
        }
        match own {
            Some(Own::Waits {
                wait,
                key,
                id,
                waiter,
            }) => self.add(wait, key, id, waiter),
            Some(Own::Answered(waiter, woken)) => settled.woken.push((waiter, woken)),
            Some(Own::NotWaiting(wait, waiter)) => settled.dropped.push((wait, waiter)),
            Some(Own::DropLockWaiters(key)) => self.drop_key(WaitFor::Grant, &key, &mut settled),
            Some(Own::Nothing) | None => {}
        }
        settled
    }

    /// What installing `machine` from a snapshot does: grants and wins
    /// inside it were never applied here, so no event of theirs woke
    /// anyone. A waiter whose grant or win the state holds is answered;
    /// one whose session ended, or whose acquire is no longer queued
    /// (cancelled or abandoned), is dropped. Only state newer than any
    /// waiter's own command is ever restored (a waiter registers as its
    /// command is applied), so a grant found here is not an older one.
    pub fn restored(&mut self, machine: &StateMachine) -> Settled<T> {
        let mut settled = Settled::default();
        #[cfg(feature = "canary")]
        if self.canary == WaiterCanary::NoSettleAfterRestore {
            return settled;
        }
        self.settle_each(
            WaitFor::Grant,
            &mut settled,
            |session, name| match granted_to(machine, session, name) {
                Some(granted) => Some(Some(granted)),
                None if !machine.waiters(name).contains(&session) => Some(None),
                None => None,
            },
        );
        self.settle_each(WaitFor::Win, &mut settled, |session, name| {
            match won_by(machine, session, name) {
                Some(won) => Some(Some(won)),
                None if !machine.has_session(session) => Some(None),
                None => None,
            }
        });
        settled
    }

    /// For every key of `wait`, `decide(session, name)` says: wake with a
    /// grant or win (`Some(Some)`), drop (`Some(None)`), or keep waiting
    /// (`None`).
    fn settle_each(
        &mut self,
        wait: WaitFor,
        settled: &mut Settled<T>,
        decide: impl Fn(SessionId, &str) -> Option<Option<Woken>>,
    ) {
        let decided: Vec<(WaiterKey, Option<Woken>)> = self
            .map(wait)
            .keys()
            .filter_map(|key| decide(SessionId(key.0), &key.1).map(|d| (key.clone(), d)))
            .collect();
        for (key, value) in decided {
            match value {
                Some(woken) => self.wake(wait, &key, woken, settled),
                None => self.drop_key(wait, &key, settled),
            }
        }
    }

    fn wake(&mut self, wait: WaitFor, key: &WaiterKey, woken: Woken, settled: &mut Settled<T>) {
        if let Some(waiting) = self.map(wait).remove(key) {
            self.count -= waiting.len();
            settled
                .woken
                .extend(waiting.into_iter().map(|(_, w)| (w, woken)));
        }
    }

    fn drop_key(&mut self, wait: WaitFor, key: &WaiterKey, settled: &mut Settled<T>) {
        if let Some(waiting) = self.map(wait).remove(key) {
            self.count -= waiting.len();
            settled
                .dropped
                .extend(waiting.into_iter().map(|(_, w)| (wait, w)));
        }
    }

    /// Drops every waiter of `session` (it ended). Keys order by session
    /// first, so this visits only that session's keys.
    fn drop_session(&mut self, session: SessionId, settled: &mut Settled<T>) {
        for wait in [WaitFor::Grant, WaitFor::Win] {
            let map = self.map(wait);
            let mut theirs = map.split_off(&(session.0, String::new()));
            if let Some(next) = session.0.checked_add(1) {
                let mut later = theirs.split_off(&(next, String::new()));
                map.append(&mut later);
            }
            for (_, waiting) in theirs {
                self.count -= waiting.len();
                settled
                    .dropped
                    .extend(waiting.into_iter().map(|(_, w)| (wait, w)));
            }
        }
    }
}

/// The grant `session` holds on lock `name`, if it holds it.
fn granted_to(machine: &StateMachine, session: SessionId, name: &str) -> Option<Woken> {
    if let Some(lock) = machine.shared_lock(name) {
        return lock.grant_of(session).map(|g| Woken::GrantedShared {
            token: g.token,
            shared: SharedGranted::of(g),
        });
    }
    machine
        .holder(name)
        .filter(|h| h.session == session)
        .map(|h| Woken::Granted(h.token))
}

/// The win `session` leads election `name` by, if it leads it.
fn won_by(machine: &StateMachine, session: SessionId, name: &str) -> Option<Woken> {
    machine
        .leader(name)
        .filter(|l| l.session == session)
        .map(|l| Woken::Won {
            term: l.term,
            token: l.token,
        })
}

#[cfg(test)]
mod tests;
