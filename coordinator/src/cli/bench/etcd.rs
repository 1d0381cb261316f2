//! etcd through its v3 JSON gateway (`/v3/lease/*`, `/v3/lock/*`,
//! `/v3/maintenance/status`): the same gRPC services etcd's concurrency
//! package uses (one lease per client, reused; v3lock Lock/Unlock), over
//! plain HTTP/1.1 keep-alive so no protoc or gRPC stack is needed.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection that fails over between members.
pub struct Http {
    endpoints: Vec<String>,
    current: usize,
    stream: Option<BufReader<TcpStream>>,
}

impl Http {
    /// A connection that starts at member `start`.
    pub fn new(endpoints: Vec<String>, start: usize) -> Http {
        let current = start % endpoints.len().max(1);
        Http {
            endpoints,
            current,
            stream: None,
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
        if self.stream.is_none() {
            let s = TcpStream::connect(host.as_str())
                .await
                .with_context(|| format!("connecting to etcd {host}"))?;
            s.set_nodelay(true)?;
            self.stream = Some(BufReader::new(s));
        }
        let Some(stream) = self.stream.as_mut() else {
            bail!("no stream");
        };
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.get_mut().write_all(request.as_bytes()).await?;
        read_response(stream).await
    }
}

async fn read_response(stream: &mut BufReader<TcpStream>) -> anyhow::Result<(u16, String)> {
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
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            stream.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if size == 0 {
                line.clear();
                stream.read_line(&mut line).await?;
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            stream.read_exact(&mut body[start..]).await?;
            line.clear();
            stream.read_line(&mut line).await?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        stream.read_exact(&mut body).await?;
    } else {
        stream.read_to_end(&mut body).await?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The string value of `"field":"..."` in a flat JSON text.
pub fn json_str(text: &str, field: &str) -> Option<String> {
    let pat = format!("\"{field}\":\"");
    let start = text.find(&pat)? + pat.len();
    let end = text[start..].find('"')? + start;
    Some(text[start..end].to_string())
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
        })
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
}
