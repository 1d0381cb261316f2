//! etcd over gRPC, as etcd's own clients speak it: the services etcd's
//! concurrency package uses (one lease per client, kept alive on one
//! stream; v3lock Lock/Unlock; v3election Campaign/Resign/Observe; the
//! `recipes` package's RWMutex on keys, ranges and watches), plus the
//! cluster and maintenance calls the bench's own cluster management needs.
//! The clients are generated at build time from `proto/etcd/*.proto`, which
//! declare just these calls with etcd's field numbers.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::fan_out::{fan_out, IN_FLIGHT};

/// etcd's gRPC API, the subset declared in `proto/etcd` (generated).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    /// etcd's key-value records and watch events.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// etcd's KV, Watch, Lease, Cluster and Maintenance services.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    /// etcd's lock service (`v3lock`).
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    /// etcd's election service (`v3election`).
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}

use pb::etcdserverpb::kv_client::KvClient;
use pb::etcdserverpb::lease_client::LeaseClient;
use pb::etcdserverpb::maintenance_client::MaintenanceClient;
use pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use pb::etcdserverpb::watch_client::WatchClient;
use pb::etcdserverpb::watch_request::RequestUnion;
use pb::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, PutRequest, RangeRequest, StatusRequest, WatchCreateRequest, WatchRequest,
};
use pb::mvccpb::event::EventType;
use pb::v3electionpb::election_client::ElectionClient;
use pb::v3electionpb::{CampaignRequest, LeaderRequest, ResignRequest};
use pb::v3lockpb::lock_client::LockClient;
use pb::v3lockpb::{LockRequest, UnlockRequest};

/// How long a call other than a blocking wait may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A gRPC channel (one HTTP/2 connection) to one etcd member that moves to
/// the next member when the current one cannot be reached, as etcd's
/// client balancer does.
pub struct Grpc {
    endpoints: Vec<String>,
    current: usize,
    channel: Option<Channel>,
}

impl Grpc {
    /// A channel that starts at member `start` of `endpoints` (`host:port`).
    pub fn new(endpoints: Vec<String>, start: usize) -> Grpc {
        let current = start % endpoints.len().max(1);
        Grpc {
            endpoints,
            current,
            channel: None,
        }
    }

    /// Like [`Grpc::new`], on `channel`, already open to member `start`.
    fn on(channel: Channel, endpoints: Vec<String>, start: usize) -> Grpc {
        Grpc {
            channel: Some(channel),
            ..Grpc::new(endpoints, start)
        }
    }

