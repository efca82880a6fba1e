//! A load generator that speaks raw gotalk bytes, so no server it loads is favoured by sharing
//! code with it: `depth` `echo` requests in flight on each connection, every answer matched to
//! its request by id and its payload checked.
//!
//! Over TCP the messages go straight onto the socket; over WebSocket each message travels in
//! one masked binary frame (mask key zero: the server still unmasks, the client copies nothing)
//! and the frames that come back are read as one byte stream, as gotalk does, since a server
//! may split a message over frames. A raw echo server returns each request as it was sent; the
//! generator then takes the request it gets back as the answer (`Expect::Echo`), so the
//! ceiling moves the same bytes with no protocol work.
//!
//! Each connection is one task doing non-blocking reads and writes, on a single-threaded
//! runtime of its own thread, so the client spends as little as it can per round trip and
//! never blocks on a full socket whatever is in flight.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::Window;

/// How a connection carries gotalk messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Tcp,
    /// WebSocket, upgraded at `/gotalk/`.
    Ws,
}

/// What comes back for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// A gotalk server: a single result with the same payload.
    Result,
    /// A raw echo: the request itself.
    Echo,
}

/// The operation every request calls.
const OP: &[u8] = b"echo";

/// An open connection, through the WebSocket upgrade and the gotalk version exchange.
pub(super) struct Conn {
    stream: TcpStream,
    framing: Framing,
    /// Bytes read past the handshake, the start of what follows.
    pending: Vec<u8>,
}

/// Connects and shakes hands: the upgrade over WebSocket, then each side's version `01`.
pub(super) async fn connect(addr: SocketAddr, framing: Framing) -> anyhow::Result<Conn> {
    let stream = TcpStream::connect(addr).await.context("connect")?;
    stream.set_nodelay(true)?;
    let mut conn = Conn { stream, framing, pending: Vec::new() };
    if framing == Framing::Ws {
        let upgrade = format!(
            "GET /gotalk/ HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        write_all(&conn.stream, upgrade.as_bytes()).await?;
        let mut head = Vec::new();
        let end = loop {
            read_some(&conn.stream, &mut head).await.context("read the upgrade's answer")?;
            if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            ensure!(head.len() < 16 * 1024, "the upgrade's answer has no end");
        };
        ensure!(
            head.starts_with(b"HTTP/1.1 101"),
            "the server refused the upgrade: {:?}",
            String::from_utf8_lossy(&head[..end])
        );
        conn.pending = head.split_off(end);
    }
    let mut out = Vec::new();
    conn.frame(&mut out, b"01");
    write_all(&conn.stream, &out).await?;
    let mut stream = Vec::new();
    let mut input = std::mem::take(&mut conn.pending);
    while stream.len() < 2 {
        if conn.deframe(&mut input, &mut stream)? == 0 {
            read_some(&conn.stream, &mut input).await.context("read the server's version")?;
        }
    }
    ensure!(&stream[..2] == b"01", "the server's version is {:?}, not 01", &stream[..2]);
    conn.pending = input;
    // What followed the version in the same frame belongs to the byte stream; nothing may
    // come before the first request is sent, and a server that sends something is broken.
    ensure!(stream.len() == 2, "the server sent more than its version before any request");
    Ok(conn)
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> anyhow::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Appends what the socket has to `buf`; fails at end of stream.
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut chunk) {
            Ok(0) => bail!("the server closed the connection"),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
}

impl Conn {
    /// Appends `message` to `out` as this connection sends it.
    fn frame(&self, out: &mut Vec<u8>, message: &[u8]) {
        if self.framing == Framing::Ws {
            ws_header(out, message.len());
        }
        out.extend_from_slice(message);
    }

    /// Over WebSocket, moves the payloads of the whole frames at the start of `input` to
    /// `stream` and removes them from `input`; over TCP, moves everything. Returns how many
    /// bytes it moved.
    fn deframe(&self, input: &mut Vec<u8>, stream: &mut Vec<u8>) -> anyhow::Result<usize> {
        if self.framing == Framing::Tcp {
            let n = input.len();
            stream.append(input);
            return Ok(n);
        }
        let mut at = 0;
        let mut moved = 0;
        while let Some((opcode, start, end)) = ws_frame(&input[at..])? {
            match opcode {
                // Continuation, text and binary frames all carry the byte stream.
                0..=2 => {
                    stream.extend_from_slice(&input[at + start..at + end]);
                    moved += end - start;
                }
                8 => bail!("the server closed the WebSocket"),
                // Pings and pongs: no server pings a connection this busy; skipped.
                _ => {}
            }
            at += end;
        }
        input.drain(..at);
        Ok(moved)
    }
}

/// A client frame's header: final binary frame, masked with the key zero.
fn ws_header(out: &mut Vec<u8>, len: usize) {
    out.push(0x82);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0; 4]);
}

