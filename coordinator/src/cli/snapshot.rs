//! `paxlock snapshot save | restore | status`: backups, and starting a new
//! cluster from one after a disaster (ARCHITECTURE.md, "Disaster
//! recovery").

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use paxlock_core::locks::StateMachine;
use paxlock_core::new_cluster::{self, Replay, DEFAULT_REVISION_BUMP};
use paxlock_core::paxos::{NodeId, PersistRequest, PersistSeq};
use paxlock_storage::backup::{self, Backup};
use paxlock_storage::{cluster_hash, FileDurability};
use serde::Serialize;

use super::inspect::{ask, print_json};
use crate::config::NodeConfig;

/// Backup actions.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save the cluster's state to FILE (administrators): the serving
    /// leader's state, holding every write acknowledged before. With
    /// --node-config: from that node's data directory, the node stopped
    /// (when the cluster is lost).
    Save(SaveArgs),
    /// Write the data directory of one node of a NEW cluster from FILE: run
    /// it for every first voter of the new cluster (each with its own
    /// config, the same [[peers]]), then start them. The new cluster needs
    /// a cluster_id of its own.
    Restore {
        /// The backup.
        file: PathBuf,
        /// The new node's config: its data_dir must be empty or absent.
        #[arg(long, short)]
        config: PathBuf,
        /// Raise the revision by this much, so that every fencing token
        /// the new cluster grants is above any the old one granted after
        /// the backup (default 2^40). Give every node the same value.
        #[arg(long, default_value_t = DEFAULT_REVISION_BUMP)]
        bump_revision: u64,
    },
    /// Print what FILE holds: the cluster, slot and revision it was taken
    /// at, its sessions, held locks, waiters and led elections.
    Status {
        /// The backup.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Where `snapshot save` takes the state from.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Where to write the backup (replaced atomically if it exists).
    file: PathBuf,
    /// The client config file (written by `paxlock dev`): an
    /// administrator's certificate.
    #[arg(long, default_value = ".paxlock-dev/client.toml")]
    client_config: PathBuf,
    /// Read the stopped node of this config's data directory instead of
    /// asking the cluster.
    #[arg(long)]
    node_config: Option<PathBuf>,
    /// With --node-config: also the entries the node had accepted but did
    /// not know chosen, for recovery after losing a majority (read the
    /// survivor with the highest accepted ballot, which `save` prints, and
    /// among those the highest slot). An accepted entry may never have
    /// been chosen.
    #[arg(long, requires = "node_config")]
    accepted: bool,
}

/// Runs one backup action.
pub async fn run(command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Save(args) => match &args.node_config {
            Some(node_config) => save_from_data_dir(&args.file, node_config, args.accepted),
            None => save_from_cluster(&args.file, &args.client_config).await,
        },
        SnapshotCommand::Restore {
            file,
            config,
            bump_revision,
        } => restore(&file, &config, bump_revision),
        SnapshotCommand::Status { file, json } => status(&file, json),
    }
}

async fn save_from_cluster(file: &Path, client_config: &Path) -> anyhow::Result<()> {
    let snapshot = ask(client_config, async |client| client.save_snapshot().await)
        .await
        .context("downloading the cluster's state")?;
    let backup = Backup {
        cluster_id: snapshot.cluster_id,
        up_to: snapshot.up_to,
        revision: snapshot.revision,
        state: snapshot.state,
    };
    backup::write_backup(file, &backup)?;
    println!(
        "saved cluster {:?} up to slot {} (revision {}, {} bytes) to {}",
        backup.cluster_id,
        backup.up_to,
        backup.revision,
        backup.state.len(),
        file.display()
    );
    Ok(())
}

fn save_from_data_dir(file: &Path, node_config: &Path, accepted: bool) -> anyhow::Result<()> {
    let config = NodeConfig::from_file(node_config)?;
    let dir = &config.data_dir;
    // Opening a store creates one where there is none: look first.
    if paxlock_storage::meta::read_identity(dir)?.is_none() {
        bail!("{} holds no paxlock data directory", dir.display());
    }
    let (_store, durable) = FileDurability::open_with_segments(
        dir,
        &config.cluster_id,
        config.node_id,
        config.wal_segment_bytes,
    )
    .with_context(|| {
        format!(
            "opening {} (stop the node first: a running node holds it)",
            dir.display()
        )
    })?;
    let replay = if accepted {
        Replay::Accepted
    } else {
        Replay::Chosen
    };
    let replayed = new_cluster::replay(&durable, &config.limits.machine_config(), replay)
        .with_context(|| format!("replaying {}", dir.display()))?;
    let backup = Backup {
        cluster_id: config.cluster_id.clone(),
        up_to: replayed.up_to.0,
        revision: replayed.machine.revision(),
        state: replayed
            .machine
            .snapshot()
            .context("serializing the replayed state")?,
    };
    backup::write_backup(file, &backup)?;
    let ballot = replayed.highest_ballot;
    println!(
        "saved node {}'s state of cluster {:?} up to slot {} (revision {}) to {}: \
         {} entries known chosen, {} only accepted; {} entries after a gap left out; \
         highest accepted ballot: round {} of node {} (of several survivors, restore the one \
         with the highest ballot, then the highest slot)",
        config.node_id,
        backup.cluster_id,
        backup.up_to,
        backup.revision,
        file.display(),
        replayed.chosen,
        replayed.accepted_only,
        replayed.left_out,
        ballot.round,
        ballot.node.0,
    );
    if !accepted && replayed.left_out > 0 {
        println!(
            "the node held entries it did not know chosen; after losing a majority, \
             --accepted keeps them too"
        );
    }
    Ok(())
}

