//! ZooKeeper through the `zookeeper-client` crate, with the recipes
//! ZooKeeper's users run (Apache Curator's, node names and waiting rules
//! included): `InterProcessMutex` for locks, `InterProcessSemaphoreV2` for
//! semaphores, `InterProcessReadWriteLock` for read/write locks and
//! `LeaderLatch` for elections, each client on its own session.
//!
//! Every recipe queues an ephemeral sequential node and waits for the node
//! its rule names (the one before it; for a reader, the first writer before
//! it) to go, watching only that node, so a release wakes one waiter. Nodes
//! are created "protected", as Curator does: the name carries a marker of
//! this client and acquire, so a create whose answer was lost (the server
//! died) is found again instead of left queued for the session's life.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError, EventType};

/// Where the bench's recipes keep their nodes.
const ROOT: &str = "/paxlock-bench";

/// How long one call other than a wait may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One ZooKeeper benchmark client: one session.
pub struct ZkConn {
    client: Client,
    /// Tells this client's acquires apart in protected node names.
    acquires: u64,
    /// Parent nodes known to exist.
    made: HashSet<String>,
}

/// A queued node: its full path, and its name's sequence number.
#[derive(Debug, Clone)]
struct Node {
    path: String,
    seq: u64,
}

/// Which queued node, if any, an acquirer waits for, given the queue in
/// sequence order and its own place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Curator's mutex (and a writer, and a latch): the node just before.
    Predecessor,
    /// Curator's reader: the first writer (`__WRIT__`) before it.
    FirstWriterBefore,
}

/// Curator's read/write lock node names (same length, as Curator needs).
const READ: &str = "__READ__";
const WRITE: &str = "__WRIT__";

impl Rule {
    /// The index in `queue` (names sorted by sequence) of the node to wait
    /// for, or `None` when `ours` may go.
    fn blocker(self, queue: &[String], ours: usize) -> Option<usize> {
        match self {
            Rule::Predecessor => ours.checked_sub(1),
            Rule::FirstWriterBefore => queue[..ours].iter().position(|n| n.contains(WRITE)),
        }
    }
}

/// Whether a call failed for want of a server (the one this session was
/// on died or is being left) rather than with the server's answer: the
/// client moves to another server, and the call is worth making again.
fn connection_trouble(e: &ZkError) -> bool {
    matches!(
        e,
        ZkError::ConnectionLoss | ZkError::Timeout | ZkError::Custom(_)
    )
}

/// A short wait before a call is made again after connection trouble.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// The sequence number ZooKeeper appended to a sequential node's name
/// (its last ten digits).
fn sequence(name: &str) -> Option<u64> {
    let digits = name.len().checked_sub(10).and_then(|at| name.get(at..))?;
    digits.parse().ok()
}

/// `children` sorted by their sequence numbers (names without one last).
fn in_queue_order(mut children: Vec<String>) -> Vec<String> {
    children.sort_by_key(|n| sequence(n).unwrap_or(u64::MAX));
    children
}

/// A held lock, permit or leadership: the node to delete to give it up.
#[derive(Debug, Clone)]
pub struct Held {
    node: String,
    /// The node's sequence number.
    term: u64,
}

impl Held {
    /// The sequence number of the held node (a latch's "term").
    pub fn term(&self) -> u64 {
        self.term
    }
}

impl ZkConn {
    /// Opens a session on `servers` (`host:port,...`; the client picks one
    /// at random and moves to another when it fails) with `ttl` as the
    /// session timeout.
    pub async fn connect(servers: &str, ttl: Duration) -> anyhow::Result<ZkConn> {
        let client = tokio::time::timeout(
            CALL_TIMEOUT,
            Client::connector()
                .with_session_timeout(ttl)
                .connect(servers),
        )
        .await
        .map_err(|_| anyhow!("zookeeper: no session within {CALL_TIMEOUT:?} at {servers}"))?
        .with_context(|| format!("zookeeper: connecting to {servers}"))?;
        Ok(ZkConn {
            client,
            acquires: 0,
            made: HashSet::new(),
        })
    }

    /// Creates `dir` and its parents as persistent nodes, once.
    async fn make_dir(&mut self, dir: &str) -> anyhow::Result<()> {
        if self.made.contains(dir) {
            return Ok(());
        }
        let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
        self.client
            .mkdir(dir, &options)
            .await
            .with_context(|| format!("zookeeper: creating {dir}"))?;
        self.made.insert(dir.to_string());
        Ok(())
    }

