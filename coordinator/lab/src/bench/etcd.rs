//! etcd through its v3 JSON gateway (`/v3/lease/*`, `/v3/lock/*`,
//! `/v3/election/*`, `/v3/kv/*`, `/v3/watch`, `/v3/maintenance/status`):
//! the same gRPC services etcd's concurrency package uses (one lease per
//! client, reused; v3lock Lock/Unlock; v3election Campaign/Resign/Observe;
//! the `recipes` package's RWMutex on keys, ranges and watches), over plain
//! HTTP/1.1 keep-alive so no protoc or gRPC stack is needed.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection that fails over between members.
pub struct Http {
    endpoints: Vec<String>,
    current: usize,
    stream: Option<BufReader<TcpStream>>,
    /// A request was written and its response not yet read in full: the
    /// caller dropped the call (a timeout), so the connection is out of
    /// step and a later request would read the old response.
    in_flight: bool,
}

impl Http {
    /// A connection that starts at member `start`.
    pub fn new(endpoints: Vec<String>, start: usize) -> Http {
        let current = start % endpoints.len().max(1);
        Http {
            endpoints,
            current,
            stream: None,
            in_flight: false,
        }
    }

    /// POSTs `body` to `path` and returns the response body; on a
    /// connection failure moves to the next member (once per member).
    pub async fn post(
        &mut self,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let mut last = anyhow!("no endpoints");
        for _ in 0..self.endpoints.len() {
            match tokio::time::timeout(timeout, self.post_once(path, body)).await {
                Ok(Ok((200, text))) => return Ok(text),
                Ok(Ok((status, text))) => {
                    // An answered error (e.g. no leader): the connection is fine.
                    bail!("etcd {path}: HTTP {status}: {}", text.trim());
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = anyhow!("etcd {path}: timed out after {timeout:?}"),
            }
            self.stream = None;
            self.current = (self.current + 1) % self.endpoints.len();
        }
        Err(last)
    }

    async fn post_once(&mut self, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        let host = &self.endpoints[self.current];
        if self.in_flight {
            self.stream = None;
        }
        if self.stream.is_none() {
            self.stream = Some(connect(host).await?);
        }
        let Some(stream) = self.stream.as_mut() else {
            bail!("no stream");
        };
        self.in_flight = true;
        write_request(stream, host, path, body).await?;
        let response = read_response(stream).await?;
        self.in_flight = false;
        Ok(response)
    }
}

async fn connect(host: &str) -> anyhow::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to etcd {host}"))?;
    s.set_nodelay(true)?;
    Ok(BufReader::new(s))
}

async fn write_request(
    stream: &mut BufReader<TcpStream>,
    host: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<()> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.get_mut().write_all(request.as_bytes()).await?;
    Ok(())
}

/// Status line and headers of a response.
struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
}

async fn read_head(stream: &mut BufReader<TcpStream>) -> anyhow::Result<Head> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        bail!("connection closed");
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            bail!("connection closed in headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    Ok(Head {
        status,
        length,
        chunked,
    })
}

/// Reads one chunk of a chunked body and appends it to `body`; `false` at
/// the last (empty) chunk.
async fn read_chunk(stream: &mut BufReader<TcpStream>, body: &mut Vec<u8>) -> anyhow::Result<bool> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        bail!("connection closed in a chunked body");
    }
    // Chunk extensions (`;name=value`) are allowed after the size.
    let size_text = line.split(';').next().unwrap_or("").trim();
    let size = usize::from_str_radix(size_text, 16)
        .with_context(|| format!("bad chunk size line {line:?}"))?;
    if size == 0 {
        // No trailers from the gateway: just the final CRLF.
        line.clear();
        stream.read_line(&mut line).await?;
        return Ok(false);
    }
    let start = body.len();
    body.resize(start + size, 0);
    stream.read_exact(&mut body[start..]).await?;
    line.clear();
    stream.read_line(&mut line).await?;
    Ok(true)
}

async fn read_response(stream: &mut BufReader<TcpStream>) -> anyhow::Result<(u16, String)> {
    let head = read_head(stream).await?;
    let mut body = Vec::new();
    if head.chunked {
        while read_chunk(stream, &mut body).await? {}
    } else if let Some(n) = head.length {
        body.resize(n, 0);
        stream.read_exact(&mut body).await?;
    } else {
        stream.read_to_end(&mut body).await?;
    }
    Ok((head.status, String::from_utf8_lossy(&body).into_owned()))
}

