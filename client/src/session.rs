//! A session: the unit of liveness that locks and candidacies ride on.
//!
//! The client counts its session as valid until the send time of the last
//! answered keepalive plus the lease rule's safe TTL (`lease.rs`). Past that
//! it treats every lock and leadership as lost, before the cluster could
//! give them to anyone else, even if the whole cluster is unreachable.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::client::Inner;
use crate::clock::Clock;
use crate::error::Error;
use crate::lease::{Lease, LeaseRule};
use crate::lease_watch::LeaseWatch;
use crate::proto::{self, request::Op, response, ErrorCode};

/// How the session is kept alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// A background task sends keepalives every TTL/3.
    Background,
    /// Only explicit `renew()` calls extend the session: if the caller's own
    /// loop stalls, the lease lapses (as with a Kubernetes Lease).
    Manual,
}

/// Which session a lock or a candidacy rides on: the client's shared one,
/// or, with a TTL of its own or manual renewal, one opened for it alone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionChoice {
    /// A TTL of its own.
    pub(crate) ttl: Option<Duration>,
    /// How it is kept alive.
    pub(crate) renewal: Renewal,
}

impl SessionChoice {
    /// The client's shared session.
    pub(crate) fn shared() -> Self {
        SessionChoice {
            ttl: None,
            renewal: Renewal::Background,
        }
    }

    /// Whether a session of its own is opened.
    pub(crate) fn is_own(&self) -> bool {
        self.ttl.is_some() || self.renewal == Renewal::Manual
    }

    /// The session chosen: the client's, or a new one of its own.
    pub(crate) async fn session(&self, client: &crate::Client) -> Result<Arc<Session>, Error> {
        if !self.is_own() {
            return Ok(client.session.clone());
        }
        let ttl = self.ttl.unwrap_or(client.session.ttl);
        let inner = &client.inner;
        Session::open(inner, ttl, inner.drift_ppm(), self.renewal).await
    }
}

/// How often whatever waits for a lease to run out looks at the clock
/// (the client's [`LeaseWatch`], `expiring`). A timer cannot simply be set
/// for the lease's end: timers stop while the machine is suspended and the
/// lease's clock does not (see `clock.rs`), so after a resume `lost()`
/// fires within this much of the truth.
pub(crate) const LEASE_CHECK_PERIOD: Duration = Duration::from_millis(250);

/// One open session.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) ttl: Duration,
    lease: Mutex<Lease>,
    lost_tx: watch::Sender<bool>,
    clock: Clock,
    /// Marks the session lost when its lease runs out; held so that a
    /// session outliving its client is still watched.
    _watch: LeaseWatch,
    /// Locks this session has a guard for (or an acquire under way): one
    /// guard per grant (see `LockBuilder::acquire`).
    guarded: Mutex<BTreeSet<String>>,
    /// Grants an administrator took from the session (see [`Taken`]).
    taken: watch::Sender<Taken>,
}

/// What the cluster said of grants an administrator force-released
/// (`KeepAliveOk.taken_tokens`), kept per live guard so that a guard stays
/// lost once told, bounded by the guards that live and the latest answer.
#[derive(Debug, Default)]
struct Taken {
    /// Token of each live guard -> whether the cluster said it was taken.
    guards: BTreeMap<u64, bool>,
    /// The latest answer's list (at most 64 tokens): a guard made after
    /// the answer that named its grant (its acquire's answer raced the
    /// keepalive's) starts lost.
    latest: BTreeSet<u64>,
}

impl Session {
    /// Opens a session with `ttl` and, for background renewal, starts its
    /// keepalive task.
    pub(crate) async fn open(
        client: &std::sync::Arc<Inner>,
        ttl: Duration,
        drift_ppm: u32,
        renewal: Renewal,
    ) -> Result<std::sync::Arc<Session>, Error> {
        // The margin covers the gap between a validity check and the
        // protected resource acting on it.
        let margin = (ttl / 20).min(Duration::from_millis(250));
        let rule = LeaseRule::new(ttl, drift_ppm, margin)
            .map_err(|e| Error::Config(format!("session lease rule: {e:?}")))?;
        let lease_watch = client.leases.clone();
        let sent_at = lease_watch.clock().now();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        // Sent again with every retry of this open: the cluster answers a
        // retry with the session the first copy opened, instead of leaking
        // a second one until its TTL.
        let open_key = random_open_key();
        let result = client
            .call(0, Op::OpenSession(proto::OpenSession { ttl_ms, open_key }))
            .await?;
        let response::Result::SessionOpened(opened) = result else {
            return Err(Error::Protocol(format!(
                "unexpected answer to OpenSession: {result:?}"
            )));
        };
        let mut lease = Lease::new(rule);
        lease.on_answered(sent_at);
        let session = Session::start(opened.session_id, ttl, lease, &lease_watch);
        if renewal == Renewal::Background {
            tokio::spawn(keep_alive(
                std::sync::Arc::downgrade(client),
                std::sync::Arc::downgrade(&session),
            ));
        }
        Ok(session)
    }

