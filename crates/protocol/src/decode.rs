//! The incremental decoder.
//!
//! Bytes arrive in whatever pieces the transport delivers. [`Decoder::decode`] takes what is
//! buffered and returns a whole [`Frame`], `Ok(None)` for "need more bytes", or a
//! [`DecodeError`] for bytes that can never become a valid message. Every limit is checked as
//! soon as the field that breaks it has arrived, before any payload byte is buffered for it.

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::{Frame, Id, MsgType, Name, MAX_NAME_LEN};
use crate::hex::parse_hex;

/// The default largest payload a decoder accepts: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 * 1024 * 1024;

/// Payloads shorter than this are copied out of the input buffer; longer ones share it.
///
/// A shared slice keeps the whole buffer it came from alive, and a transport reads into
/// buffers of several KiB, so a one-byte payload held in a queue would pin thousands of
/// bytes. Copying the small ones bounds what a held payload costs to about its own size; a
/// payload of at least this size pins a buffer at most a few times larger.
pub const COPY_BELOW: usize = 16 * 1024;

/// Why bytes from a peer are not a gotalk message. A sock answers each with ProtocolError 2
/// (invalid message) and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The first byte is not one of the ten message types.
    #[error("invalid message type byte 0x{0:02x}")]
    InvalidType(u8),
    /// A fixed-width number holds something other than hex digits.
    #[error("invalid hex digits in the {0} field")]
    InvalidNumber(&'static str),
    /// A name is longer than the decoder allows.
    #[error("name of {len} bytes exceeds the limit of {max}")]
    NameTooLong {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A name is not UTF-8.
    #[error("name is not valid UTF-8")]
    InvalidName,
    /// A declared payload is larger than the decoder allows.
    #[error("payload of {size} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// Declared size.
        size: u32,
        /// The limit.
        max: u32,
    },
    /// The handshake is not two hex digits.
    #[error("invalid protocol version bytes")]
    InvalidVersion,
    /// The input ended in the middle of a message.
    #[error("connection ended in the middle of a message")]
    Truncated,
}

/// Reads the peer's two-digit protocol version from the front of `buf`.
///
/// Returns `Ok(None)` until two bytes have arrived. The caller compares the version with
/// [`VERSION`](crate::VERSION); a mismatch is answered with ProtocolError 1.
///
/// # Errors
/// [`DecodeError::InvalidVersion`] when a byte is not a hex digit.
pub fn decode_version(buf: &mut BytesMut) -> Result<Option<u8>, DecodeError> {
    let have = buf.len().min(2);
    if !buf[..have].iter().all(u8::is_ascii_hexdigit) {
        return Err(DecodeError::InvalidVersion);
    }
    if have < 2 {
        return Ok(None);
    }
    let version = parse_hex(&buf[..2]).ok_or(DecodeError::InvalidVersion)?;
    buf.advance(2);
    // Two hex digits never exceed 0xff.
    Ok(Some(version as u8))
}

/// A header that has been read, waiting for its payload.
#[derive(Debug)]
struct Pending {
    frame: Frame,
    payload_len: usize,
}

/// Turns buffered bytes into frames, one at a time, within limits.
#[derive(Debug)]
pub struct Decoder {
    max_payload: u32,
    max_name_len: usize,
    pending: Option<Pending>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with the default limits.
    pub fn new() -> Self {
        Decoder { max_payload: DEFAULT_MAX_PAYLOAD, max_name_len: MAX_NAME_LEN, pending: None }
    }

    /// The largest payload accepted, in bytes. Default [`DEFAULT_MAX_PAYLOAD`] (16 MiB).
    pub fn max_payload(&mut self, bytes: u32) -> &mut Self {
        self.max_payload = bytes;
        self
    }

    /// The longest name accepted, in bytes. Default and ceiling [`MAX_NAME_LEN`] (4095).
    pub fn max_name_len(&mut self, bytes: usize) -> &mut Self {
        self.max_name_len = bytes.min(MAX_NAME_LEN);
        self
    }

    /// How many more bytes the message being read needs, if its header has been read; a
    /// transport uses it to size its next read.
    pub fn payload_remaining(&self, buffered: usize) -> Option<usize> {
        self.pending.as_ref().map(|p| p.payload_len.saturating_sub(buffered))
    }

    /// The message whose header has been read and whose payload is still arriving, with an
    /// empty payload: a reader can tell a result from a request before paying for the rest.
    pub fn pending_header(&self) -> Option<&Frame> {
        self.pending.as_ref().map(|p| &p.frame)
    }