/// The string value of `"field":"..."` in a flat JSON text.
pub fn json_str(text: &str, field: &str) -> Option<String> {
    let pat = format!("\"{field}\":\"");
    let start = text.find(&pat)? + pat.len();
    let end = text[start..].find('"')? + start;
    Some(text[start..end].to_string())
}

/// The text of the flat object `"field":{...}` (no nested objects), braces
/// included.
pub fn json_object<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    let pat = format!("\"{field}\":{{");
    let start = text.find(&pat)? + pat.len() - 1;
    let end = text[start..].find('}')? + start + 1;
    Some(&text[start..end])
}

/// Standard base64 (the gateway's encoding of `bytes` fields).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One etcd benchmark client: one connection, one lease kept alive.
pub struct EtcdConn {
    http: Http,
    lease: String,
    keepalive: tokio::task::JoinHandle<()>,
    /// Tells this client's RWMutex keys apart.
    keys_made: u64,
}

/// The end of the key range of every key starting with `prefix` (etcd's
/// `clientv3.GetPrefixRangeEnd`).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdConn {
    /// Grants a lease with `ttl` and starts its keep-alive.
    pub async fn connect(
        endpoints: Vec<String>,
        index: usize,
        ttl: Duration,
    ) -> anyhow::Result<EtcdConn> {
        let mut http = Http::new(endpoints.clone(), index);
        let body = format!("{{\"TTL\":{}}}", ttl.as_secs().max(2));
        let text = http
            .post("/v3/lease/grant", &body, Duration::from_secs(10))
            .await?;
        let lease = json_str(&text, "ID").ok_or_else(|| anyhow!("lease grant: {text}"))?;
        let period = (ttl / 3).max(Duration::from_millis(500));
        let ka_lease = lease.clone();
        let keepalive = tokio::spawn(async move {
            let mut ka = Http::new(endpoints, index + 1);
            let body = format!("{{\"ID\":\"{ka_lease}\"}}");
            loop {
                tokio::time::sleep(period).await;
                // One request per keep-alive stream; the gateway ends the
                // stream when the request body ends.
                let mut fresh = Http::new(ka.endpoints.clone(), ka.current);
                if fresh
                    .post("/v3/lease/keepalive", &body, Duration::from_secs(2))
                    .await
                    .is_err()
                {
                    ka.current = (ka.current + 1) % ka.endpoints.len();
                }
            }
        });
        Ok(EtcdConn {
            http,
            lease,
            keepalive,
            keys_made: 0,
        })
    }

    /// etcd's RWMutex recipe (`client/v3/experimental/recipes/rwmutex.go`)
    /// on lock `name`: puts a key of our lease under `name/read/` or
    /// `name/write/`, then, until none is left, finds the newest key
    /// created before ours that excludes us (a writer's, for a reader; any,
    /// for a writer) and waits for its deletion. Returns our key (base64),
    /// which `delete` releases; on a timeout deletes it.
    pub async fn rw_lock(
        &mut self,
        name: &str,
        write: bool,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        self.keys_made += 1;
        let prefix = format!("rwmutex/{name}/");
        let mode = if write { "write" } else { "read" };
        let key = base64(format!("{prefix}{mode}/{}-{}", self.lease, self.keys_made).as_bytes());
        let put = format!(
            "{{\"key\":\"{key}\",\"value\":\"\",\"lease\":\"{}\"}}",
            self.lease
        );
        let text = self.http.post("/v3/kv/put", &put, left()).await?;
        let created: u64 = json_object(&text, "header")
            .and_then(|h| json_str(h, "revision"))
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| anyhow!("put: no revision in {text}"))?;
        let excluders = if write {
            prefix.clone()
        } else {
            format!("{prefix}write/")
        };
        let waited = self.wait_for_older(&excluders, created, deadline).await;
        match waited {
            Ok(()) => Ok(key),
            Err(e) => {
                let _ = self.delete(&key).await;
                Err(e)
            }
        }
    }

    /// Waits until no key under `prefix` created before revision `created`
    /// is left (the recipe's `waitOnLastRev`, in a loop).
    async fn wait_for_older(
        &mut self,
        prefix: &str,
        created: u64,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<()> {
        let range = format!(
            "{{\"key\":\"{}\",\"range_end\":\"{}\",\"limit\":1,\"sort_order\":\"DESCEND\",\
             \"sort_target\":\"CREATE\",\"max_create_revision\":\"{}\"}}",
            base64(prefix.as_bytes()),
            base64(&prefix_end(prefix)),
            created - 1
        );
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let text = self.http.post("/v3/kv/range", &range, left).await?;
            if !text.contains("\"kvs\"") {
                return Ok(());
            }
            let older = json_str(&text, "key").ok_or_else(|| anyhow!("range: {text}"))?;
            let seen: u64 = json_object(&text, "header")
                .and_then(|h| json_str(h, "revision"))
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| anyhow!("range: no revision in {text}"))?;
            // From just after the range, so a delete in between is seen.
            let watch = format!(
                "{{\"create_request\":{{\"key\":\"{older}\",\"start_revision\":\"{}\"}}}}",
                seen + 1
            );
            let member = self.http.endpoints[self.http.current].clone();
            let wait = async {
                let mut stream = LineStream::open(&member, "/v3/watch", &watch).await?;
                loop {
                    let line = stream.next_line("watch").await?;
                    if line.contains("\"type\":\"DELETE\"") {
                        return anyhow::Ok(());
                    }
                }
            };
            tokio::time::timeout(left, wait)
                .await
                .map_err(|_| anyhow!("rwmutex: not acquired within the timeout"))??;
        }
    }

    /// Deletes `key` (base64): releases an RWMutex.
    pub async fn delete(&mut self, key: &str) -> anyhow::Result<()> {
        let body = format!("{{\"key\":\"{key}\"}}");
        self.http
            .post("/v3/kv/deleterange", &body, Duration::from_secs(10))
            .await
            .map(|_| ())
    }

    /// v3lock Lock on our lease; returns the owner key.
    pub async fn lock(&mut self, name: &str, timeout: Duration) -> anyhow::Result<String> {
        let body = format!(
            "{{\"name\":\"{}\",\"lease\":\"{}\"}}",
            base64(name.as_bytes()),
            self.lease
        );
        let text = self.http.post("/v3/lock/lock", &body, timeout).await?;
        json_str(&text, "key").ok_or_else(|| anyhow!("lock: {text}"))
    }

    /// v3lock Unlock of `key`.
    pub async fn unlock(&mut self, key: &str) -> anyhow::Result<()> {
        let body = format!("{{\"key\":\"{key}\"}}");
        self.http
            .post("/v3/lock/unlock", &body, Duration::from_secs(10))
            .await
            .map(|_| ())
    }

    /// v3election Campaign on our lease: returns once elected. A
    /// candidate that resigned campaigns again with a new key, so the key's
    /// create revision (`rev`) grows with every new leader, like a term.
    pub async fn campaign(
        &mut self,
        name: &str,
        value: &str,
        timeout: Duration,
    ) -> anyhow::Result<LeaderKey> {
        let body = format!(
            "{{\"name\":\"{}\",\"lease\":\"{}\",\"value\":\"{}\"}}",
            base64(name.as_bytes()),
            self.lease,
            base64(value.as_bytes())
        );
        let text = self
            .http
            .post("/v3/election/campaign", &body, timeout)
            .await?;
        let leader = json_object(&text, "leader").ok_or_else(|| anyhow!("campaign: {text}"))?;
        let rev = json_str(leader, "rev")
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| anyhow!("campaign: no leader rev in {text}"))?;
        Ok(LeaderKey {
            json: leader.to_string(),
            rev,
        })
    }

    /// v3election Resign of a leadership `campaign` returned.
    pub async fn resign(&mut self, leader: &LeaderKey) -> anyhow::Result<()> {
        let body = format!("{{\"leader\":{}}}", leader.json);
        self.http
            .post("/v3/election/resign", &body, Duration::from_secs(10))
            .await
            .map(|_| ())
    }

    /// Revokes the lease.
    pub async fn close(mut self) {
        self.keepalive.abort();
        let body = format!("{{\"ID\":\"{}\"}}", self.lease);
        let _ = self
            .http
            .post("/v3/lease/revoke", &body, Duration::from_secs(2))
            .await;
    }
}