    /// A session with `lease`, reading the clock of `lease_watch`, which
    /// watches it from now on: `lost` fires once the lease runs out.
    pub(crate) fn start(
        id: u64,
        ttl: Duration,
        lease: Lease,
        lease_watch: &LeaseWatch,
    ) -> Arc<Session> {
        let (lost_tx, _) = watch::channel(false);
        let session = Arc::new(Session {
            id,
            ttl,
            lease: Mutex::new(lease),
            lost_tx,
            clock: lease_watch.clock(),
            _watch: lease_watch.clone(),
            guarded: Mutex::new(BTreeSet::new()),
            taken: watch::Sender::new(Taken::default()),
        });
        lease_watch.watch(&session);
        session
    }

    /// The lease clock's time now.
    pub(crate) fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Marks `name` as guarded on this session; `false` if it already is.
    pub(crate) fn guard_lock(&self, name: &str) -> bool {
        let mut guarded = self.guarded.lock().unwrap_or_else(|p| p.into_inner());
        guarded.insert(name.to_string())
    }

    /// `name` is no longer guarded on this session.
    pub(crate) fn unguard_lock(&self, name: &str) {
        let mut guarded = self.guarded.lock().unwrap_or_else(|p| p.into_inner());
        guarded.remove(name);
    }

    /// A guard with `token` now lives on this session.
    pub(crate) fn hold_grant(&self, token: u64) {
        self.taken.send_modify(|t| {
            let taken = t.latest.contains(&token);
            t.guards.insert(token, taken);
        });
    }

    /// The guard with `token` is gone.
    pub(crate) fn drop_grant(&self, token: u64) {
        self.taken
            .send_if_modified(|t| t.guards.remove(&token).is_some());
    }

    /// The cluster named these tokens as taken from the session (a
    /// keepalive's or renew's answer): their guards are lost for good.
    pub(crate) fn grants_taken(&self, tokens: &[u64]) {
        self.taken.send_if_modified(|t| {
            t.latest = tokens.iter().copied().collect();
            let mut changed = false;
            for token in tokens {
                if let Some(taken) = t.guards.get_mut(token) {
                    if !*taken {
                        warn!(
                            session = self.id,
                            token, "an administrator force-released this grant"
                        );
                        *taken = true;
                        changed = true;
                    }
                }
            }
            changed
        });
    }

    /// The cluster refused the grant with `token` as no longer current:
    /// its guard is lost for good.
    pub(crate) fn grant_gone(&self, token: u64) {
        self.taken
            .send_if_modified(|t| match t.guards.get_mut(&token) {
                Some(taken) if !*taken => {
                    *taken = true;
                    true
                }
                _ => false,
            });
    }

    /// Whether the cluster said the grant with `token` was taken.
    pub(crate) fn is_taken(&self, token: u64) -> bool {
        self.taken.borrow().guards.get(&token) == Some(&true)
    }

    /// Resolves once the session is lost or the grant with `token` taken.
    pub(crate) async fn grant_lost(&self, token: u64) {
        let mut taken = self.taken.subscribe();
        tokio::select! {
            _ = self.lost() => {}
            _ = taken.wait_for(|t| t.guards.get(&token) == Some(&true)) => {}
        }
    }

    fn lease(&self) -> std::sync::MutexGuard<'_, Lease> {
        self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Until when (boot clock) the session may be trusted.
    pub(crate) fn valid_until(&self) -> Duration {
        self.lease().valid_until().unwrap_or_default()
    }

    /// Whether the session may still be trusted now.
    pub(crate) fn is_valid(&self) -> bool {
        !self.is_lost() && self.lease().is_valid(self.now())
    }

    /// Whether the session was marked lost or closed (for good).
    pub(crate) fn is_lost(&self) -> bool {
        *self.lost_tx.borrow()
    }

    /// Records an answered keepalive (or renew) sent at `sent_at`.
    pub(crate) fn answered(&self, sent_at: Duration) {
        if !*self.lost_tx.borrow() {
            self.lease().on_answered(sent_at);
        }
    }

