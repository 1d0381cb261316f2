//! Administrators' faults: force-releasing a lock and revoking a lock
//! holder's session, as an operator would in the middle of an incident.
//! Each is recorded in the lock histories the way the cluster applies it,
//! so the mutual-exclusion, fencing and linearizability checks hold the
//! cluster to it: a taken grant passes on only once its holder's lease
//! is over, with a higher token.

use paxlock::proto::ErrorCode;
use paxlock::Client;

use super::workers::{kind, WorkerCtx};
use paxlock_sim::linearizability::{Call, Outcome};

/// Force-releases the grant an administrator sees on one of the workers'
/// locks (the `pick`-th, modulo their number), naming its token so that a
/// grant that passed on since is not taken. Returns what it did.
pub async fn force_release(ctx: &WorkerCtx, admin: &Client, pick: usize) -> String {
    let rec = &ctx.recorder;
    let lock = &ctx.locks[pick % ctx.locks.len()];
    let grant = match admin.describe_lock(lock).await {
        Ok(info) => info.grant,
        Err(e) => {
            rec.count(format!("admin: describe failed ({})", kind(&e)));
            return format!("force-release of {lock}: describe failed ({e})");
        }
    };
    let Some(grant) = grant else {
        rec.count("admin: force-release found the lock free");
        return format!("force-release of {lock}: nobody held it");
    };
    let (holder, token) = (grant.holder.session_id, grant.fencing_token);
    let invoked = rec.now();
    let taken = admin.force_release_grant(lock, token).await;
    let done = rec.now();
    // Only the grant with `token`, which is `holder`'s, can be taken.
    match taken {
        Ok(_) => {
            let call = Call::ForceReleased { token };
            rec.op(lock, holder, call, Outcome::Ended, invoked, Some(done));
            rec.count("admin: force-released");
            format!("force-released {lock} from session {holder} (token {token})")
        }
        Err(e) if matches!(e.code(), Some(ErrorCode::StaleToken | ErrorCode::NotHeld)) => {
            rec.count("admin: force-release found the grant gone");
            format!("force-release of {lock}: token {token} was no longer current")
        }
        Err(e) => {
            // It may still be applied, at any time from now.
            let call = Call::ForceReleased { token };
            rec.op(lock, holder, call, Outcome::Unknown, invoked, None);
            rec.count(format!("admin: force-release unknown ({})", kind(&e)));
            format!("force-release of {lock} from session {holder}: outcome unknown ({e})")
        }
    }
}

/// Revokes the session of one of the workers' lock holders an
/// administrator sees (the `pick`-th, modulo their number). Returns what
/// it did.
pub async fn revoke(ctx: &WorkerCtx, admin: &Client, pick: usize) -> String {
    let rec = &ctx.recorder;
    let sessions = match admin.list_sessions().await {
        Ok(sessions) => sessions,
        Err(e) => {
            rec.count(format!("admin: list sessions failed ({})", kind(&e)));
            return format!("revoke: listing sessions failed ({e})");
        }
    };
    // Lockers' sessions only: the runner's, the administrator's and the
    // candidates' hold none of the workers' locks.
    let holders: Vec<u64> = sessions
        .iter()
        .filter(|s| s.held.iter().any(|l| ctx.locks.contains(l)))
        .map(|s| s.session.session_id)
        .collect();
    if holders.is_empty() {
        rec.count("admin: no holder to revoke");
        return "revoke: no worker held a lock".into();
    }
    let session = holders[pick % holders.len()];
    let invoked = rec.now();
    let revoked = admin.revoke_session(session).await;
    let done = rec.now();
    // A revocation ends the session as an expiry does (its locks wait out
    // its TTL); in a lock it did not hold, that changes nothing.
    let ended = Call::EndSession { expired: true };
    let every_lock = ctx.locks.iter().chain(&ctx.shared_locks);
    match revoked {
        Ok(()) => {
            for lock in every_lock {
                rec.op(lock, session, ended, Outcome::Ended, invoked, Some(done));
            }
            rec.count("admin: revoked a holder's session");
            format!("revoked session {session}")
        }
        Err(e) if e.code() == Some(ErrorCode::SessionUnknown) => {
            rec.count("admin: the session to revoke had ended");
            format!("revoke of session {session}: it had ended")
        }
        Err(e) => {
            for lock in every_lock {
                rec.op(lock, session, ended, Outcome::Unknown, invoked, None);
            }
            rec.count(format!("admin: revoke unknown ({})", kind(&e)));
            format!("revoke of session {session}: outcome unknown ({e})")
        }
    }
}
