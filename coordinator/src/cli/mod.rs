//! The `paxlock` command line.

pub mod bench;
pub mod certs;
pub mod chaos;
pub mod dev;
pub mod elect;
pub mod lock;
pub mod serve;
pub mod signals;
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

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one coordinator node.
    Serve {
        /// The node's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a local cluster on loopback with fresh dev certificates.
    Dev(dev::DevArgs),
    /// Run a command while holding a lock (token in PAXLOCK_FENCING_TOKEN).
    Lock(lock::LockArgs),
    /// Campaign for leadership until Ctrl-C, or --watch leadership changes.
    Elect(elect::ElectArgs),
    /// Load generator: lock and election workloads, failover timing, and a
    /// side-by-side comparison with etcd.
    Bench(bench::BenchArgs),
    /// Fault-injection test of real node processes: network and process
    /// faults from a seed, client workers, and checks on their history.
    Chaos(chaos::ChaosArgs),
    /// Print each node, who leads, commit index and lag.
    Status {
        /// The client config file (written by `paxlock dev`).
        #[arg(long, default_value = ".paxlock-dev/client.toml")]
        client_config: PathBuf,
    },
    /// Manage the development PKI.
    Certs {
        /// The certificate action.
        #[command(subcommand)]
        action: certs::CertsCommand,
    },
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ok = |()| ExitCode::SUCCESS;
    match cli.command {
        Command::Serve { config } => serve::run(&config).await.map(ok),
        Command::Dev(args) => dev::run(args).await.map(ok),
        Command::Certs { action } => certs::run(action).map(ok),
        Command::Status { client_config } => status::run(&client_config).await.map(ok),
        Command::Lock(args) => lock::run(args).await,
        Command::Elect(args) => elect::run(args).await,
        Command::Bench(args) => bench::run(args).await.map(ok),
        Command::Chaos(args) => chaos::run(args).await,
    }
}
