//! Length-prefixed protobuf frames with a hard size cap.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of one
//! protobuf message. The cap is checked on the length prefix *before* any
//! buffer is allocated, so a hostile peer cannot make us allocate more than
//! `MAX_FRAME_BYTES` per stream.

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame body either side accepts or sends: 4 MiB.
///
/// Values are capped at 64 KiB and a frame carries one message, so honest
/// frames are far smaller; the cap bounds memory per stream.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Size of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than `MAX_FRAME_BYTES`.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: expected {expected} bytes, got {got}")]
    Truncated {
        /// Bytes the frame needed.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// The frame's bytes are not a valid encoding of the expected message.
    #[error("frame does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The underlying stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// The frame did not arrive in time (a receiver that bounds how long
    /// a stalled sender may hold its buffers).
    #[error("frame did not arrive within {after:?}")]
    TimedOut {
        /// The wait.
        after: std::time::Duration,
    },
}

impl FrameError {
    /// The QUIC application code a receiver uses to close the stream.
    pub fn close_code(&self) -> u32 {
        match self {
            FrameError::TooLarge { .. } => super::codes::FRAME_TOO_LARGE,
            FrameError::Truncated { .. } | FrameError::Decode(_) => super::codes::MALFORMED_FRAME,
            FrameError::TimedOut { .. } => super::codes::FRAME_TIMEOUT,
            FrameError::Io(_) => super::codes::NO_ERROR,
        }
    }

    /// Whether the peer sent something invalid (as opposed to the stream
    /// failing underneath us). Only these are counted as protocol errors.
    pub fn is_protocol_violation(&self) -> bool {
        !matches!(self, FrameError::Io(_))
    }
}

/// Encodes `msg` as one frame. Fails with `TooLarge` rather than produce a
/// frame the other side would refuse.
pub fn encode_frame<M: Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    let len = msg.encoded_len();
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    let mut buf = Vec::with_capacity(FRAME_HEADER_BYTES + len);
    // len <= 4 MiB, so it fits in u32.
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut buf)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(buf)
}

/// Decodes one frame from the front of `buf` without I/O.
///
/// Returns `Ok(None)` if `buf` holds only part of a frame (read more),
/// `Ok(Some((msg, consumed)))` for a whole frame.
pub fn decode_frame<M: Message + Default>(buf: &[u8]) -> Result<Option<(M, usize)>, FrameError> {
    let Some(header) = buf.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let len = frame_len(header, MAX_FRAME_BYTES)?;
    let Some(body) = buf.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else {
        return Ok(None);
    };
    let msg = M::decode(body)?;
    Ok(Some((msg, FRAME_HEADER_BYTES + len)))
}

fn frame_len(header: &[u8], max: usize) -> Result<usize, FrameError> {
    let mut prefix = [0u8; FRAME_HEADER_BYTES];
    prefix.copy_from_slice(header);
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// How much a frame body's buffer grows by at a time: a body's memory
/// follows the bytes that arrived, not the length its header claims.
const BODY_CHUNK_BYTES: usize = 64 * 1024;

/// Reads one frame from `reader`, of at most `MAX_FRAME_BYTES`.
///
/// Returns `Ok(None)` on a clean end of stream *between* frames; an end of
/// stream inside a frame is `Truncated`.
pub async fn read_frame<M, R>(reader: &mut R) -> Result<Option<M>, FrameError>
where
    M: Message + Default,
    R: AsyncRead + Unpin,
{
    match read_frame_header(reader, MAX_FRAME_BYTES).await? {
        Some(len) => Ok(Some(read_frame_body(reader, len).await?)),
        None => Ok(None),
    }
}

/// Reads one frame's length prefix: `Ok(None)` on a clean end of stream,
/// else the body's length, refused (`TooLarge`) above `max`.
///
/// With [`read_frame_body`], for a reader that does something between the
/// two (a node charges the body against a memory budget).
pub async fn read_frame_header<R>(reader: &mut R, max: usize) -> Result<Option<usize>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let got = read_full(reader, &mut header).await?;
    if got == 0 {
        return Ok(None);
    }
    if got < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated {
            expected: FRAME_HEADER_BYTES,
            got,
        });
    }
    frame_len(&header, max.min(MAX_FRAME_BYTES)).map(Some)
}

