//! Canaries for the lock simulation: each switches off one rule and the
//! simulator must catch it within a bounded number of seeds. Run with
//! `cargo test --features canary --test sim_lock_canaries`.
#![cfg(feature = "canary")]

use paxlock_sim::LockCanary;
use paxlock_sim::{run_lock_seed, LockSimConfig};

/// Runs seeds `0..max_seeds` and returns the first violation's repro line.
fn first_violation(cfg: &LockSimConfig, max_seeds: u64) -> Option<(u64, String)> {
    (0..max_seeds).find_map(|seed| {
        run_lock_seed(seed, cfg)
            .err()
            .map(|v| (seed, v.repro_line("sim_lock_canaries")))
    })
}

/// Fails unless a seed below `max_seeds` of `cfg` shows a violation;
/// prints the first one's repro line.
fn assert_caught(name: &str, cfg: &LockSimConfig, max_seeds: u64) {
    match first_violation(cfg, max_seeds) {
        Some((seed, line)) => eprintln!("canary {name}: caught at seed {seed}: {line}"),
        None => panic!("canary {name}: not caught in {max_seeds} seeds"),
    }
}

#[test]
fn a_leader_that_does_not_restart_deadlines_at_takeover_is_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::NoDeadlineRestart,
        ..LockSimConfig::default()
    };
    assert_caught("no deadline restart", &cfg, 150);
}

#[test]
fn a_client_lease_not_shortened_by_the_drift_bound_is_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::UnshortenedLease,
        opposite_drift: Some(true),
        lock_delay_ms: Some(0),
        ..LockSimConfig::default()
    };
    assert_caught("unshortened lease", &cfg, 40);
}

#[test]
fn granting_a_waiter_out_of_fifo_order_is_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::GrantOutOfOrder,
        ..LockSimConfig::default()
    };
    assert_caught("out-of-order grant", &cfg, 40);
}

/// The shipped waiter rule of `paxlock-core`: a node that installs a
/// snapshot answers the waiting requests whose grants it holds.
#[test]
fn waiters_left_asleep_after_a_snapshot_install_are_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::NoSettleAfterRestore,
        ..LockSimConfig::default()
    };
    assert_caught("waiters asleep after restore", &cfg, 400);
}

/// The shipped lease rule of keepalives: a leader cut off from its peers
/// but not from its clients answers their keepalives only under its
/// lease. The world that shows it: faults that isolate one node (clients
/// still reach it) and heal, no lock-delay, short TTLs, one lock that six
/// clients want and hold a while, with only keepalives meanwhile.
#[test]
fn keepalives_answered_without_the_leader_lease_are_caught() {
    let mut cfg = LockSimConfig {
        canary: LockCanary::NoLeaseCheck,
        clients: 6,
        locks: 1,
        lock_delay_ms: Some(0),
        ttl_ms: Some(1_500),
        action_percent: 3,
        ..LockSimConfig::default()
    };
    cfg.sim.fault_weights = Some([0, 0, 0, 10, 3, 0, 0, 0]);
    assert_caught("keepalive without lease", &cfg, 1_500);
}

/// The state machine's exactly-once rule: a copy of a request (a resend,
/// or one the network duplicated) gets the recorded answer and changes
/// nothing.
#[test]
fn requests_applied_again_when_a_copy_arrives_are_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::ReapplyDuplicates,
        ..LockSimConfig::default()
    };
    assert_caught("reapplied duplicates", &cfg, 100);
}

/// Stale-token refusal: a release presenting the token of an earlier
/// grant (a program's second task releasing again, as a new request)
/// must not end the session's later grant of the same lock.
#[test]
fn a_release_with_a_stale_token_taken_is_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::AcceptStaleTokens,
        ..LockSimConfig::default()
    };
    assert_caught("stale tokens accepted", &cfg, 100);
}

/// The shipped rule that a keepalive never revives a session whose time
/// ran out (its expiry may be in the log already): an answered keepalive
/// promises the session a safe TTL from its send time, which an expiry
/// already on its way breaks. Clients following the client crate's lease
/// rule ignore such a late answer (their lease lapsed first), so what
/// catches it is the promise itself, which the protocol lets any client
/// rely on: the world delays some messages by up to 1.5 s (a QUIC stream
/// retransmitting under loss), so keepalives arrive after the deadline.
#[test]
fn a_keepalive_reviving_an_expiring_session_is_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::ReviveExpiring,
        slow_client_links: true,
        ttl_ms: Some(1_500),
        ..LockSimConfig::default()
    };
    assert_caught("keepalive revives an expiring session", &cfg, 2_000);
}

/// The client's acknowledgement around long waits (the fix of 04405ef):
/// with the rule before it, a campaign waiting in the background holds
/// its session's floor, the session's other answers pile up, and the
/// session refuses its requests once the limit is reached.
#[test]
fn long_waits_holding_the_acknowledged_floor_are_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::LongWaitsHoldTheFloor,
        background_campaigns: true,
        ..LockSimConfig::default()
    };
    assert_caught("long waits hold the floor", &cfg, 200);
}