    /// The current member's channel (connected on first use).
    pub fn channel(&mut self) -> anyhow::Result<Channel> {
        if let Some(channel) = &self.channel {
            return Ok(channel.clone());
        }
        let member = self
            .endpoints
            .get(self.current)
            .ok_or_else(|| anyhow!("no etcd endpoints"))?;
        let channel = Endpoint::from_shared(format!("http://{member}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        self.channel = Some(channel.clone());
        Ok(channel)
    }

    /// The member the channel talks to now.
    pub fn member(&self) -> &str {
        self.endpoints.get(self.current).map_or("", String::as_str)
    }

    /// Moves to the next member.
    pub fn rotate(&mut self) {
        self.channel = None;
        self.current = (self.current + 1) % self.endpoints.len().max(1);
    }

    /// Makes call `what` on the current member's channel; when the member
    /// cannot be reached or has no leader, tries the next. With
    /// [`Patience::Wait`] (a lock or a campaign, which wait for others) it
    /// tries each member once and a timeout is final; with
    /// [`Patience::Quick`] each try has [`ATTEMPT_TIMEOUT`], as a
    /// latency-minded etcd client sets a deadline per request, and it goes
    /// round the members until [`CALL_TIMEOUT`].
    pub async fn call<T, F, Fut>(
        &mut self,
        what: &str,
        patience: Patience,
        mut call: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = tokio::time::Instant::now();
        let (attempt, tries) = match patience {
            Patience::Wait(timeout) => (timeout, self.endpoints.len()),
            Patience::Quick => (ATTEMPT_TIMEOUT, usize::MAX),
        };
        let mut last = anyhow!("no etcd endpoints");
        for _ in 0..tries {
            if patience == Patience::Quick && started.elapsed() > CALL_TIMEOUT {
                break;
            }
            let channel = self.channel()?;
            match tokio::time::timeout(attempt, call(channel)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if !moves_on(&status) => {
                    bail!("etcd {what}: {}", status.message())
                }
                Ok(Err(status)) => {
                    last = anyhow!("etcd {what} at {}: {}", self.member(), status.message())
                }
                Err(_) if patience == Patience::Quick => {
                    last = anyhow!(
                        "etcd {what} at {}: no answer within {attempt:?}",
                        self.member()
                    )
                }
                Err(_) => bail!("etcd {what}: no answer within {attempt:?}"),
            }
            self.rotate();
        }
        Err(last)
    }
}

/// How long a call may take: see [`Grpc::call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// A wait for others (a lock, a campaign) bounded by this.
    Wait(Duration),
    /// A request the cluster answers at once.
    Quick,
}

/// How long one try of a [`Patience::Quick`] call waits: a member that
/// lost its leader holds a request for etcd's request timeout (7 s with
/// the default 1 s election timeout) before it answers.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// `message` as a request only a member with a leader serves (etcd's
/// `clientv3.WithRequireLeader`): a member that knows it has none fails it
/// at once, and the call moves to another member.
fn leader_required<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

/// Whether a failed call is worth trying on another member: the member
/// could not be reached or its connection broke (tonic reports both as
/// `Unavailable` or `Unknown`), or it answered that it has no leader
/// (`Unavailable` too).
fn moves_on(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}

/// One etcd benchmark client: one connection, one lease kept alive.
pub struct EtcdConn {
    grpc: Grpc,
    lease: i64,
    /// Sends the lease's keepalives every TTL/3.
    renewing: tokio::task::JoinHandle<()>,
    /// Tells this client's RWMutex keys apart.
    keys_made: u64,
}

/// The end of the key range of every key starting with `prefix` (etcd's
/// `clientv3.GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A put of `key` = `value`, under `lease` unless it is 0.
fn put_request(key: Vec<u8>, value: Vec<u8>, lease: i64) -> PutRequest {
    PutRequest {
        key,
        value,
        lease,
        ..Default::default()
    }
}

impl EtcdConn {
    /// Grants a lease with `ttl` and starts its keep-alive.
    pub async fn connect(
        endpoints: Vec<String>,
        index: usize,
        ttl: Duration,
    ) -> anyhow::Result<EtcdConn> {
        let mut grpc = Grpc::new(endpoints.clone(), index);
        let ttl_secs = ttl.as_secs().max(2) as i64;
        let granted = grpc
            .call("lease grant", Patience::Quick, |c| async move {
                LeaseClient::new(c)
                    .lease_grant(LeaseGrantRequest {
                        ttl: ttl_secs,
                        id: 0,
                    })
                    .await
            })
            .await?;
        if !granted.error.is_empty() {
            bail!("etcd lease grant: {}", granted.error);
        }
        let period = (ttl / 3).max(Duration::from_millis(500));
        let keeper = LeaseKeeper::start(Grpc::new(endpoints, index), vec![granted.id]);
        let renewing = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                // Sent now; the answer is not waited for (a lost lease
                // shows as the next lock or campaign failing).
                drop(keeper.keep_alive(0));
            }
        });
        Ok(EtcdConn {
            grpc,
            lease: granted.id,
            renewing,
            keys_made: 0,
        })
    }

    /// etcd's RWMutex recipe (`client/v3/experimental/recipes/rwmutex.go`)
    /// on lock `name`: puts a key of our lease under `name/read/` or
    /// `name/write/`, then, until none is left, finds the newest key
    /// created before ours that excludes us (a writer's, for a reader; any,
    /// for a writer) and waits for its deletion. Returns our key, which
    /// `delete` releases; on a timeout deletes it.
    pub async fn rw_lock(
        &mut self,
        name: &str,
        write: bool,
        timeout: Duration,
    ) -> anyhow::Result<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.keys_made += 1;
        let prefix = format!("rwmutex/{name}/");
        let mode = if write { "write" } else { "read" };
        let key = format!("{prefix}{mode}/{:x}-{}", self.lease, self.keys_made).into_bytes();
        let put = put_request(key.clone(), Vec::new(), self.lease);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let answer = self
            .grpc
            .call("put", Patience::Wait(left), |c| {
                let put = put.clone();
                async move { KvClient::new(c).put(leader_required(put)).await }
            })
            .await?;
        let created = answer
            .header
            .map(|h| h.revision)
            .ok_or_else(|| anyhow!("etcd put: no revision"))?;
        let excluders = if write {
            prefix
        } else {
            format!("{prefix}write/")
        };
        match self
            .wait_for_older(excluders.as_bytes(), created, deadline)
            .await
        {
            Ok(()) => Ok(key),
            Err(e) => {
                let _ = self.delete(&key).await;
                Err(e)
            }
        }
    }

    /// Waits until no key under `prefix` created before revision `created`
    /// is left (the recipe's `waitOnLastRev`, in a loop).
    async fn wait_for_older(
        &mut self,
        prefix: &[u8],
        created: i64,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<()> {
        let range = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Create as i32,
            max_create_revision: created - 1,
            ..Default::default()
        };
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let answer = self
                .grpc
                .call("range", Patience::Wait(left), |c| {
                    let range = range.clone();
                    async move { KvClient::new(c).range(leader_required(range)).await }
                })
                .await?;
            let Some(older) = answer.kvs.into_iter().next() else {
                return Ok(());
            };
            let seen = answer
                .header
                .map(|h| h.revision)
                .ok_or_else(|| anyhow!("etcd range: no revision"))?;
            // From just after the range, so a delete in between is seen.
            let watch = WatchCreateRequest {
                key: older.key,
                start_revision: seen + 1,
                ..Default::default()
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::timeout(left, self.wait_for_delete(watch))
                .await
                .map_err(|_| anyhow!("rwmutex: not acquired within the timeout"))??;
        }
    }

    /// Opens a watch as `create` says and returns at its first DELETE
    /// event.
    async fn wait_for_delete(&mut self, create: WatchCreateRequest) -> anyhow::Result<()> {
        let request = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        };
        // The request stream stays open: the watch lives as long as it.
        let requests = tokio_stream::once(request).chain(tokio_stream::pending());
        let mut events = WatchClient::new(self.grpc.channel()?)
            .watch(requests)
            .await
            .map_err(|s| anyhow!("etcd watch: {}", s.message()))?
            .into_inner();
        loop {
            let answer = events
                .message()
                .await
                .map_err(|s| anyhow!("etcd watch: {}", s.message()))?
                .ok_or_else(|| anyhow!("etcd watch: the stream ended"))?;
            if answer.canceled {
                bail!("etcd watch: canceled: {}", answer.cancel_reason);
            }
            if answer
                .events
                .iter()
                .any(|e| e.r#type == EventType::Delete as i32)
            {
                return Ok(());
            }
        }
    }

    /// Deletes `key`: releases an RWMutex.
    pub async fn delete(&mut self, key: &[u8]) -> anyhow::Result<()> {
        let delete = DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        self.grpc
            .call("delete", Patience::Quick, |c| {
                let delete = delete.clone();
                async move { KvClient::new(c).delete_range(leader_required(delete)).await }
            })
            .await
            .map(|_| ())
    }

    /// v3lock Lock on our lease, waiting up to `timeout`; returns the
    /// owner key.
    pub async fn lock(&mut self, name: &str, timeout: Duration) -> anyhow::Result<Vec<u8>> {
        let lock = LockRequest {
            name: name.as_bytes().to_vec(),
            lease: self.lease,
        };
        let answer = self
            .grpc
            .call("lock", Patience::Wait(timeout), |c| {
                let lock = lock.clone();
                async move { LockClient::new(c).lock(leader_required(lock)).await }
            })
            .await?;
        Ok(answer.key)
    }

    /// v3lock Unlock of `key`.
    pub async fn unlock(&mut self, key: &[u8]) -> anyhow::Result<()> {
        let unlock = UnlockRequest { key: key.to_vec() };
        self.grpc
            .call("unlock", Patience::Quick, |c| {
                let unlock = unlock.clone();
                async move { LockClient::new(c).unlock(leader_required(unlock)).await }
            })
            .await
            .map(|_| ())
    }

    /// v3election Campaign on our lease: returns once elected. A
    /// candidate that resigned campaigns again with a new key, so the key's
    /// create revision (`rev`) grows with every new leader, like a term.
    pub async fn campaign(
        &mut self,
        name: &str,
        value: &str,
        timeout: Duration,
    ) -> anyhow::Result<LeaderKey> {
        let campaign = CampaignRequest {
            name: name.as_bytes().to_vec(),
            lease: self.lease,
            value: value.as_bytes().to_vec(),
        };
        let answer = self
            .grpc
            .call("campaign", Patience::Wait(timeout), |c| {
                let campaign = campaign.clone();
                async move {
                    ElectionClient::new(c)
                        .campaign(leader_required(campaign))
                        .await
                }
            })
            .await?;
        let key = answer
            .leader
            .ok_or_else(|| anyhow!("etcd campaign: no leader key"))?;
        Ok(LeaderKey {
            rev: u64::try_from(key.rev)?,
            key,
        })
    }

    /// v3election Resign of a leadership `campaign` returned.
    pub async fn resign(&mut self, leader: &LeaderKey) -> anyhow::Result<()> {
        let resign = ResignRequest {
            leader: Some(leader.key.clone()),
        };
        self.grpc
            .call("resign", Patience::Quick, |c| {
                let resign = resign.clone();
                async move { ElectionClient::new(c).resign(leader_required(resign)).await }
            })
            .await
            .map(|_| ())
    }

    /// Revokes the lease.
    pub async fn close(mut self) {
        self.renewing.abort();
        let id = self.lease;
        let _ = self
            .grpc
            .call(
                "lease revoke",
                Patience::Wait(Duration::from_secs(2)),
                |c| async move {
                    LeaseClient::new(c)
                        .lease_revoke(LeaseRevokeRequest { id })
                        .await
                },
            )
            .await;
    }
}

