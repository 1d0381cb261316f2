//! Structural invariants of the state machine, checked after every apply
//! in debug builds, by the property tests, and on snapshot restore.

use std::collections::BTreeSet;

use crate::locks::command::{CURRENT_PROTOCOL, PROTOCOL_V2, PROTOCOL_V3};
use crate::locks::machine::StateMachine;
use crate::locks::shared::{Mode, SharedKind, MAX_HOLDERS, MAX_PERMITS};

impl StateMachine {
    /// Checks every structural invariant the simulator relies on; `Err`
    /// names the first one broken. Cost is linear in the state size.
    pub fn check_invariants(&self) -> Result<(), String> {
        let limits = &self.config.limits;
        if self.sessions.len() > limits.max_sessions as usize {
            return Err("more sessions than max_sessions".into());
        }
        if self.protocol < PROTOCOL_V2 || self.protocol > CURRENT_PROTOCOL {
            return Err(format!(
                "protocol {} unknown to this release",
                self.protocol
            ));
        }
        let keyed = self
            .sessions
            .values()
            .filter(|s| s.open_key != 0 && s.owner.is_some())
            .count();
        let indexed = self.open_keys.iter().all(|((owner, key), id)| {
            self.sessions
                .get(id)
                .is_some_and(|s| s.open_key == *key && s.owner.as_ref() == Some(owner))
        });
        if keyed != self.open_keys.len() || !indexed {
            return Err("the open-key index disagrees with the sessions".into());
        }
        if self.value_bytes != self.value_bytes_from_scratch() {
            return Err("a session's value bytes disagree with the elections".into());
        }
        for (name, e) in &self.elections {
            if e.history_bytes_from_scratch() != e.history_bytes() {
                return Err(format!("election {name:?} miscounts its history's bytes"));
            }
        }
        if self.state_bytes != self.state_bytes_from_scratch() {
            return Err(format!(
                "the state's counted bytes ({}) disagree with a count from scratch ({})",
                self.state_bytes,
                self.state_bytes_from_scratch()
            ));
        }
        if self.usage != self.usage_from_sessions() {
            return Err("an identity's usage disagrees with its sessions".into());
        }
        for (id, s) in &self.sessions {
            // The version-1 snapshot layout, written below protocol 3, has
            // no owners: it may drop none.
            if s.owner.is_some() && self.protocol < PROTOCOL_V3 {
                return Err(format!("{id:?} has an owner below protocol 3"));
            }
            if s.lock_count() > limits.max_locks_per_session as usize {
                return Err(format!("{id:?} over max_locks_per_session"));
            }
            for name in &s.held {
                if let Some(lock) = self.shared.get(name) {
                    if lock.grant_of(*id).is_none() {
                        return Err(format!("{id:?} lists {name:?} as held but has no grant"));
                    }
                    continue;
                }
                if self.holder(name).map(|h| h.session) != Some(*id) {
                    return Err(format!("{id:?} lists {name:?} as held but is not holder"));
                }
            }
            for name in &s.waiting {
                let queued = match self.shared.get(name) {
                    Some(lock) => lock.position(*id),
                    None => self.locks.get(name).and_then(|l| l.position(*id)),
                };
                if queued.is_none() {
                    return Err(format!("{id:?} lists {name:?} as waited but is not queued"));
                }
            }
            for name in &s.campaigns {
                let e = self.elections.get(name);
                let leads = e.and_then(|e| e.leader.as_ref()).map(|l| l.session) == Some(*id);
                let queued = e.and_then(|e| e.position(*id)).is_some();
                if !leads && !queued {
                    return Err(format!(
                        "{id:?} lists {name:?} as campaign but is not in it"
                    ));
                }
            }
        }
        for (name, lock) in &self.locks {
            if lock.is_empty() {
                return Err(format!("empty lock {name:?} kept"));
            }
            if let Some(h) = lock.holder {
                if h.token.0 > self.revision {
                    return Err(format!("{name:?} token above revision"));
                }
                let listed = self
                    .sessions
                    .get(&h.session)
                    .is_some_and(|s| s.held.contains(name));
                if !listed {
                    return Err(format!("{name:?} holder not a live session holding it"));
                }
                if lock.delayed_until_ms.is_some() {
                    return Err(format!("{name:?} held during lock-delay"));
                }
            } else if lock.delayed_until_ms.is_none() && !lock.waiters.is_empty() {
                return Err(format!("{name:?} free with waiters"));
            } else if !lock.value.is_empty() {
                return Err(format!("{name:?} free with a value"));
            }
            if lock.value.len() > limits.max_value_bytes as usize
                || lock
                    .waiters
                    .iter()
                    .any(|w| w.value.len() > limits.max_value_bytes as usize)
            {
                return Err(format!("{name:?} holds a value over max_value_bytes"));
            }
            if lock.waiters.len() > limits.max_waiters_per_lock as usize {
                return Err(format!("{name:?} over max_waiters_per_lock"));
            }
            let mut seen = BTreeSet::new();
            for w in lock.waiters.iter().map(|w| w.session) {
                if !seen.insert(w) || lock.holder.map(|h| h.session) == Some(w) {
                    return Err(format!("{name:?} queues {w:?} twice or as holder"));
                }
                if !self
                    .sessions
                    .get(&w)
                    .is_some_and(|s| s.waiting.contains(name))
                {
                    return Err(format!("{name:?} queues {w:?} which does not list it"));
                }
            }
            if let Some(until) = lock.delayed_until_ms {
                if !self.delays.contains(&(until, name.clone())) {
                    return Err(format!("{name:?} delay not indexed"));
                }
            }
        }
        self.check_shared_invariants()?;
        for (until, name) in &self.delays {
            if let Some(lock) = self.shared.get(name) {
                if !lock.delays.iter().any(|d| d.until_ms == *until) {
                    return Err(format!("delay index entry for {name:?} is stale"));
                }
                continue;
            }
            if self.locks.get(name).and_then(|l| l.delayed_until_ms) != Some(*until) {
                return Err(format!("delay index entry for {name:?} is stale"));
            }
        }
        if self.elections.len() > limits.max_elections as usize {
            return Err("more elections than max_elections".into());
        }
        for (name, e) in &self.elections {
            if e.leader.is_none() && !e.candidates.is_empty() {
                return Err(format!("election {name:?} has candidates but no leader"));
            }
            let members = e.leader.iter().chain(e.candidates.iter());
            let mut seen = BTreeSet::new();
            for m in members {
                if !seen.insert(m.session) {
                    return Err(format!("election {name:?} lists {:?} twice", m.session));
                }
                if !self
                    .sessions
                    .get(&m.session)
                    .is_some_and(|s| s.campaigns.contains(name))
                {
                    return Err(format!("election {name:?} member {:?} not live", m.session));
                }
            }
            if e.history.len() > self.config.election_history_len as usize {
                return Err(format!("election {name:?} history over its bound"));
            }
        }
        Ok(())
    }

