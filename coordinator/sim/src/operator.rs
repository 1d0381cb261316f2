//! The simulated operator who changes the membership while the faults run
//! ([`SimConfig::membership_changes`]): adds learners from a pool of spare
//! nodes, promotes them, removes voters (asking a leader to hand over
//! first), replaces a voter that has just crashed for good, grows 3 voters
//! to 5 and shrinks back. It asks a leader's shell for each step
//! (`Engine::admin_request`, the node's own routing and bookkeeping of an
//! administrator's change), and asks again what was refused. A spare joins
//! as a node started with `--join` does: the step it asks for next is the
//! one `node_membership::join_step` gives from the leader's members in
//! effect.

use std::collections::VecDeque;

use paxlock_core::node_membership::{join_step, JoinAs, JoinStep};
use paxlock_core::paxos::{Input, Membership, MembershipChange, NodeId};

use super::engine::{Engine, Event, SimConfig, Workload, MS, SEC};

/// Spare nodes a run with membership changes may add, one new id each.
pub(crate) const SPARE_NODES: usize = 4;

/// The spare nodes' ids for a cluster of `first_voters` (none unless
/// membership changes are on). A spare is configured as a joining node is:
/// the first voters, without itself, so it never campaigns before it is one.
pub(crate) fn spare_ids(cfg: &SimConfig, first_voters: usize) -> Vec<NodeId> {
    if !cfg.membership_changes {
        return Vec::new();
    }
    let first = first_voters as u64;
    (first + 1..=first + SPARE_NODES as u64)
        .map(NodeId)
        .collect()
}

/// One operation the operator plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// An administrator's change.
    Change(MembershipChange),
    /// A spare asking to join as a voter, one step at a time.
    Join(NodeId),
}

/// What the operator plans and has done.
#[derive(Debug, Default)]
pub(crate) struct Operator {
    /// The operations still to make, in order.
    plan: VecDeque<Step>,
    /// Ids never used yet.
    spares: VecDeque<NodeId>,
    /// Changes seen made in a leader's membership.
    pub(crate) changes_made: u64,
    /// Voters of the last membership a leader knew.
    pub(crate) last_voters: Vec<u64>,
}

impl Operator {
    /// An operator with these spare ids.
    pub(crate) fn new(spares: Vec<NodeId>) -> Operator {
        Operator {
            spares: spares.into(),
            ..Operator::default()
        }
    }
}

/// Whether `latest` already shows `step` made (or made moot: the node
/// was removed meanwhile).
fn step_made(latest: &Membership, step: Step) -> bool {
    let change = match step {
        Step::Change(change) => change,
        Step::Join(node) => MembershipChange::Promote(node),
    };
    let node = change.node();
    latest.retired.contains(&node)
        || match change {
            MembershipChange::AddLearner(..) => latest.contains(node),
            MembershipChange::Promote(_) => latest.voters.contains(&node),
            MembershipChange::Remove(_) => false,
        }
}

/// Schedules the operator's first look, if membership changes are on.
pub(crate) fn start<W: Workload>(sim: &mut Engine<W>) {
    if sim.cfg.membership_changes {
        let t = sim.rng.range(SEC, 2 * SEC);
        sim.schedule(t, Event::MembershipTick);
    }
}

/// The operator's turn: look at the leader's membership, drop the steps
/// it shows made, plan the next operation once the last is done, and ask
/// the leader for the next step (a leader to be removed first hands over).
/// Refused requests (another change in flight, a learner not caught up,
/// a leader that lost its leadership) are simply asked again next time.
pub(crate) fn tick<W: Workload>(sim: &mut Engine<W>) {
    if sim.healed {
        return;
    }
    let t = sim.now + sim.rng.range(200 * MS, SEC);
    sim.schedule(t, Event::MembershipTick);
    let leader = (0..sim.nodes.len()).find(|&i| {
        sim.nodes[i].paused_until.is_none()
            && sim.nodes[i].replica.as_ref().is_some_and(|r| r.is_leader())
    });
    let Some(leader) = leader else {
        return;
    };
    let Some(replica) = sim.nodes[leader].replica.as_ref() else {
        return;
    };
    let latest = replica.membership().latest().clone();
    let in_effect = replica.membership().at(replica.commit_index()).clone();
    let op = &mut sim.operator;
    op.last_voters = latest.voters.iter().map(|n| n.0).collect();
    while let Some(&step) = op.plan.front() {
        if !step_made(&latest, step) {
            break;
        }
        op.plan.pop_front();
        op.changes_made += 1;
        if sim.cfg.verbose {
            eprintln!("membership: {step:?} made; voters {:?}", latest.voters);
        }
    }
    if sim.operator.plan.is_empty() {
        plan_next_operation(sim, &latest);
    }
    let Some(&step) = sim.operator.plan.front() else {
        return;
    };
    let change = match step {
        Step::Change(change) => change,
        Step::Join(node) => match join_step(node, None, JoinAs::Voter, &in_effect) {
            Ok(JoinStep::Make(change)) => change,
            // Joined in effect: the latest membership shows it next tick.
            Ok(JoinStep::Joined) => return,
            Err(_) => {
                sim.operator.plan.pop_front();
                return;
            }
        },
    };
    // The leader's shell routes it (`Engine::admin_request`): a leader to
    // remove hands leadership over first.
    let at = sim.now + sim.rng.range(100_000, 2 * MS);
    let input = Input::ChangeMembership(change);
    sim.schedule(at, Event::Operator { to: leader, input });
}

/// Draws the next operation: replace a voter (half the time one that
/// crashes now, like a machine lost for good) with a spare, grow by one
/// voter up to five, or shrink by one down to three.
fn plan_next_operation<W: Workload>(sim: &mut Engine<W>, latest: &Membership) {
    let voters: Vec<NodeId> = latest.voters.iter().copied().collect();
    let victim = voters[sim.rng.index(voters.len())];
    let op = sim.rng.index(3);
    let grow = op == 1 || voters.len() < 3;
    let shrink = op == 2 && voters.len() > 3;
    let plan = &mut sim.operator.plan;
    if shrink {
        plan.push_back(Step::Change(MembershipChange::Remove(victim)));
        return;
    }
    let Some(new) = sim.operator.spares.pop_front() else {
        return;
    };
    // Spares of even id join at their own request, the others are added
    // by the administrator step by step (decided by id: no extra draw from
    // the random stream).
    if new.0 % 2 == 0 {
        plan.push_back(Step::Join(new));
    } else {
        plan.push_back(Step::Change(MembershipChange::AddLearner(new, None)));
        plan.push_back(Step::Change(MembershipChange::Promote(new)));
    }
    if grow && voters.len() < 5 {
        return;
    }
    plan.push_back(Step::Change(MembershipChange::Remove(victim)));
    // It comes back only when the run heals, as a removed node.
    if sim.rng.range(0, 1) == 0 {
        if let Some(i) = sim.nodes.iter().position(|n| n.id == victim) {
            sim.schedule(sim.now + 1, Event::Crash { node: i });
        }
    }
}
