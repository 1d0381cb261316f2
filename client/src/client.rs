//! `Client`: the handle applications hold.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::debug;

use crate::clock::Clock;
use crate::config::Config;
use crate::connection::Connector;
use crate::election::Election;
use crate::error::Error;
use crate::lease_watch::LeaseWatch;
use crate::lock::{LockBuilder, LockMode, RwLock};
use crate::proto::{self, request::Op, response, ErrorCode, Request};
use crate::session::{Renewal, Session};
use crate::tls::TlsMaterial;
use crate::wire::{acknowledgement, CLIENT_ALPN_V1, MAX_RENUMBERED_SENDS};

/// How a client connects and what session it keeps.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Nodes as `host:port`.
    pub endpoints: Vec<String>,
    /// Total time one call may take across retries and failover.
    pub request_timeout: Duration,
    /// Time to wait for one node to accept a connection.
    pub connect_timeout: Duration,
    /// How long a node may stay silent before the client fails over
    /// (see [`Config::dead_node_timeout`]).
    pub dead_node_timeout: Duration,
    /// TTL of the client's session.
    pub session_ttl: Duration,
    /// The clock drift bound ρ, in parts per million, the lease rule must
    /// tolerate. The client uses the larger of this and the cluster's own
    /// bound, which the node it first reaches reports.
    pub max_clock_drift_ppm: u32,
    /// How often the client asks the cluster for its members (see
    /// [`Config::member_sync_interval`]); zero: never.
    pub member_sync_interval: Duration,
}

/// A connection to a Paxlock cluster with one session, kept alive in the
/// background. Cheap to clone; clones share the connection and session.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    pub(crate) session: Arc<Session>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    connector: Connector,
    request_timeout: Duration,
    /// The drift bound the lease rule allows for: the larger of the
    /// client's and the cluster's (learnt at connect).
    drift_ppm: AtomicU32,
    next_request_id: AtomicU64,
    /// Request ids sent and not yet answered, each marked `true` if it is
    /// a long wait (see [`acknowledgement`]).
    in_flight: Mutex<BTreeMap<u64, bool>>,
    /// Undo requests sent in the background for waits whose callers left,
    /// by what they undo (see `undo`): a new wait on the same lock or
    /// election goes out only after them, or an undo would take it back.
    pub(crate) undoing: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Watches the leases of every session this client opens (one task
    /// for all of them).
    pub(crate) leases: LeaseWatch,
}

impl Client {
    /// Loads the certificates, connects to one of the configured nodes and
    /// opens the client's session.
    pub async fn connect(config: Config) -> Result<Client, Error> {
        config.validate()?;
        let tls = TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
        let options = ConnectOptions {
            endpoints: config.endpoints,
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
            dead_node_timeout: config.dead_node_timeout,
            session_ttl: config.session_ttl,
            max_clock_drift_ppm: config.max_clock_drift_ppm,
            member_sync_interval: config.member_sync_interval,
        };
        Self::connect_with(tls, options).await
    }

    /// Like `connect`, with TLS material already in memory.
    pub async fn connect_with(tls: TlsMaterial, options: ConnectOptions) -> Result<Client, Error> {
        let quic = tls.client_config(&[CLIENT_ALPN_V1])?;
        let inner = Arc::new(Inner {
            connector: Connector::new(
                quic,
                options.endpoints,
                options.connect_timeout,
                options.dead_node_timeout,
            )?,
            request_timeout: options.request_timeout,
            drift_ppm: AtomicU32::new(options.max_clock_drift_ppm),
            next_request_id: AtomicU64::new(1),
            in_flight: Mutex::new(BTreeMap::new()),
            undoing: Mutex::new(HashMap::new()),
            leases: LeaseWatch::new(Clock::boot()),
        });
        // A lease rule that allows for less drift than the cluster's would
        // let the client trust a lock past the cluster's expiry of it.
        let cluster_drift = match inner.call(0, Op::Hello(proto::Hello::default())).await? {
            response::Result::Hello(hello) => hello.max_clock_drift_ppm,
            other => return Err(unexpected(&other)),
        };
        inner.drift_ppm.fetch_max(cluster_drift, Ordering::Relaxed);
        let session = Session::open(
            &inner,
            options.session_ttl,
            inner.drift_ppm(),
            Renewal::Background,
        )
        .await?;
        if !options.member_sync_interval.is_zero() {
            let every = options.member_sync_interval;
            tokio::spawn(sync_endpoints(Arc::downgrade(&inner), every));
        }
        Ok(Client { inner, session })
    }