fn restore(file: &Path, config_path: &Path, bump: u64) -> anyhow::Result<()> {
    let config = NodeConfig::from_file(config_path)?;
    if config.joins() {
        bail!(
            "{} has join = true: restore the new cluster's first voters only (join = false); \
             nodes added later catch up from them",
            config_path.display()
        );
    }
    let backup = backup::read_backup(file)?;
    if cluster_hash(&config.cluster_id) == cluster_hash(&backup.cluster_id) {
        bail!(
            "the backup is of cluster {:?}, and {} names the same cluster_id: a restored \
             cluster is a new cluster (its own ballots, members and data), so that no node \
             of the old one ever takes part in it. Give every node of the new cluster \
             another cluster_id",
            backup.cluster_id,
            config_path.display()
        );
    }
    let dir = &config.data_dir;
    let occupied = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        bail!(
            "{} is not empty: a restore writes a new node's data directory. Point data_dir \
             at an empty directory (or move this one aside)",
            dir.display()
        );
    }
    let voters: Vec<NodeId> = std::iter::once(config.node_id)
        .chain(config.peers.iter().map(|p| p.id))
        .map(NodeId)
        .collect();
    let first = new_cluster::first_state(&backup.state, backup.up_to, &voters, bump)
        .with_context(|| format!("restoring {}", file.display()))?;
    // Every node of the new cluster must start from the same state (same
    // backup, same jump, same voters): printed for the operator to compare.
    let digest =
        first.ops.iter().fold(
            crc32c::crc32c(&first.up_to.0.to_le_bytes()),
            |crc, op| match op {
                paxlock_core::paxos::PersistOp::Snapshot(s) => crc32c::crc32c_append(crc, &s.data),
                _ => crc,
            },
        );
    write_first_state(dir, &config, first.ops)?;
    let mut ids: Vec<u64> = voters.iter().map(|n| n.0).collect();
    ids.sort_unstable();
    println!(
        "restored node {} of cluster {:?} (voters {}) from the backup of {:?} up to slot {}: \
         revision {} -> {}, so fencing tokens continue above {}; first state {:08x} (every \
         node of the new cluster must print the same). Restore the other voters from the same \
         file with the same --bump-revision, then start them with `paxlock serve`",
        config.node_id,
        config.cluster_id,
        super::status::id_list(&ids),
        backup.cluster_id,
        backup.up_to,
        backup.revision,
        first.revision,
        first.revision,
        digest,
    );
    Ok(())
}

/// Writes a new node's data directory `dir` holding `ops` (its first
/// state): built beside it and renamed into place once durable, so that an
/// interrupted restore leaves no directory `paxlock serve` would take for
/// a fresh node of an empty cluster.
fn write_first_state(
    dir: &Path,
    config: &NodeConfig,
    ops: Vec<paxlock_core::paxos::PersistOp>,
) -> anyhow::Result<()> {
    let name = dir.file_name().context("data_dir names no directory")?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let mut building = name.to_os_string();
    building.push(".restoring");
    let building = parent.join(building);
    // What an interrupted restore left.
    if building.exists() {
        std::fs::remove_dir_all(&building)
            .with_context(|| format!("removing {}", building.display()))?;
    }
    std::fs::create_dir(&building).with_context(|| format!("creating {}", building.display()))?;
    {
        let (mut store, _) = FileDurability::open_with_segments(
            &building,
            &config.cluster_id,
            config.node_id,
            config.wal_segment_bytes,
        )
        .with_context(|| format!("creating the data directory {}", building.display()))?;
        store
            .persist_batch(&[PersistRequest {
                seq: PersistSeq(1),
                ops,
            }])
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", building.display()))?;
    }
    // An empty directory at `dir` (checked by the caller) is replaced.
    std::fs::rename(&building, dir)
        .with_context(|| format!("renaming {} to {}", building.display(), dir.display()))?;
    paxlock_storage::fsutil::fsync_dir(parent)
        .with_context(|| format!("syncing {}", parent.display()))?;
    Ok(())
}

/// What a backup holds, as `snapshot status` prints it.
#[derive(Debug, Serialize)]
struct BackupStatus {
    cluster_id: String,
    up_to: u64,
    revision: u64,
    state_bytes: u64,
    sessions: u64,
    locks_held: u64,
    waiters: u64,
    elections_led: u64,
}

fn status(file: &Path, json: bool) -> anyhow::Result<()> {
    let backup = backup::read_backup(file)?;
    let machine = StateMachine::restore(&backup.state)
        .with_context(|| format!("{} holds a state that does not decode", file.display()))?;
    let gauges = machine.gauges();
    let status = BackupStatus {
        cluster_id: backup.cluster_id,
        up_to: backup.up_to,
        revision: backup.revision,
        state_bytes: backup.state.len() as u64,
        sessions: gauges.sessions,
        locks_held: gauges.locks_held,
        waiters: gauges.waiters,
        elections_led: gauges.elections_led,
    };
    if json {
        return print_json(&status);
    }
    println!(
        "cluster {:?} up to slot {}, revision {}: {} bytes of state, {} sessions, \
         {} locks held, {} waiters, {} elections led",
        status.cluster_id,
        status.up_to,
        status.revision,
        status.state_bytes,
        status.sessions,
        status.locks_held,
        status.waiters,
        status.elections_led,
    );
    Ok(())
}