/// The first whole server frame in `buf`: its opcode and where its payload starts and ends.
fn ws_frame(buf: &[u8]) -> anyhow::Result<Option<(u8, usize, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    ensure!(buf[1] & 0x80 == 0, "the server masked a frame");
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into()?), 10),
        126 | 127 => return Ok(None),
        len => (u64::from(len), 2),
    };
    let end = start + usize::try_from(len)?;
    Ok((buf.len() >= end).then_some((buf[0] & 0x0f, start, end)))
}

/// A request in flight.
#[derive(Clone, Copy)]
struct Slot {
    id: u32,
    sent: Instant,
    busy: bool,
}

/// The id of the `round`th request of slot `slot`: the slot in the low half, so an answer
/// finds its slot at once, and the round in the high half, so a stale answer is caught.
fn id(slot: usize, round: u32) -> u32 {
    (round << 16) | slot as u32
}

/// The payload of request `id`: the id in its first bytes, so an answer carrying another
/// request's payload is caught, then a fixed pattern.
fn payload(template: &[u8], id: u32, out: &mut Vec<u8>) {
    let tag = id.to_be_bytes();
    let n = template.len().min(4);
    out.extend_from_slice(&tag[..n]);
    out.extend_from_slice(&template[n..]);
}

/// Encodes request `id`: `r`, the id, the operation's length and name, the payload's length
/// and the payload.
fn request(template: &[u8], id: u32) -> Vec<u8> {
    let mut message = Vec::with_capacity(template.len() + 20);
    message.push(b'r');
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(format!("{:03x}", OP.len()).as_bytes());
    message.extend_from_slice(OP);
    message.extend_from_slice(format!("{:08x}", template.len()).as_bytes());
    payload(template, id, &mut message);
    message
}

fn hex(digits: &[u8]) -> anyhow::Result<usize> {
    let text = std::str::from_utf8(digits).context("a length is not hex text")?;
    usize::from_str_radix(text, 16).with_context(|| format!("{text:?} is not a hex length"))
}

/// A whole message at the start of the byte stream: its type, its id (zero without one),
/// where its payload starts, and its whole length.
type Message = (u8, [u8; 4], usize, usize);

/// The message at the start of the byte stream, if it is whole.
fn message(buf: &[u8]) -> anyhow::Result<Option<Message>> {
    let Some(&kind) = buf.first() else { return Ok(None) };
    // (bytes of the header before the payload's length, whether it has an id and a name)
    let (id, name) = match kind {
        b'R' | b'E' => (true, false),
        b'r' => (true, true),
        b'n' => (false, true),
        b'h' => {
            // `h`, load (4 hex digits), time (8 hex digits); no payload.
            return Ok((buf.len() >= 13).then_some((kind, [0; 4], 13, 13)));
        }
        other => bail!("the server sent a message of type {:?}", other as char),
    };
    let mut at = 1;
    let mut tag = [0; 4];
    if id {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        tag.copy_from_slice(&buf[at..at + 4]);
        at += 4;
    }
    if name {
        if buf.len() < at + 3 {
            return Ok(None);
        }
        at += 3 + hex(&buf[at..at + 3])?;
    }
    if buf.len() < at + 8 {
        return Ok(None);
    }
    let size = hex(&buf[at..at + 8])?;
    at += 8;
    Ok((buf.len() >= at + size).then_some((kind, tag, at, at + size)))
}

