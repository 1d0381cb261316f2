//! The consensus loop: one task owns the `Replica` and turns its effects
//! into I/O.
//!
//! Per turn it gathers every input that is ready (bounded: peer messages
//! from their own channel, everything else from the inbox), steps the core
//! with each (all commands proposed in the turn in one step, so they share
//! slots), and carries out the actions the core's consensus loop
//! (`paxlock_core::consensus_loop`) orders for each step: publish a loss
//! of leadership, persist, send what the persist barrier lets go (so
//! followers get accepts while the leader's own fsync is still running),
//! install and apply in slot order, hand leadership changes and refusals
//! to the application, re-arm the timer, and compact the log on the
//! loop's cadence. Every such decision is the core's; what is left here is
//! I/O: which inputs are ready together, and which thread writes a persist
//! request (a leader hands them to the persister thread, which writes them
//! with one fsync and reports back; a follower with nothing queued there
//! writes them itself: rule "a follower persists in place", on
//! `Driver::flush_persists`).
//!
//! A slow or dead peer never blocks the loop: its outbound queue is bounded
//! and a full queue drops the message, which Paxos tolerates by design.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info};

use super::clock::NodeClock;
use crate::bounded;
use crate::metrics::NodeMetrics;
use crate::paxos::{
    self, ChosenEntry, Effects, Input, LeadershipEvent, Membership, MembershipChange, Message,
    Nanos, NodeId, PersistRequest, PersistSeq, RejectReason, Rejected, Replica, Slot, Snapshot,
    Value,
};
use crate::transport::lanes::{PeerInboxReceiver, PeerOutbox};
use paxlock_core::consensus_loop::{ConsensusLoop, LoopAction};
use paxlock_core::node_membership::{self, AdminChange, RemovalWatch};
pub use paxlock_storage::{Durability, MemoryDurability};

/// Most inputs handled in one turn before effects are flushed; bounds the
/// latency one turn can add.
pub const MAX_INPUTS_PER_TURN: usize = 1024;

/// Bound on the driver's inbox.
pub const INBOX_CAPACITY: usize = 8192;

/// Bound on persist requests queued for the persister thread.
pub const PERSIST_QUEUE: usize = 4096;

/// The store, shared by the loop and the persister thread; never used by
/// both at once (see `Driver::flush_persists`), so the lock is uncontended.
type SharedStore = Arc<Mutex<Box<dyn Durability>>>;

/// What the node does with chosen entries (the lock state machine, in
/// production).
pub trait Application: Send + 'static {
    /// Replaces the whole state with a snapshot. An error is fatal: the
    /// loop stops (the node refuses to start) rather than apply later
    /// entries on a state that is not the snapshot's.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String>;
    /// Applies one chosen entry; entries arrive in slot order, exactly once
    /// per process lifetime.
    fn apply(&mut self, entry: &ChosenEntry);
    /// This replica's leadership changed. Returns commands to propose at
    /// once (e.g. the lock service's takeover marker, which must be the
    /// first command of a new leadership).
    fn on_leadership(&mut self, _event: &LeadershipEvent, _now: Nanos) -> Vec<Value> {
        Vec::new()
    }
    /// Proposals the core refused (this node does not lead).
    fn on_rejected(&mut self, _rejected: Rejected) {}
    /// The whole state as of the last applied entry, for compacting the
    /// log; `None` if this application does not snapshot.
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }
}

/// Inputs to the loop.
#[derive(Debug)]
pub enum DriverInput {
    /// A decoded message from an authenticated peer.
    Peer {
        /// The sender.
        from: NodeId,
        /// The message.
        msg: Message,
    },
    /// Commands to replicate.
    Propose(Vec<Value>),
    /// The application snapshotted every slot below `up_to`.
    Compact {
        /// First slot not covered.
        up_to: Slot,
        /// The snapshot bytes.
        data: Vec<u8>,
    },
    /// The persister made everything up to this sequence number durable.
    Persisted(PersistSeq),
    /// The persister failed; the node must stop.
    PersistFailed(String),
    /// Hand leadership over before shutting down (ignored unless leading).
    Abdicate,
    /// An administrator's membership change.
    ChangeMembership(ChangeRequest),
}

/// An administrator's membership change, and where its outcome goes. One
/// at a time: a second, while the first is neither in effect nor refused,
/// is refused with `ChangeInFlight`.
#[derive(Debug)]
pub struct ChangeRequest {
    /// The change.
    pub change: MembershipChange,
    /// Whether this node (the leader) took it, or why not: answered within
    /// the turn that handles the request.
    pub accepted: oneshot::Sender<Result<(), RejectReason>>,
    /// Once taken: the commit index at which this node saw it in effect,
    /// or why it was dropped (leadership lost before it was chosen, say).
    pub done: oneshot::Sender<Result<u64, RejectReason>>,
}

/// Where the answers to a taken [`ChangeRequest`] go.
#[derive(Debug)]
struct ChangeTicket {
    /// Still to answer while the request's turn runs.
    accepted: Option<oneshot::Sender<Result<(), RejectReason>>>,
    done: oneshot::Sender<Result<u64, RejectReason>>,
}

/// Opens an outbound link to a node this node has no link to (a member
/// added while it runs), at its replicated address if known (`Some`), else
/// wherever the opener knows to reach it; returns the link's queues, or
/// `None` if the node cannot be reached yet.
pub type LinkOpener = Box<dyn FnMut(NodeId, Option<SocketAddr>) -> Option<PeerOutbox> + Send>;