    /// The protected-name marker of this client's current acquire
    /// (`_c_{session}-{acquire}-`): it finds a node whose create's answer
    /// was lost.
    fn marker(&self) -> String {
        format!(
            "_c_{:x}-{}-",
            self.client.session_id().0 as u64,
            self.acquires
        )
    }

    /// Queues an ephemeral sequential node `{dir}/{marker}{kind}NNNNNNNNNN`
    /// (Curator's protected name); a create whose answer was lost is looked
    /// for by its marker before it is tried again.
    async fn enqueue(&mut self, dir: &str, kind: &str, data: &[u8]) -> anyhow::Result<Node> {
        self.make_dir(dir).await?;
        self.acquires += 1;
        let marker = self.marker();
        let prefix = format!("{dir}/{marker}{kind}");
        let options = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
        loop {
            match self.client.create(&prefix, data, &options).await {
                Ok((_, seq)) => {
                    let seq = u64::try_from(seq.into_i64())?;
                    return Ok(Node {
                        path: format!("{prefix}{seq:010}"),
                        seq,
                    });
                }
                Err(e) if connection_trouble(&e) => {
                    pause().await;
                    if let Some(found) = self.find_marked(dir, &marker).await? {
                        return Ok(found);
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("zookeeper: create {prefix}")),
            }
        }
    }

    /// This client's node under `dir` whose name carries `marker`, if any.
    async fn find_marked(&self, dir: &str, marker: &str) -> anyhow::Result<Option<Node>> {
        loop {
            match self.client.list_children(dir).await {
                Ok(children) => {
                    return Ok(children
                        .into_iter()
                        .find(|n| n.starts_with(marker))
                        .and_then(|name| {
                            Some(Node {
                                seq: sequence(&name)?,
                                path: format!("{dir}/{name}"),
                            })
                        }))
                }
                Err(e) if connection_trouble(&e) => pause().await,
                Err(e) => return Err(e).with_context(|| format!("zookeeper: list {dir}")),
            }
        }
    }

    /// Waits until `rule` lets `ours` (queued under `dir`) go.
    async fn wait_turn(&self, dir: &str, ours: &Node, rule: Rule) -> anyhow::Result<()> {
        let name = ours.path.rsplit('/').next().unwrap_or_default();
        loop {
            let queue = match self.client.list_children(dir).await {
                Ok(children) => in_queue_order(children),
                Err(e) if connection_trouble(&e) => {
                    pause().await;
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("zookeeper: list {dir}")),
            };
            let place = queue
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| anyhow!("zookeeper: our node {} is gone", ours.path))?;
            let Some(blocker) = rule.blocker(&queue, place) else {
                return Ok(());
            };
            // Curator watches with getData (not exists), so a node already
            // gone leaves no watch behind.
            let path = format!("{dir}/{}", queue[blocker]);
            match self.client.get_and_watch_data(&path).await {
                Ok((_, _, watcher)) => {
                    let event = watcher.changed().await;
                    if event.event_type == EventType::Session && event.session_state.is_terminated()
                    {
                        bail!("zookeeper: session ended: {:?}", event.session_state);
                    }
                }
                Err(ZkError::NoNode) => {}
                Err(e) if connection_trouble(&e) => pause().await,
                Err(e) => return Err(e).with_context(|| format!("zookeeper: watch {path}")),
            }
        }
    }

