//! Locks held by more than one session at a time: counting semaphores and
//! read/write locks (see `PROTOCOL.md`, "Semaphores and read/write locks").
//!
//! One [`SharedLock`] per name, in its own table beside plain locks; a
//! name is of one kind while anyone holds, waits for or delays it.
//!
//! # Admission
//!
//! Waiters are granted strictly in FIFO order, each as soon as it fits
//! beside the current holders: a semaphore's waiter when a permit is free,
//! a reader when no writer holds (or is in lock-delay), a writer when
//! nobody holds. A new acquire is granted at once only when nobody waits
//! (no barging), so a writer queued behind readers is not starved by
//! readers arriving after it, and the readers queued behind a writer are
//! admitted together the moment it releases.
//!
//! # Fencing
//!
//! Every grant takes a new token from the machine's sequence: it names the
//! grant (releases, renewals and checks present it), so a session that
//! reads again names its new grant, not the one it released. What a
//! holder presents to the resource it protects is the grant's *fencing*
//! value:
//!
//! - a semaphore's grant takes the lowest free slot (`0..permits`); its
//!   fencing value is its token, and a resource fences per slot;
//! - a writer's fencing value is its token, above every grant before it;
//! - a reader's is the lock's *read epoch*: the token of the first reader
//!   granted since the lock was made or since the last writer's grant.
//!
//! Readers therefore present one value from one writer to the next, and a
//! resource that refuses anything below the highest value it saw refuses
//! every reader and writer from before the last writer, and a writer from
//! before the readers after it; it never refuses a reader for another
//! reader. (One token for both jobs, as an earlier draft had, let a stray
//! release of a reader's earlier grant end its later grant of the same
//! phase: the lock simulator, seed 12000270. A new epoch for every reader
//! after none held, as it then had, refused a force-released reader's
//! writes, within the lease its keepalives had promised, for the next
//! reader's: seed 13000037.) The epoch is kept while the lock is: a
//! reader whose grant ended by expiry, revocation or force-release keeps
//! it alive through its lock-delay, which outlasts that reader's lease.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::locks::command::{FencingToken, SessionId};

/// Most permits one semaphore may have.
pub const MAX_PERMITS: u32 = 1024;

/// Most grants one semaphore or read/write lock has at once: readers past
/// it wait their turn like any waiter. It bounds what a description of the
/// lock (and a lock watch's frame) carries, whatever `max_sessions` is.
pub const MAX_HOLDERS: usize = MAX_PERMITS as usize;

/// What kind of shared lock a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SharedKind {
    /// At most `permits` holders at once.
    Semaphore {
        /// The number of permits, fixed by the acquire that created it.
        permits: u32,
    },
    /// Shared (read) and exclusive (write) holders.
    ReadWrite,
}

impl SharedKind {
    /// The kind's name in messages.
    pub fn describe(self) -> String {
        match self {
            SharedKind::Semaphore { permits } => format!("a semaphore of {permits} permits"),
            SharedKind::ReadWrite => "a read/write lock".to_string(),
        }
    }
}

/// What a session asks of a shared lock, and what a grant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mode {
    /// One permit of a semaphore.
    Permit,
    /// Shared (read) mode of a read/write lock.
    Read,
    /// Exclusive (write) mode of a read/write lock.
    Write,
}

impl Mode {
    /// The mode's name in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Permit => "a permit",
            Mode::Read => "read (shared) mode",
            Mode::Write => "write (exclusive) mode",
        }
    }
}

/// One grant of a shared lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedGrant {
    /// Holding session.
    pub session: SessionId,
    /// The grant's own token, new from the sequence (see "Fencing").
    pub token: FencingToken,
    /// What its holder presents to the resource: the readers' shared value
    /// for a reader, its token otherwise.
    pub fencing: FencingToken,
    /// How it holds.
    pub mode: Mode,
    /// The semaphore slot it holds (0 for read/write locks).
    pub slot: u32,
    /// When it was granted, on the machine's logical clock.
    pub since_ms: u64,
}

