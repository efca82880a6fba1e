//! The gateway's side of a WebSocket: the upgraded connection as a sock's reader and writer,
//! framed by [`frame`](super::frame).
//!
//! - **Reading** appends the connection's bytes to the sock's read buffer and decodes them
//!   there: payloads are unmasked in place and moved over the frame headers. No message or
//!   frame is assembled, so the memory a peer makes us hold is what the sock's decoder asks
//!   for, as over TCP, and an idle socket holds no read buffer at all. Bytes of a message not
//!   yet whole are [`ReadEvent::Partial`]: only a whole message shows the peer is alive.
//! - **Writing** copies headers and small payloads into one batch and passes large payloads
//!   by reference (one vectored write), so a broadcast to many sockets holds one copy of its
//!   payload; once a batch is written its buffers are given back, so an idle socket keeps
//!   none.
//! - **Pings** are answered by the reader when the connection is free, and otherwise by the
//!   writer when its flush ends. Only the latest ping not yet answered gets its pong (RFC 6455
//!   allows it), so a peer that pings without reading cannot grow a queue of them.
//! - **Closing** answers the peer's Close with a Close (echoing its code), or sends ours with
//!   the reason's code, then shuts the write side. If the peer has not closed, the reader's
//!   half is then read and discarded until the peer's Close or its end, for at most
//!   [`LINGER`]: closing a socket with unread bytes resets it, and the reset would destroy
//!   the Close that tells the peer why (a message too big, sent while it is still sending).
//!   A peer silent for [`LINGER_QUIET`] is taken to have nothing more to send: closing then
//!   leaves nothing unread.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use gotalk_protocol::{encode_version, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::frame::{self, Control, Cursor, Decoder};
use super::pings::{PingBudget, MAX_PONGS};
use super::{close_code, close_text, max_message_size, CLOSE_POLICY};
use crate::config::Config;
use crate::error::CloseReason;
use crate::lock;
use crate::transport::{
    make_room, release_if_idle, write_chunks, FrameReader, FrameWriter, ReadEvent, MAX_SLICES,
    MIN_READ,
};

/// Payloads at least this large are written from their own buffer instead of being copied
/// into the batch.
const COPY_LIMIT: usize = 8 * 1024;

/// The least a writer's batch buffer grows by, so a batch of small frames costs one
/// allocation. It is given back after each flush.
const BATCH: usize = 4 * 1024;

/// How long a closing socket keeps reading, for the peer's Close, after sending its own: as
/// long as a TCP connection reads on after its ProtocolError.
pub(crate) const LINGER: Duration = crate::linger::LINGER_TIME;

/// How long a lingering close waits for more from a peer that has gone quiet.
pub(crate) const LINGER_QUIET: Duration = Duration::from_millis(500);

/// What a lingering close reads into at a time.
const LINGER_READ: usize = 4 * 1024;

/// The upgraded connection `io` as a sock's reader and writer, for a connection with `config`
/// (its payload limit sets the largest message, see [`max_message_size`]).
#[allow(clippy::type_complexity)]
pub fn server<S>(
    io: S,
    config: &Config,
) -> (ServerReader<ReadHalf<S>, WriteHalf<S>>, ServerWriter<ReadHalf<S>, WriteHalf<S>>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    server_halves(read, write, Bytes::new(), config)
}

/// [`server`] over a connection already in two halves that need no lock between them (a
/// `TcpStream`'s `into_split`), with `read_ahead` the bytes read from it past the upgrade
/// request (hyper's `Upgraded::downcast` gives both back): they are read first.
pub fn server_halves<R, W>(
    read: R,
    write: W,
    read_ahead: Bytes,
    config: &Config,
) -> (ServerReader<R, W>, ServerWriter<R, W>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let link = Arc::new(Link {
        out: futures_util::lock::Mutex::new(Out {
            io: write,
            queue: VecDeque::new(),
            closed: false,
        }),
        pong: Mutex::new(None),
        peer: Mutex::new(Peer::default()),
        returned: Mutex::new(None),
        returned_notify: Notify::new(),
    });
    let reader = ServerReader {
        io: Some(read),
        read_ahead: (!read_ahead.is_empty()).then(|| Box::new(read_ahead)),
        decoder: Decoder::new(max_message_size(config) as u64),
        link: link.clone(),
        pings: PingBudget::new(),
        pongs: VecDeque::new(),
        closed: false,
    };
    let writer = ServerWriter { link, whole: false, staging: BytesMut::new(), chunks: Vec::new() };
    (reader, writer)
}

