//! `paxlock locks [PREFIX]`, `paxlock describe NAME`, `paxlock sessions`,
//! `paxlock watch-lock NAME`: what the cluster holds and how it changes,
//! as tables and lines for people or `--json` for scripts;
//! and `paxlock revoke SESSION`, an administrator's way out of a stuck
//! session.
//! Each shows only what the caller's identity may see (locks it may read;
//! its own sessions, an administrator's every session).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

/// Where to ask, and how to print.
#[derive(Debug, Args)]
pub struct Output {
    /// Print JSON (one document) instead of a table.
    #[arg(long)]
    json: bool,
    /// The client config file (written by `paxlock dev`).
    #[arg(long, default_value = ".paxlock-dev/client.toml")]
    client_config: PathBuf,
}

impl Output {
    async fn ask<T>(
        &self,
        call: impl AsyncFnOnce(&paxlock::Client) -> Result<T, paxlock::Error>,
    ) -> anyhow::Result<T> {
        ask(&self.client_config, call).await
    }
}

/// Connects, asks, and closes the client (its session) before answering,
/// whatever the answer.
pub(crate) async fn ask<T>(
    client_config: &std::path::Path,
    call: impl AsyncFnOnce(&paxlock::Client) -> Result<T, paxlock::Error>,
) -> anyhow::Result<T> {
    let client = super::connect(client_config).await?;
    let answer = call(&client).await;
    let _ = client.close().await;
    Ok(answer?)
}

/// `paxlock locks [PREFIX]`.
pub async fn locks(prefix: &str, out: &Output) -> anyhow::Result<()> {
    let locks = out
        .ask(async |c| c.list_locks(prefix).await)
        .await
        .context("listing locks")?;
    if out.json {
        return print_json(&locks);
    }
    println!(
        "{:<32} {:<20} {:>10} {:>12} {:>8} {:>10}",
        "lock", "holder", "session", "token", "waiters", "delay"
    );
    for lock in &locks {
        let (holder, session, token) = match (&lock.grant, lock.kind) {
            (Some(g), _) => (
                shown_identity(&g.holder.identity),
                g.holder.session_id.to_string(),
                g.fencing_token.to_string(),
            ),
            (None, paxlock::LockKind::Semaphore { permits }) => (
                format!("{} of {permits} permits", lock.holders),
                "-".to_string(),
                "-".to_string(),
            ),
            (None, paxlock::LockKind::ReadWrite) => (
                format!("{} (read/write)", lock.holders),
                "-".to_string(),
                "-".to_string(),
            ),
            (None, paxlock::LockKind::Lock) => ("-".to_string(), "-".to_string(), "-".to_string()),
        };
        println!(
            "{:<32} {:<20} {:>10} {:>12} {:>8} {:>10}",
            lock.name,
            holder,
            session,
            token,
            lock.waiters,
            delay(lock.lock_delay_left)
        );
    }
    if locks.is_empty() {
        println!("(no lock you may read is held or waited for under {prefix:?})");
    }
    Ok(())
}

/// `paxlock describe NAME`.
pub async fn describe(name: &str, out: &Output) -> anyhow::Result<()> {
    let info = out
        .ask(async |c| c.describe_lock(name).await)
        .await
        .with_context(|| format!("describing lock {name:?}"))?;
    if out.json {
        return print_json(&info);
    }
    match info.kind {
        paxlock::LockKind::Lock => println!("lock {}", info.name),
        paxlock::LockKind::Semaphore { permits } => {
            println!("semaphore {} ({permits} permits)", info.name)
        }
        paxlock::LockKind::ReadWrite => println!("read/write lock {}", info.name),
    }
    match &info.grant {
        None if info.kind != paxlock::LockKind::Lock => {
            println!("  holders: {}", info.holders.len());
            for h in &info.holders {
                let how = match h.held_as {
                    paxlock::HeldAs::Permit { slot } => format!("permit in slot {slot}"),
                    paxlock::HeldAs::Read => "reading".to_string(),
                    paxlock::HeldAs::Write => "writing".to_string(),
                };
                println!(
                    "    {} (session {}), {how}, fencing token {} (grant token {}), {}",
                    shown_identity(&h.grant.holder.identity),
                    h.grant.holder.session_id,
                    h.presents,
                    h.grant.fencing_token,
                    for_how_long("held", h.grant.held_for)
                );
            }
        }
        Some(g) => {
            println!(
                "  held by {} (session {}), fencing token {}, {}",
                shown_identity(&g.holder.identity),
                g.holder.session_id,
                g.fencing_token,
                for_how_long("held", g.held_for)
            );
            if !info.value.is_empty() {
                println!("  value: {}", String::from_utf8_lossy(&info.value));
            }
        }
        None => println!("  not held"),
    }
    println!("  lock-delay: {}", delay(info.lock_delay_left));
    println!("  waiters: {}", info.waiters.len());
    for (i, w) in info.waiters.iter().enumerate() {
        let wants = match w.wants {
            Some(paxlock::Wants::Permit) => ", for a permit",
            Some(paxlock::Wants::Read) => ", to read",
            Some(paxlock::Wants::Write) => ", to write",
            None => "",
        };
        println!(
            "    {}. {} (session {}){wants}, {}",
            i + 1,
            shown_identity(&w.session.identity),
            w.session.session_id,
            for_how_long("waiting", w.waiting_for)
        );
    }
    Ok(())
}