/// Keeps `depth` requests with `size`-byte payloads in flight on `conn` until the window ends,
/// and returns the latency of every round trip that ended inside it.
pub(super) async fn pipeline(
    mut conn: Conn,
    depth: usize,
    size: usize,
    expect: Expect,
    window: Window,
) -> anyhow::Result<Vec<u64>> {
    ensure!(depth <= 1 << 16, "at most 65,536 requests in flight per connection");
    let template: Vec<u8> = (0..size).map(|k| b'a' + (k % 26) as u8).collect();
    let mut out: Vec<u8> = Vec::with_capacity(depth * (size + 40));
    let mut written = 0;
    // Raw bytes read, and over WebSocket the byte stream their frames carry.
    let mut input = std::mem::take(&mut conn.pending);
    let mut stream: Vec<u8> = Vec::new();
    let read_size = (depth * (size + 40)).clamp(16 * 1024, 1 << 20);
    let mut expected = Vec::with_capacity(size);
    let now = Instant::now();
    let mut slots = vec![Slot { id: 0, sent: now, busy: true }; depth];
    for (k, slot) in slots.iter_mut().enumerate() {
        slot.id = id(k, 0);
        conn.frame(&mut out, &request(&template, slot.id));
    }
    let mut busy = depth;
    let mut latencies = Vec::new();
    while busy > 0 {
        if written < out.len() {
            match conn.stream.try_write(&out[written..]) {
                Ok(n) => {
                    written += n;
                    if written == out.len() {
                        out.clear();
                        written = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("write to the server"),
            }
        }
        input.reserve(read_size);
        match conn.stream.try_read_buf(&mut input) {
            Ok(0) => bail!("the server closed the connection"),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let interest = if written < out.len() {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                conn.stream.ready(interest).await?;
                continue;
            }
            Err(e) => return Err(e).context("read from the server"),
        }
        let done = Instant::now();
        // Over TCP the input is the byte stream itself.
        let bytes = if conn.framing == Framing::Tcp {
            &mut input
        } else {
            conn.deframe(&mut input, &mut stream)?;
            &mut stream
        };
        let mut at = 0;
        while let Some((kind, tag, start, end)) = message(&bytes[at..])? {
            let answer = match (kind, expect) {
                (b'R', Expect::Result) | (b'r', Expect::Echo) => true,
                (b'h' | b'n', _) => false,
                (b'E', _) => bail!(
                    "the server answered with an error: {}",
                    String::from_utf8_lossy(&bytes[at + start..at + end])
                ),
                (other, _) => bail!("the server sent an unexpected {:?} message", other as char),
            };
            if answer {
                let id = u32::from_be_bytes(tag);
                let k = (id & 0xffff) as usize;
                let slot = slots.get_mut(k).filter(|s| s.busy && s.id == id);
                let slot = slot.with_context(|| format!("an answer to no request ({id:#x})"))?;
                expected.clear();
                payload(&template, id, &mut expected);
                ensure!(
                    bytes[at + start..at + end] == expected[..],
                    "the answer to request {id:#x} carries other bytes than were sent"
                );
                window.record(&mut latencies, slot.sent, done);
                if done < window.end {
                    slot.id = id.wrapping_add(1 << 16);
                    slot.sent = done;
                    let next = request(&template, slot.id);
                    conn.frame(&mut out, &next);
                } else {
                    slot.busy = false;
                    busy -= 1;
                }
            }
            at += end;
        }
        bytes.drain(..at);
    }
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_parses_back_as_itself() {
        let template = b"abcdefgh".to_vec();
        let encoded = request(&template, id(3, 7));
        let (kind, tag, start, end) = message(&encoded).unwrap().unwrap();
        assert_eq!((kind, u32::from_be_bytes(tag), end), (b'r', id(3, 7), encoded.len()));
        assert_eq!(&encoded[start..start + 4], &id(3, 7).to_be_bytes());
        assert_eq!(message(&encoded[..end - 1]).unwrap(), None);
    }

    #[test]
    fn frames_of_every_length_class_parse_back() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let mut out = Vec::new();
            ws_header(&mut out, len);
            out.resize(out.len() + len, 7);
            // Server frames are unmasked: drop the mask bit and the key.
            out[1] &= 0x7f;
            let key = out.len() - len - 4;
            out.drain(key..key + 4);
            let (opcode, start, end) = ws_frame(&out).unwrap().unwrap();
            assert_eq!((opcode, end - start, end), (2, len, out.len()));
        }
    }
}
