//! Lock watch streams: the lock now (or the changes after a resume point),
//! then every later change, never a silent gap.
//!
//! What a change is and which node can resume from where is decided by the
//! core's [`paxlock_core::lock_watch`]; this module streams it.

use paxlock::proto::{self, lock_change, lock_watch_event::Kind, LockWatchEvent};
use paxlock_core::inspect::Member;
use std::sync::Arc;

use paxlock_core::lock_watch::{LockChange, LockUpdate};
use tokio::sync::broadcast;

use crate::transport::watch_queue::WatchSender;

use super::inspect::{lock_info, session_ref};
use super::state::Shared;
use super::watch::may_still_read;
use crate::locks::{Identity, ReleaseReason};

/// Streams lock `name`'s changes after `after_index` (0: the lock now,
/// then its changes) into `out`, until the receiver goes away or the
/// access rules no longer let `caller` read it (the stream then ends with
/// a `PERMISSION_DENIED` frame).
pub async fn stream(
    shared: &Shared,
    caller: &Identity,
    name: String,
    after_index: u64,
    out: WatchSender<LockWatchEvent>,
) {
    // Counted open, then subscribed, before reading the state or the
    // history, so nothing falls between them.
    let _open = shared.lock_watch_open();
    let live = shared.subscribe_lock(&name);
    let watch = Watch {
        shared,
        caller,
        name: &name,
        out: &out,
    };
    watch.follow(after_index, live).await;
    // The last watch of a lock takes its channel with it.
    shared
        .lock_watchers
        .remove_if(&name, |_, tx| tx.receiver_count() == 0);
}

/// One lock watch: whose, of what, and where its frames go.
struct Watch<'a> {
    shared: &'a Shared,
    caller: &'a Identity,
    name: &'a str,
    out: &'a WatchSender<LockWatchEvent>,
}

impl Watch<'_> {
    async fn follow(&self, after_index: u64, mut live: broadcast::Receiver<Arc<LockUpdate>>) {
        let mut last = after_index;
        let started = if after_index == 0 {
            self.send_current(&mut last).await
        } else {
            self.catch_up(&mut last).await
        };
        if !started {
            return;
        }
        loop {
            let received = tokio::select! {
                received = live.recv() => received,
                // The watcher left: end now, not at the lock's next change.
                () = self.out.closed() => return,
            };
            // A rule change applied since the watch began counts for what
            // it shows next.
            if let Err(error) = may_still_read(self.shared, self.caller, self.name) {
                let _ = self.out.send(self.refusal(error)).await;
                return;
            }
            let sent = match received {
                Ok(update) if update.index <= last => true,
                Ok(update) => {
                    last = update.index;
                    self.out.send(changed(&update)).await.is_ok()
                }
                // Fell behind the live channel: fill in from the history.
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up(&mut last).await,
                Err(broadcast::error::RecvError::Closed) => false,
            };
            if !sent {
                return;
            }
        }
    }

    /// Sends every update after `last` from this node's history; if it may
    /// not have them all, says so and sends the lock now. False when the
    /// receiver is gone.
    async fn catch_up(&self, last: &mut u64) -> bool {
        let history = self.shared.lock_history().since(self.name, *last);
        match history {
            Ok(updates) => {
                for update in updates {
                    *last = update.index;
                    if self.out.send(changed(&update)).await.is_err() {
                        return false;
                    }
                }
                true
            }
            Err(_) => {
                let gone = LockWatchEvent {
                    kind: Kind::HistoryGone.into(),
                    name: self.name.to_string(),
                    ..Default::default()
                };
                self.out.send(gone).await.is_ok() && self.send_current(last).await
            }
        }
    }

    /// Sends the lock as this node holds it now, indexed by the revision
    /// it was read at, and moves `last` there.
    async fn send_current(&self, last: &mut u64) -> bool {
        let (info, index) = {
            let machine = self.shared.machine();
            (lock_info(&machine, self.name), machine.revision())
        };
        *last = (*last).max(index);
        let current = LockWatchEvent {
            kind: Kind::Current.into(),
            name: self.name.to_string(),
            index,
            current: Some(info),
            ..Default::default()
        };
        self.out.send(current).await.is_ok()
    }

    fn refusal(&self, error: proto::Error) -> LockWatchEvent {
        LockWatchEvent {
            name: self.name.to_string(),
            error: Some(error),
            ..Default::default()
        }
    }
}

