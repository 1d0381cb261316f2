//! Finding a node that answers: connect to any listed node, follow
//! `NOT_LEADER` redirects, fail over on connection loss with capped,
//! jittered exponential backoff.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::debug;

use crate::config::split_host_port;
use crate::error::Error;
use crate::proto::{ErrorCode, Request, Response};
use crate::wire::{read_frame, write_frame};

const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One logical connection to the cluster that survives node failures.
#[derive(Debug)]
pub(crate) struct Connector {
    endpoint: quinn::Endpoint,
    tls: quinn::ClientConfig,
    endpoints: Vec<String>,
    connect_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    current: Option<(String, quinn::Connection)>,
    /// Index into `endpoints` of the next node to try.
    next: usize,
    /// A node that told us it leads, or that a redirect named.
    leader_hint: Option<String>,
    jitter: u64,
}

/// Why one attempt failed.
enum Attempt {
    /// Try again (possibly elsewhere) after a backoff.
    Retry(String),
    /// Retrying cannot help.
    Fatal(Error),
}

impl Connector {
    pub(crate) fn new(
        mut tls: quinn::ClientConfig,
        endpoints: Vec<String>,
        connect_timeout: Duration,
    ) -> Result<Self, Error> {
        tls.transport_config(std::sync::Arc::new(transport_config()));
        let bind = SocketAddr::from(([0, 0, 0, 0], 0));
        let endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| Error::Config(format!("cannot open a UDP socket: {e}")))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Ok(Connector {
            endpoint,
            tls,
            // Start at a random node so clients spread over the cluster.
            state: Mutex::new(State {
                next: (seed % endpoints.len().max(1) as u64) as usize,
                jitter: seed | 1,
                ..State::default()
            }),
            endpoints,
            connect_timeout,
        })
    }

    /// Sends `request` and returns the answer with the number of attempts
    /// it took, retrying on other nodes (with the same request id, so a
    /// retry never applies twice) until `timeout`. A redirect (`NOT_LEADER`
    /// naming a leader) is followed at once.
    pub(crate) async fn call(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<(Response, u32), Error> {
        let deadline = Instant::now() + timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        let mut last = String::from("no attempt made");
        while Instant::now() < deadline {
            attempts += 1;
            match self.attempt(request, deadline).await {
                Ok(response) => match response.error.as_ref() {
                    Some(err) if err.code == i32::from(ErrorCode::NotLeader) => {
                        last = format!("redirected: {}", err.message);
                        let hint = (!err.leader_addr.is_empty()).then(|| err.leader_addr.clone());
                        let follow_now = hint.is_some();
                        self.forget_current(hint).await;
                        if follow_now {
                            continue;
                        }
                    }
                    Some(err) if err.retryable => {
                        last = format!("retryable error: {}", err.message);
                        if err.code == i32::from(ErrorCode::ShuttingDown) {
                            self.forget_current(None).await;
                        }
                    }
                    _ => return Ok((response, attempts)),
                },
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why)) => {
                    debug!("attempt {attempts} failed: {why}");
                    last = why;
                    self.forget_current(None).await;
                }
            }
            let pause = self.jittered(backoff).await;
            tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Err(Error::Unreachable { attempts, last })
    }

    /// Opens a stream for a long-lived exchange (watch): sends `request`
    /// and returns the stream to read the answers from.
    pub(crate) async fn open(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<quinn::RecvStream, Error> {
        let deadline = Instant::now() + timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        let mut last = String::from("no attempt made");
        while Instant::now() < deadline {
            attempts += 1;
            let result = async {
                let (_, conn) = self.connection(deadline).await?;
                let (mut send, recv) = conn
                    .open_bi()
                    .await
                    .map_err(|e| classify(&conn, e.to_string()))?;
                write_frame(&mut send, request)
                    .await
                    .map_err(|e| classify(&conn, e.to_string()))?;
                let _ = send.finish();
                Ok::<_, Attempt>(recv)
            }
            .await;
            match result {
                Ok(recv) => return Ok(recv),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why)) => {
                    last = why;
                    self.forget_current(None).await;
                }
            }
            let pause = self.jittered(backoff).await;
            tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Err(Error::Unreachable { attempts, last })
    }

    async fn attempt(&self, request: &Request, deadline: Instant) -> Result<Response, Attempt> {
        let (addr, conn) = self.connection(deadline).await?;
        let exchange = async {
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| classify(&conn, e.to_string()))?;
            write_frame(&mut send, request)
                .await
                .map_err(|e| classify(&conn, e.to_string()))?;
            let _ = send.finish();
            match read_frame::<Response, _>(&mut recv).await {
                Ok(Some(response)) => Ok(response),
                Ok(None) => Err(classify(
                    &conn,
                    format!("{addr} closed the stream without answering"),
                )),
                Err(e) => Err(classify(&conn, format!("{addr}: {e}"))),
            }
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Attempt::Retry(format!("{addr} did not answer in time"))),
        }
    }

    /// The current connection, or a new one to the next candidate node.
    async fn connection(&self, deadline: Instant) -> Result<(String, quinn::Connection), Attempt> {
        let mut state = self.state.lock().await;
        if let Some((addr, conn)) = &state.current {
            if conn.close_reason().is_none() {
                return Ok((addr.clone(), conn.clone()));
            }
        }
        let target = match state.leader_hint.take() {
            Some(hint) => hint,
            None => {
                let i = state.next % self.endpoints.len().max(1);
                state.next = state.next.wrapping_add(1);
                self.endpoints
                    .get(i)
                    .cloned()
                    .ok_or_else(|| Attempt::Fatal(Error::Config("no endpoints".into())))?
            }
        };
        let (host, port) = split_host_port(&target)
            .ok_or_else(|| Attempt::Retry(format!("bad node address {target:?}")))?;
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Attempt::Retry(format!("cannot resolve {target}: {e}")))?
            .next()
            .ok_or_else(|| Attempt::Retry(format!("{target} resolves to nothing")))?;
        let connecting = self
            .endpoint
            .connect_with(self.tls.clone(), addr, host)
            .map_err(|e| Attempt::Retry(format!("cannot connect to {target}: {e}")))?;
        let limit = (Instant::now() + self.connect_timeout).min(deadline);
        let conn = match tokio::time::timeout_at(limit, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(classify_error(&target, &e)),
            Err(_) => return Err(Attempt::Retry(format!("{target} did not accept in time"))),
        };
        state.current = Some((target.clone(), conn.clone()));
        Ok((target, conn))
    }

    async fn forget_current(&self, leader_hint: Option<String>) {
        let mut state = self.state.lock().await;
        if let Some((_, conn)) = state.current.take() {
            conn.close(0u32.into(), b"switching node");
        }
        if leader_hint.is_some() {
            state.leader_hint = leader_hint;
        }
    }

    async fn jittered(&self, base: Duration) -> Duration {
        let mut state = self.state.lock().await;
        // xorshift64: cheap, and jitter needs no cryptographic quality.
        let mut x = state.jitter;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.jitter = x;
        // Between half and all of `base`, so retries from many clients spread out.
        base / 2 + Duration::from_nanos(x % (base.as_nanos() as u64 / 2 + 1))
    }

    /// Closes the connection.
    pub(crate) fn close(&self) {
        self.endpoint.close(0u32.into(), b"client closed");
    }
}

