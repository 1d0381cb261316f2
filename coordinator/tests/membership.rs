//! Membership changes on real `paxlock serve` processes: every first voter
//! of a running cluster is replaced, one by one, by a node that joins
//! (two ask to with `serve --join`, one is added by the administrator),
//! while clients hand a lock over and over and one
//! client holds an election's leadership; the refusals an administrator meets
//! (unreachable node, non-administrator, a removed id reused), a node
//! removed while down that is told so when back, and the removal of the
//! leader; and a node back under its id with an empty data
//! directory.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::ProcessCluster;
use common::{TestResult, PATIENCE};
use paxlock::proto::ErrorCode;
use paxlock::MemberChange;

fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Three first voters and three spares (nodes 4-6, configured to join);
/// the launcher's client is an administrator.
fn cluster_with_spares() -> Result<ProcessCluster, Box<dyn std::error::Error>> {
    ProcessCluster::start_spec(3, "", |spec| {
        spec.admins(&[paxlock_launcher::DEV_CLIENT]).spares(3)
    })
}

/// Hands lock `job` over and over until `stop`, counting in `count`;
/// returns every fencing token it was granted, in order.
async fn hand_over_until(
    client: paxlock::Client,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> Result<Vec<u64>, paxlock::Error> {
    let mut tokens = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let guard = client.lock("job").timeout(PATIENCE).acquire().await?;
        tokens.push(guard.fencing_token());
        guard.release().await?;
        count.fetch_add(1, Ordering::Relaxed);
    }
    let _ = client.close().await;
    Ok(tokens)
}