/// What the reader learned about the peer, for the writer's close.
#[derive(Debug, Default, Clone, Copy)]
struct Peer {
    /// The peer broke a rule: the close code and text that say which.
    violation: Option<(u16, &'static str)>,
    /// The peer sent its Close, with this code if it had one.
    closed: Option<Option<u16>>,
    /// The peer's side ended (or failed) without a Close.
    gone: bool,
}

/// The writing side, shared: the writer flushes through it, and the reader sends pongs.
struct Out<W> {
    io: W,
    /// Bytes not yet written, in order; the first may be partly written. Kept here rather than
    /// in a flush, so a flush cut short (by a timeout) leaves whole frames for the next.
    queue: VecDeque<Bytes>,
    /// Our Close has been queued: nothing may follow it.
    closed: bool,
}

/// What the reader and the writer of one connection share.
struct Link<R, W> {
    /// futures' lock rather than tokio's: uncontended, as it almost always is (the reader
    /// only tries it, for a pong), it is taken and given back with an atomic each, where
    /// tokio's takes its wait list's lock to give it back, every flush.
    out: futures_util::lock::Mutex<Out<W>>,
    /// The payload of the latest ping not yet answered.
    pong: Mutex<Option<Bytes>>,
    peer: Mutex<Peer>,
    /// The reading half, handed back when the reader is dropped, for a lingering close.
    returned: Mutex<Option<(R, Decoder)>>,
    returned_notify: Notify,
}

impl<W: AsyncWrite + Unpin> Out<W> {
    /// Writes the queue out (without flushing the connection).
    async fn write_queue(&mut self) -> io::Result<()> {
        while !self.queue.is_empty() {
            let written = write_chunks(&mut self.io, &self.queue).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let mut left = written;
            while left > 0 {
                let Some(front) = self.queue.front_mut() else { break };
                if front.len() <= left {
                    left -= front.len();
                    self.queue.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        if self.queue.capacity() > MAX_SLICES {
            self.queue = VecDeque::new();
        }
        Ok(())
    }

    /// Sends the pong waiting in `link`, if there is one and the connection is at a frame
    /// boundary; a flush cut short leaves it for the writer, which finishes that frame first.
    async fn send_pong(&mut self, pong: &Mutex<Option<Bytes>>) -> io::Result<()> {
        if !self.queue.is_empty() || self.closed {
            return Ok(());
        }
        let Some(payload) = lock(pong).take() else { return Ok(()) };
        let mut frame = BytesMut::with_capacity(2 + payload.len());
        frame::encode_control(&mut frame, frame::PONG, &payload);
        self.queue.push_back(frame.freeze());
        self.write_queue().await?;
        self.io.flush().await
    }
}

/// Reads the gotalk byte stream from the gateway's side of a WebSocket. Made by [`server`].
pub struct ServerReader<R, W> {
    /// Always there until the reader is dropped.
    io: Option<R>,
    /// Bytes read past the upgrade request, before this reader was made: read first. Boxed,
    /// as they are rare and this is part of every connection's task.
    read_ahead: Option<Box<Bytes>>,
    decoder: Decoder,
    link: Arc<Link<R, W>>,
    pings: PingBudget,
    /// Pongs received, for the liveness checks; only the latest few are kept.
    pongs: VecDeque<Bytes>,
    /// The peer's Close came, or its side ended: the next read ends.
    closed: bool,
}

impl<R, W> std::fmt::Debug for ServerReader<R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerReader").field("closed", &self.closed).finish_non_exhaustive()
    }
}

impl<R, W> ServerReader<R, W> {
    fn violated(&mut self, code: u16, text: &'static str, why: String) -> io::Error {
        lock(&self.link.peer).violation.get_or_insert((code, text));
        io::Error::new(io::ErrorKind::InvalidData, why)
    }

    fn peer_gone(&mut self) {
        self.closed = true;
        lock(&self.link.peer).gone = true;
    }

