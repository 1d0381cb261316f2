//! Inspection on real `paxlock serve` processes: who holds a lock and who
//! waits (`describe`), locks by prefix (`locks`), sessions with what they
//! hold (`sessions`), whether a fencing token is still current
//! (`check_token`); through the client crate and the CLI (tables and
//! `--json`), each showing only what the caller may see, and bad input
//! refused with a clear error.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::{CliProcess, ProcessCluster, PAXLOCK};
use common::{TestResult, PATIENCE};
use paxlock::proto::ErrorCode;

const TTL: Duration = Duration::from_secs(30);

/// Runs `paxlock ARGS --client-config ...` (as the cluster's administrator
/// unless `identity` names another client's certificate) and returns its
/// standard output, or its standard error as the failure.
fn cli(cluster: &ProcessCluster, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let out = Command::new(PAXLOCK)
        .args(args)
        .arg("--client-config")
        .arg(cluster.client_config())
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn code<T: std::fmt::Debug>(result: &Result<T, paxlock::Error>) -> Option<ErrorCode> {
    result.as_ref().err().and_then(paxlock::Error::code)
}

#[test]
fn holders_waiters_sessions_and_tokens_are_shown_to_who_may_see_them() -> TestResult {
    let cluster = ProcessCluster::start_administered(3)?;
    cluster.issue_client("alice")?;
    cluster.issue_client("bob")?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let alice = cluster.client_as("alice", TTL).await?;
        let bob = cluster.client_as("bob", TTL).await?;
        let admin = cluster.client(TTL).await?;

        let held = alice
            .lock("jobs/a")
            .value("host-a pid 7")
            .try_acquire()
            .await?
            .ok_or("busy")?;
        let other = alice.lock("jobs/b").try_acquire().await?.ok_or("busy")?;
        let waiting = tokio::spawn({
            let bob = bob.clone();
            async move { bob.lock("jobs/a").value("host-b").acquire().await }
        });
        // Bob's acquire is queued once describe shows it.
        let deadline = std::time::Instant::now() + PATIENCE;
        let info = loop {
            let info = admin.describe_lock("jobs/a").await?;
            if !info.waiters.is_empty() {
                break info;
            }
            assert!(std::time::Instant::now() < deadline, "{info:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let grant = info.grant.as_ref().ok_or("not held")?;
        assert_eq!(grant.holder.identity, "alice");
        assert_eq!(grant.fencing_token, held.fencing_token());
        assert!(grant.held_for.is_some(), "{info:?}");
        assert_eq!(info.value, b"host-a pid 7");
        assert_eq!(info.waiters.len(), 1);
        assert_eq!(info.waiters[0].session.identity, "bob");
        assert!(info.waiters[0].waiting_for.is_some(), "{info:?}");
        assert_eq!(info.lock_delay_left, None);

        let listed = bob.list_locks("jobs/").await?;
        let names: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["jobs/a", "jobs/b"]);
        assert_eq!(listed[0].waiters, 1);
        assert!(admin.list_locks("nothing/").await?.is_empty());

        // Each sees its own sessions; the administrator sees them all.
        let bobs = bob.list_sessions().await?;
        assert!(bobs.iter().all(|s| s.session.identity == "bob"), "{bobs:?}");
        assert!(bobs.iter().any(|s| s.waiting == ["jobs/a"]), "{bobs:?}");
        let all = admin.list_sessions().await?;
        let alices: Vec<_> = all
            .iter()
            .filter(|s| s.session.identity == "alice")
            .collect();
        assert!(
            alices.iter().any(|s| s.held == ["jobs/a", "jobs/b"]),
            "{all:?}"
        );
        assert!(all.iter().all(|s| s.expires_in <= s.ttl), "{all:?}");

        // The token is current until the lock passes on.
        let token = held.fencing_token();
        assert!(bob.check_token("jobs/a", token).await?.current);
        held.release().await?;
        let handed = tokio::time::timeout(PATIENCE, waiting).await???;
        let check = alice.check_token("jobs/a", token).await?;
        assert!(!check.current);
        assert_eq!(check.current_token, Some(handed.fencing_token()));
        // The waiter's value came with it into its grant.
        assert_eq!(admin.describe_lock("jobs/a").await?.value, b"host-b");
        // Values are bounded like an election's, and a request too large
        // for the node fails at once rather than being sent again forever.
        let huge = alice
            .lock("jobs/huge")
            .value(vec![b'x'; 70 * 1024])
            .try_acquire();
        let huge = tokio::time::timeout(PATIENCE, huge).await?;
        assert_eq!(code(&huge), Some(ErrorCode::ValueTooLarge), "{huge:?}");
        let over = alice
            .lock("jobs/over")
            .value(vec![b'x'; 64 * 1024 + 1])
            .try_acquire();
        let over = tokio::time::timeout(PATIENCE, over).await?;
        assert_eq!(code(&over), Some(ErrorCode::ValueTooLarge), "{over:?}");
        // The client crate's fence for resources that keep no state.
        let fence = paxlock::fencing::CheckedFence::new(alice.clone(), "jobs/a");
        assert!(fence.admit(handed.fencing_token()).await.is_ok());
        let stale = fence.admit(token).await;
        assert!(
            matches!(stale, Err(paxlock::fencing::FenceError::Stale { current, .. }) if current == Some(handed.fencing_token())),
            "{stale:?}"
        );

        // Bad input: a clear error, not a panic or an empty answer.
        let long = "n".repeat(600);
        let refused = admin.describe_lock(&long).await;
        assert_eq!(code(&refused), Some(ErrorCode::InvalidName), "{refused:?}");
        let refused = admin.list_locks(&long).await;
        assert_eq!(code(&refused), Some(ErrorCode::InvalidName), "{refused:?}");

        // Rules: bob may not read jobs/b; the list leaves it out, and a
        // describe is refused naming the permission.
        let rules = paxlock::AccessRules {
            rules: vec![
                paxlock::AccessRule {
                    identities: vec!["*".into()],
                    permissions: vec![paxlock::Permission::Lock, paxlock::Permission::Read],
                    prefixes: vec!["jobs/a".into()],
                },
                paxlock::AccessRule {
                    identities: vec!["alice".into()],
                    permissions: vec![paxlock::Permission::Lock, paxlock::Permission::Read],
                    prefixes: vec!["jobs/".into()],
                },
            ],
            ..Default::default()
        };
        admin.set_access_rules(&rules, None).await?;
        let seen = bob.list_locks("jobs/").await?;
        assert_eq!(
            seen.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["jobs/a"]
        );
        let hidden = bob.describe_lock("jobs/b").await;
        assert_eq!(
            code(&hidden),
            Some(ErrorCode::PermissionDenied),
            "{hidden:?}"
        );
        assert_eq!(alice.list_locks("jobs/").await?.len(), 2);

        // The CLI shows the same, for people and for scripts.
        let table = cli(&cluster, &["describe", "jobs/b"])?;
        assert!(
            table.contains("held by alice") && table.contains(&other.fencing_token().to_string()),
            "{table}"
        );
        let json = cli(&cluster, &["locks", "jobs/", "--json"])?;
        let parsed: serde_json::Value = serde_json::from_str(&json)?;
        let first = &parsed[0];
        assert_eq!(first["name"], "jobs/a", "{json}");
        assert_eq!(first["grant"]["holder"]["identity"], "bob", "{json}");
        assert!(first["grant"]["held_for_ms"].is_u64(), "{json}");
        let described = cli(&cluster, &["describe", "jobs/a", "--json"])?;
        let parsed: serde_json::Value = serde_json::from_str(&described)?;
        assert_eq!(parsed["value"], "host-b", "{described}");
        let table = cli(&cluster, &["describe", "jobs/a"])?;
        assert!(
            table.contains("value: host-b") && table.contains("held for"),
            "{table}"
        );
        let sessions = cli(&cluster, &["sessions"])?;
        assert!(
            sessions.contains("alice") && sessions.contains("holds: jobs/b"),
            "{sessions}"
        );
        let sessions_json: serde_json::Value =
            serde_json::from_str(&cli(&cluster, &["sessions", "--json"])?)?;
        assert!(
            sessions_json.as_array().is_some_and(|a| a.len() >= 3),
            "{sessions_json}"
        );
        let missing = cli(&cluster, &["describe", &long]);
        let message = missing.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("InvalidName") || message.contains("name"),
            "{message}"
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

/// An administrator ends a stuck session: a non-administrator may not;
/// the holder's guard reports the loss, and the waiter is granted only
/// after it, with a higher token.
#[test]
fn an_administrator_revokes_a_session_and_its_lock_passes_on_safely() -> TestResult {
    let cluster = ProcessCluster::start_administered(3)?;
    cluster.issue_client("alice")?;
    cluster.issue_client("bob")?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let alice = cluster.client_as("alice", Duration::from_secs(3)).await?;
        let bob = cluster.client_as("bob", TTL).await?;
        let held = alice.lock("stuck/x").try_acquire().await?.ok_or("busy")?;
        let waiting = tokio::spawn({
            let bob = bob.clone();
            async move {
                let granted = bob.lock("stuck/x").acquire().await;
                (granted, std::time::Instant::now())
            }
        });

        let refused = bob.revoke_session(alice.session_id()).await;
        assert_eq!(
            code(&refused),
            Some(ErrorCode::PermissionDenied),
            "{refused:?}"
        );
        let unknown = cluster.client(TTL).await?.revoke_session(987_654).await;
        assert_eq!(
            code(&unknown),
            Some(ErrorCode::SessionUnknown),
            "{unknown:?}"
        );

        let printed = cli(&cluster, &["revoke", &alice.session_id().to_string()])?;
        assert!(printed.contains("revoked"), "{printed}");
        tokio::time::timeout(PATIENCE, held.lost()).await?;
        let lost_at = std::time::Instant::now();
        let (granted, granted_at) = tokio::time::timeout(PATIENCE, waiting).await??;
        let granted = granted?;
        // Never two holders: alice's guard reported the loss before bob
        // was granted (the lock waited out alice's TTL; her client learns
        // of the revocation at its next keepalive), and bob's token fences
        // alice out.
        assert!(lost_at <= granted_at, "bob was granted while alice held");
        assert!(granted.fencing_token() > held.fencing_token());
        let info = bob.describe_lock("stuck/x").await?;
        assert_eq!(
            info.grant.map(|g| g.holder.identity).as_deref(),
            Some("bob")
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

/// An administrator frees one stuck lock: a non-administrator may not, a
/// free lock is `NOT_HELD`, and `paxlock release` without `--force` changes
/// nothing. The holder's session lives on (its other lock stays valid), its
/// guard for the taken grant reports the loss at its next keepalive, and
/// the waiter is granted only after that, with a higher token. A holder
/// run by `paxlock lock -- CMD` has its command stopped (exit 4).
#[test]
fn an_administrator_force_releases_a_lock_and_its_holder_stops_using_it() -> TestResult {
    let cluster = ProcessCluster::start_administered(3)?;
    cluster.issue_client("alice")?;
    cluster.issue_client("bob")?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let alice = cluster.client_as("alice", Duration::from_secs(3)).await?;
        let bob = cluster.client_as("bob", TTL).await?;
        let held = alice.lock("stuck/y").try_acquire().await?.ok_or("busy")?;
        let kept = alice
            .lock("stuck/kept")
            .try_acquire()
            .await?
            .ok_or("busy")?;
        let waiting = tokio::spawn({
            let bob = bob.clone();
            async move {
                let granted = bob.lock("stuck/y").acquire().await;
                (granted, std::time::Instant::now())
            }
        });

        let refused = bob.force_release("stuck/y").await;
        assert_eq!(
            code(&refused),
            Some(ErrorCode::PermissionDenied),
            "{refused:?}"
        );
        let admin = cluster.client(TTL).await?;
        let free = admin.force_release("stuck/nobody").await;
        assert_eq!(code(&free), Some(ErrorCode::NotHeld), "{free:?}");
        let bad = admin.force_release("").await;
        assert_eq!(code(&bad), Some(ErrorCode::InvalidName), "{bad:?}");
        let unforced = cli(&cluster, &["release", "stuck/y"]);
        let message = unforced.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("--force"), "{message}");
        let info = admin.describe_lock("stuck/y").await?;
        assert_eq!(
            info.grant.map(|g| g.fencing_token),
            Some(held.fencing_token()),
            "changed by a refused release"
        );

        // Naming a grant that is not (or no longer) current takes nothing.
        let earlier = (held.fencing_token() - 1).to_string();
        let stale = cli(
            &cluster,
            &["release", "--force", "stuck/y", "--token", &earlier],
        );
        let message = stale.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("StaleToken"), "{message}");
        let current = held.fencing_token().to_string();
        let printed = cli(
            &cluster,
            &["release", "--force", "stuck/y", "--token", &current],
        )?;
        let whose = format!(
            "force-released from alice (session {}, fencing token {})",
            alice.session_id(),
            held.fencing_token()
        );
        assert!(printed.contains(&whose), "{printed}");
        tokio::time::timeout(PATIENCE, held.lost()).await?;
        let lost_at = std::time::Instant::now();
        assert!(!held.is_valid());
        // The session lives on: its other grant is still good.
        assert!(kept.is_valid());
        kept.renew().await?;
        let (granted, granted_at) = tokio::time::timeout(PATIENCE, waiting).await??;
        let granted = granted?;
        assert!(lost_at <= granted_at, "bob was granted while alice held");
        assert!(granted.fencing_token() > held.fencing_token());
        // Alice's stale grant is refused by the cluster too.
        assert!(held.renew().await.is_err());
        granted.release().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;

    // `paxlock lock -- CMD`: the command is stopped when its grant is taken.
    let mut holder = CliProcess::lock(
        &cluster,
        "stuck/cli",
        &["--ttl", "3s", "--grace", "1s", "--value", "nightly run 42"],
        "echo holding token=$PAXLOCK_FENCING_TOKEN; sleep 600",
    )?;
    holder.wait_for("holding token=", PATIENCE)?;
    let described = cli(&cluster, &["describe", "stuck/cli"])?;
    assert!(described.contains("value: nightly run 42"), "{described}");
    cli(&cluster, &["release", "--force", "stuck/cli"])?;
    holder.wait_for("lost; stopping the command", PATIENCE)?;
    assert_eq!(holder.wait_exit(PATIENCE)?, Some(4));
    Ok(())
}

/// The events a lock watch delivers until `count` are in, within patience.
async fn next_events(
    watch: &mut paxlock::LockWatch,
    count: usize,
) -> Result<Vec<paxlock::LockEvent>, Box<dyn std::error::Error>> {
    let mut events = Vec::new();
    while events.len() < count {
        events.push(tokio::time::timeout(PATIENCE, watch.next()).await??);
    }
    Ok(events)
}

/// A lock watch shows the lock, then every change in order: grant (with
/// identity, token and value), queueing, release and handover, and a
/// session's end, across the death of the leader the watch and the
/// clients were talking to; a watch resumed after an index gets exactly
/// the changes after it; `paxlock watch-lock --json` prints the same; bad
/// names and callers who may not read the lock are refused.
#[test]
fn a_lock_watch_shows_every_change_in_order_across_a_leader_failure() -> TestResult {
    use paxlock::{EndReason, LockEvent as E};
    let mut cluster = ProcessCluster::start_administered(3)?;
    cluster.issue_client("alice")?;
    cluster.issue_client("bob")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (events, first_index) = runtime.block_on(async {
        let admin = cluster.client(TTL).await?;
        let alice = cluster.client_as("alice", TTL).await?;
        let bob = cluster.client_as("bob", TTL).await?;
        let mut watch = admin.watch_lock("watched/x");
        let current = next_events(&mut watch, 1).await?.remove(0);
        let E::Current { index: first_index, lock } = &current else {
            return Err(format!("first event {current:?}").into());
        };
        assert!(lock.grant.is_none() && lock.waiters.is_empty(), "{lock:?}");

        let held = alice
            .lock("watched/x")
            .value("alice's run")
            .try_acquire()
            .await?
            .ok_or("busy")?;
        let waiting = tokio::spawn({
            let bob = bob.clone();
            async move { bob.lock("watched/x").acquire().await }
        });
        let mut events = next_events(&mut watch, 2).await?;
        // The leader goes; the watch and both clients carry on elsewhere.
        let leader = cluster.leader().await?;
        cluster.kill(leader);
        let alice_token = held.fencing_token();
        held.release().await?;
        let handed = tokio::time::timeout(PATIENCE, waiting).await???;
        let bob_token = handed.fencing_token();
        // Closed with the lock held: the grant ends with the session.
        bob.close().await?;
        drop(handed);
        events.extend(next_events(&mut watch, 3).await?);

        let alice_session = alice.session_id();
        let bob_session = bob.session_id();
        assert!(
            matches!(&events[0], E::Granted { holder, fencing_token, value, .. }
                if holder.identity == "alice" && holder.session_id == alice_session
                    && *fencing_token == alice_token && value == b"alice's run"),
            "{events:#?}"
        );
        assert!(
            matches!(&events[1], E::Queued { session, .. }
                if session.identity == "bob" && session.session_id == bob_session),
            "{events:#?}"
        );
        assert!(
            matches!(&events[2], E::Released { holder, fencing_token, reason: EndReason::Released, lock_delay: None, .. }
                if holder.session_id == alice_session && *fencing_token == alice_token),
            "{events:#?}"
        );
        assert!(
            matches!(&events[3], E::Granted { holder, fencing_token, .. }
                if holder.session_id == bob_session && *fencing_token == bob_token),
            "{events:#?}"
        );
        assert!(
            matches!(&events[4], E::Released { holder, reason: EndReason::SessionClosed, .. }
                if holder.session_id == bob_session),
            "{events:#?}"
        );
        // The handover is one command: release and grant share an index.
        assert_eq!(events[2].index(), events[3].index());
        let indices: Vec<u64> = events
            .iter()
            .filter_map(paxlock::LockEvent::index)
            .collect();
        assert!(indices[0] > *first_index, "{indices:?}");
        assert!(
            indices.windows(2).all(|w| w[0] <= w[1]) && indices[1] < indices[2],
            "{indices:?}"
        );

        // Everything delivered: a new watch would resume after the last.
        assert_eq!(watch.resume_point(), indices[4]);
        // Resumed after the first grant: exactly what followed it.
        let mut resumed = admin.watch_lock_after("watched/x", indices[0]);
        assert_eq!(next_events(&mut resumed, 4).await?, events[1..].to_vec());

        // Bad input and callers who may not read the lock.
        let mut bad = admin.watch_lock("");
        let refused = tokio::time::timeout(PATIENCE, bad.next()).await?;
        assert_eq!(code(&refused), Some(ErrorCode::InvalidName), "{refused:?}");
        let rules = paxlock::AccessRules {
            rules: vec![paxlock::AccessRule {
                identities: vec!["alice".into()],
                permissions: vec![paxlock::Permission::Lock, paxlock::Permission::Read],
                prefixes: vec!["watched/".into()],
            }],
            ..Default::default()
        };
        admin.set_access_rules(&rules, None).await?;
        let outsider = cluster.client_as("bob", TTL).await?;
        let mut denied = outsider.watch_lock("watched/x");
        let refused = tokio::time::timeout(PATIENCE, denied.next()).await?;
        assert_eq!(code(&refused), Some(ErrorCode::PermissionDenied), "{refused:?}");
        Ok::<_, Box<dyn std::error::Error>>((events, *first_index))
    })?;

    // The CLI prints the same changes, one JSON document per line.
    let after = first_index.to_string();
    let mut printed = CliProcess::start(
        &cluster,
        &["watch-lock", "watched/x", "--json", "--after", &after],
    )?;
    printed.wait_for("session_closed", PATIENCE)?;
    let lines: Vec<serde_json::Value> = printed
        .seen
        .iter()
        .map(|l| serde_json::from_str(l))
        .collect::<Result<_, _>>()?;
    let expected: Vec<serde_json::Value> = events
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines, expected);
    // For people: a line per change; a bad name is a clear error.
    let mut people = CliProcess::start(&cluster, &["watch-lock", "watched/x"])?;
    people.wait_for("index=", PATIENCE)?;
    let line = people.wait_for("current free", PATIENCE)?;
    assert!(line.contains("waiters=0"), "{line}");
    let bad = cli(&cluster, &["watch-lock", ""]);
    let message = bad.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("watching lock"), "{message}");
    Ok(())
}
