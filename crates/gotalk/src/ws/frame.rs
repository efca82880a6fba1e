//! RFC 6455 framing for the server's side of a WebSocket, with no I/O.
//!
//! The [`Decoder`] works in place on the bytes the transport has just read: it unmasks the
//! payloads of data frames and moves them to the front, over the frame headers, so the
//! gotalk byte stream they carry is never copied into a message of its own and no WebSocket
//! message or frame is ever assembled. Control frames (at most 125 bytes) are collected and
//! returned one at a time. Every rule a server must enforce is checked as the bytes arrive,
//! each with the close code that answers it.
//!
//! Encoding writes server frames: unmasked, never fragmented.

use bytes::{BufMut, Bytes};

use super::utf8::Utf8;

/// A continuation of a fragmented message.
pub(crate) const CONTINUATION: u8 = 0x0;
/// A text message (or its first fragment).
pub(crate) const TEXT: u8 = 0x1;
/// A binary message (or its first fragment).
pub(crate) const BINARY: u8 = 0x2;
/// A close frame.
pub(crate) const CLOSE: u8 = 0x8;
/// A ping.
pub(crate) const PING: u8 = 0x9;
/// A pong.
pub(crate) const PONG: u8 = 0xA;

/// The most a control frame may carry.
pub(crate) const MAX_CONTROL: usize = 125;
/// The most a close frame's reason may hold, after its code.
pub(crate) const MAX_CLOSE_REASON: usize = MAX_CONTROL - 2;
/// The longest header a server writes: two bytes and a 64-bit length.
pub(crate) const MAX_HEADER: usize = 10;
/// The longest client header: two bytes, a 64-bit length and the mask.
const MAX_CLIENT_HEADER: usize = 14;

/// A rule of RFC 6455 the peer broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Violation {
    /// Clients must mask every frame.
    #[error("a client frame is not masked")]
    Unmasked,
    /// No extension is negotiated, so no reserved bit may be set.
    #[error("reserved bits set without an extension")]
    ReservedBits,
    /// An opcode RFC 6455 does not define.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// Control frames may not be fragmented.
    #[error("a fragmented control frame")]
    FragmentedControl,
    /// Control frames carry at most 125 bytes.
    #[error("a control frame of more than 125 bytes")]
    ControlTooLong,
    /// A continuation frame with no message to continue.
    #[error("a continuation frame outside a message")]
    UnexpectedContinuation,
    /// A new data message before the last one's final fragment.
    #[error("a new message before the last one ended")]
    ExpectedContinuation,
    /// A 64-bit length must have its most significant bit clear.
    #[error("a frame length with its most significant bit set")]
    BadLength,
    /// A close frame's payload is empty or at least a two-byte code.
    #[error("a close frame of one byte")]
    ShortClose,
    /// A close code that may not be sent (1005, 1006, 1015, unassigned ones).
    #[error("close code {0} may not be sent")]
    BadCloseCode(u16),
    /// A text message that is not UTF-8.
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    /// A close reason that is not UTF-8.
    #[error("invalid UTF-8 in a close reason")]
    InvalidCloseReason,
    /// A message larger than the limit, counted across its fragments.
    #[error("message too big")]
    TooBig,
}

impl Violation {
    /// The close code that tells the peer what it broke.
    pub(crate) fn close_code(self) -> u16 {
        match self {
            Violation::InvalidUtf8 | Violation::InvalidCloseReason => super::CLOSE_INVALID_DATA,
            Violation::TooBig => super::CLOSE_TOO_BIG,
            _ => super::CLOSE_PROTOCOL_ERROR,
        }
    }

    /// The close frame's text: the rule's kind, as clients have always been told it.
    pub(crate) fn close_text(self) -> &'static str {
        match self {
            Violation::InvalidUtf8 | Violation::InvalidCloseReason => {
                "invalid UTF-8 in a text message"
            }
            Violation::TooBig => "message too big",
            _ => "websocket protocol error",
        }
    }
}

/// A control frame from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// A ping, to be answered with a pong carrying the same bytes.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer is closing, with this code if it sent one (its reason is checked, then
    /// dropped).
    Close(Option<u16>),
}