/// Only a cancel that took effect drops waiters: a stale withdrawal of an
/// earlier wait (a delayed copy of it, applied after the session queued
/// again for the same lock) must leave the later acquire's waiter, or that
/// request goes unanswered when its grant comes.
#[test]
fn a_refused_cancel_dropping_a_later_acquires_waiter_is_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::DropOnRefusedCancel,
        ..LockSimConfig::default()
    };
    assert_caught("refused cancel drops waiters", &cfg, 2_000);
}

/// The state bound is not in snapshots: a replica that restores one with
/// the default bound instead of its own refuses other commands than one
/// that did not restore, and the run's replay check catches it.
#[test]
fn replicas_that_restore_the_state_bound_from_a_snapshot_are_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::SnapshotStateBound,
        state_bound: Some(8 * 1024),
        ..LockSimConfig::default()
    };
    assert_caught("snapshot state bound", &cfg, 100);
}

/// A revoked session's client may have had a keepalive answered just
/// before the revocation: handing its locks on after the lock-delay only
/// (not its TTL) grants them while it still believes it holds them.
#[test]
fn locks_of_a_revoked_session_passed_on_within_its_lease_are_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::RevokeWithoutDelay,
        revocations: true,
        ..LockSimConfig::default()
    };
    assert_caught("revoke without delay", &cfg, 100);
}

/// A force-released holder's session lives on, so its client keeps its
/// lease: unless keepalive answers name the taken grant, it believes it
/// holds the lock when the next holder is granted it.
#[test]
fn force_released_grants_that_keepalives_do_not_name_are_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::UntoldForceRelease,
        force_releases: true,
        ..LockSimConfig::default()
    };
    assert_caught("untold force-release", &cfg, 100);
}

/// A take's lock-delay counts from its command's stamp: a leader that
/// answers the holder's keepalives while the take is proposed but not
/// applied (its commit stalled) extends the holder's lease past it.
#[test]
fn keepalives_answered_while_a_take_is_in_flight_are_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::NoTakeGate,
        force_releases: true,
        ..LockSimConfig::default()
    };
    assert_caught("no take gate", &cfg, 1_000);
}

/// A force-released grant must wait out its holder's TTL: the holder's
/// last keepalive may have been answered just before (the revocation
/// delay rule, which force-releases share).
#[test]
fn locks_force_released_within_the_holders_lease_are_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::RevokeWithoutDelay,
        force_releases: true,
        ..LockSimConfig::default()
    };
    assert_caught("force-release without delay", &cfg, 100);
}

/// A node's lock history that trims its oldest changes must say it is no
/// longer complete before them: one that does not hands a watch resumed
/// from before the trim the later changes only, a silent gap.
#[test]
fn a_lock_history_that_trims_silently_is_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::SilentLockHistoryTrim,
        ..LockSimConfig::default()
    };
    assert_caught("silent lock history trim", &cfg, 100);
}

/// A promoted candidate must draw a new token: one that inherits its
/// predecessor's leaves the deposed leader's writes unfenced, and the
/// run-wide check that tokens rise across grants and leaderships (and
/// that a campaign is told the token the log gave its win) catches it.
#[test]
fn a_promotion_that_inherits_the_deposed_leaders_token_is_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::InheritLeaderToken,
        ..LockSimConfig::default()
    };
    assert_caught("inherited leader token", &cfg, 100);
}

/// The shipped access check of `paxlock-core`: nodes that ignore the
/// rules grant `lock0` to a client the access world's rules deny it.
#[test]
fn nodes_that_ignore_the_access_rules_are_caught() {
    let cfg = LockSimConfig {
        canary: LockCanary::OpenAccess,
        access_rules: true,
        locks: 2,
        ..LockSimConfig::default()
    };
    assert_caught("open access", &cfg, 40);
}

/// The shared-lock world's canaries: a semaphore handing out a permit too
/// many, a reader admitted beside a writer, and readers passing a queued
/// writer (which readers arriving one after another would starve).
fn shared_world(canary: LockCanary) -> LockSimConfig {
    LockSimConfig {
        canary,
        shared_locks: true,
        clients: 6,
        ..LockSimConfig::default()
    }
}

#[test]
fn a_semaphore_granting_a_permit_too_many_is_caught() {
    assert_caught("extra permit", &shared_world(LockCanary::ExtraPermit), 100);
}

#[test]
fn a_reader_admitted_beside_a_writer_is_caught() {
    assert_caught(
        "reader beside writer",
        &shared_world(LockCanary::ReadBesideWriter),
        100,
    );
}

#[test]
fn readers_passing_a_queued_writer_are_caught() {
    assert_caught(
        "readers barge",
        &shared_world(LockCanary::ReadersBarge),
        100,
    );
}
