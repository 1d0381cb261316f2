//! `paxlock dev`: a local cluster on loopback for trying Paxlock out.
//!
//! Through the launcher (`paxlock-launcher`, as the lab and the tests):
//! fresh dev certificates, one config and data directory per node, every
//! node its own `paxlock serve` process, ready once each answers the status
//! request connected to all the others. The nodes stop with it: on its
//! SIGINT, SIGTERM or SIGHUP it stops them, and each watches its stdin, a
//! pipe only this process holds, so they stop when it dies however it
//! dies.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use paxlock_launcher::{Cluster, ClusterSpec, LogSink, NodeBinary, NodeLine};
use tokio::sync::mpsc;

/// Options of `paxlock dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Folder for certificates, configs and data (git-ignored).
    #[arg(long, default_value = ".paxlock-dev")]
    pub dir: PathBuf,
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub nodes: u64,
    /// UDP port of node 1; node N listens on base + N - 1.
    #[arg(long, default_value_t = 7101)]
    pub base_port: u16,
    /// How long to wait for the nodes to connect.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub startup_timeout: Duration,
    /// Exit (stopping the nodes) as soon as the cluster is connected;
    /// used by tests and CI.
    #[arg(long)]
    pub exit_when_connected: bool,
}

/// Runs the dev cluster until Ctrl-C, SIGTERM or SIGHUP (or until
/// connected, if asked); the nodes never outlive it.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if !matches!(args.nodes, 1 | 3 | 5) {
        bail!("--nodes must be 1, 3 or 5 (a majority must survive a failure)");
    }
    let last_port = u32::from(args.base_port) + args.nodes as u32 - 1;
    if last_port > u32::from(u16::MAX) || args.base_port == 0 {
        bail!(
            "--base-port {} leaves no room for {} nodes",
            args.base_port,
            args.nodes
        );
    }
    // Before any node starts: a SIGTERM, SIGINT or SIGHUP from here on
    // stops the nodes, and so does this process's death, however it dies
    // (the launcher starts each node watching its stdin, a pipe only this
    // process holds).
    let mut shutdown = super::signals::Shutdown::install()?;
    let exe = std::env::current_exe().context("finding the paxlock executable")?;
    let binary = NodeBinary::probe(exe)?;
    let (lines_tx, mut lines) = mpsc::channel::<NodeLine>(256);
    let spec = ClusterSpec::loopback(&args.dir, args.nodes, args.base_port)
        .logs(LogSink::Lines(lines_tx))
        // Its client administers: `paxlock acl` works out of the box.
        .admins(&[paxlock_launcher::DEV_CLIENT])
        .startup_timeout(args.startup_timeout);
    let mut cluster = Cluster::prepare(binary, spec)
        .with_context(|| format!("writing the dev cluster into {}", args.dir.display()))?;
    let ids = cluster.ids();
    for &id in &ids {
        cluster.spawn(id)?;
    }
    let print_lines = async {
        while let Some(NodeLine { node, line }) = lines.recv().await {
            println!("[node {node}] {line}");
        }
    };
    tokio::pin!(print_lines);
    tokio::select! {
        ready = cluster.wait_ready(&ids, args.startup_timeout) => {
            if let Err(e) = ready {
                cluster.stop(STOP_GRACE).await;
                return Err(e).context("the dev cluster did not come up");
            }
        }
        _ = shutdown.recv() => {
            cluster.stop(STOP_GRACE).await;
            bail!("stopped by a signal before the cluster was up");
        }
        _ = &mut print_lines => {
            cluster.stop(STOP_GRACE).await;
            bail!("the nodes' output ended before the cluster was up");
        }
    }
    println!();
    println!(
        "Paxlock dev cluster is up: {} nodes on 127.0.0.1:{}..={last_port}",
        args.nodes, args.base_port
    );
    println!("  certificates: {}", cluster.certs_dir().display());
    println!("  node configs: {}/node-*.toml", args.dir.display());
    println!(
        "  client config: {}",
        cluster.client_config_path().display()
    );
    println!(
        "Try: paxlock status --client-config {}",
        cluster.client_config_path().display()
    );
    if args.exit_when_connected {
        cluster.stop(STOP_GRACE).await;
        return Ok(());
    }
    println!("Press Ctrl-C to stop.");
    tokio::select! {
        _ = shutdown.recv() => {}
        _ = &mut print_lines => {}
    }
    cluster.stop(STOP_GRACE).await;
    Ok(())
}

/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