#[test]
fn every_first_voter_is_replaced_while_locks_and_a_leadership_carry_on() -> TestResult {
    let mut cluster = cluster_with_spares()?;
    let runtime = runtime()?;
    // Clients learn the members every second (10 s by default): the steps
    // here follow each other faster than an operator's would.
    let client = || {
        let mut config = paxlock::Config::from_file(cluster.client_config())?;
        config.session_ttl = Duration::from_secs(10);
        config.request_timeout = PATIENCE;
        config.member_sync_interval = Duration::from_secs(1);
        runtime
            .block_on(paxlock::Client::connect(config))
            .map_err(Box::<dyn std::error::Error>::from)
    };
    let (admin, worker, elector) = (client()?, client()?, client()?);
    let leadership = runtime.block_on(elector.election("svc").campaign("me"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let handing = runtime.spawn(hand_over_until(worker, stop.clone(), count.clone()));
    // Hand-overs go on after each replacement (the worker's config still
    // names only nodes 1-3).
    let goes_on = |handing: &tokio::task::JoinHandle<_>| {
        let from = count.load(Ordering::Relaxed);
        let deadline = std::time::Instant::now() + PATIENCE;
        while count.load(Ordering::Relaxed) < from + 5 {
            if std::time::Instant::now() > deadline || handing.is_finished() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };
    let stopped = |what: String, handing: tokio::task::JoinHandle<_>| -> TestResult {
        let ended: Result<Result<Result<Vec<u64>, paxlock::Error>, _>, _> = runtime
            .block_on(async { tokio::time::timeout(Duration::from_millis(100), handing).await });
        Err(format!("the lock hand-overs stopped {what}: {ended:?}").into())
    };
    if !goes_on(&handing) {
        return stopped("before any change".into(), handing);
    }
    // Nodes 4 and 6 ask to join (`serve --join`, naming members that may
    // be followers, or gone: node 1 is by the time node 6 starts); node 5
    // is added by the administrator, step by step.
    for (old, new) in [(1, 4), (2, 5), (3, 6)] {
        let addr = cluster.addr(new).parse()?;
        let mut steps = vec![
            MemberChange::AddLearner { id: new, addr },
            MemberChange::Promote(new),
        ];
        if new == 5 {
            cluster.spawn(new)?;
        } else {
            // Node 4 names node 1 (the leader or not) and node 2; node 6
            // names node 1, gone by then, and node 4.
            let other = if new == 4 { 2 } else { 4 };
            cluster.spawn_asking_to_join(new, &[cluster.addr(1), cluster.addr(other)])?;
            steps.clear();
            common::wait_until(
                || Ok(runtime.block_on(admin.members())?.voters().contains(&new)),
                || format!("node {new} is not a voter:\n{}", cluster.log_tail(new, 10)),
            )?;
            assert!(
                cluster.log(new).contains("joined the cluster as a voter"),
                "{}",
                cluster.log_tail(new, 5)
            );
        }
        steps.push(MemberChange::Remove(old));
        for step in steps {
            // As `paxlock members replace` does: a learner still catching
            // up with a busy leader is asked again.
            let members = runtime
                .block_on(admin.change_membership_until_made(step, PATIENCE, |_| {}))
                .map_err(|e| format!("{step:?}: {e}"))?;
            match step {
                MemberChange::AddLearner { id, .. } => assert!(members.learners().contains(&id)),
                MemberChange::Promote(id) => assert!(members.voters().contains(&id)),
                MemberChange::Remove(id) => {
                    assert!(!members.members.iter().any(|m| m.node_id == id))
                }
            }
        }
        // The removed node stops by itself and says why.
        let code = cluster.wait_exit(old, PATIENCE)?;
        assert!(
            matches!(code, Some(c) if c != 0),
            "node {old} exited with {code:?}: {}",
            cluster.log_tail(old, 5)
        );
        assert!(
            cluster.log(old).contains("was removed from the cluster"),
            "{}",
            cluster.log_tail(old, 5)
        );
        if !goes_on(&handing) {
            return stopped(
                format!("after node {old} was replaced by node {new}"),
                handing,
            );
        }
    }
    let members = runtime.block_on(admin.members())?;
    assert_eq!(members.voters(), vec![4, 5, 6], "{members:?}");
    assert!(members.learners().is_empty(), "{members:?}");
    stop.store(true, Ordering::Relaxed);
    let tokens = runtime.block_on(handing)??;
    assert!(tokens.len() >= 10, "only {} hand-overs", tokens.len());
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens went backwards: {tokens:?}"
    );
    // The leadership held throughout: never lost, still the leader.
    assert!(leadership.is_valid(), "the election's leadership was lost");
    let leader = runtime.block_on(elector.election("svc").leader())?;
    assert_eq!(
        leader.map(|l| l.session_id),
        Some(elector.session_id()),
        "another session leads the election"
    );
    Ok(())
}

#[test]
fn refusals_change_nothing_and_a_leader_is_removed_after_handing_over() -> TestResult {
    let mut cluster = cluster_with_spares()?;
    let runtime = runtime()?;
    let admin = runtime.block_on(cluster.client(Duration::from_secs(5)))?;
    let refused = |change, expected: &str| -> TestResult {
        let outcome = runtime.block_on(admin.change_membership(change, true));
        let Err(e) = outcome else {
            return Err(format!("{change:?} was made").into());
        };
        assert_eq!(e.code(), Some(ErrorCode::MembershipRefused), "{e}");
        assert!(e.to_string().contains(expected), "{e}");
        Ok(())
    };
    // Node 4 is not running: it cannot be reached, so it is not added.
    let addr4 = cluster.addr(4).parse()?;
    refused(
        MemberChange::AddLearner { id: 4, addr: addr4 },
        "cannot be reached",
    )?;
    // Promoting a node that is not a learner.
    refused(MemberChange::Promote(5), "only a learner")?;
    let before = runtime.block_on(admin.members())?;
    assert_eq!(before.voters(), vec![1, 2, 3]);
    assert!(before.learners().is_empty());
    // Node 4 joins, and leaves for good while it is down: its id is never
    // admitted again, and back, it is told so by the members it dials and
    // stops.
    cluster.spawn(4)?;
    let add4 = MemberChange::AddLearner { id: 4, addr: addr4 };
    runtime.block_on(admin.change_membership(add4, true))?;
    cluster.kill(4);
    runtime.block_on(admin.change_membership(MemberChange::Remove(4), true))?;
    refused(add4, "never reused")?;
    cluster.spawn(4)?;
    let code = cluster.wait_exit(4, PATIENCE)?;
    assert!(
        matches!(code, Some(c) if c != 0),
        "node 4 exited with {code:?}"
    );
    assert!(
        cluster
            .log(4)
            .contains("refused by the peer: node 4 was removed from the cluster"),
        "{}",
        cluster.log_tail(4, 5)
    );
    // The CLI says the same, and a client that is no administrator is refused.
    let other = "not-admin";
    cluster.issue_client(other)?;
    let plain = runtime.block_on(cluster.client_as(other, Duration::from_secs(5)))?;
    let denied = runtime.block_on(plain.change_membership(MemberChange::Remove(3), true));
    assert!(
        matches!(&denied, Err(e) if e.code() == Some(ErrorCode::PermissionDenied)),
        "{denied:?}"
    );
    let after = runtime.block_on(admin.members())?;
    assert_eq!(after.voters(), vec![1, 2, 3]);
    // Asked again, a change already made is answered with the members,
    // not refused (a retry whose first answer was lost).
    let removed_again = runtime.block_on(admin.change_membership(MemberChange::Remove(4), true))?;
    assert!(!removed_again.members.iter().any(|m| m.node_id == 4));
    // Removing the leader: it hands leadership over first, and the removal
    // is made by its successor.
    cluster.spawn(5)?;
    let addr5 = cluster.addr(5).parse()?;
    for step in [
        MemberChange::AddLearner { id: 5, addr: addr5 },
        MemberChange::Promote(5),
    ] {
        runtime.block_on(admin.change_membership(step, true))?;
    }
    let leader = runtime.block_on(cluster.leader())?;
    let members = runtime.block_on(admin.change_membership(MemberChange::Remove(leader), true))?;
    assert!(!members.voters().contains(&leader), "{members:?}");
    assert_eq!(members.voters().len(), 3, "{members:?}");
    let code = cluster.wait_exit(leader, PATIENCE)?;
    assert!(
        matches!(code, Some(c) if c != 0),
        "node {leader} exited with {code:?}"
    );
    let new_leader = runtime.block_on(cluster.leader())?;
    assert_ne!(new_leader, leader);
    // The CLI lists the same members, and refuses to promote a non-learner
    // saying why.
    let cli = |args: &[&str]| {
        std::process::Command::new(common::cluster::PAXLOCK)
            .arg("members")
            .args(args)
            .arg("--client-config")
            .arg(cluster.client_config())
            .output()
    };
    let listed = cli(&["list"])?;
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listed:?}");
    let mut voters: Vec<u64> = members.voters();
    voters.sort_unstable();
    let expected = format!(
        "voters {}; learners none",
        voters
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(text.contains(&expected), "{text}");
    let promoted = cli(&["promote", "6"])?;
    let text = String::from_utf8_lossy(&promoted.stderr);
    assert!(!promoted.status.success());
    assert!(text.contains("only a learner can be promoted"), "{text}");
    Ok(())
}

#[test]
fn a_node_back_under_its_id_with_an_empty_data_directory_is_refused_and_stops() -> TestResult {
    let mut cluster = ProcessCluster::start(3)?;
    let runtime = runtime()?;
    let client = runtime.block_on(cluster.client(Duration::from_secs(5)))?;
    let cycle = || {
        runtime.block_on(async {
            let guard = client.lock("kept").acquire().await?;
            let token = guard.fencing_token();
            guard.release().await?;
            Ok::<_, paxlock::Error>(token)
        })
    };
    let before = cycle()?;
    let leader = runtime.block_on(cluster.leader())?;
    let victim = (1..=3).find(|id| *id != leader).ok_or("no follower")?;
    // The machine loses its disk; the operator starts the node again as
    // it was configured, on an empty data directory.
    cluster.kill(victim);
    std::fs::remove_dir_all(cluster.data_dir(victim))?;
    cluster.spawn(victim)?;
    let code = cluster.wait_exit(victim, PATIENCE)?;
    assert!(
        matches!(code, Some(c) if c != 0),
        "node {victim} exited with {code:?}: {}",
        cluster.log_tail(victim, 5)
    );
    assert!(
        cluster.log(victim).contains("lost its data"),
        "{}",
        cluster.log_tail(victim, 5)
    );
    // A peer that refused it says why too.
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != victim).collect();
    assert!(
        survivors
            .iter()
            .any(|id| cluster.log(*id).contains("lost its data")),
        "no peer said why it refused node {victim}:\n{}",
        cluster.log_tail(leader, 5)
    );
    // The other two go on.
    let after = cycle()?;
    assert!(after > before);
    Ok(())
}