    /// Queues under `dir` as `kind` and waits for `rule` until `deadline`;
    /// on failure or timeout the queued node is deleted.
    async fn acquire(
        &mut self,
        dir: &str,
        kind: &str,
        data: &[u8],
        rule: Rule,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<Node> {
        let node = tokio::time::timeout_at(deadline, self.enqueue(dir, kind, data))
            .await
            .map_err(|_| anyhow!("zookeeper: not queued within the timeout"))??;
        match tokio::time::timeout_at(deadline, self.wait_turn(dir, &node, rule)).await {
            Ok(Ok(())) => Ok(node),
            Ok(Err(e)) => {
                self.delete(&node.path).await;
                Err(e)
            }
            Err(_) => {
                self.delete(&node.path).await;
                bail!("zookeeper: not acquired within the timeout")
            }
        }
    }

    /// Deletes `path`, retried through a lost connection; a node already
    /// gone is fine.
    async fn delete(&self, path: &str) {
        let until = tokio::time::Instant::now() + CALL_TIMEOUT;
        while tokio::time::Instant::now() < until {
            match self.client.delete(path, None).await {
                Err(e) if connection_trouble(&e) => pause().await,
                _ => return,
            }
        }
    }

    /// Curator's `InterProcessMutex` on lock `name`.
    pub async fn lock(&mut self, name: &str, timeout: Duration) -> anyhow::Result<Held> {
        let deadline = tokio::time::Instant::now() + timeout;
        let dir = format!("{ROOT}/locks/{name}");
        let node = self
            .acquire(&dir, "lock-", b"", Rule::Predecessor, deadline)
            .await?;
        Ok(Held {
            node: node.path,
            term: node.seq,
        })
    }

    /// Curator's `InterProcessReadWriteLock` on `name`: readers and writers
    /// queue in one folder; a writer waits for the node before it, a reader
    /// for the first writer before it.
    pub async fn rw_lock(
        &mut self,
        name: &str,
        write: bool,
        timeout: Duration,
    ) -> anyhow::Result<Held> {
        let deadline = tokio::time::Instant::now() + timeout;
        let dir = format!("{ROOT}/rwlocks/{name}");
        let (kind, rule) = if write {
            (WRITE, Rule::Predecessor)
        } else {
            (READ, Rule::FirstWriterBefore)
        };
        let node = self.acquire(&dir, kind, b"", rule, deadline).await?;
        Ok(Held {
            node: node.path,
            term: node.seq,
        })
    }

    /// Curator's `InterProcessSemaphoreV2` of `permits` on `name`: under a
    /// mutex (`locks/`), queue a lease node (`leases/`) and wait until at
    /// most `permits` leases exist, then let the mutex go. Waiters are
    /// served in the mutex's order.
    pub async fn semaphore(
        &mut self,
        name: &str,
        permits: u32,
        timeout: Duration,
    ) -> anyhow::Result<Held> {
        let deadline = tokio::time::Instant::now() + timeout;
        let base = format!("{ROOT}/semaphores/{name}");
        let mutex = self
            .acquire(
                &format!("{base}/locks"),
                "lock-",
                b"",
                Rule::Predecessor,
                deadline,
            )
            .await?;
        let leases = format!("{base}/leases");
        let counted = async {
            let lease = self.enqueue(&leases, "lease-", b"").await?;
            let name = lease
                .path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            loop {
                match self.client.get_and_watch_children(&leases).await {
                    Ok((children, _, watcher)) => {
                        if !children.contains(&name) {
                            bail!("zookeeper: our lease {} is gone", lease.path);
                        }
                        if children.len() <= permits as usize {
                            return Ok(lease);
                        }
                        watcher.changed().await;
                    }
                    Err(e) if connection_trouble(&e) => pause().await,
                    Err(e) => return Err(e).context("zookeeper: list leases"),
                }
            }
        };
        let result = tokio::time::timeout_at(deadline, counted).await;
        self.delete(&mutex.path).await;
        match result {
            Ok(Ok(lease)) => Ok(Held {
                node: lease.path,
                term: lease.seq,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                // The lease may have been created: it carries this
                // acquire's marker.
                let marker = self.marker();
                if let Ok(Some(lease)) = self.find_marked(&leases, &marker).await {
                    self.delete(&lease.path).await;
                }
                bail!("zookeeper: no permit within the timeout")
            }
        }
    }

    /// Gives up a lock, permit or leadership.
    pub async fn release(&mut self, held: &Held) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            match self.client.delete(&held.node, None).await {
                Ok(()) => return Ok(()),
                Err(e) if connection_trouble(&e) && tokio::time::Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("zookeeper: delete {}", held.node))
                }
            }
        }
    }

    /// Curator's `LeaderLatch` on election `name`: returns once this
    /// candidate's latch node is the first; its sequence number is the
    /// term (every new leader's is above the last one's).
    pub async fn campaign(
        &mut self,
        name: &str,
        value: &str,
        timeout: Duration,
    ) -> anyhow::Result<Held> {
        let deadline = tokio::time::Instant::now() + timeout;
        let dir = election_dir(name);
        let node = self
            .acquire(
                &dir,
                "latch-",
                value.as_bytes(),
                Rule::Predecessor,
                deadline,
            )
            .await?;
        Ok(Held {
            node: node.path,
            term: node.seq,
        })
    }

    /// Ends the session (its ephemeral nodes go with it): dropping a
    /// session's last handle closes it.
    pub fn close(self) {
        drop(self.client);
    }
}

