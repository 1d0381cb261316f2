//! The membership faults, made in the middle of the other faults one step
//! at a time as an operator would: **replace** a member by a spare node
//! (`paxlock members replace`: add the spare as a learner, promote it once
//! it has caught up, remove the member), and **resize**: grow three
//! members to five with two spares, or shrink five to three. A step whose
//! answer is lost (a fault, a leader change) is asked again, which the
//! leader answers as made if it was (`Client::change_membership_until_made`).
//! Spares of even id join at their own request instead (`serve --join`):
//! the administrator only waits for the members to show them as voters.

use std::time::{Duration, Instant};

use paxlock::{Client, MemberChange};

use super::cluster::ChaosCluster;

/// How long one membership fault may take, all steps together.
const PATIENCE: Duration = Duration::from_secs(90);

/// What one membership fault came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Made, as described.
    Done(String),
    /// Not tried: the cluster had no spare node (or members) for it.
    Skipped(String),
    /// A step did not complete within the patience.
    Failed(String),
}

/// Replaces member `old` by the next spare node.
pub async fn replace(cluster: &mut ChaosCluster, admin: &Client, old: u64) -> Outcome {
    if cluster.spares_left() == 0 {
        return Outcome::Skipped("no spare node left to replace with".into());
    }
    let deadline = Instant::now() + PATIENCE;
    let outcome = async {
        let new = join_spare(cluster, admin, deadline).await?;
        remove(cluster, admin, old, deadline).await?;
        Ok::<_, String>(new)
    };
    match outcome.await {
        Ok(new) => Outcome::Done(format!("replaced node {old} by node {new}")),
        Err(why) => Outcome::Failed(format!("replacing node {old}: {why}")),
    }
}

/// Grows the members from three to five with two spare nodes; or, with
/// five or more, shrinks them to three, removing `first` and then the
/// longest-standing member other than it.
pub async fn resize(cluster: &mut ChaosCluster, admin: &Client, first: u64) -> Outcome {
    let before = cluster.ids();
    let deadline = Instant::now() + PATIENCE;
    if before.len() >= 5 {
        let second = before.iter().copied().find(|&m| m != first);
        let mut removed = Vec::new();
        for old in [Some(first), second].into_iter().flatten() {
            if let Err(why) = remove(cluster, admin, old, deadline).await {
                return Outcome::Failed(format!("shrinking {before:?}: {why}"));
            }
            removed.push(old);
        }
        return Outcome::Done(format!(
            "shrank {} -> {} members: removed nodes {removed:?}",
            before.len(),
            cluster.ids().len()
        ));
    }
    if cluster.spares_left() < 5 - before.len() {
        return Outcome::Skipped(format!(
            "{} spare nodes left, too few to grow {} members to 5",
            cluster.spares_left(),
            before.len()
        ));
    }
    let mut added = Vec::new();
    while cluster.ids().len() < 5 {
        match join_spare(cluster, admin, deadline).await {
            Ok(new) => added.push(new),
            Err(why) => return Outcome::Failed(format!("growing {before:?}: {why}")),
        }
    }
    Outcome::Done(format!(
        "grew {} -> 5 members: added nodes {added:?}",
        before.len()
    ))
}

/// Starts the next spare node and makes it a voter: it asks to join by
/// itself (even ids), or the administrator adds it as a learner and
/// promotes it.
async fn join_spare(
    cluster: &mut ChaosCluster,
    admin: &Client,
    deadline: Instant,
) -> Result<u64, String> {
    let asks = cluster.next_spare().is_some_and(|id| id % 2 == 0);
    let (new, addr) = match cluster.start_spare(asks) {
        Ok(Some(spare)) => spare,
        Ok(None) => return Err("no spare node left".into()),
        Err(e) => return Err(format!("starting a spare node: {e:#}")),
    };
    if asks {
        while !voter(admin, new).await {
            if Instant::now() > deadline {
                return Err(format!("spare node {new} asked to join and is no voter"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cluster.joined(new);
        return Ok(new);
    }
    // The leader refuses to add a node it cannot reach: wait until it serves.
    while cluster.status(new).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("spare node {new} never started serving"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    step(admin, MemberChange::AddLearner { id: new, addr }, deadline).await?;
    step(admin, MemberChange::Promote(new), deadline).await?;
    cluster.joined(new);
    Ok(new)
}

/// Whether the members show node `id` as a voter (no answer: not yet).
async fn voter(admin: &Client, id: u64) -> bool {
    admin
        .members()
        .await
        .is_ok_and(|members| members.voters().contains(&id))
}

/// Removes member `old` for good.
async fn remove(
    cluster: &mut ChaosCluster,
    admin: &Client,
    old: u64,
    deadline: Instant,
) -> Result<(), String> {
    step(admin, MemberChange::Remove(old), deadline).await?;
    cluster.removed(old);
    Ok(())
}

/// Makes one step, in effect, before `deadline`.
async fn step(admin: &Client, change: MemberChange, deadline: Instant) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    admin
        .change_membership_until_made(change, left, |_| {})
        .await
        .map(|_| ())
        .map_err(|e| format!("{change:?}: {e}"))
}
