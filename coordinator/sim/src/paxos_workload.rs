//! The Paxos workload: clients submit opaque 16-byte commands to the node
//! they believe leads, and every node applies what is chosen to an [`App`]
//! (a hash chain by default). Besides the engine's checks (one value per
//! slot, nothing durable lost, messages only after their persist, leader
//! leases), every command submitted must be chosen once the run heals.

use std::collections::{BTreeMap, BTreeSet};

use paxlock_core::paxos::{ChosenEntry, Input, LeadershipEvent, NodeId, Rejected, Snapshot, Value};

use super::app::{App, HashChainApp};
use super::clock::ClockModel;
use super::engine::{invalid_snapshot, Engine, SimConfig, SimNode, Violation, Workload, MS, SEC};
use super::operator;
use super::rng::SimRng;

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
    /// Membership changes seen in the leader's membership (add, promote,
    /// remove), with [`SimConfig::membership_changes`].
    pub membership_changes: u64,
    /// Administrators' changes a leader's shell answered in effect.
    pub changes_answered: u64,
    /// Removed nodes that stopped by the shipped rule.
    pub removed_stops: u64,
    /// How many voters the cluster started with (nodes 1 to this).
    pub first_voters: usize,
    /// Voters of the last membership a leader knew.
    pub final_voters: Vec<u64>,
}

/// Runs one seed with the default hash-chain application.
pub fn run_seed(seed: u64, cfg: &SimConfig) -> Result<SimReport, Violation> {
    Sim::<HashChainApp>::new(seed, cfg.clone()).run()
}

/// One deterministic run of the Paxos workload over application `A`.
pub struct Sim<A: App + Default>(Engine<Paxos<A>>);

/// The workload's state: its clients and what they saw chosen.
pub(crate) struct Paxos<A> {
    clients: Vec<Client>,
    chosen_cmds: BTreeSet<(u64, u64)>,
    submitted: u64,
    _app: std::marker::PhantomData<A>,
}

struct Client {
    next_seq: u64,
    /// Command id -> (value, last time sent).
    pending: BTreeMap<u64, (Value, u64)>,
}

/// The Paxos workload's own events.
#[derive(Debug, Clone)]
pub(crate) enum PaxosEvent {
    /// Client commands reach node `to`.
    Propose { to: usize, values: Vec<Value> },
    /// A client's next submission or retry.
    ClientTick { client: usize },
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
        let spares = operator::spare_ids(&cfg, n);
        let drift = cfg.max_drift_ppm as i64;
        // A spare is configured as a joining node is: the first members,
        // without itself, so it never campaigns before it is a voter.
        let nodes = members
            .iter()
            .chain(spares.iter())
            .map(|id| {
                let clock = ClockModel {
                    offset_ns: rng.range(0, 1_000 * SEC),
                    drift_ppm: rng.range(0, 2 * drift as u64) as i64 - drift,
                };
                SimNode::new(*id, cfg.replica_config(*id, &members), clock, A::default())
            })
            .collect();
        let clients = (0..cfg.clients)
            .map(|_| Client {
                next_seq: 0,
                pending: BTreeMap::new(),
            })
            .collect();
        let workload = Paxos {
            clients,
            chosen_cmds: BTreeSet::new(),
            submitted: 0,
            _app: std::marker::PhantomData,
        };
        Sim(Engine::new(seed, cfg, rng, nodes, workload))
    }

    /// Runs to the end; the first violation stops the run.
    pub fn run(self) -> Result<SimReport, Violation> {
        let mut sim = self.0;
        sim.run_events()?;
        if sim.cfg.verbose {
            for n in &sim.nodes {
                eprintln!(
                    "node {} at end: {:?}",
                    n.id.0,
                    n.replica.as_ref().map(|r| r.status())
                );
            }
        }
        let mut missing = 0usize;
        let mut example = None;
        for (ci, c) in sim.w.clients.iter().enumerate() {
            for seq in c.pending.keys() {
                if !sim.w.chosen_cmds.contains(&(ci as u64, *seq)) {
                    missing += 1;
                    example.get_or_insert((ci, *seq));
                }
            }
        }
        if missing > 0 {
            return Err(sim.fail(format!(
                "liveness: {missing} commands not chosen {} ms after healing (e.g. client {:?})",
                sim.cfg.heal_duration_ns / MS,
                example
            )));
        }
        Ok(SimReport {
            seed: sim.seed,
            trace_hash: sim.trace.0,
            nodes: sim.nodes.len(),
            events: sim.stats.events,
            chosen_slots: sim.checker.chosen_slots(),
            commands_submitted: sim.w.submitted,
            commands_chosen: sim.w.chosen_cmds.len() as u64,
            elections: sim.stats.elections,
            crashes: sim.stats.crashes,
            snapshot_installs: sim.stats.snapshot_installs,
            catch_ups: sim.stats.catch_ups,
            promise_parts: sim.stats.promise_parts,
            snapshot_chunks: sim.stats.snapshot_chunks,
            membership_changes: sim.operator.changes_made,
            changes_answered: sim.stats.changes_answered,
            removed_stops: sim.stats.removed_stops,
            first_voters: sim
                .nodes
                .iter()
                .filter(|n| n.cfg.members.contains(&n.id))
                .count(),
            final_voters: sim.operator.last_voters.clone(),
        })
    }
}