/// A session queued for a shared lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedWaiter {
    /// The waiting session.
    pub session: SessionId,
    /// What it waits for.
    pub mode: Mode,
    /// When it joined the queue, on the machine's logical clock.
    pub since_ms: u64,
}

/// A lock-delay left by a grant that ended with its session (an expiry or
/// a revocation): what the grant excluded stays excluded until `until_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedDelay {
    /// On the machine's logical clock.
    pub until_ms: u64,
    /// The ended grant's mode: a permit delays its slot, a reader delays
    /// writers, a writer delays everyone.
    pub mode: Mode,
    /// The ended permit's slot (0 otherwise).
    pub slot: u32,
}

/// State of one semaphore or read/write lock. Removed from the machine
/// once nobody holds, waits for or delays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedLock {
    /// What it is.
    pub kind: SharedKind,
    /// Current grants, oldest first.
    pub grants: Vec<SharedGrant>,
    /// Sessions waiting, granted strictly front first.
    pub waiters: VecDeque<SharedWaiter>,
    /// Lock-delays in force.
    pub delays: Vec<SharedDelay>,
    /// A read/write lock's read epoch: what readers fence with (`None`
    /// until a reader is granted, and again from each writer's grant).
    pub read_epoch: Option<FencingToken>,
}

impl SharedLock {
    /// An empty lock of `kind`.
    pub fn new(kind: SharedKind) -> SharedLock {
        SharedLock {
            kind,
            grants: Vec::new(),
            waiters: VecDeque::new(),
            delays: Vec::new(),
            read_epoch: None,
        }
    }