/// A won election, as Campaign returns it and Resign takes it back.
#[derive(Debug, Clone)]
pub struct LeaderKey {
    /// The gateway's `LeaderKey` object, passed back verbatim to Resign.
    json: String,
    /// Create revision of the leader's key.
    pub rev: u64,
}

/// A streaming gateway call (Observe, Watch): the gateway answers with a
/// chunked body that never ends, one JSON message per line.
struct LineStream {
    stream: BufReader<TcpStream>,
    /// The gateway sends the response head only with the first message
    /// (an Observe's once there is a leader), so it is read by
    /// `next_line`, not `open`.
    head_read: bool,
    /// Body bytes received but not yet returned as a message.
    pending: Vec<u8>,
}

impl LineStream {
    /// Sends the request to member `endpoint`.
    async fn open(endpoint: &str, path: &str, body: &str) -> anyhow::Result<LineStream> {
        let mut stream = connect(endpoint).await?;
        write_request(&mut stream, endpoint, path, body).await?;
        Ok(LineStream {
            stream,
            head_read: false,
            pending: Vec::new(),
        })
    }

    /// The next message (its `{"result":...}` line); an `{"error":...}`
    /// line, an HTTP error or the end of the stream fails, naming `what`.
    async fn next_line(&mut self, what: &str) -> anyhow::Result<String> {
        if !self.head_read {
            let head = read_head(&mut self.stream).await?;
            if head.status != 200 {
                let mut body = Vec::new();
                if head.chunked {
                    let _ = read_chunk(&mut self.stream, &mut body).await;
                }
                bail!(
                    "etcd {what}: HTTP {}: {}",
                    head.status,
                    String::from_utf8_lossy(&body).trim()
                );
            }
            if !head.chunked {
                bail!("etcd {what}: expected a chunked (streaming) response");
            }
            self.head_read = true;
        }
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line).trim().to_string();
                if text.is_empty() {
                    continue;
                }
                // The gateway wraps each message as {"result":...}, and a
                // failure of the stream as {"error":...}.
                if !text.starts_with("{\"result\"") {
                    bail!("etcd {what}: {text}");
                }
                return Ok(text);
            }
            if !read_chunk(&mut self.stream, &mut self.pending).await? {
                bail!("etcd {what}: the stream ended");
            }
        }
    }
}