/// The leases of one benchmark connection, each with keys attached (as
/// etcd's concurrency package holds a lock: a key under the session's
/// lease).
pub struct LeaseGroup {
    endpoints: Vec<String>,
    member: usize,
    channel: Channel,
    leases: Vec<i64>,
}

impl LeaseGroup {
    /// On one connection to member `group` (of `endpoints`, round robin),
    /// grants `leases` leases of `ttl` and puts `keys_per_lease` empty
    /// keys `{name}/{lease}/{k}` under each.
    pub async fn open(
        endpoints: &[String],
        group: usize,
        leases: usize,
        keys_per_lease: usize,
        ttl: Duration,
        name: &str,
    ) -> anyhow::Result<LeaseGroup> {
        let channel = Grpc::new(endpoints.to_vec(), group).channel()?;
        let ttl_secs = ttl.as_secs().max(2) as i64;
        let grant_on = channel.clone();
        let leases = fan_out(IN_FLIGHT, 0..leases, move |_| {
            let channel = grant_on.clone();
            async move {
                let granted = LeaseClient::new(channel)
                    .lease_grant(LeaseGrantRequest {
                        ttl: ttl_secs,
                        id: 0,
                    })
                    .await
                    .map_err(|s| anyhow!("etcd lease grant: {}", s.message()))?
                    .into_inner();
                anyhow::Ok(granted.id)
            }
        })
        .await?;
        let puts = leases
            .iter()
            .flat_map(|&lease| (0..keys_per_lease).map(move |k| (lease, k)));
        let put_on = channel.clone();
        fan_out(IN_FLIGHT, puts, move |(lease, k)| {
            let key = format!("{name}/{lease:x}/{k}").into_bytes();
            let put = put_request(key, Vec::new(), lease);
            let channel = put_on.clone();
            async move {
                KvClient::new(channel)
                    .put(leader_required(put))
                    .await
                    .map_err(|s| anyhow!("etcd put: {}", s.message()))?;
                anyhow::Ok(())
            }
        })
        .await?;
        Ok(LeaseGroup {
            endpoints: endpoints.to_vec(),
            member: group,
            channel,
            leases,
        })
    }

