//! Learner side: which chosen entries the application has seen, and
//! catching up from peers when entries are missing.

use super::config::Config;
use super::durable::DurableState;
use super::effects::ChosenEntry;
use super::message::Message;
use super::types::{Nanos, NodeId, Slot};

/// Volatile learner state.
#[derive(Debug, Clone)]
pub(crate) struct Learner {
    /// Next slot to hand to the application.
    pub(crate) applied: Slot,
    /// A peer said slots below this are chosen; we are not there yet.
    pub(crate) catch_up_target: Slot,
    pub(crate) catch_up_peer: Option<NodeId>,
    pub(crate) last_request_at: Option<Nanos>,
}

impl Learner {
    pub(crate) fn new(applied: Slot) -> Learner {
        Learner {
            applied,
            catch_up_target: applied,
            catch_up_peer: None,
            last_request_at: None,
        }
    }

    /// Remember that `peer` knows slots below `target` are chosen.
    pub(crate) fn want(&mut self, target: Slot, peer: NodeId) {
        if target > self.catch_up_target {
            self.catch_up_target = target;
            self.catch_up_peer = Some(peer);
        }
    }

    /// Rule "catch up by pull, rate-limited": one request per heartbeat
    /// interval, so a lagging node costs its peer a bounded amount of work.
    pub(crate) fn request_due(
        &mut self,
        now: Nanos,
        commit: Slot,
        cfg: &Config,
    ) -> Option<(NodeId, Slot)> {
        if commit >= self.catch_up_target {
            return None;
        }
        let peer = self.catch_up_peer?;
        if self
            .last_request_at
            .is_some_and(|t| now.since(t) < cfg.heartbeat_interval_ns)
        {
            return None;
        }
        self.last_request_at = Some(now);
        Some((peer, commit))
    }

    /// Chosen entries not yet handed to the application, in slot order.
    pub(crate) fn drain(&mut self, state: &DurableState, commit: Slot, out: &mut Vec<ChosenEntry>) {
        while self.applied < commit {
            let Some(e) = state.log.get(&self.applied) else {
                debug_assert!(false, "slot {:?} below commit missing", self.applied);
                return;
            };
            debug_assert!(e.chosen);
            out.push(ChosenEntry {
                slot: self.applied,
                batch: e.batch.clone(),
            });
            self.applied = self.applied.next();
        }
    }
}

/// Answer to a catch-up request: chosen entries from `from_slot`, or the
/// snapshot first if `from_slot` was compacted away.
pub(crate) fn serve_catch_up(
    state: &DurableState,
    from_slot: Slot,
    commit: Slot,
    cfg: &Config,
) -> Message {
    let floor = state.snapshot.as_ref().map_or(Slot(0), |s| s.up_to);
    let snapshot = if from_slot < floor {
        state.snapshot.clone()
    } else {
        None
    };
    let start = from_slot.max(floor);
    // `from_slot` is untrusted: an empty range, never an inverted one.
    let end = commit.max(start);
    let entries = state
        .log
        .range(start..end)
        .take(cfg.max_catchup_entries)
        .map(|(s, e)| (*s, e.batch.clone()))
        .collect();
    Message::CatchUp { snapshot, entries }
}
