//! One benchmark client: a Paxlock client (own session), an etcd
//! connection with its own lease or a ZooKeeper session, behind the same acquire/release calls,
//! and the same for election candidates and watchers.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

#[cfg(feature = "etcd")]
use super::etcd::{ElectionWatch, EtcdConn, Observer};
#[cfg(feature = "zookeeper")]
use super::zookeeper::{self, ZkConn};

/// Which system a run talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A Paxlock cluster (`--client-config`).
    Paxlock,
    /// An etcd cluster (`--endpoints`), over gRPC: v3lock, v3election and
    /// leases, as etcd's own clients use them.
    Etcd,
    /// A ZooKeeper ensemble (`--zookeeper-servers`), with Curator's
    /// recipes.
    #[value(name = "zookeeper")]
    ZooKeeper,
}

impl Target {
    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Paxlock => "paxlock",
            Target::Etcd => "etcd",
            Target::ZooKeeper => "zookeeper",
        }
    }

    /// Whether it has a counting semaphore to measure.
    pub fn has_semaphores(self) -> bool {
        match self {
            Target::Paxlock | Target::ZooKeeper => true,
            Target::Etcd => false,
        }
    }
}

/// What one acquire of the lock loops takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// A lock.
    Lock,
    /// A permit of a semaphore of this many.
    Permit(u32),
    /// A read/write lock for reading.
    Read,
    /// A read/write lock for writing.
    Write,
}

/// Where a target lives.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// Paxlock client config (TOML) plus the session TTL to use.
    Paxlock {
        /// `client.toml`.
        config: std::path::PathBuf,
        /// Session TTL.
        ttl: Duration,
    },
    /// etcd client URLs (`host:port`) plus the lease TTL.
    #[cfg(feature = "etcd")]
    Etcd {
        /// `host:port` of every member.
        endpoints: Vec<String>,
        /// Lease TTL.
        ttl: Duration,
    },
    /// ZooKeeper servers (`host:port,...`) plus the session timeout.
    #[cfg(feature = "zookeeper")]
    ZooKeeper {
        /// The connect string.
        servers: String,
        /// Session timeout.
        ttl: Duration,
    },
}

impl Endpoint {
    /// The session (lease) TTL its clients use.
    pub fn ttl(&self) -> Duration {
        match self {
            Endpoint::Paxlock { ttl, .. } => *ttl,
            #[cfg(feature = "etcd")]
            Endpoint::Etcd { ttl, .. } => *ttl,
            #[cfg(feature = "zookeeper")]
            Endpoint::ZooKeeper { ttl, .. } => *ttl,
        }
    }

    /// The target kind.
    pub fn target(&self) -> Target {
        match self {
            Endpoint::Paxlock { .. } => Target::Paxlock,
            #[cfg(feature = "etcd")]
            Endpoint::Etcd { .. } => Target::Etcd,
            #[cfg(feature = "zookeeper")]
            Endpoint::ZooKeeper { .. } => Target::ZooKeeper,
        }
    }
}

/// A connected benchmark client.
pub enum Conn {
    /// Paxlock; reconnects (new session) when the session is lost.
    Paxlock(paxlock::Client, paxlock::Config),
    /// etcd.
    #[cfg(feature = "etcd")]
    Etcd(Box<EtcdConn>),
    /// ZooKeeper (its session).
    #[cfg(feature = "zookeeper")]
    ZooKeeper(Box<ZkConn>),
}

/// A held lock.
pub enum Held {
    /// Paxlock guard.
    Paxlock(paxlock::LockGuard),
    /// etcd lock key, as v3lock Lock returned it.
    #[cfg(feature = "etcd")]
    Etcd(Vec<u8>),
    /// etcd RWMutex recipe key, deleted to unlock.
    #[cfg(feature = "etcd")]
    EtcdKey(Vec<u8>),
    /// ZooKeeper recipe node, deleted to release.
    #[cfg(feature = "zookeeper")]
    ZooKeeper(zookeeper::Held),
}

/// Reads a Paxlock client config and overrides the session TTL.
pub fn paxlock_config(path: &Path, ttl: Duration) -> anyhow::Result<paxlock::Config> {
    let mut config = paxlock::Config::from_file(path)
        .with_context(|| format!("reading client config {}", path.display()))?;
    config.session_ttl = ttl;
    Ok(config)
}

