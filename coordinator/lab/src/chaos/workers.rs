//! Client workers: each runs on its own OS thread with its own
//! single-threaded runtime and its own `Client` (session), so freezing the
//! thread freezes that client completely — keepalives and QUIC included —
//! the way a GC pause or a stopped VM would.
//!
//! Roles by index: `i % 4 == 2` campaigns and resigns, `i % 4 == 3`
//! watches leadership, the rest lock, write to the fenced resource and
//! release. Every operation goes into the [`Recorder`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paxlock::proto::ErrorCode;
use paxlock::tls::TlsMaterial;
use paxlock::{Client, ConnectOptions, Error, LeaderEvent, LeaderWatch, LockGuard, LockMode};
use tokio::sync::mpsc;

use super::history::{CampaignWon, Recorder, SessionOps, Write};
use paxlock_sim::linearizability::{Call, HistoryOf, Outcome};
use paxlock_sim::rng::SimRng;

/// How long a blocking acquire waits before the cluster withdraws it.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a campaign may wait before the worker gives up on its session.
const CAMPAIGN_PATIENCE: Duration = Duration::from_secs(10);
/// How long a worker keeps trying to open a session before recording a
/// failure and trying again.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);
/// How long a watcher may take, after the workload stopped, to reach the
/// final term.
const WATCH_CATCH_UP: Duration = Duration::from_secs(20);

/// The lockers' semaphore, of [`CHAOS_PERMITS`] permits.
pub const CHAOS_SEMAPHORE: &str = "chaos-sem";
/// Its permits.
pub const CHAOS_PERMITS: u32 = 2;
/// The lockers' read/write lock (two reads in three acquires).
pub const CHAOS_RWLOCK: &str = "chaos-rw";

/// What the history of `name` is checked against.
pub fn history_of(name: &str) -> HistoryOf {
    match name {
        CHAOS_SEMAPHORE => HistoryOf::Semaphore(CHAOS_PERMITS),
        CHAOS_RWLOCK => HistoryOf::ReadWrite,
        _ => HistoryOf::Lock,
    }
}

/// What a worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Lock, write to the fenced resource, release.
    Locker,
    /// Campaign, write as leader, maybe proclaim, resign.
    Candidate,
    /// Watch leadership changes.
    Watcher,
}

/// The role of worker `index`.
pub fn role(index: usize) -> Role {
    match index % 4 {
        2 => Role::Candidate,
        3 => Role::Watcher,
        _ => Role::Locker,
    }
}

impl WorkerCtx {
    /// How to reach the cluster now.
    pub fn connect_options(&self) -> ConnectOptions {
        self.options
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What workers share with the runner.
#[derive(Debug)]
pub struct WorkerCtx {
    /// The history.
    pub recorder: Recorder,
    /// How to reach the cluster: the members' addresses, updated by the
    /// runner when the membership faults change them (a client that
    /// connects after every node it was configured with left would find
    /// nobody, however well its earlier clients followed the members).
    pub options: Mutex<ConnectOptions>,
    /// The client certificate.
    pub tls: TlsMaterial,
    /// Lock names the lockers contend on (and the administrator takes,
    /// and the lock watches follow).
    pub locks: Vec<String>,
    /// The semaphore ([`CHAOS_SEMAPHORE`]) and read/write lock
    /// ([`CHAOS_RWLOCK`]) the lockers also use.
    pub shared_locks: Vec<String>,
    /// The election candidates run and watchers watch.
    pub election: String,
    /// Seeds each worker's choices.
    pub seed: u64,
    /// End of the workload: workers finish, then prove liveness.
    pub stop: AtomicBool,
    /// Set by the runner once the final term is known: watchers run until
    /// they have seen it.
    pub watch_target: AtomicU64,
    /// Per worker: a requested freeze, in ms (0: none).
    pub pauses: Vec<AtomicU64>,
    /// Longest a worker's final acquire may take.
    pub liveness_bound: Duration,
    /// Per worker: how long its final acquire took, or why it failed.
    pub liveness: Mutex<BTreeMap<usize, Result<Duration, String>>>,
}

/// Starts worker `index` on its own thread.
pub fn spawn(ctx: Arc<WorkerCtx>, index: usize) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("chaos-worker-{index}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(rt) => rt.block_on(run(&ctx, index)),
                Err(e) => {
                    ctx.liveness
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(index, Err(format!("no runtime: {e}")));
                }
            }
        })
}

