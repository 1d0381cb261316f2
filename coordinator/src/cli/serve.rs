//! `paxlock serve --config node.toml`: run one node until SIGTERM or Ctrl-C.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tracing::info;

use crate::config::NodeConfig;
use crate::node::{App, Node, NodeOptions, NodeParts, StopReason};
use crate::transport::TlsMaterial;
use paxlock_storage::{FileDurability, Incarnations};

/// The line a node prints (and flushes) on stdout once every outbound peer
/// link is up: for people. Launchers decide readiness by the status
/// request, which also says whether the node knows a leader.
const CONNECTED_MARKER: &str = "connected to all peers over mutual TLS";

/// Resolves once standard input reaches its end (or fails): the process
/// that held its other end is gone. The read blocks on a thread of its
/// own, not the runtime's blocking pool, whose shutdown would wait for
/// it: a node told to stop by SIGTERM must not hang on its stdin.
async fn stdin_closed() {
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 256];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = closed_tx.send(());
        });
    match spawned {
        // Sender dropped or sent: either way the watch is over.
        Ok(_) => {
            let _ = closed.await;
        }
        Err(e) => {
            tracing::warn!("cannot watch stdin ({e}); --exit-with-parent is off");
            std::future::pending::<()>().await;
        }
    }
}

/// Runs a node from its config file; with `exit_with_parent`, stops when
/// its standard input closes (see `paxlock serve --exit-with-parent`); it
/// asks the members at `join` (and `join_via`) to add it.
pub async fn run(
    config_path: &Path,
    exit_with_parent: bool,
    join: &[String],
) -> anyhow::Result<()> {
    let config = NodeConfig::from_file_joining(config_path, join)?;
    #[cfg(feature = "canary")]
    if let Some(canary) = crate::canary::install_from_env()? {
        tracing::warn!(%canary, "CANARY BUILD: this node runs with a durability rule switched off");
    }
    let tls = TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let options = NodeOptions::from(&config);
    let (durability, recovered) = FileDurability::open_with_segments(
        &config.data_dir,
        &config.cluster_id,
        config.node_id,
        config.wal_segment_bytes,
    )
    .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let incarnations = Incarnations::open(&config.data_dir, config.node_id).with_context(|| {
        format!(
            "reading the data directory's incarnation in {}",
            config.data_dir.display()
        )
    })?;
    let parts = NodeParts {
        app: App::Locks(config.limits.machine_config()),
        durability: Box::new(durability),
        recovered,
        incarnations: Some(Arc::new(incarnations)),
    };
    let mut node = Node::start(options, &tls, parts)?;
    if let Some(addr) = config.metrics_listen {
        let bound = node
            .serve_metrics(addr)
            .await
            .with_context(|| format!("serving metrics on {addr} (key `metrics_listen`)"))?;
        info!(%bound, "metrics at http://{bound}/metrics, health at /health");
    }
    info!(node = config.node_id, addr = %node.local_addr()?, "listening");

    let peers = config.peers.len();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    // A node whose consensus loop stopped (storage failed: disk full, too
    // many open files, an I/O error) must not linger answering from frozen
    // state: it exits non-zero, so that a supervisor with `Restart=always`
    // restarts it and it recovers from what is on disk.
    let mut stopped = std::pin::pin!(node.stopped());
    let mut parent_gone = std::pin::pin!(async {
        if exit_with_parent {
            stdin_closed().await;
            info!("the supervising process is gone (stdin closed): stopping");
        } else {
            std::future::pending::<()>().await;
        }
    });
    tokio::select! {
        ids = node.wait_connected(peers) => {
            println!("node {}: {CONNECTED_MARKER} {ids:?}", config.node_id);
            let _ = std::io::stdout().flush();
        }
        reason = &mut stopped => return fail(node, reason).await,
        _ = terminate.recv() => return shutdown(node).await,
        _ = tokio::signal::ctrl_c() => return shutdown(node).await,
        _ = &mut parent_gone => return shutdown(node).await,
    }
    tokio::select! {
        reason = &mut stopped => return fail(node, reason).await,
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = &mut parent_gone => {}
    }
    shutdown(node).await
}

/// The consensus loop stopped: close the connections (peers and clients
/// then fail over at once instead of waiting for a timeout) and exit
/// non-zero with the cause.
async fn fail(node: Node, reason: StopReason) -> anyhow::Result<()> {
    node.shutdown().await;
    let reason = match reason {
        StopReason::Removed(reason) | StopReason::LostData(reason) => anyhow::bail!("{reason}"),
        StopReason::Failed(reason) => reason,
    };
    anyhow::bail!(
        "the node stopped because its consensus loop could not go on: {reason}. \
         Nothing unsaved was acknowledged; fix the cause and start the node again"
    )
}

/// SIGTERM / Ctrl-C: stop taking requests, hand leadership over if this
/// node leads, then close connections. Everything acknowledged is already
/// durable (the persister fsyncs before anything depending on it leaves),
/// so there is nothing else to flush.
async fn shutdown(node: Node) -> anyhow::Result<()> {
    info!("shutting down: draining");
    if node.drain(std::time::Duration::from_secs(3)).await {
        info!("handed leadership over");
        println!("handed leadership over");
    }
    node.shutdown().await;
    Ok(())
}