impl Conn {
    /// Connects one client (`index` spreads etcd clients over members).
    pub async fn connect(endpoint: &Endpoint, index: usize) -> anyhow::Result<Conn> {
        match endpoint {
            Endpoint::Paxlock { config, ttl } => {
                let _ = index;
                let config = paxlock_config(config, *ttl)?;
                let client = paxlock::Client::connect(config.clone())
                    .await
                    .context("connecting to Paxlock")?;
                Ok(Conn::Paxlock(client, config))
            }
            #[cfg(feature = "etcd")]
            Endpoint::Etcd { endpoints, ttl } => Ok(Conn::Etcd(Box::new(
                EtcdConn::connect(endpoints.clone(), index, *ttl).await?,
            ))),
            #[cfg(feature = "zookeeper")]
            Endpoint::ZooKeeper { servers, ttl } => Ok(Conn::ZooKeeper(Box::new(
                ZkConn::connect(servers, *ttl).await?,
            ))),
        }
    }

    /// Blocking acquire of lock `name`, giving up after `timeout`.
    pub async fn acquire(&mut self, name: &str, timeout: Duration) -> anyhow::Result<Held> {
        self.take(name, Take::Lock, timeout).await
    }

    /// Blocking acquire of `name` as `take` says, giving up after
    /// `timeout`.
    pub async fn take(
        &mut self,
        name: &str,
        take: Take,
        timeout: Duration,
    ) -> anyhow::Result<Held> {
        match self {
            Conn::Paxlock(client, config) => {
                let builder = match take {
                    Take::Lock => client.lock(name),
                    Take::Permit(permits) => client.semaphore(name, permits),
                    Take::Read => client.rwlock(name).read(),
                    Take::Write => client.rwlock(name).write(),
                };
                match builder.timeout(timeout).acquire().await {
                    Ok(guard) => Ok(Held::Paxlock(guard)),
                    Err(e @ (paxlock::Error::SessionLost(_) | paxlock::Error::Closed)) => {
                        // A lost session is final for its client: start a new one.
                        if let Ok(fresh) = paxlock::Client::connect(config.clone()).await {
                            *client = fresh;
                        }
                        Err(e.into())
                    }
                    Err(e) => Err(e.into()),
                }
            }
            #[cfg(feature = "etcd")]
            Conn::Etcd(conn) => match take {
                Take::Lock => Ok(Held::Etcd(conn.lock(name, timeout).await?)),
                Take::Read | Take::Write => Ok(Held::EtcdKey(
                    conn.rw_lock(name, take == Take::Write, timeout).await?,
                )),
                Take::Permit(_) => anyhow::bail!("etcd has no semaphore"),
            },
            #[cfg(feature = "zookeeper")]
            Conn::ZooKeeper(conn) => Ok(Held::ZooKeeper(match take {
                Take::Lock => conn.lock(name, timeout).await?,
                Take::Permit(permits) => conn.semaphore(name, permits, timeout).await?,
                Take::Read | Take::Write => {
                    conn.rw_lock(name, take == Take::Write, timeout).await?
                }
            })),
        }
    }

    /// Releases a lock taken by `acquire`.
    pub async fn release(&mut self, held: Held) -> anyhow::Result<()> {
        match (self, held) {
            (Conn::Paxlock(..), Held::Paxlock(guard)) => Ok(guard.release().await?),
            #[cfg(feature = "etcd")]
            (Conn::Etcd(conn), Held::Etcd(key)) => conn.unlock(&key).await,
            #[cfg(feature = "etcd")]
            (Conn::Etcd(conn), Held::EtcdKey(key)) => conn.delete(&key).await,
            #[cfg(feature = "zookeeper")]
            (Conn::ZooKeeper(conn), Held::ZooKeeper(held)) => conn.release(&held).await,
            #[cfg(any(feature = "etcd", feature = "zookeeper"))]
            _ => anyhow::bail!("lock handle of another target"),
        }
    }

    /// Ends the session / revokes the lease.
    pub async fn close(self) {
        match self {
            Conn::Paxlock(client, _) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
            }
            #[cfg(feature = "etcd")]
            Conn::Etcd(conn) => conn.close().await,
            #[cfg(feature = "zookeeper")]
            Conn::ZooKeeper(conn) => conn.close(),
        }
    }
}

/// One campaign-then-resign cycle of a [`Candidate`].
#[derive(Debug)]
pub struct Cycle {
    /// The won term (Paxlock term, etcd leader key create revision).
    pub term: u64,
    /// When the resign was sent: when the campaign returned, or `hold`
    /// after it.
    pub elected_at: Instant,
    /// When the resign returned, or why it failed.
    pub resigned: anyhow::Result<Instant>,
}

