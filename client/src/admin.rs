//! Session-less calls to one particular node, for operators' tools
//! (`paxlock status`): no redirects, no failover, no session.

use std::time::Duration;

use crate::config::split_host_port;
use crate::error::Error;
use crate::proto::{self, request::Op, response, Request, Response};
use crate::tls::TlsMaterial;
use crate::wire::{read_frame, write_frame, CLIENT_ALPN_V1};

/// Asks the node at `endpoint` (`host:port`) for its own view of the
/// cluster, within `timeout`.
pub async fn node_status(
    tls: &TlsMaterial,
    endpoint: &str,
    timeout: Duration,
) -> Result<proto::StatusOk, Error> {
    let (host, port) = split_host_port(endpoint)
        .ok_or_else(|| Error::Config(format!("{endpoint:?} is not host:port")))?;
    let exchange = async {
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Error::Config(format!("cannot resolve {endpoint}: {e}")))?
            .next()
            .ok_or_else(|| Error::Config(format!("{endpoint} resolves to nothing")))?;
        let bind = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        let endpoint_socket = quinn::Endpoint::client(bind)
            .map_err(|e| Error::Config(format!("cannot open a UDP socket: {e}")))?;
        let conn = endpoint_socket
            .connect_with(tls.client_config(&[CLIENT_ALPN_V1])?, addr, host)
            .map_err(|e| Error::Rejected {
                addr: endpoint.to_string(),
                reason: e.to_string(),
            })?
            .await
            .map_err(|e| Error::Rejected {
                addr: endpoint.to_string(),
                reason: e.to_string(),
            })?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let request = Request {
            request_id: 1,
            session_id: 0,
            ack_below: 0,
            waiting: Vec::new(),
            op: Some(Op::Status(proto::Status {})),
        };
        write_frame(&mut send, &request)
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let _ = send.finish();
        let response: Option<Response> = read_frame(&mut recv)
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        conn.close(0u32.into(), b"done");
        match response.and_then(|r| r.result) {
            Some(response::Result::Status(status)) => Ok(status),
            other => Err(Error::Protocol(format!(
                "unexpected answer to Status: {other:?}"
            ))),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Error::Timeout(timeout))?
}
