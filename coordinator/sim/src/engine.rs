//! The one simulation engine: an event queue in true time, nodes running
//! the shipped `paxos::Replica` over simulated disks and clocks, a faulty
//! network that carries every message through the real peer codec, and
//! the fault injector (partitions, cut and flapping links, crashes, quick
//! restarts, pauses, abdication). Same seed, same run, bit for bit.
//!
//! What runs over a cluster is a [`Workload`]: the Paxos workload
//! (`paxos_workload`, opaque commands and a hash-chain application) and
//! the lock service (`lock_workload`, the shipped lock state machine and
//! leader role, with clients). A workload owns its application state per
//! node and its own events; the engine calls it where the replica's
//! effects need an application (chosen entries, snapshots, leadership,
//! refused proposals) and where a node's life changes (crash, restart,
//! heal).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

#[cfg(feature = "canary")]
use paxlock_core::consensus_loop::LoopCanary;
use paxlock_core::consensus_loop::{ConsensusLoop, LoopAction};
use paxlock_core::node_membership::{self, AdminChange, RemovalWatch, Route};
#[cfg(feature = "canary")]
use paxlock_core::paxos::Canary;
use paxlock_core::paxos::{
    is_membership_value, ChosenEntry, Config, Effects, Input, LeadershipEvent, Message, Nanos,
    NodeId, PersistRequest, PersistSeq, RejectReason, Rejected, Replica, Slot, Snapshot,
};

use super::checker::Checker;
use super::clock::ClockModel;
use super::disk::Disk;
use super::network::{NetProfile, Network};
use super::operator::{self, Operator};
use super::rng::{Fnv, SimRng};

/// One millisecond of simulated time, in nanoseconds.
pub(crate) const MS: u64 = 1_000_000;
/// One second of simulated time, in nanoseconds.
pub(crate) const SEC: u64 = 1_000_000_000;

/// What to simulate. Everything not listed here is drawn from the seed.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Cluster size; 0 draws 3 or 5 from the seed.
    pub nodes: usize,
    /// Simulated time with faults, in true nanoseconds.
    pub fault_duration_ns: u64,
    /// After healing, every submitted command must be chosen within this.
    pub heal_duration_ns: u64,
    /// Number of client command submitters.
    pub clients: usize,
    /// Clock drift bound given to replicas; simulated clocks stay within it.
    pub max_drift_ppm: u64,
    /// Whether to inject faults at all.
    pub faults: bool,
    /// Relative weights of the fault kinds (symmetric partition, asymmetric
    /// cut, flapping link, isolated node, network heal, crash, quick
    /// restart, pause); `None` draws them per seed.
    pub fault_weights: Option<[u64; 8]>,
    /// Longest gap between two injected faults.
    pub fault_gap_max_ns: u64,
    /// Longest pause of a node.
    pub pause_max_ns: u64,
    /// Make whichever node leads abdicate (graceful handover) this often,
    /// until healing; `None` never. Uses no randomness, so turning it on
    /// keeps every other draw of a seed the same.
    pub abdicate_every_ns: Option<u64>,
    /// The replicas' `max_log_ahead_slots`; `None` keeps the default
    /// (1024). A small window (the pipeline window shrinks to fit) makes
    /// nodes that lag past it common: restarted, partitioned or paused ones.
    pub max_log_ahead_slots: Option<u64>,
    /// Byte bounds small enough that the runs reach them all the time:
    /// batches close on bytes, promises travel in parts and snapshots in
    /// chunks (see [`small_message_bounds`]).
    pub small_messages: bool,
    /// Compact each node's log every this many applied slots (the
    /// consensus loop's cadence; nodes ship with 10,000); `None` draws 10,
    /// 50, 200 or 1,000 per seed, so that runs see snapshots taken, sent
    /// and installed often, and rarely.
    pub snapshot_every_slots: Option<u64>,
    /// Change the membership while the faults run (Paxos workload): add
    /// learners from a pool of spare nodes, promote them, remove voters
    /// (the leader too, after it hands over), replace a crashed voter,
    /// grow 3 to 5 and shrink back.
    pub membership_changes: bool,
    /// Removed nodes never stop: each behaves as a node that never learns
    /// its removal (down, or cut off, when it was chosen, and back with
    /// its old view), instead of stopping by the shipped rule. The
    /// adversary the membership canaries need: most stale candidates and
    /// voters are such nodes.
    pub removed_nodes_linger: bool,
    /// Print leadership changes, crashes and faults to stderr (debugging).
    pub verbose: bool,
    /// Which safety rule (if any) the replicas switch off.
    #[cfg(feature = "canary")]
    pub canary: Canary,
    /// Which rule (if any) the nodes' consensus loops switch off.
    #[cfg(feature = "canary")]
    pub loop_canary: LoopCanary,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 0,
            fault_duration_ns: 30 * SEC,
            heal_duration_ns: 10 * SEC,
            clients: 2,
            max_drift_ppm: 20_000,
            faults: true,
            fault_weights: None,
            fault_gap_max_ns: 2 * SEC,
            pause_max_ns: 3 * SEC,
            abdicate_every_ns: None,
            max_log_ahead_slots: None,
            small_messages: false,
            snapshot_every_slots: None,
            membership_changes: false,
            removed_nodes_linger: false,
            verbose: false,
            #[cfg(feature = "canary")]
            canary: Canary::None,
            #[cfg(feature = "canary")]
            loop_canary: LoopCanary::None,
        }
    }
}

