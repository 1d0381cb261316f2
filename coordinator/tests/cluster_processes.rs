//! Real `paxlock serve` processes on loopback: SIGKILL of a lock holder,
//! SIGKILL of the leader node (and its restart), SIGSTOP of a holder past
//! its TTL, and a full-cluster crash that must lose nothing acknowledged.
//! Timeouts are generous: these must not flake on a loaded 2-core machine.

mod common;

use std::time::Duration;

use common::cluster::{token_in, CliProcess, ProcessCluster};
use common::{node_status, TestResult, PATIENCE};
use rustix::process::Signal;

/// One cluster at a time: four 3-node clusters at once on a 2-core machine
/// would starve keepalives and test the machine, not Paxlock.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Whether node `id` applies every slot below `commit` within the patience.
async fn applied_up_to(cluster: &ProcessCluster, id: u64, commit: u64) -> bool {
    let wait = async {
        loop {
            if let Ok(status) = node_status(cluster, id).await {
                if status.applied_index >= commit {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(PATIENCE * 2, wait).await.is_ok()
}

/// Which node leads, according to the cluster.
async fn leader(client: &paxlock::Client) -> Result<u64, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let hello = client.hello().await?;
        if hello.leader_node_id != 0 {
            return Ok(hello.leader_node_id);
        }
        if tokio::time::Instant::now() > deadline {
            return Err("no leader".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_killed_holders_lock_goes_to_the_next_waiter_after_its_ttl() -> TestResult {
    let _serial = serial();
    let cluster = ProcessCluster::start(3)?;
    let mut holder = CliProcess::lock(
        &cluster,
        "job",
        &["--ttl", "2s"],
        "echo holder token=$PAXLOCK_FENCING_TOKEN; sleep 600",
    )?;
    let first = token_in(&holder.wait_for("holder token=", PATIENCE)?).ok_or("no token")?;
    let mut waiter = CliProcess::lock(
        &cluster,
        "job",
        &["--timeout", "60s"],
        "echo waiter token=$PAXLOCK_FENCING_TOKEN",
    )?;
    std::thread::sleep(Duration::from_millis(500));
    // The waiter must still be waiting: the holder is alive.
    if waiter.child.try_wait()?.is_some() {
        let code = waiter.wait_exit(PATIENCE)?;
        let _ = holder.wait_for("lost", Duration::from_millis(100));
        panic!(
            "waiter finished while the lock was held (exit {code:?}): {:?}\nholder: {:?}\nnode logs:\n{}\n{}\n{}",
            waiter.seen,
            holder.seen,
            cluster.log(1),
            cluster.log(2),
            cluster.log(3)
        );
    }
    holder.child.kill()?;
    let second = token_in(&waiter.wait_for("waiter token=", PATIENCE)?).ok_or("no token")?;
    assert!(second > first, "token {second} must exceed {first}");
    assert_eq!(waiter.wait_exit(PATIENCE)?, Some(0));
    Ok(())
}

/// `paxlock lock -n N` holds one of N permits (its slot in `PAXLOCK_SLOT`)
/// and `--shared` a read/write lock for reading: two permit holders and
/// two readers run at once, a third permit holder gives up (exit 3), and a
/// plain `paxlock lock` of the read/write lock (a writer) runs only once
/// the readers are gone, with a higher token.
#[test]
fn cli_permits_and_shared_readers_run_together_and_a_writer_after_them() -> TestResult {
    let _serial = serial();
    let cluster = ProcessCluster::start(3)?;
    let hold = "echo holder slot=$PAXLOCK_SLOT token=$PAXLOCK_FENCING_TOKEN; sleep 600";
    let mut first = CliProcess::lock(&cluster, "pool", &["-n", "2"], hold)?;
    let mut second = CliProcess::lock(&cluster, "pool", &["-n", "2"], hold)?;
    let one = first.wait_for("holder slot=", PATIENCE)?;
    let two = second.wait_for("holder slot=", PATIENCE)?;
    let mut slots = [one.contains("slot=0"), two.contains("slot=0")];
    slots.sort();
    assert_eq!(slots, [false, true], "slots 0 and 1: {one:?} {two:?}");
    let mut third = CliProcess::lock(&cluster, "pool", &["-n", "2", "--timeout", "1s"], hold)?;
    assert_eq!(third.wait_exit(PATIENCE)?, Some(3), "{:?}", third.seen);
    let mut wrong = CliProcess::lock(&cluster, "pool", &["-n", "3", "--timeout", "1s"], hold)?;
    assert_eq!(wrong.wait_exit(PATIENCE)?, Some(3), "{:?}", wrong.seen);
    first.child.kill()?;
    second.child.kill()?;

    let read = "echo reader token=$PAXLOCK_FENCING_TOKEN; sleep 600";
    let mut r1 = CliProcess::lock(&cluster, "table", &["--shared", "--ttl", "2s"], read)?;
    let mut r2 = CliProcess::lock(&cluster, "table", &["--shared", "--ttl", "2s"], read)?;
    let t1 = token_in(&r1.wait_for("reader token=", PATIENCE)?).ok_or("no token")?;
    let t2 = token_in(&r2.wait_for("reader token=", PATIENCE)?).ok_or("no token")?;
    assert_eq!(t1, t2, "readers holding together present one token");
    let mut writer = CliProcess::lock(
        &cluster,
        "table",
        &["--timeout", "60s"],
        "echo writer token=$PAXLOCK_FENCING_TOKEN",
    )?;
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        writer.child.try_wait()?.is_none(),
        "the writer ran beside readers: {:?}",
        writer.seen
    );
    r1.child.kill()?;
    r2.child.kill()?;
    let written = token_in(&writer.wait_for("writer token=", PATIENCE * 2)?).ok_or("no token")?;
    assert!(
        written > t1,
        "token {written} must exceed the readers' {t1}"
    );
    assert_eq!(writer.wait_exit(PATIENCE)?, Some(0));
    Ok(())
}

#[test]
fn a_holder_paused_past_its_ttl_finds_its_lock_lost_and_stops_its_command() -> TestResult {
    let _serial = serial();
    let cluster = ProcessCluster::start(3)?;
    let marker = cluster.dir.path().join("still-running");
    let cmd = format!(
        "echo holder token=$PAXLOCK_FENCING_TOKEN; touch {}; sleep 600",
        marker.display()
    );
    let mut holder = CliProcess::lock(&cluster, "pause", &["--ttl", "4s", "--grace", "1s"], &cmd)?;
    holder.wait_for("holder token=", PATIENCE)?;
    rustix::process::kill_process(holder.pid(), Signal::STOP)?;
    let mut other = CliProcess::lock(
        &cluster,
        "pause",
        &["--timeout", "60s"],
        "echo other token=$PAXLOCK_FENCING_TOKEN",
    )?;
    other.wait_for("other token=", PATIENCE)?;
    rustix::process::kill_process(holder.pid(), Signal::CONT)?;
    // On waking, the holder's lease rule says the lock is gone: it must stop
    // its command and exit with the lock-lost code.
    assert_eq!(holder.wait_exit(PATIENCE)?, Some(4), "{:?}", holder.seen);
    assert!(
        holder.seen.iter().any(|l| l.contains("lost")),
        "{:?}",
        holder.seen
    );
    Ok(())
}

#[test]
fn killing_the_leader_node_keeps_locks_and_a_new_leader_serves() -> TestResult {
    let _serial = serial();
    let mut cluster = ProcessCluster::start(3)?;
    let rt = runtime()?;
    rt.block_on(async {
        let a = cluster.client(Duration::from_secs(10)).await?;
        let held = a.lock("kept").acquire().await?;
        let old_leader = leader(&a).await?;
        cluster.kill(old_leader);
        // A second client, through the survivors, after a new leader takes over.
        let b = cluster.client(Duration::from_secs(10)).await?;
        let new_leader = leader(&b).await?;
        assert_ne!(new_leader, old_leader);
        assert!(
            b.lock("kept").try_acquire().await?.is_none(),
            "the lock must survive the failover"
        );
        let fresh = b.lock("new").acquire().await?;
        assert!(fresh.fencing_token() > held.fencing_token());
        // The holder's session survived too: it can still renew its grant.
        held.renew().await?;
        assert!(held.is_valid());
        // The killed node comes back and catches up from its peers.
        cluster.spawn(old_leader)?;
        let commit = b.status().await?.commit_index;
        let caught_up = applied_up_to(&cluster, old_leader, commit).await;
        assert!(
            caught_up,
            "restarted node did not catch up: {}",
            cluster.log(old_leader)
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

#[test]
fn a_full_cluster_crash_loses_nothing_acknowledged() -> TestResult {
    let _serial = serial();
    let mut cluster = ProcessCluster::start(3)?;
    let rt = runtime()?;
    rt.block_on(async {
        let a = cluster.client(Duration::from_secs(10)).await?;
        let held = a.lock("durable").acquire().await?;
        let token = held.fencing_token();
        for id in 1..=3 {
            cluster.kill(id);
        }
        for id in 1..=3 {
            cluster.spawn(id)?;
        }
        let b = cluster.client(Duration::from_secs(10)).await?;
        // The grant was acknowledged before the crash: it must still stand.
        assert!(
            b.lock("durable").try_acquire().await?.is_none(),
            "acknowledged grant lost"
        );
        let later = b.lock("after").acquire().await?;
        assert!(
            later.fencing_token() > token,
            "tokens must keep increasing across restarts"
        );
        held.renew().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// Regression (found by `paxlock chaos --seed 1 --duration 30s`): a node
/// restarted on its own data directory skipped its snapshot and applied
/// only the log after it, so sessions and grants older than the last
/// snapshot vanished when every node restarted.
#[test]
fn a_full_cluster_crash_after_snapshots_keeps_sessions_and_grants() -> TestResult {
    let _serial = serial();
    let mut cluster = ProcessCluster::start_with(3, "snapshot_every_slots = 16")?;
    let rt = runtime()?;
    rt.block_on(async {
        let a = cluster.client(Duration::from_secs(30)).await?;
        let held = a.lock("durable").acquire().await?;
        // Enough commands that every node snapshots past the grant.
        let mut last = 0;
        for i in 0..60 {
            let guard = a.lock(format!("churn-{}", i % 5)).acquire().await?;
            last = guard.fencing_token();
            guard.release().await?;
        }
        for id in 1..=3 {
            cluster.kill(id);
        }
        for id in 1..=3 {
            cluster.spawn(id)?;
        }
        held.renew().await?;
        let b = cluster.client(Duration::from_secs(10)).await?;
        assert!(
            b.lock("durable").try_acquire().await?.is_none(),
            "a grant older than the snapshot was lost: {}",
            cluster.log(1)
        );
        let after = b.lock("after").acquire().await?;
        assert!(after.fencing_token() > last);
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// `GET path` on node `id`'s metrics port (the same number as its UDP port).
fn http_get(
    cluster: &ProcessCluster,
    id: u64,
    path: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(cluster.addr(id))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l[name.len()..].trim().parse().ok())
}

#[test]
fn metrics_report_leadership_locks_and_fsyncs() -> TestResult {
    let _serial = serial();
    let cluster = ProcessCluster::start(3)?;
    let rt = runtime()?;
    rt.block_on(async {
        let a = cluster.client(Duration::from_secs(10)).await?;
        let _held = a.lock("metered").acquire().await?;
        let leader_id = leader(&a).await?;
        let text = http_get(&cluster, leader_id, "/metrics")?;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert_eq!(metric(&text, "paxlock_is_leader"), Some(1.0), "{text}");
        assert_eq!(metric(&text, "paxlock_locks_held"), Some(1.0), "{text}");
        assert!(
            metric(&text, "paxlock_wal_fsyncs_total").is_some_and(|v| v > 0.0),
            "{text}"
        );
        // The session and the acquire were each proposed here (followers
        // redirect), committed and timed, and each needed a durable write.
        for (histogram, at_least) in [
            ("paxlock_request_duration_seconds_count", 1.0),
            ("paxlock_commit_duration_seconds_count", 2.0),
            ("paxlock_persist_duration_seconds_count", 2.0),
        ] {
            assert!(
                metric(&text, histogram).is_some_and(|v| v >= at_least),
                "{histogram}: {text}"
            );
        }
        // Once both followers have answered a heartbeat, each has a lag.
        let lags = |text: &str| {
            text.lines()
                .filter(|l| l.starts_with("paxlock_peer_lag_slots{peer="))
                .count()
        };
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut text = text;
        while lags(&text) < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            text = http_get(&cluster, leader_id, "/metrics")?;
        }
        assert_eq!(lags(&text), 2, "{text}");
        let health = http_get(&cluster, leader_id, "/health")?;
        assert!(health.contains("\"healthy\":true"), "{health}");
        let missing = http_get(&cluster, leader_id, "/nope")?;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

#[test]
fn a_watch_resumes_after_a_full_restart_without_skipping_a_term() -> TestResult {
    let _serial = serial();
    let mut cluster = ProcessCluster::start(3)?;
    let rt = runtime()?;
    rt.block_on(async {
        cluster.wait_protocol(3).await?;
        let observer = cluster.client(Duration::from_secs(10)).await?;
        let mut watch = observer.election("svc").watch();
        let mut seen = vec![tokio::time::timeout(PATIENCE, watch.next()).await??];
        let a = cluster.client(Duration::from_secs(10)).await?;
        let lead = a.election("svc").campaign(b"a".to_vec()).await?;
        let token_a = lead.fencing_token();
        seen.push(tokio::time::timeout(PATIENCE, watch.next()).await??);
        for id in 1..=3 {
            cluster.kill(id);
        }
        for id in 1..=3 {
            cluster.spawn(id)?;
        }
        // Changes made after the restart reach the watcher through a new
        // connection, continuing from the last event it delivered.
        lead.resign().await?;
        let b = cluster.client(Duration::from_secs(10)).await?;
        let b_lead = b.election("svc").campaign(b"b".to_vec()).await?;
        let token_b = b_lead.fencing_token();
        assert!(token_b > token_a, "{token_b:?} after {token_a:?}");
        while seen.len() < 4 {
            seen.push(tokio::time::timeout(PATIENCE * 2, watch.next()).await??);
        }
        use paxlock::LeaderEvent as E;
        assert_eq!(
            seen,
            vec![
                E::NoLeader { term: 0 },
                E::Elected {
                    term: 1,
                    value: b"a".to_vec(),
                    identity: "dev-client".into(),
                    fencing_token: token_a,
                },
                E::NoLeader { term: 2 },
                // The owner survives the restart (the log records protocol
                // 3, and session owners are part of the state); tokens keep
                // rising across it.
                E::Elected {
                    term: 3,
                    value: b"b".to_vec(),
                    identity: "dev-client".into(),
                    fencing_token: token_b,
                },
            ]
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

#[test]
fn status_lists_every_node_with_one_leader_and_its_lag() -> TestResult {
    let _serial = serial();
    let cluster = ProcessCluster::start(3)?;
    let rt = runtime()?;
    // A lock cycle makes sure a leader exists and the log is non-empty.
    rt.block_on(async {
        let a = cluster.client(Duration::from_secs(10)).await?;
        a.lock("s").acquire().await?.release().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let mut status = CliProcess::start(&cluster, &["status"])?;
        status.wait_exit(PATIENCE)?;
        let text = status.seen.join("\n");
        let followers = status
            .seen
            .iter()
            .filter(|l| l.contains(" follower "))
            .count();
        let leaders = status
            .seen
            .iter()
            .filter(|l| l.contains(" leader "))
            .count();
        // The replicated membership: the three first voters, no learner.
        let members = text.contains("members: voters 1, 2, 3; learners none");
        if text.contains("leader: node") && followers == 2 && leaders == 1 && members {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[test]
fn observe_prints_each_leadership_change_of_a_cli_campaign() -> TestResult {
    let _serial = serial();
    let cluster = ProcessCluster::start(3)?;
    let mut observer = CliProcess::start(&cluster, &["observe", "orders"])?;
    let mut candidate = CliProcess::start(&cluster, &["elect", "orders", "10.0.0.7:8080"])?;
    candidate.wait_for("elected: orders", PATIENCE)?;
    observer.wait_for("value=10.0.0.7:8080", PATIENCE)?;
    // Ctrl-C resigns; the observer sees the election without a leader.
    rustix::process::kill_process(candidate.pid(), Signal::INT)?;
    candidate.wait_for("resigned: orders", PATIENCE)?;
    observer.wait_for("no-leader", PATIENCE)?;
    rustix::process::kill_process(observer.pid(), Signal::INT)?;
    assert_eq!(observer.wait_exit(PATIENCE)?, Some(0));
    Ok(())
}

/// Polls the leader's status until `done` holds for it; returns that status.
async fn leader_status_until(
    cluster: &ProcessCluster,
    leader: u64,
    what: &str,
    done: impl Fn(&paxlock::proto::StatusOk) -> bool,
) -> Result<paxlock::proto::StatusOk, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = node_status(cluster, leader).await?;
        assert_eq!(status.leader_node_id, leader, "leadership moved");
        if done(&status) {
            return Ok(status);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{what}: {status:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The number after `key` (such as `token=`) in a line.
fn field_in(line: &str, key: &str) -> Option<u64> {
    line.split(key)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The number after `term=` in a line.
fn term_in(line: &str) -> Option<u64> {
    field_in(line, "term=")
}

/// `paxlock elect NAME -- CMD` runs CMD while leader, with the term and the
/// leadership's fencing token in its environment, and resigns when it exits; when leadership is lost (here an
/// administrator revokes its session) it stops CMD and exits with 4.
#[test]
fn elect_runs_a_command_while_leader_and_stops_it_when_leadership_is_lost() -> TestResult {
    let _serial = serial();
    let cluster = ProcessCluster::start_administered(3)?;
    let mut once = CliProcess::elect(
        &cluster,
        "jobs/leader",
        &[],
        "echo leading term=$PAXLOCK_TERM election=$PAXLOCK_ELECTION token=$PAXLOCK_FENCING_TOKEN",
    )?;
    let line = once.wait_for("leading term=", PATIENCE)?;
    assert!(line.contains("election=jobs/leader"), "{line}");
    let first = term_in(&line).ok_or("no term")?;
    let first_token = field_in(&line, "token=").ok_or("no token")?;
    assert!(first_token > 0, "{line}");
    assert_eq!(once.wait_exit(PATIENCE)?, Some(0));

    // Resigned on exit: the next campaign wins at once, a term later.
    let mut held = CliProcess::elect(
        &cluster,
        "jobs/leader",
        &["--ttl", "2s"],
        "echo leading term=$PAXLOCK_TERM token=$PAXLOCK_FENCING_TOKEN; sleep 600",
    )?;
    let line = held.wait_for("leading term=", PATIENCE)?;
    let second = term_in(&line).ok_or("no term")?;
    assert!(second > first, "term {second} after {first}");
    let second_token = field_in(&line, "token=").ok_or("no token")?;
    assert!(
        second_token > first_token,
        "token {second_token} after {first_token}"
    );
    runtime()?.block_on(async {
        let admin = cluster.client(Duration::from_secs(30)).await?;
        let sessions = admin.list_sessions().await?;
        let leading = sessions
            .iter()
            .find(|s| s.campaigns.iter().any(|c| c == "jobs/leader"))
            .ok_or("no session campaigns in jobs/leader")?;
        admin.revoke_session(leading.session.session_id).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    held.wait_for("lost; stopping the command", PATIENCE)?;
    assert_eq!(held.wait_exit(PATIENCE)?, Some(4));
    Ok(())
}

fn lag_of(status: &paxlock::proto::StatusOk, id: u64) -> Option<u64> {
    status
        .peers
        .iter()
        .find(|p| p.node_id == id)
        .map(|p| p.lag_slots)
}

#[test]
fn the_leader_reports_how_far_a_stopped_follower_lags_until_it_catches_up() -> TestResult {
    let _serial = serial();
    let cluster = ProcessCluster::start(3)?;
    let rt = runtime()?;
    rt.block_on(async {
        let a = cluster.client(Duration::from_secs(10)).await?;
        a.lock("lag").acquire().await?.release().await?;
        let lead = leader(&a).await?;
        let (stopped, live) = match lead {
            1 => (2, 3),
            2 => (1, 3),
            _ => (1, 2),
        };
        leader_status_until(&cluster, lead, "followers caught up", |s| {
            lag_of(s, stopped) == Some(0) && lag_of(s, live) == Some(0)
        })
        .await?;
        cluster.signal(stopped, Signal::STOP);
        let before = node_status(&cluster, lead).await?.commit_index;
        for _ in 0..5 {
            a.lock("lag").acquire().await?.release().await?;
        }
        let after = node_status(&cluster, lead).await?.commit_index;
        assert!(after >= before + 10, "commits {before} -> {after}");
        // The stopped follower acknowledged nothing after `before`.
        let status = leader_status_until(&cluster, lead, "live follower caught up", |s| {
            lag_of(s, live) == Some(0)
        })
        .await?;
        let lag = lag_of(&status, stopped).unwrap_or(0);
        assert!(
            lag >= after - before,
            "lag {lag} for commits {before} -> {after}"
        );
        cluster.signal(stopped, Signal::CONT);
        leader_status_until(&cluster, lead, "stopped follower caught up", |s| {
            lag_of(s, stopped) == Some(0)
        })
        .await?;
        // A follower does not know the lags: it reports none.
        let from_follower = node_status(&cluster, live).await?;
        assert!(from_follower.peers.iter().all(|p| p.lag_slots == 0));
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

#[test]
fn sigterm_on_the_leader_hands_leadership_over_and_exits_cleanly() -> TestResult {
    let _serial = serial();
    let mut cluster = ProcessCluster::start(3)?;
    let rt = runtime()?;
    rt.block_on(async {
        let a = cluster.client(Duration::from_secs(10)).await?;
        let held = a.lock("handover").acquire().await?;
        let old = leader(&a).await?;
        cluster.signal(old, Signal::TERM);
        let code = cluster.wait_exit(old, PATIENCE)?;
        assert_eq!(code, Some(0), "{}", cluster.log(old));
        assert!(
            cluster.log(old).contains("handed leadership over"),
            "{}",
            cluster.log(old)
        );
        let b = cluster.client(Duration::from_secs(10)).await?;
        let new = leader(&b).await?;
        assert_ne!(new, old);
        assert!(
            b.lock("handover").try_acquire().await?.is_none(),
            "the lock must survive"
        );
        held.renew().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// `paxlock serve --exit-with-parent` stops, cleanly, when its stdin
/// closes (its supervisor died), and the cluster goes on without it.
#[test]
fn a_node_whose_supervisor_is_gone_stops_cleanly() -> TestResult {
    let _serial = serial();
    let mut cluster = ProcessCluster::start(3)?;
    let rt = runtime()?;
    rt.block_on(async {
        let a = cluster.client(Duration::from_secs(10)).await?;
        let before = a.lock("supervised").acquire().await?;
        cluster.close_stdin(3);
        let code = cluster.wait_exit(3, PATIENCE)?;
        assert_eq!(code, Some(0), "{}", cluster.log(3));
        assert!(
            cluster.log(3).contains("the supervising process is gone"),
            "{}",
            cluster.log_tail(3, 10)
        );
        let first = before.fencing_token();
        before.release().await?;
        let after = a.lock("supervised").acquire().await?;
        assert!(after.fencing_token() > first, "two nodes still serve");
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

#[test]
fn a_node_restarted_far_behind_catches_up_from_a_snapshot_and_serves_the_next_failover(
) -> TestResult {
    let _serial = serial();
    // Snapshots every 16 slots: the restarted node is far more than one
    // snapshot behind and must be sent one rather than every entry.
    let mut cluster = ProcessCluster::start_with(3, "snapshot_every_slots = 16")?;
    let rt = runtime()?;
    rt.block_on(async {
        let a = cluster.client(Duration::from_secs(10)).await?;
        let first_leader = leader(&a).await?;
        let behind = (1..=3)
            .find(|&id| id != first_leader)
            .ok_or("no follower")?;
        cluster.kill(behind);
        for i in 0..150 {
            a.lock(format!("l{}", i % 7))
                .acquire()
                .await?
                .release()
                .await?;
        }
        cluster.spawn(behind)?;
        let commit = node_status(&cluster, first_leader).await?.commit_index;
        let caught_up = applied_up_to(&cluster, behind, commit).await;
        assert!(
            caught_up,
            "node {behind} did not catch up: {}",
            cluster.log(behind)
        );
        // Now the old leader goes: the restarted node and the third one
        // must carry the cluster on their own.
        let held = a.lock("after").acquire().await?;
        cluster.kill(first_leader);
        let b = cluster.client(Duration::from_secs(10)).await?;
        assert!(b.lock("after").try_acquire().await?.is_none());
        let next = b.lock("next").acquire().await?;
        assert!(next.fencing_token() > held.fencing_token());
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
