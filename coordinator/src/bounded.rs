//! A queue bounded in items and in bytes, for the node's queues that carry
//! peer messages (a count alone would let a few thousand large messages
//! hold gigabytes).
//!
//! Every item carries a charge in bytes taken from the queue's budget when
//! it is sent and given back when its receiver drops the [`Held`] wrapper,
//! so the budget covers items queued *and* items taken off the queue but
//! not yet handled.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// An item and the bytes it holds of its queue's budget.
#[derive(Debug)]
pub struct Held<T> {
    /// The item.
    pub item: T,
    /// Given back to the budget when dropped.
    charge: Charge,
}

/// Bytes held of a queue's budget, given back when dropped.
#[derive(Debug)]
pub struct Charge {
    _permit: Option<OwnedSemaphorePermit>,
}

impl<T> Held<T> {
    /// An item charged to no budget (for tests and for items made here).
    pub fn free(item: T) -> Held<T> {
        Held {
            item,
            charge: Charge { _permit: None },
        }
    }

    /// The item, and its charge to keep until the item is dealt with.
    pub fn into_parts(self) -> (T, Charge) {
        (self.item, self.charge)
    }
}

/// The sending half; cheap to clone.
#[derive(Debug)]
pub struct Sender<T> {
    items: mpsc::Sender<Held<T>>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            items: self.items.clone(),
            budget: self.budget.clone(),
            budget_bytes: self.budget_bytes,
        }
    }
}

/// The receiving half.
pub type Receiver<T> = mpsc::Receiver<Held<T>>;

/// A queue of at most `max_items` items and `max_bytes` bytes of charges.
pub fn channel<T>(max_items: usize, max_bytes: usize) -> (Sender<T>, Receiver<T>) {
    let (items, rx) = mpsc::channel(max_items);
    // Semaphore permits are capped; no queue here needs more.
    let budget_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let sender = Sender {
        items,
        budget: Arc::new(Semaphore::new(budget_bytes)),
        budget_bytes,
    };
    (sender, rx)
}

/// Why `try_send` did not queue the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrySendError {
    /// The queue is at its item or byte bound.
    Full,
    /// The receiver is gone.
    Closed,
}

impl<T> Sender<T> {
    /// The charge for `bytes`: an item larger than the whole budget is
    /// charged the whole budget, so it waits for an empty queue instead of
    /// forever.
    fn charge(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.clamp(1, self.budget_bytes)).unwrap_or(u32::MAX)
    }

    /// Queues `item` charged `bytes` if there is room now.
    pub fn try_send(&self, item: T, bytes: usize) -> Result<(), TrySendError> {
        let charge = self
            .budget
            .clone()
            .try_acquire_many_owned(self.charge(bytes))
            .map_err(|_| TrySendError::Full)?;
        let held = Held {
            item,
            charge: Charge {
                _permit: Some(charge),
            },
        };
        self.items.try_send(held).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TrySendError::Full,
            mpsc::error::TrySendError::Closed(_) => TrySendError::Closed,
        })
    }

    /// Queues `item` charged `bytes`, waiting for room (backpressure).
    /// Fails only when the receiver is gone.
    pub async fn send(&self, item: T, bytes: usize) -> Result<(), TrySendError> {
        let charge = self
            .budget
            .clone()
            .acquire_many_owned(self.charge(bytes))
            .await
            .map_err(|_| TrySendError::Closed)?;
        let held = Held {
            item,
            charge: Charge {
                _permit: Some(charge),
            },
        };
        self.items
            .send(held)
            .await
            .map_err(|_| TrySendError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_byte_budget_refuses_what_does_not_fit_until_items_are_dropped() {
        let (tx, mut rx) = channel::<&str>(100, 10);
        assert_eq!(tx.try_send("a", 6), Ok(()));
        assert_eq!(tx.try_send("b", 6), Err(TrySendError::Full));
        assert_eq!(tx.try_send("c", 4), Ok(()));
        let first = rx.recv().await.expect("queued");
        // Taken off the queue but not dropped: still charged.
        assert_eq!(tx.try_send("d", 1), Err(TrySendError::Full));
        drop(first);
        assert_eq!(tx.try_send("d", 6), Ok(()));
    }

    #[tokio::test]
    async fn the_item_bound_holds_too() {
        let (tx, _rx) = channel::<u8>(2, 1_000);
        assert_eq!(tx.try_send(1, 1), Ok(()));
        assert_eq!(tx.try_send(2, 1), Ok(()));
        assert_eq!(tx.try_send(3, 1), Err(TrySendError::Full));
    }

    #[tokio::test]
    async fn an_item_larger_than_the_budget_waits_for_an_empty_queue() {
        let (tx, mut rx) = channel::<u8>(10, 10);
        assert_eq!(tx.try_send(1, 3), Ok(()));
        assert_eq!(tx.try_send(2, 1_000), Err(TrySendError::Full));
        drop(rx.recv().await);
        assert_eq!(tx.try_send(2, 1_000), Ok(()));
    }
}