    /// The semaphores' and read/write locks' invariants: never more
    /// holders than permits, never a writer beside anyone, readers holding
    /// together share one token, no waiter left that fits.
    fn check_shared_invariants(&self) -> Result<(), String> {
        // The canaries that break these rules must be caught by the
        // simulator's own checks (of what clients believe), not here.
        #[cfg(feature = "canary")]
        {
            use crate::locks::machine::canary;
            if canary::extra_permit() || canary::read_beside_writer() {
                return Ok(());
            }
        }
        let limits = &self.config.limits;
        if !self.shared.is_empty() && self.protocol < PROTOCOL_V3 {
            return Err("a semaphore or read/write lock below protocol 3".into());
        }
        for (name, lock) in &self.shared {
            if lock.is_empty() {
                return Err(format!("empty shared lock {name:?} kept"));
            }
            if self.locks.contains_key(name) {
                return Err(format!("{name:?} is both a lock and a shared lock"));
            }
            match lock.kind {
                SharedKind::Semaphore { permits } => {
                    if lock.read_epoch.is_some() {
                        return Err(format!("semaphore {name:?} has a read epoch"));
                    }
                    if !(1..=MAX_PERMITS).contains(&permits) {
                        return Err(format!("semaphore {name:?} has {permits} permits"));
                    }
                    let mut slots = BTreeSet::new();
                    for g in &lock.grants {
                        if g.mode != Mode::Permit || g.slot >= permits || !slots.insert(g.slot) {
                            return Err(format!(
                                "semaphore {name:?} grants slot {} twice, or out of range",
                                g.slot
                            ));
                        }
                    }
                    if lock.delays.iter().any(|d| slots.contains(&d.slot)) {
                        return Err(format!("semaphore {name:?} grants a slot in lock-delay"));
                    }
                }
                SharedKind::ReadWrite => {
                    let writers = lock.grants.iter().filter(|g| g.mode == Mode::Write).count();
                    if writers > 0 && lock.grants.len() > 1 {
                        return Err(format!("{name:?} has a writer beside another holder"));
                    }
                    if writers > 0 && !lock.delays.is_empty() {
                        return Err(format!("{name:?} has a writer during a lock-delay"));
                    }
                    let write_delayed = lock.delays.iter().any(|d| d.mode == Mode::Write);
                    if write_delayed && !lock.grants.is_empty() {
                        return Err(format!("{name:?} is held during a writer's lock-delay"));
                    }
                    let readers_fence_apart = lock
                        .grants
                        .iter()
                        .any(|g| g.mode == Mode::Read && Some(g.fencing) != lock.read_epoch);
                    if readers_fence_apart {
                        return Err(format!("a reader of {name:?} fences apart from its epoch"));
                    }
                    if writers > 0 && lock.read_epoch.is_some() {
                        return Err(format!("{name:?} keeps a read epoch under a writer"));
                    }
                    if lock.grants.iter().any(|g| g.mode == Mode::Permit) {
                        return Err(format!("read/write lock {name:?} grants a permit"));
                    }
                }
            }
            if lock.front_fits() {
                return Err(format!("{name:?} leaves a waiter that fits"));
            }
            if lock.grants.len() > MAX_HOLDERS {
                return Err(format!("{name:?} has more than {MAX_HOLDERS} grants"));
            }
            if lock.waiters.len() > limits.max_waiters_per_lock as usize {
                return Err(format!("{name:?} over max_waiters_per_lock"));
            }
            let mut seen = BTreeSet::new();
            let mut tokens = BTreeSet::new();
            for g in &lock.grants {
                if g.token.0 > self.revision {
                    return Err(format!("{name:?} token above revision"));
                }
                if !tokens.insert(g.token) || g.fencing > g.token {
                    return Err(format!("{name:?} grants token {:?} twice", g.token));
                }
                if g.mode != Mode::Read && g.fencing != g.token {
                    return Err(format!("{name:?} fences a permit or writer apart"));
                }
                if !seen.insert(g.session)
                    || !self
                        .sessions
                        .get(&g.session)
                        .is_some_and(|s| s.held.contains(name))
                {
                    return Err(format!(
                        "{name:?} grant of {:?} twice or not listed",
                        g.session
                    ));
                }
            }
            for w in &lock.waiters {
                let fits_kind = match lock.kind {
                    SharedKind::Semaphore { .. } => w.mode == Mode::Permit,
                    SharedKind::ReadWrite => w.mode != Mode::Permit,
                };
                if !fits_kind
                    || !seen.insert(w.session)
                    || !self
                        .sessions
                        .get(&w.session)
                        .is_some_and(|s| s.waiting.contains(name))
                {
                    return Err(format!(
                        "{name:?} queues {:?} twice, as holder, unlisted or in the wrong mode",
                        w.session
                    ));
                }
            }
            for d in &lock.delays {
                if !self.delays.contains(&(d.until_ms, name.clone())) {
                    return Err(format!("{name:?} delay not indexed"));
                }
            }
        }
        Ok(())
    }
}
