//! `paxlock lock NAME -- CMD ARGS…`: run a command while holding a lock.
//!
//! Like `etcdctl lock` and `consul lock`, with fencing: the command gets the
//! grant's token in `PAXLOCK_FENCING_TOKEN` and must pass it to whatever it
//! changes. If the lock is lost (the session lease ran out), the command is
//! stopped (SIGTERM, then SIGKILL after a grace period) before anyone else
//! can have been granted the lock.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::process::Command;

use super::signals::{exit_code_of, terminate_then_kill, Shutdown};

/// Exit code when the lock could not be acquired (timeout, busy, unreachable).
pub const EXIT_NOT_ACQUIRED: u8 = 3;
/// Exit code when the lock was lost while the command ran.
pub const EXIT_LOCK_LOST: u8 = 4;

/// Options of `paxlock lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock's name.
    pub name: String,
    /// Session TTL: how long after this process stops renewing the lock
    /// may be given to someone else.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Give up if the lock is not granted within this time.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when the command must stop.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// The client config file.
    #[arg(long, default_value = ".paxlock-dev/client.toml")]
    pub client_config: PathBuf,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Runs the command under the lock; returns the command's exit code.
pub async fn run(args: LockArgs) -> anyhow::Result<ExitCode> {
    let mut config = paxlock::Config::from_file(&args.client_config)?;
    config.session_ttl = args.ttl;
    let client = paxlock::Client::connect(config)
        .await
        .context("connecting to the cluster")?;
    let mut builder = client.lock(args.name.clone());
    if let Some(timeout) = args.timeout {
        builder = builder.timeout(timeout);
    }
    let guard = match builder.acquire().await {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("paxlock: could not acquire {:?}: {e}", args.name);
            return Ok(ExitCode::from(EXIT_NOT_ACQUIRED));
        }
    };
    let token = guard.fencing_token();
    let (program, rest) = args.command.split_first().context("no command given")?;
    let mut child = Command::new(program)
        .args(rest)
        .env("PAXLOCK_FENCING_TOKEN", token.to_string())
        .env("PAXLOCK_LOCK_NAME", &args.name)
        // Its own process group, so stopping it stops everything it started.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let mut shutdown = Shutdown::install()?;
    let code = tokio::select! {
        status = child.wait() => {
            let status = status.context("waiting for the command")?;
            let _ = guard.release().await;
            exit_code_of(status)
        }
        _ = guard.lost() => {
            eprintln!("paxlock: lock {:?} lost (token {token}); stopping the command", args.name);
            terminate_then_kill(&mut child, args.grace).await;
            ExitCode::from(EXIT_LOCK_LOST)
        }
        _ = shutdown.recv() => {
            let status = terminate_then_kill(&mut child, args.grace).await;
            let _ = guard.release().await;
            status.map(exit_code_of).unwrap_or(ExitCode::FAILURE)
        }
    };
    let _ = client.close().await;
    Ok(code)
}