    /// Marks the session lost for good (unexpectedly: logged as a warning).
    pub(crate) fn mark_lost(&self, why: &str) {
        if !*self.lost_tx.borrow() {
            warn!(session = self.id, "session lost: {why}");
            self.lost_tx.send_replace(true);
        }
    }

    /// Closes the session on the cluster (best effort: otherwise it expires
    /// after its TTL) and marks it closed here: how a lock or leadership on
    /// a session of its own ends.
    pub(crate) async fn close(&self, client: &Inner) {
        let close = Op::CloseSession(proto::CloseSession {});
        let _ = client.call(self.id, close).await;
        self.mark_closed();
    }

    /// Marks the session ended because the client closed it.
    pub(crate) fn mark_closed(&self) {
        debug!(session = self.id, "session closed by the client");
        self.lost_tx.send_replace(true);
    }

    /// Resolves once the session is lost.
    pub(crate) async fn lost(&self) {
        let mut rx = self.lost_tx.subscribe();
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// Resolves once the lease has less than `within` left (at once if it
    /// has already, or the session is lost), looking at the lease clock at
    /// least every [`LEASE_CHECK_PERIOD`]. A renewal in the meantime moves
    /// the moment on.
    pub(crate) async fn expiring(&self, within: Duration) {
        let mut lost = self.lost_tx.subscribe();
        loop {
            let left = self.valid_until().saturating_sub(self.now());
            if left <= within || *lost.borrow() {
                return;
            }
            let nap = (left - within).min(LEASE_CHECK_PERIOD);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = lost.wait_for(|l| *l) => return,
            }
        }
    }

    /// Fails with `SessionLost` unless the session is still trusted.
    pub(crate) fn ensure_valid(&self) -> Result<(), Error> {
        if self.is_valid() {
            Ok(())
        } else {
            Err(Error::SessionLost(format!(
                "session {} can no longer be trusted (no keepalive answered in time)",
                self.id
            )))
        }
    }

    /// Fails with `SessionLost` unless the session is still trusted, and
    /// marks it lost if its lease ran out: the one that finds the lease gone
    /// says so at once, rather than leaving it to the lease watch's next look.
    pub(crate) fn ensure_valid_or_lost(&self) -> Result<(), Error> {
        let valid = self.ensure_valid();
        if valid.is_err() {
            self.mark_lost("lease ran out before a keepalive was answered");
        }
        valid
    }

    /// Sends one keepalive now and extends the lease if it is answered.
    pub(crate) async fn renew_once(&self, client: &Inner) -> Result<(), Error> {
        self.ensure_valid_or_lost()?;
        let sent_at = self.now();
        match client
            .call(self.id, Op::KeepAlive(proto::KeepAlive {}))
            .await
        {
            Ok(answer) => {
                if let response::Result::KeepAlive(ok) = &answer {
                    self.grants_taken(&ok.taken_tokens);
                }
                self.answered(sent_at);
                Ok(())
            }
            Err(e) => {
                if e.code() == Some(ErrorCode::SessionUnknown) {
                    self.mark_lost("the cluster no longer knows the session");
                }
                // The attempt may have outlasted the lease.
                let _ = self.ensure_valid_or_lost();
                Err(e)
            }
        }
    }
}

/// A random non-zero key for one open (`OpenSession.open_key`), from the
/// TLS provider's secure random source; the boot clock's nanoseconds if
/// that fails, which still tells this client's opens apart.
fn random_open_key() -> u64 {
    let mut bytes = [0u8; 8];
    let random = rustls::crypto::ring::default_provider().secure_random;
    let key = match random.fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => crate::clock::boottime().as_nanos() as u64,
    };
    key.max(1)
}