    /// Decodes what the last read appended to `buf` at `start`. Returns what the read loop
    /// should hear, or `None` when nothing came for it (a ping, part of a header).
    fn take(&mut self, buf: &mut BytesMut, start: usize) -> io::Result<Option<ReadEvent>> {
        let mut cursor = Cursor::default();
        let mut pong = false;
        let outcome = loop {
            match self.decoder.decode(&mut buf[start..], &mut cursor) {
                Ok(None) => break Ok(()),
                Ok(Some(Control::Ping(payload))) => {
                    if !self.pings.spend() {
                        break Err((CLOSE_POLICY, "too many pings", "too many pings".to_owned()));
                    }
                    *lock(&self.link.pong) = Some(payload);
                }
                Ok(Some(Control::Pong(payload))) => {
                    if self.pongs.len() == MAX_PONGS {
                        self.pongs.pop_front();
                    }
                    self.pongs.push_back(payload);
                    pong = true;
                }
                Ok(Some(Control::Close(code))) => {
                    // Whatever follows a Close is not the peer's to send.
                    self.closed = true;
                    lock(&self.link.peer).closed = Some(code);
                    break Ok(());
                }
                Err(violation) => {
                    let (code, text) = (violation.close_code(), violation.close_text());
                    break Err((code, text, format!("websocket protocol error: {violation}")));
                }
            }
        };
        buf.truncate(start + cursor.written);
        if let Err((code, text, why)) = outcome {
            return Err(self.violated(code, text, why));
        }
        let whole = self.decoder.take_ended();
        Ok(match cursor.written {
            n if whole => Some(ReadEvent::Data(n)),
            // A pong may be the only sign of life of an idle peer: report it now.
            _ if pong => Some(ReadEvent::Data(0)),
            0 if self.closed => Some(ReadEvent::Eof),
            0 => None,
            n => Some(ReadEvent::Partial(n)),
        })
    }
}

impl<R, W: AsyncWrite + Unpin> ServerReader<R, W> {
    /// Sends the pong a ping asked for, unless the writer holds the connection (it sends the
    /// pong when its flush ends).
    async fn answer_ping(&mut self) -> io::Result<()> {
        if lock(&self.link.pong).is_none() {
            return Ok(());
        }
        let Some(mut out) = self.link.out.try_lock() else { return Ok(()) };
        out.send_pong(&self.link.pong).await
    }
}

impl<R, W> FrameReader for ServerReader<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    async fn read(&mut self, buf: &mut BytesMut, hint: Option<usize>) -> io::Result<ReadEvent> {
        loop {
            if self.closed {
                return Ok(ReadEvent::Eof);
            }
            self.answer_ping().await?;
            let Some(io) = self.io.as_mut() else { return Ok(ReadEvent::Eof) };
            let start = buf.len();
            if let Some(ahead) = self.read_ahead.take() {
                make_room(buf, hint);
                buf.extend_from_slice(&ahead);
                if let Some(event) = self.take(buf, start)? {
                    return Ok(event);
                }
                continue;
            }
            let read = std::future::poll_fn(|cx| {
                if buf.is_empty() && hint.is_none() && buf.capacity() < MIN_READ {
                    // Between messages the buffer is given back (see `release_if_idle`), and
                    // this task is polled for its writes too, with nothing to read: asked
                    // with room on the stack first, such a poll makes no buffer only to give
                    // it back. What does arrive is copied into a buffer of the size a read
                    // would have made.
                    let mut room = [std::mem::MaybeUninit::<u8>::uninit(); MIN_READ];
                    let mut first = tokio::io::ReadBuf::uninit(&mut room);
                    return match Pin::new(&mut *io).poll_read(cx, &mut first) {
                        Poll::Pending => {
                            release_if_idle(buf, hint);
                            Poll::Pending
                        }
                        Poll::Ready(Ok(())) => {
                            let got = first.filled();
                            if !got.is_empty() {
                                make_room(buf, hint);
                                buf.extend_from_slice(got);
                            }
                            Poll::Ready(Ok(got.len()))
                        }
                        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    };
                }
                make_room(buf, hint);
                match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
                    Poll::Pending => {
                        release_if_idle(buf, hint);
                        Poll::Pending
                    }
                    ready => ready,
                }
            })
            .await;
            match read {
                Ok(0) => {
                    self.peer_gone();
                    return Ok(ReadEvent::Eof);
                }
                Ok(_) => {}
                Err(e) => {
                    self.peer_gone();
                    return Err(e);
                }
            }
            if let Some(event) = self.take(buf, start)? {
                return Ok(event);
            }
        }
    }

