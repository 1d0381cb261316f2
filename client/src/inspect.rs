//! Inspection (PROTOCOL.md, "Inspection"): who holds a lock and who waits
//! for it, which locks exist under a prefix, which sessions exist and what
//! they hold, and whether a fencing token is still a lock's current grant.
//! Every answer is a linearizable read (served under the leader lease) and
//! shows only what the caller may see.

use std::time::Duration;

use serde::Serialize;

use crate::client::{unexpected, Client};
use crate::proto::{self, request::Op, response};
use crate::Error;

/// A session, as inspection shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRef {
    /// The session's id.
    pub session_id: u64,
    /// The identity (certificate name) it belongs to; empty if none (a
    /// session opened before the cluster's upgrade to protocol 3, not
    /// used since).
    pub identity: String,
}

/// A lock's current grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockGrant {
    /// The holding session.
    pub holder: SessionRef,
    /// The grant's fencing token.
    pub fencing_token: u64,
    /// How long it has been held, on the cluster's clock; `None` for a
    /// grant made before the cluster spoke protocol 3.
    #[serde(serialize_with = "millis", rename = "held_for_ms")]
    pub held_for: Option<Duration>,
}

/// A session waiting for a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockWaiter {
    /// The waiting session.
    #[serde(flatten)]
    pub session: SessionRef,
    /// How long it has waited, on the cluster's clock; `None` for a wait
    /// begun before the cluster spoke protocol 3.
    #[serde(serialize_with = "millis", rename = "waiting_for_ms")]
    pub waiting_for: Option<Duration>,
    /// What it waits for at a semaphore or read/write lock (`None`: a
    /// lock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wants: Option<Wants>,
}

/// What a session waits for at a semaphore or read/write lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Wants {
    /// A permit.
    Permit,
    /// To read.
    Read,
    /// To write.
    Write,
}

/// What a name is while in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    /// A lock (or a name nobody uses).
    Lock,
    /// A semaphore of this many permits.
    Semaphore {
        /// Its permits.
        permits: u32,
    },
    /// A read/write lock.
    ReadWrite,
}

/// How a grant of a semaphore or read/write lock holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldAs {
    /// A permit, in this slot.
    Permit {
        /// The slot.
        slot: u32,
    },
    /// For reading.
    Read,
    /// For writing.
    Write,
}

/// A grant of a semaphore or read/write lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedLockGrant {
    /// The grant (readers holding together share its token).
    #[serde(flatten)]
    pub grant: LockGrant,
    /// How it holds.
    pub held_as: HeldAs,
    /// What its holder presents to the resource: the grant's token, but
    /// for a reader the readers' shared value.
    pub presents: u64,
}

/// One lock, whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockInfo {
    /// The lock.
    pub name: String,
    /// A lock, a semaphore or a read/write lock.
    pub kind: LockKind,
    /// Its grant; `None`: nobody holds it (always `None` for a semaphore
    /// or read/write lock, whose grants are `holders`).
    pub grant: Option<LockGrant>,
    /// A semaphore's permit holders, or a read/write lock's readers or
    /// writer, oldest grant first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<SharedLockGrant>,
    /// The grant's value, set by its acquire ([`crate::LockBuilder::value`];
    /// empty: none). Shown in JSON as text (invalid UTF-8 replaced).
    #[serde(serialize_with = "lossy_text")]
    pub value: Vec<u8>,
    /// Sessions waiting for it, front of the queue first.
    pub waiters: Vec<LockWaiter>,
    /// How much of its lock-delay (after a holder's session expired) is
    /// left, on the cluster's clock; `None`: not in lock-delay.
    #[serde(serialize_with = "millis")]
    pub lock_delay_left: Option<Duration>,
}

/// One lock in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockSummary {
    /// The lock.
    pub name: String,
    /// A lock, a semaphore or a read/write lock.
    pub kind: LockKind,
    /// Its grant (a lock's).
    pub grant: Option<LockGrant>,
    /// How many grants a semaphore or read/write lock has.
    pub holders: u32,
    /// How many sessions wait for it.
    pub waiters: u32,
    /// What is left of its lock-delay.
    #[serde(serialize_with = "millis")]
    pub lock_delay_left: Option<Duration>,
}

/// One session and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// The session.
    pub session: SessionRef,
    /// Its TTL.
    #[serde(serialize_with = "millis_of")]
    pub ttl: Duration,
    /// How long until the leader expires it unless a keepalive comes
    /// (zero once its expiry is under way). The TTL less this is the time
    /// since its last keepalive, as the leader counts it.
    #[serde(serialize_with = "millis_of")]
    pub expires_in: Duration,
    /// Locks it holds.
    pub held: Vec<String>,
    /// Locks it waits for.
    pub waiting: Vec<String>,
    /// Elections it leads or campaigns in.
    pub campaigns: Vec<String>,
}

