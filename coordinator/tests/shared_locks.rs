//! Semaphores and read/write locks end to end: three real `paxlock serve`
//! processes on loopback, clients through the `paxlock` library, the
//! names inspected as an operator would.

mod common;

use std::time::Duration;

use common::cluster::ProcessCluster;
use common::*;
use paxlock::proto::ErrorCode;
use paxlock::{HeldAs, LockKind, LockMode, Wants};

const TTL: Duration = Duration::from_secs(5);

/// One cluster at a time on a 2-core machine.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether `name` has `n` waiters within `PATIENCE`, as `describe` shows.
async fn queued(client: &paxlock::Client, name: &str, n: usize) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if let Ok(info) = client.describe_lock(name).await {
            if info.waiters.len() == n {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A semaphore of 2: two holders in two slots with their own tokens, a
/// third waits and gets the slot freed first, with a higher token; the
/// permits and the kind are checked; describe shows the holders and the
/// queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semaphore_admits_its_permits_in_slots_and_queues_the_rest() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    let (a, b, c) = (
        cluster.client(TTL).await?,
        cluster.client(TTL).await?,
        cluster.client(TTL).await?,
    );
    let first = a.semaphore("pool", 2).acquire().await?;
    let second = b.semaphore("pool", 2).acquire().await?;
    assert_eq!(first.mode(), LockMode::Permit { permits: 2 });
    assert_eq!((first.slot(), second.slot()), (Some(0), Some(1)));
    assert!(second.fencing_token() > first.fencing_token());
    assert!(
        c.semaphore("pool", 2).try_acquire().await?.is_none(),
        "full"
    );

    let mismatch = c.semaphore("pool", 3).try_acquire().await;
    assert_eq!(
        mismatch.as_ref().err().and_then(paxlock::Error::code),
        Some(ErrorCode::PermitsMismatch),
        "{mismatch:?}"
    );
    let as_lock = c.lock("pool").try_acquire().await;
    assert_eq!(
        as_lock.as_ref().err().and_then(paxlock::Error::code),
        Some(ErrorCode::WrongKind),
        "{as_lock:?}"
    );

    let waiting = tokio::spawn({
        let c = c.clone();
        async move {
            c.semaphore("pool", 2)
                .timeout(Duration::from_secs(30))
                .acquire()
                .await
        }
    });
    assert!(queued(&a, "pool", 1).await, "c never queued");
    let info = a.describe_lock("pool").await?;
    assert_eq!(info.kind, LockKind::Semaphore { permits: 2 });
    let slots: Vec<HeldAs> = info.holders.iter().map(|h| h.held_as).collect();
    assert_eq!(
        slots,
        vec![HeldAs::Permit { slot: 0 }, HeldAs::Permit { slot: 1 }]
    );
    assert_eq!(info.waiters[0].wants, Some(Wants::Permit));

    let highest = second.fencing_token();
    first.release().await?;
    let third = waiting.await??;
    assert_eq!(third.slot(), Some(0), "the freed slot");
    assert!(third.fencing_token() > highest);
    // A resource fences per slot: slot 1's holder is not refused because
    // slot 0 saw a higher token.
    let fence = paxlock::fencing::SlotFence::new(2);
    fence.admit(0, third.fencing_token())?;
    fence.admit(1, second.fencing_token())?;
    third.release().await?;
    second.release().await?;
    Ok(())
}

/// Readers hold together and present one fencing token; a writer waits
/// for them and is not passed by a reader arriving after it; the readers
/// queued behind the writer enter together after it, with a token above
/// the writer's; a plain lock acquire of the name takes it for writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_share_writers_exclude_and_nobody_passes_a_queued_writer() -> TestResult {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = ProcessCluster::start(3)?;
    let (a, b, w, late) = (
        cluster.client(TTL).await?,
        cluster.client(TTL).await?,
        cluster.client(TTL).await?,
        cluster.client(TTL).await?,
    );
    let r1 = a.rwlock("table").read().acquire().await?;
    let r2 = b.rwlock("table").read().acquire().await?;
    assert_eq!(r1.mode(), LockMode::Read);
    assert_eq!(
        r1.fencing_token(),
        r2.fencing_token(),
        "readers fence alike"
    );
    assert!(w.rwlock("table").write().try_acquire().await?.is_none());

    let writer = tokio::spawn({
        let w = w.clone();
        async move {
            w.lock("table")
                .timeout(Duration::from_secs(30))
                .acquire()
                .await
        }
    });
    assert!(queued(&a, "table", 1).await, "the writer never queued");
    // A reader after the writer waits behind it, though readers hold.
    assert!(late.rwlock("table").read().try_acquire().await?.is_none());
    let reader = tokio::spawn({
        let late = late.clone();
        async move {
            late.rwlock("table")
                .read()
                .timeout(Duration::from_secs(30))
                .acquire()
                .await
        }
    });
    assert!(queued(&a, "table", 2).await, "the late reader never queued");
    let info = a.describe_lock("table").await?;
    assert_eq!(info.kind, LockKind::ReadWrite);
    assert_eq!(info.holders.len(), 2);
    assert!(info.holders.iter().all(|h| h.held_as == HeldAs::Read));
    let wants: Vec<_> = info.waiters.iter().map(|w| w.wants).collect();
    assert_eq!(wants, vec![Some(Wants::Write), Some(Wants::Read)]);

    let readers = r1.fencing_token();
    r1.release().await?;
    r2.release().await?;
    let writing = writer.await??;
    assert_eq!(writing.mode(), LockMode::Exclusive);
    assert!(writing.fencing_token() > readers);
    let fence = paxlock::fencing::TokenFence::new(readers);
    fence.admit(writing.fencing_token())?;
    assert!(!reader.is_finished(), "a reader entered beside the writer");
    let written = writing.fencing_token();
    writing.release().await?;
    let reading = reader.await??;
    assert!(
        reading.fencing_token() > written,
        "the writer is fenced off"
    );
    assert!(
        fence.admit(readers).is_err(),
        "the earlier readers are refused"
    );
    reading.release().await?;
    Ok(())
}