    /// The session id (for logs and for correlating with `paxlock status`).
    pub fn session_id(&self) -> u64 {
        self.session.id
    }

    /// Whether the session is still trusted by the lease rule.
    pub fn is_session_valid(&self) -> bool {
        self.session.is_valid()
    }

    /// Resolves when the session can no longer be trusted; every lock and
    /// leadership of this client is then lost.
    pub async fn session_lost(&self) {
        self.session.lost().await
    }

    /// Starts building an acquire of lock `name`. On a name in use as a
    /// read/write lock this takes it for writing; on a semaphore it fails
    /// with `WRONG_KIND`.
    pub fn lock(&self, name: impl Into<String>) -> LockBuilder {
        LockBuilder::new(self.clone(), name.into(), LockMode::Exclusive)
    }

    /// Starts building an acquire of one permit of semaphore `name`, which
    /// has `permits` permits (1 to 1024): the first acquire of a name
    /// fixes them, and every later one must name the same
    /// (`PERMITS_MISMATCH`). One permit per session: more permits of one
    /// semaphore need a session each (`ttl`).
    pub fn semaphore(&self, name: impl Into<String>, permits: u32) -> LockBuilder {
        LockBuilder::new(self.clone(), name.into(), LockMode::Permit { permits })
    }

    /// A handle on read/write lock `name`.
    pub fn rwlock(&self, name: impl Into<String>) -> RwLock {
        RwLock::new(self.clone(), name.into())
    }

    /// A handle on election `name`.
    pub fn election(&self, name: impl Into<String>) -> Election {
        Election::new(self.clone(), name.into())
    }

    /// Asks a node who it is and who leads.
    pub async fn hello(&self) -> Result<proto::HelloOk, Error> {
        match self
            .inner
            .call(0, Op::Hello(proto::Hello::default()))
            .await?
        {
            response::Result::Hello(ok) => Ok(ok),
            other => Err(unexpected(&other)),
        }
    }

    /// The cluster as a node sees it: nodes, leader, commit index, lag.
    pub async fn status(&self) -> Result<proto::StatusOk, Error> {
        match self
            .inner
            .call(0, Op::Status(proto::Status::default()))
            .await?
        {
            response::Result::Status(ok) => Ok(ok),
            other => Err(unexpected(&other)),
        }
    }

    /// Closes the session (releasing everything it holds) and the connection.
    pub async fn close(&self) -> Result<(), Error> {
        let result = self
            .inner
            .call(self.session.id, Op::CloseSession(proto::CloseSession {}))
            .await;
        self.session.mark_closed();
        self.inner.connector.close();
        result.map(|_| ())
    }
}

/// Keeps the client's endpoints in step with the cluster's members (see
/// `Connector::learn_members`) until the client is dropped. A node that
/// does not answer `ListMembers` (an earlier release) changes nothing.
async fn sync_endpoints(inner: std::sync::Weak<Inner>, every: Duration) {
    loop {
        let Some(client) = inner.upgrade() else {
            return;
        };
        let asked = client
            .call_with_timeout(0, Op::ListMembers(proto::ListMembers {}), every)
            .await;
        // A node that has not applied its first entry yet lists no voters:
        // nothing to learn from it.
        if let Ok(response::Result::Members(list)) = asked {
            if list.members.iter().any(|m| m.voter) {
                let addrs = list
                    .members
                    .into_iter()
                    .filter(|m| !m.addr.is_empty())
                    .map(|m| m.addr)
                    .collect();
                client.connector.learn_members(addrs).await;
            }
        }
        drop(client);
        tokio::time::sleep(every).await;
    }
}

impl Inner {
    /// The drift bound, in ppm, every lease rule of this client allows for.
    pub(crate) fn drift_ppm(&self) -> u32 {
        self.drift_ppm.load(Ordering::Relaxed)
    }

    /// Sends one request for `session` (0: none) and returns its result,
    /// retrying with the same request id across nodes until the timeout.
    pub(crate) async fn call(&self, session: u64, op: Op) -> Result<response::Result, Error> {
        self.call_with_timeout(session, op, self.request_timeout)
            .await
    }

