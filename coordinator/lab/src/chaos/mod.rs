//! `paxlock-lab chaos`: real `paxlock serve` processes under network and
//! process faults drawn from a seed, client workers recording every
//! operation, and checks on what they saw — mutual exclusion at a fenced
//! resource, linearizable lock histories, gap-free election terms seen by
//! every watcher, lock watches that show every change, nothing
//! acknowledged lost across a whole-cluster crash, and liveness after
//! healing. Besides network and process faults, an administrator
//! force-releases locks, revokes holders' sessions and (on loopback, with
//! spare nodes) replaces members by spares, and grows three members to
//! five and shrinks them back.
//!
//! Two networks: loopback with a UDP fault proxy in front of every node
//! (drop, delay, duplicate, reorder, partitions), or `--netns`: one network
//! namespace per node with its own address, partitions and loss made with
//! iptables — the rehearsal of a cluster on three machines.

mod admin;
mod checks;
mod cluster;
mod history;
mod lock_watches;
mod membership;
mod netns;
pub mod proxy;
mod schedule;
mod workers;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use paxlock::{Client, LeaderEvent};

use checks::{Check, Status};
use cluster::ChaosCluster;
use proxy::{LinkFaults, Party};
use schedule::{Episode, Fault, ScheduleSpec, Target};
use workers::{Role, WorkerCtx};

/// Options of `paxlock-lab chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Seed of the fault schedule and the workers' choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Cluster size: 3 or 5.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// How long faults are injected.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Client workers (8 to 16): lockers, candidates and watchers.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Run each node in its own network namespace with its own address
    /// (needs root, iproute2 and iptables) instead of loopback proxies.
    #[arg(long)]
    pub netns: bool,
    /// Spare nodes the membership faults use: a replacement takes one,
    /// growing three members to five two (loopback only; 0: no membership
    /// fault).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=4))]
    pub spares: u64,
    /// Folder for certificates, configs, data and node logs.
    #[arg(long, default_value = "/tmp/paxlock-chaos")]
    pub dir: PathBuf,
    /// Loopback: UDP port of node 1 (nodes and spares +0..+8, their
    /// proxies +100..+108).
    #[arg(long, default_value_t = 27301)]
    pub base_port: u16,
    /// Longest a worker's acquire after healing may take.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub liveness_bound: Duration,
    /// Search budget of the linearizability checker, per lock.
    #[arg(long, default_value_t = 5_000_000)]
    pub check_steps: u64,
    /// The `paxlock` executable to run as nodes (default: the one next to
    /// this executable, else on PATH).
    #[arg(long)]
    pub paxlock_bin: Option<PathBuf>,
}

/// Lock names the lockers share: two, so there is contention and
/// independence.
const LOCKS: [&str; 2] = ["chaos-a", "chaos-b"];
/// A semaphore and a read/write lock the lockers also use.
const SHARED_LOCKS: [&str; 2] = [workers::CHAOS_SEMAPHORE, workers::CHAOS_RWLOCK];
const ELECTION: &str = "chaos-leader";
/// Held by the runner across the whole run and the final crash.
const DURABLE_LOCK: &str = "chaos-durable";

