//! The `paxlock` command line.

pub mod acl;
pub mod certs;
pub mod dev;
pub mod elect;
pub mod inspect;
pub mod lock;
pub mod members;
pub mod serve;
pub mod signals;
pub mod snapshot;
pub mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Paxlock: distributed locks with fencing tokens, and leader election.
#[derive(Debug, Parser)]
#[command(name = "paxlock", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// How many threads the async runtime should have, if the command
    /// asks for a number (only `serve --worker-threads`).
    pub fn worker_threads(&self) -> Option<usize> {
        match &self.command {
            Command::Serve { worker_threads, .. } => worker_threads.map(usize::from),
            _ => None,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one coordinator node.
    Serve {
        /// The node's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Threads of the node's async runtime (default: one per CPU).
        /// Where several nodes share a machine (`paxlock dev`, the bench's
        /// cluster), 1 avoids their threads waking each other across the
        /// same few cores.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        worker_threads: Option<u16>,
        /// Stop, as on SIGTERM, when standard input reaches its end: a
        /// supervisor that holds a pipe to the node's stdin (as `paxlock
        /// dev` does) takes the node with it however it ends, SIGKILL
        /// included, instead of leaving it running and holding its port.
        #[arg(long)]
        exit_with_parent: bool,
        /// Join a running cluster: ask the member at ADDR (`host:port`, as
        /// clients reach it; repeat for more) to add this node, then to
        /// promote it once caught up (`join_as = "learner"` stops at a
        /// learner). The same as listing ADDR in `join_via`. The config
        /// names the cluster's first voters as `[[peers]]` and a `listen`
        /// address the members can dial; the node's certificate names its
        /// id (paxlock certs issue-node).
        #[arg(long, value_name = "ADDR")]
        join: Vec<String>,
    },
    /// Start a local cluster on loopback with fresh dev certificates.
    Dev(dev::DevArgs),
    /// Run a command while holding a lock (token in PAXLOCK_FENCING_TOKEN).
    Lock(lock::LockArgs),
    /// Campaign for leadership until Ctrl-C, or run a command while leader
    /// (`-- CMD`, the twin of `lock`), or --watch leadership changes.
    Elect(elect::ElectArgs),
    /// Print one line per leadership change of an election until Ctrl-C
    /// (the same as `elect --watch`).
    Observe {
        /// The election's name.
        name: String,
        /// The client config file (written by `paxlock dev`).
        #[arg(long, default_value = ".paxlock-dev/client.toml")]
        client_config: PathBuf,
    },
    /// Print each node, who leads, commit index and lag.
    Status {
        /// The client config file (written by `paxlock dev`).
        #[arg(long, default_value = ".paxlock-dev/client.toml")]
        client_config: PathBuf,
    },
    /// List locks whose names start with PREFIX (all by default): holder,
    /// fencing token, waiters, lock-delay.
    Locks {
        /// Names start with this.
        #[arg(default_value = "")]
        prefix: String,
        /// How to print, and which cluster to ask.
        #[command(flatten)]
        output: inspect::Output,
    },
    /// Show one lock: its holder and token, its waiters in queue order,
    /// its lock-delay.
    Describe {
        /// The lock's name.
        name: String,
        /// How to print, and which cluster to ask.
        #[command(flatten)]
        output: inspect::Output,
    },
    /// Print one line per change of a lock until Ctrl-C: granted,
    /// released (and why), queued, left the queue, lock-delay ended; first
    /// the lock as it stands.
    WatchLock {
        /// The lock's name.
        name: String,
        /// Resume after this index (printed at exit as `resume with
        /// --after N`): every change since, or `history-gone` and the
        /// lock now.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// How to print (`--json`: one document per line), and which
        /// cluster to ask.
        #[command(flatten)]
        output: inspect::Output,
    },
    /// List sessions (your own; an administrator's: all) with what each
    /// holds, waits for and campaigns in.
    Sessions {
        /// How to print, and which cluster to ask.
        #[command(flatten)]
        output: inspect::Output,
    },
    /// End a session now (administrators only): its locks pass on after
    /// its TTL, with higher tokens; its client's guards report the loss.
    Revoke {
        /// The session's id (as `paxlock sessions` lists it).
        session: u64,
        /// The client config file (written by `paxlock dev`).
        #[arg(long, default_value = ".paxlock-dev/client.toml")]
        client_config: PathBuf,
    },
    /// End another holder's grant of a lock now (administrators only,
    /// with --force): the holder's `paxlock lock` stops its command at its
    /// next keepalive; the lock passes on after the holder's TTL, with a
    /// higher token.
    Release {
        /// The lock.
        name: String,
        /// Required: this takes the lock from whoever holds it. (A holder
        /// releases its own lock by ending its `paxlock lock` command.)
        #[arg(long)]
        force: bool,
        /// Only the grant with this fencing token (as `describe` showed
        /// it): a grant that passed on since is not taken.
        #[arg(long)]
        token: Option<u64>,
        /// The client config file (written by `paxlock dev`).
        #[arg(long, default_value = ".paxlock-dev/client.toml")]
        client_config: PathBuf,
    },
    /// Read or change the cluster's access rules (administrators only).
    Acl {
        /// The rules action.
        #[command(subcommand)]
        action: acl::AclCommand,
    },
    /// Manage the development PKI.
    Certs {
        /// The certificate action.
        #[command(subcommand)]
        action: certs::CertsCommand,
    },
    /// The cluster's members, and an administrator's changes to them: add a
    /// learner, promote it, remove a member, or replace one by a new node.
    Members {
        /// The membership action.
        #[command(subcommand)]
        action: members::MembersCommand,
    },
    /// Back up the cluster's state, or start a new cluster from a backup
    /// (after losing the cluster, or a majority of it).
    Snapshot {
        /// The backup action.
        #[command(subcommand)]
        action: snapshot::SnapshotCommand,
    },
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ok = |()| ExitCode::SUCCESS;
    match cli.command {
        Command::Serve {
            config,
            exit_with_parent,
            join,
            ..
        } => serve::run(&config, exit_with_parent, &join).await.map(ok),
        Command::Dev(args) => dev::run(args).await.map(ok),
        Command::Certs { action } => certs::run(action).map(ok),
        Command::Acl { action } => acl::run(action).await.map(ok),
        Command::Members { action } => members::run(action).await.map(ok),
        Command::Snapshot { action } => snapshot::run(action).await.map(ok),
        Command::Status { client_config } => status::run(&client_config).await.map(ok),
        Command::Locks { prefix, output } => inspect::locks(&prefix, &output).await.map(ok),
        Command::Describe { name, output } => inspect::describe(&name, &output).await.map(ok),
        Command::Sessions { output } => inspect::sessions(&output).await.map(ok),
        Command::WatchLock {
            name,
            after,
            output,
        } => inspect::watch_lock(&name, after, &output).await.map(ok),
        Command::Revoke {
            session,
            client_config,
        } => inspect::revoke(session, &client_config).await.map(ok),
        Command::Release {
            name,
            force: true,
            token,
            client_config,
        } => inspect::force_release(&name, token, &client_config)
            .await
            .map(ok),
        Command::Release { force: false, .. } => Err(anyhow::anyhow!(
            "paxlock release takes a lock from whoever holds it: pass --force to mean that (a holder releases its own lock by ending its `paxlock lock` command)"
        )),
        Command::Lock(args) => lock::run(args).await,
        Command::Elect(args) => elect::run(args).await,
        Command::Observe {
            name,
            client_config,
        } => elect::observe(&name, &client_config).await,
    }
}

/// A client of the cluster a client config file names.
pub(crate) async fn connect(client_config: &std::path::Path) -> anyhow::Result<paxlock::Client> {
    use anyhow::Context;
    let config = paxlock::Config::from_file(client_config)
        .with_context(|| format!("reading {}", client_config.display()))?;
    paxlock::Client::connect(config)
        .await
        .context("connecting to the cluster")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    #[test]
    fn serve_takes_a_worker_thread_count_of_at_least_one() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["paxlock", "serve", "--config", "node.toml"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        assert_eq!(parse(&[]).unwrap().worker_threads(), None);
        let one = parse(&["--worker-threads", "1"]).unwrap();
        assert_eq!(one.worker_threads(), Some(1));
        let zero = parse(&["--worker-threads", "0"]).unwrap_err().to_string();
        assert!(zero.contains("--worker-threads"), "{zero}");
    }
}