    /// Like `call`, with an explicit overall timeout (blocking acquires).
    pub(crate) async fn call_with_timeout(
        &self,
        session: u64,
        op: Op,
        timeout: Duration,
    ) -> Result<response::Result, Error> {
        self.call_counting_attempts(session, op, timeout)
            .await
            .map(|(result, _)| result)
    }

    /// Like `call_with_timeout`, also saying whether the answer came after
    /// more than one attempt (the request reached the cluster more than
    /// once, through more than one server-side handler).
    ///
    /// A request refused as acknowledged before it was answered was never
    /// applied (a withdrawal of a later wait fenced it): it is sent again
    /// under a new request id, at most [`MAX_RENUMBERED_SENDS`] times,
    /// within the same timeout.
    pub(crate) async fn call_counting_attempts(
        &self,
        session: u64,
        op: Op,
        timeout: Duration,
    ) -> Result<(response::Result, u32), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut attempts = 0;
        let mut renumbered = 0;
        let mut op = Some(op);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.send_numbered(session, &mut op, left).await {
                Ok((result, tries)) => return Ok((result, attempts + tries)),
                Err(e)
                    if e.code() == Some(ErrorCode::RequestIdAcknowledged)
                        && renumbered < MAX_RENUMBERED_SENDS =>
                {
                    renumbered += 1;
                    attempts += 1;
                    debug!(session, "request fenced by a withdrawal before it was applied; sending it again under a new id");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Numbers `op` as the session's next request and sends it (the same
    /// request id on every attempt) until answered or `timeout` passes.
    /// `op` is moved into the request and back once the call returns, so a
    /// send under a new id needs no copy of it.
    async fn send_numbered(
        &self,
        session: u64,
        op: &mut Option<Op>,
        timeout: Duration,
    ) -> Result<(response::Result, u32), Error> {
        let is_wait = match op {
            Some(Op::Acquire(acquire) | Op::AcquireWithValue(acquire)) => acquire.wait,
            Some(Op::Campaign(_)) => true,
            _ => false,
        };
        let (request_id, ack_below, waiting) = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            // The cluster keeps the answers of at most this many waits of
            // a session and refuses every request that lists more, so one
            // wait too many must not leave: it would stop the session's
            // keepalives too.
            if is_wait && in_flight.values().filter(|w| **w).count() >= MAX_RUNNING_WAITS {
                return Err(Error::TooManyWaits {
                    limit: MAX_RUNNING_WAITS,
                });
            }
            // Numbered under the lock: every smaller id is then either in
            // `in_flight` or answered, never about to be sent unlisted.
            let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
            in_flight.insert(request_id, is_wait);
            let (ack_below, waiting) = acknowledgement(&in_flight, request_id);
            (request_id, ack_below, waiting)
        };
        let mut request = Request {
            request_id,
            session_id: session,
            ack_below,
            waiting,
            op: op.take(),
        };
        // Leaves `in_flight` however the call ends, dropped by its caller
        // included: a stale entry would hold the session's acknowledgement
        // back for good.
        let _answered = InFlight {
            in_flight: &self.in_flight,
            request_id,
        };
        let called = self.connector.call(&request, timeout).await;
        *op = request.op.take();
        let (response, attempts) = called?;
        if let Some(error) = response.error {
            return Err(Error::from_proto(error));
        }
        response
            .result
            .map(|result| (result, attempts))
            .ok_or_else(|| Error::Protocol("response carries neither a result nor an error".into()))
    }

    /// Opens a watch stream: `op` is a `Watch` or a `WatchLock`.
    pub(crate) async fn open_watch(&self, op: Op) -> Result<quinn::RecvStream, Error> {
        let request = Request {
            request_id: 0,
            session_id: 0,
            ack_below: 0,
            waiting: Vec::new(),
            op: Some(op),
        };
        self.connector.open(&request, self.request_timeout).await
    }
}

/// Most blocking acquires and campaigns one `Client` (one session) runs at
/// once. The cluster keeps at most `max_unacked_replies_per_session` (by
/// default 128) answers of a session, the running waits' among them, and
/// refuses requests past it: half of that leaves the session's other
/// requests room.
pub const MAX_RUNNING_WAITS: usize = 64;

/// A request's entry in `Inner::in_flight`, removed when dropped.
struct InFlight<'a> {
    in_flight: &'a Mutex<BTreeMap<u64, bool>>,
    request_id: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.request_id);
    }
}

pub(crate) fn unexpected(result: &response::Result) -> Error {
    Error::Protocol(format!("unexpected answer {result:?}"))
}
