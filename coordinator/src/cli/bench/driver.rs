//! One benchmark client: a Paxlock client (own session) or an etcd
//! connection with its own lease, behind the same acquire/release calls.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

#[cfg(feature = "etcd")]
use super::etcd::EtcdConn;

/// Which system a run talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A Paxlock cluster (`--client-config`).
    Paxlock,
    /// An etcd cluster (`--endpoints`), through the v3lock and lease API.
    Etcd,
}

impl Target {
    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Paxlock => "paxlock",
            Target::Etcd => "etcd",
        }
    }
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
}

impl Endpoint {
    /// The target kind.
    pub fn target(&self) -> Target {
        match self {
            Endpoint::Paxlock { .. } => Target::Paxlock,
            #[cfg(feature = "etcd")]
            Endpoint::Etcd { .. } => Target::Etcd,
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
}

/// A held lock.
pub enum Held {
    /// Paxlock guard.
    Paxlock(paxlock::LockGuard),
    /// etcd lock key (base64, as the gateway returns it).
    #[cfg(feature = "etcd")]
    Etcd(String),
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
        }
    }

    /// Blocking acquire of `name`, giving up after `timeout`.
    pub async fn acquire(&mut self, name: &str, timeout: Duration) -> anyhow::Result<Held> {
        match self {
            Conn::Paxlock(client, config) => {
                match client.lock(name).timeout(timeout).acquire().await {
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
            Conn::Etcd(conn) => Ok(Held::Etcd(conn.lock(name, timeout).await?)),
        }
    }

    /// Releases a lock taken by `acquire`.
    pub async fn release(&mut self, held: Held) -> anyhow::Result<()> {
        match (self, held) {
            (Conn::Paxlock(..), Held::Paxlock(guard)) => Ok(guard.release().await?),
            #[cfg(feature = "etcd")]
            (Conn::Etcd(conn), Held::Etcd(key)) => conn.unlock(&key).await,
            #[cfg(feature = "etcd")]
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
        }
    }
}
