//! Watching one lock: who is granted it, who releases it and why, who
//! joins and leaves its queue, when its lock-delay ends (PROTOCOL.md,
//! "Lock watches").

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::client::Client;
use crate::error::Error;
use crate::inspect::{lock_info, lossy_text, millis, session_ref, LockInfo, SessionRef};
use crate::proto::{self, lock_change, lock_watch_event::Kind, request::Op, LockWatchEvent};
use crate::watch_stream::WatchStream;

/// Why a grant ended, or a wait ended without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The holder released it.
    Released,
    /// The holder or waiter cancelled its acquire.
    Cancelled,
    /// Its session was closed.
    SessionClosed,
    /// Its session expired.
    SessionExpired,
    /// An administrator revoked its session.
    SessionRevoked,
    /// An administrator force-released the grant.
    ForceReleased,
    /// A reason this client does not know (a later release's).
    Unknown,
}

/// One thing that happened to a watched lock. `index` is the cluster's
/// revision after the change: the same on every node, increasing (though
/// not by one per event), and the point a watch resumes after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LockEvent {
    /// The lock as it stands at `index`: the first event of a watch, and
    /// the one after `HistoryGone`.
    Current {
        /// Where the state was read.
        index: u64,
        /// The lock.
        lock: LockInfo,
    },
    /// Granted to `holder`.
    Granted {
        /// Where it happened.
        index: u64,
        /// The new holder.
        holder: SessionRef,
        /// The grant's fencing token.
        fencing_token: u64,
        /// The value its acquire carried (JSON: as text).
        #[serde(serialize_with = "lossy_text")]
        value: Vec<u8>,
    },
    /// The grant of `holder` ended.
    Released {
        /// Where it happened.
        index: u64,
        /// The former holder (its identity is in the grant's event).
        holder: SessionRef,
        /// The grant that ended.
        fencing_token: u64,
        /// Why.
        reason: EndReason,
        /// The lock-delay this started: no grant before it is over (a
        /// `DelayEnded` says when). `None`: none.
        #[serde(serialize_with = "millis")]
        lock_delay: Option<Duration>,
    },
    /// `session` joined the queue, at its back.
    Queued {
        /// Where it happened.
        index: u64,
        /// The waiting session.
        session: SessionRef,
    },
    /// `session` left the queue without a grant.
    LeftQueue {
        /// Where it happened.
        index: u64,
        /// The session that waited (its identity is in its `Queued`).
        session: SessionRef,
        /// `Cancelled`, or how its session ended.
        reason: EndReason,
    },
    /// The lock-delay ended: the lock may be granted again.
    DelayEnded {
        /// Where it happened.
        index: u64,
    },
    /// The node this watch resumed on no longer has (or never had) every
    /// change since the last event: some may have been missed. A `Current`
    /// follows.
    HistoryGone,
}

impl LockEvent {
    /// Where it happened (`None` for `HistoryGone`, which is about the
    /// watch, not the lock).
    pub fn index(&self) -> Option<u64> {
        match self {
            LockEvent::Current { index, .. }
            | LockEvent::Granted { index, .. }
            | LockEvent::Released { index, .. }
            | LockEvent::Queued { index, .. }
            | LockEvent::LeftQueue { index, .. }
            | LockEvent::DelayEnded { index } => Some(*index),
            LockEvent::HistoryGone => None,
        }
    }
}

/// A stream of one lock's changes that survives reconnects: after a
/// failure it resumes, on any node, after the last change it delivered,
/// and says `HistoryGone` if that node cannot vouch for what came between.
#[derive(Debug)]
pub struct LockWatch {
    name: String,
    /// Every change up to this index has been read (and delivered, or
    /// queued in `ready`).
    last_index: u64,
    /// Every change up to this index has been delivered.
    delivered: u64,
    /// Changes read and not yet delivered: one frame holds all of one
    /// command's.
    ready: VecDeque<LockEvent>,
    stream: WatchStream,
}