async fn run(ctx: &WorkerCtx, index: usize) {
    let mut rng = SimRng::new(ctx.seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
    match role(index) {
        Role::Locker => locker(ctx, index, &mut rng).await,
        Role::Candidate => candidate(ctx, index, &mut rng).await,
        Role::Watcher => watcher(ctx, index).await,
    }
    liveness(ctx, index).await;
}

/// A client with its session's history bookkeeping.
struct Conn {
    client: Client,
    session: u64,
    ops: SessionOps,
}

impl Conn {
    /// Records an operation whose outcome is unknown: it may take effect
    /// until the session ends, so it stays open until a confirmed close.
    fn unknown(&mut self, rec: &Recorder, lock: &str, call: Call, invoked: u64) {
        let op = rec.op(lock, self.session, call, Outcome::Unknown, invoked, None);
        self.ops.pending.push(op);
    }
}

/// Opens a session, retrying for up to `patience`.
async fn connect(ctx: &WorkerCtx, patience: Duration) -> Option<Conn> {
    let started = Instant::now();
    loop {
        let invoked = ctx.recorder.now();
        let attempt = tokio::time::timeout(
            CONNECT_PATIENCE,
            Client::connect_with(ctx.tls.clone(), ctx.connect_options()),
        )
        .await;
        match attempt {
            Ok(Ok(client)) => {
                ctx.recorder.count("session: opened");
                return Some(Conn {
                    session: client.session_id(),
                    client,
                    ops: SessionOps {
                        lease_floor: invoked,
                        ..SessionOps::default()
                    },
                });
            }
            Ok(Err(e)) => ctx
                .recorder
                .count(format!("session: open failed ({})", kind(&e))),
            Err(_) => ctx.recorder.count("session: open timed out"),
        }
        if started.elapsed() > patience {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Closes the session and records its end in every lock it touched. A
/// confirmed close bounds its unknown operations (a closed session's
/// requests are refused); otherwise the session ends by expiry at some
/// time after its last known lease end.
async fn end_session(ctx: &WorkerCtx, conn: Conn) {
    let rec = &ctx.recorder;
    let invoked = rec.now();
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(5), conn.client.close()).await,
        Ok(Ok(()))
    );
    let done = rec.now();
    if closed {
        rec.count("session: closed");
        for op in &conn.ops.pending {
            rec.complete_unknown(op, done);
        }
        for lock in &conn.ops.touched {
            let call = Call::EndSession { expired: false };
            rec.op(
                lock,
                conn.session,
                call,
                Outcome::Ended,
                invoked,
                Some(done),
            );
        }
    } else {
        rec.count("session: close failed (left to expire)");
        for lock in &conn.ops.touched {
            let call = Call::EndSession { expired: true };
            let from = conn.ops.lease_floor.min(invoked);
            rec.op(lock, conn.session, call, Outcome::Unknown, from, None);
        }
    }
}

/// A short name for an error, for the summary's counts.
pub fn kind(e: &Error) -> String {
    match e {
        Error::Server { code, .. } => format!("{code:?}"),
        Error::Unreachable { .. } => "unreachable".into(),
        Error::Timeout(_) => "timeout".into(),
        Error::SessionLost(_) => "session lost".into(),
        Error::Closed => "closed".into(),
        Error::Rejected { .. } => "rejected".into(),
        Error::Protocol(_) => "protocol".into(),
        Error::Config(_) | Error::Tls(_) => "config".into(),
        Error::TooManyWaits { .. } => "too many waits".into(),
        Error::AlreadyHeld { .. } => "already held".into(),
    }
}

fn pause_ms(rng: &mut SimRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.range(lo, hi))
}

async fn locker(ctx: &WorkerCtx, index: usize, rng: &mut SimRng) {
    let mut conn: Option<Conn> = None;
    while !ctx.stop.load(Ordering::Acquire) {
        let Some(c) = conn.as_mut() else {
            conn = connect(ctx, CONNECT_PATIENCE).await;
            continue;
        };
        let names = ctx.locks.len() + ctx.shared_locks.len();
        let pick = rng.index(names);
        let lock = match ctx.locks.get(pick) {
            Some(lock) => lock.clone(),
            None => ctx.shared_locks[pick - ctx.locks.len()].clone(),
        };
        let wait = rng.chance_ppm(700_000);
        if !lock_cycle(ctx, index, c, &lock, wait, rng).await {
            if let Some(c) = conn.take() {
                end_session(ctx, c).await;
            }
        }
    }
    if let Some(c) = conn.take() {
        end_session(ctx, c).await;
    }
}

/// Acquire, hold (writing), release. Returns whether the session is still
/// usable; `false` when an outcome is unknown or the lease was lost.
async fn lock_cycle(
    ctx: &WorkerCtx,
    index: usize,
    c: &mut Conn,
    lock: &str,
    wait: bool,
    rng: &mut SimRng,
) -> bool {
    let rec = &ctx.recorder;
    c.ops.touched.insert(lock.to_string());
    let (builder, acquire) = match history_of(lock) {
        HistoryOf::Lock => (c.client.lock(lock), Call::Acquire),
        HistoryOf::Semaphore(permits) => (
            c.client.semaphore(lock, permits),
            Call::AcquireShared { write: false },
        ),
        HistoryOf::ReadWrite if rng.chance_ppm(666_667) => (
            c.client.rwlock(lock).read(),
            Call::AcquireShared { write: false },
        ),
        HistoryOf::ReadWrite => (
            c.client.rwlock(lock).write(),
            Call::AcquireShared { write: true },
        ),
    };
    let invoked = rec.now();
    let result = if wait {
        builder.timeout(ACQUIRE_TIMEOUT).acquire().await.map(Some)
    } else {
        builder.try_acquire().await
    };
    let done = rec.now();
    let guard = match result {
        Ok(Some(guard)) => {
            let token = guard.grant_token();
            rec.op(
                lock,
                c.session,
                acquire,
                Outcome::Granted { token },
                invoked,
                Some(done),
            );
            rec.count("acquire: granted");
            guard
        }
        Ok(None) => {
            rec.op(lock, c.session, acquire, Outcome::Busy, invoked, Some(done));
            rec.count("acquire: busy");
            return true;
        }
        Err(e) if e.code() == Some(ErrorCode::Timeout) => {
            // The cluster withdrew the wait with a logged command before
            // answering: whatever happened, the session holds nothing now.
            rec.op(
                lock,
                c.session,
                acquire,
                Outcome::Unknown,
                invoked,
                Some(done),
            );
            rec.op(
                lock,
                c.session,
                Call::Cancel,
                Outcome::Unknown,
                invoked,
                Some(done),
            );
            rec.count("acquire: timed out");
            return true;
        }
        Err(e) => {
            c.unknown(rec, lock, acquire, invoked);
            rec.count(format!("acquire: unknown ({})", kind(&e)));
            return false;
        }
    };
    let healthy = hold(ctx, index, c, lock, &guard, rng).await;
    let token = guard.grant_token();
    let invoked = rec.now();
    let result = guard.release().await;
    let done = rec.now();
    match result {
        Ok(()) => {
            let call = Call::Release { token };
            rec.op(
                lock,
                c.session,
                call,
                Outcome::Released,
                invoked,
                Some(done),
            );
            rec.count("release: ok");
            healthy
        }
        Err(e) if matches!(e.code(), Some(ErrorCode::StaleToken | ErrorCode::NotHeld)) => {
            let call = Call::Release { token };
            rec.op(lock, c.session, call, Outcome::Stale, invoked, Some(done));
            rec.count("release: stale");
            false
        }
        Err(e) => {
            let call = Call::Release { token };
            c.unknown(rec, lock, call, invoked);
            rec.count(format!("release: unknown ({})", kind(&e)));
            false
        }
    }
}

/// Writes to the fenced resource while the lease holds. A requested pause
/// freezes the thread between the lease check and the write — the stale
/// write fencing exists for. Returns whether the lease held throughout.
async fn hold(
    ctx: &WorkerCtx,
    index: usize,
    c: &mut Conn,
    lock: &str,
    guard: &LockGuard,
    rng: &mut SimRng,
) -> bool {
    let rec = &ctx.recorder;
    for _ in 0..rng.range(1, 3) {
        if !guard.is_valid() {
            rec.count("hold: lease ran out");
            return false;
        }
        c.ops.lease_floor = c.ops.lease_floor.max(rec.at(guard.valid_until()));
        let pause = ctx.pauses[index].swap(0, Ordering::AcqRel);
        if pause > 0 {
            // Blocks the whole runtime on purpose: nothing of this client
            // runs, as in a stop-the-world pause.
            std::thread::sleep(Duration::from_millis(pause));
        }
        let write = Write {
            worker: index,
            session: c.session,
            token: guard.fencing_token(),
            paused_since_check: pause > 0,
            accepted: false,
            shared: guard.mode() == LockMode::Read,
        };
        // A semaphore's resource fences each permit slot on its own.
        let resource = match guard.slot() {
            Some(slot) => format!("{lock}#{slot}"),
            None => lock.to_string(),
        };
        let accepted = rec.write(&resource, write);
        rec.count(match (pause > 0, accepted) {
            (true, true) => "write after pause: accepted",
            (true, false) => "write after pause: refused by fencing",
            (false, true) => "write: accepted",
            (false, false) => "write: refused",
        });
        if pause > 0 {
            return false;
        }
        tokio::time::sleep(pause_ms(rng, 5, 40)).await;
    }
    true
}

async fn candidate(ctx: &WorkerCtx, index: usize, rng: &mut SimRng) {
    let rec = &ctx.recorder;
    let mut conn: Option<Conn> = None;
    let mut round = 0u64;
    while !ctx.stop.load(Ordering::Acquire) {
        let Some(c) = conn.as_mut() else {
            conn = connect(ctx, CONNECT_PATIENCE).await;
            continue;
        };
        round += 1;
        let value = format!("worker-{index}-{round}").into_bytes();
        let election = c.client.election(&ctx.election);
        let healthy =
            match tokio::time::timeout(CAMPAIGN_PATIENCE, election.campaign(value.clone())).await {
                Ok(Ok(leadership)) => {
                    rec.campaign(CampaignWon {
                        session: c.session,
                        term: leadership.term(),
                        value,
                    });
                    rec.count("campaign: won");
                    let mut healthy = true;
                    for _ in 0..rng.range(1, 3) {
                        if !leadership.is_valid() {
                            rec.count("leadership: lease ran out");
                            healthy = false;
                            break;
                        }
                        let write = Write {
                            worker: index,
                            session: c.session,
                            token: leadership.term(),
                            paused_since_check: false,
                            accepted: false,
                            shared: false,
                        };
                        if !rec.write(&ctx.election, write) {
                            rec.count("leader write: refused");
                        }
                        tokio::time::sleep(pause_ms(rng, 50, 300)).await;
                    }
                    if healthy && rng.chance_ppm(300_000) {
                        let value = format!("worker-{index}-{round}-proclaimed");
                        match leadership.proclaim(value).await {
                            Ok(()) => rec.count("proclaim: ok"),
                            Err(e) => {
                                rec.count(format!("proclaim: {}", kind(&e)));
                                healthy = false;
                            }
                        }
                    }
                    match leadership.resign().await {
                        Ok(()) => rec.count("resign: ok"),
                        Err(e) => {
                            rec.count(format!("resign: {}", kind(&e)));
                            healthy = false;
                        }
                    }
                    healthy
                }
                Ok(Err(e)) => {
                    rec.count(format!("campaign: {}", kind(&e)));
                    false
                }
                Err(_) => {
                    rec.count("campaign: gave up waiting");
                    false
                }
            };
        if !healthy {
            if let Some(c) = conn.take() {
                end_session(ctx, c).await;
            }
        }
    }
    if let Some(c) = conn.take() {
        end_session(ctx, c).await;
    }
}

/// Runs `watch` on its own task, so a timeout on the receiving side never
/// cancels a half-read frame.
pub fn watch_events(mut watch: LeaderWatch) -> mpsc::Receiver<Result<LeaderEvent, Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let event = watch.next().await;
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    rx
}