    /// True when a message has been started and not finished.
    pub fn is_mid_message(&self, buf: &[u8]) -> bool {
        self.pending.is_some() || !buf.is_empty()
    }

    /// Checks that the input may end here.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] when the input ends in the middle of a message.
    pub fn finish(&self, buf: &[u8]) -> Result<(), DecodeError> {
        if self.is_mid_message(buf) {
            return Err(DecodeError::Truncated);
        }
        Ok(())
    }

    /// Takes the next whole frame off the front of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed. Header bytes are consumed as soon as the
    /// header is whole, so a caller never re-parses it while a large payload arrives.
    ///
    /// # Errors
    /// A [`DecodeError`] when the bytes can never form a valid message. The decoder should not
    /// be used after an error.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if self.pending.is_none() {
            match self.decode_header(buf)? {
                Some(pending) => self.pending = Some(pending),
                None => return Ok(None),
            }
        }
        let Some(pending) = &self.pending else { return Ok(None) };
        if buf.len() < pending.payload_len {
            return Ok(None);
        }
        let len = pending.payload_len;
        let payload = if len < COPY_BELOW {
            let small = Bytes::copy_from_slice(&buf[..len]);
            buf.advance(len);
            small
        } else {
            buf.split_to(len).freeze()
        };
        let Some(Pending { mut frame, .. }) = self.pending.take() else { return Ok(None) };
        set_payload(&mut frame, payload);
        Ok(Some(frame))
    }

    fn decode_header(&self, buf: &mut BytesMut) -> Result<Option<Pending>, DecodeError> {
        let Some(&type_byte) = buf.first() else { return Ok(None) };
        let msg_type = MsgType::from_byte(type_byte).ok_or(DecodeError::InvalidType(type_byte))?;
        let mut cursor = Cursor { buf, pos: 1 };
        let header = match msg_type {
            MsgType::SingleRequest | MsgType::StreamRequest => {
                let Some(id) = cursor.id() else { return Ok(None) };
                let Some(op) = cursor.name(self.max_name_len)? else { return Ok(None) };
                let Some(size) = cursor.size(self.max_payload)? else { return Ok(None) };
                let frame = if msg_type == MsgType::SingleRequest {
                    Frame::SingleRequest { id, op, payload: Bytes::new() }
                } else {
                    Frame::StreamRequest { id, op, payload: Bytes::new() }
                };
                (frame, size)
            }
            MsgType::StreamRequestPart
            | MsgType::SingleResult
            | MsgType::StreamResult
            | MsgType::ErrorResult => {
                let Some(id) = cursor.id() else { return Ok(None) };
                let Some(size) = cursor.size(self.max_payload)? else { return Ok(None) };
                let payload = Bytes::new();
                let frame = match msg_type {
                    MsgType::StreamRequestPart => Frame::StreamRequestPart { id, payload },
                    MsgType::SingleResult => Frame::SingleResult { id, payload },
                    MsgType::StreamResult => Frame::StreamResult { id, payload },
                    _ => Frame::ErrorResult { id, payload },
                };
                (frame, size)
            }
            MsgType::RetryResult => {
                let Some(id) = cursor.id() else { return Ok(None) };
                let Some(wait) = cursor.hex(8, "wait")? else { return Ok(None) };
                let Some(size) = cursor.size(self.max_payload)? else { return Ok(None) };
                (Frame::RetryResult { id, wait, payload: Bytes::new() }, size)
            }
            MsgType::Notification => {
                let Some(name) = cursor.name(self.max_name_len)? else { return Ok(None) };
                let Some(size) = cursor.size(self.max_payload)? else { return Ok(None) };
                (Frame::Notification { name, payload: Bytes::new() }, size)
            }
            MsgType::Heartbeat => {
                let Some(load) = cursor.hex(4, "load")? else { return Ok(None) };
                let Some(time) = cursor.hex(8, "time")? else { return Ok(None) };
                // Four hex digits never exceed u16::MAX.
                (Frame::Heartbeat { load: load as u16, time }, 0)
            }
            MsgType::ProtocolError => {
                let Some(code) = cursor.hex(8, "code")? else { return Ok(None) };
                (Frame::ProtocolError { code }, 0)
            }
        };
        let consumed = cursor.pos;
        buf.advance(consumed);
        let (frame, size) = header;
        Ok(Some(Pending { frame, payload_len: size as usize }))
    }
}