/// Where [`Decoder::decode`] is in a buffer: data is written at `written`, bytes are read at
/// `read`, and `written <= read` always.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The end of the data written so far.
    pub(crate) written: usize,
    /// The end of the bytes decoded so far.
    pub(crate) read: usize,
}

/// The frame whose payload is arriving.
#[derive(Debug, Clone, Copy)]
struct Payload {
    opcode: u8,
    fin: bool,
    remaining: u64,
    mask: [u8; 4],
    /// Where in the mask the next byte is.
    phase: usize,
    /// Passed over unread: a frame after a violation, or data while draining.
    skip: bool,
}

/// The data message in progress.
#[derive(Debug, Clone, Copy)]
struct Message {
    text: bool,
    len: u64,
}

/// Decodes a client's frames in place. See the module docs.
#[derive(Debug)]
pub(crate) struct Decoder {
    max_message: u64,
    /// A header cut between reads.
    head: [u8; MAX_CLIENT_HEADER],
    head_len: usize,
    payload: Option<Payload>,
    message: Option<Message>,
    utf8: Utf8,
    /// The payload of the control frame arriving.
    control: Vec<u8>,
    /// Data is passed over and only control frames are returned: the connection is closing.
    draining: bool,
    failed: Option<Violation>,
    /// Frames can no longer be told apart (a length that cannot be skipped).
    lost: bool,
    /// A data message has ended since [`take_ended`](Self::take_ended) was last called.
    ended: bool,
}

impl Decoder {
    /// A decoder for messages of at most `max_message` bytes, counted across fragments.
    pub(crate) fn new(max_message: u64) -> Self {
        Decoder {
            max_message,
            head: [0; MAX_CLIENT_HEADER],
            head_len: 0,
            payload: None,
            message: None,
            utf8: Utf8::default(),
            control: Vec::new(),
            draining: false,
            failed: None,
            lost: false,
            ended: false,
        }
    }

    /// True when a data message has ended since the last call: only a whole message shows
    /// the peer is alive, since a peer in the middle of a frame cannot answer a probe.
    pub(crate) fn take_ended(&mut self) -> bool {
        std::mem::take(&mut self.ended)
    }

    /// From now on, data and broken rules are passed over and only control frames are
    /// returned, so a closing connection can find the peer's Close.
    pub(crate) fn drain(&mut self) {
        self.draining = true;
        if let Some(payload) = &mut self.payload {
            payload.skip |= !is_control(payload.opcode);
        }
    }

    /// False once frames can no longer be found in the bytes (only a length with its top bit
    /// set does that: every other broken rule leaves a frame that can be skipped).
    pub(crate) fn in_step(&self) -> bool {
        !self.lost
    }

    /// Decodes `buf[cursor.read..]`: unmasks the data payloads and moves them to
    /// `buf[cursor.written..]`, advancing both. Returns at the first control frame, or with
    /// `None` once every byte is used (a header cut short is kept for the next call).
    ///
    /// # Errors
    /// The first rule the peer broke. Data before it has been written. While draining,
    /// only a lost framing is an error.
    pub(crate) fn decode(
        &mut self,
        buf: &mut [u8],
        cursor: &mut Cursor,
    ) -> Result<Option<Control>, Violation> {
        loop {
            if self.lost {
                return Err(Violation::BadLength);
            }
            if let (Some(violation), false) = (self.failed, self.draining) {
                return Err(violation);
            }
            if cursor.read >= buf.len() && self.payload.is_none_or(|p| p.remaining > 0) {
                return Ok(None);
            }
            let Some(mut payload) = self.payload else {
                self.read_header(buf, cursor)?;
                continue;
            };
            let n = usize::try_from(payload.remaining)
                .unwrap_or(usize::MAX)
                .min(buf.len() - cursor.read);
            let bytes = cursor.read..cursor.read + n;
            cursor.read += n;
            payload.remaining -= n as u64;
            if is_control(payload.opcode) && !payload.skip {
                let start = self.control.len();
                self.control.extend_from_slice(&buf[bytes]);
                unmask(&mut self.control[start..], payload.mask, payload.phase);
            } else if !payload.skip {
                if cursor.written != bytes.start {
                    buf.copy_within(bytes.clone(), cursor.written);
                }
                let data = &mut buf[cursor.written..cursor.written + n];
                unmask(data, payload.mask, payload.phase);
                cursor.written += n;
                if self.message.is_some_and(|m| m.text) && self.utf8.feed(data).is_err() {
                    self.payload = Some(Payload { skip: true, ..payload });
                    return Err(self.fail(Violation::InvalidUtf8));
                }
            }
            payload.phase = (payload.phase + n) % 4;
            if payload.remaining > 0 {
                self.payload = Some(payload);
                continue;
            }
            self.payload = None;
            if let Some(control) = self.end_frame(payload)? {
                return Ok(Some(control));
            }
        }
    }

