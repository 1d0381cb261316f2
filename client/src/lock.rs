//! Distributed locks with fencing tokens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{unexpected, Client};
use crate::error::Error;
use crate::proto::{self, request::Op, response, ErrorCode};
use crate::session::{Renewal, Session, SessionChoice};
use crate::undo::{settle, undo, undo_in_background, UndoOnDrop};

/// How long a blocking acquire with no timeout may wait: effectively forever.
const NO_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a guard holds (PROTOCOL.md, "Semaphores and read/write locks").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// A lock: the only holder.
    Exclusive,
    /// A permit of a semaphore of this many permits.
    Permit {
        /// The semaphore's permits.
        permits: u32,
    },
    /// A read/write lock for reading: beside other readers.
    Read,
    /// A read/write lock for writing: the only holder.
    Write,
}

impl LockMode {
    /// The acquire's mode on the wire.
    fn wire(self) -> proto::acquire::Mode {
        match self {
            LockMode::Exclusive => proto::acquire::Mode::Lock,
            LockMode::Permit { .. } => proto::acquire::Mode::Permit,
            LockMode::Read => proto::acquire::Mode::Read,
            LockMode::Write => proto::acquire::Mode::Write,
        }
    }
}

/// Builds an acquire of one lock, semaphore permit or read/write lock
/// mode; finish with `acquire` or `try_acquire`.
#[derive(Debug)]
pub struct LockBuilder {
    client: Client,
    name: String,
    mode: LockMode,
    timeout: Option<Duration>,
    value: Vec<u8>,
    session: SessionChoice,
}

impl LockBuilder {
    pub(crate) fn new(client: Client, name: String, mode: LockMode) -> Self {
        LockBuilder {
            client,
            name,
            mode,
            timeout: None,
            value: Vec::new(),
            session: SessionChoice::shared(),
        }
    }

    /// Keeps `value` (up to 64 KiB: who holds it and why, such as a host
    /// name or a job id) with the grant; `describe_lock` shows it while
    /// this grant lasts. Needs a cluster that speaks protocol 3: during a
    /// rolling upgrade from the previous release the acquire is refused
    /// (`UNSUPPORTED`, or `INVALID_REQUEST` from a node of that release),
    /// never granted without its value. Kept with locks only: a semaphore
    /// or read/write lock acquire with a value is refused.
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = value.into();
        self
    }

    /// Gives up a blocking acquire after `timeout`; the cluster cancels
    /// the wait (a logged command), so no grant can arrive afterwards.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Holds the lock on its own session with this TTL instead of the
    /// client's shared session.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.session.ttl = Some(ttl);
        self
    }

    /// No background keepalive: the caller must call `LockGuard::renew`
    /// before `valid_until`, or the lease lapses. For work loops that want
    /// the lock to go away when they stall. Implies an own session.
    pub fn manual_renewal(mut self) -> Self {
        self.session.renewal = Renewal::Manual;
        self
    }

    /// Waits (in FIFO order) until the lock is granted or the timeout passes.
    ///
    /// One guard per grant: on the client's shared session, acquiring a
    /// lock this client already holds (or is acquiring) fails with
    /// [`Error::AlreadyHeld`] instead of handing out a second guard for the
    /// same grant, which would release the lock when either is dropped.
    /// Share the guard, or acquire with an own session (`ttl`), which
    /// queues behind the holder like any other session.
    pub async fn acquire(self) -> Result<LockGuard, Error> {
        match self.request(true).await? {
            Some(guard) => Ok(guard),
            None => Err(Error::Protocol("a blocking acquire answered busy".into())),
        }
    }

    /// Takes the lock if it is free now; `Ok(None)` if another session holds it.
    pub async fn try_acquire(self) -> Result<Option<LockGuard>, Error> {
        self.request(false).await
    }

    async fn request(self, wait: bool) -> Result<Option<LockGuard>, Error> {
        let own_session = self.session.is_own();
        let session = self.session.session(&self.client).await?;
        session.ensure_valid()?;
        let guarded = if own_session {
            None
        } else {
            Some(GuardedName::new(&session, &self.name)?)
        };
        let undo_key = lock_key(&self.name);
        settle(&self.client, &undo_key).await;
        // Armed until a guard is handed out or the wait is withdrawn here
        // (an own session ends with its wait when its last handle drops).
        let mut undo_on_drop = if wait && !own_session {
            UndoOnDrop::armed(&self.client, &session, undo_key, self.cancel())
        } else {
            UndoOnDrop::unarmed()
        };
        let timeout = self.timeout.unwrap_or(NO_TIMEOUT);
        let acquire = proto::Acquire {
            name: self.name.clone(),
            wait,
            timeout_ms: self
                .timeout
                .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            value: self.value.clone(),
            mode: self.mode.wire().into(),
            permits: match self.mode {
                LockMode::Permit { permits } => permits,
                _ => 0,
            },
        };
        // Each shape its own operation, which an earlier release refuses
        // rather than grant a lock without what it asked (see the proto).
        let op = if self.mode != LockMode::Exclusive {
            Op::AcquireShared(acquire)
        } else if acquire.value.is_empty() {
            Op::Acquire(acquire)
        } else {
            Op::AcquireWithValue(acquire)
        };
        // The node waits up to `timeout`; allow for the round trips on top.
        let call_timeout = timeout.saturating_add(Duration::from_secs(10));
        let result = self
            .client
            .inner
            .call_counting_attempts(session.id, op, call_timeout)
            .await;
        let granted = match result {
            Ok((response::Result::Granted(granted), 1)) => granted,
            Ok((response::Result::Granted(granted), _retried)) => {
                // A retried acquire may be answered from the lock's state by
                // a second handler while the first one, timing out, is
                // withdrawing the same request: that withdrawal would release
                // this grant after we report it. A logged check with a newer
                // request id settles it: after it, the withdrawal is stale;
                // before it, the check finds the grant gone.
                let check = Op::Renew(proto::Renew {
                    name: self.name.clone(),
                    fencing_token: grant_token(&granted),
                });
                match self.client.inner.call(session.id, check).await {
                    Ok(_) => granted,
                    Err(e) => {
                        if own_session {
                            session.close(&self.client.inner).await;
                        }
                        return Err(match e.code() {
                            Some(ErrorCode::StaleToken | ErrorCode::NotHeld) => Error::Server {
                                code: ErrorCode::Timeout,
                                message: format!(
                                    "lock {:?} was granted, then withdrawn by a cancel that raced a retry; acquire again",
                                    self.name
                                ),
                                retryable: true,
                            },
                            _ => e,
                        });
                    }
                }
            }
            Ok((other, _)) => return Err(unexpected(&other)),
            Err(e) if e.code() == Some(ErrorCode::Busy) => {
                if own_session {
                    session.close(&self.client.inner).await;
                }
                return Ok(None);
            }
            Err(e) => {
                if own_session {
                    session.close(&self.client.inner).await;
                } else if wait {
                    // The node withdraws a timed-out wait itself, but skips
                    // that once the shared session has moved on (it cannot
                    // tell a late copy from a timely one) and loses it when
                    // leadership moves.
                    undo_on_drop.disarm();
                    undo(&self.client, &session, self.cancel()).await;
                }
                return Err(e);
            }
        };
        // A grant that arrives after the lease ran out cannot be trusted
        // (returning here withdraws it).
        session.ensure_valid()?;
        undo_on_drop.disarm();
        let token = grant_token(&granted);
        session.hold_grant(token);
        Ok(Some(LockGuard {
            client: self.client,
            session,
            own_session,
            name: self.name,
            mode: self.mode,
            token,
            fencing_token: granted.fencing_token,
            slot: granted.slot,
            released: AtomicBool::new(false),
            _guarded: guarded,
        }))
    }

    /// The request that undoes this lock's wait (or a grant that raced it).
    fn cancel(&self) -> Op {
        Op::CancelAcquire(proto::CancelAcquire {
            name: self.name.clone(),
        })
    }
}

