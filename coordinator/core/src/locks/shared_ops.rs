//! The state machine's semaphores and read/write locks: acquiring,
//! granting in FIFO order, releasing, lock-delays (the rules are in
//! [`crate::locks::shared`]; the plain-lock operations in `machine.rs`
//! hand names of this table to the functions here).

use crate::locks::command::{FencingToken, SessionId};
use crate::locks::error::CommandError;
use crate::locks::event::{Event, ReleaseReason, SharedGranted};
use crate::locks::machine::{names_from, Cx, Reply, StateMachine};
use crate::locks::shared::{
    Mode, SharedDelay, SharedGrant, SharedKind, SharedLock, SharedWaiter, MAX_PERMITS,
};
use crate::locks::state_size;

impl StateMachine {
    /// The semaphore or read/write lock `name` (`None`: nobody holds,
    /// waits for or delays one of that name).
    pub fn shared_lock(&self, name: &str) -> Option<&SharedLock> {
        self.shared.get(name)
    }

    /// Semaphores and read/write locks in name order from the first whose
    /// name is at least `prefix` and above `after` (as
    /// [`StateMachine::locks_from`]).
    pub fn shared_from<'a>(
        &'a self,
        prefix: &'a str,
        after: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a SharedLock)> + 'a {
        self.shared.range::<str, _>(names_from(prefix, after))
    }

    /// The grant of `name` an administrator's force-release would end, and
    /// its session: the one with `token` (`None`: the only grant there is).
    /// For a lock, its holder's; for a semaphore or read/write lock, whose
    /// grants each have a token of their own, the one `token` names.
    pub fn grant_to_take(
        &self,
        name: &str,
        token: Option<FencingToken>,
    ) -> Result<(SessionId, FencingToken), CommandError> {
        let not_held = || CommandError::NotHeld {
            name: name.to_owned(),
        };
        let (holders, current): (Vec<(SessionId, FencingToken)>, _) = match self.shared.get(name) {
            Some(lock) => (
                lock.grants.iter().map(|g| (g.session, g.token)).collect(),
                lock.highest_token(),
            ),
            None => {
                let holder = self.holder(name).ok_or_else(not_held)?;
                (vec![(holder.session, holder.token)], Some(holder.token))
            }
        };
        match (token, holders.as_slice()) {
            (_, []) => Err(not_held()),
            (None, [only]) => Ok(*only),
            (None, several) => Err(CommandError::GrantUnnamed {
                name: name.to_owned(),
                holders: u32::try_from(several.len()).unwrap_or(u32::MAX),
            }),
            (Some(token), holders) => holders
                .iter()
                .find(|(_, t)| *t == token)
                .copied()
                .ok_or_else(|| CommandError::StaleToken {
                    name: name.to_owned(),
                    presented: token,
                    current,
                }),
        }
    }

    /// Counted bytes of the lock `name`, of either table (absent: 0).
    pub(crate) fn lock_bytes(&self, name: &str) -> u64 {
        if let Some(lock) = self.locks.get(name) {
            return state_size::lock_bytes(name, lock);
        }
        self.shared
            .get(name)
            .map_or(0, |lock| state_size::shared_lock_bytes(name, lock))
    }

    /// The kind an acquire in `mode` with `permits` asks for.
    fn asked_kind(mode: Mode, permits: u32) -> SharedKind {
        match mode {
            Mode::Permit => SharedKind::Semaphore { permits },
            Mode::Read | Mode::Write => SharedKind::ReadWrite,
        }
    }

    /// An acquire of a semaphore's permit (`permits`: how many it has) or
    /// of a read/write lock in `mode`. One by a holder or a queued session
    /// answers its grant or place.
    pub(crate) fn acquire_shared(
        &mut self,
        session: SessionId,
        name: String,
        wait: bool,
        mode: Mode,
        permits: u32,
        cx: &mut Cx,
    ) -> Result<Reply, CommandError> {
        let asked = Self::asked_kind(mode, permits);
        if let SharedKind::Semaphore { permits } = asked {
            if !(1..=MAX_PERMITS).contains(&permits) {
                return Err(CommandError::PermitsOutOfRange {
                    asked: permits,
                    max: MAX_PERMITS,
                });
            }
        }
        if self.locks.contains_key(&name) {
            return Err(CommandError::WrongKind {
                name,
                kind: "a lock".into(),
                asked: asked.describe(),
            });
        }
        let lock = self.shared.get(&name);
        if let Some(lock) = lock {
            match (lock.kind, asked) {
                (SharedKind::Semaphore { permits }, SharedKind::Semaphore { permits: wanted })
                    if permits != wanted =>
                {
                    return Err(CommandError::PermitsMismatch {
                        name,
                        permits,
                        asked: wanted,
                    })
                }
                (kind, asked) if kind != asked => {
                    return Err(CommandError::WrongKind {
                        name,
                        kind: kind.describe(),
                        asked: asked.describe(),
                    })
                }
                _ => {}
            }
            if let Some(g) = lock.grant_of(session) {
                if g.mode != mode {
                    return Err(CommandError::ModeHeld {
                        name,
                        held: g.mode.describe().into(),
                    });
                }
                return Ok(granted_reply(g));
            }
            if let Some(position) = lock.position(session) {
                return Ok(Reply::Queued { position });
            }
        }
        let slot = match lock {
            None => Some(0),
            Some(l) if l.waiters.is_empty() || Self::canary_readers_barge(mode) => l.fits(mode),
            Some(_) => None,
        };
        if slot.is_none() && !wait {
            return Ok(Reply::Busy {
                current: lock.and_then(SharedLock::highest_token),
                delayed_until_ms: lock.and_then(|l| l.delayed_until_ms(mode)),
            });
        }
        let waiters = lock.map_or(0, |l| l.waiters.len());
        self.check_new_hold(session, &name, slot.is_none().then_some(waiters))?;
        let grants = lock.map_or(0, |l| l.grants.len());
        let before = lock.map_or(0, |l| state_size::shared_lock_bytes(&name, l));
        let delays = lock.map_or(0, |l| l.delays.len() as u64 * state_size::WAITER_BYTES);
        let after = delays
            + match slot {
                Some(_) => state_size::lock_bytes_of(name.len(), grants + 1, waiters),
                None => state_size::lock_bytes_of(name.len(), grants, waiters + 1),
            };
        self.make_room(after.saturating_sub(before), None, cx)?;
        let lock = self
            .shared
            .entry(name.clone())
            .or_insert_with(|| SharedLock::new(asked));
        if let Some(slot) = slot {
            let grant = self.grant_shared(&name, session, mode, slot, cx);
            return Ok(granted_reply(&grant));
        }
        lock.waiters.push_back(SharedWaiter {
            session,
            mode,
            since_ms: self.now_ms,
        });
        let queue_len = lock.waiters.len();
        Ok(self.note_queued(name, session, queue_len, cx))
    }

    /// Grants `name` (which exists) to `session` in `mode` and `slot`.
    fn grant_shared(
        &mut self,
        name: &str,
        session: SessionId,
        mode: Mode,
        slot: u32,
        cx: &mut Cx,
    ) -> SharedGrant {
        let joined = self.shared.get(name).and_then(|l| l.joined_fencing(mode));
        let token = self.next_token(cx);
        let fencing = joined.unwrap_or(token);
        let grant = SharedGrant {
            session,
            token,
            fencing,
            mode,
            slot,
            since_ms: self.now_ms,
        };
        if let Some(lock) = self.shared.get_mut(name) {
            lock.grants.push(grant);
            // A writer ends the read epoch; the next reader begins one.
            lock.read_epoch = match mode {
                Mode::Read => Some(fencing),
                Mode::Write => None,
                Mode::Permit => lock.read_epoch,
            };
        }
        let owner = self.sessions.get_mut(&session).and_then(|s| {
            s.held.insert(name.to_owned());
            s.owner.clone()
        });
        cx.events.push(Event::LockGranted {
            name: name.to_owned(),
            session,
            token,
            owner,
            value: Vec::new(),
            shared: Some(SharedGranted {
                fencing,
                slot: (mode == Mode::Permit).then_some(slot),
            }),
        });
        grant
    }

    /// Grants waiters front first for as long as the front one fits, then
    /// drops the lock if it is left empty.
    fn grant_next_shared(&mut self, name: &str, cx: &mut Cx) {
        loop {
            let Some(lock) = self.shared.get_mut(name) else {
                return;
            };
            let Some((waiter, slot)) = lock
                .waiters
                .front()
                .and_then(|w| Some((*w, lock.fits(w.mode)?)))
            else {
                break;
            };
            lock.waiters.pop_front();
            if let Some(s) = self.sessions.get_mut(&waiter.session) {
                s.waiting.remove(name);
            }
            self.grant_shared(name, waiter.session, waiter.mode, slot, cx);
        }
        self.drop_shared_if_empty(name);
    }

    fn drop_shared_if_empty(&mut self, name: &str) {
        if self.shared.get(name).is_some_and(SharedLock::is_empty) {
            self.shared.remove(name);
        }
    }

    /// `session`'s grant of `name` if its token is `token`; otherwise the
    /// stale-token error.
    pub(crate) fn shared_grant_of(
        &self,
        session: SessionId,
        name: &str,
        token: FencingToken,
    ) -> Result<SharedGrant, CommandError> {
        let lock = self.shared.get(name);
        lock.and_then(|l| l.grant_of(session))
            .filter(|g| g.token == token)
            .copied()
            .ok_or_else(|| CommandError::StaleToken {
                name: name.to_owned(),
                presented: token,
                current: lock.and_then(SharedLock::highest_token),
            })
    }

    /// Ends `session`'s grant of `name`; with `delay_ms` > 0 (its session
    /// expired or was revoked) what the grant excluded stays excluded that
    /// long. Waiters that fit are granted now either way (another permit,
    /// or readers beside a delayed reader, may be free).
    pub(crate) fn release_shared(
        &mut self,
        name: &str,
        session: SessionId,
        reason: ReleaseReason,
        delay_ms: u64,
        cx: &mut Cx,
    ) {
        let until_ms = self.now_ms.saturating_add(delay_ms);
        let Some(lock) = self.shared.get_mut(name) else {
            return;
        };
        let Some(at) = lock.grants.iter().position(|g| g.session == session) else {
            return;
        };
        let grant = lock.grants.remove(at);
        let delayed = delay_ms > 0;
        if delayed {
            lock.delays.push(SharedDelay {
                until_ms,
                mode: grant.mode,
                slot: grant.slot,
            });
            self.delays.insert((until_ms, name.to_owned()));
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.held.remove(name);
        }
        cx.events.push(Event::LockReleased {
            name: name.to_owned(),
            session,
            token: grant.token,
            reason,
            lock_delay_ms: delayed.then_some(delay_ms),
        });
        self.grant_next_shared(name, cx);
    }

    /// Removes `session` from the queue of `name` for `reason`; the
    /// waiters behind it may fit now (a writer left the front).
    pub(crate) fn leave_shared_queue(
        &mut self,
        name: &str,
        session: SessionId,
        reason: ReleaseReason,
        cx: &mut Cx,
    ) {
        let Some(lock) = self.shared.get_mut(name) else {
            return;
        };
        let Some(at) = lock.waiters.iter().position(|w| w.session == session) else {
            return;
        };
        lock.waiters.remove(at);
        if let Some(s) = self.sessions.get_mut(&session) {
            s.waiting.remove(name);
        }
        cx.events.push(Event::LockLeftQueue {
            name: name.to_owned(),
            session,
            reason,
        });
        self.grant_next_shared(name, cx);
    }

    /// A cancel of `session`'s acquire of `name`: its grant, if the grant
    /// raced the cancel, is released (no orphan holder); else it leaves
    /// the queue.
    pub(crate) fn cancel_shared(&mut self, session: SessionId, name: &str, cx: &mut Cx) -> Reply {
        let held = self
            .shared
            .get(name)
            .and_then(|l| l.grant_of(session))
            .map(|g| g.token);
        match held {
            Some(token) => {
                self.release_shared(name, session, ReleaseReason::Cancelled, 0, cx);
                Reply::Cancelled {
                    released: Some(token),
                }
            }
            None => {
                self.leave_shared_queue(name, session, ReleaseReason::Cancelled, cx);
                Reply::Cancelled { released: None }
            }
        }
    }

    /// Ends the lock-delays of `name` whose time has come (its index entry
    /// was taken out by the caller), granting the waiters that fit now.
    pub(crate) fn end_shared_delays(&mut self, name: &str, cx: &mut Cx) {
        let now_ms = self.now_ms;
        let Some(lock) = self.shared.get_mut(name) else {
            return;
        };
        let before = lock.delays.len();
        lock.delays.retain(|d| d.until_ms > now_ms);
        if lock.delays.len() < before {
            cx.events.push(Event::LockDelayEnded {
                name: name.to_owned(),
            });
        }
        self.grant_next_shared(name, cx);
    }

    /// Whether new readers are admitted past waiting writers (canary
    /// builds only: the writer-starvation canary).
    fn canary_readers_barge(mode: Mode) -> bool {
        #[cfg(feature = "canary")]
        return mode == Mode::Read && crate::locks::machine::canary::readers_barge();
        #[cfg(not(feature = "canary"))]
        {
            let _ = mode;
            false
        }
    }
}

/// What a session holding `grant` is told.
pub(crate) fn granted_reply(grant: &SharedGrant) -> Reply {
    Reply::GrantedShared {
        token: grant.token,
        shared: SharedGranted::of(grant),
    }
}
