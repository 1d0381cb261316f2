//! Node configuration, read from TOML.
//!
//! Durations are humantime strings (`"150ms"`, `"10s"`). Relative paths are
//! resolved against the directory of the config file, so a cluster folder
//! can be moved as a whole. An invalid config names the key and the problem.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use paxlock_core::node_membership::JoinAs;
use serde::Deserialize;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse or a key had the wrong type; the message
    /// names the key and line.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A key parsed but its value is not acceptable.
    #[error("invalid config {path}: key `{key}`: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// What is wrong and what would be right.
        problem: String,
    },
}

/// Paths of a node's TLS material.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate (PEM), naming `node-<id>.paxlock`.
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

/// Another node of the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its node id.
    pub id: u64,
    /// Its UDP address.
    pub addr: SocketAddr,
}

/// Upper bound on `limits.election_history`: each retained event is held in
/// memory (and in snapshots) for every election.
const MAX_ELECTION_HISTORY: u32 = 100_000;

/// Limits of the lock service. Every node of a cluster must use the same
/// values (they shape what the replicated state machine accepts); nodes
/// with different limits refuse to peer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Shortest session TTL a client may ask for.
    #[serde(with = "paxlock::humantime_serde")]
    pub session_ttl_min: Duration,
    /// Longest session TTL a client may ask for.
    #[serde(with = "paxlock::humantime_serde")]
    pub session_ttl_max: Duration,
    /// Live sessions in the cluster.
    pub max_sessions: u32,
    /// Waiters queued on one lock.
    pub max_waiters_per_lock: u32,
    /// Locks one session holds or waits for.
    pub max_locks_per_session: u32,
    /// Elections in the cluster.
    pub max_elections: u32,
    /// After a holder's session expires (not after a clean release), the
    /// lock stays ungranted this long, as in Chubby and Consul. 0: off.
    #[serde(with = "paxlock::humantime_serde")]
    pub lock_delay: Duration,
    /// Past events each election keeps for watchers that resume after a
    /// disconnection; one that missed more gets `HistoryGone`.
    pub election_history: u32,
    /// Bound on the whole replicated state, in counted bytes (sessions,
    /// locks, elections with their values and histories; see
    /// `paxlock_core::locks::state_size`). Past it, what would add state is
    /// refused with `STATE_FULL` once elections nobody uses were removed;
    /// releasing, resigning and closing always work. It keeps every
    /// snapshot restorable (they are read up to 1 GiB).
    pub max_state_bytes: u64,
}

/// Smallest `limits.max_state_bytes`: room for a few largest values.
const MIN_STATE_BYTES: u64 = 1024 * 1024;

/// Largest `limits.max_state_bytes`: half of the largest snapshot a node
/// reads, since what frees or moves state (an event recorded for a
/// promotion, the replies a session's requests leave) is never refused
/// and may pass the bound.
const MAX_STATE_BYTES: u64 = crate::locks::snapshot::MAX_SNAPSHOT_BYTES as u64 / 2;

impl Default for LimitsConfig {
    fn default() -> Self {
        let limits = crate::locks::Limits::default();
        LimitsConfig {
            session_ttl_min: Duration::from_millis(limits.min_ttl_ms),
            session_ttl_max: Duration::from_millis(limits.max_ttl_ms),
            max_sessions: limits.max_sessions,
            max_waiters_per_lock: limits.max_waiters_per_lock,
            max_locks_per_session: limits.max_locks_per_session,
            max_elections: limits.max_elections,
            lock_delay: Duration::ZERO,
            election_history: crate::locks::Config::default().election_history_len,
            max_state_bytes: limits.max_state_bytes,
        }
    }
}

impl LimitsConfig {
    /// The state machine configuration these limits make.
    pub fn machine_config(&self) -> crate::locks::Config {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut config = crate::locks::Config::default();
        config.limits.min_ttl_ms = ms(self.session_ttl_min);
        config.limits.max_ttl_ms = ms(self.session_ttl_max);
        config.limits.max_sessions = self.max_sessions;
        config.limits.max_waiters_per_lock = self.max_waiters_per_lock;
        config.limits.max_locks_per_session = self.max_locks_per_session;
        config.limits.max_elections = self.max_elections;
        config.lock_delay_ms = ms(self.lock_delay);
        config.election_history_len = self.election_history;
        config.limits.max_state_bytes = self.max_state_bytes;
        config
    }
}