impl SimConfig {
    /// Only pauses, often and short (up to 1 s, every 300 ms at most): the
    /// mix that most often leaves a candidate stale mid-campaign.
    pub fn pause_heavy() -> SimConfig {
        SimConfig {
            fault_weights: Some([0, 0, 0, 0, 0, 0, 0, 10]),
            fault_gap_max_ns: 300 * MS,
            pause_max_ns: SEC,
            ..SimConfig::default()
        }
    }

    /// Only network faults that cut single nodes off (asymmetric cuts,
    /// isolated nodes, and heals): the mix that most often leaves a node,
    /// or a removed member, with a stale view of the membership.
    pub fn isolation_heavy() -> SimConfig {
        SimConfig {
            fault_weights: Some([0, 5, 0, 10, 2, 0, 0, 0]),
            ..SimConfig::default()
        }
    }

    /// The replica configuration of node `id` in a cluster of `members`:
    /// the defaults, with this run's drift bound, log window, byte bounds
    /// and canary.
    pub(crate) fn replica_config(&self, id: NodeId, members: &[NodeId]) -> Config {
        let mut rc = Config::new(id, members.to_vec());
        rc.max_drift_ppm = self.max_drift_ppm;
        if self.small_messages {
            small_message_bounds(&mut rc);
        }
        if let Some(window) = self.max_log_ahead_slots {
            rc.max_log_ahead_slots = window;
            rc.pipeline_window_slots = rc.pipeline_window_slots.min(window);
        }
        #[cfg(feature = "canary")]
        {
            rc.canary = self.canary;
        }
        rc
    }

    /// A consensus loop compacting every `snapshot_every_slots`, for a
    /// node that starts with `persisted` durable and its application
    /// before slot `next_slot`.
    pub(crate) fn consensus_loop(
        &self,
        snapshot_every_slots: u64,
        persisted: PersistSeq,
        next_slot: Slot,
    ) -> ConsensusLoop {
        #[allow(unused_mut)]
        let mut consensus = ConsensusLoop::new(persisted, next_slot, snapshot_every_slots);
        #[cfg(feature = "canary")]
        consensus.set_canary(self.loop_canary);
        consensus
    }
}

/// The byte bounds of [`SimConfig::small_messages`]: four of the
/// simulator's 16-byte commands per batch, a message of at most 300 bytes
/// (a few log entries), and snapshots in 5-byte chunks. A value may take
/// 48 bytes: a membership change (at most 44) must fit.
pub fn small_message_bounds(cfg: &mut Config) {
    cfg.max_value_bytes = 48;
    cfg.max_batch_bytes = 4 * (16 + paxlock_core::paxos::wire_size::VALUE_OVERHEAD_BYTES);
    cfg.max_message_bytes = 300;
    cfg.snapshot_chunk_bytes = 5;
    cfg.max_pending_bytes = 64 * 1024;
}

/// A broken invariant, with what is needed to reproduce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The seed that produced it.
    pub seed: u64,
    /// Simulated true time of the failing event.
    pub at_true_ns: u64,
    /// What went wrong.
    pub what: String,
}

impl Violation {
    /// The one line that reproduces this run.
    pub fn repro_line(&self, test: &str) -> String {
        format!(
            "PAXLOCK_SIM_SEED={} cargo test --release -p paxlock-sim --all-features --test {test} -- --nocapture   # {} at {} ms",
            self.seed,
            self.what,
            self.at_true_ns / MS
        )
    }
}

/// A workload over the engine: its per-node application state, its own
/// events, and what it does with the replicas' effects. Every function gets
/// the whole engine (the workload's own state is `sim.w`).
pub(crate) trait Workload: Sized {
    /// The workload's own events (clients, timers of its application).
    type Event: Clone + Debug;
    /// The workload's state on each node (its application).
    type Node;

    /// The event's kind and subject, hashed into the trace.
    fn tag(ev: &Self::Event) -> (u64, u64);
    /// Whether verbose runs leave it out (frequent events).
    fn quiet(ev: &Self::Event) -> bool;
    /// Schedules node `node`'s own timers at the start of the run.
    fn start_node(sim: &mut Engine<Self>, node: usize);
    /// Schedules the workload's first events (after every node's).
    fn start(sim: &mut Engine<Self>);
    /// Handles one of the workload's events.
    fn handle(sim: &mut Engine<Self>, ev: Self::Event) -> Result<(), String>;
    /// The node crashed: its memory is gone.
    fn crashed(sim: &mut Engine<Self>, node: usize);
    /// The node restarts: its application starts empty.
    fn reset(sim: &mut Engine<Self>, node: usize) -> Result<(), String>;
    /// Replaces the node's application with `snapshot` (its own, at a
    /// restart, or a peer's, on catch-up) and returns the new state's
    /// digest; `Err` (a whole message) if the snapshot is invalid or the
    /// workload's checks fail.
    fn restore(
        sim: &mut Engine<Self>,
        node: usize,
        snapshot: &Snapshot,
        from_peer: bool,
    ) -> Result<u64, String>;
    /// The node's application as a snapshot, for compaction.
    fn snapshot(sim: &Engine<Self>, node: usize) -> Result<Vec<u8>, String>;
    /// Applies one chosen entry (the engine checked the slot order) and
    /// returns the new state's digest.
    fn apply(sim: &mut Engine<Self>, node: usize, entry: &ChosenEntry) -> Result<u64, String>;
    /// A leadership event, after the engine's own bookkeeping.
    fn leadership(sim: &mut Engine<Self>, node: usize, ev: &LeadershipEvent) -> Result<(), String>;
    /// Proposals the replica refused.
    fn rejected(sim: &mut Engine<Self>, node: usize, rejected: Rejected) -> Result<(), String>;
    /// After healing (every node restarted and resumed).
    fn healed(_sim: &mut Engine<Self>) {}
}