/// `paxlock watch-lock NAME`: one line per event (one JSON document per
/// line with `--json`) until Ctrl-C; from after `after` (0: the lock now).
pub async fn watch_lock(name: &str, after: u64, out: &Output) -> anyhow::Result<()> {
    let client = super::connect(&out.client_config).await?;
    let mut shutdown = super::signals::Shutdown::install()?;
    let mut watch = client.watch_lock_after(name, after);
    let watched = loop {
        let event = tokio::select! {
            event = watch.next() => event,
            _ = shutdown.recv() => {
                // On standard error, so that --json output stays one
                // document per line.
                eprintln!("resume with --after {}", watch.resume_point());
                break Ok(());
            }
        };
        match event {
            Ok(event) if out.json => println!("{}", serde_json::to_string(&event)?),
            Ok(event) => println!("{}", lock_event_line(&event)),
            Err(e) => break Err(e),
        }
    };
    let _ = client.close().await;
    watched.with_context(|| format!("watching lock {name:?}"))
}

/// One line for people: `index=N what ...`, the value last (it may hold
/// spaces).
fn lock_event_line(event: &paxlock::LockEvent) -> String {
    use paxlock::LockEvent as E;
    let who = |s: &paxlock::SessionRef| {
        if s.identity.is_empty() {
            format!("session={}", s.session_id)
        } else {
            format!("session={} identity={}", s.session_id, s.identity)
        }
    };
    let reason = |r: &paxlock::EndReason| {
        serde_json::to_value(r)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    match event {
        E::Current { index, lock } => {
            let holder = match &lock.grant {
                Some(g) => format!("held {} fencing_token={}", who(&g.holder), g.fencing_token),
                None => "free".to_string(),
            };
            format!(
                "index={index} current {holder} waiters={} lock_delay={}",
                lock.waiters.len(),
                delay(lock.lock_delay_left)
            )
        }
        E::Granted {
            index,
            holder,
            fencing_token,
            value,
        } => format!(
            "index={index} granted {} fencing_token={fencing_token} value={}",
            who(holder),
            String::from_utf8_lossy(value)
        ),
        E::Released {
            index,
            holder,
            fencing_token,
            reason: why,
            lock_delay,
        } => format!(
            "index={index} released {} fencing_token={fencing_token} reason={}{}",
            who(holder),
            reason(why),
            lock_delay.map_or(String::new(), |d| format!(" lock_delay={}", human(d)))
        ),
        E::Queued { index, session } => format!("index={index} queued {}", who(session)),
        E::LeftQueue {
            index,
            session,
            reason: why,
        } => format!(
            "index={index} left-queue {} reason={}",
            who(session),
            reason(why)
        ),
        E::DelayEnded { index } => format!("index={index} delay-ended"),
        E::HistoryGone => {
            "history-gone (changes may have been missed; the current state follows)".into()
        }
    }
}

/// `paxlock sessions`.
pub async fn sessions(out: &Output) -> anyhow::Result<()> {
    let sessions = out
        .ask(async |c| c.list_sessions().await)
        .await
        .context("listing sessions")?;
    if out.json {
        return print_json(&sessions);
    }
    println!(
        "{:>10} {:<20} {:>10} {:>12} {:>6} {:>6} {:>9}",
        "session", "identity", "ttl", "expires in", "holds", "waits", "campaigns"
    );
    for s in &sessions {
        println!(
            "{:>10} {:<20} {:>10} {:>12} {:>6} {:>6} {:>9}",
            s.session.session_id,
            shown_identity(&s.session.identity),
            human(s.ttl),
            human(s.expires_in),
            s.held.len(),
            s.waiting.len(),
            s.campaigns.len()
        );
        for (what, names) in [
            ("holds", &s.held),
            ("waits for", &s.waiting),
            ("campaigns in", &s.campaigns),
        ] {
            if !names.is_empty() {
                println!("{:>12}{what}: {}", "", names.join(", "));
            }
        }
    }
    Ok(())
}

/// `paxlock revoke SESSION`.
pub async fn revoke(session: u64, client_config: &std::path::Path) -> anyhow::Result<()> {
    ask(client_config, async |c| c.revoke_session(session).await)
        .await
        .with_context(|| format!("revoking session {session}"))?;
    println!(
        "session {session} revoked: its locks pass on once its TTL is over, with higher fencing tokens"
    );
    Ok(())
}

/// `paxlock release --force NAME [--token T]`.
pub async fn force_release(
    name: &str,
    token: Option<u64>,
    client_config: &std::path::Path,
) -> anyhow::Result<()> {
    let taken = ask(client_config, async |c| match token {
        Some(token) => c.force_release_grant(name, token).await,
        None => c.force_release(name).await,
    })
    .await
    .with_context(|| format!("force-releasing lock {name:?}"))?;
    println!(
        "lock {name:?} force-released from {} (session {}, fencing token {}): its holder is told at its next keepalive; the lock passes on once the holder's TTL is over, with a higher fencing token",
        shown_identity(&taken.holder.identity),
        taken.holder.session_id,
        taken.fencing_token
    );
    Ok(())
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn shown_identity(identity: &str) -> String {
    if identity.is_empty() {
        "(no identity)".into()
    } else {
        identity.into()
    }
}

/// "held for 3s 20ms", or "held since before the upgrade" for a time the
/// cluster did not keep (protocol 2).
fn for_how_long(what: &str, time: Option<Duration>) -> String {
    match time {
        Some(d) => format!("{what} for {}", human(d)),
        None => format!("{what} since before the upgrade to protocol 3"),
    }
}

fn delay(left: Option<Duration>) -> String {
    left.map_or_else(|| "none".into(), |d| format!("{} left", human(d)))
}

/// A duration to the millisecond, as humantime writes it ("1s 500ms").
fn human(d: Duration) -> String {
    let ms = Duration::from_millis(d.as_millis() as u64);
    humantime::format_duration(ms).to_string()
}
