//! `paxlock-lab`: the tools that measure and attack a Paxlock cluster,
//! kept out of the server binary that runs in production.
//!
//! - `paxlock-lab bench`: lock and election workloads, failover timing,
//!   and the same workloads against etcd (`--compare`);
//! - `paxlock-lab chaos`: network and process faults from a seed on real
//!   node processes, client workers, and checks on their history.
//!
//! Both start their clusters with `paxlock-launcher`, running the `paxlock`
//! executable next to this one (or `--paxlock-bin`).

mod bench;
mod chaos;
mod node_binary;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc, as in the `paxlock` binary: the bench's clients allocate as
/// much per request as the nodes do, and measured the same way.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Paxlock lab: benchmark and chaos runner.
#[derive(Debug, Parser)]
#[command(name = "paxlock-lab", version, about)]
struct Lab {
    /// What to run.
    #[command(subcommand)]
    command: LabCommand,
}

/// The lab's subcommands.
#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Load generator: lock and election workloads, failover timing, and a
    /// side-by-side comparison with etcd and ZooKeeper.
    Bench(Box<bench::BenchArgs>),
    /// Fault-injection test of real node processes: network and process
    /// faults from a seed, client workers, and checks on their history.
    Chaos(chaos::ChaosArgs),
}

fn main() -> ExitCode {
    let lab = Lab::parse();
    // Under `chaos`, lost sessions and failed connections are the point,
    // not news: its summary reports them; only errors are logged.
    let default_filter = match lab.command {
        LabCommand::Chaos(_) => "error",
        // The ZooKeeper client warns of every server it could not reach,
        // which a failover run makes by the hundred: errors only.
        LabCommand::Bench(_) => "warn,zookeeper_client=error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAXLOCK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match lab.command {
            LabCommand::Bench(args) => bench::run(*args).await.map(|()| ExitCode::SUCCESS),
            LabCommand::Chaos(args) => chaos::run(args).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