/// Whether a fencing token is still a lock's current grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TokenCheck {
    /// The token is the lock's current grant.
    pub current: bool,
    /// The current grant's token; `None`: nobody holds the lock.
    pub current_token: Option<u64>,
}

/// Durations are written to JSON in milliseconds (`null`: none).
pub(crate) fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

pub(crate) fn lossy_text<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

fn millis_of<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// What is left of a lock-delay ending at `until_ms` (0: none) when the
/// cluster's logical clock reads `now_ms`.
fn delay_left(until_ms: u64, now_ms: u64) -> Option<Duration> {
    (until_ms != 0).then(|| Duration::from_millis(until_ms.saturating_sub(now_ms)))
}

pub(crate) fn session_ref(wire: Option<proto::SessionRef>) -> SessionRef {
    let wire = wire.unwrap_or_default();
    SessionRef {
        session_id: wire.session_id,
        identity: wire.identity,
    }
}

/// Time from `since_ms` (0: unknown) to `now_ms` on the cluster's clock.
fn since(since_ms: u64, now_ms: u64) -> Option<Duration> {
    (since_ms != 0).then(|| Duration::from_millis(now_ms.saturating_sub(since_ms)))
}

/// A lock as the wire describes it.
pub(crate) fn lock_info(info: proto::LockInfo) -> LockInfo {
    let now_ms = info.now_ms;
    LockInfo {
        name: info.name,
        kind: lock_kind(info.kind, info.permits),
        grant: grant(info.grant, now_ms),
        holders: info
            .holders
            .into_iter()
            .filter_map(|g| {
                let held_as = held_as(g.mode, g.slot)?;
                let presents = match g.fencing_token {
                    0 => g.token,
                    value => value,
                };
                let grant = grant(Some(g), now_ms)?;
                Some(SharedLockGrant {
                    grant,
                    held_as,
                    presents,
                })
            })
            .collect(),
        value: info.value,
        waiters: info
            .waiters
            .into_iter()
            .map(|w| LockWaiter {
                session: session_ref(w.session),
                waiting_for: since(w.since_ms, now_ms),
                wants: held_as(w.mode, 0).map(|h| match h {
                    HeldAs::Permit { .. } => Wants::Permit,
                    HeldAs::Read => Wants::Read,
                    HeldAs::Write => Wants::Write,
                }),
            })
            .collect(),
        lock_delay_left: delay_left(info.delayed_until_ms, now_ms),
    }
}

/// A name's kind as the wire gives it (an unknown one reads as a lock).
fn lock_kind(kind: i32, permits: u32) -> LockKind {
    match proto::LockKind::try_from(kind) {
        Ok(proto::LockKind::KindSemaphore) => LockKind::Semaphore { permits },
        Ok(proto::LockKind::KindReadWrite) => LockKind::ReadWrite,
        Ok(proto::LockKind::KindLock) | Err(_) => LockKind::Lock,
    }
}

/// How a grant holds, as the wire gives it (`None`: a lock's grant).
fn held_as(mode: i32, slot: u32) -> Option<HeldAs> {
    match proto::acquire::Mode::try_from(mode) {
        Ok(proto::acquire::Mode::Permit) => Some(HeldAs::Permit { slot }),
        Ok(proto::acquire::Mode::Read) => Some(HeldAs::Read),
        Ok(proto::acquire::Mode::Write) => Some(HeldAs::Write),
        Ok(proto::acquire::Mode::Lock) | Err(_) => None,
    }
}

fn grant(wire: Option<proto::LockGrant>, now_ms: u64) -> Option<LockGrant> {
    wire.map(|g| LockGrant {
        holder: session_ref(g.holder),
        fencing_token: g.token,
        held_for: since(g.since_ms, now_ms),
    })
}

impl Client {
    /// Who holds lock `name` (identity, session, fencing token), who waits
    /// for it in queue order, and its lock-delay. Needs `read` on the name.
    pub async fn describe_lock(&self, name: &str) -> Result<LockInfo, Error> {
        let op = Op::DescribeLock(proto::DescribeLock { name: name.into() });
        match self.inner.call(0, op).await? {
            response::Result::Lock(info) => Ok(lock_info(info)),
            other => Err(unexpected(&other)),
        }
    }

