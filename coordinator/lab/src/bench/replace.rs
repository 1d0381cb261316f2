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
    use crate::bench::etcd::{json_object, json_str, Http};

    /// The etcd side of a replacement, step by step (the caller starts
    /// and stops the processes between them).
    pub struct EtcdReplacement {
        http: Http,
        started: Instant,
        new_id: String,
        /// Adding the learner, until the gateway confirmed it.
        pub add: Duration,
    }

    /// How long a member add waits for etcd to call its cluster healthy.
    const UNHEALTHY_PATIENCE: Duration = Duration::from_secs(15);

    impl EtcdReplacement {
        /// `member add --learner` of a member whose peer URL is `peer_url`,
        /// through the members at `endpoints` (`host:port`).
        pub async fn add_learner(
            endpoints: Vec<String>,
            peer_url: &str,
        ) -> anyhow::Result<EtcdReplacement> {
            let mut http = Http::new(endpoints, 0);
            let body = format!("{{\"peerURLs\":[\"{peer_url}\"],\"isLearner\":true}}");
            // etcd refuses any member change ("unhealthy cluster") until
            // every member has been connected for 5 s: a run on a cluster
            // started moments ago (a small state fills fast) waits for
            // that, and only the add that is taken is timed.
            let healthy_by = Instant::now() + UNHEALTHY_PATIENCE;
            let (text, started) = loop {
                let started = Instant::now();
                match http
                    .post("/v3/cluster/member/add", &body, Duration::from_secs(10))
                    .await
                {
                    Ok(text) => break (text, started),
                    Err(e)
                        if format!("{e:#}").contains("unhealthy cluster")
                            && Instant::now() < healthy_by =>
                    {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            let member = json_object(&text, "member").context("member add: no member")?;
            let new_id = json_str(member, "ID").context("member add: no ID")?;
            Ok(EtcdReplacement {
                http,
                add: started.elapsed(),
                started: Instant::now(),
                new_id,
            })
        }

        /// `member promote`, asked again until the learner is in sync
        /// (etcd refuses it until then); returns the time since the add.
        pub async fn promote(&mut self) -> anyhow::Result<Duration> {
            let body = format!("{{\"ID\":\"{}\"}}", self.new_id);
            let id = format!("\"{}\"", self.new_id);
            let is_voter = |list: &str| {
                member_object(list, &id).is_some_and(|m| !m.contains("\"isLearner\":true"))
            };
            let started = self.started;
            self.until_made("/v3/cluster/member/promote", &body, started, is_voter)
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
            self.http = Http::new(others, 0);
            let list = self.member_list().await?;
            let id =
                member_id(&list, name).with_context(|| format!("no member {name} in {list}"))?;
            let body = format!("{{\"ID\":\"{id}\"}}");
            let gone = |list: &str| member_id(list, name).is_none();
            self.until_made("/v3/cluster/member/remove", &body, started, gone)
                .await
                .context("member remove")
        }

        /// The member list's JSON.
        async fn member_list(&mut self) -> anyhow::Result<String> {
            self.http
                .post("/v3/cluster/member/list", "{}", Duration::from_secs(10))
                .await
        }

        /// Posts `body` to `path` until etcd takes it, or the member list
        /// shows it `made` (etcd answers "request timed out" under load,
        /// having made it), for up to [`STEP_PATIENCE`] from `started`;
        /// returns the time since `started`.
        async fn until_made(
            &mut self,
            path: &str,
            body: &str,
            started: Instant,
            made: impl Fn(&str) -> bool,
        ) -> anyhow::Result<Duration> {
            loop {
                match self.http.post(path, body, Duration::from_secs(10)).await {
                    Ok(_) => return Ok(started.elapsed()),
                    Err(e) if started.elapsed() > STEP_PATIENCE => return Err(e),
                    Err(_) => {
                        if self.member_list().await.is_ok_and(|list| made(&list)) {
                            return Ok(started.elapsed());
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }

    /// The ID of the member named `name` in a member list's JSON.
    fn member_id(list: &str, name: &str) -> Option<String> {
        let member = member_object(list, &format!("\"name\":\"{name}\""))?;
        member.split('"').nth(1).map(str::to_string)
    }

    /// The text of the member object in a member list's JSON that contains
    /// `needle`, from just after its `{"ID":` (so its ID, quoted, comes
    /// first; members hold no nested objects).
    fn member_object<'a>(list: &'a str, needle: &str) -> Option<&'a str> {
        list.split("{\"ID\":")
            .skip(1)
            .filter_map(|member| member.split('}').next())
            .find(|member| member.contains(needle))
    }

    #[cfg(test)]
    mod tests {
        use super::{member_id, member_object};

        #[test]
        fn a_member_id_is_found_by_name() {
            let list = r#"{"header":{"cluster_id":"1"},"members":[{"ID":"11","name":"m1","peerURLs":["http://a"]},{"ID":"22","name":"m2","peerURLs":["http://b"]}]}"#;
            assert_eq!(member_id(list, "m2").as_deref(), Some("22"));
            assert_eq!(member_id(list, "m1").as_deref(), Some("11"));
            assert_eq!(member_id(list, "m3"), None);
            let learner = r#"{"members":[{"ID":"11","name":"m1"},{"ID":"44","isLearner":true}]}"#;
            let m44 = member_object(learner, r#""44""#).unwrap_or_default();
            assert!(m44.contains(r#""isLearner":true"#), "{m44}");
            let m11 = member_object(learner, r#""11""#).unwrap_or_default();
            assert!(
                m11.starts_with(r#""11""#) && !m11.contains("isLearner"),
                "{m11}"
            );
        }
    }
}
