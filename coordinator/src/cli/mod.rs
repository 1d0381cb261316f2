//! The `paxlock` command line.

pub mod certs;
pub mod dev;
pub mod serve;

use std::path::PathBuf;

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
    /// Manage the development PKI.
    Certs {
        /// The certificate action.
        #[command(subcommand)]
        action: certs::CertsCommand,
    },
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve::run(&config).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Certs { action } => certs::run(action),
    }
}
