//! A session: the unit of liveness that locks and candidacies ride on.
//!
//! The client counts its session as valid until the send time of the last
//! answered keepalive plus the lease rule's safe TTL (`lease.rs`). Past that
//! it treats every lock and leadership as lost, before the cluster could
//! give them to anyone else, even if the whole cluster is unreachable.

use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::client::Inner;
use crate::clock::boottime;
use crate::error::Error;
use crate::lease::{Lease, LeaseRule};
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

/// One open session.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) ttl: Duration,
    lease: Mutex<Lease>,
    lost_tx: watch::Sender<bool>,
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
        let sent_at = boottime();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let result = client
            .call(0, Op::OpenSession(proto::OpenSession { ttl_ms }))
            .await?;
        let response::Result::SessionOpened(opened) = result else {
            return Err(Error::Protocol(format!(
                "unexpected answer to OpenSession: {result:?}"
            )));
        };
        let mut lease = Lease::new(rule);
        lease.on_answered(sent_at);
        let (lost_tx, _) = watch::channel(false);
        let session = std::sync::Arc::new(Session {
            id: opened.session_id,
            ttl,
            lease: Mutex::new(lease),
            lost_tx,
        });
        tokio::spawn(watchdog(std::sync::Arc::downgrade(&session)));
        if renewal == Renewal::Background {
            tokio::spawn(keep_alive(
                std::sync::Arc::downgrade(client),
                std::sync::Arc::downgrade(&session),
            ));
        }
        Ok(session)
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
        !*self.lost_tx.borrow() && self.lease().is_valid(boottime())
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

    /// Sends one keepalive now and extends the lease if it is answered.
    pub(crate) async fn renew_once(&self, client: &Inner) -> Result<(), Error> {
        self.ensure_valid()?;
        let sent_at = boottime();
        match client
            .call(self.id, Op::KeepAlive(proto::KeepAlive {}))
            .await
        {
            Ok(_) => {
                self.answered(sent_at);
                Ok(())
            }
            Err(e) => {
                if e.code() == Some(ErrorCode::SessionUnknown) {
                    self.mark_lost("the cluster no longer knows the session");
                }
                Err(e)
            }
        }
    }
}

/// Fires `lost` when the lease runs out without a renewal.
async fn watchdog(session: Weak<Session>) {
    loop {
        let Some(s) = session.upgrade() else { return };
        let now = boottime();
        let until = s.valid_until();
        if now >= until {
            s.mark_lost("lease ran out before a keepalive was answered");
            return;
        }
        let mut lost = s.lost_tx.subscribe();
        drop(s);
        tokio::select! {
            _ = tokio::time::sleep(until - now) => {}
            _ = lost.wait_for(|l| *l) => return,
        }
    }
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
        let left = s.valid_until().saturating_sub(boottime());
        let wait = (s.ttl / 3).min(left / 3).max(MIN_WAIT);
        drop(s);
        tokio::time::sleep(wait).await;
        let (Some(c), Some(s)) = (client.upgrade(), session.upgrade()) else {
            return;
        };
        if !s.is_valid() {
            return;
        }
        match s.renew_once(&c).await {
            Ok(()) => {}
            Err(e) if e.is_retryable() => debug!(session = s.id, "keepalive failed, retrying: {e}"),
            Err(_) => return,
        }
    }
}
