//! The lock and election service end to end: three real `paxlock serve`
//! processes on loopback with certificates made by the test, clients
//! through the `paxlock` library.

mod common;

use std::time::Duration;

use common::cluster::ProcessCluster;
use common::*;
use paxlock::proto::ErrorCode;
use paxlock::LeaderEvent;

const TTL: Duration = Duration::from_secs(5);

/// One cluster at a time on a 2-core machine.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_is_exclusive_and_try_acquire_fails_while_held() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    let a = cluster.client(TTL).await?;
    let b = cluster.client(TTL).await?;

    let guard = a.lock("job").acquire().await?;
    assert!(guard.is_valid());
    assert!(b.lock("job").try_acquire().await?.is_none(), "held by a");
    let token = guard.fencing_token();
    guard.release().await?;
    let second = b
        .lock("job")
        .try_acquire()
        .await?
        .ok_or("free after release")?;
    assert!(second.fencing_token() > token, "tokens increase");
    second.release().await?;
    Ok(())
}

/// One guard per grant: a second acquire of a lock the client holds is
/// refused (two guards for one grant would release it when either drops),
/// and a lock dropped and acquired again is a new grant, not the old one
/// on its way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gets_one_guard_per_lock_and_a_dropped_one_is_released_first() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    let a = cluster.client(TTL).await?;
    let guard = a.lock("one").acquire().await?;
    let second = a.lock("one").acquire().await;
    assert!(
        matches!(&second, Err(paxlock::Error::AlreadyHeld { name }) if name == "one"),
        "a second guard for one grant: {second:?}"
    );
    let tried = a.lock("one").try_acquire().await;
    assert!(
        matches!(&tried, Err(paxlock::Error::AlreadyHeld { .. })),
        "a second guard for one grant: {tried:?}"
    );
    assert!(guard.is_valid());
    let token = guard.fencing_token();
    drop(guard);
    let again = a.lock("one").acquire().await?;
    assert!(
        again.fencing_token() > token,
        "the grant being released was handed out again"
    );
    again.renew().await?;
    again.release().await?;
    Ok(())
}

/// Elections have a lock's options and drop semantics: a campaign times
/// out (and leaves no candidacy), dropping a leadership resigns (as
/// dropping a guard releases), and a leadership on a session of its own
/// with manual renewal warns before it lapses, lives while renewed and
/// ends when not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_time_out_dropped_leaderships_resign_and_manual_ones_lapse() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    let a = cluster.client(TTL).await?;
    let b = cluster.client(TTL).await?;
    let lead_a = a.election("opts").campaign(b"a".to_vec()).await?;
    let timed_out = b
        .election("opts")
        .candidate(b"b".to_vec())
        .timeout(Duration::from_millis(300))
        .campaign()
        .await;
    let code = timed_out.as_ref().err().and_then(|e| e.code());
    assert_eq!(code, Some(ErrorCode::Timeout), "{timed_out:?}");

    drop(lead_a);
    let lead_b =
        tokio::time::timeout(PATIENCE, b.election("opts").campaign(b"b".to_vec())).await??;
    // Term 2 is "no leader": the dropped leadership resigned.
    assert_eq!(lead_b.term(), 3, "the dropped leadership did not resign");
    lead_b.resign().await?;

    let ttl = Duration::from_secs(2);
    let manual = a
        .election("opts")
        .candidate(b"manual".to_vec())
        .ttl(ttl)
        .manual_renewal()
        .campaign()
        .await?;
    tokio::time::timeout(PATIENCE, manual.expiring(Duration::from_millis(800))).await?;
    assert!(manual.is_valid(), "warned before, not after, the end");
    manual.renew().await?;
    assert!(manual.is_valid());
    // Not renewed again: the lease lapses, and the cluster ends it.
    tokio::time::timeout(PATIENCE, manual.lost()).await?;
    let deadline = std::time::Instant::now() + PATIENCE;
    while b.election("opts").leader().await?.is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lapsed leadership lives on"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A client's lease rule allows for the cluster's clock drift bound when