/// One simulated node: the shipped replica, its disk, clock and outbox,
/// and the workload's application state.
pub(crate) struct SimNode<N> {
    pub(crate) id: NodeId,
    pub(crate) cfg: Config,
    /// `None` while crashed.
    pub(crate) replica: Option<Replica>,
    /// Bumped at every crash and restart: events of an older life are void.
    pub(crate) incarnation: u64,
    pub(crate) disk: Disk,
    /// The shipped consensus loop's decisions: effect order, the messages
    /// held for their persist barrier, slot order, the snapshot cadence.
    /// A new one for every life of the node.
    pub(crate) consensus: ConsensusLoop,
    pub(crate) clock: ClockModel,
    pub(crate) paused_until: Option<u64>,
    pub(crate) wake_at_true_ns: Option<u64>,
    /// The administrator's change this node holds as leader (the shipped
    /// bookkeeping); a new one for every life of the node.
    pub(crate) admin: AdminChange<()>,
    /// When this node, removed, stops (the shipped rule).
    pub(crate) removal: RemovalWatch,
    pub(crate) app: N,
}

impl<N> SimNode<N> {
    /// A node that has not started yet (the run restarts every node at 0).
    pub(crate) fn new(id: NodeId, cfg: Config, clock: ClockModel, app: N) -> SimNode<N> {
        SimNode {
            id,
            cfg,
            replica: None,
            incarnation: 0,
            disk: Disk::default(),
            // Replaced as the node starts (`Engine::restart`).
            consensus: ConsensusLoop::new(PersistSeq(0), Slot(0), 1),
            clock,
            paused_until: None,
            wake_at_true_ns: None,
            admin: AdminChange::default(),
            removal: RemovalWatch::default(),
            app,
        }
    }
}

/// An event: the engine's, or the workload's.
#[derive(Debug, Clone)]
pub(crate) enum Event<E> {
    Deliver {
        from: usize,
        to: usize,
        msg: Message,
    },
    Wake {
        node: usize,
        incarnation: u64,
    },
    DiskDone {
        node: usize,
        incarnation: u64,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Pause {
        node: usize,
        for_ns: u64,
    },
    Resume {
        node: usize,
        incarnation: u64,
    },
    Fault,
    Flap {
        from: usize,
        to: usize,
        remaining: u32,
    },
    Heal,
    Abdicate,
    /// The simulated operator's next look at the membership.
    MembershipTick,
    /// The operator asks node `to` (its shell) for a membership change.
    Operator {
        to: usize,
        input: Input,
    },
    Work(E),
}

/// Counters of what the engine did, for the reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct EngineStats {
    pub(crate) events: u64,
    pub(crate) elections: u64,
    pub(crate) crashes: u64,
    pub(crate) snapshot_installs: u64,
    pub(crate) catch_ups: u64,
    pub(crate) promise_parts: u64,
    pub(crate) snapshot_chunks: u64,
    /// Administrators' changes answered in effect by the leader holding
    /// them (`node_membership::AdminChange`).
    pub(crate) changes_answered: u64,
    /// Removed nodes that stopped (`node_membership::RemovalWatch`).
    pub(crate) removed_stops: u64,
}

/// One deterministic run: the world, and the workload in `w`.
pub(crate) struct Engine<W: Workload> {
    pub(crate) seed: u64,
    pub(crate) cfg: SimConfig,
    pub(crate) rng: SimRng,
    /// True time, in nanoseconds.
    pub(crate) now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event<W::Event>>,
    pub(crate) nodes: Vec<SimNode<W::Node>>,
    pub(crate) net: Network,
    weights: [u64; 8],
    disk_delay_max_ns: u64,
    pub(crate) checker: Checker,
    pub(crate) trace: Fnv,
    /// Faults have stopped and the network is healthy.
    pub(crate) healed: bool,
    /// This run's compaction cadence (see [`SimConfig::snapshot_every_slots`]).
    pub(crate) snapshot_every_slots: u64,
    /// The node that most recently became leader or was named by one.
    pub(crate) leader_guess: Option<usize>,
    pub(crate) stats: EngineStats,
    /// The simulated operator changing the membership.
    pub(crate) operator: Operator,
    pub(crate) w: W,
}

