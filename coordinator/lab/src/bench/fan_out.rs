//! Many requests at once with a bound on how many are in flight: how the
//! scale workloads make and release their state (each request its own,
//! as many clients would send them; the systems batch what arrives
//! together).

use std::future::Future;

use anyhow::Context;
use tokio::task::JoinSet;

/// Requests in flight at once unless a caller says otherwise.
pub const IN_FLIGHT: usize = 256;

/// Runs `work(item)` for every item, each on a task of its own, at most
/// `limit` at once; the results in the items' order. The first failure is
/// returned, and the tasks still running are aborted.
pub async fn fan_out<I, T, F, Fut>(
    limit: usize,
    items: impl IntoIterator<Item = I>,
    mut work: F,
) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: FnMut(I) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let mut out: Vec<Option<T>> = Vec::new();
    let mut set = JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        if set.len() >= limit.max(1) {
            if let Some(done) = set.join_next().await {
                let (j, value) = done?;
                out[j] = Some(value?);
            }
        }
        out.push(None);
        let task = work(item);
        set.spawn(async move { (i, task.await) });
    }
    while let Some(done) = set.join_next().await {
        let (j, value) = done?;
        out[j] = Some(value?);
    }
    out.into_iter()
        .map(|v| v.context("a task was lost"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn results_come_in_order_with_at_most_limit_in_flight() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (r, m) = (running.clone(), most.clone());
        let out = fan_out(3, 0..20u64, move |i| {
            let (running, most) = (r.clone(), m.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Later items finish first.
                tokio::time::sleep(Duration::from_millis(100 - i)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                anyhow::Ok(i * 2)
            }
        })
        .await
        .unwrap();
        assert_eq!(out, (0..20).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_first_failure_is_returned() {
        let out = fan_out(IN_FLIGHT, 0..10, |i| async move {
            anyhow::ensure!(i != 7, "item {i} failed");
            Ok(i)
        })
        .await;
        assert!(out.unwrap_err().to_string().contains("item 7 failed"));
    }
}