    fn fail(&mut self, violation: Violation) -> Violation {
        self.failed.get_or_insert(violation);
        violation
    }

    /// How long the header being gathered is, as far as its first bytes tell.
    fn header_len(&self) -> usize {
        if self.head_len < 2 {
            return 2;
        }
        let extended = match self.head[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    /// Takes header bytes from `buf`; once the header is whole, checks it and starts its
    /// payload.
    fn read_header(&mut self, buf: &[u8], cursor: &mut Cursor) -> Result<(), Violation> {
        loop {
            let need = self.header_len();
            if self.head_len == need {
                break;
            }
            let available = &buf[cursor.read..];
            if available.is_empty() {
                return Ok(());
            }
            let n = (need - self.head_len).min(available.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&available[..n]);
            self.head_len += n;
            cursor.read += n;
        }
        let head = &self.head[..self.head_len];
        self.head_len = 0;
        let (b0, b1) = (head[0], head[1]);
        let (len, rest) = match b1 & 0x7f {
            126 => (u64::from(u16::from_be_bytes([head[2], head[3]])), &head[4..]),
            127 => {
                let mut len = [0; 8];
                len.copy_from_slice(&head[2..10]);
                (u64::from_be_bytes(len), &head[10..])
            }
            n => (u64::from(n), &head[2..]),
        };
        if len >> 63 != 0 {
            self.lost = true;
            return Err(self.fail(Violation::BadLength));
        }
        let mut mask = [0; 4];
        let masked = b1 & 0x80 != 0;
        if masked {
            mask.copy_from_slice(rest);
        }
        let opcode = b0 & 0x0f;
        let fin = b0 & 0x80 != 0;
        let mut payload = Payload { opcode, fin, remaining: len, mask, phase: 0, skip: false };
        let checked = self.check(&payload, b0 & 0x70 != 0, masked);
        self.control.clear();
        match checked {
            Ok(()) => {
                payload.skip = self.draining && !is_control(opcode);
                self.payload = Some(payload);
                Ok(())
            }
            Err(violation) => {
                // The frame is still passed over whole, so a draining close finds the next.
                self.payload = Some(Payload { skip: true, ..payload });
                if self.draining {
                    return Ok(());
                }
                Err(self.fail(violation))
            }
        }
    }

    /// Checks a frame's header against the rules and the message in progress.
    /// While draining, only what keeps a control frame small is checked: the rest is skipped.
    fn check(&mut self, frame: &Payload, reserved: bool, masked: bool) -> Result<(), Violation> {
        if reserved && !self.draining {
            return Err(Violation::ReservedBits);
        }
        if !masked && !self.draining {
            return Err(Violation::Unmasked);
        }
        match frame.opcode {
            CLOSE | PING | PONG if !frame.fin => Err(Violation::FragmentedControl),
            CLOSE | PING | PONG if frame.remaining > MAX_CONTROL as u64 => {
                Err(Violation::ControlTooLong)
            }
            CLOSE | PING | PONG => Ok(()),
            _ if self.draining => Ok(()),
            CONTINUATION => {
                let message = self.message.as_mut().ok_or(Violation::UnexpectedContinuation)?;
                message.len = message.len.saturating_add(frame.remaining);
                if message.len > self.max_message {
                    return Err(Violation::TooBig);
                }
                Ok(())
            }
            TEXT | BINARY => {
                if self.message.is_some() {
                    return Err(Violation::ExpectedContinuation);
                }
                self.message = Some(Message { text: frame.opcode == TEXT, len: frame.remaining });
                if frame.remaining > self.max_message {
                    return Err(Violation::TooBig);
                }
                Ok(())
            }
            other => Err(Violation::ReservedOpcode(other)),
        }
    }

    /// The frame's last byte has come.
    fn end_frame(&mut self, frame: Payload) -> Result<Option<Control>, Violation> {
        if frame.skip {
            return Ok(None);
        }
        if !is_control(frame.opcode) {
            if frame.fin {
                let message = self.message.take();
                if message.is_some_and(|m| m.text) && self.utf8.finish().is_err() {
                    return Err(self.fail(Violation::InvalidUtf8));
                }
                self.ended = true;
            }
            return Ok(None);
        }
        let payload = std::mem::take(&mut self.control);
        Ok(Some(match frame.opcode {
            PING => Control::Ping(Bytes::from(payload)),
            PONG => Control::Pong(Bytes::from(payload)),
            _ => match close_code(&payload) {
                Ok(code) => Control::Close(code),
                Err(_) if self.draining => Control::Close(None),
                Err(violation) => return Err(self.fail(violation)),
            },
        }))
    }
}

/// True for the opcodes of control frames (other opcodes from 0xB up are reserved).
fn is_control(opcode: u8) -> bool {
    matches!(opcode, CLOSE | PING | PONG)
}

/// The code of a close frame's payload, checked with its reason.
fn close_code(payload: &[u8]) -> Result<Option<u16>, Violation> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(Violation::ShortClose),
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(Violation::BadCloseCode(code));
    }
    std::str::from_utf8(reason).map_err(|_| Violation::InvalidCloseReason)?;
    Ok(Some(code))
}

