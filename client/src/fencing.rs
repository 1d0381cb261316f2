//! The resource side of fencing: what a database, a file store or a queue
//! that a lock protects does with the token each write carries, so that a
//! holder paused past its lease (which may still believe it holds the lock)
//! cannot overwrite its successor's work.
//!
//! Two rules, for two kinds of resource:
//!
//! - [`TokenFence`]: the resource keeps the highest token it has accepted
//!   and refuses lower ones (Kleppmann, "How to do distributed locking").
//!   No round trip, and no window: prefer it wherever the resource can keep
//!   one number per lock (durably, if it must survive its own restarts:
//!   [`TokenFence::new`] takes the number back).
//! - [`CheckedFence`]: a resource that cannot keep state asks the cluster
//!   whether the token is still the lock's current grant (Chubby's
//!   `CheckSequencer`) before each write. It costs a round trip, and it
//!   leaves a window: a grant that ends between the check and the write is
//!   not seen. Keep the write short, or use the first rule.
//!
//! A read/write lock's resource uses a [`TokenFence`] as a lock's does
//! (readers holding together present one token); a semaphore's keeps one
//! per permit slot ([`SlotFence`]). [`CheckedFence`] accepts any current
//! holder's token of either.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Client, Error};

/// Why a fence refused a write.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// A later grant of the lock exists (it wrote already, or the cluster
    /// says so): the writer's lock is gone; it must stop, not retry.
    #[error(
        "write with fencing token {presented} refused: the lock has passed on (now {current:?}); \
         stop writing and acquire the lock again"
    )]
    Stale {
        /// The token the write carried.
        presented: u64,
        /// The highest token accepted ([`TokenFence`]) or the lock's
        /// current grant ([`CheckedFence`]; `None`: nobody holds it).
        current: Option<u64>,
    },
    /// The cluster could not be asked ([`CheckedFence`]); nothing is
    /// known, so the write must not go ahead.
    #[error("could not check the fencing token with the cluster: {0}")]
    Cluster(#[from] Error),
}

/// A fence that remembers the highest token it has accepted (see the
/// module docs). Shared between threads as it is: admission is atomic.
#[derive(Debug, Default)]
pub struct TokenFence {
    highest: AtomicU64,
}

impl TokenFence {
    /// A fence that has accepted tokens up to `highest` (0: none), as the
    /// resource stored it.
    pub fn new(highest: u64) -> TokenFence {
        TokenFence {
            highest: AtomicU64::new(highest),
        }
    }

    /// Admits a write carrying `token` if it is at least the highest
    /// accepted (equal: the same grant writing again), and makes it the
    /// highest. A resource that keeps the number durably stores
    /// [`TokenFence::highest`] with the write it admitted.
    pub fn admit(&self, token: u64) -> Result<(), FenceError> {
        let mut highest = self.highest.load(Ordering::Acquire);
        loop {
            if token < highest {
                return Err(FenceError::Stale {
                    presented: token,
                    current: Some(highest),
                });
            }
            match self.highest.compare_exchange_weak(
                highest,
                token,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => highest = seen,
            }
        }
    }

    /// The highest token admitted so far.
    pub fn highest(&self) -> u64 {
        self.highest.load(Ordering::Acquire)
    }
}

/// A semaphore's fence: one [`TokenFence`] per slot, so that holders of
/// different permits never refuse each other, while a permit's earlier
/// holder is refused once its slot's later holder wrote (PROTOCOL.md,
/// "Semaphores and read/write locks"). A read/write lock needs no more
/// than a [`TokenFence`]: readers holding together present one token.
#[derive(Debug)]
pub struct SlotFence {
    slots: Vec<TokenFence>,
}

impl SlotFence {
    /// A fence for a semaphore of `permits` permits.
    pub fn new(permits: u32) -> SlotFence {
        SlotFence {
            slots: (0..permits).map(|_| TokenFence::default()).collect(),
        }
    }

    /// Admits a write carrying `token` from the holder of `slot` (see
    /// [`TokenFence::admit`]); a slot the semaphore does not have is
    /// refused as stale (its holder is not one of this semaphore's).
    pub fn admit(&self, slot: u32, token: u64) -> Result<(), FenceError> {
        match self.slots.get(slot as usize) {
            Some(fence) => fence.admit(token),
            None => Err(FenceError::Stale {
                presented: token,
                current: None,
            }),
        }
    }
}

/// A fence that asks the cluster, before each write, whether the write's
/// token is still the current grant of the lock (see the module docs for
/// its window). The client's identity needs `read` on the lock's name.
#[derive(Clone)]
pub struct CheckedFence {
    client: Client,
    lock: String,
}

impl CheckedFence {
    /// A fence for writes under lock `lock`, asking through `client`.
    pub fn new(client: Client, lock: impl Into<String>) -> CheckedFence {
        CheckedFence {
            client,
            lock: lock.into(),
        }
    }

    /// Admits a write carrying `token` if it is the lock's current grant.
    pub async fn admit(&self, token: u64) -> Result<(), FenceError> {
        let check = self.client.check_token(&self.lock, token).await?;
        if check.current {
            Ok(())
        } else {
            Err(FenceError::Stale {
                presented: token,
                current: check.current_token,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_fence_admits_the_same_or_a_later_grant_and_refuses_an_earlier_one() {
        let fence = TokenFence::new(5);
        assert!(fence.admit(5).is_ok(), "the same grant writes again");
        assert!(fence.admit(9).is_ok());
        let stale = fence.admit(7);
        assert!(
            matches!(
                stale,
                Err(FenceError::Stale {
                    presented: 7,
                    current: Some(9)
                })
            ),
            "{stale:?}"
        );
        assert_eq!(fence.highest(), 9);
    }

    #[test]
    fn a_slot_fence_fences_each_slot_apart() {
        let fence = SlotFence::new(2);
        assert!(fence.admit(0, 9).is_ok());
        assert!(fence.admit(1, 5).is_ok(), "another slot's lower token");
        assert!(fence.admit(0, 7).is_err(), "slot 0's earlier holder");
        assert!(fence.admit(2, 10).is_err(), "no such slot");
    }

    #[test]
    fn racing_writers_leave_the_highest_token_admitted() {
        let fence = std::sync::Arc::new(TokenFence::default());
        let threads: Vec<_> = (1..=8u64)
            .map(|t| {
                let fence = fence.clone();
                std::thread::spawn(move || {
                    for i in 0..1_000u64 {
                        let _ = fence.admit(i * 8 + t);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a writer panicked");
        }
        assert_eq!(fence.highest(), 999 * 8 + 8);
    }
}
