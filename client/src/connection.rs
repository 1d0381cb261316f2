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
use crate::wire::{read_frame, write_frame, FrameError};

const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long a node whose connection just failed is passed over when
/// choosing where to connect, and redirects naming it are not followed.
/// Without it, a client that lost the leader would go straight back to it
/// (round robin, or the survivors' stale "node N leads" before they have
/// elected a successor) and wait a whole timeout on a dead node again.
const SUSPECT_FOR: Duration = Duration::from_secs(1);

/// One logical connection to the cluster that survives node failures.
#[derive(Debug)]
pub(crate) struct Connector {
    endpoint: quinn::Endpoint,
    tls: quinn::ClientConfig,
    /// The endpoints the client was configured with: always tried.
    configured: Vec<String>,
    connect_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    current: Option<(String, quinn::Connection)>,
    /// The configured endpoints, then the members' addresses learned from
    /// the cluster that are not among them (see `learn_members`).
    endpoints: Vec<String>,
    /// Index into `endpoints` of the next node to try.
    next: usize,
    /// A node that told us it leads, or that a redirect named.
    leader_hint: Option<String>,
    /// Nodes whose connection failed recently, with when it failed.
    suspects: Vec<(String, Instant)>,
    jitter: u64,
}

impl State {
    fn is_suspect(&self, addr: &str) -> bool {
        self.suspects
            .iter()
            .any(|(a, since)| a == addr && since.elapsed() < SUSPECT_FOR)
    }

    fn suspect(&mut self, addr: String) {
        self.suspects
            .retain(|(a, since)| *a != addr && since.elapsed() < SUSPECT_FOR);
        self.suspects.push((addr, Instant::now()));
    }
}

/// Why one attempt failed.
enum Attempt {
    /// Try again (possibly elsewhere) after a backoff.
    Retry(String),
    /// Retrying cannot help.
    Fatal(Error),
}

/// What one attempt of a retried exchange came to.
enum Outcome<T> {
    /// The exchange is over.
    Done(T),
    /// A redirect named the leader: try there at once, without a backoff.
    Redirected(String),
    /// The attempt failed.
    Failed(Attempt),
}

