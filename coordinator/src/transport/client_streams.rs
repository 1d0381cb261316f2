//! Serving client connections: one request per bidirectional stream.
//!
//! A bad frame closes only its own stream (with `FRAME_TOO_LARGE`,
//! `MALFORMED_FRAME` or, stalled, `FRAME_TIMEOUT`), is counted, and never
//! reaches the node: the service only ever sees requests that decoded
//! completely. What a connection may hold (streams, unread bytes, request
//! bodies being read, connections per identity) is bounded by the
//! [`ClientGate`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use paxlock::proto::{request::Op, LockWatchEvent, Request, Response, WatchEvent};
use paxlock::wire::{read_frame_body, read_frame_header, write_frame, FrameError};
use tracing::debug;

use super::client_limits::ClientGate;
use super::metrics::TransportMetrics;
use super::revocation::{ClientCertificate, Revocations};
use super::watch_queue::{watch_queue, WatchReceiver, WatchSender, STALLED_WRITE_TIMEOUT};
use crate::locks::Identity;

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
    /// Starts a `Watch` from `caller`: events go to `events` until either
    /// side drops it (dropping it at once refuses the watch).
    fn watch(&self, request: Request, caller: &Identity, events: WatchSender<WatchEvent>);
    /// Starts a `WatchLock` from `caller`, as `watch` does.
    fn watch_lock(&self, request: Request, caller: &Identity, events: WatchSender<LockWatchEvent>);
}

/// Accepts request streams on `connection` until it closes, handing every
/// well-formed request to `service` as coming from the certificate's
/// identity; refuses the connection (`TOO_MANY_CONNECTIONS`, saying which
/// limit) if the gate has no place for it, and closes it
/// (`CERTIFICATE_REVOKED`) once the certificate or identity is revoked.
pub async fn serve_connection(
    connection: quinn::Connection,
    certificate: ClientCertificate,
    service: Arc<dyn ClientService>,
    gate: Arc<ClientGate>,
    metrics: Arc<TransportMetrics>,
) {
    let remote = connection.remote_address();
    let mut revocations = gate.revocations();
    let revoked = |list: &Revocations| list.revokes(&certificate);
    if let Some(why) = revoked(&revocations.borrow_and_update()) {
        refuse_revoked(&connection, &gate, &metrics, &why);
        return;
    }
    let caller = certificate.identity.clone();
    let _slot = match gate.admit(&caller) {
        Ok(slot) => slot,
        Err(refusal) => {
            TransportMetrics::bump(&metrics.client_connections_refused);
            gate.warn_refusal(format_args!(
                "refused client connection from {remote} ({}): {refusal}",
                caller.0
            ));
            connection.close(
                paxlock::wire::codes::TOO_MANY_CONNECTIONS.into(),
                refusal.to_string().as_bytes(),
            );
            return;
        }
    };
    // Clients use bidirectional streams only; these bound how many and how
    // many unread bytes (the endpoint's defaults suit peers, which stream
    // snapshots). No new unidirectional credit: the few streams the
    // handshake allowed are never read, so they hold at most the window.
    let limits = gate.limits();
    connection.set_max_concurrent_uni_streams(0u32.into());
    connection.set_max_concurrent_bi_streams(limits.max_streams_per_connection.into());
    connection.set_receive_window(limits.receive_window_bytes.into());
    let caller = Arc::new(caller);
    // Until the list can no longer change (no file followed, or the node
    // stopping): a closed channel answers `changed` at once, every time.
    let mut following = true;
    loop {
        let accepted = if following {
            tokio::select! {
                accepted = connection.accept_bi() => accepted,
                changed = revocations.changed() => {
                    match changed {
                        Ok(()) => {
                            if let Some(why) = revoked(&revocations.borrow_and_update()) {
                                refuse_revoked(&connection, &gate, &metrics, &why);
                                return;
                            }
                        }
                        Err(_) => following = false,
                    }
                    continue;
                }
            }
        } else {
            connection.accept_bi().await
        };
        let (send, recv) = match accepted {
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
            gate.clone(),
            metrics.clone(),
        ));
    }
}

