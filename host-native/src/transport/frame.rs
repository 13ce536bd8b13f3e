//! Length-prefixed frames: the decoder (with its size limit) and the buffered writer.

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, FramedRead};

use super::*;

/// Frames: a big-endian `u32` length, then the bytes. The length is checked against `limit`
/// before the body is read, so an announced size never causes an allocation beyond the limit.
///
/// A pure function of the bytes read so far, so [`crate::fuzzing::peer_frame`] drives it with
/// arbitrary streams exactly as a connection's reader does.
#[derive(Debug)]
pub(crate) struct FrameCodec {
    /// Largest frame accepted: [`MAX_HELLO_BYTES`] until the handshake is done, then the
    /// configured `max_frame_bytes`.
    pub(crate) limit: usize,
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = TransportError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, TransportError> {
        let Some(prefix) = src.get(..LENGTH_PREFIX_BYTES) else {
            return Ok(None);
        };
        let mut prefix_bytes = [0u8; LENGTH_PREFIX_BYTES];
        prefix_bytes.copy_from_slice(prefix);
        let length = u32::from_be_bytes(prefix_bytes) as usize;
        if length > self.limit {
            return Err(TransportError::FrameTooLarge {
                length,
                limit: self.limit,
            });
        }
        if src.len() < LENGTH_PREFIX_BYTES + length {
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX_BYTES);
        Ok(Some(src.split_to(length)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, TransportError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(TransportError::Truncated),
        }
    }
}

/// The writing half of a connection: frames are gathered in a buffer and written out when it
/// is large or on [`FrameWriter::flush`], so a batch of small messages costs few syscalls.
pub(super) struct FrameWriter {
    pub(super) half: WriteHalf,
    pub(super) buffer: BytesMut,
    pub(super) limit: usize,
}

/// Buffered bytes above which [`FrameWriter::feed`] writes out before returning.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

impl FrameWriter {
    /// Appends one frame (length prefix and bytes).
    pub(super) async fn feed(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        let length = u32::try_from(frame.len())
            .ok()
            .filter(|&length| length as usize <= self.limit)
            .ok_or(TransportError::FrameTooLarge {
                length: frame.len(),
                limit: self.limit,
            })?;
        self.buffer.reserve(LENGTH_PREFIX_BYTES + frame.len());
        self.buffer.put_u32(length);
        self.buffer.extend_from_slice(frame);
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.write_out().await?;
        }
        Ok(())
    }

    async fn write_out(&mut self) -> Result<(), TransportError> {
        self.half.write_all(&self.buffer).await?;
        self.buffer.clear();
        Ok(())
    }

    /// Writes out everything fed so far.
    pub(super) async fn flush(&mut self) -> Result<(), TransportError> {
        self.write_out().await?;
        self.half.flush().await?;
        Ok(())
    }

    /// Flushes, then ends the sending direction (the peer reads an end of stream).
    pub(super) async fn close(&mut self) -> Result<(), TransportError> {
        self.flush().await?;
        self.half.shutdown().await?;
        Ok(())
    }
}

/// The halves of a connection, plain TCP or TLS (boxed: the framing does not care which).
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;
pub(super) type FrameReader = FramedRead<ReadHalf, FrameCodec>;

/// Framed halves limited to hello-sized frames.
pub(super) fn framed(read: ReadHalf, write: WriteHalf) -> (FrameReader, FrameWriter) {
    (
        FramedRead::new(
            read,
            FrameCodec {
                limit: MAX_HELLO_BYTES,
            },
        ),
        FrameWriter {
            half: write,
            buffer: BytesMut::new(),
            limit: MAX_HELLO_BYTES,
        },
    )
}
