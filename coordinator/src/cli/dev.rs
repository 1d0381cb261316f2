//! `paxlock dev`: a local cluster on loopback for trying Paxlock out.
//!
//! Makes fresh dev certificates, one config and data directory per node,
//! starts every node as its own `paxlock serve` process, and waits until
//! each has connected to all the others over mutual TLS. The nodes stop
//! with it: on its SIGINT, SIGTERM or SIGHUP it stops them, and each
//! watches its stdin, a pipe only this process holds, so they stop when
//! it dies however it dies.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::serve::CONNECTED_MARKER;

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
    let certs = args.dir.join("certs");
    let pki = paxlock_certs::write_dev_pki(&certs, "dev", args.nodes, &[], &["dev-client"])
        .with_context(|| format!("writing dev certificates to {}", certs.display()))?;
    let mut configs = Vec::new();
    for id in 1..=args.nodes {
        let path = args.dir.join(format!("node-{id}.toml"));
        let data_dir = args.dir.join("data").join(format!("node-{id}"));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        std::fs::write(&path, node_config(id, args.nodes, args.base_port))
            .with_context(|| format!("writing {}", path.display()))?;
        configs.push(path);
    }
    let client_config = args.dir.join("client.toml");
    std::fs::write(
        &client_config,
        client_config_text(args.nodes, args.base_port),
    )
    .with_context(|| format!("writing {}", client_config.display()))?;
    // Before any node starts: a SIGTERM, SIGINT or SIGHUP from here on
    // stops the nodes, and so does this process's death, however it dies
    // (each node watches its stdin, a pipe only this process holds).
    let mut shutdown = super::signals::Shutdown::install()?;
    let exe = std::env::current_exe().context("finding the paxlock executable")?;
    let (lines_tx, mut lines) = mpsc::channel::<(u64, String)>(256);
    let mut children = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let id = i as u64 + 1;
        children.push(spawn_node(&exe, id, config, lines_tx.clone())?);
    }
    drop(lines_tx);

    let mut ready = std::collections::BTreeSet::new();
    let deadline = tokio::time::sleep(args.startup_timeout);
    tokio::pin!(deadline);
    while ready.len() < args.nodes as usize {
        tokio::select! {
            line = lines.recv() => match line {
                Some((id, line)) => {
                    println!("[node {id}] {line}");
                    if line.contains(CONNECTED_MARKER) {
                        ready.insert(id);
                    }
                }
                None => {
                    super::signals::stop_all(&mut children, STOP_GRACE).await;
                    bail!("a node exited before the cluster was up; see its output above");
                }
            },
            _ = &mut deadline => {
                super::signals::stop_all(&mut children, STOP_GRACE).await;
                bail!("nodes did not connect within {}", humantime::format_duration(args.startup_timeout));
            }
            _ = shutdown.recv() => {
                super::signals::stop_all(&mut children, STOP_GRACE).await;
                bail!("stopped by a signal before the cluster was up");
            }
        }
    }
    println!();
    println!(
        "Paxlock dev cluster is up: {} nodes on 127.0.0.1:{}..={last_port}",
        args.nodes, args.base_port
    );
    println!(
        "  certificates: {}",
        pki.ca_cert.parent().unwrap_or(Path::new(".")).display()
    );
    println!("  node configs: {}/node-*.toml", args.dir.display());
    println!("  client config: {}", client_config.display());
    println!(
        "Try: paxlock status --client-config {}",
        client_config.display()
    );
    if args.exit_when_connected {
        super::signals::stop_all(&mut children, STOP_GRACE).await;
        return Ok(());
    }
    println!("Press Ctrl-C to stop.");
    tokio::select! {
        _ = shutdown.recv() => {}
        _ = async { while let Some((id, line)) = lines.recv().await { println!("[node {id}] {line}"); } } => {}
    }
    super::signals::stop_all(&mut children, STOP_GRACE).await;
    Ok(())
}

/// The TOML config of node `id` in a loopback cluster of `nodes` nodes whose
/// node 1 listens on `base_port`; paths are relative to the cluster folder.
pub fn node_config(id: u64, nodes: u64, base_port: u16) -> String {
    let addr = |n: u64| format!("127.0.0.1:{}", u64::from(base_port) + n - 1);
    let peers: Vec<(u64, String)> = (1..=nodes)
        .filter(|&p| p != id)
        .map(|p| (p, addr(p)))
        .collect();
    node_config_at(id, &addr(id), &addr(id), &peers, "")
}

/// The TOML config of node `id` listening on `listen` (UDP) with metrics on
/// `metrics` (TCP), reaching each peer at the given address; `extra` is
/// appended verbatim (e.g. a `[limits]` table). Paths are relative to the
/// cluster folder, as `paxlock certs init` and `paxlock dev` lay it out.
pub fn node_config_at(
    id: u64,
    listen: &str,
    metrics: &str,
    peers: &[(u64, String)],
    extra: &str,
) -> String {
    let mut text = format!(
        "node_id = {id}\ncluster_id = \"dev\"\nlisten = \"{listen}\"\ndata_dir = \"data/node-{id}\"\nmetrics_listen = \"{metrics}\"\n\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/node-{id}.pem\"\nkey = \"certs/node-{id}.key\"\n"
    );
    for (peer, addr) in peers {
        text.push_str(&format!("\n[[peers]]\nid = {peer}\naddr = \"{addr}\"\n"));
    }
    text.push_str(extra);
    text
}

/// The client config for the same cluster.
pub fn client_config_text(nodes: u64, base_port: u16) -> String {
    let endpoints: Vec<String> = (0..nodes)
        .map(|i| format!("\"127.0.0.1:{}\"", u64::from(base_port) + i))
        .collect();
    format!(
        "endpoints = [{}]\nrequest_timeout = \"10s\"\n\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/client-dev-client.pem\"\nkey = \"certs/client-dev-client.key\"\n",
        endpoints.join(", ")
    )
}

fn spawn_node(
    exe: &Path,
    id: u64,
    config: &Path,
    lines: mpsc::Sender<(u64, String)>,
) -> anyhow::Result<Child> {
    // Three nodes on one machine: one runtime thread each.
    // Its stdin is a pipe whose other end only this process holds (in the
    // returned `Child`): the node stops when it closes.
    let mut child = Command::new(exe)
        .arg("serve")
        .args(["--worker-threads", "1", "--exit-with-parent"])
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting node {id}"))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    for stream in [
        stdout.map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        stderr.map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let lines = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if lines.send((id, line)).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(child)
}

/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
