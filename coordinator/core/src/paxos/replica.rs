//! One node's Paxos state machine: acceptor, proposer and learner, driven
//! only by [`Replica::step`]. No I/O, no clock, no global randomness.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::acceptor::{self, Acceptor};
use super::config::{CanaryRef, Config, ConfigError};
use super::durable::{DurableState, PersistOp, PersistRequest};
use super::effects::{Effects, LeadershipEvent, Outgoing, RejectReason, Rejected};
use super::election::{self, Election, PreVoteRound};
use super::learner::{self, ChunkOutcome, Learner};
use super::membership::{
    self, Membership, MembershipChange, MembershipError, MembershipLog, MEMBERSHIP_DELAY_SLOTS,
};
use super::message::{Message, SnapshotChunk};
use super::proposer::{self, Candidate, HeartbeatRound, InFlight, Leader, PendingChange};
use super::types::{Ballot, Batch, Nanos, NodeId, PersistSeq, Slot, Snapshot, Value};
use super::wire_size::{self, VALUE_OVERHEAD_BYTES};

/// Most self-addressed messages waiting for persistence. Each step adds a
/// handful; they drain on every `Persisted`.
const MAX_LOOPBACK: usize = 4096;
/// Chosen markers waiting for a request (see `Replica::ops_urgent`) are
/// issued on their own once this many have gathered.
const MAX_DEFERRED_MARKERS: usize = 1024;

/// Something that happened to the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A message from a peer (untrusted).
    Peer {
        /// The authenticated sender.
        from: NodeId,
        /// The message.
        msg: Message,
    },
    /// Client commands to replicate; refused unless this node leads.
    Propose(Vec<Value>),
    /// The timer armed by `Effects::wake_at` fired (early or late is fine).
    Tick,
    /// Every persist request up to `up_to` is durable.
    Persisted {
        /// Highest durable sequence number.
        up_to: PersistSeq,
    },
    /// The application has a snapshot of every slot below `up_to`; drop
    /// those entries. Ignored unless `up_to` is at most what was applied.
    Compact {
        /// First slot not covered.
        up_to: Slot,
        /// Opaque application state.
        data: Vec<u8>,
    },
    /// Hand leadership over (graceful shutdown): stop leading now, tell the
    /// acceptors to drop the lease they hold for us, and let `successor`
    /// (or, if `None`, the next member in id order) campaign at once.
    /// Ignored unless this replica leads.
    Abdicate {
        /// Who should take over, if the caller has a preference.
        successor: Option<NodeId>,
    },
    /// Change the membership (add a learner, promote it, remove a member).
    /// Refused unless this node leads, no other change is in flight, the
    /// change is valid for the latest membership, and (to promote) the
    /// learner has caught up; refused as `RejectReason::Membership` with the
    /// change's value. Once accepted, the change is chosen like a command
    /// and takes effect `MEMBERSHIP_DELAY_SLOTS` slots later.
    ChangeMembership(MembershipChange),
}

/// A snapshot of a replica's view, for status pages and debugging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Whether this node leads.
    pub leader: bool,
    /// The ballot this node leads or campaigns with, if any.
    pub ballot: Option<Ballot>,
    /// Highest ballot promised.
    pub promised: Ballot,
    /// First slot not known chosen.
    pub commit: Slot,
    /// Next slot handed to the application.
    pub applied: Slot,
    /// A peer said slots below this are chosen.
    pub catch_up_target: Slot,
    /// Slots proposed and not yet chosen (leader only).
    pub in_flight_slots: usize,
    /// Commands queued for proposal (leader only).
    pub pending_values: usize,
    /// Highest persist sequence issued / acknowledged.
    pub persist_issued: PersistSeq,
    /// Highest persist sequence acknowledged durable.
    pub persisted: PersistSeq,
    /// The membership deciding the commit index.
    pub members: Membership,
    /// The first slot a known change takes over from, if one is pending.
    pub membership_change_at: Option<Slot>,
    /// As leader: each follower's commit index, as its latest heartbeat
    /// acknowledgement reported it (how far a learner has caught up).
    pub follower_commits: BTreeMap<NodeId, Slot>,
}

/// Counters of untrusted input that was ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages dropped by [`Message::check`] or from non-members.
    pub malformed: u64,
}

#[derive(Debug, Clone)]
enum Role {
    Follower,
    Candidate(Candidate),
    // Boxed: a leader holds far more than a follower or a candidate.
    Leader(Box<Leader>),
}

/// A Multi-Paxos replica. Create it from the durable state the shell has
/// on disk (`DurableState::default()` for a new node) and feed it inputs.
#[derive(Debug, Clone)]
pub struct Replica {
    cfg: Config,
    /// In-memory copy of durable state, ahead of disk by `ops`.
    state: DurableState,
    /// Ops not yet issued, in the order they were applied in memory: issued
    /// as one request at the end of a step that needs them on disk (see
    /// `ops_urgent`).
    ops: Vec<PersistOp>,
    /// Whether `ops` holds anything besides chosen markers. Rule "chosen
    /// markers ride along": no message claims that a chosen marker is on
    /// disk (a lost one is learned again from the acceptors that accepted
    /// the value), so markers alone do not cost a request and an fsync of
    /// their own; they go to disk with the next promise or accept, or at
    /// the next tick. On the leader this takes one fsync per slot off the
    /// path of the next command (measured: 1-client acquire p50 -9 %).
    ops_urgent: bool,
    last_issued: PersistSeq,
    /// The persist that made this node's latest promise durable: what a
    /// leader's Accept messages depend on (see `propose_slot`).
    promise_seq: PersistSeq,
    persisted: PersistSeq,
    /// `None` until the first step, when we learn the time.
    acceptor: Option<Acceptor>,
    election: Election,
    role: Role,
    learner: Learner,
    /// First slot not known chosen.
    commit: Slot,
    /// Who decides which slot: the membership in effect at the snapshot
    /// point and every change chosen since, up to `commit` (each once).
    members: MembershipLog,
    loopback: VecDeque<(PersistSeq, Message)>,
    pending: VecDeque<Value>,
    /// `wire_size::batch_bytes` of `pending`: the queue is bounded in bytes
    /// as well as in commands.
    pending_bytes: usize,
    now: Nanos,
    stats: Stats,
}

impl Replica {
    /// Builds a replica from its durable state. `seed` drives the election
    /// timeouts; give each node (and each restart) a different one.
    pub fn new(cfg: Config, durable: DurableState, seed: u64) -> Result<Replica, ConfigError> {
        cfg.validate()?;
        let commit = acceptor::first_unchosen(&durable);
        let floor = durable.snapshot.as_ref().map_or(Slot(0), |s| s.up_to);
        let members = match &durable.snapshot {
            Some(s) => membership::unframe_snapshot(&s.data)
                .map_err(|_| ConfigError::BadSnapshotMembership)?
                .0
                .unwrap_or_else(|| bootstrap_log(&cfg)),
            None => bootstrap_log(&cfg),
        };
        let mut replica = Replica {
            last_issued: durable.persisted_seq,
            promise_seq: durable.persisted_seq,
            persisted: durable.persisted_seq,
            state: durable,
            ops: Vec::new(),
            ops_urgent: false,
            acceptor: None,
            election: Election::new(seed ^ cfg.node_id.0.rotate_left(32)),
            role: Role::Follower,
            learner: Learner::new(floor),
            commit,
            loopback: VecDeque::new(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            now: Nanos(0),
            stats: Stats::default(),
            members,
            cfg,
        };
        replica.learn_membership(floor, commit);
        Ok(replica)
    }

    /// The snapshot the log starts after (recovered or installed), which
    /// the application must hold before the first chosen entry is applied:
    /// the application's bytes, without the membership the log keeps.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let s = self.state.snapshot.as_ref()?;
        Some(app_snapshot(s))
    }

    /// The memberships from the snapshot point on, as far as known chosen.
    pub fn membership(&self) -> &MembershipLog {
        &self.members
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.node_id
    }

