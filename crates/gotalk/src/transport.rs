//! Transports: what a [`Sock`](crate::Sock) reads bytes from and writes frames to.
//!
//! A sock is generic over a [`FrameReader`] and a [`FrameWriter`], so TCP, TLS, WebSocket and
//! in-memory pipes share one code path. Reading is a byte stream (WebSocket messages are
//! concatenated, as real peers expect). Writing is frame by frame, because some transports
//! care where one frame ends: the original gotalk.js needs each header and each payload in a
//! WebSocket message of its own.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use gotalk_protocol::{encode_version, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::CloseReason;

/// Payloads at least this large are written from their own buffer instead of being copied
/// into the batch.
const COPY_LIMIT: usize = 8 * 1024;

/// The most a single read asks for.
pub(crate) const MAX_READ: usize = 64 * 1024;

/// The least a read reserves, so small messages don't cost one read each.
pub(crate) const MIN_READ: usize = 4 * 1024;

/// The most buffers one vectored write hands the kernel.
pub(crate) const MAX_SLICES: usize = 64;

/// What a read produced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadEvent {
    /// This many bytes were appended to the buffer (or, with 0, the peer proved itself alive
    /// without sending any: a WebSocket pong).
    Data(usize),
    /// This many bytes were appended to the buffer, but the transport's own message carrying
    /// them is not whole yet. They are part of the byte stream like any other, but do not
    /// show the peer is alive: over WebSocket only a whole message does, since a peer
    /// trickling one frame cannot answer a probe until the frame ends.
    Partial(usize),
    /// The peer closed its side cleanly.
    Eof,
}

/// The reading half of a transport.
pub trait FrameReader: Send + 'static {
    /// Appends the next bytes from the peer to `buf`. `hint` is how many bytes the message
    /// being read still needs, if known.
    fn read(
        &mut self,
        buf: &mut BytesMut,
        hint: Option<usize>,
    ) -> impl Future<Output = io::Result<ReadEvent>> + Send;

    /// The payload of a pong the transport received since the last call (WebSocket), for
    /// the liveness checks. Transports without pongs have none.
    fn take_pong(&mut self) -> Option<Bytes> {
        None
    }

    /// Completes when the transport reports an error after the peer's end of stream: a
    /// peer that closed entirely answers what is written to it with a reset, while one that
    /// only stopped sending takes it. Transports that cannot tell never complete.
    fn failed(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// The writing half of a transport. Frames are buffered, then flushed as one batch.
pub trait FrameWriter: Send + 'static {
    /// Buffers this side's protocol version.
    fn buffer_version(&mut self);
    /// Buffers one frame.
    fn buffer_frame(&mut self, frame: &Frame);
    /// Buffers a transport-level ping carrying `payload` (a liveness probe's cookie), if the
    /// transport has pings (WebSocket). Returns false when it has none; the sock then probes
    /// with the reserved `$ping` request instead.
    fn buffer_ping(&mut self, _payload: &[u8]) -> bool {
        false
    }
    /// Writes everything buffered.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Gives back the buffers kept between flushes: the write loop calls it when it has
    /// nothing to write, so an idle connection holds none.
    fn release_idle(&mut self) {}
    /// Closes the writing side, after a flush. `reason` is why the connection is closing,
    /// for transports that can tell the peer (a WebSocket close code).
    fn shutdown(&mut self, reason: &CloseReason) -> impl Future<Output = io::Result<()>> + Send;
}

/// How much a read reserves, for a message that still needs `hint` bytes: the rest of it and
/// room for the start of the next, so that with messages queued behind it each costs one
/// read, not one for its header and another for its payload.
pub(crate) fn read_size(hint: Option<usize>) -> usize {
    hint.map_or(0, |rest| rest.saturating_add(MIN_READ)).clamp(MIN_READ, MAX_READ)
}

/// Makes room in `buf` for the next read: at least [`MIN_READ`] bytes, unless the rest of a
/// large message already has room. The read loop gives a large message its whole buffer when
/// it pays for it; growing that buffer for the message's last bytes would copy the message
/// into one twice its size.
pub(crate) fn make_room(buf: &mut BytesMut, hint: Option<usize>) {
    let spare = buf.capacity() - buf.len();
    // A buffer this large was made for one message (the read loop's exact buffer).
    let rest_fits = buf.capacity() >= MAX_READ && hint.is_some_and(|rest| rest <= spare);
    if spare < MIN_READ && !rest_fits {
        buf.reserve(read_size(hint));
    }
}

