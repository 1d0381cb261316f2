//! Replacing a member of a running bench cluster, the way each system's
//! operators do it: Paxlock with `ChangeMembership` (add a learner, promote
//! it, remove the member; what `paxlock members replace` does), etcd with
//! its cluster API (`member add --learner`, start the new member with
//! `--initial-cluster-state existing`, `member promote` once it is in sync,
//! `member remove`). Each step is timed to its confirmation.

use std::time::{Duration, Instant};

use anyhow::Context;
use paxlock::MemberChange;

/// How long one step may take (a learner catching up on the state
/// included).
const STEP_PATIENCE: Duration = Duration::from_secs(120);

/// What a replacement took, step by step.
#[derive(Debug, Clone, Copy)]
pub struct ReplaceTimes {
    /// The member removed.
    pub old: u64,
    /// The member that took its place.
    pub new: u64,
    /// From the start of the replacement to its first step (starting the
    /// new node and waiting for it to serve, for Paxlock).
    pub before_steps: Duration,
    /// Adding the new node as a learner, until confirmed.
    pub add: Duration,
    /// Promoting it, including the wait for it to catch up.
    pub promote: Duration,
    /// Removing the old member, until confirmed.
    pub remove: Duration,
}

impl ReplaceTimes {
    /// The whole replacement.
    pub fn total(&self) -> Duration {
        self.before_steps + self.add + self.promote + self.remove
    }
}

/// Replaces Paxlock member `old` by the already started spare `new`
/// (listening at `addr`), as the administrator `admin`.
pub async fn paxlock(
    admin: &paxlock::Client,
    old: u64,
    new: u64,
    addr: std::net::SocketAddr,
) -> anyhow::Result<ReplaceTimes> {
    let add = timed_step(admin, MemberChange::AddLearner { id: new, addr }).await?;
    let promote = timed_step(admin, MemberChange::Promote(new)).await?;
    let remove = timed_step(admin, MemberChange::Remove(old)).await?;
    Ok(ReplaceTimes {
        old,
        new,
        before_steps: Duration::ZERO,
        add,
        promote,
        remove,
    })
}

/// Makes one step, asking again while its refusal passes (a learner
/// catching up), until it is in effect; returns how long it took.
async fn timed_step(admin: &paxlock::Client, step: MemberChange) -> anyhow::Result<Duration> {
    let started = Instant::now();
    admin
        .change_membership_until_made(step, STEP_PATIENCE, |_| {})
        .await
        .with_context(|| format!("{step:?}"))?;
    Ok(started.elapsed())
}

