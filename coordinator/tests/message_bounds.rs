//! Every message between nodes fits the transport, whatever clients send
//! within the documented limits: a burst of the largest legal requests
//! leaves the cluster serving, and a follower that fell behind a compacted
//! state larger than one frame catches up (the snapshot travels in chunks).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{ProcessCluster, PAXLOCK};

/// One cluster at a time: these tests load a 2-core machine on purpose,
/// and each must measure its own load, not its neighbours'.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
use common::{TestResult, PATIENCE};
use paxlock::proto::{self, request::Op, response, ErrorCode};

/// `paxlock status` and `paxlock lock` against `cluster`, within `patience`:
/// a leader is named and a lock is taken and released.
fn cluster_serves(cluster: &ProcessCluster, patience: Duration) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    let config = cluster.client_config();
    let mut last = String::new();
    while Instant::now() < deadline {
        let status = Command::new(PAXLOCK)
            .arg("status")
            .arg("--client-config")
            .arg(&config)
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        let lock = Command::new(PAXLOCK)
            .arg("lock")
            .arg("--client-config")
            .arg(&config)
            .args(["--timeout", "5s", "bounds/after-burst", "--", "true"])
            .output()
            .map_err(|e| e.to_string())?;
        if status.status.success() && !text.contains("leader: none") && lock.status.success() {
            return Ok(());
        }
        last = format!(
            "status ({}): {text}\nlock ({}): {}",
            status.status,
            lock.status,
            String::from_utf8_lossy(&lock.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!(
        "the cluster does not serve after {patience:?}:\n{last}"
    ))
}

/// The codes of refusals that a limit was reached (nothing changed) or
/// the node is overloaded (retry later).
const LIMIT_CODES: [ErrorCode; 5] = [
    ErrorCode::TooManyLocks,
    ErrorCode::TooManyWaiters,
    ErrorCode::TooManySessions,
    ErrorCode::RequestIdAcknowledged,
    ErrorCode::Unavailable,
];

/// 600 concurrent `Campaign` requests of one session, sent by hand as the
/// issue's reproduction sent them, each on its own election with a
/// 65,000-byte value (inside the 64 KiB limit): every one is answered, won
/// or refused by a limit, and afterwards the cluster has a leader and
/// grants locks. Before the byte bounds, 64 such commands made one batch
/// larger than a peer frame, the leader lost every link, and the cluster
/// stayed leaderless for good, across restarts too.
#[test]
fn a_burst_of_the_largest_legal_campaigns_leaves_the_cluster_serving() -> TestResult {
    let _serial = one_at_a_time();
    let cluster = ProcessCluster::start(3)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (won, refused) = runtime.block_on(async {
        // A settled cluster first: the burst, not start-up, is under test.
        let client = cluster.client(Duration::from_secs(60)).await?;
        client
            .lock("bounds/warm-up")
            .acquire()
            .await?
            .release()
            .await?;
        let leader = cluster.leader().await?;
        let raw = cluster.raw_client(leader, "dev-client").await?;
        let opened = raw
            .ask_op(
                0,
                0,
                Op::OpenSession(proto::OpenSession {
                    ttl_ms: 60_000,
                    open_key: 0,
                }),
            )
            .await?;
        let Some(response::Result::SessionOpened(session)) = opened.result else {
            return Err(format!("no session: {opened:?}").into());
        };
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..600u64 {
            let raw = raw.clone();
            let campaign = Op::Campaign(proto::Campaign {
                election: format!("bounds/burst-{i}"),
                value: vec![i as u8; 65_000],
                timeout_ms: 0,
            });
            burst.spawn(async move { raw.ask_op(session.session_id, i + 1, campaign).await });
        }
        let (mut won, mut refused) = (0, 0);
        let deadline = tokio::time::Instant::now() + 3 * PATIENCE;
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, burst.join_next()).await {
            let answer = joined??;
            match (&answer.result, &answer.error) {
                (Some(response::Result::Leader(info)), None) if info.has_leader => won += 1,
                (None, Some(e)) if LIMIT_CODES.iter().any(|c| i32::from(*c) == e.code) => {
                    refused += 1
                }
                _ => return Err(format!("neither won nor refused by a limit: {answer:?}").into()),
            }
        }
        assert!(burst.is_empty(), "{} campaigns never answered", burst.len());
        Ok::<_, Box<dyn std::error::Error>>((won, refused))
    })?;
    assert_eq!(won + refused, 600);
    assert!(won > 0, "no campaign won");
    cluster_serves(&cluster, Duration::from_secs(10))?;
    Ok(())
}