/// Bounds on client connections to this node (`[clients]`). Node-local:
/// nodes of one cluster may differ, and none of it is replicated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsConfig {
    /// Client connections to this node, all identities together.
    pub max_connections: usize,
    /// Client connections to this node of one identity (one `Client`
    /// needs one connection per node, whatever its sessions).
    pub max_connections_per_identity: usize,
    /// Request and watch streams one connection may have open at once;
    /// a client opening more waits for one to finish. Raising it lets a
    /// client keep more watches on one node, at some cost per connection.
    pub max_streams_per_connection: u32,
    /// How long a request frame may take to arrive once its stream is
    /// open; a stalled one is reset (`FRAME_TIMEOUT`).
    #[serde(with = "paxlock::humantime_serde")]
    pub frame_read_timeout: Duration,
    /// New client connections this node begins handshakes for per second;
    /// past it (or past 64 handshakes at once) an attempt is answered with
    /// a stateless retry, or refused if its address is validated already,
    /// and the client retries. Peers are never held back.
    pub handshakes_per_second: u32,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        ClientsConfig {
            max_connections: 4096,
            max_connections_per_identity: 512,
            // QUIC's (quinn's) own default: measured, 1024 cost about 3 %
            // of uncontended throughput at 64 clients.
            max_streams_per_connection: 100,
            frame_read_timeout: Duration::from_secs(10),
            // About what one node on a shared 2-core machine completes in
            // a second (1,200 in the flood test), so a reconnect storm of
            // thousands of clients still settles in seconds.
            handshakes_per_second: 1000,
        }
    }
}

/// Who administers the cluster (`[access]`). Node-local, like `[clients]`;
/// give every node the same list (the leader's is the one that counts).
/// The rules themselves are replicated (`paxlock acl`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Identities (client certificate names) that may do everything,
    /// whatever the rules say: change the rules, and lock, campaign and
    /// read any name. With no rules set, nobody else administers.
    pub admins: Vec<String>,
    /// A file of revoked identities and certificate serials (see
    /// `transport::revocation`), followed while the node runs: a change
    /// closes the connections it revokes and refuses new ones, without a
    /// restart. Relative to the config file's folder.
    pub revocations: Option<PathBuf>,
}