/// Reads and decodes a frame body of `len` bytes. Its buffer grows as the
/// bytes arrive, so a sender that announces a large frame and stalls holds
/// only what it sent.
pub async fn read_frame_body<M, R>(reader: &mut R, len: usize) -> Result<M, FrameError>
where
    M: Message + Default,
    R: AsyncRead + Unpin,
{
    let mut body = Vec::with_capacity(len.min(BODY_CHUNK_BYTES));
    while body.len() < len {
        let filled = body.len();
        let chunk = (len - filled).min(BODY_CHUNK_BYTES);
        body.resize(filled + chunk, 0);
        let got = read_full(reader, &mut body[filled..]).await?;
        if got < chunk {
            return Err(FrameError::Truncated {
                expected: len,
                got: filled + got,
            });
        }
    }
    Ok(M::decode(body.as_slice())?)
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
async fn read_full<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Writes `msg` as one frame.
pub async fn write_frame<M, W>(writer: &mut W, msg: &M) -> Result<(), FrameError>
where
    M: Message,
    W: AsyncWrite + Unpin,
{
    let frame = encode_frame(msg)?;
    writer.write_all(&frame).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{request, Hello, Request};

    fn hello() -> Request {
        Request {
            request_id: 7,
            session_id: 0,
            ack_below: 0,
            waiting: Vec::new(),
            op: Some(request::Op::Hello(Hello {
                client_name: "test".into(),
            })),
        }
    }

    #[tokio::test]
    async fn frame_round_trips() -> Result<(), FrameError> {
        let bytes = encode_frame(&hello())?;
        let mut reader = bytes.as_slice();
        let got: Option<Request> = read_frame(&mut reader).await?;
        assert_eq!(got, Some(hello()));
        let end: Option<Request> = read_frame(&mut reader).await?;
        assert_eq!(end, None, "clean end of stream between frames");
        Ok(())
    }

    #[tokio::test]
    async fn frame_over_the_cap_is_rejected_before_allocating() {
        let mut bytes = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 16]);
        let err = read_frame::<Request, _>(&mut bytes.as_slice()).await;
        assert!(
            matches!(err, Err(FrameError::TooLarge { len, .. }) if len == MAX_FRAME_BYTES + 1),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn truncated_body_is_reported() -> Result<(), FrameError> {
        let bytes = encode_frame(&hello())?;
        let cut = &bytes[..bytes.len() - 3];
        let err = read_frame::<Request, _>(&mut &cut[..]).await;
        assert!(matches!(err, Err(FrameError::Truncated { .. })), "{err:?}");
        Ok(())
    }

    #[tokio::test]
    async fn truncated_header_is_reported() {
        let err = read_frame::<Request, _>(&mut &[0u8, 0][..]).await;
        assert!(
            matches!(
                err,
                Err(FrameError::Truncated {
                    expected: 4,
                    got: 2
                })
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn undecodable_bytes_are_reported() {
        // Field 1 with wire type 7 does not exist in protobuf.
        let body = [0x0f_u8, 0xff, 0xff];
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        let err = read_frame::<Request, _>(&mut bytes.as_slice()).await;
        assert!(matches!(err, Err(FrameError::Decode(_))), "{err:?}");
    }

    #[test]
    fn close_codes_distinguish_oversize_from_malformed() {
        let big = FrameError::TooLarge { len: 1, max: 0 };
        let cut = FrameError::Truncated {
            expected: 2,
            got: 1,
        };
        assert_eq!(big.close_code(), crate::wire::codes::FRAME_TOO_LARGE);
        assert_eq!(cut.close_code(), crate::wire::codes::MALFORMED_FRAME);
    }

    #[test]
    fn encoding_refuses_a_message_over_the_cap() {
        let msg = crate::proto::Proclaim {
            election: String::new(),
            value: vec![0; MAX_FRAME_BYTES + 1],
        };
        assert!(matches!(
            encode_frame(&msg),
            Err(FrameError::TooLarge { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode_frame::<Request>(&bytes);
            let _ = decode_frame::<crate::proto::Response>(&bytes);
            let _ = decode_frame::<crate::proto::WatchEvent>(&bytes);
        }

        #[test]
        fn decoding_arbitrary_frames_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&body);
            let _ = decode_frame::<Request>(&bytes);
            let _ = decode_frame::<crate::proto::Response>(&bytes);
        }
    }
}