    fn take_pong(&mut self) -> Option<Bytes> {
        self.pongs.pop_front()
    }
}

impl<R, W> Drop for ServerReader<R, W> {
    fn drop(&mut self) {
        // Hand the reading half to the writer's close, unless the peer is done sending.
        if let Some(io) = self.io.take() {
            if !self.closed {
                let decoder = std::mem::replace(&mut self.decoder, Decoder::new(0));
                *lock(&self.link.returned) = Some((io, decoder));
            }
        }
        self.link.returned_notify.notify_one();
    }
}

/// Writes frames to the gateway's side of a WebSocket: `01`, each header and each non-empty
/// payload in a binary message of its own (as the original gotalk.js reads them), or each
/// frame in one message (see [`whole_frames`](Self::whole_frames)), flushed together. Made by
/// [`server`].
pub struct ServerWriter<R, W> {
    link: Arc<Link<R, W>>,
    /// Each frame in one message.
    whole: bool,
    /// Headers and small payloads of the batch being built.
    staging: BytesMut,
    /// The batch so far: parts of `staging`, and large payloads by reference.
    chunks: Vec<Bytes>,
}

impl<R, W> ServerWriter<R, W> {
    /// Writes each frame, header and payload, as one message: for a client that reads its
    /// messages as one byte stream, as ours do (they declare it in the URL, see
    /// [`declares_retry`](super::declares_retry)), and as the protocol allows. Half the
    /// messages, so half the work for the server and for a browser, which handles each
    /// message on its own. The original gotalk.js needs the header and the payload apart.
    pub fn whole_frames(mut self, yes: bool) -> Self {
        self.whole = yes;
        self
    }
}

impl<R, W> std::fmt::Debug for ServerWriter<R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerWriter").field("chunks", &self.chunks.len()).finish_non_exhaustive()
    }
}

impl<R, W> ServerWriter<R, W> {
    /// Makes room in the batch buffer for `n` more bytes.
    fn room(&mut self, n: usize) {
        if self.staging.capacity() - self.staging.len() < n {
            self.staging.reserve(n.max(BATCH));
        }
    }

    /// Ends the batch's last run of copied bytes.
    fn seal(&mut self) {
        seal(&mut self.staging, &mut self.chunks);
    }

    /// Gives back the buffers of a batch once it is written, so an idle connection keeps none.
    fn shrink(&mut self) {
        self.staging = BytesMut::new();
        if self.chunks.capacity() > MAX_SLICES {
            self.chunks = Vec::new();
        }
    }
}

/// Moves the copied bytes of `staging` to the end of `chunks`.
fn seal(staging: &mut BytesMut, chunks: &mut Vec<Bytes>) {
    if !staging.is_empty() {
        chunks.push(staging.split().freeze());
    }
}