/// Gives the read buffer back while a reader waits between messages, so an idle connection
/// holds none. Not in the middle of one: the buffer may hold the room the read loop reserved
/// (and paid for) for the rest of its payload.
pub(crate) fn release_if_idle(buf: &mut BytesMut, hint: Option<usize>) {
    if buf.is_empty() && hint.is_none() {
        *buf = BytesMut::new();
    }
}

/// Reads from any [`AsyncRead`] (TLS streams, in-memory duplex pipes).
#[derive(Debug)]
pub struct IoReader<R>(pub R);

impl<R: AsyncRead + Unpin + Send + 'static> FrameReader for IoReader<R> {
    async fn read(&mut self, buf: &mut BytesMut, hint: Option<usize>) -> io::Result<ReadEvent> {
        make_room(buf, hint);
        match self.0.read_buf(buf).await? {
            0 => Ok(ReadEvent::Eof),
            n => Ok(ReadEvent::Data(n)),
        }
    }
}

/// Reads from a plain TCP stream. It gives its buffer back while it waits, so an idle
/// connection holds no read buffer at all.
#[derive(Debug)]
pub struct TcpReader(pub OwnedReadHalf);

impl FrameReader for TcpReader {
    async fn read(&mut self, buf: &mut BytesMut, hint: Option<usize>) -> io::Result<ReadEvent> {
        // Polled by hand rather than awaiting `readable()`: that future would be part of the
        // read loop's state, which every idle connection keeps, and it is most of it.
        // Readiness is kept by the socket's registration itself, and this half is its only
        // reader. It is asked first, so that a poll with nothing to read (the connection's
        // task woken for its writes) costs no room made in the buffer and given back.
        let stream = &self.0;
        std::future::poll_fn(|cx| loop {
            match stream.as_ref().poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    release_if_idle(buf, hint);
                    return Poll::Pending;
                }
            }
            make_room(buf, hint);
            match read_draining(stream, buf) {
                Ok(0) => return Poll::Ready(Ok(ReadEvent::Eof)),
                Ok(n) => return Poll::Ready(Ok(ReadEvent::Data(n))),
                // Readiness was stale, and is cleared now: asked again above.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        })
        .await
    }

    async fn failed(&mut self) {
        // Error readiness is reported by the kernel whatever is being waited for; an error
        // in waiting means the socket is unusable too.
        let _ = self.0.ready(tokio::io::Interest::ERROR).await;
    }
}

/// Reads what the socket has into `buf`'s spare room. A read that leaves room unfilled has
/// emptied the socket: its readiness is cleared then, so the next read waits for the peer
/// instead of first asking the kernel again only to be told there is nothing. Safe against a
/// race with new data: readiness set by an event after the one this read saw is kept.
fn read_draining(stream: &OwnedReadHalf, buf: &mut BytesMut) -> io::Result<usize> {
    let offered = buf.capacity() - buf.len();
    let mut got = 0;
    let drained = stream.as_ref().try_io(tokio::io::Interest::READABLE, || {
        got = stream.try_read_buf(&mut *buf)?;
        if got > 0 && got < offered {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(got)
        }
    });
    match drained {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

/// Writes to any [`AsyncWrite`] as one continuous byte stream, batching small frames into one
/// buffer and passing large payloads through without a copy.
#[derive(Debug)]
pub struct IoWriter<W> {
    io: W,
    staging: BytesMut,
    chunks: VecDeque<Bytes>,
}

impl<W> IoWriter<W> {
    /// Wraps a writer.
    pub fn new(io: W) -> Self {
        IoWriter { io, staging: BytesMut::new(), chunks: VecDeque::new() }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameWriter for IoWriter<W> {
    fn buffer_version(&mut self) {
        encode_version(&mut self.staging);
    }

    fn buffer_frame(&mut self, frame: &Frame) {
        let payload = frame.payload();
        // Room for the whole frame first: an idle writer's buffer is empty, and encoding field
        // by field into it would grow it (a reallocation and a copy) several times per frame.
        if payload.len() < COPY_LIMIT {
            self.staging.reserve(frame.encoded_len());
            frame.encode(&mut self.staging);
        } else {
            self.staging.reserve(frame.header_len());
            frame.encode_header(&mut self.staging);
            self.chunks.push_back(self.staging.split().freeze());
            self.chunks.push_back(payload.clone());
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.chunks.is_empty() {
            // Small frames only: written from the staging buffer itself, which keeps its
            // room for the next flush (freezing it into a chunk would make it shared, and
            // keep it, and a header for it, until the writer is idle).
            let written = self.io.write_all(&self.staging).await;
            self.staging.clear();
            written?;
            return self.io.flush().await;
        }
        if !self.staging.is_empty() {
            self.chunks.push_back(self.staging.split().freeze());
        }
        // Every chunk in one vectored write where the transport takes one: a large payload
        // and its header leave in the same system call, and the same segment when they fit.
        while !self.chunks.is_empty() {
            let written = write_chunks(&mut self.io, &self.chunks).await;
            let mut left = match written {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                other => other,
            }
            .inspect_err(|_| self.chunks.clear())?;
            while left > 0 {
                let Some(front) = self.chunks.front_mut() else { break };
                if front.len() <= left {
                    left -= front.len();
                    self.chunks.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        self.io.flush().await
    }

    fn release_idle(&mut self) {
        if self.staging.is_empty() {
            self.staging = BytesMut::new();
        }
    }

    async fn shutdown(&mut self, _reason: &CloseReason) -> io::Result<()> {
        self.io.shutdown().await
    }
}

/// Writes the first of `chunks` (up to [`MAX_SLICES`]) in one vectored write; returns how
/// many bytes went.
pub(crate) async fn write_chunks<W: AsyncWrite + Unpin>(
    io: &mut W,
    chunks: &VecDeque<Bytes>,
) -> io::Result<usize> {
    // The slices live only within a poll: kept across an await, they would be part of every
    // idle connection's task, and they are a kilobyte.
    std::future::poll_fn(|cx| {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = slices.len().min(chunks.len());
        for (slice, chunk) in slices.iter_mut().zip(chunks) {
            *slice = IoSlice::new(chunk);
        }
        Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count])
    })
    .await
}

/// A plain TCP stream as a reader and a writer.
pub fn tcp(stream: tokio::net::TcpStream) -> (TcpReader, IoWriter<OwnedWriteHalf>) {
    let (r, w) = stream.into_split();
    (TcpReader(r), IoWriter::new(w))
}

/// Any byte stream (TLS, a duplex pipe) as a reader and a writer.
pub fn io<S>(stream: S) -> (IoReader<tokio::io::ReadHalf<S>>, IoWriter<tokio::io::WriteHalf<S>>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(stream);
    (IoReader(r), IoWriter::new(w))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn small_frames_go_out_from_the_staging_buffer_which_an_idle_writer_gives_back() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let mut writer = IoWriter::new(ours);
        let frame = Frame::Notification {
            name: gotalk_protocol::Name::try_from("hi").unwrap(),
            payload: Bytes::from_static(b"there"),
        };
        writer.buffer_version();
        writer.buffer_frame(&frame);
        writer.flush().await.expect("flush");
        assert!(writer.staging.is_empty() && writer.staging.capacity() > 0, "kept for the next");
        writer.release_idle();
        assert_eq!(writer.staging.capacity(), 0, "an idle writer holds no buffer");

        // And a large payload after it goes by reference, the header staged in front.
        let large = Frame::Notification {
            name: gotalk_protocol::Name::try_from("big").unwrap(),
            payload: Bytes::from(vec![7u8; COPY_LIMIT]),
        };
        writer.buffer_frame(&large);
        writer.flush().await.expect("flush");
        drop(writer);
        let mut sent = Vec::new();
        theirs.read_to_end(&mut sent).await.expect("read");
        let mut expected = BytesMut::new();
        encode_version(&mut expected);
        frame.encode(&mut expected);
        large.encode(&mut expected);
        assert_eq!(sent, expected);
    }

    #[test]
    fn an_idle_writer_stages_a_frame_in_one_allocation_of_its_size() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut writer = IoWriter::new(ours);
        let frame = Frame::SingleResult {
            id: gotalk_protocol::Id(*b"0001"),
            payload: Bytes::from_static(&[1; 10]),
        };
        writer.buffer_frame(&frame);
        // Grown field by field, it would have been allocated at 8 bytes, then moved to 16 and
        // to 32.
        assert_eq!(writer.staging.capacity(), frame.encoded_len());
    }
}