/// it is larger than the client's own setting: it would otherwise trust a
/// lock past the moment the cluster may expire it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_rule_allows_for_the_clusters_drift_bound_when_larger() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start_with(3, "max_clock_drift_ppm = 90000")?;
    // The client config keeps the default bound, 2%.
    let client = cluster.client(Duration::from_secs(10)).await?;
    let guard = client.lock("drift").acquire().await?;
    let left = guard
        .valid_until()
        .saturating_duration_since(std::time::Instant::now());
    // 9%: 10 s × 0.91/1.09 ≈ 8.35 s less the margin; 2% would give 9.4 s.
    assert!(left < Duration::from_millis(8_400), "{left:?}");
    assert!(left > Duration::from_secs(7), "{left:?}");
    guard.release().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_granted_in_fifo_order_with_increasing_tokens() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    let holder = cluster.client(TTL).await?;
    let first = holder.lock("queue").acquire().await?;

    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let mut waiters = Vec::new();
    for i in 0..5u32 {
        let client = cluster.client(TTL).await?;
        let tx = tx.clone();
        waiters.push(tokio::spawn(async move {
            let guard = client.lock("queue").acquire().await?;
            tx.send((i, guard.fencing_token())).await.ok();
            tokio::time::sleep(Duration::from_millis(20)).await;
            guard.release().await?;
            Ok::<_, paxlock::Error>(())
        }));
        // Queue them one at a time so FIFO order is well defined.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut last = first.fencing_token();
    first.release().await?;
    for expected in 0..5u32 {
        let (i, token) = tokio::time::timeout(PATIENCE, rx.recv())
            .await?
            .ok_or("waiter vanished")?;
        assert_eq!(i, expected, "granted out of order");
        assert!(token > last, "token {token} not above {last}");
        last = token;
    }
    for w in waiters {
        w.await??;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_acquire_times_out_and_leaves_no_holder_behind() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    let a = cluster.client(TTL).await?;
    let b = cluster.client(TTL).await?;
    let held = a.lock("busy").acquire().await?;
    let err = b
        .lock("busy")
        .timeout(Duration::from_millis(300))
        .acquire()
        .await;
    match err {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::Timeout), "{e}"),
        Ok(_) => panic!("acquire should have timed out"),
    }
    held.release().await?;
    // b's cancelled wait must not have turned into a grant: a can take it again.
    let again = a.lock("busy").try_acquire().await?;
    assert!(
        again.is_some(),
        "the cancelled waiter must not hold the lock"
    );
    Ok(())
}

/// Regression (found in review): the wait's withdrawal was judged stale
/// once the session had any later request answered (here: b's other lock),
/// so the timed-out wait stayed queued and took the lock on release, held
/// by a session whose caller had been told the wait was cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_acquire_leaves_no_wait_even_if_its_session_was_busy() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    let a = cluster.client(TTL).await?;
    let b = cluster.client(TTL).await?;
    let held = a.lock("busy").acquire().await?;
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_millis(800);
            b.lock("busy").timeout(timeout).acquire().await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        b.lock("other").acquire().await?.release().await?;
    }
    match waiting.await? {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::Timeout), "{e}"),
        Ok(_) => panic!("acquire should have timed out"),
    }
    held.release().await?;
    let again = a.lock("busy").try_acquire().await?;
    assert!(again.is_some(), "b's timed-out wait took the lock");
    Ok(())
}

/// Regression (found in review): an acquire whose caller stopped waiting
/// (here `tokio::time::timeout` dropped the future) left its wait queued,
/// and the lock went to b's session on release, held by nobody who knew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_acquire_future_leaves_no_wait_behind() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    let a = cluster.client(TTL).await?;
    let b = cluster.client(TTL).await?;
    let held = a.lock("busy").acquire().await?;
    let gave_up = tokio::time::timeout(Duration::from_millis(500), b.lock("busy").acquire()).await;
    assert!(gave_up.is_err(), "the lock is held: b cannot have it");
    // The withdrawal runs in the background: give it time to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    held.release().await?;
    let again = a.lock("busy").try_acquire().await?;
    assert!(again.is_some(), "b's abandoned wait took the lock");
    Ok(())
}

/// The same for a campaign: a candidacy whose caller left must not be
/// promoted to leader of an election nobody on that client acts for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_campaign_future_leaves_no_candidacy_behind() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    let active = cluster.client(TTL).await?;
    let standby = cluster.client(TTL).await?;
    let leadership = active.election("svc").campaign(b"active".to_vec()).await?;
    let election = standby.election("svc");
    let gave_up = tokio::time::timeout(
        Duration::from_millis(500),
        election.campaign(b"standby".to_vec()),
    )
    .await;
    assert!(gave_up.is_err(), "active leads: standby cannot win yet");
    tokio::time::sleep(Duration::from_millis(500)).await;
    leadership.resign().await?;
    let leader = active.election("svc").leader().await?;
    assert!(
        leader.is_none(),
        "the abandoned candidacy was promoted: {leader:?}"
    );
    // The standby can still campaign for real afterwards.
    let won = standby
        .election("svc")
        .campaign(b"standby".to_vec())
        .await?;
    assert!(won.term() > 0);
    Ok(())
}