    /// Whether it carries no state and may be dropped.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty() && self.waiters.is_empty() && self.delays.is_empty()
    }

    /// The slot a grant in `mode` would take now, ignoring the queue;
    /// `None` if it does not fit beside the holders and lock-delays.
    pub fn fits(&self, mode: Mode) -> Option<u32> {
        #[cfg(feature = "canary")]
        if let Some(slot) = self.canary_fits(mode) {
            return slot;
        }
        match (self.kind, mode) {
            (SharedKind::Semaphore { permits }, Mode::Permit) => (0..permits).find(|slot| {
                !self.grants.iter().any(|g| g.slot == *slot)
                    && !self.delays.iter().any(|d| d.slot == *slot)
            }),
            (SharedKind::ReadWrite, Mode::Read) => {
                let excluded = self.grants.iter().any(|g| g.mode == Mode::Write)
                    || self.delays.iter().any(|d| d.mode == Mode::Write)
                    || self.grants.len() >= MAX_HOLDERS;
                (!excluded).then_some(0)
            }
            (SharedKind::ReadWrite, Mode::Write) => {
                (self.grants.is_empty() && self.delays.is_empty()).then_some(0)
            }
            _ => None,
        }
    }

    /// Canary builds: the admission rules with one switched off (see
    /// [`crate::locks::machine::canary`]); `None`: not switched off.
    #[cfg(feature = "canary")]
    fn canary_fits(&self, mode: Mode) -> Option<Option<u32>> {
        use crate::locks::machine::canary;
        match (self.kind, mode) {
            // One permit too many: slot `permits` is handed out too.
            (SharedKind::Semaphore { permits }, Mode::Permit) if canary::extra_permit() => {
                Some((0..=permits).find(|slot| {
                    !self.grants.iter().any(|g| g.slot == *slot)
                        && !self.delays.iter().any(|d| d.slot == *slot)
                }))
            }
            // A reader admitted beside a writer.
            (SharedKind::ReadWrite, Mode::Read) if canary::read_beside_writer() => Some(Some(0)),
            _ => None,
        }
    }

    /// The fencing value a grant in `mode` joins instead of its own
    /// token: the read epoch, for a reader (see "Fencing").
    pub fn joined_fencing(&self, mode: Mode) -> Option<FencingToken> {
        match mode {
            Mode::Read => self.read_epoch,
            Mode::Permit | Mode::Write => None,
        }
    }

    /// The grant `session` holds, if any.
    pub fn grant_of(&self, session: SessionId) -> Option<&SharedGrant> {
        self.grants.iter().find(|g| g.session == session)
    }

    /// 1-based position of `session` in the queue, if queued.
    pub fn position(&self, session: SessionId) -> Option<u32> {
        self.waiters
            .iter()
            .position(|w| w.session == session)
            .map(|i| u32::try_from(i + 1).unwrap_or(u32::MAX))
    }

    /// The highest token among the current grants, if any is held.
    pub fn highest_token(&self) -> Option<FencingToken> {
        self.grants.iter().map(|g| g.token).max()
    }

    /// The highest fencing value among the current grants, if any is held.
    pub fn highest_fencing(&self) -> Option<FencingToken> {
        self.grants.iter().map(|g| g.fencing).max()
    }

    /// When the last lock-delay that keeps `mode` out ends, if one does.
    pub fn delayed_until_ms(&self, mode: Mode) -> Option<u64> {
        self.delays
            .iter()
            .filter(|d| match (self.kind, mode) {
                (SharedKind::ReadWrite, Mode::Read) => d.mode == Mode::Write,
                _ => true,
            })
            .map(|d| d.until_ms)
            .max()
    }

    /// Whether the front waiter could be granted now (an invariant after
    /// every apply: it is not).
    pub fn front_fits(&self) -> bool {
        self.waiters
            .front()
            .is_some_and(|w| self.fits(w.mode).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(session: u64, token: u64, mode: Mode, slot: u32) -> SharedGrant {
        SharedGrant {
            session: SessionId(session),
            token: FencingToken(token),
            fencing: FencingToken(token),
            mode,
            slot,
            since_ms: 0,
        }
    }

    #[test]
    fn a_semaphore_hands_out_the_lowest_free_slot_and_no_more_than_its_permits() {
        let mut s = SharedLock::new(SharedKind::Semaphore { permits: 2 });
        assert_eq!(s.fits(Mode::Permit), Some(0));
        s.grants.push(grant(1, 5, Mode::Permit, 0));
        assert_eq!(s.fits(Mode::Permit), Some(1));
        s.delays.push(SharedDelay {
            until_ms: 10,
            mode: Mode::Permit,
            slot: 1,
        });
        assert_eq!(s.fits(Mode::Permit), None, "slot 1 is in lock-delay");
        s.grants.clear();
        assert_eq!(s.fits(Mode::Permit), Some(0));
        assert_eq!(s.fits(Mode::Read), None, "a semaphore has no modes");
    }

    #[test]
    fn readers_share_with_readers_and_writers_with_nobody() {
        let mut rw = SharedLock::new(SharedKind::ReadWrite);
        assert_eq!(rw.fits(Mode::Write), Some(0));
        rw.grants.push(grant(1, 7, Mode::Read, 0));
        rw.read_epoch = Some(FencingToken(7));
        assert_eq!(rw.fits(Mode::Read), Some(0));
        assert_eq!(rw.fits(Mode::Write), None);
        assert_eq!(rw.joined_fencing(Mode::Read), Some(FencingToken(7)));
        assert_eq!(rw.joined_fencing(Mode::Write), None);
        rw.grants.clear();
        rw.delays.push(SharedDelay {
            until_ms: 10,
            mode: Mode::Read,
            slot: 0,
        });
        assert_eq!(
            rw.fits(Mode::Read),
            Some(0),
            "an expired reader delays writers only"
        );
        assert_eq!(rw.fits(Mode::Write), None);
        assert_eq!(rw.delayed_until_ms(Mode::Read), None);
        assert_eq!(rw.delayed_until_ms(Mode::Write), Some(10));
        rw.delays[0].mode = Mode::Write;
        assert_eq!(
            rw.fits(Mode::Read),
            None,
            "an expired writer delays everyone"
        );
        assert_eq!(
            rw.fits(Mode::Permit),
            None,
            "a read/write lock has no permits"
        );
    }
}
