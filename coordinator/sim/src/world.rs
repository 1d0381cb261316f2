//! The simulated world: nodes, disks, network, clients, and the event loop
//! that runs them on one thread from one seed.

use std::collections::{BTreeMap, BTreeSet};

#[cfg(feature = "canary")]
use paxlock_core::paxos::Canary;
use paxlock_core::paxos::{
    Config, Effects, Input, LeadershipEvent, Message, Nanos, NodeId, PersistSeq, Replica, Slot,
    Value,
};

use super::app::{App, HashChainApp};
use super::checker::Checker;
use super::clock::ClockModel;
use super::disk::Disk;
use super::network::{NetProfile, Network};
use super::rng::{Fnv, SimRng};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

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
    /// Print leadership changes, crashes and faults to stderr (debugging).
    pub verbose: bool,
    /// Which safety rule (if any) the replicas switch off.
    #[cfg(feature = "canary")]
    pub canary: Canary,
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
            verbose: false,
            #[cfg(feature = "canary")]
            canary: Canary::None,
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
}

/// Summary of a run that found no violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Hash of the whole event trace: equal seeds must give equal hashes.
    pub trace_hash: u64,
    /// Cluster size drawn.
    pub nodes: usize,
    /// Events processed.
    pub events: u64,
    /// Slots chosen (quorum durably accepted).
    pub chosen_slots: usize,
    /// Client commands submitted / seen chosen.
    pub commands_submitted: u64,
    /// Client commands seen chosen.
    pub commands_chosen: u64,
    /// Times any node became leader.
    pub elections: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Snapshots installed from a peer (catch-up past compaction).
    pub snapshot_installs: u64,
    /// Catch-up replies sent.
    pub catch_ups: u64,
    /// Promise messages that were one part of several.
    pub promise_parts: u64,
    /// Snapshot chunks sent that were not a whole snapshot.
    pub snapshot_chunks: u64,
}

/// The byte bounds of [`SimConfig::small_messages`]: four of the
/// simulator's 16-byte commands per batch, a message of at most 300 bytes
/// (a few log entries), and snapshots in 5-byte chunks.
pub fn small_message_bounds(cfg: &mut Config) {
    cfg.max_value_bytes = 16;
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
    /// True time at which it was detected.
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

/// Runs one seed with the default hash-chain application.
pub fn run_seed(seed: u64, cfg: &SimConfig) -> Result<SimReport, Violation> {
    Sim::<HashChainApp>::new(seed, cfg.clone()).run()
}

#[derive(Debug, Clone)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        msg: Message,
    },
    Propose {
        to: usize,
        values: Vec<Value>,
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
    ClientTick {
        client: usize,
    },
    Compact {
        node: usize,
    },
    Heal,
    Abdicate,
}

impl Event {
    fn tag(&self) -> (u64, u64) {
        match self {
            Event::Deliver { to, msg, .. } => (1 + msg_tag(msg), *to as u64),
            Event::Propose { to, .. } => (20, *to as u64),
            Event::Wake { node, .. } => (21, *node as u64),
            Event::DiskDone { node, .. } => (22, *node as u64),
            Event::Crash { node } => (23, *node as u64),
            Event::Restart { node } => (24, *node as u64),
            Event::Pause { node, .. } => (25, *node as u64),
            Event::Resume { node, .. } => (26, *node as u64),
            Event::Fault => (27, 0),
            Event::Flap { from, .. } => (28, *from as u64),
            Event::ClientTick { client } => (29, *client as u64),
            Event::Compact { node } => (30, *node as u64),
            Event::Heal => (31, 0),
            Event::Abdicate => (32, 0),
        }
    }
}

