//! The runner's lock watches: one per worker lock, open from before the
//! workers start until they are done, through every fault, resuming on
//! whichever node the client reaches. What they saw is checked against
//! what the workers were granted ([`super::checks::lock_watches`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use paxlock::Client;
use tokio::task::JoinHandle;

use super::workers::{kind, WorkerCtx};

/// Starts a watch of every worker lock, recording its events.
pub fn start(client: &Client, ctx: &Arc<WorkerCtx>) -> Vec<JoinHandle<()>> {
    ctx.locks
        .iter()
        .map(|lock| {
            let mut watch = client.watch_lock(lock.clone());
            let (ctx, lock) = (ctx.clone(), lock.clone());
            tokio::spawn(async move {
                loop {
                    match watch.next().await {
                        Ok(event) => ctx.recorder.lock_watched(&lock, event),
                        // No node reachable for a while (the watch keeps
                        // trying on the next call): counted, not fatal.
                        Err(e) => {
                            ctx.recorder
                                .count(format!("lock watch: interrupted ({})", kind(&e)));
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

/// Waits until every watch has shown the last grant a worker was told of
/// on its lock (an event at or past its token's revision), at most
/// `bound`, then stops them; returns how long that took, or `None` if a
/// watch was still behind at the bound (the check then says which).
pub async fn finish(
    ctx: &WorkerCtx,
    watches: Vec<JoinHandle<()>>,
    bound: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let caught_up = loop {
        let behind = ctx.locks.iter().any(|lock| {
            ctx.recorder.lock_watched_index(lock) < ctx.recorder.max_granted_token_of(lock)
        });
        if !behind {
            break Some(started.elapsed());
        }
        if started.elapsed() > bound {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The releases that follow those grants, if they come soon.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for watch in watches {
        watch.abort();
    }
    caught_up
}