/// Pings often and gives up on a silent node quickly: a call waiting on a
/// dead node must fail over well within a session TTL, not after QUIC's
/// default 30 s idle timeout.
fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    if let Ok(idle) = quinn::IdleTimeout::try_from(MAX_IDLE) {
        transport.max_idle_timeout(Some(idle));
    }
    transport
}

/// How often an idle connection is pinged.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(250);

/// How long without any packet from the node before the connection is
/// declared dead and the client fails over.
pub const MAX_IDLE: Duration = Duration::from_millis(1500);

/// A failure on an established connection: if the node closed it because
/// of our TLS credentials, no node will accept them, so it is fatal.
fn classify(conn: &quinn::Connection, why: String) -> Attempt {
    match conn.close_reason() {
        Some(reason) => classify_error(&conn.remote_address().to_string(), &reason),
        None => Attempt::Retry(why),
    }
}

fn classify_error(addr: &str, err: &quinn::ConnectionError) -> Attempt {
    let tls_alert = match err {
        quinn::ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            (0x100..0x200).contains(&code)
        }
        quinn::ConnectionError::TransportError(e) => {
            let code = u64::from(e.code);
            (0x100..0x200).contains(&code)
        }
        _ => false,
    };
    if tls_alert {
        Attempt::Fatal(Error::Rejected {
            addr: addr.to_string(),
            reason: err.to_string(),
        })
    } else {
        Attempt::Retry(format!("{addr}: {err}"))
    }
}