/// The token that names a grant in releases and renewals: a reader's own,
/// which its fencing token (the readers' shared value) is not.
fn grant_token(granted: &proto::Granted) -> u64 {
    match granted.grant_token {
        0 => granted.fencing_token,
        token => token,
    }
}

/// What a lock's waits, undos and releases are ordered by (see `undo`).
fn lock_key(name: &str) -> String {
    format!("lock:{name}")
}

/// A lock marked as guarded on a session while this lives: from the start
/// of an acquire to the end of its guard.
#[derive(Debug)]
struct GuardedName {
    session: Arc<Session>,
    name: String,
}

impl GuardedName {
    fn new(session: &Arc<Session>, name: &str) -> Result<Self, Error> {
        if !session.guard_lock(name) {
            return Err(Error::AlreadyHeld {
                name: name.to_string(),
            });
        }
        Ok(GuardedName {
            session: session.clone(),
            name: name.to_string(),
        })
    }
}

impl Drop for GuardedName {
    fn drop(&mut self) {
        self.session.unguard_lock(&self.name);
    }
}

/// A held lock. Pass `fencing_token()` to the resource the lock protects;
/// stop acting as holder when `lost()` resolves or `is_valid()` is false.
/// Dropping the guard releases the lock in the background (best effort);
/// `release()` does it and reports the outcome.
#[derive(Debug)]
pub struct LockGuard {
    client: Client,
    session: Arc<Session>,
    own_session: bool,
    name: String,
    mode: LockMode,
    /// The grant's own token: what releases and renewals present.
    token: u64,
    /// What the holder presents to the resource (a reader's differs).
    fencing_token: u64,
    slot: Option<u32>,
    released: AtomicBool,
    /// Dropped after `Drop::drop` has queued the release.
    _guarded: Option<GuardedName>,
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token of this grant, to pass to the resource it
    /// protects, which must refuse any token below the highest it has
    /// seen: strictly greater than every token granted before it, for any
    /// lock, except that readers of a read/write lock holding together
    /// present one value (a writer's is above all of theirs, and readers
    /// after it above the writer's); a semaphore's resource keeps the
    /// highest per [`slot`](LockGuard::slot). See [`crate::fencing`].
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// The token that names this grant in releases, renewals and
    /// `describe`: its fencing token, except for a reader of a read/write
    /// lock, whose fencing token is the readers' shared one while every
    /// grant has a token of its own.
    pub fn grant_token(&self) -> u64 {
        self.token
    }