/// An election candidate: its own Paxlock session or etcd lease.
pub enum Candidate {
    /// Paxlock client and its handle on the election.
    Paxlock(paxlock::Client, paxlock::Election),
    /// etcd connection (its lease is the candidate's identity).
    #[cfg(feature = "etcd")]
    Etcd(Box<EtcdConn>),
    /// ZooKeeper session (a latch node of it is the candidacy).
    #[cfg(feature = "zookeeper")]
    ZooKeeper(Box<ZkConn>),
}

impl Candidate {
    /// Connects candidate `index` of election `name`.
    pub async fn connect(endpoint: &Endpoint, index: usize, name: &str) -> anyhow::Result<Self> {
        match endpoint {
            Endpoint::Paxlock { config, ttl } => {
                let _ = index;
                let client = paxlock::Client::connect(paxlock_config(config, *ttl)?)
                    .await
                    .context("connecting to Paxlock")?;
                let election = client.election(name.to_string());
                Ok(Candidate::Paxlock(client, election))
            }
            #[cfg(feature = "etcd")]
            Endpoint::Etcd { endpoints, ttl } => Ok(Candidate::Etcd(Box::new(
                EtcdConn::connect(endpoints.clone(), index, *ttl).await?,
            ))),
            #[cfg(feature = "zookeeper")]
            Endpoint::ZooKeeper { servers, ttl } => Ok(Candidate::ZooKeeper(Box::new(
                ZkConn::connect(servers, *ttl).await?,
            ))),
        }
    }

    /// Campaigns as `value` until elected or `deadline`, then leads for
    /// `hold` and resigns; `None` if the deadline came first. Only the
    /// campaign is cut off: a resign already sent is waited for.
    pub async fn cycle(
        &mut self,
        name: &str,
        value: &str,
        hold: Duration,
        deadline: Instant,
    ) -> anyhow::Result<Option<Cycle>> {
        let deadline = tokio::time::Instant::from(deadline);
        match self {
            Candidate::Paxlock(_, election) => {
                let _ = name;
                let campaign = election.campaign(value.to_string());
                let leadership = match tokio::time::timeout_at(deadline, campaign).await {
                    Err(_) => return Ok(None),
                    Ok(r) => r?,
                };
                tokio::time::sleep(hold).await;
                let elected_at = Instant::now();
                let term = leadership.term();
                let resigned = leadership.resign().await.map(|()| Instant::now());
                Ok(Some(Cycle {
                    term,
                    elected_at,
                    resigned: resigned.map_err(Into::into),
                }))
            }
            #[cfg(feature = "etcd")]
            Candidate::Etcd(conn) => {
                // The campaign blocks until every older candidate's key is
                // gone, so only the deadline bounds it.
                let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
                let campaign = conn.campaign(name, value, wait + Duration::from_secs(1));
                let leader = match tokio::time::timeout_at(deadline, campaign).await {
                    Err(_) => return Ok(None),
                    Ok(r) => r?,
                };
                tokio::time::sleep(hold).await;
                let elected_at = Instant::now();
                let resigned = conn.resign(&leader).await.map(|()| Instant::now());
                Ok(Some(Cycle {
                    term: leader.rev,
                    elected_at,
                    resigned,
                }))
            }
            #[cfg(feature = "zookeeper")]
            Candidate::ZooKeeper(conn) => {
                // The latch waits for every older candidate's node to go:
                // only the deadline bounds it.
                let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
                let campaign = conn.campaign(name, value, wait + Duration::from_secs(1));
                let latch = match tokio::time::timeout_at(deadline, campaign).await {
                    Err(_) => return Ok(None),
                    Ok(r) => r?,
                };
                tokio::time::sleep(hold).await;
                let elected_at = Instant::now();
                let resigned = conn.release(&latch).await.map(|()| Instant::now());
                Ok(Some(Cycle {
                    term: latch.term(),
                    elected_at,
                    resigned,
                }))
            }
        }
    }

    /// Ends the session / revokes the lease (which also drops a pending
    /// campaign's key).
    pub async fn close(self) {
        match self {
            Candidate::Paxlock(client, _) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
            }
            #[cfg(feature = "etcd")]
            Candidate::Etcd(conn) => conn.close().await,
            #[cfg(feature = "zookeeper")]
            Candidate::ZooKeeper(conn) => conn.close(),
        }
    }
}