    /// Whether this node currently leads (phase 1 done, not deposed).
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    /// The node this replica believes leads, if any.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self.role {
            Role::Leader(_) => Some(self.cfg.node_id),
            _ => self.election.leader_hint,
        }
    }

    /// If this node leads and its lease runs at local time `now`, the
    /// lease's end; no other node can be leader before then.
    pub fn lease_until(&self, now: Nanos) -> Option<Nanos> {
        match &self.role {
            Role::Leader(l) if now < l.lease_until => Some(l.lease_until),
            _ => None,
        }
    }

    /// First slot not known chosen here.
    pub fn commit_index(&self) -> Slot {
        self.commit
    }

    /// What this replica currently believes.
    pub fn status(&self) -> Status {
        Status {
            leader: self.is_leader(),
            ballot: self.my_ballot(),
            promised: self.state.promised,
            commit: self.commit,
            applied: self.learner.applied,
            catch_up_target: self.learner.catch_up_target,
            in_flight_slots: match &self.role {
                Role::Leader(l) => l.in_flight.len(),
                _ => 0,
            },
            pending_values: self.pending.len(),
            persist_issued: self.last_issued,
            persisted: self.persisted,
            members: self.members.at(self.commit).clone(),
            membership_change_at: self.members.next_change_after(self.commit),
            follower_commits: match &self.role {
                Role::Leader(l) => l.follower_commits.clone(),
                _ => BTreeMap::new(),
            },
        }
    }

    /// The configuration this replica runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters of ignored input.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The only way to drive the replica. `now` is the local monotonic clock;
    /// a reading earlier than a previous one is treated as the previous one.
    pub fn step(&mut self, now: Nanos, input: Input) -> Effects {
        let mut fx = Effects::default();
        self.now = self.now.max(now);
        let ticked = matches!(input, Input::Tick);
        if self.acceptor.is_none() {
            self.acceptor = Some(Acceptor::booted(self.now, &self.cfg));
            self.election.reset_timer(self.now, &self.cfg);
        }
        match input {
            Input::Peer { from, msg } => {
                if from == self.cfg.node_id || !self.knows(from) || msg.check(&self.cfg).is_err() {
                    self.stats.malformed += 1;
                } else {
                    self.on_message(from, msg, &mut fx);
                }
            }
            Input::Propose(values) => self.on_propose(values, &mut fx),
            Input::Tick => self.on_tick(&mut fx),
            Input::Persisted { up_to } => {
                self.persisted = self.persisted.max(up_to.min(self.last_issued));
            }
            Input::Compact { up_to, data } => {
                let floor = self.floor();
                if up_to <= self.learner.applied && up_to > floor {
                    // The snapshot carries the memberships later slots
                    // need; one that never changed is left out, so a
                    // previous release can read the snapshot.
                    let members = self.members.snapshot_at(up_to);
                    let changed = members != bootstrap_log(&self.cfg);
                    let data = membership::frame_snapshot(&members, changed, data);
                    self.persist(PersistOp::Snapshot(Snapshot { up_to, data }));
                    self.members.trim_before(up_to);
                }
            }
            Input::Abdicate { successor } => self.abdicate(successor, &mut fx),
            Input::ChangeMembership(change) => self.on_change_membership(change, &mut fx),
        }
        self.drain_loopback(&mut fx);
        if self.phase_one_done() {
            self.become_leader(&mut fx);
        }
        // A leader whose removal took effect (a predecessor proposed it)
        // hands over: it is no voter any more, and must not campaign again.
        if self.is_leader() && !self.may_campaign() {
            self.abdicate(None, &mut fx);
        }
        self.settle_membership_change(&mut fx);
        self.flush_proposals(&mut fx);
        self.finish(&mut fx, ticked);
        fx
    }

    // ----- plumbing -------------------------------------------------------

    fn floor(&self) -> Slot {
        self.state.snapshot.as_ref().map_or(Slot(0), |s| s.up_to)
    }

    fn acceptor(&self) -> Acceptor {
        self.acceptor
            .clone()
            .unwrap_or_else(|| Acceptor::booted(self.now, &self.cfg))
    }

    /// Applies `op` in memory now and queues it for disk.
    fn persist(&mut self, op: PersistOp) {
        if matches!(op, PersistOp::Promise(_)) {
            // Issued at the end of this step, as the next sequence number.
            self.promise_seq = PersistSeq(self.last_issued.0 + 1);
        }
        if !matches!(op, PersistOp::Chosen { .. }) {
            self.ops_urgent = true;
        }
        self.state.apply_op(&op);
        self.ops.push(op);
        self.advance_commit();
    }

    fn advance_commit(&mut self) {
        let before = self.commit.max(self.floor());
        self.commit = before;
        while self.state.log.get(&self.commit).is_some_and(|e| e.chosen) {
            self.commit = self.commit.next();
        }
        if self.commit > before {
            self.learn_membership(before, self.commit);
        }
    }

    /// Ends the leader's pending change once its slot is chosen: made (the
    /// membership log holds it), or, should another value have won the
    /// slot, refused so that whoever asked hears of it and may ask again.
    fn settle_membership_change(&mut self, fx: &mut Effects) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let Some((slot, change)) = l.change.as_ref().and_then(|c| Some((c.slot?, c.change))) else {
            return;
        };
        if slot >= self.commit {
            return;
        }
        l.change = None;
        let lost = self
            .state
            .log
            .get(&slot)
            .is_some_and(|e| change_in(&e.batch) != Some(change));
        if lost {
            fx.rejected.push(Rejected {
                values: vec![change.encode()],
                leader_hint: Some(self.cfg.node_id),
                reason: RejectReason::NotLeader,
            });
        }
    }

    /// Adds the membership changes chosen in `[from, to)` (all known
    /// chosen) to the membership log, in slot order.
    fn learn_membership(&mut self, from: Slot, to: Slot) {
        let changes: Vec<(Slot, MembershipChange)> = self
            .state
            .log
            .range(from..to)
            .filter_map(|(slot, e)| Some((*slot, change_in(&e.batch)?)))
            .collect();
        for (slot, change) in changes {
            // A change the membership refuses (raced by another) is a
            // no-op on every replica alike.
            let _ = self.members.on_chosen(slot, change);
        }
    }

    /// Whether `node` may talk to this replica: any node of the cluster but
    /// one whose removal is in effect. Who counts is decided where votes
    /// and promises are counted (by each slot's voters), so a node whose
    /// view is behind (a joining node, or one cut off while members
    /// changed) still hears a leader it does not know of yet, and learns
    /// from it; the transport has checked that the peer is a node of the
    /// cluster.
    fn knows(&self, node: NodeId) -> bool {
        !self.members.at(self.commit).retired.contains(&node)
    }

    /// Every other node this replica talks to: the members deciding the
    /// commit index and later slots, and those a pending change or a
    /// campaign's promises name.
    fn peers(&self) -> Vec<NodeId> {
        let mut out = BTreeSet::new();
        for m in self.members.from_slot(self.commit) {
            out.extend(m.nodes());
        }
        match &self.role {
            Role::Leader(l) => {
                if let Some(c) = &l.change {
                    out.extend(c.after.nodes());
                }
            }
            Role::Candidate(c) => {
                for m in c.memberships.from_slot(self.commit) {
                    out.extend(m.nodes());
                }
            }
            Role::Follower => {}
        }
        out.remove(&self.cfg.node_id);
        out.into_iter().collect()
    }

    /// Whether this node may campaign: it is a voter of the membership
    /// deciding its commit index (a learner or a removed node never is).
    fn may_campaign(&self) -> bool {
        self.members
            .at(self.commit)
            .voters
            .contains(&self.cfg.node_id)
    }

    /// Whether `slot` is in the part of the log this replica keeps entries
    /// for: from its commit index up to `max_log_ahead_slots` past it. Keeps
    /// the log (and every promise) bounded; later slots come via catch-up.
    fn in_window(&self, slot: Slot) -> bool {
        slot >= self.commit && slot.0 < self.commit.0.saturating_add(self.cfg.max_log_ahead_slots)
    }

    /// The persist sequence every message sent now depends on.
    fn dep_seq(&self) -> PersistSeq {
        // Chosen markers alone are not issued this step; nothing depends on them.
        if !self.ops_urgent {
            self.last_issued
        } else {
            PersistSeq(self.last_issued.0 + 1)
        }
    }

    /// Rule "persist before reply": a promise or accepted reply is a claim
    /// about durable state; if it left before the state hit disk and we
    /// crashed, we could later contradict it and two values could be chosen.
    fn reply_seq(&self) -> PersistSeq {
        if self.cfg.canary_on(CanaryRef::PersistBeforeReply) {
            PersistSeq(0)
        } else {
            self.dep_seq()
        }
    }

    /// Rule "acknowledge a leader on its promise alone": a heartbeat ack
    /// claims only that this acceptor follows the ballot, i.e. that its
    /// promise of it is durable; not that its accepts are. Gating it on
    /// every persist issued (as a promise reply is) would hold the leader's
    /// lease renewal behind this node's fsync of a large batch, and a leader
    /// whose followers write a lot would lose its quorum for nothing.
    fn ack_seq(&self) -> PersistSeq {
        if self.cfg.canary_on(CanaryRef::PersistBeforeReply) {
            PersistSeq(0)
        } else {
            self.promise_seq.min(self.dep_seq())
        }
    }

    fn send(&mut self, to: NodeId, msg: Message, after: PersistSeq, fx: &mut Effects) {
        if to == self.cfg.node_id {
            if self.loopback.len() < MAX_LOOPBACK {
                self.loopback.push_back((after, msg));
            }
        } else {
            fx.send.push(Outgoing { to, msg, after });
        }
    }

    fn broadcast(&mut self, msg: &Message, fx: &mut Effects) {
        let after = self.dep_seq();
        for to in self.peers() {
            fx.send.push(Outgoing {
                to,
                msg: msg.clone(),
                after,
            });
        }
    }

    fn drain_loopback(&mut self, fx: &mut Effects) {
        // Each pass handles messages whose state is durable; handling may
        // queue new ones (which wait for the next Persisted).
        let mut budget = MAX_LOOPBACK;
        while budget > 0 {
            budget -= 1;
            match self.loopback.front() {
                Some((after, _)) if *after <= self.persisted => {}
                _ => break,
            }
            if let Some((_, msg)) = self.loopback.pop_front() {
                let me = self.cfg.node_id;
                self.on_message(me, msg, fx);
            }
        }
    }

    fn finish(&mut self, fx: &mut Effects, ticked: bool) {
        let markers_due = ticked || self.ops.len() >= MAX_DEFERRED_MARKERS;
        if self.ops_urgent || (markers_due && !self.ops.is_empty()) {
            self.ops_urgent = false;
            self.last_issued = PersistSeq(self.last_issued.0 + 1);
            fx.persist = Some(PersistRequest {
                seq: self.last_issued,
                ops: std::mem::take(&mut self.ops),
            });
        }
        let mut chosen = Vec::new();
        self.learner.drain(&self.state, self.commit, &mut chosen);
        fx.chosen.extend(chosen);
        fx.wake_at = Some(self.next_wakeup());
        debug_assert!(self.persisted <= self.last_issued);
        debug_assert!(self.learner.applied <= self.commit);
        debug_assert!(self.commit >= self.floor());
        if let Role::Leader(l) = &self.role {
            debug_assert!(l.ballot.node == self.cfg.node_id);
            debug_assert!(l.in_flight.keys().all(|s| *s < l.next_slot));
        }
    }

    fn next_wakeup(&self) -> Nanos {
        let hb = self.cfg.heartbeat_interval_ns;
        let mut t = match &self.role {
            Role::Leader(l) => l.next_heartbeat_at,
            Role::Candidate(c) => c.last_sent_at.plus(2 * hb),
            Role::Follower => self.election.deadline,
        };
        if self.commit < self.learner.catch_up_target || !self.ops.is_empty() {
            t = t.min(self.now.plus(hb));
        }
        t.max(self.now)
    }

    /// Rule "abdicate before releasing the lease": the leader gives up its
    /// lease (`LostLeadership` is emitted first, so the shell stops serving
    /// lease reads and keepalives) and only then asks the acceptors to drop
    /// their lease promise to it. No other leader can therefore exist while
    /// this one still believes in its lease, and the successor need not wait
    /// for the lease to run out: a planned handover costs about one round
    /// trip instead of an election timeout.
    fn abdicate(&mut self, successor: Option<NodeId>, fx: &mut Effects) {
        let Role::Leader(l) = &self.role else {
            return;
        };
        let ballot = l.ballot;
        let me = self.cfg.node_id;
        let voters = &self.members.at(self.commit).voters;
        let successor = successor
            .filter(|s| *s != me && voters.contains(s))
            .or_else(|| {
                let after = voters.iter().copied().find(|m| *m > me);
                after.or_else(|| voters.iter().copied().find(|m| *m != me))
            });
        self.step_down(successor, fx);
        // Stay out of the next election: the successor should win it.
        self.election.deadline = self
            .now
            .plus(self.cfg.election_timeout_max_ns.saturating_mul(2));
        if let Some(a) = &mut self.acceptor {
            a.release_lease(self.now, me);
        }
        if let Some(successor) = successor {
            let msg = Message::Abdicate { ballot, successor };
            // Depends on nothing unpersisted; the promise of `ballot` is
            // already durable everywhere it matters.
            for to in self.peers() {
                fx.send.push(Outgoing {
                    to,
                    msg: msg.clone(),
                    after: PersistSeq(0),
                });
            }
        }
    }

    /// An acceptor hears that the leader it follows abdicated.
    fn on_abdicate(&mut self, from: NodeId, ballot: Ballot, successor: NodeId, fx: &mut Effects) {
        // Only the holder of the current promise can release it; a late or
        // forged abdication for an older ballot changes nothing.
        if ballot != self.state.promised || ballot.node != from {
            return;
        }
        let now = self.now;
        if let Some(a) = &mut self.acceptor {
            a.release_lease(now, from);
        }
        self.election.leader_hint = Some(successor);
        if successor == self.cfg.node_id
            && matches!(self.role, Role::Follower)
            && self.may_campaign()
        {
            self.start_pre_vote(fx);
        } else {
            self.election.reset_timer(now, &self.cfg);
        }
    }

    fn step_down(&mut self, hint: Option<NodeId>, fx: &mut Effects) {
        if let Role::Leader(l) = &self.role {
            fx.leadership.push(LeadershipEvent::LostLeadership);
            // A change still queued was not made; one proposed may yet be
            // chosen by the next leader (the membership will tell).
            if let Some(c) = l.change.as_ref().filter(|c| c.slot.is_none()) {
                fx.rejected.push(Rejected {
                    values: vec![c.change.encode()],
                    leader_hint: hint,
                    reason: RejectReason::NotLeader,
                });
            }
        }
        if !matches!(self.role, Role::Follower) {
            self.role = Role::Follower;
            self.election.reset_timer(self.now, &self.cfg);
        }
        self.election.leader_hint = hint;
        if !self.pending.is_empty() {
            self.pending_bytes = 0;
            fx.rejected.push(Rejected {
                values: self.pending.drain(..).collect(),
                leader_hint: hint,
                reason: RejectReason::NotLeader,
            });
        }
    }

    fn my_ballot(&self) -> Option<Ballot> {
        match &self.role {
            Role::Follower => None,
            Role::Candidate(c) => Some(c.ballot),
            Role::Leader(l) => Some(l.ballot),
        }
    }

    // ----- inputs ---------------------------------------------------------

    fn on_propose(&mut self, values: Vec<Value>, fx: &mut Effects) {
        if !self.is_leader() {
            fx.rejected.push(Rejected {
                values,
                leader_hint: self.leader_hint(),
                reason: RejectReason::NotLeader,
            });
            return;
        }
        // Only `Input::ChangeMembership` proposes a membership change: a
        // command that looks like one would be taken for one.
        let (reserved, values): (Vec<Value>, Vec<Value>) = values
            .into_iter()
            .partition(|v| membership::is_membership_value(v));
        if !reserved.is_empty() {
            fx.rejected.push(Rejected {
                values: reserved,
                leader_hint: Some(self.cfg.node_id),
                reason: RejectReason::Reserved,
            });
        }
        let (ok, too_large): (Vec<Value>, Vec<Value>) = values
            .into_iter()
            .partition(|v| v.len() <= self.cfg.max_value_bytes);
        if !too_large.is_empty() {
            fx.rejected.push(Rejected {
                values: too_large,
                leader_hint: Some(self.cfg.node_id),
                reason: RejectReason::TooLarge,
            });
        }
        // Rule "a bounded queue": at most `max_pending_values` commands and
        // `max_pending_bytes` bytes wait; the rest are refused at once (the
        // client backs off) rather than held without limit.
        let mut overflow = Vec::new();
        for value in ok {
            let bytes = value.len().saturating_add(VALUE_OVERHEAD_BYTES);
            let fits = self.pending.len() < self.cfg.max_pending_values
                && self.pending_bytes.saturating_add(bytes) <= self.cfg.max_pending_bytes;
            if fits && overflow.is_empty() {
                self.pending_bytes += bytes;
                self.pending.push_back(value);
            } else {
                overflow.push(value);
            }
        }
        if !overflow.is_empty() {
            fx.rejected.push(Rejected {
                values: overflow,
                leader_hint: Some(self.cfg.node_id),
                reason: RejectReason::QueueFull,
            });
        }
    }

    fn on_tick(&mut self, fx: &mut Effects) {
        let now = self.now;
        let hb = self.cfg.heartbeat_interval_ns;
        let peers = self.peers();
        if let Some((peer, request)) = self
            .learner
            .request_due(now, self.commit, &self.cfg, &peers)
        {
            self.send(peer, request, PersistSeq(0), fx);
        }
        match &self.role {
            Role::Leader(l) => {
                // Rule "step down without a quorum": a leader that has not
                // heard a quorum for the longest election timeout is cut
                // off; its lease is long gone and clients should look
                // elsewhere. Safety never rests on this (the lease does),
                // so it waits that long, not the shortest timeout: acks
                // merely slowed by a loaded node should not cost a
                // leadership that its followers still follow.
                let patience = self.cfg.election_timeout_max_ns;
                if now.since(l.last_quorum_at) > patience {
                    self.step_down(None, fx);
                    return;
                }
                if now >= l.next_heartbeat_at {
                    self.heartbeat(fx);
                    self.retransmit_accepts(fx);
                }
            }
            Role::Candidate(c) => {
                if now.since(c.started_at) > self.cfg.election_timeout_max_ns {
                    self.step_down(None, fx);
                } else if now.since(c.last_sent_at) >= 2 * hb {
                    let msg = Message::Prepare {
                        ballot: c.ballot,
                        from_slot: c.from_slot,
                    };
                    let missing: Vec<NodeId> = peers
                        .iter()
                        .copied()
                        .filter(|m| !c.promises.get(m).is_some_and(|p| p.complete(c.from_slot)))
                        .collect();
                    let after = self.dep_seq();
                    for to in missing {
                        self.send(to, msg.clone(), after, fx);
                    }
                    if let Role::Candidate(c) = &mut self.role {
                        c.last_sent_at = now;
                    }
                }
            }
            Role::Follower => {
                if self
                    .election
                    .pre_vote
                    .as_ref()
                    .is_some_and(|p| now.since(p.started_at) > self.cfg.election_timeout_min_ns)
                {
                    self.election.pre_vote = None;
                }
                if now >= self.election.deadline {
                    if self.may_campaign() {
                        self.start_pre_vote(fx);
                    } else {
                        self.election.reset_timer(now, &self.cfg);
                    }
                }
            }
        }
    }

    fn start_pre_vote(&mut self, fx: &mut Effects) {
        self.election.reset_timer(self.now, &self.cfg);
        let ballot = self
            .election
            .next_ballot(self.state.promised, self.cfg.node_id);
        // Each attempt gets its own label, so grants delayed from an earlier
        // attempt (e.g. buffered while we were paused) never count.
        self.election.see_round(ballot);
        let mut grants = BTreeSet::new();
        let me = self.cfg.node_id;
        if election::grant_pre_vote(&self.acceptor(), self.now, me, false, &self.cfg) {
            grants.insert(me);
        }
        self.election.pre_vote = Some(PreVoteRound {
            ballot,
            grants,
            started_at: self.now,
        });
        if self.quorum_of_every_membership(&BTreeSet::from([me])) {
            self.start_candidacy(fx);
            return;
        }
        self.broadcast(&Message::PreVote { ballot }, fx);
    }

    fn start_candidacy(&mut self, fx: &mut Effects) {
        self.election.pre_vote = None;
        let me = self.cfg.node_id;
        let ballot = self.election.next_ballot(self.state.promised, me);
        if !self.acceptor().may_promise(self.now, me, &self.cfg) {
            return;
        }
        // Our own promise is durable before any Prepare leaves, so after a
        // crash we never reuse this ballot for a different value.
        self.persist(PersistOp::Promise(ballot));
        self.election.see_round(ballot);
        let from_slot = self.commit;
        self.role = Role::Candidate(Candidate {
            ballot,
            from_slot,
            promises: BTreeMap::new(),
            memberships: self.members.clone(),
            started_at: self.now,
            last_sent_at: self.now,
        });
        self.broadcast(&Message::Prepare { ballot, from_slot }, fx);
        let after = self.dep_seq();
        for part in self.promise_parts(ballot, from_slot) {
            self.send(me, part, after, fx);
        }
    }

    fn promise_parts(&self, ballot: Ballot, from_slot: Slot) -> Vec<Message> {
        acceptor::promise_parts(&self.state, ballot, from_slot, self.commit, &self.cfg)
    }

    fn on_message(&mut self, from: NodeId, msg: Message, fx: &mut Effects) {
        match msg {
            Message::PreVote { ballot } => {
                self.election.see_round(ballot);
                let granted = election::grant_pre_vote(
                    &self.acceptor(),
                    self.now,
                    from,
                    self.is_leader(),
                    &self.cfg,
                );
                self.send(
                    from,
                    Message::PreVoteReply { ballot, granted },
                    PersistSeq(0),
                    fx,
                );
            }
            Message::PreVoteReply { ballot, granted } => {
                let mut won = false;
                if let (Some(p), Role::Follower) = (&mut self.election.pre_vote, &self.role) {
                    if p.ballot == ballot && granted {
                        p.grants.insert(from);
                    }
                }
                if let (Some(p), Role::Follower) = (&self.election.pre_vote, &self.role) {
                    won = p.ballot == ballot && self.quorum_of_every_membership(&p.grants);
                }
                if won {
                    self.start_candidacy(fx);
                }
            }
            Message::Prepare { ballot, from_slot } => self.on_prepare(from, ballot, from_slot, fx),
            Message::Promise {
                ballot,
                from_slot,
                chosen_up_to,
                entries,
                part_start,
                part_end,
            } => {
                let mut counted = false;
                if let Role::Candidate(c) = &mut self.role {
                    if c.ballot == ballot && c.from_slot == from_slot {
                        c.promises.entry(from).or_default().add_part(
                            chosen_up_to,
                            entries,
                            part_start,
                            part_end,
                        );
                        counted = true;
                    }
                }
                if counted {
                    if chosen_up_to > self.commit {
                        self.learner.want(chosen_up_to, from);
                    }
                    self.follow_promised_memberships(fx);
                }
            }
            Message::Nack { ballot, promised } => {
                self.election.see_round(promised);
                // Only a strictly higher promise deposes us; an equal or lower
                // one means the acceptor refused because of a running lease.
                if self.my_ballot() == Some(ballot) && promised > ballot {
                    self.step_down(Some(promised.node), fx);
                }
            }
            Message::Accept {
                ballot,
                slot,
                batch,
                commit,
            } => self.on_accept(from, ballot, slot, batch, commit, fx),
            Message::Accepted { ballot, slot } => self.on_accepted(from, ballot, slot, fx),
            Message::Heartbeat {
                ballot,
                round,
                commit,
            } => {
                if ballot < self.state.promised {
                    let promised = self.state.promised;
                    self.send(from, Message::Nack { ballot, promised }, PersistSeq(0), fx);
                    return;
                }
                self.follow(from, ballot, fx);
                let after = self.ack_seq();
                self.learn_commit(from, ballot, commit);
                let commit = self.commit;
                let ack = Message::HeartbeatAck {
                    ballot,
                    round,
                    commit,
                };
                self.send(from, ack, after, fx);
            }
            Message::HeartbeatAck {
                ballot,
                round,
                commit,
            } => {
                if self.my_ballot() == Some(ballot) && commit > self.commit {
                    self.learner.want(commit, from);
                }
                let now = self.now;
                if let Role::Leader(l) = &mut self.role {
                    if l.ballot == ballot {
                        l.follower_commits.insert(from, commit);
                        l.follower_heard_at.insert(from, now);
                        if let Some((_, sent)) = l.round_commits.iter().find(|(r, _)| *r == round) {
                            l.follower_lag.insert(from, sent.0.saturating_sub(commit.0));
                        }
                    }
                }
                self.on_heartbeat_ack(from, ballot, round, fx)
            }
            Message::Abdicate { ballot, successor } => {
                self.on_abdicate(from, ballot, successor, fx);
            }
            Message::CatchUpRequest { from_slot } => {
                let reply = learner::serve_catch_up(&self.state, from_slot, self.commit, &self.cfg);
                self.send(from, reply, PersistSeq(0), fx);
            }
            Message::SnapshotRequest { up_to, offset } => {
                let reply = learner::serve_snapshot_chunk(&self.state, up_to, offset, &self.cfg);
                if let Some(reply) = reply {
                    self.send(from, reply, PersistSeq(0), fx);
                }
            }
            Message::CatchUp { snapshot, entries } => self.on_catch_up(from, snapshot, entries, fx),
        }
    }

    /// Rule "promise": promise a ballot at least as high as any promised so
    /// far, and only when no lease we gave another leader is running.
    fn on_prepare(&mut self, from: NodeId, ballot: Ballot, from_slot: Slot, fx: &mut Effects) {
        self.election.see_round(ballot);
        let promised = self.state.promised;
        let fresh = ballot > promised;
        if ballot < promised
            || (fresh
                && !self
                    .acceptor()
                    .may_promise(self.now, ballot.node, &self.cfg))
        {
            self.send(from, Message::Nack { ballot, promised }, PersistSeq(0), fx);
            return;
        }
        if fresh {
            self.persist(PersistOp::Promise(ballot));
            if self.my_ballot().is_some_and(|b| b < ballot) {
                self.step_down(Some(ballot.node), fx);
            }
        }
        let after = self.reply_seq();
        for part in self.promise_parts(ballot, from_slot) {
            self.send(from, part, after, fx);
        }
    }

    /// We hear a leader with `ballot >= promised`: raise the promise if
    /// needed, give it a lease, reset the election timer.
    fn follow(&mut self, from: NodeId, ballot: Ballot, fx: &mut Effects) {
        self.election.see_round(ballot);
        if ballot > self.state.promised {
            self.persist(PersistOp::Promise(ballot));
        }
        if self.my_ballot().is_some_and(|b| b < ballot) {
            self.step_down(Some(ballot.node), fx);
        }
        if self.my_ballot() == Some(ballot) {
            return;
        }
        let now = self.now;
        if let Some(a) = &mut self.acceptor {
            a.grant_lease(now, ballot.node, self.cfg.lease_duration_ns);
        }
        self.election.reset_timer(now, &self.cfg);
        self.election.pre_vote = None;
        self.election.leader_hint = Some(from);
    }

    fn on_accept(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        slot: Slot,
        batch: Batch,
        commit: Slot,
        fx: &mut Effects,
    ) {
        if !acceptor::may_accept(&self.state, ballot, &self.cfg) {
            let promised = self.state.promised;
            self.send(from, Message::Nack { ballot, promised }, PersistSeq(0), fx);
            return;
        }
        if ballot >= self.state.promised {
            self.follow(from, ballot, fx);
        }
        // Learn the leader's commit index first: it moves the window below
        // forward. Otherwise a follower that learns commits only from the
        // next message drops every Accept past its stale window, and with a
        // small window (max_log_ahead_slots near pipeline_window_slots) the
        // leader's resends back off until the pipeline nearly stops (found
        // by the simulator: PAXLOCK_SIM_SMALL_MESSAGES=1
        // PAXLOCK_SIM_LOG_WINDOW=4, seed 834, commands not chosen 10 s after
        // healing).
        self.learn_commit(from, ballot, commit);
        // Bound the log: far-ahead slots wait until we catch up. Slots below
        // the commit are still accepted (the value is the chosen one) so a
        // new leader re-proposing them can gather its quorum.
        let window_end = Slot(self.commit.0.saturating_add(self.cfg.max_log_ahead_slots));
        // A correct leader proposes a slot's chosen value again, never
        // another: a vote for another value would let two be chosen.
        let conflicts = self
            .state
            .log
            .get(&slot)
            .is_some_and(|e| e.chosen && e.batch != batch);
        if conflicts {
            self.stats.malformed += 1;
        } else if slot >= self.floor() && slot < window_end {
            self.persist(PersistOp::Accept {
                slot,
                ballot,
                batch,
            });
            let after = self.reply_seq();
            self.send(from, Message::Accepted { ballot, slot }, after, fx);
        }
        // Again: the slot just accepted may lie below the leader's commit.
        self.learn_commit(from, ballot, commit);
    }

    /// Rule "learn from the piggybacked commit index": every slot below the
    /// leader's commit is chosen, and the leader proposes one value per slot
    /// per ballot, so our entry accepted at the *same* ballot is the chosen
    /// one. Entries from other ballots must come from catch-up.
    fn learn_commit(&mut self, from: NodeId, ballot: Ballot, commit: Slot) {
        if ballot != self.state.promised || commit <= self.commit {
            return;
        }
        let end = Slot(
            commit
                .0
                .min(self.commit.0.saturating_add(self.cfg.max_log_ahead_slots)),
        );
        let learnable: Vec<(Slot, Batch)> = self
            .state
            .log
            .range(self.commit..end)
            .filter(|(_, e)| !e.chosen && e.ballot == ballot)
            .map(|(s, e)| (*s, e.batch.clone()))
            .collect();
        for (slot, batch) in learnable {
            self.persist(PersistOp::Chosen { slot, batch });
        }
        if self.commit < commit {
            self.learner.want(commit, from);
        }
    }

    fn on_accepted(&mut self, from: NodeId, ballot: Ballot, slot: Slot, _fx: &mut Effects) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if l.ballot != ballot {
            return;
        }
        let Some(f) = l.in_flight.get_mut(&slot) else {
            return;
        };
        f.acks.insert(from);
        // Rule "the votes of the slot's voters": only a majority of the
        // membership deciding `slot` chooses its value (exact: the leader
        // proposed it within alpha of its commit index).
        let members = self.members.at(slot);
        let mut chosen = members.is_quorum(&f.acks);
        if self.cfg.canary_on(CanaryRef::VotersOnly) {
            let mut all = members.clone();
            all.voters.extend(members.learners.iter().copied());
            chosen = all.is_quorum(&f.acks);
        }
        if self.cfg.canary_on(CanaryRef::MembershipOnceInEffect) {
            let early = l
                .change
                .as_ref()
                .filter(|c| c.slot.is_some_and(|s| s < slot));
            if let Some(c) = early {
                chosen = c.after.is_quorum(&f.acks);
            }
        }
        if chosen {
            let batch = f.batch.clone();
            l.in_flight.remove(&slot);
            self.persist(PersistOp::Chosen { slot, batch });
        }
    }

    fn on_heartbeat_ack(&mut self, from: NodeId, ballot: Ballot, round: u64, fx: &mut Effects) {
        let lease_ns = self.cfg.leader_lease_ns();
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if l.ballot != ballot {
            return;
        }
        let Some(r) = l.rounds.iter_mut().find(|r| r.round == round) else {
            return;
        };
        r.acks.insert(from);
        // Rule "a lease covers every membership it may meet": a rival must
        // win a quorum of each membership deciding the slots it would
        // lead, so the acks must hold a quorum of each one this leader
        // may meet: in effect, chosen and pending, or proposed.
        if !self.lease_quorum(round) {
            return;
        }
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let Some(r) = l.rounds.iter_mut().find(|r| r.round == round) else {
            return;
        };
        // Rule "leader lease": a quorum followed this round, each
        // refusing rivals for a lease from receipt; we count ours from
        // the send, shortened for drift (see `Config::leader_lease_ns`).
        let until = r.sent_at.plus(lease_ns);
        let sent_at = r.sent_at;
        l.last_quorum_at = l.last_quorum_at.max(sent_at);
        if until > l.lease_until {
            l.lease_until = until;
            fx.leadership.push(LeadershipEvent::LeaseUntil { until });
        }
        // Older rounds can no longer extend the lease.
        l.rounds.retain(|r| r.round > round);
    }

    fn on_catch_up(
        &mut self,
        from: NodeId,
        chunk: Option<SnapshotChunk>,
        entries: Vec<(Slot, Batch)>,
        fx: &mut Effects,
    ) {
        if let Some(chunk) = chunk {
            match self.learner.on_chunk(from, chunk, self.commit, self.now) {
                ChunkOutcome::Ignored => {}
                ChunkOutcome::Request { peer, msg } => self.send(peer, msg, PersistSeq(0), fx),
                ChunkOutcome::Complete(snapshot) => self.install_snapshot(snapshot, fx),
            }
        }
        for (slot, batch) in entries {
            let known = self.state.log.get(&slot).is_some_and(|e| e.chosen);
            if self.in_window(slot) && !known {
                self.persist(PersistOp::Chosen { slot, batch });
            }
        }
    }

    /// A peer's snapshot replaces entries we lack; only if it is ahead of us.
    fn install_snapshot(&mut self, s: Snapshot, fx: &mut Effects) {
        if s.up_to <= self.commit {
            return;
        }
        // The memberships the snapshot carries decide the slots after it
        // (one without any comes from a cluster that never changed).
        let Ok((members, _)) = membership::unframe_snapshot(&s.data) else {
            self.stats.malformed += 1;
            return;
        };
        self.members = members.unwrap_or_else(|| bootstrap_log(&self.cfg));
        let app = app_snapshot(&s);
        self.persist(PersistOp::Snapshot(s));
        self.learner.applied = self.learner.applied.max(app.up_to);
        fx.chosen.clear();
        fx.install_snapshot = Some(app);
    }

    fn become_leader(&mut self, fx: &mut Effects) {
        let (result, ballot) = match &self.role {
            Role::Candidate(c) => (proposer::merge_promises(c.promised()), c.ballot),
            _ => return,
        };
        for (slot, batch) in &result.chosen {
            let known = self.state.log.get(slot).is_some_and(|e| e.chosen);
            if self.in_window(*slot) && !known {
                self.persist(PersistOp::Chosen {
                    slot: *slot,
                    batch: batch.clone(),
                });
            }
        }
        if let Some(peer) = result.max_commit_peer {
            self.learner.want(result.max_commit, peer);
        }
        let start = self.commit.max(result.max_commit);
        // Bounded: promises carry nothing past a commit index plus the window.
        let next_slot = result
            .end_slot
            .max(start)
            .min(Slot(start.0.saturating_add(self.cfg.max_log_ahead_slots)));
        // Rule "lead only within the window": a candidate so far behind that
        // a slot it must re-propose lies past its own log window would hold
        // accepts no promise of its may report (peers drop such promises)
        // and could not adopt what is chosen there. It catches up instead
        // (asked above) and campaigns again later; a promiser nearer the
        // front can lead meanwhile, and the one furthest ahead always fits.
        if next_slot.0 > self.commit.0.saturating_add(self.cfg.max_log_ahead_slots) {
            self.step_down(None, fx);
            return;
        }
        self.role = Role::Leader(Box::new(Leader::new(ballot, self.now, next_slot)));
        self.election.leader_hint = Some(self.cfg.node_id);
        fx.leadership.push(LeadershipEvent::BecameLeader { ballot });
        // Phase 1 covered every slot from `from_slot`; re-propose what may
        // have been chosen, fill the gaps with no-ops. Slots a promiser knows
        // chosen were adopted above (the rule before guarantees they lie in
        // the window); should one not have been, it gets its chosen value
        // again, never a no-op. Slots past alpha wait in `deferred` until
        // the commit index nears them (`flush_proposals`).
        let mut slot = start;
        let mut deferred = BTreeMap::new();
        while slot < next_slot {
            let known = self.state.log.get(&slot).is_some_and(|e| e.chosen);
            if !known {
                let batch = result
                    .chosen
                    .get(&slot)
                    .or_else(|| result.repropose.get(&slot))
                    .cloned()
                    .unwrap_or_default();
                deferred.insert(slot, batch);
            }
            slot = slot.next();
        }
        if let Role::Leader(l) = &mut self.role {
            l.deferred = deferred;
        }
        self.flush_proposals(fx);
        self.heartbeat(fx);
    }

    /// Rule "a quorum of every membership ahead": the candidate counts as
    /// elected once the complete promises hold a majority of every
    /// membership deciding a slot from its commit index on, as far as its
    /// own log and the promises show (each change a promiser reports is
    /// followed: its new members are asked too). A leader of an old
    /// membership, cut off with members since removed, therefore cannot
    /// win while the current membership's quorum follows another leader:
    /// each chosen change is reported by a quorum of the membership that
    /// chose it, which the candidate needs, up to the current one.
    ///
    /// And the candidate must know every slot below the highest commit
    /// index a promiser reports (locally, or reported chosen), because the
    /// changes chosen there decide the memberships after; it catches up
    /// meanwhile.
    fn phase_one_done(&self) -> bool {
        let Role::Candidate(c) = &self.role else {
            return false;
        };
        // Each promise's completeness is worked out once per step.
        let complete: Vec<(&NodeId, &proposer::PromiseInfo)> = c.promised().collect();
        let promised: BTreeSet<NodeId> = complete.iter().map(|(n, _)| **n).collect();
        if self.cfg.canary_on(CanaryRef::MembershipChain) {
            if !self.members.at(self.commit).is_quorum(&promised) {
                return false;
            }
        } else if !c
            .memberships
            .from_slot(self.commit)
            .chain(self.members.from_slot(self.commit))
            .all(|m| m.is_quorum(&promised))
        {
            return false;
        }
        let max_commit = complete
            .iter()
            .map(|(_, p)| p.chosen_up_to)
            .max()
            .unwrap_or(self.commit);
        if max_commit.0 > self.commit.0.saturating_add(self.cfg.max_log_ahead_slots) {
            // Too far behind to lead: `become_leader` steps down and the
            // candidate catches up (rule "lead only within the window").
            return true;
        }
        let mut slot = self.commit;
        while slot < max_commit {
            let known = self.state.log.get(&slot).is_some_and(|e| e.chosen)
                || complete
                    .iter()
                    .any(|(_, p)| p.entries.get(&slot).is_some_and(|e| e.chosen));
            if !known {
                return false;
            }
            slot = slot.next();
        }
        true
    }

    /// Recomputes the memberships a candidate's promises show ahead (the
    /// value of each slot from the commit index on that a promiser knows
    /// chosen, or else the highest-ballot one: what the candidate would
    /// re-propose) and asks the members it has not asked yet.
    fn follow_promised_memberships(&mut self, fx: &mut Effects) {
        let Role::Candidate(c) = &self.role else {
            return;
        };
        let mut best: BTreeMap<Slot, (bool, Ballot, &Batch)> = BTreeMap::new();
        for p in c.promises.values() {
            for e in p.entries.range(self.commit..).map(|(_, e)| e) {
                let better = best
                    .get(&e.slot)
                    .is_none_or(|(chosen, ballot, _)| !*chosen && (e.chosen || e.ballot > *ballot));
                if better {
                    best.insert(e.slot, (e.chosen, e.ballot, &e.batch));
                }
            }
        }
        let mut memberships = self.members.clone();
        for (slot, (_, _, batch)) in best {
            if let Some(change) = change_in(batch) {
                let _ = memberships.on_chosen(slot, change);
            }
        }
        let asked = self.peers();
        let msg = Message::Prepare {
            ballot: c.ballot,
            from_slot: c.from_slot,
        };
        if let Role::Candidate(c) = &mut self.role {
            c.memberships = memberships;
        }
        let after = self.dep_seq();
        for to in self.peers() {
            if !asked.contains(&to) {
                self.send(to, msg.clone(), after, fx);
            }
        }
    }

    /// Whether `nodes` hold a majority of every membership deciding a slot
    /// from the commit index on.
    fn quorum_of_every_membership(&self, nodes: &BTreeSet<NodeId>) -> bool {
        if self.cfg.canary_on(CanaryRef::MembershipChain) {
            return self.members.at(self.commit).is_quorum(nodes);
        }
        self.members
            .from_slot(self.commit)
            .all(|m| m.is_quorum(nodes))
    }

    /// Whether heartbeat round `round`'s acks hold a quorum of every
    /// membership the leader's lease must: those deciding its commit index
    /// and later slots, and those any change it has proposed or was asked
    /// for (or re-proposes for a predecessor) would bring.
    fn lease_quorum(&self, round: u64) -> bool {
        let Role::Leader(l) = &self.role else {
            return false;
        };
        let Some(r) = l.rounds.iter().find(|r| r.round == round) else {
            return false;
        };
        if !self
            .members
            .from_slot(self.commit)
            .all(|m| m.is_quorum(&r.acks))
        {
            return false;
        }
        if l.change
            .as_ref()
            .is_some_and(|c| !c.after.is_quorum(&r.acks))
        {
            return false;
        }
        // Changes proposed and not yet chosen (a predecessor's, re-proposed).
        let mut proposed = l
            .in_flight
            .values()
            .map(|f| &f.batch)
            .chain(l.deferred.values())
            .filter_map(change_in)
            .peekable();
        if proposed.peek().is_none() {
            return true;
        }
        let mut latest = self.members.latest().clone();
        for change in proposed {
            if let Ok(next) = latest.apply(change) {
                if !next.is_quorum(&r.acks) {
                    return false;
                }
                latest = next;
            }
        }
        true
    }

    /// Whether a membership change is proposed (or re-proposed) and not yet
    /// known chosen, or chosen and not yet in effect.
    fn change_in_flight(&self) -> bool {
        if self.members.next_change_after(self.commit).is_some() {
            return true;
        }
        let Role::Leader(l) = &self.role else {
            return false;
        };
        l.change.is_some()
            || l.in_flight.values().any(|f| change_in(&f.batch).is_some())
            || l.deferred.values().any(|b| change_in(b).is_some())
    }

    fn on_change_membership(&mut self, change: MembershipChange, fx: &mut Effects) {
        let refuse = |fx: &mut Effects, hint, reason| {
            fx.rejected.push(Rejected {
                values: vec![change.encode()],
                leader_hint: hint,
                reason,
            });
        };
        let me = self.cfg.node_id;
        let Role::Leader(l) = &self.role else {
            refuse(fx, self.leader_hint(), RejectReason::NotLeader);
            return;
        };
        let checked = if self.change_in_flight() {
            Err(MembershipError::ChangeInFlight)
        } else if change == MembershipChange::Remove(me) {
            Err(MembershipError::RemovesLeader)
        } else {
            self.members.latest().apply(change).and_then(|after| {
                // Promotion only once the learner is within alpha of us: a
                // voter that far behind could not help a quorum for a while.
                // Measured against the commit index of the heartbeat it
                // acknowledged: one that keeps pace reports that index.
                // And heard lately: a learner that kept pace once and then
                // went silent is not caught up.
                let heard = |n: &NodeId| {
                    (l.follower_heard_at.get(n))
                        .is_some_and(|at| self.now.since(*at) < self.cfg.election_timeout_min_ns)
                };
                let caught_up = |n: &NodeId| {
                    heard(n)
                        && (l.follower_lag.get(n)).is_some_and(|lag| *lag <= MEMBERSHIP_DELAY_SLOTS)
                };
                // A change of voters keeps a majority of the new voters
                // answering (those heard within the shortest election
                // timeout, and this leader): otherwise it would stop the
                // cluster, and it is refused with nothing changed.
                let answering: BTreeSet<NodeId> = l
                    .follower_heard_at
                    .iter()
                    .filter(|(_, at)| self.now.since(**at) < self.cfg.election_timeout_min_ns)
                    .map(|(n, _)| *n)
                    .chain([me])
                    .collect();
                let voters_change = after.voters != self.members.latest().voters;
                match change {
                    MembershipChange::Promote(n) if !caught_up(&n) => {
                        Err(MembershipError::LearnerBehind)
                    }
                    _ if voters_change && !after.is_quorum(&answering) => {
                        Err(MembershipError::WouldLoseQuorum)
                    }
                    _ => Ok(after),
                }
            })
        };
        match checked {
            Err(e) => refuse(fx, Some(me), RejectReason::Membership(e)),
            Ok(after) => {
                let not_before = l.lease_until;
                if let Role::Leader(l) = &mut self.role {
                    l.change = Some(PendingChange {
                        change,
                        after,
                        slot: None,
                        not_before,
                    });
                }
            }
        }
    }

    fn propose_slot(&mut self, slot: Slot, batch: Batch, fx: &mut Effects) {
        let Some(ballot) = self.my_ballot() else {
            return;
        };
        let me = self.cfg.node_id;
        // Our own acceptor accepts first; its Accepted returns via loopback
        // once durable, counting toward the quorum like any other.
        self.persist(PersistOp::Accept {
            slot,
            ballot,
            batch: batch.clone(),
        });
        let commit = self.commit;
        let msg = Message::Accept {
            ballot,
            slot,
            batch: batch.clone(),
            commit,
        };
        // Rule "accept in parallel": an Accept claims only that we hold
        // `ballot`, which rests on promises already durable (ours counted
        // only once persisted). It does not depend on our own accept of
        // this slot — our vote, below, waits for that — so followers get
        // it now and write while we write, instead of one fsync after us.
        let after = self.promise_seq.min(self.dep_seq());
        for to in self.peers() {
            fx.send.push(Outgoing {
                to,
                msg: msg.clone(),
                after,
            });
        }
        let after = self.dep_seq();
        self.send(me, Message::Accepted { ballot, slot }, after, fx);
        let now = self.now;
        if let Role::Leader(l) = &mut self.role {
            l.in_flight.insert(
                slot,
                InFlight {
                    batch,
                    acks: BTreeSet::new(),
                    last_sent_at: now,
                    resends: 0,
                },
            );
        }
    }

    /// Rule "pipeline and batch": while fewer than `pipeline_window_slots`
    /// slots are open past the commit index, put up to `max_batch_values`
    /// queued commands into the next slot.
    ///
    /// Rule "lead only within alpha": never a slot `MEMBERSHIP_DELAY_SLOTS`
    /// or more past the commit index, so the membership deciding each slot
    /// proposed is known exactly (it follows from slots known chosen). In
    /// order: phase 1's re-proposals, then a membership change asked for,
    /// then queued commands, and empty slots up to where a chosen change
    /// takes effect, so that it does without waiting for traffic.
    fn flush_proposals(&mut self, fx: &mut Effects) {
        let window = self.cfg.pipeline_window_slots.min(MEMBERSHIP_DELAY_SLOTS);
        let limit = Slot(self.commit.0.saturating_add(window));
        loop {
            let Role::Leader(l) = &mut self.role else {
                return;
            };
            let Some(entry) = l.deferred.first_entry() else {
                break;
            };
            let slot = *entry.key();
            if slot >= limit {
                return;
            }
            let batch = entry.remove();
            if !self.state.log.get(&slot).is_some_and(|e| e.chosen) {
                self.propose_slot(slot, batch, fx);
            }
        }
        self.propose_membership_change(limit, fx);
        let fill_to = self.members.next_change_after(self.commit);
        let mut budget = window;
        while budget > 0 {
            budget -= 1;
            let Role::Leader(l) = &self.role else { return };
            // Catch-up (e.g. a snapshot) may have moved the commit index
            // past slots we had not used yet.
            let slot = l.next_slot.max(self.commit);
            if slot >= limit || (self.pending.is_empty() && fill_to.is_none_or(|to| slot >= to)) {
                return;
            }
            // Rule "a bounded pipeline in bytes": what is in flight must
            // reach the followers well within a heartbeat's patience, or
            // their leader's heartbeats queue behind it on the way.
            let in_flight_bytes = l
                .in_flight
                .values()
                .map(|f| wire_size::batch_bytes(&f.batch))
                .fold(0, usize::saturating_add);
            if !l.in_flight.is_empty() && in_flight_bytes >= self.cfg.max_in_flight_bytes {
                return;
            }
            if self.state.log.get(&slot).is_some_and(|e| e.chosen) {
                // Already known chosen (e.g. from a late catch-up reply).
                if let Role::Leader(l) = &mut self.role {
                    l.next_slot = slot.next();
                }
                continue;
            }
            let batch = self.next_batch();
            if let Role::Leader(l) = &mut self.role {
                l.next_slot = slot.next();
            }
            self.propose_slot(slot, batch, fx);
        }
    }

    /// Proposes the membership change this leader was asked for, alone in
    /// its slot, once nothing else about membership is in flight and every
    /// lease taken before it was asked for has run out.
    fn propose_membership_change(&mut self, limit: Slot, fx: &mut Effects) {
        let Role::Leader(l) = &self.role else {
            return;
        };
        let Some(pending) = &l.change else {
            return;
        };
        // Every slot phase 1 re-proposed is chosen first: one of them may
        // yet turn out to hold a predecessor's change.
        let others_in_flight = self.members.next_change_after(self.commit).is_some()
            || self.commit < l.recovered_to
            || l.in_flight.values().any(|f| change_in(&f.batch).is_some());
        if pending.slot.is_some() || others_in_flight || self.now < pending.not_before {
            return;
        }
        let slot = l.next_slot.max(self.commit);
        if slot >= limit || self.state.log.get(&slot).is_some_and(|e| e.chosen) {
            return;
        }
        let change = pending.change;
        // A re-proposal of a predecessor's change may have landed since it
        // was asked for.
        let after = match self.members.latest().apply(change) {
            Ok(after) => after,
            Err(e) => {
                if let Role::Leader(l) = &mut self.role {
                    l.change = None;
                }
                fx.rejected.push(Rejected {
                    values: vec![change.encode()],
                    leader_hint: Some(self.cfg.node_id),
                    reason: RejectReason::Membership(e),
                });
                return;
            }
        };
        if let Role::Leader(l) = &mut self.role {
            l.next_slot = slot.next();
            if let Some(pending) = &mut l.change {
                pending.slot = Some(slot);
                pending.after = after;
            }
        }
        self.propose_slot(slot, vec![change.encode()], fx);
    }

    /// Takes the next batch off the queue: commands in order until
    /// `max_batch_values` or `max_batch_bytes` is reached (at least one:
    /// a command alone always fits, `Config::validate` sees to it).
    fn next_batch(&mut self) -> Batch {
        let mut batch = Batch::new();
        let mut bytes = 0usize;
        while batch.len() < self.cfg.max_batch_values {
            let Some(value) = self.pending.front() else {
                break;
            };
            let size = value.len().saturating_add(VALUE_OVERHEAD_BYTES);
            let bounded = !self.cfg.canary_on(CanaryRef::BatchByteBound);
            if bounded && !batch.is_empty() && bytes.saturating_add(size) > self.cfg.max_batch_bytes
            {
                break;
            }
            bytes += size;
            if let Some(value) = self.pending.pop_front() {
                batch.push(value);
            }
        }
        self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
        batch
    }

    fn heartbeat(&mut self, fx: &mut Effects) {
        let now = self.now;
        let me = self.cfg.node_id;
        let commit = self.commit;
        let hb = self.cfg.heartbeat_interval_ns;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let round = l.next_round;
        l.next_round += 1;
        l.next_heartbeat_at = now.plus(hb);
        let mut acks = BTreeSet::new();
        acks.insert(me);
        if l.rounds.len() >= proposer::MAX_HEARTBEAT_ROUNDS {
            l.rounds.pop_front();
        }
        l.rounds.push_back(HeartbeatRound {
            round,
            sent_at: now,
            acks,
        });
        if l.round_commits.len() >= proposer::MAX_HEARTBEAT_ROUNDS {
            l.round_commits.pop_front();
        }
        l.round_commits.push_back((round, commit));
        let ballot = l.ballot;
        // Our own acceptor follows us too: it must refuse rivals during our lease.
        if let Some(a) = &mut self.acceptor {
            a.grant_lease(now, me, self.cfg.lease_duration_ns);
        }
        self.broadcast(
            &Message::Heartbeat {
                ballot,
                round,
                commit,
            },
            fx,
        );
        if self.lease_quorum(round) {
            self.on_heartbeat_ack(me, ballot, round, fx);
        }
    }

    /// Accepts can be lost; resend those unanswered to the acceptors that
    /// have not answered: after two heartbeats, then after twice as long
    /// each time (up to 32 heartbeats). Rule "back off on resends": a large
    /// batch may take longer than two heartbeats to travel and be written,
    /// and resending it at every heartbeat would only queue more copies
    /// ahead of the ones on their way.
    fn retransmit_accepts(&mut self, fx: &mut Effects) {
        let now = self.now;
        let commit = self.commit;
        let hb = self.cfg.heartbeat_interval_ns;
        let members = self.peers();
        let after = self.dep_seq();
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        // Slots learned chosen some other way (catch-up) need no more acks.
        l.in_flight.retain(|slot, _| *slot >= commit);
        let ballot = l.ballot;
        for (slot, f) in l.in_flight.iter_mut() {
            let wait = hb.saturating_mul(2u64 << f.resends.min(4));
            if now.since(f.last_sent_at) < wait {
                continue;
            }
            f.last_sent_at = now;
            f.resends = f.resends.saturating_add(1);
            for to in &members {
                if !f.acks.contains(to) {
                    fx.send.push(Outgoing {
                        to: *to,
                        msg: Message::Accept {
                            ballot,
                            slot: *slot,
                            batch: f.batch.clone(),
                            commit,
                        },
                        after,
                    });
                }
            }
        }
    }
}

/// The membership log of a replica that knows no change: its bootstrap
/// voters decide every slot.
fn bootstrap_log(cfg: &Config) -> MembershipLog {
    MembershipLog::new(Membership::bootstrap(cfg.members.iter().copied()))
}

/// The application's part of a snapshot as the log keeps it (without the
/// memberships it carries).
fn app_snapshot(s: &Snapshot) -> Snapshot {
    let data = match membership::unframe_snapshot(&s.data) {
        Ok((_, app)) => app.to_vec(),
        // Checked when recovered or received; kept whole should it not be.
        Err(_) => s.data.clone(),
    };
    Snapshot {
        up_to: s.up_to,
        data,
    }
}

/// The membership change a slot's batch carries: a change travels alone.
fn change_in(batch: &Batch) -> Option<MembershipChange> {
    match batch.as_slice() {
        [value] => MembershipChange::decode(value),
        _ => None,
    }
}