impl<W: Workload> Engine<W> {
    /// The engine over `nodes` (drawn by the workload, with `rng`), after
    /// drawing the network, the fault mix and the disks' speed.
    pub(crate) fn new(
        seed: u64,
        cfg: SimConfig,
        mut rng: SimRng,
        nodes: Vec<SimNode<W::Node>>,
        w: W,
    ) -> Engine<W> {
        let profile = if cfg.faults {
            NetProfile::draw(&mut rng)
        } else {
            NetProfile::healthy()
        };
        let mut weights = [0u64; 8];
        for w in weights.iter_mut() {
            *w = rng.range(0, 10);
        }
        if let Some(fixed) = cfg.fault_weights {
            weights = fixed;
        }
        let disk_delay_max_ns = rng.range(100_000, 20 * MS);
        // Nodes configured without themselves among the first voters are
        // the spares the operator may add.
        let nodes_spare_ids: Vec<NodeId> = nodes
            .iter()
            .filter(|n| !n.cfg.members.contains(&n.id))
            .map(|n| n.id)
            .collect();
        let cadences = [10, 50, 200, 1_000];
        let snapshot_every_slots = cfg
            .snapshot_every_slots
            .unwrap_or_else(|| cadences[rng.index(cadences.len())]);
        Engine {
            seed,
            checker: Checker::new(nodes.iter().filter_map(|n| {
                // The first voters: every node configured a member of them.
                n.cfg.members.contains(&n.id).then_some(n.id)
            })),
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            net: Network {
                profile,
                cut: BTreeSet::new(),
            },
            weights,
            disk_delay_max_ns,
            snapshot_every_slots,
            trace: Fnv::default(),
            healed: false,
            leader_guess: None,
            stats: EngineStats::default(),
            operator: Operator::new(nodes_spare_ids),
            w,
        }
    }

    pub(crate) fn schedule(&mut self, at: u64, ev: Event<W::Event>) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    /// Schedules one of the workload's events.
    pub(crate) fn schedule_work(&mut self, at: u64, ev: W::Event) {
        self.schedule(at, Event::Work(ev));
    }

    pub(crate) fn fail(&self, what: String) -> Violation {
        Violation {
            seed: self.seed,
            at_true_ns: self.now,
            what,
        }
    }

    /// Node `node`'s clock now.
    pub(crate) fn local(&self, node: usize) -> u64 {
        self.nodes[node].clock.local(self.now)
    }

