//! The queue between a watch (election or lock) and the stream that
//! writes its frames: bounded in frames, in bytes per stream, and in bytes
//! for all of a node's watches together, so a client that stops reading
//! its watches holds a bounded share of the node's memory whatever the
//! frames carry. A watch whose queue is full waits (its live channel then
//! lags, and it catches up from history, or says the history is gone).

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Frames one watch stream may have queued and not yet written.
pub const STREAM_FRAMES: usize = 64;

/// How long the client of a watch may leave a frame unread (the stream's
/// flow-control window full) before the node ends the stream: a client
/// that stops reading holds its room this long at most. Its watch
/// resumes from history when it reconnects.
pub const STALLED_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Bytes of frames one watch stream may have queued and not yet written
/// (a frame larger than this takes all of it).
pub const STREAM_BYTES: usize = 1024 * 1024;

/// The watch is over: its stream was closed or its client left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the watch stream is closed")]
pub struct WatchClosed;

/// One queued frame and the room it holds (of the stream's bytes, and of
/// the node's but for a refusal) until written.
#[derive(Debug)]
pub struct Queued<M> {
    /// The frame.
    pub frame: M,
    _room: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

/// Where a watch sends its frames.
#[derive(Debug)]
pub struct WatchSender<M> {
    tx: mpsc::Sender<Queued<M>>,
    stream_bytes: Arc<Semaphore>,
    node_bytes: Arc<Semaphore>,
}

/// Where the stream reads them.
#[derive(Debug)]
pub struct WatchReceiver<M> {
    rx: mpsc::Receiver<Queued<M>>,
}

/// A queue for one watch stream, drawing on `node_bytes`, the budget of
/// all of the node's watches.
pub fn watch_queue<M>(node_bytes: Arc<Semaphore>) -> (WatchSender<M>, WatchReceiver<M>) {
    let (tx, rx) = mpsc::channel(STREAM_FRAMES);
    let sender = WatchSender {
        tx,
        stream_bytes: Arc::new(Semaphore::new(STREAM_BYTES)),
        node_bytes,
    };
    (sender, WatchReceiver { rx })
}

impl<M: prost::Message> WatchSender<M> {
    /// Queues `frame` once there is room for it; fails once the stream is
    /// closed.
    pub async fn send(&self, frame: M) -> Result<(), WatchClosed> {
        let wanted = frame.encoded_len().max(1);
        let reserve = async {
            let stream = reserve(&self.stream_bytes, wanted).await?;
            let node = reserve(&self.node_bytes, wanted).await?;
            Ok::<_, WatchClosed>((stream, Some(node)))
        };
        let room = tokio::select! {
            room = reserve => room?,
            // The stream ended while this waited for room.
            () = self.tx.closed() => return Err(WatchClosed),
        };
        self.tx
            .send(Queued { frame, _room: room })
            .await
            .map_err(|_| WatchClosed)
    }

    /// Queues the refusal that ends a watch before it starts. It takes
    /// room of the stream's bytes only, which a fresh queue always has, so
    /// the client is told why even when the node's watches are out of room
    /// (a refusal is small, and one per stream).
    pub fn refuse(&self, frame: M) -> Result<(), WatchClosed> {
        let wanted = clamp(frame.encoded_len().max(1), STREAM_BYTES);
        let stream = self
            .stream_bytes
            .clone()
            .try_acquire_many_owned(wanted)
            .map_err(|_| WatchClosed)?;
        self.tx
            .try_send(Queued {
                frame,
                _room: (stream, None),
            })
            .map_err(|_| WatchClosed)
    }

    /// Resolves once the stream is closed.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

impl<M> WatchReceiver<M> {
    /// The next frame, holding its room until dropped (after it is
    /// written).
    pub async fn recv(&mut self) -> Option<Queued<M>> {
        self.rx.recv().await
    }
}

/// `wanted` bytes of `budget`, at most a stream's (so one large frame
/// cannot wait forever for more than there is: the node's budget is at
/// least that).
async fn reserve(
    budget: &Arc<Semaphore>,
    wanted: usize,
) -> Result<OwnedSemaphorePermit, WatchClosed> {
    budget
        .clone()
        .acquire_many_owned(clamp(wanted, STREAM_BYTES))
        .await
        .map_err(|_| WatchClosed)
}

fn clamp(bytes: usize, cap: usize) -> u32 {
    u32::try_from(bytes.min(cap)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use paxlock::proto::WatchEvent;

    fn frame(bytes: usize) -> WatchEvent {
        WatchEvent {
            value: vec![7; bytes],
            ..Default::default()
        }
    }

    /// A client that reads nothing holds at most a stream's bytes of
    /// frames: the next one waits until the stream writes one out.
    #[tokio::test]
    async fn a_stalled_stream_holds_a_bounded_number_of_bytes() {
        let node = Arc::new(Semaphore::new(64 * STREAM_BYTES));
        let (tx, mut rx) = watch_queue(node.clone());
        let big = STREAM_BYTES / 4;
        for _ in 0..3 {
            tx.send(frame(big)).await.unwrap();
        }
        // The fourth would pass the stream's bytes (with the frames'
        // headers): it waits.
        let fourth = tokio::time::timeout(Duration::from_millis(200), tx.send(frame(big))).await;
        assert!(fourth.is_err(), "queued past the stream's byte bound");
        assert!(node.available_permits() < 64 * STREAM_BYTES);
        // Written out, a frame gives its room back.
        drop(rx.recv().await.unwrap());
        tokio::time::timeout(Duration::from_secs(5), tx.send(frame(big)))
            .await
            .unwrap()
            .unwrap();
    }

    /// The node's budget bounds every stream together.
    #[tokio::test]
    async fn the_node_budget_bounds_all_streams_together() {
        let node = Arc::new(Semaphore::new(STREAM_BYTES));
        let (a, _ra) = watch_queue(node.clone());
        let (b, mut rb) = watch_queue(node.clone());
        a.send(frame(STREAM_BYTES / 2)).await.unwrap();
        b.send(frame(STREAM_BYTES / 3)).await.unwrap();
        let more =
            tokio::time::timeout(Duration::from_millis(200), b.send(frame(STREAM_BYTES / 3)));
        assert!(more.await.is_err(), "queued past the node's byte bound");
        drop(rb.recv().await.unwrap());
        b.send(frame(STREAM_BYTES / 3)).await.unwrap();
    }

    /// A refusal fits even when every watch of the node is out of room.
    #[tokio::test]
    async fn a_refusal_fits_when_the_node_budget_is_spent() {
        let node = Arc::new(Semaphore::new(STREAM_BYTES));
        let (a, _ra) = watch_queue(node.clone());
        a.send(frame(STREAM_BYTES - 64)).await.unwrap();
        let (b, mut rb) = watch_queue::<WatchEvent>(node);
        b.refuse(frame(100)).unwrap();
        assert_eq!(rb.recv().await.unwrap().frame.value.len(), 100);
    }

    /// A watch waiting for room ends when its stream does.
    #[tokio::test]
    async fn a_send_waiting_for_room_ends_with_the_stream() {
        let node = Arc::new(Semaphore::new(64 * STREAM_BYTES));
        let (tx, rx) = watch_queue(node.clone());
        tx.send(frame(STREAM_BYTES - 64)).await.unwrap();
        let waiting = tx.send(frame(1024));
        drop(rx);
        let ended = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(ended.unwrap(), Err(WatchClosed));
        // Everything it held is given back.
        assert_eq!(node.available_permits(), 64 * STREAM_BYTES);
    }
}
