//! The membership fault: an administrator replaces a member by a spare
//! node in the middle of the other faults, one step at a time as an
//! operator would (`paxlock members replace`): add the spare as a learner,
//! promote it once it has caught up, remove the member. A step whose
//! answer is lost (a fault, a leader change) is looked up in the members
//! before it is asked again, so no step is made twice.

use std::time::{Duration, Instant};

use paxlock::{Client, MemberChange, Members};

use super::cluster::ChaosCluster;

/// How long one replacement may take, all steps together.
const PATIENCE: Duration = Duration::from_secs(60);

/// What one replacement came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replacement {
    /// `old` left, `new` took its place.
    Done {
        /// The member removed.
        old: u64,
        /// The spare now a voter.
        new: u64,
    },
    /// No spare node was left.
    NoSpare,
    /// A step did not complete within the patience.
    Failed(String),
}

/// Replaces member `old` by the next spare node.
pub async fn replace(cluster: &mut ChaosCluster, admin: &Client, old: u64) -> Replacement {
    let (new, addr) = match cluster.start_spare() {
        Ok(Some(spare)) => spare,
        Ok(None) => return Replacement::NoSpare,
        Err(e) => return Replacement::Failed(format!("starting a spare node: {e:#}")),
    };
    let deadline = Instant::now() + PATIENCE;
    // The leader refuses to add a node it cannot reach: wait until it serves.
    while cluster.status(new).await.is_err() {
        if Instant::now() > deadline {
            return Replacement::Failed(format!("spare node {new} never started serving"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let steps = [
        MemberChange::AddLearner { id: new, addr },
        MemberChange::Promote(new),
        MemberChange::Remove(old),
    ];
    for step in steps {
        if let Err(e) = make(admin, step, deadline).await {
            return Replacement::Failed(format!("replacing node {old} by node {new}: {e}"));
        }
    }
    cluster.replaced(old, new);
    Replacement::Done { old, new }
}

/// Makes `step` unless the members already show it; asks again (after
/// looking) until `deadline` on any error.
async fn make(admin: &Client, step: MemberChange, deadline: Instant) -> Result<(), String> {
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(members) = admin.members().await {
            if shows(&members, step) {
                return Ok(());
            }
        }
        match admin.change_membership(step, true).await {
            Ok(members) if shows(&members, step) => return Ok(()),
            Ok(members) => last = format!("{step:?} answered with {members:?}"),
            Err(e) => last = format!("{step:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last)
}

/// Whether `members` shows `step` made (in effect).
fn shows(members: &Members, step: MemberChange) -> bool {
    match step {
        MemberChange::AddLearner { id, .. } => members.members.iter().any(|m| m.node_id == id),
        MemberChange::Promote(id) => members.voters().contains(&id),
        MemberChange::Remove(id) => !members.members.iter().any(|m| m.node_id == id),
    }
}