    /// Runs every event up to the end of the healing time; the first
    /// violation stops the run. The workload checks what it must at the end.
    pub(crate) fn run_events(&mut self) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            self.schedule(0, Event::Restart { node: i });
            W::start_node(self, i);
        }
        W::start(self);
        operator::start(self);
        if self.cfg.faults {
            let t = self.rng.range(500 * MS, 2 * SEC);
            self.schedule(t, Event::Fault);
        }
        if let Some(every) = self.cfg.abdicate_every_ns {
            self.schedule(every, Event::Abdicate);
        }
        let heal_at = self.cfg.fault_duration_ns;
        self.schedule(heal_at, Event::Heal);
        let end = heal_at + self.cfg.heal_duration_ns;
        while let Some(((at, _), ev)) = self.queue.pop_first() {
            if at > end {
                break;
            }
            self.now = at;
            self.stats.events += 1;
            let (kind, who) = match &ev {
                Event::Work(work) => {
                    let (kind, who) = W::tag(work);
                    (64 + kind, who)
                }
                engine => tag(engine),
            };
            self.trace.u64(at);
            self.trace.u64(kind << 8 | who);
            let quiet = match &ev {
                Event::Work(work) => W::quiet(work),
                engine => quiet(engine),
            };
            if self.cfg.verbose && !quiet {
                eprintln!("{:>8.3} ms  {ev:?}", at as f64 / 1e6);
            }
            self.handle(ev).map_err(|w| self.fail(w))?;
        }
        self.now = end;
        Ok(())
    }

    /// Events for a paused node wait until it resumes.
    pub(crate) fn deferred(&mut self, node: usize, ev: &Event<W::Event>) -> bool {
        if let Some(until) = self.nodes[node].paused_until {
            self.schedule(until.max(self.now + 1), ev.clone());
            return true;
        }
        false
    }

    /// A workload event for a paused node waits until it resumes.
    pub(crate) fn deferred_work(&mut self, node: usize, ev: &W::Event) -> bool {
        if let Some(until) = self.nodes[node].paused_until {
            self.schedule(until.max(self.now + 1), Event::Work(ev.clone()));
            return true;
        }
        false
    }

    fn handle(&mut self, ev: Event<W::Event>) -> Result<(), String> {
        match ev {
            Event::Deliver { from, to, ref msg } => {
                if self.deferred(to, &ev) {
                    return Ok(());
                }
                let from_id = self.nodes[from].id;
                self.step(
                    to,
                    Input::Peer {
                        from: from_id,
                        msg: msg.clone(),
                    },
                )?;
            }
            Event::Wake { node, incarnation } => {
                if self.nodes[node].incarnation != incarnation || self.deferred(node, &ev) {
                    return Ok(());
                }
                if self.nodes[node].wake_at_true_ns == Some(self.now) {
                    self.nodes[node].wake_at_true_ns = None;
                    self.step(node, Input::Tick)?;
                }
            }
            Event::DiskDone { node, incarnation } => {
                if self.nodes[node].incarnation != incarnation || self.deferred(node, &ev) {
                    return Ok(());
                }
                self.disk_done(node)?;
            }
            Event::Crash { node } => self.crash(node),
            Event::Restart { node } => self.restart(node)?,
            Event::Pause { node, for_ns } => {
                let n = &mut self.nodes[node];
                if n.replica.is_some() && n.paused_until.is_none() {
                    n.paused_until = Some(self.now + for_ns);
                    let inc = n.incarnation;
                    self.schedule(
                        self.now + for_ns,
                        Event::Resume {
                            node,
                            incarnation: inc,
                        },
                    );
                }
            }
            Event::Resume { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation
                    && self.nodes[node].paused_until.is_some()
                {
                    self.nodes[node].paused_until = None;
                    self.step(node, Input::Tick)?;
                }
            }
            Event::Fault => self.inject_fault(),
            Event::Flap {
                from,
                to,
                remaining,
            } => {
                if !self.healed && remaining > 0 {
                    let link = (self.nodes[from].id, self.nodes[to].id);
                    if !self.net.cut.remove(&link) {
                        self.net.cut.insert(link);
                    }
                    let t = self.now + self.rng.range(20 * MS, 400 * MS);
                    self.schedule(
                        t,
                        Event::Flap {
                            from,
                            to,
                            remaining: remaining - 1,
                        },
                    );
                }
            }
            Event::Heal => {
                self.healed = true;
                self.net.cut.clear();
                self.net.profile = NetProfile::healthy();
                for i in 0..self.nodes.len() {
                    if self.nodes[i].replica.is_none() {
                        self.restart(i)?;
                    } else if self.nodes[i].paused_until.is_some() {
                        self.nodes[i].paused_until = None;
                        self.step(i, Input::Tick)?;
                    }
                }
                W::healed(self);
            }
            Event::Abdicate => {
                let leaders: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| {
                        self.nodes[i].paused_until.is_none()
                            && self.nodes[i]
                                .replica
                                .as_ref()
                                .is_some_and(|r| r.is_leader())
                    })
                    .collect();
                for node in leaders {
                    self.step(node, Input::Abdicate { successor: None })?;
                }
                if let (Some(every), false) = (self.cfg.abdicate_every_ns, self.healed) {
                    self.schedule(self.now + every, Event::Abdicate);
                }
            }
            Event::MembershipTick => operator::tick(self),
            Event::Operator { to, ref input } => {
                if !self.deferred(to, &ev) {
                    self.admin_request(to, input.clone())?;
                }
            }
            Event::Work(ev) => W::handle(self, ev)?,
        }
        Ok(())
    }

    /// A group commit completed: tell the checker, release the messages it
    /// held back, and tell the replica.
    fn disk_done(&mut self, node: usize) -> Result<(), String> {
        let done = self.nodes[node].disk.complete(self.now)?;
        let id = self.nodes[node].id;
        for req in &done {
            self.checker.on_durable(id, req)?;
        }
        if done.is_empty() {
            return Ok(());
        }
        let up_to = self.nodes[node].disk.durable.persisted_seq;
        for out in self.nodes[node].consensus.persisted(up_to) {
            self.transmit(node, out.to, out.msg, out.after)?;
        }
        self.step(node, Input::Persisted { up_to })
    }

    fn inject_fault(&mut self) {
        if self.healed {
            return;
        }
        let t = self.now + self.rng.range(100 * MS, self.cfg.fault_gap_max_ns);
        self.schedule(t, Event::Fault);
        let total: u64 = self.weights.iter().sum::<u64>().max(1);
        let mut pick = self.rng.range(0, total - 1);
        let mut kind = 0;
        for (i, w) in self.weights.iter().enumerate() {
            if pick < *w {
                kind = i;
                break;
            }
            pick -= *w;
        }
        let n = self.nodes.len();
        let ids: Vec<NodeId> = self.nodes.iter().map(|x| x.id).collect();
        match kind {
            // Symmetric partition into two random sides.
            0 => {
                let mut a = Vec::new();
                let mut b = Vec::new();
                for id in &ids {
                    if self.rng.range(0, 1) == 0 {
                        a.push(*id);
                    } else {
                        b.push(*id);
                    }
                }
                self.net.partition(&a, &b);
            }
            // Asymmetric: one node stops hearing (or reaching) some others.
            1 => {
                let x = ids[self.rng.index(n)];
                let inbound = self.rng.range(0, 1) == 0;
                for y in &ids {
                    if *y != x && self.rng.range(0, 1) == 0 {
                        self.net.cut.insert(if inbound { (*y, x) } else { (x, *y) });
                    }
                }
            }
            // A flapping link.
            2 => {
                let from = self.rng.index(n);
                let to = (from + 1 + self.rng.index(n - 1)) % n;
                let flips = self.rng.range(4, 30) as u32;
                self.schedule(
                    self.now,
                    Event::Flap {
                        from,
                        to,
                        remaining: flips,
                    },
                );
            }
            // Isolate one node.
            3 => {
                let x = ids[self.rng.index(n)];
                let rest: Vec<NodeId> = ids.iter().copied().filter(|y| *y != x).collect();
                self.net.partition(&[x], &rest);
            }
            // Heal the network.
            4 => self.net.cut.clear(),
            // Crash a node; it restarts later.
            5 => {
                let x = self.rng.index(n);
                let down = self.rng.range(10 * MS, 3 * SEC);
                self.schedule(self.now, Event::Crash { node: x });
                self.schedule(self.now + down, Event::Restart { node: x });
            }
            // A process restart: down for a moment, memory lost.
            6 => {
                let x = self.rng.index(n);
                let down = self.rng.range(MS, 60 * MS);
                self.schedule(self.now, Event::Crash { node: x });
                self.schedule(self.now + down, Event::Restart { node: x });
            }
            // Pause a node.
            _ => {
                let x = self.rng.index(n);
                let for_ns = self.rng.range(50 * MS, self.cfg.pause_max_ns);
                self.schedule(self.now, Event::Pause { node: x, for_ns });
            }
        }
    }

    fn crash(&mut self, node: usize) {
        if self.nodes[node].replica.is_some() {
            self.stats.crashes += 1;
        }
        self.stop_node(node);
    }

    /// Stops node `node` as a crash does (what it did not make durable is
    /// lost), without counting a crash: a removed node stopping by itself.
    fn stop_node(&mut self, node: usize) {
        let id = self.nodes[node].id;
        let n = &mut self.nodes[node];
        if n.replica.is_none() {
            return;
        }
        n.replica = None;
        n.incarnation += 1;
        n.disk.crash();
        // What it held back is gone with it.
        n.consensus = ConsensusLoop::new(PersistSeq(0), Slot(0), 1);
        n.paused_until = None;
        n.wake_at_true_ns = None;
        n.admin = AdminChange::default();
        n.removal = RemovalWatch::default();
        W::crashed(self, node);
        self.checker.on_lease_lost(id, self.now);
        if self.leader_guess == Some(node) {
            self.leader_guess = None;
        }
    }

    /// Starts a crashed (or not yet started) node from what its disk kept.
    pub(crate) fn restart(&mut self, node: usize) -> Result<(), String> {
        if self.nodes[node].replica.is_some() {
            return Ok(());
        }
        let seed = self.rng.u64();
        let n = &mut self.nodes[node];
        n.incarnation += 1;
        let recovered = n.disk.recover()?;
        let replica = Replica::new(n.cfg.clone(), recovered, seed)
            .map_err(|e| format!("bad config: {e:?}"))?;
        // The application's part of the snapshot (without the memberships).
        let snapshot = replica.snapshot();
        n.replica = Some(replica);
        let next_slot = snapshot.as_ref().map_or(Slot(0), |s| s.up_to);
        n.consensus = self.cfg.consensus_loop(
            self.snapshot_every_slots,
            n.disk.durable.persisted_seq,
            next_slot,
        );
        W::reset(self, node)?;
        if let Some(s) = snapshot {
            let id = self.nodes[node].id;
            let digest = W::restore(self, node, &s, false)?;
            self.checker.on_snapshot(id, s.up_to, digest)?;
        }
        self.step(node, Input::Tick)
    }

    /// Sends `msg` from `from` to `to` through the faulty network, after
    /// checking the rules every message must keep: released only once the
    /// persist it depends on is durable, consistent with what the sender
    /// promised and accepted, and small enough for the real transport.
    fn transmit(
        &mut self,
        from: usize,
        to: NodeId,
        msg: Message,
        after: PersistSeq,
    ) -> Result<(), String> {
        // No message to a member whose removal is in effect (the node's
        // shell closes its link).
        if let Some(r) = self.nodes[from].replica.as_ref() {
            if !node_membership::sends_to(r.membership().at(r.commit_index()), to) {
                return Ok(());
            }
        }
        let Some(to) = self.nodes.iter().position(|x| x.id == to) else {
            return Ok(());
        };
        self.trace.u64(msg_tag(&msg) << 8 | to as u64);
        self.count_sent(&msg);
        let n = &self.nodes[from];
        if after > n.disk.durable.persisted_seq {
            return Err(format!(
                "node {} released a message before persist {}",
                n.id.0, after.0
            ));
        }
        self.checker.on_send(n.id, &msg, &n.disk.durable)?;
        // Rule "every message fits", on the real codec: what the replica
        // built must fit its own bound (which the node checks against the
        // transport's frame at start-up).
        let encoded = prost::Message::encoded_len(&paxlock_peer_codec::encode(&msg));
        if encoded > n.cfg.max_message_bytes {
            return Err(format!(
                "node {} built a message of {encoded} encoded bytes, over max_message_bytes {}: {}",
                n.id.0,
                n.cfg.max_message_bytes,
                msg_kind(&msg)
            ));
        }
        let fates = self.net.fate(&mut self.rng, n.id, self.nodes[to].id);
        for d in fates {
            self.schedule(
                self.now + d,
                Event::Deliver {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
        Ok(())
    }

    /// Steps node `node`'s replica (if it is up) and carries out its effects.
    pub(crate) fn step(&mut self, node: usize, input: Input) -> Result<(), String> {
        let local = self.local(node);
        let Some(r) = self.nodes[node].replica.as_mut() else {
            return Ok(());
        };
        let fx = r.step(Nanos(local), input);
        self.apply_effects(node, fx)?;
        self.after_step(node);
        Ok(())
    }

    /// What the node's shell decides after a step, as the shipped one
    /// does when it publishes its status: the administrator's change it
    /// holds is answered once in effect, and a removed node stops.
    fn after_step(&mut self, node: usize) {
        let local = Nanos(self.local(node));
        let n = &mut self.nodes[node];
        let Some(r) = n.replica.as_ref() else {
            return;
        };
        let in_effect = r.membership().at(r.commit_index());
        if n.admin.in_effect(in_effect).is_some() {
            self.stats.changes_answered += 1;
        }
        let stops = n
            .removal
            .must_stop(n.id, r.membership().latest(), in_effect, local);
        if stops && !self.cfg.removed_nodes_linger {
            if self.cfg.verbose {
                eprintln!(
                    "{:>8.3} ms  node {} removed: stops",
                    self.now as f64 / 1e6,
                    n.id.0
                );
            }
            self.stats.removed_stops += 1;
            self.stop_node(node);
        }
    }

    /// An administrator's request to node `node`, through the shipped
    /// rules: only a leader takes a change; one the members in effect show
    /// is answered as made; a leader to remove hands leadership over; one
    /// change at a time.
    fn admin_request(&mut self, node: usize, input: Input) -> Result<(), String> {
        let Input::ChangeMembership(change) = input else {
            return self.step(node, input);
        };
        let n = &mut self.nodes[node];
        let Some(r) = n.replica.as_ref().filter(|r| r.is_leader()) else {
            return Ok(());
        };
        let in_effect = r.membership().at(r.commit_index());
        match node_membership::route(change, n.id, in_effect) {
            Err(_) | Ok(Route::AlreadyMade) => Ok(()),
            Ok(Route::HandOver) => self.step(node, Input::Abdicate { successor: None }),
            Ok(Route::Propose) => match n.admin.take(change, ()) {
                Ok(()) => self.step(node, Input::ChangeMembership(change)),
                Err(_) => Ok(()),
            },
        }
    }

    /// Carries out a replica's effects as the shipped consensus loop orders
    /// them (`ConsensusLoop::effects`): persist, send what the persist
    /// barrier allows, install, apply, then leadership, refusals and the
    /// next wake-up; then compacts the log on the loop's cadence.
    fn apply_effects(&mut self, node: usize, fx: Effects) -> Result<(), String> {
        let id = self.nodes[node].id;
        let actions = self.nodes[node]
            .consensus
            .effects(fx)
            .map_err(|e| format!("node {}: {e}", id.0))?;
        for action in actions {
            match action {
                // Nothing to publish to: the simulated node answers its
                // clients from the replica itself, which no longer leads
                // once this step returned.
                LoopAction::PublishLostLeadership => {}
                LoopAction::Persist(req) => self.submit_to_disk(node, req),
                LoopAction::Send(out) => self.transmit(node, out.to, out.msg, out.after)?,
                LoopAction::Install(s) => {
                    self.stats.snapshot_installs += 1;
                    let digest = W::restore(self, node, &s, true)?;
                    self.checker.on_snapshot(id, s.up_to, digest)?;
                }
                LoopAction::Apply(e) => {
                    let digest = W::apply(self, node, &e)?;
                    self.checker.on_apply(id, e.slot, &e.batch, digest)?;
                    if let Some(r) = self.nodes[node].replica.as_ref() {
                        let voters = &r.membership().at(e.slot).voters;
                        self.checker.on_replica_voters(id, e.slot, voters)?;
                    }
                }
                LoopAction::Leadership(ev) => self.leadership(node, ev)?,
                LoopAction::Rejected(r) => {
                    // Only the administrator's change makes the replica
                    // refuse a membership value for any reason but
                    // `Reserved` (as in the node's shell).
                    let membership = r.reason != RejectReason::Reserved
                        && r.values.iter().any(|v| is_membership_value(v));
                    if membership {
                        self.nodes[node].admin.refused();
                    } else {
                        W::rejected(self, node, r)?
                    }
                }
                LoopAction::WakeAt(w) => self.wake_at(node, w),
            }
        }
        if self.nodes[node].replica.is_some() {
            if let Some(up_to) = self.nodes[node].consensus.snapshot_due() {
                let data = W::snapshot(self, node)?;
                self.step(node, Input::Compact { up_to, data })?;
            }
        }
        Ok(())
    }

    /// Hands a persist request to the node's simulated disk.
    fn submit_to_disk(&mut self, node: usize, req: PersistRequest) {
        let delay = if self.rng.chance_ppm(20_000) {
            self.rng.range(MS, 50 * MS)
        } else {
            self.rng.range(20_000, self.disk_delay_max_ns)
        };
        let n = &mut self.nodes[node];
        let at = n.disk.submit(req, self.now + delay);
        let inc = n.incarnation;
        self.schedule(
            at,
            Event::DiskDone {
                node,
                incarnation: inc,
            },
        );
    }

    /// A leadership change of node `node`: the checker learns of leases
    /// and their loss, then the workload of the change.
    fn leadership(&mut self, node: usize, ev: LeadershipEvent) -> Result<(), String> {
        let id = self.nodes[node].id;
        if self.cfg.verbose {
            eprintln!(
                "{:>8.3} ms  node {} {ev:?} (true end {:?})",
                self.now as f64 / 1e6,
                id.0,
                if let LeadershipEvent::LeaseUntil { until } = &ev {
                    Some(self.nodes[node].clock.true_at(until.0) as f64 / 1e6)
                } else {
                    None
                }
            );
        }
        match ev {
            LeadershipEvent::BecameLeader { .. } => {
                self.stats.elections += 1;
                self.leader_guess = Some(node);
            }
            LeadershipEvent::LostLeadership => {
                self.checker.on_lease_lost(id, self.now);
                // The change it held may or may not be made: answered so.
                self.nodes[node].admin.lost_leadership();
                if self.leader_guess == Some(node) {
                    self.leader_guess = None;
                }
            }
            LeadershipEvent::LeaseUntil { until } => {
                let end = self.nodes[node].clock.true_at(until.0);
                self.checker.on_lease(id, self.now, end)?;
            }
        }
        W::leadership(self, node, &ev)
    }

    /// Arms node `node`'s timer for node-clock time `w`.
    fn wake_at(&mut self, node: usize, w: Nanos) {
        let t = self.nodes[node].clock.true_at(w.0).max(self.now + 100_000);
        let n = &mut self.nodes[node];
        if n.wake_at_true_ns
            .is_none_or(|cur| t < cur || cur < self.now)
        {
            n.wake_at_true_ns = Some(t);
            let inc = n.incarnation;
            self.schedule(
                t,
                Event::Wake {
                    node,
                    incarnation: inc,
                },
            );
        }
    }

    fn count_sent(&mut self, msg: &Message) {
        match msg {
            Message::CatchUp { snapshot, .. } => {
                self.stats.catch_ups += 1;
                if snapshot.as_ref().is_some_and(|c| !c.is_whole()) {
                    self.stats.snapshot_chunks += 1;
                }
            }
            Message::Promise {
                from_slot,
                part_start,
                part_end,
                ..
            } if part_end.is_some() || part_start != from_slot => self.stats.promise_parts += 1,
            _ => {}
        }
    }
}

/// The engine event's kind and subject, hashed into the trace.
fn tag<E>(ev: &Event<E>) -> (u64, u64) {
    match ev {
        Event::Deliver { to, msg, .. } => (1 + msg_tag(msg), *to as u64),
        Event::Wake { node, .. } => (21, *node as u64),
        Event::DiskDone { node, .. } => (22, *node as u64),
        Event::Crash { node } => (23, *node as u64),
        Event::Restart { node } => (24, *node as u64),
        Event::Pause { node, .. } => (25, *node as u64),
        Event::Resume { node, .. } => (26, *node as u64),
        Event::Fault => (27, 0),
        Event::Flap { from, .. } => (28, *from as u64),
        Event::Heal => (31, 0),
        Event::Abdicate => (32, 0),
        Event::MembershipTick => (33, 0),
        Event::Operator { to, .. } => (34, *to as u64),
        Event::Work(_) => (64, 0),
    }
}

/// Whether verbose runs leave the engine event out (frequent ones).
fn quiet<E>(ev: &Event<E>) -> bool {
    matches!(
        ev,
        Event::Deliver { .. } | Event::Wake { .. } | Event::DiskDone { .. }
    )
}

/// The violation of a node whose snapshot does not restore.
pub(crate) fn invalid_snapshot(node: NodeId, from_peer: bool, why: &str) -> String {
    if from_peer {
        format!("node {} got an invalid snapshot: {why}", node.0)
    } else {
        format!("node {} cannot restore its own snapshot: {why}", node.0)
    }
}

/// The message's kind, for violation reports.
pub(crate) fn msg_kind(m: &Message) -> &'static str {
    match m {
        Message::PreVote { .. } => "PreVote",
        Message::PreVoteReply { .. } => "PreVoteReply",
        Message::Prepare { .. } => "Prepare",
        Message::Promise { .. } => "Promise",
        Message::Nack { .. } => "Nack",
        Message::Accept { .. } => "Accept",
        Message::Accepted { .. } => "Accepted",
        Message::Heartbeat { .. } => "Heartbeat",
        Message::HeartbeatAck { .. } => "HeartbeatAck",
        Message::CatchUpRequest { .. } => "CatchUpRequest",
        Message::CatchUp { .. } => "CatchUp",
        Message::Abdicate { .. } => "Abdicate",
        Message::SnapshotRequest { .. } => "SnapshotRequest",
    }
}

fn msg_tag(m: &Message) -> u64 {
    match m {
        Message::PreVote { .. } => 0,
        Message::PreVoteReply { .. } => 1,
        Message::Prepare { .. } => 2,
        Message::Promise { .. } => 3,
        Message::Nack { .. } => 4,
        Message::Accept { .. } => 5,
        Message::Accepted { .. } => 6,
        Message::Heartbeat { .. } => 7,
        Message::HeartbeatAck { .. } => 8,
        Message::CatchUpRequest { .. } => 9,
        Message::CatchUp { .. } => 10,
        Message::Abdicate { .. } => 11,
        Message::SnapshotRequest { .. } => 12,
    }
}