/// XORs `data` with `mask`, starting `phase` bytes into it.
fn unmask(data: &mut [u8], mask: [u8; 4], phase: usize) {
    let key: [u8; 4] = std::array::from_fn(|i| mask[(phase + i) % 4]);
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// Writes the header of an unfragmented, unmasked frame carrying `len` bytes.
pub(crate) fn encode_header(dst: &mut impl BufMut, opcode: u8, len: usize) {
    dst.put_u8(0x80 | opcode);
    match len {
        0..=125 => dst.put_u8(len as u8),
        126..=0xffff => {
            dst.put_u8(126);
            dst.put_u16(len as u16);
        }
        _ => {
            dst.put_u8(127);
            dst.put_u64(len as u64);
        }
    }
}

/// Writes a whole control frame; a payload over 125 bytes is cut to fit.
pub(crate) fn encode_control(dst: &mut impl BufMut, opcode: u8, payload: &[u8]) {
    let payload = &payload[..payload.len().min(MAX_CONTROL)];
    encode_header(dst, opcode, payload.len());
    dst.put_slice(payload);
}

/// Writes a close frame with `code` and `reason`, or an empty one; a reason over 123 bytes is
/// cut at a character boundary.
pub(crate) fn encode_close(dst: &mut impl BufMut, code: Option<u16>, reason: &str) {
    let Some(code) = code else {
        encode_header(dst, CLOSE, 0);
        return;
    };
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    encode_header(dst, CLOSE, 2 + end);
    dst.put_u16(code);
    dst.put_slice(&reason.as_bytes()[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame, masked with `key`.
    fn client(opcode: u8, fin: bool, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// What decoding `wire` in pieces of `piece` bytes gives: the data, the controls, and
    /// the first violation.
    fn decode_in_pieces(
        wire: &[u8],
        piece: usize,
        max: u64,
    ) -> (Vec<u8>, Vec<Control>, Option<Violation>) {
        let mut decoder = Decoder::new(max);
        let (mut data, mut controls) = (Vec::new(), Vec::new());
        for chunk in wire.chunks(piece.max(1)) {
            let mut buf = chunk.to_vec();
            let mut cursor = Cursor::default();
            loop {
                match decoder.decode(&mut buf, &mut cursor) {
                    Ok(Some(control)) => controls.push(control),
                    Ok(None) => break,
                    Err(violation) => {
                        data.extend_from_slice(&buf[..cursor.written]);
                        return (data, controls, Some(violation));
                    }
                }
            }
            assert_eq!(cursor.read, buf.len(), "every byte is used");
            data.extend_from_slice(&buf[..cursor.written]);
        }
        (data, controls, None)
    }

    fn decode_all(wire: &[u8]) -> (Vec<u8>, Vec<Control>, Option<Violation>) {
        decode_in_pieces(wire, wire.len(), 1 << 20)
    }

    #[test]
    fn the_rfc_example_of_a_masked_hello() {
        let wire = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(decode_all(&wire), (b"Hello".to_vec(), vec![], None));
    }

    #[test]
    fn fragments_and_interleaved_controls_in_any_pieces() {
        let mut wire = client(TEXT, false, "héllo, ".as_bytes(), KEY);
        wire.extend(client(PING, true, b"are you there", [1, 2, 3, 4]));
        wire.extend(client(CONTINUATION, false, "wörld".as_bytes(), [9, 8, 7, 6]));
        wire.extend(client(PONG, true, b"", KEY));
        wire.extend(client(CONTINUATION, true, b"!", KEY));
        wire.extend(client(BINARY, true, &[0xff; 300], [0xaa, 0, 0x55, 1]));
        wire.extend(client(BINARY, true, &[7; 70_000], KEY));
        wire.extend(client(CLOSE, true, &[0x03, 0xe8, b'b', b'y', b'e'], KEY));
        let mut data = "héllo, wörld!".as_bytes().to_vec();
        data.extend([0xff; 300]);
        data.extend([7; 70_000]);
        let controls = vec![
            Control::Ping(Bytes::from_static(b"are you there")),
            Control::Pong(Bytes::new()),
            Control::Close(Some(1000)),
        ];
        for piece in [1, 2, 3, 5, 13, 64, 1000, 4096, wire.len()] {
            let got = decode_in_pieces(&wire, piece, 1 << 20);
            assert_eq!(got, (data.clone(), controls.clone(), None), "pieces of {piece}");
        }
    }

    #[test]
    fn every_broken_rule_has_its_close_code() {
        let cases: Vec<(Vec<u8>, Violation, u16)> = vec![
            (vec![0x82, 0x02, b'h', b'i'], Violation::Unmasked, 1002),
            (client(BINARY | 0x40, true, b"x", KEY), Violation::ReservedBits, 1002),
            (client(BINARY | 0x10, true, b"x", KEY), Violation::ReservedBits, 1002),
            (client(0x3, true, b"x", KEY), Violation::ReservedOpcode(3), 1002),
            (client(0xB, true, b"x", KEY), Violation::ReservedOpcode(0xB), 1002),
            (client(PING, false, b"x", KEY), Violation::FragmentedControl, 1002),
            (client(PING, true, &[0; 126], KEY), Violation::ControlTooLong, 1002),
            (client(CONTINUATION, true, b"x", KEY), Violation::UnexpectedContinuation, 1002),
            (
                [client(TEXT, false, b"a", KEY), client(BINARY, true, b"b", KEY)].concat(),
                Violation::ExpectedContinuation,
                1002,
            ),
            ([vec![0x82, 0xff], vec![0x80; 8], KEY.to_vec()].concat(), Violation::BadLength, 1002),
            (client(CLOSE, true, &[3], KEY), Violation::ShortClose, 1002),
            (client(CLOSE, true, &1005u16.to_be_bytes(), KEY), Violation::BadCloseCode(1005), 1002),
            (client(CLOSE, true, &999u16.to_be_bytes(), KEY), Violation::BadCloseCode(999), 1002),
            (client(CLOSE, true, &[0x03, 0xe8, 0xff], KEY), Violation::InvalidCloseReason, 1007),
            (client(TEXT, true, b"a\xffb", KEY), Violation::InvalidUtf8, 1007),
            (client(TEXT, true, b"cut \xe2\x82", KEY), Violation::InvalidUtf8, 1007),
            (client(BINARY, true, &[0; 101], KEY), Violation::TooBig, 1009),
        ];
        for (wire, violation, code) in cases {
            for piece in [1, wire.len()] {
                let (_, _, got) = decode_in_pieces(&wire, piece, 100);
                assert_eq!(got, Some(violation), "{wire:x?} in pieces of {piece}");
            }
            assert_eq!(violation.close_code(), code, "{violation}");
        }
        assert_eq!(Violation::Unmasked.close_text(), "websocket protocol error");
    }

    #[test]
    fn the_message_limit_counts_every_fragment() {
        let at_limit = [
            client(BINARY, false, &[1; 40], KEY),
            client(PING, true, b"between", KEY),
            client(CONTINUATION, false, &[2; 40], KEY),
            client(CONTINUATION, true, &[3; 20], KEY),
        ]
        .concat();
        let (data, _, violation) = decode_in_pieces(&at_limit, 7, 100);
        assert_eq!((data.len(), violation), (100, None));
        // The next message starts its count again.
        let two = [at_limit.clone(), client(BINARY, true, &[4; 100], KEY)].concat();
        assert_eq!(decode_in_pieces(&two, 7, 100).2, None);

        // One byte more is refused on the header that declares it, before its payload.
        let over = [
            client(BINARY, false, &[1; 40], KEY),
            client(CONTINUATION, false, &[2; 40], KEY),
            client(CONTINUATION, true, &[3; 21], KEY),
        ]
        .concat();
        let header_of_the_last = over.len() - 21;
        let (data, _, violation) =
            decode_in_pieces(&over[..header_of_the_last], header_of_the_last, 100);
        assert_eq!((data.len(), violation), (80, Some(Violation::TooBig)));
    }

    #[test]
    fn a_message_has_ended_only_after_its_last_fragment() {
        let mut decoder = Decoder::new(100);
        let mut first = client(BINARY, false, b"part", KEY);
        let mut cursor = Cursor::default();
        assert_eq!(decoder.decode(&mut first, &mut cursor), Ok(None));
        assert_eq!((cursor.written, decoder.take_ended()), (4, false));
        let mut last = client(CONTINUATION, true, b"s", KEY);
        let mut cursor = Cursor::default();
        assert_eq!(decoder.decode(&mut last, &mut cursor), Ok(None));
        assert!(decoder.take_ended());
        assert!(!decoder.take_ended(), "taken");
    }

    #[test]
    fn a_utf8_character_may_span_fragments_and_pings() {
        let euro = "€".as_bytes();
        let wire = [
            client(TEXT, false, &euro[..1], KEY),
            client(PING, true, b"", KEY),
            client(CONTINUATION, false, &euro[1..2], KEY),
            client(CONTINUATION, true, &euro[2..], KEY),
        ]
        .concat();
        for piece in [1, wire.len()] {
            assert_eq!(decode_in_pieces(&wire, piece, 100).0, euro, "pieces of {piece}");
        }
        // A binary message is not checked.
        assert_eq!(decode_all(&client(BINARY, true, b"\xff", KEY)).2, None);
    }

    #[test]
    fn a_bad_byte_fails_the_piece_that_carries_it() {
        // The second byte of the payload is bad; the rest has not come yet.
        let wire = client(TEXT, true, b"a\xff and a long tail", KEY);
        let mut decoder = Decoder::new(100);
        let mut buf = wire[..2 + 4 + 2].to_vec();
        let got = decoder.decode(&mut buf, &mut Cursor::default());
        assert_eq!(got, Err(Violation::InvalidUtf8));
    }

    #[test]
    fn draining_passes_over_data_and_finds_the_close() {
        let mut decoder = Decoder::new(100);
        let too_big = client(BINARY, true, &[5; 1000], KEY);
        let mut buf = too_big[..50].to_vec();
        let mut cursor = Cursor::default();
        assert_eq!(decoder.decode(&mut buf, &mut cursor), Err(Violation::TooBig));
        decoder.drain();
        assert_eq!(decoder.decode(&mut buf, &mut cursor), Ok(None));
        let mut rest = [
            too_big[50..].to_vec(),
            client(TEXT, true, b"\xff not checked", KEY),
            client(0x5, true, b"nor this", KEY),
            client(0xB, true, b"nor a reserved control opcode", KEY),
            client(PING, true, &[1; 1000], KEY),
            client(PING, true, b"pinged while closing", KEY),
            client(CLOSE, true, &4000u16.to_be_bytes(), KEY),
        ]
        .concat();
        let mut cursor = Cursor::default();
        let ping = Control::Ping(Bytes::from_static(b"pinged while closing"));
        assert_eq!(decoder.decode(&mut rest, &mut cursor), Ok(Some(ping)));
        assert!(decoder.control.capacity() <= MAX_CONTROL, "the long ping was not collected");
        let got = decoder.decode(&mut rest, &mut cursor);
        assert_eq!(got, Ok(Some(Control::Close(Some(4000)))));
        assert_eq!(cursor.written, 0, "nothing is kept");
        assert!(decoder.in_step());
    }

    #[test]
    fn headers_are_as_short_as_their_length_allows() {
        for (len, header) in [
            (0, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65535, vec![0x82, 126, 0xff, 0xff]),
            (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = Vec::new();
            encode_header(&mut out, BINARY, len);
            assert_eq!(out, header, "{len}");
        }
        let mut close = Vec::new();
        encode_close(&mut close, Some(1009), "message too big");
        assert_eq!(close, b"\x88\x11\x03\xf1message too big");
        let mut cut = Vec::new();
        encode_close(&mut cut, Some(1000), &"é".repeat(100));
        assert_eq!(cut.len(), 2 + 2 + 122, "cut at a character boundary");
        let mut empty = Vec::new();
        encode_close(&mut empty, None, "ignored");
        assert_eq!(empty, [0x88, 0]);
    }

    /// A frame as a client might send it, rules broken now and then.
    fn any_frame() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let opcode = prop_oneof![
            6 => prop::sample::select(vec![CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG]),
            1 => prop::sample::select(vec![0x3, 0x7, 0xB, 0xF]),
        ];
        let payload = prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..40),
            2 => ".{0,30}".prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), 100..300),
            1 => (1000u16..1012).prop_map(|code| code.to_be_bytes().to_vec()),
        ];
        let flags = prop_oneof![8 => Just(0u8), 1 => prop::sample::select(vec![0x10, 0x40])];
        (opcode, any::<bool>(), prop::bool::weighted(0.95), flags, payload, any::<[u8; 4]>())
            .prop_map(|(opcode, fin, masked, rsv, payload, key)| {
                let mut frame = client(opcode | rsv, fin, &payload, key);
                if !masked {
                    frame[1] &= 0x7f;
                    frame.drain(frame.len() - payload.len() - 4..frame.len() - payload.len());
                    frame.truncate(frame.len() - payload.len());
                    frame.extend_from_slice(&payload);
                }
                frame
            })
    }

    proptest::proptest! {
        /// However the bytes are cut, the decoder sees the same controls and the same first
        /// violation, and writes the same data (up to where a violation stops it), and never
        /// panics.
        #[test]
        fn any_cut_decodes_as_the_whole(
            frames in proptest::collection::vec(any_frame(), 0..10),
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
            piece in 1usize..64,
        ) {
            let wire = [frames.concat(), garbage].concat();
            let (whole_data, whole_controls, whole_violation) = decode_in_pieces(&wire, wire.len(), 200);
            let (data, controls, violation) = decode_in_pieces(&wire, piece, 200);
            proptest::prop_assert_eq!(violation, whole_violation);
            proptest::prop_assert_eq!(controls, whole_controls);
            if violation.is_none() {
                proptest::prop_assert_eq!(data, whole_data);
            } else {
                let n = data.len().min(whole_data.len());
                proptest::prop_assert_eq!(&data[..n], &whole_data[..n]);
            }
        }
    }

    #[test]
    fn unmasking_matches_the_byte_by_byte_rule_at_every_phase() {
        let data: Vec<u8> = (0..=255).collect();
        for phase in 0..4 {
            for len in [0, 1, 7, 8, 9, 31, 256] {
                let mut fast = data[..len].to_vec();
                unmask(&mut fast, KEY, phase);
                let slow: Vec<u8> =
                    data[..len].iter().enumerate().map(|(i, b)| b ^ KEY[(phase + i) % 4]).collect();
                assert_eq!(fast, slow, "phase {phase}, {len} bytes");
            }
        }
    }
}
