//! Client configuration, from TOML or built in code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;

/// Where the client's certificate, key and the cluster CA are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// This client's certificate (PEM), signed by the cluster CA.
    pub cert: PathBuf,
    /// This client's private key (PEM).
    pub key: PathBuf,
}

/// How a client finds and talks to the cluster.
///
/// ```toml
/// endpoints = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]
/// request_timeout = "5s"
/// [tls]
/// ca = "certs/ca.pem"
/// cert = "certs/client-dev-client.pem"
/// key = "certs/client-dev-client.key"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Nodes as `host:port`; the host is also the TLS server name, so it
    /// must appear in the node's certificate.
    pub endpoints: Vec<String>,
    /// Certificate files.
    pub tls: TlsFiles,
    /// How long one call may take in total, across retries and failover.
    #[serde(default = "default_request_timeout", with = "crate::humantime_serde")]
    pub request_timeout: Duration,
    /// How long to wait for one node to accept a connection.
    #[serde(default = "default_connect_timeout", with = "crate::humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a node may send nothing at all before the client gives up
    /// on it and fails over to another; the client pings at a fifth of
    /// this, so a live node always has something to answer. This bounds
    /// how long a call waits on a crashed node.
    #[serde(default = "default_dead_node_timeout", with = "crate::humantime_serde")]
    pub dead_node_timeout: Duration,
    /// TTL of the client's session: how long after its last answered
    /// keepalive the cluster may give its locks away.
    #[serde(default = "default_session_ttl", with = "crate::humantime_serde")]
    pub session_ttl: Duration,
    /// The clock drift bound ρ in parts per million; must match (or exceed)
    /// the cluster's.
    #[serde(default = "default_drift_ppm")]
    pub max_clock_drift_ppm: u32,
    /// How often the client asks the cluster for its members, and tries
    /// their addresses as well as `endpoints` from then on: a client whose
    /// configured nodes were all replaced keeps working. `"0s"`: never.
    #[serde(
        default = "default_member_sync_interval",
        with = "crate::humantime_serde"
    )]
    pub member_sync_interval: Duration,
}

/// The default [`Config::member_sync_interval`].
pub const DEFAULT_MEMBER_SYNC_INTERVAL: Duration = Duration::from_secs(10);

fn default_member_sync_interval() -> Duration {
    DEFAULT_MEMBER_SYNC_INTERVAL
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(10)
}

/// 2%: generous for NTP-disciplined clocks, and the cluster's default.
pub const DEFAULT_DRIFT_PPM: u32 = 20_000;

fn default_drift_ppm() -> u32 {
    DEFAULT_DRIFT_PPM
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Default of [`Config::dead_node_timeout`]: short enough that a crashed
/// leader costs about as much as the cluster's own election (140–280 ms by
/// default), long enough that a loaded node's keepalive answers arrive.
pub const DEFAULT_DEAD_NODE_TIMEOUT: Duration = Duration::from_millis(250);

/// Bounds of [`Config::dead_node_timeout`].
pub const DEAD_NODE_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(50)..=Duration::from_secs(60);

fn default_dead_node_timeout() -> Duration {
    DEFAULT_DEAD_NODE_TIMEOUT
}

impl Config {
    /// Reads `path`; relative certificate paths are resolved against the
    /// file's directory.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut config: Config =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.tls.ca,
            &mut config.tls.cert,
            &mut config.tls.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the values; called by `from_file` and by `Client::connect`.
    pub fn validate(&self) -> Result<(), Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Config(
                "key `endpoints`: list at least one node".into(),
            ));
        }
        for e in &self.endpoints {
            if split_host_port(e).is_none() {
                return Err(Error::Config(format!(
                    "key `endpoints`: {e:?} is not host:port"
                )));
            }
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::Config("timeouts must be more than zero".into()));
        }
        if !DEAD_NODE_TIMEOUT_RANGE.contains(&self.dead_node_timeout) {
            return Err(Error::Config(
                "key `dead_node_timeout`: must be between 50ms and 60s".into(),
            ));
        }
        if self.session_ttl < Duration::from_millis(500) {
            return Err(Error::Config(
                "key `session_ttl`: must be at least 500ms".into(),
            ));
        }
        if self.max_clock_drift_ppm >= 500_000 {
            return Err(Error::Config(
                "key `max_clock_drift_ppm`: must be below 500000 (50%)".into(),
            ));
        }
        Ok(())
    }
}

/// Splits `host:port` (or `[v6]:port`) into the host and the port; `None`
/// if it is not of that form (no port, a port that is not a number, no
/// host).
pub fn split_host_port(endpoint: &str) -> Option<(&str, u16)> {
    let (host, port) = endpoint.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_without_a_port_are_refused() {
        let config = Config {
            endpoints: vec!["localhost".into()],
            tls: TlsFiles {
                ca: "a".into(),
                cert: "b".into(),
                key: "c".into(),
            },
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            dead_node_timeout: DEFAULT_DEAD_NODE_TIMEOUT,
            session_ttl: Duration::from_secs(10),
            max_clock_drift_ppm: DEFAULT_DRIFT_PPM,
            member_sync_interval: DEFAULT_MEMBER_SYNC_INTERVAL,
        };
        assert!(matches!(config.validate(), Err(Error::Config(m)) if m.contains("endpoints")));
    }

    #[test]
    fn a_dead_node_timeout_outside_its_range_names_the_key() {
        let text = "endpoints = [\"127.0.0.1:7101\"]\ndead_node_timeout = \"10ms\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        let config: Config = toml::from_str(text).unwrap();
        assert_eq!(config.dead_node_timeout, Duration::from_millis(10));
        assert!(
            matches!(config.validate(), Err(Error::Config(m)) if m.contains("dead_node_timeout"))
        );
        let fine: Config = toml::from_str(&text.replace("10ms", "2s")).unwrap();
        assert!(fine.validate().is_ok());
    }

    #[test]
    fn host_and_port_split() {
        assert_eq!(split_host_port("127.0.0.1:7101"), Some(("127.0.0.1", 7101)));
        assert_eq!(split_host_port("[::1]:7101"), Some(("::1", 7101)));
        assert_eq!(split_host_port("node:x"), None);
    }
}
