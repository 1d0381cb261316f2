//! A node whose storage fails (a full disk, no file descriptors left) exits
//! non-zero with a message naming the cause, instead of lingering with a
//! stopped consensus loop; started again once the cause is gone, it
//! recovers, and nothing the cluster acknowledged is lost.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::ProcessCluster;
use common::{TestResult, PATIENCE};
use paxlock_launcher::requires::{machine_has, Need};

/// Mounts a tmpfs of `size` at `dir` (created if needed); unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, Box<dyn std::error::Error>> {
        std::fs::create_dir_all(dir)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()?;
        if !status.success() {
            return Err(format!("mount tmpfs at {} failed: {status}", dir.display()).into());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    /// Bytes still free.
    fn free_bytes(&self) -> u64 {
        rustix::fs::statvfs(&self.0)
            .map(|s| s.f_bavail * s.f_frsize)
            .unwrap_or(0)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Everything the workload was told succeeded, to be found again.
#[derive(Debug, Default)]
struct Acknowledged {
    /// The lock "disk/held" granted with this token.
    lock_token: u64,
    /// The term won in election "disk/leader".
    term: u64,
    /// Index of the last acknowledged proclaim (values carry their index).
    last_proclaim: u64,
}

/// A value of about 60 KB whose first 8 bytes are `index`.
fn proclaim_value(index: u64) -> Vec<u8> {
    let mut value = index.to_le_bytes().to_vec();
    value.resize(60_000, 0xAB);
    value
}

/// Every node's data directory is a small tmpfs, almost filled in
/// advance; a client proclaims 60 KB values until the nodes run out of
/// space. Each node that does exits non-zero saying so; after the space is
/// freed and the nodes are started again, the lock, the leadership and the
/// last acknowledged value are all still there.
#[test]
fn nodes_whose_disk_fills_exit_saying_so_and_lose_nothing_acknowledged() -> TestResult {
    let needs = [Need::Root, Need::Tool("mount"), Need::Tool("umount")];
    if !machine_has("nodes_whose_disk_fills_exit", &needs) {
        return Ok(());
    }
    let mut cluster = ProcessCluster::prepare(3, "")?;
    let mut mounts = Vec::new();
    let mut fillers = Vec::new();
    for id in 1..=3 {
        let mount = Tmpfs::mount(&cluster.data_dir(id), "24m")?;
        // Leave room to start (the WAL preallocates in 1 MiB steps) and
        // for a few megabytes of log, not more.
        let filler = cluster.data_dir(id).join("filler");
        let keep = 6 * 1024 * 1024;
        std::fs::write(&filler, vec![0u8; (mount.free_bytes() - keep) as usize])?;
        fillers.push(filler);
        mounts.push(mount);
    }
    for id in 1..=3 {
        cluster.spawn(id)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let acknowledged = runtime.block_on(async {
        let client = cluster.client(Duration::from_secs(120)).await?;
        let guard = client.lock("disk/held").acquire().await?;
        let leadership = client
            .election("disk/leader")
            .campaign(proclaim_value(0))
            .await?;
        let mut acknowledged = Acknowledged {
            lock_token: guard.fencing_token(),
            term: leadership.term(),
            last_proclaim: 0,
        };
        // Until proclaims fail: the cluster has no space left.
        let deadline = Instant::now() + Duration::from_secs(120);
        for index in 1.. {
            assert!(Instant::now() < deadline, "the disks never filled up");
            let proclaimed = tokio::time::timeout(
                Duration::from_secs(5),
                leadership.proclaim(proclaim_value(index)),
            )
            .await;
            match proclaimed {
                Ok(Ok(())) => acknowledged.last_proclaim = index,
                _ => break,
            }
        }
        // Keep the guard and leadership alive (not released on drop).
        std::mem::forget(guard);
        std::mem::forget(leadership);
        drop(client);
        Ok::<_, Box<dyn std::error::Error>>(acknowledged)
    })?;
    assert!(acknowledged.last_proclaim > 0, "no proclaim succeeded");

    // A majority stopped writing: at least two nodes exited, non-zero, and
    // said why. The third may be left without a quorum, writing nothing.
    let mut exited = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while exited.len() < 2 && Instant::now() < deadline {
        for id in 1..=3 {
            if exited.contains(&id) {
                continue;
            }
            if let Ok(code) = cluster.wait_exit(id, Duration::from_millis(100)) {
                let log = cluster.log(id);
                assert_ne!(
                    code,
                    Some(0),
                    "node {id} exited 0:\n{}",
                    cluster.log_tail(id, 20)
                );
                assert!(
                    log.contains("No space left on device")
                        && log.contains("consensus loop could not go on"),
                    "node {id} did not say why it stopped:\n{}",
                    cluster.log_tail(id, 20)
                );
                exited.push(id);
            }
        }
    }
    assert!(exited.len() >= 2, "fewer than two nodes exited: {exited:?}");
    for id in 1..=3 {
        if !exited.contains(&id) {
            cluster.kill(id);
        }
    }

    // Free the space and start every node again.
    for filler in &fillers {
        std::fs::remove_file(filler)?;
    }
    for id in 1..=3 {
        cluster.spawn(id)?;
    }
    runtime.block_on(async {
        let client = cluster.client(Duration::from_secs(30)).await?;
        let leader = client
            .election("disk/leader")
            .leader()
            .await?
            .ok_or("the election lost its leader")?;
        assert_eq!(leader.term, acknowledged.term, "the won term is gone");
        let mut index = [0u8; 8];
        index.copy_from_slice(&leader.value[..8]);
        let value_index = u64::from_le_bytes(index);
        // The last acknowledged proclaim, or the one after it whose answer
        // was lost when the disks filled.
        assert!(
            value_index == acknowledged.last_proclaim
                || value_index == acknowledged.last_proclaim + 1,
            "the value is proclaim {value_index}, the last acknowledged was {}",
            acknowledged.last_proclaim
        );
        // The lock is still held, by the session it was granted to.
        let other = client.lock("disk/held").try_acquire().await;
        assert!(
            matches!(other, Ok(None)),
            "another session could take the held lock: {other:?}"
        );
        let again = client.lock("unrelated").acquire().await?;
        assert!(
            again.fencing_token() > acknowledged.lock_token,
            "tokens went backwards"
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    drop(cluster);
    drop(mounts);
    Ok(())
}

/// The lowest file descriptor number `pid` does not use.
fn lowest_free_fd(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let mut used: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    used.sort_unstable();
    Ok((0..)
        .find(|fd| used.binary_search(fd).is_err())
        .unwrap_or(0))
}

/// Node 1 is left no file descriptor to open: its next snapshot cannot be
/// written, so it exits non-zero saying so, and, started again with the
/// usual limit, catches up with the others.
#[test]
fn a_node_out_of_file_descriptors_exits_saying_so_and_recovers() -> TestResult {
    if !machine_has(
        "a_node_out_of_file_descriptors_exits",
        &[Need::Tool("prlimit")],
    ) {
        return Ok(());
    }
    // Snapshots every 20 slots: each opens files.
    let mut cluster = ProcessCluster::start_with(3, "snapshot_every_slots = 20")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let client = runtime.block_on(cluster.client(Duration::from_secs(60)))?;
    // Let node 1 finish starting (connections, listeners) first.
    runtime.block_on(async {
        let guard = client.lock("fd/warm-up").acquire().await?;
        guard.release().await
    })?;
    let pid = cluster.pid(1).ok_or("node 1 is not running")?;
    let limit = lowest_free_fd(pid)?;
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()?;
    assert!(status.success(), "prlimit failed: {status}");
    let tokens = runtime.block_on(async {
        let mut tokens = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        // Lock cycles until node 1 exits (its snapshot needs a file).
        while cluster.pid(1).is_some() && Instant::now() < deadline {
            let guard = client.lock("fd/cycle").acquire().await?;
            tokens.push(guard.fencing_token());
            guard.release().await?;
            if let Ok(code) = cluster.wait_exit(1, Duration::ZERO) {
                let log = cluster.log(1);
                assert_ne!(
                    code,
                    Some(0),
                    "node 1 exited 0:\n{}",
                    cluster.log_tail(1, 20)
                );
                assert!(
                    log.contains("Too many open files")
                        && log.contains("consensus loop could not go on"),
                    "node 1 did not say why it stopped:\n{}",
                    cluster.log_tail(1, 20)
                );
                return Ok::<_, Box<dyn std::error::Error>>(tokens);
            }
        }
        Err(format!("node 1 did not exit:\n{}", cluster.log_tail(1, 20)).into())
    })?;
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    cluster.spawn(1)?;
    runtime.block_on(async {
        let guard = client.lock("fd/cycle").acquire().await?;
        assert!(guard.fencing_token() > *tokens.last().unwrap_or(&0));
        guard.release().await?;
        // Node 1 catches up: its commit index reaches the leader's.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leader = common::node_status(&cluster, 2).await?.leader_node_id;
            let target = common::node_status(&cluster, leader).await?.commit_index;
            let node1 = common::node_status(&cluster, 1).await;
            if node1.is_ok_and(|s| s.commit_index >= target && s.applied_index >= target) {
                return Ok::<_, Box<dyn std::error::Error>>(());
            }
            assert!(Instant::now() < deadline, "node 1 never caught up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })?;
    Ok(())
}