/// A v3election Observe stream: each message is the current leader's
/// key; etcd sends one when a leader exists and one per new leader (and
/// per Proclaim, which the bench does not use).
pub struct Observer {
    lines: LineStream,
}

impl Observer {
    /// Sends an Observe request for election `name` to member `endpoint`.
    pub async fn open(endpoint: &str, name: &str, timeout: Duration) -> anyhow::Result<Observer> {
        let body = format!("{{\"name\":\"{}\"}}", base64(name.as_bytes()));
        let lines = tokio::time::timeout(
            timeout,
            LineStream::open(endpoint, "/v3/election/observe", &body),
        )
        .await
        .map_err(|_| anyhow!("etcd observe: no connection within {timeout:?}"))??;
        Ok(Observer { lines })
    }

    /// The create revision of the next observed leader key; waits as long
    /// as it takes (the caller bounds it).
    pub async fn next(&mut self) -> anyhow::Result<u64> {
        let text = self.lines.next_line("observe").await?;
        let kv =
            json_object(&text, "kv").ok_or_else(|| anyhow!("etcd observe: no kv in {text}"))?;
        json_str(kv, "create_revision")
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| anyhow!("etcd observe: no create_revision in {text}"))
    }
}

/// `(member_id, leader_id)` as member `endpoint` reports them.
pub async fn member_status(endpoint: &str) -> anyhow::Result<(String, String)> {
    let mut http = Http::new(vec![endpoint.to_string()], 0);
    let text = http
        .post("/v3/maintenance/status", "{}", Duration::from_secs(2))
        .await?;
    let member = json_str(&text, "member_id").ok_or_else(|| anyhow!("status: {text}"))?;
    let leader = json_str(&text, "leader").ok_or_else(|| anyhow!("status: {text}"))?;
    Ok((member, leader))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn json_field() {
        let t = r#"{"header":{"member_id":"12"},"ID":"77","TTL":"10"}"#;
        assert_eq!(json_str(t, "ID").as_deref(), Some("77"));
        assert_eq!(json_str(t, "member_id").as_deref(), Some("12"));
    }

    #[test]
    fn json_flat_object() {
        let t = r#"{"header":{"revision":"9"},"leader":{"name":"ZQ==","key":"ZS8x","rev":"9","lease":"5"}}"#;
        let leader = json_object(t, "leader");
        assert_eq!(
            leader,
            Some(r#"{"name":"ZQ==","key":"ZS8x","rev":"9","lease":"5"}"#)
        );
        assert_eq!(
            leader.and_then(|l| json_str(l, "rev")).as_deref(),
            Some("9")
        );
        assert_eq!(json_object(t, "kv"), None);
    }
}
