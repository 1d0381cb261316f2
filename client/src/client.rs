//! `Client`: the handle applications hold.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::connection::Connector;
use crate::error::Error;
use crate::proto::{self, request::Op, response, Request};
use crate::tls::TlsMaterial;
use crate::wire::CLIENT_ALPN_V1;

/// A connection to a Paxlock cluster. Cheap to clone; clones share the
/// connection.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connector: Connector,
    request_timeout: Duration,
    next_request_id: AtomicU64,
}

impl Client {
    /// Loads the certificates, connects to one of the configured nodes and
    /// checks that it answers.
    pub async fn connect(config: Config) -> Result<Client, Error> {
        config.validate()?;
        let tls = TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
        Self::connect_with(
            tls,
            config.endpoints,
            config.request_timeout,
            config.connect_timeout,
        )
        .await
    }

    /// Like `connect`, with TLS material already in memory.
    pub async fn connect_with(
        tls: TlsMaterial,
        endpoints: Vec<String>,
        request_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Client, Error> {
        let quic = tls.client_config(CLIENT_ALPN_V1)?;
        let client = Client {
            inner: Arc::new(Inner {
                connector: Connector::new(quic, endpoints, connect_timeout)?,
                request_timeout,
                next_request_id: AtomicU64::new(1),
            }),
        };
        client.hello().await?;
        Ok(client)
    }

    /// Asks a node who it is and who leads.
    pub async fn hello(&self) -> Result<proto::HelloOk, Error> {
        match self.call(Op::Hello(proto::Hello::default())).await? {
            response::Result::Hello(ok) => Ok(ok),
            other => Err(unexpected(&other)),
        }
    }

    /// The cluster as a node sees it: nodes, leader, commit index, lag.
    pub async fn status(&self) -> Result<proto::StatusOk, Error> {
        match self.call(Op::Status(proto::Status::default())).await? {
            response::Result::Status(ok) => Ok(ok),
            other => Err(unexpected(&other)),
        }
    }

    /// Closes the connection; in-flight calls fail.
    pub fn close(&self) {
        self.inner.connector.close();
    }

    async fn call(&self, op: Op) -> Result<response::Result, Error> {
        let request = Request {
            request_id: self.inner.next_request_id.fetch_add(1, Ordering::Relaxed),
            session_id: 0,
            ack_below: 0,
            op: Some(op),
        };
        let response = self
            .inner
            .connector
            .call(&request, self.inner.request_timeout)
            .await?;
        if let Some(error) = response.error {
            return Err(Error::from_proto(error));
        }
        response
            .result
            .ok_or_else(|| Error::Protocol("response carries neither a result nor an error".into()))
    }
}

fn unexpected(result: &response::Result) -> Error {
    Error::Protocol(format!("unexpected answer {result:?}"))
}