fn set_payload(frame: &mut Frame, bytes: Bytes) {
    match frame {
        Frame::SingleRequest { payload, .. }
        | Frame::StreamRequest { payload, .. }
        | Frame::StreamRequestPart { payload, .. }
        | Frame::SingleResult { payload, .. }
        | Frame::StreamResult { payload, .. }
        | Frame::ErrorResult { payload, .. }
        | Frame::RetryResult { payload, .. }
        | Frame::Notification { payload, .. } => *payload = bytes,
        Frame::Heartbeat { .. } | Frame::ProtocolError { .. } => {}
    }
}

/// Reads header fields from a buffer without consuming it, so an incomplete header costs
/// nothing but a re-scan of at most a few bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// Up to `n` bytes from the current position, and whether all `n` were there.
    fn take(&mut self, n: usize) -> (&[u8], bool) {
        let start = self.pos.min(self.buf.len());
        let end = (self.pos + n).min(self.buf.len());
        let whole = end - start == n;
        if whole {
            self.pos += n;
        }
        (&self.buf[start..end], whole)
    }

    fn id(&mut self) -> Option<Id> {
        let (bytes, whole) = self.take(4);
        if !whole {
            return None;
        }
        let mut id = [0u8; 4];
        id.copy_from_slice(bytes);
        Some(Id(id))
    }

    /// A hex field of `width` digits. A bad digit is reported as soon as it has arrived, even
    /// before the field is whole.
    fn hex(&mut self, width: usize, field: &'static str) -> Result<Option<u32>, DecodeError> {
        let (digits, whole) = self.take(width);
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(DecodeError::InvalidNumber(field));
        }
        if !whole {
            return Ok(None);
        }
        parse_hex(digits).map(Some).ok_or(DecodeError::InvalidNumber(field))
    }

    fn name(&mut self, max_len: usize) -> Result<Option<Name>, DecodeError> {
        let Some(len) = self.hex(3, "name length")? else { return Ok(None) };
        let len = len as usize;
        if len > max_len {
            return Err(DecodeError::NameTooLong { len, max: max_len });
        }
        let (bytes, whole) = self.take(len);
        if !whole {
            return Ok(None);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidName)?;
        // len <= max_len <= MAX_NAME_LEN, so this cannot fail; map it anyway rather than unwrap.
        Name::new(text).map(Some).map_err(|_| DecodeError::NameTooLong { len, max: max_len })
    }

    fn size(&mut self, max: u32) -> Result<Option<u32>, DecodeError> {
        let Some(size) = self.hex(8, "payload size")? else { return Ok(None) };
        if size > max {
            return Err(DecodeError::PayloadTooLarge { size, max });
        }
        Ok(Some(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VERSION;

    /// True when `payload` lies inside the memory `buf` covered before decoding.
    fn shares(range: std::ops::Range<usize>, payload: &Bytes) -> bool {
        range.contains(&(payload.as_ptr() as usize))
    }

    #[test]
    fn small_payloads_are_copied_and_large_ones_shared() {
        for (len, shared) in [(1, false), (COPY_BELOW - 1, false), (COPY_BELOW, true)] {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            buf.extend_from_slice(format!("n001x{len:08x}").as_bytes());
            buf.extend_from_slice(&vec![b'p'; len]);
            buf.extend_from_slice(b"h000254d7de9a");
            let start = buf.as_ptr() as usize;
            let range = start..start + buf.capacity();
            let mut decoder = Decoder::new();
            let frame = decoder.decode(&mut buf).unwrap().unwrap();
            assert_eq!(frame.payload().len(), len);
            assert_eq!(shares(range, frame.payload()), shared, "payload of {len} bytes");
            assert_eq!(
                decoder.decode(&mut buf).unwrap(),
                Some(Frame::Heartbeat { load: 2, time: 0x54d7de9a })
            );
        }
    }

    #[test]
    fn version_needs_two_hex_digits() {
        let mut buf = BytesMut::from(&b"0"[..]);
        assert_eq!(decode_version(&mut buf), Ok(None));
        buf.extend_from_slice(b"1r");
        assert_eq!(decode_version(&mut buf), Ok(Some(VERSION)));
        assert_eq!(&buf[..], b"r");
        assert_eq!(
            decode_version(&mut BytesMut::from(&b"x"[..])),
            Err(DecodeError::InvalidVersion)
        );
        assert_eq!(decode_version(&mut BytesMut::from(&b"0A"[..])), Ok(Some(10)));
    }
}