/// Runs the chaos test; exit code 0 when every check passed, 1 otherwise.
pub async fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    if args.nodes != 3 && args.nodes != 5 {
        bail!("--nodes must be 3 or 5");
    }
    if !(4..=32).contains(&args.workers) {
        bail!("--workers must be between 4 and 32 (the issue asks for 8 to 16)");
    }
    let binary = crate::node_binary::node_binary(args.paxlock_bin.as_deref())?;
    let mode = if args.netns {
        "one network namespace per node"
    } else {
        "loopback behind fault proxies"
    };
    println!(
        "chaos: seed {}, {} nodes ({mode}), {} workers, faults for {}; files in {}",
        args.seed,
        args.nodes,
        args.workers,
        humantime::format_duration(args.duration),
        args.dir.display()
    );
    if args.netns && args.spares > 0 {
        println!("chaos: no membership fault with --netns (spares need namespaces of their own)");
    }
    let mut cluster = if args.netns {
        ChaosCluster::start_hosts(binary, &args.dir, args.nodes, (args.seed % 200) as u8 + 20)
            .await?
    } else {
        let sizes = (args.nodes, args.spares);
        ChaosCluster::start_loopback(binary, &args.dir, sizes, args.base_port, args.seed).await?
    };
    let outcome = drive(&args, &mut cluster).await;
    cluster.shutdown().await;
    let checks = outcome?;
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let inconclusive = checks
        .iter()
        .filter(|c| c.status == Status::Inconclusive)
        .count();
    if failed == 0 {
        println!(
            "result: all {} checks passed{}",
            checks.len() - inconclusive,
            if inconclusive > 0 {
                format!(", {inconclusive} inconclusive")
            } else {
                String::new()
            }
        );
    } else {
        println!("result: {failed} of {} checks FAILED", checks.len());
    }
    println!(
        "replay: paxlock-lab chaos --seed {} --nodes {} --workers {} --duration {}{}",
        args.seed,
        args.nodes,
        args.workers,
        humantime::format_duration(args.duration),
        if args.netns { " --netns" } else { "" }
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Everything between starting and stopping the cluster; returns the
/// checks after printing the summary.
async fn drive(args: &ChaosArgs, cluster: &mut ChaosCluster) -> anyhow::Result<Vec<Check>> {
    let leader = cluster.wait_leader(Duration::from_secs(60)).await?;
    println!("cluster up, node {leader} leads");
    let ctx = Arc::new(WorkerCtx {
        recorder: history::Recorder::new(),
        options: Mutex::new(cluster.connect_options(schedule::WORKER_TTL)),
        tls: cluster.tls.clone(),
        locks: LOCKS.iter().map(|s| s.to_string()).collect(),
        shared_locks: SHARED_LOCKS.iter().map(|s| s.to_string()).collect(),
        election: ELECTION.to_string(),
        seed: args.seed,
        stop: AtomicBool::new(false),
        watch_target: AtomicU64::new(0),
        pauses: (0..args.workers).map(|_| AtomicU64::new(0)).collect(),
        liveness_bound: args.liveness_bound,
        liveness: Mutex::new(BTreeMap::new()),
    });
    // The runner's own session holds one lock through everything,
    // including the final crash of every node.
    let probe = Client::connect_with(
        cluster.tls.clone(),
        cluster.connect_options(Duration::from_secs(60)),
    )
    .await
    .context("opening the runner's session")?;
    let durable = probe
        .lock(DURABLE_LOCK)
        .timeout(Duration::from_secs(10))
        .acquire()
        .await
        .context("taking the durable lock")?;
    // The administrator's own session: it never holds a worker lock.
    let admin = Client::connect_with(
        cluster.tls.clone(),
        cluster.connect_options(Duration::from_secs(60)),
    )
    .await
    .context("opening the administrator's session")?;
    let watches = lock_watches::start(&probe, &ctx);

    let mut handles = Vec::new();
    for index in 0..args.workers {
        handles.push((index, workers::spawn(ctx.clone(), index)?));
    }
    let spec = ScheduleSpec {
        nodes: cluster.ids(),
        lock_workers: (0..args.workers)
            .filter(|&i| workers::role(i) == Role::Locker)
            .collect(),
        delay: cluster.supports_delay(),
        count: (args.duration.as_secs() as usize).max(10),
        spares: !args.netns && args.spares > 0,
    };
    let mut membership_outcomes = Vec::new();
    let started = Instant::now();
    let mut injected: BTreeMap<String, u64> = BTreeMap::new();
    for episode in schedule::draw(args.seed, &spec) {
        if started.elapsed() >= args.duration {
            break;
        }
        let what = inject(cluster, &ctx, &admin, &episode, &mut membership_outcomes).await?;
        println!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
        *injected.entry(episode.fault.kind()).or_default() += 1;
        tokio::time::sleep(episode.gap).await;
    }

    println!("[{:>6.1}s] healing", started.elapsed().as_secs_f64());
    cluster.heal()?;
    cluster.wait_leader(Duration::from_secs(60)).await?;
    ctx.stop.store(true, Ordering::Release);
    let bound = args.liveness_bound + Duration::from_secs(60);
    let (watchers, others): (Vec<_>, Vec<_>) = handles
        .into_iter()
        .partition(|(i, _)| workers::role(*i) == Role::Watcher);
    join(others, bound).await;

    // The authoritative leadership history, then let watchers catch up to it.
    let replay_before = replay(&probe, Duration::from_secs(3)).await?;
    let final_term = replay_before
        .iter()
        .rev()
        .find_map(history::event_term)
        .unwrap_or(0);
    ctx.watch_target.store(final_term.max(1), Ordering::Release);
    join(watchers, bound).await;
    // Every worker is done (watchers' final acquires included).
    let watches_caught_up = lock_watches::finish(&ctx, watches, Duration::from_secs(60)).await;
    println!(
        "[{:>6.1}s] lock watches {}",
        started.elapsed().as_secs_f64(),
        match watches_caught_up {
            Some(took) => format!("caught up with the last grants in {took:.1?}"),
            None => "still behind the last grants after 60 s".into(),
        }
    );
    let _ = admin.close().await;
    println!(
        "[{:>6.1}s] workers done; {} leadership events, final term {final_term}",
        started.elapsed().as_secs_f64(),
        replay_before.len()
    );

    // Nothing acknowledged may be lost: crash every node at once, restart.
    let max_token = ctx.recorder.max_granted_token();
    cluster.kill_all();
    cluster.heal()?;
    cluster.wait_leader(Duration::from_secs(60)).await?;
    let durability = check_durability(cluster, &probe, &durable, max_token, &replay_before).await;
    println!(
        "[{:>6.1}s] whole-cluster crash and restart done",
        started.elapsed().as_secs_f64()
    );
    let _ = durable.release().await;
    let _ = probe.close().await;

    let history = ctx.recorder.take();
    let mut checks = checks::fenced_resources(&history);
    checks.push(checks::grants(&history));
    checks.push(checks::linearizable(&history, args.check_steps));
    checks.push(checks::lock_watches(&history));
    checks.extend(checks::elections(&history, &replay_before));
    checks.push(durability);
    checks.push(checks::membership(&membership_outcomes));
    let liveness = ctx
        .liveness
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    checks.push(checks::liveness(
        &liveness,
        args.workers,
        args.liveness_bound,
    ));
    print_summary(args, cluster, &injected, &history, &checks);
    if checks.iter().any(|c| c.status == Status::Fail) {
        // Everything the checks saw, to debug from (node logs are beside it).
        let path = args.dir.join("history.txt");
        match std::fs::write(&path, format!("{history:#?}")) {
            Ok(()) => println!("history written to {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
    Ok(checks)
}

/// Resolves a target to a node id: the leader now, or a follower.
async fn resolve(cluster: &ChaosCluster, target: Target) -> u64 {
    let ids = cluster.ids();
    let leader = cluster.leader().await;
    match target {
        Target::Leader => leader.unwrap_or(ids[0]),
        Target::Follower(n) => {
            let followers: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|&id| Some(id) != leader)
                .collect();
            followers[n % followers.len()]
        }
    }
}

/// Injects one episode and undoes it after its hold; returns what it did.
async fn inject(
    cluster: &mut ChaosCluster,
    ctx: &WorkerCtx,
    admin: &Client,
    episode: &Episode,
    membership: &mut Vec<membership::Outcome>,
) -> anyhow::Result<String> {
    let block = LinkFaults {
        blocked: true,
        ..LinkFaults::default()
    };
    let hold = episode.hold;
    let held = humantime::format_duration(Duration::from_millis(hold.as_millis() as u64));
    let what = match &episode.fault {
        Fault::Links {
            kind,
            links,
            faults,
        } => {
            let now = |party: Party| match party {
                Party::Node(id) => Party::Node(cluster.in_place_of(id)),
                clients => clients,
            };
            for &(from, to) in links {
                cluster.set_link(now(from), now(to), *faults)?;
            }
            tokio::time::sleep(hold).await;
            cluster.heal_network()?;
            format!("{kind} on {} links for {held} ({faults:?})", links.len())
        }
        Fault::Partition { side } => {
            let side: Vec<u64> = side.iter().map(|&id| cluster.in_place_of(id)).collect();
            for &a in &side {
                for b in cluster.ids().into_iter().filter(|b| !side.contains(b)) {
                    cluster.set_link(Party::Node(a), Party::Node(b), block)?;
                    cluster.set_link(Party::Node(b), Party::Node(a), block)?;
                }
            }
            tokio::time::sleep(hold).await;
            cluster.heal_network()?;
            format!("partition {side:?} | rest for {held}")
        }
        Fault::OneWay { from, to } => {
            let (from, to) = (cluster.in_place_of(*from), cluster.in_place_of(*to));
            cluster.set_link(Party::Node(from), Party::Node(to), block)?;
            tokio::time::sleep(hold).await;
            cluster.heal_network()?;
            format!("one-way loss {from} -> {to} for {held}")
        }
        Fault::Isolate(target) => {
            let id = resolve(cluster, *target).await;
            let mut others: Vec<Party> = cluster
                .ids()
                .into_iter()
                .filter(|&o| o != id)
                .map(Party::Node)
                .collect();
            others.push(Party::Clients);
            for other in others {
                cluster.set_link(Party::Node(id), other, block)?;
                cluster.set_link(other, Party::Node(id), block)?;
            }
            tokio::time::sleep(hold).await;
            cluster.heal_network()?;
            format!("isolated node {id} ({target:?}) for {held}")
        }
        Fault::Kill(target, down) => {
            let id = resolve(cluster, *target).await;
            cluster.kill(id);
            tokio::time::sleep(*down).await;
            cluster.restart(id)?;
            format!("SIGKILLed node {id} ({target:?}), restarted after {down:?}")
        }
        Fault::Stop(target, length) => {
            let id = resolve(cluster, *target).await;
            cluster.signal_pause(id, true)?;
            tokio::time::sleep(*length).await;
            cluster.signal_pause(id, false)?;
            format!("SIGSTOPped node {id} ({target:?}) for {length:?}")
        }
        Fault::PauseWorker(worker, length) => {
            let ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
            ctx.pauses[*worker].store(ms, Ordering::Release);
            format!("worker {worker} will freeze for {length:?} while holding its next lock")
        }
        Fault::ForceRelease(pick) => admin::force_release(ctx, admin, *pick).await,
        Fault::Revoke(pick) => admin::revoke(ctx, admin, *pick).await,
        Fault::Replace(target) => {
            let old = resolve(cluster, *target).await;
            let outcome = membership::replace(cluster, admin, old).await;
            settle(cluster, ctx, membership, outcome, &format!("{target:?}"))
        }
        Fault::Resize(target) => {
            let first = resolve(cluster, *target).await;
            let outcome = membership::resize(cluster, admin, first).await;
            let target = format!("starting with {target:?}");
            settle(cluster, ctx, membership, outcome, &target)
        }
    };
    Ok(what)
}

/// Records a membership fault's outcome; workers connecting from now on
/// use the members' addresses. Returns one line saying what it came to.
fn settle(
    cluster: &ChaosCluster,
    ctx: &WorkerCtx,
    outcomes: &mut Vec<membership::Outcome>,
    outcome: membership::Outcome,
    target: &str,
) -> String {
    *ctx.options.lock().unwrap_or_else(|p| p.into_inner()) =
        cluster.connect_options(schedule::WORKER_TTL);
    let what = match &outcome {
        membership::Outcome::Done(what) => format!("{what} ({target})"),
        membership::Outcome::Skipped(why) => format!("membership fault skipped: {why}"),
        membership::Outcome::Failed(why) => format!("membership change FAILED: {why}"),
    };
    outcomes.push(outcome);
    what
}

/// Joins worker threads, giving up on stragglers after `bound`.
async fn join(handles: Vec<(usize, std::thread::JoinHandle<()>)>, bound: Duration) {
    let deadline = Instant::now() + bound;
    for (index, handle) in handles {
        let left = deadline.saturating_duration_since(Instant::now());
        let joined =
            tokio::time::timeout(left, tokio::task::spawn_blocking(move || handle.join())).await;
        if !matches!(joined, Ok(Ok(Ok(())))) {
            eprintln!("worker {index} did not finish within {bound:?}");
        }
    }
}

/// The election's whole event history, read from the start until no event
/// arrives for `idle`.
async fn replay(client: &Client, idle: Duration) -> anyhow::Result<Vec<LeaderEvent>> {
    let mut events = workers::watch_events(client.election(ELECTION).watch_history());
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match tokio::time::timeout(idle, events.recv()).await {
            Ok(Some(Ok(event))) => out.push(event),
            Ok(Some(Err(_))) => {}
            Ok(None) | Err(_) => return Ok(out),
        }
    }
    bail!("the election history did not end within 60 s")
}

/// After every node was SIGKILLed and restarted: the runner's lock is still
/// its own, a new grant's token exceeds every token granted before, and the
/// election history still holds every event seen before.
async fn check_durability(
    cluster: &ChaosCluster,
    probe: &Client,
    durable: &paxlock::LockGuard,
    max_token: u64,
    replay_before: &[LeaderEvent],
) -> Check {
    let name = "nothing acknowledged lost after every node crashed";
    let result = async {
        durable
            .renew()
            .await
            .context("the runner's lock did not survive")?;
        let other = Client::connect_with(
            cluster.tls.clone(),
            cluster.connect_options(Duration::from_secs(10)),
        )
        .await
        .context("opening a session after the restart")?;
        if other.lock(DURABLE_LOCK).try_acquire().await?.is_some() {
            bail!("another session took the runner's lock after the restart");
        }
        let guard = other
            .lock(LOCKS[0])
            .timeout(Duration::from_secs(20))
            .acquire()
            .await
            .context("acquiring after the restart")?;
        let token = guard.fencing_token();
        let _ = guard.release().await;
        let _ = other.close().await;
        if token <= max_token {
            bail!(
                "token {token} granted after the restart, but {max_token} had been granted before"
            );
        }
        let after = replay(probe, Duration::from_secs(3)).await?;
        if after.len() < replay_before.len() || after[..replay_before.len()] != *replay_before {
            bail!(
                "the election history changed across the restart: {} events before, {} after",
                replay_before.len(),
                after.len()
            );
        }
        anyhow::Ok(format!(
            "lock kept, new token {token} > {max_token}, {} election events intact",
            replay_before.len()
        ))
    }
    .await;
    match result {
        Ok(figures) => Check::from(name, None, figures),
        Err(e) => Check::from(name, Some(format!("{e:#}")), String::new()),
    }
}

fn print_summary(
    args: &ChaosArgs,
    cluster: &ChaosCluster,
    injected: &BTreeMap<String, u64>,
    history: &history::History,
    checks: &[Check],
) {
    println!(
        "\n== chaos summary: seed {}, {} nodes, {} workers",
        args.seed, args.nodes, args.workers
    );
    println!("faults injected:");
    for (kind, n) in injected {
        println!("  {n:>5}  {kind}");
    }
    if let Some(c) = cluster.packet_counts() {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        println!(
            "packets: {} forwarded, {} blocked by partitions, {} dropped, {} duplicated, {} delayed",
            get(&c.forwarded),
            get(&c.blocked),
            get(&c.dropped),
            get(&c.duplicated),
            get(&c.delayed)
        );
    }
    println!("operations:");
    for (what, n) in &history.outcomes {
        println!("  {n:>6}  {what}");
    }
    println!("checks:");
    for c in checks {
        let status = match c.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Inconclusive => "????",
        };
        println!("  {status}  {}: {}", c.name, c.detail);
    }
}
