//! One watcher for the leases of all of a client's sessions.
//!
//! A session must be marked lost the moment its lease runs out, and within
//! [`LEASE_CHECK_PERIOD`] of that after a suspend (timers stop while the
//! machine sleeps; the lease clock does not, see `clock.rs`). A task per
//! session that looks every period costs four wake-ups a second per
//! session: at 100,000 sessions in one process, that is the process's
//! whole core. One task per client instead keeps every session in a heap
//! by lease end and sleeps until the earliest end, or one period at most.
//!
//! Each watched session has exactly one entry. An entry whose end has come
//! is looked at again: a renewed session goes back with its new end, a lost
//! or dropped one leaves, and one whose lease has run out is marked lost.
//! So the heap holds at most one entry per session not yet found gone.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::session::{Session, LEASE_CHECK_PERIOD};

/// Watches the leases of sessions that read one clock. Cheap to clone:
/// clones share the watcher. Every session it watches keeps it alive, so
/// a session outliving its client is still watched.
#[derive(Clone)]
pub(crate) struct LeaseWatch {
    shared: Arc<Shared>,
}

struct Shared {
    clock: Clock,
    due: Mutex<Due>,
    /// Wakes the watcher: an entry was added (it may end sooner than the
    /// one the watcher sleeps for).
    added: Notify,
}

#[derive(Default)]
struct Due {
    heap: BinaryHeap<Reverse<Entry>>,
    /// Tells entries with the same end apart (and orders them by arrival).
    added: u64,
    /// The watcher task, once started: started again if it has ended (its
    /// runtime shut down), so a client moved to another runtime is still
    /// watched.
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Entry {
    /// When (on the watch's clock) the session's lease ends, as of when
    /// the entry was made.
    ends: Duration,
    seq: u64,
    session: Weak<Session>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.ends, self.seq) == (other.ends, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ends, self.seq).cmp(&(other.ends, other.seq))
    }
}

impl LeaseWatch {
    /// A watcher for sessions reading `clock`; its task starts with the
    /// first session watched.
    pub(crate) fn new(clock: Clock) -> LeaseWatch {
        LeaseWatch {
            shared: Arc::new(Shared {
                clock,
                due: Mutex::new(Due::default()),
                added: Notify::new(),
            }),
        }
    }

    /// The clock the sessions it watches must read.
    pub(crate) fn clock(&self) -> Clock {
        self.shared.clock.clone()
    }

    /// Watches `session` until it is lost or dropped: marks it lost once
    /// its lease runs out. Must be called within a Tokio runtime.
    pub(crate) fn watch(&self, session: &Arc<Session>) {
        let ends = session.valid_until();
        let mut due = self.shared.lock();
        due.added += 1;
        let seq = due.added;
        due.heap.push(Reverse(Entry {
            ends,
            seq,
            session: Arc::downgrade(session),
        }));
        if due.task.as_ref().is_none_or(|task| task.is_finished()) {
            due.task = Some(tokio::spawn(watch_leases(Arc::downgrade(&self.shared))));
        } else {
            drop(due);
            self.shared.added.notify_one();
        }
    }

    /// How many sessions it has entries for (lost or dropped ones leave at
    /// their lease's end).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.shared.lock().heap.len()
    }
}

impl std::fmt::Debug for LeaseWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseWatch")
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Due> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Settles every entry whose end has come (sessions whose lease ran
    /// out are marked lost once the heap is let go, so new sessions are not
    /// held up); returns how long until the next end, at most
    /// [`LEASE_CHECK_PERIOD`].
    fn settle_due(&self) -> Duration {
        let now = self.clock.now();
        let mut ran_out = Vec::new();
        {
            let mut due = self.lock();
            while let Some(Reverse(entry)) = due.heap.peek() {
                if entry.ends > now {
                    break;
                }
                let Some(Reverse(entry)) = due.heap.pop() else {
                    break;
                };
                let Some(session) = entry.session.upgrade() else {
                    continue;
                };
                if session.is_lost() {
                    continue;
                }
                let ends = session.valid_until();
                if now >= ends {
                    ran_out.push(session);
                } else {
                    due.heap.push(Reverse(Entry { ends, ..entry }));
                }
            }
        }
        for session in ran_out {
            session.mark_lost("lease ran out before a keepalive was answered");
        }
        let next = self.lock().heap.peek().map(|Reverse(entry)| entry.ends);
        match next {
            // From the clock now: marking may have taken a while.
            Some(next) => next
                .saturating_sub(self.clock.now())
                .min(LEASE_CHECK_PERIOD),
            None => LEASE_CHECK_PERIOD,
        }
    }
}