    /// A keeper of these leases on one LeaseKeepAlive stream on the
    /// group's connection, as etcd's client keeps all of its leases.
    pub fn keeper(&self) -> Arc<LeaseKeeper> {
        let grpc = Grpc::on(self.channel.clone(), self.endpoints.clone(), self.member);
        LeaseKeeper::start(grpc, self.leases.clone())
    }

    /// Revokes every lease (their keys go with them).
    pub async fn close(self) {
        let channel = self.channel;
        let _ = fan_out(IN_FLIGHT, self.leases, move |id| {
            let channel = channel.clone();
            async move {
                let _ = LeaseClient::new(channel)
                    .lease_revoke(LeaseRevokeRequest { id })
                    .await;
                anyhow::Ok(())
            }
        })
        .await;
    }
}

/// A keepalive asked for: the lease, and whom to tell whether etcd
/// answered that it lives.
type Asked = (i64, oneshot::Sender<bool>);

/// Keeps leases alive on one LeaseKeepAlive stream, as etcd's client keeps
/// all of its leases. When the stream breaks (its member died), the
/// keepalives it had not answered fail and it is opened again on the next
/// member.
pub struct LeaseKeeper {
    leases: Vec<i64>,
    asks: mpsc::UnboundedSender<Asked>,
    /// Runs the stream; ends with the keeper.
    _streaming: AbortOnDrop,
}