impl Client {
    /// Watches lock `name`: first its state now (`LockEvent::Current`),
    /// then every change. Needs `read` on the name.
    pub fn watch_lock(&self, name: impl Into<String>) -> LockWatch {
        self.watch_lock_after(name, 0)
    }

    /// Watches lock `name` from after `index` (an earlier watch's
    /// [`LockWatch::resume_point`]): every change since, if the node has
    /// them all, otherwise `HistoryGone` and the state now. 0: as
    /// `watch_lock`.
    pub fn watch_lock_after(&self, name: impl Into<String>, index: u64) -> LockWatch {
        LockWatch {
            name: name.into(),
            last_index: index,
            delivered: index,
            ready: VecDeque::new(),
            stream: WatchStream::new(self.clone()),
        }
    }
}

impl LockWatch {
    /// The next event. Reconnects as needed; fails when no node can be
    /// reached within the request timeout (calling again keeps trying) or
    /// when the node refuses the watch (`INVALID_NAME`, `PERMISSION_DENIED`;
    /// a node of a release before lock watches: `INVALID_REQUEST`).
    pub async fn next(&mut self) -> Result<LockEvent, Error> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                if self.ready.is_empty() {
                    self.delivered = self.last_index;
                }
                return Ok(event);
            }
            let open = || {
                Op::WatchLock(proto::WatchLock {
                    name: self.name.clone(),
                    after_index: self.last_index,
                })
            };
            let frame: LockWatchEvent = self.stream.next(open).await?;
            self.last_index = self.last_index.max(frame.index);
            self.ready.extend(events(frame));
            if self.ready.is_empty() {
                self.delivered = self.last_index;
            }
        }
    }

    /// Where a new watch ([`Client::watch_lock_after`]) resumes without
    /// missing or repeating a change this one delivered. One command's
    /// changes share an index, so this stays at the previous index until
    /// the last of them has been delivered.
    pub fn resume_point(&self) -> u64 {
        self.delivered
    }
}

/// The events one frame carries, in order.
fn events(frame: LockWatchEvent) -> Vec<LockEvent> {
    let index = frame.index;
    match Kind::try_from(frame.kind) {
        Ok(Kind::Current) => vec![LockEvent::Current {
            index,
            lock: lock_info(frame.current.unwrap_or_default()),
        }],
        Ok(Kind::HistoryGone) => vec![LockEvent::HistoryGone],
        Ok(Kind::Changed) => frame
            .changes
            .into_iter()
            .filter_map(|c| change(index, c))
            .collect(),
        // A kind of a later release: nothing this client can show.
        Ok(Kind::Unspecified) | Err(_) => Vec::new(),
    }
}

fn change(index: u64, wire: proto::LockChange) -> Option<LockEvent> {
    use lock_change::Kind as K;
    let reason = end_reason(wire.reason);
    let session = session_ref(wire.session);
    Some(match K::try_from(wire.kind).ok()? {
        K::Granted => LockEvent::Granted {
            index,
            holder: session,
            fencing_token: wire.token,
            value: wire.value,
        },
        K::Released => LockEvent::Released {
            index,
            holder: session,
            fencing_token: wire.token,
            reason,
            lock_delay: (wire.lock_delay_ms != 0)
                .then(|| Duration::from_millis(wire.lock_delay_ms)),
        },
        K::Queued => LockEvent::Queued { index, session },
        K::LeftQueue => LockEvent::LeftQueue {
            index,
            session,
            reason,
        },
        K::DelayEnded => LockEvent::DelayEnded { index },
        K::Unspecified => return None,
    })
}

fn end_reason(wire: i32) -> EndReason {
    use lock_change::Reason as R;
    match R::try_from(wire) {
        Ok(R::ReleasedByHolder) => EndReason::Released,
        Ok(R::Cancelled) => EndReason::Cancelled,
        Ok(R::SessionClosed) => EndReason::SessionClosed,
        Ok(R::SessionExpired) => EndReason::SessionExpired,
        Ok(R::SessionRevoked) => EndReason::SessionRevoked,
        Ok(R::ForceReleased) => EndReason::ForceReleased,
        Ok(R::Unspecified) | Err(_) => EndReason::Unknown,
    }
}
