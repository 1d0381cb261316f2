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
    /// Our commit index when the last catch-up request went out.
    pub(crate) last_request_commit: Option<Slot>,
}

impl Learner {
    pub(crate) fn new(applied: Slot) -> Learner {
        Learner {
            applied,
            catch_up_target: applied,
            catch_up_peer: None,
            last_request_at: None,
            last_request_commit: None,
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
        let mut peer = self.catch_up_peer?;
        if self
            .last_request_at
            .is_some_and(|t| now.since(t) < cfg.heartbeat_interval_ns)
        {
            return None;
        }
        // Rule "ask around": the peer that told us of the target may not
        // be able to serve it: it may have restarted and lost chosen
        // markers that were not yet on disk, or be cut off. If the last
        // request got us nowhere, ask the next member instead.
        if self.last_request_commit == Some(commit) {
            peer = next_peer(cfg, peer);
            self.catch_up_peer = Some(peer);
        }
        self.last_request_at = Some(now);
        self.last_request_commit = Some(commit);
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

/// The member after `peer` in `cfg.members` (wrapping), never this node.
fn next_peer(cfg: &Config, peer: NodeId) -> NodeId {
    let others = cfg.members.iter().copied().filter(|m| *m != cfg.node_id);
    let after = others.clone().filter(|m| *m > peer).min();
    after.or_else(|| others.min()).unwrap_or(peer)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catch_up_that_got_nowhere_asks_the_next_member() {
        let cfg = Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)]);
        let hb = cfg.heartbeat_interval_ns;
        let mut learner = Learner::new(Slot(5));
        learner.want(Slot(10), NodeId(2));
        let at = |i: u64| Nanos(i * hb);
        assert_eq!(
            learner.request_due(at(1), Slot(5), &cfg),
            Some((NodeId(2), Slot(5)))
        );
        // Rate-limited within one heartbeat interval.
        assert_eq!(learner.request_due(at(1), Slot(5), &cfg), None);
        // No progress: the next member, skipping ourselves, wrapping.
        assert_eq!(
            learner.request_due(at(2), Slot(5), &cfg),
            Some((NodeId(3), Slot(5)))
        );
        assert_eq!(
            learner.request_due(at(3), Slot(5), &cfg),
            Some((NodeId(2), Slot(5)))
        );
        // Progress: the same peer again.
        assert_eq!(
            learner.request_due(at(4), Slot(7), &cfg),
            Some((NodeId(2), Slot(7)))
        );
        // Caught up: nothing to ask.
        assert_eq!(learner.request_due(at(5), Slot(10), &cfg), None);
    }
}