/// How long a keeper waits before opening its stream again.
const REOPEN_PAUSE: Duration = Duration::from_millis(100);

impl LeaseKeeper {
    /// Starts keeping `leases` alive through `grpc` (keepalives are sent
    /// only when asked for).
    pub fn start(grpc: Grpc, leases: Vec<i64>) -> Arc<LeaseKeeper> {
        let (asks, asked) = mpsc::unbounded_channel();
        Arc::new(LeaseKeeper {
            leases,
            asks,
            _streaming: AbortOnDrop(tokio::spawn(stream_keepalives(grpc, asked))),
        })
    }

    /// How many leases it keeps.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// Sends a keepalive of lease `j` now; the future says whether etcd
    /// answered that the lease lives (false if the stream broke first).
    pub fn keep_alive(&self, j: usize) -> impl Future<Output = bool> + Send + 'static {
        let (done, answer) = oneshot::channel();
        if let Some(&id) = self.leases.get(j) {
            let _ = self.asks.send((id, done));
        }
        async move { answer.await.unwrap_or(false) }
    }
}

/// A [`LeaseKeeper`]'s task: sends what is asked on the stream and, since
/// etcd answers a stream's keepalives in order, gives each answer to the
/// oldest keepalive not yet answered. Ends when the keeper is dropped.
async fn stream_keepalives(mut grpc: Grpc, mut asked: mpsc::UnboundedReceiver<Asked>) {
    loop {
        let Ok(channel) = grpc.channel() else {
            return;
        };
        let (send, requests) = mpsc::unbounded_channel();
        let requests = tokio_stream::wrappers::UnboundedReceiverStream::new(requests);
        // etcd sends the response headers only with the first answer: the
        // call is made by a task of its own while requests go out.
        let mut opening =
            tokio::spawn(async move { LeaseClient::new(channel).lease_keep_alive(requests).await });
        let mut answers: Option<tonic::Streaming<LeaseKeepAliveResponse>> = None;
        let mut unanswered: VecDeque<Asked> = VecDeque::new();
        loop {
            let streaming = answers.is_some();
            let next_answer = async {
                match answers.as_mut() {
                    Some(stream) => stream.message().await.ok().flatten(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ask = asked.recv() => {
                    let Some((id, done)) = ask else {
                        opening.abort();
                        return;
                    };
                    if send.send(LeaseKeepAliveRequest { id }).is_err() {
                        break;
                    }
                    unanswered.push_back((id, done));
                }
                opened = &mut opening, if !streaming => match opened {
                    Ok(Ok(response)) => answers = Some(response.into_inner()),
                    _ => break,
                },
                answer = next_answer, if streaming => {
                    let Some(answer) = answer else { break };
                    if let Some((id, done)) = unanswered.pop_front() {
                        let _ = done.send(answer.id == id && answer.ttl > 0);
                    }
                }
            }
        }
        // The unanswered keepalives fail now, as their senders drop.
        drop(unanswered);
        opening.abort();
        grpc.rotate();
        tokio::time::sleep(REOPEN_PAUSE).await;
    }
}

/// A won election, as Campaign returns it and Resign takes it back.
#[derive(Debug, Clone)]
pub struct LeaderKey {
    /// etcd's leader key, passed back to Resign.
    key: pb::v3electionpb::LeaderKey,
    /// Create revision of the leader's key.
    pub rev: u64,
}

/// A v3election Observe stream: each message is the current leader's
/// key; etcd sends one when a leader exists and one per new leader (and
/// per Proclaim, which the bench does not use).
pub struct Observer {
    stream: ObserveStream,
}

/// etcd sends an Observe's response headers only with its first message
/// (once there is a leader), so the call is made by a task of its own
/// (the request goes out at once) and its answer taken by the first
/// `next`.
enum ObserveStream {
    Opening(tokio::task::JoinHandle<Result<tonic::Response<LeaderAnswers>, Status>>),
    Open(LeaderAnswers),
}

type LeaderAnswers = tonic::Streaming<pb::v3electionpb::LeaderResponse>;

impl Observer {
    /// Sends an Observe request for election `name` on `channel`.
    pub fn open(channel: Channel, name: &str) -> Observer {
        let request = LeaderRequest {
            name: name.as_bytes().to_vec(),
        };
        let call = tokio::spawn(async move { ElectionClient::new(channel).observe(request).await });
        Observer {
            stream: ObserveStream::Opening(call),
        }
    }

    /// The create revision of the next observed leader key; waits as long
    /// as it takes (the caller bounds it).
    pub async fn next(&mut self) -> anyhow::Result<u64> {
        if let ObserveStream::Opening(call) = &mut self.stream {
            let answers = call
                .await?
                .map_err(|s| anyhow!("etcd observe: {}", s.message()))?
                .into_inner();
            self.stream = ObserveStream::Open(answers);
        }
        let ObserveStream::Open(answers) = &mut self.stream else {
            bail!("etcd observe: not open");
        };
        let answer = answers
            .message()
            .await
            .map_err(|s| anyhow!("etcd observe: {}", s.message()))?
            .ok_or_else(|| anyhow!("etcd observe: the stream ended"))?;
        let kv = answer
            .kv
            .ok_or_else(|| anyhow!("etcd observe: no leader key"))?;
        Ok(u64::try_from(kv.create_revision)?)
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let ObserveStream::Opening(call) = &self.stream {
            call.abort();
        }
    }
}

/// A watcher of one election that sees leaders change as etcd's Go client
/// does (`concurrency.Election.Observe`: a range of the election's keys,
/// then a watch on them; the leader is the key created first), its watch
/// sharing one Watch stream with the others on its connection, as the Go
/// client multiplexes every watch of a connection on one stream.
pub struct ElectionWatch {
    /// The connection and election, to watch again on a stream of its own
    /// if the shared one ends.
    channel: Channel,
    name: String,
    /// Candidates' keys now -> their create revision.
    keys: HashMap<Vec<u8>, i64>,
    /// The leader last reported (its key's create revision).
    reported: Option<i64>,
    events: mpsc::Receiver<Vec<pb::mvccpb::Event>>,
    /// Reads the shared stream; ends with the group's last watcher.
    _stream: Arc<AbortOnDrop>,
}

/// Aborts a task when dropped (a lease keeper's stream, a group's shared
/// watch stream).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Events a watcher may have waiting before the shared stream waits for
/// it.
const WATCH_BACKLOG: usize = 64;

impl ElectionWatch {
    /// `count` watchers of election `name` (its candidates' keys are under
    /// `name/`) on one Watch stream on `channel`.
    pub async fn group(
        channel: Channel,
        name: &str,
        count: usize,
    ) -> anyhow::Result<Vec<ElectionWatch>> {
        let prefix = format!("{name}/").into_bytes();
        let range = RangeRequest {
            key: prefix.clone(),
            range_end: prefix_end(&prefix),
            keys_only: true,
            ..Default::default()
        };
        let now = KvClient::new(channel.clone())
            .range(leader_required(range))
            .await
            .map_err(|s| anyhow!("etcd range: {}", s.message()))?
            .into_inner();
        let revision = now
            .header
            .map(|h| h.revision)
            .ok_or_else(|| anyhow!("etcd range: no revision"))?;
        let keys: HashMap<Vec<u8>, i64> = now
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.create_revision))
            .collect();
        // Watch ids are ours (etcd 3.4+): watcher i has id i + 1.
        let creates = (0..count).map(|i| WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.clone(),
                range_end: prefix_end(&prefix),
                start_revision: revision + 1,
                watch_id: i as i64 + 1,
                ..Default::default()
            })),
        });
        let requests =
            tokio_stream::iter(creates.collect::<Vec<_>>()).chain(tokio_stream::pending());
        let channel_for_reopen = channel.clone();
        let answers = WatchClient::new(channel)
            .watch(requests)
            .await
            .map_err(|s| anyhow!("etcd watch: {}", s.message()))?
            .into_inner();
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::channel(WATCH_BACKLOG)).unzip();
        let stream = Arc::new(AbortOnDrop(tokio::spawn(hand_out_events(answers, senders))));
        Ok(receivers
            .into_iter()
            .map(|events| ElectionWatch {
                channel: channel_for_reopen.clone(),
                name: name.to_string(),
                keys: keys.clone(),
                reported: None,
                events,
                _stream: stream.clone(),
            })
            .collect())
    }

    /// The create revision of the next leader seen (the current one, if
    /// any, first); waits as long as it takes (the caller bounds it).
    pub async fn next_leader(&mut self) -> anyhow::Result<u64> {
        loop {
            if let Some(&leader) = self.keys.values().min() {
                if self.reported != Some(leader) {
                    self.reported = Some(leader);
                    return Ok(u64::try_from(leader)?);
                }
            }
            let Some(events) = self.events.recv().await else {
                // The shared stream ended or this watch was canceled:
                // watch again alone, from the keys as they are now.
                let fresh = ElectionWatch::group(self.channel.clone(), &self.name, 1)
                    .await?
                    .pop()
                    .ok_or_else(|| anyhow!("etcd watch: no watch opened"))?;
                *self = ElectionWatch {
                    reported: self.reported,
                    ..fresh
                };
                continue;
            };
            for event in events {
                let Some(kv) = event.kv else { continue };
                if event.r#type == EventType::Delete as i32 {
                    self.keys.remove(&kv.key);
                } else {
                    self.keys.insert(kv.key, kv.create_revision);
                }
            }
        }
    }
}

