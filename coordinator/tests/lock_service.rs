//! The lock and election service end to end over real QUIC: three nodes
//! in this process, clients through the `paxlock` library.

mod common;

use std::time::Duration;

use common::*;
use paxlock::proto::ErrorCode;
use paxlock::LeaderEvent;
use paxlock_certs::ClusterCa;

const TTL: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_is_exclusive_and_try_acquire_fails_while_held() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let nodes = start_cluster(&ca, 3).await?;
    let refs: Vec<_> = nodes.iter().collect();
    let a = connect_client(&ca, "a", &refs, TTL).await?;
    let b = connect_client(&ca, "b", &refs, TTL).await?;

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
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_granted_in_fifo_order_with_increasing_tokens() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let nodes = start_cluster(&ca, 3).await?;
    let refs: Vec<_> = nodes.iter().collect();
    let holder = connect_client(&ca, "holder", &refs, TTL).await?;
    let first = holder.lock("queue").acquire().await?;

    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let mut waiters = Vec::new();
    for i in 0..5u32 {
        let client = connect_client(&ca, &format!("w{i}"), &refs, TTL).await?;
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
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_acquire_times_out_and_leaves_no_holder_behind() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let nodes = start_cluster(&ca, 3).await?;
    let refs: Vec<_> = nodes.iter().collect();
    let a = connect_client(&ca, "a", &refs, TTL).await?;
    let b = connect_client(&ca, "b", &refs, TTL).await?;
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
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_session_hands_its_lock_to_the_next_waiter() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let nodes = start_cluster(&ca, 3).await?;
    let refs: Vec<_> = nodes.iter().collect();
    let a = connect_client(&ca, "a", &refs, TTL).await?;
    let b = connect_client(&ca, "b", &refs, TTL).await?;
    let held = a.lock("handoff").acquire().await?;
    let token = held.fencing_token();
    let waiter =
        tokio::spawn(async move { b.lock("handoff").acquire().await.map(|g| g.fencing_token()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::mem::forget(held); // no release: the session close must do it
    a.close().await?;
    let next = tokio::time::timeout(PATIENCE, waiter).await???;
    assert!(next > token);
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_watchers_see_every_term_in_order() -> TestResult {
    let ca = ClusterCa::generate("test")?;
    let nodes = start_cluster(&ca, 3).await?;
    let refs: Vec<_> = nodes.iter().collect();
    let observer = connect_client(&ca, "observer", &refs, TTL).await?;
    let mut watch = observer.election("orders").watch();
    let first = tokio::time::timeout(PATIENCE, watch.next()).await??;
    assert_eq!(first, LeaderEvent::NoLeader { term: 0 });

    let a = connect_client(&ca, "a", &refs, TTL).await?;
    let b = connect_client(&ca, "b", &refs, TTL).await?;
    let lead_a = a.election("orders").campaign(b"a:1".to_vec()).await?;
    assert_eq!(lead_a.term(), 1);
    let b_task = tokio::spawn(async move {
        let lead = b.election("orders").campaign(b"b:1".to_vec()).await?;
        Ok::<_, paxlock::Error>((b, lead.term()))
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    lead_a.proclaim(b"a:2".to_vec()).await?;
    lead_a.resign().await?;
    let (_b, b_term) = tokio::time::timeout(PATIENCE, b_task).await???;
    assert_eq!(b_term, 2);

    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(tokio::time::timeout(PATIENCE, watch.next()).await??);
    }
    assert_eq!(
        seen,
        vec![
            LeaderEvent::Elected {
                term: 1,
                value: b"a:1".to_vec()
            },
            LeaderEvent::ValueChanged {
                term: 1,
                value: b"a:2".to_vec()
            },
            LeaderEvent::Elected {
                term: 2,
                value: b"b:1".to_vec()
            },
        ]
    );
    let leader = observer
        .election("orders")
        .leader()
        .await?
        .ok_or("b leads")?;
    assert_eq!((leader.term, leader.value), (2, b"b:1".to_vec()));
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