/// What the loop publishes after every turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverStatus {
    /// Whether this node leads.
    pub is_leader: bool,
    /// Who this node believes leads.
    pub leader: Option<NodeId>,
    /// Every slot below this is chosen.
    pub commit_index: u64,
    /// Until when (node clock) this node holds the leader lease.
    pub lease_until: Option<Nanos>,
    /// Slots applied to the application.
    pub applied_index: u64,
    /// Peer messages dropped as malformed or from non-members.
    pub malformed_messages: u64,
    /// Round of the ballot this node leads with (0 when not leading).
    pub ballot_round: u64,
    /// The membership deciding the commit index (replicated: the same on
    /// every node once applied). Shared, so publishing it costs nothing
    /// until it changes.
    pub members: Arc<Membership>,
    /// The first slot a chosen membership change takes over from, while
    /// one is pending.
    pub membership_change_at: Option<u64>,
    /// Set when the loop stopped because persisting failed, or because
    /// this node was removed from the cluster.
    pub failed: Option<String>,
    /// This node's removal from the cluster is chosen: it stops soon (see
    /// `node_membership::REMOVAL_GRACE`) and takes no further part.
    pub removed: bool,
}

/// The running loop's handles. Dropping them stops the loop.
#[derive(Debug)]
pub struct DriverHandle {
    /// Where to send inputs.
    pub inbox: mpsc::Sender<DriverInput>,
    /// The latest status.
    pub status: watch::Receiver<DriverStatus>,
    /// Dropped to stop the loop.
    stop: Option<oneshot::Sender<()>>,
}

impl DriverHandle {
    /// Stops the loop at its next turn; nothing it has not yet made
    /// durable has been acknowledged, so nothing is lost.
    pub fn stop(&mut self) {
        self.stop.take();
    }
}

/// How the loop runs, besides what it drives.
pub struct LoopSettings {
    /// The node clock (shared with the connection tasks).
    pub clock: NodeClock,
    /// What is already durable (from recovery).
    pub persisted: PersistSeq,
    /// Where to count applied entries and storage activity.
    pub metrics: Arc<NodeMetrics>,
    /// Compact the log after this many applied slots.
    pub snapshot_every_slots: u64,
    /// Opens links to members added while the node runs; `None`: only the
    /// links given at the start (tests of one or a fixed set of nodes).
    pub open_link: Option<LinkOpener>,
}

impl std::fmt::Debug for LoopSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopSettings")
            .field("persisted", &self.persisted)
            .field("snapshot_every_slots", &self.snapshot_every_slots)
            .finish_non_exhaustive()
    }
}

/// Starts the loop and its persister thread. `inbound` carries decoded
/// messages from peers; everything else arrives through the inbox.
pub fn spawn(
    replica: Replica,
    app: Box<dyn Application>,
    durability: Box<dyn Durability>,
    inbound: PeerInboxReceiver,
    outbound: BTreeMap<NodeId, PeerOutbox>,
    settings: LoopSettings,
) -> Result<DriverHandle, String> {
    let LoopSettings {
        clock,
        persisted,
        metrics,
        snapshot_every_slots,
        open_link,
    } = settings;
    // A recovered node's log starts after its snapshot: the application
    // must start from that snapshot, not empty, or everything the
    // snapshot covers (sessions, held locks) would vanish on restart.
    let mut app = app;
    let mut applied = 0;
    if let Some(snapshot) = replica.snapshot() {
        app.install_snapshot(&snapshot).map_err(|e| {
            format!(
                "the snapshot up to slot {} in the data directory cannot be restored: {e}",
                snapshot.up_to.0
            )
        })?;
        applied = snapshot.up_to.0;
    }
    let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
    let (status_tx, status) = watch::channel(DriverStatus::default());
    let (persist_tx, persist_rx) = mpsc::channel(PERSIST_QUEUE);
    let store: SharedStore = Arc::new(Mutex::new(durability));
    // Reports get their own channel: on the inbox, shared with client
    // commands, a full inbox would block the persister while the loop waits
    // for room in the persist queue, and neither would move again.
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    spawn_persister(store.clone(), persist_rx, reports_tx, metrics.clone());
    #[cfg_attr(not(feature = "canary"), allow(unused_mut))]
    let mut driver = Driver {
        replica,
        app,
        outbound,
        clock,
        persist_tx,
        store,
        handed_over: persisted,
        consensus: ConsensusLoop::new(persisted, Slot(applied), snapshot_every_slots),
        wake_at: None,
        status: status_tx,
        unsent_persists: Vec::new(),
        metrics,
        ballot_round: 0,
        members: Arc::default(),
        failed: None,
        open_link,
        change: AdminChange::default(),
        removal: RemovalWatch::default(),
    };
    #[cfg(feature = "canary")]
    driver.consensus.set_canary(crate::canary::loop_canary());
    // Rule "consensus has a thread of its own": the loop runs on a
    // dedicated thread with its own runtime, so no amount of client work
    // on the node's runtime (hundreds of streams decoding large requests,
    // say) can hold back its heartbeats and cost the leader its quorum.
    // Except on a node runtime of one worker, which is how nodes that
    // share a machine's cores are run (README, `--worker-threads 1`): there
    // the thread has no core of its own to run on, and its hand-offs with
    // the runtime cost 18% of one client's lock cycles and 8% at 64
    // clients (`paxlock bench`, three nodes on two cores), so the loop is
    // a task of the runtime instead.
    let (stop_tx, stop_rx) = oneshot::channel();
    let run = driver.run(inbox_rx, inbound, reports_rx, stop_rx);
    if tokio::runtime::Handle::current().metrics().num_workers() > 1 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the consensus loop's runtime: {e}"))?;
        std::thread::Builder::new()
            .name("paxlock-consensus".into())
            .spawn(move || runtime.block_on(run))
            .map_err(|e| format!("cannot start the consensus loop's thread: {e}"))?;
    } else {
        tokio::spawn(run);
    }
    Ok(DriverHandle {
        inbox: inbox_tx,
        status,
        stop: Some(stop_tx),
    })
}