/// The wire form of one update.
pub fn changed(update: &LockUpdate) -> LockWatchEvent {
    LockWatchEvent {
        kind: Kind::Changed.into(),
        name: update.name.clone(),
        index: update.index,
        changes: update.changes.iter().map(change).collect(),
        ..Default::default()
    }
}

fn change(change: &LockChange) -> proto::LockChange {
    use lock_change::Kind as K;
    let member = |session, owner: &Option<Identity>| {
        Some(session_ref(Member {
            session,
            owner: owner.clone(),
        }))
    };
    match change {
        LockChange::Granted {
            session,
            owner,
            token,
            value,
        } => proto::LockChange {
            kind: K::Granted.into(),
            session: member(*session, owner),
            token: token.0,
            value: value.clone(),
            ..Default::default()
        },
        LockChange::Released {
            session,
            token,
            reason: why,
            lock_delay_ms,
        } => proto::LockChange {
            kind: K::Released.into(),
            session: member(*session, &None),
            token: token.0,
            reason: reason(*why).into(),
            lock_delay_ms: lock_delay_ms.unwrap_or(0),
            ..Default::default()
        },
        LockChange::Queued { session, owner } => proto::LockChange {
            kind: K::Queued.into(),
            session: member(*session, owner),
            ..Default::default()
        },
        LockChange::LeftQueue {
            session,
            reason: why,
        } => proto::LockChange {
            kind: K::LeftQueue.into(),
            session: member(*session, &None),
            reason: reason(*why).into(),
            ..Default::default()
        },
        LockChange::DelayEnded => proto::LockChange {
            kind: K::DelayEnded.into(),
            ..Default::default()
        },
    }
}

