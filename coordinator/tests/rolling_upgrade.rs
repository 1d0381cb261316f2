//! Upgrades are a feature: a cluster of the previous release, upgraded one
//! node at a time to this one (same data directories, the others serving
//! meanwhile), keeps serving and keeps everything it acknowledged. Nodes of
//! the two releases talk peer protocol version 2 between them, and the log
//! records protocol 3 (sessions belong to identities) only once every node
//! runs this release; sessions opened before are then claimed by their
//! own client and refused to any other identity.
//!
//! Needs the previous release's binary: `.ci/run` builds it from the commit
//! in `.ci/previous-release` and names it in `PAXLOCK_PREVIOUS_RELEASE_BIN`.

mod common;

use std::time::{Duration, Instant};

use common::cluster::ProcessCluster;
use common::{TestResult, PATIENCE};
use paxlock_launcher::requires::{machine_has, previous_release_bin, Need};

/// Lock cycles on one lock until one succeeds; returns its token.
async fn one_cycle(client: &paxlock::Client) -> Result<u64, paxlock::Error> {
    let guard = client.lock("upgrade/cycle").acquire().await?;
    let token = guard.fencing_token();
    guard.release().await?;
    Ok(token)
}

/// Waits until node `id` has applied everything the leader had committed
/// when the wait began.
async fn caught_up(cluster: &ProcessCluster, id: u64) -> TestResult {
    let leader = cluster.leader().await?;
    let target = common::node_status(cluster, leader).await?.commit_index;
    let deadline = Instant::now() + PATIENCE;
    loop {
        if common::node_status(cluster, id)
            .await
            .is_ok_and(|s| s.applied_index >= target)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "node {id} did not catch up to {target}; its log ends:\n{}",
                cluster.log_tail(id, 15)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_cluster_upgraded_one_node_at_a_time_keeps_serving_and_loses_nothing() -> TestResult {
    if !machine_has("rolling_upgrade", &[Need::PreviousRelease]) {
        return Ok(());
    }
    let previous = previous_release_bin().ok_or("no previous release")?;
    // Snapshots every 20 slots: restarted nodes catch up across them.
    // Node 4, a spare, asks to join during the upgrade and after it.
    let mut cluster =
        ProcessCluster::prepare_spec(3, "snapshot_every_slots = 20", |spec| spec.spares(1))?;
    for id in 1..=3 {
        cluster.spawn_binary(id, &previous)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let client = runtime.block_on(cluster.client(Duration::from_secs(60)))?;
    let (held, leadership, mut tokens) = runtime.block_on(async {
        let held = client.lock("upgrade/held").acquire().await?;
        let leadership = client
            .election("upgrade/leader")
            .campaign(b"v0".to_vec())
            .await?;
        let mut tokens = vec![held.fencing_token()];
        for _ in 0..30 {
            tokens.push(one_cycle(&client).await?);
        }
        Ok::<_, paxlock::Error>((held, leadership, tokens))
    })?;
    // The leader first (it hands over to an old node), then the others.
    let first = runtime.block_on(cluster.leader())?;
    let order: Vec<u64> = std::iter::once(first)
        .chain((1..=3).filter(|id| *id != first))
        .collect();
    for (step, id) in order.iter().copied().enumerate() {
        cluster.signal(id, rustix::process::Signal::TERM);
        let code = cluster.wait_exit(id, PATIENCE)?;
        assert_eq!(
            code,
            Some(0),
            "node {id} of the previous release did not stop cleanly"
        );
        // The new release's config names its administrator, as an
        // operator adds the keys a release brings with it.
        let mut config = std::fs::OpenOptions::new()
            .append(true)
            .open(cluster.launched.config_path(id))?;
        std::io::Write::write_all(&mut config, b"\n[access]\nadmins = [\"dev-client\"]\n")?;
        cluster.spawn(id)?;
        runtime.block_on(async {
            for _ in 0..20 {
                tokens.push(one_cycle(&client).await?);
            }
            caught_up(&cluster, id).await?;
            // Held all along: the grant and the leadership are still ours.
            held.renew().await?;
            leadership
                .proclaim(format!("v{}", step + 1).into_bytes())
                .await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        })?;
        if step < 2 {
            assert!(
                cluster.log(id).contains("version=V2"),
                "node {id} of this release never talked to an older node:\n{}",
                cluster.log_tail(id, 15)
            );
            // An older node could not read protocol 3 commands.
            let status = runtime.block_on(common::node_status(&cluster, id))?;
            assert_eq!(status.cluster_protocol, 2, "raised with an older node up");
            // So a value with a lock, new in protocol 3, is refused for
            // now: by a node of this release (UNSUPPORTED) or of the
            // previous one (it knows no such operation), never granted
            // without its value.
            let valued =
                runtime.block_on(client.lock("upgrade/valued").value("host-1").try_acquire());
            use paxlock::proto::{self, ErrorCode};
            let code = valued.as_ref().err().and_then(paxlock::Error::code);
            assert!(
                matches!(
                    code,
                    Some(ErrorCode::Unsupported | ErrorCode::InvalidRequest)
                ),
                "{valued:?}"
            );
            // As are semaphores and read/write locks: never granted as a
            // plain lock by a node that does not know them.
            for shared in [
                runtime.block_on(client.semaphore("upgrade/pool", 2).try_acquire()),
                runtime.block_on(client.rwlock("upgrade/table").read().try_acquire()),
            ] {
                let code = shared.as_ref().err().and_then(paxlock::Error::code);
                assert!(
                    matches!(
                        code,
                        Some(ErrorCode::Unsupported | ErrorCode::InvalidRequest)
                    ),
                    "{shared:?}"
                );
            }
            // A lock watch on a node of the previous release, which knows
            // no such operation: its refusal reads as the watch's error.
            let old = order[2];
            let watch = proto::Request {
                op: Some(proto::request::Op::WatchLock(proto::WatchLock {
                    name: "upgrade/held".into(),
                    after_index: 0,
                })),
                ..Default::default()
            };
            let first: proto::LockWatchEvent = runtime.block_on(async {
                let raw = cluster.raw_client(old, "dev-client").await?;
                raw.first_frame(watch)
                    .await
                    .map_err(Box::<dyn std::error::Error>::from)
            })?;
            let code = first.error.as_ref().map(|e| e.code);
            assert_eq!(code, Some(ErrorCode::InvalidRequest.into()), "{first:?}");
            // No membership change while an older node is up: a leader of
            // this release refuses it (the older node would go on counting
            // votes by its configured peers), one of the previous release
            // knows no such operation.
            let removal = paxlock::MemberChange::Remove(old);
            let changed = runtime.block_on(client.change_membership(removal, true));
            let code = changed.as_ref().err().and_then(paxlock::Error::code);
            assert!(
                matches!(
                    code,
                    Some(ErrorCode::MembershipRefused | ErrorCode::InvalidRequest)
                ),
                "{changed:?}"
            );
            if code == Some(ErrorCode::MembershipRefused) {
                let message = changed.err().map(|e| e.to_string()).unwrap_or_default();
                assert!(message.contains("rolling upgrade"), "{message}");
            }
            let status = runtime.block_on(common::node_status(&cluster, id))?;
            assert_eq!(status.voters, vec![1, 2, 3], "{status:?}");
            // A node of this release asking an older node to add it is
            // told that node does not take join requests, and why.
            if step == 0 {
                cluster.spawn_asking_to_join(4, &[cluster.addr(old)])?;
                common::wait_until(
                    || Ok(cluster.log(4).contains("does not take join requests")),
                    || {
                        format!(
                            "node 4 never said node {old} takes no join requests:\n{}",
                            cluster.log_tail(4, 10)
                        )
                    },
                )?;
                cluster.kill(4);
            }
        }
    }
    runtime.block_on(async {
        cluster.wait_protocol(3).await?;
        // The first request since claims the session for its own identity.
        leadership.proclaim(b"v3".to_vec()).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    // Upgraded, the members add node 4 at its own request.
    cluster.spawn_asking_to_join(4, &[cluster.addr(order[2])])?;
    common::wait_until(
        || Ok(runtime.block_on(client.members())?.voters().contains(&4)),
        || {
            format!(
                "node 4 did not join after the upgrade:\n{}",
                cluster.log_tail(4, 10)
            )
        },
    )?;
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens went backwards across the upgrade: {tokens:?}"
    );
    runtime.block_on(async {
        let info = client
            .election("upgrade/leader")
            .leader()
            .await?
            .ok_or("the election lost its leader")?;
        assert_eq!(info.term, leadership.term());
        assert_eq!(info.value, b"v3".to_vec());
        assert_eq!(info.identity, "dev-client");
        assert!(held.is_valid());
        // Won before protocol 3, the leadership has no fencing token (its
        // proclaims keep that); a win now draws one above every grant
        // before it.
        assert_eq!(
            (leadership.fencing_token(), info.fencing_token),
            (None, None)
        );
        let fresh = client
            .election("upgrade/after")
            .campaign(b"a".to_vec())
            .await?;
        let token = fresh
            .fencing_token()
            .ok_or("a win at protocol 3 has no token")?;
        assert!(
            tokens.iter().all(|t| *t < token),
            "{token} among {tokens:?}"
        );
        fresh.resign().await?;
        // Values with locks work now; a grant made before shows no time.
        let valued = client
            .lock("upgrade/valued")
            .value("host-1")
            .try_acquire()
            .await?
            .ok_or("upgrade/valued is busy")?;
        assert_eq!(
            client.describe_lock("upgrade/valued").await?.value,
            b"host-1"
        );
        valued.release().await?;
        // So do semaphores and read/write locks.
        let permit = client
            .semaphore("upgrade/pool", 2)
            .try_acquire()
            .await?
            .ok_or("upgrade/pool is full")?;
        assert_eq!(permit.slot(), Some(0));
        permit.release().await?;
        let read = client
            .rwlock("upgrade/table")
            .read()
            .try_acquire()
            .await?
            .ok_or("upgrade/table is held")?;
        read.release().await?;
        let before = client.describe_lock("upgrade/held").await?;
        assert_eq!(
            before.grant.map(|g| g.held_for),
            Some(None),
            "a time made up"
        );

        // Another identity gets nothing of the session opened before the
        // upgrade: not its lock, not its leadership, not its life.
        cluster.issue_client("mallory")?;
        let mallory = cluster
            .raw_client(cluster.leader().await?, "mallory")
            .await?;
        use paxlock::proto::{self, request::Op, ErrorCode};
        let hostile = [
            Op::KeepAlive(proto::KeepAlive {}),
            Op::Release(proto::Release {
                name: "upgrade/held".into(),
                fencing_token: held.fencing_token(),
            }),
            Op::Resign(proto::Resign {
                election: "upgrade/leader".into(),
            }),
        ];
        for (i, op) in hostile.into_iter().enumerate() {
            let answer = mallory
                .ask_op(info.session_id, 1_000 + i as u64, op)
                .await?;
            let code = answer.error.as_ref().map(|e| e.code);
            assert_eq!(code, Some(ErrorCode::PermissionDenied.into()), "{answer:?}");
        }
        held.renew().await?;

        // Access rules, new in this release, work once every node runs it.
        let rules = paxlock::AccessRules {
            rules: vec![paxlock::AccessRule {
                identities: vec!["dev-client".into()],
                permissions: vec![paxlock::Permission::Lock, paxlock::Permission::Campaign],
                prefixes: vec!["upgrade/".into()],
            }],
            ..Default::default()
        };
        client.set_access_rules(&rules, None).await?;
        let open = Op::OpenSession(proto::OpenSession {
            ttl_ms: 30_000,
            open_key: 0,
        });
        let session = match mallory.ask_op(0, 2_000, open).await?.result {
            Some(proto::response::Result::SessionOpened(s)) => s.session_id,
            other => return Err(format!("no session for mallory: {other:?}").into()),
        };
        let acquire = Op::Acquire(proto::Acquire {
            name: "upgrade/other".into(),
            wait: false,
            timeout_ms: 0,
            ..Default::default()
        });
        let answer = mallory.ask_op(session, 1, acquire).await?;
        let code = answer.error.as_ref().map(|e| e.code);
        assert_eq!(code, Some(ErrorCode::PermissionDenied.into()), "{answer:?}");
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