/// Sends keepalives at TTL/3, or at a third of the lease left if that is
/// sooner (after a slow session open or failed keepalives), until the
/// session is lost or the client is dropped. Failures are retried at that
/// shrinking interval rather than after a whole period, so a leader change
/// costs little of the lease.
async fn keep_alive(client: Weak<Inner>, session: Weak<Session>) {
    const MIN_WAIT: Duration = Duration::from_millis(20);
    loop {
        let Some(s) = session.upgrade() else { return };
        let left = s.valid_until().saturating_sub(s.now());
        let wait = (s.ttl / 3).min(left / 3).max(MIN_WAIT);
        drop(s);
        tokio::time::sleep(wait).await;
        let (Some(c), Some(s)) = (client.upgrade(), session.upgrade()) else {
            return;
        };
        if s.ensure_valid_or_lost().is_err() {
            return;
        }
        match s.renew_once(&c).await {
            Ok(()) => {}
            Err(e) if e.is_retryable() => debug!(session = s.id, "keepalive failed, retrying: {e}"),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A clock the test moves: nanoseconds in an atomic.
    fn jumping_clock() -> (Clock, Arc<AtomicU64>) {
        let nanos = Arc::new(AtomicU64::new(1_000_000_000));
        let read = nanos.clone();
        let clock = Clock::from_fn(move || Duration::from_nanos(read.load(Ordering::SeqCst)));
        (clock, nanos)
    }

    fn session_on(clock: Clock, ttl: Duration) -> Arc<Session> {
        let rule = LeaseRule::new(ttl, 500, Duration::from_millis(10)).unwrap();
        let mut lease = Lease::new(rule);
        lease.on_answered(clock.now());
        Session::start(7, ttl, lease, &LeaseWatch::new(clock))
    }

    /// Regression (issue 18): the lease watch slept on a timer until the
    /// lease's end, and timers stop while the machine is suspended, so after
    /// a resume `lost()` could fire up to a whole TTL late.
    #[tokio::test]
    async fn lost_fires_soon_after_a_suspend_longer_than_the_lease() {
        let (clock, nanos) = jumping_clock();
        let session = session_on(clock, Duration::from_secs(60));
        assert!(session.is_valid());
        // Let the lease watch go to sleep, then "suspend" for two minutes: the
        // lease clock jumps, the timer does not.
        tokio::time::sleep(Duration::from_millis(20)).await;
        nanos.fetch_add(120_000_000_000, Ordering::SeqCst);
        let noticed = tokio::time::timeout(LEASE_CHECK_PERIOD * 4, session.lost()).await;
        assert!(noticed.is_ok(), "lost() did not fire after the suspend");
        assert!(!session.is_valid());
    }

    #[tokio::test]
    async fn finding_the_lease_gone_marks_the_session_lost() {
        let (clock, nanos) = jumping_clock();
        let session = session_on(clock, Duration::from_secs(60));
        nanos.fetch_add(120_000_000_000, Ordering::SeqCst);
        assert!(session.ensure_valid_or_lost().is_err());
        // At once, not at the lease watch's next look.
        assert!(*session.lost_tx.borrow());
    }

    #[tokio::test]
    async fn expiring_fires_when_the_lease_nears_its_end_and_not_before() {
        let (clock, nanos) = jumping_clock();
        let session = session_on(clock, Duration::from_secs(60));
        let early = tokio::time::timeout(
            Duration::from_millis(600),
            session.expiring(Duration::from_secs(5)),
        )
        .await;
        assert!(early.is_err(), "warned with most of the lease left");
        // Within five seconds of the end (the safe TTL is under 60 s).
        nanos.fetch_add(56_000_000_000, Ordering::SeqCst);
        let warned = tokio::time::timeout(
            LEASE_CHECK_PERIOD * 4,
            session.expiring(Duration::from_secs(5)),
        )
        .await;
        assert!(warned.is_ok(), "no warning near the lease's end");
        assert!(session.is_valid(), "warned, not lost");
    }

    #[tokio::test]
    async fn a_session_keeps_one_guard_per_lock() {
        let (clock, _) = jumping_clock();
        let session = session_on(clock, Duration::from_secs(60));
        assert!(session.guard_lock("a"));
        assert!(!session.guard_lock("a"));
        assert!(session.guard_lock("b"));
        session.unguard_lock("a");
        assert!(session.guard_lock("a"));
    }

    /// A grant the cluster names as taken stays lost however later answers
    /// read, fires `grant_lost`, and leaves the session's other grants
    /// alone; a guard made after the answer that named it starts lost.
    #[tokio::test]
    async fn a_taken_grant_stays_lost_and_the_others_do_not() {
        let (clock, _) = jumping_clock();
        let session = session_on(clock, Duration::from_secs(60));
        session.hold_grant(7);
        session.hold_grant(9);
        let waiting = {
            let session = session.clone();
            tokio::spawn(async move { session.grant_lost(7).await })
        };
        session.grants_taken(&[7, 11]);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("grant_lost(7) did not fire")
            .expect("task");
        session.grants_taken(&[]);
        assert!(session.is_taken(7), "a later answer revived the grant");
        assert!(!session.is_taken(9));
        assert!(session.is_valid(), "the session lives on");
        // Its acquire's answer raced the keepalive that named it.
        session.grants_taken(&[13]);
        session.hold_grant(13);
        assert!(session.is_taken(13));
        // Gone with its guard: the bookkeeping is bounded by live guards.
        session.drop_grant(7);
        assert!(!session.is_taken(7));
        assert_eq!(session.taken.borrow().guards.len(), 2);
    }
}