struct Driver {
    replica: Replica,
    app: Box<dyn Application>,
    outbound: BTreeMap<NodeId, PeerOutbox>,
    clock: NodeClock,
    persist_tx: mpsc::Sender<PersistRequest>,
    store: SharedStore,
    /// Highest persist sequence handed to the persister thread.
    handed_over: PersistSeq,
    /// The core's decisions on effects: their order, the messages held
    /// for their persist barrier, slot order, the snapshot cadence.
    consensus: ConsensusLoop,
    wake_at: Option<Nanos>,
    status: watch::Sender<DriverStatus>,
    /// Persist requests of this turn, handed over at the end of the turn.
    unsent_persists: Vec<PersistRequest>,
    metrics: Arc<NodeMetrics>,
    ballot_round: u64,
    /// The membership last published (see `DriverStatus::members`).
    members: Arc<Membership>,
    /// Why the loop must stop, found while acting on a step; checked after
    /// every input. Nothing is stepped or applied once it is set.
    failed: Option<String>,
    /// Opens links to members added while the node runs.
    open_link: Option<LinkOpener>,
    /// The administrator's membership change in flight, if any.
    change: AdminChange<ChangeTicket>,
    /// When this node, removed, stops.
    removal: RemovalWatch,
}

impl Driver {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<DriverInput>,
        mut peers: PeerInboxReceiver,
        mut reports: mpsc::UnboundedReceiver<DriverInput>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut batch = Vec::with_capacity(64);
        // What the turn's peer messages hold of the inbound byte budget,
        // given back once the turn has handled them.
        let mut charges = Vec::with_capacity(64);
        let mut peers_open = true;
        // The first step arms the election timer.
        self.step(Input::Tick);
        loop {
            let flushed = self.flush_persists(&mut reports).await;
            if let Some(reason) = flushed.err().or_else(|| self.failed.take()) {
                self.stop(reason);
                return;
            }
            let sleep = self
                .clock
                .until(self.wake_at.unwrap_or(Nanos(u64::MAX / 2)));
            tokio::select! {
                // Stopped, or the handle dropped.
                _ = &mut stop => return,
                input = inbox.recv() => match input {
                    Some(input) => batch.push(input),
                    None => return,
                },
                // Control first (see `transport::lanes`).
                peer = peers.control.recv(), if peers_open => match peer {
                    Some(held) => take_peer_message(held, &mut batch, &mut charges),
                    None => peers_open = false,
                },
                peer = peers.bulk.recv(), if peers_open => match peer {
                    Some(held) => take_peer_message(held, &mut batch, &mut charges),
                    None => peers_open = false,
                },
                // `None`: the persister is gone, which the next hand-over
                // reports.
                Some(report) = reports.recv() => batch.push(report),
                _ = tokio::time::sleep(sleep) => {
                    self.wake_at = None;
                    self.step(Input::Tick);
                }
            }
            while batch.len() < MAX_INPUTS_PER_TURN {
                let mut got = false;
                if let Ok(input) = inbox.try_recv() {
                    batch.push(input);
                    got = true;
                }
                for lane in [&mut peers.control, &mut peers.bulk] {
                    if let Ok(held) = lane.try_recv() {
                        take_peer_message(held, &mut batch, &mut charges);
                        got = true;
                    }
                }
                if let Ok(report) = reports.try_recv() {
                    batch.push(report);
                    got = true;
                }
                if !got {
                    break;
                }
            }
            // Rule "one proposal per turn": every command proposed during
            // the turn goes to the core in one step, so they share slots
            // (up to `max_batch_values` each) instead of each opening a
            // slot of its own while the pipeline window has room. Fewer,
            // fuller slots mean fewer accepts, replies, records and applies
            // per command. Commands keep their order; a command only
            // waits for inputs that arrived with it.
            let mut proposals = Vec::new();
            for input in batch.drain(..) {
                let handled = self.handle(input, &mut proposals);
                if let Some(reason) = handled.err().or_else(|| self.failed.take()) {
                    self.stop(reason);
                    return;
                }
            }
            charges.clear();
            if !proposals.is_empty() {
                self.step(Input::Propose(proposals));
            }
            if self.wake_at.is_some_and(|at| at <= self.clock.now()) {
                self.wake_at = None;
                self.step(Input::Tick);
            }
            if let Err(reason) = self.flush_persists(&mut reports).await {
                self.stop(reason);
                return;
            }
            self.publish();
        }
    }

    /// Makes the persist requests gathered so far durable.
    ///
    /// Rule "a follower persists in place": a node that does not lead, with
    /// nothing queued for the persister thread, writes the requests on this
    /// loop and steps `Persisted` at once. A follower has nothing to do
    /// until its reply may leave anyway, and skipping the hop to the
    /// persister thread and back (two thread wake-ups) cut a 1-client
    /// commit by about 8 % here. A leader never does: its accepts must
    /// reach the followers while its own fsync runs. Requests stay in
    /// order either way: the loop writes only when every request handed
    /// over is durable, so the two writers never overlap.
    ///
    /// A persister that failed reported why before it stopped taking
    /// requests, so a refused hand-over returns that report (the cause an
    /// operator can act on, such as "Too many open files") rather than the
    /// mere fact that the persister is gone.
    async fn flush_persists(
        &mut self,
        reports: &mut mpsc::UnboundedReceiver<DriverInput>,
    ) -> Result<(), String> {
        while !self.unsent_persists.is_empty()
            && !self.replica.is_leader()
            && self.handed_over <= self.consensus.durable()
            && persist_bytes(&self.unsent_persists) <= MAX_IN_PLACE_PERSIST_BYTES
        {
            let batch = std::mem::take(&mut self.unsent_persists);
            let up_to = persist_batch(&self.store, &batch, &self.metrics)?;
            self.handed_over = up_to;
            self.on_persisted(up_to);
        }
        for request in self.unsent_persists.drain(..) {
            self.handed_over = self.handed_over.max(request.seq);
            // Bounded: if the disk cannot keep up, the loop waits here,
            // which is the backpressure we want. Never dropped: a lost
            // request would hold its messages back forever.
            if self.persist_tx.send(request).await.is_err() {
                return Err(
                    persister_failure(reports).unwrap_or_else(|| "the persister is gone".into())
                );
            }
        }
        Ok(())
    }

    /// Reports why the loop stops, in the log and in the status.
    fn stop(&self, reason: String) {
        error!("consensus loop stopping: {reason}");
        self.status.send_modify(|s| s.failed = Some(reason));
    }

    /// Steps the core with `input`, except proposals, which are collected
    /// in `proposals` for the turn's single proposal step.
    fn handle(&mut self, input: DriverInput, proposals: &mut Vec<Value>) -> Result<(), String> {
        match input {
            DriverInput::Peer { from, msg } => {
                if let Message::HeartbeatAck { commit, .. } = &msg {
                    self.metrics.peer_commits.insert(from.0, commit.0);
                }
                self.step(Input::Peer { from, msg })
            }
            DriverInput::Propose(values) => proposals.extend(values),
            DriverInput::Compact { up_to, data } => self.step(Input::Compact { up_to, data }),
            DriverInput::Persisted(seq) => self.on_persisted(seq),
            DriverInput::PersistFailed(reason) => return Err(reason),
            DriverInput::Abdicate => self.step(Input::Abdicate { successor: None }),
            DriverInput::ChangeMembership(request) => self.change_membership(request),
        }
        Ok(())
    }

    /// Hands an administrator's change to the core; answers `accepted`
    /// within this step (refused, or taken), and `done` later (see
    /// `publish` and `change_refused`).
    fn change_membership(&mut self, request: ChangeRequest) {
        let ChangeRequest {
            change,
            accepted,
            done,
        } = request;
        let ticket = ChangeTicket {
            accepted: Some(accepted),
            done,
        };
        if let Err((in_flight, ticket)) = self.change.take(change, ticket) {
            if let Some(accepted) = ticket.accepted {
                let _ = accepted.send(Err(RejectReason::Membership(in_flight)));
            }
            return;
        }
        self.step(Input::ChangeMembership(change));
        // Not refused within the step: the core holds it.
        if let Some(accepted) = self.change.ticket_mut().and_then(|t| t.accepted.take()) {
            let _ = accepted.send(Ok(()));
        }
    }

    /// The core refused or dropped the administrator's change.
    fn change_refused(&mut self, reason: RejectReason) {
        let refused = match reason {
            RejectReason::NotLeader => self.change.lost_leadership(),
            _ => self.change.refused(),
        };
        let Some((_, ticket)) = refused else {
            return;
        };
        match ticket.accepted {
            Some(accepted) => {
                let _ = accepted.send(Err(reason));
            }
            None => {
                let _ = ticket.done.send(Err(reason));
            }
        }
    }

    /// Everything up to `seq` is durable: sends what waited for it.
    fn on_persisted(&mut self, seq: PersistSeq) {
        for out in self.consensus.persisted(seq) {
            self.send(out.to, out.msg);
        }
        self.step(Input::Persisted { up_to: seq });
    }

    fn step(&mut self, input: Input) {
        if self.failed.is_some() {
            return;
        }
        let now = self.clock.now();
        let fx = self.replica.step(now, input);
        self.act(fx, now);
    }

    /// Carries out the actions the core's consensus loop orders for one
    /// step's effects, then proposes a new leadership's first commands and
    /// compacts the log if the loop says it is due.
    fn act(&mut self, fx: Effects, now: Nanos) {
        let actions = match self.consensus.effects(fx) {
            Ok(actions) => actions,
            Err(e) => {
                self.failed = Some(e.to_string());
                return;
            }
        };
        let mut first_proposals = Vec::new();
        for action in actions {
            match action {
                // Connection tasks must stop serving lease reads and
                // keepalives before any message of this step (an
                // abdication, say) can let a successor take over.
                LoopAction::PublishLostLeadership => {
                    self.ballot_round = 0;
                    self.publish();
                }
                LoopAction::Persist(request) => self.unsent_persists.push(request),
                LoopAction::Send(out) => self.send(out.to, out.msg),
                LoopAction::Install(snapshot) => {
                    if let Err(e) = self.app.install_snapshot(&snapshot) {
                        self.failed = Some(format!(
                            "cannot install the snapshot up to slot {} a peer sent: {e}",
                            snapshot.up_to.0
                        ));
                        return;
                    }
                }
                LoopAction::Apply(entry) => {
                    self.app.apply(&entry);
                    self.metrics
                        .chosen_entries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.metrics.chosen_values.fetch_add(
                        entry.batch.len() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                LoopAction::Leadership(event) => {
                    match &event {
                        LeadershipEvent::BecameLeader { ballot } => {
                            info!(round = ballot.round, "this node leads the cluster");
                            self.ballot_round = ballot.round;
                        }
                        LeadershipEvent::LostLeadership => {
                            info!(leader = ?self.replica.leader_hint(), "this node no longer leads the cluster");
                            self.ballot_round = 0;
                            // A change this leader proposed may yet be
                            // chosen or lost under the next leader, which
                            // this node cannot tell: its requester is told
                            // so (`NotLeader`), and the next change is
                            // not held up by it.
                            self.change_refused(RejectReason::NotLeader);
                        }
                        LeadershipEvent::LeaseUntil { .. } => {}
                    }
                    first_proposals.extend(self.app.on_leadership(&event, now));
                }
                // Only the administrator's change makes the core refuse a
                // membership value for any reason but `Reserved`.
                LoopAction::Rejected(rejected)
                    if rejected.reason != RejectReason::Reserved
                        && rejected
                            .values
                            .iter()
                            .any(|v| paxos::is_membership_value(v)) =>
                {
                    self.change_refused(rejected.reason)
                }
                LoopAction::Rejected(rejected) => self.app.on_rejected(rejected),
                LoopAction::WakeAt(at) => {
                    self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
                }
            }
        }
        if !first_proposals.is_empty() {
            self.step(Input::Propose(first_proposals));
        }
        if let Some(up_to) = self.consensus.snapshot_due() {
            if let Some(data) = self.app.snapshot() {
                self.step(Input::Compact { up_to, data });
            }
        }
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        if !self.outbound.contains_key(&to) {
            // A removed member's link closed for good (see `publish`),
            // whoever still names it.
            if !node_membership::sends_to(&self.members, to) {
                return;
            }
            // A member added while this node runs: its address is in the
            // change that added it (or, while this node has not learned
            // that change yet, where it last heard from it).
            let address = (self.replica.membership().latest().addresses)
                .get(&to)
                .copied();
            let Some(outbox) = self.open_link.as_mut().and_then(|open| open(to, address)) else {
                return;
            };
            info!(peer = to.0, ?address, "opening a link to a new member");
            self.outbound.insert(to, outbox);
        }
        if let Some(link) = self.outbound.get(&to) {
            // Dropping on a full queue is safe: Paxos retries by timeout.
            let _ = link.offer(msg);
        }
    }

    /// Answers the administrator's change once the membership in effect
    /// (`self.members`, published) shows it.
    fn answer_change_in_effect(&mut self, commit: u64) {
        // Not within the turn that took it: that turn answers `accepted`.
        if self
            .change
            .ticket_mut()
            .is_some_and(|t| t.accepted.is_some())
        {
            return;
        }
        if let Some((_, ticket)) = self.change.in_effect(&self.members) {
            let _ = ticket.done.send(Ok(commit));
        }
    }

    /// Stops the loop once this node is removed (rule "a removed node
    /// stops", `node_membership::RemovalWatch`).
    fn check_removed(&mut self, commit: u64) {
        let me = self.replica.id();
        let latest = self.replica.membership().latest();
        let stops = (self.removal).must_stop(me, latest, &self.members, self.clock.now());
        if stops && self.failed.is_none() {
            self.failed = Some(format!(
                "node {} was removed from the cluster (a membership change chosen by slot \
                 {commit}) and takes no further part: its id is never used again; to bring this \
                 machine back, wipe its data directory and join it as a new member with a new \
                 id (paxlock members add)",
                me.0
            ));
        }
    }

    fn publish(&mut self) {
        let now = self.clock.now();
        let commit = self.replica.commit_index();
        let members = self.replica.membership().at(commit);
        let changed = members != &*self.members;
        if changed {
            self.members = Arc::new(members.clone());
            // Links to removed members close: their ids never come back.
            let members = &self.members;
            self.outbound
                .retain(|to, _| node_membership::sends_to(members, *to));
        }
        self.check_removed(commit.0);
        let next = DriverStatus {
            is_leader: self.replica.is_leader(),
            leader: self.replica.leader_hint(),
            commit_index: self.replica.commit_index().0,
            lease_until: self.replica.lease_until(now),
            applied_index: self.consensus.applied(),
            malformed_messages: self.replica.stats().malformed,
            ballot_round: self.ballot_round,
            members: self.members.clone(),
            membership_change_at: self
                .replica
                .membership()
                .next_change_after(commit)
                .map(|s| s.0),
            failed: None,
            removed: self.removal.removal_learned(),
        };
        self.status.send_if_modified(|s| {
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
        // After publishing: the answer's reader then sees the change.
        if changed {
            self.answer_change_in_effect(commit.0);
        }
    }
}

/// Adds a peer message to the turn's inputs, keeping its charge on the
/// inbound byte budget until the turn has handled it.
fn take_peer_message(
    held: bounded::Held<(NodeId, Message)>,
    batch: &mut Vec<DriverInput>,
    charges: &mut Vec<bounded::Charge>,
) {
    let ((from, msg), charge) = held.into_parts();
    batch.push(DriverInput::Peer { from, msg });
    charges.push(charge);
}

/// Most bytes a follower writes on the loop itself (rule "a follower
/// persists in place"): a larger write would keep the loop from answering
/// heartbeats for as long as it takes, so it goes to the persister thread.
const MAX_IN_PLACE_PERSIST_BYTES: usize = 64 * 1024;

/// The payload bytes of `requests` (log entries and snapshots).
fn persist_bytes(requests: &[PersistRequest]) -> usize {
    use crate::paxos::PersistOp;
    requests
        .iter()
        .flat_map(|r| &r.ops)
        .map(|op| match op {
            PersistOp::Promise(_) => 0,
            PersistOp::Accept { batch, .. } | PersistOp::Chosen { batch, .. } => {
                crate::paxos::wire_size::batch_bytes(batch)
            }
            PersistOp::Snapshot(s) => s.data.len(),
        })
        .fold(0, usize::saturating_add)
}

/// Persists `batch` with one durability call (one fsync) and returns the
/// highest sequence number in it.
fn persist_batch(
    store: &Mutex<Box<dyn Durability>>,
    batch: &[PersistRequest],
    metrics: &NodeMetrics,
) -> Result<PersistSeq, String> {
    let mut store = store
        .lock()
        .map_err(|_| "the store is unusable: an earlier write panicked".to_string())?;
    let started = std::time::Instant::now();
    let result = store.persist(batch);
    metrics.persists.observe(started.elapsed());
    if let Some(stats) = store.stats() {
        metrics.set_storage(stats);
    }
    result.map_err(|e| format!("persisting failed: {e}"))?;
    Ok(batch.iter().map(|r| r.seq).max().unwrap_or_default())
}

/// Why the persister stopped, if it said so: its failure report, found
/// among the reports not yet handled (it sends the report before it drops
/// its request queue, so the report is there once hand-overs are refused).
fn persister_failure(reports: &mut mpsc::UnboundedReceiver<DriverInput>) -> Option<String> {
    while let Ok(report) = reports.try_recv() {
        if let DriverInput::PersistFailed(reason) = report {
            return Some(reason);
        }
    }
    None
}

/// The persister: drains every queued request, persists them with one
/// durability call (one fsync), then reports the highest sequence number.
fn spawn_persister(
    store: SharedStore,
    mut requests: mpsc::Receiver<PersistRequest>,
    reports: mpsc::UnboundedSender<DriverInput>,
    metrics: Arc<NodeMetrics>,
) {
    let spawned = std::thread::Builder::new()
        .name("paxlock-persist".into())
        .spawn(move || {
            while let Some(first) = requests.blocking_recv() {
                let mut batch = vec![first];
                while let Ok(more) = requests.try_recv() {
                    batch.push(more);
                }
                let report = match persist_batch(&store, &batch, &metrics) {
                    Ok(up_to) => DriverInput::Persisted(up_to),
                    Err(reason) => DriverInput::PersistFailed(reason),
                };
                let failed = matches!(report, DriverInput::PersistFailed(_));
                if reports.send(report).is_err() || failed {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        error!("cannot start the persister thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::paxos::{Ballot, Config, DurableState};
    use crate::transport::lanes;

    /// Records every chosen entry.
    struct Recorder(Arc<Mutex<Vec<ChosenEntry>>>);

    impl Application for Recorder {
        fn install_snapshot(&mut self, _snapshot: &Snapshot) -> Result<(), String> {
            Ok(())
        }
        fn apply(&mut self, entry: &ChosenEntry) {
            self.0.lock().unwrap().push(entry.clone());
        }
    }

    /// Records the name of the thread that persisted each batch.
    struct ThreadRecorder(Arc<Mutex<Vec<Option<String>>>>);

    impl Durability for ThreadRecorder {
        fn persist(&mut self, _batch: &[PersistRequest]) -> Result<(), String> {
            let name = std::thread::current().name().map(String::from);
            self.0.lock().unwrap().push(name);
            Ok(())
        }
    }

    /// Node 1 of `members`, with timers at 1 ms heartbeats and elections
    /// after `election_ms`.
    fn config(members: u64, election_ms: u64) -> Config {
        let mut cfg = Config::new(NodeId(1), (1..=members).map(NodeId).collect());
        cfg.heartbeat_interval_ns = 1_000_000;
        cfg.lease_duration_ns = 10_000_000;
        cfg.election_timeout_min_ns = election_ms * 1_000_000;
        cfg.election_timeout_max_ns = election_ms * 2_000_000;
        cfg
    }

    fn single_node_with(
        durability: Box<dyn Durability>,
    ) -> (DriverHandle, Arc<Mutex<Vec<ChosenEntry>>>) {
        let (_peer_tx, peers) = lanes::channels();
        let chosen = Arc::new(Mutex::new(Vec::new()));
        let handle = start(config(1, 14), durability, peers, BTreeMap::new(), &chosen);
        (handle, chosen)
    }

    fn start(
        cfg: Config,
        durability: Box<dyn Durability>,
        peers: PeerInboxReceiver,
        outbound: BTreeMap<NodeId, PeerOutbox>,
        chosen: &Arc<Mutex<Vec<ChosenEntry>>>,
    ) -> DriverHandle {
        let replica = Replica::new(cfg, DurableState::default(), 7).unwrap();
        spawn(
            replica,
            Box::new(Recorder(chosen.clone())),
            durability,
            peers,
            outbound,
            LoopSettings {
                clock: NodeClock::new(),
                persisted: PersistSeq(0),
                metrics: Arc::new(NodeMetrics::default()),
                snapshot_every_slots: 1000,
                open_link: None,
            },
        )
        .unwrap()
    }

    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn values_chosen(chosen: &Mutex<Vec<ChosenEntry>>) -> Vec<Vec<Value>> {
        chosen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| !e.batch.is_empty())
            .map(|e| e.batch.clone())
            .collect()
    }

    /// Refuses every snapshot, as the lock service does one written by an
    /// incompatible version.
    struct Refuser;

    impl Application for Refuser {
        fn install_snapshot(&mut self, _snapshot: &Snapshot) -> Result<(), String> {
            Err("unsupported snapshot version 99".into())
        }
        fn apply(&mut self, _entry: &ChosenEntry) {}
    }

    /// Node 1 of 3 (a follower for the first second) recovered from
    /// `disk`, applying to a [`Refuser`].
    fn spawn_refuser(disk: DurableState, peers: PeerInboxReceiver) -> Result<DriverHandle, String> {
        let replica = Replica::new(config(3, 1_000), disk, 7).unwrap();
        let settings = LoopSettings {
            clock: NodeClock::new(),
            persisted: PersistSeq(0),
            metrics: Arc::new(NodeMetrics::default()),
            snapshot_every_slots: 1000,
            open_link: None,
        };
        let store = Box::new(MemoryDurability::default());
        spawn(
            replica,
            Box::new(Refuser),
            store,
            peers,
            BTreeMap::new(),
            settings,
        )
    }

    fn snapshot_up_to(slot: u64) -> Snapshot {
        Snapshot {
            up_to: crate::paxos::Slot(slot),
            data: b"state".to_vec(),
        }
    }

    /// Regression (found in review): a snapshot the application could not
    /// restore was logged and skipped, and the node went on applying later
    /// entries to an empty state.
    #[tokio::test]
    async fn a_node_whose_snapshot_cannot_be_restored_refuses_to_start() {
        let mut disk = DurableState::default();
        disk.apply_op(&crate::paxos::PersistOp::Snapshot(snapshot_up_to(5)));
        let (_peer_tx, peers) = lanes::channels();
        let started = spawn_refuser(disk, peers);
        let Err(err) = started else {
            panic!("a node with an unrestorable snapshot started");
        };
        assert!(
            err.contains("slot 5") && err.contains("version 99"),
            "{err}"
        );
    }

    /// The same for a snapshot a peer sends to catch this node up: the loop
    /// stops and says why.
    #[tokio::test]
    async fn a_snapshot_from_a_peer_that_cannot_be_restored_stops_the_loop() {
        let (peer_tx, peers) = lanes::channels();
        let handle = spawn_refuser(DurableState::default(), peers).unwrap();
        let catch_up = Message::CatchUp {
            snapshot: Some(crate::paxos::SnapshotChunk {
                up_to: Slot(5),
                total_bytes: 5,
                offset: 0,
                data: bytes::Bytes::from_static(b"state"),
            }),
            entries: Vec::new(),
        };
        peer_tx.deliver(NodeId(2), catch_up).await.unwrap();
        let status = handle.status.clone();
        wait_until("the loop stops", || status.borrow().failed.is_some()).await;
        let reason = status.borrow().failed.clone().unwrap_or_default();
        assert!(reason.contains("version 99"), "{reason}");
    }

    /// Records every chosen entry; applying the value `gate` blocks the
    /// loop until the test releases it.
    struct GatedRecorder {
        chosen: Arc<Mutex<Vec<ChosenEntry>>>,
        entered: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    }

    impl Application for GatedRecorder {
        fn install_snapshot(&mut self, _snapshot: &Snapshot) -> Result<(), String> {
            Ok(())
        }
        fn apply(&mut self, entry: &ChosenEntry) {
            if entry.batch.iter().any(|v| v.as_ref() == b"gate") {
                let _ = self.entered.send(());
                let _ = self.release.recv();
            }
            self.chosen.lock().unwrap().push(entry.clone());
        }
    }

    // Two workers: the loop gets a thread of its own, which the gate below
    // holds without holding the test.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_proposed_in_one_turn_share_one_slot_in_order() {
        let chosen = Arc::new(Mutex::new(Vec::new()));
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        let app = GatedRecorder {
            chosen: chosen.clone(),
            entered: entered_tx,
            release: release_rx,
        };
        let (_peer_tx, peers) = lanes::channels();
        let replica = Replica::new(config(1, 14), DurableState::default(), 7).unwrap();
        let settings = LoopSettings {
            clock: NodeClock::new(),
            persisted: PersistSeq(0),
            metrics: Arc::new(NodeMetrics::default()),
            snapshot_every_slots: 1000,
            open_link: None,
        };
        let store = Box::new(MemoryDurability::default());
        let handle = spawn(
            replica,
            Box::new(app),
            store,
            peers,
            BTreeMap::new(),
            settings,
        )
        .unwrap();
        let mut status = handle.status.clone();
        tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.is_leader))
            .await
            .expect("elected in time")
            .expect("loop running");
        let propose = |value: &'static [u8]| {
            handle
                .inbox
                .try_send(DriverInput::Propose(vec![Value::from_static(value)]))
                .unwrap();
        };
        // While the loop is held inside a turn, three commands arrive: its
        // next turn takes them all.
        propose(b"gate");
        tokio::task::spawn_blocking(move || entered.recv())
            .await
            .unwrap()
            .unwrap();
        for value in [b"a", b"b", b"c"] {
            propose(value);
        }
        release.send(()).unwrap();
        wait_until("the values are chosen", || {
            values_chosen(&chosen).len() >= 2
        })
        .await;
        assert_eq!(
            values_chosen(&chosen)[1],
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_persists_its_promise_on_the_loop_itself() {
        let persisted_on = follower_promise_persist_threads().await;
        let in_place = Some("paxlock-consensus".to_string());
        assert_eq!(
            persisted_on,
            vec![in_place],
            "the promise was persisted in place"
        );
    }

    /// On a runtime of one worker (nodes sharing a machine's cores) the
    /// loop is a task of that runtime, not a thread of its own.
    #[tokio::test(flavor = "current_thread")]
    async fn on_a_runtime_of_one_worker_the_loop_runs_as_its_task() {
        let runtime_thread = std::thread::current().name().map(String::from);
        let persisted_on = follower_promise_persist_threads().await;
        assert_eq!(persisted_on, vec![runtime_thread]);
    }

    /// Starts node 1 of 3 as a follower, has it promise, and returns the
    /// threads its persists ran on.
    async fn follower_promise_persist_threads() -> Vec<Option<String>> {
        let threads = Arc::new(Mutex::new(Vec::new()));
        let (peer_tx, peers) = lanes::channels();
        let (to_node_2, mut at_node_2) = lanes::channels();
        let chosen = Arc::new(Mutex::new(Vec::new()));
        // Elections far off: node 1 stays a follower for the whole test.
        let _handle = start(
            config(3, 60_000),
            Box::new(ThreadRecorder(threads.clone())),
            peers,
            BTreeMap::from([(NodeId(2), to_node_2)]),
            &chosen,
        );
        let ballot = Ballot {
            round: 5,
            node: NodeId(2),
        };
        let prepare = Message::Prepare {
            ballot,
            from_slot: Slot(0),
        };
        // A node that just started refuses promises for one lease (it may
        // have granted a lease before it restarted): ask until it agrees.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no promise in time");
            peer_tx.deliver(NodeId(2), prepare.clone()).await.unwrap();
            // Promises and nacks travel in different lanes.
            let reply = tokio::select! {
                m = at_node_2.control.recv() => m,
                m = at_node_2.bulk.recv() => m,
            };
            let reply = reply.expect("the loop is running").item;
            if matches!(reply, Message::Promise { ballot: b, .. } if b == ballot) {
                break;
            }
            assert!(matches!(reply, Message::Nack { .. }), "{reply:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let persisted_on = threads.lock().unwrap().clone();
        persisted_on
    }

    /// Fails every write made on the persister thread, as a node out of
    /// file descriptors does once its next file cannot be opened.
    struct FailsOnPersister;

    impl Durability for FailsOnPersister {
        fn persist(&mut self, _batch: &[PersistRequest]) -> Result<(), String> {
            match std::thread::current().name() {
                Some("paxlock-persist") => Err("Too many open files (os error 24)".into()),
                _ => Ok(()),
            }
        }
    }

    /// Regression (CI, `a_node_out_of_file_descriptors_exits_saying_so`):
    /// when the loop's next hand-over found the failed persister gone
    /// before it read the persister's report, the node stopped saying only
    /// "the persister is gone". Whichever it notices first, the loop stops
    /// with the persister's own reason.
    ///
    /// The race is timing-dependent, so the test runs it 20 times (without
    /// the fix, about one run in six lost the reason here).
    #[tokio::test]
    async fn a_failed_persister_stops_the_loop_with_its_reason() {
        for _ in 0..20 {
            let (handle, _chosen) = single_node_with(Box::new(FailsOnPersister));
            let mut status = handle.status.clone();
            tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.is_leader))
                .await
                .expect("elected in time")
                .expect("loop running");
            // Keep proposing, so hand-overs race the persister's report.
            for _ in 0..1_000 {
                if status.borrow().failed.is_some() {
                    break;
                }
                let proposed = handle
                    .inbox
                    .send(DriverInput::Propose(vec![Value::from_static(b"v")]))
                    .await;
                if proposed.is_err() {
                    break;
                }
            }
            wait_until("the loop stops", || status.borrow().failed.is_some()).await;
            let reason = status.borrow().failed.clone().unwrap_or_default();
            assert!(reason.contains("Too many open files"), "{reason}");
        }
    }

    /// The persister's report is found behind other reports.
    #[test]
    fn the_persisters_failure_is_found_among_its_reports() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(DriverInput::Persisted(PersistSeq(3))).unwrap();
        tx.send(DriverInput::PersistFailed("disk full".into()))
            .unwrap();
        assert_eq!(persister_failure(&mut rx).as_deref(), Some("disk full"));
        assert_eq!(persister_failure(&mut rx), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_leader_persists_its_accepts_on_the_persister_thread() {
        let threads = Arc::new(Mutex::new(Vec::new()));
        let (handle, chosen) = single_node_with(Box::new(ThreadRecorder(threads.clone())));
        let mut status = handle.status.clone();
        tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.is_leader))
            .await
            .expect("elected in time")
            .expect("loop running");
        let before = threads.lock().unwrap().len();
        handle
            .inbox
            .send(DriverInput::Propose(vec![Value::from_static(b"v")]))
            .await
            .unwrap();
        wait_until("the value is chosen", || !values_chosen(&chosen).is_empty()).await;
        let after = threads.lock().unwrap()[before..].to_vec();
        assert!(!after.is_empty(), "the accept was persisted");
        assert!(
            after
                .iter()
                .all(|name| name.as_deref() == Some("paxlock-persist")),
            "{after:?}"
        );
    }
}