fn msg_kind(m: &Message) -> &'static str {
    match m {
        Message::Promise { .. } => "a promise",
        Message::Accept { .. } => "an accept",
        Message::CatchUp { .. } => "a catch-up reply",
        _ => "a message",
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

struct SimNode<A> {
    id: NodeId,
    cfg: Config,
    replica: Option<Replica>,
    incarnation: u64,
    disk: Disk,
    /// Messages waiting for their persist sequence to become durable.
    outbox: Vec<(PersistSeq, usize, Message)>,
    clock: ClockModel,
    paused_until: Option<u64>,
    wake_at_true_ns: Option<u64>,
    app: A,
    app_next: Slot,
}

struct Client {
    next_seq: u64,
    /// Command id -> (value, last time sent).
    pending: BTreeMap<u64, (Value, u64)>,
}

/// Per-seed weights of the fault kinds.
#[derive(Debug, Clone)]
struct FaultMix {
    weights: [u64; 8],
    disk_delay_max_ns: u64,
}

/// One deterministic simulation run.
pub struct Sim<A: App + Default> {
    seed: u64,
    cfg: SimConfig,
    rng: SimRng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimNode<A>>,
    net: Network,
    mix: FaultMix,
    clients: Vec<Client>,
    chosen_cmds: BTreeSet<(u64, u64)>,
    checker: Checker,
    trace: Fnv,
    leader_guess: Option<usize>,
    healed: bool,
    events: u64,
    submitted: u64,
    elections: u64,
    crashes: u64,
    snapshot_installs: u64,
    catch_ups: u64,
    promise_parts: u64,
    snapshot_chunks: u64,
}

impl<A: App + Default> Sim<A> {
    /// Draws the world for `seed`: cluster size, clocks, fault mix.
    pub fn new(seed: u64, cfg: SimConfig) -> Sim<A> {
        let mut rng = SimRng::new(seed);
        let n = if cfg.nodes == 0 {
            if rng.range(0, 1) == 0 {
                3
            } else {
                5
            }
        } else {
            cfg.nodes
        };
        let members: Vec<NodeId> = (1..=n as u64).map(NodeId).collect();
        let drift = cfg.max_drift_ppm as i64;
        let nodes = members
            .iter()
            .map(|id| {
                let mut rc = Config::new(*id, members.clone());
                rc.max_drift_ppm = cfg.max_drift_ppm;
                if cfg.small_messages {
                    small_message_bounds(&mut rc);
                }
                if let Some(window) = cfg.max_log_ahead_slots {
                    rc.max_log_ahead_slots = window;
                    rc.pipeline_window_slots = rc.pipeline_window_slots.min(window);
                }
                #[cfg(feature = "canary")]
                {
                    rc.canary = cfg.canary;
                }
                SimNode {
                    id: *id,
                    cfg: rc,
                    replica: None,
                    incarnation: 0,
                    disk: Disk::default(),
                    outbox: Vec::new(),
                    clock: ClockModel {
                        offset_ns: rng.range(0, 1_000 * SEC),
                        drift_ppm: rng.range(0, 2 * drift as u64) as i64 - drift,
                    },
                    paused_until: None,
                    wake_at_true_ns: None,
                    app: A::default(),
                    app_next: Slot(0),
                }
            })
            .collect();
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
        let mix = FaultMix {
            weights,
            disk_delay_max_ns: rng.range(100_000, 20 * MS),
        };
        let clients = (0..cfg.clients)
            .map(|_| Client {
                next_seq: 0,
                pending: BTreeMap::new(),
            })
            .collect();
        Sim {
            seed,
            checker: Checker::new(n / 2 + 1),
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
            mix,
            clients,
            chosen_cmds: BTreeSet::new(),
            trace: Fnv::default(),
            leader_guess: None,
            healed: false,
            events: 0,
            submitted: 0,
            elections: 0,
            crashes: 0,
            snapshot_installs: 0,
            catch_ups: 0,
            promise_parts: 0,
            snapshot_chunks: 0,
        }
    }

    fn schedule(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn fail(&self, what: String) -> Violation {
        Violation {
            seed: self.seed,
            at_true_ns: self.now,
            what,
        }
    }

    /// Runs to the end; the first violation stops the run.
    pub fn run(mut self) -> Result<SimReport, Violation> {
        for i in 0..self.nodes.len() {
            self.schedule(0, Event::Restart { node: i });
            let t = self.rng.range(SEC, 3 * SEC);
            self.schedule(t, Event::Compact { node: i });
        }
        for c in 0..self.clients.len() {
            let t = self.rng.range(0, 100 * MS);
            self.schedule(t, Event::ClientTick { client: c });
        }
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
            self.events += 1;
            let (kind, who) = ev.tag();
            self.trace.u64(at);
            self.trace.u64(kind << 8 | who);
            if self.cfg.verbose
                && !matches!(
                    ev,
                    Event::Deliver { .. }
                        | Event::Wake { .. }
                        | Event::DiskDone { .. }
                        | Event::ClientTick { .. }
                )
            {
                eprintln!("{:>8.3} ms  {ev:?}", at as f64 / 1e6);
            }
            self.handle(ev).map_err(|w| self.fail(w))?;
        }
        self.now = end;
        if self.cfg.verbose {
            for n in &self.nodes {
                eprintln!(
                    "node {} at end: {:?}",
                    n.id.0,
                    n.replica.as_ref().map(|r| r.status())
                );
            }
        }
        let mut missing = 0usize;
        let mut example = None;
        for (ci, c) in self.clients.iter().enumerate() {
            for seq in c.pending.keys() {
                if !self.chosen_cmds.contains(&(ci as u64, *seq)) {
                    missing += 1;
                    example.get_or_insert((ci, *seq));
                }
            }
        }
        if missing > 0 {
            return Err(self.fail(format!(
                "liveness: {missing} commands not chosen {} ms after healing (e.g. client {:?})",
                self.cfg.heal_duration_ns / MS,
                example
            )));
        }
        Ok(SimReport {
            seed: self.seed,
            trace_hash: self.trace.0,
            nodes: self.nodes.len(),
            events: self.events,
            chosen_slots: self.checker.chosen_slots(),
            commands_submitted: self.submitted,
            commands_chosen: self.chosen_cmds.len() as u64,
            elections: self.elections,
            crashes: self.crashes,
            snapshot_installs: self.snapshot_installs,
            catch_ups: self.catch_ups,
            promise_parts: self.promise_parts,
            snapshot_chunks: self.snapshot_chunks,
        })
    }

    /// Events for a paused node wait until it resumes.
    fn deferred(&mut self, node: usize, ev: &Event) -> bool {
        if let Some(until) = self.nodes[node].paused_until {
            self.schedule(until.max(self.now + 1), ev.clone());
            return true;
        }
        false
    }

    fn handle(&mut self, ev: Event) -> Result<(), String> {
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
            Event::Propose { to, ref values } => {
                if self.deferred(to, &ev) {
                    return Ok(());
                }
                self.step(to, Input::Propose(values.clone()))?;
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
                let done = self.nodes[node].disk.complete(self.now)?;
                let id = self.nodes[node].id;
                for req in &done {
                    self.checker.on_durable(id, req)?;
                }
                if done.is_empty() {
                    return Ok(());
                }
                let up_to = self.nodes[node].disk.durable.persisted_seq;
                let ready: Vec<(PersistSeq, usize, Message)>;
                {
                    let n = &mut self.nodes[node];
                    let (r, keep) = std::mem::take(&mut n.outbox)
                        .into_iter()
                        .partition(|(a, _, _)| *a <= up_to);
                    ready = r;
                    n.outbox = keep;
                }
                for (after, to, msg) in ready {
                    self.transmit(node, to, msg, after)?;
                }
                self.step(node, Input::Persisted { up_to })?;
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
            Event::ClientTick { client } => self.client_tick(client),
            Event::Compact { node } => {
                let t = self.now + self.rng.range(SEC, 4 * SEC);
                self.schedule(t, Event::Compact { node });
                let n = &self.nodes[node];
                if n.replica.is_some() && n.paused_until.is_none() && n.app_next.0 > 0 {
                    let input = Input::Compact {
                        up_to: n.app_next,
                        data: n.app.snapshot(),
                    };
                    self.step(node, input)?;
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
            }
        }
        Ok(())
    }

    fn inject_fault(&mut self) {
        if self.healed {
            return;
        }
        let t = self.now + self.rng.range(100 * MS, self.cfg.fault_gap_max_ns);
        self.schedule(t, Event::Fault);
        let total: u64 = self.mix.weights.iter().sum::<u64>().max(1);
        let mut pick = self.rng.range(0, total - 1);
        let mut kind = 0;
        for (i, w) in self.mix.weights.iter().enumerate() {
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
        let id = self.nodes[node].id;
        let n = &mut self.nodes[node];
        if n.replica.is_none() {
            return;
        }
        self.crashes += 1;
        n.replica = None;
        n.incarnation += 1;
        n.disk.crash();
        n.outbox.clear();
        n.paused_until = None;
        n.wake_at_true_ns = None;
        self.checker.on_lease_lost(id, self.now);
        if self.leader_guess == Some(node) {
            self.leader_guess = None;
        }
    }

    fn restart(&mut self, node: usize) -> Result<(), String> {
        if self.nodes[node].replica.is_some() {
            return Ok(());
        }
        let seed = self.rng.u64();
        let n = &mut self.nodes[node];
        n.incarnation += 1;
        let recovered = n.disk.recover()?;
        let replica = Replica::new(n.cfg.clone(), recovered, seed)
            .map_err(|e| format!("bad config: {e:?}"))?;
        n.replica = Some(replica);
        n.app = A::default();
        n.app_next = Slot(0);
        if let Some(s) = n.disk.durable.snapshot.clone() {
            if !n.app.restore(&s) {
                return Err(format!("node {} cannot restore its own snapshot", n.id.0));
            }
            n.app_next = s.up_to;
            let (id, d) = (n.id, n.app.digest());
            self.checker.on_snapshot(id, s.up_to, d)?;
        }
        self.step(node, Input::Tick)
    }

    fn client_tick(&mut self, client: usize) {
        let t = self.now + self.rng.range(20 * MS, 120 * MS);
        self.schedule(t, Event::ClientTick { client });
        // Drop commands seen chosen.
        let chosen = &self.chosen_cmds;
        self.clients[client]
            .pending
            .retain(|seq, _| !chosen.contains(&(client as u64, *seq)));
        if !self.healed && self.clients[client].pending.len() < 64 && self.rng.range(0, 2) == 0 {
            let c = &mut self.clients[client];
            let seq = c.next_seq;
            c.next_seq += 1;
            let mut v = (client as u64).to_le_bytes().to_vec();
            v.extend_from_slice(&seq.to_le_bytes());
            c.pending.insert(seq, (v.into(), 0));
            self.submitted += 1;
        }
        let now = self.now;
        let retry_ns = 300 * MS;
        let mut values = Vec::new();
        for (v, last) in self.clients[client].pending.values_mut() {
            if *last == 0 || now.saturating_sub(*last) >= retry_ns {
                *last = now.max(1);
                values.push(v.clone());
            }
        }
        if values.is_empty() {
            return;
        }
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].replica.is_some())
            .collect();
        let to = match self.leader_guess {
            Some(l) if self.rng.range(0, 9) > 0 => l,
            _ if !live.is_empty() => live[self.rng.index(live.len())],
            _ => return,
        };
        let at = self.now + self.rng.range(100_000, 2 * MS);
        self.schedule(at, Event::Propose { to, values });
    }

    fn transmit(
        &mut self,
        from: usize,
        to: usize,
        msg: Message,
        after: PersistSeq,
    ) -> Result<(), String> {
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

    fn step(&mut self, node: usize, input: Input) -> Result<(), String> {
        let local = self.nodes[node].clock.local(self.now);
        let Some(r) = self.nodes[node].replica.as_mut() else {
            return Ok(());
        };
        let fx = r.step(Nanos(local), input);
        self.apply_effects(node, fx)
    }

    fn apply_effects(&mut self, node: usize, fx: Effects) -> Result<(), String> {
        let id = self.nodes[node].id;
        if let Some(req) = fx.persist {
            let delay = if self.rng.chance_ppm(20_000) {
                self.rng.range(MS, 50 * MS)
            } else {
                self.rng.range(20_000, self.mix.disk_delay_max_ns)
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
        for out in fx.send {
            let Some(to) = self.nodes.iter().position(|x| x.id == out.to) else {
                continue;
            };
            self.trace.u64(msg_tag(&out.msg) << 8 | to as u64);
            match &out.msg {
                Message::CatchUp { snapshot, .. } => {
                    self.catch_ups += 1;
                    if snapshot.as_ref().is_some_and(|c| !c.is_whole()) {
                        self.snapshot_chunks += 1;
                    }
                }
                Message::Promise {
                    from_slot,
                    part_start,
                    part_end,
                    ..
                } if part_end.is_some() || part_start != from_slot => self.promise_parts += 1,
                _ => {}
            }
            if out.after <= self.nodes[node].disk.durable.persisted_seq {
                self.transmit(node, to, out.msg, out.after)?;
            } else {
                self.nodes[node].outbox.push((out.after, to, out.msg));
            }
        }
        if let Some(s) = fx.install_snapshot {
            self.snapshot_installs += 1;
            let n = &mut self.nodes[node];
            if !n.app.restore(&s) {
                return Err(format!("node {} got an invalid snapshot", id.0));
            }
            n.app_next = s.up_to;
            let d = n.app.digest();
            self.checker.on_snapshot(id, s.up_to, d)?;
        }
        for e in fx.chosen {
            let n = &mut self.nodes[node];
            if e.slot != n.app_next {
                return Err(format!(
                    "node {} applied slot {} but expected {}",
                    id.0, e.slot.0, n.app_next.0
                ));
            }
            n.app.apply(e.slot, &e.batch);
            n.app_next = e.slot.next();
            let d = n.app.digest();
            self.checker.on_apply(id, e.slot, &e.batch, d)?;
            for v in &e.batch {
                if v.len() == 16 {
                    let mut a = [0u8; 8];
                    let mut b = [0u8; 8];
                    a.copy_from_slice(&v[..8]);
                    b.copy_from_slice(&v[8..]);
                    self.chosen_cmds
                        .insert((u64::from_le_bytes(a), u64::from_le_bytes(b)));
                }
            }
        }
        for ev in fx.leadership {
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
                    self.elections += 1;
                    self.leader_guess = Some(node);
                }
                LeadershipEvent::LostLeadership => {
                    self.checker.on_lease_lost(id, self.now);
                    if self.leader_guess == Some(node) {
                        self.leader_guess = None;
                    }
                }
                LeadershipEvent::LeaseUntil { until } => {
                    let end = self.nodes[node].clock.true_at(until.0);
                    self.checker.on_lease(id, self.now, end)?;
                }
            }
        }
        // Clients follow "not leader, try X" answers, as a real client would.
        for r in &fx.rejected {
            if let Some(h) = r.leader_hint {
                if let Some(i) = self.nodes.iter().position(|x| x.id == h) {
                    self.leader_guess = Some(i);
                }
            }
        }
        if let Some(w) = fx.wake_at {
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
        Ok(())
    }
}