fn reason(reason: ReleaseReason) -> lock_change::Reason {
    use lock_change::Reason as R;
    match reason {
        ReleaseReason::Released => R::ReleasedByHolder,
        ReleaseReason::Cancelled => R::Cancelled,
        ReleaseReason::SessionClosed => R::SessionClosed,
        ReleaseReason::SessionExpired => R::SessionExpired,
        ReleaseReason::SessionRevoked => R::SessionRevoked,
        ReleaseReason::ForceReleased => R::ForceReleased,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::locks::{ClientOp, Command, CommandKind, Config, Reply};
    use crate::transport::watch_queue::WatchReceiver;
    use paxlock_core::access::{AccessRule, AccessRules, Permission};

    const WITHIN: Duration = Duration::from_secs(5);

    /// Applies `kind` at `slot`, records and publishes its lock changes,
    /// as the apply loop does.
    fn apply(shared: &Shared, slot: u64, kind: CommandKind) -> Option<Reply> {
        let (output, updates) = {
            let mut machine = shared.machine();
            let output = machine.apply(slot, Command { at_ms: 0, kind });
            let updates = shared.lock_history().record(
                output.revision,
                &output.events,
                shared.lock_watches_open(),
            );
            (output, updates)
        };
        shared.publish_lock_updates(updates);
        output.reply.ok()
    }

    fn open(shared: &Shared, slot: u64) -> u64 {
        match apply(shared, slot, CommandKind::OpenSession { ttl_ms: 10_000 }) {
            Some(Reply::SessionOpened { session }) => session.0,
            other => panic!("{other:?}"),
        }
    }

    fn acquire(session: u64, request_id: u64) -> CommandKind {
        let op = ClientOp::Acquire {
            name: "x".into(),
            wait: true,
            value: Vec::new(),
        };
        acknowledged(session, request_id, op)
    }

    /// `op` as request `request_id` of `session`, which has seen every
    /// answer before it.
    fn acknowledged(session: u64, request_id: u64, op: ClientOp) -> CommandKind {
        CommandKind::Client {
            session: crate::locks::SessionId(session),
            request_id: crate::locks::RequestId(request_id),
            ack_below: crate::locks::RequestId(request_id),
            waiting: Vec::new(),
            op,
        }
    }

    /// Identity `w`'s watch of lock `x` after `after`: its task and frames.
    fn watch(
        shared: &Arc<Shared>,
        after: u64,
    ) -> (tokio::task::JoinHandle<()>, WatchReceiver<LockWatchEvent>) {
        let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(1 << 24));
        let (tx, rx) = crate::transport::watch_queue::watch_queue(budget);
        let shared = shared.clone();
        let task = tokio::spawn(async move {
            stream(&shared, &Identity("w".into()), "x".into(), after, tx).await
        });
        (task, rx)
    }

    async fn next(rx: &mut WatchReceiver<LockWatchEvent>) -> LockWatchEvent {
        tokio::time::timeout(WITHIN, rx.recv())
            .await
            .expect("a frame in time")
            .expect("the stream open")
            .frame
    }

    /// A node that installed a snapshot never saw the changes inside it: a
    /// watch resumed from before says `HISTORY_GONE`, then the lock as it
    /// stands (indexed where it was read), then each later change.
    #[tokio::test]
    async fn a_resume_from_before_a_snapshot_install_is_told_history_is_gone() {
        let shared = Arc::new(Shared::new(1, Config::default()));
        let (a, b) = (open(&shared, 1), open(&shared, 2));
        apply(&shared, 3, acquire(a, 1));
        let installed_at = {
            let machine = shared.machine();
            shared.lock_history().restart_at(machine.revision());
            machine.revision()
        };
        let (task, mut rx) = watch(&shared, 1);
        let gone = next(&mut rx).await;
        assert_eq!(gone.kind(), Kind::HistoryGone, "{gone:?}");
        let current = next(&mut rx).await;
        assert_eq!(
            (current.kind(), current.index),
            (Kind::Current, installed_at)
        );
        let holder = current.current.and_then(|l| l.grant).and_then(|g| g.holder);
        assert_eq!(holder.map(|h| h.session_id), Some(a));
        apply(&shared, 4, acquire(b, 1));
        let queued = next(&mut rx).await;
        assert_eq!(queued.kind(), Kind::Changed);
        assert!(queued.index > installed_at);
        assert_eq!(queued.changes[0].kind(), lock_change::Kind::Queued);
        drop(rx);
        tokio::time::timeout(WITHIN, task).await.unwrap().unwrap();
        assert!(!shared.lock_watchers.contains_key("x"));
    }

    /// Regression (found in review): a snapshot install brings changes
    /// this node never saw; a watch that went on would skip them without
    /// knowing. It ends instead, and its client's resume from where it was
    /// is told the history is gone, then the lock as it stands.
    #[tokio::test]
    async fn a_snapshot_install_ends_open_lock_watches() {
        let shared = Arc::new(Shared::new(1, Config::default()));
        let (a, b) = (open(&shared, 1), open(&shared, 2));
        let (task, mut rx) = watch(&shared, 0);
        let current = next(&mut rx).await;
        assert_eq!(current.kind(), Kind::Current);
        // A's grant arrives inside a snapshot: applied, never recorded.
        let installed_at = {
            let mut machine = shared.machine();
            let command = Command {
                at_ms: 0,
                kind: acquire(a, 1),
            };
            machine.apply(3, command);
            shared.lock_snapshot_installed(machine.revision());
            machine.revision()
        };
        apply(&shared, 4, acquire(b, 1));
        let end = tokio::time::timeout(WITHIN, rx.recv()).await.unwrap();
        assert!(end.is_none(), "{:?}", end.map(|q| q.frame));
        tokio::time::timeout(WITHIN, task).await.unwrap().unwrap();
        let (_task, mut rx) = watch(&shared, current.index);
        assert_eq!(next(&mut rx).await.kind(), Kind::HistoryGone);
        let now = next(&mut rx).await;
        assert_eq!(now.kind(), Kind::Current);
        assert!(now.index > installed_at);
        let info = now.current.unwrap();
        let holder = info.grant.and_then(|g| g.holder).map(|h| h.session_id);
        assert_eq!(holder, Some(a));
        assert_eq!(info.waiters.len(), 1);
    }

    /// A watcher that reads nothing while 200 changes are applied falls
    /// behind its queue and its live channel; read again, it gets every
    /// change in order, none missing or repeated (filled in from the
    /// history).
    #[tokio::test]
    async fn a_watch_that_fell_behind_catches_up_without_a_gap() {
        let shared = Arc::new(Shared::new(1, Config::default()));
        let a = open(&shared, 1);
        let (_task, mut rx) = watch(&shared, 0);
        assert_eq!(next(&mut rx).await.kind(), Kind::Current);
        let mut slot = 2;
        for round in 0..100 {
            let request = 2 * round + 1;
            let token = match apply(&shared, slot, acquire(a, request)) {
                Some(Reply::Granted { token }) => token,
                other => panic!("{other:?}"),
            };
            let release = ClientOp::Release {
                name: "x".into(),
                token,
            };
            let release = acknowledged(a, request + 1, release);
            assert_eq!(apply(&shared, slot + 1, release), Some(Reply::Released));
            slot += 2;
            // Let the watch task run: it fills its queue, then lags.
            tokio::task::yield_now().await;
        }
        let last = shared.machine().revision();
        let mut kinds = Vec::new();
        let mut index = 0;
        while index < last {
            let frame = next(&mut rx).await;
            assert_eq!(frame.kind(), Kind::Changed, "{frame:?}");
            assert!(frame.index > index, "{} after {index}", frame.index);
            index = frame.index;
            kinds.extend(frame.changes.iter().map(|c| c.kind()));
        }
        let expected: Vec<lock_change::Kind> = (0..100)
            .flat_map(|_| [lock_change::Kind::Granted, lock_change::Kind::Released])
            .collect();
        assert_eq!(kinds, expected);
    }

    /// A rule change applied while a lock watch runs counts for its next
    /// change: the watcher who may no longer read the lock is told so,
    /// and the stream ends.
    #[tokio::test]
    async fn a_lock_watch_ends_with_permission_denied_once_the_rules_stop_allowing_it() {
        let shared = Arc::new(Shared::new(1, Config::default()));
        let a = open(&shared, 1);
        let (task, mut rx) = watch(&shared, 0);
        assert_eq!(next(&mut rx).await.kind(), Kind::Current);
        let only_others = AccessRules {
            quotas: Vec::new(),
            rules: vec![AccessRule {
                identities: vec!["someone-else".into()],
                permissions: [Permission::Read].into_iter().collect(),
                prefixes: vec![String::new()],
            }],
        };
        let set = CommandKind::SetAccessRules {
            by: Identity("ops".into()),
            rules: only_others,
            expected_version: None,
        };
        assert_eq!(apply(&shared, 2, set), Some(Reply::Done));
        apply(&shared, 3, acquire(a, 1));
        let last = next(&mut rx).await;
        let code = last.error.as_ref().map(|e| e.code);
        assert_eq!(
            code,
            Some(proto::ErrorCode::PermissionDenied.into()),
            "{last:?}"
        );
        let end = tokio::time::timeout(WITHIN, rx.recv()).await.unwrap();
        assert!(end.is_none(), "{:?}", end.map(|q| q.frame));
        tokio::time::timeout(WITHIN, task).await.unwrap().unwrap();
    }
}