/// The whole node configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id, 1 or more, unique in the cluster.
    pub node_id: u64,
    /// The cluster's name; nodes refuse peers of another cluster.
    pub cluster_id: String,
    /// The UDP address to listen on for peers and clients.
    pub listen: SocketAddr,
    /// Where durable state lives.
    pub data_dir: PathBuf,
    /// TLS material.
    pub tls: TlsPaths,
    /// The cluster's first voters besides this node (with `join`: all of
    /// them). They seed the cluster's first start; from then on the
    /// replicated membership is authoritative, and a member added later is
    /// reached at the address its addition carries.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// This node joins a running cluster: it is not one of the first
    /// voters (`peers` lists them, exactly as the first nodes' configs
    /// did) and takes part only once it is added: by an administrator
    /// (`paxlock members add ID --addr LISTEN`, or `members replace`), or
    /// at its own request with `join_via`.
    #[serde(default)]
    pub join: bool,
    /// Members (`host:port`, as clients reach them) this node asks to add
    /// it, in turn, until it has the part `join_as` says (`paxlock serve
    /// --join ADDR` adds to them). Implies `join`. The members reach it at
    /// `advertise`, else `listen`, which must then be an address they can
    /// dial. Its node certificate is its credential: keep the CA key to
    /// those who may add members.
    #[serde(default)]
    pub join_via: Vec<String>,
    /// The address (ip:port) the other members reach this node at, where
    /// that is not `listen` (a proxy or address translation in front of
    /// it): what a node asking to join gives the cluster.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// The part a node with `join_via` asks for: `"voter"` (added as a
    /// learner, promoted once caught up; the default) or `"learner"`.
    #[serde(default)]
    pub join_as: JoinAs,
    /// Where to serve `/metrics` (Prometheus) and `/health` over HTTP; keep
    /// it on a private address. Absent: no endpoint.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// How often a leader tells its peers it is alive. Everything else
    /// about failure detection scales with it: the leader lease is 10
    /// heartbeats, a follower starts an election after 14–28 silent ones.
    /// The default (10ms: elections after 140–280 ms) suits a LAN; raise it
    /// where round trips are tens of milliseconds.
    #[serde(default = "default_heartbeat", with = "paxlock::humantime_serde")]
    pub heartbeat_interval: Duration,
    /// The bound ρ on clock rate error, in parts per million, that every
    /// lease computation allows for (clients must use at least the same).
    #[serde(default = "default_drift_ppm")]
    pub max_clock_drift_ppm: u32,
    /// Snapshot the lock state and compact the log every this many log
    /// slots; bounds the WAL and how far a restarted node must catch up.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every_slots: u64,
    /// The write-ahead log starts a new segment file once the current one
    /// would grow past this many bytes; segments a snapshot covers are then
    /// deleted. Smaller segments return disk space sooner after a snapshot,
    /// at the cost of more files and directory fsyncs. At least 64 KiB.
    #[serde(default = "default_wal_segment_bytes")]
    pub wal_segment_bytes: u64,
    /// Limits of the lock service.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Bounds on client connections to this node.
    #[serde(default)]
    pub clients: ClientsConfig,
    /// Administrators.
    #[serde(default)]
    pub access: AccessConfig,
}

fn default_snapshot_every() -> u64 {
    1000
}

fn default_wal_segment_bytes() -> u64 {
    64 * 1024 * 1024
}

/// The smallest `wal_segment_bytes` accepted.
const MIN_WAL_SEGMENT_BYTES: u64 = 64 * 1024;

fn default_drift_ppm() -> u32 {
    paxlock::DEFAULT_DRIFT_PPM
}

fn default_heartbeat() -> Duration {
    Duration::from_millis(10)
}