    /// How this guard holds its name: a lock, a semaphore's permit, or a
    /// read/write lock for reading or writing.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The slot of a semaphore's permit, `0..permits` (`None` for locks and
    /// read/write locks): a permit's resource fences per slot.
    pub fn slot(&self) -> Option<u32> {
        self.slot
    }

    /// The latest moment at which the client may still believe it holds
    /// the lock (the client lease rule; see `PROTOCOL.md`).
    pub fn valid_until(&self) -> Instant {
        let left = self
            .session
            .valid_until()
            .saturating_sub(self.session.now());
        Instant::now() + left
    }

    /// Whether the lock may still be trusted now.
    pub fn is_valid(&self) -> bool {
        !self.released.load(Ordering::Acquire)
            && self.session.is_valid()
            && !self.session.is_taken(self.token)
    }

    /// Resolves when the lock can no longer be trusted: the session's lease
    /// ran out, the cluster says the session is gone, or a keepalive's
    /// answer says an administrator force-released this grant (within one
    /// keepalive interval of it; PROTOCOL.md, "Inspection").
    pub async fn lost(&self) {
        self.session.grant_lost(self.token).await
    }

    /// Resolves once the lease has less than `within` left: a warning to
    /// finish up (or renew, with manual renewal) before `lost` fires, as
    /// Kubernetes' leader-election health check and DynamoDB's lock client
    /// session monitor give. A renewal in the meantime moves it on.
    pub async fn expiring(&self, within: Duration) {
        self.session.expiring(within).await
    }

    /// Checks the grant with the cluster and extends the lease from now;
    /// returns the new `valid_until`. Fails with `STALE_TOKEN` if the lock
    /// was given to someone else.
    pub async fn renew(&self) -> Result<Instant, Error> {
        self.session.ensure_valid_or_lost()?;
        let sent_at = self.session.now();
        let op = Op::Renew(proto::Renew {
            name: self.name.clone(),
            fencing_token: self.token,
        });
        match self.client.inner.call(self.session.id, op).await {
            Ok(answer) => {
                if let response::Result::Renewed(renewed) = &answer {
                    self.session.grants_taken(&renewed.taken_tokens);
                }
                self.session.answered(sent_at);
                Ok(self.valid_until())
            }
            Err(e) => {
                match e.code() {
                    Some(ErrorCode::SessionUnknown) => self
                        .session
                        .mark_lost("the cluster no longer knows the session"),
                    // The grant is gone (force-released): never trust it again.
                    Some(ErrorCode::StaleToken | ErrorCode::NotHeld) => {
                        self.session.grant_gone(self.token)
                    }
                    _ => {}
                }
                Err(e)
            }
        }
    }

    /// Releases the lock (and its own session, if it has one).
    pub async fn release(self) -> Result<(), Error> {
        self.released.store(true, Ordering::Release);
        release(
            &self.client,
            &self.session,
            self.own_session,
            &self.name,
            self.token,
        )
        .await
    }
}

async fn release(
    client: &Client,
    session: &Arc<Session>,
    own_session: bool,
    name: &str,
    token: u64,
) -> Result<(), Error> {
    let op = Op::Release(proto::Release {
        name: name.to_string(),
        fencing_token: token,
    });
    let result = client.inner.call(session.id, op).await.map(|_| ());
    if own_session {
        session.close(&client.inner).await;
    }
    result
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.session.drop_grant(self.token);
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        if !self.own_session {
            // Ordered before the next acquire of this lock on the session.
            let op = Op::Release(proto::Release {
                name: self.name.clone(),
                fencing_token: self.token,
            });
            let key = lock_key(&self.name);
            undo_in_background(&self.client, self.session.clone(), key, op);
        } else if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (client, session, name, token) = (
                self.client.clone(),
                self.session.clone(),
                self.name.clone(),
                self.token,
            );
            handle.spawn(async move {
                let _ = release(&client, &session, true, &name, token).await;
            });
        }
    }
}

/// A read/write lock: take it for reading (beside other readers) or for
/// writing (alone). Waiters are served in order: a waiting writer is not
/// passed by readers that come after it, and the readers queued behind a
/// writer are admitted together when it releases (PROTOCOL.md,
/// "Semaphores and read/write locks").
#[derive(Debug, Clone)]
pub struct RwLock {
    client: Client,
    name: String,
}

impl RwLock {
    pub(crate) fn new(client: Client, name: String) -> Self {
        RwLock { client, name }
    }

    /// Starts building an acquire for reading.
    pub fn read(&self) -> LockBuilder {
        LockBuilder::new(self.client.clone(), self.name.clone(), LockMode::Read)
    }

    /// Starts building an acquire for writing.
    pub fn write(&self) -> LockBuilder {
        LockBuilder::new(self.client.clone(), self.name.clone(), LockMode::Write)
    }
}