impl<R: AsyncRead + Unpin, W> ServerWriter<R, W> {
    /// Reads and discards what the peer still sends, until its Close, its end or a silence of
    /// [`LINGER_QUIET`], for at most [`LINGER`], once the reader has handed its half back
    /// (unless the peer is done).
    async fn linger(&self) {
        let deadline = Instant::now() + LINGER;
        let returned = async {
            loop {
                let notified = self.link.returned_notify.notified();
                if let Some(returned) = lock(&self.link.returned).take() {
                    return Some(returned);
                }
                let peer = *lock(&self.link.peer);
                if peer.closed.is_some() || peer.gone {
                    return None;
                }
                notified.await;
            }
        };
        let Ok(Some((mut io, mut decoder))) = tokio::time::timeout_at(deadline, returned).await
        else {
            return;
        };
        decoder.drain();
        let mut scratch = BytesMut::with_capacity(LINGER_READ);
        loop {
            scratch.clear();
            let wait = deadline.min(Instant::now() + LINGER_QUIET);
            match tokio::time::timeout_at(wait, io.read_buf(&mut scratch)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let mut cursor = Cursor::default();
            while decoder.in_step() {
                match decoder.decode(&mut scratch[..], &mut cursor) {
                    Ok(Some(Control::Close(_))) => return,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}

impl<R, W> FrameWriter for ServerWriter<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    fn buffer_version(&mut self) {
        self.room(4);
        frame::encode_header(&mut self.staging, frame::BINARY, 2);
        encode_version(&mut self.staging);
    }

    fn buffer_frame(&mut self, frame: &Frame) {
        let payload = frame.payload();
        let copied = if payload.len() < COPY_LIMIT { payload.len() } else { 0 };
        self.room(2 * frame::MAX_HEADER + frame.header_len() + copied);
        // The first message is the gotalk header, with the payload when frames go whole.
        let first = frame.header_len() + if self.whole { payload.len() } else { 0 };
        frame::encode_header(&mut self.staging, frame::BINARY, first);
        frame.encode_header(&mut self.staging);
        if !self.whole {
            if payload.is_empty() {
                return;
            }
            frame::encode_header(&mut self.staging, frame::BINARY, payload.len());
        }
        if payload.len() < COPY_LIMIT {
            self.staging.extend_from_slice(payload);
        } else {
            self.seal();
            self.chunks.push(payload.clone());
        }
    }

    fn buffer_ping(&mut self, payload: &[u8]) -> bool {
        self.room(2 + frame::MAX_CONTROL);
        frame::encode_control(&mut self.staging, frame::PING, payload);
        true
    }

    async fn flush(&mut self) -> io::Result<()> {
        let mut out = self.link.out.lock().await;
        if self.chunks.is_empty() && out.queue.is_empty() && !out.closed {
            // Small frames only, and nothing left over: one write straight from the batch
            // buffer, which then makes no shared chunk to queue. What that write does not
            // take is queued as below, so a flush cut short still leaves whole frames.
            let io = &mut out.io;
            let staged = &self.staging[..];
            let written =
                std::future::poll_fn(|cx| match Pin::new(&mut *io).poll_write(cx, staged) {
                    Poll::Pending => Poll::Ready(Ok(0)),
                    done => done,
                })
                .await?;
            self.staging.advance(written);
        }
        // On the fields, not `self.seal()`: the lock borrows the link.
        seal(&mut self.staging, &mut self.chunks);
        if out.closed {
            self.chunks.clear();
        }
        out.queue.extend(self.chunks.drain(..));
        out.write_queue().await?;
        out.send_pong(&self.link.pong).await?;
        out.io.flush().await?;
        drop(out);
        // A ping read while this flush held the connection left its pong to us.
        if lock(&self.link.pong).is_some() {
            self.link.out.lock().await.send_pong(&self.link.pong).await?;
        }
        self.shrink();
        Ok(())
    }

    async fn shutdown(&mut self, reason: &CloseReason) -> io::Result<()> {
        self.seal();
        let peer = *lock(&self.link.peer);
        let mut out = self.link.out.lock().await;
        if !out.closed {
            out.closed = true;
            let (code, text) = match (peer.violation, peer.closed) {
                (Some((code, text)), _) => (Some(code), text.to_owned()),
                // The close handshake: the peer's code is echoed.
                (None, Some(code)) => (code, String::new()),
                (None, None) => (Some(close_code(reason)), close_text(reason)),
            };
            let mut close = BytesMut::new();
            frame::encode_close(&mut close, code, &text);
            out.queue.extend(self.chunks.drain(..));
            out.queue.push_back(close.freeze());
        }
        self.chunks.clear();
        let sent = match out.write_queue().await {
            Ok(()) => out.io.shutdown().await,
            Err(e) => Err(e),
        };
        drop(out);
        self.shrink();
        self.linger().await;
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gotalk_protocol::{Id, Name};
    use tokio::io::DuplexStream;

    /// A masked client frame, with a key that changes every byte.
    fn client(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let key = [0xa5, 0x5a, 0x0f, 0xf0];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        assert!(payload.len() < 65536);
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    type Reader = ServerReader<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;
    type Writer = ServerWriter<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;

    fn pair() -> (Reader, Writer, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let config = Config::default().max_payload(1000);
        let (r, w) = server(ours, &config);
        (r, w, theirs)
    }

    /// Every frame `peer` has received so far: (opcode, payload).
    async fn received(peer: &mut DuplexStream) -> Vec<(u8, Vec<u8>)> {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(50), peer.read(&mut chunk)).await
        {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        let mut frames = Vec::new();
        let mut rest = &bytes[..];
        while rest.len() >= 2 {
            let (len, at) = match rest[1] {
                126 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
                127 => (u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize, 10),
                n => (n as usize, 2),
            };
            assert_eq!(rest[1] & 0x80, 0, "server frames are not masked");
            frames.push((rest[0] & 0x0f, rest[at..at + len].to_vec()));
            rest = &rest[at + len..];
        }
        frames
    }

    #[tokio::test]
    async fn data_of_both_kinds_reaches_the_buffer_unmasked_and_pings_get_pongs() {
        let (mut reader, _writer, mut peer) = pair();
        let wire = [
            client(frame::BINARY, false, b"r0001004echo"),
            client(frame::PING, true, b"probe"),
            client(frame::CONTINUATION, true, b"00000002"),
            client(frame::TEXT, true, b"ok"),
        ]
        .concat();
        peer.write_all(&wire).await.unwrap();
        let mut buf = BytesMut::from(&b"already"[..]);
        let mut got = 0;
        while got < 22 {
            match reader.read(&mut buf, None).await.unwrap() {
                ReadEvent::Data(n) | ReadEvent::Partial(n) => got += n,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(&buf[..], b"alreadyr0001004echo00000002ok");
        // The next read answers the ping before it waits.
        let _ = tokio::time::timeout(Duration::from_millis(50), reader.read(&mut buf, None)).await;
        assert_eq!(received(&mut peer).await, [(frame::PONG, b"probe".to_vec())]);
    }

    #[tokio::test]
    async fn a_flush_the_socket_takes_part_of_leaves_whole_frames_and_pongs_between_them() {
        // A socket that takes 8 bytes at a time until its peer reads.
        let (ours, peer) = tokio::io::duplex(8);
        let (mut reader, writer) = server(ours, &Config::default());
        let mut writer = writer.whole_frames(true);
        let result = Frame::SingleResult { id: Id(*b"0001"), payload: Bytes::from("a result") };
        writer.buffer_frame(&result);
        // Cut short: the first write took 8 bytes, the rest is queued.
        let cut = tokio::time::timeout(Duration::from_millis(50), writer.flush()).await;
        assert!(cut.is_err(), "the flush should wait for the peer");
        // A ping read now: its pong must wait for the end of the frame under way. (The ping
        // goes 8 bytes at a time too, as the reader reads.)
        let (peer_read, mut peer_write) = tokio::io::split(peer);
        let ping = tokio::spawn(async move {
            peer_write.write_all(&client(frame::PING, true, b"probe")).await.unwrap();
            peer_write
        });
        let mut buf = BytesMut::new();
        for _ in 0..4 {
            let _ =
                tokio::time::timeout(Duration::from_millis(20), reader.read(&mut buf, None)).await;
        }
        let mut peer = peer_read.unsplit(ping.await.unwrap());
        let flushed = tokio::spawn(async move {
            writer.flush().await.unwrap();
            writer
        });
        let got = received(&mut peer).await;
        flushed.await.unwrap();
        assert_eq!(
            got,
            [(frame::BINARY, b"R000100000008a result".to_vec()), (frame::PONG, b"probe".to_vec())]
        );
    }

    /// Buffers the version, then a small result, a large notification and an empty result;
    /// returns the notification and its payload.
    fn buffer_three(writer: &mut Writer) -> (Frame, Bytes) {
        writer.buffer_version();
        let small = Frame::SingleResult { id: Id(*b"0001"), payload: Bytes::from("ok") };
        let large = Bytes::from(vec![b'x'; 20_000]);
        let notification =
            Frame::Notification { name: Name::new("big").unwrap(), payload: large.clone() };
        let empty = Frame::SingleResult { id: Id(*b"0002"), payload: Bytes::new() };
        for frame in [&small, &notification, &empty] {
            writer.buffer_frame(frame);
        }
        (notification, large)
    }

    #[tokio::test]
    async fn whole_frames_go_out_one_message_each_and_large_payloads_by_reference() {
        let (_reader, writer, mut peer) = pair();
        let mut writer = writer.whole_frames(true);
        let (notification, large) = buffer_three(&mut writer);
        assert!(writer.chunks.iter().any(|c| c.as_ptr() == large.as_ptr()), "not copied");
        writer.flush().await.unwrap();
        let mut whole = BytesMut::new();
        notification.encode(&mut whole);
        assert_eq!(
            received(&mut peer).await,
            [
                (frame::BINARY, b"01".to_vec()),
                (frame::BINARY, b"R000100000002ok".to_vec()),
                (frame::BINARY, whole.to_vec()),
                (frame::BINARY, b"R000200000000".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn frames_go_out_as_gotalk_js_reads_them_and_large_payloads_by_reference() {
        let (_reader, mut writer, mut peer) = pair();
        let (notification, large) = buffer_three(&mut writer);
        assert!(writer.buffer_ping(b"cookie"));
        assert!(
            writer.chunks.iter().any(|c| c.as_ptr() == large.as_ptr()),
            "the large payload is not copied"
        );
        writer.flush().await.unwrap();
        let mut header = BytesMut::new();
        notification.encode_header(&mut header);
        assert_eq!(
            received(&mut peer).await,
            [
                (frame::BINARY, b"01".to_vec()),
                (frame::BINARY, b"R000100000002".to_vec()),
                (frame::BINARY, b"ok".to_vec()),
                (frame::BINARY, header.to_vec()),
                (frame::BINARY, large.to_vec()),
                (frame::BINARY, b"R000200000000".to_vec()),
                (frame::PING, b"cookie".to_vec()),
            ]
        );
        assert!(writer.chunks.is_empty() && writer.staging.capacity() == 0);
    }

    #[tokio::test]
    async fn a_violation_is_closed_with_its_code_and_the_rest_is_read_to_the_peers_close() {
        let (mut reader, mut writer, mut peer) = pair();
        // A message over 1000 + 8 KiB, declared by its header.
        let mut too_big = vec![0x82, 0xfe];
        too_big.extend_from_slice(&10_000u16.to_be_bytes());
        too_big.extend_from_slice(&[0, 0, 0, 0]);
        peer.write_all(&too_big).await.unwrap();
        let mut buf = BytesMut::new();
        let err = reader.read(&mut buf, None).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        drop(reader);
        let closing = tokio::spawn(async move {
            writer.shutdown(&CloseReason::Local).await.unwrap();
            Instant::now()
        });
        // The peer goes on sending its message, then answers the Close.
        peer.write_all(&[0; 10_000]).await.unwrap();
        peer.write_all(&client(frame::CLOSE, true, &1009u16.to_be_bytes())).await.unwrap();
        let started = Instant::now();
        let closed_at = closing.await.unwrap();
        assert!(closed_at - started < LINGER, "the peer's Close ends the linger");
        let mut close = b"\x03\xf1".to_vec();
        close.extend_from_slice(b"message too big");
        assert_eq!(received(&mut peer).await, [(frame::CLOSE, close)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_answers_our_close_is_read_until_quiet_for_the_linger_at_most() {
        let (reader, mut writer, mut peer) = pair();
        drop(reader);
        let started = Instant::now();
        // The peer keeps sending data, never its Close.
        let chatter = tokio::spawn(async move {
            let message = client(frame::BINARY, true, b"still talking");
            while peer.write_all(&message).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        writer.shutdown(&CloseReason::Local).await.unwrap();
        assert_eq!(started.elapsed(), LINGER);
        drop(writer);
        chatter.await.unwrap();

        // A peer that says nothing more is given up on once it has been quiet a while.
        let (reader, mut writer, _peer) = pair();
        drop(reader);
        let started = Instant::now();
        writer.shutdown(&CloseReason::Local).await.unwrap();
        assert_eq!(started.elapsed(), LINGER_QUIET);
    }

    #[tokio::test]
    async fn the_peers_close_is_answered_with_its_code_and_ends_the_reads() {
        let (mut reader, mut writer, mut peer) = pair();
        let wire = [client(frame::BINARY, true, b"01"), client(frame::CLOSE, true, &[0x0f, 0xa0])]
            .concat();
        peer.write_all(&wire).await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(reader.read(&mut buf, None).await.unwrap(), ReadEvent::Data(2));
        assert_eq!(reader.read(&mut buf, None).await.unwrap(), ReadEvent::Eof);
        drop(reader);
        writer.shutdown(&CloseReason::PeerClosed).await.unwrap();
        assert_eq!(received(&mut peer).await, [(frame::CLOSE, vec![0x0f, 0xa0])]);
    }
}