impl NodeConfig {
    /// Reads, parses and validates `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_file_joining(path, &[])
    }

    /// Reads and parses `path`, adds `join_via` to its members to ask (as
    /// `paxlock serve --join` does), and validates the whole.
    pub fn from_file_joining(path: &Path, join_via: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        config.join_via.extend_from_slice(join_via);
        config.validate(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses and validates TOML text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config = Self::parse(text, path)?;
        config.validate(path)?;
        Ok(config)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Where the other members reach this node: `advertise`, else `listen`.
    pub fn reached_at(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    /// Whether this node joins a running cluster (`join`, or members to
    /// ask in `join_via`) rather than being one of its first voters.
    pub fn joins(&self) -> bool {
        self.join || !self.join_via.is_empty()
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            problem,
        };
        let max_id = crate::paxos::NodeId::MAX;
        if self.node_id == 0 || self.node_id > max_id {
            return Err(invalid("node_id", format!("must be 1 to {max_id}")));
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > 128 {
            return Err(invalid("cluster_id", "must be 1 to 128 bytes".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.id == 0 || peer.id > max_id || peer.id == self.node_id {
                return Err(invalid(
                    &format!("peers[{i}].id"),
                    format!(
                        "{} is not a valid peer id (ids are 1 to {max_id}, and not this node's own)",
                        peer.id
                    ),
                ));
            }
            if !seen.insert(peer.id) {
                return Err(invalid(
                    &format!("peers[{i}].id"),
                    format!("{} appears twice", peer.id),
                ));
            }
        }
        for (i, member) in self.join_via.iter().enumerate() {
            if paxlock::split_host_port(member).is_none() {
                return Err(invalid(
                    &format!("join_via[{i}]"),
                    format!("{member:?} is not host:port (a member's address, as clients use it)"),
                ));
            }
        }
        let reached_at = self.reached_at();
        if !self.join_via.is_empty() && (reached_at.ip().is_unspecified() || reached_at.port() == 0)
        {
            let key = if self.advertise.is_some() {
                "advertise"
            } else {
                "listen"
            };
            return Err(invalid(
                key,
                format!(
                    "{reached_at} cannot be dialled: a node that asks to join gives the members \
                     the address they reach it at (`advertise`, else `listen`), so it must be \
                     one (ip:port) they can dial"
                ),
            ));
        }
        let cluster_size = self.peers.len() + usize::from(!self.joins());
        if !matches!(cluster_size, 1 | 3 | 5 | 7) {
            let listed = if self.joins() {
                "the first voters listed"
            } else {
                "a cluster of"
            };
            return Err(invalid(
                "peers",
                format!("{listed} {cluster_size} nodes; use 3 or 5 (1 for a single dev node)"),
            ));
        }
        if self.max_clock_drift_ppm >= 100_000 {
            return Err(invalid(
                "max_clock_drift_ppm",
                "must be below 100000 (10%); typical NTP-disciplined clocks need 500".into(),
            ));
        }
        if self.snapshot_every_slots == 0 {
            return Err(invalid("snapshot_every_slots", "must be at least 1".into()));
        }
        if self.wal_segment_bytes < MIN_WAL_SEGMENT_BYTES {
            return Err(invalid(
                "wal_segment_bytes",
                format!("must be at least {MIN_WAL_SEGMENT_BYTES} (64 KiB); the default is 64 MiB"),
            ));
        }
        let c = &self.clients;
        for (key, value) in [
            ("clients.max_connections", c.max_connections),
            (
                "clients.max_connections_per_identity",
                c.max_connections_per_identity,
            ),
            (
                "clients.max_streams_per_connection",
                c.max_streams_per_connection as usize,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if c.frame_read_timeout < Duration::from_millis(100) {
            return Err(invalid(
                "clients.frame_read_timeout",
                "must be at least 100ms; the default is 10s".into(),
            ));
        }
        let l = &self.limits;
        if l.election_history > MAX_ELECTION_HISTORY {
            return Err(invalid(
                "limits.election_history",
                format!("must be at most {MAX_ELECTION_HISTORY} (events are kept in memory per election)"),
            ));
        }
        if !(MIN_STATE_BYTES..=MAX_STATE_BYTES).contains(&l.max_state_bytes) {
            return Err(invalid(
                "limits.max_state_bytes",
                format!(
                    "must be between {MIN_STATE_BYTES} and {MAX_STATE_BYTES} bytes; the default \
                     is {}",
                    crate::locks::limits::DEFAULT_MAX_STATE_BYTES
                ),
            ));
        }
        if l.session_ttl_min < Duration::from_millis(500) || l.session_ttl_min > l.session_ttl_max {
            return Err(invalid(
                "limits.session_ttl_min",
                "must be at least 500ms and not above limits.session_ttl_max".into(),
            ));
        }
        for (key, value) in [
            ("limits.max_sessions", l.max_sessions),
            ("limits.max_waiters_per_lock", l.max_waiters_per_lock),
            ("limits.max_locks_per_session", l.max_locks_per_session),
            ("limits.max_elections", l.max_elections),
            ("limits.election_history", l.election_history),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if self.heartbeat_interval < Duration::from_millis(1)
            || self.heartbeat_interval > Duration::from_secs(10)
        {
            return Err(invalid(
                "heartbeat_interval",
                "must be between 1ms and 10s".into(),
            ));
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.data_dir,
            &mut self.tls.ca,
            &mut self.tls.cert,
            &mut self.tls.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(p) = self.access.revocations.as_mut().filter(|p| p.is_relative()) {
            *p = base.join(&*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = 1
cluster_id = "dev"
listen = "127.0.0.1:7001"
data_dir = "data"
heartbeat_interval = "20ms"
[tls]
ca = "ca.pem"
cert = "node-1.pem"
key = "node-1.key"
[[peers]]
id = 2
addr = "127.0.0.1:7002"
[[peers]]
id = 3
addr = "127.0.0.1:7003"
"#;

    #[test]
    fn humantime_durations_parse() -> Result<(), ConfigError> {
        let config = NodeConfig::from_toml(GOOD, Path::new("n.toml"))?;
        assert_eq!(config.heartbeat_interval, Duration::from_millis(20));
        Ok(())
    }

    #[test]
    fn bad_duration_names_the_key() {
        let text = GOOD.replace("\"20ms\"", "\"soon\"");
        let err = NodeConfig::from_toml(&text, Path::new("n.toml")).map(|_| ());
        let message = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("heartbeat_interval"), "{message}");
        assert!(message.contains("not a duration"), "{message}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let text = format!("{GOOD}\n[extra]\nx = 1\n");
        let text = text.replacen("node_id = 1", "node_id = 1\nbogus = true", 1);
        let err = NodeConfig::from_toml(&text, Path::new("n.toml"));
        let message = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("bogus"), "{message}");
    }

    #[test]
    fn limits_parse_with_humantime_and_reach_the_machine() -> Result<(), ConfigError> {
        let text = format!(
            "{GOOD}\n[limits]\nsession_ttl_min = \"2s\"\nlock_delay = \"15s\"\nmax_sessions = 7\nelection_history = 500\n"
        );
        let config = NodeConfig::from_toml(&text, Path::new("n.toml"))?;
        let machine = config.limits.machine_config();
        assert_eq!(machine.limits.min_ttl_ms, 2000);
        assert_eq!(machine.limits.max_sessions, 7);
        assert_eq!(machine.lock_delay_ms, 15_000);
        assert_eq!(machine.election_history_len, 500);
        Ok(())
    }

    #[test]
    fn members_to_ask_imply_joining_and_need_a_dialable_address() -> Result<(), ConfigError> {
        // Node 4 joins the cluster of nodes 1-3 (all listed as first voters).
        let joiner = GOOD.replacen("node_id = 1", "node_id = 4", 1).replacen(
            "listen = \"127.0.0.1:7001\"",
            "listen = \"127.0.0.1:7004\"",
            1,
        ) + "[[peers]]\nid = 1\naddr = \"127.0.0.1:7001\"\n";
        let asks = joiner.replacen(
            "node_id = 4",
            "node_id = 4\njoin_via = [\"127.0.0.1:7001\"]\njoin_as = \"learner\"",
            1,
        );
        let config = NodeConfig::from_toml(&asks, Path::new("n.toml"))?;
        assert!(config.joins() && !config.join);
        assert_eq!(config.join_as, JoinAs::Learner);
        let options = crate::node::NodeOptions::from(&config);
        assert!(options.join);
        assert_eq!(
            options.ask_to_join.map(|a| (a.via, a.part)),
            Some((vec!["127.0.0.1:7001".to_string()], JoinAs::Learner))
        );
        // Without anyone to ask (nor `join`), four first voters are refused.
        assert!(NodeConfig::from_toml(&joiner, Path::new("n.toml")).is_err());
        let refused = |text: &str, expected_key: &str| {
            let err = NodeConfig::from_toml(text, Path::new("n.toml"));
            assert!(
                matches!(&err, Err(ConfigError::Invalid { key, .. }) if key == expected_key),
                "{err:?}"
            );
        };
        let anywhere = asks.replacen("\"127.0.0.1:7004\"", "\"0.0.0.0:7004\"", 1);
        refused(&anywhere, "listen");
        // Listening on every address, reached at one: fine.
        let advertised = anywhere.replacen(
            "node_id = 4",
            "node_id = 4\nadvertise = \"10.0.0.4:7004\"",
            1,
        );
        let config = NodeConfig::from_toml(&advertised, Path::new("n.toml"))?;
        let reached_at: SocketAddr = "10.0.0.4:7004".parse().expect("an address");
        assert_eq!(config.reached_at(), reached_at);
        let options = crate::node::NodeOptions::from(&config);
        assert_eq!(options.ask_to_join.map(|a| a.reach_me_at), Some(reached_at));
        refused(
            &advertised.replacen("10.0.0.4:7004", "0.0.0.0:7004", 1),
            "advertise",
        );
        refused(
            &asks.replacen("[\"127.0.0.1:7001\"]", "[\"127.0.0.1\"]", 1),
            "join_via[0]",
        );
        Ok(())
    }

    #[test]
    fn wal_segment_size_has_a_floor_and_a_default() -> Result<(), ConfigError> {
        let config = NodeConfig::from_toml(GOOD, Path::new("n.toml"))?;
        assert_eq!(config.wal_segment_bytes, 64 * 1024 * 1024);
        let small = GOOD.replacen("node_id = 1", "node_id = 1\nwal_segment_bytes = 65536", 1);
        assert_eq!(
            NodeConfig::from_toml(&small, Path::new("n.toml"))?.wal_segment_bytes,
            65_536
        );
        let tiny = GOOD.replacen("node_id = 1", "node_id = 1\nwal_segment_bytes = 4096", 1);
        let err = NodeConfig::from_toml(&tiny, Path::new("n.toml"));
        assert!(
            matches!(&err, Err(ConfigError::Invalid { key, .. }) if key == "wal_segment_bytes"),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn zero_limit_names_the_key() {
        let text = format!("{GOOD}\n[limits]\nmax_waiters_per_lock = 0\n");
        let err = NodeConfig::from_toml(&text, Path::new("n.toml"));
        assert!(
            matches!(&err, Err(ConfigError::Invalid { key, .. }) if key == "limits.max_waiters_per_lock"),
            "{err:?}"
        );
    }

    #[test]
    fn oversized_election_history_names_the_key() {
        let text = format!("{GOOD}\n[limits]\nelection_history = 100001\n");
        let err = NodeConfig::from_toml(&text, Path::new("n.toml"));
        assert!(
            matches!(&err, Err(ConfigError::Invalid { key, .. }) if key == "limits.election_history"),
            "{err:?}"
        );
    }

    #[test]
    fn peer_with_own_id_names_the_key() {
        let text = GOOD.replace("id = 2", "id = 1");
        let err = NodeConfig::from_toml(&text, Path::new("n.toml"));
        assert!(
            matches!(&err, Err(ConfigError::Invalid { key, .. }) if key == "peers[0].id"),
            "{err:?}"
        );
    }

    /// A leadership's epoch packs the node id into ten bits: ids from 1024
    /// on would give two leaders of one round the same epoch.
    #[test]
    fn node_ids_past_the_epochs_bits_name_the_key() {
        let text = GOOD.replace("id = 2", "id = 1026");
        let err = NodeConfig::from_toml(&text, Path::new("n.toml"));
        assert!(
            matches!(&err, Err(ConfigError::Invalid { key, problem, .. }) if key == "peers[0].id" && problem.contains("1023")),
            "{err:?}"
        );
        let own = GOOD.replacen("node_id = 1", "node_id = 1025", 1);
        let err = NodeConfig::from_toml(&own, Path::new("n.toml"));
        assert!(
            matches!(&err, Err(ConfigError::Invalid { key, .. }) if key == "node_id"),
            "{err:?}"
        );
        let largest = GOOD.replace("id = 2", "id = 1023");
        assert!(NodeConfig::from_toml(&largest, Path::new("n.toml")).is_ok());
    }

    #[test]
    fn even_cluster_size_is_refused() {
        let text = GOOD.replace("[[peers]]\nid = 3\naddr = \"127.0.0.1:7003\"\n", "");
        let err = NodeConfig::from_toml(&text, Path::new("n.toml"));
        assert!(
            matches!(&err, Err(ConfigError::Invalid { key, .. }) if key == "peers"),
            "{err:?}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("node.toml");
        std::fs::write(&path, GOOD)?;
        let config = NodeConfig::from_file(&path)?;
        assert_eq!(config.tls.ca, dir.path().join("ca.pem"));
        assert_eq!(config.data_dir, dir.path().join("data"));
        Ok(())
    }
}