/// Where election `name`'s latch nodes live.
fn election_dir(name: &str) -> String {
    format!("{ROOT}/elections/{name}")
}

/// A watcher of an election's leader, as Curator's `LeaderLatch` users
/// follow one: a children watch on the latch folder, the first node in
/// sequence order being the leader.
pub struct Observer {
    client: Client,
    dir: String,
    last: Option<u64>,
}

impl Observer {
    /// `count` watchers of election `name` on one new session.
    pub async fn group(
        servers: &str,
        name: &str,
        ttl: Duration,
        count: usize,
    ) -> anyhow::Result<Vec<Observer>> {
        let mut conn = ZkConn::connect(servers, ttl).await?;
        let dir = election_dir(name);
        conn.make_dir(&dir).await?;
        Ok((0..count)
            .map(|_| Observer {
                client: conn.client.clone(),
                dir: dir.clone(),
                last: None,
            })
            .collect())
    }

    /// The term (latch sequence) of the next leader seen; waits as long as
    /// it takes (the caller bounds it).
    pub async fn next(&mut self) -> anyhow::Result<u64> {
        loop {
            match self.client.get_and_watch_children(&self.dir).await {
                Ok((children, _, watcher)) => {
                    let first = children.iter().filter_map(|n| sequence(n)).min();
                    if let Some(term) = first.filter(|&t| Some(t) != self.last) {
                        self.last = Some(term);
                        return Ok(term);
                    }
                    let event = watcher.changed().await;
                    if event.event_type == EventType::Session && event.session_state.is_terminated()
                    {
                        bail!("zookeeper: session ended: {:?}", event.session_state);
                    }
                }
                Err(e) if connection_trouble(&e) => pause().await,
                Err(e) => return Err(e).context("zookeeper: watch the election"),
            }
        }
    }

    /// Ends the watcher (its session ends with the group's last watcher).
    pub fn close(self) {
        drop(self.client);
    }
}

/// The mode (`leader`, `follower`, …) of the ZooKeeper server at
/// `host:port`, from its `srvr` command; `None` while it is not serving.
pub async fn server_mode(server: &str) -> anyhow::Result<Option<String>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let talk = async {
        let mut stream = tokio::net::TcpStream::connect(server).await?;
        stream.write_all(b"srvr").await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(2), talk)
        .await
        .map_err(|_| anyhow!("zookeeper {server}: no answer to srvr"))??;
    Ok(answer
        .lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .map(|m| m.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn queue_order_is_by_sequence_whatever_the_prefix() {
        let queue = in_queue_order(names(&[
            "_c_b-2-__WRIT__0000000012",
            "_c_a-1-__READ__0000000010",
            "_c_c-9-__READ__0000000011",
        ]));
        assert_eq!(
            queue,
            names(&[
                "_c_a-1-__READ__0000000010",
                "_c_c-9-__READ__0000000011",
                "_c_b-2-__WRIT__0000000012",
            ])
        );
        assert_eq!(sequence("x-lock-0000000042"), Some(42));
        assert_eq!(sequence("short"), None);
    }

    #[test]
    fn a_reader_waits_only_for_the_first_writer_before_it() {
        let queue = names(&[
            "r-__READ__0000000001",
            "w-__WRIT__0000000002",
            "r-__READ__0000000003",
            "w-__WRIT__0000000004",
            "r-__READ__0000000005",
        ]);
        assert_eq!(Rule::FirstWriterBefore.blocker(&queue, 0), None);
        assert_eq!(Rule::FirstWriterBefore.blocker(&queue, 2), Some(1));
        assert_eq!(Rule::FirstWriterBefore.blocker(&queue, 4), Some(1));
        // A writer (and a mutex waiter) waits for whoever is just before.
        assert_eq!(Rule::Predecessor.blocker(&queue, 3), Some(2));
        assert_eq!(Rule::Predecessor.blocker(&queue, 0), None);
    }
}