/// The same burst through the client library: a `Client` runs at most
/// `MAX_RUNNING_WAITS` campaigns at once and refuses the others itself
/// (the cluster would refuse every request listing more running waits,
/// its keepalives included), and its session stays alive.
#[test]
fn a_client_with_more_campaigns_than_a_session_may_wait_on_refuses_the_rest() -> TestResult {
    let _serial = one_at_a_time();
    let cluster = ProcessCluster::start(3)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = cluster.client(Duration::from_secs(5)).await?;
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..600 {
            let election = client.election(format!("bounds/client-burst-{i}"));
            burst.spawn(async move { election.campaign(vec![i as u8; 65_000]).await });
        }
        let (mut won, mut too_many, mut refused) = (Vec::new(), 0, Vec::new());
        while let Some(joined) = burst.join_next().await {
            match joined? {
                Ok(leadership) => won.push(leadership),
                Err(paxlock::Error::TooManyWaits { limit }) => {
                    assert_eq!(limit, paxlock::MAX_RUNNING_WAITS);
                    too_many += 1;
                }
                // Refused by the cluster's own limits: campaigns per
                // session, answers a session keeps.
                Err(e) if LIMIT_CODES.iter().any(|c| e.code() == Some(*c)) => {
                    refused.push(e.to_string())
                }
                Err(e) => return Err(format!("a campaign failed: {e}").into()),
            }
        }
        assert!(
            too_many > 0,
            "{} won, {} refused by the cluster, none by the client",
            won.len(),
            refused.len()
        );
        // Three TTLs later the session still lives: keepalives went through.
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert!(client.is_session_valid());
        assert!(won.iter().all(paxlock::Leadership::is_valid));
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

/// Node 3 is stopped while the others grow a state larger than a frame
/// (80 elections with 60 KB values) and compact their logs past it; resumed,
/// it catches up from a snapshot sent in chunks, and its lag reaches 0.
#[test]
fn a_follower_behind_a_compacted_state_larger_than_a_frame_catches_up() -> TestResult {
    let _serial = one_at_a_time();
    let mut cluster = ProcessCluster::start_with(3, "snapshot_every_slots = 16")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let client = runtime.block_on(cluster.client(Duration::from_secs(60)))?;
    // Make sure node 3 is not the leader before stopping it.
    runtime.block_on(async {
        let guard = client.lock("bounds/warm-up").acquire().await?;
        guard.release().await
    })?;
    let leader = runtime
        .block_on(common::node_status(&cluster, 1))?
        .leader_node_id;
    let stopped = if leader == 3 { 2 } else { 3 };
    cluster.kill(stopped);
    let leaderships = runtime.block_on(async {
        let mut held = Vec::new();
        for i in 0..80u32 {
            let mut value = i.to_le_bytes().to_vec();
            value.resize(60_000, 0x5A);
            let election = client.election(format!("bounds/state-{i}"));
            held.push(election.campaign(value).await?);
        }
        // More slots, so that every node snapshots past the elections.
        for _ in 0..40 {
            let guard = client.lock("bounds/filler").acquire().await?;
            guard.release().await?;
        }
        Ok::<_, paxlock::Error>(held)
    })?;
    assert_eq!(leaderships.len(), 80);
    let snapshot_bytes = largest_snapshot(&cluster.data_dir(leader));
    assert!(
        snapshot_bytes > 4 * 1024 * 1024,
        "the leader's snapshot is only {snapshot_bytes} bytes"
    );
    cluster.spawn(stopped)?;
    runtime.block_on(async {
        let deadline = Instant::now() + 2 * PATIENCE;
        loop {
            let status = common::node_status(&cluster, leader).await?;
            let caught_up = status
                .peers
                .iter()
                .find(|p| p.node_id == stopped)
                .is_some_and(|p| p.connected && p.lag_slots == 0);
            let own = common::node_status(&cluster, stopped).await;
            if caught_up && own.is_ok_and(|s| s.applied_index >= status.commit_index) {
                return Ok::<_, Box<dyn std::error::Error>>(());
            }
            assert!(
                Instant::now() < deadline,
                "node {stopped} never caught up; its log ends:\n{}",
                cluster.log_tail(stopped, 20)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })?;
    drop(leaderships);
    Ok(())
}

/// Size of the largest snapshot file in a node's data directory.
fn largest_snapshot(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// A 512-byte election name (the longest names and the largest values
/// make the largest legal commands).
fn legacy_name(i: u64) -> String {
    format!("legacy-{i:0>505}")
}

/// Writes into node `id`'s (empty) data directory what a node of the
/// previous release held after the burst: its promise of `ballot`, a
/// session opened at slot 0 and, accepted at slot 1, a batch of 64
/// campaigns of that session with 64 KiB values, larger than a frame.
fn write_legacy_oversized_entry(
    cluster: &ProcessCluster,
    id: u64,
    ballot: paxlock_coordinator::paxos::Ballot,
) -> TestResult {
    use paxlock_coordinator::locks::{ClientOp, Command, CommandKind, RequestId, SessionId};
    use paxlock_coordinator::paxos::{PersistOp, PersistRequest, PersistSeq, Slot, Value};
    use paxlock_core::proposal::Proposal;
    use paxlock_storage::FileDurability;

    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let encode = |n: u64, kind| Proposal::encode(id, n, &Command { at_ms, kind }).map(Value::from);
    let open = vec![encode(0, CommandKind::OpenSession { ttl_ms: 3_600_000 })?];
    // The session opened by the log's first command has id 1.
    let campaigns = (1..=64u64)
        .map(|i| {
            encode(
                i,
                CommandKind::Client {
                    session: SessionId(1),
                    request_id: RequestId(i),
                    ack_below: RequestId(i),
                    waiting: Vec::new(),
                    op: ClientOp::Campaign {
                        name: legacy_name(i),
                        value: vec![i as u8; 65_536],
                    },
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bytes: usize = campaigns.iter().map(|v| v.len()).sum();
    assert!(bytes > paxlock::wire::MAX_FRAME_BYTES, "only {bytes} bytes");
    let dir = cluster.data_dir(id);
    std::fs::create_dir_all(&dir)?;
    let (mut store, _) = FileDurability::open(&dir, "dev", id)?;
    let accept = |slot, batch| PersistOp::Accept {
        slot: Slot(slot),
        ballot,
        batch,
    };
    store.persist_batch(&[PersistRequest {
        seq: PersistSeq(1),
        ops: vec![
            PersistOp::Promise(ballot),
            accept(0, open),
            accept(1, campaigns),
        ],
    }])?;
    Ok(())
}

/// A cluster whose log holds an entry larger than a frame, accepted by two
/// of three nodes of the previous release (so chosen, though none knows
/// it): the cluster that release left leaderless for good. Upgraded, it
/// elects a leader, which proposes the entry again whole (in fragments,
/// since it may have been chosen), applies it, and serves.
#[test]
fn a_cluster_holding_an_entry_larger_than_a_frame_recovers_after_the_upgrade() -> TestResult {
    let _serial = one_at_a_time();
    use paxlock_coordinator::paxos::{Ballot, NodeId};
    let mut cluster = ProcessCluster::prepare(3, "")?;
    let ballot = Ballot {
        round: 1,
        node: NodeId(1),
    };
    for id in [1, 2] {
        write_legacy_oversized_entry(&cluster, id, ballot)?;
    }
    for id in 1..=3 {
        cluster.spawn(id)?;
    }
    cluster_serves(&cluster, Duration::from_secs(30))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = cluster.client(Duration::from_secs(60)).await?;
        for i in [1u64, 33, 64] {
            let leader = client.election(legacy_name(i)).leader().await?;
            let leader = leader.ok_or(format!("election {} has no leader", legacy_name(i)))?;
            assert_eq!((leader.term, leader.session_id), (1, 1));
            assert_eq!(leader.value, vec![i as u8; 65_536]);
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let fragmented = (1..=3).any(|id| cluster.log(id).contains("in fragments"));
    assert!(fragmented, "no message went in fragments");
    Ok(())
}
