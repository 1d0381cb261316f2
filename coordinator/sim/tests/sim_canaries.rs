//! The simulator's checks must be able to fail: with one safety rule
//! switched off, a violation must appear within a bounded number of seeds.
#![cfg(feature = "canary")]

use paxlock_core::paxos::Canary;
use paxlock_sim::{run_seed, SimConfig};

/// How many seeds a canary may take before we call the checker blind.
const MAX_SEEDS: u64 = 1500;

fn assert_caught(canary: Canary, cfg: SimConfig) {
    let cfg = SimConfig { canary, ..cfg };
    let found = (0..MAX_SEEDS).find_map(|seed| run_seed(seed, &cfg).err().map(|v| (seed, v.what)));
    match found {
        Some((seed, what)) => eprintln!("{canary:?}: caught at seed {seed}: {what}"),
        None => panic!("{canary:?}: no violation in {MAX_SEEDS} seeds; the checks are blind"),
    }
}

#[test]
fn replying_before_persisting_is_caught() {
    assert_caught(Canary::NoPersistBeforeReply, SimConfig::default());
}

#[test]
fn accepting_below_the_promise_is_caught() {
    assert_caught(Canary::NoBallotCheckInAccept, SimConfig::default());
}

#[test]
fn promising_during_a_lease_is_caught() {
    // The pre-vote already keeps rivals away from a leader that is heard, so
    // the lease wait matters when a *stale* candidate (paused mid-campaign)
    // resumes and retransmits its Prepare to acceptors that meanwhile follow
    // a new leader. Frequent short pauses make that common.
    assert_caught(
        Canary::NoLeaseWaitBeforePromise,
        paxlock_sim::SimConfig::pause_heavy(),
    );
}

/// Rule "every message fits": with batches bounded only by their command
/// count, an Accept outgrows the byte bound, and the simulator (which
/// encodes every message with the real codec) says so.
#[test]
fn batches_unbounded_in_bytes_are_caught() {
    assert_caught(
        Canary::NoBatchByteBound,
        SimConfig {
            small_messages: true,
            ..SimConfig::default()
        },
    );
}

/// Rule "fsync before acknowledging", where the shipped consensus loop
/// keeps it (`consensus_loop`): with the persist barrier off, messages
/// leave before what they acknowledge is durable, and the simulator (which
/// checks every message against the sender's durable state) says so.
#[test]
fn sending_before_the_persist_barrier_is_caught() {
    let cfg = SimConfig {
        loop_canary: paxlock_core::consensus_loop::LoopCanary::NoPersistBarrier,
        ..SimConfig::default()
    };
    let found = (0..MAX_SEEDS).find_map(|seed| run_seed(seed, &cfg).err().map(|v| (seed, v.what)));
    match found {
        Some((seed, what)) => eprintln!("NoPersistBarrier: caught at seed {seed}: {what}"),
        None => panic!("NoPersistBarrier: no violation in {MAX_SEEDS} seeds; the checks are blind"),
    }
}

/// Rule "the votes of the slot's voters": a leader that counts its
/// learners' accepts chooses values no majority of voters accepted, and
/// the checker (which reads who decides each slot from the log) says so.
#[test]
fn learners_voting_is_caught() {
    assert_caught(
        Canary::LearnersVote,
        SimConfig {
            membership_changes: true,
            ..SimConfig::default()
        },
    );
}

/// Rule "lead only within alpha" (a membership decides only the slots
/// from alpha after its change): a leader that counts the votes of later
/// slots by the membership its change brings, before the change is chosen
/// and in effect, is caught.
#[test]
fn using_a_membership_before_its_change_is_in_effect_is_caught() {
    assert_caught(
        Canary::MembershipBeforeChosen,
        SimConfig {
            membership_changes: true,
            ..SimConfig::default()
        },
    );
}

/// Rule "a quorum of every membership ahead": a candidate that needs a
/// quorum of the membership at its commit index only (not of a change in
/// effect a few slots later, nor of those its promises report) wins with
/// members that are about to leave or have left, and proposes slots the
/// later membership decides: two values are chosen for one slot. Its
/// voters are removed nodes that never learned their removal (down or cut
/// off when it was chosen), so here every removed node lingers
/// (`removed_nodes_linger`): with the shipped rule, those that learn it
/// stop, and the default mix catches the canary at fewer seeds (27 and 966
/// of the first 1,500, against 27 and 341).
#[test]
fn a_candidate_ignoring_later_memberships_is_caught() {
    assert_caught(
        Canary::NoMembershipChainInPhaseOne,
        SimConfig {
            membership_changes: true,
            removed_nodes_linger: true,
            ..SimConfig::default()
        },
    );
}