impl Connector {
    pub(crate) fn new(
        mut tls: quinn::ClientConfig,
        endpoints: Vec<String>,
        connect_timeout: Duration,
        dead_node_timeout: Duration,
    ) -> Result<Self, Error> {
        tls.transport_config(std::sync::Arc::new(transport_config(dead_node_timeout)));
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
                endpoints: endpoints.clone(),
                ..State::default()
            }),
            configured: endpoints,
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
        self.retrying(timeout, |deadline| async move {
            let response = match self.attempt(request, deadline).await {
                Ok(response) => response,
                Err(failed) => return Outcome::Failed(failed),
            };
            match response.error.as_ref() {
                Some(err) if err.code == i32::from(ErrorCode::NotLeader) => {
                    let why = format!("redirected: {}", err.message);
                    let hint = (!err.leader_addr.is_empty()).then(|| err.leader_addr.clone());
                    let follow_now = hint.is_some();
                    self.forget_current(hint).await;
                    if follow_now {
                        Outcome::Redirected(why)
                    } else {
                        Outcome::Failed(Attempt::Retry(why))
                    }
                }
                Some(err) if err.retryable => {
                    Outcome::Failed(Attempt::Retry(format!("retryable error: {}", err.message)))
                }
                _ => Outcome::Done(response),
            }
        })
        .await
    }

    /// Opens a stream for a long-lived exchange (watch): sends `request`
    /// and returns the stream to read the answers from.
    pub(crate) async fn open(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<quinn::RecvStream, Error> {
        let opened = self.retrying(timeout, |deadline| async move {
            let (addr, conn) = match self.connection(deadline).await {
                Ok(current) => current,
                Err(failed) => return Outcome::Failed(failed),
            };
            match send_request(&conn, request).await {
                Ok(recv) => Outcome::Done(recv),
                Err(failed) => {
                    self.give_up_on(addr, &conn).await;
                    Outcome::Failed(failed)
                }
            }
        });
        Ok(opened.await?.0)
    }

    /// Runs `attempt` until it is done or fails for good, or `timeout`
    /// passes, pausing with capped, jittered exponential backoff between
    /// failed attempts. Returns the result and the attempts it took.
    async fn retrying<T, F, Fut>(
        &self,
        timeout: Duration,
        mut attempt: F,
    ) -> Result<(T, u32), Error>
    where
        F: FnMut(Instant) -> Fut,
        Fut: std::future::Future<Output = Outcome<T>>,
    {
        let deadline = deadline_in(timeout);
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        let mut last = String::from("no attempt made");
        while Instant::now() < deadline {
            attempts += 1;
            match attempt(deadline).await {
                Outcome::Done(value) => return Ok((value, attempts)),
                Outcome::Redirected(why) => {
                    last = why;
                    continue;
                }
                Outcome::Failed(Attempt::Fatal(e)) => return Err(e),
                Outcome::Failed(Attempt::Retry(why)) => {
                    debug!("attempt {attempts} failed: {why}");
                    last = why;
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
            let mut recv = send_request(&conn, request).await?;
            match read_frame::<Response, _>(&mut recv).await {
                Ok(Some(response)) => Ok(response),
                Ok(None) => Err(classify(
                    &conn,
                    format!("{addr} closed the stream without answering"),
                )),
                Err(e) if refused_as_too_large(&e) => Err(too_large(request)),
                Err(e) => Err(classify(&conn, format!("{addr}: {e}"))),
            }
        };
        let result = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Attempt::Retry(format!("{addr} did not answer in time"))),
        };
        let shutting_down = |r: &Response| {
            r.error
                .as_ref()
                .is_some_and(|e| e.code == i32::from(ErrorCode::ShuttingDown))
        };
        match &result {
            Err(Attempt::Retry(_)) => self.give_up_on(addr, &conn).await,
            Ok(response) if shutting_down(response) => self.give_up_on(addr, &conn).await,
            _ => {}
        }
        result
    }

    /// The current connection, or a new one to the next candidate node.
    async fn connection(&self, deadline: Instant) -> Result<(String, quinn::Connection), Attempt> {
        let mut state = self.state.lock().await;
        if let Some((addr, conn)) = &state.current {
            match conn.close_reason() {
                None => return Ok((addr.clone(), conn.clone())),
                // It went silent while no call was waiting on it (pings
                // are sent all the time): as much a failure as a call's.
                Some(quinn::ConnectionError::TimedOut) => {
                    let addr = addr.clone();
                    state.suspect(addr);
                }
                Some(_) => {}
            }
        }
        let target = self.pick_target(&mut state)?;
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
        let limit = deadline_in(self.connect_timeout).min(deadline);
        let conn = match tokio::time::timeout_at(limit, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                state.suspect(target.clone());
                return Err(classify_error(&target, &e));
            }
            Err(_) => {
                state.suspect(target.clone());
                return Err(Attempt::Retry(format!("{target} did not accept in time")));
            }
        };
        state.current = Some((target.clone(), conn.clone()));
        Ok((target, conn))
    }

    /// Where to connect next: the leader hint unless that node just
    /// failed, else the next node in round-robin order.
    fn pick_target(&self, state: &mut State) -> Result<String, Attempt> {
        match state.leader_hint.take() {
            Some(hint) if !state.is_suspect(&hint) => Ok(hint),
            _ => self.next_endpoint(state),
        }
    }

    /// The next node in round-robin order, passing over suspects unless
    /// every node is one.
    fn next_endpoint(&self, state: &mut State) -> Result<String, Attempt> {
        let n = state.endpoints.len();
        if n == 0 {
            return Err(Attempt::Fatal(Error::Config("no endpoints".into())));
        }
        let start = state.next;
        for k in 0..n {
            let candidate = &state.endpoints[start.wrapping_add(k) % n];
            if !state.is_suspect(candidate) {
                state.next = start.wrapping_add(k + 1);
                return Ok(candidate.clone());
            }
        }
        state.next = start.wrapping_add(1);
        Ok(state.endpoints[start % n].clone())
    }

    /// The cluster's members listen at `members` (`host:port`): from now
    /// on the client tries them first, then its configured endpoints that
    /// are not among them, so a client whose configured nodes were all
    /// replaced keeps working, and fails over to a live member before it
    /// waits on a removed one. A learned address that is no longer a
    /// member's is dropped; configured ones never are (they may be names a
    /// load balancer or DNS serves).
    pub(crate) async fn learn_members(&self, members: Vec<String>) {
        let mut endpoints = Vec::with_capacity(members.len() + self.configured.len());
        for addr in members.into_iter().chain(self.configured.iter().cloned()) {
            if !endpoints.contains(&addr) {
                endpoints.push(addr);
            }
        }
        let mut state = self.state.lock().await;
        state.endpoints = endpoints;
    }

    /// The endpoints the client tries now.
    #[cfg(test)]
    async fn endpoints(&self) -> Vec<String> {
        self.state.lock().await.endpoints.clone()
    }

    /// A node failed (silent, unreachable, shutting down): close the
    /// connection to it and pass it over for a while. Only that connection:
    /// another call may already have moved on to a healthy node.
    async fn give_up_on(&self, addr: String, conn: &quinn::Connection) {
        conn.close(0u32.into(), b"switching node");
        let mut state = self.state.lock().await;
        if state
            .current
            .as_ref()
            .is_some_and(|(_, c)| c.stable_id() == conn.stable_id())
        {
            state.current = None;
        }
        state.suspect(addr);
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
/// dead node must fail over in about an election's time, not after QUIC's
/// default 30 s idle timeout. Five pings per timeout: one lost or late
/// answer never kills a live connection.
fn transport_config(dead_node_timeout: Duration) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(dead_node_timeout / 5));
    if let Ok(idle) = quinn::IdleTimeout::try_from(dead_node_timeout) {
        transport.max_idle_timeout(Some(idle));
    }
    transport
}