/// Regression (found in review): a campaign waiting for its turn pinned
/// the session's acknowledged floor, so every later request's answer
/// stayed recorded, and after 128 of them the session refused everything
/// (REQUEST_ID_ACKNOWLEDGED), the standby's locks included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_waiting_in_a_campaign_keeps_serving_its_lock_requests() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    let active = cluster.client(TTL).await?;
    let standby = cluster.client(TTL).await?;
    let leadership = active.election("svc").campaign(b"active".to_vec()).await?;
    let campaign = {
        let standby = standby.clone();
        tokio::spawn(async move { standby.election("svc").campaign(b"standby".to_vec()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..200 {
        standby.lock("job").acquire().await?.release().await?;
    }
    leadership.resign().await?;
    let won = tokio::time::timeout(PATIENCE, campaign).await???;
    assert!(won.term() > 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_session_hands_its_lock_to_the_next_waiter() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    let a = cluster.client(TTL).await?;
    let b = cluster.client(TTL).await?;
    let held = a.lock("handoff").acquire().await?;
    let token = held.fencing_token();
    let waiter =
        tokio::spawn(async move { b.lock("handoff").acquire().await.map(|g| g.fencing_token()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::mem::forget(held); // no release: the session close must do it
    a.close().await?;
    let next = tokio::time::timeout(PATIENCE, waiter).await???;
    assert!(next > token);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_watchers_see_every_term_in_order() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    // Sessions belong to identities (and events name them) once the log
    // records that every node speaks protocol 3.
    cluster.wait_protocol(3).await?;
    let observer = cluster.client(TTL).await?;
    let mut watch = observer.election("orders").watch();
    let first = tokio::time::timeout(PATIENCE, watch.next()).await??;
    assert_eq!(first, LeaderEvent::NoLeader { term: 0 });

    let a = cluster.client(TTL).await?;
    let b = cluster.client(TTL).await?;
    // Leaderships draw their fencing tokens from the sequence lock grants
    // draw from: a's win is above a grant before it.
    let grant = a.lock("before-orders").acquire().await?;
    let lead_a = a.election("orders").campaign(b"a:1".to_vec()).await?;
    assert_eq!(lead_a.term(), 1);
    let token_a = lead_a.fencing_token().ok_or("a's leadership has a token")?;
    assert!(
        token_a > grant.fencing_token(),
        "win not above an earlier grant"
    );
    grant.release().await?;
    let b_task = tokio::spawn(async move {
        let lead = b.election("orders").campaign(b"b:1".to_vec()).await?;
        // Returned, not dropped: dropping a leadership resigns.
        Ok::<_, paxlock::Error>((b, lead))
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    lead_a.proclaim(b"a:2".to_vec()).await?;
    lead_a.resign().await?;
    let (_b, lead_b) = tokio::time::timeout(PATIENCE, b_task).await???;
    assert_eq!(lead_b.term(), 2);
    let token_b = lead_b.fencing_token().ok_or("b's leadership has a token")?;
    assert!(
        token_b > token_a,
        "b's win {token_b} not above a's {token_a}"
    );

    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(tokio::time::timeout(PATIENCE, watch.next()).await??);
    }
    assert_eq!(
        seen,
        vec![
            LeaderEvent::Elected {
                term: 1,
                value: b"a:1".to_vec(),
                identity: "dev-client".into(),
                fencing_token: Some(token_a),
            },
            LeaderEvent::ValueChanged {
                term: 1,
                value: b"a:2".to_vec(),
                identity: "dev-client".into(),
                fencing_token: Some(token_a),
            },
            LeaderEvent::Elected {
                term: 2,
                value: b"b:1".to_vec(),
                identity: "dev-client".into(),
                fencing_token: Some(token_b),
            },
        ]
    );
    let leader = observer
        .election("orders")
        .leader()
        .await?
        .ok_or("b leads")?;
    assert_eq!(
        (leader.term, leader.value, leader.fencing_token),
        (2, b"b:1".to_vec(), Some(token_b))
    );

    // A late watcher asking for the history gets the same events from the
    // first; a plain late watch starts at the current state.
    let mut history = observer.election("orders").watch_history();
    let mut replayed = Vec::new();
    while replayed.len() < 3 {
        replayed.push(tokio::time::timeout(PATIENCE, history.next()).await??);
    }
    assert_eq!(replayed, seen);
    let mut now = observer.election("orders").watch();
    let current = tokio::time::timeout(PATIENCE, now.next()).await??;
    assert_eq!(
        current,
        LeaderEvent::Elected {
            term: 2,
            value: b"b:1".to_vec(),
            identity: "dev-client".into(),
            fencing_token: Some(token_b),
        }
    );
    Ok(())
}

/// Sends one raw request to the cluster leader (found through `client`).
async fn raw_request(
    cluster: &ProcessCluster,
    client: &paxlock::Client,
    request: paxlock::proto::Request,
) -> Result<paxlock::proto::Response, Box<dyn std::error::Error>> {
    let leader = client.hello().await?.leader_addr;
    let certs = cluster.dir.path().join("certs");
    let tls = paxlock::tls::TlsMaterial::load(
        &certs.join("ca.pem"),
        &certs.join("client-dev-client.pem"),
        &certs.join("client-dev-client.key"),
    )?;
    let config = tls.client_config(&[paxlock::wire::CLIENT_ALPN_V1])?;
    let conn = client_endpoint()?
        .connect_with(config, leader.parse()?, "localhost")?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    paxlock::wire::write_frame(&mut send, &request).await?;
    send.finish()?;
    let response: Option<paxlock::proto::Response> = paxlock::wire::read_frame(&mut recv).await?;
    response.ok_or_else(|| "no response".into())
}

fn error_code(response: &paxlock::proto::Response) -> Option<ErrorCode> {
    response
        .error
        .as_ref()
        .and_then(|e| ErrorCode::try_from(e.code).ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_specific_error_and_changes_nothing() -> TestResult {
    use paxlock::proto::{request::Op, Release, Request};
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    let a = cluster.client(TTL).await?;

    let long_name = "n".repeat(513);
    let err = a
        .lock(long_name)
        .try_acquire()
        .await
        .err()
        .ok_or("accepted a 513-byte name")?;
    assert_eq!(err.code(), Some(ErrorCode::InvalidName), "{err}");
    let err = a
        .lock("")
        .try_acquire()
        .await
        .err()
        .ok_or("accepted an empty name")?;
    assert_eq!(err.code(), Some(ErrorCode::InvalidName), "{err}");
    let mut watch = a.election("w".repeat(513)).watch();
    let err = tokio::time::timeout(PATIENCE, watch.next())
        .await?
        .err()
        .ok_or("watched a 513-byte name")?;
    assert_eq!(err.code(), Some(ErrorCode::InvalidName), "{err}");

    let err = a
        .election("big")
        .campaign(vec![0u8; 64 * 1024 + 1])
        .await
        .err()
        .ok_or("accepted 64 KiB + 1")?;
    assert_eq!(err.code(), Some(ErrorCode::ValueTooLarge), "{err}");

    let absurd = cluster.client(Duration::from_secs(100 * 24 * 3600)).await;
    let err = absurd.err().ok_or("accepted a 100-day TTL")?;
    assert_eq!(err.code(), Some(ErrorCode::TtlOutOfRange), "{err}");

    let guard = a.lock("kept").acquire().await?;
    let stale = Request {
        request_id: 1_000_000,
        session_id: a.session_id(),
        ack_below: 0,
        waiting: Vec::new(),
        op: Some(Op::Release(Release {
            name: "kept".into(),
            fencing_token: guard.fencing_token() - 1,
        })),
    };
    let response = raw_request(&cluster, &a, stale).await?;
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::StaleToken),
        "{response:?}"
    );
    let unknown = Request {
        request_id: 1,
        session_id: 987_654,
        ack_below: 0,
        waiting: Vec::new(),
        op: Some(Op::Release(Release {
            name: "kept".into(),
            fencing_token: guard.fencing_token(),
        })),
    };
    let response = raw_request(&cluster, &a, unknown).await?;
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::SessionUnknown),
        "{response:?}"
    );
    let empty = Request {
        request_id: 2,
        session_id: a.session_id(),
        ack_below: 0,
        waiting: Vec::new(),
        op: None,
    };
    let response = raw_request(&cluster, &a, empty).await?;
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::InvalidRequest),
        "{response:?}"
    );
    // More running waits than answers a session may keep.
    let too_many_waits = Request {
        request_id: 1_000_001,
        session_id: a.session_id(),
        ack_below: 1_000_001,
        waiting: (1..=129).collect(),
        op: Some(Op::Release(Release {
            name: "kept".into(),
            fencing_token: guard.fencing_token(),
        })),
    };
    let response = raw_request(&cluster, &a, too_many_waits).await?;
    assert_eq!(
        error_code(&response),
        Some(ErrorCode::InvalidRequest),
        "{response:?}"
    );

    // None of that touched the lock: it is still held with the same token.
    let b = cluster.client(TTL).await?;
    assert!(b.lock("kept").try_acquire().await?.is_none());
    guard.renew().await?;
    Ok(())
}