/// The watcher: settles what is due, then sleeps until the next end (or a
/// period, or a new entry). Ends once nothing holds the watch any more.
async fn watch_leases(shared: Weak<Shared>) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let nap = shared.settle_due();
        // A permit stored by an add since `settle_due` ends this at once.
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = shared.added.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{Lease, LeaseRule};

    /// The tokio clock (paused in these tests, so it moves only when every
    /// task sleeps) as a lease clock: timers and lease agree, as they do
    /// while a machine is awake.
    fn tokio_clock() -> Clock {
        let start = tokio::time::Instant::now();
        Clock::from_fn(move || Duration::from_secs(1000) + start.elapsed())
    }

    fn session(watch: &LeaseWatch, id: u64, ttl: Duration) -> Arc<Session> {
        let rule = LeaseRule::new(ttl, 500, Duration::from_millis(10)).unwrap();
        let mut lease = Lease::new(rule);
        lease.on_answered(watch.clock().now());
        Session::start(id, ttl, lease, watch)
    }

    fn alive_tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    #[tokio::test(start_paused = true)]
    async fn one_task_watches_every_session_of_a_client() {
        let before = alive_tasks();
        let watch = LeaseWatch::new(tokio_clock());
        let sessions: Vec<_> = (0..1000)
            .map(|id| session(&watch, id, Duration::from_secs(10)))
            .collect();
        assert_eq!(alive_tasks(), before + 1);
        assert_eq!(watch.entries(), 1000);
        assert!(sessions.iter().all(|s| s.is_valid()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_is_lost_when_its_lease_ends_not_a_period_later() {
        let watch = LeaseWatch::new(tokio_clock());
        // Different ends, none on a period's boundary.
        let sessions: Vec<_> = [1_370u64, 2_930, 4_410]
            .iter()
            .enumerate()
            .map(|(id, ms)| session(&watch, id as u64, Duration::from_millis(*ms)))
            .collect();
        for s in &sessions {
            let ends = s.valid_until();
            s.lost().await;
            let late = watch.clock().now().saturating_sub(ends);
            assert!(
                s.now() >= ends,
                "marked lost before its lease ended: {:?} early",
                ends - s.now()
            );
            // The timer's resolution is a millisecond.
            assert!(
                late <= Duration::from_millis(2),
                "lost {late:?} after its lease ended"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_session_is_kept_past_its_first_end() {
        let watch = LeaseWatch::new(tokio_clock());
        let ttl = Duration::from_secs(3);
        let kept = session(&watch, 1, ttl);
        let left = session(&watch, 2, ttl);
        let first_end = kept.valid_until();
        // Renew one at a third of its TTL, four times over.
        for _ in 0..4 {
            tokio::time::sleep(ttl / 3).await;
            kept.answered(kept.now());
        }
        assert!(kept.now() > first_end);
        assert!(kept.is_valid());
        assert!(!left.is_valid());
        assert!(left.is_lost(), "the unrenewed session was not marked lost");
        assert!(!kept.is_lost());
    }

    #[tokio::test(start_paused = true)]
    async fn gone_sessions_leave_and_the_task_ends_with_the_last_holder() {
        let before = alive_tasks();
        let watch = LeaseWatch::new(tokio_clock());
        let sessions: Vec<_> = (0..10)
            .map(|id| session(&watch, id, Duration::from_secs(5)))
            .collect();
        for s in &sessions[..5] {
            s.mark_closed();
        }
        drop(sessions);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(watch.entries(), 0);
        drop(watch);
        tokio::time::sleep(LEASE_CHECK_PERIOD * 2).await;
        assert_eq!(alive_tasks(), before);
    }
}
