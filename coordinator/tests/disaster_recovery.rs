//! Disaster recovery on real `paxlock serve` processes: a backup taken
//! from a running cluster (`paxlock snapshot save`) starts a new cluster
//! (`paxlock snapshot restore` on every first voter) that holds every
//! acknowledged lock and leadership, and grants tokens above every token
//! the old cluster granted; after a majority is lost for good, the last
//! leader's data directory does the same (`save --node-config --accepted`).
//! And what an operator gets wrong is refused, with nothing written.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::cluster::{ProcessCluster, PAXLOCK};
use common::TestResult;

fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn paxlock(args: &[&std::ffi::OsStr]) -> Result<Output, std::io::Error> {
    Command::new(PAXLOCK).args(args).output()
}

/// Runs `paxlock ARGS`; its stdout if it succeeded.
fn succeeds(args: &[&std::ffi::OsStr]) -> Result<String, Box<dyn std::error::Error>> {
    let out = paxlock(args)?;
    if !out.status.success() {
        return Err(format!(
            "paxlock {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Runs `paxlock ARGS`, which must fail; its stderr.
fn fails(args: &[&std::ffi::OsStr]) -> Result<String, Box<dyn std::error::Error>> {
    let out = paxlock(args)?;
    if out.status.success() {
        return Err(format!(
            "paxlock {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        )
        .into());
    }
    Ok(String::from_utf8(out.stderr)?)
}

/// `snapshot restore BACKUP --config CONFIG`.
fn restore_args<'a>(backup: &'a Path, config: &'a Path) -> [&'a std::ffi::OsStr; 5] {
    [
        "snapshot".as_ref(),
        "restore".as_ref(),
        backup.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]
}

/// Points every node's config at a new cluster: cluster id `cluster_id`,
/// data directories `data/<cluster_id>-<id>` (empty), same addresses.
fn configure_new_cluster(cluster: &ProcessCluster, cluster_id: &str) -> TestResult {
    for id in 1..=cluster.nodes {
        let path = cluster.launched.config_path(id);
        let text = std::fs::read_to_string(&path)?;
        let renamed = text
            .replace(
                "cluster_id = \"dev\"",
                &format!("cluster_id = \"{cluster_id}\""),
            )
            .replace(
                &format!("data_dir = \"data/node-{id}\""),
                &format!("data_dir = \"data/{cluster_id}-{id}\""),
            );
        assert_ne!(
            renamed, text,
            "node {id}'s config names no cluster or data_dir"
        );
        std::fs::write(&path, renamed)?;
    }
    Ok(())
}

/// Restores every node of `cluster` (configured by
/// `configure_new_cluster`) from `backup` and starts them.
fn restore_and_start(cluster: &mut ProcessCluster, backup: &Path) -> TestResult {
    for id in 1..=cluster.nodes {
        let config = cluster.launched.config_path(id);
        let said = succeeds(&restore_args(backup, &config))?;
        assert!(said.contains(&format!("restored node {id}")), "{said}");
    }
    for id in 1..=cluster.nodes {
        cluster.spawn(id)?;
    }
    let ids: Vec<u64> = (1..=cluster.nodes).collect();
    cluster.wait_ready(&ids)
}

/// `paxlock snapshot status FILE --json`.
fn backup_status(backup: &Path) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let out = succeeds(&[
        "snapshot".as_ref(),
        "status".as_ref(),
        backup.as_os_str(),
        "--json".as_ref(),
    ])?;
    Ok(serde_json::from_str(&out)?)
}

fn number(status: &serde_json::Value, key: &str) -> u64 {
    status[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

#[test]
fn a_backup_of_a_running_cluster_starts_a_new_cluster_holding_every_acknowledged_grant(
) -> TestResult {
    let mut cluster = ProcessCluster::start_administered(3)?;
    let runtime = runtime()?;
    let backup = cluster.dir.path().join("dev.backup");
    // Sessions long enough to outlive the restore: their holders' grants
    // carry over, as after any failover.
    let ttl = Duration::from_secs(120);
    let client = runtime.block_on(cluster.client(ttl))?;
    let (a, b, leadership) = runtime.block_on(async {
        let a = client.lock("a").acquire().await?;
        let b = client.lock("b").value("held by b").acquire().await?;
        let leadership = client.election("svc").campaign("me").await?;
        Ok::<_, paxlock::Error>((a, b, leadership))
    })?;
    let (a_token, b_token) = (a.fencing_token(), b.fencing_token());
    // Values enough for a state over 1 MiB: the backup comes in pieces.
    let big = vec![b'v'; 60 * 1024];
    let mut big_locks = Vec::new();
    for i in 0..20 {
        let guard =
            runtime.block_on(client.lock(format!("big-{i}")).value(big.clone()).acquire())?;
        big_locks.push(guard);
    }

    let config = cluster.client_config();
    let said = succeeds(&[
        "snapshot".as_ref(),
        "save".as_ref(),
        backup.as_os_str(),
        "--client-config".as_ref(),
        config.as_os_str(),
    ])?;
    assert!(said.contains("saved cluster \"dev\""), "{said}");
    let status = backup_status(&backup)?;
    assert_eq!(status["cluster_id"], "dev", "{status}");
    assert_eq!(number(&status, "locks_held"), 22, "{status}");
    assert!(number(&status, "state_bytes") > 1 << 20, "{status}");
    assert_eq!(number(&status, "elections_led"), 1, "{status}");
    assert!(number(&status, "revision") >= b_token, "{status}");
    let old_revision = number(&status, "revision");

    // Someone who is not an administrator gets nothing.
    cluster.issue_client("mallory")?;
    let refused = runtime.block_on(async {
        let mallory = cluster.client_as("mallory", ttl).await?;
        mallory.save_snapshot().await
    });
    match refused {
        Err(e) => assert_eq!(
            e.code(),
            Some(paxlock::proto::ErrorCode::PermissionDenied),
            "{e}"
        ),
        Ok(s) => panic!("a non-administrator saved the state: {s:?}"),
    }

    // The whole cluster is lost.
    std::mem::forget((a, b, leadership, big_locks));
    drop(client);
    for id in 1..=3 {
        cluster.kill(id);
    }

    // Restoring under the old cluster id is refused, and writes nothing.
    let node1_config = cluster.launched.config_path(1);
    let refusal = fails(&restore_args(&backup, &node1_config))?;
    assert!(refusal.contains("another cluster_id"), "{refusal}");

    configure_new_cluster(&cluster, "restored")?;
    restore_and_start(&mut cluster, &backup)?;
    // A second restore into a node's data directory is refused.
    let refusal = fails(&restore_args(&backup, &node1_config))?;
    assert!(refusal.contains("is not empty"), "{refusal}");

    let client = runtime.block_on(cluster.client(Duration::from_secs(30)))?;
    runtime.block_on(async {
        let a = client.describe_lock("a").await?;
        let b = client.describe_lock("b").await?;
        assert_eq!(a.grant.map(|g| g.fencing_token), Some(a_token), "lock a");
        assert_eq!(b.grant.map(|g| g.fencing_token), Some(b_token), "lock b");
        assert_eq!(b.value, b"held by b");
        let big_19 = client.describe_lock("big-19").await?;
        assert_eq!(big_19.value, big, "a value of a backup in several pieces");
        let leader = client.election("svc").leader().await?;
        assert_eq!(
            leader.map(|l| l.value),
            Some(b"me".to_vec()),
            "election svc"
        );
        // Tokens continue above every token the old cluster could have
        // granted after the backup (by the default margin, 2^40).
        let c = client.lock("c").acquire().await?;
        assert!(
            c.fencing_token() > old_revision + (1 << 40),
            "token {} after a restore from revision {old_revision}",
            c.fencing_token()
        );
        c.release().await?;
        client.close().await
    })?;
    Ok(())
}

#[test]
fn after_losing_a_majority_the_last_leaders_data_starts_a_new_cluster() -> TestResult {
    let mut cluster = ProcessCluster::start(3)?;
    let runtime = runtime()?;
    let client = runtime.block_on(cluster.client(Duration::from_secs(120)))?;
    let mut held = Vec::new();
    for i in 0..5 {
        let name = format!("x{i}");
        let guard = runtime.block_on(client.lock(&name).acquire())?;
        held.push((name, guard.fencing_token()));
        std::mem::forget(guard);
    }
    let leader = runtime.block_on(cluster.leader())?;
    let leader_config = cluster.launched.config_path(leader);
    let backup = cluster.dir.path().join("survivor.backup");
    let args = [
        "snapshot".as_ref(),
        "save".as_ref(),
        backup.as_os_str(),
        "--node-config".as_ref(),
        leader_config.as_os_str(),
        "--accepted".as_ref(),
    ];
    // A running node's data is not read.
    let refusal = fails(&args)?;
    assert!(refusal.contains("stop the node first"), "{refusal}");
    assert!(!backup.exists());

    // Two nodes are lost for good, then the leader stops too.
    drop(client);
    for id in (1..=3).filter(|&id| id != leader) {
        cluster.kill(id);
    }
    cluster.kill(leader);
    let said = succeeds(&args)?;
    assert!(
        said.contains(&format!("saved node {leader}'s state")),
        "{said}"
    );

    configure_new_cluster(&cluster, "recovered")?;
    restore_and_start(&mut cluster, &backup)?;
    let client = runtime.block_on(cluster.client(Duration::from_secs(30)))?;
    runtime.block_on(async {
        for (name, token) in &held {
            let info = client.describe_lock(name).await?;
            assert_eq!(
                info.grant.map(|g| g.fencing_token),
                Some(*token),
                "acknowledged grant of {name} lost"
            );
        }
        client.close().await
    })?;
    Ok(())
}
