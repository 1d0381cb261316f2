//! `paxlock lock NAME -- CMD ARGS…`: run a command while holding a lock,
//! one of `N` permits of a semaphore (`-n N`), or a read/write lock for
//! reading (`--shared`).
//!
//! Like `etcdctl lock` and `consul lock` (and `consul lock -n`), with
//! fencing: the command gets the grant's token in `PAXLOCK_FENCING_TOKEN`
//! (and a permit's slot in `PAXLOCK_SLOT`) and must pass it to whatever it
//! changes. If the lock is lost (the session lease ran out), the command is
//! stopped (SIGTERM, then SIGKILL after a grace period) before anyone else
//! can have been granted the lock. Without `-n` or `--shared`, a name in
//! use as a read/write lock is taken for writing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::signals::{spawn_in_group, supervise, Ended};
use anyhow::Context;
use clap::Args;

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
    /// Kept with the grant and shown by `paxlock describe` while it is
    /// held (who holds it and why); up to 64 KiB. Locks only.
    #[arg(long, conflicts_with_all = ["permits", "shared"])]
    pub value: Option<String>,
    /// Take one of N permits of semaphore NAME (at most N holders at
    /// once); every holder must name the same N.
    #[arg(short = 'n', long = "permits", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub permits: Option<u32>,
    /// Take read/write lock NAME for reading, beside other readers.
    #[arg(long, conflicts_with = "permits")]
    pub shared: bool,
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
    let mut builder = match (args.permits, args.shared) {
        (Some(permits), _) => client.semaphore(args.name.clone(), permits),
        (None, true) => client.rwlock(args.name.clone()).read(),
        (None, false) => client.lock(args.name.clone()),
    };
    if let Some(timeout) = args.timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(value) = &args.value {
        builder = builder.value(value.as_bytes());
    }
    let guard = match builder.acquire().await {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("paxlock: could not acquire {:?}: {e}", args.name);
            return Ok(ExitCode::from(EXIT_NOT_ACQUIRED));
        }
    };
    let token = guard.fencing_token();
    let mut env = vec![
        ("PAXLOCK_FENCING_TOKEN", token.to_string()),
        ("PAXLOCK_LOCK_NAME", args.name.clone()),
    ];
    if let Some(slot) = guard.slot() {
        env.push(("PAXLOCK_SLOT", slot.to_string()));
    }
    let mut child = spawn_in_group(&args.command, &env)?;
    let what = match guard.slot() {
        Some(slot) => format!("permit {slot} of {:?} (token {token})", args.name),
        None if args.shared => format!("read lock {:?} (token {token})", args.name),
        None => format!("lock {:?} (token {token})", args.name),
    };
    let code = match supervise(&mut child, guard.lost(), args.grace, &what).await? {
        Ended::Exited(code) | Ended::Stopped(code) => {
            let _ = guard.release().await;
            code
        }
        Ended::Lost => ExitCode::from(EXIT_LOCK_LOST),
    };
    let _ = client.close().await;
    Ok(code)
}
