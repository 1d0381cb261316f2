//! The leader's session timers: expire sessions whose deadline passed, and
//! advance logical time so lock-delays end. Also where a leader records,
//! once every peer speaks this release's protocol, that the cluster does.

use std::time::Duration;

use tracing::{debug, info};

use super::handler::Context;
use super::state::{Deadline, Shared};
use crate::locks::{CommandKind, SessionId, CURRENT_PROTOCOL};
use crate::paxos::Nanos;

/// How often the leader looks for expired sessions.
pub const EXPIRY_SCAN_PERIOD: Duration = Duration::from_millis(50);

/// After proposing an expiry, wait this long before proposing it again.
const EXPIRY_RETRY_NS: u64 = 1_000_000_000;

/// Runs forever: while this node leads, proposes `ExpireSession` for every
/// session whose deadline has passed, and a `Tick` every second if
/// lock-delay is configured.
pub async fn run_expiry(ctx: Context) {
    let mut interval = tokio::time::interval(EXPIRY_SCAN_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scans: u64 = 0;
    let mut takeover_proposed: u64 = 0;
    loop {
        interval.tick().await;
        scans += 1;
        if !ctx.status.borrow().is_leader {
            continue;
        }
        let epoch = ctx.shared.my_epoch();
        if epoch == 0 {
            continue;
        }
        if !ctx.shared.takeover_applied() {
            // Proposed first by the consensus loop on becoming leader; this
            // re-proposes it if that proposal was lost (e.g. leadership
            // wobbled). It fences off expiries of deposed leaders.
            if takeover_proposed != epoch || scans.is_multiple_of(4) {
                takeover_proposed = epoch;
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let _ = ctx.propose_internal(CommandKind::Takeover { epoch }).await;
                });
            }
            continue;
        }
        let expired = take_due(&ctx.shared, ctx.clock.now());
        for session in expired {
            debug!(session, "session deadline passed; proposing expiry");
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _ = ctx
                    .propose_internal(CommandKind::ExpireSession {
                        session: SessionId(session),
                        epoch,
                    })
                    .await;
            });
        }
        if scans.is_multiple_of(4) && ctx.may_raise_protocol() {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let version = CURRENT_PROTOCOL;
                if ctx
                    .propose_internal(CommandKind::RaiseProtocol { version })
                    .await
                    .is_ok()
                {
                    info!(
                        version,
                        "every node speaks this protocol; sessions now belong to identities"
                    );
                }
            });
        }
        let lock_delay = ctx.shared.machine().config().lock_delay_ms > 0;
        if lock_delay && scans.is_multiple_of(20) {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _ = ctx.propose_internal(CommandKind::Tick).await;
            });
        }
    }
}

/// Marks every session whose time ran out (or whose expiry is due again)
/// as expiring and returns them. Marked under the map's shard lock: from
/// here on no keepalive extends them (see `Deadline`).
pub fn take_due(shared: &Shared, now: Nanos) -> Vec<u64> {
    let retry_at = now.plus(EXPIRY_RETRY_NS);
    shared
        .deadlines
        .iter_mut()
        .filter_map(|mut entry| {
            entry.value().due(now).then(|| {
                *entry.value_mut() = Deadline::Expiring { retry_at };
                *entry.key()
            })
        })
        .collect()
}
