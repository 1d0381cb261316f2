//! The pump of the leader role's timers: every [`SCAN_PERIOD`] it asks the
//! [`LeaderRole`](crate::leader_role::LeaderRole) what is due (a takeover
//! again, expiries, a tick) and proposes it. Also where a leader records,
//! once every peer speaks this release's protocol, that the cluster does.

use tracing::{debug, info};

use super::handler::Context;
use crate::leader_role::SCAN_PERIOD;
use crate::locks::CommandKind;

/// How many scans between looks at the peers' protocol versions.
const PROTOCOL_CHECK_SCANS: u64 = 4;

/// Runs forever: proposes what the leader role finds due at each scan.
pub async fn run_leader_scans(ctx: Context) {
    let mut interval = tokio::time::interval(SCAN_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scans: u64 = 0;
    loop {
        interval.tick().await;
        scans += 1;
        let due = {
            let machine = ctx.shared.machine();
            ctx.shared.role().due(&machine, ctx.clock.now())
        };
        for kind in due {
            debug!(?kind, "the leader role proposes");
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _ = ctx.propose_internal(kind).await;
            });
        }
        let record = scans
            .is_multiple_of(PROTOCOL_CHECK_SCANS)
            .then(|| ctx.protocol_to_record())
            .flatten();
        if let Some(version) = record {
            let ctx = ctx.clone();
            tokio::spawn(async move {
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
    }
}
