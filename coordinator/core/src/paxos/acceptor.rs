//! The acceptor's rules: when it may promise, when it may accept, and the
//! lease promise it gives the leader it follows.

use super::config::{CanaryRef, Config};
use super::durable::DurableState;
use super::message::{Message, ReportedEntry};
use super::types::{Ballot, Nanos, NodeId, Slot};
use super::wire_size::{entry_bytes, MESSAGE_OVERHEAD_BYTES};

/// Volatile acceptor state (the durable part lives in [`DurableState`]).
#[derive(Debug, Clone)]
pub(crate) struct Acceptor {
    /// Node whose heartbeat/accept we last followed; `None` after a restart.
    lease_holder: Option<NodeId>,
    /// Until this local time we refuse to promise anyone but `lease_holder`.
    lease_until: Nanos,
}

impl Acceptor {
    /// Why a restarted acceptor refuses every promise for a lease duration:
    /// it may have acknowledged a heartbeat just before crashing and lost the
    /// memory of it, so it must assume a lease is running.
    pub(crate) fn booted(now: Nanos, cfg: &Config) -> Acceptor {
        Acceptor {
            lease_holder: None,
            lease_until: now.plus(cfg.lease_duration_ns),
        }
    }

    /// Rule "no promise during a lease": while the lease we gave `holder`
    /// runs, a promise to anyone else could let a second leader believe it
    /// holds a lease at the same time. Promising the holder itself is fine.
    pub(crate) fn may_promise(&self, now: Nanos, candidate: NodeId, cfg: &Config) -> bool {
        if cfg.canary_on(CanaryRef::LeaseWaitBeforePromise) {
            return true;
        }
        now >= self.lease_until || self.lease_holder == Some(candidate)
    }

    /// Whether a leader was heard within `window_ns` (used to deny pre-votes).
    pub(crate) fn heard_leader_within(&self, now: Nanos, window_ns: u64, cfg: &Config) -> bool {
        // lease_until = last contact + lease_duration
        let last_contact = Nanos(self.lease_until.0.saturating_sub(cfg.lease_duration_ns));
        self.lease_holder.is_some() && now.since(last_contact) < window_ns
    }

    /// The lease holder, if a lease is running.
    pub(crate) fn current_lease_holder(&self, now: Nanos) -> Option<NodeId> {
        if now < self.lease_until {
            self.lease_holder
        } else {
            None
        }
    }

    /// The leader we follow abdicated: it stopped using its lease before
    /// asking, so the promise not to serve rivals can end now.
    pub(crate) fn release_lease(&mut self, now: Nanos, leader: NodeId) {
        if self.lease_holder == Some(leader) {
            self.lease_holder = None;
            self.lease_until = self.lease_until.min(now);
        }
    }

    /// Called when we follow a heartbeat or accept from `leader`: from now on
    /// we refuse rivals for `lease_duration_ns` of our clock. Measured from
    /// *receipt*, which is never before the leader's send time.
    pub(crate) fn grant_lease(&mut self, now: Nanos, leader: NodeId, lease_duration_ns: u64) {
        // Never shorten: a running window (e.g. the post-restart one) may
        // protect a lease we no longer remember. Following `leader` (ballot
        // >= promised) implies any older lease already ended.
        self.lease_holder = Some(leader);
        self.lease_until = self.lease_until.max(now.plus(lease_duration_ns));
    }
}

/// Rule "accept only at or above the promise": a lower ballot's proposer did
/// not see our promise's report, so accepting its value could choose a second
/// value for a slot.
pub(crate) fn may_accept(state: &DurableState, ballot: Ballot, cfg: &Config) -> bool {
    if cfg.canary_on(CanaryRef::BallotCheckInAccept) {
        return true;
    }
    ballot >= state.promised
}

/// First slot not known chosen, given the durable log and snapshot.
pub(crate) fn first_unchosen(state: &DurableState) -> Slot {
    let mut s = state.snapshot.as_ref().map_or(Slot(0), |s| s.up_to);
    // Bounded by the log size, which is bounded by compaction.
    for (slot, e) in state.log.range(s..) {
        if *slot != s || !e.chosen {
            break;
        }
        s = s.next();
    }
    s
}

/// Rule "a promise travels in parts": the entries a promise reports (see
/// [`report_entries`]) split into messages of at most
/// `max_message_bytes`, each saying which slots it covers, so the
/// candidate knows when it has heard all of them. Parts cover
/// `[from_slot, ∞)` without gaps; each holds at least one entry, so an
/// entry larger than the bound (accepted before batches were bounded in
/// bytes) travels whole in a part of its own rather than being dropped.
pub(crate) fn promise_parts(
    state: &DurableState,
    ballot: Ballot,
    from_slot: Slot,
    chosen_up_to: Slot,
    cfg: &Config,
) -> Vec<Message> {
    let part = |entries, part_start, part_end| Message::Promise {
        ballot,
        from_slot,
        chosen_up_to,
        entries,
        part_start,
        part_end,
    };
    let budget = cfg.max_message_bytes.saturating_sub(MESSAGE_OVERHEAD_BYTES);
    let mut parts = Vec::new();
    let mut current: Vec<ReportedEntry> = Vec::new();
    let mut current_bytes = 0usize;
    let mut part_start = from_slot;
    for entry in report_entries(state, from_slot, chosen_up_to, cfg) {
        let bytes = entry_bytes(&entry.batch);
        if !current.is_empty() && current_bytes.saturating_add(bytes) > budget {
            let part_end = entry.slot;
            parts.push(part(
                std::mem::take(&mut current),
                part_start,
                Some(part_end),
            ));
            part_start = part_end;
            current_bytes = 0;
        }
        current_bytes = current_bytes.saturating_add(bytes);
        current.push(entry);
    }
    parts.push(part(current, part_start, None));
    parts
}

/// The entries a promise reports: every entry at or after
/// `max(from_slot, chosen_up_to)` (bounded by the accept window), and chosen
/// entries below that, from `from_slot`, at most `max_catchup_entries` of them.
///
/// Why report everything above the commit: the new leader must re-propose the
/// highest-ballot value of each such slot, or a chosen value could be lost.
pub(crate) fn report_entries(
    state: &DurableState,
    from_slot: Slot,
    chosen_up_to: Slot,
    cfg: &Config,
) -> Vec<ReportedEntry> {
    let mut out = Vec::new();
    let bonus_end = chosen_up_to.max(from_slot);
    for (slot, e) in state
        .log
        .range(from_slot..bonus_end)
        .take(cfg.max_catchup_entries)
    {
        out.push(ReportedEntry {
            slot: *slot,
            ballot: e.ballot,
            batch: e.batch.clone(),
            chosen: e.chosen,
        });
    }
    // Never truncated in practice: accepts are refused past the window and
    // chosen entries past it only arrive through bounded catch-up.
    debug_assert!(state.log.range(bonus_end..).count() as u64 <= cfg.max_log_ahead_slots);
    for (slot, e) in state
        .log
        .range(bonus_end..)
        .take(cfg.max_log_ahead_slots as usize)
    {
        out.push(ReportedEntry {
            slot: *slot,
            ballot: e.ballot,
            batch: e.batch.clone(),
            chosen: e.chosen,
        });
    }
    out
}
