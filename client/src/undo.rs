//! Undoing a wait whose caller is gone.
//!
//! A blocking acquire or a campaign stays queued on the cluster until it is
//! granted. If its caller stops waiting (the call failed, or the future was
//! dropped by a `select!` or a `timeout`), a wait left queued would later
//! take the lock or the leadership for a session nobody acts for, and the
//! client's keepalive would hold it for as long as the client lives. So the
//! wait is undone with a request of its own: a `CancelAcquire` (which also
//! releases a grant that raced it) or a `Resign`.

use std::sync::Arc;

use tracing::warn;

use crate::client::Client;
use crate::proto::request::Op;
use crate::session::Session;

/// Sends `undo` for `session` now (best effort: a failure is logged; the
/// session's end clears the wait at the latest).
pub(crate) async fn undo(client: &Client, session: &Session, undo: Op) {
    if !session.is_valid() {
        return;
    }
    if let Err(e) = client.inner.call(session.id, undo).await {
        warn!(
            session = session.id,
            "could not undo a wait its caller left: {e}"
        );
    }
}

/// Waits for the background undo of `key`'s last abandoned wait, if one
/// is still on its way: a new wait must reach the cluster after it.
pub(crate) async fn settle(client: &Client, key: &str) {
    let pending = lock_undoing(client).remove(key);
    if let Some(pending) = pending {
        let _ = pending.await;
    }
}

/// Sends its request in the background when dropped while armed: for the
/// span in which a wait may be queued, or granted without the caller
/// having been told.
pub(crate) struct UndoOnDrop {
    armed: Option<Armed>,
}

struct Armed {
    client: Client,
    session: Arc<Session>,
    /// What is undone (`lock:NAME`, `election:NAME`), for [`settle`].
    key: String,
    op: Op,
}

impl UndoOnDrop {
    /// Armed to send `op` for `session`, undoing the wait on `key`.
    pub(crate) fn armed(client: &Client, session: &Arc<Session>, key: String, op: Op) -> Self {
        UndoOnDrop {
            armed: Some(Armed {
                client: client.clone(),
                session: session.clone(),
                key,
                op,
            }),
        }
    }

    /// Never sends anything.
    pub(crate) fn unarmed() -> Self {
        UndoOnDrop { armed: None }
    }

    /// The caller got its answer (or undid the wait itself): nothing to do.
    pub(crate) fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for UndoOnDrop {
    fn drop(&mut self) {
        let Some(Armed {
            client,
            session,
            key,
            op,
        }) = self.armed.take()
        else {
            return;
        };
        undo_in_background(&client, session, key, op);
    }
}

/// Sends `op` for `session` in the background, after any earlier undo of
/// `key`, and before the next wait on `key` goes out (see [`settle`]).
/// Also how a dropped lock guard releases: an acquire of the same lock
/// right after must not be answered by the grant being released.
pub(crate) fn undo_in_background(client: &Client, session: Arc<Session>, key: String, op: Op) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut undoing = lock_undoing(client);
    // Finished undos nobody settled (a lock never asked for again).
    undoing.retain(|_, task| !task.is_finished());
    // After any earlier undo of the same wait, in order.
    let earlier = undoing.remove(&key);
    let task_client = client.clone();
    let task = handle.spawn(async move {
        if let Some(earlier) = earlier {
            let _ = earlier.await;
        }
        undo(&task_client, &session, op).await;
    });
    undoing.insert(key, task);
}

fn lock_undoing(
    client: &Client,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, tokio::task::JoinHandle<()>>> {
    client
        .inner
        .undoing
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