/// Opens a stream on `conn` and sends `request` on it; the answer (or a
/// watch's events) arrives on the returned half.
async fn send_request(
    conn: &quinn::Connection,
    request: &Request,
) -> Result<quinn::RecvStream, Attempt> {
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| classify(conn, e.to_string()))?;
    write_frame(&mut send, request).await.map_err(|e| {
        if refused_as_too_large(&e) {
            too_large(request)
        } else {
            classify(conn, e.to_string())
        }
    })?;
    let _ = send.finish();
    Ok(recv)
}

/// A failure on an established connection: if the node closed it because
/// of our TLS credentials, no node will accept them, so it is fatal.
/// Whether the node stopped or reset the stream because the request's
/// frame is larger than any it accepts (it refuses by the length prefix,
/// unread): sending the same request again cannot succeed.
fn refused_as_too_large(err: &FrameError) -> bool {
    let FrameError::Io(io) = err else {
        return false;
    };
    let too_large = quinn::VarInt::from_u32(crate::wire::codes::FRAME_TOO_LARGE);
    let Some(inner) = io.get_ref() else {
        return false;
    };
    match (
        inner.downcast_ref::<quinn::ReadError>(),
        inner.downcast_ref::<quinn::WriteError>(),
    ) {
        (Some(quinn::ReadError::Reset(code)), _) | (_, Some(quinn::WriteError::Stopped(code))) => {
            *code == too_large
        }
        _ => false,
    }
}

/// The failure of a request the node refused as too large.
fn too_large(request: &Request) -> Attempt {
    Attempt::Fatal(Error::Server {
        code: ErrorCode::ValueTooLarge,
        message: format!(
            "the node refused this {}-byte request as larger than any it accepts: a value over \
             the cluster's max_value_bytes (64 KiB by default)?",
            prost::Message::encoded_len(request)
        ),
        retryable: false,
    })
}

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