/// A watcher of an election's leader.
pub enum Watcher {
    /// Paxlock: its watch, and for the first watcher of a group the client
    /// they share (closed once, when that watcher closes).
    Paxlock(Option<paxlock::Client>, paxlock::LeaderWatch),
    /// etcd: a watcher with a connection of its own, through an Observe
    /// stream (the v3election service), reopened on `channel` after a
    /// failure.
    #[cfg(feature = "etcd")]
    Etcd {
        /// The connection to observe on.
        channel: tonic::transport::Channel,
        /// Election name.
        name: String,
        /// The open stream, if any.
        stream: Option<Observer>,
    },
    /// etcd: one of the watchers sharing a connection, each a watch on the
    /// election's keys on the connection's one Watch stream (as etcd's Go
    /// client observes and shares a connection: Observe streams cannot be
    /// multiplexed, and 50 on one connection fell behind).
    #[cfg(feature = "etcd")]
    EtcdShared(ElectionWatch),
    /// ZooKeeper: a children watch on the election's latch folder.
    #[cfg(feature = "zookeeper")]
    ZooKeeper(zookeeper::Observer),
}

impl Watcher {
    /// Starts `count` watchers of election `name` sharing one connection
    /// (Paxlock: a client and its session; etcd: an HTTP/2 connection, with
    /// one Watch stream if `count` > 1; ZooKeeper: a session), the `group`th
    /// such group (etcd: groups are spread over members, as Paxlock clients
    /// spread over nodes).
    pub async fn connect_group(
        endpoint: &Endpoint,
        group: usize,
        count: usize,
        name: &str,
    ) -> anyhow::Result<Vec<Self>> {
        match endpoint {
            Endpoint::Paxlock { config, ttl } => {
                let _ = group;
                let client = paxlock::Client::connect(paxlock_config(config, *ttl)?)
                    .await
                    .context("connecting to Paxlock")?;
                Ok((0..count)
                    .map(|i| {
                        let watch = client.election(name.to_string()).watch();
                        Watcher::Paxlock((i == 0).then(|| client.clone()), watch)
                    })
                    .collect())
            }
            #[cfg(feature = "etcd")]
            Endpoint::Etcd { endpoints, .. } => {
                let member = endpoints
                    .get(group % endpoints.len().max(1))
                    .cloned()
                    .context("no etcd endpoints")?;
                let channel = super::etcd::Grpc::new(vec![member], 0).channel()?;
                if count > 1 {
                    let watches = ElectionWatch::group(channel, name, count).await?;
                    return Ok(watches.into_iter().map(Watcher::EtcdShared).collect());
                }
                Ok((0..count)
                    .map(|_| Watcher::Etcd {
                        stream: Some(Observer::open(channel.clone(), name)),
                        channel: channel.clone(),
                        name: name.to_string(),
                    })
                    .collect())
            }
            #[cfg(feature = "zookeeper")]
            Endpoint::ZooKeeper { servers, ttl } => {
                let _ = group;
                let observers = zookeeper::Observer::group(servers, name, *ttl, count).await?;
                Ok(observers.into_iter().map(Watcher::ZooKeeper).collect())
            }
        }
    }

    /// The term of the next new leader seen (Paxlock: `Elected` events
    /// only; etcd: every observed leader key, whose create revision is the
    /// term).
    pub async fn next_leader(&mut self) -> anyhow::Result<u64> {
        match self {
            Watcher::Paxlock(_, watch) => loop {
                if let paxlock::LeaderEvent::Elected { term, .. } = watch.next().await? {
                    return Ok(term);
                }
            },
            #[cfg(feature = "etcd")]
            Watcher::Etcd {
                channel,
                name,
                stream,
            } => {
                let observer = match stream {
                    Some(o) => o,
                    None => stream.insert(Observer::open(channel.clone(), name)),
                };
                let next = observer.next().await;
                if next.is_err() {
                    *stream = None;
                }
                next
            }
            #[cfg(feature = "etcd")]
            Watcher::EtcdShared(watch) => watch.next_leader().await,
            #[cfg(feature = "zookeeper")]
            Watcher::ZooKeeper(observer) => observer.next().await,
        }
    }

    /// Ends the watch (and, for a group's first Paxlock watcher, the
    /// group's session and connection).
    pub async fn close(self) {
        match self {
            Watcher::Paxlock(client, _) => {
                if let Some(client) = client {
                    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
                }
            }
            #[cfg(feature = "etcd")]
            Watcher::Etcd { .. } | Watcher::EtcdShared(_) => {}
            #[cfg(feature = "zookeeper")]
            Watcher::ZooKeeper(observer) => observer.close(),
        }
    }
}
