//! The exactly-once table of one session (Ongaro's thesis §6.3): recorded
//! replies by request id, forgotten as the client acknowledges them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::locks::command::RequestId;
use crate::locks::error::CommandError;
use crate::locks::machine::Reply;

/// A recorded answer: exactly what the first apply returned.
pub type RecordedReply = Result<Reply, CommandError>;

/// What the table knows about a request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Below the acknowledged floor: the reply is gone.
    Acked {
        /// The floor.
        floor: RequestId,
    },
    /// Already applied; here is the reply.
    Recorded(RecordedReply),
    /// Not seen yet.
    New,
}

/// Recorded replies of one session, bounded by the caller's limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupTable {
    /// Every request id below this was acknowledged by the client.
    floor: u64,
    /// Replies at or above the floor.
    replies: BTreeMap<u64, RecordedReply>,
}

impl DedupTable {
    /// Looks a request id up.
    pub fn lookup(&self, request_id: RequestId) -> Lookup {
        if request_id.0 < self.floor {
            return Lookup::Acked {
                floor: RequestId(self.floor),
            };
        }
        match self.replies.get(&request_id.0) {
            Some(reply) => Lookup::Recorded(reply.clone()),
            None => Lookup::New,
        }
    }

    /// Whether the session has issued a request after `id`: a reply above
    /// it is recorded, or the client acknowledged beyond `id + 1` (which it
    /// only does in a later request). Used to recognise stale abandons.
    pub fn moved_past(&self, id: RequestId) -> bool {
        let next = id.0.saturating_add(1);
        self.floor > next || self.replies.range(next..).next().is_some()
    }

    /// Raises the floor to `below` (never lowers it) and forgets replies
    /// under it.
    pub fn ack_below(&mut self, below: RequestId) {
        if below.0 <= self.floor {
            return;
        }
        self.floor = below.0;
        // split_off keeps keys >= floor; the rest is dropped.
        self.replies = self.replies.split_off(&self.floor);
    }

    /// Whether one more reply fits under `max`.
    pub fn has_room(&self, max: u32) -> bool {
        self.replies.len() < max as usize
    }

    /// Records the reply of a newly applied request.
    pub fn record(&mut self, request_id: RequestId, reply: RecordedReply) {
        debug_assert!(request_id.0 >= self.floor, "recording below the floor");
        self.replies.insert(request_id.0, reply);
    }

    /// Number of recorded replies.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Whether no reply is recorded.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// The acknowledged floor.
    pub fn floor(&self) -> RequestId {
        RequestId(self.floor)
    }

    /// Test helper: forget one recorded reply, to undo a documented
    /// bookkeeping effect when comparing states.
    #[cfg(test)]
    pub(crate) fn forget(&mut self, request_id: RequestId) {
        self.replies.remove(&request_id.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_replies_are_forgotten_and_reported_as_acked() {
        let mut t = DedupTable::default();
        t.record(RequestId(1), Ok(Reply::Done));
        t.record(RequestId(2), Ok(Reply::Done));
        t.ack_below(RequestId(2));
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.lookup(RequestId(1)),
            Lookup::Acked {
                floor: RequestId(2)
            }
        );
        assert_eq!(t.lookup(RequestId(2)), Lookup::Recorded(Ok(Reply::Done)));
        assert_eq!(t.lookup(RequestId(3)), Lookup::New);
    }

    #[test]
    fn ack_never_lowers_the_floor() {
        let mut t = DedupTable::default();
        t.ack_below(RequestId(5));
        t.ack_below(RequestId(3));
        assert_eq!(t.floor(), RequestId(5));
    }
}