/// `timeout` from now; a timeout too large for the clock (a caller's
/// `Duration::MAX` for "no limit") means a century, not a panic.
fn deadline_in(timeout: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout.min(CENTURY))
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (found in review): `LockBuilder::timeout(Duration::MAX)`
    /// ("wait for ever") panicked adding the timeout to the clock.
    #[test]
    fn a_timeout_too_large_for_the_clock_is_far_away_not_a_panic() {
        let year = Duration::from_secs(365 * 24 * 3600);
        assert!(deadline_in(Duration::MAX) > Instant::now() + year);
        let soon = deadline_in(Duration::from_millis(5));
        assert!(soon <= Instant::now() + Duration::from_millis(5));
    }

    fn connector(endpoints: &[&str]) -> Connector {
        // Never used to connect: these tests only exercise node choice.
        let rustls_config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            crate::tls::provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let tls =
            crate::tls::quic_client_config(rustls_config, &[crate::wire::CLIENT_ALPN_V1]).unwrap();
        Connector::new(
            tls,
            endpoints.iter().map(|e| e.to_string()).collect(),
            Duration::from_secs(1),
            Duration::from_millis(250),
        )
        .unwrap()
    }

    fn picks(c: &Connector, state: &mut State, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| match c.pick_target(state) {
                Ok(target) => target,
                Err(_) => panic!("no target"),
            })
            .collect()
    }

    #[tokio::test]
    async fn members_learned_from_the_cluster_join_the_configured_endpoints() {
        let c = connector(&["a:1", "b:1"]);
        c.learn_members(vec!["b:1".into(), "d:1".into()]).await;
        assert_eq!(c.endpoints().await, ["b:1", "d:1", "a:1"]);
        // A learned address that is no longer a member's goes; configured
        // ones stay, after the members.
        c.learn_members(vec!["e:1".into()]).await;
        assert_eq!(c.endpoints().await, ["e:1", "a:1", "b:1"]);
        let mut state = State {
            jitter: 1,
            endpoints: c.endpoints().await,
            ..State::default()
        };
        assert_eq!(picks(&c, &mut state, 3), ["e:1", "a:1", "b:1"]);
    }

    #[tokio::test]
    async fn a_node_that_just_failed_is_passed_over_and_its_redirects_ignored() {
        let c = connector(&["a:1", "b:1", "c:1"]);
        let mut state = State {
            jitter: 1,
            endpoints: c.configured.clone(),
            ..State::default()
        };
        assert_eq!(picks(&c, &mut state, 3), ["a:1", "b:1", "c:1"]);
        state.suspect("b:1".into());
        assert_eq!(picks(&c, &mut state, 4), ["a:1", "c:1", "a:1", "c:1"]);
        // A survivor's stale "b leads" must not send us back to b...
        state.leader_hint = Some("b:1".into());
        assert_eq!(picks(&c, &mut state, 1), ["a:1"]);
        // ...but a hint naming a healthy node is followed at once.
        state.leader_hint = Some("c:1".into());
        assert_eq!(picks(&c, &mut state, 1), ["c:1"]);
    }

    #[tokio::test]
    async fn when_every_node_failed_recently_the_round_robin_goes_on() {
        let c = connector(&["a:1", "b:1"]);
        let mut state = State {
            endpoints: c.configured.clone(),
            ..State::default()
        };
        state.suspect("a:1".into());
        state.suspect("b:1".into());
        assert_eq!(picks(&c, &mut state, 3), ["a:1", "b:1", "a:1"]);
    }

    #[tokio::test]
    async fn suspicion_ends_after_a_while() {
        let c = connector(&["a:1", "b:1"]);
        let mut state = State {
            endpoints: c.configured.clone(),
            ..State::default()
        };
        state
            .suspects
            .push(("a:1".into(), Instant::now() - SUSPECT_FOR));
        assert_eq!(picks(&c, &mut state, 2), ["a:1", "b:1"]);
    }
}