/// Reads a Watch stream and gives each watch's events to its watcher
/// (watch id i + 1 -> `watchers[i]`); a canceled watch's watcher is told by
/// its channel closing.
async fn hand_out_events(
    mut answers: tonic::Streaming<pb::etcdserverpb::WatchResponse>,
    mut watchers: Vec<mpsc::Sender<Vec<pb::mvccpb::Event>>>,
) {
    while let Ok(Some(answer)) = answers.message().await {
        let Some(index) = usize::try_from(answer.watch_id - 1)
            .ok()
            .filter(|&i| i < watchers.len())
        else {
            continue;
        };
        if answer.canceled {
            // A closed sender: the watcher's next `recv` ends.
            let (closed, _) = mpsc::channel(1);
            watchers[index] = closed;
        } else if !answer.events.is_empty() {
            let _ = watchers[index].send(answer.events).await;
        }
    }
}

/// What a member says of itself.
#[derive(Debug, Clone, Copy)]
pub struct MemberStatus {
    /// Its member id.
    pub member: u64,
    /// The leader's member id (0: none).
    pub leader: u64,
    /// Its database's size in bytes (what a snapshot of it holds).
    pub db_size: u64,
}

/// Member `endpoint`'s status.
pub async fn member_status(endpoint: &str) -> anyhow::Result<MemberStatus> {
    let mut grpc = Grpc::new(vec![endpoint.to_string()], 0);
    let status = grpc
        .call(
            "status",
            Patience::Wait(Duration::from_secs(2)),
            |c| async move { MaintenanceClient::new(c).status(StatusRequest {}).await },
        )
        .await?;
    let member = status
        .header
        .map(|h| h.member_id)
        .ok_or_else(|| anyhow!("etcd status: no header"))?;
    Ok(MemberStatus {
        member,
        leader: status.leader,
        db_size: u64::try_from(status.db_size)?,
    })
}

/// Puts `key` = `value` with no lease (state that outlives the client).
pub async fn put(grpc: &mut Grpc, key: Vec<u8>, value: Vec<u8>) -> anyhow::Result<()> {
    let put = put_request(key, value, 0);
    grpc.call("put", Patience::Quick, |c| {
        let put = put.clone();
        async move { KvClient::new(c).put(leader_required(put)).await }
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_past_its_last_byte() {
        assert_eq!(prefix_end(b"rw/a/"), b"rw/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
