//! One election: leader, term, FIFO candidates, and a bounded event history
//! for watchers that resume.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::locks::command::{FencingToken, SessionId};
use crate::locks::event::{ElectionChange, ElectionEvent};
use crate::locks::state_size;

/// The current leader of an election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    /// Leading session.
    pub session: SessionId,
    /// Its published value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// A watcher asked for events older than the retained history.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "election history gone: asked from event {requested}, oldest retained is {oldest_available}; \
     re-read the current leader and resume from there"
)]
pub struct HistoryGone {
    /// The index asked for.
    pub requested: u64,
    /// The oldest index still retained.
    pub oldest_available: u64,
}

/// State of one election. Empty (nobody leads or campaigns), it may be
/// removed to make room for another (from protocol 3); one made again
/// starts above every removed election's term and index, so they never go
/// back for a name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Election {
    /// 0 before the first leader; +1 per change of leader identity.
    pub term: u64,
    /// Current leader.
    pub leader: Option<Leader>,
    /// The current leadership's fencing token: drawn at its win from the
    /// sequence lock grants draw from, kept by proclaims. `None` when
    /// nobody leads, or the leader won before the log recorded protocol 3.
    pub token: Option<FencingToken>,
    /// Queued candidates, promoted strictly front first.
    pub candidates: VecDeque<Leader>,
    /// The last events, oldest first, at most `Config::election_history_len`.
    pub history: VecDeque<ElectionEvent>,
    /// Index the next event gets (first event is 1).
    pub next_index: u64,
    /// Counted bytes of `history` ([`crate::locks::state_size`]), kept as
    /// events come and go: derived, never stored (recounted on restore).
    #[serde(skip)]
    pub(crate) history_bytes: u64,
}

impl Election {
    /// Whether nobody leads or campaigns in it (it may then be removed to
    /// make room, from protocol 3 on).
    pub fn is_empty(&self) -> bool {
        self.leader.is_none() && self.candidates.is_empty()
    }

    /// 1-based position of `session` among queued candidates.
    pub fn position(&self, session: SessionId) -> Option<u32> {
        self.candidates
            .iter()
            .position(|c| c.session == session)
            .map(|i| u32::try_from(i + 1).unwrap_or(u32::MAX))
    }

    /// Counted bytes of the retained events.
    pub fn history_bytes(&self) -> u64 {
        self.history_bytes
    }

    /// Counts the retained events' bytes again from scratch (after a
    /// restore, where the running count is not stored).
    pub(crate) fn recount_history_bytes(&mut self) {
        self.history_bytes = self.history_bytes_from_scratch();
    }

    /// Counted bytes of the retained events, counted from scratch.
    pub(crate) fn history_bytes_from_scratch(&self) -> u64 {
        self.history.iter().map(state_size::event_bytes).sum()
    }

    /// Appends an event to the stream, trimming history to `cap`, and
    /// returns it for delivery.
    pub fn record(&mut self, name: &str, change: ElectionChange, cap: u32) -> ElectionEvent {
        if self.next_index == 0 {
            self.next_index = 1;
        }
        let event = ElectionEvent {
            name: name.to_owned(),
            index: self.next_index,
            term: self.term,
            change,
        };
        self.next_index += 1;
        self.history_bytes += state_size::event_bytes(&event);
        self.history.push_back(event.clone());
        while self.history.len() > cap as usize {
            if let Some(old) = self.history.pop_front() {
                self.history_bytes -= state_size::event_bytes(&old);
            }
        }
        event
    }

    /// Events with index >= `from_index`, or [`HistoryGone`] if some of
    /// them were already trimmed.
    pub fn events_since(&self, from_index: u64) -> Result<Vec<ElectionEvent>, HistoryGone> {
        let oldest = self
            .history
            .front()
            .map_or(self.next_index.max(1), |e| e.index);
        if from_index < oldest && oldest > 1 {
            return Err(HistoryGone {
                requested: from_index,
                oldest_available: oldest,
            });
        }
        Ok(self
            .history
            .iter()
            .filter(|e| e.index >= from_index)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_trimmed_reports_gone_for_older_indexes() {
        let mut e = Election::default();
        for _ in 0..5 {
            e.term += 1;
            e.record("x", ElectionChange::NoLeader, 3);
        }
        assert_eq!(
            e.events_since(2),
            Err(HistoryGone {
                requested: 2,
                oldest_available: 3
            })
        );
        let got = e.events_since(4).unwrap_or_default();
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), vec![4, 5]);
    }
}
