//! The stream under a watch: opened on first use, opened again (on
//! whichever node the client reaches) after the node goes away or ends it.

use std::time::Duration;

use crate::client::Client;
use crate::error::Error;
use crate::proto::{self, request::Op};
use crate::wire::read_frame;

/// How long to wait before opening a watch again after its stream ended.
const REOPEN_PAUSE: Duration = Duration::from_millis(50);

/// A frame of a watch stream, which carries an error on the frame that
/// refuses or ends the watch.
pub(crate) trait WatchFrame: prost::Message + Default {
    /// The error this frame carries, if it is the refusal.
    fn take_error(&mut self) -> Option<proto::Error>;
}

impl WatchFrame for proto::WatchEvent {
    fn take_error(&mut self) -> Option<proto::Error> {
        self.error.take()
    }
}

impl WatchFrame for proto::LockWatchEvent {
    fn take_error(&mut self) -> Option<proto::Error> {
        self.error.take()
    }
}

/// One watch's stream, reopened as needed.
#[derive(Debug)]
pub(crate) struct WatchStream {
    client: Client,
    stream: Option<quinn::RecvStream>,
}

impl WatchStream {
    /// A stream not opened yet.
    pub(crate) fn new(client: Client) -> WatchStream {
        WatchStream {
            client,
            stream: None,
        }
    }

    /// The next frame, opening the stream with `open()` (the request from
    /// where the watch stands now) if it is not open. Fails when no node
    /// can be reached within the request timeout, or with the error a
    /// frame carries (the stream is then dropped: the next call opens it
    /// again).
    pub(crate) async fn next<F: WatchFrame>(&mut self, open: impl Fn() -> Op) -> Result<F, Error> {
        loop {
            let stream = match self.stream.as_mut() {
                Some(stream) => stream,
                None => {
                    self.stream = Some(self.client.inner.open_watch(open()).await?);
                    continue;
                }
            };
            match read_frame::<F, _>(stream).await {
                Ok(Some(mut frame)) => {
                    if let Some(error) = frame.take_error() {
                        self.stream = None;
                        return Err(Error::from_proto(error));
                    }
                    return Ok(frame);
                }
                // The node went away or ended the stream: resume elsewhere.
                Ok(None) | Err(_) => {
                    self.stream = None;
                    tokio::time::sleep(REOPEN_PAUSE).await;
                }
            }
        }
    }
}