/// Closes a connection whose certificate or identity is revoked.
fn refuse_revoked(
    connection: &quinn::Connection,
    gate: &ClientGate,
    metrics: &TransportMetrics,
    why: &str,
) {
    TransportMetrics::bump(&metrics.client_connections_refused);
    let remote = connection.remote_address();
    gate.warn_refusal(format_args!(
        "closed client connection from {remote}: {why}"
    ));
    connection.close(
        paxlock::wire::codes::CERTIFICATE_REVOKED.into(),
        why.as_bytes(),
    );
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    caller: Arc<Identity>,
    service: Arc<dyn ClientService>,
    gate: Arc<ClientGate>,
    metrics: Arc<TransportMetrics>,
) {
    let request = match read_request(&mut recv, &gate).await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(err) => {
            close_with_frame_error(&mut send, &mut recv, &err, &gate, &metrics);
            return;
        }
    };
    match request.op {
        Some(Op::Watch(_)) => {
            let (events_tx, events) = watch_queue(gate.watch_budget());
            service.watch(request, &caller, events_tx);
            stream_frames(send, events).await;
            return;
        }
        Some(Op::WatchLock(_)) => {
            let (events_tx, events) = watch_queue(gate.watch_budget());
            service.watch_lock(request, &caller, events_tx);
            stream_frames(send, events).await;
            return;
        }
        _ => {}
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

/// Reads a stream's request: its length checked against the largest legal
/// request, its body read only once the gate has room for it, the whole of
/// it within the read timeout, so a stalled sender holds a bounded buffer
/// for a bounded time.
async fn read_request(
    recv: &mut quinn::RecvStream,
    gate: &ClientGate,
) -> Result<Option<Request>, FrameError> {
    let limits = gate.limits();
    let read = async {
        let Some(len) = read_frame_header(recv, limits.request_frame_bytes).await? else {
            return Ok(None);
        };
        let _room = gate
            .reserve_reading(len)
            .await
            .map_err(|e| FrameError::Io(std::io::Error::other(e)))?;
        read_frame_body(recv, len).await.map(Some)
    };
    tokio::time::timeout(limits.frame_read_timeout, read)
        .await
        .unwrap_or(Err(FrameError::TimedOut {
            after: limits.frame_read_timeout,
        }))
}

/// Writes a watch's frames to `send` until the service ends the watch
/// (drops its sender) or the client stops reading; a frame the client
/// leaves unread for [`STALLED_WRITE_TIMEOUT`] resets the stream
/// (`FRAME_TIMEOUT`), giving back the room its queue held.
async fn stream_frames<M: prost::Message>(
    mut send: quinn::SendStream,
    mut events: WatchReceiver<M>,
) {
    loop {
        tokio::select! {
            queued = events.recv() => {
                let Some(queued) = queued else {
                    let _ = send.finish();
                    return;
                };
                let written =
                    tokio::time::timeout(STALLED_WRITE_TIMEOUT, write_frame(&mut send, &queued.frame))
                        .await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        let _ = send.reset(paxlock::wire::codes::FRAME_TIMEOUT.into());
                        return;
                    }
                }
            }
            // The client stopped reading: end the watch now, not at the next event.
            _ = send.stopped() => return,
        }
    }
}

/// Closes both halves of a stream whose frame was bad, with the code that
/// says why, and counts it (and logs it, rate-limited).
fn close_with_frame_error(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    err: &FrameError,
    gate: &ClientGate,
    metrics: &TransportMetrics,
) {
    if err.is_protocol_violation() {
        TransportMetrics::bump(&metrics.frame_errors);
        gate.warn_refusal(format_args!("closing a client stream: {err}"));
    }
    let code = err.close_code();
    let _ = recv.stop(code.into());
    let _ = send.reset(code.into());
}