impl<A: App + Default> Workload for Paxos<A> {
    type Event = PaxosEvent;
    type Node = A;

    fn tag(ev: &PaxosEvent) -> (u64, u64) {
        match ev {
            PaxosEvent::Propose { to, .. } => (20, *to as u64),
            PaxosEvent::ClientTick { client } => (29, *client as u64),
        }
    }

    fn quiet(ev: &PaxosEvent) -> bool {
        matches!(ev, PaxosEvent::ClientTick { .. })
    }

    fn start_node(_sim: &mut Engine<Self>, _node: usize) {}

    fn start(sim: &mut Engine<Self>) {
        for client in 0..sim.w.clients.len() {
            let t = sim.rng.range(0, 100 * MS);
            sim.schedule_work(t, PaxosEvent::ClientTick { client });
        }
    }

    fn handle(sim: &mut Engine<Self>, ev: PaxosEvent) -> Result<(), String> {
        match ev {
            PaxosEvent::Propose { to, ref values } => {
                if sim.deferred_work(to, &ev) {
                    return Ok(());
                }
                sim.step(to, Input::Propose(values.clone()))
            }
            PaxosEvent::ClientTick { client } => {
                client_tick(sim, client);
                Ok(())
            }
        }
    }

    fn crashed(_sim: &mut Engine<Self>, _node: usize) {}

    fn reset(sim: &mut Engine<Self>, node: usize) -> Result<(), String> {
        sim.nodes[node].app = A::default();
        Ok(())
    }

    fn restore(
        sim: &mut Engine<Self>,
        node: usize,
        snapshot: &Snapshot,
        from_peer: bool,
    ) -> Result<u64, String> {
        let n = &mut sim.nodes[node];
        if !n.app.restore(snapshot) {
            return Err(invalid_snapshot(
                n.id,
                from_peer,
                "the application refused it",
            ));
        }
        Ok(n.app.digest())
    }

    fn snapshot(sim: &Engine<Self>, node: usize) -> Result<Vec<u8>, String> {
        Ok(sim.nodes[node].app.snapshot())
    }

    fn apply(sim: &mut Engine<Self>, node: usize, entry: &ChosenEntry) -> Result<u64, String> {
        let app = &mut sim.nodes[node].app;
        app.apply(entry.slot, &entry.batch);
        let digest = app.digest();
        for v in &entry.batch {
            if v.len() == 16 {
                let mut a = [0u8; 8];
                let mut b = [0u8; 8];
                a.copy_from_slice(&v[..8]);
                b.copy_from_slice(&v[8..]);
                sim.w
                    .chosen_cmds
                    .insert((u64::from_le_bytes(a), u64::from_le_bytes(b)));
            }
        }
        Ok(digest)
    }

    fn leadership(
        _sim: &mut Engine<Self>,
        _node: usize,
        _ev: &LeadershipEvent,
    ) -> Result<(), String> {
        Ok(())
    }

    fn rejected(sim: &mut Engine<Self>, node: usize, rejected: Rejected) -> Result<(), String> {
        // Clients follow "not leader, try X" answers, as a real client
        // would, and try another node after a "not leader, no idea who"
        // (a removed node, cut off from the members, often has no idea).
        let hinted = rejected
            .leader_hint
            .and_then(|h| sim.nodes.iter().position(|x| x.id == h))
            .filter(|i| *i != node);
        match hinted {
            Some(i) => sim.leader_guess = Some(i),
            None if sim.leader_guess == Some(node) => sim.leader_guess = None,
            None => {}
        }
        Ok(())
    }
}

/// A client's turn: drop what was chosen, maybe submit a new command, and
/// send what is due (new, or unanswered for 300 ms) to the likely leader.
fn client_tick<A: App + Default>(sim: &mut Engine<Paxos<A>>, client: usize) {
    let t = sim.now + sim.rng.range(20 * MS, 120 * MS);
    sim.schedule_work(t, PaxosEvent::ClientTick { client });
    let w = &mut sim.w;
    let chosen = &w.chosen_cmds;
    w.clients[client]
        .pending
        .retain(|seq, _| !chosen.contains(&(client as u64, *seq)));
    if !sim.healed && sim.w.clients[client].pending.len() < 64 && sim.rng.range(0, 2) == 0 {
        let c = &mut sim.w.clients[client];
        let seq = c.next_seq;
        c.next_seq += 1;
        let mut v = (client as u64).to_le_bytes().to_vec();
        v.extend_from_slice(&seq.to_le_bytes());
        c.pending.insert(seq, (v.into(), 0));
        sim.w.submitted += 1;
    }
    let now = sim.now;
    let retry_ns = 300 * MS;
    let mut values = Vec::new();
    for (v, last) in sim.w.clients[client].pending.values_mut() {
        if *last == 0 || now.saturating_sub(*last) >= retry_ns {
            *last = now.max(1);
            values.push(v.clone());
        }
    }
    if values.is_empty() {
        return;
    }
    let live: Vec<usize> = (0..sim.nodes.len())
        .filter(|i| sim.nodes[*i].replica.is_some())
        .collect();
    let to = match sim.leader_guess {
        Some(l) if sim.rng.range(0, 9) > 0 => l,
        _ if !live.is_empty() => live[sim.rng.index(live.len())],
        _ => return,
    };
    let at = sim.now + sim.rng.range(100_000, 2 * MS);
    sim.schedule_work(at, PaxosEvent::Propose { to, values });
}
