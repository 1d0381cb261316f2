//! Serving client connections: one request per bidirectional stream.
//!
//! A bad frame closes only its own stream (with `FRAME_TOO_LARGE` or
//! `MALFORMED_FRAME`), is counted, and never reaches the node: the
//! service only ever sees requests that decoded completely.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use paxlock::proto::{request::Op, Request, Response, WatchEvent};
use paxlock::wire::{read_frame, write_frame, FrameError};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::metrics::TransportMetrics;
use crate::locks::Identity;

/// Bound on watch events queued for one stream.
pub const WATCH_STREAM_QUEUE: usize = 64;

/// What answers clients: the node implements it, and the transport calls
/// it on each request stream's own task, so a request and its answer take
/// no hand-off between tasks on their way through the node.
pub trait ClientService: Send + Sync + 'static {
    /// The answer to one request (anything but `Watch`) that came from
    /// `caller`, the identity of the connection's certificate.
    fn answer<'a>(
        &'a self,
        request: Request,
        caller: &'a Identity,
    ) -> Pin<Box<dyn Future<Output = Response> + Send + 'a>>;
    /// Starts a `Watch`: events go to `events` until either side drops it
    /// (dropping it at once refuses the watch).
    fn watch(&self, request: Request, events: mpsc::Sender<WatchEvent>);
}

/// Accepts request streams on `connection` until it closes, handing every
/// well-formed request to `service` as coming from `caller`.
pub async fn serve_connection(
    connection: quinn::Connection,
    caller: Identity,
    service: Arc<dyn ClientService>,
    metrics: Arc<TransportMetrics>,
) {
    let remote = connection.remote_address();
    let caller = Arc::new(caller);
    loop {
        let (send, recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                debug!(%remote, "client connection ended: {e}");
                return;
            }
        };
        tokio::spawn(serve_stream(
            send,
            recv,
            caller.clone(),
            service.clone(),
            metrics.clone(),
        ));
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    caller: Arc<Identity>,
    service: Arc<dyn ClientService>,
    metrics: Arc<TransportMetrics>,
) {
    let request = match read_frame::<Request, _>(&mut recv).await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(err) => {
            close_with_frame_error(&mut send, &mut recv, &err, &metrics);
            return;
        }
    };
    if matches!(request.op, Some(Op::Watch(_))) {
        stream_watch(send, request, service.as_ref()).await;
        return;
    }
    let request_id = request.request_id;
    let response = service.answer(request, &caller).await;
    TransportMetrics::bump(&metrics.client_requests);
    debug_assert_eq!(response.request_id, request_id);
    if let Err(e) = write_frame(&mut send, &response).await {
        debug!("could not answer request {request_id}: {e}");
        return;
    }
    let _ = send.finish();
}

async fn stream_watch(mut send: quinn::SendStream, request: Request, service: &dyn ClientService) {
    let (events_tx, mut events) = mpsc::channel(WATCH_STREAM_QUEUE);
    service.watch(request, events_tx);
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else {
                    let _ = send.finish();
                    return;
                };
                if write_frame(&mut send, &event).await.is_err() {
                    return;
                }
            }
            // The client stopped reading: end the watch now, not at the next event.
            _ = send.stopped() => return,
        }
    }
}

/// Closes both halves of a stream whose frame was bad, with the code that
/// says why, and counts it.
pub fn close_with_frame_error(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    err: &FrameError,
    metrics: &TransportMetrics,
) {
    if err.is_protocol_violation() {
        TransportMetrics::bump(&metrics.frame_errors);
        warn!("closing stream: {err}");
    }
    let code = err.close_code();
    let _ = recv.stop(code.into());
    let _ = send.reset(code.into());
}