#[cfg(feature = "etcd")]
pub use etcd::EtcdReplacement;

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use crate::bench::etcd::pb::etcdserverpb::cluster_client::ClusterClient;
    use crate::bench::etcd::pb::etcdserverpb::{
        Member, MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    };
    use crate::bench::etcd::{Grpc, Patience};

    /// The etcd side of a replacement, step by step (the caller starts
    /// and stops the processes between them).
    pub struct EtcdReplacement {
        grpc: Grpc,
        started: Instant,
        new_id: u64,
        /// Adding the learner, until etcd confirmed it.
        pub add: Duration,
    }

    /// How long a member add waits for etcd to call its cluster healthy.
    const UNHEALTHY_PATIENCE: Duration = Duration::from_secs(15);

    /// How long one member call may take.
    const CALL_TIMEOUT: Duration = Duration::from_secs(10);

    impl EtcdReplacement {
        /// `member add --learner` of a member whose peer URL is `peer_url`,
        /// through the members at `endpoints` (`host:port`).
        pub async fn add_learner(
            endpoints: Vec<String>,
            peer_url: &str,
        ) -> anyhow::Result<EtcdReplacement> {
            let mut grpc = Grpc::new(endpoints, 0);
            let add = MemberAddRequest {
                peer_ur_ls: vec![peer_url.to_string()],
                is_learner: true,
            };
            // etcd refuses any member change ("unhealthy cluster") until
            // every member has been connected for 5 s: a run on a cluster
            // started moments ago (a small state fills fast) waits for
            // that, and only the add that is taken is timed.
            let healthy_by = Instant::now() + UNHEALTHY_PATIENCE;
            let (answer, started) = loop {
                let started = Instant::now();
                let call = grpc.call("member add", Patience::Wait(CALL_TIMEOUT), |c| {
                    let add = add.clone();
                    async move { ClusterClient::new(c).member_add(add).await }
                });
                match call.await {
                    Ok(answer) => break (answer, started),
                    Err(e)
                        if format!("{e:#}").contains("unhealthy cluster")
                            && Instant::now() < healthy_by =>
                    {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            let new_id = answer.member.context("member add: no member")?.id;
            Ok(EtcdReplacement {
                grpc,
                add: started.elapsed(),
                started: Instant::now(),
                new_id,
            })
        }

        /// `member promote`, asked again until the learner is in sync
        /// (etcd refuses it until then); returns the time since the add.
        pub async fn promote(&mut self) -> anyhow::Result<Duration> {
            let id = self.new_id;
            let is_voter = |members: &[Member]| members.iter().any(|m| m.id == id && !m.is_learner);
            let started = self.started;
            let promote = |c| async move {
                ClusterClient::new(c)
                    .member_promote(MemberPromoteRequest { id })
                    .await
                    .map(|_| tonic::Response::new(()))
            };
            self.until_made("member promote", promote, started, is_voter)
                .await
                .context("member promote")
        }

        /// `member remove` of the member named `name`, asked of the members
        /// at `others` (a member asked to remove itself stops before it
        /// answers); returns how long it took until the member list no
        /// longer shows it.
        pub async fn remove(
            &mut self,
            name: &str,
            others: Vec<String>,
        ) -> anyhow::Result<Duration> {
            let started = Instant::now();
            self.grpc = Grpc::new(others, 0);
            let members = self.member_list().await?;
            let id = members
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.id)
                .with_context(|| format!("no member {name} among {members:?}"))?;
            let gone = |members: &[Member]| members.iter().all(|m| m.name != name);
            let remove = |c| async move {
                ClusterClient::new(c)
                    .member_remove(MemberRemoveRequest { id })
                    .await
                    .map(|_| tonic::Response::new(()))
            };
            self.until_made("member remove", remove, started, gone)
                .await
                .context("member remove")
        }

        /// The members now.
        async fn member_list(&mut self) -> anyhow::Result<Vec<Member>> {
            let answer = self
                .grpc
                .call(
                    "member list",
                    Patience::Wait(CALL_TIMEOUT),
                    |c| async move {
                        ClusterClient::new(c)
                            .member_list(MemberListRequest { linearizable: true })
                            .await
                    },
                )
                .await?;
            Ok(answer.members)
        }

        /// Makes `call` until etcd takes it, or the member list shows it
        /// `made` (etcd answers "request timed out" under load, having made
        /// it), for up to [`STEP_PATIENCE`] from `started`; returns the time
        /// since `started`.
        async fn until_made<F, Fut>(
            &mut self,
            what: &str,
            mut call: F,
            started: Instant,
            made: impl Fn(&[Member]) -> bool,
        ) -> anyhow::Result<Duration>
        where
            F: FnMut(tonic::transport::Channel) -> Fut,
            Fut: std::future::Future<Output = Result<tonic::Response<()>, tonic::Status>>,
        {
            loop {
                match self
                    .grpc
                    .call(what, Patience::Wait(CALL_TIMEOUT), &mut call)
                    .await
                {
                    Ok(()) => return Ok(started.elapsed()),
                    Err(e) if started.elapsed() > STEP_PATIENCE => return Err(e),
                    Err(_) => {
                        if self.member_list().await.is_ok_and(|m| made(&m)) {
                            return Ok(started.elapsed());
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }
}