async fn watcher(ctx: &WorkerCtx, index: usize) {
    let rec = &ctx.recorder;
    let Some(conn) = connect(ctx, Duration::from_secs(60)).await else {
        rec.count("watch: never connected");
        return;
    };
    let mut events = watch_events(conn.client.election(&ctx.election).watch_history());
    let mut stopped_at = None;
    loop {
        if ctx.stop.load(Ordering::Acquire) {
            let since = *stopped_at.get_or_insert_with(Instant::now);
            let target = ctx.watch_target.load(Ordering::Acquire);
            if target != 0 && rec.watched_term(index) >= target {
                break;
            }
            if target != 0 && since.elapsed() > WATCH_CATCH_UP {
                rec.count("watch: missed the final term");
                break;
            }
        }
        match tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
            Ok(Some(Ok(event))) => {
                rec.watched(index, event);
                rec.count("watch: event");
            }
            Ok(Some(Err(e))) => rec.count(format!("watch: {}", kind(&e))),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    end_session(ctx, conn).await;
}

/// After the faults healed: one acquire of the first lock, with a fresh
/// session, within the liveness bound.
async fn liveness(ctx: &WorkerCtx, index: usize) {
    let started = Instant::now();
    let result = async {
        let Some(mut c) = connect(ctx, ctx.liveness_bound).await else {
            return Err("could not open a session".to_string());
        };
        let lock = ctx.locks[0].clone();
        c.ops.touched.insert(lock.clone());
        let left = ctx.liveness_bound.saturating_sub(started.elapsed());
        let rec = &ctx.recorder;
        let invoked = rec.now();
        let result = c.client.lock(&lock).timeout(left).acquire().await;
        let done = rec.now();
        let outcome = match result {
            Ok(guard) => {
                let took = started.elapsed();
                let token = guard.fencing_token();
                rec.op(
                    &lock,
                    c.session,
                    Call::Acquire,
                    Outcome::Granted { token },
                    invoked,
                    Some(done),
                );
                let invoked = rec.now();
                let released = guard.release().await;
                let done = rec.now();
                let call = Call::Release { token };
                if released.is_ok() {
                    rec.op(
                        &lock,
                        c.session,
                        call,
                        Outcome::Released,
                        invoked,
                        Some(done),
                    );
                } else {
                    c.unknown(rec, &lock, call, invoked);
                }
                Ok(took)
            }
            Err(e) => {
                c.unknown(rec, &lock, Call::Acquire, invoked);
                Err(format!("acquire failed: {e}"))
            }
        };
        end_session(ctx, c).await;
        outcome
    }
    .await;
    ctx.liveness
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(index, result);
}