    /// Whether `fencing_token` is still the current grant of lock `name`
    /// (Chubby's `CheckSequencer`): for a resource that cannot keep the
    /// highest token it has seen. Needs `read` on the name.
    pub async fn check_token(&self, name: &str, fencing_token: u64) -> Result<TokenCheck, Error> {
        let op = Op::CheckToken(proto::CheckToken {
            name: name.into(),
            token: fencing_token,
        });
        match self.inner.call(0, op).await? {
            response::Result::TokenCheck(check) => Ok(TokenCheck {
                current: check.current,
                current_token: (check.current_token != 0).then_some(check.current_token),
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Locks whose names start with `prefix` (`""`: all), in name order,
    /// that the caller may read: every page, fetched one after another.
    pub async fn list_locks(&self, prefix: &str) -> Result<Vec<LockSummary>, Error> {
        let mut locks = Vec::new();
        let mut after = String::new();
        loop {
            let op = Op::ListLocks(proto::ListLocks {
                prefix: prefix.into(),
                after: after.clone(),
                limit: 0,
            });
            let page = match self.inner.call(0, op).await? {
                response::Result::Locks(page) => page,
                other => return Err(unexpected(&other)),
            };
            let now_ms = page.now_ms;
            locks.extend(page.locks.into_iter().map(|l| LockSummary {
                name: l.name,
                kind: lock_kind(l.kind, l.permits),
                grant: grant(l.grant, now_ms),
                holders: l.holders,
                waiters: l.waiters,
                lock_delay_left: delay_left(l.delayed_until_ms, now_ms),
            }));
            if page.next_after.is_empty() || page.next_after <= after {
                return Ok(locks);
            }
            after = page.next_after;
        }
    }

    /// Ends session `session_id` now (an administrator's request): its
    /// locks pass on as after an expiry, once its TTL is over (its client's
    /// lease ends by then: its `lost()` fires within one keepalive), and
    /// the next grant's token is higher; its leaderships end at once.
    pub async fn revoke_session(&self, session_id: u64) -> Result<(), Error> {
        let op = Op::RevokeSession(proto::RevokeSession { session_id });
        match self.inner.call(0, op).await? {
            response::Result::Done(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Ends the current grant of lock `name` now (an administrator's
    /// request; needs `admin` on the name). The holder's session lives on;
    /// its guard's `lost()` fires at its next keepalive, and the lock passes
    /// on, with a higher token, once the longer of the lock-delay and the
    /// holder's TTL is over (its lease ends by then). Fails with `NOT_HELD`
    /// if nobody holds it.
    ///
    /// Returns the grant it ended (its `held_for` is not reported).
    pub async fn force_release(&self, name: &str) -> Result<LockGrant, Error> {
        self.force_release_token(name, 0).await
    }

    /// [`force_release`](Client::force_release), only of the grant with
    /// `fencing_token` (as `describe_lock` showed it): `STALE_TOKEN` if
    /// another grant is current by then, `NOT_HELD` if none. What an
    /// operator who looked first means: a grant that passed on since is
    /// not taken, and a retry after an unknown outcome takes nothing else.
    pub async fn force_release_grant(
        &self,
        name: &str,
        fencing_token: u64,
    ) -> Result<LockGrant, Error> {
        if fencing_token == 0 {
            // 0 means "the current grant" on the wire; no grant has it.
            return Err(Error::Server {
                code: proto::ErrorCode::StaleToken,
                message: format!("no grant of lock {name:?} has fencing token 0"),
                retryable: false,
            });
        }
        self.force_release_token(name, fencing_token).await
    }

    async fn force_release_token(&self, name: &str, token: u64) -> Result<LockGrant, Error> {
        let op = Op::ForceRelease(proto::ForceRelease {
            name: name.to_string(),
            token,
        });
        match self.inner.call(0, op).await? {
            response::Result::Taken(taken) => grant(Some(taken), 0).ok_or_else(|| {
                Error::Protocol("ForceRelease answered without the grant it ended".into())
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Sessions with what they hold, in id order: the caller's own, or,
    /// for an administrator, every session of the cluster.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        let mut sessions = Vec::new();
        let mut after = 0;
        loop {
            let op = Op::ListSessions(proto::ListSessions { after, limit: 0 });
            let page = match self.inner.call(0, op).await? {
                response::Result::Sessions(page) => page,
                other => return Err(unexpected(&other)),
            };
            sessions.extend(page.sessions.into_iter().map(|s| SessionInfo {
                session: session_ref(s.session),
                ttl: Duration::from_millis(s.ttl_ms),
                expires_in: Duration::from_millis(s.expires_in_ms),
                held: s.held,
                waiting: s.waiting,
                campaigns: s.campaigns,
            }));
            if page.next_after == 0 || page.next_after <= after {
                return Ok(sessions);
            }
            after = page.next_after;
        }
    }
}
